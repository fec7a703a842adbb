//! What users feed the layer that the demo never does: `Debug` impls that
//! fail, identities recorded late, panics re-raised from other threads,
//! duplicate keys, messages that are not text, huge and strange layer
//! numbers, pipelines nested in stages, stages cut off by a timeout.

use crate::common;

use std::fmt;

use common::checker::{check, End};
use common::{capture, of_kind, quiet_panic_hook};
use serde_json::{json, Value};
use tracing::field::Empty;
use tracing::{error, info, info_span, instrument, warn};
use tracing_pipeline::StageExt as _;

/// Writes "partial" and then fails, as a `Debug` impl may.
struct FailingDebug;

impl fmt::Debug for FailingDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("partial")?;
        Err(fmt::Error)
    }
}

impl fmt::Display for FailingDebug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("shown")?;
        Err(fmt::Error)
    }
}

fn stage_key(job: &str, name: &str) -> (Option<String>, String) {
    (Some(job.to_owned()), name.to_owned())
}

#[test]
fn a_failing_debug_impl_keeps_its_partial_text_and_never_panics() {
    let lines = capture(|| {
        let pipeline = info_span!("pipeline", job_id = "dbg", bad = ?FailingDebug);
        let _p = pipeline.enter();
        let stage = info_span!("stage", layer = 1, bad = ?FailingDebug, shown = %FailingDebug, later = Empty);
        let _s = stage.enter();
        stage.record("later", tracing::field::debug(FailingDebug));
        info!(v = ?FailingDebug, "event field");
        info!("{:?}", FailingDebug);
        info!(message = ?FailingDebug);
    });
    let summary = check(&lines);
    assert_eq!(summary.pipelines["dbg"].status, "success");
    let complete = of_kind(&lines, "layer_complete")[0];
    assert_eq!(
        complete["metadata"],
        json!({"bad": "partial", "shown": "shown", "later": "partial"})
    );
    assert_eq!(
        of_kind(&lines, "pipeline_complete")[0]["metadata"]["bad"],
        "partial"
    );
    let logs = of_kind(&lines, "log");
    assert_eq!(logs[0]["metadata"]["v"], "partial");
    assert_eq!(logs[1]["message"], "partial");
    assert_eq!(logs[2]["message"], "partial");
}

#[test]
fn a_layer_name_recorded_inside_the_stage_does_not_split_start_and_end() {
    #[instrument(name = "mapper", fields(layer = 4, layer_name = Empty))]
    fn stage() {
        tracing::Span::current().record("layer_name", "renamed_late");
    }
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "late");
        let _p = p.enter();
        stage();
    });
    check(&lines);
    let names: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "layer_start" || l["event"] == "layer_complete")
        .map(|l| &l["layer_name"])
        .collect();
    assert_eq!(names, [&json!("mapper"), &json!("mapper")]);
}

#[test]
fn a_layer_name_recorded_before_the_first_enter_is_used() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "early");
        let _p = p.enter();
        let s = info_span!("stage", layer = 1, layer_name = Empty);
        s.record("layer_name", "named_in_time");
        let _s = s.enter();
    });
    let summary = check(&lines);
    assert!(summary
        .stages
        .contains_key(&stage_key("early", "named_in_time")));
}

#[test]
fn a_job_id_recorded_inside_the_pipeline_span_waits_for_its_start() {
    #[instrument(name = "pipeline", fields(job_id = Empty))]
    fn pipeline() {
        tracing::Span::current().record("job_id", "recorded-inside");
        let s = info_span!("stage", layer = 1);
        let _s = s.enter();
        info!("inside");
    }
    let lines = capture(pipeline);
    // `pipeline_start` waits for the id, so every line carries it.
    let summary = check(&lines);
    assert_eq!(summary.pipelines["recorded-inside"].status, "success");
    assert!(
        lines.iter().all(|l| l["job_id"] == "recorded-inside"),
        "{lines:#?}"
    );
}

#[test]
fn a_pipeline_that_never_gets_its_job_id_still_pairs_its_lines() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = Empty);
        let _p = p.enter();
        let s = info_span!("stage", layer = 1);
        let _s = s.enter();
        // Too late for the start, which the stage's start forced out.
        p.record("job_id", "much-too-late");
    });
    let kinds = common::events(&lines);
    assert_eq!(
        kinds,
        [
            "pipeline_start",
            "layer_start",
            "layer_complete",
            "pipeline_complete"
        ]
    );
    assert!(
        lines.iter().all(|l| l.get("job_id").is_none()),
        "{lines:#?}"
    );
}

#[test]
fn a_job_id_recorded_before_the_first_enter_reaches_stages_created_earlier() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = Empty);
        let s = info_span!(parent: &p, "stage", layer = 1);
        p.record("job_id", "given-late");
        let _p = p.enter();
        let _s = s.enter();
    });
    let summary = check(&lines);
    assert!(summary
        .stages
        .contains_key(&stage_key("given-late", "stage")));
}

#[test]
fn a_panic_re_raised_from_another_thread_never_gets_an_old_message() {
    quiet_panic_hook();
    // An earlier panic on this thread, caught.
    let _ = std::panic::catch_unwind(|| panic!("injected: an old, caught panic"));
    // A panic on another thread, re-raised here as rayon and tokio do.
    let payload = std::thread::spawn(|| panic!("injected: the real one"))
        .join()
        .unwrap_err();
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "rethrow");
        let _p = p.enter();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let s = info_span!("stage", layer = 1);
            let _s = s.enter();
            std::panic::resume_unwind(payload);
        }));
    });
    let summary = check(&lines);
    let stage = &summary.stages[&stage_key("rethrow", "stage")];
    assert_eq!(stage.end, End::Error);
    assert_eq!(stage.error.as_deref(), Some("panicked"));
}

#[test]
fn a_tokio_join_error_re_raised_in_a_stage() {
    quiet_panic_hook();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // The old message sits on this thread.
    let _ = std::panic::catch_unwind(|| panic!("injected: stale"));
    let lines = capture(|| {
        rt.block_on(async {
            let p = info_span!("pipeline", job_id = "join");
            let _p = p.enter();
            let joined = tokio::spawn(async { panic!("injected: in a task") }).await;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let s = info_span!("stage", layer = 1);
                let _s = s.enter();
                if let Err(e) = joined {
                    std::panic::resume_unwind(e.into_panic());
                }
            }));
        })
    });
    let summary = check(&lines);
    let error = summary.stages[&stage_key("join", "stage")].error.clone();
    assert!(
        error.as_deref() == Some("panicked") || error.as_deref() == Some("injected: in a task"),
        "{error:?}"
    );
}

#[test]
fn a_pipeline_field_named_like_a_count_loses_to_the_count() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "dup", layers_completed = 99, keep = 1);
        let _p = p.enter();
        let s = info_span!("stage", layer = 1);
        let _s = s.enter();
    });
    let complete = of_kind(&lines, "pipeline_complete")[0];
    assert_eq!(
        complete["metadata"],
        json!({"keep": 1, "layers_completed": 1, "layers_failed": 0, "layers_skipped": 0})
    );
}

/// The raw text of every line, for what parsed JSON cannot show (a
/// duplicated key is silently merged by a parser).
fn raw(f: impl FnOnce()) -> String {
    let (layer, capture) = common::layer();
    let subscriber =
        tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
    tracing::subscriber::with_default(subscriber, f);
    capture.text()
}

#[test]
fn a_field_given_twice_appears_once_with_the_last_value() {
    let text = raw(|| {
        info!(a = 1, b = "x", a = 2, "twice");
        info!(a = 1, a = 2, a = 3, c = true);
    });
    for line in text.lines() {
        assert_eq!(line.matches("\"a\":").count(), 1, "{line}");
    }
    let lines = common::parse_lines(&text);
    assert_eq!(lines[0]["metadata"], json!({"b": "x", "a": 2}));
    assert_eq!(lines[1]["metadata"], json!({"a": 3, "c": true}));
}

#[test]
fn a_message_that_is_not_text_and_an_error_at_warn_still_give_a_message() {
    #[instrument(err(level = "warn"))]
    fn fails() -> Result<(), std::io::Error> {
        Err(std::io::Error::other("disk on fire"))
    }
    let lines = capture(|| {
        info!(message = 5);
        info!(message = true, other = 1);
        let _ = fails();
        warn!(error = "only an error field");
    });
    let messages: Vec<&Value> = lines.iter().map(|l| &l["message"]).collect();
    assert_eq!(
        messages,
        [
            &json!("5"),
            &json!("true"),
            &json!("disk on fire"),
            &json!("only an error field")
        ]
    );
    assert!(lines.iter().all(|l| l["metadata"].get("message").is_none()));
}

#[test]
fn a_log_line_in_a_pipeline_nested_in_a_stage_names_the_stage() {
    let lines = capture(|| {
        let outer = info_span!("pipeline", job_id = "outer");
        let _o = outer.enter();
        let stage = info_span!("fan_out", layer = 3);
        let _s = stage.enter();
        let inner = info_span!("pipeline", job_id = "inner");
        let _i = inner.enter();
        info!("inside the inner pipeline");
        let plain = info_span!("helper");
        let _h = plain.enter();
        info!("inside a plain span of the inner pipeline");
    });
    // (The stream checker keys stages by job id, so it cannot follow a
    // stage of one job around a pipeline of another; the lines are checked
    // here instead.)
    assert_eq!(common::events(&lines).len(), 8);
    for log in of_kind(&lines, "log") {
        assert_eq!(log["job_id"], "inner");
        assert_eq!(log["layer"], 3);
        assert_eq!(log["layer_name"], "fan_out");
    }
}

#[test]
fn layer_numbers_follow_one_rule() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "big");
        let _p = p.enter();
        for (name, span) in [
            ("u64_max", info_span!("u64_max", layer = u64::MAX)),
            ("i64_min", info_span!("i64_min", layer = i64::MIN)),
            ("i128_max", info_span!("i128_max", layer = i128::MAX)),
            (
                "wide_text",
                info_span!(
                    "wide_text",
                    layer = "170141183460469231731687303715884105727"
                ),
            ),
            ("half", info_span!("half", layer = 2.5)),
        ] {
            let _s = span.enter();
            let _ = name;
        }
    });
    let summary = check(&lines);
    let layer = |name: &str| summary.stages[&stage_key("big", name)].layer.clone();
    assert_eq!(layer("u64_max").as_deref(), Some("18446744073709551615"));
    assert_eq!(layer("i64_min").as_deref(), Some("-9223372036854775808"));
    assert_eq!(layer("i128_max"), None);
    assert_eq!(layer("wide_text"), None);
    assert_eq!(layer("half").as_deref(), Some("2.5"));
    let u64_line = lines.iter().find(|l| l["layer_name"] == "u64_max").unwrap();
    assert_eq!(u64_line["layer"].as_u64(), Some(u64::MAX));
}

async fn slow_stage() {
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
}

#[test]
fn a_stage_cut_off_by_a_timeout_is_cancelled_not_successful() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let lines = capture(|| {
        rt.block_on(async {
            let p = info_span!("pipeline", job_id = "cut");
            async {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    slow_stage().stage(info_span!("generator", layer = 6)),
                )
                .await;
                tokio::select! {
                    _ = slow_stage().stage(info_span!("loser", layer = 7)) => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
                }
                drop(slow_stage().stage(info_span!("never_polled", layer = 8)));
                async {}.stage(info_span!("finished", layer = 9)).await;
            }
            .stage(p)
            .await;
        })
    });
    let summary = check(&lines);
    for name in ["generator", "loser", "never_polled"] {
        let stage = &summary.stages[&stage_key("cut", name)];
        assert_eq!(stage.end, End::Error, "{name}");
        assert_eq!(stage.error.as_deref(), Some(tracing_pipeline::CANCELLED));
    }
    assert_eq!(
        summary.stages[&stage_key("cut", "finished")].end,
        End::Complete
    );
    assert_eq!(summary.pipelines["cut"].status, "partial");
}

#[test]
fn a_pipeline_future_dropped_unfinished_is_an_error() {
    let lines = capture(|| {
        let fut = async { slow_stage().await }.stage(info_span!("pipeline", job_id = "dropped"));
        // Polled once, then dropped.
        let mut fut = Box::pin(fut);
        let waker = common::noop_waker();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _enter = rt.enter();
        let _ = fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        drop(fut);
    });
    let summary = check(&lines);
    assert_eq!(summary.pipelines["dropped"].status, "error");
    assert_eq!(
        summary.pipelines["dropped"].error.as_deref(),
        Some("cancelled")
    );
}

#[test]
fn error_events_charged_through_plain_spans_and_nested_pipelines() {
    let lines = capture(|| {
        let outer = info_span!("pipeline", job_id = "o");
        let _o = outer.enter();
        let stage = info_span!("s", layer = 1);
        let _s = stage.enter();
        let helper = info_span!("helper");
        let _h = helper.enter();
        error!("in a helper of the stage");
    });
    let summary = check(&lines);
    assert_eq!(summary.stages[&stage_key("o", "s")].end, End::Error);
    assert_eq!(summary.pipelines["o"].status, "partial");
}

use std::future::Future as _;

#[test]
fn the_human_format_keeps_one_event_on_one_line_and_escapes_control_characters() {
    let (layer, capture) = common::layer();
    let layer = layer.with_format(tracing_pipeline::Format::Human);
    let subscriber =
        tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
    tracing::subscriber::with_default(subscriber, || {
        let p = info_span!("pipeline", job_id = "job\nid");
        let _p = p.enter();
        let s = info_span!("stage\x1b[2J", layer = 1, note = "a\nb");
        let _s = s.enter();
        info!(detail = ?"x\ny", "first\nsecond \x1b[31mred\x1b[0m");
        error!(error = "caused by:\n  disk on fire", "chain");
    });
    let text = capture.text();
    assert!(!text.contains('\x1b'), "{text:?}");
    // pipeline start, stage start, two logs, stage error, pipeline complete
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(text.contains("first\\nsecond \\u{1b}[31mred"), "{text}");
}

#[cfg(feature = "reference")]
#[test]
fn the_reference_pipeline_reports_a_stage_cut_off_by_its_timeout_as_cancelled() {
    use clap::Parser as _;
    let options = tracing_pipeline::reference::Options::try_parse_from([
        "job_pipeline",
        "--job-id",
        "ref-cut",
        "--speed",
        "0",
        "--hang",
        "generator",
        "--stage-timeout",
        "0.05",
    ])
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let lines = capture(|| {
        rt.block_on(tracing_pipeline::reference::run(&options));
    });
    let summary = check(&lines);
    let generator = &summary.stages[&stage_key("ref-cut", "generator")];
    assert_eq!(generator.end, End::Error);
    assert_eq!(generator.error.as_deref(), Some("cancelled"));
    assert_eq!(summary.pipelines["ref-cut"].status, "partial");
    assert_eq!(summary.pipelines["ref-cut"].counts, [7, 1, 0]);
}
