//! Golden tests of the reference pipeline (`tracing_pipeline::reference`,
//! what `examples/job_pipeline.rs` runs) at `--speed 0`: its whole output,
//! parsed, with timestamps and durations normalised, against
//! `tests/golden/*.jsonl`.
//!
//! To regenerate the golden files after an intended change of output:
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test --features reference --test layer golden::
//! ```
//!
//! then read the diff of `tests/golden/` before committing it.
#![cfg(feature = "reference")]

use crate::common;

use std::path::PathBuf;

use clap::Parser;
use serde_json::Value;
use tracing_pipeline::reference::{run, run_job, Options, Outcome};

/// Runs the reference pipeline in-process, as the example would with `args`
/// (after the program name), on a current-thread runtime under a scoped
/// subscriber.
fn run_reference(args: &[&str]) -> (Outcome, Vec<Value>) {
    common::quiet_panic_hook();
    let options =
        Options::try_parse_from(std::iter::once("job_pipeline").chain(args.iter().copied()))
            .expect("valid options");
    // As the example runs by default: LOG_LEVEL=info.
    let (layer, capture) = common::layer();
    let layer = layer.with_log_filter(tracing_subscriber::EnvFilter::new("info"));
    let dispatch = tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(run_job(
            options.job_id.as_deref().unwrap_or("golden"),
            &options,
        ))
    });
    (outcome, capture.lines())
}

fn golden(name: &str, lines: &[Value]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.jsonl"));
    let lines = common::normalise(lines.to_vec());
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    // Normalised lines (`"<ts>"`) are not schema-valid; parse them plainly.
    let want: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("golden line is JSON"))
        .collect();
    for (i, (got, want)) in lines.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "{name}.jsonl line {}", i + 1);
        assert_eq!(
            common::keys(got),
            common::keys(want),
            "{name}.jsonl line {} key order",
            i + 1
        );
    }
    assert_eq!(lines.len(), want.len(), "{name}.jsonl: number of lines");
}

#[test]
fn success() {
    let (outcome, lines) = run_reference(&["--speed", "0", "--job-id", "golden"]);
    assert_eq!(outcome, Outcome::Success);
    let summary = common::checker::check(&lines);
    assert_eq!(summary.pipelines["golden"].status, "success");
    assert_eq!(summary.pipelines["golden"].counts, [8, 0, 0]);
    golden("success", &lines);
}

#[test]
fn fail_skip_and_panic() {
    let (outcome, lines) = run_reference(&[
        "--speed",
        "0",
        "--job-id",
        "golden",
        "--fail",
        "people_mapper",
        "--skip",
        "generator",
        "--panic",
        "star_selector",
    ]);
    assert_eq!(outcome, Outcome::Partial);
    let summary = common::checker::check(&lines);
    let p = &summary.pipelines["golden"];
    assert_eq!(p.status, "partial");
    assert_eq!(p.counts, [5, 2, 1]);
    let stage = |name: &str| &summary.stages[&(Some("golden".to_owned()), name.to_owned())];
    assert_eq!(
        stage("star_selector").error.as_deref(),
        Some("star_selector panicked: injected panic")
    );
    assert_eq!(
        stage("people_mapper").error.as_deref(),
        Some("people_mapper failed: injected failure")
    );
    assert_eq!(stage("generator").end, common::checker::End::Skip);
    golden("fail_skip_panic", &lines);
}

#[test]
fn abort() {
    let (outcome, lines) = run_reference(&[
        "--speed",
        "0",
        "--job-id",
        "golden",
        "--abort",
        "opportunity_mapper",
    ]);
    assert_eq!(outcome, Outcome::Error);
    let summary = common::checker::check(&lines);
    let p = &summary.pipelines["golden"];
    assert_eq!(p.status, "error");
    assert_eq!(p.counts, [4, 1, 0]);
    assert!(
        !summary
            .stages
            .keys()
            .any(|(_, name)| name == "people_mapper"),
        "the pipeline stopped at opportunity_mapper"
    );
    golden("abort", &lines);
}

#[test]
fn many_jobs_at_once_on_a_multi_thread_runtime() {
    let options = Options::try_parse_from([
        "job_pipeline",
        "--speed",
        "0",
        "--job-id",
        "many",
        "--jobs",
        "50",
        "--fail",
        "role_researcher",
    ])
    .unwrap();
    let (dispatch, capture) = common::dispatch();
    let rt = common::multi_thread_runtime(&dispatch, 2);
    let outcome = tracing::dispatcher::with_default(&dispatch, || rt.block_on(run(&options)));
    drop(rt);
    assert_eq!(outcome, Outcome::Partial);
    let summary = common::checker::check(&capture.lines());
    assert_eq!(summary.pipelines.len(), 50);
    for i in 1..=50 {
        let p = &summary.pipelines[&format!("many-{i}")];
        assert_eq!((p.status.as_str(), p.counts), ("partial", [7, 1, 0]));
    }
}
