//! `pipeline-view URL` against a real `pipeline-runner` on 127.0.0.1:0:
//! it follows a live job's event stream to its end (page and API URLs),
//! and when the connection breaks it reconnects with `Last-Event-ID`, so
//! every line of the job is shown exactly once. The break is made by a
//! small TCP proxy between the two that cuts the first connection short.
//! A runner that dies mid-job is retried for `--retry` seconds, then given up.
#![cfg(all(feature = "view", feature = "runner"))]

mod runner_common;

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use runner_common::{collect, create_job, reference, wait_finished, RunnerProcess, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing_pipeline::view::model::{classify_runner_data, Model};
use tracing_pipeline::view::render::{plain_line, summary, Palette};

const VIEW: &str = env!("CARGO_BIN_EXE_pipeline-view");

async fn run_view(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let child = Command::new(VIEW)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("NO_COLOR")
            .spawn()
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// What the view must print for the job: each line of its whole stream,
/// read separately, through the same rendering, then the summary.
async fn expected(url: &str, id: &str) -> Vec<String> {
    let msgs = collect(url, id, None).await;
    let (end, lines) = msgs.split_last().unwrap();
    assert_eq!(end.event.as_deref(), Some("end"));
    let mut model = Model::new();
    let mut out = Vec::new();
    for m in lines {
        let item = classify_runner_data(&m.data.to_string());
        model.apply(&item, std::time::Duration::ZERO);
        out.extend(plain_line(&item, Palette::new(false)));
    }
    out.push(String::new());
    out.extend(summary(&model, Palette::new(false), usize::MAX));
    out
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn flags() -> Vec<std::ffi::OsString> {
    reference(&[
        "--speed",
        "0.3",
        "--fail",
        "people_mapper",
        "--skip",
        "generator",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_live_job_from_its_page_url_to_its_end() {
    let dir = TempDir::new("view-url");
    let runner = RunnerProcess::start(dir.path(), &flags()).unwrap();
    let id = create_job(&runner.url, Some("view-live")).await.unwrap();
    let out = run_view(vec![format!("{}/#/jobs/{id}", runner.url)]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = stdout_lines(&out);
    assert_eq!(got, expected(&runner.url, &id).await);
    // The real thing happened: a failure, a skip, a partial end.
    assert!(
        got.iter()
            .any(|l| l.starts_with("[view-live] 5 people_mapper: error ")
                && l.ends_with(": people_mapper failed: injected failure")),
        "{got:#?}"
    );
    assert!(got
        .iter()
        .any(|l| l.starts_with("[view-live] 6 generator: skipped")));
    assert!(
        got.contains(&"job view-live: partial".to_owned()),
        "{got:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_urls_work_and_an_unknown_job_is_a_clear_error() {
    let dir = TempDir::new("view-api");
    let runner = RunnerProcess::start(
        dir.path(),
        &reference(&["--speed", "0", "--abort", "opportunity_mapper"]),
    )
    .unwrap();
    let id = create_job(&runner.url, Some("view-api")).await.unwrap();
    wait_finished(&runner.url, &id).await;
    let want = expected(&runner.url, &id).await;
    for url in [
        format!("{}/api/jobs/{id}", runner.url),
        format!("{}/api/jobs/{id}/events", runner.url),
    ] {
        let out = run_view(vec![url]).await;
        assert_eq!(out.status.code(), Some(1), "an aborted job is an error");
        assert_eq!(stdout_lines(&out), want);
    }
    let out = run_view(vec![format!("{}/#/jobs/nope", runner.url)]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 404"), "{err}");
}

/// A proxy to `upstream` that cuts its first connection after `cut` bytes
/// of the response; it records each request's head.
async fn cutting_proxy(upstream: String, cut: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut client, _)) = listener.accept().await {
            n += 1;
            let first = n == 1;
            let upstream = upstream.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let mut server = TcpStream::connect(&upstream).await.unwrap();
                server.write_all(&head).await.unwrap();
                if first {
                    let mut sent = 0;
                    while sent < cut {
                        let k = match server.read(&mut buf[..(cut - sent).min(4096)]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => k,
                        };
                        if client.write_all(&buf[..k]).await.is_err() {
                            break;
                        }
                        sent += k;
                    }
                    // Dropping both ends breaks the stream mid-way.
                } else {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (url, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_resumes_with_last_event_id_and_loses_nothing() {
    let dir = TempDir::new("view-reconnect");
    let runner = RunnerProcess::start(dir.path(), &flags()).unwrap();
    let upstream = runner.url.trim_start_matches("http://").to_owned();
    // Enough for the response head and a few events, not the whole job.
    let (proxy, heads) = cutting_proxy(upstream, 1500).await;
    let id = create_job(&runner.url, Some("view-resume")).await.unwrap();
    let out = run_view(vec![format!("{proxy}/#/jobs/{id}")]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let heads = heads.lock().unwrap().clone();
    assert!(heads.len() >= 2, "the view did not reconnect: {heads:#?}");
    assert!(
        !heads[0].to_ascii_lowercase().contains("last-event-id"),
        "{}",
        heads[0]
    );
    let resumed_after: u64 = heads[1]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("last-event-id")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Last-Event-ID on the second request: {}", heads[1]));
    assert!(resumed_after >= 1, "{resumed_after}");

    let got = stdout_lines(&out);
    let (notices, lines): (Vec<String>, Vec<String>) = got
        .into_iter()
        .partition(|l| l.starts_with("pipeline-view: "));
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert!(
        notices[0].ends_with(&format!("; reconnecting after line {resumed_after}")),
        "{}",
        notices[0]
    );
    // Every line of the job exactly once, in order.
    assert_eq!(lines, expected(&runner.url, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_goes_away_is_retried_then_given_up() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("view-gone");
    let mut runner = RunnerProcess::start(dir.path(), &reference(&["--speed", "20"])).unwrap();
    let id = create_job(&runner.url, Some("view-gone")).await.unwrap();
    let url = format!("{}/#/jobs/{id}", runner.url);
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(VIEW)
            .args([url.as_str(), "--retry", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        // Once the view shows the first stage running, the runner dies.
        loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "view ended early: {seen:#?}"
            );
            seen.push(line.trim_end().to_owned());
            if line.contains("pain_point_miner: running") {
                break;
            }
        }
        runner.child.kill().unwrap();
        runner.child.wait().unwrap();
        for line in stdout.lines() {
            seen.push(line.unwrap());
        }
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        (status, seen, err)
    })
    .await
    .unwrap();
    let (status, seen, err) = out;
    assert_eq!(status.code(), Some(2), "{seen:#?}\n{err}");
    assert!(err.contains("gave up after 1s of retrying"), "{err}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("pipeline-view: ") && l.contains("reconnecting")),
        "{seen:#?}"
    );
    assert!(
        seen.contains(&"job view-gone: incomplete".to_owned()),
        "{seen:#?}"
    );
    assert!(
        seen.contains(&"  running  pain_point_miner".to_owned()),
        "{seen:#?}"
    );
}
