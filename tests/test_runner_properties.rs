//! Property tests of the runner's line handling (`runner::classify`):
//! arbitrary bytes, cut into chunks at arbitrary points, go through
//! `LineSplitter` and `classify`; every input line must come out exactly
//! once, in order, as an event or as output, and nothing may panic.
//!
//! The model the output is compared with is SPEC section 7 written the
//! simple way: split the whole input at `\n`, drop one trailing `\r` per
//! line, keep the last line if it is not empty, truncate lines over the cap.
#![cfg(feature = "runner")]

use proptest::prelude::*;
use serde_json::Value;
use tracing_pipeline::runner::classify::{
    classify, output_data, LineKind, LineSplitter, RawLine, Stream, MAX_LINE_BYTES,
};

/// One expected line: its bytes (up to the cap) and its full length.
#[derive(Debug, PartialEq)]
struct ModelLine {
    bytes: Vec<u8>,
    len: usize,
}

fn model(input: &[u8], cap: usize) -> Vec<ModelLine> {
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    // `a\nb\n` splits into a, b and an empty tail that is not a line.
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts
        .into_iter()
        .map(|p| {
            let p = p.strip_suffix(b"\r").unwrap_or(p);
            ModelLine {
                bytes: p[..p.len().min(cap)].to_vec(),
                len: p.len(),
            }
        })
        .collect()
}

/// Feeds `input` to a splitter in chunks cut at `cuts` (positions, any order).
fn split_at(input: &[u8], cuts: &[usize], cap: usize) -> Vec<RawLine> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut splitter = LineSplitter::new(cap);
    let mut out = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        splitter.feed(&input[from..cut], &mut out);
        from = cut;
    }
    out.extend(splitter.finish());
    out
}

/// SPEC 7: a stdout line is an event iff it is a JSON object whose `event`
/// is a string (and it was not truncated).
fn is_event(line: &ModelLine, stream: Stream) -> bool {
    stream == Stream::Stdout
        && line.len == line.bytes.len()
        && matches!(
            serde_json::from_slice::<Value>(&line.bytes),
            Ok(Value::Object(m)) if m.get("event").is_some_and(Value::is_string)
        )
}

/// Checks one cut line against its model line, then how it is classified.
fn check_line(want: &ModelLine, got: &RawLine, stream: Stream) -> Result<(), TestCaseError> {
    prop_assert_eq!(&got.bytes, &want.bytes);
    let truncated = want.len > want.bytes.len();
    prop_assert_eq!(got.truncated_from, truncated.then_some(want.len));
    let c = classify(got, stream);
    // The payload is always one JSON object on one SSE line.
    prop_assert!(!c.data.contains(['\n', '\r']), "{:?}", c.data);
    let data: Value = serde_json::from_str(&c.data).expect("data is JSON");
    prop_assert!(data.is_object());
    if is_event(want, stream) {
        let LineKind::Event(map) = &c.kind else {
            return Err(TestCaseError::fail(format!("not an event: {want:?}")));
        };
        let original: Value = serde_json::from_slice(&want.bytes).unwrap();
        prop_assert_eq!(&data, &original);
        prop_assert_eq!(&Value::Object(map.clone()), &original);
        // Forwarded as it was written, unless a raw `\r` forced re-encoding.
        if !want.bytes.contains(&b'\r') {
            prop_assert_eq!(c.data.as_bytes(), want.bytes.trim_ascii());
        }
    } else {
        prop_assert_eq!(&c.kind, &LineKind::Output);
        prop_assert_eq!(&data["type"], "output");
        let text = data["text"].as_str().expect("text is a string");
        let mut expected = String::from_utf8_lossy(&want.bytes).into_owned();
        if truncated {
            expected.push_str(&format!(" [… line truncated: {} bytes in total]", want.len));
        }
        prop_assert_eq!(text, expected.as_str());
        match stream {
            Stream::Stderr => prop_assert_eq!(&data["stream"], "stderr"),
            _ => prop_assert!(data.get("stream").is_none()),
        }
        prop_assert_eq!(
            data.as_object().unwrap().len(),
            2 + usize::from(stream == Stream::Stderr)
        );
    }
    Ok(())
}

fn check_stream(
    input: &[u8],
    cuts: &[usize],
    cap: usize,
    stream: Stream,
) -> Result<(), TestCaseError> {
    let want = model(input, cap);
    let got = split_at(input, cuts, cap);
    prop_assert_eq!(got.len(), want.len(), "line count");
    for (w, g) in want.iter().zip(&got) {
        check_line(w, g, stream)?;
    }
    // Rebuild the input from what came out (lines that were neither cut nor
    // lossily decoded): the same text, line for line, in the same order.
    let rebuilt: Vec<Vec<u8>> = got
        .iter()
        .map(|g| {
            let c = classify(g, stream);
            match c.kind {
                LineKind::Event(_) => c.data.into_bytes(),
                _ => {
                    let v: Value = serde_json::from_str(&c.data).unwrap();
                    v["text"].as_str().unwrap().as_bytes().to_vec()
                }
            }
        })
        .collect();
    for (w, r) in want.iter().zip(&rebuilt) {
        let exact = w.len == w.bytes.len()
            && std::str::from_utf8(&w.bytes).is_ok()
            && !(is_event(w, stream) && w.bytes.contains(&b'\r'));
        if exact {
            let original = if is_event(w, stream) {
                w.bytes.trim_ascii()
            } else {
                &w.bytes[..]
            };
            prop_assert_eq!(&r[..], original);
        }
    }
    Ok(())
}

/// Lines a pipeline might print, good and bad.
fn a_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Anything at all but a newline.
        proptest::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..40
        ),
        "[ -~]{0,30}".prop_map(String::into_bytes),
        // Events, as the layer prints them and otherwise.
        ("[a-z_]{1,12}", "[ -~]{0,12}", any::<i64>()).prop_map(|(e, m, n)| {
            serde_json::json!({"timestamp":"2025-11-29T10:30:45.123Z","event":e,"message":m,"n":n})
                .to_string()
                .into_bytes()
        }),
        "[ \t\r]{0,2}".prop_map(|ws| format!("{ws}{{\"event\" :\r\"log\" }}{ws}").into_bytes()),
        // Near misses: not objects, `event` not a string, broken JSON.
        prop_oneof![
            Just(&b"5"[..]),
            Just(&b"\"event\""[..]),
            Just(&b"[1]"[..]),
            Just(&br#"{"event":5}"#[..]),
            Just(&br#"{"event":null}"#[..]),
            Just(&br#"{"event":"x""#[..]),
            Just(&br#"{"Event":"x"}"#[..]),
            Just(&br#"{"event":"x"} trailing"#[..]),
            Just(&b"{\"event\":\"\xff\"}"[..]),
            Just(&br#"{"event":"x","event":1}"#[..]),
            Just(&br#"{"event":1,"event":"x"}"#[..]),
        ]
        .prop_map(<[u8]>::to_vec),
        // Deep nesting must not overflow the stack.
        (1usize..3000).prop_map(|d| {
            let mut v = br#"{"event":"x","deep":"#.to_vec();
            v.extend(vec![b'['; d]);
            v.extend(vec![b']'; d]);
            v.push(b'}');
            v
        }),
    ]
}

/// Input built from lines with `\n` or `\r\n` endings, the last one maybe
/// without an ending.
fn an_input() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((a_line(), any::<bool>()), 0..30),
        prop_oneof![Just(""), Just("\n"), Just("\r\n"), Just("\r")],
    )
        .prop_map(|(lines, last_end)| {
            let mut out = Vec::new();
            for (i, (line, crlf)) in lines.iter().enumerate() {
                out.extend_from_slice(line);
                if i + 1 < lines.len() {
                    out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                }
            }
            out.extend_from_slice(last_end.as_bytes());
            out
        })
}

fn a_stream() -> impl Strategy<Value = Stream> {
    prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_any_chunking_small_cap(
        input in proptest::collection::vec(
            prop_oneof![4 => any::<u8>(), 1 => Just(b'\n'), 1 => Just(b'\r')], 0..400),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        cap in 1usize..24,
        stream in a_stream(),
    ) {
        check_stream(&input, &cuts, cap, stream)?;
    }

    #[test]
    fn pipeline_like_output_any_chunking(
        input in an_input(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        stream in a_stream(),
    ) {
        check_stream(&input, &cuts, MAX_LINE_BYTES, stream)?;
    }

    #[test]
    fn pipeline_like_output_with_a_cap_that_cuts_events(
        input in an_input(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        cap in 1usize..80,
    ) {
        check_stream(&input, &cuts, cap, Stream::Stdout)?;
    }

    #[test]
    fn every_chunk_size_gives_the_same_lines(input in an_input(), size in 1usize..64) {
        let whole = split_at(&input, &[], MAX_LINE_BYTES);
        let mut splitter = LineSplitter::default();
        let mut chunked = Vec::new();
        for chunk in input.chunks(size) {
            splitter.feed(chunk, &mut chunked);
        }
        chunked.extend(splitter.finish());
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn json_objects_with_a_string_event_are_forwarded_as_is(
        event in "\\PC{0,20}",
        fields in proptest::collection::btree_map("[a-z]{1,8}", any::<i32>(), 0..6),
        spaced in any::<bool>(),
    ) {
        let mut obj = serde_json::Map::new();
        for (k, v) in fields {
            obj.insert(k, v.into());
        }
        obj.insert("event".into(), event.into());
        let text = if spaced {
            serde_json::to_string_pretty(&obj).unwrap().replace('\n', " ")
        } else {
            Value::Object(obj.clone()).to_string()
        };
        let line = RawLine { bytes: text.clone().into_bytes(), truncated_from: None };
        let c = classify(&line, Stream::Stdout);
        prop_assert_eq!(&c.data, &text);
        prop_assert_eq!(c.kind, LineKind::Event(obj));
    }

    #[test]
    fn output_data_round_trips_any_text(text in "\\PC*|[\\u{0}-\\u{1f}\\u{2028}\\u{2029}]*") {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let data = output_data(&text, stream);
            prop_assert!(!data.contains(['\n', '\r']));
            let v: Value = serde_json::from_str(&data).unwrap();
            prop_assert_eq!(v["text"].as_str(), Some(text.as_str()));
        }
    }
}

/// The default cap, once, at its edges: exactly the cap is kept whole, one
/// byte more is truncated, and `\r\n` does not count.
#[test]
fn default_cap_edges() {
    for (len, ending, truncated) in [
        (MAX_LINE_BYTES, &b"\n"[..], false),
        (MAX_LINE_BYTES, b"\r\n", false),
        (MAX_LINE_BYTES + 1, b"\r\n", true),
        (MAX_LINE_BYTES + 1, b"", true),
    ] {
        let mut input = vec![b'a'; len];
        input.extend_from_slice(ending);
        input.extend_from_slice(b"next\n");
        let want = model(&input, MAX_LINE_BYTES);
        let got = split_at(&input, &[len / 3, len, len + 1], MAX_LINE_BYTES);
        assert_eq!(got.len(), if ending.is_empty() { 1 } else { 2 });
        assert_eq!(got[0].truncated_from.is_some(), truncated, "{len}");
        assert_eq!(got.len(), want.len());
    }
}
