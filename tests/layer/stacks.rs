//! The layer inside the subscriber stacks real services already have: a
//! global `EnvFilter` (as a layer, before or after), `fmt` beside it,
//! `reload`, per-layer filters, two `PipelineLayer`s, level-routing writers,
//! `tracing-error`, `tracing-appender`. Each composition runs the same small
//! pipeline (an info stage, a debug stage that fails, a skipped stage) and
//! must give the complete lifecycle, checked by the stream checker.

use crate::common;

use std::sync::{Arc, Mutex};

use common::checker::{check, End};
use common::{events, of_kind, parse_lines, Capture};
use serde_json::Value;
use tracing::{debug_span, error, info, info_span};
use tracing_pipeline::{keep_stages, PipelineLayer};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer as _};

/// An info stage, a debug stage with an ERROR event inside (it fails), and
/// a skipped stage, inside one pipeline.
fn small_pipeline() {
    let pipeline = info_span!("pipeline", job_id = "stack-1");
    let _p = pipeline.enter();
    {
        let s = info_span!("fetch", layer = 1);
        let _s = s.enter();
        info!("fetching");
    }
    {
        let s = debug_span!("parse", layer = 2);
        let _s = s.enter();
        error!(error = "bad input", "could not parse");
    }
    {
        let s = info_span!("publish", layer = 3, skipped = true);
        let _s = s.enter();
    }
}

/// The lines must tell the whole pipeline: three stages, the debug one
/// failed (not charged to the pipeline), so the pipeline is `partial`.
fn assert_complete_lifecycle(lines: &[Value]) {
    let summary = check(lines);
    let pipeline = &summary.pipelines["stack-1"];
    assert_eq!(pipeline.status, "partial", "{lines:#?}");
    assert_eq!(pipeline.counts, [1, 1, 1]);
    let stages = &summary.stages;
    assert_eq!(
        stages[&(Some("stack-1".to_owned()), "fetch".to_owned())].end,
        End::Complete
    );
    let parse = &stages[&(Some("stack-1".to_owned()), "parse".to_owned())];
    assert_eq!(parse.end, End::Error);
    assert_eq!(parse.error.as_deref(), Some("bad input"));
    assert_eq!(
        stages[&(Some("stack-1".to_owned()), "publish".to_owned())].end,
        End::Skip
    );
}

fn lifecycle_only(lines: &[Value]) -> Vec<&str> {
    events(lines).into_iter().filter(|e| *e != "log").collect()
}

/// A `fmt` layer's output, for the checks that it still works.
#[derive(Clone, Default)]
struct Text(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for &Text {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> fmt::MakeWriter<'a> for Text {
    type Writer = &'a Text;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Text {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn a_global_env_filter_with_nothing_set_hides_stages_unless_kept() {
    // `EnvFilter::from_default_env()` with RUST_LOG unset enables ERROR only.
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new("error"))
        .with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    assert!(
        of_kind(&capture.lines(), "pipeline_start").is_empty(),
        "without keep_stages the filter hides the pipeline: the problem keep_stages solves"
    );

    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(keep_stages(EnvFilter::new("error")))
        .with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    let lines = capture.lines();
    assert_complete_lifecycle(&lines);
    // The filter still governs events: the info! is gone, the error! stays.
    let logs = of_kind(&lines, "log");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["level"], "error");
    assert_eq!(logs[0]["layer_name"], "parse");
}

#[test]
fn a_global_info_filter_keeps_a_debug_stage_in_either_order() {
    // Filter first, layer last.
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(keep_stages(EnvFilter::new("info")))
        .with(fmt::layer().with_writer(Text::default()))
        .with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    assert_complete_lifecycle(&capture.lines());

    // Layer first, filter last (the filter is then the outer layer).
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(PipelineLayer::new().with_writer(capture.clone()))
        .with(fmt::layer().with_writer(Text::default()))
        .with(keep_stages(EnvFilter::new("info")));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    assert_complete_lifecycle(&capture.lines());
}

#[test]
fn the_fmt_builder_with_an_env_filter_becomes_one_registry_line() {
    // Before: fmt().with_env_filter(EnvFilter::from_default_env()).finish()
    // After, the documented one-line change:
    let capture = Capture::default();
    let text = Text::default();
    let subscriber = tracing_subscriber::registry()
        .with(keep_stages(EnvFilter::new("warn")))
        .with(fmt::layer().with_writer(text.clone()).with_ansi(false))
        .with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    assert_complete_lifecycle(&capture.lines());
    // fmt prints what the filter lets through, as before: the error, not the info.
    let fmt_text = text.text();
    assert!(fmt_text.contains("could not parse"), "{fmt_text}");
    assert!(!fmt_text.contains("fetching"), "{fmt_text}");
}

#[test]
fn the_log_filter_of_the_layer_never_hides_events_from_fmt() {
    let capture = Capture::default();
    let text = Text::default();
    let subscriber = tracing_subscriber::registry()
        .with(fmt::layer().with_writer(text.clone()).with_ansi(false))
        .with(
            PipelineLayer::new()
                .with_writer(capture.clone())
                .with_log_filter(EnvFilter::new("warn")),
        );
    tracing::subscriber::with_default(subscriber, small_pipeline);
    let lines = capture.lines();
    assert_complete_lifecycle(&lines);
    assert_eq!(
        of_kind(&lines, "log").len(),
        1,
        "only the error is a log line"
    );
    assert!(
        text.text().contains("fetching"),
        "fmt still sees info events"
    );
}

#[test]
fn keep_stages_as_a_per_layer_filter_on_fmt() {
    let capture = Capture::default();
    let text = Text::default();
    let subscriber = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(text.clone())
                .with_filter(keep_stages(EnvFilter::new("warn"))),
        )
        .with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    assert_complete_lifecycle(&capture.lines());
    // The pipeline layer has no filter of its own: it saw the info event.
    assert_eq!(of_kind(&capture.lines(), "log").len(), 2);
    assert!(!text.text().contains("fetching"));
}

#[test]
fn a_per_layer_level_filter_on_fmt_does_not_touch_the_pipeline_layer() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(Text::default())
                .with_filter(LevelFilter::ERROR),
        )
        .with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    assert_complete_lifecycle(&capture.lines());
}

#[test]
fn a_reloadable_filter_keeps_stages_before_and_after_a_reload() {
    let capture = Capture::default();
    let (filter, handle) = reload::Layer::new(keep_stages(EnvFilter::new("error")));
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, || {
        small_pipeline();
        handle
            .modify(|f| *f.inner_mut() = EnvFilter::new("info"))
            .expect("reload");
        small_pipeline();
    });
    let lines = capture.lines();
    let (first, second) = lines.split_at(
        lines
            .iter()
            .position(|l| l["event"] == "pipeline_complete")
            .unwrap()
            + 1,
    );
    assert_complete_lifecycle(first);
    assert_complete_lifecycle(second);
    // After the reload the info event passes too.
    assert_eq!(of_kind(first, "log").len(), 1);
    assert_eq!(of_kind(second, "log").len(), 2);
}

#[test]
fn two_pipeline_layers_write_every_line_each() {
    let (a, b) = (Capture::default(), Capture::default());
    let subscriber = tracing_subscriber::registry()
        .with(PipelineLayer::new().with_writer(a.clone()))
        .with(
            PipelineLayer::new()
                .with_writer(b.clone())
                .with_log_filter(EnvFilter::new("error")),
        );
    tracing::subscriber::with_default(subscriber, small_pipeline);
    let (a, b) = (a.lines(), b.lines());
    assert_complete_lifecycle(&a);
    assert_complete_lifecycle(&b);
    assert_eq!(lifecycle_only(&a), lifecycle_only(&b));
    // Each with its own log filter.
    assert_eq!(of_kind(&a, "log").len(), 2);
    assert_eq!(of_kind(&b, "log").len(), 1);
}

#[test]
fn one_layer_teeing_to_two_writers() {
    let (a, b) = (Capture::default(), Capture::default());
    let subscriber = tracing_subscriber::registry()
        .with(PipelineLayer::new().with_writer(a.clone().and(b.clone())));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    assert_complete_lifecycle(&a.lines());
    assert_eq!(a.lines(), b.lines());
}

#[test]
fn a_level_routing_writer_routes_log_lines_and_keeps_every_lifecycle_line() {
    // `with_max_level(INFO)` drops debug lines; a debug stage's lifecycle
    // lines are not debug lines: they are routed at INFO (ERROR when failed).
    let (main, errors) = (Capture::default(), Capture::default());
    let writer = main
        .clone()
        .with_max_level(tracing::Level::INFO)
        .and(errors.clone().with_max_level(tracing::Level::ERROR));
    let subscriber = tracing_subscriber::registry().with(PipelineLayer::new().with_writer(writer));
    tracing::subscriber::with_default(subscriber, || {
        small_pipeline();
        let p = info_span!("pipeline", job_id = "stack-2");
        let _p = p.enter();
        tracing::debug!("a debug line goes nowhere");
    });
    let lines = main.lines();
    assert_complete_lifecycle(&lines[..lines.len() - 2]);
    assert!(lines.iter().all(|l| l["level"] != "debug"));
    let errors = errors.lines();
    assert_eq!(
        events(&errors),
        ["log", "layer_error"],
        "errors only: {errors:#?}"
    );
}

#[test]
fn beside_tracing_error() {
    use tracing_error::{ErrorLayer, SpanTrace};
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(ErrorLayer::default())
        .with(PipelineLayer::new().with_writer(capture.clone()));
    let mut trace = String::new();
    tracing::subscriber::with_default(subscriber, || {
        small_pipeline();
        let p = info_span!("pipeline", job_id = "stack-2");
        let _p = p.enter();
        let s = info_span!("traced", layer = 1);
        let _s = s.enter();
        trace = SpanTrace::capture().to_string();
    });
    assert_complete_lifecycle(&capture.lines());
    assert!(trace.contains("traced"), "{trace}");
}

#[test]
fn through_a_tracing_appender_non_blocking_file() {
    let dir = std::env::temp_dir().join(format!("tp-appender-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let appender = tracing_appender::rolling::never(&dir, "events.jsonl");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let subscriber = tracing_subscriber::registry().with(PipelineLayer::new().with_writer(writer));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    drop(guard); // flushes the worker
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert_complete_lifecycle(&parse_lines(&text));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_configured_layer_composes_with_a_subscriber_of_ones_own() {
    let (config, _) =
        tracing_pipeline::Config::from_lookup(|v| (v == "LOG_LEVEL").then(|| "warn".to_owned()));
    let capture = Capture::default();
    let text = Text::default();
    let subscriber = tracing_subscriber::registry()
        .with(fmt::layer().with_writer(text.clone()).with_ansi(false))
        .with(config.layer().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, small_pipeline);
    let lines = capture.lines();
    assert_complete_lifecycle(&lines);
    assert_eq!(of_kind(&lines, "log").len(), 1);
    assert!(
        text.text().contains("fetching"),
        "a per-layer filter hides nothing from fmt"
    );
}

/// `tracing-opentelemetry` beside it, with a global `keep_stages` filter
/// and `fmt`: the full lifecycle, every line carrying the ids of the span
/// the OpenTelemetry layer exported, and OpenTelemetry seeing the stages
/// (the debug one too, through `keep_stages`) as children of the pipeline.
#[cfg(feature = "otel")]
#[test]
fn tracing_opentelemetry_beside_it_in_either_order() {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    for otel_first in [true, false] {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("stacks");
        let capture = Capture::default();
        let text = Text::default();
        let pipeline_layer = PipelineLayer::new().with_writer(capture.clone());
        let base = tracing_subscriber::registry()
            .with(keep_stages(EnvFilter::new("info")))
            .with(fmt::layer().with_writer(text.clone()));
        if otel_first {
            let otel = tracing_opentelemetry::layer().with_tracer(tracer);
            tracing::subscriber::with_default(base.with(otel).with(pipeline_layer), small_pipeline);
        } else {
            let otel = tracing_opentelemetry::layer().with_tracer(tracer);
            tracing::subscriber::with_default(base.with(pipeline_layer).with(otel), small_pipeline);
        }
        let lines = capture.lines();
        assert_complete_lifecycle(&lines);
        assert!(text.text().contains("bad input"), "fmt still prints");
        let spans = exporter.get_finished_spans().unwrap();
        let id_of = |name: &str| {
            let s = spans.iter().find(|s| s.name == name).unwrap();
            (
                format!("{:032x}", s.span_context.trace_id()),
                format!("{:016x}", s.span_context.span_id()),
                s.parent_span_id,
            )
        };
        let (trace, root, _) = id_of("pipeline");
        for stage in ["fetch", "parse", "publish"] {
            let (t, _, parent) = id_of(stage);
            assert_eq!(t, trace);
            assert_eq!(format!("{parent:016x}"), root, "{stage} under the pipeline");
        }
        for l in &lines {
            let own = l["layer_name"].as_str().unwrap_or("pipeline");
            assert_eq!(l["trace_id"], trace.as_str(), "{l}");
            assert_eq!(
                l["span_id"],
                id_of(own).1.as_str(),
                "otel first: {otel_first}: {l}"
            );
        }
    }
}
