//! SPEC 4.4 (and the never-entered case of 4.1): `skipped = true`, at
//! creation or recorded later, ends a stage in `layer_skip`; a skip is not a
//! failure.
use crate::common;

use serde_json::json;
use tracing::field::Empty;
use tracing::{info, info_span};

use common::{capture, events, normalise, of_kind};

#[test]
fn a_stage_skipped_at_creation_and_entered_starts_and_ends_in_layer_skip() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let _s = info_span!("generator", layer = 6, skipped = true, reason = "cached").entered();
        info!("nothing to do");
    });
    let lines = normalise(lines);
    assert_eq!(
        lines[1],
        json!({"timestamp":"<ts>","event":"layer_start","layer":6,"layer_name":"generator","job_id":"j"})
    );
    assert_eq!(
        lines[3],
        json!({"timestamp":"<ts>","event":"layer_skip","layer":6,"layer_name":"generator","job_id":"j","status":"skipped","duration_ms":0,"metadata":{"reason":"cached"}})
    );
}

#[test]
fn a_skipped_stage_never_entered_yields_only_layer_skip_without_duration() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        drop(info_span!("generator", layer = 6, skipped = true));
    });
    assert_eq!(
        normalise(lines),
        vec![
            json!({"timestamp":"<ts>","event":"pipeline_start","job_id":"j"}),
            json!({"timestamp":"<ts>","event":"layer_skip","layer":6,"layer_name":"generator","job_id":"j","status":"skipped"}),
            json!({"timestamp":"<ts>","event":"pipeline_complete","job_id":"j","status":"success","duration_ms":0,"metadata":{"layers_completed":0,"layers_failed":0,"layers_skipped":1}}),
        ]
    );
}

#[test]
fn a_stage_never_entered_and_not_skipped_yields_nothing() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        drop(info_span!("generator", layer = 6));
        drop(info_span!("publisher", layer = 7, skipped = false));
    });
    assert_eq!(events(&lines), ["pipeline_start", "pipeline_complete"]);
    assert_eq!(
        lines[1]["metadata"],
        json!({"layers_completed":0,"layers_failed":0,"layers_skipped":0})
    );
}

#[test]
fn skipped_recorded_later_ends_in_layer_skip() {
    let lines = capture(|| {
        let s = info_span!("generator", layer = 6, skipped = Empty);
        let _g = s.enter();
        s.record("skipped", true);
    });
    assert_eq!(events(&lines), ["layer_start", "layer_skip"]);
    assert!(lines[1]["duration_ms"].is_u64());
    assert!(lines[1].get("metadata").is_none(), "skipped is reserved");
}

#[test]
fn skipped_recorded_after_the_last_exit_still_counts() {
    let lines = capture(|| {
        let s = info_span!("generator", layer = 6, skipped = Empty);
        drop(s.enter());
        s.record("skipped", true);
    });
    assert_eq!(events(&lines), ["layer_start", "layer_skip"]);
}

#[test]
fn skipped_recorded_on_a_stage_never_entered_yields_only_layer_skip() {
    let lines = capture(|| {
        let s = info_span!("generator", layer = 6, skipped = Empty);
        s.record("skipped", true);
    });
    assert_eq!(events(&lines), ["layer_skip"]);
    assert!(lines[0].get("duration_ms").is_none());
}

#[test]
fn skipped_false_or_unset_is_a_normal_completion() {
    let lines = capture(|| {
        drop(info_span!("a", layer = 1, skipped = false).entered());
        let b = info_span!("b", layer = 2, skipped = Empty);
        b.record("skipped", true);
        b.record("skipped", false);
        drop(b.entered());
    });
    assert_eq!(
        events(&lines),
        [
            "layer_start",
            "layer_complete",
            "layer_start",
            "layer_complete"
        ]
    );
}

#[test]
fn skips_are_counted_and_do_not_make_the_pipeline_partial() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        drop(info_span!("a", layer = 1).entered());
        drop(info_span!("b", layer = 2, skipped = true).entered());
        drop(info_span!("c", layer = 3, skipped = true));
        drop(info_span!("d", layer = 4).entered());
    });
    let p = of_kind(&lines, "pipeline_complete")[0];
    assert_eq!(p["status"], "success");
    assert_eq!(
        p["metadata"],
        json!({"layers_completed":2,"layers_failed":0,"layers_skipped":2})
    );
    common::checker::check(&lines);
}

/// SPEC 4.1 says a skipped stage that was never entered yields only
/// `layer_skip`; and every `layer_error` carries `duration_ms` (section 3),
/// which a stage never entered cannot have.
#[test]
fn a_skipped_stage_never_entered_with_an_error_recorded_yields_only_layer_skip() {
    let lines = capture(|| {
        let s = info_span!("generator", layer = 6, skipped = true, error = Empty);
        s.record("error", "not needed");
    });
    assert_eq!(events(&lines), ["layer_skip"], "{lines:#?}");
}

/// A skip is a decision, not a failure (SPEC 4.4): a stage that logged an
/// ERROR and then marked itself skipped ends in `layer_skip`, carries no
/// `error` key, and is counted as skipped, not failed.
#[test]
fn a_skip_wins_over_an_error_in_the_same_stage() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "j");
        let _p = p.enter();
        let s = info_span!("people_mapper", layer = 5, skipped = Empty);
        let _s = s.enter();
        tracing::error!("contacts service unavailable");
        s.record("skipped", true);
    });
    let skip = lines
        .iter()
        .find(|l| l["event"] == "layer_skip")
        .expect("layer_skip");
    assert_eq!(skip["status"], "skipped");
    assert!(skip.get("error").is_none(), "{skip}");
    assert!(skip.get("duration_ms").is_some(), "it was entered: {skip}");
    assert!(!events(&lines).contains(&"layer_error"));
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "pipeline_complete");
    assert_eq!(done["status"], "success");
    assert_eq!(done["metadata"]["layers_skipped"], 1);
    assert_eq!(done["metadata"]["layers_failed"], 0);
}
