//! The live page in a real browser: headless Chromium, driven over WebDriver,
//! watches the runner run a job with one failing and one skipped stage.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the tests
//! print how to install them and pass, unless `PIPELINE_REQUIRE_BROWSER=1`
//! (set by `bash scripts/test.sh`, which also installs them) makes that a
//! failure. Run just these with:
//!
//! ```text
//! PIPELINE_REQUIRE_BROWSER=1 cargo test --features runner --test test_browser
//! ```
//!
//! A screenshot of the finished job is saved to
//! `target/browser-screenshots/job.png` for a person to look at.

#![cfg(feature = "runner")]

mod browser_common;

use std::time::Duration;

use anyhow::{Context, Result};
use browser_common::{browser_or_skip, save_screenshot, Browser, Runner};
use fantoccini::{Client, Locator};
use serde::Deserialize;
use serde_json::Value;

/// A line of pipeline output that would run script if it were inserted as HTML.
const HOSTILE_LINE: &str = "<img src=x onerror=alert(1)>";

/// The reference pipeline's stages in the order the page must show them
/// (by layer number; the two layer-3 stages by name), and their final state
/// with `--fail people_mapper --skip generator`.
const EXPECTED: [(&str, &str); 8] = [
    ("pain_point_miner", "complete"),
    ("star_selector", "complete"),
    ("company_researcher", "complete"),
    ("role_researcher", "complete"),
    ("opportunity_mapper", "complete"),
    ("people_mapper", "error"),
    ("generator", "skipped"),
    ("publisher", "complete"),
];

/// How long a whole job may take to show as finished.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// The job's command: one hostile line of plain output, then the reference
/// pipeline (the runner binary's hidden `reference` subcommand).
fn job_command(speed: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo '{HOSTILE_LINE}'; exec \"$0\" reference --speed {speed} --fail people_mapper --skip generator"
        ),
        env!("CARGO_BIN_EXE_pipeline-runner").into(),
    ]
}

fn start_runner(test: &str, speed: &str) -> Result<Runner> {
    let command = job_command(speed);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    Runner::start(test, &command)
}

/// What the page shows, read in one script call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct PageState {
    connection: String,
    pipeline_status: String,
    stages: Vec<StageButton>,
    terminal_lines: Vec<String>,
    terminal_elements: usize,
    images: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct StageButton {
    stage: String,
    status: String,
    class: String,
    history: String,
    text: String,
    title: String,
}

const READ_PAGE: &str = r##"
    const stages = [...document.querySelectorAll("#stages button[data-stage]")].map((b) => ({
        stage: b.dataset.stage,
        status: b.dataset.status || "",
        class: b.className,
        history: b.dataset.history || "",
        text: [...b.children].map((part) => part.textContent).join(" "),
        title: b.title,
    }));
    const terminal = document.getElementById("terminal");
    return {
        connection: document.getElementById("connection").dataset.state,
        pipeline_status: document.getElementById("pipeline-status").dataset.status,
        stages,
        terminal_lines: [...terminal.children].map((line) => line.textContent),
        terminal_elements: terminal.querySelectorAll("*").length,
        images: document.querySelectorAll("img").length,
    };
"##;

async fn read_page(client: &Client) -> Result<PageState> {
    let value = client.execute(READ_PAGE, vec![]).await?;
    serde_json::from_value(value).context("reading the page state")
}

/// Waits until the connection indicator says the job's stream has finished.
async fn wait_finished(client: &Client) -> Result<()> {
    client
        .wait()
        .at_most(JOB_TIMEOUT)
        .for_element(Locator::Css(r#"#connection[data-state="finished"]"#))
        .await
        .context("the page never showed the job as finished")?;
    Ok(())
}

/// Opens the page, presses Run and waits for the job view to open.
async fn run_job_from_page(client: &Client, base_url: &str) -> Result<String> {
    client.goto(&format!("{base_url}/")).await?;
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("run"))
        .await?
        .click()
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let url = client.current_url().await?;
        if let Some(id) = url.fragment().and_then(|f| f.strip_prefix("/jobs/")) {
            return Ok(id.to_owned());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "pressing Run did not open a job (url {url})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Console messages at level SEVERE (script errors, CSP violations), except
/// the browser's own request for a favicon.
fn severe_console_messages(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .filter(|m| !m.contains("favicon.ico"))
        .collect()
}

fn looks_like_duration(text: &str) -> bool {
    // "850 ms", "1.2 s", "12 s", "1 m 5 s"
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(2).any(|w| {
        w[0].chars().next().is_some_and(|c| c.is_ascii_digit())
            && w[0].chars().all(|c| c.is_ascii_digit() || c == '.')
            && (w[1] == "ms" || w[1] == "s")
    })
}

fn assert_final_stages(page: &PageState) {
    let order: Vec<&str> = page.stages.iter().map(|s| s.stage.as_str()).collect();
    let expected_order: Vec<&str> = EXPECTED.iter().map(|(name, _)| *name).collect();
    assert_eq!(order, expected_order, "stage buttons, in page order");
    for (button, (name, status)) in page.stages.iter().zip(EXPECTED) {
        assert_eq!(button.status, status, "data-status of {name}: {button:?}");
        assert!(
            button.class.split_whitespace().any(|c| c == status),
            "{name} has no CSS class {status}: {button:?}"
        );
        // Every stage of this job was entered: it went through running, and
        // the page recorded that even if it passed too quickly to poll.
        assert_eq!(
            button.history,
            format!("pending running {status}"),
            "states {name} went through"
        );
        assert!(
            looks_like_duration(&button.text),
            "{name} ({status}) shows no duration: {:?}",
            button.text
        );
    }
    let failed = page.stages.iter().find(|s| s.stage == "people_mapper");
    let failed = failed.expect("people_mapper is shown");
    assert!(
        !failed.title.trim().is_empty() && failed.title != "people_mapper",
        "the failed stage's tooltip carries its error: {failed:?}"
    );
    assert_eq!(page.pipeline_status, "partial", "pipeline status");
    assert_eq!(page.connection, "finished", "connection state");
}

fn assert_hostile_line_is_text(page: &PageState) {
    let hostile = page
        .terminal_lines
        .iter()
        .filter(|line| line.trim() == HOSTILE_LINE)
        .count();
    assert_eq!(
        hostile, 1,
        "the line {HOSTILE_LINE:?} shows once, as text: {:#?}",
        page.terminal_lines
    );
    assert_eq!(
        page.images, 0,
        "no <img> element was created from pipeline output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_every_stage_state_and_output_as_text() -> Result<()> {
    let Some(paths) = browser_or_skip("page_shows_every_stage_state_and_output_as_text") else {
        return Ok(());
    };
    let runner = start_runner("states", "0.5")?;
    let browser = Browser::start(&paths).await?;

    // Collect everything first, close the browser, then assert.
    let outcome = async {
        run_job_from_page(&browser.client, &runner.base_url).await?;
        wait_finished(&browser.client).await?;
        let page = read_page(&browser.client).await?;
        let screenshot = save_screenshot(&browser.client, "job.png").await?;
        let console = browser.console().await?;
        anyhow::Ok((page, screenshot, console))
    }
    .await;
    browser.close().await?;
    let (page, screenshot, console) = outcome?;
    eprintln!("screenshot of the finished job: {}", screenshot.display());

    assert_final_stages(&page);
    assert_hostile_line_is_text(&page);
    assert!(
        page.terminal_lines.iter().any(|l| l.contains("INFO")),
        "log lines are shown with their level: {:#?}",
        page.terminal_lines
    );
    let severe = severe_console_messages(&console);
    assert!(
        severe.is_empty(),
        "errors in the browser console: {severe:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rebuilds_the_same_view_without_doubled_lines() -> Result<()> {
    let Some(paths) = browser_or_skip("reload_rebuilds_the_same_view_without_doubled_lines") else {
        return Ok(());
    };
    // Slow enough (about 2 s) that the first reload lands while it runs.
    let runner = start_runner("reload", "1")?;
    let browser = Browser::start(&paths).await?;

    let outcome = async {
        let client = &browser.client;
        run_job_from_page(client, &runner.base_url).await?;
        // Reload in the middle of the job: the view is rebuilt from the replay
        // and then follows the live stream.
        client
            .wait()
            .at_most(JOB_TIMEOUT)
            .for_element(Locator::Css(
                r#"#stages button[data-stage="pain_point_miner"][data-status="complete"]"#,
            ))
            .await?;
        client.refresh().await?;
        wait_finished(client).await?;
        let after_live = read_page(client).await?;

        // Reload once the job has finished: the whole history is replayed.
        client.refresh().await?;
        wait_finished(client).await?;
        let after_reload = read_page(client).await?;
        let console = browser.console().await?;
        anyhow::Ok((after_live, after_reload, console))
    }
    .await;
    browser.close().await?;
    let (after_live, after_reload, console) = outcome?;

    assert_final_stages(&after_live);
    assert_final_stages(&after_reload);
    assert_hostile_line_is_text(&after_live);
    assert_hostile_line_is_text(&after_reload);
    assert_eq!(
        after_reload.terminal_lines.len(),
        after_live.terminal_lines.len(),
        "the same number of terminal lines after a reload"
    );
    assert_eq!(after_reload, after_live, "the same view after a reload");
    let severe = severe_console_messages(&console);
    assert!(
        severe.is_empty(),
        "errors in the browser console: {severe:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_runner_restart_resumes_without_doubled_lines() -> Result<()> {
    let Some(paths) =
        browser_or_skip("reconnect_after_runner_restart_resumes_without_doubled_lines")
    else {
        return Ok(());
    };
    // About 4 s long, so that the runner can be killed in the middle of it.
    let mut runner = start_runner("reconnect", "2")?;
    let browser = Browser::start(&paths).await?;

    let outcome = async {
        let client = &browser.client;
        run_job_from_page(client, &runner.base_url).await?;
        client
            .wait()
            .at_most(JOB_TIMEOUT)
            .for_element(Locator::Css(
                r#"#stages button[data-stage="company_researcher"][data-status="running"]"#,
            ))
            .await?;
        // The stream breaks without an `end`: EventSource reconnects with
        // Last-Event-ID to the restarted runner, which replays what follows
        // (the job is now interrupted) and ends the stream.
        runner.kill_and_restart()?;
        wait_finished(client).await?;
        let resumed = read_page(client).await?;
        save_screenshot(client, "interrupted.png").await?;
        let connection = client
            .find(Locator::Id("connection"))
            .await?
            .attr("data-history")
            .await?
            .unwrap_or_default();

        client.refresh().await?;
        wait_finished(client).await?;
        let reloaded = read_page(client).await?;
        let console = browser.console().await?;
        anyhow::Ok((resumed, connection, reloaded, console))
    }
    .await;
    browser.close().await?;
    let (resumed, connection, reloaded, console) = outcome?;

    assert!(
        connection.split(' ').any(|s| s == "reconnecting") && connection.ends_with("finished"),
        "the connection went through reconnecting to finished: {connection:?}"
    );
    assert_eq!(
        resumed.pipeline_status, "error",
        "an interrupted job ends in error"
    );
    for (name, status) in [
        ("pain_point_miner", "complete"),
        ("star_selector", "complete"),
    ] {
        let button = resumed.stages.iter().find(|s| s.stage == name);
        assert_eq!(button.map(|b| b.status.as_str()), Some(status), "{name}");
    }
    let researcher = resumed
        .stages
        .iter()
        .find(|s| s.stage == "company_researcher");
    let researcher = researcher.expect("company_researcher is shown");
    assert_eq!(
        researcher.status, "error",
        "a stage cut off by the interruption does not stay running: {researcher:?}"
    );
    assert!(
        resumed.stages.iter().all(|s| s.status != "running"),
        "nothing still running: {:#?}",
        resumed.stages
    );
    assert_hostile_line_is_text(&resumed);
    assert_eq!(
        reloaded.terminal_lines.len(),
        resumed.terminal_lines.len(),
        "the same number of terminal lines after a reload"
    );
    assert_eq!(
        reloaded, resumed,
        "a reload shows what the reconnected page showed"
    );
    // While the runner was down the page's requests failed (network errors,
    // expected); anything else in the console is a fault of the page.
    let faults: Vec<&Value> = console
        .iter()
        .filter(|e| e["source"] != "network")
        .collect();
    let severe = severe_console_messages(&faults.into_iter().cloned().collect::<Vec<_>>());
    assert!(
        severe.is_empty(),
        "errors in the browser console: {severe:#?}"
    );
    Ok(())
}
