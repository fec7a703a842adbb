//! `pipeline-runner worker` against a real `nats-server`: jobs from the work
//! queue, lines to the events stream (every line once, in order, the same
//! numbers the worker stored), one worker per job, the per-worker limit,
//! cancel requests, a NATS restart mid-job and a worker killed mid-job.
#![cfg(feature = "nats")]

mod nats_common;

use std::time::Duration;

use nats_common::{wait_for, NatsServer, TempDir, WorkerProcess};
use serde_json::{json, Value};
use tracing_pipeline::runner::nats::{
    end_lost_job, submit_job, Bus, BusConfig, JobPhase, JobState, WORKER_LOST,
};

async fn bus(url: &str) -> Bus {
    let mut c = BusConfig::new(url);
    c.worker_ttl = Duration::from_secs(1);
    Bus::connect(c).await.unwrap()
}

async fn state(bus: &Bus, id: &str) -> JobState {
    bus.job_state(id).await.unwrap().unwrap().0
}

async fn wait_phase(bus: &Bus, id: &str, phase: JobPhase, secs: u64) -> JobState {
    wait_for(secs, &format!("{id} {phase:?}"), || async {
        bus.job_state(id)
            .await
            .ok()
            .flatten()
            .map(|(s, _)| s)
            .filter(|s| s.phase == phase)
    })
    .await
}

/// Every line of a job in the events stream, read until `last`.
async fn stream_lines(bus: &Bus, id: &str) -> Vec<(u64, String)> {
    let last = bus.last_seq(id).await.unwrap();
    let mut replay = bus.replay(id, 0).await.unwrap();
    let mut lines = Vec::new();
    while lines.last().is_none_or(|(seq, _)| *seq < last) {
        let line = replay
            .next_within(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("every line up to the last");
        lines.push((line.seq, line.data));
    }
    // Nothing after the last.
    assert_eq!(
        replay
            .next_within(Duration::from_millis(200))
            .await
            .unwrap(),
        None
    );
    lines
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap()
}

/// The stream holds exactly what the worker stored: the same numbers
/// (1, 2, 3, ... with no gap) and the same lines.
fn assert_same(stream: &[(u64, String)], stored: &[(u64, String)]) {
    assert!(!stored.is_empty());
    assert_eq!(stream.len(), stored.len());
    for (i, ((a_seq, a), (b_seq, b))) in stream.iter().zip(stored).enumerate() {
        assert_eq!(*a_seq, i as u64 + 1);
        assert_eq!(a_seq, b_seq);
        assert_eq!(parse(a), parse(b), "line {a_seq}");
    }
}

const STAGED: &str = r#"
echo "{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"fetch\",\"job_id\":\"$JOB_ID\"}"
echo "hello from $JOB_ID"
echo "to stderr" >&2
echo "{\"event\":\"layer_complete\",\"layer\":1,\"layer_name\":\"fetch\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":1}"
echo "{\"event\":\"pipeline_complete\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":2}"
"#;

#[tokio::test]
async fn a_job_runs_on_a_worker_and_every_line_reaches_the_stream() {
    let server = NatsServer::start();
    let bus = bus(&server.url()).await;
    let worker = WorkerProcess::start(&server.url(), STAGED, &[]);
    let id = submit_job(&bus, Some("staged-1".into())).await.unwrap();
    let done = wait_phase(&bus, &id, JobPhase::Finished, 20).await;
    assert_eq!(done.worker.as_deref(), Some(worker.id.as_str()));
    let summary = done.summary.unwrap();
    assert_eq!(summary["status"], "success");
    assert_eq!(summary["outcome"], "success");
    assert_eq!(summary["lines"], 5);
    assert_eq!(summary["counts"]["completed"], 1);
    assert_eq!(done.stages.len(), 1);
    assert_eq!(done.stages[0]["layer_name"], "fetch");
    assert_eq!(done.stages[0]["status"], "complete");
    let lines = stream_lines(&bus, &id).await;
    assert_same(&lines, &worker.stored_lines(&id));
    // Classified and attributed as the single-process runner does (stdout
    // in order; the stderr line may come anywhere).
    let stdout: Vec<Value> = lines
        .iter()
        .map(|(_, l)| parse(l))
        .filter(|v| v["stream"] != "stderr")
        .collect();
    assert_eq!(stdout[0]["event"], "layer_start");
    assert_eq!(
        stdout[1],
        json!({"type":"output","text":"hello from staged-1","layer":1,"layer_name":"fetch"})
    );
    assert_eq!(stdout[2]["event"], "layer_complete");
    assert_eq!(stdout[3]["event"], "pipeline_complete");
    let stderr: Vec<Value> = lines
        .iter()
        .map(|(_, l)| parse(l))
        .filter(|v| v["stream"] == "stderr")
        .collect();
    assert_eq!(stderr.len(), 1);
    assert_eq!(stderr[0]["text"], "to stderr");
}

#[tokio::test]
async fn two_workers_racing_run_each_job_exactly_once() {
    let server = NatsServer::start();
    let bus = bus(&server.url()).await;
    let script = r#"echo "run $JOB_ID"; sleep 0.1; echo done"#;
    let a = WorkerProcess::start(&server.url(), script, &["--max-running", "3"]);
    let b = WorkerProcess::start(&server.url(), script, &["--max-running", "3"]);
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(submit_job(&bus, Some(format!("race-{i}"))).await.unwrap());
    }
    for id in &ids {
        let done = wait_phase(&bus, id, JobPhase::Finished, 30).await;
        let worker = done.worker.unwrap();
        assert!(worker == a.id || worker == b.id, "{worker}");
        // Exactly one worker ran it (its data directory has the job).
        assert!(a.has_job(id) ^ b.has_job(id), "{id}");
        let runner = if a.has_job(id) { &a } else { &b };
        assert_eq!(worker, runner.id);
        let lines = stream_lines(&bus, id).await;
        assert_same(&lines, &runner.stored_lines(id));
        let runs = lines
            .iter()
            .filter(|(_, l)| parse(l)["text"] == format!("run {id}"))
            .count();
        assert_eq!(runs, 1, "{id}");
    }
}

#[tokio::test]
async fn a_worker_runs_at_most_max_running_jobs_at_once() {
    let server = NatsServer::start();
    let bus = bus(&server.url()).await;
    let gate = TempDir::new("nats-gate");
    let release = gate.path().join("release");
    let script = format!(
        r#"echo "start $JOB_ID"; while [ ! -f '{}' ]; do sleep 0.05; done; echo end"#,
        release.display()
    );
    let worker = WorkerProcess::start(&server.url(), &script, &["--max-running", "2"]);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submit_job(&bus, Some(format!("limit-{i}"))).await.unwrap());
    }
    let most = std::cell::Cell::new(0usize);
    wait_for(20, "two running", || async {
        let mut running = 0;
        for id in &ids {
            if state(&bus, id).await.phase == JobPhase::Running {
                running += 1;
            }
        }
        most.set(most.get().max(running));
        (running == 2).then_some(())
    })
    .await;
    let info = bus.worker(&worker.id).await.unwrap().unwrap();
    assert_eq!(info.max_running, 2);
    assert!(info.running.len() <= 2);
    std::fs::write(&release, "").unwrap();
    for id in &ids {
        wait_for(30, "all finished", || async {
            let mut running = 0;
            for id in &ids {
                if state(&bus, id).await.phase == JobPhase::Running {
                    running += 1;
                }
            }
            most.set(most.get().max(running));
            (state(&bus, id).await.phase == JobPhase::Finished).then_some(())
        })
        .await;
    }
    assert_eq!(most.get(), 2);
}

#[tokio::test]
async fn a_cancel_request_reaches_the_worker_running_the_job() {
    let server = NatsServer::start();
    let bus = bus(&server.url()).await;
    let script = r#"echo "{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"slow\",\"job_id\":\"$JOB_ID\"}"; while true; do sleep 0.05; done"#;
    // Two workers: the one that does not have the job must not answer.
    let one = WorkerProcess::start(&server.url(), script, &[]);
    let two = WorkerProcess::start(&server.url(), script, &[]);
    let id = submit_job(&bus, Some("to-cancel".into())).await.unwrap();
    let running = wait_phase(&bus, &id, JobPhase::Running, 20).await;
    let worker = if running.worker.as_deref() == Some(one.id.as_str()) {
        &one
    } else {
        &two
    };
    wait_for(20, "the first line", || async {
        (bus.last_seq(&id).await.unwrap() >= 1).then_some(())
    })
    .await;
    let subject = Bus::cancel_subject(&id).unwrap();
    let reply = bus.client().request(subject, "".into()).await.unwrap();
    assert_eq!(&reply.payload[..], b"cancelled");
    let done = wait_phase(&bus, &id, JobPhase::Finished, 20).await;
    let summary = done.summary.unwrap();
    assert_eq!(summary["outcome"], "cancelled");
    assert_eq!(summary["reason"], "cancelled");
    let lines = stream_lines(&bus, &id).await;
    assert_same(&lines, &worker.stored_lines(&id));
    let last = parse(&lines.last().unwrap().1);
    assert_eq!(last["event"], "pipeline_complete");
    assert_eq!(last["error"], "cancelled");
    // Again, now that it has ended: the worker that ran it says so.
    let reply = bus
        .client()
        .request(Bus::cancel_subject(&id).unwrap(), "".into())
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&reply.payload).unwrap(),
        "job to-cancel has already finished"
    );
    // A job no worker has: no answer.
    let unanswered = bus
        .client()
        .send_request(
            Bus::cancel_subject("nope").unwrap(),
            async_nats::Request::new().timeout(Some(Duration::from_millis(500))),
        )
        .await;
    assert!(unanswered.is_err());
}

#[tokio::test]
async fn the_child_keeps_running_while_nats_restarts_and_nothing_is_lost() {
    let mut server = NatsServer::start();
    let url = server.url();
    let gate = TempDir::new("nats-gate");
    let (a, b) = (gate.path().join("a"), gate.path().join("b"));
    let script = format!(
        r#"i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo "line $i"; done
while [ ! -f '{a}' ]; do sleep 0.05; done
while [ $i -lt 100 ]; do i=$((i+1)); echo "line $i"; done
while [ ! -f '{b}' ]; do sleep 0.05; done
echo last"#,
        a = a.display(),
        b = b.display()
    );
    let worker = WorkerProcess::start(&url, &script, &[]);
    let id = {
        let bus = bus(&url).await;
        let id = submit_job(&bus, Some("outage".into())).await.unwrap();
        wait_for(20, "50 lines in the stream", || async {
            (bus.last_seq(&id).await.unwrap() >= 50).then_some(())
        })
        .await;
        id
    };
    server.stop();
    // NATS is down: the child prints 50 more, and the worker stores them.
    std::fs::write(&a, "").unwrap();
    wait_for(20, "100 lines stored while NATS is down", || async {
        (worker.stored_lines(&id).len() >= 100).then_some(())
    })
    .await;
    server.restart();
    std::fs::write(&b, "").unwrap();
    let bus = bus(&url).await;
    let done = wait_phase(&bus, &id, JobPhase::Finished, 30).await;
    assert_eq!(done.summary.unwrap()["lines"], 102);
    let lines = stream_lines(&bus, &id).await;
    assert_same(&lines, &worker.stored_lines(&id));
    for (i, (_, data)) in lines.iter().take(100).enumerate() {
        assert_eq!(
            parse(data),
            json!({"type":"output","text": format!("line {}", i + 1)})
        );
    }
    assert_eq!(parse(&lines[100].1)["text"], "last");
}

#[tokio::test]
async fn a_killed_worker_is_lost_and_its_job_ended_exactly_once() {
    let server = NatsServer::start();
    let bus_a = bus(&server.url()).await;
    let bus_b = bus(&server.url()).await;
    let mut worker = WorkerProcess::start(
        &server.url(),
        r#"echo "{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"long\",\"job_id\":\"$JOB_ID\"}"; while true; do echo tick; sleep 0.1; done"#,
        &[],
    );
    let id = submit_job(&bus_a, Some("orphan".into())).await.unwrap();
    wait_for(20, "lines in the stream", || async {
        (bus_a.last_seq(&id).await.unwrap() >= 3).then_some(())
    })
    .await;
    // Alive: not lost.
    assert!(!end_lost_job(&bus_a, &id).await.unwrap());
    worker.kill();
    wait_for(20, "the heartbeat to expire", || async {
        bus_a
            .worker(&worker.id)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let last_before = bus_a.last_seq(&id).await.unwrap();
    let (a, b) = tokio::join!(end_lost_job(&bus_a, &id), end_lost_job(&bus_b, &id));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one caller ends it: {a} {b}");
    assert!(!end_lost_job(&bus_a, &id).await.unwrap());
    let done = state(&bus_a, &id).await;
    assert_eq!(done.phase, JobPhase::Finished);
    let summary = done.summary.unwrap();
    assert_eq!(summary["status"], "error");
    assert_eq!(summary["reason"], WORKER_LOST);
    let lines = stream_lines(&bus_a, &id).await;
    for (i, (seq, _)) in lines.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
    }
    assert_eq!(lines.len() as u64, last_before + 2);
    assert_eq!(summary["lines"], last_before + 2);
    let closing = parse(&lines[lines.len() - 2].1);
    assert_eq!(closing["event"], "layer_error");
    assert_eq!(closing["layer_name"], "long");
    assert_eq!(closing["error"], WORKER_LOST);
    let complete = parse(&lines[lines.len() - 1].1);
    assert_eq!(complete["event"], "pipeline_complete");
    assert_eq!(complete["status"], "error");
    assert_eq!(complete["error"], WORKER_LOST);
    assert_eq!(complete["metadata"]["layers_failed"], 1);
    assert_eq!(done.stages.len(), 1);
    assert_eq!(done.stages[0]["status"], "error");
    assert_eq!(done.stages[0]["error"], WORKER_LOST);
    let completes = lines
        .iter()
        .filter(|(_, l)| parse(l)["event"] == "pipeline_complete")
        .count();
    assert_eq!(completes, 1);
}

#[tokio::test]
async fn another_worker_ends_a_killed_workers_job_by_itself() {
    let server = NatsServer::start();
    let bus = bus(&server.url()).await;
    let script = r#"while true; do echo tick; sleep 0.1; done"#;
    let mut a = WorkerProcess::start(&server.url(), script, &[]);
    let id = submit_job(&bus, Some("swept".into())).await.unwrap();
    let running = wait_phase(&bus, &id, JobPhase::Running, 20).await;
    assert_eq!(running.worker.as_deref(), Some(a.id.as_str()));
    let _b = WorkerProcess::start(&server.url(), script, &[]);
    a.kill();
    let done = wait_phase(&bus, &id, JobPhase::Finished, 30).await;
    assert_eq!(done.summary.unwrap()["reason"], WORKER_LOST);
    let lines = stream_lines(&bus, &id).await;
    let complete = parse(&lines.last().unwrap().1);
    assert_eq!(complete["event"], "pipeline_complete");
    assert_eq!(complete["error"], WORKER_LOST);
}

#[tokio::test]
async fn sigterm_ends_running_jobs_publishes_their_end_and_leaves() {
    let server = NatsServer::start();
    let bus = bus(&server.url()).await;
    let mut worker = WorkerProcess::start(
        &server.url(),
        r#"echo "{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"s\",\"job_id\":\"$JOB_ID\"}"; while true; do sleep 0.05; done"#,
        &[],
    );
    let id = submit_job(&bus, Some("stopped".into())).await.unwrap();
    wait_for(20, "the first line", || async {
        (bus.last_seq(&id).await.unwrap() >= 1).then_some(())
    })
    .await;
    assert!(bus.worker(&worker.id).await.unwrap().is_some());
    let status = worker.terminate();
    assert!(status.success(), "{status}");
    let done = state(&bus, &id).await;
    assert_eq!(done.phase, JobPhase::Finished);
    assert_eq!(done.summary.as_ref().unwrap()["reason"], "runner shut down");
    assert_eq!(done.summary.unwrap()["outcome"], "interrupted");
    let lines = stream_lines(&bus, &id).await;
    assert_same(&lines, &worker.stored_lines(&id));
    assert_eq!(parse(&lines.last().unwrap().1)["error"], "runner shut down");
    // It said goodbye: no liveness entry left to expire.
    assert!(bus.worker(&worker.id).await.unwrap().is_none());
}

#[test]
fn the_worker_command_fails_clearly_when_nats_is_unreachable() {
    let data = TempDir::new("nats-unreachable");
    let url = format!("nats://127.0.0.1:{}", nats_common::free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline-runner"))
        .args(["worker", "--nats", &url, "--data-dir"])
        .arg(data.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to NATS at {url}")),
        "{stderr}"
    );
}

#[test]
fn the_worker_command_needs_nats_and_a_command() {
    for args in [
        &["worker", "--", "true"][..],
        &["worker", "--nats", "nats://127.0.0.1:1"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline-runner"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("required"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn a_long_job_is_indexed_and_a_resume_starts_near_its_line() {
    let server = NatsServer::start();
    let bus = bus(&server.url()).await;
    let worker = WorkerProcess::start(&server.url(), "seq 1 3000", &[]);
    let id = submit_job(&bus, Some("long".into())).await.unwrap();
    let done = wait_phase(&bus, &id, JobPhase::Finished, 60).await;
    assert_eq!(done.summary.as_ref().unwrap()["lines"], 3001);
    let lines: Vec<u64> = done.index.iter().map(|[line, _]| *line).collect();
    assert_eq!(lines, [1, 1025, 2049]);
    // Each entry names the stream message that holds its line.
    let js = async_nats::jetstream::new(bus.client().clone());
    let stream = js
        .get_stream(tracing_pipeline::runner::nats::EVENTS_STREAM)
        .await
        .unwrap();
    for [line, stream_seq] in &done.index {
        let message = stream.get_raw_message(*stream_seq).await.unwrap();
        let header = message
            .headers
            .get(tracing_pipeline::runner::nats::SEQ_HEADER)
            .unwrap();
        assert_eq!(header.as_str(), line.to_string());
    }
    let stored = worker.stored_lines(&id);
    for after in [0u64, 1, 1024, 1500, 2048, 2999, 3000] {
        let mut replay = bus.replay(&id, after).await.unwrap();
        for want in after + 1..=3001 {
            let line = replay
                .next_within(Duration::from_secs(10))
                .await
                .unwrap()
                .expect("the line");
            assert_eq!(line.seq, want);
            assert_eq!(parse(&line.data), parse(&stored[want as usize - 1].1));
        }
        assert_eq!(
            replay
                .next_within(Duration::from_millis(100))
                .await
                .unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn a_restarted_worker_publishes_what_never_reached_the_stream() {
    let mut server = NatsServer::start();
    let url = server.url();
    let gate = TempDir::new("nats-gate");
    let go = gate.path().join("go");
    let script = format!(
        r#"i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo "line $i"; done
while [ ! -f '{go}' ]; do sleep 0.05; done
while [ $i -lt 40 ]; do i=$((i+1)); echo "line $i"; done
while true; do echo tick; sleep 0.05; done"#,
        go = go.display()
    );
    let args = ["--worker-id", "steady"];
    let worker = WorkerProcess::start(&url, &script, &args);
    let id = {
        let bus = bus(&url).await;
        let id = submit_job(&bus, Some("resumed".into())).await.unwrap();
        wait_for(20, "20 lines in the stream", || async {
            (bus.last_seq(&id).await.unwrap() >= 20).then_some(())
        })
        .await;
        id
    };
    // NATS goes away, the child prints 20 more (stored, not published),
    // then the worker dies.
    server.stop();
    std::fs::write(&go, "").unwrap();
    wait_for(20, "40 lines stored", || async {
        (worker.stored_lines(&id).len() >= 40).then_some(())
    })
    .await;
    let data = worker.into_data();
    server.restart();
    let worker = WorkerProcess::start_in(&url, &script, &args, data);
    let bus = bus(&url).await;
    let done = wait_phase(&bus, &id, JobPhase::Finished, 30).await;
    let summary = done.summary.unwrap();
    assert_eq!(summary["outcome"], "interrupted");
    let stored = worker.stored_lines(&id);
    assert_eq!(summary["lines"], stored.len() as u64);
    let lines = stream_lines(&bus, &id).await;
    assert_same(&lines, &stored);
    for (i, (_, data)) in lines.iter().take(40).enumerate() {
        assert_eq!(
            parse(data),
            json!({"type":"output","text": format!("line {}", i + 1)})
        );
    }
    let last = parse(&lines.last().unwrap().1);
    assert_eq!(last["event"], "pipeline_complete");
    assert!(
        last["error"].as_str().unwrap().starts_with("interrupted"),
        "{last}"
    );
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_still_run_by_its_worker() {
    let server = NatsServer::start();
    let bus = bus(&server.url()).await;
    let id = submit_job(&bus, Some("claimed".into())).await.unwrap();
    // As if worker "w-lost-answer" had claimed it and never heard back.
    let (queued, revision) = bus.job_state(&id).await.unwrap().unwrap();
    let claimed = JobState {
        phase: JobPhase::Running,
        worker: Some("w-lost-answer".into()),
        ..queued
    };
    bus.set_job_state(&claimed, revision)
        .await
        .unwrap()
        .unwrap();
    // The request comes back to that worker: it runs the job.
    let own = WorkerProcess::start(&server.url(), "echo ran", &["--worker-id", "w-lost-answer"]);
    let done = wait_phase(&bus, &id, JobPhase::Finished, 20).await;
    assert_eq!(done.worker.as_deref(), Some("w-lost-answer"));
    assert!(own.has_job(&id));
    assert_eq!(parse(&stream_lines(&bus, &id).await[0].1)["text"], "ran");
}
