//! The data directory: job logs, job metadata, the stage catalogue, and
//! loading them back when the runner restarts.
//!
//! ```text
//! DATA_DIR/
//!   stages.json              [{"layer":2,"layer_name":"pain_point_miner"}, ...]
//!   jobs/<job_id>/meta.json  the job's summary and stages (rewritten atomically)
//!   jobs/<job_id>/events.jsonl
//!                            one {"seq":N,"data":"<the SSE payload>"} per line
//! ```
//!
//! `meta.json` is written when a job starts (state `running`) and when it
//! ends. A job still `running` in its `meta.json` when the runner starts was
//! cut off by a crash: its log is read back (a half-written last line is cut
//! away), a `pipeline_complete` with status `error` is appended if it has
//! none, and it becomes `interrupted`.

use std::cmp::Ordering;
use std::fs;
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

use super::job::{Job, Phase, StageState, Summary, Tracker, INDEX_EVERY};
use super::{now_timestamp, validate_job_id, RunnerError};

/// One line of a job's log: its sequence number and its SSE payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) data: String,
}

impl Record {
    pub(crate) fn to_line(&self) -> String {
        // A struct of a number and a string always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Appends the record's log line, with its `\n`, to `out`.
    pub(crate) fn write_line(&self, out: &mut Vec<u8>) {
        // A struct of a number and a string always serialises, and a `Vec`
        // never fails a write.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

/// A job's `meta.json`, and the body of `GET /api/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    #[serde(flatten)]
    pub(crate) summary: Summary,
    #[serde(default)]
    pub(crate) stages: Vec<StageState>,
}

/// Orders layer numbers numerically (`2 < 2.5 < 3`).
pub(crate) fn layer_order(a: &Number, b: &Number) -> Ordering {
    let f = |n: &Number| n.as_f64().unwrap_or(f64::MAX);
    f(a).total_cmp(&f(b))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RunnerError + '_ {
    move |source| RunnerError::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// The data directory's paths and writes.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
    /// An exclusive `flock` on `<root>/.lock`, held while the runner lives.
    /// The kernel drops it when the process dies, SIGKILL included, and the
    /// file is close-on-exec, so a pipeline that outlives the runner does
    /// not hold it.
    #[cfg(unix)]
    _lock: std::sync::Arc<nix::fcntl::Flock<fs::File>>,
}

impl DataDir {
    /// Creates the directory if needed and checks that it can be written.
    pub(crate) fn open(root: PathBuf) -> Result<DataDir, RunnerError> {
        let jobs = root.join("jobs");
        fs::create_dir_all(&jobs).map_err(io_err(&jobs))?;
        let probe = root.join(".write-test");
        fs::write(&probe, b"ok").map_err(io_err(&probe))?;
        let _ = fs::remove_file(&probe);
        #[cfg(unix)]
        let lock = {
            use nix::fcntl::{Flock, FlockArg};
            let path = root.join(".lock");
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(RunnerError::DataDirInUse(root));
                }
                Err((_, errno)) => return Err(io_err(&path)(io::Error::from(errno))),
            }
        };
        Ok(DataDir {
            root,
            #[cfg(unix)]
            _lock: std::sync::Arc::new(lock),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.root
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.root.join("jobs").join(id)
    }

    /// Creates the job's directory, its `meta.json` and an empty log, which
    /// is returned open for appending with its path.
    pub(crate) fn create_job(&self, meta: &Meta) -> Result<(fs::File, PathBuf), RunnerError> {
        let id = &meta.summary.job_id;
        let dir = self.job_dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RunnerError::DuplicateJob(id.clone()))
            }
            Err(e) => return Err(io_err(&dir)(e)),
        }
        self.write_meta(meta)?;
        let path = dir.join("events.jsonl");
        let file = fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok((file, path))
    }

    /// Replaces the job's `meta.json` (write a temporary file, then rename).
    pub(crate) fn write_meta(&self, meta: &Meta) -> Result<(), RunnerError> {
        let dir = self.job_dir(&meta.summary.job_id);
        let tmp = dir.join("meta.json.tmp");
        let text = serde_json::to_vec_pretty(meta).unwrap_or_default();
        fs::write(&tmp, text).map_err(io_err(&tmp))?;
        let path = dir.join("meta.json");
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }
}

/// Every stage seen in any job, kept in `stages.json`.
#[derive(Debug)]
pub(crate) struct StageCatalog {
    path: PathBuf,
    stages: Mutex<Vec<StageKey>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StageKey {
    layer: Number,
    layer_name: String,
}

impl StageCatalog {
    pub(crate) fn load(data: &DataDir) -> Result<StageCatalog, RunnerError> {
        let path = data.path().join("stages.json");
        let stages = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(StageCatalog {
            path,
            stages: Mutex::new(stages),
        })
    }

    /// Learns a stage (or its new layer number); saves the file when it changed.
    pub(crate) fn note(&self, layer: Number, name: &str) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        match stages.iter_mut().find(|s| s.layer_name == name) {
            Some(s) if s.layer == layer => return,
            Some(s) => s.layer = layer,
            None => stages.push(StageKey {
                layer,
                layer_name: name.to_owned(),
            }),
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&*stages).unwrap_or_default();
        if let Err(e) = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, &self.path)) {
            eprintln!("pipeline-runner: cannot write {}: {e}", self.path.display());
        }
    }

    /// `(layer, layer_name)` ordered by layer, then first seen.
    pub(crate) fn list(&self) -> Vec<(Number, String)> {
        let mut stages = self
            .stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        stages.sort_by(|a, b| layer_order(&a.layer, &b.layer));
        stages
            .into_iter()
            .map(|s| (s.layer, s.layer_name))
            .collect()
    }
}

/// Loads every job of the data directory, oldest first, recovering those
/// that were cut off.
pub(crate) fn load_jobs(data: &DataDir, catalog: &StageCatalog) -> Result<Vec<Job>, RunnerError> {
    let jobs_dir = data.path().join("jobs");
    let mut jobs = Vec::new();
    for entry in fs::read_dir(&jobs_dir).map_err(io_err(&jobs_dir))? {
        let entry = entry.map_err(io_err(&jobs_dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().filter(|id| validate_job_id(id).is_ok()) else {
            continue;
        };
        let dir = entry.path();
        let meta: Meta = match fs::read(dir.join("meta.json"))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(meta) => meta,
            Err(e) => {
                eprintln!(
                    "pipeline-runner: skipping {}: meta.json: {e}",
                    dir.display()
                );
                continue;
            }
        };
        if meta.summary.job_id != id {
            continue;
        }
        let events = dir.join("events.jsonl");
        let job = recover(data, meta, &events).map_err(io_err(&events))?;
        for s in &job.1.stages {
            catalog.note(s.layer.clone(), &s.layer_name);
        }
        jobs.push(job);
    }
    jobs.sort_by(|a, b| {
        (&a.1.summary.started_at, &a.1.summary.job_id)
            .cmp(&(&b.1.summary.started_at, &b.1.summary.job_id))
    });
    Ok(jobs
        .into_iter()
        .map(|(events, meta, last_seq, index)| Job::past(meta, events, last_seq, index))
        .collect())
}

type Loaded = (PathBuf, Meta, u64, Vec<(u64, u64)>);

/// Reads a job's log back: its last sequence number and offset index; for a
/// job that was cut off, also its stages, and then records its end.
fn recover(data: &DataDir, mut meta: Meta, events: &Path) -> io::Result<Loaded> {
    let mut file = match fs::OpenOptions::new().read(true).append(true).open(events) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(events)?,
        Err(e) => return Err(e),
    };
    let cut_off = meta.summary.state == Phase::Running;
    let mut tracker = Tracker::default();
    let mut last_seq = 0;
    let mut index = Vec::new();
    let mut good_end = 0u64;
    {
        let mut reader = BufReader::new(&mut file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            if let Ok(record) = serde_json::from_slice::<Record>(&line) {
                if record.seq % INDEX_EVERY == 1 {
                    index.push((record.seq, good_end));
                }
                last_seq = record.seq;
                if cut_off {
                    if let Ok(Value::Object(map)) = serde_json::from_str(&record.data) {
                        tracker.observe(&map);
                    }
                }
            }
            good_end += n as u64;
        }
    }
    if cut_off {
        // A line half-written when the runner died would corrupt the next one.
        file.set_len(good_end)?;
        file.seek(io::SeekFrom::End(0))?;
        if !tracker.saw_complete {
            let line = tracker.synthetic_complete(
                &meta.summary.job_id,
                0,
                "interrupted: the runner stopped while the job was running",
            );
            if let Ok(Value::Object(map)) = serde_json::from_str(&line) {
                tracker.observe(&map);
            }
            last_seq += 1;
            if last_seq % INDEX_EVERY == 1 {
                index.push((last_seq, good_end));
            }
            let mut text = Record {
                seq: last_seq,
                data: line,
            }
            .to_line();
            text.push('\n');
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        meta.summary.state = Phase::Interrupted;
        meta.summary.status = tracker.status;
        meta.summary.finished_at = Some(now_timestamp());
        meta.stages = tracker.stages;
        data.write_meta(&meta).map_err(|e| match e {
            RunnerError::DataDir { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })?;
    }
    Ok((events.to_owned(), meta, last_seq, index))
}

/// Reads a job's log from a byte offset, one record at a time. A line not yet
/// complete (no `\n`) counts as the end; an unreadable line is skipped.
#[derive(Debug)]
pub(crate) struct RecordReader {
    reader: tokio::io::BufReader<tokio::fs::File>,
    line: Vec<u8>,
}

impl RecordReader {
    pub(crate) async fn open(path: &Path, offset: u64) -> io::Result<RecordReader> {
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        Ok(RecordReader {
            reader: tokio::io::BufReader::with_capacity(64 * 1024, file),
            line: Vec::new(),
        })
    }

    pub(crate) async fn next(&mut self) -> io::Result<Option<Record>> {
        loop {
            self.line.clear();
            let n = self.reader.read_until(b'\n', &mut self.line).await?;
            if n == 0 || self.line.last() != Some(&b'\n') {
                return Ok(None);
            }
            if let Ok(record) = serde_json::from_slice(&self.line) {
                return Ok(Some(record));
            }
        }
    }
}
