import { test } from "node:test";
import assert from "node:assert/strict";
import { formatDuration, formatUtc, clockOf, formatCount, formatTick } from "../../src/runner/page/format.js";
import { parseNdjson } from "../../src/runner/page/api.js";
import { describeLine, lineMatches } from "../../src/runner/page/terminal.js";

test("durations", () => {
  assert.equal(formatDuration(850), "850 ms");
  assert.equal(formatDuration(1234), "1.2 s");
  assert.equal(formatDuration(65000), "1 m 5 s");
  assert.equal(formatDuration(3 * 3600000 + 60000), "3 h 1 m");
  assert.equal(formatDuration(null), "");
  assert.equal(formatDuration(-1), "");
  assert.equal(formatTick(1500, 500), "1.5 s");
});

test("every time is UTC with its zone written", () => {
  assert.equal(formatUtc("2026-12-01T16:47:33.123Z"), "2026-12-01 16:47:33 UTC");
  assert.equal(formatUtc("2026-12-01T17:47:33+01:00"), "2026-12-01 16:47:33 UTC");
  assert.equal(formatUtc("nonsense"), "");
  assert.equal(clockOf("2026-12-01T16:47:33.123Z"), "16:47:33.123");
  assert.equal(formatCount(1000000), "1,000,000");
});

test("NDJSON rows: broken rows are skipped", () => {
  assert.deepEqual(parseNdjson('{"seq":1,"data":{}}\n{broken\n{"seq":2,"data":{}}\n'), [{ seq: 1, data: {} }, { seq: 2, data: {} }]);
});

test("line descriptions say what a lifecycle line means", () => {
  assert.equal(describeLine({ event: "layer_error", layer_name: "a", error: "boom" }).text, "stage failed: boom");
  assert.equal(describeLine({ event: "layer_error", layer_name: "a", error: "cancelled" }).kind, "event-cancel");
  assert.equal(describeLine({ event: "pipeline_complete", status: "error", error: "exit status: 3" }).text, "pipeline error: exit status: 3");
  assert.equal(describeLine({ type: "output", stream: "stderr", text: "x" }).kind, "stderr");
});

test("the live filter matches what /lines filters", () => {
  assert.equal(lineMatches({ event: "log", level: "WARN", layer_name: "a" }, { stage: "a", level: "info" }), true);
  assert.equal(lineMatches({ event: "log", level: "DEBUG" }, { level: "info" }), false);
  assert.equal(lineMatches({ type: "output", text: "x" }, { level: "info" }), false);
  assert.equal(lineMatches({ type: "output", text: "x", layer_name: "a" }, { stage: "a" }), true);
});
