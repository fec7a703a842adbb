//! Per-span state, kept in the span's extensions (never in a side map keyed by
//! span id: ids are reused after close, extensions are cleared with the span).
//!
//! [`SpanState`] is one of three kinds, decided once from the span's declared
//! fields: a pipeline, a stage, or a plain span that only passes context on.
//! Its methods make every decision the layer's callbacks need (is this the
//! first enter, which terminal event, which status, what a late field
//! changes), so that the callbacks themselves only look up, ask and emit.
//!
//! Several `PipelineLayer`s can sit in one subscriber (say one writing to
//! stdout, one to a file): each keeps its own state under its own key in one
//! shared [`States`] extension.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use tracing::span::Id;
use tracing::Metadata;

use super::fields::{upsert, FieldValue, SpanFields};
use super::ids::IdCell;
use crate::event::{EventKind, Status};

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

/// The layer number as written on the wire: `4`, `2.5`, or an integer above
/// `i64::MAX` that still fits a `u64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LayerNumber {
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl LayerNumber {
    /// A `layer` field's value, if it is a number (or text holding one).
    ///
    /// The rule: integers from `i64::MIN` to `u64::MAX` are kept exactly,
    /// finite floats as floats; wider integers (which most JSON readers would
    /// round) and anything that is not a number are not a layer number.
    pub(crate) fn from_field(value: &FieldValue) -> Option<LayerNumber> {
        match value {
            FieldValue::I64(v) => Some(LayerNumber::Int(*v)),
            FieldValue::U64(v) => Some(match i64::try_from(*v) {
                Ok(v) => LayerNumber::Int(v),
                Err(_) => LayerNumber::UInt(*v),
            }),
            FieldValue::F64(v) if v.is_finite() => Some(LayerNumber::Float(*v)),
            FieldValue::Str(s) => {
                let s = s.trim();
                if let Ok(v) = s.parse::<i64>() {
                    return Some(LayerNumber::Int(v));
                }
                if let Ok(v) = s.parse::<u64>() {
                    return Some(LayerNumber::UInt(v));
                }
                let integer = s.strip_prefix(['-', '+']).unwrap_or(s);
                if !integer.is_empty() && integer.bytes().all(|b| b.is_ascii_digit()) {
                    return None; // an integer too wide to keep exactly
                }
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(LayerNumber::Float)
            }
            // Bools are not numbers.
            _ => None,
        }
    }
}

/// Where a span sits: what it inherits from the spans around it. A child
/// keeps its parents open, so these ids stay valid while the span lives.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// The job id of the nearest enclosing pipeline span (a pipeline's own).
    pub(crate) job_id: Option<Arc<str>>,
    /// The nearest enclosing stage span, not counting the span itself.
    pub(crate) stage: Option<Id>,
    /// The nearest enclosing pipeline span, not counting the span itself.
    pub(crate) pipeline: Option<Id>,
    /// The nearest enclosing stage or pipeline span (whichever is nearer):
    /// errors of a plain span are charged to it.
    pub(crate) owner: Option<Id>,
}

impl Scope {
    /// What a child of the span `id` (whose state is `state`) inherits.
    pub(crate) fn child_of(id: &Id, state: &SpanState) -> Scope {
        let mut scope = state.scope().clone();
        match state {
            SpanState::Plain(_) => {}
            SpanState::Stage(_) => {
                scope.stage = Some(id.clone());
                scope.owner = Some(id.clone());
            }
            SpanState::Pipeline(p) => {
                scope.job_id.clone_from(&p.scope.job_id);
                scope.pipeline = Some(id.clone());
                scope.owner = Some(id.clone());
            }
        }
        scope
    }
}

/// How a pipeline's stages ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StageCounts {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) skipped: u64,
}

impl StageCounts {
    /// Counts a stage that ended with `status`.
    pub(crate) fn add(&mut self, status: Status) {
        match status {
            Status::Error => self.failed += 1,
            Status::Skipped => self.skipped += 1,
            _ => self.completed += 1,
        }
    }
}

/// What a span's first enter found: what to write, if anything.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FirstEnter {
    /// Already entered before (or a plain span): nothing to write.
    Again,
    /// The first enter: write the start event.
    Start,
    /// The first enter of a pipeline whose job id is not known yet: its
    /// start waits for the id (or for the first line inside it).
    Pending,
}

/// A field recorded after the span's identity was frozen (first enter).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LateIdentity {
    None,
    LayerName,
    Layer,
    JobId,
}

/// The state of a stage span: everything its two lines need.
#[derive(Debug)]
pub(crate) struct Stage {
    pub(crate) scope: Scope,
    /// `layer` (`None` when absent or not a number).
    pub(crate) layer: Option<LayerNumber>,
    /// `layer_name`: the span's static name unless a `layer_name` field says
    /// otherwise. Frozen at the first enter, with `layer`.
    pub(crate) name: Cow<'static, str>,
    /// First enter: `None` until the span is entered.
    pub(crate) started: Option<Instant>,
    /// Fields other than the reserved ones, in declaration order.
    pub(crate) metadata: Vec<(&'static str, FieldValue)>,
    /// The text of the last error attributed to this stage.
    pub(crate) error: Option<String>,
    pub(crate) skipped: bool,
    /// Its future was dropped before it finished (`StageExt::stage`).
    pub(crate) cancelled: bool,
    /// Its OpenTelemetry ids, once looked up.
    pub(crate) ids: IdCell,
}

/// The state of a pipeline span.
#[derive(Debug)]
pub(crate) struct Pipeline {
    /// `scope.job_id` is the pipeline's own (frozen once `pipeline_start`
    /// is out), or the enclosing pipeline's when it has none.
    pub(crate) scope: Scope,
    pub(crate) started: Option<Instant>,
    /// Whether `pipeline_start` is out. A pipeline entered before its job
    /// id was recorded (`#[instrument(fields(job_id = Empty))]`) writes it
    /// when the id comes, or with the first line inside it, or at its end.
    pub(crate) announced: bool,
    pub(crate) metadata: Vec<(&'static str, FieldValue)>,
    pub(crate) error: Option<String>,
    /// Its future was dropped before it finished (`StageExt::stage`).
    pub(crate) cancelled: bool,
    pub(crate) counts: StageCounts,
    pub(crate) ids: IdCell,
}

/// A plain span: context only.
#[derive(Debug)]
pub(crate) struct Plain {
    pub(crate) scope: Scope,
    pub(crate) ids: IdCell,
}

/// What the layer keeps for one span.
#[derive(Debug)]
pub(crate) enum SpanState {
    Plain(Plain),
    Stage(Stage),
    Pipeline(Pipeline),
}

/// How a stage ended: its terminal event and status.
pub(crate) fn stage_end(skipped: bool, error: bool) -> (EventKind, Status) {
    // A skip is a decision, not a failure: it wins over an error.
    if skipped {
        (EventKind::LayerSkip, Status::Skipped)
    } else if error {
        (EventKind::LayerError, Status::Error)
    } else {
        (EventKind::LayerComplete, Status::Success)
    }
}

impl SpanState {
    /// A span's state from its kind, its fields at creation and its scope.
    /// Returns the state and whether its `layer` value was unusable.
    pub(crate) fn new(
        kind: SpanKind,
        span_name: &'static str,
        fields: SpanFields,
        scope: Scope,
    ) -> (SpanState, Option<FieldValue>) {
        match kind {
            SpanKind::Plain => (
                SpanState::Plain(Plain {
                    scope,
                    ids: IdCell::new(),
                }),
                None,
            ),
            SpanKind::Stage => {
                let layer = fields.layer.as_ref().and_then(LayerNumber::from_field);
                let bad = fields.layer.filter(|_| layer.is_none());
                let stage = Stage {
                    scope,
                    layer,
                    name: match fields.layer_name {
                        Some(name) => Cow::Owned(name),
                        None => Cow::Borrowed(span_name),
                    },
                    started: None,
                    metadata: fields.metadata,
                    error: fields.error,
                    skipped: fields.skipped.unwrap_or(false),
                    cancelled: false,
                    ids: IdCell::new(),
                };
                (SpanState::Stage(stage), bad)
            }
            SpanKind::Pipeline => {
                let mut scope = scope;
                if let Some(own) = fields.job_id {
                    scope.job_id = Some(Arc::from(own));
                }
                let pipeline = Pipeline {
                    scope,
                    started: None,
                    metadata: fields.metadata,
                    error: fields.error,
                    cancelled: false,
                    announced: false,
                    counts: StageCounts::default(),
                    ids: IdCell::new(),
                };
                (SpanState::Pipeline(pipeline), None)
            }
        }
    }

    pub(crate) fn scope(&self) -> &Scope {
        match self {
            SpanState::Plain(p) => &p.scope,
            SpanState::Stage(s) => &s.scope,
            SpanState::Pipeline(p) => &p.scope,
        }
    }

    /// The span's OpenTelemetry ids, once looked up.
    pub(crate) fn ids(&self) -> &IdCell {
        match self {
            SpanState::Plain(p) => &p.ids,
            SpanState::Stage(s) => &s.ids,
            SpanState::Pipeline(p) => &p.ids,
        }
    }

    /// Whether the span writes lines of its own (a stage or a pipeline).
    pub(crate) fn is_tracked(&self) -> bool {
        !matches!(self, SpanState::Plain(_))
    }

    /// Whether the next enter would be the first one.
    pub(crate) fn awaits_first_enter(&self) -> bool {
        match self {
            SpanState::Plain(_) => false,
            SpanState::Stage(s) => s.started.is_none(),
            SpanState::Pipeline(p) => p.started.is_none(),
        }
    }

    /// Marks the first enter; from here on a stage's identity is frozen,
    /// and a pipeline's once its start is out.
    pub(crate) fn enter(&mut self, now: Instant) -> FirstEnter {
        match self {
            SpanState::Plain(_) => FirstEnter::Again,
            SpanState::Stage(s) => {
                if s.started.is_some() {
                    return FirstEnter::Again;
                }
                s.started = Some(now);
                FirstEnter::Start
            }
            SpanState::Pipeline(p) => {
                if p.started.is_some() {
                    return FirstEnter::Again;
                }
                p.started = Some(now);
                if p.scope.job_id.is_some() {
                    p.announced = true;
                    FirstEnter::Start
                } else {
                    FirstEnter::Pending
                }
            }
        }
    }

    /// Notes that the span's future was dropped before it finished.
    pub(crate) fn cancel(&mut self) {
        match self {
            SpanState::Plain(_) => {}
            SpanState::Stage(s) => s.cancelled = true,
            SpanState::Pipeline(p) => p.cancelled = true,
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub(crate) fn cancelled(&self) -> bool {
        match self {
            SpanState::Plain(_) => false,
            SpanState::Stage(s) => s.cancelled,
            SpanState::Pipeline(p) => p.cancelled,
        }
    }

    /// Charges an error (an ERROR event, an `error` field, a panic).
    pub(crate) fn fail(&mut self, text: String) {
        match self {
            SpanState::Plain(_) => {}
            SpanState::Stage(s) => s.error = Some(text),
            SpanState::Pipeline(p) => p.error = Some(text),
        }
    }

    /// Applies fields recorded after creation (`Span::record`), taking them
    /// out of `fields` (whose buffers the caller may reuse). The identity
    /// (`layer`, `layer_name`, a pipeline's `job_id`) is frozen once the span
    /// has been entered, so that its start and terminal lines agree: a later
    /// change is not applied, and reported.
    ///
    /// Returns what changed too late, a `layer` value that is not a number,
    /// and whether a pending `pipeline_start` is due now (its job id came).
    pub(crate) fn record(
        &mut self,
        fields: &mut SpanFields,
    ) -> (LateIdentity, Option<FieldValue>, bool) {
        let mut late = LateIdentity::None;
        let mut bad = None;
        let mut announce = false;
        match self {
            SpanState::Plain(_) => {}
            SpanState::Stage(s) => {
                let frozen = s.started.is_some();
                if let Some(value) = fields.layer.take() {
                    match LayerNumber::from_field(&value) {
                        Some(n) if s.layer == Some(n) => {}
                        Some(_) if frozen => late = LateIdentity::Layer,
                        Some(n) => s.layer = Some(n),
                        None => bad = Some(value),
                    }
                }
                if let Some(name) = fields.layer_name.take() {
                    if frozen {
                        if name != s.name {
                            late = LateIdentity::LayerName;
                        }
                    } else {
                        s.name = Cow::Owned(name);
                    }
                }
                if let Some(v) = fields.skipped.take() {
                    s.skipped = v;
                }
                if let Some(e) = fields.error.take() {
                    s.error = Some(e);
                }
                for (name, value) in fields.metadata.drain(..) {
                    upsert(&mut s.metadata, name, value);
                }
            }
            SpanState::Pipeline(p) => {
                if let Some(job) = fields.job_id.take() {
                    if p.announced {
                        if p.scope.job_id.as_deref() != Some(job.as_str()) {
                            late = LateIdentity::JobId;
                        }
                    } else {
                        p.scope.job_id = Some(Arc::from(job));
                        announce = p.announce();
                    }
                }
                if let Some(e) = fields.error.take() {
                    p.error = Some(e);
                }
                for (name, value) in fields.metadata.drain(..) {
                    upsert(&mut p.metadata, name, value);
                }
            }
        }
        (late, bad, announce)
    }
}

impl Pipeline {
    /// Whether a pending `pipeline_start` is to be written now (the
    /// pipeline has started and its start is not out yet); marks it out.
    pub(crate) fn announce(&mut self) -> bool {
        let due = self.started.is_some() && !self.announced;
        self.announced |= due;
        due
    }

    /// The status of `pipeline_complete`.
    pub(crate) fn status(&self) -> Status {
        if self.error.is_some() {
            Status::Error
        } else if self.counts.failed > 0 {
            Status::Partial
        } else {
            Status::Success
        }
    }
}

/// Every `PipelineLayer`'s state for one span, under each layer's key. One
/// layer is the common case and costs no second allocation.
#[derive(Debug)]
pub(crate) enum States {
    One(u32, SpanState),
    Many(Vec<(u32, SpanState)>),
}

impl States {
    pub(crate) fn get(&self, key: u32) -> Option<&SpanState> {
        match self {
            States::One(k, s) if *k == key => Some(s),
            States::One(..) => None,
            States::Many(v) => v.iter().find(|(k, _)| *k == key).map(|(_, s)| s),
        }
    }

    pub(crate) fn get_mut(&mut self, key: u32) -> Option<&mut SpanState> {
        match self {
            States::One(k, s) if *k == key => Some(s),
            States::One(..) => None,
            States::Many(v) => v.iter_mut().find(|(k, _)| *k == key).map(|(_, s)| s),
        }
    }

    /// Marks every layer's state of the span cancelled.
    pub(crate) fn cancel_all(&mut self) {
        match self {
            States::One(_, s) => s.cancel(),
            States::Many(v) => v.iter_mut().for_each(|(_, s)| s.cancel()),
        }
    }

    /// Whether this is exactly one state, this layer's: the span's whole
    /// extension can then be taken out in one go.
    pub(crate) fn is_only(&self, key: u32) -> bool {
        matches!(self, States::One(k, _) if *k == key)
    }

    /// The state, if this is exactly one.
    pub(crate) fn into_only(self) -> Option<SpanState> {
        match self {
            States::One(_, s) => Some(s),
            States::Many(_) => None,
        }
    }

    /// Adds (or replaces) this layer's state.
    pub(crate) fn insert(&mut self, key: u32, state: SpanState) {
        if let Some(slot) = self.get_mut(key) {
            *slot = state;
            return;
        }
        let this = std::mem::replace(self, States::Many(Vec::new()));
        let mut all = match this {
            States::One(k, s) => vec![(k, s)],
            States::Many(v) => v,
        };
        all.push((key, state));
        *self = States::Many(all);
    }

    /// Takes this layer's state out; `true` in the second place when no
    /// other layer's state is left.
    pub(crate) fn remove(&mut self, key: u32) -> (Option<SpanState>, bool) {
        match self {
            States::One(k, _) if *k == key => {
                let States::One(_, s) = std::mem::replace(self, States::Many(Vec::new())) else {
                    unreachable!("matched One above")
                };
                (Some(s), true)
            }
            States::One(..) => (None, false),
            States::Many(v) => {
                let taken = v
                    .iter()
                    .position(|(k, _)| *k == key)
                    .map(|i| v.swap_remove(i).1);
                (taken, v.is_empty())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(fields: SpanFields) -> SpanState {
        SpanState::new(SpanKind::Stage, "stage", fields, Scope::default()).0
    }

    #[test]
    fn layer_numbers_keep_every_integer_a_u64_or_i64_holds() {
        use FieldValue::*;
        let n = LayerNumber::from_field;
        assert_eq!(n(&U64(u64::MAX)), Some(LayerNumber::UInt(u64::MAX)));
        assert_eq!(n(&U64(4)), Some(LayerNumber::Int(4)));
        assert_eq!(n(&I64(i64::MIN)), Some(LayerNumber::Int(i64::MIN)));
        assert_eq!(n(&Str(i128::MAX.to_string())), None);
        assert_eq!(
            n(&Str(u64::MAX.to_string())),
            Some(LayerNumber::UInt(u64::MAX))
        );
        assert_eq!(n(&Str(" 2.5 ".into())), Some(LayerNumber::Float(2.5)));
        assert_eq!(n(&Str("1e999".into())), None);
        assert_eq!(n(&F64(f64::NAN)), None);
        assert_eq!(n(&Bool(true)), None);
        assert_eq!(n(&Str("four".into())), None);
    }

    #[test]
    fn the_first_enter_starts_and_later_ones_do_not() {
        let mut s = stage(SpanFields::default());
        assert!(s.awaits_first_enter());
        assert_eq!(s.enter(Instant::now()), FirstEnter::Start);
        assert!(!s.awaits_first_enter());
        assert_eq!(s.enter(Instant::now()), FirstEnter::Again);
    }

    #[test]
    fn identity_is_frozen_at_first_enter() {
        let mut s = stage(SpanFields::default());
        let name = |s: &SpanState| match s {
            SpanState::Stage(s) => s.name.to_string(),
            _ => unreachable!(),
        };
        let late_name = |n: &str| SpanFields {
            layer_name: Some(n.into()),
            ..SpanFields::default()
        };
        assert_eq!(s.record(&mut late_name("before")).0, LateIdentity::None);
        assert_eq!(name(&s), "before");
        s.enter(Instant::now());
        assert_eq!(s.record(&mut late_name("after")).0, LateIdentity::LayerName);
        assert_eq!(name(&s), "before");
        // Recording the same name again is no change.
        assert_eq!(s.record(&mut late_name("before")).0, LateIdentity::None);
    }

    #[test]
    fn a_pipeline_job_id_is_frozen_too() {
        let (mut p, _) = SpanState::new(
            SpanKind::Pipeline,
            "pipeline",
            SpanFields::default(),
            Scope::default(),
        );
        let job = |j: &str| SpanFields {
            job_id: Some(j.into()),
            ..SpanFields::default()
        };
        p.record(&mut job("a"));
        assert_eq!(p.enter(Instant::now()), FirstEnter::Start);
        assert_eq!(p.record(&mut job("b")).0, LateIdentity::JobId);
        assert_eq!(p.scope().job_id.as_deref(), Some("a"));
    }

    #[test]
    fn a_pipeline_entered_without_a_job_id_starts_when_the_id_comes() {
        let (mut p, _) = SpanState::new(
            SpanKind::Pipeline,
            "pipeline",
            SpanFields::default(),
            Scope::default(),
        );
        assert_eq!(p.enter(Instant::now()), FirstEnter::Pending);
        let job = SpanFields {
            job_id: Some("j".into()),
            ..SpanFields::default()
        };
        let (late, _, announce) = p.record(&mut { job });
        assert_eq!(late, LateIdentity::None);
        assert!(announce, "the start is due now");
        assert_eq!(p.scope().job_id.as_deref(), Some("j"));
        let SpanState::Pipeline(p) = &mut p else {
            unreachable!()
        };
        assert!(!p.announce(), "only once");
    }

    #[test]
    fn skip_wins_over_error_and_error_over_success() {
        assert_eq!(stage_end(true, true).1, Status::Skipped);
        assert_eq!(stage_end(false, true).1, Status::Error);
        assert_eq!(stage_end(false, false).1, Status::Success);
    }

    #[test]
    fn pipeline_status_from_its_own_error_and_its_stages() {
        let (SpanState::Pipeline(mut p), _) = SpanState::new(
            SpanKind::Pipeline,
            "pipeline",
            SpanFields::default(),
            Scope::default(),
        ) else {
            unreachable!()
        };
        assert_eq!(p.status(), Status::Success);
        p.counts.add(Status::Skipped);
        assert_eq!(p.status(), Status::Success);
        p.counts.add(Status::Error);
        assert_eq!(p.status(), Status::Partial);
        p.error = Some("x".into());
        assert_eq!(p.status(), Status::Error);
        assert_eq!(
            p.counts,
            StageCounts {
                completed: 0,
                failed: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn states_of_several_layers_stay_apart() {
        let mut all = States::One(1, stage(SpanFields::default()));
        assert!(all.get(2).is_none());
        all.insert(2, stage(SpanFields::default()));
        all.get_mut(2).unwrap().enter(Instant::now());
        assert!(all.get(1).unwrap().awaits_first_enter());
        assert!(!all.get(2).unwrap().awaits_first_enter());
        let (taken, empty) = all.remove(1);
        assert!(taken.is_some() && !empty);
        let (taken, empty) = all.remove(2);
        assert!(taken.is_some() && empty);
    }
}
