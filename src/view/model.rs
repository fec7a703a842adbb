//! What the view knows: the stream's lines in, the state of every job out.
//!
//! Pure and clock-free: [`Model::apply`] takes each [`Item`] with the time
//! at which it was seen (measured by the caller from the start of the view),
//! so tests can script a stream and its timing exactly. Stages are keyed by
//! their `layer_name` within a job (two stages may share a layer number) and
//! ordered by layer number, then by first appearance.

use std::time::Duration;

use serde_json::{Map, Number, Value};

use crate::{EventKind, PipelineEvent, Status};

/// Which of a command's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stream {
    /// Standard output (and stdin mode, and a runner's plain output).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Item {
    /// A line of the event schema.
    Event(Box<PipelineEvent>),
    /// Anything else: plain text, other JSON, a line that is not quite an
    /// event. Shown as output, never dropped.
    Output {
        /// The line as it came (not yet sanitised).
        text: String,
        /// Where it came from.
        stream: Stream,
    },
}

/// Reads one line of a pipeline's output: an event if it parses as one,
/// else output.
pub fn classify(line: &str, stream: Stream) -> Item {
    if line.trim_start().starts_with('{') {
        if let Ok(event) = PipelineEvent::from_line(line) {
            return Item::Event(Box::new(event));
        }
    }
    Item::Output {
        text: line.to_owned(),
        stream,
    }
}

/// Reads the `data` of one message of a runner's event stream: a forwarded
/// event, or the runner's `{"type":"output","text":...}` wrapper.
pub fn classify_runner_data(data: &str) -> Item {
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(data) {
        if obj.get("type").and_then(Value::as_str) == Some("output") {
            if let Some(text) = obj.get("text").and_then(Value::as_str) {
                let stream = match obj.get("stream").and_then(Value::as_str) {
                    Some("stderr") => Stream::Stderr,
                    _ => Stream::Stdout,
                };
                return Item::Output {
                    text: text.to_owned(),
                    stream,
                };
            }
        }
    }
    classify(data, Stream::Stdout)
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StageState {
    /// `layer_start` seen, no end yet.
    Running,
    /// `layer_complete`.
    Complete,
    /// `layer_error`.
    Error,
    /// `layer_skip`.
    Skipped,
}

/// One stage of one job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stage {
    /// Its layer number, as written (`2`, `2.5`); `None` if the line had none.
    pub layer: Option<Number>,
    /// Its name, the key within the job.
    pub name: String,
    /// Where it is.
    pub state: StageState,
    /// `duration_ms` of its end event.
    pub duration_ms: Option<u64>,
    /// The error text of a `layer_error`.
    pub error: Option<String>,
    /// `metadata.tokens_used` of its end event.
    pub tokens: Option<u64>,
    /// When its start (or, without one, its end) was seen.
    pub seen_at: Duration,
}

/// How a job's `pipeline_complete` ended it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobEnd {
    /// `success`, `partial` or `error`.
    pub status: Status,
    /// The pipeline's `duration_ms`.
    pub duration_ms: Option<u64>,
    /// The pipeline's own error text.
    pub error: Option<String>,
    /// `metadata.tokens_used` of the pipeline span, if it has one.
    pub tokens: Option<u64>,
}

/// One pipeline run, keyed by `job_id`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Job {
    /// Its `job_id`; `None` for lines outside any pipeline span.
    pub id: Option<String>,
    /// Its stages, in the order they first appeared.
    pub stages: Vec<Stage>,
    /// Its `pipeline_complete`, once seen.
    pub end: Option<JobEnd>,
    /// When its first line was seen.
    pub seen_at: Duration,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

impl Job {
    fn new(id: Option<String>, at: Duration) -> Job {
        Job {
            id,
            stages: Vec::new(),
            end: None,
            seen_at: at,
            first_ms: None,
            last_ms: None,
        }
    }

    /// The stage named `name`, if this job has reached it.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// How long the job took: its `duration_ms`, else the time between its
    /// first and last timestamps.
    pub fn total_ms(&self) -> Option<u64> {
        if let Some(ms) = self.end.as_ref().and_then(|e| e.duration_ms) {
            return Some(ms);
        }
        let (first, last) = (self.first_ms?, self.last_ms?);
        u64::try_from(last - first).ok()
    }

    /// How many stages are in `state`.
    pub fn count(&self, state: StageState) -> usize {
        self.stages.iter().filter(|s| s.state == state).count()
    }

    /// The finished stage that took longest (the first of equals).
    pub fn slowest(&self) -> Option<&Stage> {
        self.stages
            .iter()
            .filter(|s| s.state != StageState::Running && s.duration_ms.is_some())
            .fold(None, |best: Option<&Stage>, s| match best {
                Some(b) if b.duration_ms >= s.duration_ms => Some(b),
                _ => Some(s),
            })
    }

    /// Tokens used: the stages' `tokens_used` summed, else the pipeline's.
    pub fn tokens(&self) -> Option<u64> {
        let mut sum = None;
        for t in self.stages.iter().filter_map(|s| s.tokens) {
            sum = Some(sum.unwrap_or(0) + t);
        }
        sum.or_else(|| self.end.as_ref().and_then(|e| e.tokens))
    }
}

/// A stage name and layer number seen in any job, for the order of rows.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StageKey {
    /// The layer number, as written.
    pub layer: Option<Number>,
    /// The stage's name.
    pub name: String,
}

/// Everything the stream has said so far.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Model {
    /// Jobs in the order they first appeared.
    pub jobs: Vec<Job>,
    /// Every stage seen in any job, ordered by layer number then first
    /// appearance: the rows of each job's block.
    pub order: Vec<StageKey>,
    /// Lines that were not events.
    pub output_lines: u64,
    /// Lines that were events.
    pub event_lines: u64,
}

/// How a view ends, as an exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every job ended in `success` (or `partial` without `--strict`): 0.
    Success,
    /// A job ended in `error` (or `partial` with `--strict`): 1.
    Failed,
    /// The input ended before some job's `pipeline_complete`, or held no
    /// pipeline at all: 2.
    Incomplete,
}

impl Verdict {
    /// The process exit status: 0, 1 or 2.
    pub fn code(self) -> u8 {
        match self {
            Verdict::Success => 0,
            Verdict::Failed => 1,
            Verdict::Incomplete => 2,
        }
    }
}

impl Model {
    /// An empty model.
    pub fn new() -> Model {
        Model::default()
    }

    /// Takes in one line, seen `at` after the view started.
    pub fn apply(&mut self, item: &Item, at: Duration) {
        let Item::Event(event) = item else {
            self.output_lines += 1;
            return;
        };
        self.event_lines += 1;
        let job = self.job_mut(event.job_id.as_deref(), at);
        if let Some(ms) = parse_timestamp_ms(&event.timestamp) {
            job.first_ms = Some(job.first_ms.map_or(ms, |f| f.min(ms)));
            job.last_ms = Some(job.last_ms.map_or(ms, |l| l.max(ms)));
        }
        match event.event {
            EventKind::PipelineStart | EventKind::Log => {}
            EventKind::PipelineComplete => {
                job.end = Some(JobEnd {
                    status: event.status.unwrap_or(Status::Error),
                    duration_ms: event.duration_ms,
                    error: event.error.clone(),
                    tokens: tokens(event.metadata.as_ref()),
                });
            }
            kind => {
                let name = event
                    .layer_name
                    .clone()
                    .unwrap_or_else(|| match &event.layer {
                        Some(n) => format!("layer {n}"),
                        None => "(unnamed stage)".to_owned(),
                    });
                let state = match kind {
                    EventKind::LayerStart => StageState::Running,
                    EventKind::LayerComplete => StageState::Complete,
                    EventKind::LayerError => StageState::Error,
                    _ => StageState::Skipped,
                };
                let stage = match job.stages.iter().position(|s| s.name == name) {
                    Some(i) => &mut job.stages[i],
                    None => {
                        job.stages.push(Stage {
                            layer: event.layer.clone(),
                            name: name.clone(),
                            state,
                            duration_ms: None,
                            error: None,
                            tokens: None,
                            seen_at: at,
                        });
                        job.stages.last_mut().expect("just pushed")
                    }
                };
                if state == StageState::Running {
                    // A stage of the same name run again within the job.
                    stage.seen_at = at;
                    stage.duration_ms = None;
                    stage.error = None;
                    stage.tokens = None;
                } else {
                    stage.duration_ms = event.duration_ms;
                    stage.error = event.error.clone();
                    stage.tokens = tokens(event.metadata.as_ref());
                }
                stage.state = state;
                if event.layer.is_some() {
                    stage.layer = event.layer.clone();
                }
                let layer = stage.layer.clone();
                self.note_stage(layer, name);
            }
        }
    }

    fn job_mut(&mut self, id: Option<&str>, at: Duration) -> &mut Job {
        match self.jobs.iter().position(|j| j.id.as_deref() == id) {
            Some(i) => &mut self.jobs[i],
            None => {
                self.jobs.push(Job::new(id.map(str::to_owned), at));
                self.jobs.last_mut().expect("just pushed")
            }
        }
    }

    fn note_stage(&mut self, layer: Option<Number>, name: String) {
        if let Some(i) = self.order.iter().position(|k| k.name == name) {
            if self.order[i].layer == layer {
                return;
            }
            self.order.remove(i);
        }
        let key = layer_key(layer.as_ref());
        // After every stage with a smaller or equal layer number: equal
        // numbers keep the order in which they first appeared.
        let at = self
            .order
            .iter()
            .position(|k| layer_key(k.layer.as_ref()) > key)
            .unwrap_or(self.order.len());
        self.order.insert(at, StageKey { layer, name });
    }

    /// The exit status the stream deserves; `strict` counts `partial` as a
    /// failure.
    pub fn verdict(&self, strict: bool) -> Verdict {
        if self.jobs.is_empty() || self.jobs.iter().any(|j| j.end.is_none()) {
            return Verdict::Incomplete;
        }
        let failed = self
            .jobs
            .iter()
            .any(|j| match j.end.as_ref().map(|e| e.status) {
                Some(Status::Error) => true,
                Some(Status::Partial) => strict,
                _ => false,
            });
        if failed {
            Verdict::Failed
        } else {
            Verdict::Success
        }
    }
}

/// Stages without a number sort after every numbered one.
fn layer_key(layer: Option<&Number>) -> f64 {
    layer.and_then(Number::as_f64).unwrap_or(f64::INFINITY)
}

fn tokens(metadata: Option<&Map<String, Value>>) -> Option<u64> {
    let v = metadata?.get("tokens_used")?;
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp such as
/// `2025-11-29T10:30:45.123Z` (fraction optional); `None` if it is not one.
pub fn parse_timestamp_ms(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { ts.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = ts.get(19..)?;
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.bytes().take_while(u8::is_ascii_digit).count();
            (&r[..digits], &r[digits..])
        }
        None => ("", rest),
    };
    if zone != "Z" || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = 0;
    for (i, b) in frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .enumerate()
    {
        ms += i64::from(b - b'0') * [100, 10, 1][i];
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &str) -> Item {
        classify(line, Stream::Stdout)
    }

    const T: Duration = Duration::ZERO;

    #[test]
    fn timestamps_parse_to_epoch_millis() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_timestamp_ms("2025-11-29T10:30:45.123Z"),
            Some(1_764_412_245_123)
        );
        assert_eq!(
            parse_timestamp_ms("2000-03-01T00:00:01Z"),
            Some(951_868_801_000)
        );
        assert_eq!(parse_timestamp_ms("2025-11-29 10:30:45.123Z"), None);
        assert_eq!(parse_timestamp_ms("2025-11-29T10:30:45.123+01:00"), None);
        assert_eq!(parse_timestamp_ms("garbage"), None);
    }

    #[test]
    fn lines_that_are_not_events_are_output() {
        for line in [
            "plain",
            "5",
            "[1]",
            r#"{"event":5}"#,
            r#"{"event":"nope","timestamp":"x"}"#,
            "{",
        ] {
            assert_eq!(
                ev(line),
                Item::Output {
                    text: line.into(),
                    stream: Stream::Stdout
                },
                "{line}"
            );
        }
        assert!(matches!(
            ev(r#"{"timestamp":"t","event":"pipeline_start","job_id":"j"}"#),
            Item::Event(_)
        ));
    }

    #[test]
    fn runner_output_wrappers_unwrap() {
        assert_eq!(
            classify_runner_data(r#"{"type":"output","text":"hi","stream":"stderr"}"#),
            Item::Output {
                text: "hi".into(),
                stream: Stream::Stderr
            }
        );
        assert!(matches!(
            classify_runner_data(
                r#"{"timestamp":"t","event":"layer_start","layer":2,"layer_name":"a"}"#
            ),
            Item::Event(_)
        ));
    }

    #[test]
    fn stages_sharing_a_layer_are_kept_apart_in_first_seen_order() {
        let mut m = Model::new();
        for line in [
            r#"{"timestamp":"t","event":"layer_start","layer":4,"layer_name":"d","job_id":"j"}"#,
            r#"{"timestamp":"t","event":"layer_start","layer":3,"layer_name":"role","job_id":"j"}"#,
            r#"{"timestamp":"t","event":"layer_start","layer":3,"layer_name":"company","job_id":"j"}"#,
            r#"{"timestamp":"t","event":"layer_start","layer":2.5,"layer_name":"star","job_id":"j"}"#,
            r#"{"timestamp":"t","event":"layer_complete","layer":3,"layer_name":"company","job_id":"j","status":"success","duration_ms":7}"#,
        ] {
            m.apply(&ev(line), T);
        }
        let names: Vec<_> = m.order.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["star", "role", "company", "d"]);
        let job = &m.jobs[0];
        assert_eq!(job.stage("company").unwrap().state, StageState::Complete);
        assert_eq!(job.stage("role").unwrap().state, StageState::Running);
        assert_eq!(job.stage("company").unwrap().duration_ms, Some(7));
    }

    #[test]
    fn summary_figures() {
        let mut m = Model::new();
        for line in [
            r#"{"timestamp":"2025-01-01T00:00:00.000Z","event":"pipeline_start","job_id":"j"}"#,
            r#"{"timestamp":"2025-01-01T00:00:00.100Z","event":"layer_complete","layer":1,"layer_name":"a","job_id":"j","status":"success","duration_ms":100,"metadata":{"tokens_used":1200}}"#,
            r#"{"timestamp":"2025-01-01T00:00:00.400Z","event":"layer_error","layer":2,"layer_name":"b","job_id":"j","status":"error","duration_ms":300,"error":"boom","metadata":{"tokens_used":3400}}"#,
            r#"{"timestamp":"2025-01-01T00:00:00.400Z","event":"layer_skip","layer":3,"layer_name":"c","job_id":"j","status":"skipped"}"#,
        ] {
            m.apply(&ev(line), T);
        }
        let job = &m.jobs[0];
        assert_eq!(job.total_ms(), Some(400));
        assert_eq!(job.slowest().unwrap().name, "b");
        assert_eq!(job.tokens(), Some(4600));
        assert_eq!(m.verdict(false), Verdict::Incomplete);
        m.apply(
            &ev(r#"{"timestamp":"2025-01-01T00:00:00.500Z","event":"pipeline_complete","job_id":"j","status":"partial","duration_ms":450,"metadata":{}}"#),
            T,
        );
        assert_eq!(m.jobs[0].total_ms(), Some(450));
        assert_eq!(m.verdict(false), Verdict::Success);
        assert_eq!(m.verdict(true), Verdict::Failed);
    }

    #[test]
    fn verdicts() {
        assert_eq!(Model::new().verdict(false), Verdict::Incomplete);
        let mut m = Model::new();
        m.apply(
            &ev(r#"{"timestamp":"t","event":"pipeline_complete","job_id":"a","status":"error","metadata":{}}"#),
            T,
        );
        assert_eq!(m.verdict(false), Verdict::Failed);
        m.apply(
            &ev(r#"{"timestamp":"t","event":"pipeline_start","job_id":"b"}"#),
            T,
        );
        assert_eq!(m.verdict(false), Verdict::Incomplete);
        assert_eq!(m.verdict(false).code(), 2);
    }
}
