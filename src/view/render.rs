//! The view's text: the stage block of a terminal, the append-only lines of
//! a log, and the final summary. Pure functions of the [`Model`] (and of the
//! line being shown), so every frame can be checked exactly.
//!
//! All pipeline text is passed through [`sanitize`] here, the one place
//! where it turns into output. Colours are SGR sequences written by
//! [`Palette`] and only when it is enabled.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::model::{Item, Job, Model, StageState, Stream};
use super::sanitize::{fit, pad, sanitize, width};
use crate::{EventKind, PipelineEvent, Status};

/// Colours on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    color: bool,
}

impl Palette {
    /// With colours (`true`) or without.
    pub fn new(color: bool) -> Palette {
        Palette { color }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\u{1b}[{code}m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    }

    fn green(self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(self, t: &str) -> String {
        self.paint("31", t)
    }
    fn yellow(self, t: &str) -> String {
        self.paint("33", t)
    }
    fn cyan(self, t: &str) -> String {
        self.paint("36", t)
    }
    fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
    fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }

    fn status(self, status: Status) -> String {
        match status {
            Status::Success => self.green("success"),
            Status::Partial => self.yellow("partial"),
            Status::Error => self.red("error"),
            Status::Skipped => self.yellow("skipped"),
        }
    }
}

/// What a frame is drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameSize {
    /// Terminal columns.
    pub width: usize,
    /// Terminal rows.
    pub height: usize,
}

impl FrameSize {
    /// A terminal of `width` columns and `height` rows.
    pub fn new(width: usize, height: usize) -> FrameSize {
        FrameSize { width, height }
    }
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// A duration as people read it: `402ms`, `3.21s`, `1m05s`.
pub fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn format_elapsed(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn layer_label(layer: Option<&serde_json::Number>) -> String {
    layer.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn job_title(job: &Job) -> String {
    match &job.id {
        Some(id) => format!("job {}", sanitize(id)),
        None => "pipeline".to_owned(),
    }
}

/// The stage block at `now` (time since the view started): for each job a
/// header line and one row per stage in layer order. Every line fits in
/// `size.width - 1` columns (the last column is left free so that no
/// terminal wraps), and the block fits in `size.height - 1` rows.
pub fn frame(model: &Model, size: FrameSize, now: Duration, palette: Palette) -> Vec<String> {
    let cols = size.width.saturating_sub(1).max(10);
    let max_rows = size.height.saturating_sub(1).max(1);
    let spinner = SPINNER[(now.as_millis() / 100 % SPINNER.len() as u128) as usize];

    let layer_w = model
        .order
        .iter()
        .map(|k| width(&layer_label(k.layer.as_ref())))
        .max()
        .unwrap_or(1);
    let name_w = model
        .order
        .iter()
        .map(|k| width(&sanitize(&k.name)))
        .max()
        .unwrap_or(1)
        // Leave room for the icon, the layer and at least a duration.
        .min(cols.saturating_sub(4 + layer_w + 1 + 2 + 6).max(4));

    // Finished jobs shrink to their header when the block is too tall.
    let full_rows: usize = model.jobs.iter().map(|_| 1 + model.order.len()).sum();
    let collapse_done = full_rows > max_rows;

    let mut lines = Vec::new();
    for job in &model.jobs {
        let mut head = palette.bold(&job_title(job));
        match &job.end {
            Some(end) => {
                let _ = write!(head, "  {}", palette.status(end.status));
                if let Some(ms) = job.total_ms() {
                    let _ = write!(head, " in {}", format_ms(ms));
                }
            }
            None => {
                let _ = write!(
                    head,
                    "  {}",
                    palette.cyan(&format!(
                        "running {}",
                        format_elapsed(now.saturating_sub(job.seen_at))
                    ))
                );
            }
        }
        lines.push(fit_painted(&head, cols));
        if collapse_done && job.end.is_some() {
            continue;
        }
        for key in &model.order {
            let stage = job.stage(&key.name);
            let (icon, right) = match stage {
                None if job.end.is_some() => (palette.dim("-"), palette.dim("not run")),
                None => (palette.dim("·"), palette.dim("pending")),
                Some(s) => match s.state {
                    StageState::Running => (
                        palette.cyan(spinner),
                        format_elapsed(now.saturating_sub(s.seen_at)),
                    ),
                    StageState::Complete => (
                        palette.green("✓"),
                        s.duration_ms.map(format_ms).unwrap_or_default(),
                    ),
                    StageState::Skipped => (palette.yellow("↷"), palette.yellow("skipped")),
                    StageState::Error => {
                        let mut right = s.duration_ms.map(format_ms).unwrap_or_default();
                        if let Some(e) = &s.error {
                            if !right.is_empty() {
                                right.push(' ');
                            }
                            right.push_str(&sanitize(e));
                        }
                        (palette.red("✗"), palette.red(&right))
                    }
                },
            };
            // Indent, icon (one column), layer, name, two spaces.
            let room = cols.saturating_sub(2 + 1 + 1 + layer_w + 1 + name_w + 2);
            let row = format!(
                "  {} {} {}  {}",
                icon,
                pad(&layer_label(key.layer.as_ref()), layer_w),
                pad(&sanitize(&key.name), name_w),
                fit_painted(&right, room)
            );
            lines.push(row);
        }
    }
    if lines.len() > max_rows {
        let hidden = lines.len() - (max_rows - 1);
        lines.truncate(max_rows - 1);
        lines.push(palette.dim(&format!("… {hidden} more rows")));
    }
    lines
}

/// Cuts text that may hold this module's own SGR sequences (and no other
/// escape) to `cols` display columns.
pub(crate) fn fit_painted(text: &str, cols: usize) -> String {
    if !text.contains('\u{1b}') {
        return fit(text, cols);
    }
    let visible = strip_sgr(text);
    if width(&visible) <= cols {
        return text.to_owned();
    }
    // Rare (a header or an error longer than the row): drop the colour
    // rather than cut inside a sequence.
    fit(&visible, cols)
}

fn strip_sgr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn job_prefix(event: &PipelineEvent) -> String {
    match &event.job_id {
        Some(id) => format!("[{}] ", sanitize(id)),
        None => String::new(),
    }
}

fn metadata_pairs(event: &PipelineEvent) -> String {
    let mut out = String::new();
    for (k, v) in event.metadata.iter().flatten() {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        // `#[instrument(err)]` puts the error in both the message and a field.
        if event.message.as_deref() == Some(v.as_str()) {
            continue;
        }
        let _ = write!(out, " {}={}", sanitize(k), sanitize(&v));
    }
    out
}

fn stage_label(event: &PipelineEvent) -> String {
    let name = sanitize(event.layer_name.as_deref().unwrap_or("(unnamed stage)"));
    match &event.layer {
        Some(n) => format!("{n} {name}"),
        None => name,
    }
}

/// The append-only line for one input line (a log, a CI job, a pipe): one
/// per state change, log event or output line. `None` for nothing to say.
pub fn plain_line(item: &Item, palette: Palette) -> Option<String> {
    let event = match item {
        Item::Output { text, stream } => {
            let tag = match stream {
                Stream::Stdout => "output",
                Stream::Stderr => "stderr",
            };
            return Some(format!(
                "{} {}",
                palette.dim(&format!("{tag}:")),
                sanitize(text)
            ));
        }
        Item::Event(event) => event,
    };
    let job = job_prefix(event);
    let dur = |e: &PipelineEvent| {
        e.duration_ms
            .map(|ms| format!(" {}", format_ms(ms)))
            .unwrap_or_default()
    };
    let line = match event.event {
        EventKind::PipelineStart => format!("{job}pipeline started"),
        EventKind::LayerStart => {
            format!("{job}{}: {}", stage_label(event), palette.cyan("running"))
        }
        EventKind::LayerComplete => {
            format!(
                "{job}{}: {}{}",
                stage_label(event),
                palette.green("complete"),
                dur(event)
            )
        }
        EventKind::LayerSkip => {
            format!(
                "{job}{}: {}{}",
                stage_label(event),
                palette.yellow("skipped"),
                dur(event)
            )
        }
        EventKind::LayerError => {
            let mut l = format!(
                "{job}{}: {}{}",
                stage_label(event),
                palette.red("error"),
                dur(event)
            );
            if let Some(e) = &event.error {
                let _ = write!(l, ": {}", palette.red(&sanitize(e)));
            }
            l
        }
        EventKind::PipelineComplete => {
            let mut l = format!(
                "{job}pipeline {}{}",
                palette.status(event.status.unwrap_or(Status::Error)),
                dur(event)
            );
            if let Some(e) = &event.error {
                let _ = write!(l, ": {}", palette.red(&sanitize(e)));
            }
            l
        }
        EventKind::Log => log_text(event, palette, &job),
    };
    Some(line)
}

fn log_text(event: &PipelineEvent, palette: Palette, job: &str) -> String {
    let level = event.level.map_or("log", |l| l.as_str());
    let level = match level {
        "error" => palette.red(level),
        "warn" => palette.yellow(level),
        "info" => palette.green(level),
        other => palette.dim(other),
    };
    let stage = event
        .layer_name
        .as_deref()
        .map(|n| format!(" {}:", sanitize(n)))
        .unwrap_or_default();
    format!(
        "{job}{level}{stage} {}{}",
        sanitize(event.message.as_deref().unwrap_or("")),
        palette.dim(&metadata_pairs(event))
    )
}

/// The lines a terminal prints above the stage block for one input line:
/// logs, output, and the text of errors. Stage starts and ends only change
/// the block, so they print nothing here. `many_jobs` adds the job id.
pub fn above_lines(item: &Item, palette: Palette, many_jobs: bool) -> Option<String> {
    match item {
        Item::Output { text, stream } => {
            let text = sanitize(text);
            Some(match stream {
                Stream::Stdout => text,
                Stream::Stderr => palette.red(&text),
            })
        }
        Item::Event(event) => {
            let job = if many_jobs {
                job_prefix(event)
            } else {
                String::new()
            };
            match event.event {
                EventKind::Log => Some(log_text(event, palette, &job)),
                EventKind::LayerError => Some(format!(
                    "{job}{} {}: {}",
                    palette.red("✗"),
                    sanitize(event.layer_name.as_deref().unwrap_or("(unnamed stage)")),
                    palette.red(&sanitize(event.error.as_deref().unwrap_or("error")))
                )),
                EventKind::PipelineComplete => event.error.as_ref().map(|e| {
                    format!(
                        "{job}{} pipeline: {}",
                        palette.red("✗"),
                        palette.red(&sanitize(e))
                    )
                }),
                _ => None,
            }
        }
    }
}

/// A message of the view itself (a lost connection, a command's exit).
pub fn notice_line(text: &str, palette: Palette) -> String {
    format!("{} {}", palette.dim("pipeline-view:"), sanitize(text))
}

/// The summary printed when the input ends: per job its status, the stage
/// counts, the total time, the slowest stage and the tokens used; then one
/// line over all jobs when there are several. Lists are broken into lines of
/// at most `cols` columns where they can be (`usize::MAX`: never).
pub fn summary(model: &Model, palette: Palette, cols: usize) -> Vec<String> {
    let mut out = Vec::new();
    if model.jobs.is_empty() {
        out.push(palette.red("no pipeline events in the input"));
        return out;
    }
    for job in &model.jobs {
        let status = match &job.end {
            Some(end) => palette.status(end.status),
            None => palette.red("incomplete"),
        };
        out.push(format!("{}: {status}", palette.bold(&job_title(job))));
        if job.end.is_none() {
            out.push(format!(
                "  {}",
                palette.red("no pipeline_complete in the input")
            ));
        }
        let mut counts = Vec::new();
        for (state, word) in [
            (StageState::Complete, "complete"),
            (StageState::Error, "error"),
            (StageState::Skipped, "skipped"),
            (StageState::Running, "running"),
        ] {
            let n = job.count(state);
            if n > 0 || state == StageState::Complete {
                counts.push(format!("{n} {word}"));
            }
        }
        labelled(&mut out, "stages", &counts, cols);
        let running: Vec<String> = job
            .stages
            .iter()
            .filter(|s| s.state == StageState::Running)
            .map(|s| palette.red(&sanitize(&s.name)))
            .collect();
        if !running.is_empty() {
            labelled(&mut out, "running", &running, cols);
        }
        if let Some(ms) = job.total_ms() {
            out.push(format!("  time     {}", format_ms(ms)));
        }
        if let Some(s) = job.slowest() {
            out.push(format!(
                "  slowest  {} {}",
                sanitize(&s.name),
                format_ms(s.duration_ms.unwrap_or(0))
            ));
        }
        if let Some(t) = job.tokens() {
            out.push(format!("  tokens   {t}"));
        }
        if let Some(e) = job.end.as_ref().and_then(|e| e.error.as_ref()) {
            out.push(format!("  error    {}", palette.red(&sanitize(e))));
        }
    }
    if model.jobs.len() > 1 {
        let mut by: Vec<(String, usize)> = Vec::new();
        for job in &model.jobs {
            let word = job
                .end
                .as_ref()
                .map_or("incomplete", |e| e.status.as_str())
                .to_owned();
            match by.iter_mut().find(|(w, _)| *w == word) {
                Some((_, n)) => *n += 1,
                None => by.push((word, 1)),
            }
        }
        let parts: Vec<String> = by.iter().map(|(w, n)| format!("{n} {w}")).collect();
        out.push(format!("{} jobs: {}", model.jobs.len(), parts.join(", ")));
    }
    out
}

/// `  label    a, b, c` broken after a comma where a line would pass `cols`.
fn labelled(out: &mut Vec<String>, label: &str, parts: &[String], cols: usize) {
    let indent = 11;
    let mut line = format!("  {label:<8} ");
    let mut used = indent;
    for (i, part) in parts.iter().enumerate() {
        let w = width(&strip_sgr(part)) + if i + 1 < parts.len() { 1 } else { 0 };
        if i > 0 {
            if used + 1 + w > cols {
                out.push(std::mem::take(&mut line));
                line = " ".repeat(indent);
                used = indent;
            } else {
                line.push(' ');
                used += 1;
            }
        }
        line.push_str(part);
        if i + 1 < parts.len() {
            line.push(',');
        }
        used += w;
    }
    out.push(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_ms(0), "0ms");
        assert_eq!(format_ms(402), "402ms");
        assert_eq!(format_ms(3210), "3.21s");
        assert_eq!(format_ms(65_000), "1m05s");
    }

    #[test]
    fn painted_text_is_cut_by_its_visible_width() {
        let p = Palette::new(true);
        let red = p.red("abcdef");
        assert_eq!(fit_painted(&red, 10), red);
        assert_eq!(fit_painted(&red, 4), "abc…");
        assert_eq!(strip_sgr(&red), "abcdef");
    }
}
