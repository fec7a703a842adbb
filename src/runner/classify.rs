//! One line of child output in, one SSE payload out: pure functions, no I/O.
//!
//! A child's output is read as bytes and cut into lines by [`LineSplitter`]
//! (so invalid UTF-8 or a missing final newline cannot stop the stream), and
//! each line is then classified by [`classify`]:
//!
//! * a stdout line that is a JSON object with a string `event` field is a
//!   structured event and is forwarded exactly as the child wrote it;
//! * anything else (plain text, other JSON values, invalid UTF-8, over-long
//!   lines, every stderr line) becomes `{"type":"output","text":...}`, with
//!   `"stream":"stderr"` added for stderr.
//!
//! Line length is capped at [`MAX_LINE_BYTES`]. A longer line is *truncated*,
//! not split, so every input line still yields exactly one output line: its
//! first [`MAX_LINE_BYTES`] bytes are kept and the text ends with a note such
//! as `[… line truncated: 5242880 bytes in total]`. A truncated line is always
//! `output`, even if it began like an event.

use serde_json::{Map, Value};

/// The longest line, in bytes (without its line ending), that is kept whole.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Which pipe of the child a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stream {
    /// Standard output: structured events and plain output.
    Stdout,
    /// Standard error: always plain output.
    Stderr,
}

/// One line as cut from the byte stream, before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// The line's bytes without `\n` or a trailing `\r`; at most the cap.
    pub bytes: Vec<u8>,
    /// How long the line was (without its ending) when it was longer than the
    /// cap and was therefore truncated; `None` for a whole line.
    pub truncated_from: Option<usize>,
}

/// Cuts a byte stream into [`RawLine`]s: `\n` ends a line, a `\r` before it
/// is dropped, the last line may lack its `\n`, and no line grows past the
/// cap (the rest of an over-long line is counted and dropped).
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    len: usize,
    last: Option<u8>,
    cap: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::new(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    /// A splitter that keeps at most `cap` bytes of each line.
    pub fn new(cap: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            len: 0,
            last: None,
            cap,
        }
    }

    /// Feeds the next chunk of the stream; complete lines are pushed to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<RawLine>) {
        while !chunk.is_empty() {
            let (part, rest, ends) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            // Keep one byte past the cap: if it is the `\r` of a `\r\n`, the
            // line still fits.
            let room = (self.cap + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            self.len += part.len();
            if let Some(&b) = part.last() {
                self.last = Some(b);
            }
            if ends {
                out.push(self.take());
            }
            chunk = rest;
        }
    }

    /// Ends the stream: the last line, if it had no `\n`.
    pub fn finish(&mut self) -> Option<RawLine> {
        (self.len > 0).then(|| self.take())
    }

    fn take(&mut self) -> RawLine {
        let mut bytes = std::mem::take(&mut self.buf);
        let mut len = std::mem::take(&mut self.len);
        if self.last.take() == Some(b'\r') {
            len -= 1;
            bytes.truncate(len);
        }
        if len > self.cap {
            bytes.truncate(self.cap);
            RawLine {
                bytes,
                truncated_from: Some(len),
            }
        } else {
            RawLine {
                bytes,
                truncated_from: None,
            }
        }
    }
}

/// What a line turned out to be.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LineKind {
    /// A structured event; the map is the parsed object, for bookkeeping.
    Event(Map<String, Value>),
    /// Anything else, wrapped as `{"type":"output",...}`.
    Output,
}

/// A classified line: what it is, and the one-line JSON text sent to clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// Event or output.
    pub kind: LineKind,
    /// The SSE `data:` payload: one JSON object with no `\r` or `\n` in it.
    pub data: String,
}

/// Classifies one line of output from `stream`.
pub fn classify(line: &RawLine, stream: Stream) -> Classified {
    if stream == Stream::Stdout && line.truncated_from.is_none() {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&line.bytes) {
            if matches!(map.get("event"), Some(Value::String(_))) {
                // Forward the child's own text, unless it holds a raw `\r`
                // (legal JSON whitespace, but an SSE line break): then send
                // the same object re-serialised.
                let data = match std::str::from_utf8(&line.bytes) {
                    Ok(s) if !s.contains('\r') => s.trim().to_owned(),
                    _ => Value::Object(map.clone()).to_string(),
                };
                return Classified {
                    kind: LineKind::Event(map),
                    data,
                };
            }
        }
    }
    let mut text = String::from_utf8_lossy(&line.bytes).into_owned();
    if let Some(total) = line.truncated_from {
        text.push_str(&format!(" [… line truncated: {total} bytes in total]"));
    }
    Classified {
        kind: LineKind::Output,
        data: output_data(&text, stream),
    }
}

/// The `output` payload for `text` from `stream`, keys in a fixed order.
pub fn output_data(text: &str, stream: Stream) -> String {
    let text = Value::from(text).to_string();
    match stream {
        Stream::Stdout => format!(r#"{{"type":"output","text":{text}}}"#),
        Stream::Stderr => format!(r#"{{"type":"output","text":{text},"stream":"stderr"}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn split(cap: usize, chunks: &[&[u8]]) -> Vec<RawLine> {
        let mut s = LineSplitter::new(cap);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        out.extend(s.finish());
        out
    }

    fn one(bytes: &[u8], stream: Stream) -> (bool, Value) {
        let lines = split(MAX_LINE_BYTES, &[bytes]);
        assert_eq!(lines.len(), 1, "{bytes:?}");
        let c = classify(&lines[0], stream);
        assert!(!c.data.contains(['\n', '\r']));
        let v: Value = serde_json::from_str(&c.data).unwrap();
        (matches!(c.kind, LineKind::Event(_)), v)
    }

    fn output(text: &str) -> Value {
        json!({"type": "output", "text": text})
    }

    #[test]
    fn classification_table() {
        let event = r#"{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_start","layer":2,"layer_name":"pain_point_miner","job_id":"j"}"#;
        let table: Vec<(&[u8], bool, Value)> = vec![
            (b"5", false, output("5")),
            (b"\"event\"", false, output("\"event\"")),
            (b"[1]", false, output("[1]")),
            (br#"{"event":5}"#, false, output(r#"{"event":5}"#)),
            (b"{}", false, output("{}")),
            (b"null", false, output("null")),
            (b"plain text", false, output("plain text")),
            (b"\n", false, output("")),
            (br#"{"event":"x""#, false, output(r#"{"event":"x""#)),
            (
                b"<img src=x onerror=alert(1)>",
                false,
                output("<img src=x onerror=alert(1)>"),
            ),
            (b"\xff\xfeabc", false, output("\u{fffd}\u{fffd}abc")),
            (event.as_bytes(), true, serde_json::from_str(event).unwrap()),
            (
                br#"{"event":"anything","x":1}"#,
                true,
                json!({"event":"anything","x":1}),
            ),
            (b"hello\r\n", false, output("hello")),
            (b"{\"event\":\"log\"}\r\n", true, json!({"event":"log"})),
            (b"{\"event\":\r\"log\"}", true, json!({"event":"log"})),
        ];
        for (input, is_event, want) in table {
            let (got_event, got) = one(input, Stream::Stdout);
            assert_eq!((got_event, &got), (is_event, &want), "{input:?}");
        }
    }

    #[test]
    fn events_are_forwarded_byte_for_byte() {
        let line = br#"{"event":"log",  "message":"a\u0041", "n":1.50}"#;
        let c = classify(
            &RawLine {
                bytes: line.to_vec(),
                truncated_from: None,
            },
            Stream::Stdout,
        );
        assert_eq!(c.data.as_bytes(), line);
    }

    #[test]
    fn stderr_is_always_output() {
        let (is_event, v) = one(br#"{"event":"log"}"#, Stream::Stderr);
        assert!(!is_event);
        assert_eq!(
            v,
            json!({"type":"output","text":r#"{"event":"log"}"#,"stream":"stderr"})
        );
    }

    #[test]
    fn a_five_mib_line_is_truncated_to_one_output_line() {
        let mut big = br#"{"event":"log","pad":""#.to_vec();
        big.extend(std::iter::repeat_n(b'a', 5 * 1024 * 1024));
        big.extend_from_slice(b"\"}\nnext\n");
        let total = big.len() - "\nnext\n".len();
        // Fed in odd-sized chunks, as a pipe delivers it.
        let chunks: Vec<&[u8]> = big.chunks(65_537).collect();
        let lines = split(MAX_LINE_BYTES, &chunks);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].bytes.len(), MAX_LINE_BYTES);
        assert_eq!(lines[0].truncated_from, Some(total));
        let c = classify(&lines[0], Stream::Stdout);
        assert_eq!(c.kind, LineKind::Output);
        let v: Value = serde_json::from_str(&c.data).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.ends_with(&format!("[… line truncated: {total} bytes in total]")));
        assert_eq!(lines[1].bytes, b"next");
    }

    #[test]
    fn splitting_handles_crlf_missing_newline_and_chunk_boundaries() {
        let lines = split(100, &[b"a\r", b"\nb", b"c\r\n\r\n", b"last"]);
        let got: Vec<&[u8]> = lines.iter().map(|l| l.bytes.as_slice()).collect();
        assert_eq!(got, vec![&b"a"[..], b"bc", b"", b"last"]);
        assert!(split(100, &[b""]).is_empty());
        assert!(split(100, &[]).is_empty());
        // A lone `\r` inside a line is content, not an ending.
        assert_eq!(split(100, &[b"a\rb\n"])[0].bytes, b"a\rb");
    }

    #[test]
    fn cap_boundaries() {
        let exact = split(4, &[b"abcd\r\n"]);
        assert_eq!(exact[0].bytes, b"abcd");
        assert_eq!(exact[0].truncated_from, None);
        let over = split(4, &[b"abcde\r\n"]);
        assert_eq!(over[0].bytes, b"abcd");
        assert_eq!(over[0].truncated_from, Some(5));
        let no_newline = split(4, &[b"abc", b"def"]);
        assert_eq!(no_newline[0].truncated_from, Some(6));
    }

    #[test]
    fn every_line_comes_out_once_whatever_the_chunking() {
        let input: &[u8] = b"one\n{\"event\":\"x\"}\r\n\xff\n\nlong-line-here\nend";
        for size in 1..input.len() {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            let lines = split(8, &chunks);
            assert_eq!(lines.len(), 6, "chunk size {size}");
            assert_eq!(lines[4].truncated_from, Some(14));
        }
    }
}
