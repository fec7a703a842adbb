//! The reference job-application pipeline (feature `reference`).
//!
//! Eight stages, each an ordinary async function run inside its own span with
//! a `layer` field (with [`StageExt::stage`](crate::StageExt::stage), so that
//! a stage cut off by `--stage-timeout` ends as cancelled), inside one
//! `pipeline` span per job. The stages simulate their work with sleeps and a
//! few `info!`/`debug!` events; command-line flags inject failures, aborts,
//! panics, skips and hangs so that every lifecycle event of the schema can be
//! produced on demand.
//!
//! This module is the one copy of the pipeline: `examples/job_pipeline.rs`
//! calls [`main`], and so does the runner's `pipeline-runner` binary when it
//! runs the reference pipeline as its child process.
//!
//! | stage | layer | notes |
//! |---|---|---|
//! | `pain_point_miner` | 2 | |
//! | `star_selector` | 2.5 | |
//! | `company_researcher` | 3 | runs concurrently with `role_researcher` |
//! | `role_researcher` | 3 | |
//! | `opportunity_mapper` | 4 | records `fit_score` late; `tokens_used = 1200` |
//! | `people_mapper` | 5 | |
//! | `generator` | 6 | |
//! | `publisher` | 7 | |

use std::ffi::OsString;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::FutureExt;
use tracing::field::Empty;
use tracing::{debug, info, info_span, warn, Instrument, Span};

use crate::StageExt as _;

/// The names of the reference pipeline's stages, in the order they run.
pub const STAGES: [&str; 8] = [
    "pain_point_miner",
    "star_selector",
    "company_researcher",
    "role_researcher",
    "opportunity_mapper",
    "people_mapper",
    "generator",
    "publisher",
];

/// Command-line options of the reference pipeline.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "job_pipeline",
    about = "Runs the reference job-application pipeline and prints its structured events.",
    after_help = "Environment: JOB_ID (default job id), STRUCTURED_LOGGING, LOG_LEVEL, LANGSMITH_LOGGING;\n\
                  with the otel feature also OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_* and TRACEPARENT (see docs/otel.md).\n\
                  Exit status: 0 when every pipeline ends in success or partial, 1 when one ends in error."
)]
#[non_exhaustive]
pub struct Options {
    /// Job id of the pipeline (default: JOB_ID from the environment, else a generated id).
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Run N pipelines concurrently, with ids ID-1 .. ID-N.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: u32,
    /// That stage returns an error (an ERROR event with the error, as `#[instrument(err)]` records it); the pipeline carries on.
    #[arg(long, value_name = "NAME", value_parser = stage_name)]
    pub fail: Vec<String>,
    /// That stage fails and the pipeline stops there (status `error`).
    #[arg(long, value_name = "NAME", value_parser = stage_name)]
    pub abort: Option<String>,
    /// That stage panics; the pipeline carries on.
    #[arg(long, value_name = "NAME", value_parser = stage_name)]
    pub panic: Vec<String>,
    /// That stage is skipped.
    #[arg(long, value_name = "NAME", value_parser = stage_name)]
    pub skip: Vec<String>,
    /// Multiplies every simulated sleep (0 = no sleeping).
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = speed)]
    pub speed: f64,
    /// That stage never finishes (until `--stage-timeout` cuts it off).
    #[arg(long, value_name = "NAME", value_parser = stage_name)]
    pub hang: Vec<String>,
    /// Cut off a stage that runs longer than SECS: it ends in `layer_error`
    /// with error `cancelled`, and the pipeline carries on.
    #[arg(long, value_name = "SECS", value_parser = speed)]
    pub stage_timeout: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            job_id: None,
            jobs: 1,
            fail: Vec::new(),
            abort: None,
            panic: Vec::new(),
            skip: Vec::new(),
            speed: 1.0,
            hang: Vec::new(),
            stage_timeout: None,
        }
    }
}

fn stage_name(s: &str) -> Result<String, String> {
    if STAGES.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!("unknown stage; one of: {}", STAGES.join(", ")))
    }
}

fn speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err("a finite number >= 0".to_owned()),
    }
}

/// How one run of the pipeline ended, as `pipeline_complete` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every stage ran and none failed.
    Success,
    /// Some stage failed, the pipeline went on.
    Partial,
    /// The pipeline stopped at a failed stage.
    Error,
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The failure was requested with `--fail` or `--abort`.
    #[error("{stage} failed: injected failure")]
    Injected {
        /// The stage that failed.
        stage: &'static str,
    },
}

struct Plan {
    options: Options,
}

impl Plan {
    fn sleep(&self, base_ms: u64) -> impl std::future::Future<Output = ()> {
        let ms = (base_ms as f64 * self.options.speed).round() as u64;
        async move {
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    fn has(list: &[String], stage: &str) -> bool {
        list.iter().any(|s| s == stage)
    }

    /// Applies the injected behaviour for `stage`; `Ok(true)` means "skipped".
    fn inject(&self, stage: &'static str) -> Result<bool, StageError> {
        let o = &self.options;
        if Self::has(&o.skip, stage) {
            Span::current().record("skipped", true);
            info!("skipped by request");
            return Ok(true);
        }
        if Self::has(&o.panic, stage) {
            panic!("{stage} panicked: injected panic");
        }
        if Self::has(&o.fail, stage) || o.abort.as_deref() == Some(stage) {
            return Err(StageError::Injected { stage });
        }
        Ok(false)
    }
}

async fn pain_point_miner(plan: &Plan) -> Result<(), StageError> {
    if plan.inject("pain_point_miner")? {
        return Ok(());
    }
    debug!(source = "job_description", "reading the job description");
    plan.sleep(400).await;
    Span::current().record("pain_points", 5);
    info!(pain_points = 5, "mined pain points");
    Ok(())
}

async fn star_selector(plan: &Plan) -> Result<(), StageError> {
    if plan.inject("star_selector")? {
        return Ok(());
    }
    plan.sleep(250).await;
    debug!(candidates = 12, "scoring STAR stories");
    Span::current().record("stars_selected", 3);
    info!(stars_selected = 3, "selected STAR stories");
    Ok(())
}

async fn company_researcher(plan: &Plan) -> Result<(), StageError> {
    if plan.inject("company_researcher")? {
        return Ok(());
    }
    info!(company = "Acme Corp", "researching the company");
    plan.sleep(600).await;
    debug!(sources = 4, "summarised company sources");
    Ok(())
}

async fn role_researcher(plan: &Plan) -> Result<(), StageError> {
    if plan.inject("role_researcher")? {
        return Ok(());
    }
    info!(role = "Staff Engineer", "researching the role");
    plan.sleep(500).await;
    debug!(requirements = 9, "extracted role requirements");
    Ok(())
}

async fn opportunity_mapper(plan: &Plan) -> Result<(), StageError> {
    if plan.inject("opportunity_mapper")? {
        return Ok(());
    }
    plan.sleep(450).await;
    Span::current().record("fit_score", 85);
    info!(fit_score = 85, "mapped the opportunity");
    Ok(())
}

async fn people_mapper(plan: &Plan) -> Result<(), StageError> {
    if plan.inject("people_mapper")? {
        return Ok(());
    }
    plan.sleep(300).await;
    Span::current().record("contacts", 4);
    info!(contacts = 4, "mapped people to contact");
    Ok(())
}

async fn generator(plan: &Plan) -> Result<(), StageError> {
    if plan.inject("generator")? {
        return Ok(());
    }
    debug!(template = "cover_letter", "generating documents");
    plan.sleep(700).await;
    Span::current().record("tokens_used", 3400);
    info!(documents = 2, "generated cover letter and CV");
    Ok(())
}

async fn publisher(plan: &Plan) -> Result<(), StageError> {
    if plan.inject("publisher")? {
        return Ok(());
    }
    plan.sleep(150).await;
    info!(destination = "drive", "published documents");
    Ok(())
}

/// What became of one stage, seen from the pipeline.
enum Step {
    Done,
    Failed,
    Abort(StageError),
}

/// The span of each stage: its name, its `layer` and the fields it records.
fn stage_span(stage: &str) -> Span {
    match stage {
        "pain_point_miner" => info_span!(
            "pain_point_miner",
            layer = 2,
            skipped = Empty,
            pain_points = Empty
        ),
        "star_selector" => info_span!(
            "star_selector",
            layer = 2.5,
            skipped = Empty,
            stars_selected = Empty
        ),
        "company_researcher" => info_span!("company_researcher", layer = 3, skipped = Empty),
        "role_researcher" => info_span!("role_researcher", layer = 3, skipped = Empty),
        "opportunity_mapper" => info_span!(
            "opportunity_mapper",
            layer = 4,
            skipped = Empty,
            fit_score = Empty,
            tokens_used = 1200
        ),
        "people_mapper" => info_span!(
            "people_mapper",
            layer = 5,
            skipped = Empty,
            contacts = Empty
        ),
        "generator" => info_span!("generator", layer = 6, skipped = Empty, tokens_used = Empty),
        _ => info_span!("publisher", layer = 7, skipped = Empty),
    }
}

/// Runs one stage in its span: its error becomes an ERROR event inside it
/// (what `#[instrument(err)]` records), a panic is caught, and with
/// `--stage-timeout` a stage that takes too long is dropped, which the
/// layer reports as cancelled.
async fn step<F>(plan: &Plan, stage: &'static str, fut: F) -> Step
where
    F: std::future::Future<Output = Result<(), StageError>>,
{
    let hang = Plan::has(&plan.options.hang, stage);
    let work = async move {
        if hang {
            std::future::pending::<()>().await;
        }
        let result = fut.await;
        if let Err(e) = &result {
            tracing::error!(error = %e);
        }
        result
    }
    .stage(stage_span(stage));
    let timed = async {
        match plan.options.stage_timeout {
            Some(secs) => tokio::time::timeout(Duration::from_secs_f64(secs), work)
                .await
                .map_err(|_| ()),
            None => Ok(work.await),
        }
    };
    match AssertUnwindSafe(timed).catch_unwind().await {
        Ok(Ok(Ok(()))) => Step::Done,
        Ok(Ok(Err(e))) if plan.options.abort.as_deref() == Some(stage) => Step::Abort(e),
        Ok(Ok(Err(_))) => Step::Failed,
        Ok(Err(())) => {
            warn!(stage, "stage timed out; carrying on");
            Step::Failed
        }
        Err(_) => {
            warn!(stage, "stage panicked; carrying on");
            Step::Failed
        }
    }
}

/// Runs the stages of one job inside the current (pipeline) span.
async fn stages(plan: &Plan) -> Outcome {
    let mut failed = false;
    macro_rules! run {
        ($name:literal, $fut:expr) => {
            match step(plan, $name, $fut).await {
                Step::Done => {}
                Step::Failed => failed = true,
                Step::Abort(e) => {
                    tracing::error!(error = %e, "pipeline aborted");
                    return Outcome::Error;
                }
            }
        };
    }
    info!(stages = STAGES.len(), "pipeline started");
    run!("pain_point_miner", pain_point_miner(plan));
    run!("star_selector", star_selector(plan));
    // Company and role research are independent: run them concurrently.
    let (company, role) = tokio::join!(
        step(plan, "company_researcher", company_researcher(plan)),
        step(plan, "role_researcher", role_researcher(plan)),
    );
    for s in [company, role] {
        match s {
            Step::Done => {}
            Step::Failed => failed = true,
            Step::Abort(e) => {
                tracing::error!(error = %e, "pipeline aborted");
                return Outcome::Error;
            }
        }
    }
    run!("opportunity_mapper", opportunity_mapper(plan));
    run!("people_mapper", people_mapper(plan));
    run!("generator", generator(plan));
    run!("publisher", publisher(plan));
    if failed {
        Outcome::Partial
    } else {
        Outcome::Success
    }
}

/// Runs the reference pipeline for one job, inside a `pipeline` span with
/// that `job_id`. Needs a tokio runtime (any flavour).
pub async fn run_job(job_id: &str, options: &Options) -> Outcome {
    let plan = Plan {
        options: options.clone(),
    };
    let span = info_span!("pipeline", job_id = %job_id, pipeline = "job_application");
    stages(&plan).instrument(span).await
}

/// Runs `options.jobs` pipelines concurrently and returns the worst outcome.
pub async fn run(options: &Options) -> Outcome {
    let base = options
        .job_id
        .clone()
        .or_else(|| std::env::var("JOB_ID").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(generate_job_id);
    if options.jobs == 1 {
        return run_job(&base, options).await;
    }
    let options = Arc::new(options.clone());
    let mut handles = Vec::new();
    for i in 1..=options.jobs {
        let options = Arc::clone(&options);
        let id = format!("{base}-{i}");
        handles.push(tokio::spawn(async move { run_job(&id, &options).await }));
    }
    let mut worst = Outcome::Success;
    for h in handles {
        let outcome = h.await.unwrap_or(Outcome::Error);
        worst = match (worst, outcome) {
            (Outcome::Error, _) | (_, Outcome::Error) => Outcome::Error,
            (Outcome::Partial, _) | (_, Outcome::Partial) => Outcome::Partial,
            _ => Outcome::Success,
        };
    }
    worst
}

/// A 24-hex-digit id from the clock, the process id and a counter.
pub fn generate_job_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}{:08x}{:08x}",
        (nanos / 1_000_000_000) as u32,
        std::process::id() ^ (nanos as u32),
        n as u32
    )
}

/// The whole program: parses `args` (the first item is the program name),
/// installs the layer with [`crate::init_guarded`] (so that exported spans
/// are sent before it exits), runs the pipelines on a tokio
/// runtime and returns the exit status (0 for `success`/`partial`, 1 for
/// `error`, 2 for bad arguments).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let options = match Options::try_parse_from(args) {
        Ok(o) => o,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Kept to the end: with OpenTelemetry export on, dropping it sends the
    // last spans (waiting at most `FLUSH_TIMEOUT`).
    let _guard = match crate::try_init_guarded() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("job_pipeline: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("job_pipeline: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&options)) {
        Outcome::Success | Outcome::Partial => ExitCode::SUCCESS,
        Outcome::Error => ExitCode::from(1),
    }
}
