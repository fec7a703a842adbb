//! Helpers shared by the runner tests: temporary data directories, an
//! in-process server on port 0, the `pipeline-runner` binary as a process,
//! an SSE client, and polling with a deadline (no fixed sleeps).
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;
use tracing_pipeline::runner::{serve, Runner, RunnerOptions};

/// How long any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The runner binary (it also runs the reference pipeline: `BIN reference`).
pub const BIN: &str = env!("CARGO_BIN_EXE_pipeline-runner");

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "tp-runner-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `sh -c SCRIPT` command line.
pub fn sh(script: &str) -> Vec<std::ffi::OsString> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// The reference pipeline with extra flags.
pub fn reference(flags: &[&str]) -> Vec<std::ffi::OsString> {
    let mut cmd: Vec<std::ffi::OsString> = vec![BIN.into(), "reference".into()];
    cmd.extend(flags.iter().map(Into::into));
    cmd
}

/// A runner served in this process on 127.0.0.1:0.
pub struct Server {
    pub url: String,
    pub runner: Arc<Runner>,
    pub dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(command: Vec<std::ffi::OsString>) -> Server {
        let dir = TempDir::new("srv");
        let runner = Runner::open(command, dir.path().join("data")).unwrap();
        Server::serve(runner, dir).await
    }

    /// A server with `options`, on `dir` (a fresh one when `None`; pass the
    /// `TempDir` a shut-down server returned to restart on its data).
    pub async fn start_with(
        command: Vec<std::ffi::OsString>,
        options: RunnerOptions,
        dir: Option<TempDir>,
    ) -> Server {
        let dir = dir.unwrap_or_else(|| TempDir::new("srv"));
        let runner = Runner::open_with(command, dir.path().join("data"), options).unwrap();
        Server::serve(runner, dir).await
    }

    async fn serve(runner: Arc<Runner>, dir: TempDir) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&runner), async move {
            let _ = stopped.await;
        }));
        Server {
            url,
            runner,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown, as on Ctrl-C; fails if it does not finish in time.
    /// Returns the data directory's owner, to look at it afterwards.
    pub async fn shutdown(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("graceful shutdown timed out")
                .unwrap()
                .unwrap();
        }
        self.dir
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// POST /api/jobs; returns the job id.
pub async fn create_job(url: &str, id: Option<&str>) -> Result<String> {
    let body = match id {
        Some(id) => serde_json::json!({ "job_id": id }).to_string(),
        None => String::new(),
    };
    let resp = client()
        .post(format!("{url}/api/jobs"))
        .body(body)
        .send()
        .await?;
    if resp.status() != 201 {
        bail!("create: {} {}", resp.status(), resp.text().await?);
    }
    let v: Value = serde_json::from_slice(&resp.bytes().await?)?;
    Ok(v["job_id"].as_str().context("job_id")?.to_owned())
}

pub async fn get_json(url: &str) -> Result<Value> {
    let resp = client().get(url).send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Polls `check` until it returns `Some`, or fails after [`TIMEOUT`].
pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the job's state is neither `queued` nor `running`; returns its detail.
pub async fn wait_finished(url: &str, id: &str) -> Value {
    poll("the job to finish", || async {
        let v = get_json(&format!("{url}/api/jobs/{id}")).await.ok()?;
        (v["state"] != "running" && v["state"] != "queued").then_some(v)
    })
    .await
}

/// One SSE message.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: Value,
}

/// An open event stream, read message by message.
pub struct SseClient {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

impl SseClient {
    pub async fn connect(url: &str, id: &str, last_event_id: Option<u64>) -> Result<SseClient> {
        let mut req = client().get(format!("{url}/api/jobs/{id}/events"));
        if let Some(n) = last_event_id {
            req = req.header("Last-Event-ID", n.to_string());
        }
        Self::from_request(req).await
    }

    /// Opens any event stream, e.g. `http://.../api/stream?job=a:0`.
    pub async fn open(full_url: &str) -> Result<SseClient> {
        Self::from_request(client().get(full_url)).await
    }

    async fn from_request(req: reqwest::RequestBuilder) -> Result<SseClient> {
        let resp = req.send().await?;
        if resp.status() != 200 {
            bail!("events: {}", resp.status());
        }
        let headers = resp.headers().clone();
        Ok(SseClient {
            stream: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            headers,
        })
    }

    /// The next message (comments skipped), `None` when the stream closed.
    pub async fn next(&mut self) -> Result<Option<Msg>> {
        tokio::time::timeout(TIMEOUT, self.next_inner())
            .await
            .map_err(|_| anyhow!("timed out reading the event stream"))?
    }

    async fn next_inner(&mut self) -> Result<Option<Msg>> {
        loop {
            if let Some(end) = find(&self.buf, b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                if let Some(msg) = parse_frame(&frame)? {
                    return Ok(Some(msg));
                }
                continue;
            }
            match self.stream.next().await {
                Some(chunk) => self.buf.extend_from_slice(chunk?.as_ref()),
                None => return Ok(None),
            }
        }
    }

    /// Every message up to and including `end`; checks the stream then closes.
    pub async fn until_end(&mut self) -> Result<Vec<Msg>> {
        let mut out = Vec::new();
        loop {
            let Some(msg) = self.next().await? else {
                bail!("stream closed before `end` after {} messages", out.len());
            };
            let end = msg.event.as_deref() == Some("end");
            out.push(msg);
            if end {
                if self.next().await?.is_some() {
                    bail!("a message after `end`");
                }
                return Ok(out);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_frame(frame: &[u8]) -> Result<Option<Msg>> {
    let text = std::str::from_utf8(frame)?;
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse()?);
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v);
        } else if line.starts_with(':') || line.is_empty() {
        } else {
            bail!("unexpected SSE line {line:?}");
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    let data = serde_json::from_str(&data.join("\n"))
        .with_context(|| format!("data is not JSON: {data:?}"))?;
    Ok(Some(Msg { id, event, data }))
}

/// The whole stream of a job from the start (or after `last`), up to `end`.
pub async fn collect(url: &str, id: &str, last: Option<u64>) -> Vec<Msg> {
    SseClient::connect(url, id, last)
        .await
        .unwrap()
        .until_end()
        .await
        .unwrap()
}

/// Checks ids are 1..=n in order (or after `after`), and the last is `end`.
pub fn assert_well_formed(msgs: &[Msg], after: u64) {
    let (end, lines) = msgs.split_last().expect("no messages");
    assert_eq!(end.event.as_deref(), Some("end"), "{end:?}");
    assert_eq!(end.id, None);
    for (i, m) in lines.iter().enumerate() {
        assert_eq!(m.id, Some(after + 1 + i as u64), "{m:?}");
        assert_eq!(m.event, None);
    }
}

/// The `data` of the lines that are structured events named `kind`.
pub fn events_named<'a>(msgs: &'a [Msg], kind: &str) -> Vec<&'a Value> {
    msgs.iter()
        .filter(|m| m.data.get("event").and_then(Value::as_str) == Some(kind))
        .map(|m| &m.data)
        .collect()
}

/// The `text` of every `output` line.
pub fn output_texts(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.data["type"] == "output")
        .map(|m| m.data["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `pipeline-runner` as a child process, killed on drop.
pub struct RunnerProcess {
    pub child: Child,
    pub url: String,
}

impl RunnerProcess {
    /// Starts the binary with `--bind 127.0.0.1:0 --data-dir DIR -- COMMAND`
    /// and waits for its `listening on` line.
    pub fn start(data_dir: &Path, command: &[std::ffi::OsString]) -> Result<RunnerProcess> {
        let mut child = Command::new(BIN)
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        // The runner prints this line first, so this read does not hang
        // unless the runner failed (then it closes stdout and we get EOF).
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        Ok(RunnerProcess { child, url })
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("runner did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`stream_each`] saw: the number of lines, the last id, the `end` data.
#[derive(Debug, Clone, PartialEq)]
pub struct Streamed {
    pub lines: u64,
    pub last_id: u64,
    pub end: Value,
}

/// Reads a whole event stream without keeping it (for streams of many
/// thousands of lines): checks that the ids run on by one from `after`, calls
/// `each(id, data)` for every line, and returns once `end` arrives. Fails if
/// the stream closes before `end` or a single read takes over [`TIMEOUT`].
pub async fn stream_each(
    url: &str,
    id: &str,
    after: Option<u64>,
    mut each: impl FnMut(u64, &str),
) -> Result<Streamed> {
    let mut req = client().get(format!("{url}/api/jobs/{id}/events"));
    if let Some(n) = after {
        req = req.header("Last-Event-ID", n.to_string());
    }
    let resp = req.send().await?;
    if resp.status() != 200 {
        bail!("events: {}", resp.status());
    }
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut expect = after.unwrap_or(0) + 1;
    let mut lines = 0;
    loop {
        let mut start = 0;
        while let Some(rel) = find(&buf[start..], b"\n\n") {
            let frame = std::str::from_utf8(&buf[start..start + rel])?;
            start += rel + 2;
            let (mut msg_id, mut event, mut data) = (None, None, None);
            for line in frame.split('\n') {
                if let Some(v) = line.strip_prefix("id: ") {
                    msg_id = Some(v.parse::<u64>()?);
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v);
                } else if let Some(v) = line.strip_prefix("data: ") {
                    if data.replace(v).is_some() {
                        bail!("a message with two data lines: {frame:?}");
                    }
                } else if !line.starts_with(':') && !line.is_empty() {
                    bail!("unexpected SSE line {line:?}");
                }
            }
            let Some(data) = data else { continue };
            if event == Some("end") {
                if msg_id.is_some() {
                    bail!("`end` with an id");
                }
                return Ok(Streamed {
                    lines,
                    last_id: expect - 1,
                    end: serde_json::from_str(data)?,
                });
            }
            if event.is_some() {
                bail!("unexpected event type {event:?}");
            }
            if msg_id != Some(expect) {
                bail!("expected id {expect}, got {msg_id:?}");
            }
            each(expect, data);
            expect += 1;
            lines += 1;
        }
        buf.drain(..start);
        match tokio::time::timeout(TIMEOUT, stream.next()).await {
            Err(_) => bail!("timed out reading the event stream after {lines} lines"),
            Ok(None) => bail!("stream closed before `end` after {lines} lines"),
            Ok(Some(chunk)) => buf.extend_from_slice(chunk?.as_ref()),
        }
    }
}

/// `"host:port"` of a server URL such as `http://127.0.0.1:1234`.
pub fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Sends raw bytes over a fresh connection and reads the reply until the
/// server closes or `TIMEOUT` passes; for requests no HTTP client would send.
pub async fn raw_http(url: &str, request: &[u8]) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(host_port(url)).await?;
    sock.write_all(request).await?;
    let mut reply = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .map_err(|_| anyhow!("no reply within {TIMEOUT:?}"))?;
    Ok(reply)
}

/// The status code of a raw HTTP/1.1 reply (`None` if it is not one).
pub fn raw_status(reply: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(reply.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends `method` to `url` with `body`; returns the status and the JSON body
/// (`Null` when it is not JSON).
pub async fn send_json(method: &str, url: &str, body: &str) -> (u16, Value) {
    let resp = client()
        .request(method.parse().unwrap(), url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
