//! The web node (`pipeline-runner serve --nats URL`): the single-process
//! runner's page, API and streams, served from the broker.
//!
//! A web node is a [`Runner`] that runs no children: its jobs are mirrors
//! of the broker's, kept in its data directory, which is a cache (emptied
//! when the node starts). Every route of the single-process runner then
//! works unchanged on the mirrors, and since a mirrored line is stored
//! with the number it has on the broker (its `Pipeline-Seq`), every web
//! node hands out the same SSE ids for the same lines:
//!
//! * a **watch of the job-state bucket** (the latest value of every key,
//!   then each change) creates a job's mirror when it is first seen, moves
//!   it from queued to running, hands its end to its line mirror, and
//!   forgets the jobs the bucket no longer has;
//! * per job, a **line mirror** reads the job's subject of the events
//!   stream after the last line stored here ([`Bus::replay`]) and appends
//!   what it reads, in batches; once the state says `finished` and line
//!   `lines` is stored, it ends the mirror with the state's summary and
//!   stages (the lines of a job whose end is seen before them are waited
//!   for up to [`MISSING_LINES_GRACE`]). Mirrors of jobs that had ended
//!   before the node first saw them (catching up after a start) run
//!   [`CATCH_UP`] at a time; those of live jobs always run;
//! * what changes jobs goes to the broker: a new job is submitted to the
//!   work queue, a queued job is cancelled with a compare-and-set of its
//!   state, a running one with a request to the worker that runs it, a
//!   finished one is deleted by purging its lines and its state;
//! * like every worker, a web node runs the **lost-worker sweep** every two
//!   worker TTLs, once its connection has been up for two TTLs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::super::joblog::Record;
use super::super::model::{count, now_ms, now_timestamp, Tracker, CANCELLED};
use super::super::{
    lock, Mirror, Outcome, Phase, Remote, RemoteFuture, Runner, RunnerError, RunnerOptions,
    StageState, Summary,
};
use super::bus::{Bus, BusConfig, JobPhase, JobState, NatsError, CANCEL_PREFIX};

/// Mirrors of already-ended jobs that catch up at once.
pub const CATCH_UP: usize = 8;
/// How long a job whose state says it ended may wait for its last lines
/// before its mirror ends with the lines it has.
pub const MISSING_LINES_GRACE: Duration = Duration::from_secs(30);
/// How long a cancel waits for the worker that runs the job to answer.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ended job's mirror waits with nothing to read before it
/// gives up on a gap in the lines it holds.
const GAP_IDLE: Duration = Duration::from_secs(2);
/// How long a line mirror reads nothing before it asks the broker whether
/// it is behind.
const STALL: Duration = Duration::from_secs(3);
/// Lines a line mirror stores with one write at most.
const BATCH: usize = 256;

/// What a web node needs.
#[derive(Debug, Clone)]
pub struct WebNodeConfig {
    /// Where NATS is, and the stream settings (the same as the workers').
    pub bus: BusConfig,
    /// The node's cache of jobs and lines: emptied at start. A directory
    /// holding anything but such a cache is refused.
    pub data_dir: PathBuf,
    /// The node's name in `GET /api/health` (generated when `None`).
    pub node_id: Option<String>,
    /// The runner settings that apply to a web node: retention (applied
    /// to the broker), the tokens field and price, the trace link.
    pub options: RunnerOptions,
}

/// Connects to NATS (failing with the URL in the message when no server
/// answers), opens the cache and starts mirroring the broker's jobs. Serve
/// the returned runner with [`serve`](super::super::serve); the mirroring
/// stops when it shuts down.
pub async fn open_web_node(config: WebNodeConfig) -> Result<Arc<Runner>, NatsError> {
    let node_id = match config.node_id {
        Some(id) => {
            super::super::validate_job_id(&id).map_err(|_| NatsError::Setup {
                what: "node id".into(),
                problem: format!("{id:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"),
            })?;
            id
        }
        None => format!(
            "web-{}-{}",
            std::process::id(),
            crate::reference::generate_job_id()
        ),
    };
    let bus = Bus::connect(config.bus.clone()).await?;
    let remote = Arc::new(NatsRemote {
        bus: bus.clone(),
        node_id,
        workers: Arc::new(Mutex::new(None)),
        node: std::sync::OnceLock::new(),
    });
    let workers = Arc::clone(&remote.workers);
    let runner = Runner::open_remote(config.data_dir, config.options, remote.clone())?;
    let node = Arc::new(Node {
        bus,
        runner: Arc::clone(&runner),
        mirrors: Mutex::new(HashMap::new()),
        catch_up: Arc::new(Semaphore::new(CATCH_UP)),
        reconnects: watch::Sender::new(0),
        ok_since: Mutex::new(None),
    });
    let _ = remote.node.set(Arc::downgrade(&node));
    tokio::spawn(Arc::clone(&node).watch_connection());
    tokio::spawn(Arc::clone(&node).watch_states());
    tokio::spawn(Arc::clone(&node).sweep());
    tokio::spawn(node.count_workers(workers));
    Ok(runner)
}

/// A job's end as the broker recorded it.
#[derive(Debug, Clone)]
struct Ended {
    summary: Summary,
    stages: Vec<StageState>,
}

#[derive(Debug)]
struct Node {
    bus: Bus,
    runner: Arc<Runner>,
    /// The running line mirrors, by job: each told the job's end here.
    mirrors: Mutex<HashMap<String, watch::Sender<Option<Ended>>>>,
    catch_up: Arc<Semaphore>,
    /// Counts the client's reconnections: readers of the broker start
    /// again at once (a consumer cut off by an outage otherwise waits for
    /// its heartbeat timeout to notice).
    reconnects: watch::Sender<u64>,
    /// Since when the broker has answered every request of this node's
    /// own (the worker count, every third of a TTL), without a break.
    ok_since: Mutex<Option<tokio::time::Instant>>,
}

impl Node {
    /// Bumps `reconnects` each time the connection is back after a break.
    async fn watch_connection(self: Arc<Self>) {
        let mut stop = self.runner.shutdown_flag();
        let mut was_up = true;
        loop {
            let up = matches!(
                self.bus.client().connection_state(),
                async_nats::connection::State::Connected
            );
            if !up {
                *lock(&self.ok_since) = None;
            }
            if up && !was_up {
                tracing::info!("NATS connection back: reading the broker again");
                self.reconnects.send_modify(|n| *n += 1);
            }
            was_up = up;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }

    /// Follows the job-state bucket until the runner shuts down; starts
    /// again (every value once more, which changes nothing already known)
    /// after the watch breaks.
    async fn watch_states(self: Arc<Self>) {
        let mut stop = self.runner.shutdown_flag();
        let mut reconnected = self.reconnects.subscribe();
        let mut failing = false;
        loop {
            reconnected.mark_unchanged();
            match self.bus.state_bucket().watch_with_history(">").await {
                Ok(mut entries) => loop {
                    tokio::select! {
                        _ = reconnected.changed() => break,
                        entry = entries.next() => match entry {
                            Some(Ok(entry)) => {
                                failing = false;
                                self.apply(entry);
                            }
                            Some(Err(e)) => {
                                tracing::warn!("job-state watch: {e}; watching again");
                                break;
                            }
                            None => break,
                        },
                        () = stopped(&mut stop) => return,
                    }
                },
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!("cannot watch the job states: {e}; retrying");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }

    /// Takes one change of the job-state bucket into account.
    fn apply(self: &Arc<Self>, entry: kv::Entry) {
        let id = entry.key;
        if entry.operation != kv::Operation::Put {
            lock(&self.mirrors).remove(&id);
            self.runner.mirror_forget(&id);
            return;
        }
        match serde_json::from_slice::<JobState>(&entry.value) {
            Ok(state) if state.job_id == id => self.apply_state(state),
            Ok(_) | Err(_) => {
                tracing::warn!("job-state entry {id:?} is not a job state: ignored");
            }
        }
    }

    /// Mirrors a job as its state says (read from the watch, or directly
    /// for a job asked for before the watch told of it).
    fn apply_state(self: &Arc<Self>, state: JobState) {
        let id = state.job_id.clone();
        let (summary, stages) = local_view(&state);
        let job = match self.runner.mirror(&summary, stages.clone()) {
            Ok((job, _)) => job,
            Err(e) => {
                tracing::error!("job {id}: cannot mirror it: {e}");
                return;
            }
        };
        // Queued jobs have no lines yet; a mirror that has ended has them all.
        if state.phase == JobPhase::Queued || job.subscribe().0.is_none() {
            return;
        }
        let mut mirrors = lock(&self.mirrors);
        let tx = mirrors.entry(id.clone()).or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            let node = Arc::clone(self);
            let mirror = Mirror::new(&job);
            let ended_here = !matches!(job.phase(), Phase::Queued | Phase::Running);
            let catch_up = ended_here.then(|| Arc::clone(&self.catch_up));
            let wanted = Arc::clone(&job);
            tokio::spawn(async move {
                // A mirror someone waits for goes before the others.
                let permit: Option<OwnedSemaphorePermit> = match catch_up {
                    Some(s) => tokio::select! {
                        permit = s.acquire_owned() => permit.ok(),
                        () = wanted.wanted() => None,
                    },
                    None => None,
                };
                node.mirror_lines(mirror, rx).await;
                drop(permit);
            });
            tx
        });
        if state.phase == JobPhase::Finished {
            tx.send_replace(Some(Ended { summary, stages }));
        }
    }

    /// Stores a job's lines as they come, and ends the job once its end is
    /// known and every line is in.
    async fn mirror_lines(
        self: Arc<Self>,
        mut mirror: Mirror,
        mut ended: watch::Receiver<Option<Ended>>,
    ) {
        let id = mirror.job().id().to_owned();
        let mut stop = self.runner.shutdown_flag();
        let mut reconnected = self.reconnects.subscribe();
        let mut replay: Option<super::bus::Replay> = None;
        let mut missing_since: Option<tokio::time::Instant> = None;
        let mut last_read = tokio::time::Instant::now();
        let mut failing = false;
        // Once a replay has stalled, read from the subject's start: the
        // indexed line may have been stored late, after lines it precedes.
        let mut stalled = false;
        loop {
            let end = ended.borrow().clone();
            if let Some(end) = &end {
                let since = *missing_since.get_or_insert_with(tokio::time::Instant::now);
                let complete = mirror.last_seq() >= end.summary.lines;
                if !complete && since.elapsed() >= MISSING_LINES_GRACE {
                    tracing::warn!(
                        "job {id}: the broker has {} of its {} lines {} s after its end: \
                         ending it with those",
                        mirror.last_seq(),
                        end.summary.lines,
                        MISSING_LINES_GRACE.as_secs()
                    );
                }
                if complete || since.elapsed() >= MISSING_LINES_GRACE {
                    // Forgotten only once ended: until then a state seen
                    // again finds this mirror, not room for a second one.
                    mirror.finish(&end.summary, end.stages.clone()).await;
                    lock(&self.mirrors).remove(&id);
                    return;
                }
            }
            if replay.is_none() {
                let opened = if stalled {
                    self.bus.replay_all(&id, mirror.last_seq()).await
                } else {
                    self.bus.replay(&id, mirror.last_seq()).await
                };
                match opened {
                    Ok(r) => {
                        failing = false;
                        replay = Some(r);
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!("job {id}: {e}; retrying");
                        }
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                            () = stopped(&mut stop) => return,
                        }
                    }
                }
            }
            let Some(r) = replay.as_mut() else { continue };
            tokio::select! {
                line = r.next() => match line {
                    Ok(first) => {
                        last_read = tokio::time::Instant::now();
                        let mut batch = vec![(first.seq, first.data)];
                        while batch.len() < BATCH {
                            match r.next_within(Duration::ZERO).await {
                                Ok(Some(line)) => batch.push((line.seq, line.data)),
                                _ => break,
                            }
                        }
                        mirror.append(batch).await;
                    }
                    Err(e) => {
                        tracing::debug!("job {id}: {e}; reading again");
                        replay = None;
                    }
                },
                changed = ended.changed() => {
                    if changed.is_err() {
                        // Forgotten: the job was deleted.
                        return;
                    }
                }
                _ = reconnected.changed() => replay = None,
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    // Nothing read for a while, and the broker has lines
                    // this mirror has not: the consumer is stuck (its
                    // server died in a cluster, say). Read again.
                    if last_read.elapsed() >= STALL && r.held() == 0 {
                        last_read = tokio::time::Instant::now();
                        let ahead = tokio::time::timeout(
                            Duration::from_secs(2),
                            self.bus.last_seq(&id),
                        )
                        .await;
                        if matches!(ahead, Ok(Ok(last)) if last > mirror.last_seq()) {
                            tracing::info!("job {id}: the replay stalled; reading again");
                            stalled = true;
                            replay = None;
                            continue;
                        }
                    }
                    if r.held() > 0 && last_read.elapsed() >= GAP_IDLE {
                        // A gap nothing fills: first read the subject again
                        // from its start (a read that began at an indexed
                        // line misses lines stored before it: a retried
                        // publish of that line came late). A gap that read
                        // has too, once the job has ended and every stored
                        // line is read, is lost: the stream dropped it.
                        if !stalled {
                            tracing::info!("job {id}: a gap in its lines; reading from the start");
                            stalled = true;
                            replay = None;
                            last_read = tokio::time::Instant::now();
                            continue;
                        }
                        if end.is_none() {
                            continue;
                        }
                        if let Some(first) = r.skip_gap() {
                            let mut batch = vec![(first.seq, first.data)];
                            while let Ok(Some(line)) = r.next_within(Duration::ZERO).await {
                                batch.push((line.seq, line.data));
                                if r.held() == 0 {
                                    break;
                                }
                            }
                            mirror.append(batch).await;
                        }
                    }
                }
                () = stopped(&mut stop) => return,
            }
        }
    }

    /// Counts the live workers and the jobs they run at once, every third
    /// of a worker TTL, for `GET /api/health`.
    async fn count_workers(self: Arc<Self>, into: Arc<Mutex<Option<(usize, usize)>>>) {
        let every = (self.bus.config().worker_ttl / 3).max(Duration::from_millis(100));
        let mut stop = self.runner.shutdown_flag();
        loop {
            let asked = tokio::time::Instant::now();
            match self.bus.workers().await {
                // Slower than the workers' heartbeat gap: theirs may be as
                // slow, so this is a break (no sweep for two TTLs).
                Ok(_) if asked.elapsed() > every => *lock(&self.ok_since) = None,
                Ok(workers) => {
                    let max = workers.iter().map(|w| w.max_running).sum();
                    *lock(&into) = Some((workers.len(), max));
                    lock(&self.ok_since).get_or_insert_with(tokio::time::Instant::now);
                }
                // The last count stands; the connection's state is in
                // `nats_connected`.
                Err(e) => {
                    *lock(&self.ok_since) = None;
                    tracing::debug!("cannot count the workers: {e}");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }

    /// Every two worker TTLs, once the connection has been up that long,
    /// ends the jobs of lost workers (as every worker does).
    async fn sweep(self: Arc<Self>) {
        let every = 2 * self.bus.config().worker_ttl;
        let mut stop = self.runner.shutdown_flag();
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every / 4) => {}
                () = stopped(&mut stop) => return,
            }
            // As a worker sweeps only after two TTLs of its own heartbeats:
            // after an outage (or while JetStream recovers from a restart)
            // every liveness entry may have expired, and each live worker
            // gets that long to heartbeat again.
            let healthy = lock(&self.ok_since).is_some_and(|t| t.elapsed() >= every);
            if !healthy || last_sweep.elapsed() < every {
                continue;
            }
            if let Err(e) = super::lost::end_lost_jobs(&self.bus).await {
                tracing::debug!("lost-worker sweep: {e}");
            }
            last_sweep = tokio::time::Instant::now();
        }
    }
}

/// A job state as the mirror shows it: the summary (the worker's, once it
/// has one, with the submit time as `created_at`) and the stages its end
/// recorded.
fn local_view(state: &JobState) -> (Summary, Vec<StageState>) {
    let queued = || queued_summary(state);
    let mut summary = match (&state.phase, &state.summary) {
        (JobPhase::Queued, _) | (_, None) => queued(),
        (_, Some(v)) => serde_json::from_value::<Summary>(v.clone()).unwrap_or_else(|e| {
            tracing::warn!("job {}: its summary cannot be read: {e}", state.job_id);
            queued()
        }),
    };
    summary.job_id = state.job_id.clone();
    summary.created_at = state.queued_at.clone();
    summary.rerun_of = state.rerun_of.clone();
    summary.queue_position = None;
    match state.phase {
        JobPhase::Queued => {
            summary.state = Phase::Queued;
            summary.outcome = Outcome::Queued;
        }
        JobPhase::Running => {
            summary.state = Phase::Running;
            summary.outcome = Outcome::Running;
        }
        JobPhase::Finished => {
            if matches!(summary.state, Phase::Queued | Phase::Running) {
                summary.state = Phase::Finished;
            }
            if matches!(summary.outcome, Outcome::Queued | Outcome::Running) {
                summary.outcome = Outcome::of_status(summary.status);
            }
        }
    }
    let stages = state
        .stages
        .iter()
        .filter_map(|v| serde_json::from_value::<StageState>(v.clone()).ok())
        .filter(|s| s.status != super::super::model::StageStatus::Pending)
        .collect();
    (summary, stages)
}

fn queued_summary(state: &JobState) -> Summary {
    let v = json!({
        "job_id": state.job_id,
        "state": "queued",
        "status": null,
        "outcome": "queued",
        "created_at": state.queued_at,
    });
    serde_json::from_value(v).unwrap_or_else(|e| unreachable!("a queued summary: {e}"))
}

/// A broker error as the API reports it.
fn api_error(e: NatsError) -> RunnerError {
    match e {
        NatsError::InvalidJobId(_) => RunnerError::InvalidJobId,
        NatsError::DuplicateJob(id) => RunnerError::DuplicateJob(id),
        NatsError::Runner(e) => e,
        other => RunnerError::Unavailable(other.to_string()),
    }
}

/// The broker, as a web node's runner asks it to change jobs.
#[derive(Debug)]
struct NatsRemote {
    bus: Bus,
    node_id: String,
    /// `(live workers, their --max-running summed)`, as last counted.
    workers: Arc<Mutex<Option<(usize, usize)>>>,
    /// The node that mirrors jobs, for [`Remote::fetch`].
    node: std::sync::OnceLock<std::sync::Weak<Node>>,
}

impl NatsRemote {
    async fn cancel_job(&self, id: &str) -> Result<(), RunnerError> {
        // A queued job may be taken by a worker between the read and the
        // write: then the write fails and the job is read again.
        for _ in 0..5 {
            let Some((state, revision)) = self.bus.job_state(id).await.map_err(api_error)? else {
                return Err(RunnerError::UnknownJob(id.to_owned()));
            };
            match state.phase {
                JobPhase::Finished => return Err(RunnerError::AlreadyFinished(id.to_owned())),
                JobPhase::Queued => {
                    if self.cancel_queued(state, revision).await? {
                        return Ok(());
                    }
                }
                JobPhase::Running => return self.cancel_running(id).await,
            }
        }
        Err(RunnerError::Unavailable(format!(
            "job {id} kept changing while it was being cancelled: try again"
        )))
    }

    /// Ends a queued job as the single-process runner ends one cancelled
    /// in its queue: state `finished` (which makes the worker that takes
    /// its request drop it), then its one closing line. False when the
    /// state changed meanwhile.
    async fn cancel_queued(&self, state: JobState, revision: u64) -> Result<bool, RunnerError> {
        let id = state.job_id.clone();
        let tracker = Tracker::default();
        let lines = tracker.end_lines(&id, CANCELLED, now_ms(), 0);
        let mut observed = tracker.clone();
        let mut records = Vec::new();
        for (i, data) in lines.into_iter().enumerate() {
            let seq = 1 + i as u64;
            if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(&data) {
                observed.observe(&event, seq, None);
            }
            records.push(Record { seq, data });
        }
        let mut summary = queued_summary(&state);
        summary.state = Phase::Finished;
        summary.status = observed.status;
        summary.outcome = Outcome::Cancelled;
        summary.reason = Some(CANCELLED.to_owned());
        summary.finished_at = Some(now_timestamp());
        summary.lines = records.len() as u64;
        summary.counts = count(&observed.stages);
        let finished = JobState {
            phase: JobPhase::Finished,
            summary: serde_json::to_value(&summary).ok(),
            ..state
        };
        match self.bus.set_job_state(&finished, revision).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(false),
            Err(e) => return Err(api_error(e)),
        }
        if let Err(e) = self.bus.publish_all(&id, &records, 5).await {
            // The state says it ended; the web nodes end it with the lines
            // there are.
            tracing::warn!("job {id}: cancelled, but its closing line was not stored: {e}");
        }
        Ok(true)
    }

    /// Asks the worker that runs job `id` to stop it.
    async fn cancel_running(&self, id: &str) -> Result<(), RunnerError> {
        let subject = format!("{CANCEL_PREFIX}{id}");
        let request = async_nats::Request::new()
            .payload(Vec::new().into())
            .timeout(Some(CANCEL_TIMEOUT));
        match self.bus.client().send_request(subject, request).await {
            Ok(reply) => {
                let answer = String::from_utf8_lossy(&reply.payload).into_owned();
                if answer == "cancelled" {
                    Ok(())
                } else if answer.contains("already finished") {
                    Err(RunnerError::AlreadyFinished(id.to_owned()))
                } else {
                    Err(RunnerError::Unavailable(format!(
                        "the worker running job {id} answered: {answer}"
                    )))
                }
            }
            Err(e) => Err(RunnerError::Unavailable(format!(
                "no worker answered the cancel of job {id} within {} s \
                 (its worker may be stopped or cut off; it is ended as lost \
                 once its heartbeats stop): {e}",
                CANCEL_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl Remote for NatsRemote {
    fn submit(&self, id: String, rerun_of: Option<String>) -> RemoteFuture<'_, Summary> {
        Box::pin(async move {
            let state = super::bus::submit(&self.bus, Some(id), rerun_of)
                .await
                .map_err(api_error)?;
            Ok(local_view(&state).0)
        })
    }

    fn cancel<'a>(&'a self, id: &'a str) -> RemoteFuture<'a, ()> {
        Box::pin(self.cancel_job(id))
    }

    fn delete<'a>(&'a self, id: &'a str) -> RemoteFuture<'a, ()> {
        Box::pin(async move {
            match self.bus.job_state(id).await.map_err(api_error)? {
                None => Err(RunnerError::UnknownJob(id.to_owned())),
                Some((state, _)) if state.phase != JobPhase::Finished => {
                    Err(RunnerError::NotFinished(id.to_owned()))
                }
                Some(_) => self.bus.remove_job(id).await.map_err(api_error),
            }
        })
    }

    fn fetch<'a>(
        &'a self,
        id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let Some(node) = self.node.get().and_then(std::sync::Weak::upgrade) else {
                return false;
            };
            match self.bus.job_state(id).await {
                Ok(Some((state, _))) => {
                    node.apply_state(state);
                    true
                }
                Ok(None) | Err(_) => false,
            }
        })
    }

    fn health(&self) -> Map<String, Value> {
        let connected = matches!(
            self.bus.client().connection_state(),
            async_nats::connection::State::Connected
        );
        let mut map = Map::new();
        map.insert("role".into(), "web".into());
        map.insert("node_id".into(), self.node_id.clone().into());
        map.insert("nats".into(), self.bus.config().url.clone().into());
        map.insert("nats_connected".into(), connected.into());
        // The jobs that run at once are the workers' to say.
        let (workers, max_running) = match *lock(&self.workers) {
            Some((n, max)) => (Value::from(n), Value::from(max)),
            None => (Value::Null, Value::Null),
        };
        map.insert("workers".into(), workers);
        map.insert("max_running".into(), max_running);
        map
    }
}

/// Completes once the runner starts shutting down.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(phase: JobPhase, summary: Option<Value>, stages: Vec<Value>) -> JobState {
        JobState {
            job_id: "j1".into(),
            phase,
            worker: Some("w1".into()),
            queued_at: "2026-01-01T00:00:00.000Z".into(),
            rerun_of: Some("j0".into()),
            summary,
            stages,
            index: Vec::new(),
        }
    }

    #[test]
    fn a_queued_state_is_a_queued_job_created_when_submitted() {
        let (s, stages) = local_view(&state(JobPhase::Queued, None, Vec::new()));
        assert_eq!(s.state, Phase::Queued);
        assert_eq!(s.outcome, Outcome::Queued);
        assert_eq!(s.created_at, "2026-01-01T00:00:00.000Z");
        assert_eq!(s.rerun_of.as_deref(), Some("j0"));
        assert!(stages.is_empty());
    }

    #[test]
    fn a_running_state_keeps_the_workers_summary_but_the_submit_time() {
        let summary = json!({
            "job_id": "j1", "state": "running", "status": null, "outcome": "running",
            "created_at": "2026-01-01T00:00:05.000Z", "started_at": "2026-01-01T00:00:05.000Z",
            "lines": 7, "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331", "queue_position": 3,
        });
        let (s, _) = local_view(&state(JobPhase::Running, Some(summary), Vec::new()));
        assert_eq!(s.state, Phase::Running);
        assert_eq!(s.created_at, "2026-01-01T00:00:00.000Z");
        assert_eq!(s.started_at.as_deref(), Some("2026-01-01T00:00:05.000Z"));
        assert_eq!(s.lines, 7);
        assert_eq!(s.queue_position, None);
        assert_eq!(
            s.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }

    #[test]
    fn a_running_state_without_a_summary_yet_is_running() {
        let (s, _) = local_view(&state(JobPhase::Running, None, Vec::new()));
        assert_eq!((s.state, s.outcome), (Phase::Running, Outcome::Running));
    }

    #[test]
    fn a_finished_state_is_ended_and_keeps_only_stages_that_ran() {
        let summary = json!({
            "job_id": "j1", "state": "running", "status": "partial", "outcome": "running",
            "lines": 3,
        });
        let stages = vec![
            json!({"layer": 1, "layer_name": "a", "status": "complete", "duration_ms": 5}),
            json!({"layer": 2, "layer_name": "b", "status": "pending"}),
            json!("not a stage"),
        ];
        let (s, stages) = local_view(&state(JobPhase::Finished, Some(summary), stages));
        assert_eq!(s.state, Phase::Finished);
        assert_eq!(s.outcome, Outcome::Partial);
        let names: Vec<&str> = stages.iter().map(|s| s.layer_name.as_str()).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn an_unreadable_summary_falls_back_to_what_the_state_says() {
        let (s, _) = local_view(&state(
            JobPhase::Finished,
            Some(json!({"state": 42})),
            Vec::new(),
        ));
        assert_eq!(s.job_id, "j1");
        assert_eq!(s.state, Phase::Finished);
        assert_eq!(s.outcome, Outcome::Error);
    }

    #[test]
    fn broker_errors_become_api_errors() {
        assert!(matches!(
            api_error(NatsError::InvalidJobId("a.b".into())),
            RunnerError::InvalidJobId
        ));
        assert!(matches!(
            api_error(NatsError::DuplicateJob("x".into())),
            RunnerError::DuplicateJob(id) if id == "x"
        ));
        let down = NatsError::Request {
            action: "read".into(),
            reason: "timed out".into(),
        };
        assert!(matches!(api_error(down), RunnerError::Unavailable(m) if m.contains("timed out")));
    }
}
