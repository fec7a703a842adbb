//! Web nodes (`pipeline-runner serve --nats URL`) end to end, with faults:
//! a real `nats-server` with JetStream, real workers and web nodes as
//! processes on 127.0.0.1. Jobs posted to one node are watched on another;
//! every stream is checked line by line against the job's own log in the
//! data directory of the worker that ran it (same numbers, same lines),
//! while web nodes, workers and the NATS server are killed mid-job.
#![cfg(feature = "nats")]

mod nats_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nats_common::web::{
    alive, assert_lines, assert_stream, broker_order, call, create, finished, follow, inversions,
    job, jobs, post_job, run_bin, runner_of, running, start_worker, start_worker_in, strict,
    try_follow, until, Msg, SlowClient, Sse, WebNode, BIN,
};
use nats_common::{NatsServer, TempDir, WorkerProcess};
use nix::sys::signal::Signal;
use serde_json::Value;
use tracing_pipeline::runner::nats::{Bus, BusConfig, JOBS_STREAM, WORKER_LOST};

/// The liveness TTL of every worker and web node in these tests (they must
/// agree: whoever connects sets the bucket's max age).
const TTL: &str = "2";

fn web(nats: &str) -> WebNode {
    WebNode::start(nats, &["--worker-ttl", TTL])
}

async fn bus(url: &str, ttl: u64) -> Bus {
    let mut c = BusConfig::new(url);
    c.worker_ttl = Duration::from_secs(ttl);
    Bus::connect(c).await.unwrap()
}

/// A stage, numbered lines (`JOB line I`), a stderr line, and a clean end.
fn numbered(lines: u32) -> String {
    format!(
        r#"echo "{{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"count\",\"job_id\":\"$JOB_ID\"}}"
i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo "$JOB_ID line $i"; if [ $((i % 25)) -eq 0 ]; then sleep 0.01; fi; done
echo "$JOB_ID to stderr" >&2
echo "{{\"event\":\"layer_complete\",\"layer\":1,\"layer_name\":\"count\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":1}}"
echo "{{\"event\":\"pipeline_complete\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":2}}""#
    )
}

/// `layer_start`, `first` numbered lines, then waits for `gate`, then
/// `second` more lines and a clean end.
fn gated(first: u32, gate: &std::path::Path, second: u32) -> String {
    format!(
        r#"echo "{{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"gated\",\"job_id\":\"$JOB_ID\"}}"
i=0; while [ $i -lt {first} ]; do i=$((i+1)); echo "line $i"; done
while [ ! -f '{gate}' ]; do sleep 0.02; done
while [ $i -lt {total} ]; do i=$((i+1)); echo "line $i"; done
echo "{{\"event\":\"layer_complete\",\"layer\":1,\"layer_name\":\"gated\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":1}}"
echo "{{\"event\":\"pipeline_complete\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":2}}""#,
        gate = gate.display(),
        total = first + second
    )
}

/// A stage that never ends, ticking; writes its shell's pid to
/// `PIDS/JOB_ID` first.
fn endless(pids: &std::path::Path) -> String {
    format!(
        r#"echo $$ > '{pids}/'"$JOB_ID"
echo "{{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"endless\",\"job_id\":\"$JOB_ID\"}}"
n=0; while true; do n=$((n+1)); echo "tick $n"; sleep 0.05; done"#,
        pids = pids.display()
    )
}

fn events<'a>(lines: &'a [Msg], name: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .map(|m| &m.data)
        .filter(|d| d["event"] == name)
        .collect()
}

/// The fields on which two nodes' summaries of a finished job must agree.
fn summary_key(s: &Value) -> Value {
    serde_json::json!({
        "job_id": s["job_id"], "state": s["state"], "status": s["status"],
        "outcome": s["outcome"], "reason": s["reason"], "lines": s["lines"],
        "counts": s["counts"],
    })
}

/// The held-out scenario: three workers, two web nodes; jobs posted to
/// node A and watched on node B from their start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_posted_to_one_node_stream_on_the_other_line_for_line() {
    let server = NatsServer::start();
    let url = server.url();
    let script = format!(
        "case \"$JOB_ID\" in ref-*) exec '{BIN}' reference --speed 0.05 ;; esac\n{}",
        numbered(150)
    );
    let workers: Vec<WorkerProcess> = (0..3)
        .map(|_| start_worker(&url, &script, TTL, &["--max-running", "2"]))
        .collect();
    let refs: Vec<&WorkerProcess> = workers.iter().collect();
    let a = web(&url);
    let b = web(&url);
    let ids: Vec<String> = (1..=6)
        .map(|i| format!("held-{i}"))
        .chain((1..=3).map(|i| format!("ref-{i}")))
        .collect();
    // Node B's job-list stream, open before any job exists.
    let mut list_stream = Sse::open_path(&b.url, "/api/stream?jobs=1", None)
        .await
        .unwrap_or_else(|e| panic!("the job-list stream of node B: {e:?}"));
    let mut watchers = Vec::new();
    for id in &ids {
        create(&a.url, id).await;
        let (node, id) = (b.url.clone(), id.clone());
        watchers.push(tokio::spawn(async move { strict(&node, &id, 60).await }));
    }
    for (id, watcher) in ids.iter().zip(watchers) {
        let msgs = watcher.await.unwrap();
        let runner = runner_of(&refs, id);
        let stored = runner.stored_lines(id);
        assert_stream(&format!("job {id} on node B (live)"), &msgs, &stored);
        // The same ids and lines on node A, replayed after the end.
        let again = strict(&a.url, id, 30).await;
        assert_stream(&format!("job {id} on node A (replay)"), &again, &stored);
        let completes = events(&msgs, "pipeline_complete");
        assert_eq!(completes.len(), 1, "job {id}: {completes:?}");
        assert_eq!(completes[0]["status"], "success", "job {id}");
        if id.starts_with("held-") {
            let texts: Vec<&str> = msgs
                .iter()
                .filter(|m| m.data["type"] == "output" && m.data["stream"] != "stderr")
                .map(|m| m.data["text"].as_str().unwrap())
                .collect();
            let want: Vec<String> = (1..=150).map(|i| format!("{id} line {i}")).collect();
            assert_eq!(texts, want, "job {id}: its numbered lines in order");
        }
    }
    // Both nodes list the same jobs with the same final summaries.
    let mut lists = Vec::new();
    for node in [&a.url, &b.url] {
        let list = until(
            20,
            &format!("every job finished in {node}'s list"),
            || async {
                let list = jobs(node).await?;
                let done: BTreeMap<String, Value> = list
                    .iter()
                    .filter(|s| s["state"] == "finished")
                    .map(|s| (s["job_id"].as_str().unwrap().to_owned(), s.clone()))
                    .collect();
                (done.len() == ids.len() && list.len() == ids.len()).then_some(done)
            },
        )
        .await;
        lists.push(list);
    }
    for id in &ids {
        let (sa, sb) = (&lists[0][id], &lists[1][id]);
        assert_eq!(
            summary_key(sa),
            summary_key(sb),
            "job {id}: node A vs node B"
        );
        assert_eq!(sa, sb, "job {id}: the whole summary, node A vs node B");
        assert_eq!(sa["outcome"], "success", "job {id}: {sa}");
        let stored = runner_of(&refs, id).stored_lines(id);
        assert_eq!(sa["lines"], stored.len() as u64, "job {id}: {sa}");
    }
    // The job list on B told of every job's end, with its final summary.
    let mut announced: BTreeMap<String, Value> = BTreeMap::new();
    while !ids.iter().all(|id| {
        announced
            .get(id)
            .is_some_and(|s| summary_key(s) == summary_key(&lists[1][id]))
    }) {
        let msg = list_stream
            .next(Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("node B's job list: {e}; last announced: {announced:#?}"))
            .expect("node B's job-list stream stays open");
        if msg.event.as_deref() == Some("jobs") {
            let id = msg.data["job_id"].as_str().unwrap_or_default().to_owned();
            announced.insert(id, msg.data);
        }
    }
    // All nine on one connection of node B, the page's stream of many jobs.
    let query: Vec<String> = ids.iter().map(|id| format!("job={id}:0")).collect();
    let path = format!("/api/stream?{}", query.join("&"));
    let mut sse = Sse::open_path(&b.url, &path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on node B: {e:?}"));
    let mut per_job: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
    let mut ends = BTreeMap::new();
    while ends.len() < ids.len() {
        let msg = sse
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{path} on node B: {e}"))
            .unwrap_or_else(|| panic!("{path} on node B closed before every end"));
        let job = msg.data["job"].as_str().unwrap_or_default().to_owned();
        match msg.event.as_deref() {
            Some("line") => per_job.entry(job).or_default().push(Msg {
                id: msg.data["seq"].as_u64(),
                event: None,
                data: msg.data["data"].clone(),
            }),
            Some("end") => {
                assert!(
                    ends.insert(job.clone(), msg.data["summary"].clone())
                        .is_none(),
                    "two ends of {job}"
                );
            }
            other => panic!("{path} on node B: unexpected {other:?}: {msg:?}"),
        }
    }
    for id in &ids {
        let stored = runner_of(&refs, id).stored_lines(id);
        let lines = per_job.remove(id).unwrap_or_default();
        assert_lines(&format!("job {id} in {path} on node B"), &lines, &stored, 0);
        assert_eq!(
            summary_key(&ends[id]),
            summary_key(&lists[1][id]),
            "job {id}: the end in {path}"
        );
    }
    // The three workers shared the work.
    let used = workers
        .iter()
        .filter(|w| ids.iter().any(|id| w.has_job(id)))
        .count();
    assert!(used >= 2, "only {used} of 3 workers ran any of 9 jobs");
}

/// A web node killed while clients stream a running job: they resume on
/// the other node with `Last-Event-ID` and miss and repeat nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_web_node_resume_on_the_other() {
    let server = NatsServer::start();
    let url = server.url();
    let gates = TempDir::new("web-gates");
    let go = gates.path().join("go");
    let worker = start_worker(&url, &gated(40, &go, 40), TTL, &[]);
    let mut a = web(&url);
    let b = web(&url);
    let id = "resumed";
    create(&b.url, id).await;
    // Three clients on A read everything printed so far (41 lines); a
    // fourth stops reading at line 10.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Sse::open_when_known(&a.url, id, None, 20).await);
    }
    let mut lazy = Sse::open_when_known(&a.url, id, None, 20).await;
    let mut got: Vec<Vec<Msg>> = Vec::new();
    for (n, client) in clients.iter_mut().enumerate() {
        let mut lines = Vec::new();
        while lines.last().is_none_or(|m: &Msg| m.id < Some(41)) {
            let msg = client
                .next(Duration::from_secs(20))
                .await
                .unwrap_or_else(|e| panic!("client {n} on A: {e}"))
                .unwrap_or_else(|| panic!("client {n} on A: closed early"));
            lines.push(msg);
        }
        got.push(lines);
    }
    let mut lazy_lines = Vec::new();
    while lazy_lines.len() < 10 {
        lazy_lines.push(lazy.next(Duration::from_secs(20)).await.unwrap().unwrap());
    }
    assert_eq!(running(&b.url, id, 10).await["state"], "running");
    a.kill();
    // Each connection to A ends (closed or broken), with nothing new.
    for (n, client) in clients.iter_mut().enumerate() {
        match client.next(Duration::from_secs(10)).await {
            Ok(Some(msg)) => {
                panic!("client {n}: a message after line 41 from a dead node: {msg:?}")
            }
            Ok(None) => {}
            Err(e) if e.starts_with("connection broke") => {}
            Err(e) => panic!("client {n}: the connection to the killed node: {e}"),
        }
    }
    drop(lazy);
    std::fs::write(&go, "").unwrap();
    for (n, lines) in got.iter_mut().enumerate() {
        let last = lines.last().unwrap().id.unwrap();
        let mut sse = Sse::open(&b.url, id, Some(last))
            .await
            .unwrap_or_else(|e| panic!("client {n} reconnecting to B: {e:?}"));
        let rest = sse
            .until_end(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("client {n} on B after {last}: {e}"));
        lines.extend(rest);
    }
    let mut sse = Sse::open(&b.url, id, Some(10)).await.unwrap();
    lazy_lines.extend(sse.until_end(Duration::from_secs(30)).await.unwrap());
    let stored = worker.stored_lines(id);
    assert_eq!(
        stored.len(),
        83,
        "layer_start, 80 lines, layer_complete, pipeline_complete"
    );
    for (n, lines) in got.iter().enumerate() {
        assert_stream(&format!("job {id}, client {n} (A then B)"), lines, &stored);
    }
    assert_stream(
        &format!("job {id}, client that resumed at 10"),
        &lazy_lines,
        &stored,
    );
    // `?after=N` as the single-process runner takes it; a bad id is 400.
    let mut sse = Sse::open_path(&b.url, &format!("/api/jobs/{id}/events?after=80"), None)
        .await
        .unwrap();
    let tail = sse.until_end(Duration::from_secs(20)).await.unwrap();
    let (end, lines) = tail.split_last().unwrap();
    assert!(end.is_end(), "{end:?}");
    assert_lines(&format!("job {id} ?after=80 on B"), lines, &stored, 80);
    let resp = reqwest::Client::new()
        .get(format!("{}/api/jobs/{id}/events", b.url))
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "Last-Event-ID: x");
}

/// A worker killed mid-job: the job ends `error` / `worker lost` exactly
/// once, on both web nodes, and its streams end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_ends_worker_lost_once_on_both_nodes() {
    let server = NatsServer::start();
    let url = server.url();
    let pids = TempDir::new("web-pids");
    let mut worker = start_worker(&url, &endless(pids.path()), TTL, &[]);
    let a = web(&url);
    let b = web(&url);
    let id = "orphaned";
    create(&a.url, id).await;
    let watch_a = {
        let node = a.url.clone();
        tokio::spawn(async move { strict(&node, id, 60).await })
    };
    let watch_b = {
        let node = b.url.clone();
        tokio::spawn(async move { strict(&node, id, 60).await })
    };
    until(20, "5 lines of the job on node B", || async {
        job(&b.url, id)
            .await
            .filter(|j| j["lines"].as_u64() >= Some(5))
    })
    .await;
    worker.kill();
    let on_a = watch_a.await.unwrap();
    let on_b = watch_b.await.unwrap();
    assert_eq!(on_a, on_b, "job {id}: the streams of nodes A and B differ");
    let (end, lines) = on_b.split_last().unwrap();
    assert!(end.is_end(), "{end:?}");
    for (i, m) in lines.iter().enumerate() {
        assert_eq!(
            m.id,
            Some(i as u64 + 1),
            "job {id}: gap or repeat at message {i}: {m:?}"
        );
    }
    let n = lines.len();
    let completes = events(lines, "pipeline_complete");
    assert_eq!(
        completes.len(),
        1,
        "job {id}: pipeline_complete lines: {completes:?}"
    );
    let complete = &lines[n - 1].data;
    assert_eq!(complete["event"], "pipeline_complete", "{complete}");
    assert_eq!(complete["status"], "error", "{complete}");
    assert_eq!(complete["error"], WORKER_LOST, "{complete}");
    let closing = &lines[n - 2].data;
    assert_eq!(closing["event"], "layer_error", "{closing}");
    assert_eq!(closing["layer_name"], "endless", "{closing}");
    assert_eq!(closing["error"], WORKER_LOST, "{closing}");
    // Everything before the closing lines is the worker's own log.
    let stored = worker.stored_lines(id);
    assert!(
        stored.len() >= n - 2,
        "the stream has lines the worker never stored"
    );
    assert_lines(
        &format!("job {id} before its end"),
        &lines[..n - 2],
        &stored[..n - 2],
        0,
    );
    for node in [&a.url, &b.url] {
        let j = finished(node, id, 20).await;
        assert_eq!(j["status"], "error", "job {id} on {node}: {j}");
        assert_eq!(j["reason"], WORKER_LOST, "job {id} on {node}: {j}");
        assert_eq!(j["lines"], n as u64, "job {id} on {node}: {j}");
        assert_eq!(j["stages"][0]["status"], "error", "job {id} on {node}: {j}");
    }
    // Still ended once: nothing was appended after the first end.
    let bus = bus(&url, 2).await;
    assert_eq!(
        bus.last_seq(id).await.unwrap(),
        n as u64,
        "job {id}: a second end?"
    );
}

/// `nats-server` restarted mid-job on the same port and store: the
/// worker and both web nodes reconnect, and every line reaches each node's
/// client once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_job_loses_and_repeats_nothing_on_either_node() {
    let mut server = NatsServer::start();
    let url = server.url();
    let gates = TempDir::new("web-gates");
    let (ga, gb) = (gates.path().join("a"), gates.path().join("b"));
    let script = format!(
        r#"case "$JOB_ID" in after-*) echo "after the restart"; exit 0 ;; esac
i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo "line $i"; done
while [ ! -f '{a}' ]; do sleep 0.02; done
while [ $i -lt 100 ]; do i=$((i+1)); echo "line $i"; done
while [ ! -f '{b}' ]; do sleep 0.02; done
echo last
echo "{{\"event\":\"pipeline_complete\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":2}}""#,
        a = ga.display(),
        b = gb.display()
    );
    let worker = start_worker(&url, &script, TTL, &[]);
    let a = web(&url);
    let b = web(&url);
    let id = "outage";
    create(&a.url, id).await;
    let followers: Vec<_> = [&a.url, &b.url]
        .into_iter()
        .map(|node| {
            let nodes = vec![node.clone()];
            tokio::spawn(async move { follow(&nodes, id, None, 90).await })
        })
        .collect();
    until(20, "50 lines of the job on node B", || async {
        job(&b.url, id)
            .await
            .filter(|j| j["lines"].as_u64() >= Some(50))
    })
    .await;
    server.stop();
    std::fs::write(&ga, "").unwrap();
    until(20, "100 lines stored while NATS is down", || async {
        (worker.stored_lines(id).len() >= 100).then_some(())
    })
    .await;
    // The fault's length, not a wait for a state: the server stays down
    // longer than the liveness TTL, so every liveness entry has expired
    // when it comes back, and no node may take the live worker for lost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    let restarted = Instant::now();
    std::fs::write(&gb, "").unwrap();
    let on_broker = {
        let url = url.clone();
        tokio::spawn(async move {
            let bus = bus(&url, 2).await;
            until(60, "the job's last line on the broker", || async {
                (bus.last_seq(id).await.ok()? >= 102).then_some(())
            })
            .await;
            restarted.elapsed()
        })
    };
    let mut seen = Vec::new();
    for follower in followers {
        seen.push(follower.await.unwrap());
    }
    let stored = worker.stored_lines(id);
    assert_eq!(stored.len(), 102, "100 lines, `last`, pipeline_complete");
    for (node, seen) in ["A", "B"].into_iter().zip(&seen) {
        assert_lines(&format!("job {id} on node {node}"), &seen.lines, &stored, 0);
        eprintln!("node {node}: {} connections", seen.connections);
    }
    eprintln!(
        "job {id}: its last line was on the broker {:?} after the restart, \
         both nodes' clients had its end after {:?}",
        on_broker.await.unwrap(),
        restarted.elapsed()
    );
    for node in [&a.url, &b.url] {
        let j = finished(node, id, 30).await;
        assert_eq!(j["outcome"], "success", "job {id} on {node}: {j}");
        assert_eq!(j["lines"], 102, "job {id} on {node}: {j}");
    }
    // Both nodes work after the restart: a job posted to A streams on B.
    create(&a.url, "after-1").await;
    let msgs = strict(&b.url, "after-1", 30).await;
    assert_stream(
        "job after-1 on node B",
        &msgs,
        &worker.stored_lines("after-1"),
    );
}

/// A client that reads nothing (a tiny receive buffer) does not hold up
/// another client of the same job on the same node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_slow_the_others() {
    let server = NatsServer::start();
    let url = server.url();
    // About 8 MB: far more than the socket buffers between a node and a
    // client that reads nothing.
    let script = r#"awk 'BEGIN { pad = sprintf("%180s", ""); gsub(/ /, "x", pad); for (i = 1; i <= 40000; i++) printf "line %d %s\n", i, pad }'"#;
    let worker = start_worker(&url, script, TTL, &[]);
    let a = web(&url);
    let id = "bulky";
    create(&a.url, id).await;
    until(20, "the job known on node A", || job(&a.url, id)).await;
    let slow = SlowClient::open(&a.url, id, 2048).await;
    let fast = strict(&a.url, id, 120).await;
    let stored = worker.stored_lines(id);
    assert_eq!(stored.len(), 40001);
    assert_stream(&format!("job {id}, the fast client"), &fast, &stored);
    // The slow one, read now, still gets everything (resuming as a
    // browser would, should the node have dropped it).
    let (status, mut msgs) = slow.read_to_end(64 * 1024, 120).await;
    assert_eq!(status, 200, "the slow client's reply");
    if !msgs.last().is_some_and(Msg::is_end) {
        let last = msgs.iter().rev().find_map(|m| m.id);
        eprintln!("the slow client was dropped after id {last:?}: resuming");
        let rest = follow(std::slice::from_ref(&a.url), id, last, 60).await;
        msgs.extend(rest.lines);
        msgs.extend(rest.end);
    }
    assert_stream(&format!("job {id}, the slow client"), &msgs, &stored);
}

/// Two workers racing for each job: exactly one runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_run_each_web_job_once() {
    let server = NatsServer::start();
    let url = server.url();
    let script = r#"echo "run $JOB_ID"; sleep 0.05; echo done"#;
    let one = start_worker(&url, script, TTL, &["--max-running", "2"]);
    let two = start_worker(&url, script, TTL, &["--max-running", "2"]);
    let refs = [&one, &two];
    let a = web(&url);
    let b = web(&url);
    let ids: Vec<String> = (0..8).map(|i| format!("race-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        create(if i % 2 == 0 { &a.url } else { &b.url }, id).await;
    }
    let bus = bus(&url, 2).await;
    for id in &ids {
        let msgs = strict(&a.url, id, 30).await;
        let runner = runner_of(&refs, id);
        assert_stream(
            &format!("job {id} on node A"),
            &msgs,
            &runner.stored_lines(id),
        );
        let runs = msgs
            .iter()
            .filter(|m| m.data["text"] == format!("run {id}"))
            .count();
        assert_eq!(runs, 1, "job {id} ran {runs} times");
        let state = bus.job_state(id).await.unwrap().unwrap().0;
        assert_eq!(
            state.worker.as_deref(),
            Some(runner.id.as_str()),
            "job {id}"
        );
    }
}

/// A job id that is not a valid subject token is refused with 400, and
/// nothing reaches the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_job_ids_are_refused_and_nothing_is_published() {
    let server = NatsServer::start();
    let url = server.url();
    let a = WebNode::start(&url, &["--worker-ttl", TTL, "--node-id", "node-a"]);
    let (status, health) = call("GET", &format!("{}/api/health", a.url), "").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["role"], "web", "{health}");
    assert_eq!(health["nats"], url.as_str(), "{health}");
    assert_eq!(health["node_id"], "node-a", "{health}");
    let long = "x".repeat(65);
    for bad in ["a.b", "*", ">", "a b", "a>", "x.*", long.as_str(), ""] {
        let (status, body) = post_job(&a.url, bad).await;
        assert_eq!(status, 400, "POST job id {bad:?}: {body}");
        assert!(body["error"].is_string(), "POST job id {bad:?}: {body}");
    }
    let (status, _) = call("GET", &format!("{}/api/jobs/a.b/events", a.url), "").await;
    assert_eq!(status, 400, "GET /api/jobs/a.b/events");
    let bus = bus(&url, 2).await;
    assert_eq!(
        bus.job_ids().await.unwrap(),
        Vec::<String>::new(),
        "state entries"
    );
    let js = async_nats::jetstream::new(bus.client().clone());
    let mut requests = js.get_stream(JOBS_STREAM).await.unwrap();
    assert_eq!(
        requests.info().await.unwrap().state.messages,
        0,
        "job requests"
    );
    // The largest valid id is taken (so the checks above would have seen a
    // published job), and only once.
    let max = "y".repeat(64);
    create(&a.url, &max).await;
    assert_eq!(bus.job_ids().await.unwrap(), vec![max.clone()]);
    assert_eq!(
        requests.info().await.unwrap().state.messages,
        1,
        "job requests"
    );
    let (status, body) = post_job(&a.url, &max).await;
    assert_eq!(status, 409, "a duplicate id: {body}");
    // The same id posted to two nodes at once: one 201, one 409.
    let b = web(&url);
    until(20, "node B up to date", || async {
        (jobs(&b.url).await?.len() == 1).then_some(())
    })
    .await;
    for i in 0..5 {
        let id = format!("twice-{i}");
        let (ra, rb) = tokio::join!(post_job(&a.url, &id), post_job(&b.url, &id));
        let mut codes = [ra.0, rb.0];
        codes.sort();
        assert_eq!(
            codes,
            [201, 409],
            "job {id} posted to both nodes at once: {ra:?} {rb:?}"
        );
    }
    assert_eq!(
        requests.info().await.unwrap().state.messages,
        6,
        "job requests"
    );
}

/// NATS unreachable at start: a clear error naming the URL, quickly.
#[test]
fn a_web_node_without_nats_fails_naming_the_url() {
    let dir = TempDir::new("web-unreachable");
    let nats = "nats://127.0.0.1:1";
    let data = dir.path().join("cache");
    let data = data.to_str().unwrap();
    for args in [
        &[
            "serve",
            "--nats",
            nats,
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            data,
        ][..],
        &["--nats", nats, "--bind", "127.0.0.1:0", "--data-dir", data],
    ] {
        let out = run_bin(args, Duration::from_secs(20));
        let status = out
            .status
            .unwrap_or_else(|| panic!("{args:?}: still running after 20 s"));
        assert!(!status.success(), "{args:?}: {status}");
        assert!(
            out.took < Duration::from_secs(10),
            "{args:?}: took {:?}",
            out.took
        );
        assert!(
            out.stderr
                .contains(&format!("cannot connect to NATS at {nats}")),
            "{args:?}: stderr {:?}",
            out.stderr
        );
        assert!(
            !out.stdout.contains("listening on"),
            "{args:?}: {:?}",
            out.stdout
        );
    }
}

/// Cancel a queued job (no worker yet) on the other node: it ends
/// `cancelled` and never runs, even once a worker starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_cancelled_through_a_web_node_never_runs() {
    let server = NatsServer::start();
    let url = server.url();
    let a = web(&url);
    let b = web(&url);
    let id = "never-run";
    create(&a.url, id).await;
    until(20, "the job known on node B", || job(&b.url, id)).await;
    let (status, body) = call("POST", &format!("{}/api/jobs/{id}/cancel", b.url), "").await;
    assert!(
        status == 200 || status == 202,
        "cancel a queued job: {status} {body}"
    );
    for node in [&a.url, &b.url] {
        let j = finished(node, id, 20).await;
        assert_eq!(j["outcome"], "cancelled", "job {id} on {node}: {j}");
        assert_eq!(j["reason"], "cancelled", "job {id} on {node}: {j}");
    }
    let msgs = strict(&a.url, id, 20).await;
    assert!(msgs.last().unwrap().is_end());
    for m in &msgs[..msgs.len() - 1] {
        assert_ne!(m.data["type"], "output", "job {id} printed: {m:?}");
    }
    let (status, body) = call("POST", &format!("{}/api/jobs/{id}/cancel", a.url), "").await;
    assert_eq!(status, 409, "cancel a finished job: {body}");
    // A worker now: it runs a later job, and never the cancelled one.
    let worker = start_worker(&url, r#"echo "ran $JOB_ID""#, TTL, &[]);
    create(&a.url, "probe").await;
    finished(&b.url, "probe", 20).await;
    assert!(worker.has_job("probe"));
    assert!(!worker.has_job(id), "the worker ran the cancelled job {id}");
    let j = job(&b.url, id).await.unwrap();
    assert_eq!(j["outcome"], "cancelled", "job {id}: {j}");
}

/// A running job posted to A and cancelled on B ends as a cancelled job
/// does, and its child is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_cancelled_on_the_other_node_stops_its_child() {
    let server = NatsServer::start();
    let url = server.url();
    let pids = TempDir::new("web-pids");
    let worker = start_worker(&url, &endless(pids.path()), TTL, &[]);
    let a = web(&url);
    let b = web(&url);
    let id = "stopped";
    create(&a.url, id).await;
    until(20, "3 lines of the job on node B", || async {
        job(&b.url, id)
            .await
            .filter(|j| j["lines"].as_u64() >= Some(3))
    })
    .await;
    let pid: u32 = std::fs::read_to_string(pids.path().join(id))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let (status, body) = call("POST", &format!("{}/api/jobs/{id}/cancel", b.url), "").await;
    assert!(
        status == 200 || status == 202,
        "cancel a running job: {status} {body}"
    );
    for node in [&a.url, &b.url] {
        let j = finished(node, id, 20).await;
        assert_eq!(j["outcome"], "cancelled", "job {id} on {node}: {j}");
        assert_eq!(j["reason"], "cancelled", "job {id} on {node}: {j}");
        assert_eq!(
            j["stages"][0]["status"], "cancelled",
            "job {id} on {node}: {j}"
        );
    }
    until(10, "the child to be gone", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    let stored = worker.stored_lines(id);
    for node in [&a.url, &b.url] {
        let msgs = strict(node, id, 20).await;
        assert_stream(&format!("job {id} on {node}"), &msgs, &stored);
        let lines = &msgs[..msgs.len() - 1];
        let last = &lines[lines.len() - 1].data;
        assert_eq!(last["event"], "pipeline_complete", "{last}");
        assert_eq!(last["error"], "cancelled", "{last}");
        let closing = &lines[lines.len() - 2].data;
        assert_eq!(closing["event"], "layer_error", "{closing}");
        assert_eq!(closing["error"], "cancelled", "{closing}");
    }
}

/// Cancelling a running job whose worker does not answer (stopped with
/// SIGSTOP): 503 within about 10 s; once it runs again, cancel works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_whose_worker_is_stopped_gives_503() {
    let server = NatsServer::start();
    let url = server.url();
    let pids = TempDir::new("web-pids");
    // A long TTL: the stopped worker must not be taken for lost meanwhile.
    let worker = start_worker(&url, &endless(pids.path()), "60", &[]);
    let a = WebNode::start(&url, &["--worker-ttl", "60"]);
    let id = "unanswered";
    create(&a.url, id).await;
    until(20, "3 lines of the job on node A", || async {
        job(&a.url, id)
            .await
            .filter(|j| j["lines"].as_u64() >= Some(3))
    })
    .await;
    worker.signal(Signal::SIGSTOP);
    let start = Instant::now();
    let (status, body) = call("POST", &format!("{}/api/jobs/{id}/cancel", a.url), "").await;
    let took = start.elapsed();
    worker.signal(Signal::SIGCONT);
    assert_eq!(status, 503, "cancel with the worker stopped: {body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(took < Duration::from_secs(10), "the 503 took {took:?}");
    // Running again: the job can be cancelled (the earlier request may
    // already have reached it when it woke: then it is 409).
    let (status, body) = call("POST", &format!("{}/api/jobs/{id}/cancel", a.url), "").await;
    assert!(
        [200, 202, 409].contains(&status),
        "cancel again: {status} {body}"
    );
    let j = finished(&a.url, id, 20).await;
    assert_eq!(j["outcome"], "cancelled", "job {id}: {j}");
}

/// A finished job deleted on A disappears from B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_on_one_node_disappears_from_the_other() {
    let server = NatsServer::start();
    let url = server.url();
    let gates = TempDir::new("web-gates");
    let go = gates.path().join("go");
    let script = format!(
        r#"case "$JOB_ID" in hold*) while [ ! -f '{}' ]; do sleep 0.02; done ;; esac; echo "hi $JOB_ID""#,
        go.display()
    );
    let _worker = start_worker(&url, &script, TTL, &[]);
    let a = web(&url);
    let b = web(&url);
    create(&a.url, "doomed").await;
    create(&a.url, "kept").await;
    create(&a.url, "hold").await;
    finished(&b.url, "doomed", 20).await;
    finished(&b.url, "kept", 20).await;
    running(&b.url, "hold", 20).await;
    let (status, body) = call("DELETE", &format!("{}/api/jobs/hold", b.url), "").await;
    assert_eq!(status, 409, "DELETE a running job: {body}");
    let mut list_stream = Sse::open_path(&b.url, "/api/stream?jobs=1", None)
        .await
        .unwrap_or_else(|e| panic!("the job-list stream of node B: {e:?}"));
    let (status, body) = call("DELETE", &format!("{}/api/jobs/doomed", a.url), "").await;
    assert_eq!(status, 200, "DELETE a finished job: {body}");
    assert_eq!(body["deleted"], true, "{body}");
    for node in [&b.url, &a.url] {
        until(20, &format!("job doomed gone from {node}"), || async {
            let list = jobs(node).await?;
            let ids: Vec<&str> = list.iter().filter_map(|s| s["job_id"].as_str()).collect();
            (!ids.contains(&"doomed") && ids.contains(&"kept") && ids.contains(&"hold"))
                .then_some(())
        })
        .await;
        let (status, _) = call("GET", &format!("{node}/api/jobs/doomed"), "").await;
        assert_eq!(status, 404, "GET a deleted job on {node}");
        let (status, _) = call("GET", &format!("{node}/api/jobs/doomed/events"), "").await;
        assert_eq!(status, 404, "GET a deleted job's events on {node}");
    }
    // Node B's job-list stream says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msg = list_stream
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap_or_else(|e| panic!("node B's job list never said doomed was deleted: {e}"))
            .expect("node B's job-list stream stays open");
        if msg.event.as_deref() == Some("jobs")
            && msg.data["job_id"] == "doomed"
            && msg.data["deleted"] == true
        {
            break;
        }
    }
    std::fs::write(&go, "").unwrap();
    finished(&b.url, "hold", 20).await;
    // A re-run asked of B runs, and A knows what it re-ran.
    let (status, body) = call("POST", &format!("{}/api/jobs/kept/rerun", b.url), "").await;
    assert_eq!(status, 201, "re-run: {body}");
    assert_eq!(body["rerun_of"], "kept", "{body}");
    let new = body["job_id"].as_str().unwrap().to_owned();
    let j = finished(&a.url, &new, 20).await;
    assert_eq!(j["rerun_of"], "kept", "job {new} on node A: {j}");
    let kept = job(&a.url, "kept").await.unwrap();
    assert_eq!(j["outcome"], kept["outcome"], "job {new} on node A: {j}");
    assert_eq!(j["lines"], kept["lines"], "job {new} on node A: {j}");
}

/// A web node that starts after jobs ran (a new one, and one killed and
/// started again on its own cache) shows them all, the same lines and
/// summaries as the others, and follows the job still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_node_started_later_or_again_catches_up() {
    let server = NatsServer::start();
    let url = server.url();
    let gates = TempDir::new("web-gates");
    let go = gates.path().join("go");
    let script = format!(
        "if [ \"$JOB_ID\" = hold ]; then\n{}\nelse\n{}\nfi",
        gated(20, &go, 20),
        numbered(1000)
    );
    let worker = start_worker(&url, &script, TTL, &["--max-running", "4"]);
    let a = web(&url);
    let early: Vec<String> = (1..=12).map(|i| format!("early-{i}")).collect();
    for id in &early {
        create(&a.url, id).await;
    }
    create(&a.url, "hold").await;
    for id in &early {
        finished(&a.url, id, 30).await;
    }
    until(20, "20 lines of hold on node A", || async {
        job(&a.url, "hold")
            .await
            .filter(|j| j["lines"].as_u64() >= Some(21))
    })
    .await;
    let fresh = web(&url);
    let again = WebNode::start_in(&url, &["--worker-ttl", TTL], a.into_dir());
    let nodes = [("a new node", &fresh.url), ("a restarted node", &again.url)];
    let mut lists = Vec::new();
    // A job listed `finished` with other than its final line count.
    let early_ends = std::sync::Mutex::new(Vec::new());
    for (name, node) in nodes {
        let list = until(30, &format!("every job in the list of {name}"), || async {
            let list = jobs(node).await?;
            let by_id: BTreeMap<String, Value> = list
                .iter()
                .map(|s| (s["job_id"].as_str().unwrap().to_owned(), s.clone()))
                .collect();
            for id in &early {
                if let Some(s) = by_id.get(id).filter(|s| s["state"] == "finished") {
                    if s["lines"] != 1004 {
                        early_ends
                            .lock()
                            .unwrap()
                            .push(format!("{id} lines {} on {name}", s["lines"]));
                    }
                }
            }
            let done = early.iter().all(|id| {
                by_id
                    .get(id)
                    .is_some_and(|s| s["state"] == "finished" && s["lines"] == 1004)
            });
            (done && by_id.len() == 13).then_some(by_id)
        })
        .await;
        for id in &early {
            let msgs = strict(node, id, 30).await;
            assert_stream(
                &format!("job {id} on {name}"),
                &msgs,
                &worker.stored_lines(id),
            );
        }
        lists.push(list);
    }
    for id in &early {
        assert_eq!(
            lists[0][id], lists[1][id],
            "job {id}: the new node vs the restarted one"
        );
    }
    let watchers: Vec<_> = nodes
        .iter()
        .map(|(_, node)| {
            let node = node.to_string();
            tokio::spawn(async move { strict(&node, "hold", 30).await })
        })
        .collect();
    // A client that had line 10 resumes on the restarted node.
    let resumer = {
        let node = again.url.clone();
        tokio::spawn(async move {
            let mut sse = Sse::open_when_known(&node, "hold", Some(10), 20).await;
            sse.until_end(Duration::from_secs(30)).await
        })
    };
    std::fs::write(&go, "").unwrap();
    let stored = until(20, "hold's end in the worker's log", || async {
        let s = worker.stored_lines("hold");
        (s.len() >= 43).then_some(s)
    })
    .await;
    for ((name, _), watcher) in nodes.iter().zip(watchers) {
        let msgs = watcher.await.unwrap();
        assert_stream(&format!("job hold on {name}"), &msgs, &stored);
    }
    let resumed = resumer
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("job hold resumed after 10 on the restarted node: {e}"));
    let (end, lines) = resumed.split_last().unwrap();
    assert!(end.is_end(), "{end:?}");
    assert_lines(
        "job hold resumed after 10 on the restarted node",
        lines,
        &stored,
        10,
    );
    let early_ends = early_ends.into_inner().unwrap();
    assert!(
        early_ends.is_empty(),
        "jobs listed `finished` before their lines were in (final: 1004 lines), {} times, e.g. {:?}",
        early_ends.len(),
        &early_ends[..early_ends.len().min(5)]
    );
}

/// A web node runs no commands: one after `--` is refused (exit 2).
#[test]
fn a_web_node_refuses_a_command() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = TempDir::new("web-command");
    let data = dir.path().join("cache");
    let data = data.to_str().unwrap();
    for args in [
        &[
            "serve",
            "--nats",
            &url,
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--",
            "sh",
            "-c",
            "true",
        ][..],
        &[
            "--nats",
            &url,
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--",
            "true",
        ],
    ] {
        let out = run_bin(args, Duration::from_secs(20));
        let status = out
            .status
            .unwrap_or_else(|| panic!("{args:?}: still running after 20 s"));
        assert_eq!(status.code(), Some(2), "{args:?}: stderr {:?}", out.stderr);
        assert!(
            out.stderr.contains("pipeline-runner worker"),
            "{args:?}: stderr {:?}",
            out.stderr
        );
        assert!(
            !out.stdout.contains("listening on"),
            "{args:?}: {:?}",
            out.stdout
        );
    }
}

/// SIGTERM stops a web node gracefully: its open streams end, it exits
/// 0, and the job carries on (its worker is not the node's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_web_node_and_ends_its_streams() {
    let server = NatsServer::start();
    let url = server.url();
    let pids = TempDir::new("web-pids");
    let _worker = start_worker(&url, &endless(pids.path()), TTL, &[]);
    let mut a = web(&url);
    let b = web(&url);
    let id = "outlives";
    create(&a.url, id).await;
    let mut sse = Sse::open_when_known(&a.url, id, None, 20).await;
    sse.next(Duration::from_secs(20)).await.unwrap().unwrap();
    let status = tokio::task::spawn_blocking(move || a.terminate())
        .await
        .unwrap();
    assert!(
        status.success(),
        "the web node's exit after SIGTERM: {status}"
    );
    let closed = loop {
        match sse.next(Duration::from_secs(10)).await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(closed, Ok(None))
            || matches!(&closed, Err(e) if e.starts_with("connection broke")),
        "the open stream after SIGTERM: {closed:?}"
    );
    assert_eq!(running(&b.url, id, 10).await["state"], "running");
}

/// The cache directory is the web node's own: one that holds anything
/// else is refused (exit 1) and left as it was.
#[test]
fn a_web_node_refuses_a_directory_that_is_not_its_cache() {
    let server = NatsServer::start();
    let url = server.url();
    let dir = TempDir::new("web-foreign");
    let foreign = dir.path().join("runner-data");
    std::fs::create_dir_all(foreign.join("jobs/j1")).unwrap();
    std::fs::write(foreign.join("jobs/j1/events.jsonl"), "{}\n").unwrap();
    let data = foreign.to_str().unwrap();
    let out = run_bin(
        &[
            "serve",
            "--nats",
            &url,
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            data,
        ],
        Duration::from_secs(20),
    );
    let status = out.status.expect("still running after 20 s");
    assert_eq!(status.code(), Some(1), "stderr {:?}", out.stderr);
    assert!(!out.stdout.contains("listening on"), "{:?}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(foreign.join("jobs/j1/events.jsonl")).unwrap(),
        "{}\n",
        "the foreign directory was touched"
    );
}

/// `nats-server` restarted while four jobs pour out lines to clients on
/// both web nodes: every client still gets every line once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_under_load_loses_and_repeats_nothing() {
    let mut server = NatsServer::start();
    let url = server.url();
    let script = r#"awk 'BEGIN { for (i = 1; i <= 8000; i++) { printf "%s line %d\n", ENVIRON["JOB_ID"], i; if (i % 400 == 0) { fflush(); system("sleep 0.05") } } }'"#;
    let one = start_worker(&url, script, TTL, &["--max-running", "2"]);
    let two = start_worker(&url, script, TTL, &["--max-running", "2"]);
    let refs = [&one, &two];
    let a = web(&url);
    let b = web(&url);
    let ids: Vec<String> = (1..=4).map(|i| format!("load-{i}")).collect();
    for id in &ids {
        create(&a.url, id).await;
    }
    let mut followers = Vec::new();
    for id in &ids {
        for (name, node) in [("A", &a.url), ("B", &b.url)] {
            let (nodes, id) = (vec![node.clone()], id.clone());
            followers.push((
                name,
                id.clone(),
                tokio::spawn(async move { try_follow(&nodes, &id, None, 60).await }),
            ));
        }
    }
    until(30, "2000 lines of load-1 on node B", || async {
        job(&b.url, "load-1")
            .await
            .filter(|j| j["lines"].as_u64() >= Some(2000))
    })
    .await;
    server.stop();
    // The fault's length.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();
    let bus = bus(&url, 2).await;
    for (name, id, follower) in followers {
        let seen = follower.await.unwrap();
        let stored = runner_of(&refs, &id).stored_lines(&id);
        let order = broker_order(&bus, &id).await;
        let back = inversions(&order);
        if !back.is_empty() {
            eprintln!(
                "job {id}: the events stream holds {} messages; its line numbers go back {} times \
                 (a line stored after a later one, which a replay then drops): {:?}",
                order.len(),
                back.len(),
                &back[..back.len().min(10)]
            );
        }
        if seen.end.is_none() {
            let state = bus.job_state(&id).await.unwrap().unwrap().0;
            panic!(
                "job {id} on node {name}: no `end` within 60 s of the restart: the client got {} lines, \
                 the broker's events stream holds {} ({:?} on worker {:?}), the worker stored {}",
                seen.lines.len(),
                bus.last_seq(&id).await.unwrap(),
                state.phase,
                state.worker,
                stored.len()
            );
        }
        assert_eq!(
            stored.len(),
            8001,
            "job {id}: 8000 lines and the closing one"
        );
        assert_lines(&format!("job {id} on node {name}"), &seen.lines, &stored, 0);
    }
    for id in &ids {
        for node in [&a.url, &b.url] {
            let j = finished(node, id, 30).await;
            assert_eq!(j["lines"], 8001, "job {id} on {node}: {j}");
        }
    }
}

/// A worker killed mid-job and started again at once (same id, same data
/// directory, within its TTL): the job ends `interrupted`, once, and every
/// client on both web nodes sees exactly the worker's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_again_after_a_crash_ends_its_job_interrupted() {
    let server = NatsServer::start();
    let url = server.url();
    let pids = TempDir::new("web-pids");
    let script = endless(pids.path());
    // A TTL long enough that the restart comes before anyone takes the
    // worker for lost.
    let ttl = "6";
    let args = ["--worker-id", "phoenix"];
    let worker = start_worker(&url, &script, ttl, &args);
    let a = WebNode::start(&url, &["--worker-ttl", ttl]);
    let b = WebNode::start(&url, &["--worker-ttl", ttl]);
    let id = "crashed";
    create(&a.url, id).await;
    let watchers: Vec<_> = [&a.url, &b.url]
        .into_iter()
        .map(|node| {
            let node = node.clone();
            tokio::spawn(async move { strict(&node, id, 60).await })
        })
        .collect();
    until(20, "5 lines of the job on node B", || async {
        job(&b.url, id)
            .await
            .filter(|j| j["lines"].as_u64() >= Some(5))
    })
    .await;
    let data = worker.into_data();
    let worker = start_worker_in(&url, &script, ttl, &args, data);
    let mut streams = Vec::new();
    for watcher in watchers {
        streams.push(watcher.await.unwrap());
    }
    let stored = worker.stored_lines(id);
    for (name, msgs) in ["A", "B"].iter().zip(&streams) {
        assert_stream(&format!("job {id} on node {name}"), msgs, &stored);
        let lines = &msgs[..msgs.len() - 1];
        assert_eq!(
            events(lines, "pipeline_complete").len(),
            1,
            "job {id} on node {name}"
        );
        let last = &lines[lines.len() - 1].data;
        assert_eq!(last["event"], "pipeline_complete", "{last}");
        assert!(
            last["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("interrupted"),
            "job {id} on node {name}: {last}"
        );
    }
    for node in [&a.url, &b.url] {
        let j = finished(node, id, 20).await;
        assert_eq!(j["outcome"], "interrupted", "job {id} on {node}: {j}");
        assert_eq!(j["lines"], stored.len() as u64, "job {id} on {node}: {j}");
    }
}

/// The held-out scenario with its faults at once: three workers, two web
/// nodes, six jobs posted to A and watched on both; a worker is killed
/// mid-job, then node A; A's clients resume on B. Every stream is the
/// worker's log line for line (a lost job's up to its closing lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_and_a_web_node_killed_while_six_jobs_stream() {
    let server = NatsServer::start();
    let url = server.url();
    let gates = TempDir::new("web-gates");
    let go = gates.path().join("go");
    let script = format!(
        r#"echo "{{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"work\",\"job_id\":\"$JOB_ID\"}}"
i=0; while [ ! -f '{go}' ]; do i=$((i+1)); echo "$JOB_ID line $i"; sleep 0.02; done
echo "{{\"event\":\"layer_complete\",\"layer\":1,\"layer_name\":\"work\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":1}}"
echo "{{\"event\":\"pipeline_complete\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":2}}""#,
        go = go.display()
    );
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|_| start_worker(&url, &script, TTL, &["--max-running", "2"]))
        .collect();
    let mut a = web(&url);
    let b = web(&url);
    let ids: Vec<String> = (1..=6).map(|i| format!("chaos-{i}")).collect();
    let mut on_b = Vec::new();
    let mut via_a = Vec::new();
    for id in &ids {
        create(&a.url, id).await;
        let (node, job) = (b.url.clone(), id.clone());
        on_b.push(tokio::spawn(async move { strict(&node, &job, 60).await }));
        let (nodes, job) = (vec![a.url.clone(), b.url.clone()], id.clone());
        via_a.push(tokio::spawn(
            async move { follow(&nodes, &job, None, 60).await },
        ));
    }
    for id in &ids {
        running(&b.url, id, 20).await;
        until(20, &format!("10 lines of {id} on node B"), || async {
            job(&b.url, id)
                .await
                .filter(|j| j["lines"].as_u64() >= Some(10))
        })
        .await;
    }
    let bus = bus(&url, 2).await;
    let victim = bus
        .job_state("chaos-1")
        .await
        .unwrap()
        .unwrap()
        .0
        .worker
        .unwrap();
    let lost: Vec<String> = {
        let w = workers.iter_mut().find(|w| w.id == victim).unwrap();
        w.kill();
        ids.iter().filter(|id| w.has_job(id)).cloned().collect()
    };
    a.kill();
    for id in &lost {
        finished(&b.url, id, 30).await;
    }
    std::fs::write(&go, "").unwrap();
    let refs: Vec<&WorkerProcess> = workers.iter().collect();
    for ((id, strict_b), follow_a) in ids.iter().zip(on_b).zip(via_a) {
        let msgs = strict_b.await.unwrap();
        let resumed = follow_a.await.unwrap();
        let mut again = resumed.lines.clone();
        again.extend(resumed.end);
        assert_eq!(
            msgs, again,
            "job {id}: node B's stream vs the client that began on A and resumed on B"
        );
        assert!(
            resumed.connections >= 2,
            "job {id}: the client on A never had to resume"
        );
        let stored = runner_of(&refs, id).stored_lines(id);
        let lines = &msgs[..msgs.len() - 1];
        assert_eq!(events(lines, "pipeline_complete").len(), 1, "job {id}");
        if lost.contains(id) {
            let n = lines.len();
            let last = &lines[n - 1].data;
            assert_eq!(last["error"], WORKER_LOST, "job {id}: {last}");
            assert_eq!(lines[n - 2].data["error"], WORKER_LOST, "job {id}");
            assert!(
                stored.len() >= n - 2,
                "job {id}: lines the worker never stored"
            );
            assert_lines(
                &format!("job {id} (lost) on node B"),
                &lines[..n - 2],
                &stored[..n - 2],
                0,
            );
        } else {
            assert_stream(&format!("job {id} on node B"), &msgs, &stored);
            assert_eq!(lines[lines.len() - 1].data["status"], "success", "job {id}");
        }
    }
}
