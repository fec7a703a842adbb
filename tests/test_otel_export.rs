//! The reference pipeline, run as a real process (`pipeline-runner
//! reference`, which calls `init_guarded`), exporting over OTLP/HTTP to a
//! receiver built here: a plain HTTP/1.1 server on 127.0.0.1 port 0 that
//! decodes each request with the protocol's generated types
//! (`opentelemetry-proto`, prost). Checked: span names, parent links,
//! attributes, error status, skipped marking, the ids on the JSON lines,
//! `TRACEPARENT`, LangSmith's headers; and that an endpoint that is down,
//! hangs or answers 500 neither blocks the pipeline beyond the documented
//! bound nor changes its stdout, with the lost spans reported on stderr.
#![cfg(all(feature = "otel", feature = "runner"))]

mod otel_common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use otel_common::{attrs, hex, int, string, Mode, Receiver};
use serde_json::Value;

const CLEARED: [&str; 16] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "TRACEPARENT",
    "TRACESTATE",
    "LANGSMITH_LOGGING",
    "LANGSMITH_API_KEY",
    "LANGSMITH_PROJECT",
    "LANGSMITH_ENDPOINT",
    "LOG_LEVEL",
];

/// Runs the reference pipeline with `args` and `env`; returns its output
/// and how long it took.
fn reference(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeline-runner"));
    cmd.arg("reference")
        .args(["--speed", "0", "--job-id", "otel-job"])
        .args(args);
    for v in CLEARED {
        cmd.env_remove(v);
    }
    cmd.env_remove("STRUCTURED_LOGGING")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE");
    cmd.envs(env.iter().copied());
    let started = Instant::now();
    let out = cmd.output().expect("run pipeline-runner reference");
    (out, started.elapsed())
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The crate's own stderr lines (the injected panic prints its message too).
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("tracing-pipeline:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The lifecycle lines' event and stage, without timestamps, ids and
/// durations: what an endpoint must not change.
fn lifecycle(lines: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["event"] != "log")
        .map(|l| {
            (
                l["event"].as_str().unwrap().to_owned(),
                l["layer_name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

const FAILING: [&str; 6] = [
    "--fail",
    "people_mapper",
    "--skip",
    "generator",
    "--panic",
    "star_selector",
];

#[test]
fn the_reference_pipeline_exports_its_stages_and_the_lines_carry_their_ids() {
    let receiver = Receiver::start(Mode::Accept);
    let (out, _) = reference(
        &FAILING,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url()),
            ("OTEL_SERVICE_NAME", "jobs-under-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "", "nothing to report");
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| r.path == "/v1/traces"));
    assert!(requests
        .iter()
        .all(|r| r.headers["content-type"] == "application/x-protobuf"));
    let spans = receiver.spans();
    let by_name: HashMap<&str, &(Span, _)> = spans.iter().map(|s| (s.0.name.as_str(), s)).collect();

    let (root, resource) = by_name["pipeline"];
    assert_eq!(
        string(resource.get("service.name")),
        Some("jobs-under-test")
    );
    assert_eq!(string(resource.get("deployment.environment")), Some("test"));
    assert!(root.parent_span_id.is_empty(), "the pipeline is the root");
    let root_attrs = attrs(&root.attributes);
    assert_eq!(string(root_attrs.get("job_id")), Some("otel-job"));
    assert_eq!(string(root_attrs.get("pipeline.status")), Some("partial"));
    assert_eq!(int(root_attrs.get("layers_failed")), Some(2));
    assert_eq!(int(root_attrs.get("layers_skipped")), Some(1));
    assert_eq!(int(root_attrs.get("layers_completed")), Some(5));

    let lines = lines(&out);
    let trace = hex(&root.trace_id);
    for stage in [
        "pain_point_miner",
        "star_selector",
        "company_researcher",
        "role_researcher",
        "opportunity_mapper",
        "people_mapper",
        "generator",
        "publisher",
    ] {
        let (span, _) = by_name
            .get(stage)
            .unwrap_or_else(|| panic!("{stage} exported"));
        assert_eq!(
            span.parent_span_id, root.span_id,
            "{stage} is a child of the pipeline"
        );
        assert_eq!(span.trace_id, root.trace_id);
        let a = attrs(&span.attributes);
        assert_eq!(string(a.get("job_id")), Some("otel-job"), "{stage}");
        assert_eq!(string(a.get("langsmith.span.kind")), Some("chain"));
        assert_eq!(string(a.get("langsmith.trace.name")), Some(stage));
        assert!(
            matches!(
                a.get("layer"),
                Some(any_value::Value::IntValue(_) | any_value::Value::DoubleValue(_))
            ),
            "{stage}: {a:?}"
        );
        let status = span.status.clone().unwrap_or_default();
        match stage {
            "people_mapper" | "star_selector" => {
                assert_eq!(status.code, 2, "{stage}: ERROR");
                assert!(!status.message.is_empty(), "{stage}: error text");
                assert_eq!(string(a.get("pipeline.status")), Some("error"));
            }
            "generator" => {
                assert_eq!(a.get("skipped"), Some(&any_value::Value::BoolValue(true)));
                assert_eq!(string(a.get("pipeline.status")), Some("skipped"));
            }
            _ => {
                assert_eq!(status.code, 1, "{stage}: OK");
                assert_eq!(string(a.get("pipeline.status")), Some("success"));
            }
        }
        // Every line about the stage carries the exported span's ids.
        let own: Vec<&Value> = lines
            .iter()
            .filter(|l| l["layer_name"] == stage && l["event"] != "log")
            .collect();
        assert!(!own.is_empty(), "{stage}");
        for l in own {
            assert_eq!(l["trace_id"], trace.as_str(), "{l}");
            assert_eq!(l["span_id"], hex(&span.span_id).as_str(), "{l}");
        }
    }
    // The error text of the failed stage is the line's.
    let failed = lines
        .iter()
        .find(|l| l["event"] == "layer_error" && l["layer_name"] == "people_mapper")
        .unwrap();
    let (pm, _) = by_name["people_mapper"];
    assert_eq!(
        pm.status.as_ref().unwrap().message,
        failed["error"].as_str().unwrap()
    );
    // Tokens as GenAI usage.
    let (om, _) = by_name["opportunity_mapper"];
    assert_eq!(
        int(attrs(&om.attributes).get("gen_ai.usage.total_tokens")),
        Some(1200)
    );
    // Log lines inside stages are span events.
    assert!(spans.iter().any(|(s, _)| !s.events.is_empty()));
    for l in &lines {
        assert_eq!(
            l["trace_id"],
            trace.as_str(),
            "every line is in the trace: {l}"
        );
    }
}

#[test]
fn traceparent_puts_every_span_in_the_given_trace() {
    let receiver = Receiver::start(Mode::Accept);
    let (out, _) = reference(
        &["--jobs", "2"],
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("{}/v1/traces", receiver.url()),
            ),
            (
                "TRACEPARENT",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let spans = receiver.spans();
    assert_eq!(spans.len(), 2 * 9, "two pipelines of 8 stages each");
    for (s, _) in &spans {
        assert_eq!(
            hex(&s.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "{}",
            s.name
        );
        if s.name == "pipeline" {
            assert_eq!(hex(&s.parent_span_id), "00f067aa0ba902b7");
        }
    }
    for l in lines(&out) {
        assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{l}");
    }
}

#[test]
fn langsmith_gets_its_headers_on_its_otel_path() {
    let receiver = Receiver::start(Mode::Accept);
    let (out, _) = reference(
        &[],
        &[
            ("LANGSMITH_LOGGING", "true"),
            ("LANGSMITH_API_KEY", "lsv2_test_key"),
            ("LANGSMITH_PROJECT", "job-pipeline"),
            ("LANGSMITH_ENDPOINT", &receiver.url()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.path, "/otel/v1/traces");
        assert_eq!(r.headers["x-api-key"], "lsv2_test_key");
        assert_eq!(r.headers["langsmith-project"], "job-pipeline");
    }
    assert_eq!(receiver.spans().len(), 9);
}

#[test]
fn langsmith_without_a_key_says_so_and_the_lines_go_on() {
    let (plain, _) = reference(&FAILING, &[]);
    let (out, _) = reference(&FAILING, &[("LANGSMITH_LOGGING", "true")]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("LANGSMITH_API_KEY") && err.contains("required"),
        "{err}"
    );
    assert_eq!(lifecycle(&lines(&out)), lifecycle(&lines(&plain)));
}

#[test]
fn bad_endpoint_and_header_values_are_warnings_not_failures() {
    let (plain, _) = reference(&FAILING, &[]);
    let (out, _) = reference(
        &FAILING,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ],
    );
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && err.contains("localhost:4318"),
        "{err}"
    );
    assert!(err.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{err}");
    let got = lines(&out);
    assert_eq!(lifecycle(&got), lifecycle(&lines(&plain)));
    assert!(got.iter().all(|l| l.get("trace_id").is_none()));
}

/// What an endpoint that does not take the spans must leave alone: the exit
/// status, the lines (with ids: the spans exist, only their export fails),
/// and the time, within the documented bound (`FLUSH_TIMEOUT`, 5 s) plus
/// generous slack for a loaded machine, far below the export's own request
/// timeout (set to 60 s here, so only the bound can explain a quick exit).
fn assert_unaffected(endpoint: &str, extra: &[(&str, &str)]) -> String {
    let (plain, _) = reference(&FAILING, &[]);
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
    ];
    env.extend_from_slice(extra);
    let (out, took) = reference(&FAILING, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(25),
        "took {took:?}; the bound is {:?}",
        tracing_pipeline::FLUSH_TIMEOUT
    );
    let got = lines(&out);
    assert_eq!(lifecycle(&got), lifecycle(&lines(&plain)));
    assert!(got.iter().all(|l| l["trace_id"].is_string()));
    let err = stderr(&out);
    assert!(err.contains("not exported"), "the loss is reported: {err}");
    assert!(
        err.lines().filter(|l| l.contains(") failed:")).count() <= 1,
        "the failure is reported once: {err}"
    );
    err
}

#[test]
fn an_endpoint_that_is_down_blocks_nothing() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_unaffected(&format!("http://127.0.0.1:{port}"), &[]);
}

#[test]
fn an_endpoint_that_answers_500_blocks_nothing() {
    let receiver = Receiver::start(Mode::Fail500);
    let err = assert_unaffected(&receiver.url(), &[]);
    assert!(err.contains("failed"), "{err}");
}

#[test]
fn an_endpoint_that_hangs_blocks_nothing_and_the_queue_is_bounded() {
    let receiver = Receiver::start(Mode::Hang);
    // Nine spans behind a queue of 4, none exported while the run lasts:
    // the rest are dropped and counted, memory stays bounded.
    let err = assert_unaffected(&receiver.url(), &[("OTEL_BSP_MAX_QUEUE_SIZE", "4")]);
    assert!(err.contains("queue"), "{err}");
}
