//! SPEC 4.1 under concurrency: many threads, async stages polled many times
//! on several threads, span ids reused after close, and span clones that
//! outlive their scope. Every stream goes through the checker.
use crate::common;

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tracing::{error, info, info_span, Instrument};

use common::checker::{check, End};

#[test]
fn eight_threads_times_a_thousand_pipelines_lose_double_and_cross_nothing() {
    const THREADS: usize = 8;
    const PIPELINES: usize = 1000;
    let (dispatch, capture) = common::dispatch();
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let dispatch = dispatch.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    barrier.wait();
                    for i in 0..PIPELINES {
                        let job = format!("t{t}-p{i}");
                        let _p = info_span!("pipeline", job_id = %job, t, i).entered();
                        {
                            let _s = info_span!("first", layer = 1, i).entered();
                            info!(job = %job, "working");
                        }
                        {
                            let _s = info_span!("second", layer = 2.5).entered();
                            if i % 3 == 0 {
                                error!(error = %job, "failed");
                            }
                        }
                        if i % 5 == 0 {
                            drop(info_span!("third", layer = 3, skipped = true));
                        }
                    }
                })
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let lines = capture.lines();
    assert_eq!(capture.writes(), lines.len());
    let summary = check(&lines);
    assert_eq!(summary.pipelines.len(), THREADS * PIPELINES);
    for t in 0..THREADS {
        for i in 0..PIPELINES {
            let job = format!("t{t}-p{i}");
            let p = &summary.pipelines[&job];
            let failed = u64::from(i % 3 == 0);
            let skipped = u64::from(i % 5 == 0);
            assert_eq!(p.counts, [2 - failed, failed, skipped], "{job}");
            assert_eq!(p.status, if failed == 1 { "partial" } else { "success" });
            assert_eq!(p.metadata, serde_json::json!({"t": t, "i": i}), "{job}");
            let first = &summary.stages[&(Some(job.clone()), "first".to_owned())];
            assert_eq!(first.metadata, Some(serde_json::json!({"i": i})), "{job}");
            let second = &summary.stages[&(Some(job.clone()), "second".to_owned())];
            if failed == 1 {
                assert_eq!(second.end, End::Error);
                assert_eq!(second.error.as_deref(), Some(job.as_str()), "cross-wired");
            } else {
                assert_eq!(second.end, End::Complete);
            }
        }
    }
    // Every log line sits in the stage and job it was fired in.
    let working = &summary.logs["working"];
    assert_eq!(working.len(), THREADS * PIPELINES);
    for (line, log) in common::of_kind(&lines, "log")
        .iter()
        .filter(|l| l["message"] == "working")
        .zip(working)
    {
        assert_eq!(line["metadata"]["job"], line["job_id"], "{line}");
        assert_eq!(log.layer_name.as_deref(), Some("first"));
    }
    assert_eq!(
        summary.stages.len(),
        THREADS * PIPELINES * 2 + THREADS * PIPELINES / 5
    );
}

/// Polls `fut` by hand, each poll on a new thread in turn, until it is
/// ready; returns the threads it ran on.
fn poll_on_many_threads<F>(dispatch: &tracing::Dispatch, fut: F) -> HashSet<std::thread::ThreadId>
where
    F: Future<Output = ()> + Send,
{
    let fut = Mutex::new(Box::pin(fut));
    let mut threads = HashSet::new();
    for _ in 0..1000 {
        let ready = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tracing::dispatcher::with_default(dispatch, || {
                        let waker = common::noop_waker();
                        let mut cx = Context::from_waker(&waker);
                        let ready = fut.lock().unwrap().as_mut().poll(&mut cx).is_ready();
                        (ready, std::thread::current().id())
                    })
                })
                .join()
                .unwrap()
        });
        threads.insert(ready.1);
        if ready.0 {
            return threads;
        }
    }
    panic!("the future never finished");
}

/// Returns `Pending` `n` times (waking itself), then `Ready`.
struct YieldN(u32);

impl Future for YieldN {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn an_async_stage_polled_on_many_threads_starts_and_ends_once() {
    let (dispatch, capture) = common::dispatch();
    let pipeline =
        tracing::dispatcher::with_default(&dispatch, || info_span!("pipeline", job_id = "moving"));
    let stage_span = tracing::dispatcher::with_default(
        &dispatch,
        || info_span!(parent: &pipeline, "company_researcher", layer = 3),
    );
    let fut = async move {
        async {
            for i in 0..20 {
                info!(i, "step");
                YieldN(1).await;
            }
        }
        .instrument(stage_span)
        .await;
    }
    .instrument(pipeline);
    let threads = poll_on_many_threads(&dispatch, fut);
    assert!(threads.len() >= 20, "polled on {} threads", threads.len());
    let lines = capture.lines();
    let summary = check(&lines);
    assert_eq!(summary.pipelines["moving"].counts, [1, 0, 0]);
    assert_eq!(
        common::events(&lines)
            .into_iter()
            .filter(|e| *e != "log")
            .collect::<Vec<_>>(),
        [
            "pipeline_start",
            "layer_start",
            "layer_complete",
            "pipeline_complete"
        ]
    );
    assert_eq!(summary.logs["step"].len(), 20);
}

#[test]
fn async_pipelines_on_a_multi_thread_runtime() {
    const JOBS: usize = 200;
    let (dispatch, capture) = common::dispatch();
    let rt = common::multi_thread_runtime(&dispatch, 4);
    let threads = Arc::new(Mutex::new(HashSet::new()));
    tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(async {
            let mut handles = Vec::new();
            for j in 0..JOBS {
                let threads = Arc::clone(&threads);
                let pipeline = info_span!("pipeline", job_id = %format!("job-{j}"));
                handles.push(tokio::spawn(
                    async move {
                        for (k, name) in ["a", "b", "c"].into_iter().enumerate() {
                            let threads = Arc::clone(&threads);
                            let stage = info_span!("stage", layer = k, layer_name = name);
                            let work = async move {
                                for _ in 0..10 {
                                    threads.lock().unwrap().insert(std::thread::current().id());
                                    tokio::task::yield_now().await;
                                }
                                if name == "b" && j % 2 == 0 {
                                    error!("b failed in {j}");
                                }
                            }
                            .instrument(stage);
                            if name == "c" {
                                // Spawned: it runs wherever the scheduler puts it.
                                tokio::spawn(work).await.unwrap();
                            } else {
                                work.await;
                            }
                        }
                    }
                    .instrument(pipeline),
                ));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
    });
    drop(rt);
    assert!(threads.lock().unwrap().len() >= 2, "ran on several threads");
    let lines = capture.lines();
    let summary = check(&lines);
    assert_eq!(summary.pipelines.len(), JOBS);
    for j in 0..JOBS {
        let job = format!("job-{j}");
        let p = &summary.pipelines[&job];
        let failed = u64::from(j % 2 == 0);
        assert_eq!(p.counts, [3 - failed, failed, 0], "{job}");
        let b = &summary.stages[&(Some(job.clone()), "b".to_owned())];
        if failed == 1 {
            assert_eq!(
                b.error.as_deref(),
                Some(format!("b failed in {j}").as_str())
            );
        }
    }
}

#[test]
fn span_ids_reused_after_close_start_fresh() {
    let (dispatch, capture) = common::dispatch();
    let mut ids = Vec::new();
    tracing::dispatcher::with_default(&dispatch, || {
        let _p = info_span!("pipeline", job_id = "j").entered();
        for i in 0..50 {
            let fail = i % 2 == 0;
            let s = if fail {
                info_span!("failing", layer = 1, layer_name = %format!("s{i}"))
            } else {
                info_span!("fine", layer = 2, layer_name = %format!("s{i}"), n = i)
            };
            ids.push(s.id().unwrap());
            let _g = s.enter();
            if fail {
                error!("broke {i}");
            }
        }
    });
    // The registry hands out the same slot (the low bits of the id, whose
    // extensions the layer uses) again and again; only a generation differs.
    let slots: BTreeSet<_> = ids.iter().map(|id| id.into_u64() & 0xffff_ffff).collect();
    assert!(slots.len() < ids.len(), "slots were reused: {slots:?}");
    let summary = check(&capture.lines());
    for i in 0..50 {
        let s = &summary.stages[&(Some("j".to_owned()), format!("s{i}"))];
        if i % 2 == 0 {
            assert_eq!(s.end, End::Error);
            assert_eq!(s.error.as_deref(), Some(format!("broke {i}").as_str()));
            assert_eq!(s.layer.as_deref(), Some("1"));
            assert_eq!(s.metadata, None);
        } else {
            assert_eq!(
                s.end,
                End::Complete,
                "no state left over from the last user of the id"
            );
            assert_eq!(s.layer.as_deref(), Some("2"));
            assert_eq!(s.metadata, Some(serde_json::json!({"n": i})));
        }
    }
    assert_eq!(summary.pipelines["j"].counts, [25, 25, 0]);
}

#[test]
fn clones_outliving_their_scope_end_the_stage_when_the_last_one_drops() {
    let (dispatch, capture) = common::dispatch();
    let (send, receive) = std::sync::mpsc::channel::<tracing::Span>();
    // The last clones drop on another thread. It has the subscriber as its
    // default too: tracing-subscriber's registry closes a parent (here the
    // pipeline) through the default subscriber of the thread that closes its
    // last child, as any thread of a program with a global subscriber has.
    let keeper_dispatch = dispatch.clone();
    let keeper = std::thread::spawn(move || {
        let kept: Vec<_> = receive.iter().collect();
        for s in &kept {
            s.record("late", 7);
        }
        tracing::dispatcher::with_default(&keeper_dispatch, || drop(kept));
    });
    tracing::dispatcher::with_default(&dispatch, || {
        let _p = info_span!("pipeline", job_id = "j").entered();
        for i in 0..10 {
            let s = info_span!("s", layer = 1, layer_name = %format!("s{i}"), late = tracing::field::Empty);
            let _g = s.enter();
            send.send(s.clone()).unwrap();
        }
        info!("the scopes have ended");
    });
    assert!(
        !capture.text().contains("layer_complete"),
        "no stage can end while a clone is alive"
    );
    drop(send);
    keeper.join().unwrap();
    let lines = capture.lines();
    let summary = check(&lines);
    for i in 0..10 {
        let s = &summary.stages[&(Some("j".to_owned()), format!("s{i}"))];
        assert_eq!(s.metadata, Some(serde_json::json!({"late": 7})));
    }
    assert_eq!(summary.pipelines["j"].counts, [10, 0, 0]);
    assert_eq!(common::events(&lines).last(), Some(&"pipeline_complete"));
}

#[test]
fn a_future_is_dropped_unfinished_and_its_stage_still_ends_once() {
    let lines = common::capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        let mut fut = pin!(async {
            YieldN(5).await;
        }
        .instrument(info_span!("cancelled", layer = 1)));
        let waker = common::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    });
    let summary = check(&lines);
    assert_eq!(summary.pipelines["j"].counts, [1, 0, 0]);
}
