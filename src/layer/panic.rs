//! Panic messages for `layer_error` (SPEC 4.3).
//!
//! The layer sees a panic as a stage span exited or closed while its thread
//! is unwinding. The message itself is only available to a panic hook:
//! [`install_hook`] (called by [`crate::init`]) keeps the last panic message
//! of each thread, and chains to the hook that was there before, so the
//! usual report on stderr still appears. Without the hook the error is
//! `panicked`.

use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
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
            previous(info);
        }));
    });
}
