//! One job's log file, `events.jsonl`: how lines are numbered and written,
//! the offset index that makes any line reachable in bounded work, reading
//! it back, and recovering a log cut off by a crash.
//!
//! Each line of the file is `{"seq":N,"data":"<the line, as JSON text>"}\n`.
//! Lines are appended in seq order by one writer; [`LogTail::append`] is the
//! only code that numbers lines and [`OffsetIndex::note`] the only code that
//! indexes them, whether the lines come from a live child or from recovery.
//! The index keeps the byte offset of every [`INDEX_EVERY`]th line, so a
//! reader that starts at line `seq` skips at most that many lines.

use std::fs;
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

use super::model::{parse_timestamp_ms, Tracker};

/// One byte offset is remembered every this many lines.
pub(crate) const INDEX_EVERY: u64 = 1024;

/// One line of a job's log: its sequence number and its text (one JSON object).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) data: String,
}

impl Record {
    /// Appends the record's log line, with its `\n`, to `out`.
    pub(crate) fn write_line(&self, out: &mut Vec<u8>) {
        // A struct of a number and a string always serialises, and a `Vec`
        // never fails a write.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

/// `(seq, byte offset of that line)` for every [`INDEX_EVERY`]th line.
#[derive(Debug, Clone, Default)]
pub(crate) struct OffsetIndex(Vec<(u64, u64)>);

impl OffsetIndex {
    /// Learns where line `seq` starts.
    pub(crate) fn note(&mut self, seq: u64, offset: u64) {
        if seq % INDEX_EVERY == 1 {
            self.0.push((seq, offset));
        }
    }

    /// Adds entries noted elsewhere (for later lines).
    pub(crate) fn extend(&mut self, other: OffsetIndex) {
        self.0.extend(other.0);
    }

    /// A byte offset at or before the line `seq`: reading from there reaches
    /// `seq` after fewer than [`INDEX_EVERY`] lines.
    pub(crate) fn offset_before(&self, seq: u64) -> u64 {
        let i = self.0.partition_point(|&(s, _)| s <= seq);
        if i == 0 {
            0
        } else {
            self.0[i - 1].1
        }
    }
}

/// Where the next line of a log goes: its number and its byte offset.
#[derive(Debug, Clone)]
pub(crate) struct LogTail {
    pub(crate) next_seq: u64,
    pub(crate) offset: u64,
}

impl Default for LogTail {
    fn default() -> Self {
        LogTail {
            next_seq: 1,
            offset: 0,
        }
    }
}

impl LogTail {
    /// Numbers `data` as the next line, appends its log line to `buf` (the
    /// bytes to be written at the tail's offset, in order) and indexes it.
    pub(crate) fn append(
        &mut self,
        data: String,
        buf: &mut Vec<u8>,
        index: &mut OffsetIndex,
    ) -> Record {
        let record = Record {
            seq: self.next_seq,
            data,
        };
        index.note(record.seq, self.offset);
        let before = buf.len();
        record.write_line(buf);
        self.offset += (buf.len() - before) as u64;
        self.next_seq += 1;
        record
    }

    /// The number of the last line written.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

/// A job found running when the runner starts: who it is, and why it ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CutOff<'a> {
    pub(crate) job_id: &'a str,
    pub(crate) started_at: &'a str,
    pub(crate) reason: &'a str,
}

/// A log read back: where it ends, its index, and, for a job that was cut
/// off, its tracker after the lines that ended it.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) tail: LogTail,
    pub(crate) index: OffsetIndex,
    /// `Some` when the job was cut off and has now been ended.
    pub(crate) ended: Option<Tracker>,
}

/// Reads a job's log back. With `cut_off` (the job was running when the
/// runner died), a half-written last line is cut away, the lines are
/// replayed through a [`Tracker`], and the job is ended with `reason` as a
/// live job is: open stages closed, `pipeline_complete` added if missing,
/// each appended, numbered and synced like any line.
pub(crate) fn recover(path: &Path, cut_off: Option<CutOff<'_>>) -> io::Result<Recovered> {
    let mut file = match fs::OpenOptions::new().read(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?,
        Err(e) => return Err(e),
    };
    let mut tracker = Tracker::default();
    let mut index = OffsetIndex::default();
    let mut last_seq = 0;
    let mut good_end = 0u64;
    {
        let mut reader = BufReader::with_capacity(64 * 1024, &mut file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            if let Ok(record) = serde_json::from_slice::<Record>(&line) {
                index.note(record.seq, good_end);
                last_seq = record.seq;
                if cut_off.is_some() {
                    if let Ok(Value::Object(map)) = serde_json::from_str(&record.data) {
                        tracker.observe(&map, record.seq, None);
                    }
                }
            }
            good_end += n as u64;
        }
    }
    let mut tail = LogTail {
        next_seq: last_seq + 1,
        offset: good_end,
    };
    let Some(CutOff {
        job_id,
        started_at,
        reason,
    }) = cut_off
    else {
        return Ok(Recovered {
            tail,
            index,
            ended: None,
        });
    };
    // A line half-written when the runner died would corrupt the next one.
    file.set_len(good_end)?;
    file.seek(io::SeekFrom::End(0))?;
    let started = parse_timestamp_ms(started_at);
    let end_ms = tracker.last_ms.or(started).unwrap_or(0);
    let duration = started.map_or(0, |s| end_ms.saturating_sub(s));
    let lines = tracker.end_lines(job_id, reason, end_ms, duration);
    if !lines.is_empty() {
        let mut buf = Vec::new();
        for data in lines {
            let map = serde_json::from_str::<Value>(&data).ok();
            let record = tail.append(data, &mut buf, &mut index);
            if let Some(Value::Object(map)) = map {
                tracker.observe(&map, record.seq, None);
            }
        }
        file.write_all(&buf)?;
        file.sync_all()?;
    }
    Ok(Recovered {
        tail,
        index,
        ended: Some(tracker),
    })
}

/// Reads a job's log from a byte offset, one record at a time. A line not yet
/// complete (no `\n`) counts as the end; an unreadable line is skipped.
#[derive(Debug)]
pub(crate) struct RecordReader {
    reader: tokio::io::BufReader<tokio::fs::File>,
    line: Vec<u8>,
}

impl RecordReader {
    pub(crate) async fn open(path: &Path, offset: u64) -> io::Result<RecordReader> {
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        Ok(RecordReader {
            reader: tokio::io::BufReader::with_capacity(64 * 1024, file),
            line: Vec::new(),
        })
    }

    pub(crate) async fn next(&mut self) -> io::Result<Option<Record>> {
        loop {
            self.line.clear();
            let n = self.reader.read_until(b'\n', &mut self.line).await?;
            if n == 0 || self.line.last() != Some(&b'\n') {
                return Ok(None);
            }
            if let Ok(record) = serde_json::from_slice(&self.line) {
                return Ok(Some(record));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_points_at_every_1024th_line() {
        let mut tail = LogTail::default();
        let mut index = OffsetIndex::default();
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..5000 {
            starts.push(buf.len() as u64);
            tail.append(format!("{{\"i\":{i}}}"), &mut buf, &mut index);
        }
        assert_eq!(tail.last_seq(), 5000);
        assert_eq!(tail.offset, buf.len() as u64);
        for seq in [1u64, 2, 1024, 1025, 1026, 4097, 5000] {
            let at = index.offset_before(seq);
            let first = (seq - 1) / INDEX_EVERY * INDEX_EVERY + 1;
            assert_eq!(at, starts[first as usize - 1], "seq {seq}");
            let rec: Record =
                serde_json::from_slice(buf[at as usize..].split(|&b| b == b'\n').next().unwrap())
                    .unwrap();
            assert_eq!(rec.seq, first);
        }
    }
}
