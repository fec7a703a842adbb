//! The worker role: takes jobs from the work queue, runs each with a local
//! [`Runner`] and forwards its lines to the events stream.
//!
//! The local runner does what the single-process runner does (spawn the
//! command with `JOB_ID`, read and classify its lines, number them, store
//! them in its data directory, close the job's open stages at its end); the
//! worker adds three tasks around it:
//!
//! * **taking jobs**: one pull at a time from the shared durable consumer,
//!   only while fewer than `max_running` jobs are in flight. A job is
//!   claimed with a compare-and-set of its state from `queued` to
//!   `running` on this worker, and the request is acked only then; a
//!   request whose claim fails (another worker has it, or it was cancelled
//!   while queued) is acked and dropped, so a redelivered request never runs
//!   twice;
//! * **forwarding**, one task per job: reads the job's stored lines after
//!   the last one the events stream acknowledged and publishes them with
//!   message ids `<job>:<seq>`. While NATS is unreachable the child keeps
//!   running and its lines wait in the data directory; when the connection
//!   returns the task publishes from the last acknowledged line (a line
//!   whose ack was lost is deduplicated by the stream). The job's state
//!   (summary with stage counts and line count) is written at most every
//!   [`STATE_EVERY`], and `finished` only once every line is acknowledged;
//! * **heartbeat, lost workers and cancel**: a liveness entry every third
//!   of `worker_ttl`; every two TTLs (once heartbeats have succeeded for two
//!   TTLs without a break) a sweep that ends the jobs of lost workers
//!   ([`end_lost_jobs`](super::end_lost_jobs)); and a subscription to `pipeline.cancel.*` that cancels
//!   the named job if it runs here (answering a request with `cancelled` or
//!   the reason it could not; a worker that never had the job stays
//!   silent, so the answer comes from the one that has it).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::super::job::Job;
use super::super::joblog::{Record, RecordReader};
use super::super::model::now_timestamp;
use super::super::Runner;
use super::bus::{Bus, BusConfig, JobPhase, JobState, NatsError, WorkerInfo, CANCEL_PREFIX};

/// How often a running job's state is written at most.
const STATE_EVERY: Duration = Duration::from_millis(500);
/// Lines published per round (their acks are awaited together).
const PUBLISH_BATCH: usize = 256;
/// How long a worker that is shutting down keeps trying to publish the
/// lines of its last jobs.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(30);

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where NATS is, and the stream settings.
    pub bus: BusConfig,
    /// The pipeline command run for each job (with `JOB_ID` set).
    pub command: Vec<OsString>,
    /// The local runner's data directory: each job's lines are stored here
    /// before they are published.
    pub data_dir: PathBuf,
    /// Jobs run at once at most.
    pub max_running: usize,
    /// The worker's id (generated when `None`): a job id-like token.
    pub worker_id: Option<String>,
}

/// Runs a worker until `shutdown` completes: then it takes no more jobs,
/// stops its running ones (each ends with error `runner shut down`), and
/// publishes what remains of their lines (for up to 30 s). `ready` is
/// called with the worker id once it is connected and its data directory
/// is open.
pub async fn run_worker(
    config: WorkerConfig,
    ready: impl FnOnce(&str),
    shutdown: impl Future<Output = ()>,
) -> Result<(), NatsError> {
    let worker_id = match config.worker_id.clone() {
        Some(id) => {
            super::super::validate_job_id(&id).map_err(|_| NatsError::Setup {
                what: "worker id".into(),
                problem: format!("{id:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"),
            })?;
            id
        }
        None => format!(
            "{}-{}",
            std::process::id(),
            crate::reference::generate_job_id()
        ),
    };
    let max_running = config.max_running.max(1);
    let bus = Bus::connect(config.bus.clone()).await?;
    let runner = Runner::open(config.command.clone(), &config.data_dir)?;
    let consumer = bus.jobs_consumer().await?;
    let mut cancels = bus
        .client()
        .subscribe(format!("{CANCEL_PREFIX}*"))
        .await
        .map_err(|e| NatsError::Request {
            action: "subscribe to cancel requests".into(),
            reason: e.to_string(),
        })?;
    let running: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let info = WorkerInfo {
        worker: worker_id.clone(),
        started_at: now_timestamp(),
        at: now_timestamp(),
        max_running,
        running: Vec::new(),
    };
    bus.heartbeat(&info).await?;
    // Heartbeats have succeeded without a break since then (None: failing).
    let ok_since = Arc::new(Mutex::new(Some(tokio::time::Instant::now())));
    let heartbeat = {
        let bus = bus.clone();
        let running = Arc::clone(&running);
        let ok_since = Arc::clone(&ok_since);
        let every = (bus.config().worker_ttl / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let info = WorkerInfo {
                    at: now_timestamp(),
                    running: lock(&running).iter().cloned().collect(),
                    ..info.clone()
                };
                let result = bus.heartbeat(&info).await;
                let mut since = lock(&ok_since);
                match result {
                    Ok(()) => {
                        since.get_or_insert_with(tokio::time::Instant::now);
                    }
                    Err(e) => {
                        if since.take().is_some() {
                            tracing::warn!("{e}");
                        }
                    }
                }
            }
        })
    };
    // The lost-worker sweep, every two TTLs, and only after two TTLs of
    // unbroken heartbeats: after a NATS outage every worker has had the
    // time to heartbeat again before anyone is taken for lost.
    let sweeper = {
        let bus = bus.clone();
        let ok_since = Arc::clone(&ok_since);
        let every = 2 * bus.config().worker_ttl;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let healthy = lock(&ok_since).is_some_and(|t| t.elapsed() >= every);
                if healthy {
                    if let Err(e) = super::lost::end_lost_jobs(&bus).await {
                        tracing::debug!("lost-worker sweep: {e}");
                    }
                }
            }
        })
    };
    let cancel_task = {
        let runner = Arc::clone(&runner);
        let client = bus.client().clone();
        tokio::spawn(async move {
            while let Some(message) = cancels.next().await {
                let Some(job_id) = message.subject.as_str().strip_prefix(CANCEL_PREFIX) else {
                    continue;
                };
                let answer = match runner.cancel_job(job_id) {
                    Ok(()) => {
                        tracing::info!("job {job_id}: cancel requested");
                        "cancelled".to_owned()
                    }
                    // Not ours: the worker that ran it answers.
                    Err(super::super::RunnerError::UnknownJob(_)) => continue,
                    Err(e) => e.to_string(),
                };
                if let Some(reply) = message.reply {
                    let _ = client.publish(reply, answer.into()).await;
                }
            }
        })
    };
    // Jobs this worker ran before it stopped (same id, same data
    // directory) that the broker still has as running here: publish the
    // lines that never reached the stream (the local runner has closed
    // each such job as interrupted), then their end.
    let mut forwarders = JoinSet::new();
    for job in runner.jobs_newest_first() {
        let Ok(Some((state, revision))) = bus.job_state(job.id()).await else {
            continue;
        };
        if state.phase != JobPhase::Running || state.worker.as_deref() != Some(&worker_id) {
            continue;
        }
        let sent = bus.last_seq(job.id()).await.unwrap_or(0);
        tracing::info!(
            "job {}: resuming its publishing after line {sent} of {}",
            job.id(),
            job.last_seq()
        );
        let forwarder = Forwarder {
            bus: bus.clone(),
            runner: Arc::clone(&runner),
            job_id: job.id().to_owned(),
            index: state.index.clone(),
            state,
            revision,
            running: Arc::clone(&running),
            sent,
        };
        forwarders.spawn(forwarder.run());
    }
    ready(&worker_id);
    tracing::info!(
        "worker {worker_id}: taking jobs from {} (at most {max_running} at once)",
        bus.config().url
    );

    let slots = Arc::new(Semaphore::new(max_running));
    tokio::pin!(shutdown);
    let mut fetch_failing = false;
    loop {
        while forwarders.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let fetched = tokio::select! {
            batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(1)).messages() => batch,
            () = &mut shutdown => break,
        };
        let message = match fetched {
            Ok(mut batch) => match batch.next().await {
                Some(Ok(m)) => {
                    fetch_failing = false;
                    m
                }
                Some(Err(e)) => {
                    fetch_trouble(&mut fetch_failing, &e).await;
                    continue;
                }
                None => continue,
            },
            Err(e) => {
                fetch_trouble(&mut fetch_failing, &e).await;
                continue;
            }
        };
        let job_id = serde_json::from_slice::<serde_json::Value>(&message.payload)
            .ok()
            .and_then(|v| v.get("job_id").and_then(|j| j.as_str()).map(str::to_owned));
        let Some(job_id) = job_id.filter(|id| super::super::validate_job_id(id).is_ok()) else {
            tracing::warn!("dropping a job request without a valid job_id");
            let _ = message.ack().await;
            continue;
        };
        // A claim whose outcome is unknown (NATS went away during the
        // write and stayed away while it was read back) is tried again
        // until the bucket answers: the write may have been applied, and
        // then this worker is the one the entry names. (Meanwhile the
        // request may come back to another worker, which drops it when the
        // claim was applied, or runs it when it was not; the next try here
        // then finds it taken.)
        let mut claimed = claim(&bus, &job_id, &worker_id).await;
        while let Err(e) = &claimed {
            tracing::warn!("job {job_id}: cannot claim it yet: {e}; trying again");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = &mut shutdown => break,
            }
            claimed = claim(&bus, &job_id, &worker_id).await;
        }
        let (state, revision, fresh) = match claimed {
            Ok(Some(claimed)) => claimed,
            Ok(None) => {
                tracing::info!("job {job_id}: taken elsewhere or no longer queued; skipped");
                let _ = message.ack().await;
                continue;
            }
            // Shutting down with the claim still unknown: not acked, the
            // request comes back after the ack wait.
            Err(_) => break,
        };
        if !fresh && runner.job(&job_id).is_ok() {
            // Already running (or ran) here: a redelivered request.
            let _ = message.ack().await;
            continue;
        }
        if let Err(e) = runner.start_job(Some(job_id.clone())) {
            tracing::error!("job {job_id}: cannot start it: {e}");
            let _ = message.ack().await;
            let failed = JobState {
                phase: JobPhase::Finished,
                summary: Some(serde_json::json!({
                    "job_id": job_id, "state": "finished", "status": "error",
                    "outcome": "error", "reason": e.to_string(),
                    "started_at": now_timestamp(), "lines": 0,
                })),
                stages: Vec::new(),
                index: Vec::new(),
                ..state
            };
            let _ = bus.set_job_state(&failed, revision).await;
            continue;
        }
        if let Err(e) = message.ack().await {
            // The claim already keeps any other worker from running it.
            tracing::warn!("job {job_id}: ack failed: {e}");
        }
        tracing::info!("job {job_id}: started");
        lock(&running).insert(job_id.clone());
        let forwarder = Forwarder {
            bus: bus.clone(),
            runner: Arc::clone(&runner),
            job_id,
            state,
            revision,
            running: Arc::clone(&running),
            index: Vec::new(),
            sent: 0,
        };
        forwarders.spawn(async move {
            forwarder.run().await;
            drop(permit);
        });
    }
    tracing::info!("worker {worker_id}: shutting down");
    runner.shutdown().await;
    if tokio::time::timeout(SHUTDOWN_FLUSH, async {
        while forwarders.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::error!(
            "worker {worker_id}: some lines could not be published within {SHUTDOWN_FLUSH:?}; they stay in {}",
            runner.data_dir().display()
        );
    }
    heartbeat.abort();
    sweeper.abort();
    cancel_task.abort();
    bus.forget_worker(&worker_id).await;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn fetch_trouble(failing: &mut bool, e: &dyn std::fmt::Display) {
    if !std::mem::replace(failing, true) {
        tracing::warn!("cannot take jobs from NATS: {e} (retrying)");
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Moves a job's state from `queued` to `running` on `worker` with a
/// compare-and-set: `None` when it is not queued or another worker won.
/// The flag is false when it was already running on `worker` (a claim
/// whose answer was lost, or a job this worker ran before a restart).
async fn claim(
    bus: &Bus,
    job_id: &str,
    worker: &str,
) -> Result<Option<(JobState, u64, bool)>, NatsError> {
    let Some((state, revision)) = bus.job_state(job_id).await? else {
        return Ok(None);
    };
    if state.phase == JobPhase::Running && state.worker.as_deref() == Some(worker) {
        // Our own claim whose answer was lost (the request came back after
        // the ack wait): it is ours to run.
        return Ok(Some((state, revision, false)));
    }
    if state.phase != JobPhase::Queued {
        return Ok(None);
    }
    let running = JobState {
        phase: JobPhase::Running,
        worker: Some(worker.to_owned()),
        ..state
    };
    match bus.set_job_state(&running, revision).await {
        Ok(won) => Ok(won.map(|rev| (running, rev, true))),
        Err(e) => {
            // The write may have been applied with its answer lost: read
            // back what the bucket says (a few times, if NATS is away).
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                match bus.job_state(job_id).await {
                    Ok(Some((state, revision)))
                        if state.phase == JobPhase::Running
                            && state.worker.as_deref() == Some(worker) =>
                    {
                        return Ok(Some((state, revision, true)));
                    }
                    Ok(_) => return Ok(None),
                    Err(_) => {}
                }
            }
            Err(e)
        }
    }
}

/// What writing a job's state found.
enum Written {
    Ok,
    /// NATS is unreachable or the write failed: try again later.
    Failed,
    /// Another node has ended the job (its worker was taken for lost).
    EndedElsewhere,
}

/// Publishes one job's stored lines and keeps its state.
struct Forwarder {
    bus: Bus,
    runner: Arc<Runner>,
    job_id: String,
    state: JobState,
    revision: u64,
    running: Arc<Mutex<BTreeSet<String>>>,
    /// `[line, stream sequence]` of every 1024th line published.
    index: Vec<[u64; 2]>,
    /// Lines already in the events stream (1..=sent).
    sent: u64,
}

impl Forwarder {
    async fn run(mut self) {
        let job = match self.runner.job(&self.job_id) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!("job {}: {e}", self.job_id);
                return;
            }
        };
        // Lines acknowledged by the events stream: 1..=sent.
        let mut sent = self.sent;
        let mut failing = false;
        let mut last_state: Option<tokio::time::Instant> = None;
        loop {
            let (rx, last) = job.subscribe();
            let ended = rx.is_none();
            let mut ok = true;
            while sent < last {
                let records = match read_records(&job, sent, last).await {
                    Ok(r) if !r.is_empty() => r,
                    Ok(_) => {
                        tracing::error!(
                            "job {}: lines {}..={last} are missing from {}",
                            self.job_id,
                            sent + 1,
                            job.events_path().display()
                        );
                        sent = last;
                        break;
                    }
                    Err(e) => {
                        tracing::error!("job {}: cannot read its lines: {e}", self.job_id);
                        ok = false;
                        break;
                    }
                };
                let (acked, error) = self
                    .bus
                    .publish_lines(&self.job_id, &records, &mut self.index)
                    .await;
                sent = sent.max(acked);
                if let Some(e) = error {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            "job {}: {e}; lines after {sent} wait in the data directory",
                            self.job_id
                        );
                    }
                    ok = false;
                    break;
                }
            }
            if ok && std::mem::replace(&mut failing, false) {
                tracing::info!(
                    "job {}: publishing again, {sent} lines acknowledged",
                    self.job_id
                );
            }
            let done = ended && sent >= last;
            let due = last_state.is_none_or(|t| t.elapsed() >= STATE_EVERY);
            if ok && (done || due) {
                match self.write_state(&job, done).await {
                    Written::Ok => last_state = Some(tokio::time::Instant::now()),
                    Written::Failed => ok = false,
                    Written::EndedElsewhere => {
                        tracing::warn!(
                            "job {}: ended by another node (this worker was taken for lost); stopping it",
                            self.job_id
                        );
                        let _ = self.runner.cancel_job(&self.job_id);
                        break;
                    }
                }
                if ok && done {
                    break;
                }
            }
            match rx {
                Some(mut rx) if ok => {
                    tokio::select! {
                        _ = rx.recv() => {}
                        () = tokio::time::sleep(STATE_EVERY) => {}
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        lock(&self.running).remove(&self.job_id);
        tracing::info!("job {}: forwarded, {sent} lines", self.job_id);
    }

    async fn write_state(&mut self, job: &Job, finished: bool) -> Written {
        let detail = job.detail();
        let summary = serde_json::to_value(&detail.summary).ok();
        let stages = detail
            .stages
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .collect();
        let next = JobState {
            stages,
            index: self.index.clone(),
            phase: if finished {
                JobPhase::Finished
            } else {
                JobPhase::Running
            },
            summary,
            ..self.state.clone()
        };
        match self.bus.set_job_state(&next, self.revision).await {
            Ok(Some(revision)) => {
                self.revision = revision;
                self.state = next;
                Written::Ok
            }
            Ok(None) => match self.bus.job_state(&self.job_id).await {
                Ok(Some((current, _))) if current.phase == JobPhase::Finished => {
                    Written::EndedElsewhere
                }
                Ok(Some((current, revision))) if current.worker == self.state.worker => {
                    // Our own write whose answer was lost: carry on from it.
                    self.revision = revision;
                    Written::Failed
                }
                Ok(_) => Written::EndedElsewhere,
                Err(_) => Written::Failed,
            },
            Err(_) => Written::Failed,
        }
    }
}

/// The stored lines of `job` after `after`, up to `upto`, at most
/// [`PUBLISH_BATCH`] of them.
async fn read_records(job: &Job, after: u64, upto: u64) -> std::io::Result<Vec<Record>> {
    let mut reader = RecordReader::open(job.events_path(), job.offset_before(after + 1)).await?;
    let mut records = Vec::new();
    while let Some(record) = reader.next().await? {
        if record.seq <= after {
            continue;
        }
        if record.seq > upto {
            break;
        }
        records.push(record);
        if records.len() >= PUBLISH_BATCH || records.last().is_some_and(|r| r.seq >= upto) {
            break;
        }
    }
    Ok(records)
}
