//! Per-stage statistics (`GET /api/stages?window=N`), tokens and cost in
//! the job summary and detail, bad tokens values ignored, strict
//! parameters.
#![cfg(feature = "runner")]

mod runner_common;

use runner_common::{create_job, get_json, send_json, sh, wait_finished, Server};
use serde_json::json;
use tracing_pipeline::runner::RunnerOptions;

/// Stage `fetch` (layer 1) takes `$JOB_ID`'s duration and tokens; stage
/// `write` (layer 2) fails for jobs named `fail*`, is skipped for `skip*`.
/// Job ids are `<kind>-<ms>-<tokens>`.
const SCRIPT: &str = r#"kind=${JOB_ID%%-*}; rest=${JOB_ID#*-}; ms=${rest%%-*}; tok=${rest#*-}
case $tok in neg) tok=-5;; str) tok='"many"';; huge) tok=1e300;; esac
echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_start","layer":1,"layer_name":"fetch"}'
echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_complete","layer":1,"layer_name":"fetch","status":"success","duration_ms":'$ms',"metadata":{"n_tokens":'$tok',"tokens_used":1}}'
case $kind in
fail) echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_start","layer":2,"layer_name":"write"}'
      echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_error","layer":2,"layer_name":"write","status":"error","duration_ms":3,"error":"boom","metadata":{"n_tokens":50}}';;
skip) echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_skip","layer":2,"layer_name":"write","status":"skipped","duration_ms":0}';;
*)    echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_start","layer":2,"layer_name":"write"}'
      echo '{"timestamp":"2026-12-01T10:00:00.000Z","event":"layer_complete","layer":2,"layer_name":"write","status":"success","duration_ms":7}';;
esac"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_statistics_over_a_window_with_tokens_and_cost() {
    let opts = RunnerOptions::default()
        .tokens_field("n_tokens")
        .price_per_1k_tokens(Some(0.5));
    let srv = Server::start_with(sh(SCRIPT), opts, None).await;
    let ids = [
        "ok-100-1000",
        "fail-200-2000",
        "skip-300-neg",
        "ok-400-str",
        "ok-500-huge",
        "ok-600-4000",
    ];
    for id in ids {
        create_job(&srv.url, Some(id)).await.unwrap();
        // One at a time: the window's order is the finish order.
        wait_finished(&srv.url, id).await;
    }
    let one = get_json(&format!("{}/api/jobs/fail-200-2000", srv.url))
        .await
        .unwrap();
    assert_eq!(one["tokens"], 2050);
    assert_eq!(one["cost"], 1.025);
    let fetch = &one["stages"][0];
    assert_eq!(fetch["tokens"], 2000);
    assert!(fetch["started_at"].as_str().unwrap() <= fetch["finished_at"].as_str().unwrap());
    assert_eq!(one["stages"][1]["tokens"], 50);
    let bad = get_json(&format!("{}/api/jobs/skip-300-neg", srv.url))
        .await
        .unwrap();
    assert!(
        bad.get("tokens").is_none() && bad.get("cost").is_none(),
        "{bad}"
    );
    assert!(bad["stages"][0].get("tokens").is_none());

    let all = get_json(&format!("{}/api/stages?window=50", srv.url))
        .await
        .unwrap();
    assert_eq!((&all["window"], &all["jobs"]), (&json!(50), &json!(6)));
    let f = &all["stages"][0];
    assert_eq!(f["layer_name"], "fetch");
    assert_eq!(
        (&f["runs"], &f["complete"], &f["error"]),
        (&json!(6), &json!(6), &json!(0))
    );
    assert_eq!(f["p50_ms"], 300, "nearest rank over 100..600");
    assert_eq!(f["p95_ms"], 600);
    assert_eq!(
        f["tokens"], 7000,
        "bad values (negative, a string, 1e300) are ignored"
    );
    let recent: Vec<&str> = f["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(recent, ids, "oldest first");
    assert_eq!(
        f["recent"][1],
        json!({"job_id":"fail-200-2000","status":"complete","duration_ms":200,
        "tokens":2000,"finished_at":one["finished_at"]})
    );
    let w = &all["stages"][1];
    assert_eq!(w["layer_name"], "write");
    assert_eq!(
        (&w["runs"], &w["complete"], &w["error"], &w["skipped"]),
        (&json!(6), &json!(4), &json!(1), &json!(1))
    );
    assert!((w["failure_rate"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-9);
    assert_eq!(
        w["p50_ms"], 7,
        "skipped runs are left out of the percentiles"
    );
    assert_eq!(w["tokens"], 50);

    let last2 = get_json(&format!("{}/api/stages?window=2", srv.url))
        .await
        .unwrap();
    assert_eq!(last2["jobs"], 2);
    let f = &last2["stages"][0];
    assert_eq!(f["runs"], 2);
    assert_eq!(f["p50_ms"], 500);
    assert_eq!(f["tokens"], 4000);
    assert_eq!(last2["stages"][1]["error"], 0);

    for bad in [
        "window=0",
        "window=1001",
        "window=x",
        "window=2&window=3",
        "limit=5",
    ] {
        let (status, v) = send_json("GET", &format!("{}/api/stages?{bad}", srv.url), "").await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            v["error"].as_str().unwrap().contains("window") || bad.starts_with("limit"),
            "{v}"
        );
    }
    let health = get_json(&format!("{}/api/health", srv.url)).await.unwrap();
    assert_eq!(
        (&health["tokens_field"], &health["price_per_1k_tokens"]),
        (&json!("n_tokens"), &json!(0.5))
    );
    srv.shutdown().await;
}
