//! OpenTelemetry export (feature `otel`): what [`crate::init`] adds when
//! the environment names an OTLP endpoint or turns LangSmith on.
//!
//! - [`install`] builds an SDK tracer provider with one bounded batch
//!   processor per destination (OTLP/HTTP, protobuf, through a blocking
//!   `reqwest` client with rustls: no system OpenSSL), and a tracer that
//!   makes every root span a child of `TRACEPARENT` when one is given.
//! - `tracing-opentelemetry` then turns spans into OpenTelemetry spans;
//!   [`mapping`] adds, when a stage or pipeline ends, what the layer knows
//!   and the backends read (status, counts, LangSmith's span kind, GenAI
//!   token usage).
//! - [`Exporting`] flushes and shuts the provider down within a bound, and
//!   reports lost spans; [`FlushAtPipelineEnd`] flushes when the outermost
//!   pipeline span closes, for programs that use [`crate::init`] without a
//!   guard.
//! - [`QuietExportThreads`] keeps the exporter's own HTTP stack (hyper,
//!   reqwest, rustls) from tracing itself on its threads: those events and
//!   spans would become lines and spans to export, in a loop.
//!
//! `docs/otel.md` in the repository is the user's page for all of this.

mod export;
pub(crate) mod mapping;

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tracing::span::Id;
use tracing::{Metadata, Subscriber};
use tracing_core::subscriber::Interest;
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{OtelConfig, OtlpDestination};
use crate::layer::SpanKind;
use export::{Bounded, Counted, Stats};

/// The tracer `tracing-opentelemetry` is given: the SDK's, with the remote
/// parent from `TRACEPARENT` for spans that have no parent of their own.
#[derive(Debug, Clone)]
pub(crate) struct RootParent {
    inner: SdkTracer,
    remote: Option<Context>,
}

impl opentelemetry::trace::Tracer for RootParent {
    type Span = <SdkTracer as opentelemetry::trace::Tracer>::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        match &self.remote {
            Some(remote) if !parent_cx.has_active_span() => {
                self.inner.build_with_context(builder, remote)
            }
            _ => self.inner.build_with_context(builder, parent_cx),
        }
    }
}

/// The remote parent a `traceparent` names (validated by the config).
fn remote_parent(traceparent: &str, tracestate: Option<&str>) -> Option<Context> {
    let mut parts = traceparent.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let sc = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
    Some(Context::new().with_remote_span_context(sc))
}

/// A running export: the provider and each destination's counts.
pub(crate) struct Exporting {
    provider: SdkTracerProvider,
    stats: Vec<Arc<Stats>>,
}

impl fmt::Debug for Exporting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporting")
            .field("destinations", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Exporting {
    /// Sends what is waiting; returns within [`crate::FLUSH_TIMEOUT`] (the
    /// SDK's flush bound), whatever the endpoint does.
    pub(crate) fn flush(&self) {
        let _ = self.provider.force_flush();
        self.report_lost(false);
    }

    /// Sends what is waiting and stops the export threads, waiting at most
    /// `timeout`.
    pub(crate) fn shutdown(&self, timeout: Duration) {
        let _ = self.provider.shutdown_with_timeout(timeout);
        self.report_lost(true);
    }

    fn report_lost(&self, at_end: bool) {
        for s in &self.stats {
            s.report_lost(at_end);
        }
    }
}

/// Builds the export the configuration asks for: the tracer for
/// `tracing-opentelemetry` and the handle that flushes it. `None` (with a
/// reason in `warnings`) when nothing is to be exported or it cannot be
/// built; the JSON lines work either way.
pub(crate) fn install(
    config: &OtelConfig,
    warnings: &mut Vec<String>,
) -> Option<(RootParent, Exporting)> {
    if !config.exporting() {
        return None;
    }
    // One process-wide TLS provider (ring) for the HTTPS client; a program
    // that installed its own keeps it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match build_client(config.timeout) {
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!(
                "tracing-pipeline: cannot build the HTTP client for OpenTelemetry export ({e}); spans are not exported"
            ));
            return None;
        }
    };
    let mut builder = SdkTracerProvider::builder().with_resource(resource(config));
    let mut stats = Vec::new();
    for dest in &config.destinations {
        match exporter(dest, &client, config.timeout) {
            Ok(exporter) => {
                let s = Stats::new(dest.name, dest.url.clone());
                let batch = BatchSpanProcessor::builder(Counted {
                    inner: exporter,
                    stats: Arc::clone(&s),
                })
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(config.queue_size)
                        .build(),
                )
                .build();
                builder = builder.with_span_processor(Bounded {
                    inner: batch,
                    bound: config.queue_size,
                    stats: Arc::clone(&s),
                });
                stats.push(s);
            }
            Err(e) => warnings.push(format!(
                "tracing-pipeline: cannot export spans to {} ({}): {e}; spans are not sent there",
                dest.url, dest.name
            )),
        }
    }
    if stats.is_empty() {
        return None;
    }
    let provider = builder.build();
    let tracer = RootParent {
        inner: provider.tracer("tracing-pipeline"),
        remote: config
            .traceparent
            .as_deref()
            .and_then(|tp| remote_parent(tp, config.tracestate.as_deref())),
    };
    Some((tracer, Exporting { provider, stats }))
}

/// The blocking client, built on a thread of its own: building (and later
/// dropping) it inside an async runtime would panic.
fn build_client(timeout: Duration) -> Result<otel_reqwest::blocking::Client, String> {
    std::thread::Builder::new()
        .name("tracing-pipeline-otel-init".into())
        .spawn(move || {
            otel_reqwest::blocking::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .build()
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the thread building it panicked".to_owned())?
}

fn exporter(
    dest: &OtlpDestination,
    client: &otel_reqwest::blocking::Client,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client.clone())
        .with_endpoint(dest.url.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(timeout)
        .with_headers(dest.headers.iter().cloned().collect())
        .build()
        .map_err(|e| e.to_string())
}

/// `service.name` from `OTEL_SERVICE_NAME`, else from
/// `OTEL_RESOURCE_ATTRIBUTES`, else the program's file name.
fn resource(config: &OtelConfig) -> Resource {
    let attrs = config
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    let service = config
        .service_name
        .clone()
        .or_else(|| {
            config
                .resource_attributes
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "tracing-pipeline".to_owned());
    Resource::builder_empty()
        .with_attributes(attrs)
        .with_service_name(service)
        .build()
}

/// Flushes the export when an outermost pipeline span closes: for programs
/// that call [`crate::init`] and keep no guard. Added after the
/// OpenTelemetry layer, so the pipeline's own span is already queued.
#[derive(Debug)]
pub(crate) struct FlushAtPipelineEnd(pub(crate) Arc<Exporting>);

impl<S> Layer<S> for FlushAtPipelineEnd
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if span.parent().is_none() && SpanKind::of(span.metadata()) == SpanKind::Pipeline {
            drop(span);
            self.0.flush();
        }
    }
}

/// Targets of the exporter's HTTP stack.
const EXPORT_STACK: [&str; 9] = [
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "rustls",
    "tokio",
    "mio",
    "want",
    "opentelemetry",
];

fn export_stack(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    EXPORT_STACK.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

thread_local! {
    static ON_EXPORT_THREAD: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether this thread is one of the export's (the SDK's batch thread or
/// the blocking client's runtime); decided once per thread.
fn on_export_thread() -> bool {
    ON_EXPORT_THREAD
        .try_with(|c| match c.get() {
            Some(b) => b,
            None => {
                let b = matches!(
                    std::thread::current().name(),
                    Some("OpenTelemetry.Traces.BatchProcessor" | "reqwest-internal-sync-runtime")
                );
                c.set(Some(b));
                b
            }
        })
        .unwrap_or(false)
}

/// A global filter that hides what the export's HTTP stack traces on the
/// export's own threads; everything else passes untouched.
#[derive(Debug)]
pub(crate) struct QuietExportThreads;

impl<S: Subscriber> Layer<S> for QuietExportThreads {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // `log` records carry their real target only in `enabled`.
        if export_stack(meta) || meta.target() == "log" {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: LayerContext<'_, S>) -> bool {
        !(export_stack(meta) && on_export_thread())
    }
}
