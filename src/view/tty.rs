//! The two ways of showing a run: a live block on a terminal, or
//! append-only lines anywhere else.
//!
//! [`TerminalView`] keeps one `indicatif` progress bar whose message is the
//! whole stage block ([`frame`]): each redraw replaces the block at once, so
//! a frame is never half old and half new, and `indicatif` takes care of
//! clearing it, of lines that wrap after a resize, and of the rate of
//! redraws. Logs, output and error texts are printed above the block and
//! stay in the scrollback. When the input ends the block is left in place
//! and the summary is written below it.
//!
//! [`PlainView`] writes one line per state change, log line or output line,
//! and the summary, with no escape codes unless colour was asked for.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use super::model::{Item, Model};
use super::render::{
    above_lines, fit_painted, frame, notice_line, plain_line, summary, FrameSize, Palette,
};

/// The live view on a terminal (anything `indicatif` can draw on).
pub struct TerminalView {
    bar: ProgressBar,
    term: Box<dyn TermLike>,
    palette: Palette,
    pending_above: Vec<String>,
}

impl fmt::Debug for TerminalView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminalView")
            .field("palette", &self.palette)
            .finish_non_exhaustive()
    }
}

impl TerminalView {
    /// A view drawing on `term`, such as `console::Term::buffered_stdout()`
    /// or an `indicatif::InMemoryTerm`. Its size is read again for every
    /// frame, so a resized terminal gets frames of its new size.
    pub fn new<T: TermLike + Clone + 'static>(term: T, palette: Palette) -> TerminalView {
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(term.clone()), 20);
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        TerminalView {
            bar,
            term: Box::new(term),
            palette,
            pending_above: Vec::new(),
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
        if let Some(line) = above_lines(item, self.palette, model.jobs.len() > 1) {
            // A huge line would scroll everything else away: at most four
            // rows of it (the plain view shows more).
            let cols = usize::from(self.term.width()).max(10);
            let line = fit_painted(&line, cols * 4 - 1);
            self.pending_above.push(if line.is_empty() {
                " ".to_owned()
            } else {
                line
            });
        }
    }

    /// Prints a message of the view itself above the block.
    pub fn notice(&mut self, text: &str) {
        self.pending_above.push(notice_line(text, self.palette));
    }

    /// Prints what is waiting above the block and redraws the block for
    /// `now`. `force` draws even if the last draw was very recent.
    pub fn draw(&mut self, model: &Model, now: Duration, force: bool) {
        if !self.pending_above.is_empty() {
            let text = self.pending_above.join("\n");
            self.pending_above.clear();
            self.bar.println(text);
        }
        let lines = frame(model, self.size(), now, self.palette);
        self.bar.set_message(lines.join("\n"));
        if force {
            self.bar.force_draw();
        }
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
