//! `GET /metrics` against the real thing: Debian's `prometheus` scrapes a
//! `pipeline-runner` process every second while jobs with failures, skips
//! and tokens run; its query API must agree with the jobs' own lines, a
//! runner restart between scrapes must not reset a counter, and `promtool
//! check metrics` must accept a scrape. Also the exposition's escaping of
//! hostile stage names. Needs `prometheus` and `promtool` (scripts/test.sh
//! installs them); without them the Prometheus tests fail unless
//! `PIPELINE_SKIP_PROMETHEUS=1`.
#![cfg(feature = "metrics")]

mod runner_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runner_common::{create_job, get_json, sh, wait_finished, TempDir, BIN};
use serde_json::Value;

/// How long Prometheus may take to show a sample (about 6 s measured).
const PROM_TIMEOUT: Duration = Duration::from_secs(60);

/// The stage duration buckets `docs/metrics.md` documents, in seconds.
const BUCKETS: [f64; 20] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1200.0, 1800.0, 2700.0, 3600.0,
];

/// `fetch` takes the job id's ms and tokens; `write` fails for `fail-*`,
/// is skipped for `skip-*`; `we"ird\nname` checks the escaping.
const SCRIPT: &str = r#"kind=${JOB_ID%%-*}; rest=${JOB_ID#*-}; ms=${rest%%-*}; tok=${rest#*-}
echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_start","layer":1,"layer_name":"fetch"}'
echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_complete","layer":1,"layer_name":"fetch","status":"success","duration_ms":'$ms',"metadata":{"tokens_used":'$tok'}}'
case $kind in
fail) echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_error","layer":2,"layer_name":"write","status":"error","duration_ms":3,"error":"boom","metadata":{"tokens_used":"lots"}}';;
skip) echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_skip","layer":2,"layer_name":"write","status":"skipped","duration_ms":0}';;
*)    echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_complete","layer":2,"layer_name":"write","status":"success","duration_ms":7}';;
esac
printf '%s\n' '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_complete","layer":3,"layer_name":"we\"ird\nname","status":"success","duration_ms":1}'"#;

/// A child process killed (and reaped) on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("PIPELINE_SKIP_PROMETHEUS").is_none() {
        panic!("{tool} not found: install Debian's prometheus (scripts/test.sh does), or set PIPELINE_SKIP_PROMETHEUS=1");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `pipeline-runner` on a fixed port (so that Prometheus's target stays
/// the same across a restart).
fn start_runner(port: u16, data: &Path) -> Guard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(["--max-running", "2", "--price-per-1k-tokens", "0.5", "--"])
        .args(sh(SCRIPT))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line:?}");
    Guard(child)
}

fn stop_runner(mut g: Guard) {
    let pid = nix::unistd::Pid::from_raw(g.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = g.0.wait().unwrap();
    assert!(status.success());
}

fn start_prometheus(dir: &Path, target_port: u16) -> (Guard, String) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: runner\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start prometheus");
    (Guard(child), format!("http://127.0.0.1:{port}"))
}

/// The value of a PromQL query that yields one sample, once it does.
async fn query(prom: &str, promql: &str) -> Option<f64> {
    let v = runner_common::client()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let v: Value = serde_json::from_slice(&v).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

/// Polls `promql` until it equals `want` (within 1e-9 relative).
async fn wait_value(prom: &str, promql: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + PROM_TIMEOUT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = query(prom, promql).await;
        if last.is_some_and(|v| (v - want).abs() <= 1e-9 * want.abs().max(1.0)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{promql}: wanted {want}, Prometheus says {last:?}");
}

/// What the jobs' own lines say: per stage, runs by status, durations (s)
/// of runs not skipped, and tokens.
#[derive(Default, Debug)]
struct Expected {
    runs: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Vec<f64>>,
    tokens: BTreeMap<String, f64>,
}

async fn expected_from_lines(url: &str, ids: &[String]) -> Expected {
    let mut e = Expected::default();
    for id in ids {
        let text = runner_common::client()
            .get(format!("{url}/api/jobs/{id}/log"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let status = match v["event"].as_str() {
                Some("layer_complete") => "complete",
                Some("layer_error") => "error",
                Some("layer_skip") => "skipped",
                _ => continue,
            };
            let stage = v["layer_name"].as_str().unwrap().to_owned();
            *e.runs.entry((stage.clone(), status.into())).or_default() += 1;
            if status != "skipped" {
                let s = v["duration_ms"].as_f64().unwrap() / 1000.0;
                e.durations.entry(stage.clone()).or_default().push(s);
            }
            if let Some(t) = v["metadata"]["tokens_used"].as_f64() {
                *e.tokens.entry(stage).or_default() += t;
            }
        }
    }
    e
}

/// Prometheus's `histogram_quantile` over classic buckets, for `values`.
fn histogram_quantile(q: f64, values: &[f64]) -> f64 {
    let mut cum = Vec::new();
    for b in BUCKETS {
        cum.push((b, values.iter().filter(|&&v| v <= b).count() as f64));
    }
    let total = values.len() as f64;
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (upper, count) in cum {
        if count >= rank {
            return lower + (upper - lower) * (rank - below) / (count - below);
        }
        lower = upper;
        below = count;
    }
    lower
}

async fn run_jobs(url: &str, ids: &[&str]) -> Vec<String> {
    for id in ids {
        create_job(url, Some(id)).await.unwrap();
    }
    for id in ids {
        let v = wait_finished(url, id).await;
        assert_eq!(v["state"], "finished", "{v}");
    }
    ids.iter().map(|s| s.to_string()).collect()
}

async fn scrape(url: &str) -> (String, String) {
    let resp = runner_common::client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, resp.text().await.unwrap())
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_is_classic_text_that_promtool_accepts_with_names_escaped() {
    if !have("promtool") {
        return;
    }
    let dir = TempDir::new("metrics-text");
    let port = free_port();
    let runner = start_runner(port, &dir.path().join("data"));
    let url = format!("http://127.0.0.1:{port}");
    run_jobs(&url, &["ok-120-10", "fail-30-5", "skip-8-0"]).await;
    let (ct, text) = scrape(&url).await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    assert!(
        text.contains("# TYPE pipeline_runner_stage_runs_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE pipeline_runner_stage_duration_seconds histogram\n"));
    // The stage name `we"ird<newline>name`, escaped as the format says.
    assert!(
        text.contains(
            r#"pipeline_runner_stage_runs_total{stage="we\"ird\nname",status="complete"} 3"#
        ),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("ok-120-10"), "a job id as a label: {line}");
    }
    assert!(
        text.contains(r#"pipeline_runner_jobs_finished_total{status="error"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("pipeline_runner_stage_estimated_cost_total{stage=\"fetch\"} 0.0075"),
        "{text}"
    );
    promtool_check(&text);
    stop_runner(runner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_runner_and_agrees_with_the_jobs_lines() {
    if !have("prometheus") || !have("promtool") {
        return;
    }
    let dir = TempDir::new("prometheus");
    let data = dir.path().join("data");
    let port = free_port();
    let runner = start_runner(port, &data);
    let url = format!("http://127.0.0.1:{port}");
    let (_prom, prom) = start_prometheus(dir.path(), port);
    let mut ids = run_jobs(
        &url,
        &[
            "ok-40-100",
            "ok-120-250",
            "fail-700-30",
            "skip-2600-0",
            "ok-90-1000",
            "fail-15-7",
        ],
    )
    .await;
    let e = expected_from_lines(&url, &ids).await;
    let fetch_runs = e.runs[&("fetch".to_owned(), "complete".to_owned())] as f64;
    wait_value(
        &prom,
        r#"sum(pipeline_runner_stage_runs_total{stage="fetch"})"#,
        fetch_runs,
    )
    .await;
    for ((stage, status), n) in &e.runs {
        if stage == "write" {
            let q =
                format!(r#"pipeline_runner_stage_runs_total{{stage="{stage}",status="{status}"}}"#);
            wait_value(&prom, &q, *n as f64).await;
        }
    }
    let p90 = histogram_quantile(0.9, &e.durations["fetch"]);
    wait_value(
        &prom,
        r#"histogram_quantile(0.9, pipeline_runner_stage_duration_seconds_bucket{stage="fetch"})"#,
        p90,
    )
    .await;
    let tokens = e.tokens["fetch"];
    assert_eq!(tokens, 1387.0);
    wait_value(
        &prom,
        r#"pipeline_runner_stage_tokens_total{stage="fetch"}"#,
        tokens,
    )
    .await;
    wait_value(
        &prom,
        r#"pipeline_runner_stage_estimated_cost_total{stage="fetch"}"#,
        tokens / 1000.0 * 0.5,
    )
    .await;
    wait_value(&prom, r#"pipeline_runner_jobs_started_total"#, 6.0).await;
    let (_, text) = scrape(&url).await;
    promtool_check(&text);
    // Two jobs gave `write` a tokens value that is not a number: ignored,
    // and reported once in the runner's log.
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    let reports = log
        .lines()
        .filter(|l| l.contains("tokens_used") && l.contains("not a number"))
        .count();
    assert_eq!(reports, 1, "{log}");

    // A restart between scrapes: the counters go on from where they were.
    stop_runner(runner);
    let runner = start_runner(port, &data);
    ids.extend(run_jobs(&url, &["ok-60-13"]).await);
    let e = expected_from_lines(&url, &ids).await;
    let fetch_runs = e.runs[&("fetch".to_owned(), "complete".to_owned())] as f64;
    assert_eq!(fetch_runs, 7.0);
    wait_value(
        &prom,
        r#"sum(pipeline_runner_stage_runs_total{stage="fetch"})"#,
        fetch_runs,
    )
    .await;
    wait_value(
        &prom,
        r#"pipeline_runner_stage_tokens_total{stage="fetch"}"#,
        1400.0,
    )
    .await;
    wait_value(&prom, r#"pipeline_runner_jobs_started_total"#, 7.0).await;
    wait_value(
        &prom,
        r#"sum(resets(pipeline_runner_stage_runs_total[5m])) + sum(resets(pipeline_runner_stage_tokens_total[5m])) + sum(resets(pipeline_runner_jobs_finished_total[5m])) + sum(resets(pipeline_runner_lines_stored_total[5m]))"#,
        0.0,
    )
    .await;
    let health = get_json(&format!("{url}/api/health")).await.unwrap();
    assert_eq!(health["jobs"], 7);
    stop_runner(runner);
}
