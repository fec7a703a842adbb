//! Export that never blocks and never grows: a bounded queue in front of the
//! SDK's batch processor, a count of every span that did not make it, and
//! one stderr line per destination on the first failure.
//!
//! The SDK's `BatchSpanProcessor` already hands spans to its own thread
//! without waiting (`on_end` is a `try_send`), and its queue is bounded,
//! but the spans it drops are only counted privately. So [`Bounded`] keeps
//! its own count of spans waiting (incremented when a span ends, decremented
//! when the exporter takes a batch) and drops, counting, beyond the bound;
//! [`Counted`] wraps the OTLP exporter to count spans whose export failed
//! (the endpoint is down, refuses, answers 500 or times out).

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

/// What happened to one destination's spans.
#[derive(Debug)]
pub(crate) struct Stats {
    /// `otlp` or `langsmith`, and the URL: for messages.
    pub(crate) name: &'static str,
    pub(crate) url: String,
    /// Spans ended but not yet taken by the exporter.
    waiting: AtomicUsize,
    /// Spans taken into the queue.
    accepted: AtomicU64,
    /// Dropped because the queue was full.
    pub(crate) dropped_full: AtomicU64,
    /// In a batch whose export failed.
    pub(crate) failed: AtomicU64,
    /// Exported.
    pub(crate) exported: AtomicU64,
    first_failure_reported: AtomicBool,
    /// The drop count last reported in a summary line.
    reported_total: AtomicU64,
}

impl Stats {
    pub(crate) fn new(name: &'static str, url: String) -> Arc<Stats> {
        Arc::new(Stats {
            name,
            url,
            waiting: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            exported: AtomicU64::new(0),
            first_failure_reported: AtomicBool::new(false),
            reported_total: AtomicU64::new(0),
        })
    }

    /// Spans that did not reach the destination: dropped, failed, and at
    /// the end (`unconfirmed`) also those still queued or in an export
    /// that did not finish in time.
    fn lost(&self, unconfirmed: bool) -> (u64, u64) {
        let dropped = self.dropped_full.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let pending = match unconfirmed {
            true => self
                .accepted
                .load(Ordering::Relaxed)
                .saturating_sub(self.exported.load(Ordering::Relaxed) + failed),
            false => 0,
        };
        (dropped + failed + pending, pending)
    }

    fn first_failure(&self, why: &str) {
        if !self.first_failure_reported.swap(true, Ordering::Relaxed) {
            let _ = writeln!(
                std::io::stderr(),
                "tracing-pipeline: OpenTelemetry export to {} ({}) failed: {why}; its spans are dropped while it fails (a count follows when the program ends); the JSON lines are not affected",
                self.url, self.name
            );
        }
    }

    /// One stderr line with the spans lost since the last such line, if
    /// any; `at_end`: the export is over, so what is still unconfirmed is
    /// lost too.
    pub(crate) fn report_lost(&self, at_end: bool) {
        let (lost, pending) = self.lost(at_end);
        let before = self.reported_total.fetch_max(lost, Ordering::Relaxed);
        if lost > before {
            let _ = writeln!(
                std::io::stderr(),
                "tracing-pipeline: {} span(s) were not exported to {} ({}): {} dropped with the queue full, {} in failed exports, {} unconfirmed when the program ended",
                lost - before,
                self.url,
                self.name,
                self.dropped_full.load(Ordering::Relaxed),
                self.failed.load(Ordering::Relaxed),
                pending,
            );
        }
    }
}

/// The batch processor behind a bounded count of waiting spans.
#[derive(Debug)]
pub(crate) struct Bounded {
    pub(crate) inner: BatchSpanProcessor,
    pub(crate) bound: usize,
    pub(crate) stats: Arc<Stats>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.stats.waiting.fetch_add(1, Ordering::AcqRel) >= self.bound {
            self.stats.waiting.fetch_sub(1, Ordering::AcqRel);
            if self.stats.dropped_full.fetch_add(1, Ordering::Relaxed) == 0 {
                self.stats.first_failure("the export queue is full");
            }
            return;
        }
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter whose failures are counted.
pub(crate) struct Counted<E> {
    pub(crate) inner: E,
    pub(crate) stats: Arc<Stats>,
}

impl<E> fmt::Debug for Counted<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counted")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let _ = self
            .stats
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_sub(n))
            });
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.stats.exported.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.failed.fetch_add(n as u64, Ordering::Relaxed);
                self.stats.first_failure(&e.to_string());
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
