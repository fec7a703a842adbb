//! SPEC 5 and 6 (`LOG_LEVEL`): the log filter governs `log` lines only;
//! lifecycle lines and error attribution do not depend on it.
use crate::common;

use tracing::{debug, debug_span, error, info, info_span, trace, trace_span, warn};

use common::{capture_filtered, events, of_kind};

#[derive(Debug, thiserror::Error)]
#[error("mapping failed")]
struct MapError;

#[tracing::instrument(
    name = "opportunity_mapper",
    level = "trace",
    skip_all,
    fields(layer = 4),
    err
)]
fn map_opportunity() -> Result<(), MapError> {
    debug!("thinking");
    Err(MapError)
}

/// A pipeline with stages at trace and debug level, a log line at every
/// level, and one stage failing through `#[instrument(err)]`.
fn pipeline() {
    let _p = debug_span!("pipeline", job_id = "j").entered();
    {
        let _s = trace_span!("quiet", layer = 1).entered();
        trace!("t");
        debug!("d");
        info!("i");
        warn!("w");
        error!("e");
    }
    let _ = map_opportunity();
    debug!(target: "my_target", "targeted debug");
    debug!(target: "my_target::inner", "targeted inner debug");
}

/// Tests in this file take turns. Each builds its own scoped subscriber with
/// its own filter, and a call site registered at the same moment as another
/// test's dispatcher is created can be given an interest that leaves that
/// dispatcher out (tracing-core registers a call site once, against the
/// dispatchers it sees then). With filters that disagree, that shows up as
/// a missing log line now and then. A program has one global subscriber.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn log_messages(lines: &[serde_json::Value]) -> Vec<String> {
    of_kind(lines, "log")
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

fn lifecycle(lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    common::normalise(
        lines
            .iter()
            .filter(|l| l["event"] != "log")
            .cloned()
            .collect(),
    )
}

#[test]
fn the_level_picks_log_lines_and_leaves_lifecycle_lines_alone() {
    let _turn = one_at_a_time();
    let all = common::capture(pipeline);
    let table: [(&str, &[&str]); 7] = [
        (
            "trace",
            &[
                "t",
                "d",
                "i",
                "w",
                "e",
                "thinking",
                "mapping failed",
                "targeted debug",
                "targeted inner debug",
            ],
        ),
        (
            "debug",
            &[
                "d",
                "i",
                "w",
                "e",
                "thinking",
                "mapping failed",
                "targeted debug",
                "targeted inner debug",
            ],
        ),
        ("info", &["i", "w", "e", "mapping failed"]),
        ("warn", &["w", "e", "mapping failed"]),
        ("error", &["e", "mapping failed"]),
        ("off", &[]),
        (
            "info,my_target=debug",
            &[
                "i",
                "w",
                "e",
                "mapping failed",
                "targeted debug",
                "targeted inner debug",
            ],
        ),
    ];
    for (level, want) in table {
        let lines = capture_filtered(level, pipeline);
        assert_eq!(log_messages(&lines), want, "LOG_LEVEL={level}");
        assert_eq!(lifecycle(&lines), lifecycle(&all), "LOG_LEVEL={level}");
    }
}

#[test]
fn with_everything_off_errors_still_fail_their_stages() {
    let _turn = one_at_a_time();
    let lines = capture_filtered("off", pipeline);
    assert_eq!(
        events(&lines),
        [
            "pipeline_start",
            "layer_start",
            "layer_error",
            "layer_start",
            "layer_error",
            "pipeline_complete"
        ]
    );
    let errors: Vec<_> = of_kind(&lines, "layer_error")
        .iter()
        .map(|l| l["error"].clone())
        .collect();
    assert_eq!(errors, ["e", "mapping failed"]);
    assert_eq!(of_kind(&lines, "pipeline_complete")[0]["status"], "partial");
}

#[test]
fn a_more_specific_directive_can_lower_the_level_for_one_target() {
    let _turn = one_at_a_time();
    let lines = capture_filtered("warn,my_target::inner=trace", pipeline);
    assert_eq!(
        log_messages(&lines),
        ["w", "e", "mapping failed", "targeted inner debug"]
    );
    let lines = capture_filtered("info,my_target=off", || {
        let _s = info_span!("s", layer = 1).entered();
        error!(target: "my_target", "hidden but counted");
        info!("shown");
    });
    assert_eq!(log_messages(&lines), ["shown"]);
    assert_eq!(
        of_kind(&lines, "layer_error")[0]["error"],
        "hidden but counted"
    );
}

/// `EnvFilter` learns which spans its span directives match when the span's
/// call site is registered: see [`one_at_a_time`].
#[test]
fn a_span_directive_lowers_the_level_inside_that_span() {
    let _turn = one_at_a_time();
    let lines = capture_filtered("info,[opportunity_mapper]=debug", || {
        let _p = info_span!("pipeline", job_id = "j").entered();
        {
            let _s = info_span!("people_mapper", layer = 5).entered();
            debug!("not in the directive's span");
            info!("i");
        }
        let _s = info_span!("opportunity_mapper", layer = 4).entered();
        debug!("thinking");
        trace!("below the directive's level");
    });
    assert_eq!(log_messages(&lines), ["i", "thinking"]);
}
