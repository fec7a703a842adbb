//! Can `pipeline-view` keep up with a pipeline? A stream of 100,000 lines
//! (10 jobs of 8 stages, mostly `log` lines, some plain output, one line in
//! a hundred malformed) is fed, from memory, through:
//!
//! * `parse_only`: reading each line and parsing it into a
//!   `PipelineEvent` (or seeing that it is output): the least any reader of
//!   the stream does, the baseline;
//! * `plain_view`: parsing, the model, and the append-only lines written
//!   into a byte-counting sink (a CI log, a pipe);
//! * `terminal_view`: parsing, the model, and the terminal view drawing
//!   through `indicatif` onto a byte-counting 80×24 terminal, with the
//!   stage block redrawn and the waiting lines printed above it every 1,000
//!   lines (as when input arrives faster than the view redraws).
//!
//! `cargo bench --bench view --features view` prints each variant's time and
//! its ratio to `parse_only`; docs/view.md quotes the figures.

use std::hint::black_box;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use indicatif::TermLike;
use tracing_pipeline::view::model::{classify, Model, Stream};
use tracing_pipeline::view::render::Palette;
use tracing_pipeline::view::tty::{PlainView, TerminalView};

const LINES: usize = 100_000;
const STAGES: [(&str, &str); 8] = [
    ("2", "pain_point_miner"),
    ("2.5", "star_selector"),
    ("3", "company_researcher"),
    ("3", "role_researcher"),
    ("4", "opportunity_mapper"),
    ("5", "people_mapper"),
    ("6", "generator"),
    ("7", "publisher"),
];

fn stream() -> Vec<String> {
    let ts = "2025-11-29T10:30:45.123Z";
    let jobs = 10;
    let per_stage = LINES / jobs / STAGES.len();
    let mut out = Vec::with_capacity(LINES + 200);
    for j in 0..jobs {
        let job = format!("job-{j}");
        out.push(format!(
            r#"{{"timestamp":"{ts}","event":"pipeline_start","job_id":"{job}"}}"#
        ));
        for (layer, name) in STAGES {
            out.push(format!(
                r#"{{"timestamp":"{ts}","event":"layer_start","layer":{layer},"layer_name":"{name}","job_id":"{job}"}}"#
            ));
            for i in 0..per_stage.saturating_sub(2) {
                out.push(match i % 100 {
                    0 => "\u{1b}[31mnot json\u{1b}[0m \u{fffd}".to_owned(),
                    1..=9 => format!("plain output line {i} of {name}"),
                    _ => format!(
                        r#"{{"timestamp":"{ts}","event":"log","level":"info","target":"job_pipeline","message":"step {i} done","job_id":"{job}","layer":{layer},"layer_name":"{name}","metadata":{{"items":{i}}}}}"#
                    ),
                });
            }
            out.push(format!(
                r#"{{"timestamp":"{ts}","event":"layer_complete","layer":{layer},"layer_name":"{name}","job_id":"{job}","status":"success","duration_ms":412,"metadata":{{"tokens_used":100}}}}"#
            ));
        }
        out.push(format!(
            r#"{{"timestamp":"{ts}","event":"pipeline_complete","job_id":"{job}","status":"success","duration_ms":3300,"metadata":{{"layers_completed":8,"layers_failed":0,"layers_skipped":0}}}}"#
        ));
    }
    out
}

/// A terminal that counts what is drawn on it.
#[derive(Debug, Clone, Default)]
struct CountingTerm(Arc<AtomicU64>);

impl CountingTerm {
    fn add(&self, s: &str) -> io::Result<()> {
        self.0.fetch_add(s.len() as u64 + 1, Ordering::Relaxed);
        Ok(())
    }
}

impl TermLike for CountingTerm {
    fn width(&self) -> u16 {
        80
    }
    fn height(&self) -> u16 {
        24
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        self.add("")
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        self.add("")
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        self.add("")
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        self.add("")
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.add(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.add(s)
    }
    fn clear_line(&self) -> io::Result<()> {
        self.add("")
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Default)]
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn parse_only(lines: &[String]) -> usize {
    let mut events = 0;
    for line in lines {
        if matches!(
            classify(line, Stream::Stdout),
            tracing_pipeline::view::model::Item::Event(_)
        ) {
            events += 1;
        }
    }
    events
}

fn plain_view(lines: &[String]) -> u64 {
    let mut model = Model::new();
    let mut view = PlainView::new(CountingSink::default(), Palette::new(false));
    for line in lines {
        let item = classify(line, Stream::Stdout);
        model.apply(&item, Duration::ZERO);
        view.note(&item).expect("a sink never fails");
    }
    view.finish(&model).expect("a sink never fails");
    view.into_inner().0
}

fn terminal_view(lines: &[String]) -> u64 {
    let term = CountingTerm::default();
    let mut model = Model::new();
    let mut view = TerminalView::new(term.clone(), Palette::new(true));
    let start = Instant::now();
    for (i, line) in lines.iter().enumerate() {
        let item = classify(line, Stream::Stdout);
        model.apply(&item, start.elapsed());
        view.note(&item, &model);
        if i % 1000 == 999 {
            view.draw(&model, start.elapsed(), true);
        }
    }
    view.finish(&model, start.elapsed())
        .expect("a counting terminal never fails");
    term.0.load(Ordering::Relaxed)
}

fn main() {
    let lines = stream();
    assert!(lines.len() >= LINES - 200, "{} lines", lines.len());
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let mut group = c.benchmark_group("view_100k_lines");
    group.bench_function("parse_only", |b| b.iter(|| black_box(parse_only(&lines))));
    group.bench_function("plain_view", |b| b.iter(|| black_box(plain_view(&lines))));
    group.bench_function("terminal_view", |b| {
        b.iter(|| black_box(terminal_view(&lines)))
    });
    group.finish();
    c.final_summary();

    // Side by side, from a few fresh runs each (criterion's figures above
    // are the careful ones; these give the ratio in one line).
    let time = |f: &dyn Fn() -> u64| {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            black_box(f());
            best = best.min(t.elapsed());
        }
        best
    };
    let base = time(&|| parse_only(&lines) as u64);
    let plain = time(&|| plain_view(&lines));
    let tty = time(&|| terminal_view(&lines));
    let per_line = |d: Duration| d.as_nanos() as f64 / lines.len() as f64;
    println!("\n{} lines, best of 5:", lines.len());
    println!(
        "  parse_only     {:>8.1?}  {:>6.0} ns/line  1.00x",
        base,
        per_line(base)
    );
    for (name, d) in [("plain_view", plain), ("terminal_view", tty)] {
        println!(
            "  {name:<13}  {:>8.1?}  {:>6.0} ns/line  {:.2}x",
            d,
            per_line(d),
            d.as_secs_f64() / base.as_secs_f64()
        );
    }
}
