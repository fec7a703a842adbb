//! Shared helpers for the layer's tests: a capturing writer, scoped
//! subscribers, schema validation of every line, and normalisation of the
//! only two things that vary between runs (timestamps and durations).
#![allow(dead_code, unreachable_pub)]

pub mod checker;

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tracing_pipeline::PipelineLayer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

/// A `MakeWriter` that keeps every byte written, and counts the writes.
#[derive(Clone, Default)]
pub struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    writes: Arc<Mutex<usize>>,
}

pub struct CaptureWriter(Capture);

impl io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.bytes.lock().unwrap().extend_from_slice(buf);
        *self.0.writes.lock().unwrap() += 1;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(self.clone())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes.lock().unwrap().clone()).expect("output is UTF-8")
    }

    pub fn writes(&self) -> usize {
        *self.writes.lock().unwrap()
    }

    /// Every line parsed (panics on a line that is not JSON) and checked
    /// against docs/event.schema.json.
    pub fn lines(&self) -> Vec<Value> {
        parse_lines(&self.text())
    }
}

pub fn parse_lines(text: &str) -> Vec<Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "output ends mid-line: {text:?}"
    );
    text.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert_valid(&v);
            v
        })
        .collect()
}

fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = include_str!("../../docs/event.schema.json");
        let schema: Value = serde_json::from_str(text).expect("schema is JSON");
        jsonschema::validator_for(&schema).expect("schema compiles")
    })
}

/// Panics unless `line` is valid against docs/event.schema.json.
pub fn assert_valid(line: &Value) {
    let errors: Vec<String> = schema()
        .iter_errors(line)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{line} violates the schema: {errors:?}");
    // The layer's schema type reads the line back to the same JSON.
    let text = line.to_string();
    let event: tracing_pipeline::PipelineEvent = text.parse().expect("PipelineEvent parses");
    let back: Value = serde_json::from_str(&event.to_line()).unwrap();
    assert_eq!(&back, line, "PipelineEvent round trip");
}

/// A layer writing JSON into a fresh capture, with no log filter.
pub fn layer() -> (PipelineLayer<Capture>, Capture) {
    let capture = Capture::default();
    (PipelineLayer::new().with_writer(capture.clone()), capture)
}

/// Runs `f` under a scoped subscriber and returns the lines it produced.
pub fn capture(f: impl FnOnce()) -> Vec<Value> {
    let (layer, capture) = layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, f);
    capture.lines()
}

/// Like [`capture`], with a `LOG_LEVEL`-style filter on `log` lines.
pub fn capture_filtered(directives: &str, f: impl FnOnce()) -> Vec<Value> {
    let (layer, capture) = layer();
    let layer = layer.with_log_filter(EnvFilter::new(directives));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, f);
    capture.lines()
}

/// Replaces what varies between runs: timestamps and durations.
pub fn normalise(mut lines: Vec<Value>) -> Vec<Value> {
    for l in &mut lines {
        let o = l.as_object_mut().unwrap();
        if o.contains_key("timestamp") {
            o.insert("timestamp".into(), Value::from("<ts>"));
        }
        if o.contains_key("duration_ms") {
            o.insert("duration_ms".into(), Value::from(0));
        }
    }
    lines
}

/// The `event` of every line.
pub fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

/// Lines whose `event` is `kind`.
pub fn of_kind<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == kind).collect()
}

/// The keys of a line, in order.
pub fn keys(line: &Value) -> Vec<&str> {
    line.as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect()
}

/// A [`tracing::Dispatch`] with a JSON layer writing into a fresh capture,
/// for tests that need the same subscriber on several threads.
pub fn dispatch() -> (tracing::Dispatch, Capture) {
    let (layer, capture) = layer();
    (
        tracing::Dispatch::new(tracing_subscriber::registry().with(layer)),
        capture,
    )
}

thread_local! {
    static WORKER_DEFAULT: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
}

/// A multi-thread tokio runtime whose worker threads all have `dispatch`
/// as their default subscriber (the thread calling `block_on` needs its own
/// scope: `tracing::dispatcher::with_default`).
pub fn multi_thread_runtime(
    dispatch: &tracing::Dispatch,
    workers: usize,
) -> tokio::runtime::Runtime {
    let start = dispatch.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&start);
            WORKER_DEFAULT.with(|g| *g.borrow_mut() = Some(guard));
        })
        .on_thread_stop(|| {
            WORKER_DEFAULT.with(|g| g.borrow_mut().take());
        })
        .build()
        .expect("tokio runtime")
}

/// Installs the crate's panic hook (panic messages in `layer_error`) over
/// one that keeps quiet about panics whose message starts with `injected`,
/// so that expected panics do not flood the output and assertion failures
/// are still reported.
pub fn quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !text.is_some_and(|t| t.starts_with("injected")) {
                default(info);
            }
        }));
        tracing_pipeline::install_panic_hook();
    });
}

/// A waker that does nothing, for polling futures by hand.
pub fn noop_waker() -> std::task::Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    std::task::Waker::from(Arc::new(Noop))
}
