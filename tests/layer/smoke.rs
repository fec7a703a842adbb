//! A first look: one pipeline with two stages, compared as parsed JSON.
use crate::common;

use serde_json::json;
use tracing::{info, info_span};

#[test]
fn one_pipeline_two_stages() {
    let lines = common::capture(|| {
        let p = info_span!("pipeline", job_id = "j1");
        let _p = p.enter();
        {
            let s = info_span!("pain_point_miner", layer = 2, tokens_used = 1200);
            let _s = s.enter();
            info!(n = 1, "hello");
        }
    });
    assert_eq!(
        common::normalise(lines),
        vec![
            json!({"timestamp":"<ts>","event":"pipeline_start","job_id":"j1"}),
            json!({"timestamp":"<ts>","event":"layer_start","layer":2,"layer_name":"pain_point_miner","job_id":"j1"}),
            json!({"timestamp":"<ts>","event":"log","level":"info","target":"layer::smoke","message":"hello","job_id":"j1","layer":2,"layer_name":"pain_point_miner","metadata":{"n":1}}),
            json!({"timestamp":"<ts>","event":"layer_complete","layer":2,"layer_name":"pain_point_miner","job_id":"j1","status":"success","duration_ms":0,"metadata":{"tokens_used":1200}}),
            json!({"timestamp":"<ts>","event":"pipeline_complete","job_id":"j1","status":"success","duration_ms":0,"metadata":{"layers_completed":1,"layers_failed":0,"layers_skipped":0}}),
        ]
    );
}
