//! Watch a multi-stage pipeline run, live, from plain `tracing` spans.
//!
//! Stage code uses ordinary spans, one per stage, with a `layer` field;
//! the whole run sits in a span with a `job_id` field. [`PipelineLayer`], a
//! [`tracing_subscriber::Layer`], turns their lifecycle into one JSON object
//! per line, with measured durations, errors and metadata. [`init`] installs
//! it from the environment in one call.
//!
//! ```no_run
//! use tracing::{info, info_span, instrument, Instrument};
//!
//! #[instrument(name = "opportunity_mapper", skip_all,
//!              fields(layer = 4, fit_score = tracing::field::Empty), err)]
//! async fn map_opportunity() -> Result<(), std::io::Error> {
//!     info!("mapping");
//!     tracing::Span::current().record("fit_score", 85);
//!     Ok(())
//! }
//!
//! # async fn run() {
//! tracing_pipeline::init();
//! async {
//!     let _ = map_opportunity().await;
//! }
//! .instrument(info_span!("pipeline", job_id = "6929c97b"))
//! .await;
//! # }
//! ```
//!
//! prints (one object per line; shown wrapped here):
//!
//! ```text
//! {"timestamp":"2025-11-29T10:30:45.123Z","event":"pipeline_start","job_id":"6929c97b"}
//! {"timestamp":"…","event":"layer_start","layer":4,"layer_name":"opportunity_mapper","job_id":"6929c97b"}
//! {"timestamp":"…","event":"log","level":"info","target":"my_app","message":"mapping","job_id":"6929c97b","layer":4,"layer_name":"opportunity_mapper"}
//! {"timestamp":"…","event":"layer_complete","layer":4,"layer_name":"opportunity_mapper","job_id":"6929c97b","status":"success","duration_ms":4500,"metadata":{"fit_score":85}}
//! {"timestamp":"…","event":"pipeline_complete","job_id":"6929c97b","status":"success","duration_ms":4501,"metadata":{"layers_completed":1,"layers_failed":0,"layers_skipped":0}}
//! ```
//!
//! # Span conventions
//!
//! | span | recognised by | |
//! |---|---|---|
//! | stage ("layer") | has a `layer` field (a number: `4`, `2.5`) | `layer_name` is the span's name unless it has a `layer_name` field |
//! | pipeline | has a `job_id` field and no `layer` field | its `job_id` is inherited by everything inside |
//!
//! Spans of any level are recognised (`debug_span!` too). Reserved field
//! names: `layer`, `layer_name`, `job_id`, `skipped`, `error`. Every other
//! field, including those recorded later with `Span::record`, goes into the
//! span's `metadata` with its JSON type.
//!
//! # Events
//!
//! | event | when | status |
//! |---|---|---|
//! | `pipeline_start` | a pipeline span is first entered | |
//! | `layer_start` | a stage span is first entered | |
//! | `layer_complete` | a stage closes, no error, not skipped | `success` |
//! | `layer_error` | a stage closes after an ERROR event inside it (or in a nested non-stage span; this covers `#[instrument(err)]`), an `error` field, or a panic | `error` |
//! | `layer_skip` | a stage closes with `skipped = true` | `skipped` |
//! | `pipeline_complete` | a pipeline span closes | `success`, `partial` (a stage failed), `error` (the pipeline span itself failed) |
//! | `log` | an ordinary event passes `LOG_LEVEL` | |
//!
//! `duration_ms` is wall-clock time from first enter to close, `.await`s
//! included. The full schema, key by key, and every rule of how stages and
//! pipelines end is the [`schema`] page (also in the repository as
//! `docs/schema.md`, and as a JSON Schema in `docs/event.schema.json`);
//! [`PipelineEvent`] reads and writes the lines.
//!
//! # Adding it to an existing subscriber
//!
//! [`init`] installs a subscriber of its own. A service that already has
//! one adds [`PipelineLayer`] to it. The one thing to change: a **global
//! filter** (an `EnvFilter` added with `.with(...)`, or
//! `fmt().with_env_filter(...)`) disables what it does not enable for every
//! layer, so with `RUST_LOG` unset (ERROR only) no pipeline line is written
//! at all, and with `RUST_LOG=info` a `debug_span!` stage vanishes. Wrap it
//! with [`keep_stages`], which passes every pipeline and stage span and
//! leaves everything else to your filter:
//!
//! ```
//! use tracing_subscriber::{fmt, prelude::*, EnvFilter};
//!
//! // Before: tracing_subscriber::fmt().with_env_filter(EnvFilter::from_default_env()).init();
//! tracing_subscriber::registry()
//!     .with(tracing_pipeline::keep_stages(EnvFilter::from_default_env()))
//!     .with(fmt::layer())
//!     .with(tracing_pipeline::PipelineLayer::new())
//! #   ;
//! #   let _ = ();
//! //  .init();
//! ```
//!
//! Compositions that work, each with a test in `tests/layer/stacks.rs`:
//!
//! | you have | what to write |
//! |---|---|
//! | a global `EnvFilter`, before or after the layer | `.with(keep_stages(filter))` |
//! | `fmt` beside it | as above; `fmt` prints what your filter enables, as before |
//! | a per-layer filter on `fmt` (`fmt::layer().with_filter(f)`) | nothing: it does not touch this layer |
//! | `LOG_LEVEL` for this layer only | [`Config::layer`] or [`PipelineLayer::with_log_filter`]: the log filter never hides events from other layers |
//! | a `reload` handle | `reload::Layer::new(keep_stages(filter))`; change it with `handle.modify(\|f\| *f.inner_mut() = new)` |
//! | two destinations | two `PipelineLayer`s (each writes every line), or one with `MakeWriterExt::and` |
//! | a level-routing writer (`with_max_level`) | nothing: lifecycle lines are routed at INFO (ERROR when failed), `log` lines at their level |
//! | `tracing-error`'s `ErrorLayer`, `tracing-appender`'s `non_blocking` | nothing: add them as usual |
//!
//! Do not put a level filter directly in front of the layer
//! (`PipelineLayer::new().with_filter(LevelFilter::INFO)`): it hides
//! `debug_span!` stages from it. When the layer can tell that filters hide
//! spans from it (the subscriber it is added to enables nothing more
//! verbose than WARN), it says so once on stderr. It cannot tell when a
//! global `info` filter hides a `debug_span!` stage: the macro skips the
//! call site before any layer hears of it.
//!
//! `log` records: [`init`] bridges the `log` crate (as `fmt().init()` does),
//! so dependencies that log through `log` appear as `log` lines with their
//! real target, inside the running stage. In a subscriber of your own,
//! install `tracing_log::LogTracer` as you would for `fmt`.
//!
//! # Stages that are cut off
//!
//! A stage future dropped before it finished (a `tokio::time::timeout`, a
//! losing `select!` branch, an aborted task) closes its span like one that
//! finished, so plain `.instrument(span)` reports `layer_complete`. Run
//! stages with [`StageExt::stage`] instead, and such a stage ends in
//! `layer_error` with `"error":"cancelled"`.
//!
//! # Environment
//!
//! | variable | values | default | meaning |
//! |---|---|---|---|
//! | `STRUCTURED_LOGGING` | true/false, 1/0, yes/no, on/off (any case) | true | false: the same events as one readable line each (coloured on a terminal) |
//! | `LOG_LEVEL` | trace, debug, info, warn (warning), error, off, or `EnvFilter` directives (`info,my_crate::layer4=debug`) | info | which `log` lines appear; lifecycle events always do |
//! | `LANGSMITH_LOGGING` | true/false | false | feature `otel`: `true` also exports to LangSmith, with `LANGSMITH_API_KEY` (required), `LANGSMITH_PROJECT`, `LANGSMITH_ENDPOINT`; without the feature, one notice that this build cannot |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` (`_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SDK_DISABLED`, `OTEL_BSP_MAX_QUEUE_SIZE` | the OpenTelemetry conventions | no export | feature `otel`: export stage spans over OTLP/HTTP ([`OtelConfig`]) |
//! | `TRACEPARENT`, `TRACESTATE` | W3C trace context | none | feature `otel`: the pipeline span becomes a child of that span, so a child process joins its parent's trace |
//!
//! An invalid value never aborts: one stderr line names the variable, the
//! value and the default used instead. [`Config::from_lookup`] is the pure
//! parser, for tests and for configuring the layer yourself.
//!
//! # OpenTelemetry (feature `otel`)
//!
//! Beside `tracing-opentelemetry` (installed by [`init`], or by you before
//! or after the layer), every line produced inside a span it tracks carries
//! `trace_id` (32 lowercase hex digits) and `span_id` (16), the last keys
//! before `metadata`: the ids of the exported span, from its first enter.
//! The layer reads them through `tracing_opentelemetry::get_otel_context`
//! with the dispatch it is registered with (kept weak). Without such a
//! layer, or without the feature, lines are as before.
//!
//! With an OTLP endpoint or `LANGSMITH_LOGGING=true` in the environment,
//! [`init`] also exports: each stage a span named after its `layer_name`,
//! with its outcome, metadata, token usage and `log` lines, under the
//! pipeline span. Keep the guard of [`init_guarded`] to the end of `main`
//! so the last spans are sent; the export never makes the pipeline wait,
//! and the program's end waits at most [`FLUSH_TIMEOUT`]. The repository's
//! `docs/otel.md` has the table of what each span carries.
//!
//! # Guarantees
//!
//! Each line is built whole and written one line at a time under the
//! layer's own lock, so lines never interleave, even through a writer that
//! does not lock (an `Arc<File>` on a pipe) and with lines far above a
//! pipe's atomic size. Stdout by default (flushed per line), or any
//! [`MakeWriter`](tracing_subscriber::fmt::MakeWriter). When a write fails
//! after part of a line went out (a full disk), the next line starts on a
//! new line, so the damage stays in that one line. The layer never panics
//! (a `Debug` impl that returns an error leaves its partial text), never
//! fails the instrumented code, and reports its own problems (a closed
//! stdout, an identity recorded too late) on stderr once each. Start and
//! terminal events come exactly once per stage, also with async stages
//! moving between threads and with span ids reused after close.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | yes | the layer, the schema types, `init`: depends on `tracing`, `tracing-subscriber`, `serde`, `serde_json`, `time`, `thiserror` |
//! | `reference` | no | the `reference` module: the reference job-application pipeline (tokio, clap), run by `examples/job_pipeline.rs` |
//! | `runner` | no | the `runner` module and the `pipeline-runner` binary: runs pipelines as child processes and streams their lines over SSE to a live page (tokio, axum) |
//! | `view` | no | the `view` module and the `pipeline-view` binary: watch a run in a terminal, from stdin, a command or a runner's job URL (indicatif, ureq; no tokio) |
//! | `otel` | no | `trace_id`/`span_id` on every line inside a span `tracing-opentelemetry` tracks; [`init`] and [`init_guarded`] exporting stage spans over OTLP/HTTP and to LangSmith (opentelemetry 0.33, tracing-opentelemetry 0.34, reqwest with rustls) |
//!
//! # Minimum supported Rust version
//!
//! 1.88, the `rust-version` of the newest dependency the lockfile resolves
//! (`time` 0.3.55). CI builds with the one toolchain the build machines have
//! (1.95), so older compilers are not exercised.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod event;
mod filter;
mod init;
mod layer;
#[cfg(feature = "otel")]
mod otel;
mod stage;

/// The event schema and the lifecycle rules, key by key: the contract of
/// the lines the layer writes (the same page as `docs/schema.md`).
#[doc = include_str!("../docs/schema.md")]
pub mod schema {}

#[cfg(feature = "reference")]
#[cfg_attr(docsrs, doc(cfg(feature = "reference")))]
pub mod reference;

#[cfg(feature = "runner")]
#[cfg_attr(docsrs, doc(cfg(feature = "runner")))]
pub mod runner;

#[cfg(feature = "view")]
#[cfg_attr(docsrs, doc(cfg(feature = "view")))]
pub mod view;

pub use config::{
    Config, ConfigWarning, Format, OtelConfig, OtlpDestination, LANGSMITH_DEFAULT_ENDPOINT,
};
pub use event::{EventKind, Level, PipelineEvent, Status, UnknownEventKind};
pub use filter::{keep_stages, KeepStages};
pub use init::{
    init, init_guarded, try_init, try_init_guarded, FlushGuard, InitError, FLUSH_TIMEOUT,
};
pub use layer::panic::install_hook as install_panic_hook;
pub use layer::PipelineLayer;
pub use stage::{Stage, StageExt, CANCELLED};
