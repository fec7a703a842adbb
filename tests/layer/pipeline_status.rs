//! SPEC 4.5: `pipeline_complete` is `error` when the pipeline span itself
//! failed, `partial` when a stage failed, else `success`; its metadata is
//! the pipeline span's own fields plus the three counts.
use crate::common;

use std::panic::catch_unwind;

use serde_json::json;
use tracing::field::Empty;
use tracing::{error, info, info_span};

use common::{capture, normalise, of_kind};

fn pipeline_end(lines: &[serde_json::Value]) -> serde_json::Value {
    let ends = of_kind(lines, "pipeline_complete");
    assert_eq!(ends.len(), 1, "{lines:#?}");
    ends[0].clone()
}

#[test]
fn all_stages_complete_gives_success_with_counts_and_own_fields() {
    let lines = capture(|| {
        let p = info_span!(
            "pipeline",
            job_id = "j",
            pipeline = "job_application",
            attempt = 1,
            finished = Empty
        );
        let _p = p.enter();
        drop(info_span!("a", layer = 1).entered());
        drop(info_span!("b", layer = 2).entered());
        p.record("finished", true);
    });
    assert_eq!(
        normalise(vec![pipeline_end(&lines)]),
        vec![json!({
            "timestamp":"<ts>","event":"pipeline_complete","job_id":"j","status":"success",
            "duration_ms":0,
            "metadata":{"pipeline":"job_application","attempt":1,"finished":true,
                        "layers_completed":2,"layers_failed":0,"layers_skipped":0}
        })]
    );
    common::checker::check(&lines);
}

#[test]
fn a_failed_stage_gives_partial() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        drop(info_span!("a", layer = 1).entered());
        {
            let _b = info_span!("b", layer = 2).entered();
            error!("b broke");
        }
        drop(info_span!("c", layer = 3, skipped = true).entered());
        info!("carrying on");
    });
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "partial");
    assert!(end.get("error").is_none(), "{end}");
    assert_eq!(
        end["metadata"],
        json!({"layers_completed":1,"layers_failed":1,"layers_skipped":1})
    );
    common::checker::check(&lines);
}

#[test]
fn an_error_event_in_the_pipeline_span_itself_gives_error() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        drop(info_span!("a", layer = 1).entered());
        error!(error = "opportunity_mapper failed", "pipeline aborted");
    });
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "error");
    assert_eq!(end["error"], "opportunity_mapper failed");
    assert_eq!(
        end["metadata"],
        json!({"layers_completed":1,"layers_failed":0,"layers_skipped":0})
    );
    common::checker::check(&lines);
}

#[test]
fn an_error_in_a_plain_span_under_the_pipeline_belongs_to_the_pipeline() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let _plain = info_span!("setup").entered();
        error!("no credentials");
    });
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "error");
    assert_eq!(end["error"], "no credentials");
}

#[test]
fn pipeline_error_wins_over_partial() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        {
            let _s = info_span!("s", layer = 1).entered();
            error!("stage broke");
        }
        error!("then the pipeline broke");
    });
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "error");
    assert_eq!(end["error"], "then the pipeline broke");
    assert_eq!(end["metadata"]["layers_failed"], 1);
}

#[test]
fn an_error_field_recorded_on_the_pipeline_gives_error() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "j", error = Empty);
        let _p = p.enter();
        p.record("error", "timed out");
    });
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "error");
    assert_eq!(end["error"], "timed out");
    assert_eq!(
        end["metadata"],
        json!({"layers_completed":0,"layers_failed":0,"layers_skipped":0}),
        "error is reserved"
    );
}

#[test]
fn instrument_err_on_the_pipeline_function_gives_error() {
    #[tracing::instrument(name = "pipeline", skip_all, fields(job_id = "j"), err)]
    fn run() -> Result<(), String> {
        let _s = info_span!("s", layer = 1).entered();
        Err("stopped".to_owned())
    }
    let lines = capture(|| assert!(run().is_err()));
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "error");
    assert_eq!(end["error"], "stopped");
    assert_eq!(
        end["metadata"]["layers_completed"], 1,
        "the stage itself completed"
    );
}

#[test]
fn a_panic_out_of_the_pipeline_span_gives_error() {
    common::quiet_panic_hook();
    let lines = capture(|| {
        let r = catch_unwind(|| {
            let _p = info_span!("pipeline", job_id = "j").entered();
            drop(info_span!("s", layer = 1).entered());
            panic!("injected: pipeline panic");
        });
        assert!(r.is_err());
    });
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "error");
    assert_eq!(end["error"], "injected: pipeline panic");
}

#[test]
fn a_stage_panic_caught_by_the_pipeline_gives_partial() {
    common::quiet_panic_hook();
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let r = catch_unwind(|| {
            let _s = info_span!("s", layer = 1).entered();
            panic!("injected: stage panic");
        });
        assert!(r.is_err());
    });
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "partial");
    assert!(end.get("error").is_none());
}

#[test]
fn stages_under_plain_spans_and_nested_stages_are_counted() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let _plain = info_span!("group").entered();
        let _outer = info_span!("outer", layer = 1).entered();
        {
            let _inner = info_span!("inner", layer = 1.5).entered();
            error!("inner broke");
        }
        drop(info_span!("skipped_one", layer = 2, skipped = true));
    });
    let end = pipeline_end(&lines);
    assert_eq!(end["status"], "partial");
    assert_eq!(
        end["metadata"],
        json!({"layers_completed":1,"layers_failed":1,"layers_skipped":1})
    );
    common::checker::check(&lines);
}

#[test]
fn a_pipeline_never_entered_yields_nothing() {
    let lines = capture(|| drop(info_span!("pipeline", job_id = "j")));
    assert!(lines.is_empty(), "{lines:#?}");
}

#[test]
fn the_pipeline_completes_after_its_stages_even_when_they_outlive_its_scope() {
    let lines = capture(|| {
        let kept;
        {
            let _p = info_span!("pipeline", job_id = "j").entered();
            let s = info_span!("s", layer = 1);
            drop(s.enter());
            kept = s.clone();
        }
        info!("the pipeline's scope has ended");
        drop(kept);
    });
    assert_eq!(
        common::events(&lines),
        [
            "pipeline_start",
            "layer_start",
            "log",
            "layer_complete",
            "pipeline_complete"
        ]
    );
    assert_eq!(pipeline_end(&lines)["metadata"]["layers_completed"], 1);
}
