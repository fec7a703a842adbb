//! [`PipelineLayer`]: span lifecycles in, one line per event out.
//!
//! How it fits together:
//!
//! - `on_new_span` decides what the span is ([`state::SpanKind`]: pipeline,
//!   stage, plain) from its declared fields, and stores a [`state::SpanState`]
//!   in its extensions, with the job id and the owning span inherited from
//!   its parent so that nothing later has to walk the tree.
//! - `on_enter` writes `pipeline_start` / `layer_start` the first time only;
//!   `on_exit` notices a panic unwinding out of a stage.
//! - `on_record` keeps late fields; `on_event` attributes ERROR events to
//!   their stage (or pipeline) and writes `log` lines that pass the filter.
//! - `on_close` writes the terminal event and updates the pipeline's counts.
//!
//! Lines are built in a thread-local buffer ([`line`]) and handed to the
//! writer with one `write_all`. Everything here is infallible from the
//! instrumented program's point of view.

mod diag;
mod fields;
mod line;
pub(crate) mod panic;
mod state;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Write as _};
use std::time::{Instant, SystemTime};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::subscriber::Interest;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::Format;
use crate::event::{EventKind, Status};
use fields::{EventFields, SpanFields};
use line::{Lifecycle, LogLine};

#[cfg(feature = "runner")]
pub(crate) use line::timestamp;
use state::{SpanKind, SpanState};

/// A [`tracing_subscriber::Layer`] that turns pipeline and stage spans into
/// JSON lines (SPEC section 3): `pipeline_start`, `layer_start`,
/// `layer_complete`, `layer_error`, `layer_skip`, `pipeline_complete`, and
/// `log` lines for ordinary events.
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
/// Lifecycle events are written for spans at every level and are not subject
/// to the log filter ([`with_log_filter`](Self::with_log_filter)), which
/// governs `log` lines only. The log filter also acts as a global filter for
/// events below ERROR (like an `EnvFilter` added as a layer): it lets the
/// subscriber skip filtered-out events at their call site.
///
/// Do not put a level filter in front of the layer (`.with_filter(...)`):
/// it would hide `debug_span!` stages from it. Filter `log` lines with
/// [`with_log_filter`](Self::with_log_filter) instead.
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
    /// Sends lines to another [`MakeWriter`]: a file, a buffer, a pipe. Each
    /// line is handed to one writer with a single `write_all`.
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
    #[must_use]
    pub fn with_log_filter(mut self, filter: EnvFilter) -> Self {
        // `EnvFilter` shows its directives as they were parsed; span-based
        // ones, and only those, carry a `[...]` part.
        self.filter_follows_spans = filter.to_string().contains('[');
        self.log_filter = Some(filter);
        self
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
}

/// Reused buffers: after warm-up a line costs no allocation.
#[derive(Default)]
struct Scratch {
    line: Vec<u8>,
    message: Vec<u8>,
    metadata: Vec<u8>,
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
    fn write(&self, meta: &Metadata<'_>, line: &[u8]) {
        let mut writer = self.make_writer.make_writer_for(meta);
        if let Err(e) = writer.write_all(line) {
            diag::write_failed(&e);
        }
    }

    fn emit_lifecycle(&self, scratch: &mut Scratch, meta: &Metadata<'_>, e: &Lifecycle<'_>) {
        let buf = &mut scratch.line;
        buf.clear();
        let now = SystemTime::now();
        match self.format {
            Format::Json => line::lifecycle_json(buf, now, e),
            Format::Human => line::lifecycle_human(buf, now, self.ansi, e),
        }
        self.write(meta, buf);
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
}

fn start_event(kind: SpanKind) -> EventKind {
    if kind == SpanKind::Pipeline {
        EventKind::PipelineStart
    } else {
        EventKind::LayerStart
    }
}

impl<S, W> Layer<S> for PipelineLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // Spans of every level are needed for their lifecycle, ERROR events
        // for error attribution; the filter decides about the rest.
        let Some(f) = &self.log_filter else {
            return Interest::always();
        };
        // Asked for spans too: that is how `EnvFilter` learns the span
        // callsites its span-based directives (`[stage]=debug`) match.
        let interest = Filter::<S>::callsite_enabled(f, meta);
        if meta.is_span() || *meta.level() == tracing::Level::ERROR {
            Interest::always()
        } else {
            interest
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        if meta.is_span() || *meta.level() == tracing::Level::ERROR {
            return true;
        }
        self.log_enabled(meta, &ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(f) = self.span_filter() {
            Filter::<S>::on_new_span(f, attrs, id, ctx.clone());
        }
        if busy() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let kind = SpanKind::of(attrs.metadata());
        // What the parent knows: the job id, and which span owns errors.
        let (job_id, owner, pipeline) = match span.parent() {
            Some(parent) => {
                let ext = parent.extensions();
                match ext.get::<SpanState>() {
                    Some(p) => {
                        let owner = match p.kind {
                            SpanKind::Plain => p.owner.clone(),
                            _ => Some(parent.id()),
                        };
                        let pipeline = match p.kind {
                            SpanKind::Pipeline => Some(parent.id()),
                            SpanKind::Stage => p.owner.clone(),
                            SpanKind::Plain => None,
                        };
                        (p.job_id.clone(), owner, pipeline)
                    }
                    None => (None, None, None),
                }
            }
            None => (None, None, None),
        };
        let state = match kind {
            SpanKind::Plain => SpanState {
                kind,
                job_id,
                owner,
                tracked: None,
            },
            _ => {
                let mut fields = SpanFields::default();
                attrs.record(&mut fields);
                // A stage's owner is its pipeline. Under a plain span, find
                // the pipeline through the plain span's owner.
                let pipeline = match pipeline {
                    Some(p) => Some(p),
                    None => owner.and_then(|o| {
                        let s = ctx.span(&o)?;
                        let ext = s.extensions();
                        let st = ext.get::<SpanState>()?;
                        match st.kind {
                            SpanKind::Pipeline => Some(o.clone()),
                            _ => st.owner.clone(),
                        }
                    }),
                };
                SpanState::tracked(kind, attrs.metadata().name(), fields, job_id, pipeline)
            }
        };
        span.extensions_mut().insert(state);
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
        let mut fields = SpanFields::default();
        values.record(&mut fields);
        let mut ext = span.extensions_mut();
        if let Some(state) = ext.get_mut::<SpanState>() {
            state.record(fields);
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
        {
            // Fast path, taken by every poll of an async stage after the
            // first: a read lock and a check.
            let ext = span.extensions();
            match ext.get::<SpanState>() {
                Some(SpanState {
                    tracked: Some(t), ..
                }) if t.started.is_none() => {}
                _ => return,
            }
        }
        guarded(|scratch| {
            let mut ext = span.extensions_mut();
            let Some(state) = ext.get_mut::<SpanState>() else {
                return;
            };
            let kind = state.kind;
            let job_id = state.job_id.clone();
            let Some(t) = state.tracked.as_mut() else {
                return;
            };
            if t.started.is_some() {
                return; // another thread got here first
            }
            t.started = Some(Instant::now());
            let stage = kind == SpanKind::Stage;
            // Written while the lock is held, so that no line about this
            // span from another thread can come before its start.
            self.emit_lifecycle(
                scratch,
                span.metadata(),
                &Lifecycle {
                    kind: start_event(kind),
                    layer: if stage { t.layer } else { None },
                    layer_name: stage.then_some(&*t.name),
                    job_id: job_id.as_deref(),
                    status: None,
                    duration_ms: None,
                    error: None,
                    metadata: if stage { &[] } else { &t.metadata },
                    counts: None,
                },
            );
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
            return;
        }
        // A panic is unwinding out of this span: if it is a stage or a
        // pipeline, the panic is its error (SPEC 4.3).
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(SpanState {
            tracked: Some(t), ..
        }) = ext.get_mut::<SpanState>()
        {
            t.error = Some(panic::message());
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let is_error = *meta.level() == tracing::Level::ERROR;
        // Non-ERROR events reached us through `enabled`, which applied the
        // filter already; ERROR events always come, for attribution.
        let log = !is_error || self.log_enabled(meta, &ctx);
        guarded(|scratch| {
            let Scratch {
                line: buf,
                message,
                metadata,
            } = scratch;
            message.clear();
            metadata.clear();
            let mut visitor = EventFields {
                format: self.format,
                message,
                metadata,
                want_error: is_error,
                raw_message: None,
                raw_error: None,
            };
            event.record(&mut visitor);
            let EventFields {
                raw_message,
                raw_error,
                ..
            } = visitor;

            // `#[instrument(err)]` events have an `error` field and no
            // message: the error text is the message then.
            if message.is_empty() {
                if let Some(text) = raw_error.as_deref() {
                    match self.format {
                        Format::Json => fields::write_json_str(message, text),
                        Format::Human => message.extend_from_slice(text.as_bytes()),
                    }
                }
            }
            // The span that owns this event: the innermost stage or
            // pipeline around it. It carries the job id too.
            let owner = ctx.event_span(event).and_then(|span| {
                let plain_owner = {
                    let ext = span.extensions();
                    match ext.get::<SpanState>()? {
                        SpanState {
                            kind: SpanKind::Plain,
                            owner,
                            ..
                        } => Some(owner.clone()?),
                        _ => None,
                    }
                };
                match plain_owner {
                    Some(o) => ctx.span(&o),
                    None => Some(span),
                }
            });
            if is_error {
                if let Some(span) = &owner {
                    if let Some(SpanState {
                        tracked: Some(t), ..
                    }) = span.extensions_mut().get_mut::<SpanState>()
                    {
                        t.error = Some(
                            raw_error
                                .or(raw_message)
                                .unwrap_or_else(|| meta.name().to_owned()),
                        );
                    }
                }
            }
            if !log {
                return;
            }
            let ext = owner.as_ref().map(|s| s.extensions());
            let state = ext.as_ref().and_then(|e| e.get::<SpanState>());
            let stage = match state {
                Some(SpanState {
                    kind: SpanKind::Stage,
                    tracked: Some(t),
                    ..
                }) => Some(t),
                _ => None,
            };
            let e = LogLine {
                level: meta.level(),
                target: meta.target(),
                message,
                job_id: state.and_then(|s| s.job_id.as_deref()),
                layer: stage.and_then(|t| t.layer),
                layer_name: stage.map(|t| &*t.name),
                metadata,
            };
            buf.clear();
            let now = SystemTime::now();
            match self.format {
                Format::Json => line::log_json(buf, now, &e),
                Format::Human => line::log_human(buf, now, self.ansi, &e),
            }
            drop(ext);
            self.write(meta, buf);
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
        // Taking the state out frees it with the span's last line.
        let Some(state) = span.extensions_mut().remove::<SpanState>() else {
            return;
        };
        let SpanState {
            kind,
            job_id,
            owner,
            tracked: Some(mut t),
        } = state
        else {
            return;
        };
        if std::thread::panicking() {
            t.error = Some(panic::message());
        }
        guarded(|scratch| match kind {
            SpanKind::Stage => {
                if t.started.is_none() && !t.skipped {
                    return; // never entered, never skipped: nothing happened
                }
                // A skip is a decision, not a failure (SPEC 4.4): it wins
                // over an error, and a skipped stage that never ran has no
                // duration to report with an error.
                let (event, status) = if t.skipped {
                    (EventKind::LayerSkip, Status::Skipped)
                } else if t.error.is_some() {
                    (EventKind::LayerError, Status::Error)
                } else {
                    (EventKind::LayerComplete, Status::Success)
                };
                self.emit_lifecycle(
                    scratch,
                    span.metadata(),
                    &Lifecycle {
                        kind: event,
                        layer: t.layer,
                        layer_name: Some(&t.name),
                        job_id: job_id.as_deref(),
                        status: Some(status),
                        duration_ms: t.started.map(millis),
                        error: t.error.as_deref().filter(|_| status == Status::Error),
                        metadata: &t.metadata,
                        counts: None,
                    },
                );
                let pipeline = owner.as_ref().and_then(|p| ctx.span(p));
                if let Some(pipeline) = pipeline {
                    if let Some(SpanState {
                        tracked: Some(p), ..
                    }) = pipeline.extensions_mut().get_mut::<SpanState>()
                    {
                        match status {
                            Status::Error => p.failed += 1,
                            Status::Skipped => p.skipped_layers += 1,
                            _ => p.completed += 1,
                        }
                    }
                }
            }
            SpanKind::Pipeline => {
                let Some(started) = t.started else { return };
                let status = if t.error.is_some() {
                    Status::Error
                } else if t.failed > 0 {
                    Status::Partial
                } else {
                    Status::Success
                };
                self.emit_lifecycle(
                    scratch,
                    span.metadata(),
                    &Lifecycle {
                        kind: EventKind::PipelineComplete,
                        layer: None,
                        layer_name: None,
                        job_id: job_id.as_deref(),
                        status: Some(status),
                        duration_ms: Some(millis(started)),
                        error: t.error.as_deref(),
                        metadata: &t.metadata,
                        counts: Some([t.completed, t.failed, t.skipped_layers]),
                    },
                );
            }
            SpanKind::Plain => {}
        });
    }
}
