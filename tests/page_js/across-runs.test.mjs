// The reducer on queued, deleted and re-run jobs, trace
// ids and tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { initialJob, initialList, outcomeOf, reduceJob, reduceList } from "../../src/runner/page/state.js";

const ts = (ms) => new Date(Date.UTC(2026, 11, 1, 12, 0, 0) + ms).toISOString();
const line = (seq, data) => ({ seq, data });
const fold = (events, id = "job-1") => events.reduce(reduceJob, initialJob(id));
const queued = {
  job_id: "job-1", state: "queued", status: null, outcome: "queued", created_at: ts(0), queue_position: 2, lines: 0,
  counts: { completed: 0, failed: 0, skipped: 0, running: 0, cancelled: 0 },
};

test("a queued job is queued, then running once it leaves the queue", () => {
  let s = fold([{ type: "detail", detail: { ...queued, stages: [] } }]);
  assert.equal(s.outcome, "queued");
  assert.equal(s.ended, false);
  assert.equal(s.summary.queue_position, 2);
  s = reduceJob(s, { type: "summary", summary: { ...queued, queue_position: 1 } });
  assert.equal(s.summary.queue_position, 1);
  s = reduceJob(s, { type: "summary", summary: { ...queued, state: "running", outcome: "running", started_at: ts(5), lines: 40 } });
  assert.equal(s.outcome, "running");
  // The stream's count is kept: lines 1..40 are still to be folded in.
  assert.equal(s.lastSeq, 0);
  s = reduceJob(s, { type: "lines", rows: [line(1, { event: "pipeline_start", timestamp: ts(5) }), line(2, { event: "layer_start", layer: 1, layer_name: "a", timestamp: ts(6) })] });
  assert.equal(s.stages.a.status, "running");
  // A late "queued" message after the job started changes nothing.
  assert.equal(reduceJob(s, { type: "summary", summary: queued }), s);
  // Messages about other jobs are ignored.
  assert.equal(reduceJob(s, { type: "summary", summary: { ...queued, job_id: "other" } }), s);
});

test("a job cancelled while queued ends cancelled, its known stages not run", () => {
  let s = fold([
    { type: "detail", detail: { ...queued, stages: [] } },
    { type: "known-stages", stages: [{ layer: 1, layer_name: "a" }, { layer: 2, layer_name: "b" }] },
  ]);
  // The list message alone does not end the view: the stream's end does.
  s = reduceJob(s, { type: "summary", summary: { ...queued, state: "finished", outcome: "cancelled", reason: "cancelled", finished_at: ts(9) } });
  assert.equal(s.ended, false);
  assert.equal(s.summary.outcome, "cancelled");
  s = reduceJob(s, { type: "end", summary: { ...queued, state: "finished", outcome: "cancelled", reason: "cancelled", finished_at: ts(9) } });
  assert.equal(s.outcome, "cancelled");
  assert.equal(s.ended, true);
  assert.deepEqual(Object.values(s.stages).map((x) => [x.name, x.status, x.notRun]), [["a", "pending", true], ["b", "pending", true]]);
});

test("a deleted job says so, from the list message or the stream's end", () => {
  const base = fold([{ type: "detail", detail: { ...queued, state: "finished", outcome: "success", status: "success", stages: [] } }]);
  const a = reduceJob(base, { type: "summary", summary: { job_id: "job-1", deleted: true } });
  assert.equal(a.deleted, true);
  assert.equal(a.ended, true);
  const b = reduceJob(base, { type: "deleted" });
  assert.equal(b.deleted, true);
  assert.equal(reduceJob(b, { type: "deleted" }), b);
  // The list drops it, whichever page it is on.
  let list = reduceList(initialList(), { type: "page", answer: { jobs: [{ job_id: "job-1", state: "finished", outcome: "success" }, { job_id: "job-2", state: "queued" }], total: 2 } });
  list = reduceList(list, { type: "job", summary: { job_id: "job-1", deleted: true } });
  assert.deepEqual(list.jobs.map((j) => j.job_id), ["job-2"]);
  assert.equal(list.total, 1);
  assert.equal(reduceList(list, { type: "job", summary: { job_id: "gone", deleted: true } }), list);
});

test("a queued job is in the list under the queued filter; a re-run goes on top", () => {
  let list = reduceList(initialList({ status: "queued" }), { type: "page", answer: { jobs: [], total: 0 } });
  list = reduceList(list, { type: "job", summary: queued });
  assert.deepEqual(list.jobs.map((j) => j.job_id), ["job-1"]);
  assert.equal(outcomeOf({ state: "queued" }), "queued");
  list = reduceList(list, { type: "job", summary: { ...queued, state: "running", outcome: "running" } });
  assert.deepEqual(list.jobs, []);
  let all = reduceList(initialList(), { type: "page", answer: { jobs: [{ job_id: "old", state: "finished", outcome: "error" }], total: 1 } });
  all = reduceList(all, { type: "job", summary: { job_id: "new", state: "queued", outcome: "queued", rerun_of: "old" } });
  assert.deepEqual(all.jobs.map((j) => [j.job_id, j.rerun_of]), [["new", "old"], ["old", undefined]]);
});

test("stage tokens, trace links and span ids come from the detail, not from lines", () => {
  let s = fold([{ type: "lines", rows: [
    line(1, { event: "layer_start", layer: 1, layer_name: "a", timestamp: ts(0) }),
    line(2, { event: "layer_complete", layer: 1, layer_name: "a", duration_ms: 5, timestamp: ts(5), metadata: { tokens_used: 120 } }),
    line(3, { event: "layer_complete", layer: 2, layer_name: "b", duration_ms: 5, timestamp: ts(9), metadata: { tokens_used: "lots" } }),
    line(4, { event: "layer_complete", layer: 3, layer_name: "c", duration_ms: 5, timestamp: ts(9), metadata: { tokens_used: -4 } }),
  ] }]);
  // The runner counts tokens with its configured key: lines alone give none.
  assert.equal(s.stages.a.tokens, null);
  assert.equal(s.stages.b.tokens, null);
  assert.equal(s.stages.c.tokens, null);
  s = reduceJob(s, { type: "detail", detail: {
    job_id: "job-1", state: "finished", outcome: "success", status: "success", lines: 4, trace_id: "0af7651916cd43dd8448eb211c80319c",
    trace_url: "https://t.example/trace/0af7651916cd43dd8448eb211c80319c", tokens: 125,
    stages: [
      { layer: 1, layer_name: "a", status: "complete", duration_ms: 5, tokens: 125, span_id: "b7ad6b7169203331", trace_url: "https://t.example/trace/x?span=b7ad6b7169203331" },
      { layer: 2, layer_name: "b", status: "complete", duration_ms: 5 },
    ],
  } });
  assert.equal(s.stages.a.tokens, 125);
  assert.equal(s.stages.a.spanId, "b7ad6b7169203331");
  assert.equal(s.stages.a.traceUrl, "https://t.example/trace/x?span=b7ad6b7169203331");
  assert.equal(s.stages.b.traceUrl, null);
  assert.equal(s.summary.trace_id, "0af7651916cd43dd8448eb211c80319c");
  assert.equal(s.summary.tokens, 125);
});

