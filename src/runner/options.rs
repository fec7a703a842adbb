//! [`RunnerOptions`]: how many jobs run at once, how long finished jobs are
//! kept, where tokens are read from and what they cost, and where a job's
//! trace can be looked at. `pipeline-runner`'s flags map one to one onto
//! these fields.

/// The largest `tokens` value taken into account (larger ones are ignored
/// as bad input and reported once).
pub const MAX_TOKENS: f64 = 1e15;

/// Settings of a [`Runner`](super::Runner); [`Default`] gives those of
/// `pipeline-runner` without flags.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// Jobs whose child runs at the same time; more wait as `queued` and
    /// start in order (`--max-running`). Default: the number of CPUs. At
    /// least 1.
    pub max_running: usize,
    /// Keep at most this many finished jobs; older ones are deleted
    /// (`--keep-jobs`). Default: no limit.
    pub keep_jobs: Option<usize>,
    /// Delete finished jobs that finished more than this many days ago
    /// (`--keep-days`, fractions allowed). Default: no limit.
    pub keep_days: Option<f64>,
    /// The key of a stage's `layer_complete`/`layer_error` `metadata` that
    /// holds its token count (`--tokens-field`). Default `tokens_used`.
    pub tokens_field: String,
    /// The price of 1,000 tokens, for the estimated cost
    /// (`--price-per-1k-tokens`). Default: none (no cost shown).
    pub price_per_1k_tokens: Option<f64>,
    /// A link template for a job's trace in a tracing backend, with
    /// `{trace_id}` and optionally `{span_id}` (`--trace-url`).
    pub trace_url: Option<String>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            max_running: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keep_jobs: None,
            keep_days: None,
            tokens_field: "tokens_used".to_owned(),
            price_per_1k_tokens: None,
            trace_url: None,
        }
    }
}

impl RunnerOptions {
    /// Sets [`max_running`](Self::max_running) (at least 1).
    pub fn max_running(mut self, n: usize) -> Self {
        self.max_running = n.max(1);
        self
    }

    /// Sets [`keep_jobs`](Self::keep_jobs).
    pub fn keep_jobs(mut self, n: Option<usize>) -> Self {
        self.keep_jobs = n;
        self
    }

    /// Sets [`keep_days`](Self::keep_days).
    pub fn keep_days(mut self, days: Option<f64>) -> Self {
        self.keep_days = days;
        self
    }

    /// Sets [`tokens_field`](Self::tokens_field).
    pub fn tokens_field(mut self, field: impl Into<String>) -> Self {
        self.tokens_field = field.into();
        self
    }

    /// Sets [`price_per_1k_tokens`](Self::price_per_1k_tokens).
    pub fn price_per_1k_tokens(mut self, price: Option<f64>) -> Self {
        self.price_per_1k_tokens = price;
        self
    }

    /// Sets [`trace_url`](Self::trace_url).
    pub fn trace_url(mut self, template: Option<String>) -> Self {
        self.trace_url = template;
        self
    }

    /// The estimated cost of `tokens`, when a price is set.
    pub(crate) fn cost(&self, tokens: f64) -> Option<f64> {
        self.price_per_1k_tokens.map(|p| tokens / 1000.0 * p)
    }

    /// The trace link for `trace_id` (and `span_id`), when a template is set.
    pub(crate) fn trace_link(&self, trace_id: &str, span_id: Option<&str>) -> Option<String> {
        let t = self.trace_url.as_deref()?;
        Some(
            t.replace("{trace_id}", trace_id)
                .replace("{span_id}", span_id.unwrap_or("")),
        )
    }
}

/// Why a tokens value was ignored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BadTokens {
    NotANumber,
    Negative,
    TooLarge,
}

/// A stage's tokens from its terminal `metadata`: `Ok(None)` when the key
/// is absent, `Err` for a value that is not a finite number from 0 to
/// [`MAX_TOKENS`].
pub(crate) fn tokens_in(
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    field: &str,
) -> Result<Option<f64>, BadTokens> {
    let Some(v) = metadata.and_then(|m| m.get(field)) else {
        return Ok(None);
    };
    let n = v.as_f64().ok_or(BadTokens::NotANumber)?;
    if !n.is_finite() {
        return Err(BadTokens::TooLarge);
    }
    if n < 0.0 {
        return Err(BadTokens::Negative);
    }
    if n > MAX_TOKENS {
        return Err(BadTokens::TooLarge);
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_values() {
        let m = |v: serde_json::Value| json!({ "tokens_used": v }).as_object().unwrap().clone();
        assert_eq!(
            tokens_in(Some(&m(json!(1200))), "tokens_used"),
            Ok(Some(1200.0))
        );
        assert_eq!(tokens_in(Some(&m(json!(0))), "tokens_used"), Ok(Some(0.0)));
        assert_eq!(
            tokens_in(Some(&m(json!(2.5))), "tokens_used"),
            Ok(Some(2.5))
        );
        assert_eq!(
            tokens_in(Some(&m(json!(1e15))), "tokens_used"),
            Ok(Some(1e15))
        );
        assert_eq!(tokens_in(Some(&m(json!(1200))), "other"), Ok(None));
        assert_eq!(tokens_in(None, "tokens_used"), Ok(None));
        assert_eq!(
            tokens_in(Some(&m(json!("1200"))), "tokens_used"),
            Err(BadTokens::NotANumber)
        );
        assert_eq!(
            tokens_in(Some(&m(json!(null))), "tokens_used"),
            Err(BadTokens::NotANumber)
        );
        assert_eq!(
            tokens_in(Some(&m(json!(-1))), "tokens_used"),
            Err(BadTokens::Negative)
        );
        assert_eq!(
            tokens_in(Some(&m(json!(1e16))), "tokens_used"),
            Err(BadTokens::TooLarge)
        );
        assert_eq!(
            tokens_in(Some(&m(json!(u64::MAX))), "tokens_used"),
            Err(BadTokens::TooLarge)
        );
    }

    #[test]
    fn trace_links() {
        let o =
            RunnerOptions::default().trace_url(Some("https://b/t/{trace_id}?s={span_id}".into()));
        assert_eq!(
            o.trace_link("ab", Some("cd")).as_deref(),
            Some("https://b/t/ab?s=cd")
        );
        assert_eq!(RunnerOptions::default().trace_link("ab", None), None);
        let c = RunnerOptions::default().price_per_1k_tokens(Some(0.5));
        assert_eq!(c.cost(3000.0), Some(1.5));
    }
}
