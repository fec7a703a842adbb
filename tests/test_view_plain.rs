//! `pipeline-view` when its output is not a terminal (a pipe, as in CI):
//! plain append-only lines, checked line by line; its exit statuses; the
//! `-- COMMAND` mode reading stdout and stderr; hostile input.
#![cfg(feature = "view")]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const VIEW: &str = env!("CARGO_BIN_EXE_pipeline-view");
const TS: &str = "2025-11-29T10:30:45.123Z";

fn view_with(args: &[&str], stdin: &[u8], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(VIEW);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NO_COLOR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Written from a thread: a large input must not deadlock on a full pipe.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn view(args: &[&str], stdin: &[u8]) -> Output {
    view_with(args, stdin, &[])
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .expect("the view writes UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ev(kind: &str, layer: &str, name: &str, rest: &str) -> String {
    format!(
        r#"{{"timestamp":"{TS}","event":"{kind}","layer":{layer},"layer_name":"{name}","job_id":"demo"{rest}}}"#
    )
}

fn complete(status: &str, rest: &str) -> String {
    format!(
        r#"{{"timestamp":"2025-11-29T10:30:48.000Z","event":"pipeline_complete","job_id":"demo","status":"{status}","duration_ms":2877{rest},"metadata":{{"layers_completed":2,"layers_failed":1,"layers_skipped":1}}}}"#
    )
}

fn stream(end: Option<String>) -> Vec<u8> {
    let mut s = vec![
        format!(
            r#"{{"timestamp":"{TS}","event":"pipeline_start","job_id":"demo","metadata":{{"pipeline":"job_application"}}}}"#
        ),
        ev("layer_start", "2", "pain_point_miner", ""),
        format!(
            r#"{{"timestamp":"{TS}","event":"log","level":"info","target":"job_pipeline","message":"mined pain points","job_id":"demo","layer":2,"layer_name":"pain_point_miner","metadata":{{"pain_points":5}}}}"#
        ),
        ev(
            "layer_complete",
            "2",
            "pain_point_miner",
            r#","status":"success","duration_ms":402"#,
        ),
        ev("layer_start", "3", "company_researcher", ""),
        ev("layer_start", "3", "role_researcher", ""),
        ev(
            "layer_complete",
            "3",
            "role_researcher",
            r#","status":"success","duration_ms":1502,"metadata":{"tokens_used":1200}"#,
        ),
        ev(
            "layer_error",
            "3",
            "company_researcher",
            r#","status":"error","duration_ms":601,"error":"company_researcher failed: injected failure","metadata":{"tokens_used":3400}"#,
        ),
        ev("layer_skip", "6", "generator", r#","status":"skipped""#),
        "plain text from the pipeline".to_owned(),
    ];
    s.extend(end);
    let mut bytes = s.join("\n").into_bytes();
    bytes.push(b'\n');
    bytes
}

const BODY: [&str; 11] = [
    "[demo] pipeline started",
    "[demo] 2 pain_point_miner: running",
    "[demo] info pain_point_miner: mined pain points pain_points=5",
    "[demo] 2 pain_point_miner: complete 402ms",
    "[demo] 3 company_researcher: running",
    "[demo] 3 role_researcher: running",
    "[demo] 3 role_researcher: complete 1.50s",
    "[demo] 3 company_researcher: error 601ms: company_researcher failed: injected failure",
    "[demo] 6 generator: skipped",
    "output: plain text from the pipeline",
    "",
];

#[test]
fn a_partial_run_line_by_line() {
    let out = view(&[], &stream(Some(complete("partial", ""))));
    let mut want: Vec<&str> = BODY.to_vec();
    want.insert(10, "[demo] pipeline partial 2.88s");
    want.extend([
        "job demo: partial",
        "  stages   2 complete, 1 error, 1 skipped",
        "  time     2.88s",
        "  slowest  role_researcher 1.50s",
        "  tokens   4600",
    ]);
    assert_eq!(lines(&out), want);
    assert_eq!(out.status.code(), Some(0), "partial is a success");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.contains(&0x1b), "no escape codes into a pipe");
}

#[test]
fn strict_makes_partial_a_failure() {
    let out = view(&["--strict"], &stream(Some(complete("partial", ""))));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn an_error_run_exits_1_and_shows_the_error() {
    let out = view(
        &[],
        &stream(Some(complete("error", r#","error":"pipeline aborted""#))),
    );
    assert_eq!(out.status.code(), Some(1));
    let got = lines(&out);
    assert_eq!(got[10], "[demo] pipeline error 2.88s: pipeline aborted");
    assert_eq!(got.last().unwrap(), "  error    pipeline aborted");
}

#[test]
fn a_stream_without_pipeline_complete_exits_2_with_stages_still_running() {
    let out = view(&[], &stream(None));
    assert_eq!(out.status.code(), Some(2));
    let mut want: Vec<&str> = BODY.to_vec();
    want.extend([
        "job demo: incomplete",
        "  no pipeline_complete in the input",
        "  stages   2 complete, 1 error, 1 skipped",
        "  time     0ms",
        "  slowest  role_researcher 1.50s",
        "  tokens   4600",
    ]);
    assert_eq!(lines(&out), want);

    let mut cut = stream(None);
    cut.extend(ev("layer_start", "7", "publisher", "").as_bytes());
    let out = view(&[], &cut);
    assert_eq!(out.status.code(), Some(2));
    let got = lines(&out);
    assert!(got.contains(&"  running  publisher".to_owned()), "{got:#?}");
    assert!(got.contains(&"  stages   2 complete, 1 error, 1 skipped, 1 running".to_owned()));
}

#[test]
fn empty_input_exits_2() {
    let out = view(&[], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(lines(&out), ["", "no pipeline events in the input"]);
}

#[test]
fn hostile_input_is_shown_sanitised_and_never_stops_the_view() {
    let mut input: Vec<u8> = Vec::new();
    input.extend(b"\x1b[2J\x1b[Hcleared?\n");
    input.extend(b"bad utf-8 \xff\xfe here\r\n");
    input.extend(b"title \x1b]0;pwned\x07 bell \x07 cr \r back\x08\n");
    input.extend(b"{\"event\":\"layer_start\",\"broken\n");
    input.extend(b"[1,2,3]\n");
    let huge = vec![b'x'; 3 * 1024 * 1024];
    input.extend(&huge);
    input.push(b'\n');
    // Two stages share layer 3; a name and an error carry escapes.
    input.extend(ev("layer_start", "3", "company\\u001b[31m_researcher", "").as_bytes());
    input.push(b'\n');
    input.extend(
        ev(
            "layer_error",
            "3",
            "role_researcher",
            r#","status":"error","duration_ms":1,"error":"bad\u001b[1A\r\nthing""#,
        )
        .as_bytes(),
    );
    input.push(b'\n');
    input.extend(complete("partial", "").as_bytes());
    // No newline at the very end: the last line still counts.
    let out = view(&[], &input);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stdout.contains(&0x1b),
        "an escape byte reached the output"
    );
    assert!(!out.stdout.contains(&b'\r'));
    assert!(!out.stdout.contains(&0x07));
    let got = lines(&out);
    assert_eq!(got[0], "output: cleared?");
    assert_eq!(got[1], "output: bad utf-8 \u{fffd}\u{fffd} here");
    assert_eq!(got[2], "output: title  bell ^G cr ^M back^H");
    assert_eq!(got[3], "output: {\"event\":\"layer_start\",\"broken");
    assert_eq!(got[4], "output: [1,2,3]");
    // The huge line: cut to what the view shows, with counts, on one line.
    assert!(got[5].starts_with("output: xxxx"), "{}", &got[5][..20]);
    assert!(
        got[5].ends_with("more bytes]"),
        "{}",
        &got[5][got[5].len() - 60..]
    );
    assert!(got[5].len() < 20 * 1024);
    assert_eq!(got[6], "[demo] 3 company_researcher: running");
    assert_eq!(got[7], "[demo] 3 role_researcher: error 1ms: bad^M^Jthing");
    assert_eq!(got[8], "[demo] pipeline partial 2.88s");
    assert_eq!(got[10], "job demo: partial");
    assert_eq!(got[11], "  stages   0 complete, 1 error, 1 running");
}

#[test]
fn colour_only_when_asked_for_in_a_pipe() {
    let input = stream(Some(complete("success", "")));
    let out = view_with(&["--color=always"], &input, &[("NO_COLOR", "1")]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\u{1b}[32mcomplete\u{1b}[0m"), "{text}");
    let out = view_with(&["--color=auto"], &input, &[("TERM", "xterm-256color")]);
    assert!(!out.stdout.contains(&0x1b));
    let out = view(&["--color=never"], &input);
    assert!(!out.stdout.contains(&0x1b));
}

#[test]
fn command_mode_reads_stdout_and_stderr_and_reports_its_exit() {
    let script = format!(
        "echo '{}'; echo 'to stderr' >&2; echo 'plain stdout'; echo '{}'; exit 3",
        ev("layer_start", "1", "only", ""),
        complete("success", "")
    );
    let out = view(&["--", "sh", "-c", &script], b"");
    assert_eq!(out.status.code(), Some(0), "the pipeline said success");
    let got = lines(&out);
    // stdout lines keep their order; the stderr line is in there once.
    let stdout_lines: Vec<&String> = got.iter().filter(|l| !l.starts_with("stderr:")).collect();
    assert_eq!(
        stdout_lines[..4],
        [
            "[demo] 1 only: running",
            "output: plain stdout",
            "[demo] pipeline success 2.88s",
            "pipeline-view: the command ended with exit status: 3"
        ]
    );
    assert_eq!(got.iter().filter(|l| *l == "stderr: to stderr").count(), 1);
}

#[test]
fn bad_arguments_and_sources_exit_2_with_a_message() {
    let out = view(&["ftp://example/#/jobs/x"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a job URL"));

    let out = view(&["http://127.0.0.1:1/#/jobs/x", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));

    let out = view(&["--", "/nonexistent/pipeline"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /nonexistent/pipeline"));

    let out = view(&["--color=purple"], b"");
    assert_eq!(out.status.code(), Some(2));
}
