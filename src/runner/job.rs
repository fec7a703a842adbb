//! One job: its child process, its numbered lines, its log file, its end.
//!
//! Two reader tasks cut the child's stdout and stderr into classified lines
//! and send them in batches (whatever one read of the pipe held, at most
//! [`BATCH`] lines or [`BATCH_BYTES`] bytes each), through a small bounded
//! queue, to the job's supervising task. That task alone numbers them
//! (`seq`, from 1), appends a batch to the job's `events.jsonl` with one
//! write, flushes, updates the stage states and only then publishes the
//! batch on a broadcast channel. So every line a live client can see is
//! already in the file, and a client that falls behind reads the gap from
//! the file (see `sse`). The child never waits for a client: the only
//! back-pressure it feels is the runner writing the file.
//!
//! Lines travel in batches so that the hand-offs between tasks and threads
//! (each one a wake-up) are paid per batch, not per line. A reader never
//! waits to fill a batch: it sends what one read gave it, so a line printed
//! alone travels alone and at once.
//!
//! An `output` line read while exactly one stage of the job is running gets
//! that stage's `layer` and `layer_name` added (structured lines are never
//! altered), so a stage's output can be shown with it.
//!
//! When the child exits (or is cancelled, or the runner shuts down) its pipes
//! are drained for a short grace period (a grandchild may hold them open),
//! the lines of [`Tracker::end_lines`] are recorded (closing every stage
//! still running, and adding a `pipeline_complete` with status `error` if the
//! child did not print one), the job's `meta.json` is rewritten, the job
//! list's watchers are told, and the broadcast channel is closed with an
//! `End` message.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::classify::{classify, output_data, Classified, LineKind, LineSplitter, RawLine, Stream};
use super::error::RunnerError;
use super::joblog::{LogTail, OffsetIndex, Record};
use super::model::now_timestamp;
use super::model::{
    count, layer_order, now_ms, Meta, Outcome, Phase, StageState, StageStatus, Summary, Tracker,
    CANCELLED, SHUT_DOWN,
};
use super::options::tokens_in;
use super::stats::{JobRecord, StageRecord};
use super::store::Loaded;
use super::trace::TraceIds;
use super::{lock, Shared};

/// Batches published but not yet taken by the slowest live client; a client
/// further behind catches up from the file.
const BROADCAST_CAPACITY: usize = 32;
/// Batches read from the child (either pipe) but not yet written to the file.
const LINE_QUEUE: usize = 4;
/// Lines per batch at most.
const BATCH: usize = 256;
/// Bytes of line data per batch at most (a batch always holds at least one
/// line, which may be longer).
const BATCH_BYTES: usize = 64 * 1024;
/// How long a stopped child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long the pipes may stay silent after the child exited.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long the pipes are read after the child exited, at most.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What travels on a job's broadcast channel.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// Consecutive lines, in order, never empty.
    Lines(Arc<[Record]>),
    /// The job has ended; every line is in the file.
    End,
}

/// Where changes to the job list are announced: the JSON of a job's
/// summary whenever a job is created or ends.
pub(crate) type ListSender = broadcast::Sender<Arc<str>>;

/// One job, queued, running or past.
#[derive(Debug)]
pub(crate) struct Job {
    id: String,
    created_at: String,
    rerun_of: Option<String>,
    /// Set once: at creation, or for a mirror when the job has started.
    trace: std::sync::OnceLock<TraceIds>,
    events_path: PathBuf,
    shared: Arc<Shared>,
    inner: Mutex<Inner>,
    cancel: Notify,
    /// A mirror of a job that had ended when it was first seen: set until
    /// its lines are all in (the job is shown ended, but is not served
    /// until then: an ended job's `lines` is its last line).
    catching_up: watch::Sender<bool>,
    /// Someone waits for this catching-up mirror: it skips the line.
    wanted: Notify,
    /// Becomes `true` when the job is deleted: its streams end.
    deleted: watch::Sender<bool>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Set when the job ends.
    outcome: Option<Outcome>,
    reason: Option<String>,
    started_at: Option<String>,
    started: Option<Instant>,
    finished_at: Option<String>,
    duration_ms: Option<u64>,
    exit_code: Option<i32>,
    tracker: Tracker,
    last_seq: u64,
    index: OffsetIndex,
    /// `None` once the job has ended.
    tx: Option<broadcast::Sender<Msg>>,
    cancel_requested: bool,
    queue_position: Option<u64>,
    /// The line count a catching-up mirror shows: the job's, as its end
    /// recorded it, while its lines are still being copied.
    shown_lines: Option<u64>,
}

impl Job {
    /// A job loaded from the data directory: ended, or still queued.
    pub(crate) fn past(loaded: Loaded, shared: Arc<Shared>) -> Job {
        let Loaded {
            meta,
            events_path,
            last_seq,
            index,
        } = loaded;
        let s = meta.summary;
        let queued = s.state == Phase::Queued;
        let tracker = if queued {
            Tracker::default()
        } else {
            Tracker::ended(meta.stages, s.status)
        };
        let trace = s
            .trace_id
            .clone()
            .zip(s.span_id.clone())
            .map(|(trace_id, span_id)| TraceIds { trace_id, span_id });
        Job {
            id: s.job_id,
            created_at: s.created_at,
            rerun_of: s.rerun_of,
            trace: once(trace),
            events_path,
            shared,
            inner: Mutex::new(Inner {
                phase: s.state,
                outcome: (!queued).then_some(s.outcome),
                reason: s.reason,
                started_at: s.started_at,
                started: None,
                finished_at: s.finished_at,
                duration_ms: s.duration_ms,
                exit_code: s.exit_code,
                tracker,
                last_seq,
                index,
                tx: queued.then(|| broadcast::channel(BROADCAST_CAPACITY).0),
                cancel_requested: false,
                queue_position: None,
                shown_lines: None,
            }),
            cancel: Notify::new(),
            catching_up: watch::Sender::new(false),
            wanted: Notify::new(),
            deleted: watch::Sender::new(false),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// When it was asked for (RFC 3339): with the id, its place in the job list.
    pub(crate) fn created_at(&self) -> &str {
        &self.created_at
    }

    pub(crate) fn events_path(&self) -> &PathBuf {
        &self.events_path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn phase(&self) -> Phase {
        self.lock().phase
    }

    pub(crate) fn finished_at(&self) -> Option<String> {
        self.lock().finished_at.clone()
    }

    pub(crate) fn set_queue_position(&self, position: Option<u64>) {
        self.lock().queue_position = position;
    }

    pub(crate) fn summary(&self) -> Summary {
        let inner = self.lock();
        self.summary_of(&inner)
    }

    fn summary_of(&self, inner: &Inner) -> Summary {
        let options = &self.shared.options;
        let mut tokens = None;
        for s in &inner.tracker.stages {
            if let Ok(Some(t)) = tokens_in(s.metadata.as_ref(), &options.tokens_field) {
                tokens = Some(tokens.unwrap_or(0.0) + t);
            }
        }
        Summary {
            job_id: self.id.clone(),
            state: inner.phase,
            status: inner.tracker.status,
            outcome: inner.outcome.unwrap_or(if inner.phase == Phase::Queued {
                Outcome::Queued
            } else {
                Outcome::Running
            }),
            reason: inner.reason.clone(),
            created_at: self.created_at.clone(),
            started_at: inner.started_at.clone(),
            finished_at: inner.finished_at.clone(),
            duration_ms: inner.duration_ms,
            exit_code: inner.exit_code,
            lines: inner.shown_lines.unwrap_or(inner.last_seq),
            counts: count(&inner.tracker.stages),
            queue_position: inner.queue_position,
            rerun_of: self.rerun_of.clone(),
            trace_id: self.trace.get().map(|t| t.trace_id.clone()),
            span_id: self.trace.get().map(|t| t.span_id.clone()),
            trace_url: self
                .trace
                .get()
                .as_ref()
                .and_then(|t| options.trace_link(&t.trace_id, Some(&t.span_id))),
            tokens,
            cost: tokens.and_then(|t| options.cost(t)),
        }
    }

    /// The summary and this job's stages (those it has not reached, known
    /// from earlier jobs, as `pending`), ordered by layer, then first seen.
    pub(crate) fn detail(&self) -> Meta {
        let (summary, own) = {
            let inner = self.lock();
            (self.summary_of(&inner), inner.tracker.stages.clone())
        };
        let mut stages: Vec<StageState> = self
            .shared
            .catalog
            .list()
            .into_iter()
            .map(|(layer, layer_name)| {
                own.iter()
                    .find(|s| s.layer_name == layer_name)
                    .cloned()
                    .unwrap_or_else(|| StageState::pending(layer, layer_name))
            })
            .collect();
        for s in own {
            if !stages.iter().any(|t| t.layer_name == s.layer_name) {
                stages.push(s);
            }
        }
        stages.sort_by(|a, b| layer_order(&a.layer, &b.layer));
        let options = &self.shared.options;
        for s in &mut stages {
            s.tokens = tokens_in(s.metadata.as_ref(), &options.tokens_field)
                .ok()
                .flatten();
            s.trace_url = match (self.trace.get(), &s.span_id) {
                (Some(t), Some(span)) => options.trace_link(&t.trace_id, Some(span)),
                _ => None,
            };
        }
        Meta { summary, stages }
    }

    /// What the job contributes to the statistics, once it has ended; a
    /// bad tokens value is reported (once per stage name) when `report`.
    pub(crate) fn record(&self, report: bool) -> JobRecord {
        let inner = self.lock();
        let field = &self.shared.options.tokens_field;
        let stages = inner
            .tracker
            .stages
            .iter()
            .filter(|s| !matches!(s.status, StageStatus::Pending | StageStatus::Running))
            .map(|s| {
                let tokens = match tokens_in(s.metadata.as_ref(), field) {
                    Ok(t) => t,
                    Err(problem) => {
                        if report {
                            self.shared.report_bad_tokens(
                                &self.id,
                                &s.layer_name,
                                &problem,
                                s.metadata.as_ref().and_then(|m| m.get(field)),
                            );
                        }
                        None
                    }
                };
                StageRecord {
                    layer: s.layer.clone(),
                    layer_name: s.layer_name.clone(),
                    status: s.status,
                    duration_ms: s.duration_ms,
                    tokens,
                }
            })
            .collect();
        JobRecord {
            job_id: self.id.clone(),
            finished_at: inner
                .finished_at
                .clone()
                .unwrap_or_else(|| self.created_at.clone()),
            outcome: inner.outcome.unwrap_or(Outcome::Interrupted),
            started: inner.started_at.is_some(),
            lines: inner.last_seq,
            bytes: std::fs::metadata(&self.events_path).map_or(0, |m| m.len()),
            stages,
        }
    }

    /// Asks a running job to stop. False when it is not running.
    pub(crate) fn cancel(&self) -> bool {
        let mut inner = self.lock();
        if inner.phase != Phase::Running {
            return false;
        }
        if !inner.cancel_requested {
            inner.cancel_requested = true;
            self.cancel.notify_one();
        }
        true
    }

    /// Marks the job deleted: its streams end.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.send_replace(true);
    }

    /// Becomes `true` when the job is deleted.
    pub(crate) fn deleted(&self) -> watch::Receiver<bool> {
        self.deleted.subscribe()
    }

    /// Ends the streams of a queued job (the runner shuts down; the job
    /// stays queued in the data directory).
    pub(crate) fn close_streams(&self) {
        if let Some(tx) = self.lock().tx.take() {
            let _ = tx.send(Msg::End);
        }
    }

    /// A receiver for lines after the returned sequence number (`None` when
    /// the job has ended: every line up to that number is in the file).
    pub(crate) fn subscribe(&self) -> (Option<broadcast::Receiver<Msg>>, u64) {
        let inner = self.lock();
        (inner.tx.as_ref().map(|tx| tx.subscribe()), inner.last_seq)
    }

    /// The number of the last line written.
    pub(crate) fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// A byte offset in the log file at or before the line `seq`.
    pub(crate) fn offset_before(&self, seq: u64) -> u64 {
        self.lock().index.offset_before(seq)
    }

    /// The payload of the final `end` message of `/events`.
    pub(crate) fn end_data(&self) -> String {
        let status = self.lock().tracker.status;
        serde_json::json!({ "job_id": self.id, "status": status }).to_string()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

fn once(trace: Option<TraceIds>) -> std::sync::OnceLock<TraceIds> {
    let cell = std::sync::OnceLock::new();
    if let Some(t) = trace {
        let _ = cell.set(t);
    }
    cell
}

/// The trace ids a mirrored job's summary names, if any.
fn trace_of(s: &Summary) -> Option<TraceIds> {
    s.trace_id
        .clone()
        .zip(s.span_id.clone())
        .map(|(trace_id, span_id)| TraceIds { trace_id, span_id })
}

/// Announces `summary` to the job list's watchers.
fn announce(list: &ListSender, summary: &Summary) {
    if let Ok(text) = serde_json::to_string(summary) {
        let _ = list.send(text.into());
    }
}

/// Creates job `id` in the data directory, queued: [`launch`] starts it.
/// The job list's watchers are told by [`announce_queued`] or [`launch`].
pub(crate) fn create(
    id: &str,
    rerun_of: Option<String>,
    shared: &Arc<Shared>,
) -> Result<Arc<Job>, RunnerError> {
    let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
    let events_path = shared.data.job_dir(id).join("events.jsonl");
    let job = Arc::new(Job {
        id: id.to_owned(),
        created_at: now_timestamp(),
        rerun_of,
        trace: once(Some(TraceIds::random())),
        events_path,
        shared: Arc::clone(shared),
        inner: Mutex::new(Inner {
            phase: Phase::Queued,
            outcome: None,
            reason: None,
            started_at: None,
            started: None,
            finished_at: None,
            duration_ms: None,
            exit_code: None,
            tracker: Tracker::default(),
            last_seq: 0,
            index: OffsetIndex::default(),
            tx: Some(tx),
            cancel_requested: false,
            queue_position: None,
            shown_lines: None,
        }),
        cancel: Notify::new(),
        catching_up: watch::Sender::new(false),
        wanted: Notify::new(),
        deleted: watch::Sender::new(false),
    });
    let summary = job.summary();
    drop(shared.data.create_job(&Meta {
        summary,
        stages: Vec::new(),
    })?);
    Ok(job)
}

/// Tells the job list's watchers that `job` is queued (if it still is).
pub(crate) fn announce_queued(job: &Job) {
    let summary = job.summary();
    if summary.state == Phase::Queued {
        announce(&job.shared.list_events, &summary);
    }
}

/// Starts `command` for a queued job, and the task that supervises it.
/// The task calls `Shared::job_ended` once the job's end is recorded.
pub(crate) fn launch(
    job: &Arc<Job>,
    command: &[OsString],
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let shared = Arc::clone(&job.shared);
    let meta = {
        let mut inner = job.lock();
        inner.phase = Phase::Running;
        inner.started_at = Some(now_timestamp());
        inner.started = Some(Instant::now());
        inner.queue_position = None;
        lock(&shared.totals).jobs_started += 1;
        Meta {
            summary: job.summary_of(&inner),
            stages: Vec::new(),
        }
    };
    if let Err(e) = shared.data.write_meta(&meta) {
        tracing::error!("{e}");
    }
    announce(&shared.list_events, &meta.summary);
    let out = open_log(job);
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("JOB_ID", &job.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(trace) = job.trace.get() {
        cmd.env("TRACEPARENT", trace.traceparent());
    }
    // Its own process group: a Ctrl-C in the runner's terminal reaches the
    // runner only (which then stops the child and records it), and stopping
    // the job stops whatever the command started too.
    #[cfg(unix)]
    cmd.process_group(0);
    let child = cmd.spawn();
    let rec = Recorder::new(job, out);
    let job = Arc::clone(job);
    tokio::spawn(async move {
        supervise(rec, child, shutdown).await;
        shared.job_ended(&job, true);
    })
}

/// Ends a job that never started (cancelled while queued): its end lines
/// are recorded as for any job.
pub(crate) fn end_unstarted(job: &Arc<Job>) -> JoinHandle<()> {
    let rec = Recorder::new(job, open_log(job));
    let job = Arc::clone(job);
    tokio::spawn(async move {
        rec.finish(End::Cancelled).await;
        job.shared.job_ended(&job, false);
    })
}

fn open_log(job: &Job) -> Option<tokio::fs::File> {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&job.events_path)
    {
        Ok(f) => Some(tokio::fs::File::from_std(f)),
        Err(e) => {
            tracing::error!("cannot open {}: {e}", job.events_path.display());
            job.shared
                .counters
                .write_errors
                .fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// How a child's run ended.
enum End {
    Exited(io::Result<ExitStatus>),
    Cancelled,
    Shutdown,
    SpawnFailed(io::Error),
}

async fn supervise(
    mut rec: Recorder,
    child: io::Result<Child>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return rec.finish(End::SpawnFailed(e)).await,
    };
    let (line_tx, mut lines) = mpsc::channel(LINE_QUEUE);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_pipe(
            out,
            Stream::Stdout,
            line_tx.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_pipe(
            err,
            Stream::Stderr,
            line_tx.clone(),
        )));
    }
    drop(line_tx);
    let job = Arc::clone(&rec.job);
    let end = loop {
        tokio::select! {
            Some(batch) = lines.recv() => rec.record(batch).await,
            status = child.wait() => break End::Exited(status),
            () = job.cancel.notified() => {
                stop(&mut child).await;
                break End::Cancelled;
            }
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                stop(&mut child).await;
                break End::Shutdown;
            }
        }
    };
    // The pipes are read until they close, or until they have been silent
    // for DRAIN_GRACE (a grandchild holds them open), or DRAIN_LIMIT has
    // passed: a child that printed much just before it exited loses none of
    // it, however busy the runner is.
    let limit = tokio::time::Instant::now() + DRAIN_LIMIT;
    let deadline = tokio::time::sleep(DRAIN_GRACE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            batch = lines.recv() => match batch {
                Some(batch) => {
                    rec.record(batch).await;
                    let next = tokio::time::Instant::now() + DRAIN_GRACE;
                    deadline.as_mut().reset(next.min(limit));
                }
                None => break,
            },
            () = &mut deadline => {
                // Something the child started still holds its pipes open.
                for r in &readers {
                    r.abort();
                }
                while let Ok(batch) = lines.try_recv() {
                    rec.record(batch).await;
                }
                break;
            }
        }
    }
    rec.finish(end).await;
}

/// SIGTERM to the child's process group, SIGKILL after a grace period.
async fn stop(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            // The group may outlive its leader.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return;
        }
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Reads one pipe, and sends its lines on in batches: after each read, the
/// lines it completed, cut at [`BATCH`] lines or [`BATCH_BYTES`] bytes.
async fn read_pipe(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::Sender<Vec<Classified>>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        splitter.feed(&buf[..n], &mut lines);
        if send_batches(&mut lines, stream, &tx).await.is_err() {
            return;
        }
    }
    lines.extend(splitter.finish());
    let _ = send_batches(&mut lines, stream, &tx).await;
}

/// Classifies and sends `lines` (emptying it), in batches.
async fn send_batches(
    lines: &mut Vec<RawLine>,
    stream: Stream,
    tx: &mpsc::Sender<Vec<Classified>>,
) -> Result<(), ()> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for line in lines.drain(..) {
        let classified = classify(&line, stream);
        bytes += classified.data.len();
        batch.push(classified);
        if batch.len() >= BATCH || bytes >= BATCH_BYTES {
            bytes = 0;
            tx.send(std::mem::take(&mut batch)).await.map_err(|_| ())?;
        }
    }
    if !batch.is_empty() {
        tx.send(batch).await.map_err(|_| ())?;
    }
    Ok(())
}

/// The single writer of a job's lines.
struct Recorder {
    job: Arc<Job>,
    /// `None` when the log could not be opened (every write then fails).
    out: Option<tokio::fs::File>,
    /// A batch's lines as written to the file, reused.
    buf: Vec<u8>,
    tail: LogTail,
    /// The job's tracker as of the last line numbered (the job's copy is
    /// updated once the batch is written).
    tracker: Tracker,
    shared: Arc<Shared>,
    write_failed: bool,
    /// Whether `output` lines get their stage added (not for a mirror,
    /// whose lines were attributed where they were read).
    attribute: bool,
}

/// `data` (an `output` object) with the stage's `layer` and `layer_name`.
fn attribute(mut data: String, stage: &StageState) -> String {
    if data.ends_with('}') {
        data.pop();
        let name = Value::from(stage.layer_name.as_str()).to_string();
        data.push_str(&format!(
            r#","layer":{},"layer_name":{name}}}"#,
            stage.layer
        ));
    }
    data
}

impl Recorder {
    fn new(job: &Arc<Job>, out: Option<tokio::fs::File>) -> Recorder {
        Recorder {
            job: Arc::clone(job),
            out,
            buf: Vec::new(),
            tail: LogTail::default(),
            tracker: Tracker::default(),
            shared: Arc::clone(&job.shared),
            write_failed: false,
            attribute: true,
        }
    }

    /// Numbers a batch, writes it with one write, flushes, then publishes it.
    async fn record(&mut self, batch: Vec<Classified>) {
        if batch.is_empty() {
            return;
        }
        let now = now_ms();
        let mut records = Vec::with_capacity(batch.len());
        let mut index = OffsetIndex::default();
        let mut new_stages = Vec::new();
        let mut saw_event = false;
        self.buf.clear();
        for line in batch {
            let seq = self.tail.next_seq;
            let data = match line.kind {
                LineKind::Event(map) => {
                    saw_event = true;
                    new_stages.extend(self.tracker.observe(&map, seq, Some(now)));
                    line.data
                }
                LineKind::Output => match self.tracker.single_running() {
                    Some(stage) if self.attribute => attribute(line.data, stage),
                    _ => line.data,
                },
            };
            records.push(self.tail.append(data, &mut self.buf, &mut index));
        }
        let counters = &self.shared.counters;
        counters
            .lines_received
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut result = match &mut self.out {
            Some(out) => out.write_all(&self.buf).await,
            None => Err(io::Error::other("the log file is not open")),
        };
        if result.is_ok() {
            if let Some(out) = &mut self.out {
                result = out.flush().await;
            }
        }
        if result.is_ok() {
            counters
                .lines_stored
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            counters
                .bytes_stored
                .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        } else {
            counters.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        if self.buf.capacity() > 4 * BATCH_BYTES {
            // One huge line must not keep its buffer for the job's life.
            self.buf = Vec::new();
        }
        if let Err(e) = result {
            if !std::mem::replace(&mut self.write_failed, true) {
                tracing::error!(
                    "cannot write {}: {e} (live clients still get the lines; replay will miss them)",
                    self.job.events_path.display()
                );
            }
        }
        {
            let mut inner = self.job.lock();
            // A mirrored job that was already ended when it was first seen
            // keeps the stages its end recorded.
            if saw_event && inner.outcome.is_none() {
                inner.tracker = self.tracker.clone();
            }
            inner.last_seq = self.tail.last_seq();
            inner.index.extend(index);
            if let Some(tx) = &inner.tx {
                let _ = tx.send(Msg::Lines(records.into()));
            }
        }
        for (layer, name) in new_stages {
            self.shared.catalog.note(layer, &name);
        }
    }

    async fn finish(mut self, end: End) {
        let mut exit_code = None;
        let mut outcome = None;
        let reason = match &end {
            End::Exited(Ok(status)) => {
                exit_code = status.code();
                self.tracker
                    .complete_error
                    .clone()
                    .unwrap_or_else(|| describe(*status))
            }
            End::Exited(Err(e)) => format!("cannot wait for the pipeline: {e}"),
            End::Cancelled => {
                outcome = Some(Outcome::Cancelled);
                CANCELLED.to_owned()
            }
            End::Shutdown => {
                outcome = Some(Outcome::Interrupted);
                SHUT_DOWN.to_owned()
            }
            End::SpawnFailed(e) => format!("cannot start the pipeline: {e}"),
        };
        let started = self.job.lock().started;
        let elapsed = started.map(|s| s.elapsed().as_millis() as u64);
        let lines = self
            .tracker
            .end_lines(&self.job.id, &reason, now_ms(), elapsed.unwrap_or(0));
        let closing: Vec<Classified> = lines
            .into_iter()
            .map(|data| {
                let kind = match serde_json::from_str(&data) {
                    Ok(Value::Object(map)) => LineKind::Event(map),
                    _ => LineKind::Output,
                };
                Classified { kind, data }
            })
            .collect();
        self.record(closing).await;
        if let Some(out) = &mut self.out {
            let _ = out.shutdown().await;
        }
        // A clean exit whose pipeline_complete said nothing has no reason.
        let reason = match &end {
            End::Exited(Ok(status)) if status.success() => self.tracker.complete_error.clone(),
            _ => Some(reason),
        };
        let (meta, summary) = {
            let mut inner = self.job.lock();
            inner.tracker = self.tracker.clone();
            inner.finished_at = Some(now_timestamp());
            inner.duration_ms = elapsed;
            inner.exit_code = exit_code;
            inner.reason = reason;
            inner.outcome = Some(outcome.unwrap_or(Outcome::of_status(inner.tracker.status)));
            inner.phase = Phase::Finished;
            let summary = self.job.summary_of(&inner);
            (
                Meta {
                    summary: summary.clone(),
                    stages: inner.tracker.stages.clone(),
                },
                summary,
            )
        };
        if let Err(e) = self.shared.data.write_meta(&meta) {
            tracing::error!("{e}");
        }
        announce(&self.shared.list_events, &summary);
        let mut inner = self.job.lock();
        if let Some(tx) = inner.tx.take() {
            let _ = tx.send(Msg::End);
        }
    }
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
/// Creates the mirror of a job that runs elsewhere, from its summary as
/// the broker has it: queued, running, or already ended (then with the
/// stages its end recorded). Its lines come through a [`Mirror`]; its
/// streams stay open until the mirror has them all.
pub(crate) fn create_mirror(
    s: &Summary,
    stages: Vec<StageState>,
    shared: &Arc<Shared>,
) -> Result<Arc<Job>, RunnerError> {
    let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
    let ended = !matches!(s.state, Phase::Queued | Phase::Running);
    let trace = s
        .trace_id
        .clone()
        .zip(s.span_id.clone())
        .map(|(trace_id, span_id)| TraceIds { trace_id, span_id });
    let job = Arc::new(Job {
        id: s.job_id.clone(),
        created_at: s.created_at.clone(),
        rerun_of: s.rerun_of.clone(),
        trace: once(trace),
        events_path: shared.data.job_dir(&s.job_id).join("events.jsonl"),
        shared: Arc::clone(shared),
        inner: Mutex::new(Inner {
            phase: s.state,
            outcome: ended.then_some(s.outcome),
            reason: s.reason.clone(),
            started_at: s.started_at.clone(),
            started: None,
            finished_at: s.finished_at.clone(),
            duration_ms: s.duration_ms,
            exit_code: s.exit_code,
            tracker: if ended {
                Tracker::ended(stages, s.status)
            } else {
                Tracker::default()
            },
            last_seq: 0,
            index: OffsetIndex::default(),
            tx: Some(tx),
            cancel_requested: false,
            queue_position: None,
            shown_lines: None,
        }),
        cancel: Notify::new(),
        catching_up: watch::Sender::new(false),
        wanted: Notify::new(),
        deleted: watch::Sender::new(false),
    });
    job.catching_up.send_replace(ended);
    if ended {
        job.lock().shown_lines = Some(s.lines);
    }
    let meta = job.detail_own();
    drop(shared.data.create_job(&meta)?);
    announce(&shared.list_events, &meta.summary);
    Ok(job)
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Job {
    /// Waits until a mirror that is catching up has all its lines (at most
    /// `limit`; false if it still has not). Its line mirror is told that
    /// someone waits, so it goes first.
    pub(crate) async fn caught_up(&self, limit: Duration) -> bool {
        let mut rx = self.catching_up.subscribe();
        if !*rx.borrow() {
            return true;
        }
        self.wanted.notify_one();
        tokio::time::timeout(limit, rx.wait_for(|c| !*c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Completes when someone waits for this catching-up mirror.
    pub(crate) async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// The summary and the job's own stages, as `meta.json` holds them.
    fn detail_own(&self) -> Meta {
        let inner = self.lock();
        Meta {
            summary: self.summary_of(&inner),
            stages: inner.tracker.stages.clone(),
        }
    }

    /// Takes a mirrored job's summary as the broker has it now (`s`, not
    /// yet ended) into account: a queued job has started elsewhere (then
    /// `true`), a running one learns its start time and trace once its
    /// worker has written them.
    pub(crate) fn mirror_update(&self, s: &Summary) -> bool {
        let started = {
            let mut inner = self.lock();
            let mut changed = false;
            let started = inner.phase == Phase::Queued && s.state != Phase::Queued;
            if started {
                inner.phase = Phase::Running;
                inner.queue_position = None;
                changed = true;
            }
            if inner.phase == Phase::Running {
                if inner.started_at.is_none() && s.started_at.is_some() {
                    inner.started_at = s.started_at.clone();
                    changed = true;
                }
                if let Some(t) = trace_of(s) {
                    changed |= self.trace.set(t).is_ok();
                }
            }
            if !changed {
                return false;
            }
            started
        };
        let meta = self.detail_own();
        if let Err(e) = self.shared.data.write_meta(&meta) {
            tracing::error!("{e}");
        }
        announce(&self.shared.list_events, &meta.summary);
        started
    }
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
/// The single writer of a mirrored job's lines: they arrive numbered, and
/// are stored with their numbers (a number the broker no longer has is
/// stored as an `output` line saying so, so that later numbers still match).
#[derive(Debug)]
pub(crate) struct Mirror {
    rec: Recorder,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("job", &self.job.id)
            .field("last_seq", &self.tail.last_seq())
            .finish_non_exhaustive()
    }
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Mirror {
    pub(crate) fn new(job: &Arc<Job>) -> Mirror {
        let mut rec = Recorder::new(job, open_log(job));
        rec.attribute = false;
        Mirror { rec }
    }

    pub(crate) fn job(&self) -> &Arc<Job> {
        &self.rec.job
    }

    /// The number of the last line stored.
    pub(crate) fn last_seq(&self) -> u64 {
        self.rec.tail.last_seq()
    }

    /// Stores `lines` (`(number, line)`, in order). Numbers at or before
    /// the last one stored are skipped.
    pub(crate) async fn append(&mut self, lines: Vec<(u64, String)>) {
        let mut batch = Vec::with_capacity(lines.len());
        let mut next = self.rec.tail.next_seq;
        for (seq, data) in lines {
            if seq < next {
                continue;
            }
            while next < seq {
                let note = format!("[line {next} is no longer on the broker]");
                batch.push(Classified {
                    kind: LineKind::Output,
                    data: output_data(&note, Stream::Stderr),
                });
                next += 1;
            }
            let kind = match serde_json::from_str::<Value>(&data) {
                Ok(Value::Object(map)) if matches!(map.get("event"), Some(Value::String(_))) => {
                    LineKind::Event(map)
                }
                _ => LineKind::Output,
            };
            batch.push(Classified { kind, data });
            next += 1;
        }
        self.rec.record(batch).await;
    }

    /// Ends the job as `s` (its final summary) and `stages` say, once its
    /// lines are stored; its streams end. Returns the phase it had here.
    pub(crate) async fn finish(mut self, s: &Summary, stages: Vec<StageState>) -> Phase {
        if let Some(out) = &mut self.rec.out {
            let _ = out.shutdown().await;
        }
        let job = Arc::clone(&self.rec.job);
        if let Some(t) = trace_of(s) {
            let _ = job.trace.set(t);
        }
        let (prior, meta) = {
            let mut inner = job.lock();
            let prior = inner.phase;
            inner.shown_lines = None;
            if inner.outcome.is_none() {
                inner.tracker = if stages.is_empty() {
                    let mut t = self.rec.tracker.clone();
                    t.status = s.status.or(t.status);
                    t
                } else {
                    Tracker::ended(stages, s.status)
                };
                inner.phase = match s.state {
                    Phase::Queued | Phase::Running => Phase::Finished,
                    ended => ended,
                };
                inner.outcome = Some(match s.outcome {
                    Outcome::Queued | Outcome::Running => Outcome::of_status(inner.tracker.status),
                    o => o,
                });
                inner.reason = s.reason.clone();
                inner.started_at = s.started_at.clone().or(inner.started_at.take());
                inner.finished_at = s.finished_at.clone().or_else(|| Some(now_timestamp()));
                inner.duration_ms = s.duration_ms;
                inner.exit_code = s.exit_code;
                inner.queue_position = None;
            }
            (
                prior,
                Meta {
                    summary: job.summary_of(&inner),
                    stages: inner.tracker.stages.clone(),
                },
            )
        };
        if let Err(e) = self.rec.shared.data.write_meta(&meta) {
            tracing::error!("{e}");
        }
        announce(&self.rec.shared.list_events, &meta.summary);
        if let Some(tx) = job.lock().tx.take() {
            let _ = tx.send(Msg::End);
        }
        job.catching_up.send_replace(false);
        self.rec.shared.mirror_ended(&job, prior);
        prior
    }
}

/// `exit status: 101`, or `killed by signal 9`.
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status: {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Number};

    use super::super::{Remote, RemoteFuture, Runner, RunnerOptions};

    #[derive(Debug)]
    struct Nowhere;

    impl Remote for Nowhere {
        fn submit(&self, _: String, _: Option<String>) -> RemoteFuture<'_, Summary> {
            Box::pin(async { Err(RunnerError::Unavailable("nowhere".into())) })
        }
        fn cancel<'a>(&'a self, _: &'a str) -> RemoteFuture<'a, ()> {
            Box::pin(async { Err(RunnerError::Unavailable("nowhere".into())) })
        }
        fn delete<'a>(&'a self, _: &'a str) -> RemoteFuture<'a, ()> {
            Box::pin(async { Err(RunnerError::Unavailable("nowhere".into())) })
        }
        fn health(&self) -> serde_json::Map<String, Value> {
            serde_json::Map::new()
        }
        fn fetch<'a>(
            &'a self,
            _: &'a str,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
            Box::pin(async { false })
        }
    }

    fn summary(v: Value) -> Summary {
        serde_json::from_value(v).unwrap()
    }

    fn stored(path: &std::path::Path) -> Vec<(u64, Value)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let r: Value = serde_json::from_str(l).unwrap();
                let data = serde_json::from_str(r["data"].as_str().unwrap()).unwrap();
                (r["seq"].as_u64().unwrap(), data)
            })
            .collect()
    }

    /// A mirror stores lines with the numbers they came with: repeats are
    /// dropped, a number that never came is held by a note, so later
    /// numbers (the SSE ids) still match the broker's.
    #[tokio::test]
    async fn a_mirror_keeps_the_brokers_numbers() {
        let dir = std::env::temp_dir().join(format!(
            "tp-mirror-{}-{}",
            std::process::id(),
            crate::reference::generate_job_id()
        ));
        let runner =
            Runner::open_remote(dir.clone(), RunnerOptions::default(), Arc::new(Nowhere)).unwrap();
        let running = summary(json!({
            "job_id": "m1", "state": "running", "status": null, "outcome": "running",
            "created_at": "2026-01-01T00:00:00.000Z",
        }));
        let (job, new) = runner.mirror(&running, Vec::new()).unwrap();
        assert!(new);
        let (rx, _) = job.subscribe();
        assert!(rx.is_some(), "a live mirror has a stream");
        let mut mirror = Mirror::new(&job);
        let start = r#"{"event":"layer_start","layer":1,"layer_name":"a"}"#;
        let out = r#"{"type":"output","text":"x","layer":1,"layer_name":"a"}"#;
        mirror
            .append(vec![(1, start.into()), (1, start.into()), (3, out.into())])
            .await;
        mirror
            .append(vec![(2, "late".into()), (4, out.into())])
            .await;
        assert_eq!(mirror.last_seq(), 4);
        let lines = stored(job.events_path());
        let seqs: Vec<u64> = lines.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(lines[0].1["event"], "layer_start");
        assert_eq!(lines[1].1["type"], "output");
        assert!(lines[1].1["text"].as_str().unwrap().contains("line 2"));
        // Already attributed where it was read: stored as it came.
        assert_eq!(lines[2].1, serde_json::from_str::<Value>(out).unwrap());
        assert_eq!(job.detail().stages[0].status, StageStatus::Running);

        let ended = summary(json!({
            "job_id": "m1", "state": "finished", "status": "success", "outcome": "success",
            "created_at": "2026-01-01T00:00:00.000Z", "finished_at": "2026-01-01T00:00:09.000Z",
            "duration_ms": 9000, "exit_code": 0, "lines": 4,
        }));
        let stage: StageState = serde_json::from_value(
            json!({"layer": 1, "layer_name": "a", "status": "complete", "duration_ms": 7}),
        )
        .unwrap();
        let prior = mirror.finish(&ended, vec![stage]).await;
        assert_eq!(prior, Phase::Running);
        let d = job.detail();
        assert_eq!(d.summary.state, Phase::Finished);
        assert_eq!(d.summary.outcome, Outcome::Success);
        assert_eq!(d.summary.lines, 4);
        assert_eq!(d.summary.exit_code, Some(0));
        assert_eq!(d.stages[0].status, StageStatus::Complete);
        assert!(job.subscribe().0.is_none(), "its streams have ended");
        assert_eq!(runner.load(), (0, 0));
        assert!(job.caught_up(Duration::ZERO).await);

        // First seen ended: shown ended, but not served until its lines are in.
        let mut late = ended.clone();
        late.job_id = "m2".into();
        let (job, _) = runner.mirror(&late, Vec::new()).unwrap();
        assert_eq!(job.phase(), Phase::Finished);
        assert!(!job.caught_up(Duration::from_millis(10)).await);
        let mut mirror = Mirror::new(&job);
        let waiting = {
            let job = Arc::clone(&job);
            tokio::spawn(async move { job.caught_up(Duration::from_secs(10)).await })
        };
        // The waiter is heard by the line mirror.
        tokio::time::timeout(Duration::from_secs(5), job.wanted())
            .await
            .expect("the mirror is told someone waits");
        mirror
            .append((1..=4).map(|n| (n, format!("line {n}"))).collect())
            .await;
        mirror.finish(&late, Vec::new()).await;
        assert!(waiting.await.unwrap(), "served once every line is in");
        assert_eq!(job.detail().summary.lines, 4);
        drop(runner);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn attributed_output_names_its_stage() {
        let stage = StageState::pending(Number::from(3), "a \"b\"".into());
        let data = attribute(r#"{"type":"output","text":"x"}"#.into(), &stage);
        let v: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            v,
            json!({"type":"output","text":"x","layer":3,"layer_name":"a \"b\""})
        );
    }
}
