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
//! * `sse`: replay-then-follow streams with `Last-Event-ID`, one job per
//!   connection or many jobs on one;
//! * `params`: strict query-string parsing;
//! * [`app`]: the HTTP surface as an axum [`Router`](axum::Router);
//! * [`serve`]: runs it on a listener with graceful shutdown.
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
//! the runner behind a reverse proxy.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

mod api;
pub mod classify;
mod error;
mod job;
mod joblog;
mod model;
#[cfg(feature = "nats")]
pub mod nats;
mod page;
mod params;
mod server;
mod sse;
mod store;

pub use api::app;
pub use error::RunnerError;
pub use model::validate_job_id;
pub use server::{serve, shutdown_signal, HEADER_READ_TIMEOUT};

use job::{Job, ListSender};
#[cfg(test)]
use model::now_timestamp;
use model::{Outcome, Summary};
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

/// The service's state: the fixed pipeline command, the data directory and
/// every job, running or past. Shared by all requests as `Arc<Runner>`.
#[derive(Debug)]
pub struct Runner {
    command: Vec<OsString>,
    data: DataDir,
    catalog: Arc<StageCatalog>,
    jobs: Mutex<Jobs>,
    shutdown: watch::Sender<bool>,
    list_events: ListSender,
    /// Host names (besides IP addresses and `localhost`) that requests may
    /// name in their `Host` header: see [`Runner::allow_hosts`].
    allowed_hosts: std::sync::RwLock<Vec<String>>,
}

#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, Arc<Job>>,
    /// Oldest first, by start time, then id.
    order: Vec<Arc<Job>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Runner {
    /// Opens (or creates) the data directory, loads the jobs recorded there
    /// (a job that was running when the last runner stopped is marked
    /// `interrupted`), and returns a runner that runs `command` for each job.
    /// Fails early when the directory cannot be written.
    pub fn open(
        command: Vec<OsString>,
        data_dir: impl Into<PathBuf>,
    ) -> Result<Arc<Runner>, RunnerError> {
        if command.is_empty() {
            return Err(RunnerError::EmptyCommand);
        }
        let data = DataDir::open(data_dir.into())?;
        let catalog = Arc::new(StageCatalog::load(&data)?);
        let mut jobs = Jobs::default();
        for loaded in store::load_jobs(&data, &catalog)? {
            let job = Arc::new(Job::past(loaded));
            jobs.by_id.insert(job.id().to_owned(), Arc::clone(&job));
            jobs.order.push(job);
        }
        Ok(Arc::new(Runner {
            command,
            data,
            catalog,
            jobs: Mutex::new(jobs),
            shutdown: watch::Sender::new(false),
            list_events: broadcast::channel(LIST_EVENTS).0,
            allowed_hosts: std::sync::RwLock::new(Vec::new()),
        }))
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
        self.data.path()
    }

    /// Starts a job with `id` (a generated one when `None`) and returns its id.
    pub fn start_job(&self, id: Option<String>) -> Result<String, RunnerError> {
        let id = match id {
            Some(id) => {
                validate_job_id(&id)?;
                id
            }
            None => crate::reference::generate_job_id(),
        };
        let mut jobs = self.lock_jobs();
        if *self.shutdown.borrow() {
            return Err(RunnerError::ShuttingDown);
        }
        if jobs.by_id.contains_key(&id) {
            return Err(RunnerError::DuplicateJob(id));
        }
        let (job, task) = job::start(
            &id,
            &self.command,
            &self.data,
            Arc::clone(&self.catalog),
            self.shutdown.subscribe(),
            self.list_events.clone(),
        )?;
        jobs.by_id.insert(id.clone(), Arc::clone(&job));
        let key = (job.started_at(), job.id());
        let at = jobs
            .order
            .partition_point(|j| (j.started_at(), j.id()) <= key);
        jobs.order.insert(at, job);
        jobs.tasks.retain(|t| !t.is_finished());
        jobs.tasks.push(task);
        Ok(id)
    }

    /// Asks a running job to stop; it is recorded as ended with error `cancelled`.
    pub fn cancel_job(&self, id: &str) -> Result<(), RunnerError> {
        let job = self.job(id)?;
        if job.cancel() {
            Ok(())
        } else {
            Err(RunnerError::AlreadyFinished(id.to_owned()))
        }
    }

    /// Stops every running job (each is recorded as ended with error
    /// `runner shut down`), waits until their ends are written, and refuses
    /// new jobs from then on.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut self.lock_jobs().tasks);
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

    /// The number of jobs, running or past.
    pub(crate) fn job_count(&self) -> usize {
        self.lock_jobs().order.len()
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
                let key = (job.started_at(), job.id());
                jobs.partition_point(|j| (j.started_at(), j.id()) < key)
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
        self.list_events.subscribe()
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

    pub(crate) fn catalog(&self) -> &StageCatalog {
        &self.catalog
    }

    fn lock_jobs(&self) -> MutexGuard<'_, Jobs> {
        // A panic while holding the lock leaves the map consistent enough.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
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
