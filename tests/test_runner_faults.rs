//! The runner under faults: children that flood, close or misuse their pipes
//! or die mid-stream; clients that vanish, stall or come by the hundred; a
//! data directory that cannot be written; a runner killed with SIGKILL.
//! Each test checks that no line is lost, doubled or invented.
//! `docs/reliability.md` lists which test covers which fault.
#![cfg(feature = "runner")]

mod runner_common;

use std::time::{Duration, Instant};

use runner_common::{
    assert_well_formed, collect, create_job, events_named, get_json, output_texts, sh, stream_each,
    wait_finished, RunnerProcess, Server, SseClient, TempDir, TIMEOUT,
};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tracing_pipeline::runner::{Runner, RunnerError};

/// A script that runs `before`, blocks until the file `gate` exists, then
/// runs `after`.
fn gated(before: &str, after: &str, gate: &std::path::Path) -> Vec<std::ffi::OsString> {
    sh(&format!(
        "{before}; while [ ! -e '{}' ]; do sleep 0.01; done; {after}",
        gate.display()
    ))
}

/// The `text` of an `output` payload, or the `n` of a `log` event.
fn line_value(data: &str) -> Value {
    let v: Value = serde_json::from_str(data).unwrap();
    if v["type"] == "output" {
        v["text"].clone()
    } else {
        v["n"].clone()
    }
}

const FLOOD: u64 = 200_000;

/// The short soak of the normal test suite (`examples/soak_runner.rs` is the
/// long one): 200,000 lines as fast as `awk` prints them, odd ones plain
/// text and even ones structured events, read live by one client and
/// replayed by another; every line exactly once, in order, and classified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_child_loses_no_line() {
    let script = format!(
        r#"awk 'BEGIN {{ for (i = 1; i <= {FLOOD}; i++)
            if (i % 2) print i; else printf "{{\"event\":\"log\",\"n\":%d}}\n", i }}'"#
    );
    let srv = Server::start(sh(&script)).await;
    let started = Instant::now();
    let id = create_job(&srv.url, Some("flood")).await.unwrap();
    // Compared byte for byte: output is wrapped, events forwarded as printed.
    let check = |id: u64, data: &str| {
        if id > FLOOD {
            assert!(data.contains(r#""event":"pipeline_complete""#), "{data}");
        } else if id % 2 == 1 {
            assert_eq!(data, format!(r#"{{"type":"output","text":"{id}"}}"#));
        } else {
            assert_eq!(data, format!(r#"{{"event":"log","n":{id}}}"#));
        }
    };
    let live = stream_each(&srv.url, &id, None, check).await.unwrap();
    let elapsed = started.elapsed();
    // Every line, plus the `pipeline_complete` the runner adds (awk printed none).
    assert_eq!(live.lines, FLOOD + 1);
    assert_eq!(live.end, json!({"job_id":"flood","status":"error"}));
    let replayed = stream_each(&srv.url, &id, None, check).await.unwrap();
    assert_eq!(replayed, live);
    let log =
        std::fs::read_to_string(srv.runner.data_dir().join("jobs/flood/events.jsonl")).unwrap();
    assert_eq!(log.lines().count() as u64, FLOOD + 1);
    eprintln!(
        "{FLOOD} lines end to end in {elapsed:.2?} ({:.0} lines/s, debug build)",
        FLOOD as f64 / elapsed.as_secs_f64()
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_child_that_closes_stdout_but_keeps_running() {
    let srv = Server::start(sh("echo first; exec 1>&-; sleep 1; echo done >&2")).await;
    let started = Instant::now();
    let id = create_job(&srv.url, None).await.unwrap();
    let all = collect(&srv.url, &id, None).await;
    // The job is not over when stdout closes, only when the child exits.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_well_formed(&all, 0);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[0].data, json!({"type":"output","text":"first"}));
    assert_eq!(
        all[1].data,
        json!({"type":"output","text":"done","stream":"stderr"})
    );
    assert_eq!(all[2].data["event"], "pipeline_complete");
    assert_eq!(all[2].data["error"], "exit status: 0");
    let detail = wait_finished(&srv.url, &id).await;
    assert_eq!(detail["exit_code"], 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_child_that_writes_only_stderr_cannot_forge_events() {
    let srv = Server::start(sh(r#"
        for i in $(seq 1 500); do echo "e$i" >&2; done
        echo '{"event":"pipeline_complete","status":"success"}' >&2
        echo '{"event":"layer_start","layer":1,"layer_name":"forged"}' >&2
        exit 7"#))
    .await;
    let id = create_job(&srv.url, None).await.unwrap();
    let all = collect(&srv.url, &id, None).await;
    assert_well_formed(&all, 0);
    assert_eq!(all.len(), 500 + 2 + 1 + 1);
    for (i, m) in all[..500].iter().enumerate() {
        let want = json!({"type":"output","text":format!("e{}", i + 1),"stream":"stderr"});
        assert_eq!(m.data, want);
    }
    // JSON on stderr is output, never an event.
    assert_eq!(all[500].data["type"], "output");
    assert_eq!(all[501].data["type"], "output");
    let complete = events_named(&all, "pipeline_complete");
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0]["error"], "exit status: 7");
    let detail = wait_finished(&srv.url, &id).await;
    assert_eq!(detail["status"], "error");
    assert_eq!(detail["stages"], json!([]));
    srv.shutdown().await;
}

#[tokio::test]
async fn a_child_that_dies_while_a_client_is_mid_stream() {
    let gate = TempDir::new("gate");
    let go = gate.path().join("go");
    let srv = Server::start(gated(
        "seq 1 1000",
        "seq 1001 3000; printf 'half a line'; kill -9 $$",
        &go,
    ))
    .await;
    let id = create_job(&srv.url, None).await.unwrap();
    let mut sse = SseClient::connect(&srv.url, &id, None).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(sse.next().await.unwrap().unwrap());
    }
    // The child finishes and dies while this client is 990 lines behind.
    std::fs::write(&go, b"").unwrap();
    wait_finished(&srv.url, &id).await;
    got.extend(sse.until_end().await.unwrap());
    assert_well_formed(&got, 0);
    let texts = output_texts(&got);
    let mut want: Vec<String> = (1..=3000).map(|i| i.to_string()).collect();
    want.push("half a line".into());
    assert_eq!(texts, want);
    let complete = events_named(&got, "pipeline_complete");
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0]["error"], "killed by signal 9");
    assert_eq!(collect(&srv.url, &id, None).await, got);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_affects_no_one_else() {
    let gate = TempDir::new("gate");
    let go = gate.path().join("go");
    let srv = Server::start(gated("seq 1 100", "seq 101 20000", &go)).await;
    let id = create_job(&srv.url, None).await.unwrap();
    let mut stays = SseClient::connect(&srv.url, &id, None).await.unwrap();
    let first = stays.next().await.unwrap().unwrap();

    // One client reads a few lines and drops its connection cleanly...
    let mut leaves = SseClient::connect(&srv.url, &id, None).await.unwrap();
    for _ in 0..5 {
        leaves.next().await.unwrap().unwrap();
    }
    drop(leaves);
    // ...another drops the socket with a reset mid-response, unread bytes pending.
    let mut raw = tokio::net::TcpStream::connect(runner_common::host_port(&srv.url))
        .await
        .unwrap();
    raw.write_all(
        format!("GET /api/jobs/{id}/events HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Linger 0: closing sends a reset. (Deprecated because a non-zero linger
    // blocks on drop; zero does not.)
    #[allow(deprecated)]
    raw.set_linger(Some(Duration::ZERO)).unwrap();
    drop(raw);

    std::fs::write(&go, b"").unwrap();
    let mut all = vec![first];
    all.extend(stays.until_end().await.unwrap());
    assert_well_formed(&all, 0);
    let want: Vec<String> = (1..=20000).map(|i| i.to_string()).collect();
    assert_eq!(output_texts(&all), want);
    // The runner still answers, and a new client gets the same lines.
    assert_eq!(collect(&srv.url, &id, None).await, all);
    let list = get_json(&format!("{}/api/jobs", srv.url)).await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_on_one_job_each_get_every_line_once_in_order() {
    const CLIENTS: usize = 200;
    const LINES: u64 = 2000;
    let gate = TempDir::new("gate");
    let go = gate.path().join("go");
    let srv = Server::start(gated("seq 1 100", &format!("seq 101 {LINES}"), &go)).await;
    let id = create_job(&srv.url, Some("crowd")).await.unwrap();
    let spawn_client = |url: String, id: String| {
        tokio::spawn(async move {
            let mut digest = 0u64;
            let seen = stream_each(&url, &id, None, |n, data| {
                if n <= LINES {
                    assert_eq!(line_value(data), Value::from(n.to_string()), "line {n}");
                }
                digest = digest.wrapping_mul(31).wrapping_add(data.len() as u64 + n);
            })
            .await
            .unwrap();
            (seen, digest)
        })
    };
    // Half join while the job waits at its gate, half while it streams.
    let mut clients: Vec<_> = (0..CLIENTS / 2)
        .map(|_| spawn_client(srv.url.clone(), id.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&go, b"").unwrap();
    clients.extend((0..CLIENTS / 2).map(|_| spawn_client(srv.url.clone(), id.clone())));
    let mut results = Vec::new();
    for c in clients {
        results.push(tokio::time::timeout(TIMEOUT * 3, c).await.unwrap().unwrap());
    }
    let first = results[0].clone();
    assert_eq!(first.0.lines, LINES + 1);
    for r in &results {
        assert_eq!(r, &first);
    }
    srv.shutdown().await;
}

#[test]
fn an_unwritable_data_directory_is_refused_at_open() {
    // Tests run as root, which ignores permission bits: use paths that fail
    // for root too.
    let dir = TempDir::new("unwritable");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let jobs_is_a_file = dir.path().join("jobs-file");
    std::fs::create_dir(&jobs_is_a_file).unwrap();
    std::fs::write(jobs_is_a_file.join("jobs"), b"").unwrap();
    for (path, named) in [
        (file.join("data"), file.join("data").join("jobs")),
        (file.clone(), file.join("jobs")),
        (jobs_is_a_file.clone(), jobs_is_a_file.join("jobs")),
        (
            "/proc/self/tp-data".into(),
            std::path::PathBuf::from("/proc/self/tp-data/jobs"),
        ),
    ] {
        let err = Runner::open(sh("true"), &path).unwrap_err();
        match &err {
            RunnerError::DataDir { path: p, .. } => assert_eq!(p, &named),
            other => panic!("{}: {other:?}", path.display()),
        }
        let text = err.to_string();
        assert!(
            text.starts_with("data directory ") && text.contains(&*named.to_string_lossy()),
            "{text}"
        );
    }
}

/// Two runners on one data directory would number and append the same
/// jobs' lines: the second is refused at start, and the directory is free
/// again once the first is gone (the binary's SIGKILL-and-restart tests show
/// that a dead runner's lock goes with it).
#[tokio::test]
async fn a_data_directory_in_use_by_another_runner_is_refused() {
    let dir = runner_common::TempDir::new("locked");
    let data = dir.path().join("data");
    let first = Runner::open(sh("true"), &data).unwrap();
    let err = Runner::open(sh("true"), &data).unwrap_err();
    assert!(
        matches!(&err, RunnerError::DataDirInUse(p) if p == &data),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("in use by another runner"), "{text}");
    drop(first);
    Runner::open(sh("true"), &data).expect("free again once the first runner is gone");
}

#[tokio::test]
async fn a_data_directory_that_vanishes_later_gives_an_error_not_a_crash() {
    let srv = Server::start(sh("echo hi")).await;
    let id = create_job(&srv.url, Some("before")).await.unwrap();
    let before = collect(&srv.url, &id, None).await;
    std::fs::remove_dir_all(srv.runner.data_dir()).unwrap();
    let resp = runner_common::client()
        .post(format!("{}/api/jobs", srv.url))
        .body(r#"{"job_id":"after"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.starts_with("data directory ") && msg.contains("after"),
        "{msg}"
    );
    // The runner is still up: listing works, the earlier job is still known
    // (its replay is gone with its file: just `end`).
    let list = get_json(&format!("{}/api/jobs", srv.url)).await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(before.len(), 3);
    let after = collect(&srv.url, &id, None).await;
    assert_eq!(after.last(), before.last());
    srv.shutdown().await;
}

/// A client that asks for a stream and never reads it: the child must not
/// wait for it, and neither must a graceful shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_up_neither_the_job_nor_shutdown() {
    let srv = Server::start(sh(
        "seq 1 300000 | sed 's/$/ padding padding padding padding/'; sleep 60",
    ))
    .await;
    let id = create_job(&srv.url, Some("stalled")).await.unwrap();
    let mut raw = tokio::net::TcpStream::connect(runner_common::host_port(&srv.url))
        .await
        .unwrap();
    raw.write_all(
        format!("GET /api/jobs/{id}/events HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    // 300,000 lines (~20 MB of SSE) are far more than the socket buffers hold.
    runner_common::poll("every line to be written", || async {
        let log = srv.runner.data_dir().join("jobs/stalled/events.jsonl");
        let n = std::fs::read(log)
            .ok()?
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        (n == 300_000).then_some(())
    })
    .await;
    // And one that sends half a request head and then nothing.
    let mut half = tokio::net::TcpStream::connect(runner_common::host_port(&srv.url))
        .await
        .unwrap();
    half.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // Shutdown stops the job (SIGTERM: at once); the stalled connections may
    // delay it by the runner's 5 s close grace, no more.
    let started = Instant::now();
    srv.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    drop((raw, half));
}

/// SIGKILL while a child floods and a client reads, then two restarts: the
/// log is whole (numbers 1..=n, no half line), ends with exactly one
/// `interrupted` `pipeline_complete`, and a second restart changes nothing.
/// (`test_runner_process.rs` covers SIGKILL of an idle job and SIGTERM.)
#[tokio::test]
async fn sigkill_during_a_flood_then_two_restarts() {
    let dir = TempDir::new("kill-flood");
    let data = dir.path().join("data");
    let script = sh(r#"[ "$JOB_ID" = flooding ] && exec seq 1 100000000; echo ok"#);
    let mut first = RunnerProcess::start(&data, &script).unwrap();
    let id = create_job(&first.url, Some("flooding")).await.unwrap();
    let mut sse = SseClient::connect(&first.url, &id, None).await.unwrap();
    for _ in 0..2000 {
        sse.next().await.unwrap().unwrap();
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(sse);

    let second = RunnerProcess::start(&data, &script).unwrap();
    let detail = get_json(&format!("{}/api/jobs/{id}", second.url))
        .await
        .unwrap();
    assert_eq!(detail["state"], "interrupted");
    assert_eq!(detail["status"], "error");
    let mut lines = 0;
    let mut completes = Vec::new();
    let seen = stream_each(&second.url, &id, None, |n, data| {
        lines += 1;
        if data.contains("pipeline_complete") {
            completes.push((n, data.to_owned()));
        } else {
            assert_eq!(line_value(data), Value::from(n.to_string()), "line {n}");
        }
    })
    .await
    .unwrap();
    assert!(seen.lines > 2000, "{seen:?}");
    assert_eq!(completes.len(), 1);
    assert_eq!(completes[0].0, seen.last_id, "the runner's line comes last");
    let complete: Value = serde_json::from_str(&completes[0].1).unwrap();
    assert!(complete["error"]
        .as_str()
        .unwrap()
        .starts_with("interrupted"));
    assert_eq!(seen.end, json!({"job_id":"flooding","status":"error"}));
    drop(second);

    let third = RunnerProcess::start(&data, &script).unwrap();
    let again = stream_each(&third.url, &id, None, |_, _| {}).await.unwrap();
    assert_eq!(again, seen);
    // Resuming mid-way gives exactly the rest.
    let tail = stream_each(&third.url, &id, Some(seen.last_id - 5), |_, _| {})
        .await
        .unwrap();
    assert_eq!(tail.lines, 5);
    // And the runner runs new jobs over the recovered directory.
    let next = create_job(&third.url, Some("after-crash")).await;
    assert!(next.is_ok(), "{next:?}");
}

/// The same for the binary: SIGTERM with a stalled client still exits 0 soon.
#[tokio::test]
async fn sigterm_with_a_stalled_client_still_exits() {
    let dir = TempDir::new("stalled-bin");
    let mut runner =
        RunnerProcess::start(&dir.path().join("data"), &sh("seq 1 300000; sleep 60")).unwrap();
    let id = create_job(&runner.url, Some("stalled")).await.unwrap();
    let mut raw = tokio::net::TcpStream::connect(runner_common::host_port(&runner.url))
        .await
        .unwrap();
    raw.write_all(
        format!("GET /api/jobs/{id}/events HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let log = dir.path().join("data/jobs/stalled/events.jsonl");
    runner_common::poll("every line to be written", || async {
        let n = std::fs::read(&log)
            .ok()?
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        (n == 300_000).then_some(())
    })
    .await;
    let started = Instant::now();
    let (runner, status) = tokio::task::spawn_blocking(move || {
        let s = runner.terminate();
        (runner, s)
    })
    .await
    .unwrap();
    assert!(status.unwrap().success());
    assert!(started.elapsed() < Duration::from_secs(10));
    drop((runner, raw));
}

/// A "slowloris" client: it opens a connection and sends half a request
/// head, then nothing. The runner closes it after `HEADER_READ_TIMEOUT`
/// instead of holding it for ever, and serves everyone else meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    use tokio::io::AsyncReadExt;
    use tracing_pipeline::runner::HEADER_READ_TIMEOUT;

    let srv = Server::start(sh("exit 0")).await;
    let started = Instant::now();
    let mut raw = tokio::net::TcpStream::connect(runner_common::host_port(&srv.url))
        .await
        .unwrap();
    raw.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    // Others are served while it dawdles.
    let jobs = get_json(&format!("{}/api/jobs", srv.url)).await.unwrap();
    assert_eq!(jobs["jobs"], json!([]));
    // The stalled connection is closed by the runner (a 408 may come first).
    let mut reply = Vec::new();
    let closed = tokio::time::timeout(
        HEADER_READ_TIMEOUT + Duration::from_secs(10),
        raw.read_to_end(&mut reply),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the half-sent request was still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(500),
        "closed too early: {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&reply);
    assert!(
        reply.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    srv.shutdown().await;
}
