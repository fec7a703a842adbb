//! The page across runs, in a real browser: the stage history after many
//! jobs with failures, skips and tokens; a job's stages against their usual
//! durations, its tokens and trace links; a queued job cancelled from the
//! page; a finished job re-run and deleted, with every open view following.
//!
//! Needs Debian's `chromium` and `chromium-driver` (see `test_browser.rs`).
//! Run just these with:
//!
//! ```text
//! PIPELINE_REQUIRE_BROWSER=1 cargo test --features runner --test test_browser_history
//! ```
//!
//! The history test saves `target/browser-screenshots/page-history.png`
//! (the README shows a copy, `docs/page-history.png`): the stage history
//! after 50 jobs, kept open while they ran.

#![cfg(feature = "runner")]

mod browser_common;

use std::time::Duration;

use anyhow::{Context, Result};
use browser_common::{browser_or_skip, save_screenshot, wait_js, Browser, Runner};
use fantoccini::{Client, Locator};
use serde::Deserialize;
use serde_json::Value;

/// How long a batch of jobs may take to finish.
const JOBS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a page may take to show something once asked.
const UI_TIMEOUT: Duration = Duration::from_secs(15);
/// Where the runner's trace links point (nothing listens there).
const TRACE_TEMPLATE: &str = "http://127.0.0.1:9/trace/{trace_id}?span={span_id}";

/// The job's command: the reference pipeline, its faults chosen by the job
/// id the test gives (`JOB_ID` in the child's environment): `...-fail`
/// fails `people_mapper`, `...-skip` skips `generator`, `...-slow` runs at a
/// third of the speed, `...-hang` never finishes (until cancelled).
fn job_command() -> Vec<String> {
    let script = r#"
        flags="--speed 0.1"
        case "$JOB_ID" in
          *-fail) flags="$flags --fail people_mapper" ;;
          *-skip) flags="$flags --skip generator" ;;
          *-slow) flags="--speed 0.3" ;;
          *-hang) flags="--hang company_researcher" ;;
        esac
        exec "$0" reference $flags
    "#;
    vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        env!("CARGO_BIN_EXE_pipeline-runner").into(),
    ]
}

fn start_runner(test: &str, args: &[&str]) -> Result<Runner> {
    let command = job_command();
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    Runner::start_with_args(test, args, &command)
}

/// The page's `formatDuration`, for comparing the shown p50 with the API's.
fn format_duration(ms: f64) -> String {
    if ms < 1000.0 {
        return format!("{} ms", ms.round());
    }
    let s = ms / 1000.0;
    if s < 10.0 {
        return format!("{s:.1} s");
    }
    if s < 60.0 {
        return format!("{} s", s.round());
    }
    let m = (s / 60.0).floor();
    if m < 60.0 {
        return format!("{m} m {} s", (s - m * 60.0).round());
    }
    let h = (m / 60.0).floor();
    format!("{h} h {} m", m - h * 60.0)
}

/// Waits until every job the runner knows has finished, and returns the list.
async fn wait_all_finished(runner: &Runner, count: usize) -> Result<Value> {
    runner
        .wait_json(
            "/api/jobs?limit=500",
            JOBS_TIMEOUT,
            "every job to finish",
            |v| {
                v["jobs"].as_array().is_some_and(|jobs| {
                    jobs.len() == count && jobs.iter().all(|j| j["state"] == "finished")
                })
            },
        )
        .await
}

/// One row of the history table as the page shows it.
#[derive(Debug, Deserialize)]
struct HistoryRow {
    stage: String,
    layer: String,
    runs: String,
    p50: String,
    p95: String,
    failures: String,
    tokens: String,
    chart_label: String,
    marks: Vec<Mark>,
}

#[derive(Debug, Deserialize)]
struct Mark {
    status: String,
    job: String,
    title: String,
    href: String,
    class: String,
    fill: String,
    stroke: String,
}

const READ_HISTORY: &str = r##"
    const rows = [...document.querySelectorAll('#history-rows tr')].map((tr) => {
        const svg = tr.querySelector('svg.history-chart');
        const text = (cls) => tr.querySelector(cls).textContent;
        return {
            stage: tr.dataset.stage,
            layer: text('.stage-layer'),
            runs: text('.history-runs'),
            p50: text('.history-p50'),
            p95: text('.history-p95'),
            failures: text('.history-failures'),
            tokens: text('.history-tokens'),
            chart_label: svg ? svg.getAttribute('aria-label') : '',
            marks: [...tr.querySelectorAll('[data-status]')].map((m) => {
                const shape = m.querySelector('.run-mark');
                const style = getComputedStyle(shape);
                return {
                    status: m.dataset.status,
                    job: m.dataset.job,
                    title: m.querySelector('title').textContent,
                    href: m.getAttribute('href') || '',
                    class: shape.getAttribute('class'),
                    fill: style.fill,
                    stroke: style.stroke,
                };
            }),
        };
    });
    return rows;
"##;

/// The status colours of the light theme, as computed styles give them.
fn light_colour(status: &str) -> &'static str {
    match status {
        "complete" => "rgb(17, 99, 41)",
        "error" => "rgb(164, 14, 38)",
        "skipped" => "rgb(125, 78, 0)",
        "cancelled" => "rgb(102, 57, 186)",
        _ => "?",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_after_many_jobs_shows_every_stage_with_its_runs() -> Result<()> {
    let Some(paths) = browser_or_skip("history_after_many_jobs_shows_every_stage_with_its_runs")
    else {
        return Ok(());
    };
    let runner = start_runner(
        "history",
        &[
            "--max-running",
            "2",
            "--trace-url",
            TRACE_TEMPLATE,
            "--price-per-1k-tokens",
            "0.002",
        ],
    )?;
    // 50 jobs: every fifth fails people_mapper, every fifth skips generator,
    // every tenth is slow; ids sort in the order they were created.
    const JOBS: usize = 50;
    let kinds: Vec<(String, &str)> = (0..JOBS)
        .map(|i| {
            let kind = match i % 5 {
                0 => "fail",
                1 => "skip",
                2 if i % 10 == 2 => "slow",
                _ => "ok",
            };
            (format!("hist-{i:02}-{kind}"), kind)
        })
        .collect();
    let failed = kinds.iter().filter(|(_, k)| *k == "fail").count();
    let skipped = kinds.iter().filter(|(_, k)| *k == "skip").count();

    let browser = Browser::start(&paths).await?;
    let outcome = async {
        let client = &browser.client;
        // The history is open while the jobs run: it follows them.
        client.goto(&format!("{}/", runner.base_url)).await?;
        wait_js(
            client,
            "return document.getElementById('history-jobs').textContent === '0 jobs in the window'",
            UI_TIMEOUT,
            "the empty history",
        )
        .await?;
        let started = std::time::Instant::now();
        for (id, _) in &kinds {
            runner.create_job_with_id(id).await?;
        }
        wait_all_finished(&runner, JOBS).await?;
        wait_js(
            client,
            &format!("return document.getElementById('history-jobs').textContent === '{JOBS} jobs in the window' && document.querySelectorAll('#history-rows tr').length === 8"),
            UI_TIMEOUT,
            "the history of every job and 8 stages, without a reload",
        )
        .await?;
        let elapsed = started.elapsed();
        let fetches = client
            .execute("return window.pipelinePage.historyFetches()", vec![])
            .await?
            .as_u64()
            .unwrap_or(u64::MAX);
        let api = runner.get_json("/api/stages?window=50").await?;
        let rows: Vec<HistoryRow> =
            serde_json::from_value(client.execute(READ_HISTORY, vec![]).await?)?;
        let jobs_text = client
            .execute("return document.getElementById('history-jobs').textContent", vec![])
            .await?;
        let runner_info = client
            .execute("return document.getElementById('runner-info').textContent", vec![])
            .await?;
        save_screenshot(client, "page-history.png").await?;

        // The job view: one run against the usual durations, tokens, trace.
        let slow = kinds.iter().find(|(_, k)| *k == "slow").unwrap().0.clone();
        client
            .find(Locator::Css(&format!(
                r#"#history-rows tr[data-stage="company_researcher"] a[data-job="{slow}"]"#
            )))
            .await?
            .click()
            .await?;
        wait_js(
            client,
            r#"return document.getElementById('connection').dataset.state === 'finished'
                && document.querySelector('#stages button[data-stage="company_researcher"]').dataset.usual !== ''"#,
            UI_TIMEOUT,
            "the slow job's stages compared with their usual durations",
        )
        .await?;
        let job = client
            .execute(
                r##"const q = (s) => document.querySelector(s);
                const stage = q('#stages button[data-stage="company_researcher"]');
                const extra = stage.parentElement.querySelector('.stage-extra');
                return {
                    hash: location.hash,
                    usual: stage.dataset.usual,
                    usual_shown: extra.querySelector('.stage-usual').textContent,
                    level: extra.querySelector('.stage-usual').dataset.level,
                    label: stage.getAttribute('aria-label'),
                    stage_trace: extra.querySelector('.stage-trace').hidden ? null : extra.querySelector('.stage-trace').href,
                    generator_tokens: q('#stages button[data-stage="generator"]').parentElement.querySelector('.stage-tokens').textContent,
                    summary: q('#job-summary').textContent,
                    trace_shown: !q('#job-trace').hidden,
                    trace_id: q('#trace-id').textContent,
                    trace_link: q('#trace-link').hidden ? null : q('#trace-link').href,
                };"##,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-history-job.png").await?;
        let detail = runner.get_json(&format!("/api/jobs/{slow}")).await?;
        anyhow::Ok((rows, jobs_text, runner_info, job, detail, slow, api, fetches, elapsed))
    }
    .await;
    let console = browser.console().await.unwrap_or_default();
    browser.close().await?;
    let (rows, jobs_text, runner_info, job, detail, slow, api, fetches, elapsed) = outcome?;

    // The history followed every job's end with a few fetches (at most one a
    // second, plus the first), not one per job.
    println!("history fetches while {JOBS} jobs ran for {elapsed:?}: {fetches}");
    assert!(
        fetches < JOBS as u64 && fetches <= elapsed.as_secs() + 3,
        "{fetches} fetches of the history in {elapsed:?}"
    );

    // Every stage of the API's answer, in order, with the API's numbers.
    let stages = api["stages"].as_array().context("stages in the answer")?;
    assert_eq!(
        rows.iter().map(|r| r.stage.as_str()).collect::<Vec<_>>(),
        stages
            .iter()
            .map(|s| s["layer_name"].as_str().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(jobs_text, format!("{JOBS} jobs in the window"));
    for (row, stage) in rows.iter().zip(stages) {
        let name = &row.stage;
        assert_eq!(row.layer, format!("L{}", stage["layer"]), "{name}");
        assert_eq!(row.runs, stage["runs"].to_string(), "{name}");
        if let Some(p50) = stage["p50_ms"].as_f64() {
            assert_eq!(row.p50, format_duration(p50), "{name}");
        }
        if let Some(p95) = stage["p95_ms"].as_f64() {
            assert_eq!(row.p95, format_duration(p95), "{name}");
        }
        let recent = stage["recent"].as_array().unwrap();
        assert_eq!(row.marks.len(), recent.len(), "{name}: one mark per run");
        for (mark, run) in row.marks.iter().zip(recent) {
            assert_eq!(mark.job, run["job_id"].as_str().unwrap(), "{name}");
            assert_eq!(mark.status, run["status"].as_str().unwrap(), "{name}");
            assert_eq!(mark.href, format!("#/jobs/{}", mark.job));
            assert!(mark.title.starts_with(&mark.job), "{mark:?}");
            assert!(
                mark.title.contains(match mark.status.as_str() {
                    "error" => "failed",
                    other => other,
                }),
                "{mark:?}"
            );
            assert_eq!(mark.class, format!("run-mark {}", mark.status));
            let colour = if mark.status == "error" || mark.status == "skipped" {
                &mark.stroke
            } else {
                &mark.fill
            };
            assert_eq!(colour, light_colour(&mark.status), "{mark:?}");
        }
        assert!(
            row.chart_label
                .starts_with(&format!("{name}: {} runs", stage["runs"])),
            "{}",
            row.chart_label
        );
    }
    let row = |name: &str| rows.iter().find(|r| r.stage == name).unwrap();
    // What the test ran, independent of the API.
    let mapper = row("people_mapper");
    assert_eq!(mapper.runs, JOBS.to_string());
    assert_eq!(
        mapper.marks.iter().filter(|m| m.status == "error").count(),
        failed
    );
    let rate = failed as f64 / JOBS as f64 * 100.0;
    assert_eq!(mapper.failures, format!("{}% ({failed})", rate.round()));
    let generator = row("generator");
    assert_eq!(
        generator
            .marks
            .iter()
            .filter(|m| m.status == "skipped")
            .count(),
        skipped
    );
    assert_eq!(generator.failures, "0%");
    assert_eq!(
        generator.tokens,
        format_count(3400 * (JOBS - skipped) as u64),
        "generator records 3400 tokens when it runs"
    );
    assert_eq!(
        row("opportunity_mapper").tokens,
        format_count(1200 * JOBS as u64)
    );
    assert_eq!(row("publisher").tokens, "\u{2013}", "no tokens: a dash");
    assert!(
        runner_info
            .as_str()
            .unwrap_or_default()
            .contains("runs 2 at a time"),
        "{runner_info}"
    );
    assert!(
        runner_info
            .as_str()
            .unwrap_or_default()
            .starts_with("data "),
        "{runner_info}"
    );

    // The slow run's stage against the usual: about 3x.
    assert_eq!(job["hash"], format!("#/jobs/{slow}"));
    let usual = job["usual"].as_str().unwrap();
    let ratio: f64 = usual.strip_suffix("x p50").unwrap().parse()?;
    assert!((2.0..=4.5).contains(&ratio), "{usual}");
    assert_eq!(job["usual_shown"], usual);
    assert_eq!(job["level"], "slow");
    assert!(
        job["label"]
            .as_str()
            .unwrap()
            .contains("times the usual duration (p50 "),
        "{job}"
    );
    assert_eq!(job["generator_tokens"], "3,400 tokens");
    assert!(
        job["summary"].as_str().unwrap().contains("4,600 tokens"),
        "{job}"
    );
    assert!(
        job["summary"].as_str().unwrap().contains("est. cost"),
        "{job}"
    );
    let trace_id = detail["trace_id"].as_str().context("a trace id")?;
    assert_eq!(job["trace_shown"], true);
    assert_eq!(job["trace_id"], trace_id);
    assert_eq!(
        job["trace_link"].as_str().unwrap(),
        detail["trace_url"].as_str().unwrap()
    );
    assert!(job["trace_link"]
        .as_str()
        .unwrap()
        .starts_with(&format!("http://127.0.0.1:9/trace/{trace_id}?span=")));
    let stage_trace = detail["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["layer_name"] == "company_researcher")
        .and_then(|s| s["trace_url"].as_str());
    assert_eq!(job["stage_trace"].as_str(), stage_trace, "{job}");
    let severe: Vec<_> = console.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    Ok(())
}

fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reads `#job-outcome`'s status and the queue line.
async fn outcome_and_queue(client: &Client) -> Result<Value> {
    Ok(client
        .execute(
            r#"const q = document.getElementById('job-queue');
            return {
                outcome: document.getElementById('job-outcome').dataset.status,
                queue: q.hidden ? null : q.textContent,
                position: q.dataset.position || null,
                summary: document.getElementById('job-summary').textContent,
                cancel: document.getElementById('cancel').hidden ? null : document.getElementById('cancel').textContent,
            };"#,
            vec![],
        )
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_job_shows_its_place_and_cancels_from_the_page() -> Result<()> {
    let Some(paths) = browser_or_skip("queued_job_shows_its_place_and_cancels_from_the_page")
    else {
        return Ok(());
    };
    let runner = start_runner("queue", &["--max-running", "1"])?;
    runner.create_job_with_id("q-first-hang").await?;
    runner
        .wait_json(
            "/api/jobs/q-first-hang",
            UI_TIMEOUT,
            "the first job to run",
            |v| v["state"] == "running",
        )
        .await?;
    runner.create_job_with_id("q-second").await?;
    runner.create_job_with_id("q-third").await?;
    let browser = Browser::start(&paths).await?;
    let outcome = async {
        let client = &browser.client;
        client
            .goto(&format!("{}/#/jobs/q-third", runner.base_url))
            .await?;
        wait_js(
            client,
            "return document.getElementById('job-outcome').dataset.status === 'queued' && !document.getElementById('job-queue').hidden",
            UI_TIMEOUT,
            "the third job shown as queued",
        )
        .await?;
        let before = outcome_and_queue(client).await?;
        let list = client
            .execute(
                r#"return [...document.querySelectorAll('.job-link')].map((a) => [a.dataset.job, a.querySelector('.pill').dataset.status, a.querySelector('.job-meta').textContent]);"#,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-queued.png").await?;
        // Cancel asks first, then takes the job out of the queue.
        client.find(Locator::Id("cancel")).await?.click().await?;
        wait_js(client, "return document.getElementById('confirm-cancel').open", UI_TIMEOUT, "the confirm dialog").await?;
        let dialog = client
            .execute("return document.getElementById('confirm-text').textContent", vec![])
            .await?;
        client.find(Locator::Id("confirm-yes")).await?.click().await?;
        wait_js(
            client,
            "return document.getElementById('job-outcome').dataset.status === 'cancelled'",
            UI_TIMEOUT,
            "the queued job cancelled",
        )
        .await?;
        let after = outcome_and_queue(client).await?;
        let states = client
            .execute(
                r#"return Object.fromEntries([...document.querySelectorAll('.job-link')].map((a) => [a.dataset.job, a.querySelector('.pill').dataset.status]));"#,
                vec![],
            )
            .await?;
        anyhow::Ok((before, list, dialog, after, states))
    }
    .await;
    browser.close().await?;
    let (before, list, dialog, after, states) = outcome?;
    let third = runner.get_json("/api/jobs/q-third").await?;
    let first = runner.get_json("/api/jobs/q-first-hang").await?;
    // Stop the hanging job so the runner shuts down quickly.
    let _ = runner
        .send(reqwest::Method::POST, "/api/jobs/q-first-hang/cancel")
        .await;

    assert_eq!(before["outcome"], "queued");
    assert_eq!(before["position"], "2", "{before}");
    assert!(
        before["queue"]
            .as_str()
            .unwrap()
            .contains("position 2 in the queue"),
        "{before}"
    );
    assert!(
        before["summary"]
            .as_str()
            .unwrap()
            .starts_with("created 20"),
        "{before}"
    );
    assert!(
        before["summary"].as_str().unwrap().ends_with(" UTC"),
        "{before}"
    );
    assert_eq!(before["cancel"], "Cancel (leave the queue)");
    let list = list.as_array().unwrap();
    let third_item = list.iter().find(|i| i[0] == "q-third").unwrap();
    assert_eq!(third_item[1], "queued");
    assert!(
        third_item[2]
            .as_str()
            .unwrap()
            .starts_with("#2 in queue \u{b7} created "),
        "{third_item}"
    );
    let first_item = list.iter().find(|i| i[0] == "q-first-hang").unwrap();
    assert_eq!(first_item[1], "running");
    assert!(
        dialog.as_str().unwrap().contains("waiting in the queue"),
        "{dialog}"
    );
    assert_eq!(after["outcome"], "cancelled");
    assert_eq!(after["queue"], Value::Null);
    assert_eq!(after["cancel"], Value::Null);
    assert_eq!(third["outcome"], "cancelled");
    assert!(third.get("started_at").is_none(), "it never ran: {third}");
    assert_eq!(first["state"], "running", "the running job is untouched");
    assert_eq!(states["q-third"], "cancelled");
    assert_eq!(states["q-second"], "queued");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_links_back_and_delete_clears_every_view() -> Result<()> {
    let Some(paths) = browser_or_skip("rerun_links_back_and_delete_clears_every_view") else {
        return Ok(());
    };
    let runner = start_runner("rerun-delete", &[])?;
    runner.create_job_with_id("orig-fail").await?;
    runner.create_job_with_id("other").await?;
    wait_all_finished(&runner, 2).await?;
    let browser = Browser::start(&paths).await?;
    let outcome = async {
        let client = &browser.client;
        client
            .goto(&format!("{}/#/jobs/orig-fail", runner.base_url))
            .await?;
        wait_js(
            client,
            "return document.getElementById('connection').dataset.state === 'finished' && !document.getElementById('rerun').hidden",
            UI_TIMEOUT,
            "the finished job with its Re-run button",
        )
        .await?;
        client.find(Locator::Id("rerun")).await?.click().await?;
        let new_id = wait_js(
            client,
            r#"const m = /^#\/jobs\/(.+)$/.exec(location.hash); return m && m[1] !== 'orig-fail' ? decodeURIComponent(m[1]) : null;"#,
            UI_TIMEOUT,
            "the re-run opened",
        )
        .await?;
        let new_id = new_id.as_str().unwrap().to_owned();
        wait_js(
            client,
            "return document.getElementById('connection').dataset.state === 'finished' && !document.getElementById('job-rerun-of').hidden",
            Duration::from_secs(60),
            "the re-run finished, saying what it re-runs",
        )
        .await?;
        let rerun_of = client
            .execute(
                "const a = document.getElementById('job-rerun-link'); return [a.textContent, a.getAttribute('href'), document.getElementById('job-id').textContent];",
                vec![],
            )
            .await?;
        save_screenshot(client, "page-rerun.png").await?;

        // Deleted elsewhere (through the API) while this view shows it.
        let (status, body) = runner
            .send(reqwest::Method::DELETE, &format!("/api/jobs/{new_id}"))
            .await?;
        wait_js(
            client,
            "return document.getElementById('job-outcome').textContent === 'deleted'",
            UI_TIMEOUT,
            "the open view saying the job was deleted",
        )
        .await?;
        let deleted_view = client
            .execute(
                r#"return {
                    reason: document.getElementById('job-reason').textContent,
                    connection: document.getElementById('connection').dataset.state,
                    stages_hidden: document.querySelector('.stages-panel').hidden,
                    buttons: ['rerun', 'delete', 'download', 'cancel'].filter((id) => !document.getElementById(id).hidden),
                    listed: [...document.querySelectorAll('.job-link')].map((a) => a.dataset.job),
                };"#,
                vec![],
            )
            .await?;

        // Deleted from the page: asks first, then back to the history.
        client
            .goto(&format!("{}/#/jobs/orig-fail", runner.base_url))
            .await?;
        wait_js(
            client,
            "return document.getElementById('connection').dataset.state === 'finished' && !document.getElementById('delete').hidden",
            UI_TIMEOUT,
            "the Delete button",
        )
        .await?;
        client.find(Locator::Id("delete")).await?.click().await?;
        wait_js(client, "return document.getElementById('confirm-delete').open", UI_TIMEOUT, "the delete dialog").await?;
        client.find(Locator::Id("delete-keep")).await?.click().await?;
        let kept = runner.get_json("/api/jobs/orig-fail").await?;
        client.find(Locator::Id("delete")).await?.click().await?;
        wait_js(client, "return document.getElementById('confirm-delete').open", UI_TIMEOUT, "the delete dialog").await?;
        client.find(Locator::Id("delete-yes")).await?.click().await?;
        wait_js(
            client,
            "return location.hash === '#/' && !document.getElementById('empty-view').hidden && ![...document.querySelectorAll('.job-link')].some((a) => a.dataset.job === 'orig-fail')",
            UI_TIMEOUT,
            "back to the history without the deleted job",
        )
        .await?;
        let listed = client
            .execute(
                "return [...document.querySelectorAll('.job-link')].map((a) => a.dataset.job);",
                vec![],
            )
            .await?;
        anyhow::Ok((new_id, rerun_of, status, body, deleted_view, kept, listed))
    }
    .await;
    browser.close().await?;
    let (new_id, rerun_of, status, body, deleted_view, kept, listed) = outcome?;

    assert_eq!(rerun_of[0], "orig-fail");
    assert_eq!(rerun_of[1], "#/jobs/orig-fail");
    assert_eq!(rerun_of[2], new_id.as_str());
    let created = runner.get_json("/api/jobs?limit=10").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true);
    assert!(
        deleted_view["reason"]
            .as_str()
            .unwrap()
            .starts_with("This job was deleted"),
        "{deleted_view}"
    );
    assert_eq!(deleted_view["connection"], "deleted");
    assert_eq!(deleted_view["stages_hidden"], true);
    assert_eq!(deleted_view["buttons"], serde_json::json!([]));
    assert!(
        !deleted_view["listed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j == new_id.as_str()),
        "{deleted_view}"
    );
    assert_eq!(kept["job_id"], "orig-fail", "Keep it keeps the job");
    assert_eq!(listed, serde_json::json!(["other"]));
    assert_eq!(
        created["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["other"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_fits_a_phone_and_the_dark_theme() -> Result<()> {
    let Some(paths) = browser_or_skip("history_fits_a_phone_and_the_dark_theme") else {
        return Ok(());
    };
    let runner = start_runner("history-phone", &[])?;
    for i in 0..6 {
        let kind = ["ok", "fail", "skip"][i % 3];
        runner.create_job_with_id(&format!("p-{i}-{kind}")).await?;
    }
    wait_all_finished(&runner, 6).await?;
    let phone = Browser::start_phone(&paths, 390, 844).await?;
    let outcome = async {
        let client = &phone.client;
        client.goto(&format!("{}/", runner.base_url)).await?;
        wait_js(
            client,
            "return document.querySelectorAll('#history-rows tr').length === 8",
            UI_TIMEOUT,
            "the history",
        )
        .await?;
        let fit = client
            .execute(
                r#"const table = document.getElementById('history-table');
                return {
                    overflow: document.documentElement.scrollWidth - window.innerWidth,
                    table_right: table.getBoundingClientRect().right,
                    width: window.innerWidth,
                    charts_fit: [...document.querySelectorAll('svg.history-chart')].every((s) => s.getBoundingClientRect().right <= window.innerWidth),
                    head_shown: getComputedStyle(document.querySelector('#history-table thead')).display !== 'none',
                    labels: [...document.querySelector('#history-rows tr').querySelectorAll('td.num')].map((td) => td.dataset.label),
                };"#,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-history-phone.png").await?;
        anyhow::Ok(fit)
    }
    .await;
    phone.close().await?;
    let fit = outcome?;
    let dark = Browser::start_with(&paths, &["--force-dark-mode"]).await?;
    let outcome = async {
        let client = &dark.client;
        client.goto(&format!("{}/", runner.base_url)).await?;
        wait_js(
            client,
            "return document.querySelectorAll('#history-rows .run-mark').length > 0",
            UI_TIMEOUT,
            "the history",
        )
        .await?;
        let colours = client
            .execute(
                r#"const m = document.querySelector('#history-rows .run-mark.complete');
                return [getComputedStyle(m).fill, getComputedStyle(document.body).backgroundColor];"#,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-history-dark.png").await?;
        anyhow::Ok(colours)
    }
    .await;
    dark.close().await?;
    let colours = outcome?;

    assert!(fit["overflow"].as_f64().unwrap() <= 0.0, "{fit}");
    assert_eq!(fit["charts_fit"], true, "{fit}");
    assert_eq!(
        fit["head_shown"], false,
        "one card per stage on a phone: {fit}"
    );
    assert_eq!(
        fit["labels"],
        serde_json::json!(["Runs", "p50", "p95", "Failures", "Tokens"]),
        "each number is labelled on a phone: {fit}"
    );
    // The dark theme's colours: a light green mark on a dark page.
    assert_eq!(colours[0], "rgb(86, 211, 100)");
    assert_eq!(colours[1], "rgb(13, 17, 23)");
    Ok(())
}

/// A stage name that would run script if it were inserted as HTML.
const HOSTILE_STAGE: &str = r#"<img src=x onerror=alert(1)>"q'"#;

/// A job that prints its own lifecycle lines: a stage with a hostile name
/// and a traced stage whose lines carry the job's trace id (from the
/// runner's `TRACEPARENT`) and a span id, with tokens.
fn traced_job_command() -> Vec<String> {
    // `$1` is the hostile name as a JSON string; printf, unlike dash's
    // echo, leaves backslashes alone.
    let script = r#"
        trace=$(echo "$TRACEPARENT" | cut -d- -f2)
        now() { date -u +%Y-%m-%dT%H:%M:%S.000Z; }
        ids="\"job_id\":\"$JOB_ID\",\"trace_id\":\"$trace\",\"span_id\":\"00f067aa0ba902b7\""
        out() { printf '%s\n' "$1"; }
        out "{\"timestamp\":\"$(now)\",\"event\":\"pipeline_start\",\"job_id\":\"$JOB_ID\"}"
        out "{\"timestamp\":\"$(now)\",\"event\":\"layer_start\",\"layer\":1,\"layer_name\":\"traced_stage\",$ids}"
        out "{\"timestamp\":\"$(now)\",\"event\":\"layer_complete\",\"layer\":1,\"layer_name\":\"traced_stage\",\"status\":\"complete\",\"duration_ms\":5,$ids,\"metadata\":{\"tokens_used\":42}}"
        out "{\"timestamp\":\"$(now)\",\"event\":\"layer_start\",\"layer\":2,\"layer_name\":$STAGE,\"job_id\":\"$JOB_ID\"}"
        out "{\"timestamp\":\"$(now)\",\"event\":\"layer_complete\",\"layer\":2,\"layer_name\":$STAGE,\"status\":\"complete\",\"duration_ms\":7,\"job_id\":\"$JOB_ID\"}"
        out "{\"timestamp\":\"$(now)\",\"event\":\"pipeline_complete\",\"status\":\"success\",\"duration_ms\":12,\"job_id\":\"$JOB_ID\"}"
    "#;
    vec![
        "sh".into(),
        "-c".into(),
        format!("STAGE=\"$1\"; {script}"),
        "sh".into(),
        serde_json::to_string(HOSTILE_STAGE).expect("a string"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_trace_links_and_hostile_stage_names_in_the_history() -> Result<()> {
    let Some(paths) = browser_or_skip("stage_trace_links_and_hostile_stage_names_in_the_history")
    else {
        return Ok(());
    };
    let command = traced_job_command();
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let runner = Runner::start_with_args("traced", &["--trace-url", TRACE_TEMPLATE], &command)?;
    runner.create_job_with_id("traced-1").await?;
    runner.create_job_with_id("traced-2").await?;
    wait_all_finished(&runner, 2).await?;
    let detail = runner.get_json("/api/jobs/traced-2").await?;
    let browser = Browser::start(&paths).await?;
    let outcome = async {
        let client = &browser.client;
        client
            .goto(&format!("{}/#/jobs/traced-2", runner.base_url))
            .await?;
        wait_finished_view(client).await?;
        let job = client
            .execute(
                r##"const stage = document.querySelector('#stages button[data-stage="traced_stage"]');
                const extra = stage.parentElement.querySelector('.stage-extra');
                const link = extra.querySelector('.stage-trace');
                stage.click();
                const names = [...document.querySelectorAll('#stages .stage-name')].map((n) => n.textContent);
                return {
                    link: link.hidden ? null : link.href,
                    target: link.target,
                    rel: link.rel,
                    tokens: extra.querySelector('.stage-tokens').textContent,
                    names,
                };"##,
                vec![],
            )
            .await?;
        wait_js(client, "return !document.getElementById('stage-detail').hidden", UI_TIMEOUT, "the stage's details").await?;
        let fields = client
            .execute(
                r#"const f = (k) => { const d = document.querySelector(`#stage-detail-fields dd[data-field="${k}"]`); return d ? (d.querySelector('a') ? d.querySelector('a').href : d.textContent) : null; };
                return { span: f('span id'), trace: f('trace'), tokens: f('tokens') };"#,
                vec![],
            )
            .await?;
        client.goto(&format!("{}/", runner.base_url)).await?;
        wait_js(
            client,
            "return document.querySelectorAll('#history-rows tr').length === 2",
            UI_TIMEOUT,
            "the history of both stages",
        )
        .await?;
        let history = client
            .execute(
                r#"return {
                    names: [...document.querySelectorAll('#history-rows tr')].map((tr) => [tr.dataset.stage, tr.querySelector('.stage-name').textContent, tr.querySelector('svg').getAttribute('aria-label')]),
                    images: document.querySelectorAll('img').length,
                    scripts: document.querySelectorAll('body script').length,
                    alerted: window.__alerted === true,
                };"#,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-history-hostile.png").await?;
        anyhow::Ok((job, fields, history))
    }
    .await;
    let console = browser.console().await.unwrap_or_default();
    browser.close().await?;
    let (job, fields, history) = outcome?;

    let stage = detail["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["layer_name"] == "traced_stage")
        .context("the traced stage")?;
    let trace_id = detail["trace_id"].as_str().unwrap();
    assert_eq!(stage["span_id"], "00f067aa0ba902b7", "{stage}");
    let url = stage["trace_url"].as_str().context("a stage trace url")?;
    assert_eq!(
        url,
        format!("http://127.0.0.1:9/trace/{trace_id}?span=00f067aa0ba902b7")
    );
    assert_eq!(job["link"], url, "{job}");
    assert_eq!(job["target"], "_blank");
    assert_eq!(job["rel"], "noopener noreferrer");
    assert_eq!(job["tokens"], "42 tokens");
    assert_eq!(
        job["names"],
        serde_json::json!(["traced_stage", HOSTILE_STAGE])
    );
    assert_eq!(fields["span"], "00f067aa0ba902b7");
    assert_eq!(fields["trace"], url);
    assert_eq!(fields["tokens"], "42");
    let names = history["names"].as_array().unwrap();
    assert_eq!(names[1][0], HOSTILE_STAGE);
    assert_eq!(names[1][1], HOSTILE_STAGE, "the name is text");
    assert!(
        names[1][2]
            .as_str()
            .unwrap()
            .starts_with(&format!("{HOSTILE_STAGE}: 2 runs")),
        "{names:?}"
    );
    assert_eq!(history["images"], 0, "no element from a stage name");
    assert_eq!(history["scripts"], 0);
    let severe: Vec<_> = console.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(severe.is_empty(), "console errors: {severe:?}");
    Ok(())
}

/// Waits until the open job's view shows it finished, with fresh history.
async fn wait_finished_view(client: &Client) -> Result<()> {
    wait_js(
        client,
        "return document.getElementById('connection').dataset.state === 'finished' && document.documentElement.dataset.history === 'fresh'",
        UI_TIMEOUT,
        "the job shown as finished",
    )
    .await?;
    Ok(())
}
