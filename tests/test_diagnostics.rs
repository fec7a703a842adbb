//! The layer's own warnings on stderr: filters that hide stages from it, an
//! identity recorded too late. (A `debug_span!` stage under a global `info`
//! filter cannot be reported: the macro skips its call site before any layer
//! hears of it. `keep_stages` is the cure; the docs say so.) Each scenario runs in a child process (this
//! test binary again, with `TP_SCENARIO` set) so its stderr can be read.

mod common;

use std::process::Command;

use tracing::field::Empty;
use tracing::info_span;
use tracing_pipeline::PipelineLayer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::EnvFilter;

/// Runs `scenario` in a child process; its stderr.
fn stderr_of(scenario: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "scenario", "--nocapture", "--test-threads=1"])
        .env("TP_SCENARIO", scenario)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// The child's side: does what `TP_SCENARIO` names.
#[test]
fn scenario() {
    let Ok(name) = std::env::var("TP_SCENARIO") else {
        return;
    };
    let (layer, _capture) = common::layer();
    match name.as_str() {
        "error_only_filter" => {
            let subscriber = tracing_subscriber::registry()
                .with(EnvFilter::new("error"))
                .with(layer);
            tracing::subscriber::with_default(subscriber, || {
                info_span!("pipeline", job_id = "x").in_scope(|| {});
            });
        }
        "kept" => {
            let subscriber = tracing_subscriber::registry()
                .with(tracing_pipeline::keep_stages(EnvFilter::new("error")))
                .with(layer);
            tracing::subscriber::with_default(subscriber, || {
                info_span!("pipeline", job_id = "x").in_scope(|| {});
            });
        }
        "late_name" => {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                for _ in 0..3 {
                    let s = info_span!("stage", layer = 1, layer_name = Empty);
                    let _e = s.enter();
                    s.record("layer_name", "late");
                }
            });
        }
        "two_layers_plain" => {
            let subscriber = tracing_subscriber::registry()
                .with(PipelineLayer::new().with_writer(std::io::sink))
                .with(layer);
            tracing::subscriber::with_default(subscriber, || {
                info_span!("pipeline", job_id = "x").in_scope(|| {});
            });
        }
        other => panic!("no scenario {other}"),
    }
}

#[test]
fn a_filter_that_hides_info_spans_is_reported_once() {
    let err = stderr_of("error_only_filter");
    assert_eq!(err.matches("tracing-pipeline:").count(), 1, "{err}");
    assert!(err.contains("keep_stages"), "{err}");
}

#[test]
fn a_kept_filter_and_two_layers_are_quiet() {
    for scenario in ["kept", "two_layers_plain"] {
        let err = stderr_of(scenario);
        assert!(!err.contains("tracing-pipeline:"), "{scenario}: {err}");
    }
}

#[test]
fn a_late_layer_name_is_reported_once() {
    let err = stderr_of("late_name");
    assert_eq!(err.matches("tracing-pipeline:").count(), 1, "{err}");
    assert!(err.contains("`layer_name` of span `stage`"), "{err}");
}
