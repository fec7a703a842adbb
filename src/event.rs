//! The wire schema: one [`PipelineEvent`] per output line.
//!
//! These types say what a line *is*; [`crate::PipelineLayer`] says how lines
//! are produced (it writes them straight into a reused buffer and never builds
//! a `PipelineEvent` on its hot path), and a `MakeWriter` says where they go.
//! They serialise to exactly the lines the layer writes (same keys, same key
//! order, absent values left out, never `null`) and parse them back, so a
//! runner, a dashboard or a test can read the stream with the same types.
//!
//! ```
//! use tracing_pipeline::{EventKind, PipelineEvent, Status};
//!
//! let line = r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_complete","layer":4,"layer_name":"opportunity_mapper","job_id":"6929c97b","status":"success","duration_ms":4500,"metadata":{"fit_score":85}}"#;
//! let event: PipelineEvent = line.parse().unwrap();
//! assert_eq!(event.event, EventKind::LayerComplete);
//! assert_eq!(event.status, Some(Status::Success));
//! assert_eq!(event.to_line(), line);
//! ```

use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// Which lifecycle moment (or plain log event) a line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A pipeline span was first entered.
    PipelineStart,
    /// A layer (stage) span was first entered.
    LayerStart,
    /// A layer span closed without error and was not skipped.
    LayerComplete,
    /// A layer span closed after an error.
    LayerError,
    /// A layer span closed with `skipped = true`.
    LayerSkip,
    /// A pipeline span closed.
    PipelineComplete,
    /// An ordinary `tracing` event that passed `LOG_LEVEL`.
    Log,
}

impl EventKind {
    /// The name used on the wire, e.g. `"layer_complete"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PipelineStart => "pipeline_start",
            EventKind::LayerStart => "layer_start",
            EventKind::LayerComplete => "layer_complete",
            EventKind::LayerError => "layer_error",
            EventKind::LayerSkip => "layer_skip",
            EventKind::PipelineComplete => "pipeline_complete",
            EventKind::Log => "log",
        }
    }

    /// Whether this event ends a layer or a pipeline.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::LayerComplete
                | EventKind::LayerError
                | EventKind::LayerSkip
                | EventKind::PipelineComplete
        )
    }
}

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    /// The inverse of [`EventKind::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            EventKind::PipelineStart,
            EventKind::LayerStart,
            EventKind::LayerComplete,
            EventKind::LayerError,
            EventKind::LayerSkip,
            EventKind::PipelineComplete,
            EventKind::Log,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or(UnknownEventKind)
    }
}

/// A string that names none of the [`EventKind`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an event kind of the schema")]
#[non_exhaustive]
pub struct UnknownEventKind;

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a layer or a pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// `layer_complete`, or a pipeline with no failed layer.
    Success,
    /// `layer_error`, or a pipeline whose own span failed.
    Error,
    /// `layer_skip`.
    Skipped,
    /// A pipeline that did not fail itself but had a failed layer.
    Partial,
}

impl Status {
    /// The name used on the wire, e.g. `"partial"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Skipped => "skipped",
            Status::Partial => "partial",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The level of a `log` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Level {
    /// `trace`
    Trace,
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl Level {
    /// The name used on the wire, e.g. `"warn"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl From<tracing::Level> for Level {
    fn from(level: tracing::Level) -> Self {
        match level {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            _ => Level::Error,
        }
    }
}

/// One line of the stream. Fields that a kind of event does not carry are
/// `None` (and absent from the line).
///
/// This type says what a line *is*; [`crate::PipelineLayer`] says how lines
/// are produced (it writes them straight into a reused buffer and never
/// builds a `PipelineEvent` on its hot path), and a `MakeWriter` says where
/// they go. It serialises to exactly the lines the layer writes (same keys,
/// same key order, absent values left out, never `null`) and parses them
/// back, so a runner, a dashboard or a test can read the stream with it.
///
/// ```
/// use tracing_pipeline::{EventKind, PipelineEvent, Status};
///
/// let line = r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_complete","layer":4,"layer_name":"opportunity_mapper","job_id":"6929c97b","status":"success","duration_ms":4500,"metadata":{"fit_score":85}}"#;
/// let event: PipelineEvent = line.parse().unwrap();
/// assert_eq!(event.event, EventKind::LayerComplete);
/// assert_eq!(event.status, Some(Status::Success));
/// assert_eq!(event.to_line(), line);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PipelineEvent {
    /// When the line was produced: RFC 3339, UTC, milliseconds, `Z`.
    pub timestamp: String,
    /// What the line reports.
    pub event: EventKind,
    /// `log` lines: the event's level.
    #[serde(default)]
    pub level: Option<Level>,
    /// `log` lines: the event's target (usually its module path).
    #[serde(default)]
    pub target: Option<String>,
    /// `log` lines: the event's message.
    #[serde(default)]
    pub message: Option<String>,
    /// The layer number, such as `4` or `2.5`.
    #[serde(default)]
    pub layer: Option<Number>,
    /// The layer's name: its span's name unless it has a `layer_name` field.
    #[serde(default)]
    pub layer_name: Option<String>,
    /// The job id of the enclosing pipeline span.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Terminal events: how the layer or pipeline ended.
    #[serde(default)]
    pub status: Option<Status>,
    /// Terminal events: whole milliseconds from first enter to close.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// `layer_error` and a failed `pipeline_complete`: the error's text.
    #[serde(default)]
    pub error: Option<String>,
    /// The OpenTelemetry trace of the line's span: 32 lowercase hex digits
    /// (present when `tracing-opentelemetry` tracks the span; feature `otel`).
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The OpenTelemetry span id of the line's span (a `log` line: its
    /// innermost span): 16 lowercase hex digits.
    #[serde(default)]
    pub span_id: Option<String>,
    /// The span's (or event's) other fields, with their JSON types.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

impl PipelineEvent {
    /// An event of `kind` at `timestamp` with every optional field empty.
    pub fn new(event: EventKind, timestamp: impl Into<String>) -> Self {
        PipelineEvent {
            timestamp: timestamp.into(),
            event,
            level: None,
            target: None,
            message: None,
            layer: None,
            layer_name: None,
            job_id: None,
            status: None,
            duration_ms: None,
            error: None,
            trace_id: None,
            span_id: None,
            metadata: None,
        }
    }

    /// Parses one line of the stream.
    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// Renders the event as one line of the stream (no trailing newline).
    pub fn to_line(&self) -> String {
        // Serialising our own types into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl FromStr for PipelineEvent {
    type Err = serde_json::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PipelineEvent::from_line(s)
    }
}

impl fmt::Display for PipelineEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

impl Serialize for PipelineEvent {
    /// Key order is part of the contract: `timestamp`, `event`, then the keys
    /// of the schema in the order of its table, which differs for `log`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.serialize_entry("event", &self.event)?;
        macro_rules! opt {
            ($key:literal, $field:expr) => {
                if let Some(v) = &$field {
                    map.serialize_entry($key, v)?;
                }
            };
        }
        if self.event == EventKind::Log {
            opt!("level", self.level);
            opt!("target", self.target);
            opt!("message", self.message);
            opt!("job_id", self.job_id);
            opt!("layer", self.layer);
            opt!("layer_name", self.layer_name);
        } else {
            opt!("layer", self.layer);
            opt!("layer_name", self.layer_name);
            opt!("job_id", self.job_id);
            opt!("status", self.status);
            opt!("duration_ms", self.duration_ms);
            opt!("error", self.error);
        }
        opt!("trace_id", self.trace_id);
        opt!("span_id", self.span_id);
        opt!("metadata", self.metadata);
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_come_in_log_order() {
        let mut e = PipelineEvent::new(EventKind::Log, "2025-11-29T10:30:45.123Z");
        e.level = Some(Level::Info);
        e.target = Some("t".into());
        e.message = Some("m".into());
        e.job_id = Some("j".into());
        e.layer = Some(Number::from(3));
        e.layer_name = Some("n".into());
        assert_eq!(
            e.to_line(),
            r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"log","level":"info","target":"t","message":"m","job_id":"j","layer":3,"layer_name":"n"}"#
        );
    }

    #[test]
    fn lifecycle_keys_come_in_table_order_and_none_is_absent() {
        let mut e = PipelineEvent::new(EventKind::LayerError, "2025-11-29T10:30:45.123Z");
        e.job_id = Some("j".into());
        e.layer = Some(Number::from_f64(2.5).unwrap());
        e.layer_name = Some("star_selector".into());
        e.status = Some(Status::Error);
        e.error = Some("boom".into());
        assert_eq!(
            e.to_line(),
            r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_error","layer":2.5,"layer_name":"star_selector","job_id":"j","status":"error","error":"boom"}"#
        );
        e.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
        e.span_id = Some("b7ad6b7169203331".into());
        e.metadata = Some(serde_json::from_str(r#"{"k":1}"#).unwrap());
        assert_eq!(
            e.to_line(),
            r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_error","layer":2.5,"layer_name":"star_selector","job_id":"j","status":"error","error":"boom","trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","metadata":{"k":1}}"#
        );
        let back: PipelineEvent = e.to_line().parse().unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn event_kinds_parse_from_their_wire_names() {
        for kind in [
            EventKind::PipelineStart,
            EventKind::LayerStart,
            EventKind::LayerComplete,
            EventKind::LayerError,
            EventKind::LayerSkip,
            EventKind::PipelineComplete,
            EventKind::Log,
        ] {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            let via_serde: EventKind = serde_json::from_value(kind.as_str().into()).unwrap();
            assert_eq!(via_serde, kind);
        }
        assert_eq!("layer_done".parse::<EventKind>(), Err(UnknownEventKind));
    }

    #[test]
    fn unknown_event_kind_is_an_error() {
        assert!(PipelineEvent::from_line(r#"{"timestamp":"x","event":"nope"}"#).is_err());
    }
}
