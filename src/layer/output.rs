//! Where a finished line goes: one writer, one line at a time, and damage
//! from a failed write kept inside the line it happened to.
//!
//! `Write::write_all` may need several `write` calls for one line (a pipe
//! takes at most its buffer, a full disk takes part of a line). Two threads
//! doing that at once through a writer that does not lock (`Arc<File>`, a
//! raw socket) would interleave their lines, so the layer writes one line at
//! a time under its own lock. And when a write fails after part of a line
//! went out, the next line starts with a newline, so the torn line stays a
//! single bad line instead of swallowing the next one.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use tracing::{Level, Metadata};
use tracing_core::callsite::{Callsite, Identifier};
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::subscriber::Interest;

use super::diag;

/// One layer's output state.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// Held while a line is written: one line at a time.
    lock: Mutex<()>,
    /// The last line was cut short after part of it went out.
    torn: AtomicBool,
}

impl Output {
    /// Writes `line` (one complete line, newline included) to the writer
    /// that `make` returns. Never fails: an error is reported once on stderr.
    pub(super) fn write<Wr: Write>(&self, line: &mut Vec<u8>, make: impl FnOnce() -> Wr) {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let torn = self.torn.load(Ordering::Relaxed);
        if torn {
            line.insert(0, b'\n');
        }
        let mut writer = make();
        let (written, result) = write_counting(&mut writer, line);
        drop(writer);
        match result {
            Ok(()) => {
                if torn {
                    self.torn.store(false, Ordering::Relaxed);
                }
            }
            Err(e) => {
                // Nothing of this line went out: whatever was torn before
                // still is.
                self.torn.store(torn || written > 0, Ordering::Relaxed);
                diag::write_failed(&e);
            }
        }
    }
}

/// `write_all` that says how much went out before an error.
fn write_counting(writer: &mut impl Write, mut buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while !buf.is_empty() {
        match writer.write(buf) {
            Ok(0) => {
                return (
                    written,
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the writer took no bytes",
                    )),
                )
            }
            Ok(n) => {
                written += n;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// The metadata a lifecycle line is routed with ([`MakeWriter::make_writer_for`]):
/// target `tracing_pipeline`, level INFO, or ERROR for `layer_error` and a
/// failed `pipeline_complete`, whatever the span's own level, so that a
/// level-routing writer never drops a `debug_span!` stage's lifecycle.
///
/// [`MakeWriter::make_writer_for`]: tracing_subscriber::fmt::MakeWriter::make_writer_for
pub(super) fn lifecycle_metadata(failed: bool) -> &'static Metadata<'static> {
    if failed {
        &LIFECYCLE_ERROR
    } else {
        &LIFECYCLE_INFO
    }
}

struct LifecycleCallsite(bool);

impl Callsite for LifecycleCallsite {
    fn set_interest(&self, _: Interest) {}
    fn metadata(&self) -> &Metadata<'_> {
        lifecycle_metadata(self.0)
    }
}

static INFO_CALLSITE: LifecycleCallsite = LifecycleCallsite(false);
static ERROR_CALLSITE: LifecycleCallsite = LifecycleCallsite(true);

static LIFECYCLE_INFO: Metadata<'static> = Metadata::new(
    "lifecycle",
    "tracing_pipeline",
    Level::INFO,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&[], Identifier(&INFO_CALLSITE)),
    Kind::EVENT,
);

static LIFECYCLE_ERROR: Metadata<'static> = Metadata::new(
    "lifecycle",
    "tracing_pipeline",
    Level::ERROR,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&[], Identifier(&ERROR_CALLSITE)),
    Kind::EVENT,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then fails until given more room.
    struct Disk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for &mut Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "full"));
            }
            let n = buf.len().min(self.room);
            self.data.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_torn_line_stays_one_line_when_space_comes_back() {
        let out = Output::default();
        let mut disk = Disk {
            data: Vec::new(),
            room: 5,
        };
        out.write(&mut b"{\"a\":1}\n".to_vec(), || &mut disk);
        // Still full: nothing goes out, the tear is remembered.
        out.write(&mut b"{\"b\":2}\n".to_vec(), || &mut disk);
        disk.room = 100;
        out.write(&mut b"{\"c\":3}\n".to_vec(), || &mut disk);
        out.write(&mut b"{\"d\":4}\n".to_vec(), || &mut disk);
        assert_eq!(disk.data, b"{\"a\":\n{\"c\":3}\n{\"d\":4}\n");
    }

    #[test]
    fn a_write_refused_whole_tears_nothing() {
        let out = Output::default();
        let mut disk = Disk {
            data: Vec::new(),
            room: 0,
        };
        out.write(&mut b"{\"a\":1}\n".to_vec(), || &mut disk);
        disk.room = 100;
        out.write(&mut b"{\"b\":2}\n".to_vec(), || &mut disk);
        assert_eq!(disk.data, b"{\"b\":2}\n");
    }
}
