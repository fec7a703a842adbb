//! Per-span state, kept in the span's extensions (never in a side map keyed by
//! span id: ids are reused after close, extensions are cleared with the span).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use tracing::span::Id;
use tracing::Metadata;

use super::fields::{upsert, FieldValue, SpanFields};

/// What a span is to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanKind {
    /// Has a `job_id` field and no `layer` field.
    Pipeline,
    /// Has a `layer` field: a stage.
    Stage,
    /// Anything else: only carries context to what happens inside it.
    Plain,
}

impl SpanKind {
    /// Decided from the span's declared fields, recorded or not.
    pub(crate) fn of(metadata: &Metadata<'_>) -> SpanKind {
        let fields = metadata.fields();
        if fields.field("layer").is_some() {
            SpanKind::Stage
        } else if fields.field("job_id").is_some() {
            SpanKind::Pipeline
        } else {
            SpanKind::Plain
        }
    }
}

/// The layer number as written on the wire: `4` or `2.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LayerNumber {
    Int(i64),
    Float(f64),
}

impl LayerNumber {
    /// A `layer` field's value, if it is a number (or text holding one).
    pub(crate) fn from_field(value: &FieldValue) -> Option<LayerNumber> {
        match value {
            FieldValue::I64(v) => Some(LayerNumber::Int(*v)),
            FieldValue::U64(v) => i64::try_from(*v).ok().map(LayerNumber::Int),
            FieldValue::F64(v) if v.is_finite() => Some(LayerNumber::Float(*v)),
            FieldValue::Str(s) => {
                let s = s.trim();
                s.parse::<i64>()
                    .map(LayerNumber::Int)
                    .or_else(|_| s.parse::<f64>().map(LayerNumber::Float))
                    .ok()
                    .filter(|n| !matches!(n, LayerNumber::Float(f) if !f.is_finite()))
            }
            _ => None,
        }
    }
}

/// State of a pipeline or stage span: everything its lines need.
#[derive(Debug)]
pub(crate) struct Tracked {
    /// `layer` of a stage (`None` when absent or not a number).
    pub(crate) layer: Option<LayerNumber>,
    /// `layer_name` of a stage (the span's static name unless a
    /// `layer_name` field says otherwise); unused for pipelines.
    pub(crate) name: Cow<'static, str>,
    /// First enter: `None` until the span is entered.
    pub(crate) started: Option<Instant>,
    /// Fields other than the reserved ones, in declaration order.
    pub(crate) metadata: Vec<(&'static str, FieldValue)>,
    /// The text of the last error attributed to this span.
    pub(crate) error: Option<String>,
    pub(crate) skipped: bool,
    /// Pipelines: how their stages ended.
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) skipped_layers: u64,
}

/// What the layer keeps in every span's extensions.
#[derive(Debug)]
pub(crate) struct SpanState {
    pub(crate) kind: SpanKind,
    /// The pipeline's job id: its own for a pipeline span, inherited from the
    /// nearest enclosing pipeline span otherwise.
    pub(crate) job_id: Option<Arc<str>>,
    /// Plain spans: the nearest enclosing stage or pipeline span, to which
    /// their errors are attributed. Stage spans: the nearest enclosing
    /// pipeline span, whose counts they update. A child keeps its parents
    /// open, so these ids stay valid while this span lives.
    pub(crate) owner: Option<Id>,
    /// `None` for plain spans, which keep nothing else. Inline rather than
    /// boxed: the extensions box the whole state once already.
    pub(crate) tracked: Option<Tracked>,
}

impl SpanState {
    /// A pipeline or stage span from its fields at creation.
    pub(crate) fn tracked(
        kind: SpanKind,
        span_name: &'static str,
        fields: SpanFields,
        inherited_job: Option<Arc<str>>,
        owner: Option<Id>,
    ) -> SpanState {
        let job_id = match (kind, fields.job_id) {
            (SpanKind::Pipeline, Some(own)) => Some(Arc::from(own)),
            _ => inherited_job,
        };
        let layer = fields.layer.as_ref().and_then(LayerNumber::from_field);
        if kind == SpanKind::Stage && layer.is_none() {
            if let Some(value) = &fields.layer {
                super::diag::bad_layer_value(value);
            }
        }
        SpanState {
            kind,
            job_id,
            owner,
            tracked: Some(Tracked {
                layer,
                name: match fields.layer_name {
                    Some(name) => Cow::Owned(name),
                    None => Cow::Borrowed(span_name),
                },
                started: None,
                metadata: fields.metadata,
                error: fields.error,
                skipped: fields.skipped.unwrap_or(false),
                completed: 0,
                failed: 0,
                skipped_layers: 0,
            }),
        }
    }

    /// Applies fields recorded after creation (`Span::record`).
    pub(crate) fn record(&mut self, fields: SpanFields) {
        let Some(t) = self.tracked.as_mut() else {
            return;
        };
        if let Some(value) = &fields.layer {
            match LayerNumber::from_field(value) {
                Some(n) => t.layer = Some(n),
                None => super::diag::bad_layer_value(value),
            }
        }
        if let Some(name) = fields.layer_name {
            t.name = Cow::Owned(name);
        }
        if let (SpanKind::Pipeline, Some(job)) = (self.kind, fields.job_id) {
            self.job_id = Some(Arc::from(job));
        }
        if let Some(s) = fields.skipped {
            t.skipped = s;
        }
        if let Some(e) = fields.error {
            t.error = Some(e);
        }
        for (name, value) in fields.metadata {
            upsert(&mut t.metadata, name, value);
        }
    }
}
