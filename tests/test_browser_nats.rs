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
//! It saves `target/browser-screenshots/page-web-node.png` (the README's
//! `docs/page-web-node.png` is a copy).

#![cfg(feature = "nats")]

mod browser_common;
mod nats_common;

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
        // The home view names the workers.
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
