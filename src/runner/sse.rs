//! Replay-then-follow event streams, resumable with `Last-Event-ID`.
//!
//! Each client gets its own task that sends SSE events into a small bounded
//! channel, which the HTTP response drains at the client's pace. The task:
//!
//! 1. subscribes to the job's broadcast channel and, under the same lock,
//!    learns the number of the last line already written;
//! 2. replays from the job's log file every line after the client's
//!    `Last-Event-ID` up to that number;
//! 3. follows the broadcast, skipping lines it has sent; when the broadcast
//!    jumps ahead (the client was slow and the channel lagged), it reads the
//!    gap from the file, where every published line already is;
//! 4. after the job's end, sends any lines still missing, then `event: end`.
//!
//! So every line reaches every client exactly once and in order, a slow
//! client costs only its own task, and the runner keeps at most the
//! broadcast channel's capacity of lines in memory per job.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event;
use tokio::sync::{broadcast, mpsc};

use super::job::{Job, Msg};
use super::store::{Record, RecordReader};

/// Events buffered per client between its task and its socket.
const CLIENT_BUFFER: usize = 16;

/// The stream of SSE events for `job`, after line `after` (0: from the start).
pub(crate) fn events(job: Arc<Job>, after: u64) -> mpsc::Receiver<Result<Event, Infallible>> {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(async move {
        // `None`: the client went away.
        let _ = pump(&job, after, &tx).await;
    });
    rx
}

type Out = mpsc::Sender<Result<Event, Infallible>>;

async fn pump(job: &Job, after: u64, out: &Out) -> Option<()> {
    let (rx, written) = job.subscribe();
    let mut sent = after;
    if written > sent {
        sent = replay(job, sent, written, out).await?;
    }
    if let Some(mut rx) = rx {
        loop {
            match rx.recv().await {
                Ok(Msg::Line(record)) => {
                    if record.seq <= sent {
                        continue;
                    }
                    if record.seq > sent + 1 {
                        replay(job, sent, record.seq - 1, out).await?;
                    }
                    send(out, &record).await?;
                    sent = record.seq;
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
    let end = Event::default().event("end").data(job.end_data());
    out.send(Ok(end)).await.ok()
}

/// Sends lines `after + 1 ..= upto` from the file; returns the last one sent.
async fn replay(job: &Job, after: u64, upto: u64, out: &Out) -> Option<u64> {
    let mut sent = after;
    let mut reader = match RecordReader::open(job.events_path(), job.offset_before(after + 1)).await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "pipeline-runner: cannot read {}: {e}",
                job.events_path().display()
            );
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
        send(out, &record).await?;
        sent = record.seq;
        if sent == upto {
            break;
        }
    }
    // Lines the file lacks (a failed write) cannot be replayed; go on after them.
    Some(upto.max(sent))
}

async fn send(out: &Out, record: &Record) -> Option<()> {
    // Our own lines never hold a `\r` (see `classify`); a hand-edited log
    // might, and `Event::data` refuses it.
    let data = if record.data.contains('\r') {
        record.data.replace('\r', " ")
    } else {
        record.data.clone()
    };
    let event = Event::default().id(record.seq.to_string()).data(data);
    out.send(Ok(event)).await.ok()
}
