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
//! When the child exits (or is cancelled, or the runner shuts down) its pipes
//! are drained for a short grace period (a grandchild may hold them open),
//! a `pipeline_complete` with status `error` is added if the child did not
//! print one, the job's `meta.json` is rewritten, and the broadcast channel is
//! closed with an `End` message.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::classify::{classify, Classified, LineKind, LineSplitter, RawLine, Stream};
use super::store::{DataDir, Meta, Record, StageCatalog};
use super::{now_timestamp, RunnerError};
use crate::{EventKind, PipelineEvent, Status};

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
/// One byte offset is remembered every this many lines, for resuming.
pub(crate) const INDEX_EVERY: u64 = 1024;
/// How long a stopped child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long the pipes are read after the child exited.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Running,
    Finished,
    /// It was running when the runner stopped without recording its end.
    Interrupted,
}

/// A job as listed by `GET /api/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) job_id: String,
    pub(crate) state: Phase,
    pub(crate) status: Option<Status>,
    pub(crate) started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exit_code: Option<i32>,
}

/// A stage's state within one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StageStatus {
    Pending,
    Running,
    Complete,
    Error,
    Skipped,
}

/// One stage of one job, as in `GET /api/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StageState {
    pub(crate) layer: Number,
    pub(crate) layer_name: String,
    pub(crate) status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// What the structured events of a job have said so far.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tracker {
    pub(crate) stages: Vec<StageState>,
    completed: u64,
    failed: u64,
    skipped: u64,
    pub(crate) status: Option<Status>,
    pub(crate) saw_complete: bool,
}

impl Tracker {
    /// Takes one structured event into account; returns the stage it named,
    /// if any, so that the stage catalogue can learn it.
    pub(crate) fn observe(&mut self, event: &Map<String, Value>) -> Option<(Number, String)> {
        let kind: EventKind = event.get("event").and_then(Value::as_str)?.parse().ok()?;
        let new_status = match kind {
            EventKind::LayerStart => StageStatus::Running,
            EventKind::LayerComplete => StageStatus::Complete,
            EventKind::LayerError => StageStatus::Error,
            EventKind::LayerSkip => StageStatus::Skipped,
            EventKind::PipelineComplete => {
                self.saw_complete = true;
                let status = event
                    .get("status")
                    .and_then(|s| serde_json::from_value::<Status>(s.clone()).ok())
                    .unwrap_or(Status::Error);
                self.status = Some(worse(self.status, status));
                return None;
            }
            _ => return None,
        };
        let name = event.get("layer_name").and_then(Value::as_str)?;
        let layer = event
            .get("layer")
            .and_then(Value::as_number)
            .cloned()
            .unwrap_or_else(|| Number::from(0));
        let stage = match self.stages.iter_mut().position(|s| s.layer_name == name) {
            Some(i) => &mut self.stages[i],
            None => {
                self.stages.push(StageState {
                    layer: layer.clone(),
                    layer_name: name.to_owned(),
                    status: StageStatus::Pending,
                    duration_ms: None,
                    error: None,
                });
                self.stages.last_mut()?
            }
        };
        stage.layer = layer.clone();
        stage.status = new_status;
        match new_status {
            StageStatus::Complete => self.completed += 1,
            StageStatus::Error => self.failed += 1,
            StageStatus::Skipped => self.skipped += 1,
            _ => {}
        }
        if new_status != StageStatus::Running {
            stage.duration_ms = event.get("duration_ms").and_then(Value::as_u64);
            stage.error = event
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        Some((layer, name.to_owned()))
    }

    /// The `pipeline_complete` line the runner adds for a job that ended
    /// without one.
    pub(crate) fn synthetic_complete(&self, job_id: &str, duration_ms: u64, error: &str) -> String {
        let mut event = PipelineEvent::new(EventKind::PipelineComplete, now_timestamp());
        event.job_id = Some(job_id.to_owned());
        event.status = Some(Status::Error);
        event.duration_ms = Some(duration_ms);
        event.error = Some(error.to_owned());
        let mut metadata = Map::new();
        metadata.insert("layers_completed".into(), self.completed.into());
        metadata.insert("layers_failed".into(), self.failed.into());
        metadata.insert("layers_skipped".into(), self.skipped.into());
        event.metadata = Some(metadata);
        event.to_line()
    }
}

fn worse(a: Option<Status>, b: Status) -> Status {
    let rank = |s: Status| match s {
        Status::Error => 3,
        Status::Partial => 2,
        _ => 1,
    };
    match a {
        Some(a) if rank(a) >= rank(b) => a,
        _ => b,
    }
}

/// What travels on a job's broadcast channel.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// Consecutive lines, in order, never empty.
    Lines(Arc<[Record]>),
    /// The job has ended; every line is in the file.
    End,
}

/// One job, running or past.
#[derive(Debug)]
pub(crate) struct Job {
    id: String,
    started_at: String,
    started: Instant,
    events_path: PathBuf,
    inner: Mutex<Inner>,
    cancel: Notify,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    finished_at: Option<String>,
    exit_code: Option<i32>,
    tracker: Tracker,
    last_seq: u64,
    /// `(seq, byte offset of that line)` for every `INDEX_EVERY`th line.
    index: Vec<(u64, u64)>,
    /// `None` once the job has ended.
    tx: Option<broadcast::Sender<Msg>>,
    cancel_requested: bool,
}

impl Job {
    /// A job loaded from the data directory (it has ended).
    pub(crate) fn past(
        meta: Meta,
        events_path: PathBuf,
        last_seq: u64,
        index: Vec<(u64, u64)>,
    ) -> Job {
        let tracker = Tracker {
            stages: meta.stages,
            status: meta.summary.status,
            saw_complete: true,
            ..Tracker::default()
        };
        Job {
            id: meta.summary.job_id,
            started_at: meta.summary.started_at,
            started: Instant::now(),
            events_path,
            inner: Mutex::new(Inner {
                phase: meta.summary.state,
                finished_at: meta.summary.finished_at,
                exit_code: meta.summary.exit_code,
                tracker,
                last_seq,
                index,
                tx: None,
                cancel_requested: false,
            }),
            cancel: Notify::new(),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn events_path(&self) -> &PathBuf {
        &self.events_path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn summary(&self) -> Summary {
        let inner = self.lock();
        self.summary_of(&inner)
    }

    fn summary_of(&self, inner: &Inner) -> Summary {
        Summary {
            job_id: self.id.clone(),
            state: inner.phase,
            status: inner.tracker.status,
            started_at: self.started_at.clone(),
            finished_at: inner.finished_at.clone(),
            exit_code: inner.exit_code,
        }
    }

    /// The summary and this job's stages (those it has not reached, known
    /// from earlier jobs, as `pending`), ordered by layer, then first seen.
    pub(crate) fn detail(&self, catalog: &StageCatalog) -> Meta {
        let (summary, own) = {
            let inner = self.lock();
            (self.summary_of(&inner), inner.tracker.stages.clone())
        };
        let mut stages: Vec<StageState> = catalog
            .list()
            .into_iter()
            .map(|(layer, layer_name)| {
                own.iter()
                    .find(|s| s.layer_name == layer_name)
                    .cloned()
                    .unwrap_or(StageState {
                        layer,
                        layer_name,
                        status: StageStatus::Pending,
                        duration_ms: None,
                        error: None,
                    })
            })
            .collect();
        for s in own {
            if !stages.iter().any(|t| t.layer_name == s.layer_name) {
                stages.push(s);
            }
        }
        stages.sort_by(|a, b| super::store::layer_order(&a.layer, &b.layer));
        Meta { summary, stages }
    }

    /// Asks the job to stop. False when it has already ended.
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
        let inner = self.lock();
        let i = inner.index.partition_point(|&(s, _)| s <= seq);
        if i == 0 {
            0
        } else {
            inner.index[i - 1].1
        }
    }

    /// The payload of the final `end` message.
    pub(crate) fn end_data(&self) -> String {
        let status = self.lock().tracker.status;
        serde_json::json!({ "job_id": self.id, "status": status }).to_string()
    }
}

/// Creates job `id` in the data directory, starts `command` for it and the
/// task that supervises it.
pub(crate) fn start(
    id: &str,
    command: &[OsString],
    data: &DataDir,
    catalog: Arc<StageCatalog>,
    shutdown: watch::Receiver<bool>,
) -> Result<(Arc<Job>, JoinHandle<()>), RunnerError> {
    let started_at = now_timestamp();
    let summary = Summary {
        job_id: id.to_owned(),
        state: Phase::Running,
        status: None,
        started_at: started_at.clone(),
        finished_at: None,
        exit_code: None,
    };
    let (file, events_path) = data.create_job(&Meta {
        summary,
        stages: Vec::new(),
    })?;
    let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
    let job = Arc::new(Job {
        id: id.to_owned(),
        started_at,
        started: Instant::now(),
        events_path,
        inner: Mutex::new(Inner {
            phase: Phase::Running,
            finished_at: None,
            exit_code: None,
            tracker: Tracker::default(),
            last_seq: 0,
            index: Vec::new(),
            tx: Some(tx),
            cancel_requested: false,
        }),
        cancel: Notify::new(),
    });
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("JOB_ID", id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group: a Ctrl-C in the runner's terminal reaches the
    // runner only (which then stops the child and records it), and stopping
    // the job stops whatever the command started too.
    #[cfg(unix)]
    cmd.process_group(0);
    let child = cmd.spawn();
    let recorder = Recorder {
        job: Arc::clone(&job),
        out: tokio::fs::File::from_std(file),
        buf: Vec::new(),
        offset: 0,
        next_seq: 1,
        catalog,
        data: data.clone(),
        write_failed: false,
    };
    let task = tokio::spawn(supervise(recorder, child, shutdown));
    Ok((job, task))
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
    let deadline = tokio::time::sleep(DRAIN_GRACE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            batch = lines.recv() => match batch {
                Some(batch) => rec.record(batch).await,
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
    out: tokio::fs::File,
    /// A batch's lines as written to the file, reused.
    buf: Vec<u8>,
    offset: u64,
    next_seq: u64,
    catalog: Arc<StageCatalog>,
    data: DataDir,
    write_failed: bool,
}

impl Recorder {
    /// Numbers a batch, writes it with one write, flushes, then publishes it.
    async fn record(&mut self, batch: Vec<Classified>) {
        if batch.is_empty() {
            return;
        }
        let mut records = Vec::with_capacity(batch.len());
        let mut kinds = Vec::with_capacity(batch.len());
        let mut index = Vec::new();
        self.buf.clear();
        for line in batch {
            let seq = self.next_seq;
            self.next_seq += 1;
            if seq % INDEX_EVERY == 1 {
                index.push((seq, self.offset + self.buf.len() as u64));
            }
            let record = Record {
                seq,
                data: line.data,
            };
            record.write_line(&mut self.buf);
            records.push(record);
            kinds.push(line.kind);
        }
        self.offset += self.buf.len() as u64;
        let mut result = self.out.write_all(&self.buf).await;
        if result.is_ok() {
            result = self.out.flush().await;
        }
        if self.buf.capacity() > 4 * BATCH_BYTES {
            // One huge line must not keep its buffer for the job's life.
            self.buf = Vec::new();
        }
        if let Err(e) = result {
            if !std::mem::replace(&mut self.write_failed, true) {
                eprintln!(
                    "pipeline-runner: cannot write {}: {e} (live clients still get the lines; replay will miss them)",
                    self.job.events_path.display()
                );
            }
        }
        let mut new_stages = Vec::new();
        {
            let mut inner = self.job.lock();
            for kind in &kinds {
                if let LineKind::Event(map) = kind {
                    new_stages.extend(inner.tracker.observe(map));
                }
            }
            inner.last_seq = self.next_seq - 1;
            inner.index.extend(index);
            if let Some(tx) = &inner.tx {
                let _ = tx.send(Msg::Lines(records.into()));
            }
        }
        for (layer, name) in new_stages {
            self.catalog.note(layer, &name);
        }
    }

    async fn finish(mut self, end: End) {
        let mut exit_code = None;
        let error = match end {
            End::Exited(Ok(status)) => {
                exit_code = status.code();
                describe(status)
            }
            End::Exited(Err(e)) => format!("cannot wait for the pipeline: {e}"),
            End::Cancelled => "cancelled".to_owned(),
            End::Shutdown => "runner shut down".to_owned(),
            End::SpawnFailed(e) => format!("cannot start the pipeline: {e}"),
        };
        let synthetic = {
            let inner = self.job.lock();
            (!inner.tracker.saw_complete).then(|| {
                let ms = self.job.started.elapsed().as_millis() as u64;
                inner.tracker.synthetic_complete(&self.job.id, ms, &error)
            })
        };
        if let Some(line) = synthetic {
            let kind = match serde_json::from_str(&line) {
                Ok(Value::Object(map)) => LineKind::Event(map),
                _ => LineKind::Output,
            };
            self.record(vec![Classified { kind, data: line }]).await;
        }
        let _ = self.out.shutdown().await;
        let meta = {
            let mut inner = self.job.lock();
            inner.finished_at = Some(now_timestamp());
            inner.exit_code = exit_code;
            inner.phase = Phase::Finished;
            Meta {
                summary: self.job.summary_of(&inner),
                stages: inner.tracker.stages.clone(),
            }
        };
        if let Err(e) = self.data.write_meta(&meta) {
            eprintln!("pipeline-runner: {e}");
        }
        let mut inner = self.job.lock();
        if let Some(tx) = inner.tx.take() {
            let _ = tx.send(Msg::End);
        }
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
    use serde_json::json;

    fn obs(t: &mut Tracker, v: Value) {
        if let Value::Object(m) = v {
            t.observe(&m);
        }
    }

    #[test]
    fn tracker_follows_stages_and_status() {
        let mut t = Tracker::default();
        obs(
            &mut t,
            json!({"event":"layer_start","layer":3,"layer_name":"b"}),
        );
        obs(
            &mut t,
            json!({"event":"layer_start","layer":2,"layer_name":"a"}),
        );
        obs(
            &mut t,
            json!({"event":"layer_complete","layer":2,"layer_name":"a","duration_ms":5}),
        );
        obs(
            &mut t,
            json!({"event":"layer_error","layer":3,"layer_name":"b","error":"x"}),
        );
        obs(
            &mut t,
            json!({"event":"layer_skip","layer":4,"layer_name":"c"}),
        );
        obs(&mut t, json!({"event":"log","layer":9,"layer_name":"z"}));
        let names: Vec<_> = t
            .stages
            .iter()
            .map(|s| (s.layer_name.as_str(), s.status))
            .collect();
        assert_eq!(
            names,
            [
                ("b", StageStatus::Error),
                ("a", StageStatus::Complete),
                ("c", StageStatus::Skipped)
            ]
        );
        assert_eq!(t.stages[1].duration_ms, Some(5));
        assert_eq!(t.stages[0].error.as_deref(), Some("x"));
        assert!(!t.saw_complete);
        let line = t.synthetic_complete("j1", 7, "exit status: 101");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["metadata"],
            json!({"layers_completed":1,"layers_failed":1,"layers_skipped":1})
        );
        assert_eq!(v["error"], "exit status: 101");
        assert!(line.starts_with(r#"{"timestamp":""#));
        obs(
            &mut t,
            json!({"event":"pipeline_complete","status":"partial"}),
        );
        obs(
            &mut t,
            json!({"event":"pipeline_complete","status":"success"}),
        );
        assert_eq!(t.status, Some(Status::Partial));
        assert!(t.saw_complete);
    }
}
