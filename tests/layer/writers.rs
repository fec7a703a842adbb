//! Writers that misbehave: one that does not lock, on a pipe, with lines
//! far above the pipe's atomic size; a disk that fills up and frees space
//! again. No line may interleave with another, and a torn line must not take
//! the next one with it.

use crate::common;

use std::io::{self, Read as _, Write as _};
use std::sync::{Arc, Mutex};

use common::{of_kind, parse_lines};
use serde_json::Value;
use tracing::info_span;
use tracing_pipeline::PipelineLayer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

#[test]
fn an_unlocked_writer_on_a_pipe_never_interleaves_big_lines() {
    let (mut reader, writer) = io::pipe().expect("pipe");
    let reading = std::thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        all
    });
    // `Arc<PipeWriter>`: every line goes through `&PipeWriter`, which takes
    // no lock, and a 100 KB line needs many `write` calls on a pipe.
    let writer = Arc::new(writer);
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry().with(PipelineLayer::new().with_writer(Arc::clone(&writer))),
    );
    let big = "x".repeat(100_000);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dispatch = dispatch.clone();
            let big = big.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..10 {
                        let job = format!("job-{t}-{i}");
                        let p = info_span!("pipeline", job_id = %job, blob = %big);
                        let _p = p.enter();
                        let s = info_span!("stage", layer = 1, blob = %big);
                        let _s = s.enter();
                        tracing::info!(blob = %big, "a big event");
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(dispatch);
    drop(writer);
    let text = String::from_utf8(reading.join().unwrap()).unwrap();
    let lines = parse_lines(&text);
    assert_eq!(lines.len(), 8 * 10 * 5);
    common::checker::check(&lines);
}

/// A disk that takes `room` more bytes, then says it is full.
#[derive(Clone)]
struct Disk(Arc<Mutex<(Vec<u8>, usize)>>);

impl io::Write for &Disk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut d = self.0.lock().unwrap();
        if d.1 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device",
            ));
        }
        let n = buf.len().min(d.1);
        d.0.extend_from_slice(&buf[..n]);
        d.1 -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Disk {
    type Writer = &'a Disk;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[test]
fn a_disk_that_fills_and_frees_space_keeps_the_damage_inside_one_line() {
    let disk = Disk(Arc::new(Mutex::new((Vec::new(), 0))));
    let subscriber =
        tracing_subscriber::registry().with(PipelineLayer::new().with_writer(disk.clone()));
    let room = |n: usize| disk.0.lock().unwrap().1 = n;
    tracing::subscriber::with_default(subscriber, || {
        room(usize::MAX);
        let p = info_span!("pipeline", job_id = "disk");
        let _p = p.enter();
        room(30); // part of the next line fits
        let s = info_span!("flood_a", layer = 1);
        s.in_scope(|| {});
        drop(s);
        room(usize::MAX); // space again
        let s = info_span!("flood_b", layer = 2);
        s.in_scope(|| {});
    });
    let text = String::from_utf8(disk.0.lock().unwrap().0.clone()).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    let parsed: Vec<Option<Value>> = rows.iter().map(|l| serde_json::from_str(l).ok()).collect();
    // pipeline_start, the torn half of flood_a's start, then whole lines.
    assert!(parsed[0].is_some());
    assert!(parsed[1].is_none(), "the torn line: {:?}", rows[1]);
    let whole: Vec<Value> = parsed.into_iter().flatten().collect();
    let b: Vec<&Value> = whole
        .iter()
        .filter(|l| l["layer_name"] == "flood_b")
        .collect();
    assert_eq!(b.len(), 2, "flood_b's start and end survive: {text}");
    assert_eq!(of_kind(&whole, "pipeline_complete").len(), 1);
    // Exactly one line is damaged.
    assert_eq!(rows.len(), whole.len() + 1, "{text}");
}

#[test]
fn a_closed_pipe_never_blocks_or_panics_the_pipeline() {
    let (reader, writer) = io::pipe().expect("pipe");
    drop(reader);
    let writer = Arc::new(writer);
    let subscriber = tracing_subscriber::registry().with(PipelineLayer::new().with_writer(writer));
    tracing::subscriber::with_default(subscriber, || {
        let p = info_span!("pipeline", job_id = "closed");
        let _p = p.enter();
        for i in 0..100 {
            info_span!("stage", layer = i).in_scope(|| tracing::info!("line"));
        }
    });
    let _ = io::stdout().flush();
}
