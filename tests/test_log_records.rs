//! Records of the `log` crate (what most dependencies still use), bridged
//! with `tracing-log` as `init` does: `log` lines with their real target and
//! level, no `log.*` fields, inside the stage that was running. This file
//! installs the process-wide `log` bridge, so it is a test binary of its own.

mod common;

use common::{capture, capture_filtered, of_kind};
use serde_json::json;
use tracing::info_span;

fn bridge() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing_log::LogTracer::init().expect("no other logger"));
}

#[test]
fn a_log_record_has_its_target_and_stage_and_no_log_fields() {
    bridge();
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "log-1");
        let _p = p.enter();
        let s = info_span!("company_researcher", layer = 3);
        let _s = s.enter();
        log::info!(target: "reqwest::connect", "connecting to {}", "example.com");
        log::warn!("plain module target");
    });
    let logs = of_kind(&lines, "log");
    assert_eq!(logs.len(), 2, "{lines:#?}");
    let first = logs[0];
    assert_eq!(first["target"], "reqwest::connect");
    assert_eq!(first["level"], "info");
    assert_eq!(first["message"], "connecting to example.com");
    assert_eq!(first["job_id"], "log-1");
    assert_eq!(first["layer_name"], "company_researcher");
    assert!(first.get("metadata").is_none(), "no log.* fields: {first}");
    assert_eq!(logs[1]["target"], "test_log_records");
    assert_eq!(logs[1]["level"], "warn");
}

#[test]
fn a_log_error_fails_its_stage() {
    bridge();
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "log-2");
        let _p = p.enter();
        let s = info_span!("publisher", layer = 7);
        let _s = s.enter();
        log::error!("upload refused");
    });
    let error = of_kind(&lines, "layer_error");
    assert_eq!(error.len(), 1, "{lines:#?}");
    assert_eq!(error[0]["error"], "upload refused");
    assert_eq!(of_kind(&lines, "pipeline_complete")[0]["status"], "partial");
}

#[test]
fn the_log_filter_sees_the_real_target_of_a_record() {
    bridge();
    let lines = capture_filtered("warn,chatty=off,wanted=debug", || {
        log::error!(target: "chatty", "hidden line (still an error)");
        log::debug!(target: "wanted", "shown debug");
        log::info!(target: "other", "hidden info");
    });
    let logs: Vec<_> = of_kind(&lines, "log")
        .into_iter()
        .map(|l| json!([l["target"], l["message"]]))
        .collect();
    assert_eq!(logs, [json!(["wanted", "shown debug"])]);
}
