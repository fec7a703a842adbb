//! The queue (`max_running`): jobs beyond it wait as `queued` with a
//! position, start first come first served, can be cancelled while queued,
//! survive a restart; the API answers while the queue is full. Also
//! re-runs, and the W3C trace context each child gets.
#![cfg(feature = "runner")]

mod runner_common;

use std::path::Path;

use runner_common::{get_json, poll, send_json, sh, wait_finished, Server, SseClient, TempDir};
use serde_json::{json, Value};
use tracing_pipeline::runner::RunnerOptions;

/// A pipeline that notes its start in `dir/order`, then waits until the
/// test creates `dir/go-$JOB_ID`.
fn gated(dir: &Path) -> Vec<std::ffi::OsString> {
    let d = dir.display();
    sh(&format!(
        r#"echo "$JOB_ID" >> {d}/order; echo started; while [ ! -e {d}/go-"$JOB_ID" ]; do sleep 0.02; done; echo done"#
    ))
}

fn release(dir: &Path, id: &str) {
    std::fs::write(dir.join(format!("go-{id}")), b"").unwrap();
}

async fn job(url: &str, id: &str) -> Value {
    get_json(&format!("{url}/api/jobs/{id}")).await.unwrap()
}

async fn wait_state(url: &str, id: &str, state: &str) -> Value {
    poll(&format!("{id} to be {state}"), || async {
        let v = job(url, id).await;
        (v["state"] == state).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_wait_in_order_can_leave_the_queue_and_the_api_still_answers() {
    let gate = TempDir::new("gate");
    let opts = RunnerOptions::default().max_running(1);
    let srv = Server::start_with(gated(gate.path()), opts, None).await;
    let (status, a) = send_json(
        "POST",
        &format!("{}/api/jobs", srv.url),
        r#"{"job_id":"a"}"#,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(a["state"], "running");
    for id in ["b", "c", "d"] {
        let (status, v) = send_json(
            "POST",
            &format!("{}/api/jobs", srv.url),
            &json!({"job_id":id}).to_string(),
        )
        .await;
        assert_eq!(status, 201);
        assert_eq!(
            (&v["state"], &v["outcome"]),
            (&json!("queued"), &json!("queued"))
        );
        assert!(v.get("started_at").is_none(), "{v}");
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    }
    // A client of a queued job waits for its lines.
    let mut d_stream = SseClient::connect(&srv.url, "d", None).await.unwrap();
    for (id, pos) in [("b", 1), ("c", 2), ("d", 3)] {
        assert_eq!(job(&srv.url, id).await["queue_position"], pos, "{id}");
    }
    assert!(job(&srv.url, "a").await.get("queue_position").is_none());
    // The queue is full; the API answers.
    let list = get_json(&format!("{}/api/jobs", srv.url)).await.unwrap();
    assert_eq!(list["total"], 4);
    let outcomes: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["queued", "queued", "queued", "running"]);
    let queued = get_json(&format!("{}/api/jobs?status=queued", srv.url))
        .await
        .unwrap();
    assert_eq!(queued["total"], 3);
    let health = get_json(&format!("{}/api/health", srv.url)).await.unwrap();
    assert_eq!(
        (
            &health["running"],
            &health["queued"],
            &health["max_running"]
        ),
        (&json!(1), &json!(3), &json!(1))
    );

    // Cancelled while queued: it leaves the queue and ends cancelled, never started.
    let (status, _) = send_json("POST", &format!("{}/api/jobs/c/cancel", srv.url), "").await;
    assert_eq!(status, 202);
    let c = wait_finished(&srv.url, "c").await;
    assert_eq!(
        (&c["state"], &c["outcome"], &c["reason"]),
        (&json!("finished"), &json!("cancelled"), &json!("cancelled"))
    );
    assert!(
        c.get("started_at").is_none() && c.get("queue_position").is_none(),
        "{c}"
    );
    let (status, _) = send_json("POST", &format!("{}/api/jobs/c/cancel", srv.url), "").await;
    assert_eq!(status, 409, "a second cancel: it has ended");
    assert_eq!(job(&srv.url, "b").await["queue_position"], 1);
    assert_eq!(job(&srv.url, "d").await["queue_position"], 2);
    // Deleting or re-running a queued job: 409.
    let (status, _) = send_json("DELETE", &format!("{}/api/jobs/d", srv.url), "").await;
    assert_eq!(status, 409);
    let (status, _) = send_json("POST", &format!("{}/api/jobs/d/rerun", srv.url), "").await;
    assert_eq!(status, 409);

    release(gate.path(), "a");
    wait_finished(&srv.url, "a").await;
    let b = wait_state(&srv.url, "b", "running").await;
    assert!(b["started_at"].as_str().unwrap() >= b["created_at"].as_str().unwrap());
    assert_eq!(job(&srv.url, "d").await["queue_position"], 1);
    release(gate.path(), "b");
    release(gate.path(), "d");
    wait_finished(&srv.url, "d").await;
    let msgs = d_stream.until_end().await.unwrap();
    let texts = runner_common::output_texts(&msgs);
    assert_eq!(texts, ["started", "done"]);
    let order = std::fs::read_to_string(gate.path().join("order")).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["a", "b", "d"],
        "first come, first served; c never ran"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_stay_queued_across_a_restart() {
    let gate = TempDir::new("gate2");
    let opts = RunnerOptions::default().max_running(1);
    let srv = Server::start_with(gated(gate.path()), opts.clone(), None).await;
    for id in ["first", "second", "third"] {
        runner_common::create_job(&srv.url, Some(id)).await.unwrap();
    }
    wait_state(&srv.url, "first", "running").await;
    let second = job(&srv.url, "second").await;
    let dir = srv.shutdown().await;
    // The running job was stopped by the shutdown; the queued ones wait on.
    let srv = Server::start_with(gated(gate.path()), opts, Some(dir)).await;
    let first = job(&srv.url, "first").await;
    assert_eq!(first["outcome"], "interrupted");
    let again = wait_state(&srv.url, "second", "running").await;
    assert_eq!(again["created_at"], second["created_at"]);
    assert_eq!(job(&srv.url, "third").await["queue_position"], 1);
    release(gate.path(), "second");
    release(gate.path(), "third");
    wait_finished(&srv.url, "third").await;
    let order = std::fs::read_to_string(gate.path().join("order")).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_is_a_new_job_linked_to_the_original() {
    let gate = TempDir::new("gate3");
    let srv = Server::start_with(gated(gate.path()), RunnerOptions::default(), None).await;
    runner_common::create_job(&srv.url, Some("orig"))
        .await
        .unwrap();
    let (status, _) = send_json("POST", &format!("{}/api/jobs/orig/rerun", srv.url), "").await;
    assert_eq!(status, 409, "still running");
    let (status, _) = send_json("POST", &format!("{}/api/jobs/nope/rerun", srv.url), "").await;
    assert_eq!(status, 404);
    release(gate.path(), "orig");
    let orig = wait_finished(&srv.url, "orig").await;
    let (status, v) = send_json("POST", &format!("{}/api/jobs/orig/rerun", srv.url), "").await;
    assert_eq!(status, 201);
    assert_eq!(v["rerun_of"], "orig");
    let new = v["job_id"].as_str().unwrap().to_owned();
    assert_ne!(new, "orig");
    let (status, v) = send_json(
        "POST",
        &format!("{}/api/jobs/orig/rerun", srv.url),
        r#"{"job_id":"again"}"#,
    )
    .await;
    assert_eq!(
        (status, v),
        (201, json!({"job_id":"again","rerun_of":"orig"}))
    );
    let (status, _) = send_json(
        "POST",
        &format!("{}/api/jobs/orig/rerun", srv.url),
        r#"{"job_id":"again"}"#,
    )
    .await;
    assert_eq!(status, 409, "duplicate id");
    let (status, _) = send_json(
        "POST",
        &format!("{}/api/jobs/orig/rerun", srv.url),
        r#"{"x":1}"#,
    )
    .await;
    assert_eq!(status, 400);
    for id in [new.as_str(), "again"] {
        release(gate.path(), id);
        let v = wait_finished(&srv.url, id).await;
        assert_eq!(v["rerun_of"], "orig");
        assert_ne!(v["trace_id"], orig["trace_id"], "a new trace");
    }
    assert!(orig.get("rerun_of").is_none());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_child_gets_a_traceparent_the_api_links_to() {
    let script = r#"echo "tp=$TRACEPARENT"
echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_start","layer":1,"layer_name":"s","span_id":"00f067aa0ba902b7","trace_id":"x"}'
echo '{"timestamp":"2026-12-01T10:00:00.100Z","event":"layer_complete","layer":1,"layer_name":"s","status":"success","duration_ms":100,"span_id":"00f067aa0ba902b7"}'
echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_start","layer":2,"layer_name":"t","span_id":"NOT-HEX"}'
echo '{"timestamp":"2026-12-01T10:00:00.100Z","event":"layer_complete","layer":2,"layer_name":"t","status":"success","duration_ms":1}'
"#;
    let opts = RunnerOptions::default().trace_url(Some(
        "https://tempo.example/trace/{trace_id}?span={span_id}".into(),
    ));
    let srv = Server::start_with(sh(script), opts, None).await;
    let mut ids = Vec::new();
    for id in ["t1", "t2"] {
        runner_common::create_job(&srv.url, Some(id)).await.unwrap();
        let v = wait_finished(&srv.url, id).await;
        let trace = v["trace_id"].as_str().unwrap().to_owned();
        let span = v["span_id"].as_str().unwrap().to_owned();
        assert_eq!(trace.len(), 32);
        assert_eq!(span.len(), 16);
        assert!(trace
            .bytes()
            .chain(span.bytes())
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let msgs = runner_common::collect(&srv.url, id, None).await;
        let texts = runner_common::output_texts(&msgs);
        assert_eq!(texts[0], format!("tp=00-{trace}-{span}-01"));
        assert_eq!(
            v["trace_url"],
            format!("https://tempo.example/trace/{trace}?span={span}")
        );
        let s = &v["stages"][0];
        assert_eq!(s["span_id"], "00f067aa0ba902b7");
        assert_eq!(
            s["trace_url"],
            format!("https://tempo.example/trace/{trace}?span=00f067aa0ba902b7")
        );
        let t = &v["stages"][1];
        assert!(
            t.get("span_id").is_none() && t.get("trace_url").is_none(),
            "{t}"
        );
        ids.push(trace);
    }
    assert_ne!(ids[0], ids[1]);
    let health = get_json(&format!("{}/api/health", srv.url)).await.unwrap();
    assert_eq!(
        health["trace_url"],
        "https://tempo.example/trace/{trace_id}?span={span_id}"
    );
    srv.shutdown().await;
}

/// The job list's watchers hear a job's states in the order it had them: a
/// job that waits is announced `queued` before `running`, one that starts at
/// once is announced once, `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_stream_tells_each_state_in_order() {
    let gate = TempDir::new("gate-order");
    let opts = RunnerOptions::default().max_running(1);
    let srv = Server::start_with(gated(gate.path()), opts, None).await;
    let mut list = SseClient::open(&format!("{}/api/stream?jobs=1", srv.url))
        .await
        .unwrap();
    for id in ["a", "b", "c"] {
        let (status, _) = send_json(
            "POST",
            &format!("{}/api/jobs", srv.url),
            &json!({ "job_id": id }).to_string(),
        )
        .await;
        assert_eq!(status, 201);
    }
    for id in ["a", "b", "c"] {
        wait_state(&srv.url, id, "running").await;
        release(gate.path(), id);
        wait_finished(&srv.url, id).await;
    }
    let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    while seen.get("c").and_then(|s| s.last()).map(String::as_str) != Some("finished") {
        let msg = list.next().await.unwrap().expect("the list stream ended");
        if msg.event.as_deref() != Some("jobs") {
            continue;
        }
        let id = msg.data["job_id"].as_str().unwrap().to_owned();
        let state = msg.data["state"].as_str().unwrap().to_owned();
        let states = seen.entry(id).or_default();
        // Position changes of a waiting job may repeat `queued`.
        if states.last() != Some(&state) {
            states.push(state);
        }
    }
    assert_eq!(seen["a"], ["running", "finished"], "{seen:?}");
    assert_eq!(seen["b"], ["queued", "running", "finished"], "{seen:?}");
    assert_eq!(seen["c"], ["queued", "running", "finished"], "{seen:?}");
}
