//! SPEC 4.3: what makes a stage end in `layer_error`, and the `error` text.
//! Errors of the pipeline span itself are in pipeline_status.rs.
use crate::common;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde_json::json;
use tracing::field::Empty;
use tracing::{error, info_span, warn, Instrument};

use common::{capture, normalise, of_kind};

/// The single stage terminal event in `lines`.
fn stage_end(lines: &[serde_json::Value]) -> serde_json::Value {
    let ends: Vec<_> = lines
        .iter()
        .filter(|l| {
            matches!(
                l["event"].as_str(),
                Some("layer_complete" | "layer_error" | "layer_skip")
            )
        })
        .collect();
    assert_eq!(ends.len(), 1, "{lines:#?}");
    ends[0].clone()
}

#[test]
fn an_error_event_in_the_stage_fails_it_with_its_message() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let _s = info_span!("people_mapper", layer = 5, contacts = 4).entered();
        error!("no contacts found");
    });
    assert_eq!(
        normalise(vec![stage_end(&lines)]),
        vec![json!({
            "timestamp":"<ts>","event":"layer_error","layer":5,"layer_name":"people_mapper",
            "job_id":"j","status":"error","duration_ms":0,"error":"no contacts found",
            "metadata":{"contacts":4}
        })]
    );
}

#[test]
fn the_events_error_field_is_the_text_when_it_has_one() {
    let lines = capture(|| {
        let _s = info_span!("s", layer = 1).entered();
        error!(error = "connection refused", "request failed");
    });
    let end = stage_end(&lines);
    assert_eq!(end["error"], "connection refused");
    // The log line keeps both.
    let log = of_kind(&lines, "log")[0];
    assert_eq!(log["message"], "request failed");
    assert_eq!(log["metadata"], json!({"error": "connection refused"}));
}

#[test]
fn an_error_field_given_by_display_or_as_an_error_value_is_its_text() {
    let io = std::io::Error::other("disk full");
    let lines = capture(|| {
        let _s = info_span!("s", layer = 1).entered();
        error!(error = %io, "write failed");
    });
    assert_eq!(stage_end(&lines)["error"], "disk full");
    let lines = capture(|| {
        let _s = info_span!("s", layer = 1).entered();
        let e: &(dyn std::error::Error + 'static) = &io;
        error!(error = e, "write failed");
    });
    assert_eq!(stage_end(&lines)["error"], "disk full");
}

#[test]
fn an_error_in_a_nested_plain_span_fails_the_enclosing_stage() {
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let _s = info_span!("company_researcher", layer = 3).entered();
        let _a = info_span!("fetch").entered();
        let _b = info_span!("parse", attempt = 2).entered();
        error!("bad html");
    });
    let end = stage_end(&lines);
    assert_eq!(end["event"], "layer_error");
    assert_eq!(end["layer_name"], "company_researcher");
    assert_eq!(end["error"], "bad html");
    let p = of_kind(&lines, "pipeline_complete")[0];
    assert_eq!(
        p["status"], "partial",
        "the error belongs to the stage: {p}"
    );
    assert!(p.get("error").is_none());
}

#[test]
fn an_error_in_a_nested_stage_fails_only_that_stage() {
    let lines = capture(|| {
        let _outer = info_span!("outer", layer = 1).entered();
        let _inner = info_span!("inner", layer = 1.5).entered();
        error!("inner broke");
    });
    let ends: Vec<_> = lines
        .iter()
        .filter(|l| l.get("status").is_some())
        .map(|l| (l["layer_name"].clone(), l["event"].clone()))
        .collect();
    assert_eq!(
        ends,
        [
            (json!("inner"), json!("layer_error")),
            (json!("outer"), json!("layer_complete")),
        ]
    );
}

#[derive(Debug, thiserror::Error)]
#[error("mapper failed: {0}")]
struct MapError(&'static str);

#[tracing::instrument(name = "opportunity_mapper", skip_all, fields(layer = 4, fit_score = Empty), err)]
fn map_opportunity(fail: bool) -> Result<u32, MapError> {
    if fail {
        return Err(MapError("no fit"));
    }
    tracing::Span::current().record("fit_score", 85);
    Ok(85)
}

#[tracing::instrument(skip_all, err)]
fn helper_that_fails() -> Result<(), MapError> {
    Err(MapError("helper"))
}

#[tracing::instrument(skip_all, err(Debug))]
fn helper_that_fails_debug() -> Result<(), MapError> {
    Err(MapError("debug"))
}

#[test]
fn instrument_err_fails_the_stage_with_the_error_display() {
    let mut result = None;
    let lines = capture(|| result = Some(map_opportunity(true)));
    assert!(matches!(result, Some(Err(MapError("no fit")))));
    assert_eq!(
        normalise(lines),
        vec![
            json!({"timestamp":"<ts>","event":"layer_start","layer":4,"layer_name":"opportunity_mapper"}),
            json!({"timestamp":"<ts>","event":"log","level":"error","target":"layer::errors","message":"mapper failed: no fit","layer":4,"layer_name":"opportunity_mapper","metadata":{"error":"mapper failed: no fit"}}),
            json!({"timestamp":"<ts>","event":"layer_error","layer":4,"layer_name":"opportunity_mapper","status":"error","duration_ms":0,"error":"mapper failed: no fit"}),
        ]
    );
    let lines = capture(|| assert_eq!(map_opportunity(false).unwrap(), 85));
    assert_eq!(stage_end(&lines)["event"], "layer_complete");
    assert_eq!(stage_end(&lines)["metadata"], json!({"fit_score": 85}));
}

#[test]
fn instrument_err_on_a_nested_helper_fails_the_enclosing_stage() {
    let lines = capture(|| {
        let _s = info_span!("generator", layer = 6).entered();
        let _ = helper_that_fails();
    });
    assert_eq!(stage_end(&lines)["error"], "mapper failed: helper");
    let lines = capture(|| {
        let _s = info_span!("generator", layer = 6).entered();
        let _ = helper_that_fails_debug();
    });
    assert_eq!(stage_end(&lines)["error"], "MapError(\"debug\")");
}

#[tokio::test]
async fn instrument_err_on_an_async_stage_fails_it() {
    #[tracing::instrument(name = "publisher", skip_all, fields(layer = 7), err)]
    async fn publish() -> Result<(), MapError> {
        tokio::task::yield_now().await;
        Err(MapError("offline"))
    }
    let (layer, capture) = common::layer();
    let subscriber =
        tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
    let _guard = tracing::subscriber::set_default(subscriber);
    assert!(publish().await.is_err());
    let lines = capture.lines();
    assert_eq!(stage_end(&lines)["error"], "mapper failed: offline");
}

#[test]
fn recording_an_error_field_fails_the_stage() {
    let lines = capture(|| {
        let s = info_span!("s", layer = 1, error = Empty);
        let _g = s.enter();
        s.record("error", "quota exceeded");
    });
    let end = stage_end(&lines);
    assert_eq!(end["event"], "layer_error");
    assert_eq!(end["error"], "quota exceeded");
    assert!(end.get("metadata").is_none(), "error is reserved: {end}");
}

#[test]
fn an_error_field_given_at_creation_fails_the_stage() {
    let lines = capture(|| {
        drop(info_span!("s", layer = 1, error = "born broken").entered());
    });
    assert_eq!(stage_end(&lines)["error"], "born broken");
}

#[test]
fn the_last_error_wins() {
    let lines = capture(|| {
        let s = info_span!("s", layer = 1, error = Empty);
        let _g = s.enter();
        error!("first");
        s.record("error", "second");
        {
            let _n = info_span!("nested").entered();
            error!(error = "third", "with a message");
        }
        error!("fourth");
    });
    assert_eq!(stage_end(&lines)["error"], "fourth");
    let lines = capture(|| {
        let s = info_span!("s", layer = 1, error = Empty);
        let _g = s.enter();
        error!("first");
        s.record("error", "recorded last");
    });
    assert_eq!(stage_end(&lines)["error"], "recorded last");
}

#[test]
fn warnings_and_errors_outside_the_stage_do_not_fail_it() {
    let lines = capture(|| {
        let s = info_span!("s", layer = 1);
        error!("before the stage, outside it");
        {
            let _g = s.enter();
            warn!("just a warning");
        }
        error!("between enters, outside it");
        drop(s);
    });
    assert_eq!(stage_end(&lines)["event"], "layer_complete");
}

#[test]
fn a_panic_unwinding_out_of_a_stage_fails_it_with_the_panic_message() {
    common::quiet_panic_hook();
    let lines = capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let r = catch_unwind(|| {
            let _s = info_span!("star_selector", layer = 2.5).entered();
            panic!("injected: no stories");
        });
        assert!(r.is_err());
        let r = catch_unwind(|| {
            let _s = info_span!("formatted", layer = 3).entered();
            let n = 3;
            panic!("injected: {n} stories");
        });
        assert!(r.is_err());
    });
    let errors: Vec<_> = of_kind(&lines, "layer_error")
        .iter()
        .map(|l| (l["layer_name"].clone(), l["error"].clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (json!("star_selector"), json!("injected: no stories")),
            (json!("formatted"), json!("injected: 3 stories")),
        ]
    );
    let p = of_kind(&lines, "pipeline_complete")[0];
    assert_eq!(p["status"], "partial", "{p}");
}

#[test]
fn a_panic_without_a_text_message_is_called_panicked() {
    common::quiet_panic_hook();
    let lines = capture(|| {
        let r = catch_unwind(|| {
            let _s = info_span!("s", layer = 1).entered();
            std::panic::panic_any(42_u32);
        });
        assert!(r.is_err());
    });
    assert_eq!(stage_end(&lines)["error"], "panicked");
}

#[test]
fn a_panic_in_a_nested_plain_span_fails_the_stage() {
    common::quiet_panic_hook();
    let lines = capture(|| {
        let r = catch_unwind(|| {
            let _s = info_span!("s", layer = 1).entered();
            let _n = info_span!("nested").entered();
            panic!("injected: deep");
        });
        assert!(r.is_err());
    });
    assert_eq!(stage_end(&lines)["error"], "injected: deep");
}

#[test]
fn a_panic_caught_inside_the_stage_does_not_fail_it() {
    common::quiet_panic_hook();
    let lines = capture(|| {
        let _s = info_span!("s", layer = 1).entered();
        let r = catch_unwind(|| {
            let _n = info_span!("nested").entered();
            panic!("injected: recovered");
        });
        assert!(r.is_err());
    });
    assert_eq!(stage_end(&lines)["event"], "layer_complete");
}

/// Polls the inner future inside `catch_unwind`, like `FutureExt::catch_unwind`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[test]
fn a_panic_in_an_async_stage_after_awaits_fails_it() {
    common::quiet_panic_hook();
    let lines = capture(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pipeline = info_span!("pipeline", job_id = "j");
            async {
                let stage = async {
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    panic!("injected: async");
                }
                .instrument(info_span!("role_researcher", layer = 3));
                assert!(CatchUnwind(Box::pin(stage)).await.is_err());
                async {}.instrument(info_span!("after", layer = 4)).await;
            }
            .instrument(pipeline)
            .await;
        });
    });
    let ends: Vec<_> = lines
        .iter()
        .filter(|l| l.get("status").is_some())
        .map(|l| (l["event"].clone(), l["error"].clone()))
        .collect();
    assert_eq!(
        ends,
        [
            (json!("layer_error"), json!("injected: async")),
            (json!("layer_complete"), serde_json::Value::Null),
            (json!("pipeline_complete"), serde_json::Value::Null),
        ]
    );
    assert_eq!(of_kind(&lines, "pipeline_complete")[0]["status"], "partial");
}

#[test]
fn a_panic_in_a_spawned_task_on_a_multi_thread_runtime_fails_its_stage() {
    common::quiet_panic_hook();
    let (dispatch, capture) = common::dispatch();
    let rt = common::multi_thread_runtime(&dispatch, 2);
    tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(async {
            let pipeline = info_span!("pipeline", job_id = "spawned");
            async {
                let stage = info_span!("generator", layer = 6);
                let handle = tokio::spawn(
                    async {
                        tokio::task::yield_now().await;
                        panic!("injected: in a task");
                    }
                    .instrument(stage),
                );
                let err = handle.await.expect_err("the task panicked");
                assert!(err.is_panic());
                async {
                    tokio::task::yield_now().await;
                }
                .instrument(info_span!("publisher", layer = 7))
                .await;
            }
            .instrument(pipeline)
            .await;
        });
    });
    drop(rt);
    let lines = capture.lines();
    let summary = common::checker::check(&lines);
    let stages: Vec<_> = summary
        .stages
        .iter()
        .map(|((job, name), s)| (job.clone(), name.clone(), s.end, s.error.clone()))
        .collect();
    use common::checker::End;
    assert_eq!(
        stages,
        [
            (
                Some("spawned".to_owned()),
                "generator".to_owned(),
                End::Error,
                Some("injected: in a task".to_owned())
            ),
            (
                Some("spawned".to_owned()),
                "publisher".to_owned(),
                End::Complete,
                None
            ),
        ]
    );
    assert_eq!(summary.pipelines["spawned"].status, "partial");
}
