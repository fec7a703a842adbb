//! SPEC section 2: which spans are stages and pipelines, and what their
//! fields become (`layer`, `layer_name`, `metadata`).
use crate::common;

use serde_json::json;
use tracing::field::Empty;
use tracing::{debug_span, error_span, info_span, trace_span, warn_span};

use common::{capture, normalise, of_kind};

#[test]
fn a_span_with_a_layer_field_is_a_stage_at_every_level() {
    let lines = capture(|| {
        drop(trace_span!("t", layer = 1).entered());
        drop(debug_span!("d", layer = 2).entered());
        drop(info_span!("i", layer = 3).entered());
        drop(warn_span!("w", layer = 4).entered());
        drop(error_span!("e", layer = 5).entered());
    });
    let names = ["t", "d", "i", "w", "e"];
    assert_eq!(lines.len(), 10, "{lines:#?}");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            normalise(lines[2 * i..2 * i + 2].to_vec()),
            vec![
                json!({"timestamp":"<ts>","event":"layer_start","layer":i + 1,"layer_name":name}),
                json!({"timestamp":"<ts>","event":"layer_complete","layer":i + 1,"layer_name":name,"status":"success","duration_ms":0}),
            ]
        );
    }
}

#[test]
fn a_span_with_job_id_and_no_layer_is_a_pipeline_at_every_level() {
    let lines = capture(|| {
        drop(trace_span!("pipeline", job_id = "a").entered());
        drop(debug_span!("anything", job_id = "b").entered());
    });
    assert_eq!(
        normalise(lines),
        vec![
            json!({"timestamp":"<ts>","event":"pipeline_start","job_id":"a"}),
            json!({"timestamp":"<ts>","event":"pipeline_complete","job_id":"a","status":"success","duration_ms":0,"metadata":{"layers_completed":0,"layers_failed":0,"layers_skipped":0}}),
            json!({"timestamp":"<ts>","event":"pipeline_start","job_id":"b"}),
            json!({"timestamp":"<ts>","event":"pipeline_complete","job_id":"b","status":"success","duration_ms":0,"metadata":{"layers_completed":0,"layers_failed":0,"layers_skipped":0}}),
        ]
    );
}

#[test]
fn a_span_with_both_layer_and_job_id_is_a_stage() {
    let lines = capture(|| {
        drop(info_span!("s", layer = 1, job_id = "own").entered());
    });
    assert_eq!(common::events(&lines), ["layer_start", "layer_complete"]);
}

#[test]
fn plain_spans_and_events_outside_pipelines_give_no_lifecycle_lines() {
    let lines = capture(|| {
        let _a = info_span!("plain", n = 1).entered();
        let _b = debug_span!("other").entered();
    });
    assert!(lines.is_empty(), "{lines:#?}");
}

#[test]
fn layer_name_is_the_span_name_unless_a_layer_name_field_says_otherwise() {
    let lines = capture(|| {
        drop(info_span!("by_name", layer = 1).entered());
        drop(info_span!("span_name", layer = 2, layer_name = "by_field").entered());
        drop(info_span!("span_name", layer = 3, layer_name = %"by_display").entered());
    });
    let starts: Vec<_> = of_kind(&lines, "layer_start")
        .iter()
        .map(|l| l["layer_name"].clone())
        .collect();
    assert_eq!(
        starts,
        [json!("by_name"), json!("by_field"), json!("by_display")]
    );
    let ends: Vec<_> = of_kind(&lines, "layer_complete")
        .iter()
        .map(|l| l["layer_name"].clone())
        .collect();
    assert_eq!(ends, starts);
}

#[test]
fn layer_numbers_keep_their_json_type() {
    let lines = capture(|| {
        drop(info_span!("star_selector", layer = 2.5).entered());
        drop(info_span!("opportunity_mapper", layer = 4).entered());
        drop(info_span!("unsigned", layer = 7u64).entered());
    });
    assert_eq!(lines[0]["layer"], json!(2.5));
    assert_eq!(lines[1]["layer"], json!(2.5));
    assert!(lines[2]["layer"].is_i64() || lines[2]["layer"].is_u64());
    assert_eq!(lines[2]["layer"], json!(4));
    assert_eq!(lines[3]["layer"], json!(4));
    assert_eq!(lines[4]["layer"], json!(7));
}

#[test]
fn metadata_keeps_natural_json_types_and_formats_display_and_debug_as_strings() {
    let lines = capture(|| {
        drop(
            info_span!(
                "stage",
                layer = 1,
                int = -3,
                unsigned = 7u64,
                float = 0.25,
                yes = true,
                text = "hello",
                shown = %"display \"me\"",
                debugged = ?Some(vec![1, 2]),
                debug_str = ?"quoted",
            )
            .entered(),
        );
    });
    let end = &lines[1];
    assert_eq!(end["event"], "layer_complete");
    assert_eq!(
        end["metadata"],
        json!({
            "int": -3,
            "unsigned": 7,
            "float": 0.25,
            "yes": true,
            "text": "hello",
            "shown": "display \"me\"",
            "debugged": "Some([1, 2])",
            "debug_str": "\"quoted\"",
        })
    );
    assert_eq!(
        common::keys(&end["metadata"]),
        [
            "int",
            "unsigned",
            "float",
            "yes",
            "text",
            "shown",
            "debugged",
            "debug_str"
        ],
        "metadata keeps declaration order"
    );
}

#[test]
fn late_records_land_in_metadata_and_replace_earlier_values() {
    let lines = capture(|| {
        let span = info_span!(
            "opportunity_mapper",
            layer = 4,
            fit_score = Empty,
            tokens_used = 1200,
            note = Empty
        );
        let _g = span.enter();
        span.record("fit_score", 85);
        span.record("tokens_used", 1500);
        span.record("note", tracing::field::display("late"));
    });
    assert_eq!(
        lines[1]["metadata"],
        json!({"fit_score": 85, "tokens_used": 1500, "note": "late"})
    );
}

#[test]
fn a_record_after_the_last_exit_still_counts_before_close() {
    let lines = capture(|| {
        let span = info_span!("s", layer = 1, fit_score = Empty);
        drop(span.enter());
        span.record("fit_score", 9);
    });
    assert_eq!(lines[1]["metadata"], json!({"fit_score": 9}));
}

#[test]
fn empty_fields_never_recorded_are_absent_and_no_metadata_means_no_key() {
    let lines = capture(|| {
        drop(info_span!("s", layer = 1, fit_score = Empty).entered());
        drop(info_span!("t", layer = 1, fit_score = Empty, kept = 1).entered());
        drop(info_span!("pipeline", job_id = "j", later = Empty).entered());
    });
    let s = &lines[1];
    assert_eq!(s["event"], "layer_complete");
    assert!(s.get("metadata").is_none(), "{s}");
    assert_eq!(lines[3]["metadata"], json!({"kept": 1}));
    let p = &lines[5];
    assert_eq!(p["event"], "pipeline_complete");
    assert_eq!(
        p["metadata"],
        json!({"layers_completed":0,"layers_failed":0,"layers_skipped":0})
    );
    for line in &lines {
        assert!(
            !line.to_string().contains("null"),
            "no key may be null: {line}"
        );
    }
}

#[test]
fn reserved_fields_never_appear_in_metadata() {
    let lines = capture(|| {
        let p = info_span!(
            "pipeline",
            job_id = "j",
            skipped = Empty,
            error = Empty,
            kept = 1
        );
        let _p = p.enter();
        let s = info_span!(
            "s",
            layer = 1,
            layer_name = "named",
            job_id = "ignored",
            skipped = false,
            error = Empty,
            other = 2
        );
        let _s = s.enter();
        s.record("layer_name", "renamed_late_is_still_reserved");
    });
    for line in &lines {
        if let Some(meta) = line.get("metadata") {
            for reserved in ["layer", "layer_name", "job_id", "skipped", "error"] {
                assert!(
                    meta.get(reserved).is_none(),
                    "{reserved} in metadata: {line}"
                );
            }
        }
    }
    let stage_end = of_kind(&lines, "layer_complete")[0];
    assert_eq!(stage_end["metadata"], json!({"other": 2}));
    let pipeline_end = of_kind(&lines, "pipeline_complete")[0];
    assert_eq!(
        pipeline_end["metadata"],
        json!({"kept":1,"layers_completed":1,"layers_failed":0,"layers_skipped":0})
    );
}

#[test]
fn the_pipeline_start_carries_the_pipeline_fields_known_then() {
    let lines = capture(|| {
        let p = info_span!(
            "pipeline",
            job_id = "j",
            pipeline = "job_application",
            n = 3
        );
        drop(p.enter());
    });
    assert_eq!(
        normalise(lines)[0],
        json!({"timestamp":"<ts>","event":"pipeline_start","job_id":"j","metadata":{"pipeline":"job_application","n":3}})
    );
}

#[test]
fn layer_start_carries_no_metadata() {
    let lines = capture(|| {
        drop(info_span!("s", layer = 1, tokens = 5).entered());
    });
    assert_eq!(
        normalise(lines)[0],
        json!({"timestamp":"<ts>","event":"layer_start","layer":1,"layer_name":"s"})
    );
}

#[test]
fn instrument_attribute_spans_are_stages() {
    #[tracing::instrument(name = "opportunity_mapper", skip_all, fields(layer = 4, fit_score = Empty))]
    fn map(x: u32) -> u32 {
        tracing::Span::current().record("fit_score", 85);
        x + 1
    }
    let lines = capture(|| {
        assert_eq!(map(1), 2);
    });
    assert_eq!(
        normalise(lines),
        vec![
            json!({"timestamp":"<ts>","event":"layer_start","layer":4,"layer_name":"opportunity_mapper"}),
            json!({"timestamp":"<ts>","event":"layer_complete","layer":4,"layer_name":"opportunity_mapper","status":"success","duration_ms":0,"metadata":{"fit_score":85}}),
        ]
    );
}

#[test]
fn a_stage_entered_many_times_starts_once_and_ends_once() {
    let lines = capture(|| {
        let s = info_span!("s", layer = 1);
        for _ in 0..5 {
            drop(s.enter());
        }
        let _a = s.enter();
        let _b = s.enter(); // re-entered while entered
    });
    assert_eq!(common::events(&lines), ["layer_start", "layer_complete"]);
}
