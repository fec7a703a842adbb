//! One output line, built in a reused buffer: the JSON schema (the [`schema`](crate::schema) page), or the human rendering used when `STRUCTURED_LOGGING=false`.
//!
//! Both renderings take the same borrowed description of the line
//! ([`Lifecycle`] or [`LogLine`]), so the two formats always say the same.

use std::cell::Cell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use super::fields::{
    write_f64, write_human_text, write_i64, write_json_str, write_u64, Adapter, FieldValue,
};
use super::ids::SpanIds;
use super::state::{LayerNumber, StageCounts};
use crate::event::{EventKind, Status};

/// A lifecycle event: everything but `log`.
#[derive(Debug)]
pub(crate) struct Lifecycle<'a> {
    pub(crate) kind: EventKind,
    pub(crate) layer: Option<LayerNumber>,
    pub(crate) layer_name: Option<&'a str>,
    pub(crate) job_id: Option<&'a str>,
    pub(crate) status: Option<Status>,
    pub(crate) duration_ms: Option<u64>,
    pub(crate) error: Option<&'a str>,
    pub(crate) metadata: &'a [(&'static str, FieldValue)],
    /// `pipeline_complete`: how its stages ended. These keys win over
    /// pipeline fields of the same names.
    pub(crate) counts: Option<StageCounts>,
    /// The span's OpenTelemetry ids (feature `otel`).
    pub(crate) ids: Option<SpanIds>,
}

/// A `log` event, its message and metadata already rendered by the visitor.
#[derive(Debug)]
pub(crate) struct LogLine<'a> {
    pub(crate) level: tracing::Level,
    pub(crate) target: &'a str,
    /// JSON: a quoted string; human: raw text. Empty: no message.
    pub(crate) message: &'a [u8],
    pub(crate) job_id: Option<&'a str>,
    pub(crate) layer: Option<LayerNumber>,
    pub(crate) layer_name: Option<&'a str>,
    /// JSON: `,"k":v,...` (a leading comma); human: ` k=v ...`. Empty: no
    /// metadata.
    pub(crate) metadata: &'a [u8],
    /// The OpenTelemetry ids of the innermost span around the event.
    pub(crate) ids: Option<SpanIds>,
}

fn two(buf: &mut Vec<u8>, v: u8) {
    buf.push(b'0' + v / 10);
    buf.push(b'0' + v % 10);
}

thread_local! {
    /// The last second rendered on this thread, as `2025-11-29T10:30:45.`:
    /// the calendar arithmetic then runs once a second instead of per line.
    static LAST_SECOND: Cell<Option<(u64, [u8; 20])>> = const { Cell::new(None) };
}

/// `now` as the schema's timestamp, as an owned string (for code outside
/// the hot path, such as the runner's own lines and records).
#[cfg(feature = "runner")]
pub(crate) fn timestamp(now: SystemTime) -> String {
    let mut buf = Vec::with_capacity(24);
    write_timestamp(&mut buf, now);
    // Only ASCII digits and punctuation were written.
    String::from_utf8(buf).unwrap_or_default()
}

/// `2025-11-29T10:30:45.123Z`: RFC 3339, UTC, exactly three fraction digits.
pub(crate) fn write_timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else {
        return write_timestamp_uncached(buf, now);
    };
    let second = since_epoch.as_secs();
    match LAST_SECOND.try_with(Cell::get) {
        Ok(Some((last, prefix))) if last == second => {
            buf.extend_from_slice(&prefix);
            write_millis(buf, since_epoch.subsec_millis() as u16);
            buf.push(b'Z');
        }
        _ => {
            let start = buf.len();
            write_timestamp_uncached(buf, now);
            // Four-digit years only: their prefix is always 20 bytes.
            if let Ok(prefix) = <[u8; 20]>::try_from(&buf[start..buf.len() - 4]) {
                let _ = LAST_SECOND.try_with(|c| c.set(Some((second, prefix))));
            }
        }
    }
}

/// The calendar time of `now`; a clock outside what `time` can represent
/// (years beyond ±9999) is clamped to the Unix epoch rather than panicking.
fn calendar(now: SystemTime) -> OffsetDateTime {
    let nanos = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn write_timestamp_uncached(buf: &mut Vec<u8>, now: SystemTime) {
    let t = calendar(now);
    let year = t.year();
    if (0..=9999).contains(&year) {
        let y = year as u32;
        buf.push(b'0' + (y / 1000) as u8);
        buf.push(b'0' + (y / 100 % 10) as u8);
        two(buf, (y % 100) as u8);
    } else {
        let _ = write!(Adapter(buf), "{year:+07}");
    }
    buf.push(b'-');
    two(buf, t.month() as u8);
    buf.push(b'-');
    two(buf, t.day());
    buf.push(b'T');
    write_time_of_day(buf, t);
    buf.push(b'Z');
}

fn write_time_of_day(buf: &mut Vec<u8>, t: OffsetDateTime) {
    two(buf, t.hour());
    buf.push(b':');
    two(buf, t.minute());
    buf.push(b':');
    two(buf, t.second());
    buf.push(b'.');
    write_millis(buf, t.millisecond());
}

fn write_millis(buf: &mut Vec<u8>, ms: u16) {
    buf.push(b'0' + (ms / 100) as u8);
    two(buf, (ms % 100) as u8);
}

fn write_layer(buf: &mut Vec<u8>, n: LayerNumber) {
    match n {
        LayerNumber::Int(v) => write_i64(buf, v),
        LayerNumber::UInt(v) => write_u64(buf, v),
        LayerNumber::Float(v) => write_f64(buf, v),
    }
}

/// `,"name":` as one static slice: one copy per key instead of four.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}

fn str_entry(buf: &mut Vec<u8>, key: &[u8], v: Option<&str>) {
    if let Some(v) = v {
        buf.extend_from_slice(key);
        write_json_str(buf, v);
    }
}

fn head(buf: &mut Vec<u8>, now: SystemTime, kind: EventKind) {
    buf.extend_from_slice(b"{\"timestamp\":\"");
    write_timestamp(buf, now);
    buf.extend_from_slice(b"\",\"event\":\"");
    buf.extend_from_slice(kind.as_str().as_bytes());
    buf.push(b'"');
}

/// `,"trace_id":"…","span_id":"…"`: the last keys before `metadata`.
fn ids_entries(buf: &mut Vec<u8>, ids: Option<SpanIds>) {
    if let Some(ids) = ids {
        buf.extend_from_slice(key!("trace_id"));
        buf.push(b'"');
        buf.extend_from_slice(&ids.trace_hex());
        buf.push(b'"');
        buf.extend_from_slice(key!("span_id"));
        buf.push(b'"');
        buf.extend_from_slice(&ids.span_hex());
        buf.push(b'"');
    }
}

/// The keys of a pipeline's stage counts in `pipeline_complete` metadata.
const COUNT_KEYS: [&str; 3] = ["layers_completed", "layers_failed", "layers_skipped"];

/// Appends `e` as one JSON line (with its newline).
pub(crate) fn lifecycle_json(buf: &mut Vec<u8>, now: SystemTime, e: &Lifecycle<'_>) {
    head(buf, now, e.kind);
    if let Some(n) = e.layer {
        buf.extend_from_slice(key!("layer"));
        write_layer(buf, n);
    }
    str_entry(buf, key!("layer_name"), e.layer_name);
    str_entry(buf, key!("job_id"), e.job_id);
    if let Some(s) = e.status {
        buf.extend_from_slice(key!("status"));
        buf.push(b'"');
        buf.extend_from_slice(s.as_str().as_bytes());
        buf.push(b'"');
    }
    if let Some(d) = e.duration_ms {
        buf.extend_from_slice(key!("duration_ms"));
        write_u64(buf, d);
    }
    str_entry(buf, key!("error"), e.error);
    ids_entries(buf, e.ids);
    if !e.metadata.is_empty() || e.counts.is_some() {
        buf.extend_from_slice(key!("metadata"));
        buf.push(b'{');
        let mut first = true;
        for (name, value) in e.metadata {
            if e.counts.is_some() && COUNT_KEYS.contains(name) {
                continue; // the counts win
            }
            if !first {
                buf.push(b',');
            }
            first = false;
            write_json_str(buf, name);
            buf.push(b':');
            value.write_json(buf);
        }
        if let Some(c) = e.counts {
            for (name, n) in COUNT_KEYS.iter().zip([c.completed, c.failed, c.skipped]) {
                if !first {
                    buf.push(b',');
                }
                first = false;
                buf.push(b'"');
                buf.extend_from_slice(name.as_bytes());
                buf.extend_from_slice(b"\":");
                write_u64(buf, n);
            }
        }
        buf.push(b'}');
    }
    buf.extend_from_slice(b"}\n");
}

/// Appends `e` as one JSON line (with its newline).
pub(crate) fn log_json(buf: &mut Vec<u8>, now: SystemTime, e: &LogLine<'_>) {
    head(buf, now, EventKind::Log);
    buf.extend_from_slice(key!("level"));
    buf.push(b'"');
    buf.extend_from_slice(level_str(&e.level).as_bytes());
    buf.push(b'"');
    str_entry(buf, key!("target"), Some(e.target));
    buf.extend_from_slice(key!("message"));
    if e.message.is_empty() {
        buf.extend_from_slice(b"\"\"");
    } else {
        buf.extend_from_slice(e.message);
    }
    str_entry(buf, key!("job_id"), e.job_id);
    if let Some(n) = e.layer {
        buf.extend_from_slice(key!("layer"));
        write_layer(buf, n);
    }
    str_entry(buf, key!("layer_name"), e.layer_name);
    ids_entries(buf, e.ids);
    if !e.metadata.is_empty() {
        buf.extend_from_slice(key!("metadata"));
        buf.push(b'{');
        buf.extend_from_slice(&e.metadata[1..]);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"}\n");
}

fn level_str(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::TRACE => "trace",
        tracing::Level::DEBUG => "debug",
        tracing::Level::INFO => "info",
        tracing::Level::WARN => "warn",
        _ => "error",
    }
}

/// ANSI styles for the human rendering; empty strings when colour is off.
struct Style {
    dim: &'static str,
    green: &'static str,
    red: &'static str,
    yellow: &'static str,
    cyan: &'static str,
    bold: &'static str,
    reset: &'static str,
}

const COLOUR: Style = Style {
    dim: "\x1b[2m",
    green: "\x1b[32m",
    red: "\x1b[31m",
    yellow: "\x1b[33m",
    cyan: "\x1b[36m",
    bold: "\x1b[1m",
    reset: "\x1b[0m",
};

const PLAIN: Style = Style {
    dim: "",
    green: "",
    red: "",
    yellow: "",
    cyan: "",
    bold: "",
    reset: "",
};

fn human_prefix(buf: &mut Vec<u8>, now: SystemTime, style: &Style, job_id: Option<&str>) {
    buf.extend_from_slice(style.dim.as_bytes());
    write_time_of_day(buf, calendar(now));
    buf.extend_from_slice(style.reset.as_bytes());
    if let Some(job) = job_id {
        buf.push(b' ');
        buf.extend_from_slice(style.dim.as_bytes());
        write_human_text(buf, job);
        buf.extend_from_slice(style.reset.as_bytes());
    }
}

fn human_stage(buf: &mut Vec<u8>, style: &Style, layer: Option<LayerNumber>, name: Option<&str>) {
    buf.extend_from_slice(b" [");
    buf.extend_from_slice(style.bold.as_bytes());
    match layer {
        Some(LayerNumber::Int(v)) => {
            let _ = write!(Adapter(buf), "{v} ");
        }
        Some(LayerNumber::UInt(v)) => {
            let _ = write!(Adapter(buf), "{v} ");
        }
        Some(LayerNumber::Float(v)) => {
            let _ = write!(Adapter(buf), "{v} ");
        }
        None => {}
    }
    write_human_text(buf, name.unwrap_or("?"));
    buf.extend_from_slice(style.reset.as_bytes());
    buf.push(b']');
}

/// Appends `e` as one line for a person: time, job, stage, state, duration,
/// error, then the metadata as `k=v`.
pub(crate) fn lifecycle_human(buf: &mut Vec<u8>, now: SystemTime, ansi: bool, e: &Lifecycle<'_>) {
    let style = if ansi { &COLOUR } else { &PLAIN };
    human_prefix(buf, now, style, e.job_id);
    let pipeline = matches!(
        e.kind,
        EventKind::PipelineStart | EventKind::PipelineComplete
    );
    if pipeline {
        buf.extend_from_slice(b" pipeline");
    } else {
        human_stage(buf, style, e.layer, e.layer_name);
    }
    let (colour, word) = match (e.kind, e.status) {
        (EventKind::PipelineStart | EventKind::LayerStart, _) => (style.cyan, "started"),
        (_, Some(Status::Success)) => (style.green, "complete"),
        (_, Some(Status::Partial)) => (style.yellow, "partial"),
        (_, Some(Status::Skipped)) => (style.yellow, "skipped"),
        (_, Some(Status::Error)) => (style.red, "FAILED"),
        (_, None) => ("", "ended"),
    };
    let _ = write!(Adapter(buf), " {colour}{word}{}", style.reset);
    if let Some(d) = e.duration_ms {
        let _ = write!(Adapter(buf), " in {d} ms");
    }
    if let Some(err) = e.error {
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(style.red.as_bytes());
        write_human_text(buf, err);
        buf.extend_from_slice(style.reset.as_bytes());
    }
    if let Some(c) = e.counts {
        let _ = write!(
            Adapter(buf),
            " ({} completed, {} failed, {} skipped)",
            c.completed,
            c.failed,
            c.skipped
        );
    }
    for (name, value) in e.metadata {
        if e.counts.is_some() && COUNT_KEYS.contains(name) {
            continue;
        }
        buf.push(b' ');
        buf.extend_from_slice(style.dim.as_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.push(b'=');
        buf.extend_from_slice(style.reset.as_bytes());
        value.write_human(buf);
    }
    buf.push(b'\n');
}

/// Appends `e` as one line for a person.
pub(crate) fn log_human(buf: &mut Vec<u8>, now: SystemTime, ansi: bool, e: &LogLine<'_>) {
    let style = if ansi { &COLOUR } else { &PLAIN };
    human_prefix(buf, now, style, e.job_id);
    let colour = match e.level {
        tracing::Level::ERROR => style.red,
        tracing::Level::WARN => style.yellow,
        tracing::Level::INFO => style.green,
        _ => style.dim,
    };
    let _ = write!(
        Adapter(buf),
        " {colour}{:>5}{}",
        level_str(&e.level).to_ascii_uppercase(),
        style.reset
    );
    if e.layer_name.is_some() {
        human_stage(buf, style, e.layer, e.layer_name);
    }
    let _ = write!(Adapter(buf), " {}{}:{} ", style.dim, e.target, style.reset);
    buf.extend_from_slice(e.message);
    buf.extend_from_slice(e.metadata);
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn ts(secs: u64, millis: u64) -> String {
        let mut buf = Vec::new();
        write_timestamp(
            &mut buf,
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis),
        );
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn timestamps_have_three_fraction_digits_and_z() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000Z");
        // 2025-11-29T10:30:45.123Z
        assert_eq!(ts(1_764_412_245, 123), "2025-11-29T10:30:45.123Z");
        assert_eq!(ts(1_764_412_245, 7), "2025-11-29T10:30:45.007Z");
        assert_eq!(ts(1_764_412_245, 999), "2025-11-29T10:30:45.999Z");
    }

    #[test]
    fn the_per_second_cache_writes_what_the_calendar_says() {
        // Same second (cache hits), next second, back in time, the last
        // millisecond of year 9999.
        for (secs, millis) in [
            (1_764_412_245, 1),
            (1_764_412_245, 998),
            (1_764_412_246, 0),
            (86_399, 999),
            (253_402_300_799, 999),
            (253_402_300_799, 0),
        ] {
            let now = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
            let mut cached = b"{".to_vec();
            write_timestamp(&mut cached, now);
            let mut fresh = b"{".to_vec();
            write_timestamp_uncached(&mut fresh, now);
            assert_eq!(cached, fresh, "{secs}.{millis}");
        }
    }

    #[test]
    fn a_lifecycle_line_is_one_json_object_in_table_order() {
        let mut buf = Vec::new();
        let metadata = [("fit_score", FieldValue::I64(85))];
        lifecycle_json(
            &mut buf,
            UNIX_EPOCH,
            &Lifecycle {
                kind: EventKind::LayerComplete,
                layer: Some(LayerNumber::Float(2.5)),
                layer_name: Some("star\"selector"),
                job_id: Some("j"),
                status: Some(Status::Success),
                duration_ms: Some(12),
                error: None,
                metadata: &metadata,
                counts: None,
                ids: None,
            },
        );
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "{\"timestamp\":\"1970-01-01T00:00:00.000Z\",\"event\":\"layer_complete\",\"layer\":2.5,\"layer_name\":\"star\\\"selector\",\"job_id\":\"j\",\"status\":\"success\",\"duration_ms\":12,\"metadata\":{\"fit_score\":85}}\n"
        );
    }

    #[test]
    fn ids_are_the_last_keys_before_metadata() {
        let ids = Some(SpanIds {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c_u128.to_be_bytes(),
            span_id: 0xb7ad6b7169203331_u64.to_be_bytes(),
        });
        let metadata = [("tokens_used", FieldValue::I64(7))];
        let mut buf = Vec::new();
        lifecycle_json(
            &mut buf,
            UNIX_EPOCH,
            &Lifecycle {
                kind: EventKind::LayerError,
                layer: Some(LayerNumber::Int(3)),
                layer_name: Some("s"),
                job_id: Some("j"),
                status: Some(Status::Error),
                duration_ms: Some(1),
                error: Some("boom"),
                metadata: &metadata,
                counts: None,
                ids,
            },
        );
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "{\"timestamp\":\"1970-01-01T00:00:00.000Z\",\"event\":\"layer_error\",\"layer\":3,\"layer_name\":\"s\",\"job_id\":\"j\",\"status\":\"error\",\"duration_ms\":1,\"error\":\"boom\",\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\",\"span_id\":\"b7ad6b7169203331\",\"metadata\":{\"tokens_used\":7}}\n"
        );
        buf.clear();
        log_json(
            &mut buf,
            UNIX_EPOCH,
            &LogLine {
                level: tracing::Level::INFO,
                target: "t",
                message: b"\"m\"",
                job_id: Some("j"),
                layer: Some(LayerNumber::Int(3)),
                layer_name: Some("s"),
                metadata: b",\"k\":1",
                ids,
            },
        );
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "{\"timestamp\":\"1970-01-01T00:00:00.000Z\",\"event\":\"log\",\"level\":\"info\",\"target\":\"t\",\"message\":\"m\",\"job_id\":\"j\",\"layer\":3,\"layer_name\":\"s\",\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\",\"span_id\":\"b7ad6b7169203331\",\"metadata\":{\"k\":1}}\n"
        );
    }
}
