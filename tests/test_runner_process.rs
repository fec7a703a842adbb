//! The `pipeline-runner` binary as a process: its command line, SIGTERM,
//! SIGKILL, and a restart over the same data directory.
#![cfg(feature = "runner")]

mod runner_common;

use std::process::Command;

use runner_common::{
    assert_well_formed, collect, create_job, events_named, get_json, output_texts, sh,
    wait_finished, RunnerProcess, SseClient, TempDir, BIN,
};
use serde_json::Value;

#[tokio::test]
async fn restart_lists_replays_and_marks_interrupted_jobs() {
    let dir = TempDir::new("restart");
    let data = dir.path().join("data");
    let script = sh("echo \"start $JOB_ID\"; [ \"$JOB_ID\" = quick ] && exit 0; exec sleep 10");

    // First life: one job finishes, one is stopped by SIGTERM, one is left
    // running when the runner is killed outright.
    let mut first = RunnerProcess::start(&data, &script).unwrap();
    let quick = create_job(&first.url, Some("quick")).await.unwrap();
    wait_finished(&first.url, &quick).await;
    let quick_before = collect(&first.url, &quick, None).await;
    let termed = create_job(&first.url, Some("termed")).await.unwrap();
    let mut sse = SseClient::connect(&first.url, &termed, None).await.unwrap();
    sse.next().await.unwrap().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let s = first.terminate();
        (first, s)
    })
    .await
    .unwrap();
    assert!(status.1.unwrap().success());
    drop(status.0);

    let mut second = RunnerProcess::start(&data, &script).unwrap();
    let killed = create_job(&second.url, Some("killed")).await.unwrap();
    let mut sse = SseClient::connect(&second.url, &killed, None)
        .await
        .unwrap();
    assert_eq!(
        output_texts(&[sse.next().await.unwrap().unwrap()]),
        ["start killed"]
    );
    second.child.kill().unwrap(); // SIGKILL: no chance to record anything
    second.child.wait().unwrap();
    // As if the runner died in the middle of a write.
    let log = data.join("jobs/killed/events.jsonl");
    let mut text = std::fs::read(&log).unwrap();
    text.extend_from_slice(br#"{"seq":2,"data":"{\"type\":"#);
    std::fs::write(&log, text).unwrap();

    let third = RunnerProcess::start(&data, &script).unwrap();
    let list = get_json(&format!("{}/api/jobs", third.url)).await.unwrap();
    let states: Vec<(&str, &str, &str)> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job_id"].as_str().unwrap(),
                j["state"].as_str().unwrap(),
                j["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("killed", "interrupted", "error"),
            ("termed", "finished", "error"),
            ("quick", "finished", "error")
        ]
    );
    assert_eq!(collect(&third.url, &quick, None).await, quick_before);

    let termed_all = collect(&third.url, &termed, None).await;
    assert_well_formed(&termed_all, 0);
    assert_eq!(
        events_named(&termed_all, "pipeline_complete")[0]["error"],
        "runner shut down"
    );

    let killed_all = collect(&third.url, &killed, None).await;
    assert_well_formed(&killed_all, 0);
    assert_eq!(killed_all.len(), 3, "{killed_all:?}");
    assert_eq!(output_texts(&killed_all), ["start killed"]);
    let complete = events_named(&killed_all, "pipeline_complete");
    assert_eq!(complete[0]["status"], "error");
    assert!(complete[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("interrupted"));
    let resumed = collect(&third.url, &killed, Some(1)).await;
    assert_eq!(resumed, killed_all[1..]);

    // Ids stay taken across restarts.
    assert!(create_job(&third.url, Some("quick")).await.is_err());
}

#[tokio::test]
async fn the_default_command_is_the_reference_pipeline() {
    let dir = TempDir::new("default");
    let runner = RunnerProcess::start(&dir.path().join("data"), &[]).unwrap();
    let id = create_job(&runner.url, Some("ref-1")).await.unwrap();
    let all = collect(&runner.url, &id, None).await;
    assert_well_formed(&all, 0);
    let complete = events_named(&all, "pipeline_complete");
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0]["job_id"], "ref-1");
    assert_eq!(complete[0]["status"], "success");
    assert_eq!(events_named(&all, "layer_start").len(), 8);
    let detail = get_json(&format!("{}/api/jobs/{id}", runner.url))
        .await
        .unwrap();
    assert_eq!(detail["exit_code"], 0);
    let stages = detail["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 8);
    assert!(stages.iter().all(|s| s["status"] == "complete"));
    let layers: Vec<f64> = stages
        .iter()
        .map(|s| s["layer"].as_f64().unwrap())
        .collect();
    assert!(layers.windows(2).all(|w| w[0] <= w[1]), "{layers:?}");
}

#[test]
fn command_line() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for word in [
        "--bind",
        "--data-dir",
        "--allow-remote",
        "COMMAND",
        "JOB_ID",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }

    let remote = Command::new(BIN)
        .args(["--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(remote.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&remote.stderr).contains("no authentication"));

    let dir = TempDir::new("baddir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let bad = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(bad.stdout.is_empty(), "it must not claim to listen");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("data directory"), "{err}");

    let reference = Command::new(BIN)
        .args(["reference", "--speed", "0", "--job-id", "cli"])
        .output()
        .unwrap();
    assert!(reference.status.success());
    let lines: Vec<Value> = String::from_utf8(reference.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["event"] == "pipeline_complete" && l["job_id"] == "cli"));
}
