//! The HTTP surface: [`app`] builds the axum router; `serve` runs it.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` and the page's other files | the page, embedded in the binary |
//! | `GET /api/health` | `{"ok":true,"version":...,"data_dir":...,"jobs":N}` |
//! | `POST /api/jobs` | starts a job: optional body `{"job_id":"..."}` → 201 `{"job_id":"..."}` |
//! | `GET /api/jobs?limit&before&status&q` | a page of job summaries, newest first |
//! | `GET /api/jobs/{id}` | a summary plus its `stages` |
//! | `DELETE /api/jobs/{id}` | deletes a finished job; 409 while queued or running |
//! | `POST /api/jobs/{id}/cancel` | 202 (a queued job leaves the queue), or 409 when it has ended |
//! | `POST /api/jobs/{id}/rerun` | 201 `{"job_id":NEW,"rerun_of":ID}`; 409 while queued or running |
//! | `GET /api/jobs/{id}/events?after` | Server-Sent Events, resumable with `Last-Event-ID` |
//! | `GET /api/jobs/{id}/lines?from&limit&stage&level` | stored lines in bulk, as NDJSON rows |
//! | `GET /api/jobs/{id}/log` | the whole log as JSON lines, a download |
//! | `GET /api/jobs/{id}/search?q&level&limit` | the seqs of matching lines |
//! | `GET /api/stream?job=ID:AFTER&jobs=1` | many jobs' lines, and job-list changes, on one SSE connection |
//! | `GET /api/stages?window=N` | per-stage statistics over the last N finished jobs |
//! | `GET /metrics` | Prometheus text format (feature `metrics`) |
//!
//! Handlers return `Result<_, RunnerError>`; an error is JSON
//! `{"error":"..."}` with 400 (bad id, parameter or body), 403
//! (cross-origin write, unknown Host), 404, 405, 409, 413 (body over 16 KiB)
//! or 503 (shutting down). Every response carries
//! `X-Content-Type-Options: nosniff` and a strict `Content-Security-Policy`
//! (`CSP` below).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use tower_http::set_header::SetResponseHeaderLayer;

use super::job::Job;
use super::joblog::{Record, RecordReader};
use super::model::validate_job_id;
use super::model::{log_level, Outcome, Phase};
use super::params::{bad, Params};
use super::stats::{window_stats, MAX_WINDOW};
use super::{sse, Runner, RunnerError};
use crate::Level;

/// The largest request body accepted, in bytes.
const MAX_BODY: usize = 16 * 1024;
/// How often an idle event stream gets a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Bytes of rows per `/lines` answer at most (a page always holds at least
/// one row): `X-Next-From` then says where to go on.
const PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Bytes per chunk of a `/log` download.
const LOG_CHUNK: usize = 64 * 1024;
/// What the routes without parameters take, for the unknown-parameter message.
const NO_PARAMETERS: &str = "no parameters";
/// Jobs one `/api/stream` connection may follow.
const MAX_STREAM_JOBS: usize = 64;

/// The page's Content-Security-Policy: its own scripts and styles only (no
/// inline script or style), never inside another site's frame (no
/// clickjacking of the Run and Cancel buttons), no `<base>` and no form
/// posts elsewhere.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The runner's HTTP routes over `runner`, with their headers and limits.
/// Serve it with [`serve`](super::serve), or call it with
/// `tower::ServiceExt::oneshot` in tests.
pub fn app(runner: Arc<Runner>) -> Router {
    let mut router = Router::new();
    for &(path, content_type, body) in super::page::ASSETS {
        router = router.route(path, get(move || page(content_type, body)));
    }
    router = router
        .route("/api/health", get(health))
        .route("/api/jobs", get(list_jobs).post(create_job))
        .route("/api/jobs/{id}", get(get_job).delete(delete_job))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/rerun", post(rerun_job))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/lines", get(job_lines))
        .route("/api/jobs/{id}/log", get(job_log))
        .route("/api/jobs/{id}/search", get(job_search))
        .route("/api/stream", get(stream))
        .route("/api/stages", get(list_stages));
    #[cfg(feature = "metrics")]
    {
        router = router.route("/metrics", get(super::metrics::scrape));
    }
    router
        .fallback(|| async { RunnerError::NoRoute })
        .method_not_allowed_fallback(|| async { RunnerError::MethodNotAllowed })
        .layer(middleware::from_fn(same_origin_writes))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&runner),
            known_hosts_only,
        ))
        .layer(middleware::from_fn(refuse_declared_large_bodies))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .with_state(runner)
}

async fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

impl IntoResponse for RunnerError {
    fn into_response(self) -> Response {
        let status = match self {
            RunnerError::InvalidJobId
            | RunnerError::UnknownParameter { .. }
            | RunnerError::RepeatedParameter(_)
            | RunnerError::BadParameter { .. }
            | RunnerError::BadQuery
            | RunnerError::BadBody(_)
            | RunnerError::BadLastEventId => StatusCode::BAD_REQUEST,
            RunnerError::UnknownHost | RunnerError::CrossOrigin => StatusCode::FORBIDDEN,
            RunnerError::UnknownJob(_) | RunnerError::NoRoute => StatusCode::NOT_FOUND,
            RunnerError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RunnerError::DuplicateJob(_)
            | RunnerError::AlreadyFinished(_)
            | RunnerError::NotFinished(_) => StatusCode::CONFLICT,
            RunnerError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RunnerError::ShuttingDown | RunnerError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RunnerError::EmptyCommand
            | RunnerError::DataDir { .. }
            | RunnerError::DataDirInUse(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Refuses requests whose `Host` names a host the runner was not told
/// about (DNS rebinding: another site's page, its name pointed at
/// 127.0.0.1, would otherwise be same-origin with the runner).
async fn known_hosts_only(
    State(runner): State<Arc<Runner>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = match request.headers().get(header::HOST) {
        None => true,
        Some(host) => host.to_str().is_ok_and(|h| runner.host_allowed(h)),
    };
    if !allowed {
        return RunnerError::UnknownHost.into_response();
    }
    next.run(request).await
}

/// A browser sends `Origin` with every cross-site POST, and a form or a
/// `fetch` with a plain-text body needs no preflight; refusing writes from
/// other origins keeps other web pages from starting or cancelling jobs.
async fn same_origin_writes(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        let headers = request.headers();
        if let Some(origin) = headers.get(header::ORIGIN) {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let same = origin.to_str().ok().is_some_and(|o| {
                !host.is_empty()
                    && (o.strip_prefix("http://") == Some(host)
                        || o.strip_prefix("https://") == Some(host))
            });
            if !same {
                return RunnerError::CrossOrigin.into_response();
            }
        }
    }
    next.run(request).await
}

/// A body announced as too large is refused before it is read: the body
/// limit alone would wait for (and count) the bytes, and a client that never
/// sends them would hold the request open.
async fn refuse_declared_large_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return RunnerError::BodyTooLarge(MAX_BODY / 1024).into_response();
    }
    next.run(request).await
}

/// The job a path names: a path that does not even decode (`%ff`) is a bad
/// id like any other.
async fn job_in(
    runner: &Runner,
    path: Result<Path<String>, PathRejection>,
) -> Result<Arc<Job>, RunnerError> {
    let Path(id) = path.map_err(|_| RunnerError::InvalidJobId)?;
    find_job(runner, &id).await
}

/// Job `id`; on a web node, also one this node has not heard of yet, and
/// an ended one only once all its lines are here.
async fn find_job(runner: &Runner, id: &str) -> Result<Arc<Job>, RunnerError> {
    let job = match (runner.job(id), runner.remote()) {
        // A job submitted on another web node a moment ago: the broker
        // has it before this node's watch does.
        (Err(RunnerError::UnknownJob(_)), Some(remote)) if remote.fetch(id).await => runner.job(id),
        (found, _) => found,
    }?;
    // A web node serves an ended job once it has all its lines.
    if !job.caught_up(CATCH_UP_WAIT).await {
        return Err(RunnerError::Unavailable(format!(
            "job {id} is still being copied from the broker: try again"
        )));
    }
    Ok(job)
}

/// How long a request waits for a web node to copy an ended job's lines.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);

/// The body of `POST /api/jobs`, to refuse duplicate keys (its own
/// errors are never shown: their text names this type).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CreateJob {
    #[serde(default)]
    job_id: Option<String>,
}

const OBJECT_BODY: &str = r#"the body must be a JSON object like {"job_id":"..."}"#;

/// The job id a create (or re-run) body asks for, if any.
fn requested_id(body: Result<Bytes, BytesRejection>) -> Result<Option<String>, RunnerError> {
    let body = match body {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            return Err(RunnerError::BodyTooLarge(MAX_BODY / 1024))
        }
        Err(_) => return Err(RunnerError::BadBody("the body could not be read".into())),
    };
    let job_id = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value: Value = serde_json::from_slice(&body).map_err(|e| {
            RunnerError::BadBody(format!("the body is not valid JSON ({e}); {OBJECT_BODY}"))
        })?;
        let Value::Object(mut fields) = value else {
            return Err(RunnerError::BadBody(OBJECT_BODY.into()));
        };
        let job_id = match fields.remove("job_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id),
            Some(_) => return Err(RunnerError::BadBody("job_id must be a string".into())),
        };
        if let Some(name) = fields.keys().next() {
            return Err(RunnerError::BadBody(format!(
                "unknown field {name:?} in the body: only job_id is accepted"
            )));
        }
        // A map keeps the last of duplicate keys; the struct refuses them.
        if serde_json::from_slice::<CreateJob>(&body).is_err() {
            return Err(RunnerError::BadBody(
                "job_id is given more than once in the body".into(),
            ));
        }
        job_id
    };
    Ok(job_id)
}

async fn create_job(
    State(runner): State<Arc<Runner>>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RunnerError> {
    Params::parse(&uri, NO_PARAMETERS, &[])?;
    let requested = requested_id(body)?;
    let id = match runner.remote() {
        Some(_) => submit(&runner, requested, None).await?,
        None => runner.start_job(requested)?,
    };
    let summary = runner.job(&id)?.summary();
    let mut v = serde_json::to_value(summary).unwrap_or_else(|_| json!({}));
    v["job_id"] = json!(id);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn rerun_job(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RunnerError> {
    let job = job_in(&runner, path).await?;
    Params::parse(&uri, NO_PARAMETERS, &[])?;
    let requested = requested_id(body)?;
    let id = match runner.remote() {
        Some(_) => {
            if matches!(job.phase(), Phase::Running | Phase::Queued) {
                return Err(RunnerError::NotFinished(job.id().to_owned()));
            }
            submit(&runner, requested, Some(job.id().to_owned())).await?
        }
        None => runner.rerun_job(job.id(), requested)?,
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({ "job_id": id, "rerun_of": job.id() })),
    )
        .into_response())
}

async fn delete_job(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, RunnerError> {
    let job = job_in(&runner, path).await?;
    Params::parse(&uri, NO_PARAMETERS, &[])?;
    match runner.remote() {
        Some(remote) => {
            if matches!(job.phase(), Phase::Running | Phase::Queued) {
                return Err(RunnerError::NotFinished(job.id().to_owned()));
            }
            remote.delete(job.id()).await?;
            runner.mirror_forget(job.id());
        }
        None => runner.delete_job(job.id())?,
    }
    Ok(Json(json!({ "job_id": job.id(), "deleted": true })).into_response())
}

async fn health(State(runner): State<Arc<Runner>>, uri: Uri) -> Result<Json<Value>, RunnerError> {
    Params::parse(&uri, NO_PARAMETERS, &[])?;
    let data_bytes = {
        let runner = Arc::clone(&runner);
        tokio::task::spawn_blocking(move || runner.shared().data.size())
            .await
            .unwrap_or(0)
    };
    let (running, queued) = runner.load();
    let o = runner.options();
    let mut health = json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": runner.data_dir().display().to_string(),
        "jobs": runner.job_count(),
        "running": running,
        "queued": queued,
        "max_running": o.max_running,
        "data_bytes": data_bytes,
        "keep_jobs": o.keep_jobs,
        "keep_days": o.keep_days,
        "trace_url": o.trace_url,
        "tokens_field": o.tokens_field,
        "price_per_1k_tokens": o.price_per_1k_tokens,
        "sse_clients": runner.shared().counters.sse_clients.load(Ordering::Relaxed),
    });
    if let (Some(remote), Some(map)) = (runner.remote(), health.as_object_mut()) {
        map.extend(remote.health());
    }
    Ok(Json(health))
}

/// Queues job `requested` (a generated id when `None`) with the runner's
/// remote, and mirrors it here at once, queued; returns its id.
async fn submit(
    runner: &Runner,
    requested: Option<String>,
    rerun_of: Option<String>,
) -> Result<String, RunnerError> {
    let Some(remote) = runner.remote() else {
        return Err(RunnerError::EmptyCommand);
    };
    let id = match requested {
        Some(id) => {
            validate_job_id(&id)?;
            id
        }
        None => crate::reference::generate_job_id(),
    };
    if runner.job(&id).is_ok() {
        return Err(RunnerError::DuplicateJob(id));
    }
    let summary = remote.submit(id, rerun_of).await?;
    runner.mirror(&summary, Vec::new())?;
    Ok(summary.job_id)
}

/// `status=` values: outcomes, comma-separated.
fn outcomes(p: &Params) -> Result<Vec<Outcome>, RunnerError> {
    let Some(list) = p.get("status") else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(|s| {
            Outcome::parse(s.trim()).ok_or_else(|| {
                let all: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                bad(
                    "status",
                    format!(
                        "{s:?} is not one of {} (or a comma list of them)",
                        all.join(", ")
                    ),
                )
            })
        })
        .collect()
}

async fn list_jobs(State(runner): State<Arc<Runner>>, uri: Uri) -> Result<Response, RunnerError> {
    let p = Params::parse(&uri, "limit, before, status, q", &[])?;
    let limit = p.number("limit", 1, 500, 50)? as usize;
    let before = p.text("before")?;
    if let Some(id) = before {
        validate_job_id(id).map_err(|_| bad("before", "is not a valid job id".into()))?;
    }
    let outcomes = outcomes(&p)?;
    let q = p.get("q").filter(|q| !q.is_empty());
    let (jobs, next_before, total) = runner.list_page(limit, before, &outcomes, q)?;
    Ok(Json(json!({ "jobs": jobs, "next_before": next_before, "total": total })).into_response())
}

async fn get_job(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, RunnerError> {
    let job = job_in(&runner, path).await?;
    Params::parse(&uri, NO_PARAMETERS, &[])?;
    Ok(Json(job.detail()).into_response())
}

async fn cancel_job(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, RunnerError> {
    let job = job_in(&runner, path).await?;
    Params::parse(&uri, NO_PARAMETERS, &[])?;
    match runner.remote() {
        Some(remote) => {
            if !matches!(job.phase(), Phase::Running | Phase::Queued) {
                return Err(RunnerError::AlreadyFinished(job.id().to_owned()));
            }
            remote.cancel(job.id()).await?;
        }
        None => runner.cancel_job(job.id())?,
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job.id() }))).into_response())
}

async fn list_stages(
    State(runner): State<Arc<Runner>>,
    uri: Uri,
) -> Result<Json<Value>, RunnerError> {
    let p = Params::parse(&uri, "window", &[])?;
    let window = p.number("window", 1, MAX_WINDOW as u64, 50)? as usize;
    let catalog = runner.shared().catalog.list();
    let records = runner.records();
    Ok(Json(window_stats(records, &catalog, window)))
}

async fn job_events(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, RunnerError> {
    let job = job_in(&runner, path).await?;
    let p = Params::parse(&uri, "after", &[])?;
    let after = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => p.number("after", 0, u64::MAX, 0)?,
        Some(Ok(v)) if v.trim().is_empty() => 0,
        Some(Ok(v)) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| RunnerError::BadLastEventId)?,
        Some(Err(_)) => return Err(RunnerError::BadLastEventId),
    };
    Ok((
        [(HeaderName::from_static("x-accel-buffering"), "no")],
        sse::response(job, after, KEEP_ALIVE),
    )
        .into_response())
}

/// `level=`: one of the `log` levels.
fn level(p: &Params) -> Result<Option<Level>, RunnerError> {
    p.get("level")
        .map(|v| {
            serde_json::from_value::<Level>(Value::from(v)).map_err(|_| {
                bad(
                    "level",
                    format!("{v:?} is not one of trace, debug, info, warn, error"),
                )
            })
        })
        .transpose()
}

/// Which lines a `/lines` or `/search` request keeps.
struct LineFilter<'a> {
    stage: Option<&'a str>,
    level: Option<Level>,
}

impl LineFilter<'_> {
    fn is_all(&self) -> bool {
        self.stage.is_none() && self.level.is_none()
    }

    fn keeps(&self, line: &Map<String, Value>) -> bool {
        if let Some(stage) = self.stage {
            if line.get("layer_name").and_then(Value::as_str) != Some(stage) {
                return false;
            }
        }
        match self.level {
            Some(min) => log_level(line).is_some_and(|l| l >= min),
            None => true,
        }
    }
}

fn parse_line(record: &Record) -> Map<String, Value> {
    match serde_json::from_str(&record.data) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// A reader of `job`'s log at line `from`; `None` when the job has no log
/// file (its lines are lost).
async fn reader_at(job: &Job, from: u64) -> Result<Option<RecordReader>, RunnerError> {
    match RecordReader::open(job.events_path(), job.offset_before(from)).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunnerError::DataDir {
            path: job.events_path().clone(),
            source,
        }),
    }
}

fn read_error(job: &Job) -> impl FnOnce(std::io::Error) -> RunnerError + '_ {
    move |source| RunnerError::DataDir {
        path: job.events_path().clone(),
        source,
    }
}

async fn job_lines(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, RunnerError> {
    let job = job_in(&runner, path).await?;
    let p = Params::parse(&uri, "from, limit, stage, level", &[])?;
    let from = p.number("from", 1, u64::MAX, 1)?;
    let limit = p.number("limit", 1, 10_000, 1000)? as usize;
    let filter = LineFilter {
        stage: p.text("stage")?,
        level: level(&p)?,
    };
    let last = job.last_seq();
    let mut body = Vec::new();
    let mut rows = 0;
    let mut next_from = None;
    if let Some(mut reader) = reader_at(&job, from).await? {
        while let Some(record) = reader.next().await.map_err(read_error(&job))? {
            if record.seq < from {
                continue;
            }
            if record.seq > last {
                break;
            }
            if !filter.is_all() && !filter.keeps(&parse_line(&record)) {
                continue;
            }
            if rows == limit || body.len() >= PAGE_BYTES {
                next_from = Some(record.seq);
                break;
            }
            body.extend_from_slice(format!(r#"{{"seq":{},"data":"#, record.seq).as_bytes());
            body.extend_from_slice(record.data.as_bytes());
            body.extend_from_slice(b"}\n");
            rows += 1;
        }
    }
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("x-last-seq", HeaderValue::from(last));
    if let Some(next) = next_from {
        headers.insert("x-next-from", HeaderValue::from(next));
    }
    Ok(response)
}

async fn job_log(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, RunnerError> {
    let job = job_in(&runner, path).await?;
    Params::parse(&uri, NO_PARAMETERS, &[])?;
    let id = job.id().to_owned();
    let last = job.last_seq();
    let reader = reader_at(&job, 1).await?;
    let (tx, body) = sse::channel_body();
    tokio::spawn(async move {
        let Some(mut reader) = reader else { return };
        let mut chunk = Vec::with_capacity(LOG_CHUNK + 1024);
        loop {
            match reader.next().await {
                Ok(Some(record)) if record.seq <= last => {
                    chunk.extend_from_slice(record.data.as_bytes());
                    chunk.push(b'\n');
                    if chunk.len() >= LOG_CHUNK {
                        let full =
                            std::mem::replace(&mut chunk, Vec::with_capacity(LOG_CHUNK + 1024));
                        if tx.send(Bytes::from(full)).await.is_err() {
                            return;
                        }
                    }
                    if record.seq == last {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::error!("cannot read {}: {e}", job.events_path().display());
                    break;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(Bytes::from(chunk)).await;
        }
    });
    // A job id is only `[A-Za-z0-9_-]`: safe inside the quotes.
    let disposition = format!("attachment; filename=\"{id}.jsonl\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// Whether `line` shows `needle` (lower case) to a user: its output text,
/// log message, error or stage name, ignoring case.
fn shows(line: &Map<String, Value>, needle: &str) -> bool {
    ["text", "message", "error", "layer_name"]
        .iter()
        .any(|key| {
            line.get(*key)
                .and_then(Value::as_str)
                .is_some_and(|v| v.to_lowercase().contains(needle))
        })
}

async fn job_search(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, RunnerError> {
    let job = job_in(&runner, path).await?;
    let p = Params::parse(&uri, "q, level, limit", &[])?;
    let needle = p
        .text("q")?
        .ok_or_else(|| bad("q", "is required: the text to look for".into()))?
        .to_lowercase();
    let filter = LineFilter {
        stage: None,
        level: level(&p)?,
    };
    let limit = p.number("limit", 1, 100_000, 10_000)? as usize;
    let last = job.last_seq();
    let mut seqs = Vec::new();
    let mut count = 0u64;
    if let Some(mut reader) = reader_at(&job, 1).await? {
        while let Some(record) = reader.next().await.map_err(read_error(&job))? {
            if record.seq > last {
                break;
            }
            // Without a `\` the JSON text holds every string as it is, so a
            // line whose text lacks the needle cannot show it: skip parsing.
            if !record.data.contains('\\') && !record.data.to_lowercase().contains(&needle) {
                continue;
            }
            let line = parse_line(&record);
            if filter.keeps(&line) && shows(&line, &needle) {
                count += 1;
                if seqs.len() < limit {
                    seqs.push(record.seq);
                }
            }
        }
    }
    let truncated = count > seqs.len() as u64;
    Ok(Json(json!({ "count": count, "seqs": seqs, "truncated": truncated })).into_response())
}

async fn stream(State(runner): State<Arc<Runner>>, uri: Uri) -> Result<Response, RunnerError> {
    let p = Params::parse(&uri, "job, jobs", &["job"])?;
    let watch_list = match p.get("jobs") {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(bad("jobs", "must be 1 (or 0)".into())),
    };
    if p.all("job").count() > MAX_STREAM_JOBS {
        return Err(bad(
            "job",
            format!("at most {MAX_STREAM_JOBS} jobs per stream"),
        ));
    }
    let mut jobs: Vec<(Arc<Job>, u64)> = Vec::new();
    for value in p.all("job") {
        let (id, after) = value.split_once(':').unwrap_or((value, "0"));
        validate_job_id(id).map_err(|_| bad("job", format!("{id:?} is not a valid job id")))?;
        let after = after.parse::<u64>().map_err(|_| {
            bad(
                "job",
                format!("{value:?}: give ID:AFTER, AFTER the last seq held (0 for all)"),
            )
        })?;
        if jobs.iter().any(|(j, _)| j.id() == id) {
            return Err(bad("job", format!("job {id} is given more than once")));
        }
        jobs.push((find_job(&runner, id).await?, after));
    }
    Ok((
        [(HeaderName::from_static("x-accel-buffering"), "no")],
        sse::multiplex(runner, jobs, watch_list, KEEP_ALIVE),
    )
        .into_response())
}
