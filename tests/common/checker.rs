//! A stream checker: SPEC section 4 asserted on any stream of lines, and a
//! summary of the stream that tests compare with what their model expects.
//!
//! [`check`] panics (with the offending line) unless, for every pipeline and
//! every stage in the stream:
//!
//! - a pipeline has exactly one `pipeline_start`, before every other line of
//!   its job, and exactly one `pipeline_complete`, after every other line of
//!   its job (4.1);
//! - a stage (keyed by `job_id` and `layer_name`, so tests give stages unique
//!   names) has at most one `layer_start` and exactly one terminal event,
//!   after its start, with the same `layer`, `layer_name` and `job_id`; a
//!   terminal without a start is only allowed for `layer_skip`, and then has
//!   no `duration_ms` (4.1);
//! - statuses match their events, `layer_error` and only it (among stage
//!   events) carries `error` (4.3);
//! - a pipeline's counts are the tally of its stages' terminal events, its
//!   status is `error` exactly when it carries an `error`, else `partial`
//!   exactly when a stage failed (4.5);
//! - a `log` line with a `job_id` comes while that pipeline is open, and one
//!   with a `layer_name` while that stage is open (no cross-wiring).
//!
//! The returned [`Summary`] says how each pipeline and stage ended, for the
//! caller to compare with its model (statuses derived as the rules say).
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use serde_json::Value;

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    Complete,
    Error,
    Skip,
}

/// One stage as the stream tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSummary {
    /// The `layer` number as JSON text (`4`, `2.5`), if any.
    pub layer: Option<String>,
    /// Whether it had a `layer_start`.
    pub started: bool,
    pub end: End,
    pub error: Option<String>,
    /// The terminal event's metadata, if any.
    pub metadata: Option<Value>,
}

/// One pipeline as the stream tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSummary {
    pub status: String,
    pub error: Option<String>,
    /// `layers_completed`, `layers_failed`, `layers_skipped`.
    pub counts: [u64; 3],
    /// The pipeline's own metadata, without the counts.
    pub metadata: Value,
}

/// A `log` line, reduced to what says where it came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogSummary {
    pub level: String,
    pub job_id: Option<String>,
    pub layer_name: Option<String>,
}

/// The whole stream, summarised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub pipelines: BTreeMap<String, PipelineSummary>,
    /// Keyed by (job_id, layer_name).
    pub stages: BTreeMap<(Option<String>, String), StageSummary>,
    /// Keyed by message; messages are unique in the tests that use this.
    pub logs: BTreeMap<String, Vec<LogSummary>>,
}

#[derive(Default)]
struct StageTrack {
    start: Option<usize>,
    start_line: Option<Value>,
    end: Option<usize>,
}

#[derive(Default)]
struct PipelineTrack {
    start: Option<usize>,
    end: Option<usize>,
    first_line: Option<usize>,
    last_line: Option<usize>,
    tally: [u64; 3],
}

fn str_of(line: &Value, key: &str) -> Option<String> {
    line.get(key).map(|v| {
        v.as_str()
            .unwrap_or_else(|| panic!("{key} is not a string: {line}"))
            .to_owned()
    })
}

/// Asserts SPEC section 4 on `lines` (see the module docs) and returns the
/// summary.
pub fn check(lines: &[Value]) -> Summary {
    let mut summary = Summary::default();
    let mut pipelines: BTreeMap<String, PipelineTrack> = BTreeMap::new();
    let mut stages: BTreeMap<(Option<String>, String), StageTrack> = BTreeMap::new();

    for (i, line) in lines.iter().enumerate() {
        let event = line["event"].as_str().expect("event is a string");
        let job = str_of(line, "job_id");
        if let Some(job) = &job {
            let p = pipelines.entry(job.clone()).or_default();
            p.first_line.get_or_insert(i);
            p.last_line = Some(i);
        }
        match event {
            "pipeline_start" => {
                let job = job.unwrap_or_else(|| panic!("pipeline_start without job_id: {line}"));
                let p = pipelines.get_mut(&job).unwrap();
                assert!(p.start.is_none(), "second pipeline_start for {job}: {line}");
                p.start = Some(i);
            }
            "pipeline_complete" => {
                let job = job.unwrap_or_else(|| panic!("pipeline_complete without job_id: {line}"));
                let p = pipelines.get_mut(&job).unwrap();
                assert!(
                    p.start.is_some(),
                    "pipeline_complete before its start: {line}"
                );
                assert!(
                    p.end.is_none(),
                    "second pipeline_complete for {job}: {line}"
                );
                p.end = Some(i);
                let meta = line["metadata"].as_object().expect("pipeline metadata");
                let count = |k: &str| meta[k].as_u64().expect("count");
                let counts = [
                    count("layers_completed"),
                    count("layers_failed"),
                    count("layers_skipped"),
                ];
                let mut own = meta.clone();
                for k in ["layers_completed", "layers_failed", "layers_skipped"] {
                    own.shift_remove(k);
                }
                let status = str_of(line, "status").expect("status");
                let error = str_of(line, "error");
                assert!(line["duration_ms"].is_u64(), "no duration: {line}");
                summary.pipelines.insert(
                    job,
                    PipelineSummary {
                        status,
                        error,
                        counts,
                        metadata: Value::Object(own),
                    },
                );
            }
            "layer_start" => {
                let name = str_of(line, "layer_name").expect("layer_name");
                let key = (job.clone(), name);
                if let Some(job) = &job {
                    let p = &pipelines[job];
                    assert!(
                        p.start.is_some() && p.end.is_none(),
                        "layer_start outside its pipeline: {line}"
                    );
                }
                let s = stages.entry(key).or_default();
                assert!(s.start.is_none(), "second layer_start: {line}");
                assert!(s.end.is_none(), "layer_start after its end: {line}");
                s.start = Some(i);
                s.start_line = Some(line.clone());
            }
            "layer_complete" | "layer_error" | "layer_skip" => {
                let name = str_of(line, "layer_name").expect("layer_name");
                let key = (job.clone(), name);
                if let Some(job) = &job {
                    let p = pipelines.get_mut(job).unwrap();
                    assert!(
                        p.start.is_some() && p.end.is_none(),
                        "{event} outside its pipeline: {line}"
                    );
                }
                let s = stages.entry(key.clone()).or_default();
                assert!(s.end.is_none(), "second terminal event: {line}");
                s.end = Some(i);
                let (end, status, slot) = match event {
                    "layer_complete" => (End::Complete, "success", 0),
                    "layer_error" => (End::Error, "error", 1),
                    _ => (End::Skip, "skipped", 2),
                };
                assert_eq!(line["status"], status, "status of {line}");
                if let Some(job) = &job {
                    pipelines.get_mut(job).unwrap().tally[slot] += 1;
                }
                let error = str_of(line, "error");
                assert_eq!(
                    error.is_some(),
                    end == End::Error,
                    "error key on {event}: {line}"
                );
                match &s.start_line {
                    Some(start) => {
                        assert_eq!(start["layer"], line["layer"], "layer changed: {line}");
                        assert!(line["duration_ms"].is_u64(), "no duration: {line}");
                    }
                    None => {
                        assert_eq!(end, End::Skip, "{event} of a stage never started: {line}");
                        assert!(
                            line.get("duration_ms").is_none(),
                            "duration of a stage never entered: {line}"
                        );
                    }
                }
                summary.stages.insert(
                    key,
                    StageSummary {
                        layer: line.get("layer").map(Value::to_string),
                        started: s.start.is_some(),
                        end,
                        error,
                        metadata: line.get("metadata").cloned(),
                    },
                );
            }
            "log" => {
                if let Some(job) = &job {
                    let p = &pipelines[job];
                    assert!(
                        p.start.is_some() && p.end.is_none(),
                        "log line outside its pipeline: {line}"
                    );
                }
                let layer_name = str_of(line, "layer_name");
                if let Some(name) = &layer_name {
                    let s = stages
                        .get(&(job.clone(), name.clone()))
                        .unwrap_or_else(|| panic!("log line in a stage never started: {line}"));
                    assert!(
                        s.start.is_some() && s.end.is_none(),
                        "log line outside its stage: {line}"
                    );
                    let start = s.start_line.as_ref().unwrap();
                    assert_eq!(start["layer"], line["layer"], "layer of {line}");
                }
                let message = str_of(line, "message").expect("message");
                summary.logs.entry(message).or_default().push(LogSummary {
                    level: str_of(line, "level").expect("level"),
                    job_id: job,
                    layer_name,
                });
            }
            other => panic!("unknown event {other}: {line}"),
        }
    }

    for ((job, name), s) in &stages {
        assert!(
            s.end.is_some(),
            "stage {name} of {job:?} started and never ended"
        );
    }
    for (job, p) in &pipelines {
        let (Some(start), Some(end)) = (p.start, p.end) else {
            panic!("pipeline {job}: lines without both pipeline_start and pipeline_complete");
        };
        assert_eq!(
            p.first_line,
            Some(start),
            "pipeline {job}: a line before pipeline_start"
        );
        assert_eq!(
            p.last_line,
            Some(end),
            "pipeline {job}: a line after pipeline_complete"
        );
        let ps = &summary.pipelines[job];
        assert_eq!(ps.counts, p.tally, "pipeline {job}: counts vs its stages");
        let expected_status = if ps.error.is_some() {
            "error"
        } else if p.tally[1] > 0 {
            "partial"
        } else {
            "success"
        };
        assert_eq!(ps.status, expected_status, "pipeline {job}: status");
    }
    summary
}
