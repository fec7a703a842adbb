// The stream hub: one connection for many watchers, each line once per watcher.
import { test } from "node:test";
import assert from "node:assert/strict";
import { StreamHub } from "../../src/runner/page/hub.js";

function env() {
  const timers = [];
  const sources = [];
  class FakeSource {
    constructor(url) {
      this.url = url;
      this.listeners = {};
      this.closed = false;
      sources.push(this);
    }
    addEventListener(name, f) { this.listeners[name] = f; }
    close() { this.closed = true; }
    emit(name, data) { this.listeners[name]({ data: JSON.stringify(data) }); }
  }
  let healthy = true;
  return {
    timers, sources,
    setHealthy(v) { healthy = v; },
    EventSource: FakeSource,
    fetch: async () => ({ ok: healthy }),
    setTimeout: (f, ms) => { const t = { f, ms, done: false }; timers.push(t); return t; },
    clearTimeout: (t) => { if (t) t.done = true; },
    base: "http://127.0.0.1:1/sub/",
    // Runs every due timer (the fake clock jumps forward).
    async runTimers() {
      for (let round = 0; round < 10; round++) {
        const due = timers.filter((t) => !t.done);
        if (!due.length) return;
        for (const t of due) { t.done = true; await t.f(); }
      }
    },
  };
}

function client() {
  const got = [];
  return { got, post: (m) => got.push(m), lines: () => got.filter((m) => m.type === "lines").flatMap((m) => m.rows.map((r) => m.job + ":" + r.seq)) };
}

test("two watchers of two jobs share one connection with the lowest position", async () => {
  const e = env();
  const hub = new StreamHub(e);
  const a = client();
  const b = client();
  hub.addClient(a);
  hub.addClient(b);
  hub.watch(a, "j1", 5);
  hub.watch(b, "j1", 3);
  hub.watch(b, "j2", 0);
  hub.watchJobs(a, true);
  await e.runTimers();
  const open = e.sources.filter((s) => !s.closed);
  assert.equal(open.length, 1);
  const url = new URL(open[0].url);
  assert.equal(url.pathname, "/sub/api/stream");
  assert.deepEqual(url.searchParams.getAll("job"), ["j1:3", "j2:0"]);
  assert.equal(url.searchParams.get("jobs"), "1");
  const s = open[0];
  s.onopen();
  for (const seq of [4, 5, 6]) s.emit("line", { job: "j1", seq, data: {} });
  s.emit("line", { job: "j1", seq: 6, data: {} }); // a duplicate
  s.emit("line", { job: "j2", seq: 1, data: {} });
  await e.runTimers();
  assert.deepEqual(a.lines(), ["j1:6"], "a held up to 5");
  assert.deepEqual(b.lines(), ["j1:4", "j1:5", "j1:6", "j2:1"]);
  assert.ok(a.got.some((m) => m.type === "conn" && m.state === "live"));
  s.emit("end", { job: "j1", summary: { outcome: "success" } });
  assert.ok(b.got.some((m) => m.type === "end" && m.job === "j1"));
  s.emit("jobs", { job_id: "j3" });
  assert.ok(a.got.some((m) => m.type === "jobs" && m.summary.job_id === "j3"));
  assert.ok(!b.got.some((m) => m.type === "jobs"), "b did not ask for the list");
});

test("a broken stream polls health, then reopens after what each watcher holds", async () => {
  const e = env();
  const hub = new StreamHub(e);
  const a = client();
  hub.addClient(a);
  hub.watch(a, "j1", 0);
  await e.runTimers();
  const first = e.sources[0];
  first.onopen();
  first.emit("line", { job: "j1", seq: 1, data: {} });
  first.emit("line", { job: "j1", seq: 2, data: {} });
  e.setHealthy(false);
  first.onerror();
  assert.equal(first.closed, true);
  assert.ok(a.got.some((m) => m.type === "conn" && m.state === "down"));
  // Unhealthy: the health timer keeps going with a growing delay, no stream.
  const pending = e.timers.filter((t) => !t.done);
  await pending[0].f();
  pending[0].done = true;
  assert.equal(e.sources.length, 1);
  const next = e.timers.filter((t) => !t.done);
  assert.ok(next[0].ms > pending[0].ms, "the delay grows");
  e.setHealthy(true);
  await e.runTimers();
  assert.equal(e.sources.length, 2);
  assert.deepEqual(new URL(e.sources[1].url).searchParams.getAll("job"), ["j1:2"]);
  e.sources[1].onopen();
  assert.equal(a.got.filter((m) => m.type === "conn").pop().state, "live");
});

test("no watchers, no connection; a suspended hub reconnects on resume", async () => {
  const e = env();
  const hub = new StreamHub(e);
  const a = client();
  hub.addClient(a);
  hub.watch(a, "j1", 7);
  await e.runTimers();
  hub.suspend();
  assert.equal(e.sources[0].closed, true);
  hub.resume();
  await e.runTimers();
  assert.equal(e.sources.length, 2);
  hub.unwatch(a, "j1");
  await e.runTimers();
  assert.equal(e.sources[1].closed, true);
  assert.equal(e.sources.length, 2);
});

test("a big batch keeps every structured line and staged output, and the tail", async () => {
  const { thin } = await import("../../src/runner/page/hub.js");
  const rows = [];
  for (let seq = 1; seq <= 5000; seq++) {
    let data = { type: "output", text: "x" };
    if (seq === 10) data = { event: "layer_start", layer_name: "a" };
    if (seq === 20) data = { type: "output", text: "y", layer_name: "a" };
    rows.push({ seq, data });
  }
  const kept = thin(rows);
  assert.equal(kept.length, 402);
  assert.deepEqual(kept.slice(0, 2).map((r) => r.seq), [10, 20]);
  assert.equal(kept[kept.length - 1].seq, 5000);
  assert.equal(thin(rows.slice(0, 10)).length, 10, "small batches are sent whole");
});

test("a deleted job's end is passed on as deleted, with its list message", async () => {
  const e = env();
  const hub = new StreamHub(e);
  const a = client();
  hub.addClient(a);
  hub.watch(a, "j1", 0);
  hub.watchJobs(a, true);
  await e.runTimers();
  const source = e.sources.find((s) => !s.closed);
  source.emit("jobs", { job_id: "j1", deleted: true });
  source.emit("end", { job: "j1", deleted: true });
  await e.runTimers();
  assert.deepEqual(a.got.filter((m) => m.type === "end"), [{ type: "end", job: "j1", summary: null, deleted: true }]);
  assert.deepEqual(a.got.filter((m) => m.type === "jobs").map((m) => m.summary), [{ job_id: "j1", deleted: true }]);
});
