//! The runner's routes through `tower::ServiceExt::oneshot`, no socket:
//! job creation and its validation, limits, errors, headers, the page.
#![cfg(feature = "runner")]

mod runner_common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use runner_common::{sh, TempDir};
use serde_json::{json, Value};
use tower::ServiceExt;
use tracing_pipeline::runner::{app, Runner};

struct Fixture {
    runner: Arc<Runner>,
    _dir: TempDir,
}

fn fixture(script: &str) -> Fixture {
    let dir = TempDir::new("routes");
    let runner = Runner::open(sh(script), dir.path().join("data")).unwrap();
    Fixture { runner, _dir: dir }
}

impl Fixture {
    fn app(&self) -> Router {
        app(Arc::clone(&self.runner))
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let resp = self.app().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    async fn post(&self, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        let (status, _, body) = self.send(req).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(Request::get(uri).body(Body::empty()).unwrap())
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn wait_finished(&self, id: &str) -> Value {
        runner_common::poll("the job to finish", || async {
            let (status, v) = self.get(&format!("/api/jobs/{id}")).await;
            (status == StatusCode::OK && v["state"] != "running" && v["state"] != "queued")
                .then_some(v)
        })
        .await
    }
}

#[tokio::test]
async fn create_list_get_and_duplicate() {
    let f = fixture("exit 0");
    let (status, v) = f.post("/api/jobs", r#"{"job_id":"job-1"}"#).await;
    assert_eq!(
        (status, &v["job_id"]),
        (StatusCode::CREATED, &json!("job-1"))
    );

    let (status, v) = f.post("/api/jobs", r#"{"job_id":"job-1"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(v["error"].is_string());

    // No body, or no job_id: a generated id.
    let (status, v) = f.post("/api/jobs", "").await;
    assert_eq!(status, StatusCode::CREATED);
    let generated = v["job_id"].as_str().unwrap().to_owned();
    assert!(!generated.is_empty() && generated != "job-1");
    let (status, _) = f.post("/api/jobs", "{}").await;
    assert_eq!(status, StatusCode::CREATED);

    let detail = f.wait_finished("job-1").await;
    assert_eq!(detail["state"], "finished");
    assert_eq!(detail["status"], "error"); // exited without pipeline_complete
    assert_eq!(detail["exit_code"], 0);
    assert_eq!(detail["stages"], json!([]));

    let (status, list) = f.get("/api/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], "job-1", "newest first: {ids:?}");
    assert_eq!(ids[1], generated);
    for j in list["jobs"].as_array().unwrap() {
        // Every job has created_at; started_at once it runs (not while queued).
        assert!(j["created_at"].as_str().unwrap().ends_with('Z'));
        if j["state"] != "queued" {
            assert!(j["started_at"].as_str().unwrap().ends_with('Z'));
        }
        assert!(j.get("stages").is_none());
    }

    let (status, _) = f.get("/api/jobs/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = f.post("/api/jobs/job-1/cancel", "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = f.post("/api/jobs/nope/cancel", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, stages) = f.get("/api/stages").await;
    assert_eq!(
        (status, &stages["window"], &stages["stages"]),
        (StatusCode::OK, &json!(50), &json!([]))
    );
}

#[tokio::test]
async fn hostile_job_ids_are_refused() {
    let f = fixture("exit 0");
    let long = "x".repeat(10 * 1024);
    for bad in [
        "../x",
        "..",
        "%2e%2e",
        "a/b",
        "a b",
        "",
        "é",
        "<script>",
        "a\nb",
        long.as_str(),
    ] {
        let body = json!({ "job_id": bad }).to_string();
        let (status, v) = f.post("/api/jobs", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {v}");
        assert!(v["error"].is_string());
    }
    for bad in [
        json!({"job_id": 5}),
        json!({"job_id": ["a"]}),
        json!({"other": 1}),
        json!([1]),
        json!("x"),
    ] {
        let (status, _) = f.post("/api/jobs", bad.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // In paths too, percent-decoded: `%2e%2e` is `..`.
    for uri in [
        "/api/jobs/%2e%2e",
        "/api/jobs/%2e%2e/events",
        "/api/jobs/a%20b",
    ] {
        let (status, _) = f.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
    }
    let (status, _) = f.get("/api/jobs/../x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = f.get("/api/jobs").await;
    assert_eq!((status, &list["jobs"]), (StatusCode::OK, &json!([])));
    // Nothing was created on disk either.
    let on_disk = std::fs::read_dir(f.runner.data_dir().join("jobs"))
        .unwrap()
        .count();
    assert_eq!(on_disk, 0);
}

#[tokio::test]
async fn bodies_are_bounded_and_must_be_json() {
    let f = fixture("exit 0");
    let big = format!(r#"{{"job_id":"a","pad":"{}"}}"#, "x".repeat(20 * 1024));
    let (status, _) = f.post("/api/jobs", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let huge = vec![b' '; 1024 * 1024];
    let (status, _) = f.post("/api/jobs", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    for bad in ["{", "nope", "{\"job_id\":}", "\u{0}"] {
        let (status, v) = f.post("/api/jobs", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(v["error"].is_string());
    }
    let (status, _) = f.post("/api/jobs", vec![0xff, 0xfe]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let f = fixture("exit 0");
    let (status, v) = f.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, json!({"error":"not found"}));
    let (status, _) = f.get("/api/jobs/a/b/c").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (method, uri) in [
        ("DELETE", "/api/jobs"),
        ("PUT", "/api/jobs"),
        ("GET", "/api/jobs/a/cancel"),
        ("POST", "/api/jobs/a/events"),
        ("POST", "/"),
        ("POST", "/api/stages"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = f.send(req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}

#[tokio::test]
async fn page_and_headers() {
    let f = fixture("exit 0");
    for (uri, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let (status, headers, body) = f.send(Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{uri}"
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        );
        assert!(!body.is_empty());
    }
    for uri in ["/api/jobs", "/api/stages", "/nope"] {
        let (_, headers, _) = f.send(Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
    }
    let (status, headers, _) = f
        .send(Request::post("/api/jobs").body(Body::from("{")).unwrap())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[tokio::test]
async fn writes_from_other_origins_are_refused() {
    let f = fixture("exit 0");
    let req = |origin: &str| {
        Request::post("/api/jobs")
            .header(header::HOST, "127.0.0.1:8000")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, _) = f.send(req("http://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = f.send(req("null")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = f.send(req("http://127.0.0.1:8000")).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1
/// is same-origin with the runner unless the runner refuses its `Host`.
#[tokio::test]
async fn requests_naming_an_unknown_host_are_refused() {
    let f = fixture("exit 0");
    let req = |method: Method, uri: &str, host: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, host)
            .header(header::ORIGIN, format!("http://{host}"))
            .body(Body::empty())
            .unwrap()
    };
    for host in [
        "evil.example",
        "evil.example:8000",
        "127.0.0.1.evil.example:80",
    ] {
        for (method, uri) in [
            (Method::GET, "/"),
            (Method::GET, "/api/jobs"),
            (Method::POST, "/api/jobs"),
        ] {
            let (status, headers, body) = f.send(req(method.clone(), uri, host)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri} Host: {host}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].as_str().unwrap().contains("--allow-host"), "{v}");
        }
    }
    let (_, jobs) = f.get("/api/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "no job was started");
    for host in [
        "127.0.0.1:8000",
        "localhost:8000",
        "LOCALHOST",
        "[::1]:8000",
        "10.1.2.3",
    ] {
        let (status, _, _) = f.send(req(Method::GET, "/api/jobs", host)).await;
        assert_eq!(status, StatusCode::OK, "Host: {host}");
    }
    // A name the runner was told about (a reverse proxy's public name).
    f.runner.allow_hosts(["Runner.Example.com"]);
    let (status, _, _) = f
        .send(req(Method::GET, "/api/jobs", "runner.example.com:443"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = f
        .send(req(Method::POST, "/api/jobs", "runner.example.com:443"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_job_id_reaches_the_child_only_through_the_environment() {
    let f = fixture(r#"printf '%s|%s\n' "$JOB_ID" "$#""#);
    let (status, _) = f.post("/api/jobs", r#"{"job_id":"env-check"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    f.wait_finished("env-check").await;
    let log =
        std::fs::read_to_string(f.runner.data_dir().join("jobs/env-check/events.jsonl")).unwrap();
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, json!({"type":"output","text":"env-check|0"}));
}
