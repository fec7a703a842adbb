//! A real three-node NATS cluster on 127.0.0.1, started from the shipped
//! `deploy/nats/nats-N.conf` files (only ports, the store directory and the
//! routes are substituted, so the files themselves are what is tested), a
//! worker and a web node with `--replicas 3` and all three URLs. One server
//! is killed while a job prints: the job completes, and the web node's
//! stream (one client following live through the failure, one replaying
//! after the end) has every line once, in order, exactly as the worker
//! stored it.
#![cfg(feature = "nats")]

mod nats_common;
mod runner_common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nats_common::{free_port, wait_for, TempDir};
use serde_json::Value;
use tracing_pipeline::runner::nats::{Bus, BusConfig, JobPhase, EVENTS_STREAM, SEQ_HEADER};

/// Seconds a worker may stay silent: well above a JetStream leader
/// election (several seconds), so a failover never makes a worker "lost".
const WORKER_TTL: &str = "30";

/// Where Debian's package puts the server, or the one on `PATH`.
fn server_program() -> PathBuf {
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("nats-server")
    }
}

/// The ports of one cluster member.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    cluster: u16,
    http: u16,
}

/// Replaces `from` (which must occur exactly once) with `to`: if the
/// shipped file changes shape, the test says so instead of testing
/// something else.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the shipped config should contain {from:?} once"
    );
    text.replacen(from, to, 1)
}

/// The shipped config of member `me` (0-based), moved onto 127.0.0.1 and
/// the given ports and store directory.
fn local_config(shipped: &str, me: usize, ports: &[Ports], store: &Path) -> String {
    let p = ports[me];
    let mut text = replace_once(
        shipped,
        "listen: 0.0.0.0:4222",
        &format!("listen: 127.0.0.1:{}", p.client),
    );
    text = replace_once(
        &text,
        "http: 127.0.0.1:8222",
        &format!("http: 127.0.0.1:{}", p.http),
    );
    text = replace_once(
        &text,
        "store_dir: /var/lib/nats",
        &format!("store_dir: {:?}", store.display().to_string()),
    );
    text = replace_once(
        &text,
        "listen: 0.0.0.0:6222",
        &format!("listen: 127.0.0.1:{}", p.cluster),
    );
    for (k, other) in ports.iter().enumerate() {
        text = replace_once(
            &text,
            &format!("nats-route://nats-{}:6222", k + 1),
            &format!("nats-route://127.0.0.1:{}", other.cluster),
        );
    }
    text
}

/// One `nats-server -c FILE` of the cluster.
#[derive(Debug)]
struct Member {
    name: String,
    ports: Ports,
    dir: TempDir,
    child: Option<Child>,
}

impl Member {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports.client)
    }

    fn monitor(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.http)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug)]
struct Cluster {
    members: Vec<Member>,
}

impl Cluster {
    /// Starts the three servers from `deploy/nats/` and waits until each
    /// listens for clients.
    fn start() -> Cluster {
        let ports: Vec<Ports> = (0..3)
            .map(|_| Ports {
                client: free_port(),
                cluster: free_port(),
                http: free_port(),
            })
            .collect();
        let mut members = Vec::new();
        for (me, p) in ports.iter().enumerate() {
            let name = format!("nats-{}", me + 1);
            let shipped_path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/nats")
                .join(format!("{name}.conf"));
            let shipped = std::fs::read_to_string(&shipped_path).unwrap();
            assert!(shipped.contains(&format!("server_name: {name}")));
            let dir = TempDir::new("nats-cluster");
            let store = dir.path().join("store");
            let conf = dir.path().join(format!("{name}.conf"));
            std::fs::write(&conf, local_config(&shipped, me, &ports, &store)).unwrap();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let child = Command::new(server_program())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("cannot start nats-server (Debian package nats-server)");
            members.push(Member {
                name,
                ports: *p,
                dir,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for m in &members {
            while std::net::TcpStream::connect(("127.0.0.1", m.ports.client)).is_err() {
                assert!(Instant::now() < deadline, "{} did not listen", m.name);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Cluster { members }
    }

    /// All the client URLs, comma separated, as workers and web nodes take them.
    fn urls(&self) -> String {
        self.members
            .iter()
            .map(Member::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server logs, for a failure message.
    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(m.log()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", m.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every running member names the same JetStream meta
    /// leader and reports itself healthy; returns the leader.
    async fn wait_for_leader(&self, secs: u64, not: Option<&str>) -> String {
        let http = runner_common::client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let mut leaders = Vec::new();
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                let jsz: Option<Value> = async {
                    let resp = http.get(m.monitor("/jsz")).send().await.ok()?;
                    serde_json::from_slice(&resp.bytes().await.ok()?).ok()
                }
                .await;
                let healthy = async {
                    let resp = http.get(m.monitor("/healthz")).send().await.ok()?;
                    resp.status().is_success().then_some(())
                }
                .await
                .is_some();
                let leader = jsz
                    .as_ref()
                    .and_then(|v| v["meta_cluster"]["leader"].as_str())
                    .filter(|l| !l.is_empty() && healthy)
                    .map(str::to_owned);
                leaders.push(leader);
            }
            if let Some(Some(first)) = leaders.first() {
                if Some(first.as_str()) != not && leaders.iter().all(|l| l.as_ref() == Some(first))
                {
                    return first.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no JetStream meta leader agreed on within {secs} s: {leaders:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The member that process `pid` has a TCP connection to, read from
    /// `/proc` (its sockets' inodes and their remote ports).
    fn connected_member(&self, pid: u32) -> Option<usize> {
        let mut inodes = std::collections::HashSet::new();
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
            let target = std::fs::read_link(fd.ok()?.path()).ok();
            if let Some(inode) = target
                .as_ref()
                .and_then(|t| t.to_str())
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
        let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
        for row in table.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) = (cols.get(2), cols.get(3), cols.get(9))
            else {
                continue;
            };
            // 01 = ESTABLISHED.
            if *state != "01" || !inodes.contains(*inode) {
                continue;
            }
            let port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let Some(i) = self
                .members
                .iter()
                .position(|m| Some(m.ports.client) == port)
            {
                return Some(i);
            }
        }
        None
    }
}

/// A `pipeline-runner` process (worker or web node), killed on drop; its
/// first stdout line is what it printed when ready.
#[derive(Debug)]
struct Node {
    child: Child,
    first_line: String,
    data: TempDir,
}

impl Node {
    fn start(args: &[&str], data: TempDir) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"))
            .args(args)
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
        Node {
            child,
            first_line,
            data,
        }
    }

    fn worker(urls: &str, script: &str) -> Node {
        let data = TempDir::new("nats-cluster-worker");
        let dir = data.path().display().to_string();
        let node = Node::start(
            &[
                "worker",
                "--nats",
                urls,
                "--replicas",
                "3",
                "--worker-ttl",
                WORKER_TTL,
                "--data-dir",
                &dir,
                "--",
                "sh",
                "-c",
                script,
            ],
            data,
        );
        assert!(
            node.first_line.starts_with("worker "),
            "{}",
            node.first_line
        );
        node
    }

    fn web(urls: &str) -> (Node, String) {
        let data = TempDir::new("nats-cluster-web");
        let dir = data.path().join("cache").display().to_string();
        let node = Node::start(
            &[
                "serve",
                "--nats",
                urls,
                "--replicas",
                "3",
                "--worker-ttl",
                WORKER_TTL,
                "--bind",
                "127.0.0.1:0",
                "--data-dir",
                &dir,
            ],
            data,
        );
        let url = node
            .first_line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", node.first_line))
            .to_owned();
        (node, url)
    }

    /// The job's lines as this worker stored them: `(seq, data)`.
    fn stored_lines(&self, job: &str) -> Vec<(u64, String)> {
        let path = self.data.path().join("jobs").join(job).join("events.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["seq"].as_u64().unwrap(),
                    v["data"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every message of the job's subject in the events stream, as stored
/// (duplicates too), read with direct gets: any replica answers, and no
/// consumer has to be created (creating one waits for the JetStream meta
/// leader, which a failover may have taken away).
async fn stored_in_stream(bus: &Bus, id: &str) -> Vec<(u64, String)> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let js = async_nats::jetstream::new(bus.client().clone());
    let stream = js.get_stream_no_info(EVENTS_STREAM).await.unwrap();
    let subject = Bus::events_subject(id).unwrap();
    let mut lines = Vec::new();
    let mut next = 1;
    loop {
        let mut tries = 0;
        let message = loop {
            tries += 1;
            match stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(m) => break Some(m),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => break None,
                Err(e) => {
                    assert!(tries < 40, "cannot read the events stream: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let Some(m) = message else { return lines };
        let seq = m
            .headers
            .get(SEQ_HEADER)
            .and_then(|v| v.as_str().parse().ok())
            .expect("every line has its number");
        lines.push((seq, String::from_utf8_lossy(&m.payload).into_owned()));
        next = m.sequence + 1;
    }
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap()
}

/// `got` is exactly the worker's log: ids 1..N without gap or repeat, the
/// same lines.
fn assert_same(what: &str, got: &[(u64, String)], stored: &[(u64, String)]) {
    assert!(!stored.is_empty());
    assert_eq!(got.len(), stored.len(), "{what}: number of lines");
    for (i, ((a_seq, a), (b_seq, b))) in got.iter().zip(stored).enumerate() {
        assert_eq!(*a_seq, i as u64 + 1, "{what}");
        assert_eq!(a_seq, b_seq, "{what}");
        assert_eq!(parse(a), parse(b), "{what}: line {a_seq}");
    }
}

#[tokio::test]
async fn a_job_survives_losing_the_nats_server_its_worker_is_connected_to() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    let leader = cluster.wait_for_leader(30, None).await;
    let elected = started.elapsed();
    let urls = cluster.urls();

    let gate = TempDir::new("nats-cluster-gate");
    let release = gate.path().join("release");
    // 100 lines, then (once released) 150 more at about 100 a second, so
    // that lines are printed while the cluster recovers, then the end. (A
    // test that fails before the release removes the gate's directory,
    // which lets the child run on and end.)
    let script = format!(
        r#"echo "{{\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"print\",\"job_id\":\"$JOB_ID\"}}"
i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo "line $i"; done
while [ ! -f '{release}' ] && [ -d '{gate}' ]; do sleep 0.02; done
while [ $i -lt 250 ]; do i=$((i+1)); echo "line $i"; sleep 0.01; done
echo "{{\"event\":\"layer_complete\",\"layer\":1,\"layer_name\":\"print\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":1}}"
echo "{{\"event\":\"pipeline_complete\",\"job_id\":\"$JOB_ID\",\"status\":\"success\",\"duration_ms\":2}}""#,
        release = release.display(),
        gate = gate.path().display()
    );
    let worker = Node::worker(&urls, &script);
    let (web, web_url) = Node::web(&urls);
    let mut config = BusConfig::new(&urls);
    config.replicas = 3;
    config.worker_ttl = Duration::from_secs(WORKER_TTL.parse().unwrap());
    let bus = Bus::connect(config).await.unwrap();

    let (status, created) = runner_common::send_json(
        "POST",
        &format!("{web_url}/api/jobs"),
        r#"{"job_id":"failover"}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["job_id"].as_str().unwrap().to_owned();
    // A client following the job live, through the failure.
    wait_for(20, "the web node to know the job", || async {
        runner_common::get_json(&format!("{web_url}/api/jobs/{id}"))
            .await
            .ok()
    })
    .await;
    let live = {
        let (url, id) = (web_url.clone(), id.clone());
        tokio::spawn(async move {
            let mut lines = Vec::new();
            let end = runner_common::stream_each(&url, &id, None, |seq, data| {
                lines.push((seq, data.to_owned()))
            })
            .await;
            (lines, end)
        })
    };
    wait_for(20, "the first 100 lines in the stream", || async {
        (bus.last_seq(&id).await.ok()? >= 101).then_some(())
    })
    .await;

    // The server the worker is connected to (or the first, if /proc cannot tell).
    let victim = cluster.connected_member(worker.child.id());
    let which = victim.unwrap_or(0);
    let events_leader = async_nats::jetstream::new(bus.client().clone())
        .get_stream(EVENTS_STREAM)
        .await
        .ok()
        .and_then(|s| s.cached_info().cluster.as_ref()?.leader.clone());
    let victim_name = cluster.members[which].name.clone();
    let before = bus.last_seq(&id).await.unwrap();
    let killed_at = Instant::now();
    let web_on = cluster
        .connected_member(web.child.id())
        .map_or("unknown", |i| cluster.members[i].name.as_str())
        .to_owned();
    eprintln!(
        "killing {victim_name} ({}) at line {before}; meta leader {leader}, events stream leader {}, \
         the web node on {web_on}",
        if victim.is_some() { "the worker's server" } else { "the worker's connection was not found" },
        events_leader.as_deref().unwrap_or("unknown")
    );
    cluster.members[which].kill();
    std::fs::write(&release, "").unwrap();

    // A client that reconnects while the cluster recovers, after line 50.
    let resumed_client = {
        let (url, id) = (web_url.clone(), id.clone());
        tokio::spawn(async move {
            let mut lines = Vec::new();
            let end = runner_common::stream_each(&url, &id, Some(50), |seq, data| {
                lines.push((seq, data.to_owned()))
            })
            .await;
            (lines, end)
        })
    };
    // The survivors agree on a meta leader (a new one if the victim led);
    // the worker reconnects and carries on.
    let new_leader = cluster
        .wait_for_leader(30, (leader == victim_name).then_some(leader.as_str()))
        .await;
    let reelected = killed_at.elapsed();
    wait_for(30, "a line published after the kill", || async {
        (bus.last_seq(&id).await.ok()? > before).then_some(())
    })
    .await;
    let resumed = killed_at.elapsed();
    let done = wait_for(45, "the job to finish", || async {
        bus.job_state(&id)
            .await
            .ok()
            .flatten()
            .map(|(s, _)| s)
            .filter(|s| s.phase == JobPhase::Finished)
    })
    .await;
    let summary = done.summary.unwrap();
    assert_eq!(summary["status"], "success", "{summary}");
    let stored = worker.stored_lines(&id);
    assert_eq!(stored.len(), 253, "layer_start, 250 lines, two ends");
    assert_eq!(summary["lines"], 253);
    for (i, (_, data)) in stored[1..251].iter().enumerate() {
        let line = parse(data);
        assert_eq!(line["text"], format!("line {}", i + 1), "{line}");
    }

    // The broker holds exactly the worker's lines...
    let from_bus = stored_in_stream(&bus, &id).await;
    assert_same("events stream", &from_bus, &stored);

    // ... and so does the web node: live through the failure, and replayed.
    let (lines, end) = match tokio::time::timeout(Duration::from_secs(30), live).await {
        Ok(done) => done.unwrap(),
        Err(_) => {
            let seen = runner_common::get_json(&format!("{web_url}/api/jobs/{id}")).await;
            panic!(
                "the web node's live stream did not end within 30 s of the job's end; \
                 the web node says: {seen:?}"
            )
        }
    };
    let end = end.expect("the live stream ends with `end`");
    assert_eq!(end.last_id, 253);
    assert_same("live SSE", &lines, &stored);
    let mut replayed = Vec::new();
    runner_common::stream_each(&web_url, &id, None, |seq, data| {
        replayed.push((seq, data.to_owned()))
    })
    .await
    .unwrap();
    assert_same("replayed SSE", &replayed, &stored);
    let (lines, end) = tokio::time::timeout(Duration::from_secs(30), resumed_client)
        .await
        .expect("the resumed stream ends")
        .unwrap();
    assert_eq!(
        end.expect("the resumed stream ends with `end`").last_id,
        253
    );
    assert_same(
        "resumed SSE",
        &[&stored[..50], &lines[..]].concat(),
        &stored,
    );

    println!(
        "cluster: meta leader {leader} after {:.2} s; killed {victim_name} ({}; events stream \
         leader was {}); meta leader {new_leader} ({}) {:.2} s after the kill, first line \
         stored after it {:.2} s after the kill; job finished {:.2} s after the start",
        elected.as_secs_f64(),
        if victim.is_some() {
            "the worker's server"
        } else {
            "any: the worker's connection was not found"
        },
        events_leader.as_deref().unwrap_or("unknown"),
        if leader == victim_name {
            "elected"
        } else {
            "unchanged"
        },
        reelected.as_secs_f64(),
        resumed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
}
