//! The live page in a real browser: headless Chromium, driven over WebDriver,
//! watches the runner run jobs that fail, get cancelled, print ANSI colours,
//! lose their runner, and are looked at on a phone-sized screen, in the dark
//! and from the keyboard alone.
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
//! Screenshots of each state go to `target/browser-screenshots/` for a
//! person to look at (the ones in `docs/` were taken from there).

#![cfg(feature = "runner")]

mod browser_common;

use std::time::Duration;

use anyhow::{Context, Result};
use browser_common::{browser_or_skip, save_screenshot, wait_js, Browser, Runner};
use fantoccini::key::Key;
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
/// How long a page may take to show something once asked.
const UI_TIMEOUT: Duration = Duration::from_secs(15);

/// The job's command: one hostile line of plain output, then the reference
/// pipeline (the runner binary's hidden `reference` subcommand).
fn job_command(speed: &str, extra: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("echo '{HOSTILE_LINE}'; exec \"$0\" reference --speed {speed} {extra}"),
        env!("CARGO_BIN_EXE_pipeline-runner").into(),
    ]
}

fn start_runner(test: &str, speed: &str) -> Result<Runner> {
    let command = job_command(speed, "--fail people_mapper --skip generator");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    Runner::start(test, &command)
}

/// What the page shows, read in one script call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct PageState {
    connection: String,
    outcome: String,
    reason: Option<String>,
    summary: String,
    stages: Vec<StageButton>,
    rows: Vec<String>,
    total: u64,
    failure: Option<Failure>,
    images: usize,
    scripts_in_terminal: usize,
    title: String,
    favicon: String,
    banner: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct StageButton {
    stage: String,
    status: String,
    class: String,
    history: String,
    text: String,
    label: String,
    error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Failure {
    title: String,
    error: String,
    lines: Vec<String>,
}

const READ_PAGE: &str = r##"
    const shown = (id) => { const n = document.getElementById(id); return n && !n.hidden && n.offsetParent !== null ? n : null; };
    const stages = [...document.querySelectorAll('#stages button[data-stage]')].map((b) => {
        const err = b.parentElement.querySelector(".stage-error");
        return {
            stage: b.dataset.stage,
            status: b.dataset.status || "",
            class: b.className,
            history: b.dataset.history || "",
            text: [...b.children].map((part) => part.textContent).join(" "),
            label: b.getAttribute("aria-label") || "",
            error: err && !err.hidden ? err.textContent : null,
        };
    });
    const terminal = document.getElementById("terminal");
    const rows = [...terminal.querySelectorAll(".line")].filter((l) => !l.hidden).map((l) => l.textContent);
    const failure = shown("failure");
    return {
        connection: document.getElementById("connection").dataset.state,
        outcome: document.getElementById("job-outcome").dataset.status,
        reason: shown("job-reason") ? document.getElementById("job-reason").textContent : null,
        summary: document.getElementById("job-summary").textContent,
        stages,
        rows,
        total: Number(terminal.dataset.total || 0),
        failure: failure ? {
            title: document.getElementById("failure-title").textContent,
            error: document.getElementById("failure-error").textContent,
            lines: [...document.querySelectorAll('#failure-lines .line')].map((l) => l.textContent),
        } : null,
        images: document.querySelectorAll("img").length,
        scripts_in_terminal: document.querySelectorAll('#terminal script, #terminal img, #failure script').length,
        title: document.title,
        favicon: document.getElementById("favicon").getAttribute("href"),
        banner: !document.getElementById("banner").hidden,
    };
"##;

async fn read_page(client: &Client) -> Result<PageState> {
    let value = client.execute(READ_PAGE, vec![]).await?;
    serde_json::from_value(value).context("reading the page state")
}

/// Scrolls the terminal to its first line and waits until it is drawn. It
/// scrolls again at each check, as a user would: a terminal still filling
/// after a reload may not be tall enough yet for the first scroll to stay.
async fn scroll_terminal_to_top(client: &Client) -> Result<()> {
    wait_js(
        client,
        r#"const t = document.getElementById("terminal");
           if (t.scrollTop !== 0) { t.scrollTop = 0; t.dispatchEvent(new Event("scroll")); }
           const r = document.querySelector('#terminal .line[data-seq="1"]');
           return !!r && !r.classList.contains("placeholder");"#,
        UI_TIMEOUT,
        "line 1 drawn at the top of the terminal",
    )
    .await?;
    Ok(())
}

/// Waits until the connection indicator says the job's stream has finished
/// and the stage history fetched after its end (the "usual" durations) is in.
async fn wait_finished(client: &Client) -> Result<()> {
    client
        .wait()
        .at_most(JOB_TIMEOUT)
        .for_element(Locator::Css(r#"#connection[data-state="finished"]"#))
        .await
        .context("the page never showed the job as finished")?;
    wait_js(
        client,
        "return document.documentElement.dataset.history === 'fresh'",
        UI_TIMEOUT,
        "the stage history after the job's end",
    )
    .await?;
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
/// failed network requests (expected while a runner is down).
fn severe_console_messages(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
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
        // Every stage of this job was entered (the reference pipeline starts
        // a stage before it skips it): it went through running, and the
        // page recorded that even if it passed too quickly to poll.
        assert_eq!(
            button.history,
            format!("pending running {status}"),
            "states {name} went through"
        );
        if status != "skipped" {
            assert!(
                looks_like_duration(&button.text),
                "{name} ({status}) shows no duration: {:?}",
                button.text
            );
        }
        let word = if status == "error" { "failed" } else { status };
        assert!(
            button.label.starts_with(name) && button.label.contains(word),
            "the accessible name of {name} says {word}: {:?}",
            button.label
        );
    }
    let failed = page.stages.iter().find(|s| s.stage == "people_mapper");
    let failed = failed.expect("people_mapper is shown");
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(
        !error.trim().is_empty(),
        "the failed stage shows its error on screen: {failed:?}"
    );
    assert_eq!(page.outcome, "partial", "job outcome");
    assert_eq!(page.connection, "finished", "connection state");
}

fn assert_hostile_line_is_text(page: &PageState) {
    let hostile = page
        .rows
        .iter()
        .filter(|line| line.contains(HOSTILE_LINE))
        .count();
    assert_eq!(
        hostile, 1,
        "the line {HOSTILE_LINE:?} shows once, as text: {:#?}",
        page.rows
    );
    assert_eq!(
        page.images, 0,
        "no <img> element was created from pipeline output"
    );
    assert_eq!(page.scripts_in_terminal, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_stage_shows_its_reason_and_every_state() -> Result<()> {
    let Some(paths) = browser_or_skip("failed_stage_shows_its_reason_and_every_state") else {
        return Ok(());
    };
    let runner = start_runner("states", "0.5")?;
    let browser = Browser::start(&paths).await?;

    // Collect everything first, close the browser, then assert.
    let outcome = async {
        let client = &browser.client;
        run_job_from_page(client, &runner.base_url).await?;
        wait_finished(client).await?;
        wait_js(
            client,
            "return document.querySelectorAll('#failure-lines .line').length > 0",
            UI_TIMEOUT,
            "the lines around the failure",
        )
        .await?;
        let page = read_page(client).await?;
        save_screenshot(client, "page.png").await?;
        // Clicking the failed stage shows its details and its own lines.
        client
            .find(Locator::Css(r#"button[data-stage="people_mapper"]"#))
            .await?
            .click()
            .await?;
        wait_js(
            client,
            r#"return document.getElementById("stage-detail").dataset.stage === "people_mapper"
                && [...document.querySelectorAll('#terminal .line')].filter((l) => !l.hidden).length > 0
                && [...document.querySelectorAll('#terminal .line')].filter((l) => !l.hidden).every((l) => l.textContent.includes("people_mapper"))
                && document.querySelectorAll('#stage-detail-lines .line').length > 0"#,
            UI_TIMEOUT,
            "the stage's details and lines",
        )
        .await?;
        let detail = client
            .execute(
                r#"return {
                    fields: Object.fromEntries([...document.querySelectorAll('#stage-detail-fields dd')].map((d) => [d.dataset.field, d.textContent])),
                    rows: [...document.querySelectorAll('#terminal .line')].filter((l) => !l.hidden).map((l) => l.textContent),
                    hash: location.hash,
                }"#,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-failed-stage.png").await?;
        scroll_terminal_to_top(client).await.ok();
        // The deep link to a stage opens the same view from scratch.
        let hash = detail["hash"].as_str().unwrap_or_default().to_owned();
        client.goto(&format!("{}/{hash}", runner.base_url)).await?;
        client.refresh().await?;
        wait_js(
            client,
            r#"return document.getElementById("stage-detail").dataset.stage === "people_mapper" && !document.getElementById("stage-detail").hidden"#,
            UI_TIMEOUT,
            "the stage deep link",
        )
        .await?;
        let console = browser.console().await?;
        anyhow::Ok((page, detail, console))
    }
    .await;
    browser.close().await?;
    let (page, detail, console) = outcome?;

    assert_final_stages(&page);
    let failure = page.failure.as_ref().expect("a failure box on screen");
    assert_eq!(failure.title, "people_mapper failed");
    assert!(!failure.error.is_empty(), "{failure:?}");
    assert!(
        failure.lines.iter().any(|l| l.contains("stage failed")),
        "the lines around the failure include its layer_error: {failure:?}"
    );
    assert!(page.title.contains("partial"), "title {:?}", page.title);
    assert_eq!(page.favicon, "favicon-partial.svg");
    assert!(
        page.summary.contains("UTC"),
        "start time with its zone: {:?}",
        page.summary
    );
    let fields = &detail["fields"];
    assert_eq!(fields["status"], "failed", "{detail}");
    assert!(
        fields["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{detail}"
    );
    let rows: Vec<&str> = detail["rows"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.contains("people_mapper")),
        "the terminal shows the stage's lines only: {rows:#?}"
    );
    assert!(detail["hash"]
        .as_str()
        .unwrap_or_default()
        .ends_with("/stages/people_mapper"));
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
        client
            .wait()
            .at_most(JOB_TIMEOUT)
            .for_element(Locator::Css(
                r#"#stages button[data-stage="pain_point_miner"][data-status="complete"]"#,
            ))
            .await?;
        client.refresh().await?;
        wait_finished(client).await?;
        scroll_terminal_to_top(client).await?;
        let after_live = read_page(client).await?;

        client.refresh().await?;
        wait_finished(client).await?;
        scroll_terminal_to_top(client).await?;
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
        after_reload.total, after_live.total,
        "the same number of lines"
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
async fn runner_killed_shows_a_banner_that_clears_after_restart() -> Result<()> {
    let Some(paths) = browser_or_skip("runner_killed_shows_a_banner_that_clears_after_restart")
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
        runner.kill();
        wait_js(
            client,
            r#"return !document.getElementById("banner").hidden && document.getElementById("connection").dataset.state === "down""#,
            UI_TIMEOUT,
            "the runner-unreachable banner",
        )
        .await?;
        // While it is down, the running bar stops growing.
        let bar = r#"const b = document.querySelector('.stage.running .bar'); return b ? b.style.width : "none";"#;
        let before = client.execute(bar, vec![]).await?;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let after = client.execute(bar, vec![]).await?;
        let down = read_page(client).await?;
        save_screenshot(client, "page-unreachable.png").await?;

        runner.restart()?;
        wait_finished(client).await?;
        wait_js(
            client,
            r#"return document.getElementById("banner").hidden"#,
            UI_TIMEOUT,
            "the banner to clear",
        )
        .await?;
        let resumed = read_page(client).await?;
        let history = client
            .find(Locator::Id("connection"))
            .await?
            .attr("data-history")
            .await?
            .unwrap_or_default();
        client.refresh().await?;
        wait_finished(client).await?;
        let reloaded = read_page(client).await?;
        let console = browser.console().await?;
        anyhow::Ok((before, after, down, resumed, history, reloaded, console))
    }
    .await;
    browser.close().await?;
    let (before, after, down, resumed, history, reloaded, console) = outcome?;

    assert!(down.banner, "the banner is shown while the runner is down");
    assert_eq!(
        before, after,
        "a running bar does not grow while the runner is down"
    );
    assert!(
        history.split(' ').any(|s| s == "down") && history.ends_with("finished"),
        "the connection went through down to finished: {history:?}"
    );
    assert!(!resumed.banner, "the banner cleared");
    assert_eq!(resumed.outcome, "interrupted", "an interrupted job says so");
    assert!(
        resumed.reason.as_deref().is_some_and(|r| !r.is_empty()),
        "{resumed:?}"
    );
    for (name, status) in [
        ("pain_point_miner", "complete"),
        ("star_selector", "complete"),
    ] {
        let button = resumed.stages.iter().find(|s| s.stage == name);
        assert_eq!(button.map(|b| b.status.as_str()), Some(status), "{name}");
    }
    assert!(
        resumed.stages.iter().all(|s| s.status != "running"),
        "nothing still running: {:#?}",
        resumed.stages
    );
    assert_eq!(
        reloaded.stages, resumed.stages,
        "a reload shows the same stages"
    );
    assert_eq!(reloaded.outcome, resumed.outcome);
    let severe = severe_console_messages(&console);
    assert!(
        severe.is_empty(),
        "errors in the browser console: {severe:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_commands_and_unknown_jobs_say_why() -> Result<()> {
    let Some(paths) = browser_or_skip("failing_commands_and_unknown_jobs_say_why") else {
        return Ok(());
    };
    let exits = Runner::start("exit3", &["sh", "-c", "echo about to fail; exit 3"])?;
    let missing = Runner::start("nostart", &["/nonexistent/pipeline-command"])?;
    let browser = Browser::start(&paths).await?;

    let outcome = async {
        let client = &browser.client;
        run_job_from_page(client, &exits.base_url).await?;
        wait_finished(client).await?;
        // The terminal fills in after the job's end shows: wait for its line.
        wait_js(
            client,
            "return [...document.querySelectorAll('#terminal .line:not(.placeholder)')].some((l) => l.textContent.includes('about to fail'))",
            UI_TIMEOUT,
            "the job's output line in the terminal",
        )
        .await?;
        let exited = read_page(client).await?;
        run_job_from_page(client, &missing.base_url).await?;
        wait_finished(client).await?;
        wait_js(
            client,
            "return document.querySelectorAll('#terminal .line:not(.placeholder)').length > 0",
            UI_TIMEOUT,
            "the job's one line in the terminal",
        )
        .await?;
        let not_started = read_page(client).await?;
        save_screenshot(client, "page-cannot-start.png").await?;
        client
            .goto(&format!("{}/#/jobs/no-such-job", exits.base_url))
            .await?;
        wait_js(
            client,
            r#"return document.getElementById("connection").dataset.state === "unavailable""#,
            UI_TIMEOUT,
            "no such job",
        )
        .await?;
        let unknown = read_page(client).await?;
        // It stays that way: no reconnect loop.
        let requests = r#"return performance.getEntriesByType("resource").filter((e) => e.name.includes("no-such-job")).length"#;
        let first = client.execute(requests, vec![]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = client.execute(requests, vec![]).await?;
        let still = read_page(client).await?;
        let console = browser.console().await?;
        anyhow::Ok((exited, not_started, unknown, still, first, later, console))
    }
    .await;
    browser.close().await?;
    let (exited, not_started, unknown, still, first, later, console) = outcome?;

    assert_eq!(exited.outcome, "error");
    let reason = exited.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("exit status: 3"),
        "reason on screen: {reason:?}"
    );
    assert!(
        exited.rows.iter().any(|r| r.contains("about to fail")),
        "{:#?}",
        exited.rows
    );
    assert_eq!(not_started.outcome, "error");
    let reason = not_started.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("cannot start"),
        "reason on screen: {reason:?}"
    );
    assert!(
        !not_started.rows.is_empty(),
        "the terminal is not empty: {not_started:?}"
    );
    assert!(
        unknown
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("No such job"),
        "{unknown:?}"
    );
    assert_eq!(still.connection, "unavailable");
    assert_eq!(first, later, "no more requests for an unknown job");
    let severe: Vec<String> = severe_console_messages(&console)
        .into_iter()
        .filter(|m| !m.contains("404"))
        .collect();
    assert!(
        severe.is_empty(),
        "errors in the browser console: {severe:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_asks_first_and_shows_cancelled() -> Result<()> {
    let Some(paths) = browser_or_skip("cancel_asks_first_and_shows_cancelled") else {
        return Ok(());
    };
    let command = job_command("4", "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let runner = Runner::start("cancel", &command)?;
    let browser = Browser::start(&paths).await?;

    let outcome = async {
        let client = &browser.client;
        run_job_from_page(client, &runner.base_url).await?;
        client
            .wait()
            .at_most(JOB_TIMEOUT)
            .for_element(Locator::Css(r#"#stages button[data-status="running"]"#))
            .await?;
        let cancel = client.find(Locator::Id("cancel")).await?;
        cancel.click().await?;
        wait_js(client, "return document.getElementById('confirm-cancel').open", UI_TIMEOUT, "the confirm dialog").await?;
        save_screenshot(client, "page-confirm-cancel.png").await?;
        client.find(Locator::Id("confirm-keep")).await?.click().await?;
        let kept = client
            .execute("return [document.getElementById('confirm-cancel').open, document.getElementById('job-outcome').dataset.status]", vec![])
            .await?;
        cancel.click().await?;
        wait_js(client, "return document.getElementById('confirm-cancel').open", UI_TIMEOUT, "the confirm dialog").await?;
        client.find(Locator::Id("confirm-yes")).await?.click().await?;
        wait_finished(client).await?;
        let page = read_page(client).await?;
        save_screenshot(client, "page-cancelled.png").await?;
        let console = browser.console().await?;
        anyhow::Ok((kept, page, console))
    }
    .await;
    browser.close().await?;
    let (kept, page, console) = outcome?;

    assert_eq!(
        kept,
        serde_json::json!([false, "running"]),
        "keeping it closes the dialog only"
    );
    assert_eq!(page.outcome, "cancelled", "{page:?}");
    assert!(page.title.contains("cancelled"));
    assert_eq!(page.favicon, "favicon-cancelled.svg");
    assert!(
        page.stages.iter().any(|s| s.status == "cancelled"),
        "the running stage is cancelled: {:#?}",
        page.stages
    );
    assert!(
        page.stages
            .iter()
            .all(|s| s.status != "error" && s.status != "running"),
        "nothing failed or still running: {:#?}",
        page.stages
    );
    assert!(page.failure.is_none(), "a cancel is not a failure");
    let severe = severe_console_messages(&console);
    assert!(
        severe.is_empty(),
        "errors in the browser console: {severe:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansi_colours_render_and_hostile_text_stays_text() -> Result<()> {
    let Some(paths) = browser_or_skip("ansi_colours_render_and_hostile_text_stays_text") else {
        return Ok(());
    };
    let script = r#"printf '\033[1;31mbold red\033[0m and plain\n'
printf 'progress 10%%\rprogress 50%%\rprogress 100%%\n'
printf '\033[2K\033[32m<script>window.pwned=1</script>\033[0m\n'
printf '\033[44m<img src=x onerror="window.pwned=2">\033[0m\n'
printf '\033[38;5;208morange\033[0m \033]8;;javascript:alert(1)\007link\033]8;;\007\n'"#;
    let runner = Runner::start("ansi", &["sh", "-c", script])?;
    let browser = Browser::start(&paths).await?;

    let outcome = async {
        let client = &browser.client;
        run_job_from_page(client, &runner.base_url).await?;
        wait_finished(client).await?;
        scroll_terminal_to_top(client).await?;
        let found = client
            .execute(
                r#"const t = document.getElementById("terminal");
                const red = [...t.querySelectorAll("span.ansi-red-fg.ansi-bold")].map((s) => s.textContent);
                return {
                    red,
                    rows: [...t.querySelectorAll(".line")].map((l) => l.textContent),
                    styled: t.querySelectorAll("[style] [style], .msg [style]").length,
                    elements: [...t.querySelectorAll(".msg *")].map((e) => e.tagName),
                    pwned: window.pwned === undefined ? null : window.pwned,
                    links: t.querySelectorAll(".msg a").length,
                };"#,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-ansi.png").await?;
        let console = browser.console().await?;
        anyhow::Ok((found, console))
    }
    .await;
    browser.close().await?;
    let (found, console) = outcome?;

    assert_eq!(found["red"], serde_json::json!(["bold red"]), "{found:#}");
    let rows: Vec<&str> = found["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        rows.iter().any(|r| r.ends_with("progress 100%")),
        "{rows:#?}"
    );
    assert!(
        !rows.iter().any(|r| r.contains("10%")),
        "a \\r replaces the line: {rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("<script>window.pwned=1</script>")),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|r| r.contains("<img src=x")), "{rows:#?}");
    assert!(
        !rows
            .iter()
            .any(|r| r.contains('\u{1b}') || r.contains("[31m")),
        "{rows:#?}"
    );
    assert_eq!(
        found["pwned"],
        Value::Null,
        "no pipeline text ran as script"
    );
    assert_eq!(
        found["styled"], 0,
        "no style attributes (the CSP would block them)"
    );
    assert_eq!(found["links"], 0);
    assert!(
        found["elements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t == "SPAN"),
        "only spans from the ANSI library: {found:#}"
    );
    let severe = severe_console_messages(&console);
    assert!(
        severe.is_empty(),
        "errors in the browser console (CSP included): {severe:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_width_shows_the_job_first_without_overflow() -> Result<()> {
    let Some(paths) = browser_or_skip("phone_width_shows_the_job_first_without_overflow") else {
        return Ok(());
    };
    let runner = start_runner("phone", "0.3")?;
    let browser = Browser::start_phone(&paths, 390, 844).await?;

    let outcome = async {
        let client = &browser.client;
        // A few jobs in the list, so that it has something to push down.
        for _ in 0..3 {
            runner.create_job().await?;
        }
        run_job_from_page(client, &runner.base_url).await?;
        wait_finished(client).await?;
        let layout = client
            .execute(
                r#"const top = (s) => document.querySelector(s).getBoundingClientRect().top + scrollY;
                const ticks = [...document.querySelectorAll('#axis .tick, .bar-label')].filter((t) => t.offsetParent !== null && t.textContent);
                const boxes = [...document.querySelectorAll('#axis .tick')].map((t) => t.getBoundingClientRect());
                let overlaps = 0;
                for (let i = 1; i < boxes.length; i++) if (boxes[i].left < boxes[i - 1].right) overlaps++;
                return {
                    width: innerWidth,
                    scroll_width: document.documentElement.scrollWidth,
                    job_top: top('#job-view'),
                    stages_top: top('#stages'),
                    list_top: top(".jobs"),
                    tick_overlaps: overlaps,
                    smallest_label_px: Math.min(...ticks.map((t) => parseFloat(getComputedStyle(t).fontSize))),
                };"#,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-phone.png").await?;
        anyhow::Ok(layout)
    }
    .await;
    browser.close().await?;
    let layout = outcome?;

    assert_eq!(layout["width"], 390, "{layout:#}");
    assert!(
        layout["scroll_width"].as_f64().unwrap() <= 390.0,
        "no horizontal overflow: {layout:#}"
    );
    let job_top = layout["job_top"].as_f64().unwrap();
    assert!(
        job_top < 200.0,
        "the job view starts near the top: {layout:#}"
    );
    assert!(
        job_top < layout["list_top"].as_f64().unwrap(),
        "the job comes before the list: {layout:#}"
    );
    assert!(
        layout["stages_top"].as_f64().unwrap() < 844.0,
        "stages on the first screen: {layout:#}"
    );
    assert_eq!(
        layout["tick_overlaps"], 0,
        "timeline labels do not collide: {layout:#}"
    );
    assert!(
        layout["smallest_label_px"].as_f64().unwrap() >= 11.0,
        "{layout:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_reaches_stages_and_cancel_before_the_job_list() -> Result<()> {
    let Some(paths) = browser_or_skip("keyboard_reaches_stages_and_cancel_before_the_job_list")
    else {
        return Ok(());
    };
    let command = job_command("4", "");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let runner = Runner::start("keyboard", &command)?;
    let browser = Browser::start(&paths).await?;

    let outcome = async {
        let client = &browser.client;
        for _ in 0..6 {
            runner.create_job().await?;
        }
        client.goto(&format!("{}/", runner.base_url)).await?;
        wait_js(client, "return document.querySelectorAll('.job-link').length >= 6", UI_TIMEOUT, "the job list").await?;
        // Run from the keyboard: focus stays on Run.
        client.execute("document.getElementById('run').focus()", vec![]).await?;
        client.active_element().await?.send_keys(&Key::Enter.to_string()).await?;
        wait_js(client, "return location.hash.startsWith('#/jobs/')", UI_TIMEOUT, "the new job").await?;
        client
            .wait()
            .at_most(JOB_TIMEOUT)
            .for_element(Locator::Css(r#"#stages button[data-status="running"]"#))
            .await?;
        let focus_after_run = client.execute("return document.activeElement.id", vec![]).await?;
        // From the top of a freshly loaded page, Tab by Tab.
        client.refresh().await?;
        client
            .wait()
            .at_most(JOB_TIMEOUT)
            .for_element(Locator::Css(r#"#stages button[data-status="running"]"#))
            .await?;
        let mut order = Vec::new();
        for _ in 0..40 {
            client.active_element().await?.send_keys(&Key::Tab.to_string()).await?;
            let what = client
                .execute(
                    r#"const a = document.activeElement;
                    if (a.classList.contains("job-link")) return "job-link";
                    if (a.dataset.stage) return "stage:" + a.dataset.stage;
                    return a.id || a.className || a.tagName;"#,
                    vec![],
                )
                .await?;
            let what = what.as_str().unwrap_or_default().to_owned();
            let done = what == "job-link";
            order.push(what);
            if done {
                break;
            }
        }
        let names = client
            .execute(
                r#"return [...document.querySelectorAll('#stages button')].map((b) => b.getAttribute("aria-label"));"#,
                vec![],
            )
            .await?;
        let live = client
            .execute("const a = document.getElementById('announcer'); return [a.getAttribute('aria-live'), a.textContent]", vec![])
            .await?;
        anyhow::Ok((focus_after_run, order, names, live))
    }
    .await;
    browser.close().await?;
    let (focus_after_run, order, names, live) = outcome?;

    assert_eq!(
        focus_after_run, "run",
        "focus stays on Run after pressing it"
    );
    assert_eq!(
        order.first().map(String::as_str),
        Some("skip-link"),
        "{order:?}"
    );
    let first_job_link = order
        .iter()
        .position(|w| w == "job-link")
        .unwrap_or(order.len());
    let first_stage = order.iter().position(|w| w.starts_with("stage:"));
    let cancel = order.iter().position(|w| w == "cancel");
    assert!(
        first_stage.is_some_and(|i| i < first_job_link && i < 15),
        "stage buttons come early, before the job list: {order:?}"
    );
    assert!(
        cancel.is_some_and(|i| i < first_job_link && i < 10),
        "Cancel comes early, before the job list: {order:?}"
    );
    for name in names.as_array().unwrap() {
        let name = name.as_str().unwrap_or_default();
        assert!(
            [
                "pending",
                "running",
                "complete",
                "failed",
                "skipped",
                "cancelled",
                "did not run"
            ]
            .iter()
            .any(|s| name.contains(s)),
            "a stage's accessible name includes its status: {name:?}"
        );
    }
    assert_eq!(live[0], "polite");
    assert!(
        !live[1].as_str().unwrap_or_default().is_empty(),
        "state changes are announced: {live}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_theme_follows_the_system() -> Result<()> {
    let Some(paths) = browser_or_skip("dark_theme_follows_the_system") else {
        return Ok(());
    };
    let runner = start_runner("dark", "0.3")?;
    let browser = Browser::start_with(
        &paths,
        &[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ],
    )
    .await?;

    let outcome = async {
        let client = &browser.client;
        run_job_from_page(client, &runner.base_url).await?;
        wait_finished(client).await?;
        let theme = client
            .execute(
                r#"return [matchMedia("(prefers-color-scheme: dark)").matches, getComputedStyle(document.body).backgroundColor]"#,
                vec![],
            )
            .await?;
        save_screenshot(client, "page-dark.png").await?;
        anyhow::Ok(theme)
    }
    .await;
    browser.close().await?;
    let theme = outcome?;
    assert_eq!(theme[0], true, "the browser prefers dark: {theme}");
    assert_eq!(theme[1], "rgb(13, 17, 23)", "the page follows: {theme}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_level_filter_deep_links_and_download() -> Result<()> {
    let Some(paths) = browser_or_skip("search_level_filter_deep_links_and_download") else {
        return Ok(());
    };
    let runner = start_runner("search", "0.3")?;
    let browser = Browser::start(&paths).await?;

    let outcome = async {
        let client = &browser.client;
        let id = run_job_from_page(client, &runner.base_url).await?;
        wait_finished(client).await?;
        // Search the whole log; next jumps to the second match.
        client
            .execute(
                "document.getElementById('search-q').value = 'people_mapper'; document.getElementById('search-next').click();",
                vec![],
            )
            .await?;
        let first = wait_js(
            client,
            "const c = document.querySelector('#terminal .line.current'); const n = document.getElementById('search-count'); return c && Number(n.dataset.count) > 1 ? [n.textContent, c.dataset.seq, c.textContent] : null;",
            UI_TIMEOUT,
            "the first match",
        )
        .await?;
        client.find(Locator::Id("search-next")).await?.click().await?;
        let second = wait_js(
            client,
            &format!("const c = document.querySelector('#terminal .line.current'); return c && c.dataset.seq !== '{}' ? [document.getElementById('search-count').textContent, c.dataset.seq, c.textContent] : null;", first[1].as_str().unwrap_or_default()),
            UI_TIMEOUT,
            "the second match",
        )
        .await?;
        // Only error log lines.
        client
            .execute(
                "const l = document.getElementById('level'); l.value = 'error'; l.dispatchEvent(new Event('change'));",
                vec![],
            )
            .await?;
        let errors = wait_js(
            client,
            "const rows = [...document.querySelectorAll('#terminal .line')].filter((l) => !l.hidden); return rows.length && rows.every((l) => l.textContent.includes('ERROR')) ? rows.map((l) => l.textContent) : null;",
            UI_TIMEOUT,
            "only error log lines",
        )
        .await?;
        // A deep link to a line, from a fresh load.
        client
            .goto(&format!("{}/#/jobs/{id}/lines/3", runner.base_url))
            .await?;
        client.refresh().await?;
        let linked = wait_js(
            client,
            "const c = document.querySelector('#terminal .line.current'); return c ? c.dataset.seq : null;",
            UI_TIMEOUT,
            "the linked line",
        )
        .await?;
        let download = client
            .execute("return document.getElementById('download').getAttribute('href')", vec![])
            .await?;
        let reply = reqwest::get(format!(
            "{}/{}",
            runner.base_url,
            download.as_str().unwrap_or_default()
        ))
        .await?;
        let disposition = reply
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = reply.bytes().await?;
        anyhow::Ok((id, first, second, errors, linked, download, disposition, body))
    }
    .await;
    browser.close().await?;
    let (id, first, second, errors, linked, download, disposition, body) = outcome?;

    assert!(
        first[0].as_str().unwrap_or_default().starts_with("1 of "),
        "{first}"
    );
    assert!(
        first[2]
            .as_str()
            .unwrap_or_default()
            .contains("people_mapper"),
        "{first}"
    );
    assert!(
        second[0].as_str().unwrap_or_default().starts_with("2 of "),
        "{second}"
    );
    assert!(
        second[2]
            .as_str()
            .unwrap_or_default()
            .contains("people_mapper"),
        "{second}"
    );
    let errors: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors.iter().all(|l| l.contains("ERROR")),
        "only error log lines: {errors:#?}"
    );
    assert_eq!(linked, "3", "the deep link shows line 3");
    assert_eq!(download, format!("api/jobs/{id}/log"));
    assert!(disposition.contains("attachment"), "{disposition:?}");
    let lines = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert!(lines > 10, "the whole log downloads: {lines} lines");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_list_is_paged_searchable_filtered_and_live() -> Result<()> {
    let Some(paths) = browser_or_skip("job_list_is_paged_searchable_filtered_and_live") else {
        return Ok(());
    };
    let runner = Runner::start("list", &["sh", "-c", "echo hi"])?;
    let browser = Browser::start(&paths).await?;

    let outcome = async {
        let client = &browser.client;
        let mut ids = Vec::new();
        for _ in 0..55 {
            ids.push(runner.create_job().await?);
        }
        client.goto(&format!("{}/", runner.base_url)).await?;
        let read = "return { ids: [...document.querySelectorAll('.job-link')].map((a) => a.querySelector('.job-name').textContent), total: document.getElementById('jobs-total').textContent, older: !document.getElementById('jobs-older').disabled, meta: (document.querySelector('.job-meta') || {}).textContent || '' }";
        let first = wait_js(
            client,
            &format!("const r = (() => {{ {read} }})(); return r.ids.length === 50 ? r : null;"),
            UI_TIMEOUT,
            "the first page of 50",
        )
        .await?;
        client.find(Locator::Id("jobs-older")).await?.click().await?;
        let older = wait_js(
            client,
            &format!("const r = (() => {{ {read} }})(); return r.ids.length === 5 ? r : null;"),
            UI_TIMEOUT,
            "the second page",
        )
        .await?;
        client.find(Locator::Id("jobs-newer")).await?.click().await?;
        wait_js(
            client,
            "return document.querySelectorAll('.job-link').length === 50",
            UI_TIMEOUT,
            "back to the first page",
        )
        .await?;
        // A new job shows up on its own, on top.
        let new_id = runner.create_job().await?;
        let live = wait_js(
            client,
            &format!("const r = (() => {{ {read} }})(); return r.ids[0] === '{new_id}' ? r : null;"),
            UI_TIMEOUT,
            "the new job at the top of the list",
        )
        .await?;
        // Search by id, then a status filter nothing matches.
        let wanted = ids[17].clone();
        client
            .execute(
                "const q = document.getElementById('jobs-q'); q.value = arguments[0]; q.dispatchEvent(new Event('input'));",
                vec![wanted.clone().into()],
            )
            .await?;
        let searched = wait_js(
            client,
            &format!("const r = (() => {{ {read} }})(); return r.ids.length === 1 ? r : null;"),
            UI_TIMEOUT,
            "one job matching the search",
        )
        .await?;
        client
            .execute(
                "const q = document.getElementById('jobs-q'); q.value = ''; q.dispatchEvent(new Event('input')); const s = document.getElementById('jobs-status'); s.value = 'running'; s.dispatchEvent(new Event('change'));",
                vec![],
            )
            .await?;
        let none = wait_js(
            client,
            "const n = document.getElementById('no-jobs'); return !n.hidden && document.querySelectorAll('.job-link').length === 0 ? n.textContent : null;",
            UI_TIMEOUT,
            "no running jobs",
        )
        .await?;
        anyhow::Ok((ids, first, older, new_id, live, wanted, searched, none))
    }
    .await;
    browser.close().await?;
    let (ids, first, older, new_id, live, wanted, searched, none) = outcome?;

    let shown: Vec<&str> = first["ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let newest: Vec<&str> = ids.iter().rev().take(50).map(String::as_str).collect();
    assert_eq!(shown, newest, "newest first, full ids");
    assert_eq!(first["total"], "(55)");
    assert_eq!(first["older"], true);
    let meta = first["meta"].as_str().unwrap_or_default();
    assert!(
        meta.contains("UTC") && meta.contains("lines"),
        "start time, duration, lines: {meta:?}"
    );
    let rest: Vec<&str> = older["ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let oldest: Vec<&str> = ids.iter().take(5).rev().map(String::as_str).collect();
    assert_eq!(rest, oldest, "the second page holds the oldest five");
    assert_eq!(live["ids"][0], new_id.as_str());
    assert_eq!(searched["ids"], serde_json::json!([wanted]));
    assert_eq!(none, "No jobs match.");
    Ok(())
}
