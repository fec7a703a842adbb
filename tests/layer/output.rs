//! SPEC section 5 and 4.6: each line is one complete JSON object written in
//! one call, keys in the table's order, timestamps in the stated format;
//! a failing writer, or one that logs, never disturbs the program.
use crate::common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use time::OffsetDateTime;
use tracing::field::Empty;
use tracing::{error, info, info_span};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use common::{capture, keys, of_kind};

/// One stage that ends in each way, inside a pipeline that fails, with a
/// log line: every kind of line and every optional key.
fn every_kind_of_line() {
    let p = info_span!("pipeline", job_id = "j", pipeline = "job_application");
    let _p = p.enter();
    {
        let s = info_span!("a", layer = 1, fit_score = Empty);
        let _s = s.enter();
        s.record("fit_score", 85);
        info!(n = 1, "hello");
    }
    {
        let _s = info_span!("b", layer = 2.5, tokens = 3).entered();
        error!("broke");
    }
    drop(info_span!("c", layer = 3, skipped = true, reason = "r").entered());
    error!("the pipeline broke");
}

#[test]
fn keys_come_in_the_order_of_the_spec_table() {
    let lines = capture(every_kind_of_line);
    let by_kind = |kind: &str| -> Vec<Vec<String>> {
        of_kind(&lines, kind)
            .iter()
            .map(|l| keys(l).into_iter().map(str::to_owned).collect())
            .collect()
    };
    let v = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        by_kind("pipeline_start"),
        [v(&["timestamp", "event", "job_id", "metadata"])]
    );
    assert_eq!(
        by_kind("layer_start"),
        vec![v(&["timestamp", "event", "layer", "layer_name", "job_id"]); 3]
    );
    assert_eq!(
        by_kind("layer_complete"),
        [v(&[
            "timestamp",
            "event",
            "layer",
            "layer_name",
            "job_id",
            "status",
            "duration_ms",
            "metadata"
        ])]
    );
    assert_eq!(
        by_kind("layer_error"),
        [v(&[
            "timestamp",
            "event",
            "layer",
            "layer_name",
            "job_id",
            "status",
            "duration_ms",
            "error",
            "metadata"
        ])]
    );
    assert_eq!(
        by_kind("layer_skip"),
        [v(&[
            "timestamp",
            "event",
            "layer",
            "layer_name",
            "job_id",
            "status",
            "duration_ms",
            "metadata"
        ])]
    );
    assert_eq!(
        by_kind("pipeline_complete"),
        [v(&[
            "timestamp",
            "event",
            "job_id",
            "status",
            "duration_ms",
            "error",
            "metadata"
        ])]
    );
    assert_eq!(
        by_kind("log"),
        vec![
            v(&[
                "timestamp",
                "event",
                "level",
                "target",
                "message",
                "job_id",
                "layer",
                "layer_name",
                "metadata"
            ]),
            v(&[
                "timestamp",
                "event",
                "level",
                "target",
                "message",
                "job_id",
                "layer",
                "layer_name"
            ]),
            v(&["timestamp", "event", "level", "target", "message", "job_id"]),
        ]
    );
}

#[test]
fn each_line_is_written_with_a_single_write() {
    let (layer, capture) = common::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, every_kind_of_line);
    let lines = capture.lines();
    assert_eq!(lines.len(), 11);
    assert_eq!(capture.writes(), lines.len());
}

/// `2025-11-29T10:30:45.123Z`, produced from the same UTC clock.
fn format_utc(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

#[test]
fn timestamps_are_rfc3339_utc_with_milliseconds_and_taken_when_the_line_is_made() {
    assert!(is_timestamp("2025-11-29T10:30:45.123Z"));
    assert!(!is_timestamp("2025-11-29T10:30:45.123+00:00"));
    assert!(!is_timestamp("2025-11-29T10:30:45.12Z"));
    let before = format_utc(OffsetDateTime::now_utc());
    let lines = capture(every_kind_of_line);
    let after = format_utc(OffsetDateTime::now_utc());
    for line in &lines {
        let ts = line["timestamp"].as_str().unwrap();
        assert!(is_timestamp(ts), "{ts}");
        assert!(
            before.as_str() <= ts && ts <= after.as_str(),
            "{ts} not within [{before}, {after}]"
        );
    }
    let stamps: Vec<_> = lines.iter().map(|l| l["timestamp"].clone()).collect();
    let mut sorted = stamps.clone();
    sorted.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    assert_eq!(stamps, sorted, "lines written in time order on one thread");
}

#[test]
fn text_is_escaped_so_every_line_parses_back_to_the_same_strings() {
    let nasty = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} ünïcödé 🚀 </script>";
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = nasty).entered();
        let _s = info_span!("s", layer = 1, layer_name = nasty, note = nasty).entered();
        info!(field = nasty, "{nasty}");
        error!(error = nasty);
    });
    for line in &lines {
        assert_eq!(line["job_id"], nasty);
    }
    let end = of_kind(&lines, "layer_error")[0];
    assert_eq!(end["layer_name"], nasty);
    assert_eq!(end["error"], nasty);
    assert_eq!(end["metadata"]["note"], nasty);
    let log = of_kind(&lines, "log")[0];
    assert_eq!(log["message"], nasty);
    assert_eq!(log["metadata"]["field"], nasty);
}

#[test]
fn non_finite_numbers_are_never_null() {
    let lines = capture(|| {
        drop(info_span!("s", layer = 1, nan = f64::NAN, inf = f64::INFINITY).entered());
        info!(nan = f64::NAN, "n");
    });
    for line in &lines {
        assert!(!line.to_string().contains("null"), "{line}");
    }
    assert!(lines[1]["metadata"]["nan"].is_string());
}

/// A writer that fails on the writes `fail` says, and keeps the rest.
#[derive(Clone)]
struct Flaky {
    attempts: Arc<AtomicUsize>,
    kept: Arc<Mutex<Vec<u8>>>,
    fail: fn(usize) -> bool,
}

struct FlakyWriter(Flaky);

impl io::Write for FlakyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.attempts.fetch_add(1, Ordering::SeqCst);
        if (self.0.fail)(n) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed pipe"));
        }
        self.0.kept.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if (self.0.fail)(self.0.attempts.load(Ordering::SeqCst)) {
            return Err(io::Error::other("disk full"));
        }
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Flaky {
    type Writer = FlakyWriter;
    fn make_writer(&'a self) -> FlakyWriter {
        FlakyWriter(self.clone())
    }
}

/// Runs a small pipeline whose results the layer must not change.
fn instrumented_work() -> (u32, Result<(), String>) {
    #[tracing::instrument(name = "failing", skip_all, fields(layer = 2), err)]
    fn failing() -> Result<(), String> {
        Err("expected".to_owned())
    }
    let _p = info_span!("pipeline", job_id = "w").entered();
    let mut sum = 0;
    for i in 0..10 {
        let _s = info_span!("stage", layer = 1, i).entered();
        info!(i, "working");
        sum += i;
    }
    (sum, failing())
}

fn run_with(writer: Flaky) -> (u32, Result<(), String>) {
    let layer = tracing_pipeline::PipelineLayer::new().with_writer(writer);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, instrumented_work)
}

#[test]
fn a_writer_that_always_fails_changes_nothing_and_panics_nothing() {
    let writer = Flaky {
        attempts: Arc::default(),
        kept: Arc::default(),
        fail: |_| true,
    };
    let result = run_with(writer.clone());
    assert_eq!(result, (45, Err("expected".to_owned())));
    assert!(
        writer.attempts.load(Ordering::SeqCst) > 0,
        "the layer tried"
    );
    assert!(writer.kept.lock().unwrap().is_empty());
}

#[test]
fn a_writer_that_fails_now_and_then_loses_only_those_lines() {
    let writer = Flaky {
        attempts: Arc::default(),
        kept: Arc::default(),
        fail: |n| n % 3 == 1,
    };
    let result = run_with(writer.clone());
    assert_eq!(result, (45, Err("expected".to_owned())));
    let attempts = writer.attempts.load(Ordering::SeqCst);
    let text = String::from_utf8(writer.kept.lock().unwrap().clone()).unwrap();
    let lines = common::parse_lines(&text);
    let succeeded = (0..attempts).filter(|n| n % 3 != 1).count();
    assert!(attempts > 3, "there were failures before the end");
    assert_eq!(
        lines.len(),
        succeeded,
        "every line not refused arrived, whole"
    );
    if (attempts - 1) % 3 != 1 {
        assert_eq!(lines.last().unwrap()["event"], "pipeline_complete");
    }
}

/// A writer that logs through `tracing` while it writes: events, and with
/// `spans` set, a span too (as an instrumented network client would).
#[derive(Clone, Default)]
struct Chatty {
    inner: common::Capture,
    calls: Arc<AtomicUsize>,
    spans: bool,
}

struct ChattyWriter(Chatty);

impl io::Write for ChattyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let calls = self.0.calls.fetch_add(1, Ordering::SeqCst);
        assert!(calls < 1000, "the layer is recursing through its writer");
        info!("from the writer");
        error!("an error from the writer");
        let _s = self
            .0
            .spans
            .then(|| info_span!("writer_stage", layer = 99).entered());
        self.0.inner.make_writer().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Chatty {
    type Writer = ChattyWriter;
    fn make_writer(&'a self) -> ChattyWriter {
        ChattyWriter(self.clone())
    }
}

/// Runs a small pipeline through a [`Chatty`] writer on its own thread, and
/// fails (rather than hanging the suite) if it does not finish.
fn run_chatty(spans: bool) -> Chatty {
    let writer = Chatty {
        spans,
        ..Chatty::default()
    };
    let w = writer.clone();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let layer = tracing_pipeline::PipelineLayer::new().with_writer(w);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let _p = info_span!("pipeline", job_id = "j").entered();
            let _s = info_span!("s", layer = 1).entered();
            info!("hello");
        });
        let _ = done.send(());
    });
    // Generous: the work takes microseconds; only a deadlock takes this long.
    finished
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the program hung: the layer deadlocked on its writer's tracing calls");
    writer
}

fn assert_only_real_lines(writer: &Chatty) {
    let lines = writer.inner.lines();
    let mut expected = vec![
        "pipeline_start",
        "layer_start",
        "log",
        "layer_complete",
        "pipeline_complete",
    ];
    if writer.spans {
        // A span that the writer opens and closes while the layer writes
        // `layer_complete` is closed inside the registry's own `on_close`
        // of the stage. tracing-subscriber's registry only frees spans when
        // its outermost close finishes (`CloseGuard` in registry/sharded.rs),
        // so that writer span is never freed and keeps its parent, the
        // pipeline span, open: no `pipeline_complete` can follow. What the
        // layer guarantees here is no deadlock, no recursion and every
        // other line.
        expected.pop();
    }
    let real: Vec<Value> = lines
        .iter()
        .filter(|l| l["message"] != "from the writer" && l["layer_name"] != "writer_stage")
        .cloned()
        .collect();
    assert_eq!(common::events(&real), expected);
    // The writer's own ERROR event is not an error of the stage it wrote for.
    assert_eq!(of_kind(&lines, "layer_complete")[0]["layer_name"], "s");
    assert_eq!(of_kind(&lines, "layer_complete")[0]["status"], "success");
    if !writer.spans {
        assert_eq!(of_kind(&lines, "pipeline_complete")[0]["status"], "success");
    }
    assert!(writer.calls.load(Ordering::SeqCst) < 20);
}

#[test]
fn events_fired_from_inside_the_writer_do_not_recurse() {
    assert_only_real_lines(&run_chatty(false));
}

#[test]
fn a_span_entered_inside_the_writer_does_not_recurse_or_deadlock() {
    assert_only_real_lines(&run_chatty(true));
}
