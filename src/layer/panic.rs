//! Panic messages for `layer_error`.
//!
//! The layer sees a panic as a stage span exited or closed while its thread
//! is unwinding. The message itself is only available to a panic hook:
//! [`install_hook`] (called by [`crate::init`]) keeps the message of the
//! panic that started on this thread, and chains to the hook that was there
//! before, so the usual report on stderr still appears. Without the hook
//! the error is `panicked`.
//!
//! A panic re-raised with `std::panic::resume_unwind` (rayon, a tokio
//! `JoinError::into_panic`) runs no hook. So that it is never reported with
//! the message of an earlier panic that was caught, the kept message is
//! forgotten as soon as the layer sees this thread at work again without
//! unwinding ([`forget_caught`]); such a panic is reported as `panicked`.

use std::cell::{Cell, RefCell};
use std::sync::Once;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Whether `LAST_PANIC` holds a message: one cheap check on the hot path.
    static HAS_MESSAGE: Cell<bool> = const { Cell::new(false) };
}

/// Forgets the kept message unless this thread is unwinding: a panic that
/// is no longer unwinding was caught, and its message must not be given to
/// a later, different one.
#[inline]
pub(crate) fn forget_caught() {
    if HAS_MESSAGE.try_with(Cell::get).unwrap_or(false) && !std::thread::panicking() {
        let _ = HAS_MESSAGE.try_with(|h| h.set(false));
        let _ = LAST_PANIC.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                *p = None;
            }
        });
    }
}

/// The message of the panic unwinding on this thread, or `panicked`.
pub(crate) fn message() -> String {
    LAST_PANIC
        .try_with(|p| p.try_borrow().ok().and_then(|p| p.clone()))
        .ok()
        .flatten()
        .unwrap_or_else(|| "panicked".to_owned())
}

/// Installs the panic hook once per process; later calls do nothing.
///
/// [`crate::init`] calls it. Call it yourself when you compose
/// [`crate::PipelineLayer`] into your own subscriber and want panic messages
/// rather than `panicked` in `layer_error` lines.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned());
            let _ = LAST_PANIC.try_with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    *p = text;
                }
            });
            let _ = HAS_MESSAGE.try_with(|h| h.set(true));
            previous(info);
        }));
    });
}
