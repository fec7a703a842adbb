// Across-runs statistics: normalising the API's answer, the text shown, the
// comparison with the usual duration, and the SVG chart (hostile names stay
// text).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  compareToUsual, dotTitle, escapeXml, formatBytes, formatCost, formatRate, formatTokens, historyChart,
  normalizeStats, retentionText, runnerText, safeHttpUrl, statsByName, summaryText, throttle,
} from "../../src/runner/page/history.js";

const answer = {
  window: 50,
  jobs: 4,
  stages: [
    {
      layer: 3, layer_name: "zeta", runs: 1, complete: 1, error: 0, skipped: 0, cancelled: 0,
      failure_rate: 0, p50_ms: 10, p95_ms: 10, recent: [{ job_id: "j4", status: "complete", duration_ms: 10 }],
    },
    {
      layer: 2, layer_name: "pain_point_miner", runs: 4, complete: 2, error: 1, skipped: 0, cancelled: 1,
      failure_rate: 0.5, p50_ms: 512, p95_ms: 1800, tokens: 12345,
      recent: [
        { job_id: "j1", status: "complete", duration_ms: 500, tokens: 300, finished_at: "2026-12-01T12:00:00.000Z" },
        { job_id: "j2", status: "error", duration_ms: 1800 },
        { job_id: "j3", status: "cancelled", duration_ms: null },
        { job_id: "j4", status: "complete", duration_ms: 512 },
      ],
    },
    { layer: 2, layer_name: "alpha", runs: 0, p50_ms: null, p95_ms: null, recent: [] },
    "not a stage",
    { layer_name: 5 },
  ],
};

test("the answer is normalised and ordered by layer then name", () => {
  const s = normalizeStats(answer);
  assert.equal(s.window, 50);
  assert.equal(s.jobs, 4);
  assert.deepEqual(s.stages.map((x) => x.name), ["alpha", "pain_point_miner", "zeta"]);
  const miner = statsByName(s).get("pain_point_miner");
  assert.equal(miner.p50, 512);
  assert.equal(miner.tokens, 12345);
  assert.equal(miner.failureRate, 0.5);
  assert.deepEqual(miner.recent.map((r) => [r.jobId, r.status, r.durationMs]), [
    ["j1", "complete", 500], ["j2", "error", 1800], ["j3", "cancelled", null], ["j4", "complete", 512],
  ]);
  const alpha = statsByName(s).get("alpha");
  assert.equal(alpha.p50, null);
  assert.equal(alpha.failureRate, 0);
  assert.equal(alpha.tokens, null);
});

test("broken answers give an empty history, not an error", () => {
  for (const bad of [null, 5, "x", [], { stages: "no" }, { stages: [null] }]) {
    assert.deepEqual(normalizeStats(bad).stages, []);
  }
  // A missing failure rate is computed; a bogus status counts as failed.
  const s = normalizeStats({ stages: [{ layer_name: "a", runs: 4, error: 1, cancelled: 1, recent: [{ status: "<b>" }] }] });
  assert.equal(s.stages[0].failureRate, 0.5);
  assert.equal(s.stages[0].recent[0].status, "error");
});

test("rates, tokens, cost and bytes read well", () => {
  assert.equal(formatRate(0), "0%");
  assert.equal(formatRate(1), "100%");
  assert.equal(formatRate(0.135), "13.5%");
  assert.equal(formatRate(0.25), "25%");
  assert.equal(formatRate(0.05), "5%");
  assert.equal(formatRate(0.0001), "<0.1%");
  assert.equal(formatRate(NaN), "");
  assert.equal(formatTokens(1), "1 token");
  assert.equal(formatTokens(12345), "12,345 tokens");
  assert.equal(formatTokens(-1), "");
  assert.equal(formatCost(1.234), "1.23");
  assert.equal(formatCost(0.0123), "0.012");
  assert.equal(formatCost(1234.5), "1,234.50");
  assert.equal(formatCost(undefined), "");
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KB");
  assert.equal(formatBytes(12 * 1024 * 1024), "12 MB");
  assert.equal(formatBytes(null), "");
});

test("a run's duration against the usual one", () => {
  const slow = compareToUsual(1178, 512);
  assert.equal(slow.text, "2.3x p50");
  assert.equal(slow.level, "slow");
  assert.match(slow.label, /^2\.3 times the usual duration \(p50 512 ms\)$/);
  assert.equal(compareToUsual(512, 512).text, "1.0x p50");
  assert.equal(compareToUsual(512, 512).level, "usual");
  assert.equal(compareToUsual(100, 512).level, "fast");
  assert.equal(compareToUsual(10, 1000).text, "0.01x p50");
  assert.equal(compareToUsual(60000, 1000).text, "60x p50");
  assert.equal(compareToUsual(10, 0), null);
  assert.equal(compareToUsual(10, null), null);
  assert.equal(compareToUsual(null, 10), null);
});

test("the text alternative says counts, percentiles and failure rate", () => {
  const miner = statsByName(normalizeStats(answer)).get("pain_point_miner");
  assert.equal(
    summaryText(miner),
    "4 runs (2 complete, 1 failed, 1 cancelled); p50 512 ms; p95 1.8 s; failure rate 50%; 12,345 tokens",
  );
  assert.equal(dotTitle(miner.recent[0]), "j1 \u00b7 complete \u00b7 500 ms \u00b7 300 tokens");
});

// Every element of the SVG string: [name, attributes] in order.
function tags(svg) {
  return [...svg.matchAll(/<([a-z]+)((?:\s+[a-z-:]+="[^"<>]*")*)\s*\/?>/g)].map((m) => m[1]);
}

test("the chart has one mark per run, a shape per status, links and titles", () => {
  const miner = statsByName(normalizeStats(answer)).get("pain_point_miner");
  const svg = historyChart(miner);
  assert.ok(svg.startsWith("<svg "));
  assert.ok(svg.endsWith("</svg>"));
  assert.equal((svg.match(/class="run-mark /g) || []).length, 4);
  assert.deepEqual([...svg.matchAll(/class="run-mark ([a-z]+)"/g)].map((m) => m[1]), ["complete", "error", "cancelled", "complete"]);
  assert.match(svg, /<path class="run-mark error"/);
  assert.match(svg, /<rect class="run-mark cancelled"/);
  assert.equal((svg.match(/<a class="run-link" tabindex="-1" href="#\/jobs\/j\d"/g) || []).length, 4);
  assert.match(svg, /class="p50-line"/);
  assert.match(svg, /role="img" aria-label="pain_point_miner: 4 runs/);
  // The longest run reaches the top, a run without duration the baseline.
  const ys = [...svg.matchAll(/class="run-mark [a-z]+" (?:cx="[\d.]+" cy="([\d.]+)"|x="[\d.]+" y="([\d.]+)"|d="M[\d.]+ ([\d.]+))/g)].map((m) => Number(m[1] || m[2] || m[3]));
  assert.equal(ys.length, 4);
  assert.ok(ys[1] < ys[0] && ys[1] < ys[3], "the 1.8 s run is highest: " + ys);
  assert.ok(ys[2] > ys[0], "the run without duration sits lowest: " + ys);
  // Well formed: only known elements.
  for (const t of tags(svg)) assert.ok(["svg", "title", "line", "a", "g", "circle", "path", "rect"].includes(t), t);
});

test("hostile stage names and job ids stay text in the chart", () => {
  const evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>&\'';
  const stats = normalizeStats({
    stages: [{
      layer: 1, layer_name: evil, runs: 2, complete: 1, error: 1, p50_ms: 5, p95_ms: 9,
      recent: [{ job_id: evil, status: "complete", duration_ms: 5 }, { job_id: "x\" onload=\"y", status: "error", duration_ms: 9 }],
    }],
  });
  const svg = historyChart(stats.stages[0]);
  assert.ok(!svg.includes("<script"), svg);
  assert.ok(!svg.includes("<img"), svg);
  assert.ok(!svg.includes('" onload="'), svg);
  assert.ok(!/\sonerror=/.test(svg.replace(/&[a-z#0-9]+;/g, "")) || !svg.includes("<img"));
  assert.ok(svg.includes(escapeXml(evil)));
  // Between tags there is no raw quote or bracket from the name: every
  // attribute value is quoted and holds no quote, no '<'.
  for (const m of svg.matchAll(/="([^"]*)"/g)) assert.ok(!m[1].includes("<"), m[1]);
  assert.deepEqual(tags(svg).filter((t) => !["svg", "title", "line", "a", "g", "circle", "path", "rect"].includes(t)), []);
  // The link is the encoded id.
  assert.ok(svg.includes('href="#/jobs/' + escapeXml(encodeURIComponent(evil)) + '"'));
  assert.equal(escapeXml(`<a href="x">'&'</a>`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
});

test("a chart of one run or no durations still draws", () => {
  const one = historyChart({ name: "a", runs: 1, complete: 1, error: 0, skipped: 0, cancelled: 0, failureRate: 0, p50: null, p95: null, tokens: null, recent: [{ jobId: "", status: "skipped", durationMs: null, tokens: null }] });
  assert.match(one, /<g data-job="" data-status="skipped"><title>a job · skipped<\/title><circle class="run-mark skipped" cx="120"/);
  assert.ok(!one.includes("p50-line"));
});

test("retention, data size and queue read as one line", () => {
  assert.equal(retentionText({ keep_jobs: 500, keep_days: 30 }), "keeps the last 500 jobs and 30 days");
  assert.equal(retentionText({ keep_jobs: null, keep_days: null }), "keeps every job");
  assert.equal(retentionText({ keep_jobs: null, keep_days: 1 }), "keeps 1 day");
  assert.equal(retentionText({ ok: true }), "");
  assert.equal(
    runnerText({ data_bytes: 3 * 1024 * 1024, keep_jobs: 200, keep_days: null, max_running: 2, running: 2, queued: 3 }),
    "data 3.0 MB \u00b7 keeps the last 200 jobs \u00b7 runs 2 at a time (2 running, 3 queued)",
  );
  assert.equal(runnerText({ ok: true, version: "0.1.0" }), "");
  // A web node: the slots are its workers'.
  assert.equal(
    runnerText({ max_running: 8, running: 3, queued: 0, workers: 2, role: "web" }),
    "runs 8 at a time (3 running) on 2 workers",
  );
  assert.equal(runnerText({ max_running: 4, running: 0, queued: 1, workers: 1 }), "runs 4 at a time (0 running, 1 queued) on 1 worker");
  assert.equal(runnerText({ max_running: null, workers: 0 }), "0 workers");
});

test("only http(s) links are followed", () => {
  assert.equal(safeHttpUrl("https://jaeger.example/trace/abc", "http://127.0.0.1/"), "https://jaeger.example/trace/abc");
  assert.equal(safeHttpUrl("javascript:alert(1)", "http://127.0.0.1/"), null);
  assert.equal(safeHttpUrl("data:text/html,x", "http://127.0.0.1/"), null);
  assert.equal(safeHttpUrl(5, "http://127.0.0.1/"), null);
  assert.equal(safeHttpUrl("/trace/x", "http://127.0.0.1:8080/"), "http://127.0.0.1:8080/trace/x");
});

// A fake clock: timers run when the test moves time on.
function fakeClock() {
  let now = 0;
  const timers = [];
  const settle = async () => {
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  return {
    now: () => now,
    setTimeout: (f, ms) => timers.push({ at: now + ms, f }),
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        if (!timers.length || timers[0].at > end) break;
        const t = timers.shift();
        now = Math.max(now, t.at);
        t.f(); // not awaited: a run may be held open by the test
        await settle();
      }
      now = end;
      await settle();
    },
  };
}

test("history fetches are throttled: many job ends, few fetches", async () => {
  const clock = fakeClock();
  let runs = 0;
  const request = throttle(1000, async () => {
    runs += 1;
  }, clock);
  // 50 jobs end within 5 seconds: one fetch at once, then one a second.
  for (let i = 0; i < 50; i++) {
    request();
    await clock.advance(100);
  }
  await clock.advance(2000);
  assert.ok(runs >= 5 && runs <= 6, "runs: " + runs);
  // Nothing asked, nothing fetched.
  await clock.advance(10000);
  assert.ok(runs <= 6);
});

test("a request during a fetch in flight gets one more fetch after it", async () => {
  const clock = fakeClock();
  let runs = 0;
  let open = null;
  const request = throttle(1000, () => {
    runs += 1;
    return new Promise((resolve) => (open = resolve));
  }, clock);
  assert.equal(request.busy(), false);
  request();
  assert.equal(request.busy(), true);
  await clock.advance(0);
  assert.equal(runs, 1);
  request(); // while the first is in flight
  request();
  await clock.advance(5000);
  assert.equal(runs, 1, "never two at once");
  open();
  await clock.advance(0);
  await clock.advance(1000);
  assert.equal(runs, 2, "one more after it, for both requests");
  open();
  await clock.advance(5000);
  assert.equal(runs, 2);
  assert.equal(request.busy(), false);
});
