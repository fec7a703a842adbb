//! The connection to NATS and everything stored there: the streams and
//! buckets (created or checked at connect time, idempotently), the names
//! and headers of messages, publishing a job's lines, replaying them, and
//! reading and writing job state and worker liveness.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::super::joblog::{Record, INDEX_EVERY};
use super::super::model::{now_timestamp, validate_job_id};

/// The work-queue stream of job requests.
pub const JOBS_STREAM: &str = "PIPELINE_JOBS";
/// The subject job requests are published to.
pub const JOBS_SUBJECT: &str = "pipeline.jobs";
/// The durable pull consumer every worker takes jobs from.
pub const WORKER_CONSUMER: &str = "pipeline-workers";
/// The stream of every job's lines.
pub const EVENTS_STREAM: &str = "PIPELINE_EVENTS";
/// A job's lines go to `pipeline.events.<job>`.
pub const EVENTS_PREFIX: &str = "pipeline.events.";
/// A request to cancel a job goes to `pipeline.cancel.<job>` (core NATS).
pub const CANCEL_PREFIX: &str = "pipeline.cancel.";
/// The key-value bucket of job state, keyed by job id.
pub const STATE_BUCKET: &str = "pipeline_jobs";
/// The key-value bucket of worker liveness, keyed by worker id.
pub const WORKERS_BUCKET: &str = "pipeline_workers";
/// The header that carries a line's sequence number in the job.
pub const SEQ_HEADER: &str = "Pipeline-Seq";

/// Where NATS is and how the streams and buckets are set up.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// The server URL(s), comma separated: `nats://127.0.0.1:4222`.
    pub url: String,
    /// How long connecting may take before it is an error.
    pub connect_timeout: Duration,
    /// How long JetStream requests (publish acks, gets, updates) may take.
    pub request_timeout: Duration,
    /// The events stream drops lines older than this (zero: never).
    pub events_max_age: Duration,
    /// The events stream drops its oldest lines beyond this size (-1: no limit).
    pub events_max_bytes: i64,
    /// Publishes with the same message id within this window are stored once.
    pub duplicate_window: Duration,
    /// A worker whose liveness entry is older than this is lost: the
    /// entry expires on the server, and [`end_lost_jobs`](super::end_lost_jobs)
    /// ends its jobs.
    pub worker_ttl: Duration,
    /// JetStream replicas of each stream and bucket (1 on a single server,
    /// 3 on a three-node cluster).
    pub replicas: usize,
}

impl BusConfig {
    /// The defaults for `url`: lines kept 7 days and up to 1 GiB, a 2
    /// minute duplicate window, workers lost after 10 s without a heartbeat.
    pub fn new(url: impl Into<String>) -> BusConfig {
        BusConfig {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            events_max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            worker_ttl: Duration::from_secs(10),
            replicas: 1,
        }
    }
}

/// What can go wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The server cannot be reached (or refused us) within the connect timeout.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL as given.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// A job id that cannot be a subject token or a key.
    #[error("invalid job id {0:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-' (it becomes a NATS subject token and key)")]
    InvalidJobId(String),
    /// A job with this id exists already in the job-state bucket.
    #[error("job {0} already exists")]
    DuplicateJob(String),
    /// A stream or bucket exists with settings that cannot work.
    #[error("NATS {what}: {problem}")]
    Setup {
        /// The stream, bucket or consumer.
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// A request to the server failed.
    #[error("NATS: cannot {action}: {reason}")]
    Request {
        /// What was being done.
        action: String,
        /// What the client said.
        reason: String,
    },
    /// The local runner (the worker's children and data directory).
    #[error(transparent)]
    Runner(#[from] super::super::RunnerError),
}

fn request(action: impl Into<String>) -> impl FnOnce(&dyn std::fmt::Display) -> NatsError {
    let action = action.into();
    move |e| NatsError::Request {
        action,
        reason: e.to_string(),
    }
}

/// Where a job is, as the job-state bucket says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPhase {
    /// Submitted, not yet taken by a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// It has ended; every line is in the events stream.
    Finished,
}

/// One job's entry in the job-state bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// The job id (also the key).
    pub job_id: String,
    /// Queued, running or finished.
    pub phase: JobPhase,
    /// The worker that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When it was submitted (RFC 3339).
    pub queued_at: String,
    /// The job this one re-runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// The job's summary as the single-process runner's `GET /api/jobs`
    /// shows it (status, outcome, reason, times, lines, stage counts), once
    /// a worker has started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
    /// The job's stages as `GET /api/jobs/{id}` shows them (layer, name,
    /// status, duration, error, metadata), as of the last state write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<serde_json::Value>,
    /// `[line, stream sequence]` of line 1 and every 1024th line after it:
    /// where a replay from a given line starts reading the events stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index: Vec<[u64; 2]>,
}

impl JobState {
    /// The number of lines the summary counts (0 before it has one).
    pub fn lines(&self) -> u64 {
        self.summary
            .as_ref()
            .and_then(|s| s.get("lines"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    }
}

/// One worker's liveness entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker id (also the key).
    pub worker: String,
    /// When the worker started (RFC 3339).
    pub started_at: String,
    /// When this heartbeat was sent, by the worker's clock (RFC 3339).
    pub at: String,
    /// How many jobs it runs at most at once.
    pub max_running: usize,
    /// The jobs it runs now.
    pub running: Vec<String>,
}

/// One line of a job, as stored in the events stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    /// Its number in the job, from 1: the SSE id.
    pub seq: u64,
    /// The line (one JSON object), exactly as the runner stored it.
    pub data: String,
}

/// Room left in a message for its headers.
const HEADER_ROOM: usize = 1024;

/// A line as it is published: itself, or, when it is longer than the
/// server takes (`max_payload`, 1 MB by default, below the runner's 1 MiB
/// line cap), an `output` line saying so (the line itself stays in the
/// worker's data directory): a line the server refuses would otherwise
/// hold up every line after it.
fn fitted(record: &Record, max_payload: usize) -> String {
    if max_payload == 0 || record.data.len() + HEADER_ROOM <= max_payload {
        return record.data.clone();
    }
    let note = format!(
        "[line {}: {} bytes, over the NATS server's max_payload of {max_payload} bytes; \
         it is kept in the worker's data directory only]",
        record.seq,
        record.data.len()
    );
    super::super::classify::output_data(&note, super::super::classify::Stream::Stderr)
}

/// Checks that `id` is a job id, which also makes it a valid subject token
/// and key (no `.`, `*`, `>` or whitespace).
fn check_job_id(id: &str) -> Result<(), NatsError> {
    validate_job_id(id).map_err(|_| NatsError::InvalidJobId(id.to_owned()))
}

/// The connection and the handles of every stream and bucket.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    events: stream::Stream,
    jobs: stream::Stream,
    state: kv::Store,
    workers: kv::Store,
    config: BusConfig,
}

impl Bus {
    /// Connects (failing with the URL in the message when the server cannot
    /// be reached within `connect_timeout`) and creates, or checks and
    /// updates, the streams and buckets. Any number of nodes may do this at
    /// once.
    pub async fn connect(config: BusConfig) -> Result<Bus, NatsError> {
        let url = config.url.clone();
        let connect_error = |reason: String| NatsError::Connect {
            url: url.clone(),
            reason,
        };
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).min(2000))
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("NATS: disconnected"),
                    async_nats::Event::Connected => tracing::info!("NATS: connected"),
                    other => tracing::debug!("NATS: {other}"),
                }
            });
        let servers: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = tokio::time::timeout(config.connect_timeout, options.connect(servers))
            .await
            .map_err(|_| connect_error(format!("no answer within {:?}", config.connect_timeout)))?
            .map_err(|e| connect_error(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.request_timeout);
        // Two nodes starting together may race to create the same stream:
        // the loser sees it exist on its second try.
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::setup(client.clone(), js.clone(), config.clone()).await {
                Ok(bus) => return Ok(bus),
                Err(e @ NatsError::Setup { .. }) => return Err(e),
                Err(_) if tries < 3 => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(e),
            }
        }
    }

    async fn setup(
        client: async_nats::Client,
        js: jetstream::Context,
        config: BusConfig,
    ) -> Result<Bus, NatsError> {
        let jobs_config = stream::Config {
            name: JOBS_STREAM.into(),
            subjects: vec![JOBS_SUBJECT.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: config.duplicate_window,
            num_replicas: config.replicas,
            ..Default::default()
        };
        let jobs = js
            .get_or_create_stream(jobs_config)
            .await
            .map_err(|e| request(format!("create stream {JOBS_STREAM}"))(&e))?;
        if jobs.cached_info().config.retention != stream::RetentionPolicy::WorkQueue {
            return Err(NatsError::Setup {
                what: format!("stream {JOBS_STREAM}"),
                problem: "exists without work-queue retention; delete it to let it be recreated"
                    .into(),
            });
        }
        let events_config = stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec![format!("{EVENTS_PREFIX}*")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: config.events_max_age,
            max_bytes: config.events_max_bytes,
            duplicate_window: config.duplicate_window,
            num_replicas: config.replicas,
            allow_direct: true,
            ..Default::default()
        };
        js.create_or_update_stream(events_config)
            .await
            .map_err(|e| request(format!("create stream {EVENTS_STREAM}"))(&e))?;
        let events = js
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|e| request(format!("open stream {EVENTS_STREAM}"))(&e))?;
        let state = key_value(&js, STATE_BUCKET, Duration::ZERO, config.replicas).await?;
        let workers = key_value(&js, WORKERS_BUCKET, config.worker_ttl, config.replicas).await?;
        Ok(Bus {
            client,
            js,
            events,
            jobs,
            state,
            workers,
            config,
        })
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The NATS client (core NATS: cancel requests).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The subject of a job's lines; refuses an id that is not a job id.
    pub fn events_subject(job_id: &str) -> Result<String, NatsError> {
        check_job_id(job_id)?;
        Ok(format!("{EVENTS_PREFIX}{job_id}"))
    }

    /// The subject a cancel request for a job goes to.
    pub fn cancel_subject(job_id: &str) -> Result<String, NatsError> {
        check_job_id(job_id)?;
        Ok(format!("{CANCEL_PREFIX}{job_id}"))
    }

    /// The durable pull consumer of the work queue, shared by all workers.
    pub(crate) async fn jobs_consumer(
        &self,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, NatsError> {
        self.jobs
            .get_or_create_consumer(
                WORKER_CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(WORKER_CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| request(format!("create consumer {WORKER_CONSUMER}"))(&e))
    }

    /// Publishes consecutive lines of a job (each with its message id
    /// `<job>:<seq>` and its seq header), awaiting the acks together.
    /// Returns the seq of the last line acknowledged in an unbroken run from
    /// the first: on an error the lines after it must be published again
    /// (a line stored twice within the duplicate window is kept once).
    pub(crate) async fn publish_lines(
        &self,
        job_id: &str,
        lines: &[Record],
        index: &mut Vec<[u64; 2]>,
    ) -> (u64, Option<NatsError>) {
        let mut acked = lines.first().map_or(0, |r| r.seq.saturating_sub(1));
        let subject = match Self::events_subject(job_id) {
            Ok(s) => s,
            Err(e) => return (acked, Some(e)),
        };
        let mut pending = Vec::with_capacity(lines.len());
        let mut error = None;
        let max_payload = self.client.server_info().max_payload;
        for record in lines {
            let publish = jetstream::message::PublishMessage::build()
                .payload(fitted(record, max_payload).into())
                .message_id(format!("{job_id}:{}", record.seq))
                .header(SEQ_HEADER, record.seq.to_string().as_str());
            match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => pending.push((record.seq, ack)),
                Err(e) => {
                    error = Some(request(format!("publish line {} of {job_id}", record.seq))(
                        &e,
                    ));
                    break;
                }
            }
        }
        // Each ack's timeout starts when it is awaited, so a server that is
        // slow but answering is waited for; the first failure ends the wait
        // (awaiting the rest in turn after an outage would cost a timeout
        // per lost ack): the lines after it are published again.
        for (seq, ack) in pending {
            if error.is_some() {
                break;
            }
            match ack.await {
                Ok(ack) => {
                    acked = seq;
                    if seq % INDEX_EVERY == 1 && index.last().is_none_or(|[l, _]| *l < seq) {
                        index.push([seq, ack.sequence]);
                    }
                }
                Err(e) => {
                    error = Some(request(format!("publish line {seq} of {job_id}"))(&e));
                }
            }
        }
        (acked, error)
    }

    /// Publishes `lines` (consecutive, in order) until every one is
    /// acknowledged, from the first unacknowledged one after a failure, up
    /// to `tries` times in all; the last error when it gives up. Message
    /// ids make a retry (or a racing publish of the same numbers) store
    /// each line once.
    pub(crate) async fn publish_all(
        &self,
        job_id: &str,
        lines: &[Record],
        tries: u32,
    ) -> Result<(), NatsError> {
        let mut from = 0;
        let mut failed = 0;
        while from < lines.len() {
            let (acked, error) = self
                .publish_lines(job_id, &lines[from..], &mut Vec::new())
                .await;
            from = lines
                .iter()
                .position(|r| r.seq > acked)
                .unwrap_or(lines.len());
            if let Some(e) = error {
                failed += 1;
                if failed >= tries {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Publishes one line (message id `<job>:<seq>`) and waits for its ack.
    pub async fn publish_line(&self, job_id: &str, seq: u64, data: &str) -> Result<(), NatsError> {
        let record = Record {
            seq,
            data: data.to_owned(),
        };
        match self.publish_lines(job_id, &[record], &mut Vec::new()).await {
            (_, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// The lines of a job after line `after` (0: all), in order, then those
    /// that follow as they are published; see [`Replay::next`].
    ///
    /// The read starts at the stream sequence the job's state records for
    /// the nearest indexed line at or before `after + 1`, so a resume far
    /// into a long job skips fewer than 1024 of its lines.
    pub async fn replay(&self, job_id: &str, after: u64) -> Result<Replay, NatsError> {
        self.replay_with(job_id, after, true).await
    }

    /// [`Bus::replay`] reading the job's subject from its start, not from
    /// the indexed line: an indexed line whose publish was retried after an
    /// outage was stored behind lines that follow it, which a read from it
    /// would miss.
    pub async fn replay_all(&self, job_id: &str, after: u64) -> Result<Replay, NatsError> {
        self.replay_with(job_id, after, false).await
    }

    async fn replay_with(
        &self,
        job_id: &str,
        after: u64,
        indexed: bool,
    ) -> Result<Replay, NatsError> {
        let subject = Self::events_subject(job_id)?;
        let state = if indexed {
            self.job_state(job_id).await?
        } else {
            None
        };
        let start = match state {
            Some((state, _)) => state
                .index
                .iter()
                .take_while(|[line, _]| *line <= after + 1)
                .last()
                .map(|[_, stream_seq]| *stream_seq),
            None => None,
        };
        let deliver_policy = match start {
            Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
            None => consumer::DeliverPolicy::All,
        };
        let consumer = self
            .events
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| request(format!("replay {job_id}"))(&e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| request(format!("replay {job_id}"))(&e))?;
        Ok(Replay {
            job_id: job_id.to_owned(),
            messages,
            last: after,
            held: std::collections::BTreeMap::new(),
        })
    }

    /// The seq of the last line of a job in the events stream (0: none).
    pub async fn last_seq(&self, job_id: &str) -> Result<u64, NatsError> {
        let subject = Self::events_subject(job_id)?;
        match self.events.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(message
                .headers
                .get(SEQ_HEADER)
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(0)),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(0)
            }
            Err(e) => Err(request(format!("read the last line of {job_id}"))(&e)),
        }
    }

    /// A job's state and its revision (for compare-and-set), if it exists.
    pub async fn job_state(&self, job_id: &str) -> Result<Option<(JobState, u64)>, NatsError> {
        check_job_id(job_id)?;
        let entry = self
            .state
            .entry(job_id)
            .await
            .map_err(|e| request(format!("read the state of {job_id}"))(&e))?;
        Ok(entry.and_then(|e| {
            if e.operation != kv::Operation::Put {
                return None;
            }
            serde_json::from_slice(&e.value)
                .ok()
                .map(|state| (state, e.revision))
        }))
    }

    /// Every job id in the job-state bucket.
    pub async fn job_ids(&self) -> Result<Vec<String>, NatsError> {
        let mut keys = self
            .state
            .keys()
            .await
            .map_err(|e| request("list jobs")(&e))?;
        let mut ids = Vec::new();
        while let Some(key) = keys.next().await {
            ids.push(key.map_err(|e| request("list jobs")(&e))?);
        }
        Ok(ids)
    }

    /// Writes a job's state only if its revision is still `revision`:
    /// `Ok(Some(new revision))`, or `Ok(None)` when another node wrote it first.
    pub async fn set_job_state(
        &self,
        state: &JobState,
        revision: u64,
    ) -> Result<Option<u64>, NatsError> {
        check_job_id(&state.job_id)?;
        let value = serde_json::to_vec(state).unwrap_or_default();
        match self
            .state
            .update(&state.job_id, value.into(), revision)
            .await
        {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(request(format!("write the state of {}", state.job_id))(&e)),
        }
    }

    /// Creates a job's state; `DuplicateJob` when it exists.
    async fn create_job_state(&self, state: &JobState) -> Result<u64, NatsError> {
        check_job_id(&state.job_id)?;
        let value = serde_json::to_vec(state).unwrap_or_default();
        self.state
            .create(&state.job_id, value.into())
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => NatsError::DuplicateJob(state.job_id.clone()),
                _ => request(format!("create the state of {}", state.job_id))(&e),
            })
    }

    /// Records that a worker is alive (its entry expires after `worker_ttl`).
    pub async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), NatsError> {
        let value = serde_json::to_vec(info).unwrap_or_default();
        self.workers
            .put(&info.worker, value.into())
            .await
            .map(|_| ())
            .map_err(|e| request(format!("heartbeat of {}", info.worker))(&e))
    }

    /// A worker's last heartbeat, if it has not expired.
    pub async fn worker(&self, worker: &str) -> Result<Option<WorkerInfo>, NatsError> {
        let entry = self
            .workers
            .entry(worker)
            .await
            .map_err(|e| request(format!("read worker {worker}"))(&e))?;
        Ok(entry.and_then(|e| {
            if e.operation != kv::Operation::Put {
                return None;
            }
            serde_json::from_slice(&e.value).ok()
        }))
    }

    /// The job-state bucket.
    pub(crate) fn state_bucket(&self) -> &kv::Store {
        &self.state
    }

    /// Removes a job from the broker: its lines, then its state (a job
    /// without state is one nobody shows).
    pub(crate) async fn remove_job(&self, job_id: &str) -> Result<(), NatsError> {
        let subject = Self::events_subject(job_id)?;
        self.events
            .purge()
            .filter(subject)
            .await
            .map_err(|e| request(format!("purge the lines of {job_id}"))(&e))?;
        self.state
            .purge(job_id)
            .await
            .map_err(|e| request(format!("remove the state of {job_id}"))(&e))
    }

    /// Every worker whose liveness entry has not expired.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, NatsError> {
        let mut keys = self
            .workers
            .keys()
            .await
            .map_err(|e| request("list workers")(&e))?;
        let mut ids = Vec::new();
        while let Some(key) = keys.next().await {
            ids.push(key.map_err(|e| request("list workers")(&e))?);
        }
        let mut workers = Vec::new();
        for id in ids {
            if let Some(info) = self.worker(&id).await? {
                workers.push(info);
            }
        }
        Ok(workers)
    }

    /// Removes a worker's liveness entry (it stopped cleanly).
    pub(crate) async fn forget_worker(&self, worker: &str) {
        let _ = self.workers.delete(worker).await;
    }
}

/// Creates (or updates) a key-value bucket and opens it.
///
/// The bucket's stream is set up here with the settings the client's own
/// `create_key_value` uses (one value per key, rollups, direct gets):
/// that function first asks the server for account information whose
/// answer from servers before 2.10 the client cannot read.
async fn key_value(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, NatsError> {
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .map_err(|e| request(format!("create bucket {bucket}"))(&e))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| request(format!("open bucket {bucket}"))(&e))
}

/// Puts a job on the work queue: records it as `queued` in the job-state
/// bucket (refusing an id that exists or is not a job id) and publishes the
/// request (message id: the job id). Returns the job id.
pub async fn submit_job(bus: &Bus, job_id: Option<String>) -> Result<String, NatsError> {
    submit(bus, job_id, None).await.map(|state| state.job_id)
}

/// [`submit_job`] for a job that re-runs `rerun_of`; returns the state
/// written.
pub(crate) async fn submit(
    bus: &Bus,
    job_id: Option<String>,
    rerun_of: Option<String>,
) -> Result<JobState, NatsError> {
    let job_id = job_id.unwrap_or_else(crate::reference::generate_job_id);
    check_job_id(&job_id)?;
    let state = JobState {
        job_id: job_id.clone(),
        phase: JobPhase::Queued,
        worker: None,
        queued_at: now_timestamp(),
        rerun_of,
        summary: None,
        stages: Vec::new(),
        index: Vec::new(),
    };
    let revision = bus.create_job_state(&state).await?;
    let body = serde_json::json!({ "job_id": job_id }).to_string();
    let publish = jetstream::message::PublishMessage::build()
        .payload(body.into())
        .message_id(&job_id);
    let sent = match bus.js.send_publish(JOBS_SUBJECT, publish).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(reason) = sent {
        // Nothing will take it: do not leave it queued forever.
        let _ = bus
            .state
            .delete_expect_revision(&job_id, Some(revision))
            .await;
        return Err(NatsError::Request {
            action: format!("queue job {job_id}"),
            reason,
        });
    }
    Ok(state)
}

/// Lines a [`Replay`] holds back behind a gap at most; beyond that the
/// gap is taken to be lost for good.
pub const REPLAY_HOLD: usize = 50_000;

/// A job's lines from the events stream, in order, each once.
///
/// The stream holds a job's lines in the order they were stored, which is
/// their order but for one case: a publish whose acknowledgement was lost
/// in an outage is retried after the lines sent behind it were stored. A
/// line that comes before one it follows is held back until the gap fills
/// (at most [`REPLAY_HOLD`] lines); [`Replay::skip_gap`] gives up on a gap
/// that will not fill (lines the stream's limits dropped).
pub struct Replay {
    job_id: String,
    messages: consumer::pull::Ordered,
    last: u64,
    held: std::collections::BTreeMap<u64, String>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("job_id", &self.job_id)
            .field("last", &self.last)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Replay {
    /// The next line: waits for it when the job has not printed it yet.
    /// Lines at or before the last one returned (or the `after` given) are
    /// skipped, so a line stored twice is returned once.
    pub async fn next(&mut self) -> Result<EventLine, NatsError> {
        loop {
            if let Some(line) = self.take_held(false) {
                return Ok(line);
            }
            let message = match self.messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    return Err(request(format!("replay {}", self.job_id))(&e));
                }
                None => {
                    return Err(NatsError::Request {
                        action: format!("replay {}", self.job_id),
                        reason: "the stream ended".into(),
                    })
                }
            };
            let seq = message
                .headers
                .as_ref()
                .and_then(|h| h.get(SEQ_HEADER))
                .and_then(|v| v.as_str().parse::<u64>().ok());
            let Some(seq) = seq else { continue };
            if seq <= self.last || self.held.contains_key(&seq) {
                continue;
            }
            let data = String::from_utf8_lossy(&message.payload).into_owned();
            if seq == self.last + 1 {
                self.last = seq;
                return Ok(EventLine { seq, data });
            }
            // Ahead of a line not read yet: held until the gap fills.
            self.held.insert(seq, data);
            if self.held.len() > REPLAY_HOLD {
                if let Some(line) = self.take_held(true) {
                    return Ok(line);
                }
            }
        }
    }

    /// The first held line if it is next (or, with `skip`, whatever the gap
    /// before it).
    fn take_held(&mut self, skip: bool) -> Option<EventLine> {
        let (&seq, _) = self.held.first_key_value()?;
        if seq != self.last + 1 && !skip {
            return None;
        }
        let data = self.held.remove(&seq)?;
        self.last = seq;
        Some(EventLine { seq, data })
    }

    /// How many lines are held back behind a gap.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Gives up on the gap before the first held line (the stream will not
    /// fill it) and returns that line; the held lines after it follow
    /// from [`Replay::next`]. `None` when nothing is held.
    pub fn skip_gap(&mut self) -> Option<EventLine> {
        self.take_held(true)
    }

    /// The next line if it comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<EventLine>, NatsError> {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(line) => line.map(Some),
            Err(_) => Ok(None),
        }
    }
}
