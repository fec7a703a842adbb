//! The layer's own complaints, in one place. Each goes to stderr at most once
//! per process, and never through `tracing` (that would recurse into the
//! layer). A failure to write to stderr is ignored: nothing here may panic.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use super::fields::FieldValue;

static WRITE_FAILED: AtomicBool = AtomicBool::new(false);
static BAD_LAYER: AtomicBool = AtomicBool::new(false);
static LATE_IDENTITY: AtomicBool = AtomicBool::new(false);
static HIDDEN_BY_LEVEL: AtomicBool = AtomicBool::new(false);

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

/// A stage's `layer`/`layer_name` or a pipeline's `job_id` was recorded
/// after the span was first entered: its start line is out already, so the
/// value is not used (the start and terminal lines must agree).
pub(crate) fn late_identity(field: &str, span: &str) {
    once(
        &LATE_IDENTITY,
        format_args!("`{field}` of span `{span}` was recorded after the span was entered; its start line was written already, so the new value is not used. Give it when the span is created, or record it before the first enter (reported once)"),
    );
}

/// The subscriber the layer was added to says (by its max level hint)
/// that it enables nothing more verbose than `most_verbose`. A global
/// filter hides pipeline and stage spans below that level from the layer; a
/// per-layer filter would not, but the hint cannot tell them apart, so the
/// message says both.
pub(crate) fn hidden_by_level(most_verbose: tracing_subscriber::filter::LevelFilter) {
    once(
        &HIDDEN_BY_LEVEL,
        format_args!("PipelineLayer was added to a subscriber that enables nothing more verbose than {most_verbose}. If that is a global filter (an EnvFilter added with `.with(...)`, or `fmt().with_env_filter(...)`), it hides every pipeline and stage span below {most_verbose} from PipelineLayer and their lifecycle lines are lost: wrap it with `tracing_pipeline::keep_stages(filter)`. A per-layer filter (`.with_filter(...)`) hides nothing from it (reported once)"),
    );
}

/// A pipeline or stage span is more verbose than anything the subscriber's
/// filters let through.
pub(crate) fn hidden_span(name: &str, level: tracing::Level) {
    static HIDDEN_SPAN: AtomicBool = AtomicBool::new(false);
    once(
        &HIDDEN_SPAN,
        format_args!("span `{name}` ({level}) is a pipeline or stage span, but the subscriber's filters hide {level} spans, so PipelineLayer never sees it; wrap the filter with `tracing_pipeline::keep_stages(filter)` (reported once)"),
    );
}
