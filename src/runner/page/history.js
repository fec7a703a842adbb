// Across runs: the statistics of `GET api/stages?window=N` as text and as a
// small inline SVG per stage, and the comparison of one run's stage with its
// usual duration. Pure functions (no DOM, no clock), unit-tested under node.
//
// The chart is built as SVG markup with every piece of text and every
// attribute value escaped here, so a stage name or job id full of quotes and
// angle brackets stays text. Colours come from classes styled by style.css
// (the page's CSP allows no inline styles), and every status also has its
// own shape, so the chart does not rely on colour alone.

import { formatCount, formatDuration, STAGE_WORDS } from "./format.js";

/** Windows the history view offers (last N finished jobs). */
export const WINDOWS = [10, 20, 50, 100, 200, 500];
/** The runner's default window. */
export const DEFAULT_WINDOW = 50;

const RECENT_STATUSES = ["complete", "error", "skipped", "cancelled"];

/** Escapes text for XML/HTML text and double- or single-quoted attributes. */
export function escapeXml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
const count = (v) => (typeof v === "number" && isFinite(v) && v >= 0 ? Math.round(v) : 0);

/**
 * Normalises an answer of `GET api/stages`: `{window, jobs, stages:[...]}`
 * with every number checked (a missing or broken one becomes null or 0) and
 * the stages ordered by layer, then name. Anything that is not that shape
 * gives an empty answer rather than an error.
 */
export function normalizeStats(answer) {
  const out = { window: null, jobs: 0, stages: [] };
  if (!answer || typeof answer !== "object" || Array.isArray(answer)) return out;
  out.window = num(answer.window);
  out.jobs = count(answer.jobs);
  for (const s of Array.isArray(answer.stages) ? answer.stages : []) {
    if (!s || typeof s.layer_name !== "string") continue;
    const recent = [];
    for (const r of Array.isArray(s.recent) ? s.recent : []) {
      if (!r || typeof r !== "object") continue;
      recent.push({
        jobId: typeof r.job_id === "string" ? r.job_id : "",
        status: RECENT_STATUSES.includes(r.status) ? r.status : "error",
        durationMs: num(r.duration_ms) !== null && r.duration_ms >= 0 ? r.duration_ms : null,
        tokens: num(r.tokens),
        finishedAt: typeof r.finished_at === "string" ? r.finished_at : null,
      });
    }
    const runs = count(s.runs);
    const error = count(s.error);
    const cancelled = count(s.cancelled);
    let rate = num(s.failure_rate);
    if (rate === null) rate = runs > 0 ? (error + cancelled) / runs : 0;
    out.stages.push({
      name: s.layer_name,
      layer: num(s.layer),
      runs,
      complete: count(s.complete),
      error,
      skipped: count(s.skipped),
      cancelled,
      failureRate: Math.min(1, Math.max(0, rate)),
      p50: num(s.p50_ms),
      p95: num(s.p95_ms),
      tokens: num(s.tokens),
      recent,
    });
  }
  out.stages.sort((a, b) => {
    const la = a.layer === null ? Infinity : a.layer;
    const lb = b.layer === null ? Infinity : b.layer;
    if (la !== lb) return la - lb;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
  return out;
}

/** Stage statistics by stage name. */
export function statsByName(stats) {
  const map = new Map();
  for (const s of stats.stages) map.set(s.name, s);
  return map;
}

/** "0%", "13.5%", "100%"; "" when unknown. */
export function formatRate(rate) {
  if (typeof rate !== "number" || !isFinite(rate)) return "";
  const pct = Math.min(100, Math.max(0, rate * 100));
  if (pct === 0 || pct === 100) return pct + "%";
  if (pct < 0.1) return "<0.1%";
  if (pct > 99.9) return ">99.9%";
  const text = pct < 10 ? pct.toFixed(1) : pct.toFixed(pct % 1 === 0 ? 0 : 1);
  return text.replace(/\.0$/, "") + "%";
}

/** "12,345 tokens", "1 token"; "" when none. */
export function formatTokens(n) {
  if (typeof n !== "number" || !isFinite(n) || n < 0) return "";
  return formatCount(n) + (Math.round(n) === 1 ? " token" : " tokens");
}

/** An estimated cost: "0.0123", "1.23", "1,234.50"; "" when unknown. */
export function formatCost(c) {
  if (typeof c !== "number" || !isFinite(c) || c < 0) return "";
  if (c === 0) return "0";
  if (c < 0.1) return c.toPrecision(2).replace(/0+$/, "").replace(/\.$/, "");
  return c.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

/** "512 B", "1.5 KB", "12 MB", "3.4 GB" (powers of 1024); "" when unknown. */
export function formatBytes(n) {
  if (typeof n !== "number" || !isFinite(n) || n < 0) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  if (i === 0) return Math.round(v) + " B";
  return (v < 10 ? v.toFixed(1) : Math.round(v).toString()) + " " + units[i];
}

/**
 * How a run's stage compares with its usual (p50) duration:
 * `{ratio, text, label, level}` with text "2.3x p50", a label for screen
 * readers, and level "slow" (at least 2x), "fast" (at most half) or
 * "usual". Null when there is nothing to compare (no duration, no p50, a
 * p50 of zero).
 */
export function compareToUsual(durationMs, p50) {
  if (typeof durationMs !== "number" || !isFinite(durationMs) || durationMs < 0) return null;
  if (typeof p50 !== "number" || !isFinite(p50) || p50 <= 0) return null;
  const ratio = durationMs / p50;
  let shown;
  if (ratio >= 10) shown = Math.round(ratio).toString();
  else if (ratio >= 0.1) shown = ratio.toFixed(1);
  else shown = ratio.toFixed(2);
  const level = ratio >= 2 ? "slow" : ratio <= 0.5 ? "fast" : "usual";
  const usual = formatDuration(p50);
  return {
    ratio,
    text: shown + "x p50",
    label: shown + " times the usual duration (p50 " + usual + ")",
    level,
  };
}

/** One line about a stage's window, for a chart's text alternative. */
export function summaryText(stage) {
  const parts = [stage.runs + (stage.runs === 1 ? " run" : " runs")];
  const by = [];
  for (const status of RECENT_STATUSES) {
    if (stage[status]) by.push(stage[status] + " " + STAGE_WORDS[status]);
  }
  if (by.length) parts[0] += " (" + by.join(", ") + ")";
  if (stage.p50 !== null) parts.push("p50 " + formatDuration(stage.p50));
  if (stage.p95 !== null) parts.push("p95 " + formatDuration(stage.p95));
  parts.push("failure rate " + formatRate(stage.failureRate));
  if (stage.tokens !== null) parts.push(formatTokens(stage.tokens));
  return parts.join("; ");
}

/** The hover text of one run's dot. */
export function dotTitle(run) {
  const parts = [run.jobId || "a job", STAGE_WORDS[run.status] || run.status];
  if (run.durationMs !== null) parts.push(formatDuration(run.durationMs));
  if (run.tokens !== null) parts.push(formatTokens(run.tokens));
  return parts.join(" \u00b7 ");
}

const f1 = (v) => (Math.round(v * 10) / 10).toString();

// The shape of one run's mark: a dot for complete, a cross for failed, a
// hollow ring for skipped, a square for cancelled.
function mark(status, x, y) {
  const cls = 'class="run-mark ' + status + '"';
  switch (status) {
    case "error":
      return (
        "<path " + cls + ' d="M' + f1(x - 3) + " " + f1(y - 3) + "L" + f1(x + 3) + " " + f1(y + 3) +
        "M" + f1(x + 3) + " " + f1(y - 3) + "L" + f1(x - 3) + " " + f1(y + 3) + '"/>'
      );
    case "skipped":
      return "<circle " + cls + ' cx="' + f1(x) + '" cy="' + f1(y) + '" r="2.5"/>';
    case "cancelled":
      return "<rect " + cls + ' x="' + f1(x - 2.5) + '" y="' + f1(y - 2.5) + '" width="5" height="5"/>';
    default:
      return "<circle " + cls + ' cx="' + f1(x) + '" cy="' + f1(y) + '" r="3"/>';
  }
}

/**
 * A stage's recent runs as an inline SVG string: one mark per run (oldest
 * on the left), its height the run's duration on a scale from 0 to the
 * window's longest run, a dashed line at p50; runs without a duration sit on
 * the baseline. Each mark links to its job and carries a `<title>`; the
 * whole chart has a text alternative (`summaryText`).
 */
export function historyChart(stage, { width = 240, height = 44 } = {}) {
  const pad = 5;
  const runs = stage.recent;
  let max = 0;
  for (const r of runs) if (r.durationMs !== null && r.durationMs > max) max = r.durationMs;
  const base = height - pad;
  const y = (ms) => (ms === null || max <= 0 ? base : base - (ms / max) * (height - 2 * pad));
  const step = runs.length > 1 ? (width - 2 * pad) / (runs.length - 1) : 0;
  const x = (i) => (runs.length > 1 ? pad + i * step : width / 2);
  const label = stage.name + ": " + summaryText(stage);
  const parts = [
    '<svg xmlns="http://www.w3.org/2000/svg" class="history-chart" viewBox="0 0 ' + width + " " + height +
      '" width="' + width + '" height="' + height + '" role="img" aria-label="' + escapeXml(label) + '">',
    "<title>" + escapeXml(label) + "</title>",
    '<line class="baseline" x1="0" x2="' + width + '" y1="' + f1(base + 0.5) + '" y2="' + f1(base + 0.5) + '"/>',
  ];
  if (stage.p50 !== null && max > 0) {
    const py = f1(y(stage.p50));
    parts.push('<line class="p50-line" x1="0" x2="' + width + '" y1="' + py + '" y2="' + py + '"><title>p50 ' + escapeXml(formatDuration(stage.p50)) + "</title></line>");
  }
  runs.forEach((r, i) => {
    const title = "<title>" + escapeXml(dotTitle(r)) + "</title>";
    const body = mark(r.status, x(i), y(r.durationMs));
    const data = ' data-job="' + escapeXml(r.jobId) + '" data-status="' + r.status + '"';
    if (r.jobId) {
      // Out of the Tab order (hundreds of marks); the job list reaches the jobs.
      parts.push('<a class="run-link" tabindex="-1" href="' + escapeXml("#/jobs/" + encodeURIComponent(r.jobId)) + '"' + data + ">" + title + body + "</a>");
    } else {
      parts.push("<g" + data + ">" + title + body + "</g>");
    }
  });
  parts.push("</svg>");
  return parts.join("");
}

/** "keeps the last 500 jobs and 30 days", "keeps every job"; "" when unknown. */
export function retentionText(health) {
  if (!health || typeof health !== "object") return "";
  const rules = [];
  if (typeof health.keep_jobs === "number") rules.push("the last " + formatCount(health.keep_jobs) + (health.keep_jobs === 1 ? " job" : " jobs"));
  if (typeof health.keep_days === "number") rules.push(formatCount(health.keep_days) + (health.keep_days === 1 ? " day" : " days"));
  if (!("keep_jobs" in health) && !("keep_days" in health)) return "";
  return rules.length ? "keeps " + rules.join(" and ") : "keeps every job";
}

/** One line about the runner: data size, retention, the queue. */
export function runnerText(health) {
  if (!health || typeof health !== "object") return "";
  const parts = [];
  const size = formatBytes(health.data_bytes);
  if (size) parts.push("data " + size);
  const keep = retentionText(health);
  if (keep) parts.push(keep);
  if (typeof health.max_running === "number") {
    let q = "runs " + formatCount(health.max_running) + " at a time";
    const now = [];
    if (typeof health.running === "number") now.push(formatCount(health.running) + " running");
    if (typeof health.queued === "number" && health.queued > 0) now.push(formatCount(health.queued) + " queued");
    if (now.length) q += " (" + now.join(", ") + ")";
    if (typeof health.workers === "number") q += " on " + formatCount(health.workers) + (health.workers === 1 ? " worker" : " workers");
    parts.push(q);
  } else if (typeof health.workers === "number") {
    // A web node that cannot count its workers' slots yet.
    parts.push(formatCount(health.workers) + (health.workers === 1 ? " worker" : " workers"));
  }
  return parts.join(" \u00b7 ");
}

/** A link target only when it is an http(s) URL; null otherwise. */
export function safeHttpUrl(url, base) {
  if (typeof url !== "string" || !url) return null;
  try {
    const u = new URL(url, base);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch (_) {
    return null;
  }
}

/**
 * A function that runs `run` (async) at most once every `gapMs`: calls in
 * between are folded into one run at the end of the gap, and a call while
 * a run is in flight gets one more run after it, so the last call is always
 * followed by a run that started after it; `.busy()` says whether a run is
 * waiting or in flight. `clock` is `{now, setTimeout}`
 * (the page's by default; tests pass their own).
 */
export function throttle(gapMs, run, clock = { now: () => performance.now(), setTimeout: (f, ms) => setTimeout(f, ms) }) {
  let timer = null;
  let running = false;
  let again = false;
  let last = -Infinity;
  const request = () => {
    if (running) {
      again = true;
      return;
    }
    if (timer !== null) return;
    const wait = Math.max(0, last + gapMs - clock.now());
    timer = clock.setTimeout(async () => {
      timer = null;
      running = true;
      last = clock.now();
      try {
        await run();
      } catch (_) {
        // The caller reports its own errors.
      } finally {
        running = false;
        if (again) {
          again = false;
          request();
        }
      }
    }, wait);
  };
  // Whether a run is waiting or in flight.
  request.busy = () => timer !== null || running;
  return request;
}
