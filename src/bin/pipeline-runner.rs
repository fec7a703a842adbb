//! `pipeline-runner`: serves the live pipeline page and runs a pipeline
//! command per job. Argument parsing and serving, nothing else; the service
//! is `tracing_pipeline::runner`.
//!
//! stdout gets two lines once the runner listens, `listening on
//! http://ADDR` then `data directory: PATH`; everything the runner logs
//! goes to stderr through a `tracing` fmt subscriber (`RUST_LOG` filters it,
//! `info` by default).

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_pipeline::runner::{serve, shutdown_signal, Runner, RunnerOptions};

/// Serves a web page that runs a pipeline and shows each stage's status live.
#[derive(Debug, Parser)]
#[command(
    name = "pipeline-runner",
    version,
    after_help = "\
Each job runs COMMAND (by default the built-in reference pipeline, i.e.
`pipeline-runner reference`) as a child process with the job id in the
environment variable JOB_ID. Nothing in a request reaches the command line.

Examples:
  pipeline-runner                              # http://127.0.0.1:8000, reference pipeline
  pipeline-runner -- pipeline-runner reference --speed 0.2 --fail people_mapper
  pipeline-runner --bind 127.0.0.1:0 --data-dir /tmp/runs -- ./my-pipeline --verbose

The HTTP API and the data directory are described in docs/runner.md.
Stop with Ctrl-C or SIGTERM: running jobs are stopped and their end recorded."
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
    /// Where job logs and metadata are kept [default: pipeline-runner-data;
    /// with --nats, pipeline-web-data, a cache emptied at start].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Allow a non-loopback --bind. The API has no authentication: anyone who
    /// can reach the address can start and cancel jobs and read their output.
    #[arg(long)]
    allow_remote: bool,
    /// Also serve requests whose Host header is NAME (repeatable), e.g. the
    /// public name a reverse proxy passes on. IP addresses and localhost are
    /// always served; other names are refused, against DNS rebinding.
    #[arg(long, value_name = "NAME")]
    allow_host: Vec<String>,
    /// Jobs that run at once; more wait as `queued` and start in order
    /// [default: the number of CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..10_000))]
    max_running: Option<u64>,
    /// Keep at most N finished jobs: older ones are deleted [default: all].
    #[arg(long, value_name = "N")]
    keep_jobs: Option<usize>,
    /// Delete finished jobs older than D days (fractions allowed) [default: never].
    #[arg(long, value_name = "D", value_parser = positive)]
    keep_days: Option<f64>,
    /// The key of a stage's terminal metadata that holds its token count.
    #[arg(long, value_name = "KEY", default_value = "tokens_used")]
    tokens_field: String,
    /// Price of 1,000 tokens, for the estimated cost in the API and metrics.
    #[arg(long, value_name = "PRICE", value_parser = non_negative)]
    price_per_1k_tokens: Option<f64>,
    /// Link to a job's trace: a URL with {trace_id} (and optionally
    /// {span_id}), e.g. `https://tempo.example/trace/{trace_id}`.
    #[arg(long, value_name = "TEMPLATE", value_parser = trace_template)]
    trace_url: Option<String>,
    /// Serve as a web node of the NATS JetStream server(s) at URL (comma
    /// separated): the page and API of the jobs that `pipeline-runner
    /// worker` processes run, no children here.
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// This web node's name in /api/health (with --nats; default: generated).
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "ID", requires = "nats")]
    node_id: Option<String>,
    #[cfg(feature = "nats")]
    #[command(flatten)]
    bus: tracing_pipeline::runner::nats::BusArgs,
    /// The pipeline command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number"))
}

fn positive(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err("must be above 0".into())
        }
    })
}

fn non_negative(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err("must not be negative".into())
        }
    })
}

fn trace_template(s: &str) -> Result<String, String> {
    if s.contains("{trace_id}") {
        Ok(s.to_owned())
    } else {
        Err("the template must contain {trace_id}".into())
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let program = argv.next();
    let mut rest = argv.peekable();
    // Hidden: `pipeline-runner reference [ARGS...]` runs the reference
    // pipeline, so that the default command needs no second binary.
    if rest.peek().is_some_and(|a| a == "reference") {
        rest.next();
        return tracing_pipeline::reference::main(
            std::iter::once(OsString::from("job_pipeline")).chain(rest),
        );
    }
    // `pipeline-runner worker --nats URL -- COMMAND`: see docs/distributed.md.
    #[cfg(feature = "nats")]
    if rest.peek().is_some_and(|a| a == "worker") {
        return tracing_pipeline::runner::nats::worker_main(program.into_iter().chain(rest));
    }
    // `pipeline-runner serve ...` is `pipeline-runner ...`.
    if rest.peek().is_some_and(|a| a == "serve") {
        rest.next();
    }
    let args = Args::parse_from(program.into_iter().chain(rest));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
    if !args.bind.ip().is_loopback() {
        if !args.allow_remote {
            tracing::error!(
                "refusing to listen on {} without --allow-remote: \
                 the API has no authentication",
                args.bind
            );
            return ExitCode::from(2);
        }
        tracing::warn!(
            "WARNING: listening on {}; the API has no authentication, \
             anyone who can reach it can run and cancel jobs and read their output",
            args.bind
        );
    }
    let options = RunnerOptions::default()
        .keep_jobs(args.keep_jobs)
        .keep_days(args.keep_days)
        .tokens_field(args.tokens_field.clone())
        .price_per_1k_tokens(args.price_per_1k_tokens)
        .trace_url(args.trace_url.clone());
    #[cfg(feature = "nats")]
    if let Some(url) = args.nats.clone() {
        return serve_web_node(args, url, options);
    }
    let command = if args.command.is_empty() {
        match std::env::current_exe() {
            Ok(exe) => vec![exe.into_os_string(), "reference".into()],
            Err(e) => {
                tracing::error!("cannot find my own executable: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        args.command
    };
    let mut options = options;
    if let Some(n) = args.max_running {
        options = options.max_running(n as usize);
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("pipeline-runner-data"));
    let runner = match Runner::open_with(command, &data_dir, options) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    runner.allow_hosts(args.allow_host);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(listen_and_serve(args.bind, runner))
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::error!("cannot start the tokio runtime: {e}");
            None
        }
    }
}

/// `pipeline-runner serve --nats URL`: a web node (see docs/distributed.md).
#[cfg(feature = "nats")]
fn serve_web_node(args: Args, url: String, options: RunnerOptions) -> ExitCode {
    use tracing_pipeline::runner::nats::{open_web_node, WebNodeConfig};
    if !args.command.is_empty() {
        tracing::error!(
            "a web node (--nats) runs no commands: give the pipeline command to \
             `pipeline-runner worker --nats URL -- COMMAND`"
        );
        return ExitCode::from(2);
    }
    if args.max_running.is_some() {
        tracing::error!(
            "--max-running is a worker's setting with --nats: give it to `pipeline-runner worker`"
        );
        return ExitCode::from(2);
    }
    let bus = match args.bus.config(&url) {
        Ok(bus) => bus,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let config = WebNodeConfig {
        bus,
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("pipeline-web-data")),
        node_id: args.node_id.clone(),
        options,
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let runner = match open_web_node(config).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        runner.allow_hosts(args.allow_host);
        listen_and_serve(args.bind, runner).await
    })
}

/// Listens on `bind`, says where on stdout, and serves `runner` until
/// Ctrl-C or SIGTERM.
async fn listen_and_serve(bind: SocketAddr, runner: std::sync::Arc<Runner>) -> ExitCode {
    {
        let listener = match tokio::net::TcpListener::bind(bind).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {bind}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(bind);
        // Listening for SIGINT/SIGTERM before saying where we listen: a
        // signal sent as soon as that line is read gets the graceful stop.
        let stop = shutdown_signal();
        let mut stdout = std::io::stdout().lock();
        // One write: a reader that takes the first line and then closes
        // the pipe loses nothing it needs.
        let _ = write!(
            stdout,
            "listening on http://{addr}\ndata directory: {}\n",
            runner.data_dir().display()
        );
        let _ = stdout.flush();
        drop(stdout);
        match serve(listener, runner, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    }
}
