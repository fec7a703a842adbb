//! What a job is, as the API shows it: its phase and outcome, its stages'
//! states, and the [`Tracker`] that derives them from the job's structured
//! lines. Pure data and pure functions, no I/O: the job's task (`job`) feeds
//! the tracker live, the log reader (`joblog`) feeds it again when a job cut
//! off by a crash is recovered, and both end a job through
//! [`Tracker::end_lines`].
//!
//! A job's end closes every stage still `running`: [`Tracker::end_lines`]
//! gives one `layer_error` line per open stage, with the job's end reason as
//! its `error`, followed by the runner's own `pipeline_complete` when the
//! child did not print one. These lines are numbered and stored like any
//! other, so the API, the streams and a replaying page agree.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::error::RunnerError;
use crate::{EventKind, Level, PipelineEvent, Status};

/// The `error` of a stage that ended because its job was cancelled (the
/// layer itself writes exactly this for stage futures dropped unfinished).
pub(crate) const CANCELLED: &str = "cancelled";
/// The end reason of jobs stopped by a runner shutdown.
pub(crate) const SHUT_DOWN: &str = "runner shut down";
/// The end reason of jobs found running when the runner starts.
pub(crate) const INTERRUPTED: &str = "interrupted: the runner stopped while the job was running";

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Waiting for a free slot (`--max-running`).
    Queued,
    Running,
    Finished,
    /// It was running when the runner stopped without recording its end.
    Interrupted,
}

/// What the page colours a job by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Queued,
    Running,
    Success,
    Partial,
    Error,
    /// It ended because someone asked it to stop.
    Cancelled,
    /// The runner died or shut down under it.
    Interrupted,
}

impl Outcome {
    /// Every value, in the order the API documents them.
    pub(crate) const ALL: [Outcome; 7] = [
        Outcome::Queued,
        Outcome::Running,
        Outcome::Success,
        Outcome::Partial,
        Outcome::Error,
        Outcome::Cancelled,
        Outcome::Interrupted,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Running => "running",
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The outcome of an ended job whose end was not a cancel or a shutdown.
    pub(crate) fn of_status(status: Option<Status>) -> Outcome {
        match status {
            Some(Status::Success) => Outcome::Success,
            Some(Status::Partial) => Outcome::Partial,
            _ => Outcome::Error,
        }
    }
}

/// How many of a job's stages are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) skipped: u64,
    pub(crate) running: u64,
    pub(crate) cancelled: u64,
}

/// A job as listed by `GET /api/jobs`, and the head of its detail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) job_id: String,
    pub(crate) state: Phase,
    pub(crate) status: Option<Status>,
    /// Absent in data directories written by older runners: see
    /// [`Summary::fill_in`].
    #[serde(default = "unknown_outcome")]
    pub(crate) outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// When the job was asked for. Absent in data directories written by
    /// older runners (then its `started_at`: see [`Summary::fill_in`]).
    #[serde(default)]
    pub(crate) created_at: String,
    /// When its child was started; absent while it is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i32>,
    #[serde(default)]
    pub(crate) lines: u64,
    #[serde(default)]
    pub(crate) counts: Counts,
    /// 1-based, while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) queue_position: Option<u64>,
    /// The job this one re-runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rerun_of: Option<String>,
    /// The W3C trace the runner gave the job (32 lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trace_id: Option<String>,
    /// The runner's own root span of the job's trace (16 lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) span_id: Option<String>,
    /// `--trace-url` with the ids filled in (derived, never read back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trace_url: Option<String>,
    /// Total tokens over the job's stages (derived, never read back).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_if_whole"
    )]
    pub(crate) tokens: Option<f64>,
    /// Estimated cost of those tokens (derived, never read back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cost: Option<f64>,
}

/// A token count as an integer when it is whole (`1200`, not `1200.0`).
fn whole_if_whole<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) if v.fract() == 0.0 && v.abs() < 9e15 => s.serialize_i64(*v as i64),
        Some(v) => s.serialize_f64(*v),
        None => s.serialize_none(),
    }
}

fn unknown_outcome() -> Outcome {
    // Replaced by `fill_in` right after loading.
    Outcome::Running
}

impl Summary {
    /// Derives what a `meta.json` of an older runner lacks.
    pub(crate) fn fill_in(&mut self, stages: &[StageState]) {
        if self.created_at.is_empty() {
            self.created_at = self.started_at.clone().unwrap_or_default();
        }
        if self.state == Phase::Queued {
            self.outcome = Outcome::Queued;
        }
        if !matches!(self.state, Phase::Running | Phase::Queued) && self.outcome == Outcome::Running
        {
            self.outcome = match (self.state, self.reason.as_deref()) {
                (Phase::Interrupted, _) | (_, Some(SHUT_DOWN)) => Outcome::Interrupted,
                (_, Some(CANCELLED)) => Outcome::Cancelled,
                _ => Outcome::of_status(self.status),
            };
        }
        if self.duration_ms.is_none() {
            if let (Some(a), Some(b)) = (
                self.started_at.as_deref().and_then(parse_timestamp_ms),
                self.finished_at.as_deref().and_then(parse_timestamp_ms),
            ) {
                self.duration_ms = Some(b.saturating_sub(a));
            }
        }
        self.counts = count(stages);
    }
}

/// A stage's state within one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StageStatus {
    Pending,
    Running,
    Complete,
    Error,
    Skipped,
    /// Ended by a `layer_error` whose error is exactly `cancelled`.
    Cancelled,
}

/// One stage of one job, as in `GET /api/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StageState {
    pub(crate) layer: Number,
    pub(crate) layer_name: String,
    pub(crate) status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// The seq of its `layer_start` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_seq: Option<u64>,
    /// The seq of its terminal line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ended_seq: Option<u64>,
    /// The terminal line's `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<Map<String, Value>>,
    /// When its `layer_start` was read (the runner's clock; the line's own
    /// timestamp for a log read back after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<String>,
    /// When its terminal line was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<String>,
    /// The `span_id` its lines carry (16 lowercase hex), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) span_id: Option<String>,
    /// Tokens from its terminal metadata (derived, never read back).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_if_whole"
    )]
    pub(crate) tokens: Option<f64>,
    /// `--trace-url` for its span (derived, never read back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trace_url: Option<String>,
    /// When it started, in ms since the Unix epoch (kept to close it).
    #[serde(skip)]
    pub(crate) started_ms: Option<u64>,
}

impl StageState {
    pub(crate) fn pending(layer: Number, layer_name: String) -> StageState {
        StageState {
            layer,
            layer_name,
            status: StageStatus::Pending,
            duration_ms: None,
            error: None,
            started_seq: None,
            ended_seq: None,
            metadata: None,
            started_at: None,
            finished_at: None,
            span_id: None,
            tokens: None,
            trace_url: None,
            started_ms: None,
        }
    }
}

/// A job's `meta.json`, and the body of `GET /api/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    #[serde(flatten)]
    pub(crate) summary: Summary,
    #[serde(default)]
    pub(crate) stages: Vec<StageState>,
}

/// Orders layer numbers numerically (`2 < 2.5 < 3`).
pub(crate) fn layer_order(a: &Number, b: &Number) -> Ordering {
    let f = |n: &Number| n.as_f64().unwrap_or(f64::MAX);
    f(a).total_cmp(&f(b))
}

/// The stage counts of a job.
pub(crate) fn count(stages: &[StageState]) -> Counts {
    let mut c = Counts::default();
    for s in stages {
        match s.status {
            StageStatus::Complete => c.completed += 1,
            StageStatus::Error => c.failed += 1,
            StageStatus::Skipped => c.skipped += 1,
            StageStatus::Running => c.running += 1,
            StageStatus::Cancelled => c.cancelled += 1,
            StageStatus::Pending => {}
        }
    }
    c
}

/// What the structured events of a job have said so far.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tracker {
    pub(crate) stages: Vec<StageState>,
    /// Terminal stage events seen, as `pipeline_complete` counts them.
    completed: u64,
    failed: u64,
    skipped: u64,
    pub(crate) status: Option<Status>,
    pub(crate) saw_complete: bool,
    /// The `error` of the first `pipeline_complete`, if it had one.
    pub(crate) complete_error: Option<String>,
    /// The latest time known for the job (ms since the Unix epoch): the
    /// runner's clock for live lines, the lines' timestamps on recovery.
    pub(crate) last_ms: Option<u64>,
}

impl Tracker {
    /// The tracker of a job that has ended, as loaded from its metadata.
    pub(crate) fn ended(stages: Vec<StageState>, status: Option<Status>) -> Tracker {
        Tracker {
            stages,
            status,
            saw_complete: true,
            ..Tracker::default()
        }
    }

    /// Takes the structured event numbered `seq` into account. `now_ms` is
    /// the runner's clock when the line was read live, `None` when it is
    /// read back from a log (the line's own `timestamp` is used then).
    /// Returns the stage it named, if any, so the stage catalogue can learn it.
    pub(crate) fn observe(
        &mut self,
        event: &Map<String, Value>,
        seq: u64,
        now_ms: Option<u64>,
    ) -> Option<(Number, String)> {
        let at = now_ms.or_else(|| {
            event
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(parse_timestamp_ms)
        });
        if at.is_some() {
            self.last_ms = self.last_ms.max(at);
        }
        let kind: EventKind = event.get("event").and_then(Value::as_str)?.parse().ok()?;
        let new_status = match kind {
            EventKind::LayerStart => StageStatus::Running,
            EventKind::LayerComplete => StageStatus::Complete,
            EventKind::LayerError => {
                if event.get("error").and_then(Value::as_str) == Some(CANCELLED) {
                    StageStatus::Cancelled
                } else {
                    StageStatus::Error
                }
            }
            EventKind::LayerSkip => StageStatus::Skipped,
            EventKind::PipelineComplete => {
                let status = event
                    .get("status")
                    .and_then(|s| serde_json::from_value::<Status>(s.clone()).ok())
                    .unwrap_or(Status::Error);
                if !self.saw_complete {
                    self.complete_error = event
                        .get("error")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                self.saw_complete = true;
                self.status = Some(worse(self.status, status));
                return None;
            }
            _ => return None,
        };
        let name = event.get("layer_name").and_then(Value::as_str)?;
        let layer = event
            .get("layer")
            .and_then(Value::as_number)
            .cloned()
            .unwrap_or_else(|| Number::from(0));
        let i = match self.stages.iter().position(|s| s.layer_name == name) {
            Some(i) => i,
            None => {
                self.stages
                    .push(StageState::pending(layer.clone(), name.to_owned()));
                self.stages.len() - 1
            }
        };
        let stage = &mut self.stages[i];
        stage.layer = layer.clone();
        stage.status = new_status;
        let seen_at = at.map(ms_timestamp);
        if let Some(span) = event
            .get("span_id")
            .and_then(Value::as_str)
            .filter(|s| is_hex(s, 16))
        {
            stage.span_id = Some(span.to_owned());
        }
        match new_status {
            StageStatus::Complete => self.completed += 1,
            StageStatus::Error | StageStatus::Cancelled => self.failed += 1,
            StageStatus::Skipped => self.skipped += 1,
            _ => {}
        }
        if new_status == StageStatus::Running {
            stage.started_seq = Some(seq);
            stage.started_ms = at;
            stage.ended_seq = None;
            stage.duration_ms = None;
            stage.error = None;
            stage.metadata = None;
            stage.started_at = seen_at;
            stage.finished_at = None;
        } else {
            stage.finished_at = seen_at;
            stage.ended_seq = Some(seq);
            stage.duration_ms = event.get("duration_ms").and_then(Value::as_u64);
            stage.error = event
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned);
            stage.metadata = event.get("metadata").and_then(Value::as_object).cloned();
        }
        Some((layer, name.to_owned()))
    }

    /// The one stage running now, if exactly one is: output read now is
    /// attributed to it.
    pub(crate) fn single_running(&self) -> Option<&StageState> {
        let mut running = self
            .stages
            .iter()
            .filter(|s| s.status == StageStatus::Running);
        let one = running.next()?;
        running.next().is_none().then_some(one)
    }

    /// The lines that end a job for `reason` at `end_ms` (ms since the Unix
    /// epoch): a `layer_error` for every stage still running (its
    /// `duration_ms` from its start as the runner saw it), then, unless the
    /// child printed one, a `pipeline_complete` with status `error`, the
    /// job's `duration_ms` and the stage counts including those closings.
    pub(crate) fn end_lines(
        &self,
        job_id: &str,
        reason: &str,
        end_ms: u64,
        job_duration_ms: u64,
    ) -> Vec<String> {
        let now = crate::layer::timestamp(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(end_ms),
        );
        let mut lines = Vec::new();
        let mut failed = self.failed;
        for stage in self
            .stages
            .iter()
            .filter(|s| s.status == StageStatus::Running)
        {
            let mut event = PipelineEvent::new(EventKind::LayerError, now.clone());
            event.layer = Some(stage.layer.clone());
            event.layer_name = Some(stage.layer_name.clone());
            event.job_id = Some(job_id.to_owned());
            event.status = Some(Status::Error);
            event.duration_ms = Some(
                stage
                    .started_ms
                    .map_or(0, |start| end_ms.saturating_sub(start)),
            );
            event.error = Some(reason.to_owned());
            lines.push(event.to_line());
            failed += 1;
        }
        if !self.saw_complete {
            let mut event = PipelineEvent::new(EventKind::PipelineComplete, now);
            event.job_id = Some(job_id.to_owned());
            event.status = Some(Status::Error);
            event.duration_ms = Some(job_duration_ms);
            event.error = Some(reason.to_owned());
            let mut metadata = Map::new();
            metadata.insert("layers_completed".into(), self.completed.into());
            metadata.insert("layers_failed".into(), failed.into());
            metadata.insert("layers_skipped".into(), self.skipped.into());
            event.metadata = Some(metadata);
            lines.push(event.to_line());
        }
        lines
    }
}

fn worse(a: Option<Status>, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Error => 3,
        Status::Partial => 2,
        _ => 1,
    };
    match a {
        Some(a) if rank(a) >= rank(b) => a,
        _ => b,
    }
}

/// Checks a job id: 1 to 64 characters of `[A-Za-z0-9_-]`. Such an id is safe
/// as a file name, in a URL and in an environment variable.
pub fn validate_job_id(id: &str) -> Result<(), RunnerError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RunnerError::InvalidJobId)
    }
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds.
pub(crate) fn ms_timestamp(ms: u64) -> String {
    crate::layer::timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// Whether `s` is `len` lowercase hex digits.
pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Now as RFC 3339 in UTC with milliseconds: `2025-11-29T10:30:45.123Z`.
pub(crate) fn now_timestamp() -> String {
    // The layer's own formatting: one definition of the wire timestamp.
    crate::layer::timestamp(std::time::SystemTime::now())
}

/// The runner's clock in ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2025-11-29T10:30:45.123Z` (the layer's format; other fraction lengths
/// and a missing fraction are accepted) → ms since the Unix epoch.
pub(crate) fn parse_timestamp_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = s.get(19..s.len() - 1)?;
    let ms = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            let f = format!("{f:0<3}");
            f[..3].parse::<i64>().ok()?
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 24 + h) * 60 + mi) * 60 + sec;
    u64::try_from(total * 1000 + ms).ok()
}

/// The level of a `log` line's data, if it is one.
pub(crate) fn log_level(event: &Map<String, Value>) -> Option<Level> {
    if event.get("event").and_then(Value::as_str) != Some("log") {
        return None;
    }
    serde_json::from_value(event.get("level")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obs(t: &mut Tracker, seq: u64, v: Value) {
        if let Value::Object(m) = v {
            t.observe(&m, seq, Some(1_000 * seq));
        }
    }

    #[test]
    fn tracker_follows_stages_and_status() {
        let mut t = Tracker::default();
        obs(
            &mut t,
            1,
            json!({"event":"layer_start","layer":3,"layer_name":"b"}),
        );
        obs(
            &mut t,
            2,
            json!({"event":"layer_start","layer":2,"layer_name":"a"}),
        );
        assert!(t.single_running().is_none(), "two are running");
        obs(
            &mut t,
            3,
            json!({"event":"layer_complete","layer":2,"layer_name":"a","duration_ms":5,"metadata":{"k":1}}),
        );
        assert_eq!(t.single_running().unwrap().layer_name, "b");
        obs(
            &mut t,
            4,
            json!({"event":"layer_error","layer":3,"layer_name":"b","error":"x"}),
        );
        obs(
            &mut t,
            5,
            json!({"event":"layer_skip","layer":4,"layer_name":"c"}),
        );
        obs(&mut t, 6, json!({"event":"log","layer":9,"layer_name":"z"}));
        let names: Vec<_> = t
            .stages
            .iter()
            .map(|s| (s.layer_name.as_str(), s.status))
            .collect();
        assert_eq!(
            names,
            [
                ("b", StageStatus::Error),
                ("a", StageStatus::Complete),
                ("c", StageStatus::Skipped)
            ]
        );
        assert_eq!(t.stages[1].duration_ms, Some(5));
        assert_eq!(t.stages[1].started_seq, Some(2));
        assert_eq!(t.stages[1].ended_seq, Some(3));
        assert_eq!(
            t.stages[1].metadata,
            Some(json!({"k":1}).as_object().unwrap().clone())
        );
        assert_eq!(t.stages[0].error.as_deref(), Some("x"));
        assert!(!t.saw_complete);
        let lines = t.end_lines("j1", "exit status: 101", 10_000, 7);
        assert_eq!(lines.len(), 1, "nothing is open: only pipeline_complete");
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            v["metadata"],
            json!({"layers_completed":1,"layers_failed":1,"layers_skipped":1})
        );
        assert_eq!(v["error"], "exit status: 101");
        assert_eq!(v["duration_ms"], 7);
        assert!(lines[0].starts_with(r#"{"timestamp":""#));
        obs(
            &mut t,
            7,
            json!({"event":"pipeline_complete","status":"partial"}),
        );
        obs(
            &mut t,
            8,
            json!({"event":"pipeline_complete","status":"success"}),
        );
        assert_eq!(t.status, Some(Status::Partial));
        assert!(t.saw_complete);
        assert!(t.end_lines("j1", "x", 0, 0).is_empty());
    }

    #[test]
    fn ending_closes_open_stages_before_pipeline_complete() {
        let mut t = Tracker::default();
        obs(
            &mut t,
            1,
            json!({"event":"layer_start","layer":1,"layer_name":"a"}),
        );
        obs(
            &mut t,
            2,
            json!({"event":"layer_start","layer":1,"layer_name":"b"}),
        );
        let lines = t.end_lines("j", CANCELLED, 5_500, 4_500);
        let v: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v.len(), 3);
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            assert_eq!(v[i]["event"], "layer_error");
            assert_eq!(v[i]["layer_name"], name);
            assert_eq!(v[i]["error"], "cancelled");
            assert_eq!(v[i]["status"], "error");
            assert_eq!(v[i]["job_id"], "j");
        }
        assert_eq!(v[0]["duration_ms"], 4_500);
        assert_eq!(v[1]["duration_ms"], 3_500);
        assert_eq!(v[2]["event"], "pipeline_complete");
        assert_eq!(v[2]["metadata"]["layers_failed"], 2);
        for (i, line) in v.iter().enumerate() {
            obs(&mut t, 3 + i as u64, line.clone());
        }
        assert!(t.stages.iter().all(|s| s.status == StageStatus::Cancelled));
        assert_eq!(count(&t.stages).cancelled, 2);
        assert!(t.end_lines("j", CANCELLED, 0, 0).is_empty(), "closed once");
    }

    #[test]
    fn timestamps_parse_back() {
        for ms in [0u64, 1_764_607_653_123, 951_782_400_000, 4_102_444_799_999] {
            let t = crate::layer::timestamp(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            );
            assert_eq!(parse_timestamp_ms(&t), Some(ms), "{t}");
        }
        assert_eq!(
            parse_timestamp_ms("2026-12-01T16:47:33Z"),
            Some(1_796_143_653_000)
        );
        for bad in [
            "",
            "x",
            "2026-13-01T00:00:00.000Z",
            "2026-12-01 16:47:33.000Z",
            "2026-12-01T16:47:33.0a0Z",
        ] {
            assert_eq!(parse_timestamp_ms(bad), None, "{bad}");
        }
    }
}
