//! Web nodes (`pipeline-runner serve --nats URL`) as real processes for the
//! tests, workers with a chosen liveness TTL, signals to either, the HTTP
//! calls the tests make, and event-stream readers: a strict one (one
//! connection, every line up to `end`), a resilient one (reconnects with
//! `Last-Event-ID` as a browser's `EventSource` does, on any node), and a
//! slow one on a raw socket with a tiny receive buffer that reads nothing
//! until told to.
#![allow(dead_code, unreachable_pub)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use super::{TempDir, WorkerProcess};

/// The runner binary: web nodes, workers and the reference pipeline.
pub const BIN: &str = env!("CARGO_BIN_EXE_pipeline-runner");

/// The children's `RUST_LOG`: `warn`, or `TP_CHILD_LOG` when set (e.g.
/// `TP_CHILD_LOG=info` to see what workers and web nodes did).
fn child_log() -> String {
    std::env::var("TP_CHILD_LOG").unwrap_or_else(|_| "warn".into())
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("signal {signal} to {pid}: {e}"));
}

/// Whether process `pid` still exists (a reaped child does not).
pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Starts `pipeline-runner worker --nats URL --worker-ttl TTL` for `script`
/// (run by `sh -c`) and waits until it says it is connected.
pub fn start_worker(url: &str, script: &str, ttl: &str, extra: &[&str]) -> WorkerProcess {
    start_worker_in(url, script, ttl, extra, TempDir::new("web-worker"))
}

/// The same, on a given data directory (a killed worker's, to start it
/// again).
pub fn start_worker_in(
    url: &str,
    script: &str,
    ttl: &str,
    extra: &[&str],
    data: TempDir,
) -> WorkerProcess {
    let mut child = Command::new(BIN)
        .arg("worker")
        .args(["--nats", url, "--worker-ttl", ttl])
        .arg("--data-dir")
        .arg(data.path())
        .args(extra)
        .args(["--", "sh", "-c", script])
        .env("RUST_LOG", child_log())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pipeline-runner worker");
    let line = first_line(&mut child, "the worker's `worker ID connected to URL`");
    let id = line
        .strip_prefix("worker ")
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("worker ID connected to URL, got {line:?}"))
        .to_owned();
    WorkerProcess {
        id,
        data,
        child: Some(child),
    }
}

impl WorkerProcess {
    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the worker runs").id()
    }

    /// Sends it `sig` (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.pid(), sig);
    }
}

/// Reads the child's first stdout line within 20 s (then drains the rest in
/// the background so the pipe never fills).
fn first_line(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line,
        Err(_) => {
            let status = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
            panic!("no {what} within 20 s (exit status: {status:?})")
        }
    }
}

/// A `pipeline-runner serve --nats URL --bind 127.0.0.1:0` process, killed
/// (SIGKILL) on drop.
#[derive(Debug)]
pub struct WebNode {
    /// `http://127.0.0.1:PORT`, from its `listening on` line.
    pub url: String,
    /// Holds its cache directory.
    pub dir: TempDir,
    child: Option<Child>,
}

impl WebNode {
    /// Starts a web node on `nats` with `extra` flags (e.g. `--worker-ttl`)
    /// and waits until it says where it listens.
    pub fn start(nats: &str, extra: &[&str]) -> WebNode {
        WebNode::start_in(nats, extra, TempDir::new("web-node"))
    }

    /// The same, with its cache in `dir/cache` (pass the `TempDir` a
    /// killed node gave back to start again on its cache).
    pub fn start_in(nats: &str, extra: &[&str], dir: TempDir) -> WebNode {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--nats",
                nats,
                "--bind",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("cache"))
            .args(extra)
            .env("RUST_LOG", child_log())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pipeline-runner serve");
        let line = first_line(&mut child, "`listening on http://ADDR` from the web node");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the web node's first line: {line:?}"))
            .trim()
            .to_owned();
        WebNode {
            url,
            dir,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the web node runs").id()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it (SIGKILL) and hands its directory over.
    pub fn into_dir(mut self) -> TempDir {
        self.kill();
        std::mem::replace(&mut self.dir, TempDir(PathBuf::new()))
    }

    /// SIGTERM, and the exit status (within 20 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the web node runs");
        signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        wait_exit(&mut child, Duration::from_secs(20)).expect("the web node exits after SIGTERM")
    }
}

impl Drop for WebNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for `child` to exit within `limit`; kills it and returns `None`
/// if it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a finished command printed, and how long it ran.
#[derive(Debug)]
pub struct Finished {
    /// `None`: it was still running after the limit (and was killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `pipeline-runner ARGS` to its end (killed after `limit`).
pub fn run_bin(args: &[&str], limit: Duration) -> Finished {
    let out = TempDir::new("web-run");
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(out.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, limit);
    Finished {
        status,
        stdout: std::fs::read_to_string(&o).unwrap_or_default(),
        stderr: std::fs::read_to_string(&e).unwrap_or_default(),
        took: start.elapsed(),
    }
}

// ---------------------------------------------------------------- HTTP

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Sends `method` to `url` with `body`; the status and the JSON body
/// (`Null` when it is not JSON). Connection errors are `status` 0.
pub async fn call(method: &str, url: &str, body: &str) -> (u16, Value) {
    let resp = match http()
        .request(method.parse().unwrap(), url)
        .body(body.to_owned())
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return (0, Value::Null),
    };
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `POST /api/jobs` with `{"job_id": id}`: the status and the body.
pub async fn post_job(node: &str, id: &str) -> (u16, Value) {
    call(
        "POST",
        &format!("{node}/api/jobs"),
        &serde_json::json!({ "job_id": id }).to_string(),
    )
    .await
}

/// Posts job `id`; panics unless it is created (201, `queued`).
pub async fn create(node: &str, id: &str) {
    let (status, body) = post_job(node, id).await;
    assert_eq!(status, 201, "POST {node}/api/jobs {id}: {body}");
    assert_eq!(body["job_id"], id, "{body}");
}

/// `GET /api/jobs/{id}` when it answers 200.
pub async fn job(node: &str, id: &str) -> Option<Value> {
    let (status, body) = call("GET", &format!("{node}/api/jobs/{id}"), "").await;
    (status == 200).then_some(body)
}

/// `GET /api/jobs` (up to 500 jobs): the summaries, when it answers 200.
pub async fn jobs(node: &str) -> Option<Vec<Value>> {
    let (status, body) = call("GET", &format!("{node}/api/jobs?limit=500"), "").await;
    if status != 200 {
        return None;
    }
    body["jobs"].as_array().cloned()
}

/// Polls `check` every 50 ms until it gives `Some`; panics with `what`
/// after `secs`.
pub async fn until<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until node `node` shows job `id` ended (state `finished`, or
/// `interrupted` for a job whose runner died under it); its detail.
pub async fn finished(node: &str, id: &str, secs: u64) -> Value {
    until(secs, &format!("job {id} ended on {node}"), || async {
        job(node, id)
            .await
            .filter(|j| j["state"] == "finished" || j["state"] == "interrupted")
    })
    .await
}

/// Waits until node `node` shows job `id` running.
pub async fn running(node: &str, id: &str, secs: u64) -> Value {
    until(secs, &format!("job {id} running on {node}"), || async {
        job(node, id).await.filter(|j| j["state"] == "running")
    })
    .await
}

// ---------------------------------------------------------------- SSE

/// One SSE message.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: Value,
}

impl Msg {
    pub fn is_end(&self) -> bool {
        self.event.as_deref() == Some("end")
    }
}

/// Parses SSE frames out of `buf` (each ends with a blank line), leaving a
/// partial frame there. Comments and data-less frames are skipped.
fn frames(buf: &mut Vec<u8>) -> Result<Vec<Msg>, String> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let frame: Vec<u8> = buf.drain(..end + 2).collect();
        let text = std::str::from_utf8(&frame).map_err(|e| e.to_string())?;
        let (mut id, mut event, mut data) = (None, None, Vec::new());
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(
                    v.trim()
                        .parse::<u64>()
                        .map_err(|e| format!("id {v:?}: {e}"))?,
                );
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            } else if !line.is_empty() && !line.starts_with(':') && !line.starts_with("retry:") {
                return Err(format!("unexpected SSE line {line:?}"));
            }
        }
        if data.is_empty() {
            continue;
        }
        let joined = data.join("\n");
        let data = serde_json::from_str(&joined)
            .map_err(|e| format!("data is not JSON ({e}): {joined:?}"))?;
        out.push(Msg { id, event, data });
    }
    Ok(out)
}

/// How opening a stream failed.
#[derive(Debug)]
pub enum OpenError {
    /// The node answered with this status.
    Status(u16),
    /// No answer (connection refused or reset, timeout).
    Io(String),
}

/// One open `GET /api/jobs/{id}/events` connection.
pub struct Sse {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
    ready: std::collections::VecDeque<Msg>,
}

impl Sse {
    /// Opens the stream of `job` on `node`, after `last` if given.
    pub async fn open(node: &str, job: &str, last: Option<u64>) -> Result<Sse, OpenError> {
        Sse::open_path(node, &format!("/api/jobs/{job}/events"), last).await
    }

    /// Opens any event stream of `node`, e.g. `/api/stream?jobs=1`.
    pub async fn open_path(node: &str, path: &str, last: Option<u64>) -> Result<Sse, OpenError> {
        let mut req = reqwest::Client::new().get(format!("{node}{path}"));
        if let Some(n) = last {
            req = req.header("Last-Event-ID", n.to_string());
        }
        let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .map_err(|_| OpenError::Io("no answer within 10 s".into()))?
            .map_err(|e| OpenError::Io(e.to_string()))?;
        if resp.status() != 200 {
            return Err(OpenError::Status(resp.status().as_u16()));
        }
        Ok(Sse {
            stream: resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(),
            buf: Vec::new(),
            ready: Default::default(),
        })
    }

    /// Opens it once the node knows the job (404 until then), within `secs`.
    pub async fn open_when_known(node: &str, job: &str, last: Option<u64>, secs: u64) -> Sse {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match Sse::open(node, job, last).await {
                Ok(sse) => return sse,
                Err(OpenError::Status(404)) => {}
                Err(e) => panic!("GET {node}/api/jobs/{job}/events: {e:?}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job} not known on {node} after {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The next message; `Ok(None)` when the stream closed, `Err` on a
    /// broken connection, bad framing or no message within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Msg>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(msg) = self.ready.pop_front() {
                return Ok(Some(msg));
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| format!("no message within {wait:?}"))?;
            match chunk {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("connection broke: {e}")),
                Some(Ok(bytes)) => {
                    self.buf.extend_from_slice(&bytes);
                    self.ready.extend(frames(&mut self.buf)?);
                }
            }
        }
    }

    /// Every message up to and including `end`, on this one connection;
    /// then checks that the stream closes with nothing after `end`.
    pub async fn until_end(&mut self, wait: Duration) -> Result<Vec<Msg>, String> {
        let mut out: Vec<Msg> = Vec::new();
        loop {
            let msg = self.next(wait).await.map_err(|e| {
                format!(
                    "{e} after {} messages (last id {:?})",
                    out.len(),
                    last_id(&out)
                )
            })?;
            let Some(msg) = msg else {
                return Err(format!(
                    "stream closed before `end` after {} messages (last id {:?})",
                    out.len(),
                    last_id(&out)
                ));
            };
            let end = msg.is_end();
            out.push(msg);
            if end {
                match self.next(Duration::from_secs(5)).await {
                    Ok(None) => {}
                    other => {
                        return Err(format!("the stream did not close after `end`: {other:?}"))
                    }
                }
                return Ok(out);
            }
        }
    }
}

fn last_id(msgs: &[Msg]) -> Option<u64> {
    msgs.iter().rev().find_map(|m| m.id)
}

/// The whole stream of `job` on `node` from the start, on one connection
/// (opened once the node knows the job).
pub async fn strict(node: &str, job: &str, secs: u64) -> Vec<Msg> {
    let mut sse = Sse::open_when_known(node, job, None, secs).await;
    sse.until_end(Duration::from_secs(secs))
        .await
        .unwrap_or_else(|e| panic!("job {job} on {node}: {e}"))
}

/// What [`follow`] saw.
#[derive(Debug, Default)]
pub struct Followed {
    /// The lines (no `end`), in the order received.
    pub lines: Vec<Msg>,
    /// The `end` message.
    pub end: Option<Msg>,
    /// How many times it connected.
    pub connections: usize,
}

/// Reads `job`'s stream as a browser's `EventSource` does: from after
/// `after`, and whenever the connection closes or breaks (or a node does
/// not answer) it connects again, to the next of `nodes` in turn, with
/// `Last-Event-ID` = the last id received, until `end` or `secs` pass.
/// Ids are not checked here: the caller compares them.
pub async fn follow(nodes: &[String], job: &str, after: Option<u64>, secs: u64) -> Followed {
    let seen = try_follow(nodes, job, after, secs).await;
    assert!(
        seen.end.is_some(),
        "job {job}: no `end` within {secs} s on {nodes:?}; got {} lines (last id {:?}) over {} connections",
        seen.lines.len(),
        seen.lines.iter().rev().find_map(|m| m.id),
        seen.connections
    );
    seen
}

/// [`follow`], giving up after `secs` with `end` `None` instead of
/// panicking (for a caller that adds what it knows to the failure).
pub async fn try_follow(nodes: &[String], job: &str, after: Option<u64>, secs: u64) -> Followed {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = Followed::default();
    let mut last = after;
    let mut turn = 0;
    loop {
        if tokio::time::Instant::now() >= deadline {
            return seen;
        }
        let node = &nodes[turn % nodes.len()];
        turn += 1;
        let mut sse = match Sse::open(node, job, last).await {
            Ok(sse) => sse,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seen.connections += 1;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match sse.next(left.max(Duration::from_millis(1))).await {
                Ok(Some(msg)) if msg.is_end() => {
                    seen.end = Some(msg);
                    return seen;
                }
                Ok(Some(msg)) => {
                    if msg.id.is_some() {
                        last = msg.id;
                    }
                    seen.lines.push(msg);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Checks that `lines` (ids and data, no `end`) are exactly the stored
/// lines after `after`: ids `after+1 ..= stored.len()` in order, each data
/// equal (as JSON) to the stored line with that number.
pub fn assert_lines(what: &str, lines: &[Msg], stored: &[(u64, String)], after: u64) {
    assert!(!stored.is_empty(), "{what}: the worker stored no lines");
    for (i, (seq, _)) in stored.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "{what}: the worker's own log numbers");
    }
    for (i, msg) in lines.iter().enumerate() {
        let want = after + 1 + i as u64;
        assert_eq!(
            msg.id,
            Some(want),
            "{what}: message {i} should have id {want} (gap or repeat): {msg:?}"
        );
        assert_eq!(msg.event, None, "{what}: id {want}: {msg:?}");
        let Some((_, data)) = stored.get(want as usize - 1) else {
            panic!(
                "{what}: id {want} is beyond the {} stored lines: {msg:?}",
                stored.len()
            );
        };
        let expected: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            msg.data, expected,
            "{what}: line {want} differs from the worker's log"
        );
    }
    assert_eq!(
        after + lines.len() as u64,
        stored.len() as u64,
        "{what}: the stream stopped at id {} but the worker stored {} lines",
        after + lines.len() as u64,
        stored.len()
    );
}

/// Checks a strict stream: lines as [`assert_lines`] from 1, then `end`.
pub fn assert_stream(what: &str, msgs: &[Msg], stored: &[(u64, String)]) {
    let (end, lines) = msgs
        .split_last()
        .unwrap_or_else(|| panic!("{what}: no messages"));
    assert!(
        end.is_end(),
        "{what}: the last message is not `end`: {end:?}"
    );
    assert_eq!(end.id, None, "{what}: `end` has an id: {end:?}");
    assert_lines(what, lines, stored, 0);
}

/// The one worker of `workers` whose data directory has `job`; panics
/// unless exactly one has it.
pub fn runner_of<'a>(workers: &'a [&'a WorkerProcess], job: &str) -> &'a WorkerProcess {
    let have: Vec<&WorkerProcess> = workers.iter().copied().filter(|w| w.has_job(job)).collect();
    assert_eq!(
        have.len(),
        1,
        "job {job} is in the data directories of {:?}, expected exactly one worker",
        have.iter().map(|w| &w.id).collect::<Vec<_>>()
    );
    have[0]
}

// ---------------------------------------------------- a slow raw client

/// An SSE client on a raw socket with a tiny receive buffer, that reads
/// nothing until [`SlowClient::read_to_end`] is called.
pub struct SlowClient {
    sock: tokio::net::TcpStream,
    job: String,
}

impl SlowClient {
    /// Connects to `node` with a receive buffer of `rcvbuf` bytes and sends
    /// the request for `job`'s events.
    pub async fn open(node: &str, job: &str, rcvbuf: u32) -> SlowClient {
        use tokio::io::AsyncWriteExt;
        let addr: std::net::SocketAddr = node.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(rcvbuf).unwrap();
        let mut sock = socket.connect(addr).await.unwrap();
        let req = format!(
            "GET /api/jobs/{job}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        SlowClient {
            sock,
            job: job.to_owned(),
        }
    }

    /// Reads the reply to its end (`end`, or the connection closing), in
    /// reads of at most `chunk` bytes: the status and the messages.
    pub async fn read_to_end(mut self, chunk: usize, secs: u64) -> (u16, Vec<Msg>) {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut raw: Vec<u8> = Vec::new();
        let mut head: Option<(u16, bool)> = None;
        let mut body: Vec<u8> = Vec::new();
        let mut sse: Vec<u8> = Vec::new();
        let mut msgs = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = tokio::time::timeout_at(deadline, self.sock.read(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "slow client of {}: no end within {secs} s ({} messages)",
                        self.job,
                        msgs.len()
                    )
                })
                .unwrap_or(0);
            if n == 0 {
                return (head.map_or(0, |h| h.0), msgs);
            }
            raw.extend_from_slice(&buf[..n]);
            if head.is_none() {
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let text = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let chunked = text.contains("transfer-encoding: chunked");
                head = Some((status, chunked));
                raw.drain(..end + 4);
            }
            let (status, chunked) = head.unwrap();
            if chunked {
                dechunk(&mut raw, &mut body);
            } else {
                body.append(&mut raw);
            }
            sse.append(&mut body);
            for msg in frames(&mut sse).expect("SSE framing") {
                let end = msg.is_end();
                msgs.push(msg);
                if end {
                    return (status, msgs);
                }
            }
        }
    }
}

/// Moves the complete chunks of a chunked body from `raw` to `body`.
fn dechunk(raw: &mut Vec<u8>, body: &mut Vec<u8>) {
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return;
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("a chunk size");
        if raw.len() < eol + 2 + size + 2 {
            return;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
        if size == 0 {
            return;
        }
    }
}

/// A file path under `dir` (for gates: a script waits for it to exist).
pub fn gate(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// The line numbers (`Pipeline-Seq`) of `job`'s messages in the events
/// stream, in the stream's own order: what any reader of the broker sees.
pub async fn broker_order(bus: &tracing_pipeline::runner::nats::Bus, job: &str) -> Vec<u64> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use tracing_pipeline::runner::nats::{EVENTS_PREFIX, EVENTS_STREAM, SEQ_HEADER};
    let js = async_nats::jetstream::new(bus.client().clone());
    let stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{EVENTS_PREFIX}{job}"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seqs = Vec::new();
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_millis(1000), messages.next()).await
    {
        let seq = m
            .headers
            .as_ref()
            .and_then(|h| h.get(SEQ_HEADER))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        seqs.push(seq);
    }
    seqs
}

/// Where `order` (line numbers in stream order) goes back: `(earlier
/// highest, the lower number after it)` for each such place.
pub fn inversions(order: &[u64]) -> Vec<(u64, u64)> {
    let mut high = 0;
    let mut out = Vec::new();
    for &seq in order {
        if seq < high {
            out.push((high, seq));
        }
        high = high.max(seq);
    }
    out
}
