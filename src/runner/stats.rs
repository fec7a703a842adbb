//! Statistics across runs: what one finished job contributes
//! ([`JobRecord`]), the running totals the metrics are read from
//! ([`Totals`]), the per-stage statistics over a window of recent jobs
//! (`GET /api/stages`), and the record of deleted jobs that keeps their
//! share of both.
//!
//! A job counts once, when it ends. The totals at start-up are rebuilt from
//! every stored finished job plus the deleted ones, so a restarted runner
//! reports the same totals it reported before.
//!
//! Deleted jobs are kept in the data directory:
//!
//! ```text
//! deleted.jsonl        one JobRecord per deleted job, oldest first (the
//!                      last KEEP_DELETED of them; older ones are folded into)
//! deleted-totals.json  the totals of deleted jobs no longer in deleted.jsonl
//! ```
//!
//! The window of `GET /api/stages` reaches at most [`MAX_WINDOW`] jobs, so
//! keeping that many deleted records is enough for any window.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Number, Value};

use super::model::{layer_order, Outcome, StageStatus};

/// The largest `window` of `GET /api/stages`.
pub(crate) const MAX_WINDOW: usize = 1000;
/// Deleted records kept one by one (more are folded into the totals).
const KEEP_DELETED: usize = MAX_WINDOW;

/// Stage duration histogram bounds, in seconds: 5 ms to one hour.
pub(crate) const DURATION_BUCKETS: [f64; 20] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1200.0, 1800.0, 2700.0, 3600.0,
];
/// Lines-per-job histogram bounds.
pub(crate) const LINES_BUCKETS: [f64; 8] = [
    10.0,
    100.0,
    1_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
    10_000_000.0,
    100_000_000.0,
];

/// One stage of a finished job, as the statistics need it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StageRecord {
    pub(crate) layer: Number,
    pub(crate) layer_name: String,
    pub(crate) status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tokens: Option<f64>,
}

/// What one finished job contributes to the statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct JobRecord {
    pub(crate) job_id: String,
    /// The order of the window: finish time, then id.
    #[serde(default)]
    pub(crate) finished_at: String,
    pub(crate) outcome: Outcome,
    /// Whether its child was started (a job cancelled while queued was not).
    #[serde(default)]
    pub(crate) started: bool,
    #[serde(default)]
    pub(crate) lines: u64,
    #[serde(default)]
    pub(crate) bytes: u64,
    /// Stages that ended (pending ones are left out).
    #[serde(default)]
    pub(crate) stages: Vec<StageRecord>,
}

/// Counts of observations per bucket (not cumulative; one more than the
/// bounds, for +Inf), their sum and count.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Hist {
    pub(crate) counts: Vec<u64>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Hist {
    pub(crate) fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.len() != bounds.len() + 1 {
            self.counts.resize(bounds.len() + 1, 0);
        }
        let i = bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    /// `(upper bound, count in this bucket alone)` per bucket, +Inf last
    /// (`prometheus-client` adds them up into the exposition's `le` counts).
    pub(crate) fn buckets(&self, bounds: &[f64]) -> Vec<(f64, u64)> {
        bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(|(i, b)| (b, self.counts.get(i).copied().unwrap_or(0)))
            .collect()
    }
}

/// One stage's totals over every finished job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct StageTotals {
    /// Runs by stage status (`complete`, `error`, `skipped`, `cancelled`).
    pub(crate) runs: BTreeMap<String, u64>,
    /// Durations of runs that were not skipped, in seconds.
    pub(crate) duration: Hist,
    pub(crate) tokens: f64,
}

/// Totals over every finished job, deleted ones included.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Totals {
    /// Jobs whose child was started.
    pub(crate) jobs_started: u64,
    /// Finished jobs by outcome.
    pub(crate) jobs_finished: BTreeMap<String, u64>,
    pub(crate) stages: BTreeMap<String, StageTotals>,
    /// Lines and bytes stored by finished jobs.
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
    /// Lines per finished job.
    pub(crate) job_lines: Hist,
}

impl Totals {
    /// Adds a finished job (`count_start`: also count it as started, for
    /// jobs counted at start-up rather than live).
    pub(crate) fn add(&mut self, job: &JobRecord, count_start: bool) {
        if count_start && job.started {
            self.jobs_started += 1;
        }
        *self
            .jobs_finished
            .entry(job.outcome.as_str().to_owned())
            .or_default() += 1;
        for s in &job.stages {
            let t = self.stages.entry(s.layer_name.clone()).or_default();
            *t.runs.entry(status_name(s.status).to_owned()).or_default() += 1;
            if s.status != StageStatus::Skipped {
                if let Some(ms) = s.duration_ms {
                    t.duration.observe(&DURATION_BUCKETS, ms as f64 / 1000.0);
                }
            }
            t.tokens += s.tokens.unwrap_or(0.0);
        }
        self.lines += job.lines;
        self.bytes += job.bytes;
        self.job_lines.observe(&LINES_BUCKETS, job.lines as f64);
    }
}

/// The API name of a stage status.
pub(crate) fn status_name(s: StageStatus) -> &'static str {
    match s {
        StageStatus::Pending => "pending",
        StageStatus::Running => "running",
        StageStatus::Complete => "complete",
        StageStatus::Error => "error",
        StageStatus::Skipped => "skipped",
        StageStatus::Cancelled => "cancelled",
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The body of `GET /api/stages?window=N`: `jobs` holds every finished job
/// known (stored and deleted records) in any order; `catalog` every stage
/// known, so that stages without runs in the window are listed too.
pub(crate) fn window_stats(
    mut jobs: Vec<JobRecord>,
    catalog: &[(Number, String)],
    window: usize,
) -> Value {
    jobs.sort_by(|a, b| (&a.finished_at, &a.job_id).cmp(&(&b.finished_at, &b.job_id)));
    let from = jobs.len().saturating_sub(window);
    let jobs = &jobs[from..];
    let mut stages: Vec<(Number, String)> = catalog.to_vec();
    for j in jobs {
        for s in &j.stages {
            if !stages.iter().any(|(_, n)| *n == s.layer_name) {
                stages.push((s.layer.clone(), s.layer_name.clone()));
            }
        }
    }
    stages.sort_by(|a, b| layer_order(&a.0, &b.0));
    let list: Vec<Value> = stages
        .into_iter()
        .map(|(layer, name)| {
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            let mut durations = Vec::new();
            let mut tokens: Option<f64> = None;
            let mut recent = Vec::new();
            for j in jobs {
                let Some(s) = j.stages.iter().find(|s| s.layer_name == name) else {
                    continue;
                };
                *counts.entry(status_name(s.status)).or_default() += 1;
                if s.status != StageStatus::Skipped {
                    durations.extend(s.duration_ms);
                }
                if let Some(t) = s.tokens {
                    tokens = Some(tokens.unwrap_or(0.0) + t);
                }
                let mut entry = json!({
                    "job_id": j.job_id,
                    "status": status_name(s.status),
                    "duration_ms": s.duration_ms,
                    "finished_at": j.finished_at,
                });
                if let Some(t) = s.tokens {
                    entry["tokens"] = json_number(t);
                }
                recent.push(entry);
            }
            durations.sort_unstable();
            let runs: u64 = counts.values().sum();
            let c = |k: &str| counts.get(k).copied().unwrap_or(0);
            let failure_rate = if runs == 0 {
                0.0
            } else {
                (c("error") + c("cancelled")) as f64 / runs as f64
            };
            let mut v = json!({
                "layer": layer,
                "layer_name": name,
                "runs": runs,
                "complete": c("complete"),
                "error": c("error"),
                "skipped": c("skipped"),
                "cancelled": c("cancelled"),
                "failure_rate": failure_rate,
                "p50_ms": percentile(&durations, 0.5),
                "p95_ms": percentile(&durations, 0.95),
                "recent": recent,
            });
            if let Some(t) = tokens {
                v["tokens"] = json_number(t);
            }
            v
        })
        .collect();
    json!({ "window": window, "jobs": jobs.len(), "stages": list })
}

/// A whole number as an integer, anything else as a float.
pub(crate) fn json_number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// The deleted jobs' share of the statistics, as kept in the data directory.
#[derive(Debug)]
pub(crate) struct DeletedLog {
    records_path: PathBuf,
    totals_path: PathBuf,
    /// The last [`KEEP_DELETED`] deleted jobs, oldest first.
    pub(crate) recent: VecDeque<JobRecord>,
    /// Deleted jobs folded out of `recent`.
    pub(crate) folded: Totals,
    /// Lines in the records file (compacted when it holds twice
    /// [`KEEP_DELETED`]).
    file_lines: usize,
}

impl DeletedLog {
    pub(crate) fn load(dir: &Path) -> io::Result<DeletedLog> {
        let records_path = dir.join("deleted.jsonl");
        let totals_path = dir.join("deleted-totals.json");
        let folded = match fs::read(&totals_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: {e}; deleted jobs' totals start from 0",
                    totals_path.display()
                );
                Totals::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Totals::default(),
            Err(e) => return Err(e),
        };
        let mut all = Vec::new();
        match fs::read_to_string(&records_path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    match serde_json::from_str::<JobRecord>(line) {
                        Ok(r) => all.push(r),
                        Err(e) => {
                            tracing::warn!("{}: skipping a line: {e}", records_path.display())
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file_lines = all.len();
        let mut log = DeletedLog {
            records_path,
            totals_path,
            recent: VecDeque::new(),
            folded,
            file_lines,
        };
        for r in all {
            log.recent.push_back(r);
        }
        log.fold_excess();
        Ok(log)
    }

    /// The totals of every deleted job.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = self.folded.clone();
        for r in &self.recent {
            t.add(r, true);
        }
        t
    }

    fn fold_excess(&mut self) {
        while self.recent.len() > KEEP_DELETED {
            if let Some(r) = self.recent.pop_front() {
                self.folded.add(&r, true);
            }
        }
    }

    /// Records a deleted job (appended to the file; the file is rewritten
    /// when it has grown to twice what is kept).
    pub(crate) fn push(&mut self, record: JobRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        self.recent.push_back(record);
        self.fold_excess();
        if self.file_lines + 1 > 2 * KEEP_DELETED {
            return self.compact();
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.records_path)?;
        f.write_all(&line)?;
        self.file_lines += 1;
        Ok(())
    }

    fn compact(&mut self) -> io::Result<()> {
        // Totals first: a crash between the two renames counts the folded
        // records twice rather than losing them.
        let tmp = self.totals_path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(&self.folded).unwrap_or_default())?;
        fs::rename(&tmp, &self.totals_path)?;
        let mut text = Vec::new();
        for r in &self.recent {
            let _ = serde_json::to_writer(&mut text, r);
            text.push(b'\n');
        }
        let tmp = self.records_path.with_extension("jsonl.tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &self.records_path)?;
        self.file_lines = self.recent.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(
        name: &str,
        layer: u64,
        status: StageStatus,
        ms: Option<u64>,
        tokens: Option<f64>,
    ) -> StageRecord {
        StageRecord {
            layer: Number::from(layer),
            layer_name: name.into(),
            status,
            duration_ms: ms,
            tokens,
        }
    }

    fn job(id: &str, at: &str, stages: Vec<StageRecord>) -> JobRecord {
        JobRecord {
            job_id: id.into(),
            finished_at: at.into(),
            outcome: Outcome::Success,
            started: true,
            lines: 10,
            bytes: 100,
            stages,
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.95), Some(7));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
    }

    #[test]
    fn the_window_counts_the_last_n_jobs_by_finish_time() {
        let jobs = vec![
            job(
                "c",
                "2026-01-03T00:00:00.000Z",
                vec![stage("a", 1, StageStatus::Error, Some(30), Some(5.0))],
            ),
            job(
                "a",
                "2026-01-01T00:00:00.000Z",
                vec![stage("a", 1, StageStatus::Complete, Some(10), Some(100.0))],
            ),
            job(
                "b",
                "2026-01-02T00:00:00.000Z",
                vec![
                    stage("a", 1, StageStatus::Complete, Some(20), None),
                    stage("b", 2, StageStatus::Skipped, Some(0), None),
                ],
            ),
        ];
        let catalog = vec![
            (Number::from(3), "z".to_owned()),
            (Number::from(1), "a".to_owned()),
        ];
        let v = window_stats(jobs.clone(), &catalog, 2);
        assert_eq!(v["window"], 2);
        assert_eq!(v["jobs"], 2);
        let names: Vec<&str> = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["layer_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "z"]);
        let a = &v["stages"][0];
        assert_eq!(a["runs"], 2);
        assert_eq!(a["complete"], 1);
        assert_eq!(a["error"], 1);
        assert_eq!(a["failure_rate"], 0.5);
        assert_eq!(a["p50_ms"], 20);
        assert_eq!(a["p95_ms"], 30);
        assert_eq!(a["tokens"], 5);
        let recent: Vec<&str> = a["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["job_id"].as_str().unwrap())
            .collect();
        assert_eq!(recent, ["b", "c"], "oldest first");
        let b = &v["stages"][1];
        assert_eq!(b["skipped"], 1);
        assert_eq!(
            b["p50_ms"],
            Value::Null,
            "skipped runs have no duration to count"
        );
        assert!(b.get("tokens").is_none());
        let z = &v["stages"][2];
        assert_eq!(z["runs"], 0);
        assert_eq!(z["failure_rate"], 0.0);
        let all = window_stats(jobs, &catalog, 50);
        assert_eq!(all["jobs"], 3);
        assert_eq!(all["stages"][0]["tokens"], 105);
    }

    #[test]
    fn totals_and_histograms() {
        let mut t = Totals::default();
        t.add(
            &job(
                "a",
                "x",
                vec![stage("s", 1, StageStatus::Complete, Some(7), Some(3.0))],
            ),
            true,
        );
        t.add(
            &job(
                "b",
                "y",
                vec![stage("s", 1, StageStatus::Skipped, Some(1), None)],
            ),
            true,
        );
        let s = &t.stages["s"];
        assert_eq!(s.runs["complete"], 1);
        assert_eq!(s.runs["skipped"], 1);
        assert_eq!(s.duration.count, 1);
        assert!((s.duration.sum - 0.007).abs() < 1e-9);
        let b = s.duration.buckets(&DURATION_BUCKETS);
        assert_eq!(b[0], (0.005, 0));
        assert_eq!(b[1], (0.01, 1));
        assert_eq!(b.last().unwrap(), &(f64::INFINITY, 0));
        assert_eq!(b.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(t.jobs_started, 2);
        assert_eq!(t.lines, 20);
    }

    #[test]
    fn deleted_records_survive_a_reload_and_fold() {
        let dir = std::env::temp_dir().join(format!("tp-deleted-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut log = DeletedLog::load(&dir).unwrap();
        for i in 0..(2 * KEEP_DELETED + 5) {
            log.push(job(
                &format!("j{i}"),
                "t",
                vec![stage("s", 1, StageStatus::Complete, Some(1), Some(1.0))],
            ))
            .unwrap();
        }
        let before = log.totals();
        assert_eq!(
            before.jobs_finished["success"],
            (2 * KEEP_DELETED + 5) as u64
        );
        let again = DeletedLog::load(&dir).unwrap();
        assert_eq!(again.recent.len(), KEEP_DELETED);
        assert_eq!(again.totals(), before);
        let _ = fs::remove_dir_all(&dir);
    }
}
