//! Replay-then-follow event streams, resumable with `Last-Event-ID`.
//!
//! Each client gets its own task that writes SSE events into chunks of
//! bytes (several events each, up to [`CHUNK_BYTES`]) and sends them into a
//! small bounded channel, which the HTTP response drains at the client's
//! pace. The task:
//!
//! 1. subscribes to the job's broadcast channel and, under the same lock,
//!    learns the number of the last line already written;
//! 2. replays from the job's log file every line after the client's
//!    `Last-Event-ID` up to that number;
//! 3. follows the broadcast (batches of consecutive lines), skipping lines it
//!    has sent; when the broadcast jumps ahead (the client was slow and the
//!    channel lagged), it reads the gap from the file, where every published
//!    line already is;
//! 4. after the job's end, sends any lines still missing, then `event: end`.
//!
//! A chunk is sent when it is full, and whenever the task would otherwise
//! wait for the job: a line never waits for more lines to fill a chunk.
//!
//! So every line reaches every client exactly once and in order, a slow
//! client costs only its own task, and the runner keeps at most the
//! broadcast channel's capacity of batches in memory per job, plus
//! [`CLIENT_BUFFER`] chunks per client.
//!
//! [`multiplex`] serves many jobs on one connection (a browser allows only
//! six HTTP/1.1 connections per host, shared by all its tabs): one such
//! task per job writes into the same channel, each message names its job,
//! and with the job list watched, every change of the list is sent too.
//!
//! [`channel_body`] is the same channel-to-body plumbing without the SSE
//! framing, for the bulk downloads of `api`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::io::Write;

use serde_json::Value;

use futures_util::Stream;
use std::sync::atomic::Ordering;
use tokio::sync::{broadcast, mpsc, watch};

use super::job::{Job, Msg};
use super::joblog::{Record, RecordReader};
use super::{Runner, Shared};

/// Chunks buffered per client between its task and its socket.
const CLIENT_BUFFER: usize = 4;
/// A chunk is sent once it holds this many bytes (it may hold one more
/// event, so a chunk is at most this plus one line).
const CHUNK_BYTES: usize = 64 * 1024;

/// The `text/event-stream` response for `job`, after line `after` (0: from
/// the start), with a comment every `keep_alive` while it is idle.
pub(crate) fn response(job: Arc<Job>, after: u64, keep_alive: Duration) -> Response {
    sse_response(events(job, after), keep_alive)
}

fn sse_response(rx: mpsc::Receiver<Bytes>, keep_alive: Duration) -> Response {
    let body = Body::from_stream(KeepAliveStream {
        rx,
        interval: keep_alive,
        timer: Box::pin(tokio::time::sleep(keep_alive)),
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The SSE text for `job`, after line `after`, in chunks of whole events.
pub(crate) fn events(job: Arc<Job>, after: u64) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let guard = ClientGuard::new(job.shared());
    tokio::spawn(async move {
        let _guard = guard;
        // A deleted job's stream simply ends.
        let mut out = Out::new(tx, Format::Job).until_deleted(&job);
        // `None`: the client went away.
        let _ = pump(&job, after, &mut out).await;
    });
    rx
}

/// One connection for many jobs: for each `(job, after)`, its lines after
/// `after` as `event: line` messages and then its `event: end`; with
/// `watch_list`, an `event: jobs` message with a job's summary whenever a
/// job is created or ends. The stream stays open (with keep-alive
/// comments) until the client leaves or the runner shuts down.
pub(crate) fn multiplex(
    runner: Arc<Runner>,
    jobs: Vec<(Arc<Job>, u64)>,
    watch_list: bool,
    keep_alive: Duration,
) -> Response {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let list = watch_list.then(|| runner.list_events());
    let mut shutdown = runner.shutdown_flag();
    let guard = ClientGuard::new(runner.shared());
    for (job, after) in jobs {
        let tag = Value::from(job.id()).to_string();
        let mut out = Out::new(tx.clone(), Format::Tagged(tag.clone())).until_deleted(&job);
        tokio::spawn(async move {
            if pump(&job, after, &mut out).await.is_none() && out.deleted_seen {
                // Deleted under the client: its `end` says so.
                out.chunk.clear();
                out.chunk.extend_from_slice(b"event: end\n");
                out.data(&format!(r#"{{"job":{tag},"deleted":true}}"#));
                out.chunk.push(b'\n');
                out.deleted = None;
                let _ = out.flush().await;
            }
        });
    }
    tokio::spawn(async move {
        let _guard = guard;
        let mut out = Out::new(tx, Format::Job);
        let Some(mut list) = list else {
            tokio::select! {
                () = out.tx.closed() => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
            return;
        };
        loop {
            let summaries: Vec<Arc<str>> = tokio::select! {
                msg = list.recv() => match msg {
                    Ok(summary) => vec![summary],
                    // Missed changes: the whole list again.
                    Err(broadcast::error::RecvError::Lagged(_)) => runner.summaries_json(),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = out.tx.closed() => break,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            for summary in summaries {
                out.chunk.extend_from_slice(b"event: jobs\n");
                out.data(&summary);
                out.chunk.push(b'\n');
            }
            if out.flush().await.is_none() {
                break;
            }
        }
    });
    sse_response(rx, keep_alive)
}

/// A response body made of the chunks sent into the returned channel, in
/// order, ending when the sender is dropped.
pub(crate) fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    (tx, Body::from_stream(ChannelStream(rx)))
}

struct ChannelStream(mpsc::Receiver<Bytes>);

impl Stream for ChannelStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(Ok))
    }
}

/// The chunks of one client, and a keep-alive comment (`:`) after each
/// `interval` without one.
struct KeepAliveStream {
    rx: mpsc::Receiver<Bytes>,
    interval: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Stream for KeepAliveStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                let next = tokio::time::Instant::now() + this.interval;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                std::task::ready!(this.timer.as_mut().poll(cx));
                let next = tokio::time::Instant::now() + this.interval;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(Bytes::from_static(b":\n\n"))))
            }
        }
    }
}

/// How a stream's messages look.
enum Format {
    /// `/events`: `id: SEQ` and the line itself as `data`.
    Job,
    /// `/api/stream`: no id; `event: line`, and `data` names the job
    /// (this JSON string) and the seq.
    Tagged(String),
}

/// Counts a connected event-stream client while it lives.
struct ClientGuard(Arc<Shared>);

impl ClientGuard {
    fn new(shared: &Arc<Shared>) -> ClientGuard {
        shared.counters.sse_clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(Arc::clone(shared))
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.counters.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The chunk being filled, and where it goes.
struct Out {
    tx: mpsc::Sender<Bytes>,
    chunk: Vec<u8>,
    format: Format,
    /// When set, the stream stops as soon as this becomes `true` (the job
    /// was deleted), even while waiting for a slow client.
    deleted: Option<watch::Receiver<bool>>,
    /// Whether it stopped for that reason.
    deleted_seen: bool,
}

impl Out {
    fn new(tx: mpsc::Sender<Bytes>, format: Format) -> Out {
        Out {
            tx,
            chunk: Vec::new(),
            format,
            deleted: None,
            deleted_seen: false,
        }
    }

    fn until_deleted(mut self, job: &Job) -> Out {
        self.deleted = Some(job.deleted());
        self
    }

    /// Adds the message for `record`; sends the chunk if full.
    async fn line(&mut self, record: &Record) -> Option<()> {
        if self.deleted.as_ref().is_some_and(|d| *d.borrow()) {
            self.deleted_seen = true;
            return None;
        }
        match &self.format {
            Format::Job => {
                let _ = writeln!(self.chunk, "id: {}", record.seq);
                self.data(&record.data);
            }
            Format::Tagged(job) => {
                let data = format!(
                    r#"{{"job":{job},"seq":{},"data":{}}}"#,
                    record.seq, record.data
                );
                self.chunk.extend_from_slice(b"event: line\n");
                self.data(&data);
            }
        }
        self.chunk.push(b'\n');
        if self.chunk.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Some(())
    }

    /// The `event: end` message of `job`.
    fn end(&mut self, job: &Job) {
        self.chunk.extend_from_slice(b"event: end\n");
        match &self.format {
            Format::Job => self.data(&job.end_data()),
            Format::Tagged(tag) => {
                let summary = serde_json::to_string(&job.summary()).unwrap_or_default();
                self.data(&format!(r#"{{"job":{tag},"summary":{summary}}}"#));
            }
        }
        self.chunk.push(b'\n');
    }

    /// `data: ...` lines for `data`, as axum's `Event::data` writes them: a
    /// `\n` starts another `data:` line. Our own lines never hold a `\r` or
    /// `\n` (see `classify`); a hand-edited log might, and a `\r` would end
    /// the line for the browser, so it becomes a space.
    fn data(&mut self, data: &str) {
        self.chunk.extend_from_slice(b"data: ");
        let bytes = data.as_bytes();
        let mut from = 0;
        let breaks = bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n' || b == b'\r');
        for (at, _) in breaks {
            self.chunk.extend_from_slice(&bytes[from..at]);
            if bytes[at] == b'\r' {
                self.chunk.push(b' ');
            } else {
                self.chunk.extend_from_slice(b"\ndata: ");
            }
            from = at + 1;
        }
        self.chunk.extend_from_slice(&bytes[from..]);
        self.chunk.push(b'\n');
    }

    /// Sends what the chunk holds, if anything.
    async fn flush(&mut self) -> Option<()> {
        if self.chunk.is_empty() {
            return Some(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_BYTES + 1024));
        let Some(deleted) = &mut self.deleted else {
            return self.tx.send(Bytes::from(chunk)).await.ok();
        };
        tokio::select! {
            sent = self.tx.send(Bytes::from(chunk)) => sent.ok(),
            _ = deleted.wait_for(|d| *d) => {
                self.deleted_seen = true;
                None
            }
        }
    }
}

async fn pump(job: &Job, after: u64, out: &mut Out) -> Option<()> {
    let (rx, written) = job.subscribe();
    let mut sent = after;
    if written > sent {
        sent = replay(job, sent, written, out).await?;
    }
    if let Some(mut rx) = rx {
        loop {
            let msg = match rx.try_recv() {
                Ok(msg) => Ok(msg),
                Err(broadcast::error::TryRecvError::Empty) => {
                    // Nothing more yet: what we have goes out before we wait.
                    out.flush().await?;
                    rx.recv().await
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    Err(broadcast::error::RecvError::Closed)
                }
            };
            match msg {
                Ok(Msg::Lines(batch)) => {
                    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                        continue;
                    };
                    if last.seq <= sent {
                        continue;
                    }
                    if first.seq > sent + 1 {
                        sent = replay(job, sent, first.seq - 1, out).await?;
                    }
                    let from = sent;
                    for record in batch.iter().filter(|r| r.seq > from) {
                        out.line(record).await?;
                        sent = record.seq;
                    }
                }
                Ok(Msg::End) | Err(broadcast::error::RecvError::Closed) => break,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
            }
        }
    }
    let last = job.last_seq();
    if last > sent {
        replay(job, sent, last, out).await?;
    }
    out.end(job);
    out.flush().await
}

/// Sends lines `after + 1 ..= upto` from the file; returns the last one sent.
async fn replay(job: &Job, after: u64, upto: u64, out: &mut Out) -> Option<u64> {
    let mut sent = after;
    let mut reader = match RecordReader::open(job.events_path(), job.offset_before(after + 1)).await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot read {}: {e}", job.events_path().display());
            return Some(upto);
        }
    };
    while let Ok(Some(record)) = reader.next().await {
        if record.seq <= sent {
            continue;
        }
        if record.seq > upto {
            break;
        }
        out.line(&record).await?;
        sent = record.seq;
        if sent == upto {
            break;
        }
    }
    // Lines the file lacks (a failed write) cannot be replayed; go on after them.
    Some(upto.max(sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    /// The `(id, data)` of each event in `text`, and whether it ended with
    /// `event: end`.
    fn parse(text: &str) -> (Vec<(u64, String)>, bool) {
        let mut events = Vec::new();
        let mut ended = false;
        for frame in text.split("\n\n").filter(|f| !f.is_empty()) {
            if frame.starts_with("event: end\n") {
                ended = true;
                continue;
            }
            let (id, data) = frame.split_once('\n').unwrap();
            let id = id.strip_prefix("id: ").unwrap().parse().unwrap();
            events.push((id, data.strip_prefix("data: ").unwrap().to_owned()));
        }
        (events, ended)
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> String {
        let mut text = Vec::new();
        while let Some(chunk) = rx.recv().await {
            text.extend_from_slice(&chunk);
        }
        String::from_utf8(text).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_lags_by_many_batches_gets_every_line_once() {
        let dir = std::env::temp_dir().join(format!("sse-lag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let n = 100_000u64;
        let command: Vec<OsString> = ["sh", "-c", "seq 1 100000"]
            .iter()
            .map(OsString::from)
            .collect();
        let runner = Runner::open(command, dir.clone()).unwrap();
        runner.start_job(Some("lag".into())).unwrap();
        let job = runner.job("lag").unwrap();
        // Subscribed from the start, but not read until the job has ended:
        // the broadcast laps this client many times over.
        let slow = events(Arc::clone(&job), 0);
        while job.phase() != crate::runner::model::Phase::Finished {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (lines, ended) = parse(&collect(slow).await);
        assert!(ended);
        assert_eq!(
            lines.len() as u64,
            n + 1,
            "every line and pipeline_complete"
        );
        for (i, (id, data)) in lines.iter().enumerate().take(n as usize) {
            assert_eq!(*id, i as u64 + 1);
            assert_eq!(data, &format!(r#"{{"type":"output","text":"{}"}}"#, i + 1));
        }
        // Resuming in the middle, after the end.
        let (rest, ended) = parse(&collect(events(Arc::clone(&job), 54_321)).await);
        assert!(ended);
        let ids: Vec<u64> = rest.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (54_322..=n + 1).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn data_is_written_as_axum_writes_it() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut out = Out::new(tx, Format::Job);
        let record = Record {
            seq: 7,
            data: "a\rb\nc".into(),
        };
        out.line(&record).await.unwrap();
        out.flush().await.unwrap();
        let chunk = rx.recv().await.unwrap();
        // What `Event::default().id("7").data("a b\nc")` writes.
        assert_eq!(&chunk[..], b"id: 7\ndata: a b\ndata: c\n\n");
    }
}
