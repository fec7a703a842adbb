//! Memory soak for `PipelineLayer`: 1,000,000 pipeline runs (9 spans, 8
//! events, 26 lines each) into a sink, with the resident set size read from
//! `/proc/self/status` before and after. The layer keeps per-span state in
//! span extensions and frees it when the span closes, so the figure after
//! should be the figure before.
//!
//! Then it holds 100,000 stage spans open at once to measure what one open
//! span costs (registry slot, extensions, the layer's state and fields).
//!
//! ```text
//! cargo run --release --example soak_layer            # 1,000,000 runs
//! SOAK_RUNS=100000 cargo run --release --example soak_layer
//! ```
//!
//! Linux only (it reads `/proc/self/status`); elsewhere it prints no sizes.

use std::io;
use std::time::Instant;

use tracing::{info, info_span, Span};
use tracing_pipeline::Config;
use tracing_subscriber::layer::SubscriberExt as _;

const OPEN_SPANS: usize = 100_000;

/// One stage, with its own call sites.
macro_rules! stage {
    ($name:literal, $layer:expr) => {{
        let span = info_span!(
            $name,
            layer = $layer,
            tokens_used = 1200,
            fit_score = tracing::field::Empty
        );
        let _entered = span.enter();
        info!(stage_detail = 42, "processing item");
        span.record("fit_score", 85);
    }};
}

/// The workload of `benches/layer.rs`.
fn pipeline_run(job_id: &str) {
    let pipeline = info_span!("pipeline", job_id = %job_id);
    let _entered = pipeline.enter();
    stage!("pain_point_miner", 2);
    stage!("star_selector", 2.5);
    stage!("company_researcher", 3);
    stage!("role_researcher", 3);
    stage!("opportunity_mapper", 4);
    stage!("people_mapper", 5);
    stage!("generator", 6);
    stage!("publisher", 7);
}

/// A `kB` line of `/proc/self/status`, in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn rss() -> u64 {
    status_bytes("VmRSS:").unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let runs: u64 = std::env::var("SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (config, _) = Config::from_lookup(|_| None);
    let layer = config.layer().with_writer(io::sink);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("no other subscriber in this example");

    // Warm-up: the registry's slab pages, the thread's buffers, the allocator.
    for i in 0..10_000u64 {
        pipeline_run(&format!("job-{i}"));
    }
    let before = rss();
    let started = Instant::now();
    for i in 0..runs {
        pipeline_run(&format!("job-{}", i % 1000));
    }
    let elapsed = started.elapsed();
    let after = rss();
    println!(
        "{runs} pipeline runs in {:.2} s ({:.0} ns per run, {} lines)",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / runs as f64,
        runs * 26
    );
    println!(
        "RSS before {:.2} MiB, after {:.2} MiB: {:+} KiB",
        mib(before),
        mib(after),
        (after as i64 - before as i64) / 1024
    );
    let grew = after.saturating_sub(before);
    if grew > 1024 * 1024 {
        println!("GROWTH: {:.2} MiB more after {runs} runs", mib(grew));
        std::process::exit(1);
    }
    println!("no growth (under 1 MiB)");

    // What one open span holds: stages entered (started) and left open.
    let pipeline = info_span!("pipeline", job_id = "job-open-spans");
    let spans_before = rss();
    let open: Vec<Span> = pipeline.in_scope(|| {
        (0..OPEN_SPANS)
            .map(|_| {
                let span = info_span!(
                    "opportunity_mapper",
                    layer = 4,
                    tokens_used = 1200,
                    fit_score = tracing::field::Empty
                );
                span.in_scope(|| {});
                span.record("fit_score", 85);
                span
            })
            .collect()
    });
    let spans_after = rss();
    let handle = std::mem::size_of::<Span>() as u64;
    let per_span = spans_after.saturating_sub(spans_before) / OPEN_SPANS as u64;
    println!(
        "{OPEN_SPANS} open stage spans: {:+.2} MiB, {} bytes per open span \
         ({} of them the caller's Span handle, the rest registry slot, extensions and layer state)",
        mib(spans_after.saturating_sub(spans_before)),
        per_span,
        handle
    );
    drop(open);
    drop(pipeline);
    println!(
        "after closing them: RSS {:.2} MiB (freed memory stays with the allocator and the registry's slab)",
        mib(rss())
    );
}
