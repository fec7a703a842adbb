//! Event streams over a real socket (127.0.0.1, port 0): replay, resume,
//! several clients, slow clients, crashing and cancelled children, many jobs.
#![cfg(feature = "runner")]

mod common;
mod runner_common;

use runner_common::{
    assert_well_formed, collect, create_job, events_named, output_texts, poll, reference, sh,
    wait_finished, Server, SseClient,
};
use serde_json::{json, Value};

/// A script that blocks until the file `$GO` exists.
fn gated(before: &str, after: &str, gate: &std::path::Path) -> Vec<std::ffi::OsString> {
    sh(&format!(
        "{before}; while [ ! -e '{}' ]; do sleep 0.01; done; {after}",
        gate.display()
    ))
}

#[tokio::test]
async fn late_join_replays_everything_and_last_event_id_resumes_exactly() {
    let script = r#"
        for i in $(seq 1 40); do echo "line $i"; done
        echo '{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_start","layer":2,"layer_name":"a","job_id":"late"}'
        echo '{"timestamp":"2025-11-29T10:30:45.200Z","event":"layer_complete","layer":2,"layer_name":"a","job_id":"late","status":"success","duration_ms":77}'
        echo oops >&2
        exit 3"#;
    let srv = Server::start(sh(script)).await;
    let id = create_job(&srv.url, Some("late")).await.unwrap();
    let detail = wait_finished(&srv.url, &id).await;
    assert_eq!(detail["exit_code"], 3);
    assert_eq!(detail["status"], "error");
    // When the runner read the stage's lines: RFC 3339, start before end.
    let mut stages = detail["stages"].clone();
    let (started, finished) = (
        stages[0]["started_at"].take(),
        stages[0]["finished_at"].take(),
    );
    assert!(started.as_str().unwrap() <= finished.as_str().unwrap());
    assert!(finished.as_str().unwrap().ends_with('Z'));
    let stage = stages[0].as_object_mut().unwrap();
    stage.retain(|_, v| !v.is_null());
    assert_eq!(
        stages,
        json!([{"layer":2,"layer_name":"a","status":"complete","duration_ms":77,
                "started_seq":41,"ended_seq":42}])
    );

    let all = collect(&srv.url, &id, None).await;
    assert_well_formed(&all, 0);
    assert_eq!(all.len(), 40 + 2 + 1 + 1 + 1);
    let texts = output_texts(&all);
    let want: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
    assert_eq!(&texts[..40], &want[..]);
    let stderr: Vec<&Value> = all
        .iter()
        .map(|m| &m.data)
        .filter(|d| d["stream"] == "stderr")
        .collect();
    assert_eq!(
        stderr,
        [&json!({"type":"output","text":"oops","stream":"stderr"})]
    );
    let complete = events_named(&all, "pipeline_complete");
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0]["status"], "error");
    assert_eq!(complete[0]["error"], "exit status: 3");
    assert_eq!(complete[0]["job_id"], "late");
    assert_eq!(
        complete[0]["metadata"],
        json!({"layers_completed":1,"layers_failed":0,"layers_skipped":0})
    );
    let end = all.last().unwrap();
    assert_eq!(end.data, json!({"job_id":"late","status":"error"}));

    for after in [1, 20, 43, 44] {
        let tail = collect(&srv.url, &id, Some(after)).await;
        assert_well_formed(&tail, after);
        assert_eq!(tail, all[after as usize..], "after {after}");
    }
    // Past the end: just `end`.
    let none = collect(&srv.url, &id, Some(1000)).await;
    assert_eq!(none.len(), 1);

    let sse = SseClient::connect(&srv.url, &id, None).await.unwrap();
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    srv.shutdown().await;
}

#[tokio::test]
async fn two_live_clients_and_a_reconnect_see_the_same_lines() {
    let gate = runner_common::TempDir::new("gate");
    let go = gate.path().join("go");
    let srv = Server::start(gated("echo one; echo two", "echo three; echo four", &go)).await;
    let id = create_job(&srv.url, None).await.unwrap();

    let mut a = SseClient::connect(&srv.url, &id, None).await.unwrap();
    let mut b = SseClient::connect(&srv.url, &id, None).await.unwrap();
    let a1 = a.next().await.unwrap().unwrap();
    assert_eq!(
        (a1.id, a1.data.clone()),
        (Some(1), json!({"type":"output","text":"one"}))
    );
    let b1 = b.next().await.unwrap().unwrap();
    assert_eq!(a1, b1);
    // A third client reads one line, goes away, and comes back with its id.
    let mut c = SseClient::connect(&srv.url, &id, None).await.unwrap();
    let c1 = c.next().await.unwrap().unwrap();
    drop(c);

    std::fs::write(&go, b"").unwrap();
    let mut a_all = vec![a1];
    a_all.extend(a.until_end().await.unwrap());
    let mut b_all = vec![b1];
    b_all.extend(b.until_end().await.unwrap());
    assert_well_formed(&a_all, 0);
    assert_eq!(a_all, b_all);
    assert_eq!(output_texts(&a_all), ["one", "two", "three", "four"]);

    let mut c_all = vec![c1.clone()];
    c_all.extend(collect(&srv.url, &id, c1.id).await);
    assert_eq!(c_all, a_all);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_crashing_child_gets_a_pipeline_complete() {
    let srv = Server::start(sh(r#"
        echo '{"event":"layer_start","layer":1,"layer_name":"x"}'
        echo '{"event":"layer_skip","layer":1.5,"layer_name":"y","status":"skipped"}'
        echo hi; kill -9 $$"#))
    .await;
    let id = create_job(&srv.url, Some("crash")).await.unwrap();
    let all = collect(&srv.url, &id, None).await;
    assert_well_formed(&all, 0);
    let complete = events_named(&all, "pipeline_complete");
    assert_eq!(complete.len(), 1);
    let c = complete[0];
    assert_eq!(c["status"], "error");
    assert_eq!(c["error"], "killed by signal 9");
    assert_eq!(c["job_id"], "crash");
    assert!(c["duration_ms"].is_u64());
    assert_eq!(
        c["metadata"],
        json!({"layers_completed":0,"layers_failed":1,"layers_skipped":1})
    );
    let ts = c["timestamp"].as_str().unwrap();
    assert_eq!((ts.len(), &ts[19..20], &ts[23..]), (24, ".", "Z"), "{ts}");
    // The runner's line is a line of the schema like the layer's own, and
    // the schema types read it.
    common::assert_valid(c);
    // The runner's lines come last, after everything the child printed:
    // the stage still open is closed with the job's reason, then the job.
    assert_eq!(all[all.len() - 2].data, *c);
    let closed = &all[all.len() - 3].data;
    assert_eq!(closed["event"], "layer_error");
    assert_eq!(closed["layer_name"], "x");
    assert_eq!(closed["layer"], 1);
    assert_eq!(closed["status"], "error");
    assert_eq!(closed["error"], "killed by signal 9");
    assert_eq!(closed["job_id"], "crash");
    assert!(closed["duration_ms"].is_u64());
    common::assert_valid(closed);
    // Output read while x alone ran is attributed to it.
    let hi = all.iter().find(|m| m.data["text"] == "hi").unwrap();
    assert_eq!(
        hi.data,
        json!({"type":"output","text":"hi","layer":1,"layer_name":"x"})
    );

    let detail = wait_finished(&srv.url, &id).await;
    assert_eq!(detail["state"], "finished");
    assert_eq!(detail["status"], "error");
    assert!(detail.get("exit_code").is_none());
    let stages: Vec<(&str, &str)> = detail["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["layer_name"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(stages, [("x", "error"), ("y", "skipped")]);
    assert_eq!(detail["stages"][0]["error"], "killed by signal 9");
    assert_eq!(detail["outcome"], "error");
    assert_eq!(detail["reason"], "killed by signal 9");
    assert_eq!(
        detail["counts"],
        json!({"completed":0,"failed":1,"skipped":1,"running":0,"cancelled":0})
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_the_child_and_records_it() {
    let srv = Server::start(sh("echo started; sleep 60; echo never")).await;
    let id = create_job(&srv.url, None).await.unwrap();
    let mut sse = SseClient::connect(&srv.url, &id, None).await.unwrap();
    let first = sse.next().await.unwrap().unwrap();
    assert_eq!(first.data, json!({"type":"output","text":"started"}));
    let resp = runner_common::client()
        .post(format!("{}/api/jobs/{id}/cancel", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let rest = sse.until_end().await.unwrap();
    let complete = events_named(&rest, "pipeline_complete");
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0]["status"], "error");
    assert_eq!(complete[0]["error"], "cancelled");
    common::assert_valid(complete[0]);
    assert!(!output_texts(&rest).contains(&"never".to_owned()));
    let detail = wait_finished(&srv.url, &id).await;
    assert_eq!(detail["status"], "error");
    let again = runner_common::client()
        .post(format!("{}/api/jobs/{id}/cancel", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_slow_client_catches_up_from_the_file() {
    // A client that stops reading while the job prints. Whether the lines
    // pile up in socket buffers or overflow the broadcast channel (which
    // carries batches of up to 256 lines) depends on the kernel; the lagged
    // path itself is pinned by the unit tests in src/runner/sse.rs. What
    // this proves from the outside: nothing is lost or doubled either way.
    let srv = Server::start(sh("seq 1 6000")).await;
    let id = create_job(&srv.url, None).await.unwrap();
    let mut slow = SseClient::connect(&srv.url, &id, None).await.unwrap();
    let first = slow.next().await.unwrap().unwrap();
    // Stop reading until the child is done: its lines pile up past the
    // channel's capacity, and this client's stream must fill the gap.
    wait_finished(&srv.url, &id).await;
    let mut all = vec![first];
    all.extend(slow.until_end().await.unwrap());
    assert_well_formed(&all, 0);
    let texts = output_texts(&all);
    let want: Vec<String> = (1..=6000).map(|i| i.to_string()).collect();
    assert_eq!(texts, want);
    srv.shutdown().await;
}

#[tokio::test]
async fn messy_output_is_forwarded_one_line_each() {
    let script = r#"
        printf 'crlf\r\n'
        printf '\377\376bad utf8\n'
        echo '5'; echo '"event"'; echo '[1]'; echo '{"event":5}'; echo '{}'
        echo '<img src=x onerror=alert(1)>'
        echo '{"event":"log","level":"info","message":"hi"}'
        head -c 2000000 /dev/zero | tr '\0' 'a'; echo
        echo err >&2
        printf 'no newline'"#;
    let srv = Server::start(sh(script)).await;
    let id = create_job(&srv.url, None).await.unwrap();
    let all = collect(&srv.url, &id, None).await;
    assert_well_formed(&all, 0);
    let stdout: Vec<&Value> = all
        .iter()
        .map(|m| &m.data)
        .filter(|d| d.get("stream").is_none())
        .collect();
    let out = |t: &str| json!({"type":"output","text":t});
    assert_eq!(stdout[0], &out("crlf"));
    assert_eq!(stdout[1], &out("\u{fffd}\u{fffd}bad utf8"));
    for (i, t) in [
        "5",
        "\"event\"",
        "[1]",
        r#"{"event":5}"#,
        "{}",
        "<img src=x onerror=alert(1)>",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(stdout[2 + i], &out(t));
    }
    assert_eq!(
        stdout[8],
        &json!({"event":"log","level":"info","message":"hi"})
    );
    let long = stdout[9]["text"].as_str().unwrap();
    assert!(long.starts_with("aaaa"));
    assert!(
        long.ends_with("[… line truncated: 2000000 bytes in total]"),
        "{}",
        &long[long.len() - 60..]
    );
    assert_eq!(stdout[10], &out("no newline"));
    assert_eq!(events_named(&all, "pipeline_complete").len(), 1);
    assert!(all
        .iter()
        .any(|m| m.data == json!({"type":"output","text":"err","stream":"stderr"})));
    srv.shutdown().await;
}

#[tokio::test]
async fn twenty_jobs_at_once() {
    let srv = Server::start(reference(&[
        "--speed",
        "0",
        "--fail",
        "people_mapper",
        "--skip",
        "publisher",
    ]))
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            create_job(&srv.url, Some(&format!("many-{i}")))
                .await
                .unwrap(),
        );
    }
    let streams = ids.iter().map(|id| {
        let url = srv.url.clone();
        let id = id.clone();
        tokio::spawn(async move { (id.clone(), collect(&url, &id, None).await) })
    });
    for handle in streams.collect::<Vec<_>>() {
        let (id, all) = handle.await.unwrap();
        assert_well_formed(&all, 0);
        let complete = events_named(&all, "pipeline_complete");
        assert_eq!(complete.len(), 1, "{id}");
        assert_eq!(complete[0]["job_id"], id.as_str());
        // Every stage that started also ended, with this job's id.
        let starts = events_named(&all, "layer_start");
        assert_eq!(starts.len(), 8, "{id}");
        for s in starts {
            assert_eq!(s["job_id"], id.as_str());
            let name = &s["layer_name"];
            let ends = all
                .iter()
                .filter(|m| {
                    m.data["layer_name"] == *name
                        && matches!(
                            m.data["event"].as_str(),
                            Some("layer_complete" | "layer_error" | "layer_skip")
                        )
                })
                .count();
            assert_eq!(ends, 1, "{id} {name}");
        }
    }
    let list = runner_common::get_json(&format!("{}/api/jobs", srv.url))
        .await
        .unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 20);
    let stages = runner_common::get_json(&format!("{}/api/stages", srv.url))
        .await
        .unwrap();
    let names: Vec<&str> = stages["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["layer_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 8);
    assert_eq!(names[0], "pain_point_miner");
    assert_eq!(names[7], "publisher");
    let detail = wait_finished(&srv.url, "many-0").await;
    let by_name = |n: &str| {
        detail["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["layer_name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("people_mapper")["status"], "error");
    assert_eq!(by_name("publisher")["status"], "skipped");
    assert_eq!(by_name("generator")["status"], "complete");
    assert!(by_name("generator")["duration_ms"].is_u64());
    assert_eq!(detail["status"], "partial");
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_running_jobs_and_records_their_end() {
    let srv = Server::start(sh(
        r#"echo '{"event":"layer_start","layer":1,"layer_name":"w"}'; echo up; sleep 60"#,
    ))
    .await;
    let id = create_job(&srv.url, Some("stopped")).await.unwrap();
    let mut sse = SseClient::connect(&srv.url, &id, None).await.unwrap();
    sse.next().await.unwrap().unwrap();
    let url = srv.url.clone();
    // Shutdown must complete even with this stream open: it ends with the job.
    let reader = tokio::spawn(async move { sse.until_end().await.unwrap() });
    let dir = srv.shutdown().await;
    let data = dir.path().join("data");
    let rest = reader.await.unwrap();
    let complete = events_named(&rest, "pipeline_complete");
    assert_eq!(complete[0]["error"], "runner shut down");
    // The stage still running is closed first, with the same reason.
    let closed = events_named(&rest, "layer_error");
    assert_eq!(closed.len(), 1);
    assert_eq!(
        (&closed[0]["layer_name"], &closed[0]["error"]),
        (&json!("w"), &json!("runner shut down"))
    );
    assert!(
        runner_common::client().get(&url).send().await.is_err(),
        "still listening"
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(data.join("jobs/stopped/meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["state"], "finished");
    assert_eq!(meta["status"], "error");
    assert_eq!(meta["outcome"], "interrupted");
    assert_eq!(meta["reason"], "runner shut down");
    assert_eq!(meta["stages"][0]["status"], "error");
    assert_eq!(meta["stages"][0]["error"], "runner shut down");
}

#[tokio::test]
async fn a_job_whose_grandchild_keeps_the_pipes_open_still_ends() {
    // The shell exits at once; the backgrounded sleep holds stdout open.
    let srv = Server::start(sh("echo bye; sleep 30 & exit 0")).await;
    let id = create_job(&srv.url, None).await.unwrap();
    let all = poll("the stream to end", || async {
        Some(collect(&srv.url, &id, None).await)
    })
    .await;
    assert_eq!(output_texts(&all), ["bye"]);
    assert_eq!(
        events_named(&all, "pipeline_complete")[0]["error"],
        "exit status: 0"
    );
    srv.shutdown().await;
}
