//! What the layer costs: one pipeline run (9 spans, 8 events, 26 lines)
//! through `PipelineLayer`, through the JSON layers people use today, through
//! a hand-written writer of the same 26 lines with no `tracing` at all, and
//! with no subscriber; then an `info!` that `LOG_LEVEL=warn` filters out.
//! With `--features otel`, also `tracing-opentelemetry` alone (the SDK's
//! tracer, no exporter) and with the layer before it, as `init()` stacks
//! them: the layer's extra cost for reading ids and setting outcomes.
//!
//! Every variant writes into the same byte-counting sink, so formatting cannot
//! be optimised away, and each has its own dispatcher, alive only during its
//! own turn: tracing combines the interest of every live dispatcher at each
//! call site, so a dispatcher left alive would change the others' figures.
//!
//! `cargo bench --bench layer` runs criterion and then prints each variant's
//! cost relative to the hand-written baseline. `scripts/perf_chart.py` turns
//! the same measurements into `docs/perf-ratios.svg`.
//!
//! For instruction counts (repeatable on a loaded machine), the binary also
//! runs one variant a fixed number of times when `BENCH_RUNS` is set, with no
//! criterion at all, for valgrind:
//!
//! ```text
//! BENCH_VARIANT=pipeline_layer BENCH_RUNS=1000 valgrind --tool=callgrind <bench binary>
//! ```

use std::hint::black_box;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use criterion::Criterion;
use serde::Serializer as _;
use time::OffsetDateTime;
use tracing::{info, info_span, Dispatch};
use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_core::callsite::rebuild_interest_cache;
use tracing_pipeline::Config;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

const JOB_ID: &str = "job-20251129-bench";

// ---------------------------------------------------------------- the sinks

/// A `MakeWriter` that counts the bytes written to it and keeps nothing.
#[derive(Clone, Default)]
struct CountingSink(Arc<AtomicU64>);

struct CountingWriter<'a>(&'a AtomicU64);

impl io::Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CountingSink {
    type Writer = CountingWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        CountingWriter(&self.0)
    }
}

/// A `MakeWriter` that keeps every byte, for the shape check.
#[derive(Clone, Default)]
struct CaptureSink(Arc<Mutex<Vec<u8>>>);

struct CaptureWriter<'a>(&'a Mutex<Vec<u8>>);

impl io::Write for CaptureWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CaptureSink {
    type Writer = CaptureWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(&self.0)
    }
}

// ---------------------------------------------------------------- the workload

/// One stage: its own call sites, as each stage function has in real code.
macro_rules! stage {
    ($name:literal, $layer:expr) => {{
        let span = info_span!(
            $name,
            layer = $layer,
            tokens_used = 1200,
            fit_score = tracing::field::Empty
        );
        let entered = span.enter();
        info!(stage_detail = 42, "processing item");
        span.record("fit_score", 85);
        drop(entered);
        drop(span);
    }};
}

/// One pipeline run: 9 spans and 8 events, 26 lines through `PipelineLayer`.
fn pipeline_run() {
    let pipeline = info_span!("pipeline", job_id = %JOB_ID);
    let entered = pipeline.enter();
    stage!("pain_point_miner", 2);
    stage!("star_selector", 2.5);
    stage!("company_researcher", 3);
    stage!("role_researcher", 3);
    stage!("opportunity_mapper", 4);
    stage!("people_mapper", 5);
    stage!("generator", 6);
    stage!("publisher", 7);
    drop(entered);
    drop(pipeline);
}

/// An `info!` outside any pipeline.
fn lone_info() {
    info!(stage_detail = 42, "processing item");
}

// ---------------------------------------------------------------- the baseline

/// The same 26 lines with no `tracing`: `time` for the timestamp, serde_json
/// for the values, one reused buffer, one write per line.
struct HandWritten {
    buf: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

const STAGES: [(&str, Num); 8] = [
    ("pain_point_miner", Num::Int(2)),
    ("star_selector", Num::Float(2.5)),
    ("company_researcher", Num::Int(3)),
    ("role_researcher", Num::Int(3)),
    ("opportunity_mapper", Num::Int(4)),
    ("people_mapper", Num::Int(5)),
    ("generator", Num::Int(6)),
    ("publisher", Num::Int(7)),
];

fn two(buf: &mut Vec<u8>, v: u8) {
    buf.extend_from_slice(&[b'0' + v / 10, b'0' + v % 10]);
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    let _ = serde_json::Serializer::new(&mut *buf).serialize_str(s);
}

fn json_num(buf: &mut Vec<u8>, n: Num) {
    let mut ser = serde_json::Serializer::new(&mut *buf);
    let _ = match n {
        Num::Int(v) => ser.serialize_i64(v),
        Num::Float(v) => ser.serialize_f64(v),
    };
}

fn json_u64(buf: &mut Vec<u8>, v: u64) {
    let _ = serde_json::Serializer::new(&mut *buf).serialize_u64(v);
}

impl HandWritten {
    /// `{"timestamp":"2025-11-29T10:30:45.123Z","event":"<event>"`
    fn head(&mut self, event: &str) {
        let buf = &mut self.buf;
        buf.clear();
        let t = OffsetDateTime::now_utc();
        buf.extend_from_slice(b"{\"timestamp\":\"");
        let y = t.year() as u32;
        two(buf, (y / 100) as u8);
        two(buf, (y % 100) as u8);
        buf.push(b'-');
        two(buf, t.month() as u8);
        buf.push(b'-');
        two(buf, t.day());
        buf.push(b'T');
        two(buf, t.hour());
        buf.push(b':');
        two(buf, t.minute());
        buf.push(b':');
        two(buf, t.second());
        buf.push(b'.');
        let ms = t.millisecond();
        buf.push(b'0' + (ms / 100) as u8);
        two(buf, (ms % 100) as u8);
        buf.extend_from_slice(b"Z\",\"event\":\"");
        buf.extend_from_slice(event.as_bytes());
        buf.push(b'"');
    }

    fn stage_keys(&mut self, name: &str, layer: Num, job_id: &str) {
        self.buf.extend_from_slice(b",\"layer\":");
        json_num(&mut self.buf, layer);
        self.buf.extend_from_slice(b",\"layer_name\":");
        json_str(&mut self.buf, name);
        self.buf.extend_from_slice(b",\"job_id\":");
        json_str(&mut self.buf, job_id);
    }

    fn end(&mut self, sink: &impl for<'w> MakeWriter<'w>) {
        self.buf.extend_from_slice(b"}\n");
        let _ = sink.make_writer().write_all(&self.buf);
    }

    fn pipeline_run(&mut self, sink: &impl for<'w> MakeWriter<'w>) {
        let job_id: &str = black_box(JOB_ID);
        let pipeline_started = Instant::now();
        self.head("pipeline_start");
        self.buf.extend_from_slice(b",\"job_id\":");
        json_str(&mut self.buf, job_id);
        self.end(sink);
        let mut completed = 0;
        for (name, layer) in black_box(STAGES) {
            let started = Instant::now();
            self.head("layer_start");
            self.stage_keys(name, layer, job_id);
            self.end(sink);

            self.head("log");
            self.buf
                .extend_from_slice(b",\"level\":\"info\",\"target\":");
            json_str(&mut self.buf, module_path!());
            self.buf.extend_from_slice(b",\"message\":");
            json_str(&mut self.buf, "processing item");
            self.buf.extend_from_slice(b",\"job_id\":");
            json_str(&mut self.buf, job_id);
            self.buf.extend_from_slice(b",\"layer\":");
            json_num(&mut self.buf, layer);
            self.buf.extend_from_slice(b",\"layer_name\":");
            json_str(&mut self.buf, name);
            self.buf
                .extend_from_slice(b",\"metadata\":{\"stage_detail\":");
            json_u64(&mut self.buf, 42);
            self.buf.push(b'}');
            self.end(sink);

            self.head("layer_complete");
            self.stage_keys(name, layer, job_id);
            self.buf
                .extend_from_slice(b",\"status\":\"success\",\"duration_ms\":");
            json_u64(&mut self.buf, started.elapsed().as_millis() as u64);
            self.buf
                .extend_from_slice(b",\"metadata\":{\"tokens_used\":");
            json_u64(&mut self.buf, 1200);
            self.buf.extend_from_slice(b",\"fit_score\":");
            json_u64(&mut self.buf, 85);
            self.buf.push(b'}');
            self.end(sink);
            completed += 1;
        }
        self.head("pipeline_complete");
        self.buf.extend_from_slice(b",\"job_id\":");
        json_str(&mut self.buf, job_id);
        self.buf
            .extend_from_slice(b",\"status\":\"success\",\"duration_ms\":");
        json_u64(&mut self.buf, pipeline_started.elapsed().as_millis() as u64);
        self.buf
            .extend_from_slice(b",\"metadata\":{\"layers_completed\":");
        json_u64(&mut self.buf, completed);
        self.buf
            .extend_from_slice(b",\"layers_failed\":0,\"layers_skipped\":0}");
        self.end(sink);
    }
}

// ---------------------------------------------------------------- the variants

/// `PipelineLayer` as `init()` configures it for `LOG_LEVEL=<level>`, into `sink`.
fn pipeline_layer<W>(level: &str, sink: W) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (config, warnings) =
        Config::from_lookup(|var| (var == "LOG_LEVEL").then(|| level.to_owned()));
    assert!(warnings.is_empty(), "{warnings:?}");
    Dispatch::new(config.subscriber(sink))
}

fn fmt_json(sink: CountingSink) -> Dispatch {
    Dispatch::new(
        tracing_subscriber::fmt()
            .json()
            .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
            .with_writer(sink)
            .finish(),
    )
}

fn bunyan(sink: CountingSink) -> Dispatch {
    Dispatch::new(
        tracing_subscriber::registry()
            .with(JsonStorageLayer)
            .with(BunyanFormattingLayer::new("bench".to_owned(), sink)),
    )
}

/// `tracing-opentelemetry` alone, with the SDK's tracer and no exporter
/// (spans are real and recorded, then dropped): what a service that already
/// traces with OpenTelemetry pays before adding the layer.
#[cfg(feature = "otel")]
fn otel_alone() -> Dispatch {
    use opentelemetry::trace::TracerProvider as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"))),
    )
}

/// The layer (as `Config::layer` makes it for `LOG_LEVEL=info`) before
/// `tracing-opentelemetry`, as `init()` stacks them: every line reads its
/// span's ids, and each stage's outcome is set on its OpenTelemetry span.
#[cfg(feature = "otel")]
fn otel_pipeline_layer(sink: CountingSink) -> Dispatch {
    use opentelemetry::trace::TracerProvider as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let (config, _) = Config::from_lookup(|var| (var == "LOG_LEVEL").then(|| "info".to_owned()));
    Dispatch::new(
        tracing_subscriber::registry()
            .with(config.layer().with_writer(sink))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"))),
    )
}

/// The layer as `Config::layer` makes it (not alone in its subscriber),
/// without `tracing-opentelemetry`: the counterpart of
/// `otel_pipeline_layer`.
fn pipeline_layer_stacked(sink: CountingSink) -> Dispatch {
    let (config, _) = Config::from_lookup(|var| (var == "LOG_LEVEL").then(|| "info".to_owned()));
    Dispatch::new(tracing_subscriber::registry().with(config.layer().with_writer(sink)))
}

/// The registry with no layer: what every `Layer`-based formatter pays
/// before it writes a byte (span slots, the span stack, the dispatch).
fn registry_only() -> Dispatch {
    Dispatch::new(tracing_subscriber::registry())
}

/// Runs `f` with `dispatch` as the only live dispatcher, then drops it and
/// forgets its interest, so the next variant starts clean.
///
/// The interest is rebuilt inside the scope: with a single live dispatcher,
/// tracing rebuilds it from the current thread's default dispatcher.
fn alone<R>(dispatch: Option<Dispatch>, f: impl FnOnce() -> R) -> R {
    let out = match &dispatch {
        Some(d) => tracing::dispatcher::with_default(d, || {
            rebuild_interest_cache();
            f()
        }),
        None => {
            rebuild_interest_cache();
            f()
        }
    };
    drop(dispatch);
    rebuild_interest_cache();
    out
}

// ---------------------------------------------------------------- the shape check

/// Timestamps and durations are the only things that vary between runs.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let (head, rest) = line
            .split_once("\"timestamp\":\"")
            .expect("every line has a timestamp");
        out.push_str(head);
        out.push_str("\"timestamp\":\"<ts>");
        let mut rest = &rest[rest.find('"').expect("timestamp ends")..];
        while let Some(at) = rest.find("\"duration_ms\":") {
            let (before, after) = rest.split_at(at + "\"duration_ms\":".len());
            out.push_str(before);
            out.push('0');
            rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

/// The baseline must write what the layer writes, or the ratio means nothing.
fn check_baseline_shape() {
    let capture = CaptureSink::default();
    alone(Some(pipeline_layer("info", capture.clone())), pipeline_run);
    let layer_text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();

    let baseline_capture = CaptureSink::default();
    HandWritten { buf: Vec::new() }.pipeline_run(&baseline_capture);
    let baseline_text = String::from_utf8(baseline_capture.0.lock().unwrap().clone()).unwrap();

    assert_eq!(layer_text.lines().count(), 26, "{layer_text}");
    assert_eq!(
        normalise(&layer_text),
        normalise(&baseline_text),
        "the hand-written baseline must write the same lines as PipelineLayer"
    );
}

// ---------------------------------------------------------------- criterion

/// Criterion ids measured by this process (a filter may skip some), in order.
static MEASURED: Mutex<Vec<(&str, &str)>> = Mutex::new(Vec::new());

fn measured(group: &'static str, name: &'static str) {
    let mut measured = MEASURED.lock().unwrap();
    if !measured.contains(&(group, name)) {
        measured.push((group, name));
    }
}

/// A variant's dispatcher around the sink; `None`: no subscriber.
type MakeDispatch = fn(CountingSink) -> Option<Dispatch>;

const RUN: &str = "pipeline_run";
const FILTERED: &str = "filtered_info";

fn bench_pipeline_run(c: &mut Criterion) {
    let mut g = c.benchmark_group(RUN);
    g.throughput(criterion::Throughput::Elements(26));

    g.bench_function("hand_written", |b| {
        measured(RUN, "hand_written");
        let sink = CountingSink::default();
        let mut hand = HandWritten {
            buf: Vec::with_capacity(512),
        };
        alone(None, || b.iter(|| hand.pipeline_run(&sink)));
        black_box(sink.0.load(Ordering::Relaxed));
    });

    #[cfg_attr(not(feature = "otel"), allow(unused_mut))] // extended with `otel`
    let mut traced: Vec<(&'static str, MakeDispatch)> = vec![
        ("pipeline_layer", |s| Some(pipeline_layer("info", s))),
        ("bunyan", |s| Some(bunyan(s))),
        ("fmt_json", |s| Some(fmt_json(s))),
        ("registry_only", |_| Some(registry_only())),
        ("no_subscriber", |_| None),
        ("pipeline_layer_stacked", |s| {
            Some(pipeline_layer_stacked(s))
        }),
    ];
    #[cfg(feature = "otel")]
    traced.extend([
        ("otel_alone", (|_| Some(otel_alone())) as MakeDispatch),
        ("otel_pipeline_layer", |s| Some(otel_pipeline_layer(s))),
    ]);
    for (name, make) in traced {
        g.bench_function(name, |b| {
            measured(RUN, name);
            let sink = CountingSink::default();
            alone(make(sink.clone()), || b.iter(pipeline_run));
            black_box(sink.0.load(Ordering::Relaxed));
        });
    }
    g.finish();
}

fn bench_filtered_info(c: &mut Criterion) {
    let mut g = c.benchmark_group(FILTERED);
    g.bench_function("pipeline_layer_warn", |b| {
        measured(FILTERED, "pipeline_layer_warn");
        let sink = CountingSink::default();
        alone(Some(pipeline_layer("warn", sink.clone())), || {
            b.iter(lone_info)
        });
        assert_eq!(sink.0.load(Ordering::Relaxed), 0, "info! was filtered out");
    });
    g.bench_function("no_subscriber", |b| {
        measured(FILTERED, "no_subscriber");
        alone(None, || b.iter(lone_info));
    });
    g.finish();
}

/// Where criterion keeps its results, found as criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// The mean, in nanoseconds, of the run criterion just finished.
fn mean_ns(group: &str, name: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(name)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn print_ratios() {
    let measured = MEASURED.lock().unwrap().clone();
    let has = |g: &str, n: &str| measured.contains(&(g, n));
    println!();
    println!("Relative cost (criterion means of this run):");
    if has(RUN, "hand_written") {
        if let Some(base) = mean_ns(RUN, "hand_written") {
            println!("  one pipeline run (26 lines), relative to the hand-written baseline:");
            for (g, n) in measured.iter().filter(|(g, _)| *g == RUN) {
                if let Some(ns) = mean_ns(g, n) {
                    println!("    {n:<16} {ns:>10.0} ns/run  {:>6.2}x", ns / base);
                }
            }
            if let Some(layer) =
                mean_ns(RUN, "pipeline_layer").filter(|_| has(RUN, "pipeline_layer"))
            {
                let r = layer / base;
                let verdict = if r <= 1.2 { "met" } else { "MISSED" };
                println!("    target PipelineLayer <= 1.20x baseline: {r:.2}x, {verdict}");
            }
        }
    }
    let pair = |a: &str, b: &str| Some((mean_ns(RUN, a)?, mean_ns(RUN, b)?));
    if let (Some((with, otel)), Some((alone, registry))) = (
        pair("otel_pipeline_layer", "otel_alone"),
        pair("pipeline_layer_stacked", "registry_only"),
    ) {
        println!(
            "  the layer's own cost beside tracing-opentelemetry (ids read, outcome set) / without it: {:.2}x",
            (with - otel) / (alone - registry)
        );
    }
    if has(FILTERED, "pipeline_layer_warn") && has(FILTERED, "no_subscriber") {
        if let (Some(layer), Some(none)) = (
            mean_ns(FILTERED, "pipeline_layer_warn"),
            mean_ns(FILTERED, "no_subscriber"),
        ) {
            let r = layer / none;
            let verdict = if r <= 1.5 { "met" } else { "MISSED" };
            println!("  an info! filtered out by LOG_LEVEL=warn: {layer:.2} ns, no subscriber: {none:.2} ns");
            println!("    target <= 1.50x no subscriber: {r:.2}x, {verdict}");
        }
    }
}

/// `BENCH_VARIANT=<name> BENCH_RUNS=<n>`: that many runs of one variant and
/// nothing else, for callgrind. Two counts (say 1000 and 2000) give the
/// instructions of one run by difference, free of setup.
fn fixed_runs(variant: &str, runs: u64) {
    let sink = CountingSink::default();
    let mut hand = HandWritten {
        buf: Vec::with_capacity(512),
    };
    let dispatch = match variant {
        "hand_written" | "no_subscriber" | "filtered_no_subscriber" => None,
        "pipeline_layer" => Some(pipeline_layer("info", sink.clone())),
        "pipeline_layer_warn" => Some(pipeline_layer("warn", sink.clone())),
        "bunyan" => Some(bunyan(sink.clone())),
        "fmt_json" => Some(fmt_json(sink.clone())),
        "registry_only" => Some(registry_only()),
        "pipeline_layer_stacked" => Some(pipeline_layer_stacked(sink.clone())),
        #[cfg(feature = "otel")]
        "otel_alone" => Some(otel_alone()),
        #[cfg(feature = "otel")]
        "otel_pipeline_layer" => Some(otel_pipeline_layer(sink.clone())),
        other => panic!("unknown BENCH_VARIANT {other}"),
    };
    alone(dispatch, || {
        for _ in 0..runs {
            match variant {
                "hand_written" => hand.pipeline_run(&sink),
                "pipeline_layer_warn" | "filtered_no_subscriber" => lone_info(),
                _ => pipeline_run(),
            }
        }
    });
    println!(
        "{variant}: {runs} runs, {} bytes",
        sink.0.load(Ordering::Relaxed)
    );
}

/// tracing-bunyan-formatter turns on tracing's `log` feature, which makes
/// every span operation also look at the `log` crate for as long as no
/// global dispatcher is set. A global no-op default makes tracing skip that,
/// as it does in a program that called `init()`; the scoped dispatchers of
/// the variants still take precedence, and "no subscriber" stays that.
fn no_log_fallback() {
    tracing::dispatcher::set_global_default(Dispatch::none())
        .expect("nothing else sets the global dispatcher");
}

fn main() {
    no_log_fallback();
    if let Ok(runs) = std::env::var("BENCH_RUNS") {
        let variant = std::env::var("BENCH_VARIANT").unwrap_or_else(|_| "pipeline_layer".into());
        fixed_runs(&variant, runs.parse().expect("BENCH_RUNS is a number"));
        return;
    }
    check_baseline_shape();
    let mut c = Criterion::default().configure_from_args();
    bench_pipeline_run(&mut c);
    bench_filtered_info(&mut c);
    c.final_summary();
    print_ratios();
}
