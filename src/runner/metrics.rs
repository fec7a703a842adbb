//! `GET /metrics` (feature `metrics`): the runner's totals in the
//! Prometheus text exposition format, through the official
//! `prometheus-client` crate.
//!
//! Every value is read at scrape time from what the runner keeps anyway
//! (the totals of finished jobs, rebuilt from the data directory at start,
//! deleted jobs included; atomic health counters; the queue), by one
//! [`Collector`]: a scrape takes a few short locks and never waits for a
//! job. `prometheus-client` writes OpenMetrics text; [`to_classic`] turns
//! it into the classic format (`text/plain; version=0.0.4`) that every
//! Prometheus and `promtool check metrics` read: counter `HELP`/`TYPE`
//! lines named with their `_total` suffix, no `# UNIT`, no `# EOF`. Label
//! values are escaped by the crate (`\\`, `\"`, `\n`), the same in both
//! formats. `docs/metrics.md` lists every metric.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::params::Params;
use super::stats::{DURATION_BUCKETS, LINES_BUCKETS};
use super::{lock, Runner, RunnerError};

/// The content type of the classic text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reads the runner's numbers at each scrape.
#[derive(Debug)]
struct RunnerCollector(Weak<Runner>);

type Labels<'a> = [(&'static str, &'a str)];

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Vec<(&'static str, &str)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        let labels: &Labels<'_> = labels;
        let family = m.encode_family(&labels)?;
        if v.fract() == 0.0 && *v >= 0.0 && *v < 9e15 {
            ConstCounter::new(*v as u64).encode(family)?;
        } else {
            ConstCounter::new(*v).encode(family)?;
        }
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

impl Collector for RunnerCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(runner) = self.0.upgrade() else {
            return Ok(());
        };
        let shared = runner.shared();
        let totals = lock(&shared.totals).clone();
        let (running, queued) = runner.load();
        let c = &shared.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;

        counter(
            &mut e,
            "pipeline_runner_jobs_started",
            "Jobs whose pipeline command was started.",
            &[(vec![], totals.jobs_started as f64)],
        )?;
        let finished: Vec<_> = totals
            .jobs_finished
            .iter()
            .map(|(k, v)| (vec![("status", k.as_str())], *v as f64))
            .collect();
        counter(
            &mut e,
            "pipeline_runner_jobs_finished",
            "Jobs that ended, by outcome (success, partial, error, cancelled, interrupted).",
            &finished,
        )?;
        gauge(
            &mut e,
            "pipeline_runner_jobs_running",
            "Jobs running now.",
            running as i64,
        )?;
        gauge(
            &mut e,
            "pipeline_runner_jobs_queued",
            "Jobs waiting for a free slot now.",
            queued as i64,
        )?;
        let runs: Vec<_> = totals
            .stages
            .iter()
            .flat_map(|(stage, t)| {
                t.runs.iter().map(move |(status, n)| {
                    (
                        vec![("stage", stage.as_str()), ("status", status.as_str())],
                        *n as f64,
                    )
                })
            })
            .collect();
        counter(
            &mut e,
            "pipeline_runner_stage_runs",
            "Stage runs of finished jobs, by stage and status (complete, error, skipped, cancelled).",
            &runs,
        )?;
        {
            let mut m = e.encode_descriptor(
                "pipeline_runner_stage_duration_seconds",
                "Durations of stage runs that were not skipped.",
                None,
                MetricType::Histogram,
            )?;
            for (stage, t) in &totals.stages {
                let labels: &Labels<'_> = &[("stage", stage.as_str())];
                let buckets = t.duration.buckets(&DURATION_BUCKETS);
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    t.duration.sum,
                    t.duration.count,
                    &buckets,
                    None,
                )?;
            }
        }
        let tokens: Vec<_> = totals
            .stages
            .iter()
            .filter(|(_, t)| t.tokens > 0.0)
            .map(|(stage, t)| (vec![("stage", stage.as_str())], t.tokens))
            .collect();
        counter(
            &mut e,
            "pipeline_runner_stage_tokens",
            "Tokens reported by stages (their metadata's tokens field), by stage.",
            &tokens,
        )?;
        if let Some(price) = shared.options.price_per_1k_tokens {
            let cost: Vec<_> = tokens
                .iter()
                .map(|(l, t)| (l.clone(), t / 1000.0 * price))
                .collect();
            counter(
                &mut e,
                "pipeline_runner_stage_estimated_cost",
                "Estimated cost of those tokens at the configured price per 1,000, by stage.",
                &cost,
            )?;
        }
        gauge(
            &mut e,
            "pipeline_runner_sse_clients",
            "Event-stream clients connected now.",
            c.sse_clients.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "pipeline_runner_lines_received",
            "Lines read from pipeline commands.",
            &[(vec![], load(&c.lines_received))],
        )?;
        counter(
            &mut e,
            "pipeline_runner_lines_stored",
            "Lines written to job logs.",
            &[(vec![], load(&c.lines_stored))],
        )?;
        counter(
            &mut e,
            "pipeline_runner_stored_bytes",
            "Bytes written to job logs.",
            &[(vec![], load(&c.bytes_stored))],
        )?;
        counter(
            &mut e,
            "pipeline_runner_write_errors",
            "Failed writes of job logs (since this runner started).",
            &[(vec![], load(&c.write_errors))],
        )?;
        let mut m = e.encode_descriptor(
            "pipeline_runner_job_lines",
            "Lines stored per finished job.",
            None,
            MetricType::Histogram,
        )?;
        let h = &totals.job_lines;
        m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets(&LINES_BUCKETS), None)
    }
}

/// The OpenMetrics text of `prometheus-client` in the classic format.
pub(crate) fn to_classic(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The exposition of `runner` now, classic text format.
pub(crate) fn render(runner: &Arc<Runner>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RunnerCollector(Arc::downgrade(runner))));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode_registry(&mut text, &registry).is_err() {
        tracing::error!("cannot encode the metrics");
    }
    to_classic(&text)
}

pub(crate) async fn scrape(
    State(runner): State<Arc<Runner>>,
    uri: Uri,
) -> Result<Response, RunnerError> {
    Params::parse(&uri, "no parameters", &[])?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&runner)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP a_jobs Jobs.\n# TYPE a_jobs counter\na_jobs_total 3\n# HELP g G.\n# TYPE g gauge\n# UNIT g seconds\ng 1\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP a_jobs_total Jobs.\n# TYPE a_jobs_total counter\na_jobs_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
    }
}
