// The page's pure state: events in, view state out.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  initialJob, reduceJob, orderedStages, outcomeOf, reasonOf, timeline, initialList, reduceList, matchesFilter,
} from "../../src/runner/page/state.js";

const ts = (ms) => new Date(Date.UTC(2026, 11, 1, 12, 0, 0) + ms).toISOString();
const line = (seq, data) => ({ seq, data });
const fold = (events, id = "job-1") => events.reduce(reduceJob, initialJob(id));

test("lifecycle lines move stages through their states, ordered by layer then name", () => {
  const s = fold([
    { type: "lines", rows: [
      line(1, { event: "pipeline_start", timestamp: ts(0) }),
      line(2, { event: "layer_start", layer: 3, layer_name: "role_researcher", timestamp: ts(10) }),
      line(3, { event: "layer_start", layer: 3, layer_name: "company_researcher", timestamp: ts(10) }),
      line(4, { event: "layer_start", layer: 1, layer_name: "miner", timestamp: ts(5) }),
      line(5, { event: "layer_complete", layer: 1, layer_name: "miner", duration_ms: 4, timestamp: ts(9), metadata: { tokens_used: 12 } }),
      line(6, { event: "layer_error", layer: 3, layer_name: "role_researcher", duration_ms: 20, error: "boom", timestamp: ts(30) }),
      line(7, { event: "layer_skip", layer: 4, layer_name: "generator", timestamp: ts(31) }),
    ] },
  ]);
  assert.deepEqual(orderedStages(s).map((x) => [x.name, x.status]), [
    ["miner", "complete"], ["company_researcher", "running"], ["role_researcher", "error"], ["generator", "skipped"],
  ]);
  assert.deepEqual(s.stages.miner.history, ["pending", "running", "complete"]);
  assert.deepEqual(s.stages.miner.metadata, { tokens_used: 12 });
  assert.equal(s.stages.role_researcher.error, "boom");
  assert.equal(s.stages.role_researcher.endedSeq, 6);
  assert.deepEqual(s.stages.generator.history, ["pending", "skipped"]);
  assert.equal(s.outcome, "running");
  assert.equal(s.lastSeq, 7);
});

test("a replayed line is folded in once", () => {
  const rows = [line(1, { event: "layer_start", layer: 1, layer_name: "a", timestamp: ts(0) })];
  const once = fold([{ type: "lines", rows }]);
  const twice = reduceJob(once, { type: "lines", rows });
  assert.equal(twice.lastSeq, 1);
  assert.deepEqual(twice.stages.a.history, ["pending", "running"]);
});

test("the old state is never changed", () => {
  const a = fold([{ type: "lines", rows: [line(1, { event: "layer_start", layer: 1, layer_name: "a" })] }]);
  const frozen = JSON.stringify(a);
  reduceJob(a, { type: "lines", rows: [line(2, { event: "layer_complete", layer: 1, layer_name: "a", duration_ms: 3 })] });
  assert.equal(JSON.stringify(a), frozen);
});

test("a cancel makes the job and its open stage cancelled, not failed", () => {
  const s = fold([
    { type: "lines", rows: [
      line(1, { event: "pipeline_start", timestamp: ts(0) }),
      line(2, { event: "layer_start", layer: 1, layer_name: "a", timestamp: ts(1) }),
      line(3, { event: "layer_error", layer: 1, layer_name: "a", error: "cancelled", duration_ms: 5, timestamp: ts(6) }),
      line(4, { event: "pipeline_complete", status: "error", error: "cancelled", duration_ms: 6, timestamp: ts(6) }),
    ] },
    { type: "end", summary: { job_id: "job-1", state: "finished", status: "error", outcome: "cancelled", reason: "cancelled" } },
  ]);
  assert.equal(s.outcome, "cancelled");
  assert.equal(s.reason, "cancelled");
  assert.equal(s.stages.a.status, "cancelled");
  assert.deepEqual(s.stages.a.history, ["pending", "running", "cancelled"]);
  assert.equal(s.ended, true);
});

test("the end of a job closes every stage still running, with the reason", () => {
  const s = fold([
    { type: "lines", rows: [line(1, { event: "layer_start", layer: 1, layer_name: "a" })] },
    { type: "end", summary: { job_id: "job-1", state: "interrupted", outcome: "interrupted", reason: "runner shut down" } },
  ]);
  assert.equal(s.stages.a.status, "error");
  assert.equal(s.stages.a.error, "runner shut down");
  assert.equal(s.outcome, "interrupted");
});

test("a detail gives stages, counts and the last line; later lines continue from it", () => {
  const s = fold([
    { type: "detail", detail: {
      job_id: "job-1", state: "running", status: null, outcome: "running", lines: 40, started_at: ts(0),
      stages: [
        { layer: 1, layer_name: "a", status: "complete", duration_ms: 5, started_seq: 2, ended_seq: 9, metadata: { fit_score: 0.5 } },
        { layer: 2, layer_name: "b", status: "running", started_seq: 10 },
      ],
    } },
    { type: "lines", rows: [line(40, { event: "layer_complete", layer: 2, layer_name: "b", duration_ms: 1 })] },
    { type: "lines", rows: [line(41, { event: "layer_complete", layer: 2, layer_name: "b", duration_ms: 7 })] },
  ]);
  assert.equal(s.stages.a.status, "complete");
  assert.deepEqual(s.stages.a.metadata, { fit_score: 0.5 });
  assert.equal(s.stages.b.status, "complete");
  assert.equal(s.stages.b.durationMs, 7, "line 40 was already in the detail");
  assert.equal(s.lastSeq, 41);
  assert.equal(s.pipelineStart, Date.parse(ts(0)));
});

test("a finished detail with a cancelled stage error shows cancelled", () => {
  const s = fold([{ type: "detail", detail: {
    job_id: "j", state: "finished", status: "error", outcome: "cancelled", reason: "cancelled", lines: 3,
    stages: [{ layer: 1, layer_name: "a", status: "cancelled", error: "cancelled" }, { layer: 2, layer_name: "b", status: "pending" }],
  } }]);
  assert.equal(s.stages.a.status, "cancelled");
  assert.equal(s.stages.b.notRun, true);
  assert.equal(s.ended, true);
});

test("a job that cannot start says why", () => {
  const summary = { job_id: "j", state: "finished", status: "error", outcome: "error", reason: "cannot start the pipeline: No such file or directory", lines: 1 };
  const s = fold([{ type: "detail", detail: { ...summary, stages: [] } }]);
  assert.equal(s.outcome, "error");
  assert.match(s.reason, /cannot start the pipeline/);
});

test("outcome and reason work without the newer fields", () => {
  assert.equal(outcomeOf({ state: "running" }), "running");
  assert.equal(outcomeOf({ state: "interrupted", status: "error" }), "interrupted");
  assert.equal(outcomeOf({ state: "finished", status: "partial" }), "partial");
  assert.equal(outcomeOf(null), "unknown");
  assert.equal(reasonOf({ state: "finished", status: "error", exit_code: 3 }), "exit status: 3");
  assert.equal(reasonOf({ state: "finished", status: "success", exit_code: 0 }), null);
});

test("an unknown job is marked, and unknown events change nothing", () => {
  const s = fold([{ type: "not-found" }]);
  assert.equal(s.notFound, true);
  assert.equal(reduceJob(s, { type: "bogus" }), s);
});

test("the timeline stops running bars at the given clock", () => {
  const s = fold([{ type: "lines", rows: [
    line(1, { event: "pipeline_start", timestamp: ts(0) }),
    line(2, { event: "layer_start", layer: 1, layer_name: "a", timestamp: ts(0) }),
    line(3, { event: "layer_complete", layer: 1, layer_name: "a", duration_ms: 100, timestamp: ts(100) }),
    line(4, { event: "layer_start", layer: 2, layer_name: "b", timestamp: ts(100) }),
  ] }]);
  const now = Date.parse(ts(200));
  const t = timeline(s, now);
  assert.equal(t.span, 200);
  assert.deepEqual(t.bars.a, { left: 0, width: 50, lengthMs: 100 });
  assert.deepEqual(t.bars.b, { left: 50, width: 50, lengthMs: 100 });
  // The same clock gives the same bars: a frozen clock means no growth.
  assert.deepEqual(timeline(s, now), t);
});

test("the jobs list: pages, live upserts that respect the filter, deletions", () => {
  let list = reduceList(initialList(), { type: "page", answer: { jobs: [{ job_id: "b", outcome: "running" }], next_before: null, total: 1 } });
  list = reduceList(list, { type: "job", summary: { job_id: "c", outcome: "running" } });
  assert.deepEqual(list.jobs.map((j) => j.job_id), ["c", "b"]);
  assert.equal(list.total, 2);
  list = reduceList(list, { type: "job", summary: { job_id: "b", outcome: "success", duration_ms: 5 } });
  assert.equal(list.jobs[1].outcome, "success");
  list = reduceList(list, { type: "job", summary: { job_id: "c", deleted: true } });
  assert.deepEqual(list.jobs.map((j) => j.job_id), ["b"]);

  let failed = reduceList(initialList(), { type: "filter", filter: { status: "error", q: "" } });
  failed = reduceList(failed, { type: "job", summary: { job_id: "x", outcome: "running" } });
  assert.equal(failed.jobs.length, 0, "a running job is not in a list of failed jobs");
  failed = reduceList(failed, { type: "job", summary: { job_id: "y", outcome: "error" } });
  assert.deepEqual(failed.jobs.map((j) => j.job_id), ["y"]);
  assert.equal(matchesFilter({ job_id: "Alpha-1", outcome: "error" }, { q: "alpha", status: "error,cancelled" }), true);
  assert.equal(matchesFilter({ job_id: "beta", outcome: "error" }, { q: "alpha", status: "" }), false);
});

test("a thinned batch still moves the last line to its end", () => {
  const s = fold([{ type: "lines", rows: [line(3, { event: "layer_start", layer: 1, layer_name: "a" })], lastSeq: 900 }]);
  assert.equal(s.lastSeq, 900);
  assert.equal(s.stages.a.status, "running");
});
