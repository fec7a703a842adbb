//! How jobs end, against real servers on 127.0.0.1:0: a command that cannot
//! start, a child killed with SIGKILL, a cancel while a stage runs, the
//! runner itself killed with SIGKILL and restarted (twice). In each, every
//! stage still running is closed by a stored `layer_error` carrying the
//! job's reason, and the API, `/events` and `/api/stream` agree. Also the
//! multiplexed stream with `AFTER` per job, `?after=` on `/events`, and the
//! binary's start lines.
#![cfg(feature = "runner")]

mod runner_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use runner_common::{
    collect, create_job, events_named, get_json, poll, sh, wait_finished, Msg, RunnerProcess,
    Server, SseClient, TempDir, BIN,
};
use serde_json::{json, Value};

const INTERRUPTED: &str = "interrupted: the runner stopped while the job was running";

fn start_line(layer: u32, name: &str) -> String {
    format!(
        r#"echo '{{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_start","layer":{layer},"layer_name":"{name}"}}'"#
    )
}

/// Waits until the job's detail shows each of `names` running.
async fn wait_running(url: &str, id: &str, names: &[&str]) -> Value {
    poll("the stages to run", || async {
        let v = get_json(&format!("{url}/api/jobs/{id}")).await.ok()?;
        let stages = v["stages"].as_array()?;
        names
            .iter()
            .all(|n| {
                stages
                    .iter()
                    .any(|s| s["layer_name"] == *n && s["status"] == "running")
            })
            .then_some(v)
    })
    .await
}

/// The stage named `name` in a job's detail.
fn stage<'a>(detail: &'a Value, name: &str) -> &'a Value {
    detail["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["layer_name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {detail}"))
}

fn kill9(pid_file: &Path) {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The closing `layer_error` lines and the final `pipeline_complete` of a
/// stream: the runner's end of a job with `reason`.
fn assert_closed(msgs: &[Msg], names: &[&str], reason: &str) {
    let errors = events_named(msgs, "layer_error");
    let closed: Vec<&str> = errors
        .iter()
        .map(|e| e["layer_name"].as_str().unwrap())
        .collect();
    assert_eq!(closed, names, "one closing line per open stage");
    for e in &errors {
        assert_eq!(e["error"], reason);
        assert_eq!(e["status"], "error");
        assert!(e["duration_ms"].is_u64(), "{e}");
    }
    let complete = events_named(msgs, "pipeline_complete");
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0]["error"], reason);
    assert_eq!(
        complete[0]["metadata"]["layers_failed"],
        names.len(),
        "{}",
        complete[0]
    );
    // The closing lines come right before pipeline_complete, at the end.
    let (end, lines) = msgs.split_last().unwrap();
    assert_eq!(end.event.as_deref(), Some("end"));
    let tail: Vec<&str> = lines[lines.len() - names.len() - 1..]
        .iter()
        .map(|m| m.data["event"].as_str().unwrap())
        .collect();
    let mut want = vec!["layer_error"; names.len()];
    want.push("pipeline_complete");
    assert_eq!(tail, want);
}

#[tokio::test]
async fn a_command_that_cannot_start_says_why() {
    let srv = Server::start(vec!["/nonexistent/pipeline".into()]).await;
    let id = create_job(&srv.url, Some("nostart")).await.unwrap();
    let all = collect(&srv.url, &id, None).await;
    let complete = events_named(&all, "pipeline_complete");
    let reason = complete[0]["error"].as_str().unwrap().to_owned();
    assert!(
        reason.starts_with("cannot start the pipeline: No such file"),
        "{reason}"
    );
    let detail = wait_finished(&srv.url, &id).await;
    assert_eq!(detail["outcome"], "error");
    assert_eq!(detail["reason"], reason.as_str());
    assert_eq!(detail["lines"], 1);
    assert!(detail["duration_ms"].is_u64());
    assert!(detail["finished_at"].as_str().unwrap().ends_with('Z'));
    assert!(detail.get("exit_code").is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn a_child_killed_with_sigkill_has_its_open_stage_closed() {
    let dir = TempDir::new("kill9");
    let pid = dir.path().join("pid");
    let script = format!(
        "{}; echo working; echo $$ > '{}'; exec sleep 60",
        start_line(1, "work"),
        pid.display()
    );
    let srv = Server::start(sh(&script)).await;
    let id = create_job(&srv.url, Some("crashy")).await.unwrap();
    wait_running(&srv.url, &id, &["work"]).await;
    poll("the pid file", || async { pid.exists().then_some(()) }).await;
    kill9(&pid);
    let all = collect(&srv.url, &id, None).await;
    assert_closed(&all, &["work"], "killed by signal 9");
    let working = all.iter().find(|m| m.data["text"] == "working").unwrap();
    assert_eq!(working.data["layer_name"], "work", "output attributed");
    let detail = wait_finished(&srv.url, &id).await;
    let work = stage(&detail, "work");
    assert_eq!(work["status"], "error");
    assert_eq!(work["error"], "killed by signal 9");
    assert_eq!(work["started_seq"], 1);
    assert_eq!(work["ended_seq"], detail["lines"].as_u64().unwrap() - 1);
    assert_eq!(detail["outcome"], "error");
    assert_eq!(detail["reason"], "killed by signal 9");
    assert_eq!(detail["counts"]["failed"], 1);
    assert_eq!(detail["counts"]["running"], 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn cancel_while_a_stage_runs_ends_it_cancelled_everywhere() {
    let script = format!(
        "{}; {}; exec sleep 60",
        start_line(1, "slow"),
        start_line(2, "slower")
    );
    let srv = Server::start(sh(&script)).await;
    // Watching the job list from before the job exists.
    let mut list = SseClient::open(&format!("{}/api/stream?jobs=1", srv.url))
        .await
        .unwrap();
    let id = create_job(&srv.url, Some("stopme")).await.unwrap();
    wait_running(&srv.url, &id, &["slow", "slower"]).await;
    let mut events = SseClient::connect(&srv.url, &id, None).await.unwrap();
    let mut mux = SseClient::open(&format!("{}/api/stream?job={id}:1", srv.url))
        .await
        .unwrap();
    let resp = runner_common::client()
        .post(format!("{}/api/jobs/{id}/cancel", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let all = events.until_end().await.unwrap();
    assert_closed(&all, &["slow", "slower"], "cancelled");

    // The multiplexed stream: the same lines after seq 1, tagged, no ids.
    let mut tagged = Vec::new();
    let end = loop {
        let msg = mux.next().await.unwrap().expect("stream open");
        assert_eq!(msg.id, None);
        match msg.event.as_deref() {
            Some("line") => {
                assert_eq!(msg.data["job"], "stopme");
                tagged.push(msg.data);
            }
            Some("end") => break msg.data,
            other => panic!("unexpected {other:?}"),
        }
    };
    let seqs: Vec<u64> = tagged.iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (2..=all.len() as u64 - 1).collect::<Vec<_>>());
    for (t, m) in tagged.iter().zip(&all[1..]) {
        assert_eq!(t["data"], m.data);
    }
    assert_eq!(end["job"], "stopme");
    assert_eq!(end["summary"]["outcome"], "cancelled");
    assert_eq!(end["summary"]["reason"], "cancelled");

    let detail = wait_finished(&srv.url, &id).await;
    for name in ["slow", "slower"] {
        let s = stage(&detail, name);
        assert_eq!(s["status"], "cancelled", "{s}");
        assert_eq!(s["error"], "cancelled");
        assert!(s["ended_seq"].is_u64());
    }
    assert_eq!(detail["outcome"], "cancelled");
    assert_eq!(detail["status"], "error");
    assert_eq!(
        detail["counts"],
        json!({"completed":0,"failed":0,"skipped":0,"running":0,"cancelled":2})
    );

    // The list watcher saw the job created, then its end.
    let created = list.next().await.unwrap().unwrap();
    assert_eq!(created.event.as_deref(), Some("jobs"));
    assert_eq!(created.id, None);
    assert_eq!(
        (&created.data["job_id"], &created.data["outcome"]),
        (&json!("stopme"), &json!("running"))
    );
    let ended = list.next().await.unwrap().unwrap();
    assert_eq!(ended.event.as_deref(), Some("jobs"));
    assert_eq!(ended.data["outcome"], "cancelled");
    assert_eq!(ended.data, detail_summary(&detail));
    srv.shutdown().await;
}

/// A job's detail without its stages: its summary.
fn detail_summary(detail: &Value) -> Value {
    let mut s = detail.clone();
    s.as_object_mut().unwrap().remove("stages");
    s
}

#[tokio::test]
async fn the_runner_killed_with_sigkill_and_restarted_closes_open_stages_once() {
    let dir = TempDir::new("runner-kill");
    let data = dir.path().join("data");
    let pid = dir.path().join("pid");
    let script = sh(&format!(
        "{}; {}; echo $$ > '{}'; exec sleep 60",
        start_line(1, "left"),
        start_line(1, "right"),
        pid.display()
    ));
    let mut first = RunnerProcess::start(&data, &script).unwrap();
    let id = create_job(&first.url, Some("held")).await.unwrap();
    wait_running(&first.url, &id, &["left", "right"]).await;
    poll("the pid file", || async { pid.exists().then_some(()) }).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    kill9(&pid);

    let second = RunnerProcess::start(&data, &script).unwrap();
    let detail = get_json(&format!("{}/api/jobs/{id}", second.url))
        .await
        .unwrap();
    assert_eq!(detail["state"], "interrupted");
    assert_eq!(detail["outcome"], "interrupted");
    assert_eq!(detail["reason"], INTERRUPTED);
    for name in ["left", "right"] {
        let s = stage(&detail, name);
        assert_eq!(
            (&s["status"], &s["error"]),
            (&json!("error"), &json!(INTERRUPTED))
        );
    }
    let all = collect(&second.url, &id, None).await;
    assert_closed(&all, &["left", "right"], INTERRUPTED);
    let log = runner_common::client()
        .get(format!("{}/api/jobs/{id}/log", second.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    drop(second);

    // A second restart finds the job ended: nothing is closed twice.
    let third = RunnerProcess::start(&data, &script).unwrap();
    let again = get_json(&format!("{}/api/jobs/{id}", third.url))
        .await
        .unwrap();
    assert_eq!(again, detail);
    let all_again = collect(&third.url, &id, None).await;
    assert_eq!(all_again, all);
    let log_again = runner_common::client()
        .get(format!("{}/api/jobs/{id}/log", third.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(log_again, log);
}

#[tokio::test]
async fn streams_resume_after_a_given_line() {
    let srv = Server::start(sh("for i in 1 2 3 4 5; do echo $i; done")).await;
    let a = create_job(&srv.url, Some("a")).await.unwrap();
    let b = create_job(&srv.url, Some("b")).await.unwrap();
    wait_finished(&srv.url, &a).await;
    wait_finished(&srv.url, &b).await;

    // `?after=` on /events, and the Last-Event-ID header wins over it.
    let mut after = SseClient::open(&format!("{}/api/jobs/a/events?after=3", srv.url))
        .await
        .unwrap();
    let msgs = after.until_end().await.unwrap();
    assert_eq!(msgs[0].id, Some(4));
    let resp = runner_common::client()
        .get(format!("{}/api/jobs/a/events?after=1", srv.url))
        .header("Last-Event-ID", "5")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(resp.starts_with("id: 6\n"), "{resp}");

    // Many jobs on one connection, each from its own AFTER.
    let mut mux = SseClient::open(&format!("{}/api/stream?job=a:2&job=b:0", srv.url))
        .await
        .unwrap();
    let mut seqs: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let msg = mux.next().await.unwrap().expect("open");
        let job = msg.data["job"].as_str().unwrap().to_owned();
        match msg.event.as_deref() {
            Some("line") => seqs
                .entry(job)
                .or_default()
                .push(msg.data["seq"].as_u64().unwrap()),
            Some("end") => {
                assert_eq!(msg.data["summary"]["job_id"], job.as_str());
                assert_eq!(msg.data["summary"]["lines"], 6);
                ended.push(job);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs["a"], [3, 4, 5, 6]);
    assert_eq!(seqs["b"], [1, 2, 3, 4, 5, 6]);
    srv.shutdown().await;
}

#[test]
fn the_start_lines_say_where_it_listens_and_where_the_data_is() {
    let dir = TempDir::new("startline");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    out.read_line(&mut second).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("listening on http://127.0.0.1:"),
        "{first:?}"
    );
    let canonical = std::fs::canonicalize(&data).unwrap();
    assert_eq!(second, format!("data directory: {}\n", canonical.display()));
}
