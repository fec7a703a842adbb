//! Field visitors: `tracing` field values into JSON values (or `k=v` text),
//! shared by spans and events.
//!
//! Span fields are kept as [`FieldValue`]s in the span's state, because they
//! can be recorded again later and are rendered only when the span ends. Event
//! fields are written straight into reusable buffers while they are visited:
//! nothing is stored and nothing is parsed again.

use std::fmt::{self, Write as _};

use serde::Serializer as _;
use tracing::field::{Field, Visit};

use crate::config::Format;

/// A span field's value, kept with its natural JSON type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldValue {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Str(String),
}

impl FieldValue {
    /// Appends the value as JSON.
    pub(crate) fn write_json(&self, buf: &mut Vec<u8>) {
        match self {
            FieldValue::I64(v) => write_i64(buf, *v),
            FieldValue::U64(v) => write_u64(buf, *v),
            FieldValue::F64(v) => write_f64(buf, *v),
            FieldValue::Bool(v) => buf.extend_from_slice(if *v { b"true" } else { b"false" }),
            FieldValue::Str(s) => write_json_str(buf, s),
        }
    }

    /// Appends the value for a person to read: text that is empty, has
    /// white space or control characters is quoted and escaped, so that one
    /// event stays one line and nothing reaches the terminal raw.
    pub(crate) fn write_human(&self, buf: &mut Vec<u8>) {
        match self {
            FieldValue::Str(s) => write_human_value(buf, s),
            FieldValue::F64(v) => {
                let _ = write!(Adapter(buf), "{v}");
            }
            other => other.write_json(buf),
        }
    }

    /// The value as text, for `job_id` and `error`.
    pub(crate) fn into_text(self) -> String {
        match self {
            FieldValue::Str(s) => s,
            FieldValue::I64(v) => v.to_string(),
            FieldValue::U64(v) => v.to_string(),
            FieldValue::F64(v) => v.to_string(),
            FieldValue::Bool(v) => v.to_string(),
        }
    }

    /// The value as a truth value, for `skipped`.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            FieldValue::Bool(b) => *b,
            FieldValue::I64(v) => *v != 0,
            FieldValue::U64(v) => *v != 0,
            FieldValue::F64(v) => *v != 0.0,
            FieldValue::Str(s) => s.eq_ignore_ascii_case("true"),
        }
    }
}

/// `fmt::Write` into a byte buffer.
pub(crate) struct Adapter<'a>(pub(crate) &'a mut Vec<u8>);

impl fmt::Write for Adapter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `fmt::Write` that escapes what it is given as the inside of a JSON
/// string. A `Debug` value is formatted straight through it, with no
/// intermediate `String`.
struct JsonEscaper<'a>(&'a mut Vec<u8>);

impl fmt::Write for JsonEscaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_json_into(self.0, s);
        Ok(())
    }
}

/// `fmt::Write` that escapes control characters for the human format.
pub(crate) struct HumanEscaper<'a>(pub(crate) &'a mut Vec<u8>);

impl fmt::Write for HumanEscaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_human_text(self.0, s);
        Ok(())
    }
}

/// A `Debug` value as text. A `Debug` impl that returns an error (which
/// `format!` would turn into a panic) leaves what it wrote so far.
pub(crate) fn debug_text(value: &dyn fmt::Debug) -> String {
    let mut s = String::new();
    let _ = write!(s, "{value:?}");
    s
}

/// A `Display` value as text, with the same care as [`debug_text`].
pub(crate) fn display_text(value: &dyn fmt::Display) -> String {
    let mut s = String::new();
    let _ = write!(s, "{value}");
    s
}

/// Whether `c` is a control character (C0, DEL or C1).
fn is_control(c: char) -> bool {
    c.is_control()
}

/// Appends `s` for a person, with control characters escaped (`\n`, `\r`,
/// `\t`, `\u{1b}`): one event stays one line, and no escape sequence of the
/// pipeline's reaches the reader's terminal.
pub(crate) fn write_human_text(buf: &mut Vec<u8>, s: &str) {
    if !s.chars().any(is_control) {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    for c in s.chars() {
        match c {
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            '\t' => buf.extend_from_slice(b"\\t"),
            c if is_control(c) => {
                let _ = write!(Adapter(buf), "\\u{{{:x}}}", c as u32);
            }
            c => {
                let mut utf8 = [0; 4];
                buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

/// A field value for a person: bare when it is a plain word, quoted and
/// escaped (Rust's `Debug` of a string) otherwise.
fn write_human_value(buf: &mut Vec<u8>, s: &str) {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"') {
        let _ = write!(Adapter(buf), "{s:?}");
    } else {
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Appends `s` as the inside of a JSON string (no quotes), escaped exactly
/// as serde_json escapes it.
fn escape_json_into(buf: &mut Vec<u8>, s: &str) {
    // Names, ids and messages rarely need escaping: those are copied in one
    // go instead of byte by byte. serde_json escapes `"`, `\` and the bytes
    // below 0x20, nothing else.
    // (A fold with no early exit, so that the check is vectorised.)
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    let start = buf.len();
    // Writing into a Vec cannot fail; drop serde_json's quotes.
    let _ = serde_json::Serializer::new(&mut *buf).serialize_str(s);
    buf.remove(start);
    buf.pop();
}

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it.
pub(crate) fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    escape_json_into(buf, s);
    buf.push(b'"');
}

/// Appends a `Debug` value as a JSON string. A `Debug` impl that fails
/// keeps what it wrote, and the string is closed all the same.
fn write_json_debug(buf: &mut Vec<u8>, value: &dyn fmt::Debug) {
    buf.push(b'"');
    let _ = write!(JsonEscaper(buf), "{value:?}");
    buf.push(b'"');
}

pub(crate) fn write_i64(buf: &mut Vec<u8>, v: i64) {
    let _ = serde_json::Serializer::new(&mut *buf).serialize_i64(v);
}

pub(crate) fn write_u64(buf: &mut Vec<u8>, v: u64) {
    let _ = serde_json::Serializer::new(&mut *buf).serialize_u64(v);
}

/// Finite floats as JSON numbers; NaN and infinities (which JSON cannot
/// hold, and which must not become `null`) as strings.
pub(crate) fn write_f64(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = serde_json::Serializer::new(&mut *buf).serialize_f64(v);
    } else {
        let _ = write!(Adapter(buf), "\"{v}\"");
    }
}

/// Sets `name` in a span's metadata. A field recorded again replaces its
/// earlier value in place, so metadata keeps declaration order.
pub(crate) fn upsert(
    metadata: &mut Vec<(&'static str, FieldValue)>,
    name: &'static str,
    value: FieldValue,
) {
    match metadata.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => metadata.push((name, value)),
    }
}

/// Collects a span's fields: the reserved ones apart, the rest as metadata.
#[derive(Debug, Default)]
pub(crate) struct SpanFields {
    pub(crate) layer: Option<FieldValue>,
    pub(crate) layer_name: Option<String>,
    pub(crate) job_id: Option<String>,
    pub(crate) skipped: Option<bool>,
    pub(crate) error: Option<String>,
    pub(crate) metadata: Vec<(&'static str, FieldValue)>,
}

impl SpanFields {
    fn put(&mut self, field: &Field, value: FieldValue) {
        match field.name() {
            "layer" => self.layer = Some(value),
            "layer_name" => self.layer_name = Some(value.into_text()),
            "job_id" => self.job_id = Some(value.into_text()),
            "skipped" => self.skipped = Some(value.truthy()),
            "error" => self.error = Some(value.into_text()),
            name => upsert(&mut self.metadata, name, value),
        }
    }
}

impl Visit for SpanFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, FieldValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, FieldValue::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.put(field, FieldValue::I64(v)),
            Err(_) => self.put(field, FieldValue::Str(value.to_string())),
        }
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.put(field, FieldValue::U64(v)),
            Err(_) => self.put(field, FieldValue::Str(value.to_string())),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, FieldValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, FieldValue::Str(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, FieldValue::Str(display_text(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, FieldValue::Str(debug_text(value)));
    }
}

/// Visits an event's fields straight into reusable buffers: the message (as
/// a JSON string, or escaped text for people), the other fields as a
/// metadata fragment, and for ERROR events the raw error text.
///
/// Rules the visitor keeps:
/// - a field named `message` is the message, whatever its type;
/// - with no message, an `error` field's text is the message too (what
///   `#[instrument(err)]` records, at any level);
/// - a field given twice (`a = 1, a = 2`) appears once: the last value wins;
/// - the `log.*` fields that the `log` bridge adds describe the record
///   itself, not its data, and are left out.
#[derive(Debug)]
pub(crate) struct EventFields<'a> {
    pub(crate) format: Format,
    /// JSON: `"the message"` (with quotes); human: the escaped text.
    pub(crate) message: &'a mut Vec<u8>,
    /// JSON: `,"k":v,"k2":v2` (each entry with a leading comma); human:
    /// ` k=v k2=v2`.
    pub(crate) metadata: &'a mut Vec<u8>,
    /// Where each metadata entry starts, to replace a repeated field.
    pub(crate) entries: &'a mut Vec<(&'static str, usize)>,
    /// Raw text of the message and of the `error` field, kept only when
    /// `want_error` is set (ERROR events).
    pub(crate) want_error: bool,
    pub(crate) raw_message: Option<String>,
    pub(crate) raw_error: Option<String>,
    /// Whether the message buffer holds an `error` field's text only.
    message_from_error: bool,
}

impl<'a> EventFields<'a> {
    pub(crate) fn new(
        format: Format,
        message: &'a mut Vec<u8>,
        metadata: &'a mut Vec<u8>,
        entries: &'a mut Vec<(&'static str, usize)>,
        want_error: bool,
    ) -> Self {
        message.clear();
        metadata.clear();
        entries.clear();
        EventFields {
            format,
            message,
            metadata,
            entries,
            want_error,
            raw_message: None,
            raw_error: None,
            message_from_error: false,
        }
    }

    /// Starts the entry for `name`, dropping an earlier entry of the same
    /// name (the last value wins).
    fn key(&mut self, name: &'static str) {
        if let Some(i) = self.entries.iter().position(|(n, _)| *n == name) {
            let start = self.entries[i].1;
            let end = self
                .entries
                .get(i + 1)
                .map_or(self.metadata.len(), |(_, s)| *s);
            self.metadata.drain(start..end);
            self.entries.remove(i);
            for entry in &mut self.entries[i..] {
                entry.1 -= end - start;
            }
        }
        self.entries.push((name, self.metadata.len()));
        match self.format {
            Format::Json => {
                self.metadata.push(b',');
                write_json_str(self.metadata, name);
                self.metadata.push(b':');
            }
            Format::Human => {
                self.metadata.push(b' ');
                self.metadata.extend_from_slice(name.as_bytes());
                self.metadata.push(b'=');
            }
        }
    }

    /// Writes `text` (or `value`'s `Debug`) as the message.
    fn set_message(&mut self, value: &dyn fmt::Debug, display: Option<&str>) {
        self.message.clear();
        match (self.format, display) {
            (Format::Json, Some(s)) => write_json_str(self.message, s),
            (Format::Json, None) => write_json_debug(self.message, value),
            (Format::Human, Some(s)) => write_human_text(self.message, s),
            (Format::Human, None) => {
                let _ = write!(HumanEscaper(self.message), "{value:?}");
            }
        }
    }

    fn value(&mut self, field: &Field, value: FieldValue) {
        match field.name() {
            "message" => {
                let text = value.into_text();
                return self.text(field, &text, Some(&text));
            }
            name if name.starts_with("log.") => return,
            name => self.key(name),
        }
        match self.format {
            Format::Json => value.write_json(self.metadata),
            Format::Human => value.write_human(self.metadata),
        }
    }

    fn text(&mut self, field: &Field, value: &dyn fmt::Debug, display: Option<&str>) {
        let raw = |want: bool| {
            want.then(|| match display {
                Some(s) => s.to_owned(),
                None => debug_text(value),
            })
        };
        match field.name() {
            "message" => {
                if self.want_error {
                    self.raw_message = raw(true);
                }
                self.set_message(value, display);
                self.message_from_error = false;
                return;
            }
            "error" => {
                if self.want_error {
                    self.raw_error = raw(true);
                }
                if self.message.is_empty() || self.message_from_error {
                    self.set_message(value, display);
                    self.message_from_error = true;
                }
            }
            name if name.starts_with("log.") => return,
            _ => {}
        }
        self.key(field.name());
        match (self.format, display) {
            (Format::Json, Some(s)) => write_json_str(self.metadata, s),
            (Format::Json, None) => write_json_debug(self.metadata, value),
            (Format::Human, Some(s)) => write_human_value(self.metadata, s),
            (Format::Human, None) => write_human_value(self.metadata, &debug_text(value)),
        }
    }
}

impl Visit for EventFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, FieldValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, FieldValue::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.value(field, FieldValue::I64(v)),
            Err(_) => self.text(field, &value, None),
        }
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.value(field, FieldValue::U64(v)),
            Err(_) => self.text(field, &value, None),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, FieldValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, &value, Some(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let s = display_text(value);
        self.text(field, &s, Some(&s));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, value, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_floats_become_strings_not_null() {
        let mut buf = Vec::new();
        write_f64(&mut buf, f64::NAN);
        assert_eq!(buf, b"\"NaN\"");
        buf.clear();
        write_f64(&mut buf, 2.5);
        assert_eq!(buf, b"2.5");
    }

    #[test]
    fn debug_values_are_escaped_while_formatted() {
        let mut buf = Vec::new();
        write_json_debug(&mut buf, &"a\"b\n");
        let back: String = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back, "\"a\\\"b\\n\"");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = (0u8..=0x7f).map(|b| format!("a{}b", b as char)).collect();
        samples.extend(
            [
                "",
                "plain",
                "job-1",
                "é\u{2028}\u{7f}",
                "\"\\\n",
                "tab\there",
            ]
            .map(String::from),
        );
        // Every ASCII byte at every position of a longer string, beside
        // bytes just inside the limits.
        for b in 0u8..=0x7f {
            for at in 0..17 {
                let mut v = vec![b'!'; 17];
                v[at] = b;
                v[(at + 5) % 17] = 0x21;
                v[(at + 9) % 17] = 0x7f;
                samples.push(String::from_utf8(v).unwrap());
            }
        }
        samples.push("ÿ€\u{80}\u{ff}é".repeat(9));
        for s in samples {
            let mut buf = Vec::new();
            write_json_str(&mut buf, &s);
            assert_eq!(buf, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn skipped_accepts_bools_numbers_and_text() {
        assert!(FieldValue::Bool(true).truthy());
        assert!(!FieldValue::Bool(false).truthy());
        assert!(FieldValue::Str("TRUE".into()).truthy());
        assert!(!FieldValue::I64(0).truthy());
    }
}
