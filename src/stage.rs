//! Telling a stage that finished from one that was abandoned.
//!
//! A stage future dropped before it completed (by `tokio::time::timeout`, a
//! `select!` branch that lost, a task that was aborted, or one never polled)
//! still closes its span, and to the layer that looks like an ordinary end:
//! `layer_complete`, `success`. [`StageExt::stage`] instruments a future
//! like [`tracing::Instrument::instrument`] and also notes on the span when
//! the future is dropped before it finished; the layer then ends the stage
//! in `layer_error` with `"error":"cancelled"` (and a pipeline span in
//! `pipeline_complete` with status `error` and the same error).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tracing::instrument::Instrumented;
use tracing::{Instrument as _, Span};
use tracing_subscriber::registry::LookupSpan as _;
use tracing_subscriber::Registry;

use crate::layer::States;

/// The `error` text of a stage (or pipeline) whose future was dropped
/// before it finished.
pub const CANCELLED: &str = "cancelled";

/// Instruments a future with a stage (or pipeline) span, and reports it
/// cancelled when the future is dropped before it completes.
///
/// ```
/// use std::time::Duration;
/// use tracing::info_span;
/// use tracing_pipeline::StageExt as _;
///
/// # async fn generate() {}
/// # async fn run() {
/// // A timeout that fires ends the stage in `layer_error` with
/// // "error":"cancelled" instead of a green `layer_complete`.
/// let _ = tokio::time::timeout(
///     Duration::from_secs(30),
///     generate().stage(info_span!("generator", layer = 6)),
/// )
/// .await;
/// # }
/// ```
///
/// The mark is kept with the layer's state in the span's extensions in the
/// subscriber's [`Registry`], so it works in every subscriber built on
/// `tracing_subscriber::registry()` (which `init` and `fmt()` are). A future
/// dropped while a panic unwinds is reported with the panic instead.
pub trait StageExt: Future + Sized {
    /// Runs the future inside `span`, as `.instrument(span)` does, and marks
    /// the span cancelled if the future is dropped before it completes.
    fn stage(self, span: Span) -> Stage<Self> {
        Stage {
            inner: self.instrument(span),
            done: false,
        }
    }
}

impl<F: Future> StageExt for F {}

pin_project! {
    /// A future running inside a stage span; see [`StageExt::stage`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Stage<F> {
        #[pin]
        inner: Instrumented<F>,
        done: bool,
    }

    impl<F> PinnedDrop for Stage<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done && !std::thread::panicking() {
                mark_cancelled(this.inner.span());
            }
        }
    }
}

impl<F> Stage<F> {
    /// The span the future runs in.
    pub fn span(&self) -> &Span {
        self.inner.span()
    }
}

impl<F: Future> Future for Stage<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let poll = this.inner.poll(cx);
        if poll.is_ready() {
            *this.done = true;
        }
        poll
    }
}

fn mark_cancelled(span: &Span) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(span) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
        {
            if let Some(states) = span.extensions_mut().get_mut::<States>() {
                states.cancel_all();
            }
        }
    });
}
