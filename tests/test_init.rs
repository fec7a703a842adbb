//! SPEC section 6 through `init()`: the reference pipeline run as a real
//! process (`pipeline-runner reference ARGS`, which calls
//! `tracing_pipeline::reference::main`, which calls `try_init()`), with real
//! environment variables. A process of its own per run, so no test here
//! sets a global subscriber in the test process.
#![cfg(feature = "runner")]

mod common;

use std::process::{Command, Output, Stdio};

use serde_json::Value;

const VARS: [&str; 4] = [
    "STRUCTURED_LOGGING",
    "LOG_LEVEL",
    "LANGSMITH_LOGGING",
    "JOB_ID",
];

fn reference(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"));
    cmd.arg("reference").args(["--speed", "0"]).args(args);
    for v in VARS {
        cmd.env_remove(v);
    }
    cmd.env_remove("RUST_LOG");
    cmd.envs(env.iter().copied());
    cmd.output().expect("run pipeline-runner reference")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn lifecycle(lines: &[Value]) -> Vec<Value> {
    common::normalise(
        lines
            .iter()
            .filter(|l| l["event"] != "log")
            .cloned()
            .collect(),
    )
}

#[test]
fn by_default_json_lines_on_stdout_at_info_and_nothing_on_stderr() {
    let out = reference(&["--job-id", "init"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let lines = common::parse_lines(&stdout(&out));
    let summary = common::checker::check(&lines);
    assert_eq!(summary.pipelines["init"].status, "success");
    assert!(
        lines.iter().all(|l| l["level"] != "debug"),
        "LOG_LEVEL defaults to info"
    );
    assert!(lines.iter().any(|l| l["level"] == "info"));
}

#[test]
fn job_id_comes_from_the_environment_when_not_given() {
    let out = reference(&[], &[("JOB_ID", "from-env")]);
    let lines = common::parse_lines(&stdout(&out));
    assert!(common::checker::check(&lines)
        .pipelines
        .contains_key("from-env"));
}

#[test]
fn structured_logging_false_gives_the_same_events_for_a_person() {
    let json = common::parse_lines(&stdout(&reference(&["--job-id", "h"], &[])));
    for value in ["false", "0", "NO", "off"] {
        let out = reference(&["--job-id", "h"], &[("STRUCTURED_LOGGING", value)]);
        assert!(out.status.success());
        assert_eq!(stderr(&out), "", "{value}");
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            json.len(),
            "{value}: one line per event\n{text}"
        );
        for line in &lines {
            assert!(
                serde_json::from_str::<Value>(line).is_err(),
                "{value}: {line}"
            );
            assert!(!line.contains('\x1b'), "no colour into a pipe: {line:?}");
        }
        assert!(text.contains("opportunity_mapper"));
    }
}

#[test]
fn invalid_values_give_one_stderr_line_each_and_the_program_runs_on_defaults() {
    let out = reference(
        &["--job-id", "bad"],
        &[
            ("STRUCTURED_LOGGING", "maybe"),
            ("LOG_LEVEL", "loud"),
            ("LANGSMITH_LOGGING", "sometimes"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let err_lines: Vec<&str> = err.lines().collect();
    assert_eq!(err_lines.len(), 3, "{err}");
    for (line, (var, value, default)) in err_lines.iter().zip([
        ("STRUCTURED_LOGGING", "maybe", "true"),
        ("LOG_LEVEL", "loud", "info"),
        ("LANGSMITH_LOGGING", "sometimes", "false"),
    ]) {
        assert!(
            line.contains(var) && line.contains(value) && line.contains(default),
            "{line} should name {var}, {value} and {default}"
        );
    }
    // The defaults: JSON, info.
    let lines = common::parse_lines(&stdout(&out));
    assert_eq!(
        common::checker::check(&lines).pipelines["bad"].status,
        "success"
    );
    assert!(lines.iter().all(|l| l["level"] != "debug"));
}

#[test]
fn log_level_hides_log_lines_but_never_lifecycle_lines() {
    let info = common::parse_lines(&stdout(&reference(&["--job-id", "l"], &[])));
    for (level, allowed) in [
        ("warn", &["warn", "error"][..]),
        ("WARNING", &["warn", "error"][..]),
        ("error", &["error"][..]),
        ("off", &[][..]),
        ("debug", &["debug", "info", "warn", "error"][..]),
    ] {
        let out = reference(&["--job-id", "l"], &[("LOG_LEVEL", level)]);
        assert_eq!(stderr(&out), "", "{level}");
        let lines = common::parse_lines(&stdout(&out));
        assert_eq!(lifecycle(&lines), lifecycle(&info), "LOG_LEVEL={level}");
        for l in common::of_kind(&lines, "log") {
            assert!(
                allowed.contains(&l["level"].as_str().unwrap()),
                "LOG_LEVEL={level}: {l}"
            );
        }
    }
    let debug = common::parse_lines(&stdout(&reference(
        &["--job-id", "l"],
        &[("LOG_LEVEL", "debug")],
    )));
    assert!(debug.iter().any(|l| l["level"] == "debug"));
}

#[test]
fn log_level_off_still_reports_failures_and_panic_messages() {
    let out = reference(
        &[
            "--job-id",
            "f",
            "--fail",
            "people_mapper",
            "--panic",
            "star_selector",
        ],
        &[("LOG_LEVEL", "off")],
    );
    assert!(out.status.success(), "partial exits 0");
    let lines = common::parse_lines(&stdout(&out));
    assert!(common::of_kind(&lines, "log").is_empty());
    let summary = common::checker::check(&lines);
    let stage = |n: &str| {
        summary.stages[&(Some("f".to_owned()), n.to_owned())]
            .error
            .clone()
    };
    assert_eq!(
        stage("people_mapper").as_deref(),
        Some("people_mapper failed: injected failure")
    );
    // init() installs the panic hook, so the message is known.
    assert_eq!(
        stage("star_selector").as_deref(),
        Some("star_selector panicked: injected panic")
    );
    assert_eq!(summary.pipelines["f"].status, "partial");
}

#[test]
fn langsmith_logging_true_prints_one_notice() {
    let out = reference(&["--job-id", "ls"], &[("LANGSMITH_LOGGING", "true")]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("LANGSMITH_LOGGING"), "{err}");
    common::parse_lines(&stdout(&out));
    let out = reference(&["--job-id", "ls"], &[("LANGSMITH_LOGGING", "false")]);
    assert_eq!(stderr(&out), "");
}

#[test]
fn exit_status_is_one_for_error_and_zero_for_partial() {
    let out = reference(&["--job-id", "a", "--abort", "opportunity_mapper"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let lines = common::parse_lines(&stdout(&out));
    assert_eq!(
        common::checker::check(&lines).pipelines["a"].status,
        "error"
    );
    let out = reference(&["--job-id", "p", "--fail", "generator"], &[]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_closed_stdout_changes_nothing_and_is_reported_at_most_once() {
    for (args, code) in [
        (&["--job-id", "c", "--jobs", "20"][..], 0),
        (&["--job-id", "c", "--abort", "generator"][..], 1),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"));
        cmd.arg("reference").args(["--speed", "0"]).args(args);
        for v in VARS {
            cmd.env_remove(v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away: writes fail with EPIPE
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.lines().count() <= 1, "at most one complaint: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// SPEC 5: stdout is flushed per line, so a reader sees each event as it
/// happens, not when the program exits. The first line must arrive while
/// the pipeline (about 3 s at `--speed 1`) is still running; a buffered
/// stdout would deliver it only at exit.
#[test]
fn each_line_reaches_a_pipe_reader_while_the_pipeline_runs() {
    use std::io::{BufRead, BufReader};

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"));
    cmd.args(["reference", "--speed", "1", "--job-id", "live"]);
    for v in VARS {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pipeline-runner reference");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let first_seen = std::time::Instant::now();
    assert_eq!(first["event"], "pipeline_start");
    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["event"], "log");
    // The pipeline sleeps for seconds after these lines; it cannot have
    // finished unless its output was held back until exit.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first lines arrived only after the pipeline had ended"
    );
    let rest: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(rest.last().unwrap()["event"], "pipeline_complete");
    // Held-back output would arrive all at once; live output arrives over
    // the pipeline's own time (its sleeps add up to 2.85 s).
    assert!(
        first_seen.elapsed() >= std::time::Duration::from_secs(2),
        "all lines arrived within {:?} of the first",
        first_seen.elapsed()
    );
    assert!(child.wait().unwrap().success());
}
