//! The data directory: where each job's files live, the job metadata, the
//! stage catalogue, and loading every job back when the runner restarts.
//!
//! ```text
//! DATA_DIR/
//!   .lock                    held (flock) while a runner has the directory open
//!   stages.json              [{"layer":2,"layer_name":"pain_point_miner"}, ...]
//!   jobs/<job_id>/meta.json  the job's summary and stages (rewritten atomically)
//!   jobs/<job_id>/events.jsonl
//!                            its numbered lines (see `joblog`)
//! ```
//!
//! `meta.json` is written when a job starts (state `running`) and when it
//! ends. A job still `running` in its `meta.json` when the runner starts was
//! cut off by a crash: `joblog::recover` ends its log the way a live job is
//! ended, and it becomes `interrupted`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Number;

use super::error::RunnerError;
use super::joblog::{self, CutOff, OffsetIndex, Recovered};
use super::model::{count, layer_order, Meta, Outcome, Phase, INTERRUPTED};
use super::model::{now_timestamp, validate_job_id};

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RunnerError + '_ {
    move |source| RunnerError::DataDir {
        path: path.to_owned(),
        source,
    }
}

/// The file that marks a directory as a web node's cache.
pub(crate) const CACHE_MARKER: &str = "web-node-cache";

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
        // Absolute, so that the path the runner reports is unambiguous.
        let root = fs::canonicalize(&root).unwrap_or(root);
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
        // What a deletion cut short (see `remove_job`).
        let _ = fs::remove_dir_all(root.join("trash"));
        Ok(DataDir {
            root,
            #[cfg(unix)]
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// Opens `root` as a web node's cache: whatever an earlier node left
    /// there is removed once the lock is held. A directory with other
    /// content (no [`CACHE_MARKER`] file in it, e.g. a single-process
    /// runner's data directory) is refused, never emptied.
    pub(crate) fn open_cache(root: PathBuf) -> Result<DataDir, RunnerError> {
        let marker = root.join(CACHE_MARKER);
        if let Ok(entries) = fs::read_dir(&root) {
            let foreign = entries
                .filter_map(Result::ok)
                .any(|e| e.file_name() != ".lock" && e.file_name() != CACHE_MARKER);
            if foreign && !marker.exists() {
                return Err(RunnerError::DataDir {
                    path: root,
                    source: io::Error::other(format!(
                        "not a web node's cache (it has files but no {CACHE_MARKER} file): \
                         refusing to empty it; give an empty or new directory"
                    )),
                });
            }
        }
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        fs::write(
            &marker,
            "A web node's cache of the broker's jobs: emptied when a node starts.\n",
        )
        .map_err(io_err(&marker))?;
        let data = DataDir::open(root)?;
        let root = data.root.clone();
        for entry in fs::read_dir(&root).map_err(io_err(&root))? {
            let entry = entry.map_err(io_err(&root))?;
            let name = entry.file_name();
            if name == ".lock" || name == CACHE_MARKER {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io_err(&path))?;
        }
        let jobs = root.join("jobs");
        fs::create_dir_all(&jobs).map_err(io_err(&jobs))?;
        Ok(data)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.root
    }

    /// The directory of job `id` (which need not exist).
    pub(crate) fn job_dir(&self, id: &str) -> PathBuf {
        self.root.join("jobs").join(id)
    }

    /// Creates the job's directory, its `meta.json` and an empty log, which
    /// is returned open for appending.
    pub(crate) fn create_job(&self, meta: &Meta) -> Result<fs::File, RunnerError> {
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
        Ok(file)
    }

    /// Removes a job's directory: first renamed into `trash/` (one atomic
    /// step: a crash never leaves half a job under `jobs/`), then deleted.
    pub(crate) fn remove_job(&self, id: &str) -> Result<(), RunnerError> {
        let trash = self.root.join("trash");
        fs::create_dir_all(&trash).map_err(io_err(&trash))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let to = trash.join(format!("{id}-{nanos}"));
        let dir = self.job_dir(id);
        fs::rename(&dir, &to).map_err(io_err(&dir))?;
        fs::remove_dir_all(&to).map_err(io_err(&to))
    }

    /// The bytes the data directory's files use.
    pub(crate) fn size(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map_or(0, |m| m.len()),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.root)
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
            tracing::warn!("cannot write {}: {e}", self.path.display());
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

/// A job read back from the data directory.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) meta: Meta,
    pub(crate) events_path: PathBuf,
    pub(crate) last_seq: u64,
    pub(crate) index: OffsetIndex,
}

/// Loads every job of the data directory, oldest first (ties by id),
/// recovering those that were cut off.
pub(crate) fn load_jobs(
    data: &DataDir,
    catalog: &StageCatalog,
) -> Result<Vec<Loaded>, RunnerError> {
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
                tracing::warn!("skipping {}: meta.json: {e}", dir.display());
                continue;
            }
        };
        if meta.summary.job_id != id {
            continue;
        }
        let events = dir.join("events.jsonl");
        let job = load(data, meta, events)?;
        for s in &job.meta.stages {
            catalog.note(s.layer.clone(), &s.layer_name);
        }
        jobs.push(job);
    }
    jobs.sort_by(|a, b| {
        (&a.meta.summary.created_at, &a.meta.summary.job_id)
            .cmp(&(&b.meta.summary.created_at, &b.meta.summary.job_id))
    });
    Ok(jobs)
}

/// Reads one job's log back; a job that was cut off is ended and its
/// `meta.json` rewritten, so a second restart finds it ended.
fn load(data: &DataDir, mut meta: Meta, events: PathBuf) -> Result<Loaded, RunnerError> {
    meta.summary.fill_in(&meta.stages);
    let started_at = meta.summary.started_at.clone().unwrap_or_default();
    let cut_off = (meta.summary.state == Phase::Running).then_some(CutOff {
        job_id: &meta.summary.job_id,
        started_at: &started_at,
        reason: INTERRUPTED,
    });
    let Recovered { tail, index, ended } =
        joblog::recover(&events, cut_off).map_err(io_err(&events))?;
    let cut_off_now = ended.is_some();
    if let Some(tracker) = ended {
        let s = &mut meta.summary;
        s.state = Phase::Interrupted;
        s.outcome = Outcome::Interrupted;
        s.status = tracker.status;
        s.reason = Some(INTERRUPTED.to_owned());
        s.finished_at = Some(now_timestamp());
        s.duration_ms = super::model::parse_timestamp_ms(&started_at)
            .zip(tracker.last_ms)
            .map(|(a, b)| b.saturating_sub(a));
        meta.stages = tracker.stages;
    }
    meta.summary.lines = tail.last_seq();
    meta.summary.fill_in(&meta.stages);
    meta.summary.counts = count(&meta.stages);
    if cut_off_now {
        data.write_meta(&meta)?;
    }
    Ok(Loaded {
        meta,
        events_path: events,
        last_seq: tail.last_seq(),
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "tp-cache-{name}-{}-{}",
            std::process::id(),
            crate::reference::generate_job_id()
        ))
    }

    #[test]
    fn a_cache_is_emptied_when_opened_again() {
        let root = temp("own");
        let data = DataDir::open_cache(root.clone()).unwrap();
        fs::create_dir_all(data.job_dir("j1")).unwrap();
        fs::write(data.path().join("stages.json"), "[]").unwrap();
        drop(data);
        let data = DataDir::open_cache(root.clone()).unwrap();
        let mut left: Vec<String> = fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock", "jobs", CACHE_MARKER]);
        assert_eq!(fs::read_dir(data.path().join("jobs")).unwrap().count(), 0);
        drop(data);
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn another_directory_is_never_emptied() {
        let root = temp("foreign");
        fs::create_dir_all(root.join("jobs").join("j1")).unwrap();
        fs::write(root.join("jobs").join("j1").join("meta.json"), "{}").unwrap();
        let e = DataDir::open_cache(root.clone()).unwrap_err().to_string();
        assert!(e.contains("not a web node's cache"), "{e}");
        assert!(root.join("jobs").join("j1").join("meta.json").exists());
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn a_cache_in_use_is_not_emptied() {
        let root = temp("busy");
        let data = DataDir::open_cache(root.clone()).unwrap();
        fs::create_dir_all(data.job_dir("j1")).unwrap();
        let e = DataDir::open_cache(root.clone()).unwrap_err();
        assert!(matches!(e, RunnerError::DataDirInUse(_)), "{e}");
        assert!(data.job_dir("j1").exists());
        drop(data);
        let _ = fs::remove_dir_all(root);
    }
}
