//! The short version of the layer soak (issue 5; the long one is
//! `cargo run --release --example soak_layer`): many pipeline runs through
//! a global subscriber must not grow the process, because every span's
//! state is freed when it closes. A leak of the layer's per-span state
//! (about 300 bytes a stage) would add some 100 MiB here.
//!
//! This file sets the global subscriber, so it holds one test only.

use tracing::{info, info_span};
use tracing_subscriber::layer::SubscriberExt;

fn run(job_id: u64) {
    let pipeline = info_span!("pipeline", job_id = job_id);
    let _p = pipeline.enter();
    for (name, layer) in [
        ("pain_point_miner", 2.0),
        ("star_selector", 2.5),
        ("publisher", 7.0),
    ] {
        let stage = info_span!(
            "stage",
            layer = layer,
            layer_name = name,
            tokens_used = 1200,
            fit_score = tracing::field::Empty
        );
        let _s = stage.enter();
        info!(stage_detail = 42, "processing item");
        stage.record("fit_score", 85);
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn many_pipeline_runs_do_not_grow_the_process() {
    let layer = tracing_pipeline::PipelineLayer::new().with_writer(std::io::sink);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("this file's only test sets the global subscriber");
    // Warm-up: the registry's slab, the thread-local buffers, the allocator.
    for i in 0..5_000 {
        run(i);
    }
    let before = rss_bytes();
    for i in 0..100_000 {
        run(i);
    }
    let after = rss_bytes();
    if before == 0 {
        eprintln!("no /proc/self/status here: memory not measured");
        return;
    }
    let grown = after.saturating_sub(before);
    assert!(
        grown < 4 * 1024 * 1024,
        "the process grew by {} KiB over 100,000 pipeline runs (400,000 spans)",
        grown / 1024
    );
}
