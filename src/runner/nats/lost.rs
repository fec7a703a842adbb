//! Ending the jobs of a worker that stopped heartbeating, exactly once,
//! from any node.
//!
//! A job is **lost** when its state says `running` on worker W and W's
//! liveness entry has expired (the server drops it `worker_ttl` after W's
//! last heartbeat, by the server's clock, so no two nodes' clocks are
//! compared). The node that sees it rebuilds the job's stage states from
//! its lines in the events stream (the runner's own tracker), writes the
//! job's state as finished with a compare-and-set on the revision it read,
//! and only if that write wins appends the lines that end the job: a
//! `layer_error` for each stage still running and a `pipeline_complete`
//! with status `error` and error `worker lost`, numbered after the job's
//! last line. Two nodes racing both read the same revision; one write wins,
//! the other returns having done nothing.

use std::time::Duration;

use serde_json::Value;

use super::super::joblog::Record;
use super::super::model::{now_ms, now_timestamp, parse_timestamp_ms, Outcome, Tracker};
use super::bus::{Bus, JobPhase, JobState, NatsError};

/// The error of a job whose worker stopped heartbeating.
pub const WORKER_LOST: &str = "worker lost";

/// Ends every job whose worker is lost; returns the ids this call ended.
pub async fn end_lost_jobs(bus: &Bus) -> Result<Vec<String>, NatsError> {
    let mut ended = Vec::new();
    for id in bus.job_ids().await? {
        if end_lost_job(bus, &id).await? {
            ended.push(id);
        }
    }
    Ok(ended)
}

/// Ends job `job_id` if it is running on a lost worker. True when this call
/// ended it; false when it is not lost or another node ended it first.
pub async fn end_lost_job(bus: &Bus, job_id: &str) -> Result<bool, NatsError> {
    let Some((state, revision)) = bus.job_state(job_id).await? else {
        return Ok(false);
    };
    if state.phase != JobPhase::Running {
        return Ok(false);
    }
    let Some(worker) = state.worker.clone() else {
        return Ok(false);
    };
    if bus.worker(&worker).await?.is_some() {
        return Ok(false);
    }
    // The job's stage states, from its lines: the same tracker the runner
    // keeps while a job runs.
    // The last stored line is the job's last but when a retried publish
    // was stored behind later lines: so every line is read, up to the
    // last stored one and then until none follows.
    let stored_last = bus.last_seq(job_id).await?;
    let mut tracker = Tracker::default();
    let mut last = 0;
    if stored_last > 0 {
        let mut replay = bus.replay(job_id, 0).await?;
        loop {
            let wait = if last >= stored_last {
                Duration::from_millis(300)
            } else {
                bus.config().request_timeout
            };
            let line = match replay.next_within(wait).await? {
                Some(line) => line,
                // A gap that will not fill (lines the stream dropped).
                None if replay.held() > 0 => match replay.skip_gap() {
                    Some(line) => line,
                    None => break,
                },
                None if last >= stored_last => break,
                None => {
                    return Err(NatsError::Request {
                        action: format!("read the lines of {job_id}"),
                        reason: format!("line {stored_last} did not arrive"),
                    })
                }
            };
            if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(&line.data) {
                tracker.observe(&event, line.seq, None);
            }
            last = last.max(line.seq);
        }
    }
    let end_ms = now_ms();
    let started_ms = state
        .summary
        .as_ref()
        .and_then(|s| s.get("started_at"))
        .and_then(Value::as_str)
        .and_then(parse_timestamp_ms);
    let elapsed = started_ms.map_or(0, |s| end_ms.saturating_sub(s));
    let lines = tracker.end_lines(job_id, WORKER_LOST, end_ms, elapsed);
    let mut observed = tracker.clone();
    let mut records = Vec::new();
    for (i, data) in lines.into_iter().enumerate() {
        let seq = last + 1 + i as u64;
        if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(&data) {
            observed.observe(&event, seq, None);
        }
        records.push(Record { seq, data });
    }
    let mut summary = state
        .summary
        .clone()
        .unwrap_or_else(|| serde_json::json!({ "job_id": job_id, "started_at": state.queued_at }));
    if let Value::Object(map) = &mut summary {
        map.insert("state".into(), "finished".into());
        map.insert("status".into(), "error".into());
        map.insert("outcome".into(), Outcome::Error.as_str().into());
        map.insert("reason".into(), WORKER_LOST.into());
        map.insert("finished_at".into(), now_timestamp().into());
        map.insert("duration_ms".into(), elapsed.into());
        map.insert("lines".into(), (last + records.len() as u64).into());
        if let Ok(counts) = serde_json::to_value(super::super::model::count(&observed.stages)) {
            map.insert("counts".into(), counts);
        }
    }
    let finished = JobState {
        phase: JobPhase::Finished,
        stages: observed
            .stages
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .collect(),
        summary: Some(summary),
        ..state
    };
    if bus.set_job_state(&finished, revision).await?.is_none() {
        return Ok(false);
    }
    // Won: append the end.
    bus.publish_all(job_id, &records, 5).await?;
    tracing::warn!(
        "job {job_id}: worker {} lost; job ended",
        finished.worker.as_deref().unwrap_or("?")
    );
    Ok(true)
}
