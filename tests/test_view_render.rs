//! The terminal view's frames, exactly: the pure frame function at 80 and
//! 40 columns for a scripted stream, and the whole terminal view drawn by
//! `indicatif` on an in-memory terminal (a vt100 emulator), hostile text
//! included.
#![cfg(feature = "view")]

use std::time::Duration;

use indicatif::InMemoryTerm;
use tracing_pipeline::view::model::{classify, Item, Model, Stream};
use tracing_pipeline::view::render::{frame, summary, FrameSize, Palette};
use tracing_pipeline::view::tty::TerminalView;

const TS: &str = "2025-11-29T10:30:45.123Z";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn start(layer: &str, name: &str) -> String {
    format!(
        r#"{{"timestamp":"{TS}","event":"layer_start","layer":{layer},"layer_name":"{name}","job_id":"demo"}}"#
    )
}

fn done(kind: &str, layer: &str, name: &str, status: &str, rest: &str) -> String {
    format!(
        r#"{{"timestamp":"{TS}","event":"{kind}","layer":{layer},"layer_name":"{name}","job_id":"demo","status":"{status}"{rest}}}"#
    )
}

/// The reference pipeline up to the middle of layer 3, at fixed times.
fn scripted() -> Vec<(u64, String)> {
    vec![
        (
            0,
            format!(r#"{{"timestamp":"{TS}","event":"pipeline_start","job_id":"demo"}}"#),
        ),
        (0, start("2", "pain_point_miner")),
        (
            400,
            done(
                "layer_complete",
                "2",
                "pain_point_miner",
                "success",
                r#","duration_ms":400"#,
            ),
        ),
        (400, start("2.5", "star_selector")),
        (
            650,
            done("layer_skip", "2.5", "star_selector", "skipped", ""),
        ),
        (650, start("3", "company_researcher")),
        (650, start("3", "role_researcher")),
        (
            1150,
            done(
                "layer_error",
                "3",
                "role_researcher",
                "error",
                r#","duration_ms":500,"error":"role_researcher failed: the job board answered 503 Service Unavailable""#,
            ),
        ),
    ]
}

fn model_of(lines: &[(u64, String)]) -> Model {
    let mut m = Model::new();
    for (at, line) in lines {
        m.apply(&classify(line, Stream::Stdout), ms(*at));
    }
    m
}

#[test]
fn frame_at_80_columns() {
    let m = model_of(&scripted());
    let got = frame(&m, FrameSize::new(80, 24), ms(1234), Palette::new(false));
    let want = [
        "job demo  running 1.2s",
        "  ✓ 2   pain_point_miner    400ms",
        "  ↷ 2.5 star_selector       skipped",
        "  ⠹ 3   company_researcher  0.6s",
        "  ✗ 3   role_researcher     500ms role_researcher failed: the job board answer…",
    ];
    assert_eq!(got, want);
    assert!(got.iter().all(|l| l.chars().count() <= 79));
}

#[test]
fn frame_at_40_columns_keeps_every_row_inside() {
    let m = model_of(&scripted());
    let got = frame(&m, FrameSize::new(40, 24), ms(1234), Palette::new(false));
    let want = [
        "job demo  running 1.2s",
        "  ✓ 2   pain_point_miner    400ms",
        "  ↷ 2.5 star_selector       skipped",
        "  ⠹ 3   company_researcher  0.6s",
        "  ✗ 3   role_researcher     500ms role…",
    ];
    assert_eq!(got, want);
}

#[test]
fn frame_at_20_columns_cuts_names_too() {
    let m = model_of(&scripted());
    let got = frame(&m, FrameSize::new(20, 24), ms(1234), Palette::new(false));
    let want = [
        "job demo  running …",
        "  ✓ 2   pai…  400ms",
        "  ↷ 2.5 sta…  skip…",
        "  ⠹ 3   com…  0.6s",
        "  ✗ 3   rol…  500m…",
    ];
    assert_eq!(got, want);
}

#[test]
fn spinner_turns_with_time() {
    let m = model_of(&scripted());
    let row = |t| frame(&m, FrameSize::new(80, 24), ms(t), Palette::new(false))[3].clone();
    assert_eq!(row(700), "  ⠧ 3   company_researcher  0.1s");
    assert_eq!(row(800), "  ⠇ 3   company_researcher  0.1s");
    assert_eq!(row(900), "  ⠏ 3   company_researcher  0.2s");
    assert_eq!(row(1000), "  ⠋ 3   company_researcher  0.3s");
    assert_eq!(row(1650), "  ⠦ 3   company_researcher  1.0s");
}

#[test]
fn colours_only_when_asked() {
    let m = model_of(&scripted());
    let plain = frame(&m, FrameSize::new(80, 24), ms(1234), Palette::new(false));
    assert!(plain.iter().all(|l| !l.contains('\u{1b}')));
    let color = frame(&m, FrameSize::new(80, 24), ms(1234), Palette::new(true));
    assert_eq!(
        color[1],
        "  \u{1b}[32m✓\u{1b}[0m 2   pain_point_miner    400ms"
    );
}

#[test]
fn other_jobs_stages_show_as_pending_then_not_run() {
    let mut lines = scripted();
    lines.push((1200, r#"{"timestamp":"2025-11-29T10:30:46.000Z","event":"layer_start","layer":2,"layer_name":"pain_point_miner","job_id":"b"}"#.to_owned()));
    let mut m = model_of(&lines);
    let got = frame(&m, FrameSize::new(60, 24), ms(1300), Palette::new(false));
    assert_eq!(
        got,
        [
            "job demo  running 1.3s",
            "  ✓ 2   pain_point_miner    400ms",
            "  ↷ 2.5 star_selector       skipped",
            "  ⠸ 3   company_researcher  0.7s",
            "  ✗ 3   role_researcher     500ms role_researcher failed: …",
            "job b  running 0.1s",
            "  ⠸ 2   pain_point_miner    0.1s",
            "  · 2.5 star_selector       pending",
            "  · 3   company_researcher  pending",
            "  · 3   role_researcher     pending",
        ]
    );
    m.apply(
        &classify(
            r#"{"timestamp":"2025-11-29T10:30:46.500Z","event":"pipeline_complete","job_id":"b","status":"error","duration_ms":500,"error":"aborted","metadata":{}}"#,
            Stream::Stdout,
        ),
        ms(1400),
    );
    let got = frame(&m, FrameSize::new(60, 24), ms(1400), Palette::new(false));
    assert_eq!(got[5], "job b  error in 500ms");
    assert_eq!(got[7], "  - 2.5 star_selector       not run");
    // Too short a terminal: the finished job shrinks to its header.
    let got = frame(&m, FrameSize::new(60, 8), ms(1400), Palette::new(false));
    assert_eq!(
        got,
        [
            "job demo  running 1.4s",
            "  ✓ 2   pain_point_miner    400ms",
            "  ↷ 2.5 star_selector       skipped",
            "  ⠼ 3   company_researcher  0.8s",
            "  ✗ 3   role_researcher     500ms role_researcher failed: …",
            "job b  error in 500ms",
        ]
    );
    let got = frame(&m, FrameSize::new(60, 4), ms(1400), Palette::new(false));
    assert_eq!(
        got,
        [
            "job demo  running 1.4s",
            "  ✓ 2   pain_point_miner    400ms",
            "… 4 more rows"
        ]
    );
}

#[test]
fn summary_of_a_stream_without_pipeline_complete() {
    let m = model_of(&scripted());
    assert_eq!(
        summary(&m, Palette::new(false), usize::MAX),
        [
            "job demo: incomplete",
            "  no pipeline_complete in the input",
            "  stages   1 complete, 1 error, 1 skipped, 1 running",
            "  running  company_researcher",
            "  time     0ms",
            "  slowest  role_researcher 500ms",
        ]
    );
}

fn feed(view: &mut TerminalView, model: &mut Model, at: u64, line: &str) {
    let item = classify(line, Stream::Stdout);
    model.apply(&item, ms(at));
    view.note(&item, model);
}

#[test]
fn terminal_view_on_an_in_memory_terminal() {
    let term = InMemoryTerm::new(24, 50);
    let mut view = TerminalView::new(term.clone(), Palette::new(false));
    let mut model = Model::new();
    let lines = scripted();
    for (at, line) in &lines[..3] {
        feed(&mut view, &mut model, *at, line);
    }
    feed(
        &mut view,
        &mut model,
        400,
        &format!(
            r#"{{"timestamp":"{TS}","event":"log","level":"info","target":"t","message":"mined pain points","job_id":"demo","layer":2,"layer_name":"pain_point_miner","metadata":{{"pain_points":5}}}}"#
        ),
    );
    feed(&mut view, &mut model, 400, "fetched 12 pages");
    view.draw(&model, ms(400), true);
    assert_eq!(
        term.contents(),
        "info pain_point_miner: mined pain points pain_poin\nts=5\n\
         fetched 12 pages\n\
         job demo  running 0.4s\n  ✓ 2 pain_point_miner  400ms"
    );
    for (at, line) in &lines[3..] {
        feed(&mut view, &mut model, *at, line);
    }
    view.draw(&model, ms(1234), true);
    assert_eq!(
        term.contents(),
        "info pain_point_miner: mined pain points pain_poin\nts=5\n\
         fetched 12 pages\n\
         ✗ role_researcher: role_researcher failed: the job\n board answered 503 Service Unavailable\n\
         job demo  running 1.2s\n\
         \x20 ✓ 2   pain_point_miner    400ms\n\
         \x20 ↷ 2.5 star_selector       skipped\n\
         \x20 ⠹ 3   company_researcher  0.6s\n\
         \x20 ✗ 3   role_researcher     500ms role_researche…"
    );
    view.finish(&model, ms(1300)).unwrap();
    let screen = term.contents();
    let tail: Vec<&str> = screen.lines().skip(5).collect();
    assert_eq!(
        tail,
        [
            "job demo  running 1.3s",
            "  ✓ 2   pain_point_miner    400ms",
            "  ↷ 2.5 star_selector       skipped",
            "  ⠸ 3   company_researcher  0.7s",
            "  ✗ 3   role_researcher     500ms role_researche…",
            "",
            "job demo: incomplete",
            "  no pipeline_complete in the input",
            "  stages   1 complete, 1 error, 1 skipped,",
            "           1 running",
            "  running  company_researcher",
            "  time     0ms",
            "  slowest  role_researcher 500ms",
        ]
    );
}

#[test]
fn hostile_text_cannot_move_the_cursor_of_the_terminal() {
    let term = InMemoryTerm::new(12, 40);
    let mut view = TerminalView::new(term.clone(), Palette::new(false));
    let mut model = Model::new();
    feed(&mut view, &mut model, 0, &start("1", "a"));
    view.draw(&model, ms(0), true);
    let hostile = [
        // Clear the screen, jump home, write over the block.
        "\u{1b}[2J\u{1b}[HOWNED",
        // Cursor up, erase line; a carriage return to overwrite.
        "x\u{1b}[5A\u{1b}[2Kup\rCR",
        // An OSC title and a scroll region.
        "\u{1b}]0;title\u{7}\u{1b}[1;2rtitle",
        // 8-bit CSI, bidi override, backspaces.
        "c1\u{9b}2J bidi\u{202e}x back\u{8}\u{8}\u{8}",
    ];
    for text in hostile {
        feed(&mut view, &mut model, 10, text);
    }
    // Hostile text in an event's fields, too.
    feed(
        &mut view,
        &mut model,
        20,
        &format!(
            r#"{{"timestamp":"{TS}","event":"layer_error","layer":1,"layer_name":"a\u001b[31m","job_id":"demo","status":"error","duration_ms":5,"error":"bad\u001b[2J\r\nnews"}}"#
        ),
    );
    view.draw(&model, ms(30), true);
    assert_eq!(
        term.contents(),
        "OWNED\n\
         xup^MCR\n\
         title\n\
         c1<U+009B>2J bidi<U+202E>x back^H^H^H\n\
         ✗ a: bad^M^Jnews\n\
         job demo  running 0.0s\n\
         \x20 ⠋ 1 a  0.0s\n\
         \x20 ✗ 1 a  5ms bad^M^Jnews"
    );
}

#[test]
fn malformed_lines_are_output_and_do_not_stop_the_view() {
    let mut m = Model::new();
    let huge = "y".repeat(2_000_000);
    for line in [
        "not json",
        "{\"event\":",
        "[1,2]",
        "\u{fffd}\u{fffd}",
        huge.as_str(),
    ] {
        let item = classify(line, Stream::Stdout);
        assert!(matches!(item, Item::Output { .. }));
        m.apply(&item, ms(0));
    }
    m.apply(&classify(&start("1", "a"), Stream::Stdout), ms(1));
    assert_eq!(m.output_lines, 5);
    assert_eq!(m.jobs[0].stages.len(), 1);
}
