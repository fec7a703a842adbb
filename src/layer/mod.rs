//! [`PipelineLayer`]: span lifecycles in, one line per event out.
//!
//! How it fits together:
//!
//! - `on_new_span` decides what the span is (pipeline, stage, plain) from
//!   its declared fields, and stores a [`state::SpanState`] in its
//!   extensions, with the job id and the enclosing stage and pipeline
//!   inherited from its parent, so that nothing later has to walk the tree.
//! - `on_enter` writes `pipeline_start` / `layer_start` the first time only;
//!   `on_exit` notices a panic unwinding out of a stage.
//! - `on_record` keeps late fields; `on_event` charges ERROR events to
//!   their stage (or pipeline) and writes `log` lines that pass the filter.
//! - `on_close` writes the terminal event and updates the pipeline's counts.
//!
//! The decisions (first enter or not, which terminal event, what a late
//! field may change) are methods of the state, tested in `state.rs`; each
//! callback here looks up, asks and emits. Lines are built in a thread-local
//! buffer ([`line`]) and handed to the writer in one piece ([`output`]).
//! Everything here is infallible from the instrumented program's point of
//! view.

mod diag;
mod fields;
mod ids;
mod line;
mod output;
pub(crate) mod panic;
mod state;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::subscriber::Interest;
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::config::Format;
use crate::event::EventKind;
use fields::{EventFields, SpanFields};
use ids::{IdSource, SpanIds};
pub(crate) use line::Lifecycle;
use line::LogLine;
use output::Output;

#[cfg(feature = "runner")]
pub(crate) use line::timestamp;
use state::{stage_end, FirstEnter, LateIdentity, Pipeline, Scope, SpanState, Stage};
pub(crate) use state::{SpanKind, States};
#[cfg(feature = "otel")]
pub(crate) use {fields::FieldValue, state::LayerNumber};

/// A [`tracing_subscriber::Layer`] that turns pipeline and stage spans into
/// JSON lines: `pipeline_start`, `layer_start`, `layer_complete`,
/// `layer_error`, `layer_skip`, `pipeline_complete`, and `log` lines for
/// ordinary events. The [crate docs](crate) give the schema and the rules.
///
/// ```
/// use tracing_subscriber::prelude::*;
///
/// let layer = tracing_pipeline::PipelineLayer::new().with_writer(std::io::stderr);
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     let pipeline = tracing::info_span!("pipeline", job_id = "job-1");
///     let _p = pipeline.enter();
///     let stage = tracing::info_span!("opportunity_mapper", layer = 4, fit_score = tracing::field::Empty);
///     let _s = stage.enter();
///     stage.record("fit_score", 85);
/// });
/// ```
///
/// Lifecycle events are written for spans at every level and are not
/// subject to the log filter ([`with_log_filter`](Self::with_log_filter)),
/// which governs `log` lines only, and only this layer's: it never hides an
/// event from the other layers of the subscriber.
///
/// Filters elsewhere in the subscriber can hide spans from it, though: a
/// global filter (an `EnvFilter` added with `.with(filter)`) that disables a
/// `debug_span!` stage disables it for every layer. Wrap such a filter with
/// [`keep_stages`](crate::keep_stages), and do not put a level filter in
/// front of this layer (`.with_filter(LevelFilter::INFO)`); the crate docs'
/// section "Adding it to an existing subscriber" shows the compositions that
/// work. Several `PipelineLayer`s can sit in one subscriber (one per
/// destination); each writes every line.
///
/// Pair it with [`crate::install_panic_hook`] (as [`crate::init`] does) to
/// get panic messages rather than `panicked` in `layer_error` lines.
pub struct PipelineLayer<W = fn() -> io::Stdout> {
    make_writer: W,
    format: Format,
    ansi: bool,
    log_filter: Option<EnvFilter>,
    /// Whether the filter has span-based directives (`target[span]=level`),
    /// the only ones that need to follow spans as they open and close.
    filter_follows_spans: bool,
    /// Set when this layer is the only one of its subscriber (the one
    /// [`crate::Config::subscriber`] and `init` build): its log filter may
    /// then also filter globally, so that an event `LOG_LEVEL` hides costs
    /// next to nothing. Never set for a layer added to other layers: it would
    /// hide their events.
    sole: bool,
    /// This layer's key in a span's [`States`]: two layers in one subscriber
    /// keep apart.
    key: u32,
    output: Output,
    /// The most verbose level the filters inside the subscriber this layer
    /// was added to let through (`LEVEL_UNKNOWN`: no hint).
    max_level: AtomicU8,
    /// Where `trace_id`/`span_id` come from (feature `otel`; empty without).
    ids: IdSource,
}

const LEVEL_UNKNOWN: u8 = u8::MAX;

fn level_code(level: LevelFilter) -> u8 {
    match level.into_level() {
        None => 0,
        Some(tracing::Level::ERROR) => 1,
        Some(tracing::Level::WARN) => 2,
        Some(tracing::Level::INFO) => 3,
        Some(tracing::Level::DEBUG) => 4,
        Some(_) => 5,
    }
}

fn next_key() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl PipelineLayer {
    /// A layer writing JSON lines to stdout, with no log filter (every event
    /// it sees becomes a `log` line).
    #[must_use]
    pub fn new() -> Self {
        PipelineLayer {
            make_writer: io::stdout,
            format: Format::Json,
            ansi: false,
            log_filter: None,
            filter_follows_spans: false,
            sole: false,
            key: next_key(),
            output: Output::default(),
            max_level: AtomicU8::new(LEVEL_UNKNOWN),
            ids: IdSource::new(),
        }
    }
}

impl Default for PipelineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> fmt::Debug for PipelineLayer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineLayer")
            .field("make_writer", &std::any::type_name::<W>())
            .field("format", &self.format)
            .field("ansi", &self.ansi)
            .field("log_filter", &self.log_filter)
            .finish()
    }
}

impl<W> PipelineLayer<W> {
    /// Sends lines to another [`MakeWriter`]: a file, a buffer, a pipe.
    ///
    /// Each line is handed to one writer in one piece, and the layer writes
    /// one line at a time (it holds its own lock while writing), so lines
    /// from different threads never interleave, whatever the writer, as
    /// long as nothing else writes to the same destination.
    ///
    /// The writer is chosen with [`MakeWriter::make_writer_for`]: `log`
    /// lines with their event's metadata; lifecycle lines with metadata of
    /// target `tracing_pipeline` at level INFO (ERROR for `layer_error` and
    /// a failed `pipeline_complete`), whatever the span's own level. So a
    /// level-routing writer (`MakeWriterExt::with_max_level(Level::INFO)`)
    /// drops debug `log` lines but never a `debug_span!` stage's lifecycle.
    #[must_use]
    pub fn with_writer<W2>(self, make_writer: W2) -> PipelineLayer<W2>
    where
        W2: for<'w> MakeWriter<'w> + 'static,
    {
        PipelineLayer {
            make_writer,
            format: self.format,
            ansi: self.ansi,
            log_filter: self.log_filter,
            filter_follows_spans: self.filter_follows_spans,
            sole: self.sole,
            key: self.key,
            output: self.output,
            max_level: self.max_level,
            ids: self.ids,
        }
    }

    /// JSON lines (the default) or the same events rendered for a person.
    #[must_use]
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Colours in the human format (never in JSON). Off by default;
    /// [`crate::init`] turns it on when stdout is a terminal.
    #[must_use]
    pub fn with_ansi(mut self, ansi: bool) -> Self {
        self.ansi = ansi;
        self
    }

    /// Which ordinary events become `log` lines (`LOG_LEVEL`). ERROR events
    /// still mark their stage as failed when the filter hides their line.
    /// The filter is this layer's alone: other layers still see every event.
    #[must_use]
    pub fn with_log_filter(mut self, filter: EnvFilter) -> Self {
        // `EnvFilter` shows its directives as they were parsed; span-based
        // ones, and only those, carry a `[...]` part.
        self.filter_follows_spans = filter.to_string().contains('[');
        self.log_filter = Some(filter);
        self
    }

    /// Marks the layer as the only layer of its subscriber.
    pub(crate) fn sole(mut self) -> Self {
        self.sole = true;
        self
    }

    /// Whether an event is one this layer needs whatever the log filter
    /// says: spans (lifecycle) and ERROR events (they fail their stage).
    fn always_wanted(meta: &Metadata<'_>) -> bool {
        meta.is_span() || *meta.level() == tracing::Level::ERROR
    }

    /// The log filter, when it needs to see span lifecycles.
    fn span_filter(&self) -> Option<&EnvFilter> {
        self.log_filter
            .as_ref()
            .filter(|_| self.filter_follows_spans)
    }
}

thread_local! {
    /// Set while the layer is working on this thread: an event fired from
    /// inside the layer (by a writer, say) is dropped instead of recursing.
    static BUSY: Cell<bool> = const { Cell::new(false) };
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// `on_record`'s metadata buffer, kept between calls.
    static RECORDED: Cell<Vec<(&'static str, fields::FieldValue)>> = const { Cell::new(Vec::new()) };
}

/// Reused buffers: after warm-up a line costs no allocation.
#[derive(Default)]
struct Scratch {
    line: Vec<u8>,
    message: Vec<u8>,
    metadata: Vec<u8>,
    entries: Vec<(&'static str, usize)>,
}

/// Whether the layer is already at work on this thread: whatever the writer
/// does with `tracing` (create, enter or close spans, fire events) is then
/// ignored, so it can neither recurse nor wait on a lock the layer holds.
fn busy() -> bool {
    BUSY.try_with(Cell::get).unwrap_or(false)
}

/// Runs `f` unless the layer is already running on this thread.
fn guarded(f: impl FnOnce(&mut Scratch)) {
    // During thread teardown the thread-locals may be gone: work unguarded.
    let entered = BUSY.try_with(|b| !b.replace(true)).unwrap_or(true);
    if !entered {
        return;
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = BUSY.try_with(|b| b.set(false));
        }
    }
    let _reset = Reset;
    let mut f = Some(f);
    let _ = SCRATCH.try_with(|s| {
        if let (Ok(mut s), Some(f)) = (s.try_borrow_mut(), f.take()) {
            f(&mut s);
        }
    });
    if let Some(f) = f {
        f(&mut Scratch::default());
    }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl<W> PipelineLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn emit_lifecycle(&self, buf: &mut Vec<u8>, e: &Lifecycle<'_>) {
        buf.clear();
        let now = SystemTime::now();
        match self.format {
            Format::Json => line::lifecycle_json(buf, now, e),
            Format::Human => line::lifecycle_human(buf, now, self.ansi, e),
        }
        let failed = e.status == Some(crate::event::Status::Error);
        self.output.write(buf, || {
            self.make_writer
                .make_writer_for(output::lifecycle_metadata(failed))
        });
    }

    /// A terminal line; with the `otel` feature, the same outcome set on the
    /// span's OpenTelemetry span while it is still open.
    fn end_line(&self, buf: &mut Vec<u8>, id: &Id, e: &Lifecycle<'_>) {
        self.emit_lifecycle(buf, e);
        #[cfg(feature = "otel")]
        if e.ids.is_some() {
            if let Some(cx) = self.ids.context(id) {
                crate::otel::mapping::end(&cx, e);
            }
        }
        #[cfg(not(feature = "otel"))]
        let _ = id;
    }

    fn log_enabled<S>(&self, meta: &Metadata<'_>, ctx: &Context<'_, S>) -> bool
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        match &self.log_filter {
            None => true,
            Some(f) => Filter::<S>::enabled(f, meta, ctx),
        }
    }

    /// The OpenTelemetry ids of `span`: cached in its state after the first
    /// look-up. Must be called with no lock on the span's extensions held.
    fn span_ids<S>(&self, span: &SpanRef<'_, S>) -> Option<SpanIds>
    where
        S: for<'a> LookupSpan<'a>,
    {
        if !cfg!(feature = "otel") {
            return None;
        }
        match with_state(span, self.key, |s| s.ids().get()) {
            Some(Some(cached)) => cached,
            Some(None) => {
                let found = self.ids.lookup(&span.id());
                with_state(span, self.key, |s| s.ids().set(found));
                found
            }
            None => None,
        }
    }

    /// Looks up the ids of a stage that may close without ever being
    /// entered (it is skipped): when the OpenTelemetry layer comes first in
    /// the subscriber, it forgets the span before this layer hears of the
    /// close. Only an answer is cached; none may mean "not yet".
    fn prefetch_ids<S>(&self, span: &SpanRef<'_, S>)
    where
        S: for<'a> LookupSpan<'a>,
    {
        if !cfg!(feature = "otel") {
            return;
        }
        if let Some(found) = self.ids.lookup(&span.id()) {
            with_state(span, self.key, |s| s.ids().set(Some(found)));
        }
    }

    /// Warns once when the subscriber's filters cannot let this pipeline or
    /// stage span through.
    fn check_hidden(&self, meta: &Metadata<'_>) {
        let most_verbose = self.max_level.load(Ordering::Relaxed);
        if most_verbose != LEVEL_UNKNOWN
            && level_code(LevelFilter::from_level(*meta.level())) > most_verbose
        {
            diag::hidden_span(meta.name(), *meta.level());
        }
    }
}

impl<W> PipelineLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// The job id of the pipeline `id`, for a line inside it that has none
    /// yet; writes the pipeline's pending `pipeline_start` first.
    fn pipeline_job_id<S>(
        &self,
        buf: &mut Vec<u8>,
        ctx: &Context<'_, S>,
        id: &Id,
    ) -> Option<Arc<str>>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let span = ctx.span(id)?;
        with_state_mut(&span, self.key, |s| match s {
            SpanState::Pipeline(p) => {
                if p.announce() {
                    self.emit_lifecycle(buf, &pipeline_start(p));
                }
                p.scope.job_id.clone()
            }
            _ => None,
        })
        .flatten()
    }
}

fn pipeline_start(p: &Pipeline) -> Lifecycle<'_> {
    Lifecycle {
        kind: EventKind::PipelineStart,
        layer: None,
        layer_name: None,
        job_id: p.scope.job_id.as_deref(),
        status: None,
        duration_ms: None,
        error: None,
        metadata: &p.metadata,
        counts: None,
        ids: p.ids.get().flatten(),
    }
}

/// This layer's state of `span`.
fn with_state<S, R>(span: &SpanRef<'_, S>, key: u32, f: impl FnOnce(&SpanState) -> R) -> Option<R>
where
    S: for<'a> LookupSpan<'a>,
{
    let ext = span.extensions();
    ext.get::<States>().and_then(|all| all.get(key)).map(f)
}

fn with_state_mut<S, R>(
    span: &SpanRef<'_, S>,
    key: u32,
    f: impl FnOnce(&mut SpanState) -> R,
) -> Option<R>
where
    S: for<'a> LookupSpan<'a>,
{
    let mut ext = span.extensions_mut();
    ext.get_mut::<States>()
        .and_then(|all| all.get_mut(key))
        .map(f)
}

fn report_late(late: LateIdentity, span: &str) {
    let field = match late {
        LateIdentity::None => return,
        LateIdentity::Layer => "layer",
        LateIdentity::LayerName => "layer_name",
        LateIdentity::JobId => "job_id",
    };
    diag::late_identity(field, span);
}

impl<S, W> Layer<S> for PipelineLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_layer(&mut self, subscriber: &mut S) {
        // The filters added before this layer are inside `subscriber`; what
        // they let through at most is all this layer can ever see.
        if let Some(most_verbose) = subscriber.max_level_hint() {
            self.max_level
                .store(level_code(most_verbose), Ordering::Relaxed);
            if most_verbose < LevelFilter::INFO {
                diag::hidden_by_level(most_verbose);
            }
        }
    }

    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        // Kept weak: the dispatch owns this layer.
        self.ids.register(subscriber);
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // Asked for spans too: that is how `EnvFilter` learns the span
        // callsites its span-based directives (`[stage]=debug`) match. Its
        // answer is not passed on (the log filter is this layer's alone, and
        // `on_event` applies it) unless the layer is alone.
        let interest = match &self.log_filter {
            Some(f) => Filter::<S>::callsite_enabled(f, meta),
            None => Interest::always(),
        };
        if meta.is_span() && SpanKind::of(meta) != SpanKind::Plain {
            self.check_hidden(meta);
        }
        if self.sole && !Self::always_wanted(meta) {
            // Alone in its subscriber: nobody else wants what the filter
            // hides, and the call site can be skipped altogether.
            interest
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        !self.sole || Self::always_wanted(meta) || self.log_enabled(meta, &ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(f) = self.span_filter() {
            Filter::<S>::on_new_span(f, attrs, id, ctx.clone());
        }
        if busy() {
            return;
        }
        panic::forget_caught();
        let Some(span) = ctx.span(id) else { return };
        let meta = attrs.metadata();
        let kind = SpanKind::of(meta);
        let scope = span
            .parent()
            .and_then(|parent| with_state(&parent, self.key, |p| Scope::child_of(&parent.id(), p)))
            .unwrap_or_default();
        let mut fields = SpanFields::default();
        if kind != SpanKind::Plain {
            attrs.record(&mut fields);
        }
        let (state, bad_layer) = SpanState::new(kind, meta.name(), fields, scope);
        if let Some(value) = bad_layer {
            diag::bad_layer_value(&value);
        }
        let skipped = cfg!(feature = "otel") && matches!(&state, SpanState::Stage(s) if s.skipped);
        {
            let mut ext = span.extensions_mut();
            match ext.get_mut::<States>() {
                Some(all) => all.insert(self.key, state),
                None => ext.insert(States::One(self.key, state)),
            }
        }
        if skipped {
            guarded(|_| self.prefetch_ids(&span));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(f) = self.span_filter() {
            Filter::<S>::on_record(f, id, values, ctx.clone());
        }
        if busy() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        if SpanKind::of(span.metadata()) == SpanKind::Plain {
            return;
        }
        // The metadata buffer is reused: a `record` costs no allocation
        // once warm (measured: about 1,000 instructions a pipeline run).
        let mut fields = SpanFields {
            metadata: RECORDED.try_with(Cell::take).unwrap_or_default(),
            ..SpanFields::default()
        };
        values.record(&mut fields);
        let recorded = with_state_mut(&span, self.key, |s| {
            let skip_before_enter =
                cfg!(feature = "otel") && fields.skipped == Some(true) && s.awaits_first_enter();
            let (late, bad_layer, announce) = s.record(&mut fields);
            if let (true, SpanState::Pipeline(p)) = (announce, &*s) {
                // The job id came after the first enter: the start now.
                guarded(|scratch| self.emit_lifecycle(&mut scratch.line, &pipeline_start(p)));
            }
            (late, bad_layer, skip_before_enter)
        });
        fields.metadata.clear();
        let _ = RECORDED.try_with(|r| r.set(fields.metadata));
        if let Some((late, bad_layer, skip_before_enter)) = recorded {
            if skip_before_enter {
                guarded(|_| self.prefetch_ids(&span));
            }
            report_late(late, span.name());
            if let Some(value) = bad_layer {
                diag::bad_layer_value(&value);
            }
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(f) = self.span_filter() {
            Filter::<S>::on_enter(f, id, ctx.clone());
        }
        if busy() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // Fast path, taken by every poll of an async stage after the first:
        // a read lock and a check. A stage without a job id yet looks for
        // one its pipeline was given after the stage was created.
        let Some(pipeline) = with_state(&span, self.key, |s| match s {
            SpanState::Stage(st) if st.started.is_none() && st.scope.job_id.is_none() => {
                Some(st.scope.pipeline.clone())
            }
            s if s.awaits_first_enter() => Some(None),
            _ => None,
        })
        .flatten() else {
            return;
        };
        guarded(|scratch| {
            let late_job_id =
                pipeline.and_then(|p| self.pipeline_job_id(&mut scratch.line, &ctx, &p));
            // Looked up before the state is locked; cached for later lines.
            let ids = self.span_ids(&span);
            let mut ext = span.extensions_mut();
            let Some(state) = ext
                .get_mut::<States>()
                .and_then(|all| all.get_mut(self.key))
            else {
                return;
            };
            match state.enter(Instant::now()) {
                FirstEnter::Start => {}
                // Another thread got here first, or the pipeline waits for
                // its job id.
                FirstEnter::Again | FirstEnter::Pending => return,
            }
            // Written while the lock is held, so that no line about this
            // span from another thread can come before its start.
            let e = match state {
                SpanState::Plain(_) => return,
                SpanState::Stage(s) => {
                    if s.scope.job_id.is_none() {
                        s.scope.job_id = late_job_id;
                    }
                    Lifecycle {
                        kind: EventKind::LayerStart,
                        layer: s.layer,
                        layer_name: Some(&s.name),
                        job_id: s.scope.job_id.as_deref(),
                        status: None,
                        duration_ms: None,
                        error: None,
                        metadata: &[],
                        counts: None,
                        ids,
                    }
                }
                SpanState::Pipeline(p) => pipeline_start(p),
            };
            self.emit_lifecycle(&mut scratch.line, &e);
        });
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(f) = self.span_filter() {
            Filter::<S>::on_exit(f, id, ctx.clone());
        }
        if busy() {
            return;
        }
        if !std::thread::panicking() {
            panic::forget_caught();
            return;
        }
        // A panic is unwinding out of this span: if it is a stage or a
        // pipeline, the panic is its error.
        if let Some(span) = ctx.span(id) {
            with_state_mut(&span, self.key, |s| s.fail(panic::message()));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let is_error = *meta.level() == tracing::Level::ERROR;
        let log = (self.sole && !is_error) || self.log_enabled(meta, &ctx);
        if !log && !is_error {
            return;
        }
        panic::forget_caught();
        guarded(|scratch| {
            let Scratch {
                line: buf,
                message,
                metadata,
                entries,
            } = scratch;
            let mut visitor = EventFields::new(self.format, message, metadata, entries, is_error);
            event.record(&mut visitor);
            let (raw_message, raw_error) = (visitor.raw_message.take(), visitor.raw_error.take());
            drop(visitor);

            let span = ctx.event_span(event);
            let ids = match log {
                true => span.as_ref().and_then(|s| self.span_ids(s)),
                false => None,
            };
            if is_error {
                // Charged to the innermost stage or pipeline around it.
                let owner = span
                    .as_ref()
                    .and_then(|s| {
                        with_state(s, self.key, |st| match st.is_tracked() {
                            true => Some(s.id()),
                            false => st.scope().owner.clone(),
                        })
                    })
                    .flatten()
                    .and_then(|id| ctx.span(&id));
                if let Some(owner) = owner {
                    let text = raw_error
                        .or(raw_message)
                        .unwrap_or_else(|| meta.name().to_owned());
                    with_state_mut(&owner, self.key, |s| s.fail(text));
                }
            }
            if !log {
                return;
            }
            // A line inside a pipeline whose job id came late (or not yet)
            // asks the pipeline, which writes its start first. Rare: the
            // common path reads the span's state once.
            let mut late_job_id = None;
            let mut asked = false;
            loop {
                let ext = span.as_ref().map(|s| s.extensions());
                let state = ext
                    .as_ref()
                    .and_then(|e| e.get::<States>())
                    .and_then(|all| all.get(self.key));
                if !asked {
                    let pending = match state {
                        Some(SpanState::Pipeline(p)) if !p.announced => {
                            span.as_ref().map(|s| s.id())
                        }
                        Some(st) if st.scope().job_id.is_none() => st.scope().pipeline.clone(),
                        _ => None,
                    };
                    if let Some(pipeline) = pending {
                        drop(ext); // the pipeline may be this very span
                        late_job_id = self.pipeline_job_id(buf, &ctx, &pipeline);
                        asked = true;
                        continue;
                    }
                }
                // The innermost stage around the event: the span itself, or
                // the one its scope names (through plain spans and nested
                // pipelines).
                let outer_stage = match state {
                    Some(SpanState::Stage(_)) | None => None,
                    Some(other) => other.scope().stage.as_ref().and_then(|id| ctx.span(id)),
                };
                let outer_ext = outer_stage.as_ref().map(|s| s.extensions());
                let stage: Option<&Stage> = match state {
                    Some(SpanState::Stage(s)) => Some(s),
                    _ => match outer_ext
                        .as_ref()
                        .and_then(|e| e.get::<States>())
                        .and_then(|all| all.get(self.key))
                    {
                        Some(SpanState::Stage(s)) => Some(s),
                        _ => None,
                    },
                };
                let e = LogLine {
                    level: *meta.level(),
                    target: meta.target(),
                    message,
                    job_id: state
                        .and_then(|s| s.scope().job_id.as_deref())
                        .or(late_job_id.as_deref()),
                    layer: stage.and_then(|s| s.layer),
                    layer_name: stage.map(|s| &*s.name),
                    metadata,
                    ids,
                };
                buf.clear();
                let now = SystemTime::now();
                match self.format {
                    Format::Json => line::log_json(buf, now, &e),
                    Format::Human => line::log_human(buf, now, self.ansi, &e),
                }
                break;
            }
            self.output
                .write(buf, || self.make_writer.make_writer_for(meta));
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(f) = self.span_filter() {
            Filter::<S>::on_close(f, id.clone(), ctx.clone());
        }
        if busy() {
            return;
        }
        let Some(span) = ctx.span(&id) else { return };
        if cfg!(feature = "otel") && SpanKind::of(span.metadata()) != SpanKind::Plain {
            // A stage skipped before it was ever entered has not asked yet.
            let _ = self.span_ids(&span);
        }
        // Taking the state out frees it with the span's last line. One
        // layer is the common case: one removal, nothing put back.
        let state = {
            let mut ext = span.extensions_mut();
            let Some(mut all) = ext.remove::<States>() else {
                return;
            };
            if all.is_only(self.key) {
                all.into_only()
            } else {
                let (state, none_left) = all.remove(self.key);
                if !none_left {
                    ext.insert(all);
                }
                state
            }
        };
        let Some(mut state) = state else { return };
        if std::thread::panicking() {
            state.fail(panic::message());
        } else if state.cancelled() {
            state.fail(crate::stage::CANCELLED.to_owned());
        }
        guarded(|scratch| match &mut state {
            SpanState::Plain(_) => {}
            SpanState::Stage(s) => {
                if s.started.is_none() && !s.skipped {
                    return; // never entered, never skipped: nothing happened
                }
                let (kind, status) = stage_end(s.skipped, s.error.is_some());
                self.end_line(
                    &mut scratch.line,
                    &id,
                    &Lifecycle {
                        kind,
                        layer: s.layer,
                        layer_name: Some(&s.name),
                        job_id: s.scope.job_id.as_deref(),
                        status: Some(status),
                        // A skipped stage that never ran has no duration.
                        duration_ms: s.started.map(millis),
                        error: s.error.as_deref().filter(|_| kind == EventKind::LayerError),
                        metadata: &s.metadata,
                        counts: None,
                        ids: s.ids.get().flatten(),
                    },
                );
                if let Some(pipeline) = s.scope.pipeline.as_ref().and_then(|p| ctx.span(p)) {
                    with_state_mut(&pipeline, self.key, |p| {
                        if let SpanState::Pipeline(p) = p {
                            p.counts.add(status);
                        }
                    });
                }
            }
            SpanState::Pipeline(p) => {
                let Some(started) = p.started else { return };
                if p.announce() {
                    self.emit_lifecycle(&mut scratch.line, &pipeline_start(p));
                }
                self.end_line(
                    &mut scratch.line,
                    &id,
                    &Lifecycle {
                        kind: EventKind::PipelineComplete,
                        layer: None,
                        layer_name: None,
                        job_id: p.scope.job_id.as_deref(),
                        status: Some(p.status()),
                        duration_ms: Some(millis(started)),
                        error: p.error.as_deref(),
                        metadata: &p.metadata,
                        counts: Some(p.counts),
                        ids: p.ids.get().flatten(),
                    },
                );
            }
        });
    }
}
