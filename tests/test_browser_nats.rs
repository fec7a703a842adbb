//! The page served by a web node, in a real browser: jobs run by workers
//! through a real nats-server, shown by two web nodes. A job started from
//! one node's page, and a job posted to the other node's API, are each
//! watched live on a page and end with every stage as the workers ran it,
//! the same on both nodes, every line in the terminal.
//!
//! Needs Debian's `chromium`, `chromium-driver` and `nats-server` (see
//! `test_browser.rs`; `bash scripts/test.sh` installs them). Run just these
//! with:
//!
//! ```text
//! PIPELINE_REQUIRE_BROWSER=1 cargo test --features nats --test test_browser_nats
//! ```
//!
//! A second test puts the two web nodes behind a real HAProxy (Debian's
//! `haproxy`), opens the page through it and kills the web node it is
//! served by in the middle of a job: the page carries on through the other
//! node and ends with every line once.
//!
//! It saves `target/browser-screenshots/page-web-node.png` (the README's
//! `docs/page-web-node.png` is a copy).

#![cfg(feature = "nats")]

mod browser_common;
mod nats_common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use browser_common::{browser_or_skip, save_screenshot, wait_js, Browser, Runner};
use fantoccini::{Client, Locator};
use nats_common::{NatsServer, WorkerProcess};
use serde_json::Value;

/// How long a job may take to finish.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a page may take to show something once asked.
const UI_TIMEOUT: Duration = Duration::from_secs(15);

/// The reference pipeline, failing one stage and skipping another, slow
/// enough that the page sees stages run.
fn pipeline() -> String {
    format!(
        "exec '{}' reference --speed 0.3 --fail people_mapper --skip generator",
        env!("CARGO_BIN_EXE_pipeline-runner")
    )
}

/// What the page shows of a job: each stage button's name and status, the
/// job's outcome, the connection state, the terminal's line count.
const READ_JOB: &str = r##"
    const stages = [...document.querySelectorAll('#stages button[data-stage]')]
        .map((b) => [b.dataset.stage, b.dataset.status || ""]);
    return {
        stages,
        outcome: document.getElementById("job-outcome").dataset.status,
        connection: document.getElementById("connection").dataset.state,
        total: Number(document.getElementById("terminal").dataset.total || 0),
        runner: (document.getElementById("runner-info") || {}).textContent || "",
    };
"##;

/// Waits until the page's job view says the job has finished, and returns
/// what it shows.
async fn finished_view(client: &Client) -> Result<Value> {
    client
        .wait()
        .at_most(JOB_TIMEOUT)
        .for_element(Locator::Css(r#"#connection[data-state="finished"]"#))
        .await
        .context("the page never showed the job as finished")?;
    Ok(client.execute(READ_JOB, vec![]).await?)
}

/// `[[name, status], ...]` of the stages a node's API gives for a job, in
/// the order it gives them.
fn api_stages(detail: &Value) -> Vec<(String, String)> {
    detail["stages"]
        .as_array()
        .map(|stages| {
            stages
                .iter()
                .map(|s| {
                    (
                        s["layer_name"].as_str().unwrap_or_default().to_owned(),
                        s["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn page_stages(view: &Value) -> Vec<(String, String)> {
    view["stages"]
        .as_array()
        .map(|stages| {
            stages
                .iter()
                .map(|s| {
                    (
                        s[0].as_str().unwrap_or_default().to_owned(),
                        s[1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_web_nodes_show_the_workers_jobs_live() -> Result<()> {
    let Some(paths) = browser_or_skip("two_web_nodes_show_the_workers_jobs_live") else {
        return Ok(());
    };
    let nats = NatsServer::start();
    let url = nats.url();
    let _w1 = WorkerProcess::start(&url, &pipeline(), &["--worker-id", "w1"]);
    let _w2 = WorkerProcess::start(&url, &pipeline(), &["--worker-id", "w2"]);
    let a = Runner::start_with_args("nats-a", &["--nats", &url], &[])?;
    let b = Runner::start_with_args("nats-b", &["--nats", &url], &[])?;
    let browser = Browser::start(&paths).await?;
    let outcome = async {
        let client = &browser.client;

        // 1. Run pressed on node A's page: a worker runs it, the page follows.
        client.goto(&format!("{}/", a.base_url)).await?;
        client
            .wait()
            .at_most(UI_TIMEOUT)
            .for_element(Locator::Id("run"))
            .await?
            .click()
            .await?;
        let first = wait_js(
            client,
            r#"const m = location.hash.match(/^#\/jobs\/(.+)$/); return m ? m[1] : null;"#,
            UI_TIMEOUT,
            "the job view after Run",
        )
        .await?;
        let first = first.as_str().context("a job id")?.to_owned();
        let seen_running = wait_js(
            client,
            r#"return document.querySelector('#stages button[data-status="running"]') ? true : null;"#,
            JOB_TIMEOUT,
            "a stage shown running",
        )
        .await;
        let view_a = finished_view(client).await?;

        // 2. A job posted to node A's API, watched on node B's page.
        let second = a.create_job().await?;
        client
            .goto(&format!("{}/#/jobs/{second}", b.base_url))
            .await?;
        let view_b = finished_view(client).await?;
        // The home view names the workers, once the node has counted them.
        b.wait_json("/api/health", UI_TIMEOUT, "two workers counted", |h| h["workers"] == 2)
            .await?;
        client.goto(&format!("{}/", b.base_url)).await?;
        let runner_text = wait_js(
            client,
            r#"const t = document.body.innerText; return /on 2 workers/.test(t) ? t : null;"#,
            UI_TIMEOUT,
            "the home view saying 'on 2 workers'",
        )
        .await
        .ok();
        client
            .goto(&format!("{}/#/jobs/{second}", b.base_url))
            .await?;
        finished_view(client).await?;
        save_screenshot(client, "page-web-node.png").await?;
        let console = browser.console().await.unwrap_or_default();
        anyhow::Ok((first, second, seen_running, view_a, view_b, runner_text, console))
    }
    .await;
    browser.close().await?;
    let (first, second, seen_running, view_a, view_b, runner_text, console) = outcome?;

    assert!(
        seen_running.is_ok(),
        "the page on a web node showed a stage running"
    );
    assert!(
        runner_text.is_some(),
        "the home view names the live workers"
    );
    for (id, view, node) in [(&first, &view_a, "A"), (&second, &view_b, "B")] {
        for base in [&a.base_url, &b.base_url] {
            let detail = a_get(base, id).await?;
            assert_eq!(
                page_stages(view),
                api_stages(&detail),
                "job {id}: stage buttons on node {node}'s page against {base}'s API"
            );
            assert_eq!(detail["outcome"], "partial", "job {id} on {base}");
            assert_eq!(
                view["total"], detail["lines"],
                "job {id}: terminal lines on node {node}'s page against {base}'s API"
            );
        }
        assert_eq!(view["outcome"], "partial", "job {id} on node {node}'s page");
        let stages = page_stages(view);
        assert_eq!(stages.len(), 8, "job {id}: every stage shown: {stages:?}");
        assert!(
            stages.contains(&("people_mapper".into(), "error".into()))
                && stages.contains(&("generator".into(), "skipped".into())),
            "job {id}: the failed and the skipped stage: {stages:?}"
        );
    }
    let severe: Vec<&Value> = console
        .iter()
        .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    Ok(())
}

async fn a_get(base: &str, id: &str) -> Result<Value> {
    let url = format!("{base}/api/jobs/{id}");
    let body = reqwest::get(&url)
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(serde_json::from_slice(&body)?)
}

/// A job of 400 numbered output lines, one stage around them, over about
/// five seconds.
const LONG_JOB: &str = r#"
echo '{"event":"pipeline_start","timestamp":"2026-01-01T00:00:00.000Z"}'
echo '{"event":"layer_start","layer":1,"layer_name":"counter","timestamp":"2026-01-01T00:00:00.000Z"}'
i=1
while [ $i -le 400 ]; do echo "line $i"; i=$((i+1)); sleep 0.012; done
echo '{"event":"layer_complete","layer":1,"layer_name":"counter","status":"success","duration_ms":5000,"timestamp":"2026-01-01T00:00:05.000Z"}'
echo '{"event":"pipeline_complete","status":"success","timestamp":"2026-01-01T00:00:05.000Z"}'
"#;

/// HAProxy in front of two web nodes: every request to `primary` while it
/// is up, to `backup` once its health check fails.
struct Proxy {
    child: Child,
    url: String,
    _dir: nats_common::TempDir,
}

impl Proxy {
    fn start(primary: &str, backup: &str) -> Result<Proxy> {
        let dir = nats_common::TempDir::new("haproxy");
        let port = nats_common::free_port();
        let host = |url: &str| url.trim_start_matches("http://").to_owned();
        let config = format!(
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 1h\n  \
             timeout server 1h\n  timeout tunnel 1h\n  timeout check 3s\n  \
             option redispatch\n  retries 5\n\
             frontend web\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
             backend nodes\n  option httpchk GET /api/health\n  \
             server a {} check inter 300ms fall 2 rise 1\n  \
             server b {} check inter 300ms fall 2 rise 1 backup\n",
            host(primary),
            host(backup)
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start haproxy (Debian package haproxy)")?;
        // Listening, and its health check has found the primary up.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let health = format!("127.0.0.1:{port}");
        while !serves(&health) {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "haproxy did not serve /api/health"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Proxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        })
    }
}

/// Whether `GET /api/health` at `addr` answers 200 (plain HTTP/1.0).
fn serves(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /api/health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The terminal's drawn rows: `[seq, text]`.
const READ_ROWS: &str = r#"
    return [...document.querySelectorAll('#terminal .line')]
        .filter((l) => l.dataset.seq && !l.classList.contains("placeholder"))
        .map((l) => [Number(l.dataset.seq), l.textContent]);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_carries_on_through_the_proxy_when_its_web_node_dies() -> Result<()> {
    let Some(paths) =
        browser_or_skip("the_page_carries_on_through_the_proxy_when_its_web_node_dies")
    else {
        return Ok(());
    };
    let nats = NatsServer::start();
    let url = nats.url();
    let _worker = WorkerProcess::start(&url, LONG_JOB, &["--worker-id", "w1"]);
    let mut a = Runner::start_with_args("proxy-a", &["--nats", &url], &[])?;
    let b = Runner::start_with_args("proxy-b", &["--nats", &url], &[])?;
    let proxy = Proxy::start(&a.base_url, &b.base_url)?;
    let browser = Browser::start(&paths).await?;
    let outcome = async {
        let client = &browser.client;
        let id = b.create_job().await?;
        client.goto(&format!("{}/#/jobs/{id}", proxy.url)).await?;
        if let Err(e) = wait_js(
            client,
            "const t = document.getElementById('terminal'); return !!t && Number(t.dataset.total || 0) >= 100;",
            JOB_TIMEOUT,
            "100 lines on the page",
        )
        .await
        {
            let shown = client.execute(READ_JOB, vec![]).await.ok();
            let page = client
                .execute(
                    "return [location.href, document.title, document.body ? document.body.innerText.slice(0, 400) : null];",
                    vec![],
                )
                .await
                .ok();
            let console = browser.console().await.unwrap_or_default();
            eprintln!("page: {page:?}\nconsole: {console:?}");
            let on_a = a_get(&a.base_url, &id).await.ok();
            let on_b = a_get(&b.base_url, &id).await.ok();
            anyhow::bail!("{e}: the page shows {shown:?}; node A says {on_a:?}; node B says {on_b:?}");
        }
        // The node serving the page (the proxy's primary) dies mid-job.
        a.kill();
        let at_kill: u64 = client
            .execute(
                "return Number(document.getElementById('terminal').dataset.total || 0);",
                vec![],
            )
            .await?
            .as_u64()
            .unwrap_or(0);
        let view = finished_view(client).await?;
        let mut rows: Vec<(u64, String)> = Vec::new();
        for script in [
            "const t = document.getElementById('terminal'); t.scrollTop = 0; t.dispatchEvent(new Event('scroll')); return true;",
            "const t = document.getElementById('terminal'); t.scrollTop = t.scrollHeight / 2; t.dispatchEvent(new Event('scroll')); return true;",
            "const t = document.getElementById('terminal'); t.scrollTop = t.scrollHeight; t.dispatchEvent(new Event('scroll')); return true;",
        ] {
            client.execute(script, vec![]).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let drawn: Vec<(u64, String)> =
                serde_json::from_value(client.execute(READ_ROWS, vec![]).await?)?;
            rows.extend(drawn);
        }
        let console = browser.console().await.unwrap_or_default();
        anyhow::Ok((id, at_kill, view, rows, console))
    }
    .await;
    browser.close().await?;
    let (id, at_kill, view, rows, console) = outcome?;
    drop(proxy);

    let detail = a_get(&b.base_url, &id).await?;
    let lines = detail["lines"].as_u64().unwrap_or(0);
    assert_eq!(
        lines, 404,
        "job {id}: the worker's lines (400 and 4 events)"
    );
    assert!(
        at_kill < lines,
        "the web node was killed mid-job (the page had {at_kill} of {lines} lines)"
    );
    assert_eq!(view["outcome"], "success", "{view}");
    assert_eq!(view["total"], lines, "every line on the page: {view}");
    assert_eq!(
        page_stages(&view),
        [("counter".to_owned(), "complete".to_owned())]
    );
    // Line SEQ (after the two opening events) is `line SEQ-2`.
    assert!(rows.len() > 20, "rows drawn: {rows:?}");
    for (seq, text) in &rows {
        if (3..=402).contains(seq) {
            let want = format!("line {}", seq - 2);
            // The row is its number, its stage, then the text.
            assert!(text.ends_with(&want), "row {seq} shows {want:?}: {text:?}");
        }
    }
    assert!(
        rows.iter().any(|(s, _)| *s == lines),
        "the last line is drawn at the bottom"
    );
    let severe: Vec<&Value> = console
        .iter()
        .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
        .collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    Ok(())
}
