//! SPEC section 3: `job_id` on every line produced inside a pipeline span,
//! inherited by stages, nested spans and log events, and left out outside.
//! `layer`/`layer_name` on a `log` line come from the innermost stage.
use crate::common;

use serde_json::json;
use tracing::{info, info_span, warn};

use common::{capture, normalise, of_kind};

#[test]
fn stages_nested_spans_and_log_events_inherit_the_job_id() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "job-7");
        let _p = p.enter();
        info!("in the pipeline");
        let plain = info_span!("helper");
        let _plain = plain.enter();
        info!("in a plain span");
        let s = info_span!("stage", layer = 1);
        let _s = s.enter();
        let inner = info_span!("inner");
        let _inner = inner.enter();
        warn!("deep inside");
    });
    for line in &lines {
        assert_eq!(line["job_id"], "job-7", "{line}");
    }
    let logs = of_kind(&lines, "log");
    assert_eq!(logs.len(), 3);
    assert!(logs[0].get("layer_name").is_none() && logs[0].get("layer").is_none());
    assert!(logs[1].get("layer_name").is_none());
    assert_eq!(logs[2]["layer_name"], "stage");
    assert_eq!(logs[2]["layer"], 1);
}

#[test]
fn job_id_and_layer_are_left_out_outside_pipelines_and_stages() {
    let lines = capture(|| {
        info!("alone");
        drop(info_span!("orphan_stage", layer = 3).entered());
    });
    assert_eq!(
        normalise(lines),
        vec![
            json!({"timestamp":"<ts>","event":"log","level":"info","target":"layer::job_id","message":"alone"}),
            json!({"timestamp":"<ts>","event":"layer_start","layer":3,"layer_name":"orphan_stage"}),
            json!({"timestamp":"<ts>","event":"layer_complete","layer":3,"layer_name":"orphan_stage","status":"success","duration_ms":0}),
        ]
    );
}

#[test]
fn log_lines_name_the_innermost_stage() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let _outer = info_span!("outer", layer = 2).entered();
        info!("in outer");
        {
            let _inner = info_span!("inner", layer = 2.5).entered();
            let _plain = info_span!("plain").entered();
            info!("in inner");
        }
        info!("outer again");
    });
    let logs = of_kind(&lines, "log");
    let got: Vec<_> = logs
        .iter()
        .map(|l| {
            (
                l["message"].clone(),
                l["layer"].clone(),
                l["layer_name"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!("in outer"), json!(2), json!("outer")),
            (json!("in inner"), json!(2.5), json!("inner")),
            (json!("outer again"), json!(2), json!("outer")),
        ]
    );
}

#[test]
fn a_log_line_has_keys_in_table_order_with_its_fields_as_metadata() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let _s = info_span!("opportunity_mapper", layer = 4).entered();
        info!(fit_score = 85, model = "m", "mapped the opportunity");
    });
    assert_eq!(
        normalise(of_kind(&lines, "log").into_iter().cloned().collect()),
        vec![json!({
            "timestamp":"<ts>","event":"log","level":"info","target":"layer::job_id",
            "message":"mapped the opportunity","job_id":"j","layer":4,
            "layer_name":"opportunity_mapper","metadata":{"fit_score":85,"model":"m"}
        })]
    );
}

#[test]
fn explicit_parents_carry_the_job_id_too() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = "explicit");
        drop(p.enter());
        // Created and entered outside the pipeline's scope, inside an
        // unrelated span, with an explicit parent.
        let _elsewhere = info_span!("elsewhere").entered();
        let s = info_span!(parent: &p, "stage", layer = 1);
        info!(parent: &s, "before the stage starts");
        drop(s.entered());
        info!(parent: None, "rootless");
    });
    let stage = of_kind(&lines, "layer_complete")[0];
    assert_eq!(stage["job_id"], "explicit");
    let logs = of_kind(&lines, "log");
    assert_eq!(logs[0]["job_id"], "explicit");
    assert_eq!(logs[0]["layer_name"], "stage");
    assert!(logs[1].get("job_id").is_none(), "{}", logs[1]);
}

#[test]
fn each_pipeline_gives_its_own_id_and_an_inner_pipeline_wins() {
    let lines = capture(|| {
        drop(info_span!("pipeline", job_id = "first").entered());
        let _outer = info_span!("pipeline", job_id = "outer").entered();
        let _inner = info_span!("pipeline", job_id = "inner").entered();
        let _s = info_span!("s", layer = 1).entered();
        info!("where am I");
    });
    let ids: Vec<_> = lines.iter().map(|l| l["job_id"].clone()).collect();
    assert_eq!(ids[..2], [json!("first"), json!("first")]);
    let log = of_kind(&lines, "log")[0];
    assert_eq!(log["job_id"], "inner");
    assert_eq!(of_kind(&lines, "layer_start")[0]["job_id"], "inner");
}

#[test]
fn job_ids_given_by_display_or_as_numbers_are_strings() {
    let id = String::from("6929c97b");
    let lines = capture(|| {
        drop(info_span!("pipeline", job_id = %id).entered());
        drop(info_span!("pipeline", job_id = 42).entered());
    });
    assert_eq!(lines[0]["job_id"], "6929c97b");
    assert_eq!(lines[2]["job_id"], "42");
}

#[test]
fn a_job_id_recorded_late_is_used_from_then_on() {
    let lines = capture(|| {
        let p = info_span!("pipeline", job_id = tracing::field::Empty);
        p.record("job_id", "late");
        let _p = p.enter();
        drop(info_span!("s", layer = 1).entered());
    });
    for line in &lines {
        assert_eq!(line["job_id"], "late", "{line}");
    }
}
