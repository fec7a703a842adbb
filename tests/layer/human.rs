//! SPEC section 6 (`STRUCTURED_LOGGING=false`): the same events rendered for
//! a person, one line each, with stage, state, duration and error; colour
//! only when asked for.
use crate::common;

use tracing::{error, info, info_span};
use tracing_pipeline::{Format, PipelineLayer};
use tracing_subscriber::layer::SubscriberExt;

fn pipeline() {
    let _p = info_span!("pipeline", job_id = "job-h").entered();
    {
        let _s = info_span!("opportunity_mapper", layer = 4, fit_score = 85).entered();
        info!(n = 1, "mapped the opportunity");
    }
    {
        let _s = info_span!("people_mapper", layer = 5).entered();
        error!("no contacts found");
    }
    drop(info_span!("generator", layer = 6, skipped = true));
}

fn human(ansi: bool) -> (String, usize) {
    let capture = common::Capture::default();
    let layer = PipelineLayer::new()
        .with_writer(capture.clone())
        .with_format(Format::Human)
        .with_ansi(ansi);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), pipeline);
    (capture.text(), capture.writes())
}

#[test]
fn one_line_per_event_with_stage_state_duration_and_error() {
    let json = common::capture(pipeline);
    let (text, writes) = human(false);
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'));
    assert_eq!(lines.len(), json.len(), "the same events: {text}");
    assert_eq!(writes, lines.len(), "one write per line");
    for (line, event) in lines.iter().zip(&json) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "not JSON: {line}"
        );
        assert!(line.contains("job-h"), "{line}");
        // Starts with the time of day, HH:MM:SS.mmm.
        let b = line.as_bytes();
        assert!(
            b.len() > 12 && b[2] == b':' && b[5] == b':' && b[8] == b'.',
            "{line}"
        );
        if let Some(name) = event.get("layer_name").and_then(|n| n.as_str()) {
            assert!(line.contains(name), "{line} should name {name}");
        }
        if let Some(d) = event.get("duration_ms") {
            assert!(line.contains(" ms"), "{line} should show the duration {d}");
        }
        if let Some(e) = event.get("error").and_then(|n| n.as_str()) {
            assert!(line.contains(e), "{line} should show {e}");
        }
    }
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {text}"))
            .to_string()
    };
    assert!(find("opportunity_mapper").contains("started"));
    let complete = lines
        .iter()
        .find(|l| l.contains("opportunity_mapper") && l.contains("complete"))
        .unwrap_or_else(|| panic!("no complete line: {text}"));
    assert!(complete.contains("fit_score=85"), "{complete}");
    let failed = lines
        .iter()
        .find(|l| {
            l.contains("people_mapper") && l.contains("no contacts found") && !l.contains("ERROR")
        })
        .unwrap_or_else(|| panic!("no failed line: {text}"));
    assert!(failed.contains("FAILED"), "{failed}");
    assert!(find("generator").contains("skipped"));
    let last = lines.last().unwrap();
    assert!(
        last.contains("pipeline") && last.contains("partial"),
        "{last}"
    );
    assert!(find("mapped the opportunity").contains("INFO"));
}

#[test]
fn no_ansi_codes_unless_asked_for() {
    let (plain, _) = human(false);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    let (coloured, _) = human(true);
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    assert_eq!(coloured.lines().count(), plain.lines().count());
}

#[test]
fn json_never_has_ansi_codes_even_when_asked() {
    let capture = common::Capture::default();
    let layer = PipelineLayer::new()
        .with_writer(capture.clone())
        .with_ansi(true);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), pipeline);
    assert!(!capture.text().contains('\x1b'));
    capture.lines();
}
