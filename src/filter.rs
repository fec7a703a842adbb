//! [`keep_stages`]: a filter combinator that never hides a pipeline or a
//! stage span.
//!
//! A filter added to a subscriber as a layer (`.with(EnvFilter::...)`) is
//! global: what it disables, no layer sees. With `RUST_LOG` unset,
//! `EnvFilter::from_default_env()` enables ERROR only, so every `info_span!`
//! stage vanishes; with `RUST_LOG=info`, a `debug_span!` stage vanishes and
//! its errors are charged to the pipeline. `keep_stages(filter)` passes
//! every span whose call site declares a `layer` or a `job_id` field,
//! whatever `filter` says, and leaves every other decision to `filter`.
//! Field names are part of a call site's metadata, so the decision is made
//! once per call site, not per span.
//!
//! It works as a global filter (a [`Layer`]) and as a per-layer filter (a
//! [`Filter`]), wrapping anything that is one: `EnvFilter`, `LevelFilter`,
//! `Targets`, `FilterFn`, a `reload::Layer` of one of those.

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::subscriber::Interest;
use tracing_core::Dispatch;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};

use crate::layer::SpanKind;

/// Wraps `filter` so that pipeline and stage spans always pass it.
///
/// The one change an existing `fmt` + `EnvFilter` setup needs:
///
/// ```
/// use tracing_subscriber::{fmt, prelude::*, EnvFilter};
///
/// let subscriber = tracing_subscriber::registry()
///     .with(tracing_pipeline::keep_stages(EnvFilter::from_default_env()))
///     .with(fmt::layer())
///     .with(tracing_pipeline::PipelineLayer::new());
/// # let _ = subscriber;
/// ```
///
/// Only spans are kept: events stay subject to `filter` for every layer.
/// The `fmt` layer sees the kept spans too, which shows only where it prints
/// span context (an event's parents, or `with_span_events`).
#[must_use]
pub fn keep_stages<F>(filter: F) -> KeepStages<F> {
    KeepStages { inner: filter }
}

/// A filter that passes every pipeline and stage span and asks the wrapped
/// filter about everything else. Made by [`keep_stages`].
#[derive(Debug, Clone)]
pub struct KeepStages<F> {
    inner: F,
}

impl<F> KeepStages<F> {
    /// The wrapped filter.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// The wrapped filter, to change it (a `reload` handle's `modify`).
    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.inner
    }

    fn kept(&self, meta: &Metadata<'_>) -> bool {
        meta.is_span() && SpanKind::of(meta) != SpanKind::Plain
    }
}

impl<S, F> Layer<S> for KeepStages<F>
where
    S: Subscriber,
    F: Layer<S>,
{
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        self.inner.on_register_dispatch(dispatch);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // The inner filter always hears of the call site (an `EnvFilter`
        // learns its span call sites this way).
        let inner = self.inner.register_callsite(meta);
        if self.kept(meta) {
            Interest::always()
        } else {
            inner
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.kept(meta) || self.inner.enabled(meta, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // Pipeline and stage spans may be at any level.
        Some(LevelFilter::TRACE)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

impl<S, F> Filter<S> for KeepStages<F>
where
    F: Filter<S>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.kept(meta) || self.inner.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let inner = self.inner.callsite_enabled(meta);
        if self.kept(meta) {
            Interest::always()
        } else {
            inner
        }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.inner.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(id, values, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }
}
