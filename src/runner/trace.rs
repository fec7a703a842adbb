//! A W3C trace context per job: a random 16-byte trace id and 8-byte span
//! id (the runner's own root span for the job), passed to the child as
//! `TRACEPARENT=00-<trace_id>-<span_id>-01`, the environment carrier
//! OpenTelemetry SDKs read, so every span the child exports joins one trace
//! the runner knows.
//!
//! The bytes come from the operating system (`/dev/urandom`); where that
//! cannot be read, from the clock and a counter mixed by std's randomly
//! keyed hasher, which is unique enough for ids.

use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// A job's trace ids, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceIds {
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
}

impl TraceIds {
    /// Fresh random ids (never all zero, which W3C forbids).
    pub(crate) fn random() -> TraceIds {
        loop {
            let mut bytes = [0u8; 24];
            fill(&mut bytes);
            if bytes[..16].iter().any(|&b| b != 0) && bytes[16..].iter().any(|&b| b != 0) {
                return TraceIds {
                    trace_id: hex(&bytes[..16]),
                    span_id: hex(&bytes[16..]),
                };
            }
        }
    }

    /// The `TRACEPARENT` value: version 00, sampled.
    pub(crate) fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fill(buf: &mut [u8]) {
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_ok()
    {
        return;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::model::is_hex;

    #[test]
    fn ids_are_w3c_shaped_and_differ() {
        let a = TraceIds::random();
        let b = TraceIds::random();
        assert!(is_hex(&a.trace_id, 32) && is_hex(&a.span_id, 16), "{a:?}");
        assert_ne!(a, b);
        let tp = a.traceparent();
        assert_eq!(tp.len(), 55);
        assert!(tp.starts_with("00-") && tp.ends_with("-01"));
    }
}
