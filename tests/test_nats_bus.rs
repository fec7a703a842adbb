//! The NATS bus against a real `nats-server`: connect errors, idempotent
//! setup, job ids as subject tokens, deduplicated publishes, replay after a
//! sequence number then follow.
#![cfg(feature = "nats")]

mod nats_common;

use std::time::{Duration, Instant};

use nats_common::{free_port, NatsServer};
use tracing_pipeline::runner::nats::{
    submit_job, Bus, BusConfig, JobPhase, NatsError, EVENTS_STREAM,
};

fn config(url: &str) -> BusConfig {
    let mut c = BusConfig::new(url);
    c.connect_timeout = Duration::from_secs(2);
    c
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error_naming_the_url() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let err = Bus::connect(config(&url)).await.unwrap_err();
    assert!(matches!(err, NatsError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.starts_with("cannot connect to NATS at"), "{text}");
    // Bounded by the connect timeout (plus slack for a loaded machine).
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_list_of_servers_connects_to_one_that_answers() {
    let server = NatsServer::start();
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let bus = Bus::connect(config(&format!("{dead}, {}", server.url())))
        .await
        .unwrap();
    bus.publish_line("listed", 1, "{}").await.unwrap();
    assert_eq!(bus.last_seq("listed").await.unwrap(), 1);
}

#[tokio::test]
async fn setup_is_idempotent_and_concurrent() {
    let server = NatsServer::start();
    let (a, b) = tokio::join!(
        Bus::connect(config(&server.url())),
        Bus::connect(config(&server.url()))
    );
    a.unwrap();
    b.unwrap();
    // Again, with other limits: the events stream is updated to them.
    let mut c = config(&server.url());
    c.events_max_bytes = 1 << 20;
    c.events_max_age = Duration::from_secs(3600);
    let bus = Bus::connect(c).await.unwrap();
    let js = async_nats::jetstream::new(bus.client().clone());
    let mut stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_bytes, 1 << 20);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
}

#[tokio::test]
async fn job_ids_that_are_not_subject_tokens_are_refused() {
    let server = NatsServer::start();
    let bus = Bus::connect(config(&server.url())).await.unwrap();
    for bad in ["a.b", "a*", ">", "a b", "", "é", &"x".repeat(65)] {
        let err = Bus::events_subject(bad).unwrap_err();
        assert!(
            matches!(err, NatsError::InvalidJobId(_)),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains("subject token"), "{err}");
        let err = submit_job(&bus, Some(bad.to_owned())).await.unwrap_err();
        assert!(
            matches!(err, NatsError::InvalidJobId(_)),
            "{bad:?}: {err:?}"
        );
        assert!(bus.publish_line(bad, 1, "{}").await.is_err());
        assert!(bus.replay(bad, 0).await.is_err());
    }
    // Nothing was queued or stored.
    assert!(bus.job_ids().await.unwrap().is_empty());
    assert_eq!(
        Bus::events_subject("ok-1_A").unwrap(),
        "pipeline.events.ok-1_A"
    );
}

#[tokio::test]
async fn submit_records_queued_state_and_refuses_duplicates() {
    let server = NatsServer::start();
    let bus = Bus::connect(config(&server.url())).await.unwrap();
    let id = submit_job(&bus, Some("j1".into())).await.unwrap();
    let (state, _) = bus.job_state(&id).await.unwrap().unwrap();
    assert_eq!(state.phase, JobPhase::Queued);
    assert_eq!(state.worker, None);
    let err = submit_job(&bus, Some("j1".into())).await.unwrap_err();
    assert!(matches!(err, NatsError::DuplicateJob(_)), "{err:?}");
    let generated = submit_job(&bus, None).await.unwrap();
    let mut ids = bus.job_ids().await.unwrap();
    ids.sort();
    let mut want = vec!["j1".to_owned(), generated];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn a_retried_publish_is_stored_once() {
    let server = NatsServer::start();
    let bus = Bus::connect(config(&server.url())).await.unwrap();
    for seq in 1..=3u64 {
        let line = format!(r#"{{"type":"output","text":"{seq}"}}"#);
        bus.publish_line("dup", seq, &line).await.unwrap();
        // The retry of a publish whose ack was lost.
        bus.publish_line("dup", seq, &line).await.unwrap();
    }
    let js = async_nats::jetstream::new(bus.client().clone());
    let mut stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    assert_eq!(bus.last_seq("dup").await.unwrap(), 3);
    assert_eq!(bus.last_seq("none").await.unwrap(), 0);
    let mut replay = bus.replay("dup", 0).await.unwrap();
    for seq in 1..=3u64 {
        let line = replay.next().await.unwrap();
        assert_eq!(line.seq, seq);
        let v: serde_json::Value = serde_json::from_str(&line.data).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"output","text": seq.to_string()})
        );
    }
    assert_eq!(
        replay
            .next_within(Duration::from_millis(300))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn replay_after_a_sequence_then_follow_in_order_without_gaps() {
    let server = NatsServer::start();
    let bus = Bus::connect(config(&server.url())).await.unwrap();
    // Two jobs interleaved in the one stream.
    for seq in 1..=50u64 {
        bus.publish_line("a", seq, &format!(r#"{{"n":{seq}}}"#))
            .await
            .unwrap();
        bus.publish_line("b", seq, &format!(r#"{{"m":{seq}}}"#))
            .await
            .unwrap();
    }
    let mut replay = bus.replay("a", 37).await.unwrap();
    let writer = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for seq in 51..=80u64 {
                bus.publish_line("a", seq, &format!(r#"{{"n":{seq}}}"#))
                    .await
                    .unwrap();
            }
        })
    };
    for want in 38..=80u64 {
        let line = tokio::time::timeout(Duration::from_secs(10), replay.next())
            .await
            .expect("line in time")
            .unwrap();
        assert_eq!(line.seq, want);
        let v: serde_json::Value = serde_json::from_str(&line.data).unwrap();
        assert_eq!(v, serde_json::json!({ "n": want }));
    }
    writer.await.unwrap();
    assert_eq!(
        replay
            .next_within(Duration::from_millis(300))
            .await
            .unwrap(),
        None
    );
}

/// A retried publish stored behind the lines sent after it (an outage
/// lost its acknowledgement) is still replayed in its place; a gap the
/// stream will never fill is held until given up on.
#[tokio::test]
async fn replay_puts_a_line_stored_late_back_in_its_place() {
    let server = NatsServer::start();
    let bus = Bus::connect(config(&server.url())).await.unwrap();
    for seq in [1, 2, 4, 5, 3, 7] {
        bus.publish_line("late", seq, &format!(r#"{{"n":{seq}}}"#))
            .await
            .unwrap();
    }
    let mut replay = bus.replay("late", 0).await.unwrap();
    let mut got = Vec::new();
    while let Some(line) = replay.next_within(Duration::from_secs(2)).await.unwrap() {
        let v: serde_json::Value = serde_json::from_str(&line.data).unwrap();
        assert_eq!(v["n"], line.seq, "line {} carries its own data", line.seq);
        got.push(line.seq);
    }
    assert_eq!(got, [1, 2, 3, 4, 5], "in order, each once; 7 held behind 6");
    assert_eq!(replay.held(), 1);
    let seven = replay.skip_gap().expect("the held line");
    assert_eq!(seven.seq, 7);
    assert_eq!(replay.held(), 0);
    // The line that never came is not waited for any more; later ones follow.
    bus.publish_line("late", 6, r#"{"n":6}"#).await.unwrap();
    bus.publish_line("late", 8, r#"{"n":8}"#).await.unwrap();
    let next = replay.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        next.map(|l| l.seq),
        Some(8),
        "6 came after it was given up on"
    );
}
