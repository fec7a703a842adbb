//! `trace_id` and `span_id` on the lines, next to `tracing-opentelemetry`
//! exporting to the SDK's in-memory exporter: the ids on every line are
//! those of the spans exported, whichever layer comes first in the stack.
//! Matching them against the exporter's spans is also what catches two
//! copies of `tracing-opentelemetry` in the dependency tree (the ids would
//! silently be missing).
#![cfg(feature = "otel")]

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;

use common::{keys, of_kind, Capture};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::Value;
use tracing::{error, info, info_span};
use tracing_pipeline::PipelineLayer;
use tracing_subscriber::layer::SubscriberExt as _;

fn provider() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

/// A pipeline with a stage that logs (directly and from a plain span
/// inside it), a failing stage and a stage skipped before it ran.
fn pipeline() {
    let pipeline = info_span!("pipeline", job_id = "otel-1");
    let _p = pipeline.enter();
    info!("pipeline begins");
    {
        let s = info_span!(
            "pain_point_miner",
            layer = 2,
            tokens_used = tracing::field::Empty
        );
        let _s = s.enter();
        info!("mining");
        s.record("tokens_used", 42);
        let inner = info_span!("fetch_page");
        let _i = inner.enter();
        info!("inside a plain span");
    }
    {
        let s = info_span!("company_researcher", layer = 3);
        let _s = s.enter();
        error!(error = "no such company", "research failed");
    }
    drop(info_span!("publisher", layer = 7, skipped = true));
}

fn hex(id: impl std::fmt::LowerHex, width: usize) -> String {
    format!("{id:0width$x}")
}

fn exported_by_name(spans: &[SpanData]) -> HashMap<String, &SpanData> {
    spans.iter().map(|s| (s.name.to_string(), s)).collect()
}

/// Checks every line against the exported spans: the same trace, and each
/// line's span id is that of the span it is about.
fn check_lines(lines: &[Value], spans: &[SpanData]) {
    let by_name = exported_by_name(spans);
    let root = by_name["pipeline"];
    let trace = hex(root.span_context.trace_id(), 32);
    assert!(lines.len() >= 10, "{lines:#?}");
    for line in lines {
        assert_eq!(line["trace_id"], trace.as_str(), "{line}");
        let own = match line["event"].as_str().unwrap() {
            "pipeline_start" | "pipeline_complete" => "pipeline",
            "log" => match line["message"].as_str().unwrap() {
                "pipeline begins" => "pipeline",
                "inside a plain span" => "fetch_page",
                _ => line["layer_name"].as_str().unwrap(),
            },
            _ => line["layer_name"].as_str().unwrap(),
        };
        let span_id = hex(by_name[own].span_context.span_id(), 16);
        assert_eq!(line["span_id"], span_id.as_str(), "{line}");
        // The last keys before metadata, in that order.
        let k = keys(line);
        let at = k.iter().position(|k| *k == "trace_id").unwrap();
        assert_eq!(k[at + 1], "span_id", "{line}");
        assert!(k.len() == at + 2 || k[at + 2] == "metadata", "{line}");
    }
    // Parent links as tracing has them.
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    for stage in ["pain_point_miner", "company_researcher", "publisher"] {
        assert_eq!(
            by_name[stage].parent_span_id,
            root.span_context.span_id(),
            "{stage}"
        );
    }
}

#[test]
fn ids_on_every_line_match_the_exported_spans_otel_layer_first() {
    let (provider, exporter) = provider();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, pipeline);
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let lines = capture.lines();
    assert_eq!(of_kind(&lines, "layer_skip").len(), 1);
    check_lines(&lines, &spans);
}

#[test]
fn ids_on_every_line_match_the_exported_spans_pipeline_layer_first() {
    let (provider, exporter) = provider();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(PipelineLayer::new().with_writer(capture.clone()))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, pipeline);
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 5, "{spans:#?}");
    check_lines(&capture.lines(), &spans);
}

#[test]
fn ids_exist_from_the_first_enter() {
    let (provider, exporter) = provider();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(PipelineLayer::new().with_writer(capture.clone()))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let p = info_span!("pipeline", job_id = "first-enter");
        let _p = p.enter();
        let s = info_span!("stage", layer = 1);
        let _s = s.enter();
        // Both start lines are out before anything else happened.
        let lines = capture.lines();
        assert_eq!(lines.len(), 2);
        for l in &lines {
            assert!(l["trace_id"].is_string() && l["span_id"].is_string(), "{l}");
        }
        assert_ne!(lines[0]["span_id"], lines[1]["span_id"]);
    });
    assert_eq!(exporter.get_finished_spans().unwrap().len(), 2);
}

#[test]
fn no_ids_without_an_opentelemetry_layer_or_with_a_no_op_tracer() {
    let capture = Capture::default();
    let subscriber =
        tracing_subscriber::registry().with(PipelineLayer::new().with_writer(capture.clone()));
    tracing::subscriber::with_default(subscriber, pipeline);
    let noop = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer())
        .with(PipelineLayer::new().with_writer(noop.clone()));
    tracing::subscriber::with_default(subscriber, pipeline);
    for lines in [capture.lines(), noop.lines()] {
        assert!(lines.len() >= 10);
        for l in &lines {
            assert!(
                l.get("trace_id").is_none() && l.get("span_id").is_none(),
                "{l}"
            );
        }
    }
}

#[test]
fn a_span_with_an_explicit_remote_parent_keeps_its_trace() {
    use opentelemetry::trace::{
        SpanContext, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let (provider, exporter) = provider();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(PipelineLayer::new().with_writer(capture.clone()))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let remote = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    tracing::subscriber::with_default(subscriber, || {
        let p = info_span!("pipeline", job_id = "remote");
        let _ = p.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        let _p = p.enter();
        drop(info_span!("stage", layer = 1).entered());
    });
    let spans = exporter.get_finished_spans().unwrap();
    let root = exported_by_name(&spans)["pipeline"].clone();
    assert_eq!(
        root.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    for l in capture.lines() {
        assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{l}");
    }
}
