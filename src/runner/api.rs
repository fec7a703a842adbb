//! The HTTP surface: [`app`] builds the axum router; `super::serve` runs it.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` and the page's other files | the page, embedded in the binary |
//! | `POST /api/jobs` | starts a job: optional body `{"job_id":"..."}` → 201 `{"job_id":"..."}` |
//! | `GET /api/jobs` | job summaries, newest first |
//! | `GET /api/jobs/{id}` | a summary plus its `stages` |
//! | `POST /api/jobs/{id}/cancel` | 202, or 409 when it has ended |
//! | `GET /api/jobs/{id}/events` | Server-Sent Events, resumable with `Last-Event-ID` |
//! | `GET /api/stages` | every stage seen so far, ordered by layer |
//!
//! Errors are JSON `{"error":"..."}` with 400 (bad id or body), 403
//! (cross-origin write), 404, 405, 409, 413 (body over 16 KiB) or 503
//! (shutting down). Every response carries `X-Content-Type-Options: nosniff`
//! and a strict `Content-Security-Policy` (`CSP` below).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tower_http::set_header::SetResponseHeaderLayer;

use super::{sse, Runner, RunnerError};

/// The largest request body accepted, in bytes.
const MAX_BODY: usize = 16 * 1024;
/// How often an idle event stream gets a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
    router
        .route("/api/jobs", get(list_jobs).post(create_job))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/stages", get(list_stages))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
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

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

impl IntoResponse for RunnerError {
    fn into_response(self) -> Response {
        let status = match self {
            RunnerError::InvalidJobId => StatusCode::BAD_REQUEST,
            RunnerError::UnknownJob(_) => StatusCode::NOT_FOUND,
            RunnerError::DuplicateJob(_) | RunnerError::AlreadyFinished(_) => StatusCode::CONFLICT,
            RunnerError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            RunnerError::EmptyCommand
            | RunnerError::DataDir { .. }
            | RunnerError::DataDirInUse(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, &self.to_string())
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
        return error(
            StatusCode::FORBIDDEN,
            "unknown Host: start the runner with --allow-host NAME to serve this name",
        );
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
                return error(StatusCode::FORBIDDEN, "cross-origin request refused");
            }
        }
    }
    next.run(request).await
}

fn body_too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body over {} KiB", MAX_BODY / 1024),
    )
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
        return body_too_large();
    }
    next.run(request).await
}

/// A path that does not even decode (`%ff`) is a bad id like any other.
fn job_id(path: Result<Path<String>, PathRejection>) -> Result<String, RunnerError> {
    path.map(|Path(id)| id)
        .map_err(|_| RunnerError::InvalidJobId)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    #[serde(default)]
    job_id: Option<String>,
}

async fn create_job(
    State(runner): State<Arc<Runner>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            return body_too_large()
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        CreateJob { job_id: None }
    } else {
        match serde_json::from_slice::<CreateJob>(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")),
        }
    };
    match runner.start_job(request.job_id) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "job_id": id }))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_jobs(State(runner): State<Arc<Runner>>) -> Response {
    let list: Vec<_> = runner
        .jobs_newest_first()
        .iter()
        .map(|j| j.summary())
        .collect();
    Json(list).into_response()
}

async fn get_job(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match job_id(path) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match runner.job(&id) {
        Ok(job) => Json(job.detail(runner.catalog())).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn cancel_job(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match job_id(path) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match runner.cancel_job(&id) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "job_id": id }))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_stages(State(runner): State<Arc<Runner>>) -> Response {
    let list: Vec<_> = runner
        .catalog()
        .list()
        .into_iter()
        .map(|(layer, layer_name)| json!({ "layer": layer, "layer_name": layer_name }))
        .collect();
    Json(list).into_response()
}

async fn job_events(
    State(runner): State<Arc<Runner>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let id = match job_id(path) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let job = match runner.job(&id) {
        Ok(job) => job,
        Err(e) => return e.into_response(),
    };
    let after = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => 0,
        Some(Ok(v)) if v.trim().is_empty() => 0,
        Some(Ok(v)) => match v.trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad Last-Event-ID"),
        },
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "bad Last-Event-ID"),
    };
    (
        [(header::HeaderName::from_static("x-accel-buffering"), "no")],
        sse::response(job, after, KEEP_ALIVE),
    )
        .into_response()
}
