//! `pipeline-runner worker`: the command line of the worker role.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};

use super::bus::BusConfig;
use super::worker::{run_worker, WorkerConfig};

/// Takes pipeline jobs from NATS JetStream and runs them.
#[derive(Debug, Parser)]
#[command(
    name = "pipeline-runner worker",
    after_help = "\
Each job taken from the work queue runs COMMAND as a child process with the
job id in JOB_ID, exactly as the single-process runner does; its lines are
stored in --data-dir first, then published to the events stream, so a NATS
outage loses none of them. Stop with Ctrl-C or SIGTERM.

Example:
  pipeline-runner worker --nats nats://127.0.0.1:4222 --max-running 4 -- ./my-pipeline

See docs/distributed.md."
)]
struct WorkerArgs {
    /// The NATS server URL(s), comma separated.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// Jobs run at once at most (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    max_running: Option<usize>,
    /// Where job lines are stored before they are published.
    #[arg(long, value_name = "DIR", default_value = "pipeline-worker-data")]
    data_dir: PathBuf,
    /// This worker's id (default: generated).
    #[arg(long, value_name = "ID")]
    worker_id: Option<String>,
    #[command(flatten)]
    bus: BusArgs,
    /// The pipeline command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// The stream and bucket flags both roles take (`pipeline-runner worker`
/// and `pipeline-runner serve --nats`): give every node the same values.
#[derive(Debug, Clone, Args)]
pub struct BusArgs {
    /// A worker silent this long is lost, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    worker_ttl: f64,
    /// The events stream keeps lines this long, seconds (0: forever).
    #[arg(long, value_name = "SECS", default_value_t = 7.0 * 24.0 * 3600.0)]
    events_max_age: f64,
    /// The events stream keeps at most this many bytes (-1: no limit).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    events_max_bytes: i64,
    /// A publish repeated within this window is stored once, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    duplicate_window: f64,
    /// JetStream replicas of each stream and bucket (3 on a 3-node cluster).
    #[arg(long, value_name = "N", default_value_t = 1)]
    replicas: usize,
}

impl BusArgs {
    /// The [`BusConfig`] for the server(s) at `url` with these flags, or
    /// what is wrong with one of them.
    pub fn config(&self, url: &str) -> Result<BusConfig, String> {
        let mut bus = BusConfig::new(url);
        bus.worker_ttl = seconds("worker-ttl", self.worker_ttl)?;
        bus.events_max_age = seconds("events-max-age", self.events_max_age)?;
        bus.events_max_bytes = self.events_max_bytes;
        bus.duplicate_window = seconds("duplicate-window", self.duplicate_window)?;
        bus.replicas = self.replicas.max(1);
        Ok(bus)
    }
}

fn seconds(name: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("--{name}: {secs} is not a duration in seconds"))
}

/// Runs `pipeline-runner worker` with `args` (the program name first, then
/// `worker`, then its flags): parses them, logs to stderr, prints
/// `worker ID connected to URL` on stdout once ready, and runs until
/// Ctrl-C or SIGTERM.
pub fn worker_main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "worker") {
        args.remove(1);
    }
    let args = WorkerArgs::parse_from(args);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
    let bus = match args.bus.config(&args.nats) {
        Ok(bus) => bus,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let config = WorkerConfig {
        bus,
        command: args.command,
        data_dir: args.data_dir,
        max_running: args
            .max_running
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        worker_id: args.worker_id,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = args.nats;
    runtime.block_on(async move {
        let ready = |id: &str| {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "worker {id} connected to {url}");
            let _ = stdout.flush();
        };
        match run_worker(config, ready, super::super::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}
