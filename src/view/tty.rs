//! The two ways of showing a run: a live block on a terminal, or
//! append-only lines anywhere else.
//!
//! [`TerminalView`] keeps one `indicatif` progress bar whose message is the
//! whole stage block ([`frame`]): each redraw replaces the block at once, so
//! a frame is never half old and half new, and `indicatif` clears and
//! redraws it (at most 20 times a second). Logs, output and error texts are
//! printed above the block, with real newlines, and stay in the scrollback.
//! A change of the terminal's width is handled here (see
//! `forget_block_if_resized`). When the input ends the block is left in
//! place and the summary is written below it.
//!
//! [`PlainView`] writes one line per state change, log line or output line,
//! and the summary, with no escape codes unless colour was asked for.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use super::model::{Item, Model};
use super::render::{
    above_lines, fit_painted, frame, notice_line, plain_line, summary, FrameSize, Palette,
};
use crate::{EventKind, Level};

/// The live view on a terminal (anything `indicatif` can draw on).
pub struct TerminalView {
    bar: ProgressBar,
    term: Box<dyn TermLike>,
    new_target: Box<dyn Fn() -> ProgressDrawTarget + Send>,
    palette: Palette,
    pending_above: Vec<String>,
    last_error_log: Option<ErrorKey>,
    /// Rows and width of the block as last drawn.
    drawn: Option<(usize, usize)>,
    last_draw: Option<Instant>,
}

impl fmt::Debug for TerminalView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminalView")
            .field("palette", &self.palette)
            .field("drawn", &self.drawn)
            .finish_non_exhaustive()
    }
}

/// Job id, stage name, and error text.
type ErrorKey = ((Option<String>, Option<String>), Option<String>);

/// At most this many redraws a second, unless forced.
const MIN_FRAME: Duration = Duration::from_millis(50);

fn block_bar(target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
    bar
}

impl TerminalView {
    /// A view drawing on `term`, such as `console::Term::buffered_stdout()`
    /// or an `indicatif::InMemoryTerm`. Its size is read again for every
    /// frame, so a resized terminal gets frames of its new size.
    pub fn new<T: TermLike + Clone + 'static>(term: T, palette: Palette) -> TerminalView {
        let for_bars = term.clone();
        // Every draw is forced: the view keeps its own frame rate, so that
        // it always knows what is on the screen.
        let new_target: Box<dyn Fn() -> ProgressDrawTarget + Send> =
            Box::new(move || ProgressDrawTarget::term_like_with_hz(Box::new(for_bars.clone()), 20));
        TerminalView {
            bar: block_bar(new_target()),
            term: Box::new(term),
            new_target,
            palette,
            pending_above: Vec::new(),
            last_error_log: None,
            drawn: None,
            last_draw: None,
        }
    }

    fn size(&self) -> FrameSize {
        FrameSize::new(
            usize::from(self.term.width()),
            usize::from(self.term.height()),
        )
    }

    /// Takes one input line (already applied to `model`): what it prints
    /// above the block waits for the next [`TerminalView::draw`].
    pub fn note(&mut self, item: &Item, model: &Model) {
        // `#[instrument(err)]` logs the error as an ERROR event, then the
        // stage ends with the same text: say it once.
        if let Item::Event(e) = item {
            let key = (e.job_id.clone(), e.layer_name.clone());
            match e.event {
                EventKind::Log if e.level == Some(Level::Error) => {
                    self.last_error_log = Some((key, e.message.clone()));
                }
                EventKind::LayerError
                    if self.last_error_log.take() == Some((key.clone(), e.error.clone())) =>
                {
                    return;
                }
                _ => {}
            }
        }
        if let Some(line) = above_lines(item, self.palette, model.jobs.len() > 1) {
            // A huge line would scroll everything else away: at most four
            // rows of it (the plain view shows more).
            let cols = usize::from(self.term.width()).max(10);
            self.pending_above.push(fit_painted(&line, cols * 4 - 1));
        }
    }

    /// Prints a message of the view itself above the block.
    pub fn notice(&mut self, text: &str) {
        self.pending_above.push(notice_line(text, self.palette));
    }

    /// `indicatif` pads each row of the block to the full width and lets
    /// the cursor wrap to the next, so a terminal that reflows its lines on
    /// a resize (tmux, VTE, iTerm2, kitty...) re-cuts the old block into
    /// rows of the new width, and clearing the old number of rows would
    /// leave part of it on the screen (narrower) or erase lines above it
    /// (wider). So on a change of width the old block is cleared here, by
    /// the rows it takes now, and a fresh bar draws the next frame.
    fn forget_block_if_resized(&mut self, width: usize) -> io::Result<()> {
        let Some((rows, old_width)) = self.drawn else {
            return Ok(());
        };
        if old_width == width || width == 0 {
            return Ok(());
        }
        // The block's rows are chained into one wrapped line of
        // `rows * old_width` cells, the cursor on its last cell: after the
        // reflow the block takes `cells / width` rows, rounded up. (A
        // terminal may push rows of it that no longer fit above the cursor
        // into its scrollback, out of reach; the screen is right all the
        // same.)
        let up = (rows * old_width).div_ceil(width).saturating_sub(1);
        let old = std::mem::replace(&mut self.bar, block_bar((self.new_target)()));
        // Without a target, dropping the old bar draws nothing.
        old.set_draw_target(ProgressDrawTarget::hidden());
        drop(old);
        self.term.move_cursor_up(up)?;
        self.term.write_str("\r\u{1b}[J")?;
        self.term.flush()?;
        self.drawn = None;
        Ok(())
    }

    /// Prints what is waiting above the block and redraws the block for
    /// `now`; at most 20 times a second unless `force`.
    pub fn draw(&mut self, model: &Model, now: Duration, force: bool) {
        if !force && self.last_draw.is_some_and(|t| t.elapsed() < MIN_FRAME) {
            return;
        }
        let size = self.size();
        // A terminal that fails to take a write has nothing better to show.
        let _ = self.forget_block_if_resized(size.width);
        if !self.pending_above.is_empty() {
            let above = std::mem::take(&mut self.pending_above);
            let term = &self.term;
            // Lines ended by a real newline: they stay what they are when
            // the terminal reflows.
            self.bar.suspend(|| {
                for line in &above {
                    let _ = term.write_line(line);
                }
                let _ = term.flush();
            });
        }
        let lines = frame(model, size, now, self.palette);
        self.drawn = Some((lines.len().max(1), size.width));
        self.bar.set_message(lines.join("\n"));
        self.bar.force_draw();
        self.last_draw = Some(Instant::now());
    }

    /// Draws the last frame, leaves it on screen and writes the summary
    /// below it.
    pub fn finish(&mut self, model: &Model, now: Duration) -> io::Result<()> {
        self.draw(model, now, true);
        self.bar.finish();
        // The cursor is still at the end of the block's last line.
        self.term.write_line("")?;
        self.term.write_line("")?;
        let cols = usize::from(self.term.width()).saturating_sub(1);
        for line in summary(model, self.palette, cols) {
            self.term.write_line(&line)?;
        }
        self.term.flush()
    }
}

/// Append-only lines, for logs and pipes.
#[derive(Debug)]
pub struct PlainView<W: Write> {
    out: W,
    palette: Palette,
}

impl<W: Write> PlainView<W> {
    /// Lines written to `out`.
    pub fn new(out: W, palette: Palette) -> PlainView<W> {
        PlainView { out, palette }
    }

    /// Writes the line for one input line, if it has one.
    pub fn note(&mut self, item: &Item) -> io::Result<()> {
        if let Some(line) = plain_line(item, self.palette) {
            self.out.write_all(line.as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Writes a message of the view itself.
    pub fn notice(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "{}", notice_line(text, self.palette))
    }

    /// Flushes what was written.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the summary (after an empty line) and flushes.
    pub fn finish(&mut self, model: &Model) -> io::Result<()> {
        writeln!(self.out)?;
        for line in summary(model, self.palette, usize::MAX) {
            writeln!(self.out, "{line}")?;
        }
        self.out.flush()
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}
