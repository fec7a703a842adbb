//! Helpers for the real-browser test: the `pipeline-runner` binary on a free
//! port, and headless Chromium driven through chromedriver over WebDriver.
//!
//! Both are started in their own process group, and a guard kills the whole
//! group when it drops, so a failing test leaves no browser, runner or
//! pipeline behind. Ports come from the processes themselves (`--port=0`,
//! `--bind 127.0.0.1:0`), read from their first lines of output.
//!
//! When Chromium or chromedriver is missing, [`browser_or_skip`] says so loudly
//! and the test returns early, unless `PIPELINE_REQUIRE_BROWSER=1` is set (as
//! `scripts/test.sh` does), in which case the test fails.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// Set to `1` to make a missing browser a test failure instead of a skip.
pub const REQUIRE_BROWSER_ENV: &str = "PIPELINE_REQUIRE_BROWSER";

/// How long a process may take to print the line that says where it listens.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the browser and its driver are.
#[derive(Debug, Clone)]
pub struct BrowserPaths {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Finds Chromium and chromedriver (`/usr/bin/chromium`, `/usr/bin/chromedriver`,
/// or the paths in `PIPELINE_CHROMIUM` / `PIPELINE_CHROMEDRIVER`).
///
/// Returns `None` after a loud message when one is missing, or panics when
/// `PIPELINE_REQUIRE_BROWSER=1` asks for the browser test to be required.
pub fn browser_or_skip(test: &str) -> Option<BrowserPaths> {
    let path = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let paths = BrowserPaths {
        chromium: path("PIPELINE_CHROMIUM", "/usr/bin/chromium"),
        chromedriver: path("PIPELINE_CHROMEDRIVER", "/usr/bin/chromedriver"),
    };
    let missing: Vec<&Path> = [&paths.chromium, &paths.chromedriver]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(PathBuf::as_path)
        .collect();
    if missing.is_empty() {
        return Some(paths);
    }
    let required = std::env::var(REQUIRE_BROWSER_ENV).is_ok_and(|v| v == "1");
    let message = format!(
        "\n\
         ==================================================================\n\
         BROWSER TEST {verdict}: {test}\n\
         missing: {missing:?}\n\
         Install them with:  apt-get update && apt-get install -y chromium chromium-driver\n\
         or run the whole suite with:  bash scripts/test.sh  (installs them, requires this test)\n\
         ==================================================================\n",
        verdict = if required { "FAILED" } else { "SKIPPED" },
    );
    if required {
        panic!("{message}{REQUIRE_BROWSER_ENV}=1 is set, so a missing browser is a failure");
    }
    // Straight to stderr: libtest would swallow eprintln! of a passing test.
    let _ = std::io::stderr().write_all(message.as_bytes());
    None
}

/// A child process in its own process group; dropping it kills the group.
#[derive(Debug)]
pub struct ProcessGroup {
    child: Child,
}

impl ProcessGroup {
    /// Starts `command` in a new process group with stdout piped, waits for a
    /// stdout line that `parse` accepts, and returns its value. The rest of
    /// stdout keeps being drained (and dropped) so the child never blocks.
    pub fn spawn<T: Send + 'static>(
        mut command: Command,
        what: &str,
        parse: impl Fn(&str) -> Option<T> + Send + 'static,
    ) -> Result<(Self, T)> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let guard = ProcessGroup { child };

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut seen = Vec::new();
            let mut found = false;
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                if !found {
                    if let Some(value) = parse(line.trim_end()) {
                        found = true;
                        let _ = tx.send(Ok(value));
                    } else {
                        seen.push(line.trim_end().to_owned());
                    }
                }
                line.clear();
            }
            if !found {
                let _ = tx.send(Err(seen));
            }
            // read_line stops at EOF or on invalid UTF-8: drain to EOF either way.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(value)) => Ok((guard, value)),
            Ok(Err(seen)) => Err(anyhow!(
                "{what} exited before it was ready; its output: {seen:?}"
            )),
            Err(_) => Err(anyhow!(
                "{what} did not say it was ready within {STARTUP_TIMEOUT:?}"
            )),
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // The child leads its group (process_group(0)), so -pid is the group.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `pipeline-runner` binary, serving on a free loopback port.
#[derive(Debug)]
pub struct Runner {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    data_dir: PathBuf,
    args: Vec<String>,
    command: Vec<String>,
    process: Option<ProcessGroup>,
}

impl Runner {
    /// Starts the runner with a fresh data directory named after `test`,
    /// running `command` for each job.
    pub fn start(test: &str, command: &[&str]) -> Result<Self> {
        Self::start_with_args(test, &[], command)
    }

    /// Like [`Runner::start`], with extra runner options before the `--`
    /// (e.g. `--max-running 1`, `--trace-url ...`).
    pub fn start_with_args(test: &str, args: &[&str], command: &[&str]) -> Result<Self> {
        let data_dir =
            std::env::temp_dir().join(format!("pipeline-browser-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir)?;
        let mut runner = Runner {
            base_url: String::new(),
            data_dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            command: command.iter().map(|s| s.to_string()).collect(),
            process: None,
        };
        runner.spawn("127.0.0.1:0")?;
        Ok(runner)
    }

    fn spawn(&mut self, bind: &str) -> Result<()> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"));
        cmd.arg("--bind")
            .arg(bind)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .arg("--")
            .args(&self.command);
        let (process, base_url) = ProcessGroup::spawn(cmd, "pipeline-runner", |line| {
            line.strip_prefix("listening on ")
                .map(|url| url.trim_end_matches('/').to_owned())
        })?;
        self.process = Some(process);
        self.base_url = base_url;
        Ok(())
    }

    /// Kills the runner with SIGKILL (no goodbye to its clients) and starts
    /// it again on the same address over the same data directory.
    ///
    /// A job's child runs in its own process group and is not killed here; it
    /// finishes on its own with nobody reading its output.
    pub fn kill_and_restart(&mut self) -> Result<()> {
        self.kill();
        self.restart()
    }

    /// Kills the runner with SIGKILL; [`Runner::restart`] brings it back.
    pub fn kill(&mut self) {
        drop(self.process.take());
    }

    /// Starts the runner again on the same address and data directory.
    pub fn restart(&mut self) -> Result<()> {
        let bind = self
            .base_url
            .strip_prefix("http://")
            .context("the runner's address is not http://")?
            .to_owned();
        self.spawn(&bind)
    }

    /// Starts a job through the API (`POST /api/jobs`) and returns its id.
    pub async fn create_job(&self) -> Result<String> {
        self.create_job_body(None).await
    }

    /// Starts a job with the given id (`POST /api/jobs {"job_id": ID}`).
    pub async fn create_job_with_id(&self, id: &str) -> Result<String> {
        self.create_job_body(Some(json!({ "job_id": id }))).await
    }

    async fn create_job_body(&self, body: Option<Value>) -> Result<String> {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/jobs", self.base_url))
            .header("Origin", &self.base_url);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let reply = request.send().await?;
        anyhow::ensure!(
            reply.status().as_u16() == 201,
            "POST /api/jobs answered {}",
            reply.status()
        );
        let body: Value = serde_json::from_slice(&reply.bytes().await?)?;
        body["job_id"]
            .as_str()
            .map(str::to_owned)
            .context("no job_id in the answer")
    }

    /// A `POST` or `DELETE` to the API (with the page's Origin); returns
    /// the status and the parsed body (`null` when empty).
    pub async fn send(&self, method: reqwest::Method, path: &str) -> Result<(u16, Value)> {
        let reply = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base_url))
            .header("Origin", &self.base_url)
            .send()
            .await?;
        let status = reply.status().as_u16();
        let bytes = reply.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, body))
    }

    /// Polls `GET path` until `ready` accepts the answer, and returns it.
    pub async fn wait_json(
        &self,
        path: &str,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(value) = self.get_json(path).await {
                if ready(&value) {
                    return Ok(value);
                }
                if std::time::Instant::now() > deadline {
                    bail!("timed out after {timeout:?} waiting for {what}; last answer: {value}");
                }
            } else if std::time::Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET` a JSON document of the API.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let reply = reqwest::get(format!("{}{path}", self.base_url)).await?;
        Ok(serde_json::from_slice(&reply.bytes().await?)?)
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        drop(self.process.take());
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Headless Chromium behind chromedriver, with an open WebDriver session.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    _driver: ProcessGroup,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start(paths: &BrowserPaths) -> Result<Self> {
        Self::start_with(paths, &[]).await
    }

    /// Like [`Browser::start`], with extra Chromium arguments (e.g.
    /// `--window-size=390,844`, `--force-dark-mode`).
    pub async fn start_with(paths: &BrowserPaths, extra_args: &[&str]) -> Result<Self> {
        Self::start_with_options(paths, extra_args, None).await
    }

    /// A phone-sized viewport of exactly `width` x `height` CSS pixels
    /// (chromedriver's mobile emulation: a headless window cannot be made
    /// narrower than 500 px).
    pub async fn start_phone(paths: &BrowserPaths, width: u32, height: u32) -> Result<Self> {
        Self::start_with_options(paths, &[], Some((width, height))).await
    }

    async fn start_with_options(
        paths: &BrowserPaths,
        extra_args: &[&str],
        phone: Option<(u32, u32)>,
    ) -> Result<Self> {
        let mut cmd = Command::new(&paths.chromedriver);
        cmd.arg("--port=0").stderr(Stdio::null());
        let (driver, port) = ProcessGroup::spawn(cmd, "chromedriver", |line| {
            // "ChromeDriver was started successfully on port 41231."
            let rest = line.split("started successfully on port ").nth(1)?;
            rest.trim_end_matches('.').parse::<u16>().ok()
        })?;

        let mut args = vec![
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // No lookups leave the machine (Debian's start page would
            // stall the first command); the runner is on 127.0.0.1.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ];
        if !extra_args.iter().any(|a| a.starts_with("--window-size=")) {
            args.push("--window-size=1280,1000");
        }
        args.extend_from_slice(extra_args);
        let mut caps = Capabilities::new();
        let mut options = json!({ "binary": paths.chromium, "args": args });
        if let Some((width, height)) = phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1 }
            });
        }
        caps.insert("goog:chromeOptions".into(), options);
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            STARTUP_TIMEOUT,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .context("opening a WebDriver session timed out")?
        .context("cannot open a WebDriver session")?;
        Ok(Browser {
            client,
            _driver: driver,
        })
    }

    /// The browser console's messages since the last call (chromedriver's
    /// log endpoint): CSP violations and script errors show up here.
    pub async fn console(&self) -> Result<Vec<Value>> {
        let logs = self.client.issue_cmd(BrowserLog).await?;
        match logs {
            Value::Array(entries) => Ok(entries),
            other => bail!("unexpected browser log answer: {other}"),
        }
    }

    /// Ends the WebDriver session (Chromium exits); the driver is killed on drop.
    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// chromedriver's `POST /session/{id}/se/log` with `{"type":"browser"}`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

/// Polls `script` (a function body returning a value) until it returns
/// something other than `null`, `false` or `undefined`, and returns that.
pub async fn wait_js(
    client: &Client,
    script: &str,
    timeout: Duration,
    what: &str,
) -> Result<Value> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let value = client.execute(script, vec![]).await?;
        if !(value.is_null() || value == Value::Bool(false)) {
            return Ok(value);
        }
        if std::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Saves a PNG of the page to `docs/NAME` (the screenshots the docs show).
pub async fn save_doc_screenshot(client: &Client, name: &str) -> Result<PathBuf> {
    let png = client.screenshot().await?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::write(&path, png)?;
    Ok(path)
}

/// Saves a PNG under `target/browser-screenshots/` and returns its path.
pub async fn save_screenshot(client: &Client, name: &str) -> Result<PathBuf> {
    let png = client.screenshot().await?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, png)?;
    Ok(path)
}
