//! Load runs, not timed tests (ignored by default; they assert only that
//! nothing is lost, doubled or reordered, and print figures):
//!
//! * `lines_through_a_worker_and_back`: one worker's child prints N lines;
//!   how long the local runner took to store them against how long until
//!   every line was acknowledged by the events stream, and how fast a
//!   replay reads them back;
//! * `figures_through_web_nodes`: the same child, side by side through NATS
//!   (worker and web nodes) and through the single-process runner, in one
//!   run: (a) lines per second from the child to an SSE client, (b) 10
//!   workers running 10 jobs each, 3 SSE clients per job spread over 2 web
//!   nodes, every client checked line by line against the worker's own log,
//!   (c) latency from the child writing a line to a client receiving it at
//!   1,000 lines a second. It prints a table.
//!
//! `cargo test --release --features nats,runner --test test_nats_load -- --ignored --nocapture`
//!
//! The two runs take turns (a lock), so their figures do not disturb each
//! other. Sizes can be changed with `NATS_LOAD_LINES` (default 50,000),
//! `NATS_LOAD_MANY_LINES` (lines per job in (b), default 1,000),
//! `NATS_LOAD_RATE` and `NATS_LOAD_SECS` (the paced child, default 1,000
//! lines a second for 10 s).
#![cfg(feature = "nats")]

mod nats_common;
mod runner_common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nats_common::{wait_for, NatsServer, TempDir, WorkerProcess};
use serde_json::Value;
use tracing_pipeline::runner::nats::{submit_job, Bus, BusConfig, JobPhase};

/// One load run at a time: the default test harness would run both at once.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
#[ignore = "a load run: prints figures"]
async fn lines_through_a_worker_and_back() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let n = env_or("NATS_LOAD_LINES", 50_000);
    let server = NatsServer::start();
    let bus = Bus::connect(BusConfig::new(server.url())).await.unwrap();
    let script = format!("seq 1 {n}");
    let _worker = WorkerProcess::start(&server.url(), &script, &[]);
    let started = Instant::now();
    let id = submit_job(&bus, Some("load".into())).await.unwrap();
    let done = wait_for(300, "the job to finish", || async {
        bus.job_state(&id)
            .await
            .ok()
            .flatten()
            .map(|(s, _)| s)
            .filter(|s| s.phase == JobPhase::Finished)
    })
    .await;
    let published = started.elapsed();
    let summary = done.summary.unwrap();
    let stored_ms = summary["duration_ms"].as_u64().unwrap();
    let lines = summary["lines"].as_u64().unwrap();
    assert_eq!(lines, n + 1, "every line and the closing pipeline_complete");
    let replay_start = Instant::now();
    let mut replay = bus.replay(&id, 0).await.unwrap();
    for want in 1..=lines {
        let line = replay
            .next_within(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line.seq, want);
    }
    let replayed = replay_start.elapsed();
    let per_s = |d: Duration| lines as f64 / d.as_secs_f64();
    println!(
        "{lines} lines: child run stored locally in {stored_ms} ms; all acknowledged by the \
         stream {:.0} ms after submit ({:.0} lines/s end to end); replay {:.0} ms ({:.0} lines/s)",
        published.as_secs_f64() * 1e3,
        per_s(published),
        replayed.as_secs_f64() * 1e3,
        per_s(replayed),
    );
}

/// The one child of every job in this run, in both set-ups. What it prints
/// depends on the job id: `lat-*` prints `RATE` lines a second for `SECS`
/// seconds, each flushed at once with its wall-clock send time in
/// microseconds (after 1 s, so that the clients are connected), `many-*`
/// prints `MANY` log lines, anything else `LINES` log lines (about 150
/// bytes each), as fast as it can.
const CHILD: &str = r#"
use Time::HiRes qw(time sleep);
my ($lines, $many, $rate, $secs) = @ARGV;
my $job = $ENV{JOB_ID};
if ($job =~ /^lat/) {
    $| = 1;
    sleep 1;
    my $n = int($rate * $secs);
    my $t0 = time;
    for my $i (1 .. $n) {
        my $wait = $t0 + $i / $rate - time;
        sleep $wait if $wait > 0;
        printf qq({"event":"log","job_id":"%s","seq":%d,"sent_us":%.0f}\n), $job, $i, time * 1e6;
    }
    print qq({"event":"pipeline_complete","job_id":"$job","status":"success"}\n);
} else {
    my $n = $job =~ /^many/ ? $many : $lines;
    for my $i (1 .. $n) {
        print qq({"timestamp":"2026-12-01T00:00:00.000000Z","event":"log","level":"info","job_id":"$job","seq":$i,"message":"processed item $i of the load run"}\n);
    }
}
"#;

#[derive(Debug, Clone, Copy)]
struct Sizes {
    lines: u64,
    many: u64,
    rate: u64,
    secs: u64,
}

impl Sizes {
    fn from_env() -> Sizes {
        Sizes {
            lines: env_or("NATS_LOAD_LINES", 50_000),
            many: env_or("NATS_LOAD_MANY_LINES", 1_000),
            rate: env_or("NATS_LOAD_RATE", 1_000),
            secs: env_or("NATS_LOAD_SECS", 10),
        }
    }

    fn child(&self) -> Vec<OsString> {
        ["perl", "-e", CHILD]
            .into_iter()
            .map(OsString::from)
            .chain(
                [self.lines, self.many, self.rate, self.secs]
                    .iter()
                    .map(|n| OsString::from(n.to_string())),
            )
            .collect()
    }
}

/// A `pipeline-runner` process (worker, web node or single-process
/// runner); SIGKILL on drop.
#[derive(Debug)]
struct Proc {
    child: Child,
    first_line: String,
    data: TempDir,
}

impl Proc {
    fn start(args: Vec<OsString>, data: TempDir) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start pipeline-runner");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let first_line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("pipeline-runner {args:?} did not say it is ready"));
        Proc {
            child,
            first_line,
            data,
        }
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn worker(url: &str, id: &str, command: &[OsString]) -> Proc {
        let data = TempDir::new("nats-load-worker");
        let mut args = Proc::args(&["worker", "--nats", url, "--worker-id", id, "--data-dir"]);
        args.push(data.path().into());
        args.push("--".into());
        args.extend(command.iter().cloned());
        let p = Proc::start(args, data);
        assert!(p.first_line.starts_with("worker "), "{}", p.first_line);
        p
    }

    fn web(url: &str) -> Proc {
        let data = TempDir::new("nats-load-web");
        let mut args = Proc::args(&["serve", "--nats", url, "--bind", "127.0.0.1:0"]);
        args.push("--data-dir".into());
        args.push(data.path().join("cache").into());
        Proc::start(args, data)
    }

    fn single(command: &[OsString], max_running: usize) -> Proc {
        let data = TempDir::new("nats-load-single");
        let mut args = Proc::args(&["--bind", "127.0.0.1:0", "--max-running"]);
        args.push(max_running.to_string().into());
        args.push("--data-dir".into());
        args.push(data.path().join("data").into());
        args.push("--".into());
        args.extend(command.iter().cloned());
        Proc::start(args, data)
    }

    fn url(&self) -> String {
        self.first_line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", self.first_line))
            .to_owned()
    }

    /// The data directory a worker or a single-process runner keeps its
    /// jobs in.
    fn jobs_dir(&self) -> PathBuf {
        let single = self.data.path().join("data");
        if single.exists() {
            single.join("jobs")
        } else {
            self.data.path().join("jobs")
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A job's lines as a runner stored them (`jobs/ID/events.jsonl`):
/// `(seq, data)`.
fn stored_lines(jobs_dir: &Path, job: &str) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(jobs_dir.join(job).join("events.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// How `got` differs from the stored log; `None` when identical (the same
/// number of lines, ids 1..N in order, equal JSON).
fn difference(got: &[(u64, String)], stored: &[(u64, String)]) -> Option<String> {
    if got.len() != stored.len() {
        return Some(format!("{} lines, stored {}", got.len(), stored.len()));
    }
    for (i, ((a_seq, a), (b_seq, b))) in got.iter().zip(stored).enumerate() {
        if *a_seq != i as u64 + 1 || a_seq != b_seq {
            return Some(format!("line {} has id {a_seq}", i + 1));
        }
        let (a, b): (Value, Value) = (
            serde_json::from_str(a).unwrap(),
            serde_json::from_str(b).unwrap(),
        );
        if a != b {
            return Some(format!("line {a_seq}: {a} against {b}"));
        }
    }
    None
}

/// `POST /api/jobs` with this id on `url`.
async fn post_job(url: &str, id: &str) {
    let (status, body) = runner_common::send_json(
        "POST",
        &format!("{url}/api/jobs"),
        &serde_json::json!({ "job_id": id }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "POST {url}/api/jobs: {body}");
}

/// Waits until `url` knows the job (a web node may not have seen it yet),
/// then reads its whole stream; returns every `(id, data)` and, per line,
/// `each(data)` of it.
async fn read_job(
    url: &str,
    id: &str,
    mut each: impl FnMut(&str),
) -> anyhow::Result<Vec<(u64, String)>> {
    wait_for(60, "the node to know the job", || async {
        runner_common::get_json(&format!("{url}/api/jobs/{id}"))
            .await
            .ok()
    })
    .await;
    let mut lines = Vec::new();
    runner_common::stream_each(url, id, None, |seq, data| {
        each(data);
        lines.push((seq, data.to_owned()));
    })
    .await?;
    Ok(lines)
}

/// (a): one job of `LINES` lines, `POST` to `end` on one client: lines a
/// second, and the lines.
async fn throughput(post_to: &str, read_from: &str, id: &str) -> (f64, Vec<(u64, String)>) {
    let started = Instant::now();
    post_job(post_to, id).await;
    let lines = read_job(read_from, id, |_| {}).await.unwrap();
    let took = started.elapsed();
    (lines.len() as f64 / took.as_secs_f64(), lines)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// (c): write → receive latencies of the paced job, in ms, sorted.
async fn latency(post_to: &str, read_from: &str, id: &str, expected: u64) -> Vec<f64> {
    post_job(post_to, id).await;
    let mut latencies = Vec::new();
    read_job(read_from, id, |data| {
        let received = now_us();
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(sent) = v["sent_us"].as_u64() {
            latencies.push(received.saturating_sub(sent) as f64 / 1e3);
        }
    })
    .await
    .unwrap();
    assert_eq!(latencies.len() as u64, expected, "every timed line");
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

/// What (b) saw.
#[derive(Debug)]
struct Many {
    jobs: usize,
    clients: usize,
    delivered: u64,
    bad: Vec<String>,
    secs: f64,
}

/// Every client's `(job, lines)`.
type ClientLines = Vec<(String, anyhow::Result<Vec<(u64, String)>>)>;

/// (b): `jobs` jobs posted in turn to each of `nodes`, `clients` clients
/// per job spread over them, from the first `POST` to the last `end`.
async fn many(nodes: &[String], jobs: usize, clients: usize, prefix: &str) -> (Many, ClientLines) {
    let started = Instant::now();
    let ids: Vec<String> = (0..jobs).map(|j| format!("many-{prefix}-{j}")).collect();
    for (j, id) in ids.iter().enumerate() {
        post_job(&nodes[j % nodes.len()], id).await;
    }
    let mut readers = Vec::new();
    for (j, id) in ids.iter().enumerate() {
        for c in 0..clients {
            let url = nodes[(j + c) % nodes.len()].clone();
            let id = id.clone();
            readers.push(tokio::spawn(async move {
                let lines = read_job(&url, &id, |_| {}).await;
                (id, lines)
            }));
        }
    }
    let mut got = Vec::new();
    for r in readers {
        got.push(r.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    let delivered = got
        .iter()
        .map(|(_, l)| l.as_ref().map_or(0, |l| l.len() as u64))
        .sum();
    let result = Many {
        jobs,
        clients: got.len(),
        delivered,
        bad: Vec::new(),
        secs,
    };
    (result, got)
}

/// Checks every client's lines against the log of the runner that ran the
/// job (`jobs_dir[job]`), collecting what differs in `bad`.
fn check_many(m: &mut Many, got: &ClientLines, jobs_dir: &HashMap<String, PathBuf>) {
    for (id, lines) in got {
        match lines {
            Err(e) => m.bad.push(format!("{id}: {e}")),
            Ok(lines) => {
                let stored = stored_lines(&jobs_dir[id], id);
                if let Some(d) = difference(lines, &stored) {
                    m.bad.push(format!("{id}: {d}"));
                }
            }
        }
    }
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load run: prints figures"]
async fn figures_through_web_nodes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sizes = Sizes::from_env();
    let child = sizes.child();
    let load_before = load_average();
    const WORKERS: usize = 10;
    const JOBS_PER_WORKER: usize = 10;
    const CLIENTS: usize = 3;

    // Through NATS: one server, WORKERS workers, two web nodes.
    let server = NatsServer::start();
    let url = server.url();
    let bus = Bus::connect(BusConfig::new(&url)).await.unwrap();
    let workers: Vec<Proc> = (0..WORKERS)
        .map(|w| Proc::worker(&url, &format!("load-worker-{w}"), &child))
        .collect();
    let webs = [Proc::web(&url), Proc::web(&url)];
    let nodes: Vec<String> = webs.iter().map(Proc::url).collect();
    // The single-process runner, as many jobs at once as the workers together.
    let single = Proc::single(&child, WORKERS * 2);
    let single_url = single.url();

    let worker_dirs: HashMap<String, PathBuf> = workers
        .iter()
        .map(|w| {
            let id = w.first_line.split(' ').nth(1).unwrap().to_owned();
            (id, w.jobs_dir())
        })
        .collect();
    let ran_on = |id: String| {
        let bus = &bus;
        let worker_dirs = &worker_dirs;
        async move {
            let (state, _) = bus.job_state(&id).await.unwrap().unwrap();
            worker_dirs[state.worker.as_deref().unwrap()].clone()
        }
    };

    // (a) throughput, one client: posted to one web node, read on the other.
    let (single_tp, lines) = throughput(&single_url, &single_url, "tp-single").await;
    let stored = stored_lines(&single.jobs_dir(), "tp-single");
    assert_eq!(difference(&lines, &stored), None, "single-process");
    let (nats_tp, lines) = throughput(&nodes[0], &nodes[1], "tp-nats").await;
    let stored = stored_lines(&ran_on("tp-nats".into()).await, "tp-nats");
    assert_eq!(difference(&lines, &stored), None, "through NATS");
    drop((lines, stored));

    // (c) latency at RATE lines/s.
    let expected = sizes.rate * sizes.secs;
    let single_lat = latency(&single_url, &single_url, "lat-single", expected).await;
    let nats_lat = latency(&nodes[0], &nodes[1], "lat-nats", expected).await;

    // (b) WORKERS x JOBS_PER_WORKER jobs, CLIENTS clients each over the two web nodes.
    let jobs = WORKERS * JOBS_PER_WORKER;
    let (mut nats_many, got) = many(&nodes, jobs, CLIENTS, "nats").await;
    let mut dirs = HashMap::new();
    let mut per_worker: HashMap<PathBuf, usize> = HashMap::new();
    for (id, _) in &got {
        if !dirs.contains_key(id) {
            let dir = ran_on(id.clone()).await;
            *per_worker.entry(dir.clone()).or_default() += 1;
            dirs.insert(id.clone(), dir);
        }
    }
    check_many(&mut nats_many, &got, &dirs);
    drop(got);
    let (mut single_many, got) =
        many(std::slice::from_ref(&single_url), jobs, CLIENTS, "single").await;
    let single_dirs = got
        .iter()
        .map(|(id, _)| (id.clone(), single.jobs_dir()))
        .collect();
    check_many(&mut single_many, &got, &single_dirs);
    drop(got);
    let load_after = load_average();

    let lines_each = sizes.lines + 1;
    println!();
    println!(
        "NATS (1 server, {WORKERS} workers, 2 web nodes) against the single-process runner; \
         load average {load_before} before, {load_after} after"
    );
    println!();
    println!("| measure | single-process | through NATS | NATS / single |");
    println!("|---|---|---|---|");
    println!(
        "| (a) {} lines, POST to `end`, 1 client: lines/s | {} | {} | {:.2}x |",
        thousands(lines_each as f64),
        thousands(single_tp),
        thousands(nats_tp),
        nats_tp / single_tp
    );
    for (name, p) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
        let (a, b) = (percentile(&single_lat, p), percentile(&nats_lat, p));
        println!(
            "| (c) latency at {} lines/s for {} s, {name} | {a:.2} ms | {b:.2} ms | {:.1}x |",
            thousands(sizes.rate as f64),
            sizes.secs,
            b / a
        );
    }
    for (m, label) in [(&single_many, "single"), (&nats_many, "nats")] {
        assert!(m.bad.is_empty(), "{label}: {:#?}", m.bad);
    }
    println!(
        "| (b) {} jobs x {} lines, {} clients: lines delivered | {} | {} | |",
        jobs,
        thousands((sizes.many + 1) as f64),
        nats_many.clients,
        thousands(single_many.delivered as f64),
        thousands(nats_many.delivered as f64)
    );
    println!("| (b) lost / doubled / out of order | 0 / 0 / 0 | 0 / 0 / 0 | |");
    println!(
        "| (b) first POST to last `end` | {:.2} s | {:.2} s | {:.2}x |",
        single_many.secs,
        nats_many.secs,
        nats_many.secs / single_many.secs
    );
    println!(
        "| (b) lines/s delivered | {} | {} | {:.2}x |",
        thousands(single_many.delivered as f64 / single_many.secs),
        thousands(nats_many.delivered as f64 / nats_many.secs),
        (nats_many.delivered as f64 / nats_many.secs)
            / (single_many.delivered as f64 / single_many.secs)
    );
    let mut counts: Vec<usize> = per_worker.values().copied().collect();
    counts.sort_unstable();
    println!();
    println!(
        "(b) jobs per worker: {counts:?} ({} jobs on {} workers)",
        nats_many.jobs,
        counts.len()
    );
    drop(webs);
    drop(workers);
}
