//! The runner service (feature `runner`): runs a pipeline command as a child
//! process per job and streams its lines to a web page over Server-Sent Events.
//!
//! The data flows top to bottom through these modules:
//!
//! * [`classify`]: one line of child output → a structured event or `output`
//!   (pure functions, table-tested);
//! * `job`: one child process: reads its pipes, numbers its lines, appends
//!   them to the job's log file, tracks stage states, records its end;
//! * `store`: the data directory: log files, job metadata, the stage
//!   catalogue, and loading it all back after a restart;
//! * `sse`: replay-then-follow streams with `Last-Event-ID`;
//! * [`app`]: the HTTP surface as an axum [`Router`](axum::Router);
//!   [`serve`] runs it on a listener with graceful shutdown.
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
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

mod api;
pub mod classify;
mod job;
mod page;
mod sse;
mod store;

pub use api::app;

use job::Job;
use store::{DataDir, StageCatalog};

/// What can go wrong in the runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// A job id that is empty, longer than 64 bytes, or has a character
    /// outside `[A-Za-z0-9_-]`.
    #[error("invalid job id: use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidJobId,
    /// A job with this id exists already (running or in the data directory).
    #[error("job {0} already exists")]
    DuplicateJob(String),
    /// No job has this id.
    #[error("no job {0}")]
    UnknownJob(String),
    /// Cancelling a job that has already ended.
    #[error("job {0} has already finished")]
    AlreadyFinished(String),
    /// A new job was requested while the runner is shutting down.
    #[error("the runner is shutting down")]
    ShuttingDown,
    /// The runner was given an empty command.
    #[error("the pipeline command is empty")]
    EmptyCommand,
    /// The data directory cannot be created, read or written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Another runner (in this or another process) has the data directory
    /// open: two runners would number and write the same jobs' lines.
    #[error("data directory {0} is in use by another runner (its lock file .lock is held)")]
    DataDirInUse(PathBuf),
}

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

/// Checks a job id: 1 to 64 characters of `[A-Za-z0-9_-]`. Such an id is safe
/// as a file name, in a URL and in an environment variable.
pub fn validate_job_id(id: &str) -> Result<(), RunnerError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RunnerError::InvalidJobId)
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
    /// Host names (besides IP addresses and `localhost`) that requests may
    /// name in their `Host` header: see [`Runner::allow_hosts`].
    allowed_hosts: std::sync::RwLock<Vec<String>>,
}

#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, Arc<Job>>,
    /// Oldest first.
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
        for job in store::load_jobs(&data, &catalog)? {
            let job = Arc::new(job);
            jobs.by_id.insert(job.id().to_owned(), Arc::clone(&job));
            jobs.order.push(job);
        }
        Ok(Arc::new(Runner {
            command,
            data,
            catalog,
            jobs: Mutex::new(jobs),
            shutdown: watch::Sender::new(false),
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
        )?;
        jobs.by_id.insert(id.clone(), Arc::clone(&job));
        jobs.order.push(job);
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

    pub(crate) fn catalog(&self) -> &StageCatalog {
        &self.catalog
    }

    fn lock_jobs(&self) -> MutexGuard<'_, Jobs> {
        // A panic while holding the lock leaves the map consistent enough.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long open connections get to finish after every job has stopped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's head (its request line
/// and headers). A slower one (a stalled or "slowloris" client) is cut off,
/// so it cannot hold a connection open without asking for anything.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves [`app`] on `listener` until `shutdown` completes; then stops every
/// running job (see [`Runner::shutdown`]) and waits for open connections to
/// finish (each event stream ends once its job has ended).
///
/// A client must send each request's head within [`HEADER_READ_TIMEOUT`].
/// A client that stopped reading would hold its stream, and so the
/// shutdown, open forever; connections still open 5 s after the jobs have
/// stopped are therefore abandoned and `serve` returns. (Their tasks end
/// when the client goes away or the tokio runtime is dropped, as when
/// `pipeline-runner` exits.)
pub async fn serve(
    listener: tokio::net::TcpListener,
    runner: Arc<Runner>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let app = app(Arc::clone(&runner));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connections = GracefulShutdown::new();
    let stop = async move {
        shutdown.await;
        runner.shutdown().await;
    };
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go
                    // on accepting rather than end the service.
                    eprintln!("pipeline-runner: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = connections.watch(conn);
        tokio::spawn(async move {
            // A connection's own errors (a reset, a timed-out head) end
            // that connection only.
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(CLOSE_GRACE) => {
            eprintln!(
                "pipeline-runner: closing connections still open {}s after shutdown",
                CLOSE_GRACE.as_secs()
            );
        }
    }
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Now as RFC 3339 in UTC with milliseconds: `2025-11-29T10:30:45.123Z`.
pub(crate) fn now_timestamp() -> String {
    // The layer's own formatting: one definition of the wire timestamp.
    crate::layer::timestamp(std::time::SystemTime::now())
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
