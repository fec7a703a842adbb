//! Soak and load run of the runner service, in-process on 127.0.0.1:0.
//!
//! ```text
//! cargo run --release --features runner --example soak_runner -- [MODE] [OPTIONS]
//!
//! MODE (default: throughput)
//!   throughput   one job prints --lines JSON log lines as fast as it can; one
//!                SSE client counts every line and checks the order
//!   latency      one job prints --rate lines/s for --secs seconds, each with
//!                its send time; the client measures write -> receive latency
//!   many         --jobs jobs at once, each printing --job-lines lines, with
//!                --clients SSE clients each; nothing may be lost
//!   bulk         one finished job of --lines lines, read back three ways:
//!                the /log download (what `curl` does, and `curl` itself
//!                when it is installed), every /lines page in turn, a
//!                search, and a replay over SSE; side-by-side ratios
//!   scrape       (build with --features metrics) GET /metrics every 100 ms
//!                with no job, then while one job floods --rate lines/s
//!                (default here 100000) for --secs: scrape latency side by side
//!   all          throughput, latency and many, one after the other
//! OPTIONS
//!   --lines N      (throughput) default 1000000
//!   --rate R       (latency) lines per second, default 1000
//!   --secs S       (latency) default 10
//!   --jobs J       (many) default 20
//!   --clients C    (many) default 3
//!   --job-lines M  (many) default 50000
//!   --rounds K     (many) run it K times in the same process, default 1:
//!                  RSS after each round shows whether memory keeps growing
//! ```
//!
//! The child is this example again, started by the runner with a hidden
//! `--child N` (or `--child-paced RATE SECS`) argument. Memory is this whole
//! process (runner and clients; the children are separate processes), read
//! from `/proc/self/status`: VmRSS before the job, its peak while the job
//! runs (sampled every 50 ms), after, and VmHWM. docs/performance-runner.md
//! has the figures measured with it.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use tracing_pipeline::runner::{serve, Runner};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--child") => child(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(0)),
        Some("--child-burst") => child_burst(
            args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100_000),
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10.0),
        ),
        Some("--child-paced") => child_paced(
            args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000),
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10.0),
        ),
        _ => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak_runner: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The child: `n` JSON log lines as fast as possible, then `pipeline_complete`.
fn child(n: u64) -> Result<()> {
    let job = std::env::var("JOB_ID").unwrap_or_default();
    let out = std::io::stdout().lock();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    for seq in 1..=n {
        writeln!(
            out,
            r#"{{"timestamp":"2025-11-29T10:30:45.123Z","event":"log","level":"info","job_id":"{job}","seq":{seq},"message":"processed item {seq} of the soak run"}}"#
        )?;
    }
    writeln!(
        out,
        r#"{{"timestamp":"2025-11-29T10:30:45.123Z","event":"pipeline_complete","job_id":"{job}","status":"success","duration_ms":0}}"#
    )?;
    out.flush()?;
    Ok(())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The paced child: `rate` lines a second for `secs` seconds, each flushed
/// at once and carrying its send time in microseconds.
fn child_paced(rate: u64, secs: f64) -> Result<()> {
    let job = std::env::var("JOB_ID").unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let total = (rate as f64 * secs) as u64;
    let start = Instant::now();
    for seq in 1..=total {
        let due = start + Duration::from_secs_f64(seq as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        writeln!(
            out,
            r#"{{"event":"log","job_id":"{job}","seq":{seq},"sent_us":{}}}"#,
            now_us()
        )?;
        out.flush()?;
    }
    writeln!(
        out,
        r#"{{"event":"pipeline_complete","job_id":"{job}","status":"success"}}"#
    )?;
    Ok(())
}

/// The flooding child: `rate` lines a second for `secs` seconds, written
/// in a burst every 10 ms (one flush per burst), with stage lines carrying
/// tokens now and then so that the metrics have work to do.
fn child_burst(rate: u64, secs: f64) -> Result<()> {
    let job = std::env::var("JOB_ID").unwrap_or_default();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let ticks = (secs * 100.0) as u64;
    let per_tick = (rate / 100).max(1);
    let start = Instant::now();
    let mut seq = 0u64;
    for tick in 1..=ticks {
        for _ in 0..per_tick {
            seq += 1;
            if seq.is_multiple_of(1000) {
                let n = seq / 1000 % 7;
                writeln!(
                    out,
                    r#"{{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_start","layer":{n},"layer_name":"stage_{n}","job_id":"{job}"}}"#
                )?;
                writeln!(
                    out,
                    r#"{{"timestamp":"2025-11-29T10:30:45.123Z","event":"layer_complete","layer":{n},"layer_name":"stage_{n}","job_id":"{job}","status":"success","duration_ms":12,"metadata":{{"tokens_used":100}}}}"#
                )?;
            } else {
                writeln!(
                    out,
                    r#"{{"timestamp":"2025-11-29T10:30:45.123Z","event":"log","level":"info","job_id":"{job}","seq":{seq},"message":"processed item {seq}"}}"#
                )?;
            }
        }
        out.flush()?;
        let due = start + Duration::from_millis(10 * tick);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    writeln!(
        out,
        r#"{{"event":"pipeline_complete","job_id":"{job}","status":"success"}}"#
    )?;
    out.flush()?;
    Ok(())
}

/// Latencies of `GET /metrics` every 100 ms until `stop` is set, in ms.
async fn scrape_loop(http: &reqwest::Client, url: &str, stop: &AtomicBool) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let resp = http.get(format!("{url}/metrics")).send().await?;
        if resp.status() == 404 {
            bail!("no /metrics: build the example with --features metrics");
        }
        let body = resp.bytes().await?;
        if body.is_empty() {
            bail!("empty scrape");
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(out)
}

fn percentiles(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return "-".into();
    }
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!("{:.2} / {:.2} / {:.2}", at(0.5), at(0.99), v[v.len() - 1])
}

async fn scrape(o: &Options, http: &reqwest::Client) -> Result<()> {
    let rate = if o.rate == 1000 { 100_000 } else { o.rate };
    let svc = start_service(
        "scrape",
        &["--child-burst".into(), rate.to_string(), o.secs.to_string()],
    )
    .await?;
    let stop = AtomicBool::new(false);
    let idle = {
        let timer = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.store(true, Ordering::Relaxed);
        };
        let (v, ()) = tokio::join!(scrape_loop(http, &svc.url, &stop), timer);
        v?
    };
    stop.store(false, Ordering::Relaxed);
    let started = Instant::now();
    create_job(http, &svc.url, "flood").await?;
    let reader = async {
        let n = read_stream(http, &svc.url, "flood", |_, _| Ok(())).await;
        stop.store(true, Ordering::Relaxed);
        n
    };
    let (busy, lines) = tokio::join!(scrape_loop(http, &svc.url, &stop), reader);
    let (busy, lines) = (busy?, lines?);
    let secs = started.elapsed().as_secs_f64();
    header(&format!(
        "scrape: GET /metrics every 100 ms, idle vs. during a flood of {rate} lines/s"
    ));
    row("lines received (one SSE client)", lines.to_string());
    row("lines/s achieved", format!("{:.0}", lines as f64 / secs));
    row(
        "scrapes idle / during the flood",
        format!("{} / {}", idle.len(), busy.len()),
    );
    row("idle scrape ms p50 / p99 / max", percentiles(idle));
    row("flood scrape ms p50 / p99 / max", percentiles(busy));
    svc.finish().await?;
    Ok(())
}

struct Options {
    mode: String,
    lines: u64,
    rate: u64,
    secs: f64,
    jobs: usize,
    clients: usize,
    job_lines: u64,
    rounds: usize,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        mode: "throughput".into(),
        lines: 1_000_000,
        rate: 1000,
        secs: 10.0,
        jobs: 20,
        clients: 3,
        job_lines: 50_000,
        rounds: 1,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().context(format!("{a} needs a value"));
        match a.as_str() {
            "throughput" | "latency" | "many" | "bulk" | "scrape" | "all" => o.mode = a.clone(),
            "--lines" => o.lines = value()?.parse()?,
            "--rate" => o.rate = value()?.parse()?,
            "--secs" => o.secs = value()?.parse()?,
            "--jobs" => o.jobs = value()?.parse()?,
            "--clients" => o.clients = value()?.parse()?,
            "--job-lines" => o.job_lines = value()?.parse()?,
            "--rounds" => o.rounds = value()?.parse()?,
            other => bail!("unknown argument {other:?} (see the top of examples/soak_runner.rs)"),
        }
    }
    Ok(o)
}

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Samples VmRSS every 50 ms until dropped; keeps the peak (in KiB).
struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&peak_kib), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let kib = (memory_mib().0 * 1024.0) as u64;
                p.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { peak_kib, stop }
    }

    fn peak_mib(&self) -> f64 {
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Service {
    url: String,
    runner: Arc<Runner>,
    dir: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_service(tag: &str, child_args: &[String]) -> Result<Service> {
    let dir = std::env::temp_dir().join(format!("soak-runner-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command: Vec<OsString> = vec![std::env::current_exe()?.into_os_string()];
    command.extend(child_args.iter().map(OsString::from));
    let runner = Runner::open(command, &dir)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, Arc::clone(&runner), async move {
        let _ = stopped.await;
    }));
    Ok(Service {
        url,
        runner,
        dir,
        stop,
        task,
    })
}

impl Service {
    async fn finish(self) -> Result<u64> {
        let _ = self.stop.send(());
        self.task.await??;
        let mut bytes = 0;
        for entry in std::fs::read_dir(self.dir.join("jobs"))? {
            bytes += std::fs::metadata(entry?.path().join("events.jsonl"))?.len();
        }
        drop(self.runner);
        std::fs::remove_dir_all(&self.dir)?;
        Ok(bytes)
    }
}

async fn create_job(http: &reqwest::Client, url: &str, id: &str) -> Result<()> {
    let resp = http
        .post(format!("{url}/api/jobs"))
        .body(format!(r#"{{"job_id":"{id}"}}"#))
        .send()
        .await?;
    if resp.status() != 201 {
        bail!("create {id}: {}", resp.status());
    }
    Ok(())
}

/// Reads a job's whole event stream; checks the ids run 1, 2, 3... and calls
/// `each(id, data)` per line. Returns the number of lines.
async fn read_stream(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let resp = http
        .get(format!("{url}/api/jobs/{id}/events"))
        .send()
        .await?;
    if resp.status() != 200 {
        bail!("events {id}: {}", resp.status());
    }
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut expect = 1u64;
    loop {
        let mut start = 0;
        while let Some(rel) = buf[start..].windows(2).position(|w| w == b"\n\n") {
            let frame = &buf[start..start + rel];
            start += rel + 2;
            if frame.starts_with(b"event: end") {
                return Ok(expect - 1);
            }
            let Some(rest) = frame.strip_prefix(b"id: ") else {
                continue; // a keep-alive comment
            };
            let nl = rest.iter().position(|&b| b == b'\n').context("frame")?;
            let got: u64 = std::str::from_utf8(&rest[..nl])?.parse()?;
            if got != expect {
                bail!("{id}: expected line {expect}, got {got}");
            }
            let data = rest[nl + 1..].strip_prefix(b"data: ").context("data")?;
            each(got, data)?;
            expect += 1;
        }
        buf.drain(..start);
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
            Err(_) => bail!("{id}: no data for 60 s after line {}", expect - 1),
            Ok(None) => bail!("{id}: stream closed before `end` after {}", expect - 1),
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk?),
        }
    }
}

/// The `"seq":N` in a line the child printed.
fn seq_of(data: &[u8]) -> Option<u64> {
    let key = b"\"seq\":";
    let at = data.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn row(name: &str, value: String) {
    println!("| {name:<38} | {value:>24} |");
}

fn header(title: &str) {
    println!("\n{title}\n");
    println!("| {:<38} | {:>24} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(40), "-".repeat(26));
}

async fn throughput(o: &Options, http: &reqwest::Client) -> Result<()> {
    // The child alone, writing to /dev/null: the ceiling for the runner.
    let alone = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["--child", &o.lines.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("child alone: {status}");
    }
    let alone = alone.elapsed();

    let svc = start_service("throughput", &["--child".into(), o.lines.to_string()]).await?;
    let before = memory_mib();
    let sampler = RssSampler::start();
    let started = Instant::now();
    create_job(http, &svc.url, "soak").await?;
    let lines = read_stream(http, &svc.url, "soak", |id, data| {
        if id <= o.lines && seq_of(data) != Some(id) {
            bail!("line {id} is {}", String::from_utf8_lossy(data));
        }
        Ok(())
    })
    .await?;
    let elapsed = started.elapsed();
    let peak = sampler.peak_mib();
    drop(sampler);
    if lines != o.lines + 1 {
        bail!("expected {} lines, got {lines}", o.lines + 1);
    }
    // A late client replays the whole job from the file.
    let replay_started = Instant::now();
    let replayed = read_stream(http, &svc.url, "soak", |_, _| Ok(())).await?;
    let replay = replay_started.elapsed();
    if replayed != lines {
        bail!("replay: {replayed} lines, live: {lines}");
    }
    let after = memory_mib();
    let log_bytes = svc.finish().await?;

    header(&format!(
        "throughput: one job, {} lines, one live client",
        o.lines
    ));
    row("lines received (with pipeline_complete)", lines.to_string());
    row("lost / duplicated / out of order", "0 / 0 / 0".into());
    row(
        "child alone to /dev/null",
        format!("{:.2} s", alone.as_secs_f64()),
    );
    row(
        "end to end (create -> `end`)",
        format!("{:.2} s", elapsed.as_secs_f64()),
    );
    row(
        "lines/s end to end",
        format!("{:.0}", lines as f64 / elapsed.as_secs_f64()),
    );
    row(
        "replay by a late client, lines/s",
        format!("{:.0}", lines as f64 / replay.as_secs_f64()),
    );
    row(
        "log file size",
        format!("{:.1} MiB", log_bytes as f64 / 1048576.0),
    );
    row("RSS before the job", format!("{:.1} MiB", before.0));
    row("RSS peak during the job", format!("{peak:.1} MiB"));
    row("RSS after the job", format!("{:.1} MiB", after.0));
    row("VmHWM (peak of the process)", format!("{:.1} MiB", after.1));
    Ok(())
}

async fn latency(o: &Options, http: &reqwest::Client) -> Result<()> {
    let svc = start_service(
        "latency",
        &[
            "--child-paced".into(),
            o.rate.to_string(),
            o.secs.to_string(),
        ],
    )
    .await?;
    let before = memory_mib();
    let sampler = RssSampler::start();
    create_job(http, &svc.url, "paced").await?;
    let mut latencies_us = Vec::new();
    let lines = read_stream(http, &svc.url, "paced", |_, data| {
        let received = now_us();
        let key = b"\"sent_us\":";
        if let Some(at) = data.windows(key.len()).position(|w| w == key) {
            let at = at + key.len();
            let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
            let sent: u64 = std::str::from_utf8(&data[at..at + digits])?.parse()?;
            latencies_us.push(received.saturating_sub(sent));
        }
        Ok(())
    })
    .await?;
    let peak = sampler.peak_mib();
    drop(sampler);
    svc.finish().await?;
    let expected = (o.rate as f64 * o.secs) as u64;
    if latencies_us.len() as u64 != expected {
        bail!(
            "expected {expected} timed lines, got {}",
            latencies_us.len()
        );
    }
    latencies_us.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies_us.len() as f64 * p).ceil() as usize).clamp(1, latencies_us.len());
        latencies_us[i - 1] as f64 / 1000.0
    };
    header(&format!(
        "latency: {} lines/s for {} s, write -> receive",
        o.rate, o.secs
    ));
    row("lines received", lines.to_string());
    row("p50", format!("{:.2} ms", pct(0.50)));
    row("p99", format!("{:.2} ms", pct(0.99)));
    row("max", format!("{:.2} ms", pct(1.0)));
    row(
        "RSS before / peak",
        format!("{:.1} / {peak:.1} MiB", before.0),
    );
    Ok(())
}

async fn many(o: &Options, http: &reqwest::Client) -> Result<()> {
    for round in 1..=o.rounds {
        many_once(o, http, round).await?;
    }
    Ok(())
}

async fn many_once(o: &Options, http: &reqwest::Client, round: usize) -> Result<()> {
    let svc = start_service("many", &["--child".into(), o.job_lines.to_string()]).await?;
    let before = memory_mib();
    let sampler = RssSampler::start();
    let started = Instant::now();
    let mut readers = Vec::new();
    for j in 0..o.jobs {
        let id = format!("job-{j}");
        create_job(http, &svc.url, &id).await?;
        for _ in 0..o.clients {
            let (http, url, id) = (http.clone(), svc.url.clone(), id.clone());
            let want = o.job_lines;
            readers.push(tokio::spawn(async move {
                read_stream(&http, &url, &id, |n, data| {
                    if n <= want && seq_of(data) != Some(n) {
                        bail!("{id} line {n}");
                    }
                    Ok(())
                })
                .await
            }));
        }
    }
    let mut delivered = 0;
    for r in readers {
        let lines = r.await??;
        if lines != o.job_lines + 1 {
            bail!("a client got {lines} lines, want {}", o.job_lines + 1);
        }
        delivered += lines;
    }
    let elapsed = started.elapsed();
    let peak = sampler.peak_mib();
    drop(sampler);
    let after = memory_mib();
    svc.finish().await?;
    // Tasks still alive once the service is gone: SSE pumps, connections or
    // job tasks that were never cleaned up would show here, round after round.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let written = (o.job_lines + 1) * o.jobs as u64;
    header(&format!(
        "many (round {round} of {}): {} jobs x {} clients, {} lines each",
        o.rounds, o.jobs, o.clients, o.job_lines
    ));
    row("lines written (all jobs)", written.to_string());
    row("lines delivered (all clients)", delivered.to_string());
    row("lost / duplicated / out of order", "0 / 0 / 0".into());
    row("wall time", format!("{:.2} s", elapsed.as_secs_f64()));
    row(
        "lines/s written",
        format!("{:.0}", written as f64 / elapsed.as_secs_f64()),
    );
    row(
        "lines/s delivered",
        format!("{:.0}", delivered as f64 / elapsed.as_secs_f64()),
    );
    row(
        "RSS before / peak / after",
        format!("{:.1} / {peak:.1} / {:.1} MiB", before.0, after.0),
    );
    row("tokio tasks alive after the round", tasks.to_string());
    Ok(())
}

/// Reads `url` to its end; returns the body's size and its number of `\n`.
async fn download(http: &reqwest::Client, url: &str) -> Result<(u64, u64)> {
    let resp = http.get(url).send().await?;
    if resp.status() != 200 {
        bail!("GET {url}: {}", resp.status());
    }
    let mut stream = resp.bytes_stream();
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok((bytes, lines))
}

/// Reads every `/lines` page of `id` in turn, `limit` rows each, following
/// `X-Next-From`; returns the rows read and the number of pages.
async fn all_pages(http: &reqwest::Client, url: &str, id: &str, limit: u64) -> Result<(u64, u64)> {
    let (mut from, mut rows, mut pages) = (1u64, 0u64, 0u64);
    loop {
        let resp = http
            .get(format!(
                "{url}/api/jobs/{id}/lines?from={from}&limit={limit}"
            ))
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("lines from {from}: {}", resp.status());
        }
        let next = resp
            .headers()
            .get("x-next-from")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body = resp.bytes().await?;
        rows += body.iter().filter(|&&b| b == b'\n').count() as u64;
        pages += 1;
        match next {
            Some(n) => from = n,
            None => return Ok((rows, pages)),
        }
    }
}

async fn bulk(o: &Options, http: &reqwest::Client) -> Result<()> {
    let svc = start_service("bulk", &["--child".into(), o.lines.to_string()]).await?;
    create_job(http, &svc.url, "bulk").await?;
    let total = read_stream(http, &svc.url, "bulk", |_, _| Ok(())).await?;
    let log_url = format!("{}/api/jobs/bulk/log", svc.url);
    let timed = |label: &'static str| {
        let started = Instant::now();
        move || (label, started.elapsed().as_secs_f64())
    };
    let mut rows_out: Vec<(String, String)> = Vec::new();
    // Each measure twice; the better one counts (the first warms the page cache).
    let mut best = |name: &str, secs: f64| {
        if let Some(r) = rows_out.iter_mut().find(|(n, _)| n == name) {
            let old: f64 = r.1.parse().unwrap_or(f64::MAX);
            if secs < old {
                r.1 = format!("{secs:.3}");
            }
        } else {
            rows_out.push((name.to_owned(), format!("{secs:.3}")));
        }
    };
    let mut log_bytes = 0;
    for _ in 0..2 {
        let t = timed("/log");
        let (bytes, lines) = download(http, &log_url).await?;
        if lines != total {
            bail!("/log gave {lines} lines, the job has {total}");
        }
        log_bytes = bytes;
        let (name, secs) = t();
        best(name, secs);
        let curl = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", &log_url])
            .status();
        if curl.is_ok() {
            let t = timed("curl /log");
            let status = std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", &log_url])
                .status()?;
            if !status.success() {
                bail!("curl: {status}");
            }
            let (name, secs) = t();
            best(name, secs);
        }
        let t = timed("/lines, all pages of 10000");
        let (rows, _) = all_pages(http, &svc.url, "bulk", 10_000).await?;
        if rows != total {
            bail!("/lines gave {rows} rows, the job has {total}");
        }
        let (name, secs) = t();
        best(name, secs);
        let t = timed("/lines, first page of 1000");
        http.get(format!("{}/api/jobs/bulk/lines?limit=1000", svc.url))
            .send()
            .await?
            .bytes()
            .await?;
        let (name, secs) = t();
        best(name, secs);
        let t = timed("/lines, last page of 1000");
        let from = total.saturating_sub(999).max(1);
        http.get(format!(
            "{}/api/jobs/bulk/lines?from={from}&limit=1000",
            svc.url
        ))
        .send()
        .await?
        .bytes()
        .await?;
        let (name, secs) = t();
        best(name, secs);
        let t = timed("/search of the whole log");
        let body = http
            .get(format!(
                "{}/api/jobs/bulk/search?q=ITEM%20999999%20OF",
                svc.url
            ))
            .send()
            .await?
            .bytes()
            .await?;
        let found: serde_json::Value = serde_json::from_slice(&body)?;
        if found["count"] != 1 {
            bail!("search: {found}");
        }
        let (name, secs) = t();
        best(name, secs);
        let t = timed("SSE replay (/events from 0)");
        read_stream(http, &svc.url, "bulk", |_, _| Ok(())).await?;
        let (name, secs) = t();
        best(name, secs);
    }
    svc.finish().await?;
    header(&format!(
        "bulk: one finished job of {total} lines, {:.1} MiB as /log",
        log_bytes as f64 / 1048576.0
    ));
    let base: f64 = rows_out
        .iter()
        .find(|(n, _)| n == "curl /log")
        .or_else(|| rows_out.iter().find(|(n, _)| n == "/log"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(f64::NAN);
    for (name, secs) in &rows_out {
        let s: f64 = secs.parse().unwrap_or(f64::NAN);
        row(name, format!("{s:.3} s = {:.2}x", s / base));
    }
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let http = reqwest::Client::new();
        println!(
            "soak_runner: {} cores, {} build",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        match o.mode.as_str() {
            "throughput" => throughput(&o, &http).await,
            "latency" => latency(&o, &http).await,
            "many" => many(&o, &http).await,
            "bulk" => bulk(&o, &http).await,
            "scrape" => scrape(&o, &http).await,
            _ => {
                throughput(&o, &http).await?;
                latency(&o, &http).await?;
                many(&o, &http).await
            }
        }
    })
}
