//! `pipeline-view`: watch a pipeline run in a terminal (feature `view`).
//!
//! The terminal counterpart of the runner's page. It reads the stream of
//! [`PipelineEvent`](crate::PipelineEvent) lines from one of three sources:
//!
//! ```text
//! job_pipeline | pipeline-view                     # JSON lines on stdin
//! pipeline-view -- ./job_pipeline --fail generator # runs the command, reads its stdout and stderr
//! pipeline-view http://127.0.0.1:8000/#/jobs/ID    # a runner's job (also /api/jobs/ID[/events])
//! ```
//!
//! On a terminal it shows one row per stage in layer order (a spinner while
//! it runs, then its state and duration; errors with their text), one block
//! per job, and prints `log` lines, output and error texts above the block.
//! Anywhere else (a CI log, a pipe, `--plain`) it writes plain append-only
//! lines, one per state change. At the end it prints a summary: status,
//! stage counts, total time, slowest stage and tokens used
//! (`metadata.tokens_used`). Lines that are not events (plain text, invalid
//! UTF-8, huge lines, other JSON) are shown as output and never stop it,
//! and no text from the pipeline can move the cursor: escape sequences and
//! control characters are removed or made visible first.
//!
//! | exit status | when |
//! |---|---|
//! | 0 | every job ended in `success` or `partial` |
//! | 1 | a job ended in `error` (or `partial`, with `--strict`) |
//! | 2 | the input ended before a job's `pipeline_complete` (or held no job), the source failed, or the arguments were wrong |
//!
//! Colour follows `--color auto|always|never`; `auto` colours a terminal
//! unless `NO_COLOR` is set to a non-empty value or `TERM` is `dumb`.
//!
//! The parts, top to bottom: [`model`] (lines in, the state of each job
//! out; pure), [`render`] (frames, plain lines and the summary; pure),
//! [`tty`] (drawing them with `indicatif`, or writing lines), and the
//! sources in `input` and [`sse`]. [`main`] ties them together for the
//! `pipeline-view` binary.

pub mod model;
pub mod render;
pub mod sanitize;
pub mod sse;
pub mod tty;

mod input;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

pub use input::{line_text, read_line_capped, MAX_LINE};
use input::{End, Message};
use model::{Model, Verdict};
use render::Palette;
use tty::{PlainView, TerminalView};

/// When to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set or `TERM` is `dumb`.
    Auto,
    /// Always, even into a pipe.
    Always,
    /// Never.
    Never,
}

/// Command-line options of `pipeline-view`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pipeline-view",
    about = "Watch a pipeline run in a terminal: from stdin, a command, or a runner's job URL.",
    after_help = "Examples:\n  job_pipeline | pipeline-view\n  pipeline-view -- ./job_pipeline --fail people_mapper\n  pipeline-view http://127.0.0.1:8000/#/jobs/ID\n\n\
                  Exit status: 0 success or partial, 1 error (or partial with --strict),\n\
                  2 when the input ended without pipeline_complete (or bad arguments)."
)]
#[non_exhaustive]
pub struct Options {
    /// A runner's job page (`http://HOST:PORT/#/jobs/ID`) or API URL
    /// (`http://HOST:PORT/api/jobs/ID[/events]`) to follow.
    #[arg(value_name = "URL")]
    pub url: Option<String>,
    /// Colour: auto (a terminal without NO_COLOR), always or never.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,
    /// Exit 1 for a pipeline that ended `partial`.
    #[arg(long)]
    pub strict: bool,
    /// Plain append-only lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// URL mode: how many seconds to keep reconnecting before giving up.
    #[arg(long, value_name = "SECS", default_value_t = sse::GIVE_UP_AFTER.as_secs_f64(), value_parser = seconds)]
    pub retry: f64,
    /// A command to run and watch (its stdout and stderr are read).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && (0.0..=86_400.0).contains(&f) => Ok(f),
        _ => Err("a number of seconds from 0 to 86400".to_owned()),
    }
}

/// Whether to colour, from the choice, the environment and the output.
pub fn use_color(
    choice: ColorChoice,
    no_color: Option<&str>,
    term: Option<&str>,
    is_tty: bool,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_tty && no_color.is_none_or(str::is_empty) && term != Some("dumb"),
    }
}

/// The whole program: parses `args` (the first item is the program name),
/// shows the stream and returns the exit status of the table above.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let options = match Options::try_parse_from(args) {
        Ok(o) => o,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(&options) {
        Ok(verdict) => ExitCode::from(verdict.code()),
        // The reader of our output went away (`pipeline-view | head`).
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::from(Verdict::Incomplete.code())
        }
        Err(e) => {
            eprintln!("pipeline-view: {e}");
            ExitCode::from(Verdict::Incomplete.code())
        }
    }
}

/// How often the block is redrawn while nothing arrives (the spinner).
const TICK: Duration = Duration::from_millis(100);

/// At most this many lines are taken in before the screen is updated.
const BATCH: usize = 4096;

fn run(options: &Options) -> io::Result<Verdict> {
    let (tx, rx) = mpsc::channel::<Message>();
    match (&options.url, options.command.is_empty()) {
        (Some(_), false) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "give a URL or a command after --, not both",
            ))
        }
        (Some(url), true) => {
            let events = sse::events_url(url).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{url:?} is not a job URL: expected http://HOST:PORT/#/jobs/ID or http://HOST:PORT/api/jobs/ID"
                    ),
                )
            })?;
            sse::spawn_follow(events, Duration::from_secs_f64(options.retry), tx);
        }
        (None, false) => input::spawn_command(&options.command, tx)?,
        (None, true) if io::stdin().is_terminal() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "nothing to watch: pipe a pipeline's output in, or give -- COMMAND or a job URL (--help)",
            ))
        }
        (None, true) => input::spawn_stdin(tx),
    }

    let stdout = io::stdout();
    let env = |k: &str| std::env::var(k).ok();
    let is_tty = stdout.is_terminal();
    let term_var = env("TERM");
    let live = is_tty && !options.plain && term_var.as_deref() != Some("dumb");
    let palette = Palette::new(use_color(
        options.color,
        env("NO_COLOR").as_deref(),
        term_var.as_deref(),
        is_tty,
    ));

    let start = Instant::now();
    let mut model = Model::new();
    let mut sink = if live {
        Sink::Terminal(TerminalView::new(console::Term::buffered_stdout(), palette))
    } else {
        Sink::Plain(PlainView::new(io::BufWriter::new(stdout.lock()), palette))
    };
    let mut failure = None;
    'outer: loop {
        let first = match rx.recv_timeout(TICK) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = first;
        let mut taken = 0;
        while let Some(msg) = next.take() {
            let now = start.elapsed();
            match msg {
                Message::Item(item) => {
                    model.apply(&item, now);
                    sink.note(&item, &model)?;
                }
                Message::Notice(text) => sink.notice(&text)?,
                Message::End(end) => {
                    match end {
                        End::Done => {}
                        End::Exited(status) if status.success() => {}
                        End::Exited(status) => {
                            sink.notice(&format!("the command ended with {status}"))?
                        }
                        End::Failed(why) => failure = Some(why),
                    }
                    break 'outer;
                }
            }
            taken += 1;
            if taken < BATCH {
                next = rx.try_recv().ok();
            }
        }
        sink.tick(&model, start.elapsed())?;
    }
    sink.finish(&model, start.elapsed())?;
    if let Some(why) = &failure {
        eprintln!("pipeline-view: {}", sanitize::sanitize(why));
    }
    let verdict = model.verdict(options.strict);
    Ok(match failure {
        Some(_) if verdict == Verdict::Success => Verdict::Incomplete,
        _ => verdict,
    })
}

enum Sink<W: Write> {
    Terminal(TerminalView),
    Plain(PlainView<W>),
}

impl<W: Write> Sink<W> {
    fn note(&mut self, item: &model::Item, model: &Model) -> io::Result<()> {
        match self {
            Sink::Terminal(t) => {
                t.note(item, model);
                Ok(())
            }
            Sink::Plain(p) => p.note(item),
        }
    }

    fn notice(&mut self, text: &str) -> io::Result<()> {
        match self {
            Sink::Terminal(t) => {
                t.notice(text);
                Ok(())
            }
            Sink::Plain(p) => p.notice(text),
        }
    }

    fn tick(&mut self, model: &Model, now: Duration) -> io::Result<()> {
        match self {
            Sink::Terminal(t) => {
                t.draw(model, now, false);
                Ok(())
            }
            Sink::Plain(p) => p.flush(),
        }
    }

    fn finish(&mut self, model: &Model, now: Duration) -> io::Result<()> {
        match self {
            Sink::Terminal(t) => t.finish(model, now),
            Sink::Plain(p) => p.finish(model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_choice() {
        use ColorChoice::*;
        assert!(use_color(Auto, None, Some("xterm"), true));
        assert!(!use_color(Auto, None, Some("xterm"), false));
        assert!(!use_color(Auto, Some("1"), Some("xterm"), true));
        assert!(use_color(Auto, Some(""), Some("xterm"), true));
        assert!(!use_color(Auto, None, Some("dumb"), true));
        assert!(use_color(Always, Some("1"), None, false));
        assert!(!use_color(Never, None, None, true));
    }

    #[test]
    fn arguments() {
        let o = Options::try_parse_from(["pipeline-view", "--strict", "--", "cmd", "--fail", "x"])
            .unwrap();
        assert!(o.strict);
        assert_eq!(o.command, ["cmd", "--fail", "x"]);
        let o = Options::try_parse_from(["pipeline-view", "--color=never", "http://h/#/jobs/a"])
            .unwrap();
        assert_eq!(o.color, ColorChoice::Never);
        assert_eq!(o.url.as_deref(), Some("http://h/#/jobs/a"));
        assert!(Options::try_parse_from(["pipeline-view", "--color=sometimes"]).is_err());
    }
}
