//! The layer's own complaints, in one place. Each goes to stderr at most once
//! per process, and never through `tracing` (that would recurse into the
//! layer). A failure to write to stderr is ignored: nothing here may panic.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use super::fields::FieldValue;

static WRITE_FAILED: AtomicBool = AtomicBool::new(false);
static BAD_LAYER: AtomicBool = AtomicBool::new(false);

fn once(flag: &AtomicBool, message: std::fmt::Arguments<'_>) {
    if !flag.swap(true, Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr(), "tracing-pipeline: {message}");
    }
}

/// The writer refused a line; the line is dropped and the program goes on.
pub(crate) fn write_failed(error: &std::io::Error) {
    once(
        &WRITE_FAILED,
        format_args!("cannot write an event line ({error}); lines that cannot be written are dropped (reported once)"),
    );
}

/// A stage's `layer` field holds something that is not a number.
pub(crate) fn bad_layer_value(value: &FieldValue) {
    once(
        &BAD_LAYER,
        format_args!("a `layer` field must be a number such as 4 or 2.5, got {value:?}; the line leaves `layer` out (reported once)"),
    );
}
