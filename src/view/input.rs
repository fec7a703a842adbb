//! Where the lines come from: standard input, a command's stdout and
//! stderr, or a runner's event stream. Each source runs on its own thread
//! and sends [`Message`]s down one channel, so the view never waits on a
//! read and the three sources look alike to it.
//!
//! Lines are read as bytes: invalid UTF-8 becomes U+FFFD, a trailing `\r`
//! is dropped, a last line without a newline still counts, and a line longer
//! than [`MAX_LINE`] keeps its first [`MAX_LINE`] bytes and says how long it
//! was (it is not split: one input line, one shown line).

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::thread;

use super::model::{classify, Item, Stream};

/// The longest line kept whole, in bytes.
pub const MAX_LINE: usize = 1024 * 1024;

/// What a source tells the view.
#[derive(Debug)]
pub(crate) enum Message {
    /// One line.
    Item(Item),
    /// Something the user should know about the source itself (a lost
    /// connection, a command's exit status).
    Notice(String),
    /// The source has no more lines.
    End(End),
}

/// Why a source ended.
#[derive(Debug)]
pub(crate) enum End {
    /// End of input, or the runner's `end` message.
    Done,
    /// The command exited.
    Exited(ExitStatus),
    /// The source failed for good.
    Failed(String),
}

/// Reads one line into `buf` (without its `\n`, `\r\n`): `Ok(None)` at end
/// of input, else the line's length in bytes before any cut.
pub fn read_line_capped<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        total += part.len();
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        let used = done.unwrap_or(part.len());
        r.consume(used);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') && total <= cap {
        buf.pop();
        total -= 1;
    }
    Ok(Some(total))
}

/// A line's text: lossy UTF-8, with a note when it was cut.
pub fn line_text(buf: &[u8], total: usize) -> String {
    let mut text = String::from_utf8_lossy(buf).into_owned();
    if total > buf.len() {
        text.push_str(&format!(" [… line truncated: {total} bytes in total]"));
    }
    text
}

fn pump<R: Read>(reader: R, stream: Stream, tx: &Sender<Message>) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::new();
    while let Some(total) = read_line_capped(&mut reader, &mut buf, MAX_LINE)? {
        let text = line_text(&buf, total);
        if tx.send(Message::Item(classify(&text, stream))).is_err() {
            break;
        }
    }
    Ok(())
}

/// Standard input, line by line.
pub(crate) fn spawn_stdin(tx: Sender<Message>) {
    thread::spawn(move || {
        let end = match pump(io::stdin().lock(), Stream::Stdout, &tx) {
            Ok(()) => End::Done,
            Err(e) => End::Failed(format!("reading standard input: {e}")),
        };
        let _ = tx.send(Message::End(end));
    });
}

/// Runs `command` with stdin from `/dev/null` and reads its stdout and
/// stderr; the end comes after both pipes closed and the command exited.
pub(crate) fn spawn_command(command: &[std::ffi::OsString], tx: Sender<Message>) -> io::Result<()> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command given after --"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run {}: {e}", program.to_string_lossy()),
            )
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    thread::spawn(move || {
        let err_tx = tx.clone();
        let err_thread = stderr.map(|s| thread::spawn(move || pump(s, Stream::Stderr, &err_tx)));
        let mut failure = None;
        if let Some(s) = stdout {
            if let Err(e) = pump(s, Stream::Stdout, &tx) {
                failure = Some(format!("reading the command's stdout: {e}"));
            }
        }
        if let Some(t) = err_thread {
            if let Ok(Err(e)) = t.join() {
                failure.get_or_insert(format!("reading the command's stderr: {e}"));
            }
        }
        let end = match (child.wait(), failure) {
            (_, Some(f)) => End::Failed(f),
            (Ok(status), None) => End::Exited(status),
            (Err(e), None) => End::Failed(format!("waiting for the command: {e}")),
        };
        let _ = tx.send(Message::End(end));
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], cap: usize) -> Vec<(Vec<u8>, usize)> {
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(total) = read_line_capped(&mut r, &mut buf, cap).unwrap() {
            out.push((buf.clone(), total));
        }
        out
    }

    #[test]
    fn lines_split_on_newlines_and_drop_crlf() {
        assert_eq!(
            lines(b"ab\r\ncdefgh\n\nlast", 100),
            vec![
                (b"ab".to_vec(), 2),
                (b"cdefgh".to_vec(), 6),
                (vec![], 0),
                (b"last".to_vec(), 4)
            ]
        );
        assert!(lines(b"", 100).is_empty());
    }

    #[test]
    fn long_lines_are_cut_not_split() {
        let got = lines(b"0123456789\nok\n", 4);
        assert_eq!(got, vec![(b"0123".to_vec(), 10), (b"ok".to_vec(), 2)]);
        assert_eq!(
            line_text(&got[0].0, got[0].1),
            "0123 [… line truncated: 10 bytes in total]"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(line_text(b"a\xffb", 3), "a\u{fffd}b");
    }
}
