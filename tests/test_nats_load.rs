//! A load run, not a timed test (ignored by default; it asserts only that
//! nothing is lost or doubled): one worker's child prints N lines; the run
//! prints how long the local runner took to store them against how long
//! until every line was acknowledged by the events stream, and how fast a
//! replay reads them back.
//!
//! `cargo test --release --features nats --test test_nats_load -- --ignored --nocapture`
#![cfg(feature = "nats")]

mod nats_common;

use std::time::{Duration, Instant};

use nats_common::{wait_for, NatsServer, WorkerProcess};
use tracing_pipeline::runner::nats::{submit_job, Bus, BusConfig, JobPhase};

#[tokio::test]
#[ignore = "a load run: prints figures"]
async fn lines_through_a_worker_and_back() {
    let n: u64 = std::env::var("NATS_LOAD_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let server = NatsServer::start();
    let bus = Bus::connect(BusConfig::new(server.url())).await.unwrap();
    let script = format!("seq 1 {n}");
    let _worker = WorkerProcess::start(&server.url(), &script, &[]);
    let started = Instant::now();
    let id = submit_job(&bus, Some("load".into())).await.unwrap();
    let done = wait_for(300, "the job to finish", || async {
        bus.job_state(&id)
            .await
            .ok()
            .flatten()
            .map(|(s, _)| s)
            .filter(|s| s.phase == JobPhase::Finished)
    })
    .await;
    let published = started.elapsed();
    let summary = done.summary.unwrap();
    let stored_ms = summary["duration_ms"].as_u64().unwrap();
    let lines = summary["lines"].as_u64().unwrap();
    assert_eq!(lines, n + 1, "every line and the closing pipeline_complete");
    let replay_start = Instant::now();
    let mut replay = bus.replay(&id, 0).await.unwrap();
    for want in 1..=lines {
        let line = replay
            .next_within(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line.seq, want);
    }
    let replayed = replay_start.elapsed();
    let per_s = |d: Duration| lines as f64 / d.as_secs_f64();
    println!(
        "{lines} lines: child run stored locally in {stored_ms} ms; all acknowledged by the \
         stream {:.0} ms after submit ({:.0} lines/s end to end); replay {:.0} ms ({:.0} lines/s)",
        published.as_secs_f64() * 1e3,
        per_s(published),
        replayed.as_secs_f64() * 1e3,
        per_s(replayed),
    );
}
