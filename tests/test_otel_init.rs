//! `init()` without a guard: the spans are sent when the outermost
//! pipeline span closes, so a program that exits right after its pipeline
//! (here with `std::process::exit`, which runs no destructor) loses none.
//! And with `LOG_LEVEL=trace`, the exporter's own HTTP stack never shows up
//! as lines on stdout or as exported spans.
//!
//! The program is this test binary run again as a child (`child_program`,
//! which does nothing unless `TP_OTEL_CHILD` is set), so the global
//! subscriber lives in a process of its own.
#![cfg(feature = "otel")]

mod otel_common;

use std::process::Command;

use otel_common::{hex, Mode, Receiver};
use serde_json::Value;
use tracing::{info, info_span};

#[test]
fn child_program() {
    if std::env::var_os("TP_OTEL_CHILD").is_none() {
        return;
    }
    tracing_pipeline::init();
    {
        let pipeline = info_span!("pipeline", job_id = "init-job");
        let _p = pipeline.enter();
        for (name, layer) in [("fetch", 1), ("parse", 2)] {
            let s = info_span!("stage", layer, layer_name = name);
            let _s = s.enter();
            info!("working");
        }
    }
    std::process::exit(0);
}

#[test]
fn init_flushes_at_the_end_of_the_outermost_pipeline() {
    let receiver = Receiver::start(Mode::Accept);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_program",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("TP_OTEL_CHILD", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url())
        .env("LOG_LEVEL", "trace")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("TRACEPARENT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The harness prints a line of its own before the test runs, and
    // `test child_program ... ` with no newline before the first line.
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| l.find("{\"timestamp\"").map(|i| &l[i..]))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spans = receiver.spans();
    let mut names: Vec<&str> = spans.iter().map(|(s, _)| s.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["fetch", "parse", "pipeline"],
        "the exporter's HTTP stack exports nothing of its own"
    );
    for l in &lines {
        assert!(
            l["target"].is_null() || l["target"] == "test_otel_init",
            "no line from the export's HTTP stack: {l}"
        );
        let own = l["layer_name"].as_str().unwrap_or("pipeline");
        let span = spans.iter().find(|(s, _)| s.name == own).unwrap();
        assert_eq!(l["span_id"], hex(&span.0.span_id).as_str(), "{l}");
    }
    assert_eq!(lines.len(), 2 + 2 * 3, "{lines:#?}");
}
