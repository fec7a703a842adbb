//! A real `nats-server` with JetStream for the tests: on a free port of
//! 127.0.0.1 with a temporary store directory, stopped (and its directory
//! removed) on drop, and restartable on the same port and store.
#![allow(dead_code, unreachable_pub)]

pub mod web;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the server, or the one on `PATH`.
fn server_program() -> PathBuf {
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("nats-server")
    }
}

/// A unique temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
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

#[derive(Debug)]
pub struct NatsServer {
    pub port: u16,
    store: TempDir,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            port: free_port(),
            store: TempDir::new("nats-store"),
            child: None,
        };
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let child = Command::new(server_program())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server (Debian package nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL: its store keeps what it acknowledged, as
    /// JetStream syncs before it acks with file storage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `f` gives `Some`, or panics with `what` after `secs`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `pipeline-runner worker` process, killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct WorkerProcess {
    pub id: String,
    pub data: TempDir,
    child: Option<Child>,
}

impl WorkerProcess {
    /// Starts a worker for `script` (run by `sh -c`) and waits until it
    /// says it is connected.
    pub fn start(url: &str, script: &str, extra: &[&str]) -> WorkerProcess {
        Self::start_in(url, script, extra, TempDir::new("nats-worker"))
    }

    /// The same, with a given data directory.
    pub fn start_in(url: &str, script: &str, extra: &[&str], data: TempDir) -> WorkerProcess {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"))
            .arg("worker")
            .args(["--nats", url, "--worker-ttl", "1"])
            .arg("--data-dir")
            .arg(data.path())
            .args(extra)
            .args(["--", "sh", "-c", script])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pipeline-runner worker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the worker says it is connected");
        let id = line
            .strip_prefix("worker ")
            .and_then(|l| l.split(' ').next())
            .expect("worker ID connected to URL")
            .to_owned();
        WorkerProcess {
            id,
            data,
            child: Some(child),
        }
    }

    /// The job's lines as the worker stored them: `(seq, data)`.
    pub fn stored_lines(&self, job: &str) -> Vec<(u64, String)> {
        let path = self.data.path().join("jobs").join(job).join("events.jsonl");
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                (
                    v["seq"].as_u64().unwrap(),
                    v["data"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Kills the worker and hands its data directory over.
    pub fn into_data(mut self) -> TempDir {
        self.kill();
        std::mem::replace(&mut self.data, TempDir(PathBuf::new()))
    }

    pub fn has_job(&self, job: &str) -> bool {
        self.data.path().join("jobs").join(job).exists()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().unwrap()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
