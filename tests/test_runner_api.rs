//! The runner's read API through `tower::ServiceExt::oneshot`, on data
//! directories written by the test: the paged job list and its filters,
//! strict parameters, the create body, `/lines` (bounded work through the
//! offset index on a 1,000,000-line job), `/log`, `/search`, `/api/health`.
#![cfg(feature = "runner")]

mod runner_common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use runner_common::{sh, TempDir};
use serde_json::{json, Value};
use tower::ServiceExt;
use tracing_pipeline::runner::{app, Runner};

/// Writes a finished job into `data` as an older runner would have (no
/// outcome, lines or counts in `meta.json`), with `lines` as its log.
fn write_job(
    data: &Path,
    id: &str,
    started_at: &str,
    status: &str,
    error: Option<&str>,
    lines: &[String],
) {
    let dir = data.join("jobs").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut meta = json!({
        "job_id": id, "state": "finished", "status": status,
        "started_at": started_at, "finished_at": started_at, "stages": [],
    });
    if let Some(e) = error {
        meta["reason"] = json!(e);
    }
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    let mut log = std::io::BufWriter::new(std::fs::File::create(dir.join("events.jsonl")).unwrap());
    for (i, data) in lines.iter().enumerate() {
        let row = json!({"seq": i + 1, "data": data});
        writeln!(log, "{row}").unwrap();
    }
    log.flush().unwrap();
}

struct Api {
    runner: Arc<Runner>,
    _dir: TempDir,
}

impl Api {
    fn open(dir: TempDir) -> Api {
        let runner = Runner::open(sh("exit 0"), dir.path().join("data")).unwrap();
        Api { runner, _dir: dir }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let resp = app(Arc::clone(&self.runner)).oneshot(req).await.unwrap();
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

    async fn get_raw(&self, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.get_raw(uri).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post(&self, uri: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::post(uri)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let (status, _, body) = self.send(req).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

fn output(text: &str) -> String {
    json!({"type":"output","text":text}).to_string()
}

/// An error message for users: names what is wrong, never a Rust type.
fn assert_user_message(v: &Value, must_name: &str) {
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"));
    assert!(msg.contains(must_name), "{msg:?} should name {must_name:?}");
    for internal in [
        "struct",
        "Vec<",
        "u64",
        "usize",
        "String",
        "Option",
        "serde",
        "CreateJob",
    ] {
        assert!(!msg.contains(internal), "{msg:?} names {internal}");
    }
}

#[tokio::test]
async fn paging_through_a_thousand_jobs_has_no_gaps_or_repeats() {
    let dir = TempDir::new("paging");
    let data = dir.path().join("data");
    let mut expected = Vec::new();
    for i in 0..1000u32 {
        // Many jobs share a start time: ties are broken by id.
        let started = format!("2026-12-01T10:{:02}:00.000Z", i / 20);
        let id = format!("job-{:04}", (i * 7919) % 1000);
        let (status, error) = match i % 4 {
            0 => ("success", None),
            1 => ("partial", None),
            2 => ("error", Some("cancelled")),
            _ => ("error", Some("exit status: 3")),
        };
        write_job(&data, &id, &started, status, error, &[output("x")]);
        expected.push((started, id, i % 4));
    }
    expected.sort();
    expected.reverse();
    let api = Api::open(dir);

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let uri = match &before {
            None => "/api/jobs?limit=37".to_owned(),
            Some(b) => format!("/api/jobs?limit=37&before={b}"),
        };
        let (status, page) = api.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 1000);
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 37);
        seen.extend(
            jobs.iter()
                .map(|j| j["job_id"].as_str().unwrap().to_owned()),
        );
        match page["next_before"].as_str() {
            Some(next) => {
                assert_eq!(next, jobs.last().unwrap()["job_id"]);
                before = Some(next.to_owned());
            }
            None => break,
        }
    }
    let want: Vec<String> = expected.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(seen, want, "newest first, ties by id, each once");

    // Filters: outcome (one or a list) and id substring; total counts matches.
    let (_, cancelled) = api.get("/api/jobs?status=cancelled&limit=500").await;
    assert_eq!(cancelled["total"], 250);
    let jobs = cancelled["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 250);
    assert!(jobs
        .iter()
        .all(|j| j["outcome"] == "cancelled" && j["reason"] == "cancelled"));
    assert_eq!(cancelled["next_before"], Value::Null);
    let (_, two) = api.get("/api/jobs?status=success,partial&limit=10").await;
    assert_eq!(two["total"], 500);
    assert_eq!(two["jobs"].as_array().unwrap().len(), 10);
    assert!(two["next_before"].is_string());
    let (_, q) = api.get("/api/jobs?q=job-09").await;
    assert_eq!(q["total"], 100);
    let (_, both) = api.get("/api/jobs?q=job-09&status=error").await;
    let n = both["jobs"].as_array().unwrap().len();
    assert!(n > 0 && n < 100);
    assert!(both["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["outcome"] == "error" && j["job_id"].as_str().unwrap().contains("job-09")));
    // A job's summary, as the list gives it.
    let first = &seen[0];
    let (_, one) = api.get(&format!("/api/jobs?q={first}&limit=1")).await;
    let s = &one["jobs"][0];
    assert_eq!(s["lines"], 1);
    assert_eq!(s["duration_ms"], 0);
    assert_eq!(
        s["counts"],
        json!({"completed":0,"failed":0,"skipped":0,"running":0,"cancelled":0})
    );
}

#[tokio::test]
async fn unknown_repeated_and_bad_parameters_are_400s_that_name_them() {
    let dir = TempDir::new("params");
    write_job(
        &dir.path().join("data"),
        "j",
        "2026-12-01T10:00:00.000Z",
        "success",
        None,
        &[output("x")],
    );
    let api = Api::open(dir);
    for (uri, name) in [
        ("/api/jobs?limit=0", "limit"),
        ("/api/jobs?limit=501", "limit"),
        ("/api/jobs?limit=ten", "limit"),
        ("/api/jobs?limit=-1", "limit"),
        ("/api/jobs?limit=5&limit=6", "limit"),
        ("/api/jobs?page=2", "page"),
        ("/api/jobs?status=done", "status"),
        ("/api/jobs?status=success,nope", "status"),
        ("/api/jobs?before=..%2Fx", "before"),
        ("/api/jobs?before=nosuchjob", "before"),
        ("/api/jobs?before=", "before"),
        ("/api/jobs/j/lines?from=0", "from"),
        ("/api/jobs/j/lines?limit=10001", "limit"),
        ("/api/jobs/j/lines?level=loud", "level"),
        ("/api/jobs/j/lines?stage=", "stage"),
        ("/api/jobs/j/lines?after=3", "after"),
        ("/api/jobs/j/search", "q"),
        ("/api/jobs/j/search?q=", "q"),
        ("/api/jobs/j/search?q=a&limit=100001", "limit"),
        ("/api/jobs/j/search?q=a&q=b", "q"),
        ("/api/jobs/j/log?from=3", "from"),
        ("/api/jobs/j/events?after=x", "after"),
        ("/api/jobs/j/events?from=1", "from"),
        ("/api/stream?job=j:x", "job"),
        ("/api/stream?job=..:0", "job"),
        ("/api/stream?job=j:0&job=j:1", "job"),
        ("/api/stream?jobs=yes", "jobs"),
        ("/api/stream?tab=1", "tab"),
        ("/api/jobs/j?x=1", "x"),
        ("/api/stages?x=1", "x"),
        ("/api/health?x=1", "x"),
    ] {
        let (status, v) = api.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_user_message(&v, name);
    }
    // An invalid id in any path is a 400 that says what an id is.
    for uri in [
        "/api/jobs/a%20b",
        "/api/jobs/a%20b/lines",
        "/api/jobs/a%20b/log",
        "/api/jobs/a%20b/search?q=x",
        "/api/jobs/%ff/events",
    ] {
        let (status, v) = api.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_user_message(&v, "job id");
    }
    for uri in ["/api/jobs?x=1", "/api/jobs/j/cancel?x=1"] {
        let (status, v) = api.post(uri, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "POST {uri}: {v}");
        assert_user_message(&v, "x");
    }
    let (status, v) = api.get("/api/stream?job=nope:0").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let too_many: Vec<String> = (0..65).map(|i| format!("job=j{i}:0")).collect();
    let (status, v) = api
        .get(&format!("/api/stream?{}", too_many.join("&")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_user_message(&v, "64");
}

#[tokio::test]
async fn the_create_body_must_be_a_json_object() {
    let api = Api::open(TempDir::new("body"));
    for body in [r#"["arrjob"]"#, "5", r#""x""#, "null", "true"] {
        let (status, v) = api.post("/api/jobs", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            v["error"], r#"the body must be a JSON object like {"job_id":"..."}"#,
            "{body}"
        );
    }
    for (body, names) in [
        (r#"{"job_id":5}"#, "job_id"),
        (r#"{"job_id":"a","job_id":"b"}"#, "job_id"),
        (r#"{"jobid":"a"}"#, "jobid"),
        ("{", "JSON"),
    ] {
        let (status, v) = api.post("/api/jobs", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_user_message(&v, names);
    }
    let (_, list) = api.get("/api/jobs").await;
    assert_eq!(
        list,
        json!({"jobs":[],"next_before":null,"total":0}),
        "nothing was created"
    );
    assert!(!api.runner.data_dir().join("jobs/arrjob").exists());
    let (status, v) = api.post("/api/jobs", r#"{"job_id":"fine"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    // The answer is the new job's summary (queued or already running).
    assert_eq!(v["job_id"], "fine");
    assert!(v["state"] == "queued" || v["state"] == "running", "{v}");
}

#[tokio::test]
async fn health_names_the_data_directory() {
    let dir = TempDir::new("health");
    write_job(
        &dir.path().join("data"),
        "h",
        "2026-12-01T10:00:00.000Z",
        "success",
        None,
        &[],
    );
    let api = Api::open(dir);
    let (status, v) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK);
    let data_dir = api.runner.data_dir().display().to_string();
    let bytes = v["data_bytes"].as_u64().expect("data_bytes");
    assert!(bytes > 0, "{v}");
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        v,
        json!({"ok":true,"version":env!("CARGO_PKG_VERSION"),"data_dir":data_dir,"jobs":1,
               "running":0,"queued":0,"max_running":cpus,"data_bytes":bytes,
               "keep_jobs":null,"keep_days":null,"trace_url":null,
               "tokens_field":"tokens_used","price_per_1k_tokens":null,"sse_clients":0})
    );
    assert!(Path::new(&data_dir).is_absolute());
}

/// NDJSON rows of a `/lines` answer.
fn rows(body: &[u8]) -> Vec<Value> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn lines_filters_and_search() {
    let dir = TempDir::new("filters");
    let mut lines: Vec<String> = (1..=3000).map(|i| output(&i.to_string())).collect();
    lines[9] = json!({"timestamp":"2026-12-01T10:00:00.000Z","event":"log","level":"warn",
        "target":"t","message":"Disk \u{1b}[31mALMOST\u{1b}[0m full","layer":2,"layer_name":"miner"})
    .to_string();
    lines[10] = json!({"timestamp":"2026-12-01T10:00:00.000Z","event":"log","level":"debug",
        "target":"t","message":"almost there"})
    .to_string();
    lines[11] = json!({"type":"output","text":"mined","layer":2,"layer_name":"miner"}).to_string();
    lines[20] = json!({"type":"output","text":"say \"Hi\" \u{e9}t\u{c9}"}).to_string();
    lines[21] = r#"{"type":"output","text":"\u0053ay \u0022hi\u0022"}"#.to_owned();
    lines[22] = json!({"type":"output","text":"the key is \"text\""}).to_string();
    lines[12] = json!({"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_error",
        "layer":2,"layer_name":"miner","status":"error","duration_ms":5,"error":"Almost!"})
    .to_string();
    write_job(
        &dir.path().join("data"),
        "f",
        "2026-12-01T10:00:00.000Z",
        "partial",
        None,
        &lines,
    );
    let api = Api::open(dir);

    // A stage's lines: its lifecycle lines, its log lines, its output.
    let (_, _, body) = api
        .get_raw("/api/jobs/f/lines?stage=miner&limit=10000")
        .await;
    let seqs: Vec<Value> = rows(&body).iter().map(|r| r["seq"].clone()).collect();
    assert_eq!(seqs, [10, 12, 13]);
    // Log lines at a level or above; other kinds are left out.
    let (_, headers, body) = api.get_raw("/api/jobs/f/lines?level=debug&limit=1").await;
    assert_eq!(rows(&body)[0]["seq"], 10);
    assert_eq!(headers["x-next-from"], "11");
    let (_, headers, body) = api.get_raw("/api/jobs/f/lines?level=debug&from=11").await;
    assert_eq!(rows(&body).len(), 1);
    assert!(headers.get("x-next-from").is_none());
    let (_, _, body) = api
        .get_raw("/api/jobs/f/lines?level=warn&stage=miner")
        .await;
    assert_eq!(rows(&body)[0]["data"]["level"], "warn");
    // Paging without filters: the default page is 1000 rows.
    let (_, headers, body) = api.get_raw("/api/jobs/f/lines?from=1500").await;
    assert_eq!(rows(&body).len(), 1000);
    assert_eq!(headers["x-next-from"], "2500");
    assert_eq!(headers["x-last-seq"], "3000");

    // Search: case-insensitive, in output text, log messages, errors, names.
    let (_, v) = api.get("/api/jobs/f/search?q=almost").await;
    assert_eq!(v, json!({"count":3,"seqs":[10,11,13],"truncated":false}));
    let (_, v) = api.get("/api/jobs/f/search?q=AlMoSt&level=info").await;
    assert_eq!(v, json!({"count":1,"seqs":[10],"truncated":false}));
    let (_, v) = api.get("/api/jobs/f/search?q=MINE").await;
    assert_eq!(v, json!({"count":3,"seqs":[10,12,13],"truncated":false}));
    // Escaped text matches as a user sees it; JSON keys do not match.
    let (_, v) = api.get("/api/jobs/f/search?q=say%20%22hi%22").await;
    assert_eq!(v["seqs"], json!([21, 22]));
    let (_, v) = api.get("/api/jobs/f/search?q=%C3%89T%C3%A9").await;
    assert_eq!(v["seqs"], json!([21]));
    let (_, v) = api.get("/api/jobs/f/search?q=type").await;
    assert_eq!(v["count"], 0);
    let (_, v) = api.get("/api/jobs/f/search?q=99&limit=3").await;
    // 99, 199 ... 2999: every number up to 3000 with "99" in it.
    let want = (1..=3000)
        .filter(|i| ![21, 22, 23].contains(i) && i.to_string().contains("99"))
        .count();
    assert_eq!(v["count"], want);
    assert_eq!(v["seqs"], json!([99, 199, 299]));
    assert_eq!(v["truncated"], true);
}

/// `{"seq":N,"data":"{\"type\":\"output\",\"text\":\"N\"}"}`, quickly.
fn stored_output(seq: usize, text: &str) -> String {
    format!(r#"{{"seq":{seq},"data":"{{\"type\":\"output\",\"text\":\"{text}\"}}"}}"#)
}

#[tokio::test]
async fn lines_and_log_on_a_million_line_job() {
    const N: usize = 1_000_000;
    let dir = TempDir::new("million");
    let job = dir.path().join("data/jobs/big");
    std::fs::create_dir_all(&job).unwrap();
    std::fs::write(
        job.join("meta.json"),
        json!({"job_id":"big","state":"finished","status":"success",
            "started_at":"2026-12-01T10:00:00.000Z","finished_at":"2026-12-01T10:00:01.000Z"})
        .to_string(),
    )
    .unwrap();
    let mut log = String::with_capacity(N * 60);
    for i in 1..=N {
        // Line 500,000 is a forged line numbered 999,999, of the same length
        // as the genuine one: a reader that started at the top of the file
        // instead of at the offset index would meet it first.
        if i == 500_000 {
            log.push_str(&stored_output(999_999, "FORGED"));
        } else {
            log.push_str(&stored_output(i, &i.to_string()));
        }
        log.push('\n');
    }
    std::fs::write(job.join("events.jsonl"), &log).unwrap();
    let api = Api::open(dir);

    let (status, headers, body) = api.get_raw("/api/jobs/big/lines?limit=3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    assert_eq!(headers["x-last-seq"], "1000000");
    assert_eq!(headers["x-next-from"], "4");
    assert_eq!(
        rows(&body),
        [1, 2, 3].map(|i| json!({"seq":i,"data":{"type":"output","text":i.to_string()}}))
    );

    let (_, headers, body) = api
        .get_raw("/api/jobs/big/lines?from=999990&limit=100")
        .await;
    let want: Vec<Value> = (999_990..=N)
        .map(|i| json!({"seq":i,"data":{"type":"output","text":i.to_string()}}))
        .collect();
    assert_eq!(
        rows(&body),
        want,
        "read from the index entry before 999,990, not from the top"
    );
    assert!(headers.get("x-next-from").is_none());
    let (_, _, body) = api.get_raw("/api/jobs/big/lines?from=1000001").await;
    assert!(body.is_empty());

    // The raw log: every stored line's text, byte for byte, as a download.
    let (status, headers, body) = api.get_raw("/api/jobs/big/log").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"big.jsonl\""
    );
    let mut want = String::with_capacity(N * 40);
    for i in 1..=N {
        let text = if i == 500_000 {
            "FORGED".to_owned()
        } else {
            i.to_string()
        };
        want.push_str(&format!(r#"{{"type":"output","text":"{text}"}}"#));
        want.push('\n');
    }
    assert!(
        body == want.as_bytes(),
        "the log differs from the stored lines"
    );
}
