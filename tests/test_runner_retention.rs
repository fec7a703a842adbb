//! Retention and deletion: `DELETE /api/jobs/{id}`, `keep_jobs` and
//! `keep_days` (never a queued or running job), the job list's `deleted`
//! message, streams of a deleted job ending cleanly, and deleted jobs'
//! statistics staying in `/api/stages` across a restart.
#![cfg(feature = "runner")]

mod runner_common;

use std::time::Duration;

use futures_util::StreamExt;
use runner_common::{
    create_job, get_json, poll, send_json, sh, wait_finished, Server, SseClient, TempDir,
};
use serde_json::{json, Value};
use tracing_pipeline::runner::RunnerOptions;

const STAGE: &str = r#"echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_start","layer":1,"layer_name":"s"}'
echo '{"timestamp":"2026-12-01T10:00:00.100Z","event":"layer_complete","layer":1,"layer_name":"s","status":"success","duration_ms":100,"metadata":{"tokens_used":10}}'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_a_finished_job_and_keeps_its_statistics() {
    let script = format!("{STAGE}case $JOB_ID in slow*) sleep 30;; esac");
    let srv = Server::start_with(sh(&script), RunnerOptions::default().max_running(4), None).await;
    let mut list = SseClient::open(&format!("{}/api/stream?jobs=1", srv.url))
        .await
        .unwrap();
    create_job(&srv.url, Some("gone")).await.unwrap();
    wait_finished(&srv.url, "gone").await;
    create_job(&srv.url, Some("slow")).await.unwrap();
    let before = get_json(&format!("{}/api/health", srv.url)).await.unwrap();
    let (status, _) = send_json("DELETE", &format!("{}/api/jobs/slow", srv.url), "").await;
    assert_eq!(status, 409, "running");
    let (status, _) = send_json("DELETE", &format!("{}/api/jobs/nope", srv.url), "").await;
    assert_eq!(status, 404);
    let (status, _) = send_json("DELETE", &format!("{}/api/jobs/..%2fx", srv.url), "").await;
    assert_eq!(status, 400);
    let (status, v) = send_json("DELETE", &format!("{}/api/jobs/gone", srv.url), "").await;
    assert_eq!((status, v), (200, json!({"job_id":"gone","deleted":true})));
    assert!(!srv.runner.data_dir().join("jobs/gone").exists());
    let (status, _) = send_json("GET", &format!("{}/api/jobs/gone", srv.url), "").await;
    assert_eq!(status, 404);
    let (status, _) = send_json("DELETE", &format!("{}/api/jobs/gone", srv.url), "").await;
    assert_eq!(status, 404, "deleted once");
    let after = get_json(&format!("{}/api/health", srv.url)).await.unwrap();
    assert!(
        after["data_bytes"].as_u64() < before["data_bytes"].as_u64(),
        "{before} {after}"
    );
    // The list's watchers hear of it.
    let deleted = loop {
        let m = list.next().await.unwrap().expect("the list stream ended");
        if m.data.get("deleted").is_some() {
            break m;
        }
    };
    assert_eq!(deleted.event.as_deref(), Some("jobs"));
    assert_eq!(deleted.data, json!({"job_id":"gone","deleted":true}));
    // Its statistics stay.
    let stages = get_json(&format!("{}/api/stages", srv.url)).await.unwrap();
    assert_eq!(stages["jobs"], 1);
    assert_eq!(stages["stages"][0]["runs"], 1);
    assert_eq!(stages["stages"][0]["tokens"], 10);
    assert_eq!(stages["stages"][0]["recent"][0]["job_id"], "gone");
    srv.runner.cancel_job("slow").unwrap();
    let dir = srv.shutdown().await;
    let srv = Server::start_with(sh(&script), RunnerOptions::default(), Some(dir)).await;
    let stages = get_json(&format!("{}/api/stages", srv.url)).await.unwrap();
    assert_eq!(stages["jobs"], 2, "the deleted job and the cancelled one");
    let s = &stages["stages"][0];
    assert_eq!(
        (&s["runs"], &s["complete"], &s["tokens"]),
        (&json!(2), &json!(2), &json!(20))
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_jobs_deletes_the_oldest_finished_never_a_queued_or_running_one() {
    let gate = TempDir::new("keep-gate");
    let g = gate.path().display();
    let script =
        format!(r#"case $JOB_ID in held*) while [ ! -e {g}/go ]; do sleep 0.02; done;; esac"#);
    let opts = RunnerOptions::default().max_running(1).keep_jobs(Some(1));
    let srv = Server::start_with(sh(&script), opts, None).await;
    create_job(&srv.url, Some("held")).await.unwrap();
    create_job(&srv.url, Some("held2")).await.unwrap();
    create_job(&srv.url, Some("j1")).await.unwrap();
    assert_eq!(
        get_json(&format!("{}/api/jobs/held2", srv.url))
            .await
            .unwrap()["state"],
        "queued"
    );
    std::fs::write(gate.path().join("go"), b"").unwrap();
    wait_finished(&srv.url, "j1").await;
    // Only the newest finished job is kept.
    let list = poll("retention", || async {
        let list = get_json(&format!("{}/api/jobs", srv.url)).await.ok()?;
        (list["total"] == 1).then_some(list)
    })
    .await;
    assert_eq!(list["jobs"][0]["job_id"], "j1");
    let health = get_json(&format!("{}/api/health", srv.url)).await.unwrap();
    assert_eq!(health["keep_jobs"], 1);
    assert_eq!(health["keep_days"], Value::Null);
    srv.shutdown().await;
}

/// A finished job written as a runner would have, `days` ago.
fn write_old_job(data: &std::path::Path, id: &str, days: u64) {
    let at = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let secs = ms / 1000;
    // RFC 3339 by hand: days since the epoch to a civil date.
    let (y, m, d) = civil(secs / 86_400);
    let hms = secs % 86_400;
    let stamp = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        hms / 3600,
        hms / 60 % 60,
        hms % 60
    );
    let dir = data.join("jobs").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let meta = json!({"job_id":id,"state":"finished","status":"success","outcome":"success",
        "created_at":stamp,"started_at":stamp,"finished_at":stamp,"duration_ms":5,"lines":0,
        "stages":[{"layer":1,"layer_name":"s","status":"complete","duration_ms":5,
                   "metadata":{"tokens_used":7}}]});
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    std::fs::write(dir.join("events.jsonl"), b"").unwrap();
}

fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_days_applies_at_start_and_the_old_jobs_still_count() {
    let dir = TempDir::new("keep-days");
    let data = dir.path().join("data");
    write_old_job(&data, "old", 10);
    write_old_job(&data, "recent", 0);
    let opts = RunnerOptions::default().keep_days(Some(2.0));
    let srv = Server::start_with(sh("true"), opts, Some(dir)).await;
    let list = get_json(&format!("{}/api/jobs", srv.url)).await.unwrap();
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["recent"]);
    let stages = get_json(&format!("{}/api/stages", srv.url)).await.unwrap();
    assert_eq!(stages["jobs"], 2);
    assert_eq!(stages["stages"][0]["tokens"], 14);
    let health = get_json(&format!("{}/api/health", srv.url)).await.unwrap();
    assert_eq!(health["keep_days"], 2.0);
    srv.shutdown().await;
}

/// Retention deletes a job while two clients are in the middle of its
/// lines (one per-job stream, one multiplexed): both end cleanly, the
/// multiplexed one with an `end` that says `deleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_under_streaming_clients_ends_their_streams_cleanly() {
    let script = "case $JOB_ID in big) seq 1 200000;; *) echo small;; esac";
    let opts = RunnerOptions::default().keep_jobs(Some(1));
    let srv = Server::start_with(sh(script), opts, None).await;
    create_job(&srv.url, Some("big")).await.unwrap();
    wait_finished(&srv.url, "big").await;
    // Two clients that read a little, then stall.
    let per_job = runner_common::client()
        .get(format!("{}/api/jobs/big/events", srv.url))
        .send()
        .await
        .unwrap();
    let mut per_job = per_job.bytes_stream();
    let first = per_job.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"id: 1\n"));
    let mut multi = SseClient::open(&format!("{}/api/stream?job=big:0", srv.url))
        .await
        .unwrap();
    let m = multi.next().await.unwrap().unwrap();
    assert_eq!(m.data["seq"], 1);
    // Another job ends: retention (keep 1) deletes `big`.
    create_job(&srv.url, Some("next")).await.unwrap();
    wait_finished(&srv.url, "next").await;
    poll("big to be deleted", || async {
        (!srv.runner.data_dir().join("jobs/big").exists()).then_some(())
    })
    .await;
    // The per-job stream closes without error and without `end`, well
    // before its 200,000 lines.
    let mut bytes = first.len();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(runner_common::TIMEOUT, per_job.next())
        .await
        .expect("the per-job stream did not end")
    {
        let chunk = chunk.expect("a clean end, not an error");
        bytes += chunk.len();
        text.extend_from_slice(&chunk);
    }
    assert!(bytes < 4_000_000, "it stopped early: {bytes} bytes");
    assert!(!String::from_utf8_lossy(&text).contains("event: end"));
    // The multiplexed stream's `end` for the job says it was deleted.
    let end = loop {
        let m = multi.next().await.unwrap().expect("an end message");
        if m.event.as_deref() == Some("end") {
            break m;
        }
        assert!(m.data["seq"].as_u64().unwrap() < 200_000);
    };
    assert_eq!(end.data, json!({"job":"big","deleted":true}));
    srv.shutdown().await;
}
