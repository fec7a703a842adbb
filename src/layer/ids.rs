//! `trace_id` and `span_id` on lines: read from `tracing-opentelemetry`
//! when it is in the subscriber (feature `otel`).
//!
//! `tracing-opentelemetry` keeps its per-span data private; its public
//! reader is `get_otel_context(id, &dispatch)`, which needs the subscriber's
//! `Dispatch`. The layer keeps a [`WeakDispatch`](tracing::dispatcher::WeakDispatch)
//! from `on_register_dispatch` (a strong one would be a cycle: the dispatch
//! owns the layer) and asks once per span, at its first line; the answer,
//! ids or none, is cached in the span's state ([`IdCell`]), so later lines
//! of the span cost a read. Asking starts the OpenTelemetry span if it was
//! not started yet, exactly as entering it would: ids exist from the first
//! enter.
//!
//! Without the feature every type here is empty and every call a constant
//! `None`: the default build pays nothing.

/// A span's ids, as OpenTelemetry numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanIds {
    /// Big-endian bytes, as OpenTelemetry keeps them (bytes, not integers:
    /// the cell in every span's state stays small).
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
}

impl SpanIds {
    /// `trace_id` as 32 lowercase hex digits.
    pub(crate) fn trace_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&self.trace_id, &mut out);
        out
    }

    /// `span_id` as 16 lowercase hex digits.
    pub(crate) fn span_hex(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        hex_into(&self.span_id, &mut out);
        out
    }
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(feature = "otel")]
mod imp {
    use std::sync::OnceLock;

    use opentelemetry::trace::TraceContextExt as _;
    use tracing::dispatcher::WeakDispatch;
    use tracing::span::Id;
    use tracing::Dispatch;

    use super::SpanIds;

    /// Where ids come from: the subscriber the layer was added to.
    #[derive(Debug)]
    pub(crate) struct IdSource(OnceLock<WeakDispatch>);

    impl IdSource {
        pub(crate) const fn new() -> Self {
            IdSource(OnceLock::new())
        }

        /// Keeps the first dispatch the layer is registered with.
        pub(crate) fn register(&self, dispatch: &Dispatch) {
            let _ = self.0.set(dispatch.downgrade());
        }

        /// The OpenTelemetry context of span `id`, when `tracing-opentelemetry`
        /// is in the subscriber and tracks the span. The caller must hold no
        /// lock on the span's extensions.
        pub(crate) fn context(&self, id: &Id) -> Option<opentelemetry::Context> {
            let dispatch = self.0.get()?.upgrade()?;
            // `tracing-opentelemetry` asserts its own invariants with
            // `expect`; none of it may escape into the instrumented program.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tracing_opentelemetry::get_otel_context(id, &dispatch)
            }))
            .ok()
            .flatten()
        }

        /// The ids of span `id` (see [`context`](Self::context)); `None` for
        /// a span without a valid OpenTelemetry span context (no
        /// `tracing-opentelemetry` layer, a no-op tracer).
        pub(crate) fn lookup(&self, id: &Id) -> Option<SpanIds> {
            let cx = self.context(id)?;
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid().then(|| SpanIds {
                trace_id: sc.trace_id().to_bytes(),
                span_id: sc.span_id().to_bytes(),
            })
        }
    }

    /// A span's ids, looked up once.
    #[derive(Debug)]
    pub(crate) struct IdCell(OnceLock<Option<SpanIds>>);

    impl IdCell {
        pub(crate) const fn new() -> Self {
            IdCell(OnceLock::new())
        }

        /// `Some(answer)` once looked up.
        pub(crate) fn get(&self) -> Option<Option<SpanIds>> {
            self.0.get().copied()
        }

        pub(crate) fn set(&self, ids: Option<SpanIds>) {
            let _ = self.0.set(ids);
        }
    }
}

#[cfg(not(feature = "otel"))]
mod imp {
    use tracing::span::Id;
    use tracing::Dispatch;

    use super::SpanIds;

    /// Without the `otel` feature: never any ids.
    #[derive(Debug)]
    pub(crate) struct IdSource;

    impl IdSource {
        pub(crate) const fn new() -> Self {
            IdSource
        }

        #[inline(always)]
        pub(crate) fn register(&self, _dispatch: &Dispatch) {}

        #[inline(always)]
        pub(crate) fn lookup(&self, _id: &Id) -> Option<SpanIds> {
            None
        }
    }

    /// Without the `otel` feature: empty.
    #[derive(Debug)]
    pub(crate) struct IdCell;

    impl IdCell {
        pub(crate) const fn new() -> Self {
            IdCell
        }

        #[inline(always)]
        pub(crate) fn get(&self) -> Option<Option<SpanIds>> {
            Some(None)
        }

        #[inline(always)]
        pub(crate) fn set(&self, _ids: Option<SpanIds>) {}
    }
}

pub(crate) use imp::{IdCell, IdSource};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowercase_hex_of_their_full_width() {
        let ids = SpanIds {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c_u128.to_be_bytes(),
            span_id: 0x00f067aa0ba902b7_u64.to_be_bytes(),
        };
        assert_eq!(&ids.trace_hex(), b"0af7651916cd43dd8448eb211c80319c");
        assert_eq!(&ids.span_hex(), b"00f067aa0ba902b7");
    }
}
