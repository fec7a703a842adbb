//! SPEC 4.2: `duration_ms` is whole milliseconds of wall-clock time from
//! first enter to close, suspension at `.await` included. Only lower bounds
//! (and one very generous upper bound) are asserted: machines are slow.
use crate::common;

use std::time::Duration;

use tracing::{info_span, Instrument};

use common::of_kind;

fn duration(lines: &[serde_json::Value], event: &str) -> u64 {
    let l = of_kind(lines, event);
    assert_eq!(l.len(), 1, "{lines:#?}");
    l[0]["duration_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("whole milliseconds: {}", l[0]))
}

#[test]
fn time_suspended_at_an_await_counts() {
    let lines = common::capture(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(
            async {
                async {
                    // Suspended, not entered, for these 60 ms.
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                .instrument(info_span!("role_researcher", layer = 3))
                .await;
            }
            .instrument(info_span!("pipeline", job_id = "j")),
        );
    });
    assert!(duration(&lines, "layer_complete") >= 60, "{lines:#?}");
    assert!(duration(&lines, "pipeline_complete") >= 60, "{lines:#?}");
}

#[test]
fn time_between_exit_and_close_counts() {
    let lines = common::capture(|| {
        let s = info_span!("s", layer = 1);
        drop(s.enter());
        std::thread::sleep(Duration::from_millis(40));
        drop(s.enter());
        std::thread::sleep(Duration::from_millis(40));
    });
    assert!(duration(&lines, "layer_complete") >= 80, "{lines:#?}");
}

#[test]
fn time_before_the_first_enter_does_not_count() {
    let lines = common::capture(|| {
        let s = info_span!("s", layer = 1);
        std::thread::sleep(Duration::from_millis(1500));
        drop(s.entered());
    });
    // The stage itself took microseconds; 1.5 s passed before it started.
    assert!(duration(&lines, "layer_complete") < 1500, "{lines:#?}");
}

#[test]
fn a_pipeline_lasts_at_least_as_long_as_its_stages() {
    let lines = common::capture(|| {
        let _p = info_span!("pipeline", job_id = "j").entered();
        for name in ["a", "b"] {
            let _s = info_span!("stage", layer = 1, layer_name = name).entered();
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    let stages: u64 = of_kind(&lines, "layer_complete")
        .iter()
        .map(|l| {
            let d = l["duration_ms"].as_u64().unwrap();
            assert!(d >= 25, "{l}");
            d
        })
        .sum();
    assert!(duration(&lines, "pipeline_complete") >= stages);
}
