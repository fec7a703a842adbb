//! The runner service (feature `runner`): runs a pipeline command as a child
//! process per job and streams its lines to a web page over Server-Sent Events.
//!
//! The data flows top to bottom through these modules, from the child's
//! pipes to the web client, and each imports only those above it:
//!
//! * [`classify`]: one line of child output → a structured event or `output`
//!   (pure functions, table-tested);
//! * `model`: what a job is as the API shows it: phase, outcome, stage
//!   states, and the tracker that derives them from the job's lines and
//!   ends a job by closing its open stages (pure, unit-tested);
//! * `joblog`: one job's log file: numbering, the offset index, reading it
//!   back, recovering one cut off by a crash;
//! * `store`: the data directory: where each job's files live, its
//!   metadata, the stage catalogue, and loading it all back after a restart;
//! * `job`: one child process: reads its pipes, records its lines, keeps
//!   the live state, records its end;
//! * `options`: [`RunnerOptions`], the settings behind the binary's flags;
//! * `trace`: the W3C trace context each child gets as `TRACEPARENT`;
//! * `stats`: what a finished job contributes to the statistics, the
//!   running totals, the per-stage window of `GET /api/stages`, and the
//!   record of deleted jobs;
//! * `retention`: which finished jobs `--keep-jobs`/`--keep-days` delete;
//! * `sse`: replay-then-follow streams with `Last-Event-ID`, one job per
//!   connection or many jobs on one;
//! * `params`: strict query-string parsing;
//! * [`app`]: the HTTP surface as an axum [`Router`](axum::Router);
//! * `metrics` (feature `metrics`): `GET /metrics` in the Prometheus text
//!   format;
//! * [`serve`]: runs it on a listener with graceful shutdown.
//!
//! The [`Runner`] owns the jobs and the queue: at most
//! [`RunnerOptions::max_running`] children run at once, the rest wait in
//! order.
//!
//! The runner logs through `tracing` (the `pipeline-runner` binary writes
//! those records to stderr).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tracing_pipeline::runner::{serve, shutdown_signal, Runner};
//!
//! let runner = Runner::open(vec!["./my-pipeline".into()], "./pipeline-runner-data")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! serve(listener, runner, shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! `docs/runner.md` describes the HTTP API, the data directory and how to put
//! the runner behind a reverse proxy; `docs/metrics.md` the metrics.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

mod api;
pub mod classify;
mod error;
mod job;
mod joblog;
#[cfg(feature = "metrics")]
mod metrics;
mod model;
#[cfg(feature = "nats")]
pub mod nats;
mod options;
mod page;
mod params;
mod remote;
mod retention;
mod server;
mod sse;
mod stats;
mod store;
mod trace;

pub use api::app;
pub use error::RunnerError;
pub use model::validate_job_id;
pub use options::{RunnerOptions, MAX_TOKENS};
pub use server::{serve, shutdown_signal, HEADER_READ_TIMEOUT};

#[cfg(feature = "nats")]
pub(crate) use job::Mirror;
use job::{Job, ListSender};
#[cfg(test)]
use model::now_timestamp;
pub(crate) use model::{Outcome, Phase, StageState, Summary};
use options::BadTokens;
pub(crate) use remote::Remote;
#[cfg(any(feature = "nats", test))]
pub(crate) use remote::RemoteFuture;
use stats::{DeletedLog, JobRecord, Totals};
use store::{DataDir, StageCatalog};

/// Job-list changes kept for a slow watcher before it gets the whole list.
const LIST_EVENTS: usize = 256;

/// The name part of a `Host` header value: `[::1]:8000` → `::1`,
/// `127.0.0.1:8000` → `127.0.0.1`, `example.com` → `example.com`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The runner's health counters (they feed `GET /metrics`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sse_clients: AtomicI64,
    pub(crate) lines_received: AtomicU64,
    pub(crate) lines_stored: AtomicU64,
    pub(crate) bytes_stored: AtomicU64,
    pub(crate) write_errors: AtomicU64,
}

/// What every job of a runner shares: its settings, the data directory,
/// the stage catalogue, the job list's watchers, the statistics.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) options: RunnerOptions,
    pub(crate) data: DataDir,
    pub(crate) catalog: StageCatalog,
    pub(crate) list_events: ListSender,
    pub(crate) counters: Counters,
    /// Totals over every finished job, deleted ones included.
    pub(crate) totals: Mutex<Totals>,
    /// Deleted jobs' records.
    pub(crate) deleted: Mutex<DeletedLog>,
    /// Stage names whose bad tokens value has been reported.
    bad_tokens: Mutex<HashSet<String>>,
    runner: Weak<Runner>,
}

impl Shared {
    /// Called by a job's task once its end is recorded.
    fn job_ended(&self, job: &Job, was_running: bool) {
        let record = job.record(true);
        lock(&self.totals).add(&record, false);
        if let Some(runner) = self.runner.upgrade() {
            if was_running {
                let mut jobs = runner.lock_jobs();
                jobs.running = jobs.running.saturating_sub(1);
            }
            runner.dispatch();
            runner.apply_retention();
        }
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    /// Called by a mirrored job's [`Mirror`] once its end is recorded;
    /// `prior` is the phase it had here until then.
    fn mirror_ended(&self, job: &Job, prior: Phase) {
        let record = job.record(true);
        lock(&self.totals).add(&record, false);
        if let Some(runner) = self.runner.upgrade() {
            {
                let mut jobs = runner.lock_jobs();
                match prior {
                    Phase::Running => jobs.running = jobs.running.saturating_sub(1),
                    Phase::Queued => {
                        jobs.queue.retain(|j| j.id() != job.id());
                        renumber(&jobs.queue);
                    }
                    _ => {}
                }
            }
            runner.apply_retention();
        }
    }

    fn report_bad_tokens(
        &self,
        job_id: &str,
        stage: &str,
        problem: &BadTokens,
        value: Option<&serde_json::Value>,
    ) {
        let mut seen = lock(&self.bad_tokens);
        if seen.len() < 10_000 && seen.insert(stage.to_owned()) {
            let what = match problem {
                BadTokens::NotANumber => "not a number",
                BadTokens::Negative => "negative",
                BadTokens::TooLarge => "over 1e15",
            };
            tracing::warn!(
                "job {job_id}, stage {stage:?}: {} = {} is {what}: ignored \
                 (reported once per stage)",
                self.options.tokens_field,
                value.map_or_else(String::new, |v| v.to_string()),
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves the data consistent enough.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The service's state: the fixed pipeline command, the data directory and
/// every job, queued, running or past. Shared by all requests as `Arc<Runner>`.
#[derive(Debug)]
pub struct Runner {
    command: Vec<OsString>,
    shared: Arc<Shared>,
    jobs: Mutex<Jobs>,
    shutdown: watch::Sender<bool>,
    /// Host names (besides IP addresses and `localhost`) that requests may
    /// name in their `Host` header: see [`Runner::allow_hosts`].
    allowed_hosts: std::sync::RwLock<Vec<String>>,
    /// Set when the jobs run elsewhere and are mirrored here (a web node).
    remote: Option<Arc<dyn Remote>>,
}

#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, Arc<Job>>,
    /// Oldest first, by creation time, then id.
    order: Vec<Arc<Job>>,
    /// Jobs waiting for a slot, first come first.
    queue: VecDeque<Arc<Job>>,
    /// Jobs whose child is running (or being stopped).
    running: usize,
    tasks: Vec<JoinHandle<()>>,
}

impl Runner {
    /// Opens (or creates) the data directory, loads the jobs recorded there
    /// (a job that was running when the last runner stopped is marked
    /// `interrupted`), and returns a runner that runs `command` for each job,
    /// with the default [`RunnerOptions`].
    /// Fails early when the directory cannot be written.
    pub fn open(
        command: Vec<OsString>,
        data_dir: impl Into<PathBuf>,
    ) -> Result<Arc<Runner>, RunnerError> {
        Runner::open_with(command, data_dir, RunnerOptions::default())
    }

    /// [`Runner::open`] with `options`. Jobs still queued in the data
    /// directory are queued again, in their order, and start once the
    /// runner is served ([`serve`]) or a job is started. Retention runs
    /// once here.
    pub fn open_with(
        command: Vec<OsString>,
        data_dir: impl Into<PathBuf>,
        options: RunnerOptions,
    ) -> Result<Arc<Runner>, RunnerError> {
        if command.is_empty() {
            return Err(RunnerError::EmptyCommand);
        }
        Runner::open_inner(command, data_dir.into(), options, None)
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    /// A runner that runs no children: `remote` runs its jobs, which are
    /// mirrored into `data_dir` (see `remote`).
    pub(crate) fn open_remote(
        data_dir: PathBuf,
        options: RunnerOptions,
        remote: Arc<dyn Remote>,
    ) -> Result<Arc<Runner>, RunnerError> {
        Runner::open_inner(Vec::new(), data_dir, options, Some(remote))
    }

    fn open_inner(
        command: Vec<OsString>,
        data_dir: PathBuf,
        options: RunnerOptions,
        remote: Option<Arc<dyn Remote>>,
    ) -> Result<Arc<Runner>, RunnerError> {
        let options = RunnerOptions {
            max_running: options.max_running.max(1),
            ..options
        };
        let data = if remote.is_some() {
            DataDir::open_cache(data_dir)?
        } else {
            DataDir::open(data_dir)?
        };
        let catalog = StageCatalog::load(&data)?;
        let deleted = DeletedLog::load(data.path()).map_err(|source| RunnerError::DataDir {
            path: data.path().join("deleted.jsonl"),
            source,
        })?;
        let loaded = store::load_jobs(&data, &catalog)?;
        let runner = Arc::new_cyclic(|weak: &Weak<Runner>| {
            let shared = Arc::new(Shared {
                options,
                data,
                catalog,
                list_events: broadcast::channel(LIST_EVENTS).0,
                counters: Counters::default(),
                totals: Mutex::new(Totals::default()),
                deleted: Mutex::new(deleted),
                bad_tokens: Mutex::new(HashSet::new()),
                runner: weak.clone(),
            });
            let mut jobs = Jobs::default();
            let mut totals = lock(&shared.deleted).totals();
            for l in loaded {
                let job = Arc::new(Job::past(l, Arc::clone(&shared)));
                if job.phase() == Phase::Queued {
                    jobs.queue.push_back(Arc::clone(&job));
                } else {
                    totals.add(&job.record(false), true);
                }
                jobs.by_id.insert(job.id().to_owned(), Arc::clone(&job));
                jobs.order.push(job);
            }
            let c = &shared.counters;
            c.lines_received.store(totals.lines, Ordering::Relaxed);
            c.lines_stored.store(totals.lines, Ordering::Relaxed);
            c.bytes_stored.store(totals.bytes, Ordering::Relaxed);
            *lock(&shared.totals) = totals;
            renumber(&jobs.queue);
            Runner {
                command,
                shared,
                jobs: Mutex::new(jobs),
                shutdown: watch::Sender::new(false),
                allowed_hosts: std::sync::RwLock::new(Vec::new()),
                remote,
            }
        });
        runner.apply_retention();
        Ok(runner)
    }

    /// The runner's settings.
    pub fn options(&self) -> &RunnerOptions {
        &self.shared.options
    }

    /// Adds host names that requests may carry in their `Host` header.
    ///
    /// By default only IP addresses and `localhost` are accepted: a web
    /// page on another site that makes its own domain name resolve to
    /// 127.0.0.1 (DNS rebinding) sends that name as `Host` and is refused.
    /// Behind a reverse proxy that passes its public name on, allow that
    /// name here (`pipeline-runner --allow-host NAME`). Names are compared
    /// without the port, ignoring ASCII case.
    pub fn allow_hosts<I, S>(&self, hosts: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Ok(mut allowed) = self.allowed_hosts.write() {
            allowed.extend(hosts.into_iter().map(|h| h.into().to_ascii_lowercase()));
        }
    }

    /// Whether a request's `Host` header value may be served.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        self.allowed_hosts
            .read()
            .map(|allowed| allowed.iter().any(|a| a.eq_ignore_ascii_case(name)))
            .unwrap_or(false)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.shared.data.path()
    }

    /// Creates a job with `id` (a generated one when `None`) and returns its
    /// id. It starts at once when fewer than
    /// [`max_running`](RunnerOptions::max_running) jobs run, and waits as
    /// `queued` otherwise. Must be called within a tokio runtime.
    pub fn start_job(&self, id: Option<String>) -> Result<String, RunnerError> {
        self.create_job(id, None)
    }

    /// Starts a new job that re-runs the finished job `original` (the same
    /// command; the new job's `rerun_of` names the original).
    pub fn rerun_job(&self, original: &str, id: Option<String>) -> Result<String, RunnerError> {
        let job = self.job(original)?;
        if matches!(job.phase(), Phase::Running | Phase::Queued) {
            return Err(RunnerError::NotFinished(original.to_owned()));
        }
        self.create_job(id, Some(original.to_owned()))
    }

    fn create_job(
        &self,
        id: Option<String>,
        rerun_of: Option<String>,
    ) -> Result<String, RunnerError> {
        let id = match id {
            Some(id) => {
                validate_job_id(&id)?;
                id
            }
            None => crate::reference::generate_job_id(),
        };
        {
            let mut jobs = self.lock_jobs();
            if *self.shutdown.borrow() {
                return Err(RunnerError::ShuttingDown);
            }
            if jobs.by_id.contains_key(&id) {
                return Err(RunnerError::DuplicateJob(id));
            }
            let job = job::create(&id, rerun_of, &self.shared)?;
            jobs.by_id.insert(id.clone(), Arc::clone(&job));
            // Creation times only grow, so this is the end but for ties.
            let key = (job.created_at(), job.id());
            let at = jobs
                .order
                .partition_point(|j| (j.created_at(), j.id()) <= key);
            jobs.order.insert(at, Arc::clone(&job));
            let waits = !jobs.queue.is_empty() || jobs.running >= self.shared.options.max_running;
            jobs.queue.push_back(Arc::clone(&job));
            renumber(&jobs.queue);
            if waits {
                // Under the jobs' lock, which `dispatch` holds to start a
                // job: watchers hear `queued` before `running`. A job that
                // starts at once is announced once, running.
                job::announce_queued(&job);
            }
        }
        self.dispatch();
        Ok(id)
    }

    /// Starts queued jobs while slots are free (not once shutting down,
    /// nor outside a tokio runtime).
    pub(crate) fn dispatch(&self) {
        if self.remote.is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut jobs = self.lock_jobs();
        let mut changed = false;
        while !*self.shutdown.borrow() && jobs.running < self.shared.options.max_running {
            let Some(job) = jobs.queue.pop_front() else {
                break;
            };
            changed = true;
            jobs.running += 1;
            let task = job::launch(&job, &self.command, self.shutdown.subscribe());
            jobs.tasks.retain(|t| !t.is_finished());
            jobs.tasks.push(task);
        }
        if changed {
            renumber(&jobs.queue);
        }
    }

    /// Asks a running job to stop (it is recorded as ended with error
    /// `cancelled`), or takes a queued job out of the queue (it ends
    /// `cancelled` without having started).
    pub fn cancel_job(&self, id: &str) -> Result<(), RunnerError> {
        let job = self.job(id)?;
        {
            let mut jobs = self.lock_jobs();
            if let Some(i) = jobs.queue.iter().position(|j| j.id() == id) {
                jobs.queue.remove(i);
                renumber(&jobs.queue);
                job.set_queue_position(None);
                let task = job::end_unstarted(&job);
                jobs.tasks.push(task);
                return Ok(());
            }
        }
        if job.cancel() {
            Ok(())
        } else {
            Err(RunnerError::AlreadyFinished(id.to_owned()))
        }
    }

    /// Deletes a finished job: its directory, its place in the list. Its
    /// statistics stay in the totals and the stage window. Streams of its
    /// lines end; the job list's watchers get `{"job_id":ID,"deleted":true}`.
    pub fn delete_job(&self, id: &str) -> Result<(), RunnerError> {
        validate_job_id(id)?;
        let job = {
            let mut jobs = self.lock_jobs();
            let job = jobs
                .by_id
                .get(id)
                .cloned()
                .ok_or_else(|| RunnerError::UnknownJob(id.to_owned()))?;
            if matches!(job.phase(), Phase::Running | Phase::Queued) {
                return Err(RunnerError::NotFinished(id.to_owned()));
            }
            jobs.by_id.remove(id);
            jobs.order.retain(|j| j.id() != id);
            job
        };
        let record = job.record(false);
        if let Err(e) = lock(&self.shared.deleted).push(record) {
            tracing::error!("cannot record deleted job {id} in deleted.jsonl: {e}");
        }
        job.mark_deleted();
        if let Err(e) = self.shared.data.remove_job(id) {
            tracing::error!("{e}");
        }
        let note = serde_json::json!({ "job_id": id, "deleted": true }).to_string();
        let _ = self.shared.list_events.send(note.into());
        Ok(())
    }

    /// Deletes the finished jobs that `--keep-jobs` / `--keep-days` no
    /// longer keep. Never a queued or running job.
    pub(crate) fn apply_retention(&self) {
        let options = &self.shared.options;
        if options.keep_jobs.is_none() && options.keep_days.is_none() {
            return;
        }
        let finished: Vec<(String, Option<u64>)> = self
            .lock_jobs()
            .order
            .iter()
            .filter(|j| !matches!(j.phase(), Phase::Running | Phase::Queued))
            .map(|j| {
                let at = j
                    .finished_at()
                    .as_deref()
                    .or(Some(j.created_at()))
                    .and_then(model::parse_timestamp_ms);
                (j.id().to_owned(), at)
            })
            .collect();
        let doomed = retention::to_delete(
            &finished,
            options.keep_jobs,
            options.keep_days,
            model::now_ms(),
        );
        if let Some(remote) = &self.remote {
            // Deleted on the broker; the deletion comes back to every
            // node's mirror, this one's included.
            if tokio::runtime::Handle::try_current().is_err() {
                return;
            }
            let remote = Arc::clone(remote);
            tokio::spawn(async move {
                for id in doomed {
                    match remote.delete(&id).await {
                        Ok(()) => tracing::info!("retention: deleted job {id}"),
                        Err(RunnerError::UnknownJob(_)) => {}
                        Err(e) => tracing::warn!("retention: job {id}: {e}"),
                    }
                }
            });
            return;
        }
        for id in doomed {
            match self.delete_job(&id) {
                Ok(()) => tracing::info!("retention: deleted job {id}"),
                Err(RunnerError::UnknownJob(_)) => {}
                Err(e) => tracing::warn!("retention: job {id}: {e}"),
            }
        }
    }

    /// Stops every running job (each is recorded as ended with error
    /// `runner shut down`), waits until their ends are written, and refuses
    /// new jobs from then on. Queued jobs stay queued in the data
    /// directory (the next runner on it starts them); their streams end.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let (tasks, queued) = {
            let mut jobs = self.lock_jobs();
            (std::mem::take(&mut jobs.tasks), jobs.queue.clone())
        };
        for job in queued {
            job.close_streams();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    pub(crate) fn job(&self, id: &str) -> Result<Arc<Job>, RunnerError> {
        validate_job_id(id)?;
        self.lock_jobs()
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| RunnerError::UnknownJob(id.to_owned()))
    }

    /// Every job, newest first.
    pub(crate) fn jobs_newest_first(&self) -> Vec<Arc<Job>> {
        let mut list = self.lock_jobs().order.clone();
        list.reverse();
        list
    }

    /// The number of jobs, queued, running or past.
    pub(crate) fn job_count(&self) -> usize {
        self.lock_jobs().order.len()
    }

    /// `(running, queued)` now.
    pub(crate) fn load(&self) -> (usize, usize) {
        let jobs = self.lock_jobs();
        (jobs.running, jobs.queue.len())
    }

    /// Statistics records of every finished job: stored ones and the
    /// recent deleted ones.
    pub(crate) fn records(&self) -> Vec<JobRecord> {
        let stored: Vec<Arc<Job>> = self.lock_jobs().order.clone();
        let mut records: Vec<JobRecord> = stored
            .iter()
            .filter(|j| !matches!(j.phase(), Phase::Running | Phase::Queued))
            .map(|j| j.record(false))
            .collect();
        records.extend(lock(&self.shared.deleted).recent.iter().cloned());
        records
    }

    /// One page of the job list, newest first: the jobs older than `before`
    /// (all when `None`) whose outcome is in `outcomes` (any when empty) and
    /// whose id contains `q`; at most `limit`. Also returns the id to ask
    /// for the next page with, if more match, and how many match in all.
    pub(crate) fn list_page(
        &self,
        limit: usize,
        before: Option<&str>,
        outcomes: &[Outcome],
        q: Option<&str>,
    ) -> Result<(Vec<Summary>, Option<String>, usize), RunnerError> {
        let jobs = self.lock_jobs().order.clone();
        let end = match before {
            None => jobs.len(),
            Some(id) => {
                let job = self.job(id).map_err(|e| match e {
                    RunnerError::UnknownJob(_) => RunnerError::BadParameter {
                        name: "before".into(),
                        problem: format!("no job {id}"),
                    },
                    other => other,
                })?;
                let key = (job.created_at(), job.id());
                jobs.partition_point(|j| (j.created_at(), j.id()) < key)
            }
        };
        let matches = |s: &Summary| {
            (outcomes.is_empty() || outcomes.contains(&s.outcome))
                && q.is_none_or(|q| s.job_id.contains(q))
        };
        let mut total = 0;
        let mut page = Vec::new();
        let mut more = false;
        for (i, job) in jobs.iter().enumerate().rev() {
            let summary = job.summary();
            if !matches(&summary) {
                continue;
            }
            total += 1;
            if i >= end {
                continue;
            }
            if page.len() < limit {
                page.push(summary);
            } else {
                more = true;
            }
        }
        let next = if more {
            page.last().map(|s| s.job_id.clone())
        } else {
            None
        };
        Ok((page, next, total))
    }

    /// A receiver of job-list changes: each a job's summary as JSON.
    pub(crate) fn list_events(&self) -> broadcast::Receiver<Arc<str>> {
        self.shared.list_events.subscribe()
    }

    /// Every job's summary as JSON, newest first.
    pub(crate) fn summaries_json(&self) -> Vec<Arc<str>> {
        self.jobs_newest_first()
            .iter()
            .filter_map(|j| serde_json::to_string(&j.summary()).ok())
            .map(Arc::from)
            .collect()
    }

    /// Becomes `true` when the runner starts shutting down.
    pub(crate) fn shutdown_flag(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Who runs this runner's jobs, when they run elsewhere (a web node).
    pub(crate) fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.remote.as_ref()
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    /// The mirror of job `s.job_id` as the broker has it now (`s`: its
    /// summary; `stages`: those its end recorded, once ended): created when
    /// it is new here (`true`), moved from queued to running when it has
    /// started. Its end is recorded by its [`Mirror`].
    pub(crate) fn mirror(
        &self,
        s: &Summary,
        stages: Vec<StageState>,
    ) -> Result<(Arc<Job>, bool), RunnerError> {
        let mut jobs = self.lock_jobs();
        if let Some(job) = jobs.by_id.get(&s.job_id).cloned() {
            if s.state != Phase::Queued && job.mirror_update(s) {
                jobs.queue.retain(|j| j.id() != s.job_id);
                renumber(&jobs.queue);
                jobs.running += 1;
                lock(&self.shared.totals).jobs_started += 1;
            }
            return Ok((job, false));
        }
        let job = job::create_mirror(s, stages, &self.shared)?;
        jobs.by_id.insert(s.job_id.clone(), Arc::clone(&job));
        let key = (job.created_at(), job.id());
        let at = jobs
            .order
            .partition_point(|j| (j.created_at(), j.id()) <= key);
        jobs.order.insert(at, Arc::clone(&job));
        match s.state {
            Phase::Queued => {
                let at = jobs
                    .queue
                    .partition_point(|j| (j.created_at(), j.id()) <= key);
                jobs.queue.insert(at, Arc::clone(&job));
                renumber(&jobs.queue);
            }
            Phase::Running => {
                jobs.running += 1;
                lock(&self.shared.totals).jobs_started += 1;
            }
            _ => {}
        }
        Ok((job, true))
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    /// Forgets a mirrored job the broker no longer has: as
    /// [`Runner::delete_job`], whatever its phase.
    pub(crate) fn mirror_forget(&self, id: &str) {
        let job = {
            let mut jobs = self.lock_jobs();
            let Some(job) = jobs.by_id.remove(id) else {
                return;
            };
            jobs.order.retain(|j| j.id() != id);
            let before = jobs.queue.len();
            jobs.queue.retain(|j| j.id() != id);
            if jobs.queue.len() != before {
                renumber(&jobs.queue);
            } else if job.phase() == Phase::Running {
                jobs.running = jobs.running.saturating_sub(1);
            }
            job
        };
        if !matches!(job.phase(), Phase::Running | Phase::Queued) {
            if let Err(e) = lock(&self.shared.deleted).push(job.record(false)) {
                tracing::error!("cannot record deleted job {id} in deleted.jsonl: {e}");
            }
        }
        job.mark_deleted();
        job.close_streams();
        if let Err(e) = self.shared.data.remove_job(id) {
            tracing::error!("{e}");
        }
        let note = serde_json::json!({ "job_id": id, "deleted": true }).to_string();
        let _ = self.shared.list_events.send(note.into());
    }

    fn lock_jobs(&self) -> MutexGuard<'_, Jobs> {
        lock(&self.jobs)
    }
}

/// Tells each queued job its 1-based place.
fn renumber(queue: &VecDeque<Arc<Job>>) {
    for (i, job) in queue.iter().enumerate() {
        job.set_queue_position(Some(i as u64 + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        for ok in ["a", "A-z_09", &"x".repeat(64), "6929c97b"] {
            assert!(validate_job_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "..",
            "%2e%2e",
            "a b",
            "a/b",
            "é",
            "a\0",
            &"x".repeat(65),
            &"x".repeat(10_000),
        ] {
            assert!(validate_job_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_names() {
        for (host, name) in [
            ("127.0.0.1:8000", "127.0.0.1"),
            ("[::1]:8000", "::1"),
            ("[::1]", "::1"),
            ("localhost", "localhost"),
            ("runner.example.com:443", "runner.example.com"),
            ("evil.example", "evil.example"),
        ] {
            assert_eq!(host_name(host), name, "{host}");
        }
    }

    #[test]
    fn timestamp_shape() {
        let t = now_timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.');
    }
}
