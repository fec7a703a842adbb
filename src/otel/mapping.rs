//! What a stage or pipeline span says in a tracing backend: set on the
//! OpenTelemetry span when the layer writes its terminal line, from the
//! same description of the line ([`Lifecycle`]), so the span and the line
//! always agree. The table is in `docs/otel.md`.
//!
//! `tracing-opentelemetry` already makes every span field an attribute
//! (late ones too) and every event a span event; this adds what only the
//! layer knows: the outcome, the stage counts, the stage's name when a
//! `layer_name` field overrides it, its job id, and the attributes LLM
//! observability backends read (LangSmith's run kind and name, the GenAI
//! semantic convention's token usage).

use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, Value};

use crate::event::{EventKind, Status as LineStatus};
use crate::layer::{FieldValue, LayerNumber, Lifecycle};

/// Metadata keys read as token counts, and the GenAI attribute each sets.
const TOKEN_KEYS: [(&str, &str); 5] = [
    ("tokens_used", "gen_ai.usage.total_tokens"),
    ("total_tokens", "gen_ai.usage.total_tokens"),
    ("input_tokens", "gen_ai.usage.input_tokens"),
    ("prompt_tokens", "gen_ai.usage.input_tokens"),
    ("output_tokens", "gen_ai.usage.output_tokens"),
];

fn as_i64(v: &FieldValue) -> Option<i64> {
    match v {
        FieldValue::I64(n) => Some(*n),
        FieldValue::U64(n) => i64::try_from(*n).ok(),
        FieldValue::F64(f) if f.is_finite() && f.fract() == 0.0 => Some(*f as i64),
        FieldValue::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn layer_value(n: LayerNumber) -> Value {
    match n {
        LayerNumber::Int(v) => Value::I64(v),
        LayerNumber::UInt(v) => i64::try_from(v).map_or(Value::F64(v as f64), Value::I64),
        LayerNumber::Float(v) => Value::F64(v),
    }
}

/// Sets the outcome of a stage or pipeline on its OpenTelemetry span (the
/// span is still open: the layer runs before the OpenTelemetry layer ends
/// it, when it comes first in the subscriber).
pub(crate) fn end(cx: &Context, e: &Lifecycle<'_>) {
    let span = cx.span();
    let mut attrs = Vec::with_capacity(12);
    let status = e.status.map(|s| s.as_str()).unwrap_or("");
    attrs.push(KeyValue::new("pipeline.status", status));
    attrs.push(KeyValue::new("langsmith.span.kind", "chain"));
    if let Some(job) = e.job_id {
        attrs.push(KeyValue::new("job_id", job.to_owned()));
    }
    if let Some(d) = e.duration_ms {
        attrs.push(KeyValue::new(
            "duration_ms",
            i64::try_from(d).unwrap_or(i64::MAX),
        ));
    }
    match e.kind {
        EventKind::PipelineComplete => {
            if let Some(c) = e.counts {
                for (k, n) in [
                    ("layers_completed", c.completed),
                    ("layers_failed", c.failed),
                    ("layers_skipped", c.skipped),
                ] {
                    attrs.push(KeyValue::new(k, i64::try_from(n).unwrap_or(i64::MAX)));
                }
            }
        }
        _ => {
            if let Some(name) = e.layer_name {
                span.update_name(name.to_owned());
                attrs.push(KeyValue::new("layer_name", name.to_owned()));
                attrs.push(KeyValue::new("langsmith.trace.name", name.to_owned()));
            }
            if let Some(n) = e.layer {
                attrs.push(KeyValue::new("layer", layer_value(n)));
            }
            if e.kind == EventKind::LayerSkip {
                attrs.push(KeyValue::new("skipped", true));
            }
        }
    }
    for (key, attr) in TOKEN_KEYS {
        if let Some(n) = e
            .metadata
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| as_i64(v))
        {
            attrs.push(KeyValue::new(attr, n));
        }
    }
    span.set_attributes(attrs);
    match e.status {
        Some(LineStatus::Error) => {
            span.set_status(Status::error(e.error.unwrap_or("error").to_owned()));
        }
        Some(_) => span.set_status(Status::Ok),
        None => {}
    }
}
