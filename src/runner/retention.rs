//! Which finished jobs `--keep-jobs` and `--keep-days` no longer keep (pure,
//! unit-tested). The caller passes finished jobs only: a queued or running
//! job is never a candidate.

/// Milliseconds in a day.
const DAY_MS: f64 = 86_400_000.0;

/// The ids to delete among `finished` (oldest first, each with its finish
/// time in ms since the Unix epoch when known): those beyond the newest
/// `keep_jobs`, and those finished more than `keep_days` before `now_ms`.
/// A job with no known time is kept by `keep_days`.
pub(crate) fn to_delete(
    finished: &[(String, Option<u64>)],
    keep_jobs: Option<usize>,
    keep_days: Option<f64>,
    now_ms: u64,
) -> Vec<String> {
    let excess = keep_jobs.map_or(0, |keep| finished.len().saturating_sub(keep));
    let cutoff = keep_days.map(|d| now_ms as f64 - d * DAY_MS);
    finished
        .iter()
        .enumerate()
        .filter(|(i, (_, at))| {
            *i < excess || matches!((cutoff, at), (Some(c), Some(at)) if (*at as f64) < c)
        })
        .map(|(_, (id, _))| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_the_recent() {
        let day = 86_400_000u64;
        let now = 100 * day;
        let jobs: Vec<(String, Option<u64>)> = vec![
            ("a".into(), Some(now - 10 * day)),
            ("b".into(), None),
            ("c".into(), Some(now - 2 * day)),
            ("d".into(), Some(now - day / 2)),
        ];
        assert!(to_delete(&jobs, None, None, now).is_empty());
        assert_eq!(to_delete(&jobs, Some(2), None, now), ["a", "b"]);
        assert_eq!(to_delete(&jobs, Some(10), None, now), Vec::<String>::new());
        assert_eq!(to_delete(&jobs, None, Some(3.0), now), ["a"]);
        assert_eq!(to_delete(&jobs, None, Some(1.0), now), ["a", "c"]);
        assert_eq!(to_delete(&jobs, Some(3), Some(1.0), now), ["a", "c"]);
        assert_eq!(to_delete(&jobs, Some(0), None, now).len(), 4);
    }
}
