// The runner's live page: wires the pure state (state.js) to the DOM, the
// runner's API (api.js), the shared event stream (stream.js) and the
// virtualised terminal (terminal.js).
//
// Opening a job fetches its detail (stages, counts) and the tail of its
// lines, then follows the stream from the last line held. State changes are
// drawn at most once per animation frame. The stage history (`api/stages`)
// is fetched when the history view opens, when a job view needs it for the
// first time, and when jobs end or are deleted, at most once a second: never
// per line, and never once per job. Text from the pipeline is inserted
// as text, or as HTML only through the ANSI library's escaping (ansi.js).

import * as api from "./api.js";
import { formatCount, formatDuration, formatTick, formatUtc, formatValue, OUTCOME_WORDS, STAGE_WORDS } from "./format.js";
import {
  compareToUsual, DEFAULT_WINDOW, formatCost, formatRate, formatTokens, historyChart, normalizeStats, runnerText,
  safeHttpUrl, statsByName, summaryText, throttle,
} from "./history.js";
import { axisStep, initialJob, initialList, orderedStages, outcomeOf, reduceJob, reduceList, timeline } from "./state.js";
import { connectStream } from "./stream.js";
import { AllLines, FilteredLines, renderRow, VirtualTerminal } from "./terminal.js";

const $ = (id) => document.getElementById(id);
const TAIL = 200;
const CONTEXT = 4;
const TICK_MS = 250;
const LIST_LIMIT = 50;
const RENDER_MS = 200;
const HISTORY_MS = 1000; // the shortest gap between two fetches of the history
const ENDED = ["finished", "interrupted"];
let lastRender = -Infinity; // when render() last ran

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// ---------------------------------------------------------------- the model

const app = {
  job: null, // reduceJob state of the open job
  generation: 0,
  list: initialList(),
  hub: "idle", // the stream's connection state
  down: false,
  frozenNow: null, // the timeline's clock while the runner is unreachable
  stage: null, // the selected stage
  level: "",
  search: { q: "", seqs: [], count: 0, truncated: false, index: -1 },
  lines: null, // AllLines of the open job
  filtered: null, // FilteredLines when a stage or level filter is on
  frame: null,
  lastAnnounced: "",
  connHistory: [],
  tickTimer: null,
  watching: null,
  // Stage statistics over the last `window` finished jobs.
  history: { window: DEFAULT_WINDOW, stats: null, byName: new Map(), error: null, fetches: 0 },
  health: null,
};

// Diagnostics (read by the browser tests): the longest main-thread task the
// page saw, through the Long Tasks API where the browser has it.
const perf = { longestTaskMs: 0, longTasks: 0, readyAtMs: null, tasks: [], longestMessageMs: 0, longestFrameMs: 0 };
try {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      perf.longTasks += 1;
      perf.longestTaskMs = Math.max(perf.longestTaskMs, entry.duration);
      if (perf.tasks.length < 500) perf.tasks.push({ at: Math.round(entry.startTime), ms: Math.round(entry.duration) });
    }
  }).observe({ type: "longtask", buffered: true });
} catch (_) {
  // No Long Tasks API: nothing to record.
}
window.pipelinePage = {
  perf,
  terminalDrawMs: () => terminal.longestDrawMs || 0,
  job: () =>
    app.job && {
      id: app.job.jobId,
      lastSeq: app.job.lastSeq,
      outcome: app.job.outcome,
      ended: app.job.ended,
      total: app.lines ? app.lines.count() : 0,
    },
  historyFetches: () => app.history.fetches,
};

const terminal = new VirtualTerminal($("terminal"), { jobId: () => (app.job ? app.job.jobId : "") });
const stream = connectStream(onStreamMessage, { forceDirect: /[?&]stream=direct\b/.test(location.search) });
document.documentElement.dataset.stream = stream.kind;

function dispatch(event) {
  if (!app.job) return;
  const next = reduceJob(app.job, event);
  if (next === app.job) return;
  app.job = next;
  scheduleRender();
}

// One render per animation frame, and while lines stream in at most one
// every RENDER_MS: the header's counts need not move 60 times a second.
function scheduleRender() {
  if (app.frame !== null) return;
  const frame = () => {
    app.frame = requestAnimationFrame(() => {
      app.frame = null;
      const started = performance.now();
      lastRender = started;
      render();
      perf.longestFrameMs = Math.max(perf.longestFrameMs, performance.now() - started);
    });
  };
  const wait = lastRender + RENDER_MS - performance.now();
  if (wait > 0) app.frame = setTimeout(frame, wait);
  else frame();
}

// ---------------------------------------------------------------- opening a job

async function openJob(id) {
  closeJob();
  const generation = ++app.generation;
  app.job = initialJob(id);
  app.stage = null;
  app.search = { q: "", seqs: [], count: 0, truncated: false, index: -1 };
  app.connHistory = [];
  $("search-q").value = "";
  app.lines = new AllLines(
    (from, limit) => api.jobLines(id, { from, limit }),
    () => terminal.schedule()
  );
  applyFilters();
  $("empty-view").hidden = true;
  $("job-view").hidden = false;
  $("download").href = api.logUrl(id);
  $("download").setAttribute("download", id + ".jsonl");
  app.tickTimer = setInterval(() => {
    if (app.job && !app.job.ended && !app.down) renderTimeline();
  }, TICK_MS);
  if (app.history.stats === null) requestHistory();
  render();
  await loadJob(generation);
}

// Detail, tail, stage start times, then the stream from the last line held.
async function loadJob(generation) {
  const id = app.job.jobId;
  let detail;
  try {
    detail = await api.jobDetail(id);
  } catch (err) {
    if (generation !== app.generation) return;
    if (err instanceof api.ApiError && (err.status === 404 || err.status === 400)) {
      dispatch({ type: "not-found" });
      document.documentElement.dataset.ready = "1";
    } else {
      app.job = { ...app.job, loadError: err.message };
      scheduleRender(); // retried when the stream is live again
    }
    return;
  }
  if (generation !== app.generation) return;
  dispatch({ type: "detail", detail });
  const lines = typeof detail.lines === "number" ? detail.lines : 0;
  app.lines.setTotal(lines);
  const tail = lines > 0 ? api.jobLines(id, { from: Math.max(1, lines - TAIL + 1), limit: TAIL }) : null;
  if (!app.job.ended) {
    app.watching = id;
    stream.watch(id, lines);
  }
  try {
    if (tail) app.lines.put((await tail).rows);
  } catch (_) {
    // Fetched again when scrolled into view.
  }
  if (generation !== app.generation) return;
  terminal.schedule();
  applyRoute(generation);
  // Interactive once the tail is drawn (the frame after the terminal's).
  requestAnimationFrame(() =>
    requestAnimationFrame(() => {
      if (generation !== app.generation) return;
      perf.readyAtMs = performance.now();
      document.documentElement.dataset.ready = "1";
    })
  );
  loadStageStarts(generation);
  dispatchKnownStages();
  if (app.job.ended) loadFailure(generation);
}

// The timeline needs each stage's start: read from its layer_start line
// when the detail does not carry it.
function loadStageStarts(generation) {
  const id = app.job.jobId;
  for (const s of Object.values(app.job.stages)) {
    if (s.startMs !== null || typeof s.startedSeq !== "number") continue;
    api
      .jobLines(id, { from: s.startedSeq, limit: 1 })
      .then(({ rows }) => {
        const t = rows[0] && rows[0].data ? Date.parse(rows[0].data.timestamp) : NaN;
        if (generation === app.generation && isFinite(t)) dispatch({ type: "stage-start", name: s.name, startMs: t });
      })
      .catch(() => {});
  }
}

function closeJob() {
  app.generation += 1;
  if (app.watching) stream.unwatch(app.watching);
  app.watching = null;
  if (app.tickTimer) clearInterval(app.tickTimer);
  app.tickTimer = null;
  app.job = null;
  app.filtered = null;
  delete document.documentElement.dataset.ready;
}

function showEmpty() {
  closeJob();
  $("job-view").hidden = true;
  $("empty-view").hidden = false;
  lastHistory = null;
  render();
}

// ---------------------------------------------------------------- the stream

function onStreamMessage(msg) {
  const started = performance.now();
  handleStreamMessage(msg);
  perf.longestMessageMs = Math.max(perf.longestMessageMs, performance.now() - started);
}

function handleStreamMessage(msg) {
  if (!msg || typeof msg !== "object") return;
  switch (msg.type) {
    case "conn": {
      const wasDown = app.down;
      app.hub = msg.state;
      if (msg.state === "down") {
        if (!app.down) app.frozenNow = Date.now();
        app.down = true;
      } else if (msg.state === "live" || msg.state === "idle") {
        app.down = false;
        app.frozenNow = null;
        if (wasDown) recovered();
      }
      scheduleRender();
      break;
    }
    case "lines":
      if (app.job && msg.job === app.job.jobId) {
        app.lines.put(msg.rows);
        if (typeof msg.lastSeq === "number") app.lines.setTotal(msg.lastSeq);
        if (app.filtered) app.filtered.put(msg.rows, msg.lastSeq);
        dispatch({ type: "lines", rows: msg.rows, lastSeq: msg.lastSeq });
        terminal.schedule();
      }
      break;
    case "end":
      if (msg.deleted) {
        jobDeleted(msg.job);
        break;
      }
      if (app.job && msg.job === app.job.jobId) {
        // The usual durations now count this run too.
        requestHistory();
        dispatch({ type: "end", summary: msg.summary });
        app.watching = null;
        syncTotal(msg.summary);
        const generation = app.generation;
        // The final word on stages (metadata, errors) and the failure's context.
        api
          .jobDetail(msg.job)
          .then((detail) => {
            if (generation !== app.generation) return;
            dispatch({ type: "detail", detail });
            syncTotal(detail);
            loadFailure(generation);
          })
          .catch(() => {});
      }
      break;
    case "jobs":
      onJobMessage(msg.summary);
      break;
    default:
      break;
  }
}

// A `jobs` message: a job was created, changed state, or was deleted.
function onJobMessage(summary) {
  if (!summary || typeof summary.job_id !== "string") return;
  const before = app.list.jobs.find((j) => j.job_id === summary.job_id);
  app.list = reduceList(app.list, { type: "job", summary });
  requestHealth();
  if (summary.deleted) {
    jobDeleted(summary.job_id);
    return;
  }
  if (ENDED.includes(summary.state)) requestHistory();
  const open = app.job;
  if (open && summary.job_id === open.jobId) {
    dispatch({ type: "summary", summary });
    // A job that ended without its stream (cancelled while queued, say):
    // the detail has the final word.
    if (ENDED.includes(summary.state) && !open.ended) refreshDetail();
  } else if (open && open.outcome === "queued" && summary.state !== "queued") {
    refreshDetail(); // the open job may have moved up the queue
  }
  // Other queued jobs moved up when one left the queue.
  const left = before && outcomeOf(before) === "queued" && summary.state !== "queued";
  if (left && app.list.jobs.some((j) => outcomeOf(j) === "queued")) refreshList();
  scheduleRender();
}

// A job is gone: out of the list, and the open view says so.
function jobDeleted(id) {
  app.list = reduceList(app.list, { type: "job", summary: { job_id: id, deleted: true } });
  requestHistory();
  if (app.job && app.job.jobId === id) {
    if (app.watching === id) stream.unwatch(id);
    app.watching = null;
    dispatch({ type: "deleted" });
  }
  scheduleRender();
}

// At most one detail fetch in flight for the open job, the last one winning.
let detailTimer = null;
function refreshDetail() {
  if (detailTimer !== null) return;
  detailTimer = setTimeout(() => {
    detailTimer = null;
    if (!app.job || app.job.deleted) return;
    const generation = app.generation;
    api
      .jobDetail(app.job.jobId)
      .then((detail) => {
        if (generation !== app.generation) return;
        dispatch({ type: "detail", detail });
        syncTotal(detail);
        if (app.job.ended && app.watching) {
          stream.unwatch(app.watching);
          app.watching = null;
        }
      })
      .catch(() => {});
  }, 300);
}

let listTimer = null;
function refreshList() {
  if (listTimer !== null) return;
  listTimer = setTimeout(() => {
    listTimer = null;
    loadList();
  }, 500);
}

// ---------------------------------------------------------------- history and health

const requestHistory = throttle(HISTORY_MS, async () => {
  const h = app.history;
  const size = h.window;
  h.fetches += 1;
  try {
    const answer = await api.stageStats(size);
    if (size !== app.history.window) return;
    const stats = normalizeStats(answer);
    app.history = { ...app.history, stats, byName: statsByName(stats), error: null };
    dispatchKnownStages();
  } catch (err) {
    app.history = { ...app.history, error: err.message };
  }
  scheduleRender();
});

const requestHealth = throttle(HISTORY_MS, async () => {
  try {
    app.health = await api.health();
  } catch (_) {
    // The banner says when the runner is unreachable.
  }
  scheduleRender();
});

// Stages seen in recent jobs show as pending in a job that has not reached them.
function dispatchKnownStages() {
  const stats = app.history.stats;
  if (!app.job || !stats || !app.job.loaded) return;
  dispatch({ type: "known-stages", stages: stats.stages.map((s) => ({ layer_name: s.name, layer: s.layer })) });
}

// The terminal covers every line a summary counts (any it lacks are
// fetched when drawn).
function syncTotal(summary) {
  if (app.lines && summary && typeof summary.lines === "number") {
    app.lines.setTotal(summary.lines);
    terminal.schedule(true);
  }
}

// Back from "unreachable": clear stale errors, reload what failed to load.
function recovered() {
  $("run-error").hidden = true;
  $("run-error").textContent = "";
  loadList();
  requestHealth();
  if (app.history.stats !== null || !app.job) requestHistory();
  if (app.job && (app.job.loadError || !app.job.loaded)) {
    app.job = { ...app.job, loadError: null };
    loadJob(app.generation);
  } else if (app.job && !app.job.ended) {
    // Catch up with anything the stream's replay does not say (e.g. the
    // detail's counts); the stream resumes after the last line held.
    const generation = app.generation;
    api
      .jobDetail(app.job.jobId)
      .then((detail) => {
        if (generation !== app.generation) return;
        dispatch({ type: "detail", detail });
        syncTotal(detail);
      })
      .catch(() => {});
  }
}

// ---------------------------------------------------------------- routing

function parseRoute() {
  const m = /^#\/jobs\/([^/]+)(?:\/(lines|stages)\/(.+))?$/.exec(location.hash);
  if (!m) return null;
  const decode = (s) => {
    try {
      return decodeURIComponent(s);
    } catch (_) {
      return s;
    }
  };
  return { id: decode(m[1]), kind: m[2] || null, arg: m[3] ? decode(m[3]) : null };
}

function route() {
  const r = parseRoute();
  if (!r) {
    // The home view is the stage history: fetched each time it opens.
    requestHistory();
    if (app.job) showEmpty();
    else render();
    return;
  }
  if (!app.job || app.job.jobId !== r.id) openJob(r.id);
  else applyRoute(app.generation);
}

function applyRoute(generation) {
  const r = parseRoute();
  if (!r || !app.job || r.id !== app.job.jobId || generation !== app.generation) return;
  if (r.kind === "lines") {
    const seq = Number(r.arg);
    if (app.stage !== null || app.level) {
      app.stage = null;
      app.level = "";
      $("level").value = "";
      applyFilters();
    }
    if (isFinite(seq) && seq >= 1) {
      requestAnimationFrame(() => terminal.scrollToSeq(Math.min(seq, Math.max(1, app.lines.count()))));
    }
  } else if (r.kind === "stages") {
    if (app.stage !== r.arg) selectStage(r.arg, false);
  } else if (app.stage !== null) {
    selectStage(null, false);
  }
}

function setHash(hash) {
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

// ---------------------------------------------------------------- filters and search

function applyFilters() {
  const job = app.job;
  if (!job) return;
  const stage = app.stage;
  const level = app.level || null;
  if (stage === null && level === null) {
    app.filtered = null;
    terminal.setSource(app.lines, job.ended ? "This job printed nothing." : "No lines yet.");
  } else {
    const id = job.jobId;
    app.filtered = new FilteredLines(
      (from, limit) => api.jobLines(id, { from, limit, stage, level }),
      { stage, level },
      () => terminal.schedule()
    );
    const what = [stage ? "stage " + stage : null, level ? "level " + level + " and above" : null].filter(Boolean);
    terminal.setSource(app.filtered, "No lines for " + what.join(", ") + ".");
  }
  const parts = [];
  if (stage) parts.push("stage " + stage);
  if (level) parts.push(level + "+ log lines");
  $("terminal-filter").textContent = parts.length ? "showing " + parts.join(", ") : "";
  $("terminal").dataset.filter = stage || "";
  terminal.marks = new Set(app.search.seqs);
}

function selectStage(name, updateHash = true) {
  if (!app.job) return;
  app.stage = name;
  applyFilters();
  if (updateHash) {
    const base = "#/jobs/" + encodeURIComponent(app.job.jobId);
    setHash(name === null ? base : base + "/stages/" + encodeURIComponent(name));
  }
  loadStageContext(app.generation);
  scheduleRender();
}

async function runSearch() {
  if (!app.job) return;
  const q = $("search-q").value;
  if (!q) {
    app.search = { q: "", seqs: [], count: 0, truncated: false, index: -1 };
    terminal.marks = new Set();
    terminal.schedule();
    renderSearch();
    return;
  }
  const generation = app.generation;
  $("search-count").textContent = "searching\u2026";
  try {
    const answer = await api.searchJob(app.job.jobId, q, { level: app.level || null });
    if (generation !== app.generation) return;
    const seqs = Array.isArray(answer.seqs) ? answer.seqs : [];
    app.search = { q, seqs, count: answer.count || seqs.length, truncated: !!answer.truncated, index: seqs.length ? 0 : -1 };
    terminal.marks = new Set(seqs);
    if (app.filtered && app.stage === null && !app.level) applyFilters();
    jumpToMatch();
  } catch (err) {
    $("search-count").textContent = "search failed: " + err.message;
  }
}

function jumpToMatch() {
  const { seqs, index } = app.search;
  renderSearch();
  if (index < 0 || !seqs.length) return;
  // Matches are numbered lines of the whole log: show them unfiltered.
  if (app.filtered && app.filtered.indexOfSeq(seqs[index]) === -1) {
    app.stage = null;
    app.level = "";
    $("level").value = "";
    applyFilters();
    terminal.marks = new Set(seqs);
  }
  terminal.scrollToSeq(seqs[index]);
}

function moveMatch(step) {
  const n = app.search.seqs.length;
  if (!n) return;
  app.search.index = (app.search.index + step + n) % n;
  jumpToMatch();
}

function renderSearch() {
  const { q, seqs, count, truncated, index } = app.search;
  const box = $("search-count");
  if (!q) box.textContent = "";
  else if (!count) box.textContent = "no matches";
  else box.textContent = index + 1 + " of " + formatCount(count) + (truncated ? " (first " + formatCount(seqs.length) + " reachable)" : "");
  box.dataset.count = String(count);
}

// ---------------------------------------------------------------- failure context

// Lines around a stage's end (its layer_error), fetched from the runner.
async function contextLines(id, seq) {
  const from = Math.max(1, seq - CONTEXT);
  const { rows } = await api.jobLines(id, { from, limit: CONTEXT * 2 + 1 });
  return rows;
}

function fillContext(box, rows, id, markSeq) {
  const nodes = rows.map((row) => {
    const node = document.createElement("div");
    renderRow(node, row, id);
    if (row.seq === markSeq) node.classList.add("current");
    return node;
  });
  box.replaceChildren(...nodes);
}

async function loadFailure(generation) {
  const job = app.job;
  if (!job) return;
  const failed = orderedStages(job).find((s) => s.status === "error");
  const box = $("failure-lines");
  if (!failed || typeof failed.endedSeq !== "number") {
    box.replaceChildren();
    return;
  }
  try {
    const rows = await contextLines(job.jobId, failed.endedSeq);
    if (generation === app.generation) fillContext(box, rows, job.jobId, failed.endedSeq);
  } catch (_) {
    // The header still says why; the context comes with the next load.
  }
}

async function loadStageContext(generation) {
  const job = app.job;
  const box = $("stage-detail-lines");
  box.replaceChildren();
  if (!job || app.stage === null) return;
  const stage = job.stages[app.stage];
  if (!stage || (stage.status !== "error" && stage.status !== "cancelled") || typeof stage.endedSeq !== "number") return;
  try {
    const rows = await contextLines(job.jobId, stage.endedSeq);
    if (generation === app.generation && app.stage === stage.name) fillContext(box, rows, job.jobId, stage.endedSeq);
  } catch (_) {
    // Shown again when the stage is selected again.
  }
}

// ---------------------------------------------------------------- rendering

function render() {
  renderConnection();
  renderList();
  renderJob();
  renderHistory();
  renderTitle();
  $("runner-info").textContent = runnerText(app.health);
  // For tests and tools: whether the usual durations shown are up to date.
  document.documentElement.dataset.history = requestHistory.busy() ? "pending" : "fresh";
}

function connectionState() {
  const job = app.job;
  if (app.down) return "down";
  if (job && job.deleted) return "deleted";
  if (job && job.notFound) return "unavailable";
  if (job && job.ended) return "finished";
  if (job && !job.loaded) return job.loadError ? "down" : "connecting";
  return app.hub;
}

function renderConnection() {
  const state = connectionState();
  const node = $("connection");
  if (node.dataset.state !== state) {
    node.dataset.state = state;
    node.textContent = { down: "unreachable", idle: "idle", live: "live", connecting: "connecting", finished: "finished", unavailable: "no such job", deleted: "deleted" }[state] || state;
  }
  if (app.connHistory[app.connHistory.length - 1] !== state) app.connHistory.push(state);
  node.dataset.history = app.connHistory.join(" ");
  $("banner").hidden = !app.down && !(app.job && app.job.loadError);
}

function renderTitle() {
  const job = app.job;
  let outcome = "idle";
  let title = "Pipeline runner";
  if (job && job.notFound) {
    outcome = "unknown";
    title = "No such job \u2014 Pipeline runner";
  } else if (job && job.deleted) {
    outcome = "unknown";
    title = "Deleted job \u2014 Pipeline runner";
  } else if (job) {
    outcome = job.outcome;
    title = (OUTCOME_WORDS[job.outcome] || job.outcome) + " \u00b7 " + job.jobId + " \u2014 Pipeline runner";
  }
  if (document.title !== title) document.title = title;
  const icon = "favicon-" + (["queued", "running", "success", "partial", "error", "cancelled", "interrupted"].includes(outcome) ? outcome : "idle") + ".svg";
  const link = $("favicon");
  if (link.getAttribute("href") !== icon) link.setAttribute("href", icon);
}

function announce(text) {
  if (!text || text === app.lastAnnounced) return;
  app.lastAnnounced = text;
  $("announcer").textContent = text;
}

function renderJob() {
  const job = app.job;
  if (!job) {
    $("job-view").hidden = true;
    $("empty-view").hidden = false;
    return;
  }
  $("job-id").textContent = job.jobId;
  const pill = $("job-outcome");
  const gone = job.notFound || job.deleted;
  const word = job.deleted ? "deleted" : job.notFound ? "no such job" : OUTCOME_WORDS[job.outcome] || job.outcome;
  pill.textContent = word;
  pill.dataset.status = gone ? "unknown" : job.outcome;

  const reason = $("job-reason");
  let reasonText = null;
  if (job.deleted) reasonText = "This job was deleted: its log is gone (its stages still count in the history).";
  else if (job.notFound) reasonText = "No such job: the runner does not know " + job.jobId + ".";
  else if (job.loadError) reasonText = "Could not load the job: " + job.loadError;
  else if (job.outcome === "cancelled") reasonText = job.reason && job.reason !== "cancelled" ? job.reason : "Cancelled on request.";
  else if (job.reason && job.outcome !== "success") reasonText = job.reason;
  reason.hidden = reasonText === null;
  reason.textContent = reasonText || "";
  reason.dataset.outcome = job.outcome;

  const s = job.summary || {};
  const queued = job.outcome === "queued" && !job.ended;
  const queueLine = $("job-queue");
  queueLine.hidden = !queued || gone;
  if (queued) {
    const pos = typeof s.queue_position === "number" ? "position " + formatCount(s.queue_position) + " in the queue" : "in the queue";
    queueLine.textContent = "Waiting for a free slot: " + pos + ". It starts when a running job ends; Cancel takes it out of the queue.";
    queueLine.dataset.position = typeof s.queue_position === "number" ? String(s.queue_position) : "";
  }
  const parts = [];
  if (s.created_at && (!s.started_at || queued)) parts.push("created " + formatUtc(s.created_at));
  if (s.started_at) parts.push("started " + formatUtc(s.started_at));
  const duration = typeof s.duration_ms === "number" ? s.duration_ms : job.pipelineDurationMs;
  if (job.ended && typeof duration === "number") parts.push(formatDuration(duration));
  else if (!job.ended && s.started_at) parts.push(formatDuration((app.frozenNow || Date.now()) - Date.parse(s.started_at)) + " so far");
  if (!queued) parts.push(formatCount(Math.max(job.lastSeq, app.lines ? app.lines.count() : 0)) + " lines");
  if (typeof s.exit_code === "number") parts.push("exit code " + s.exit_code);
  const tokens = typeof s.tokens === "number" ? s.tokens : jobTokens(job);
  if (tokens !== null) parts.push(formatTokens(tokens));
  if (typeof s.cost === "number") parts.push("est. cost " + formatCost(s.cost));
  $("job-summary").textContent = job.loaded && !gone ? parts.join(" \u00b7 ") : "";

  const rerunOf = typeof s.rerun_of === "string" && s.rerun_of ? s.rerun_of : null;
  $("job-rerun-of").hidden = !rerunOf || gone;
  if (rerunOf) {
    const link = $("job-rerun-link");
    link.textContent = rerunOf;
    link.href = "#/jobs/" + encodeURIComponent(rerunOf);
  }
  renderTrace(job, gone);

  const cancellable = job.loaded && !job.ended && !gone && (job.outcome === "running" || job.outcome === "queued" || job.outcome === "unknown");
  const cancel = $("cancel");
  cancel.hidden = !cancellable;
  cancel.textContent = queued ? "Cancel (leave the queue)" : "Cancel";
  const finished = job.loaded && job.ended && !gone;
  $("rerun").hidden = !finished;
  $("delete").hidden = !finished;
  $("download").hidden = !job.loaded || gone || queued;
  document.querySelector(".terminal-panel").hidden = gone;
  document.querySelector(".stages-panel").hidden = gone;

  if (job.deleted) announce("Job " + job.jobId + " was deleted");
  else if (job.loaded && !job.notFound) {
    if (job.ended) announce("Job " + job.jobId + " " + word + (reasonText ? ": " + reasonText : ""));
    else announce("Job " + job.jobId + " " + word);
  }

  renderStages();
  renderFailure();
  renderStageDetail();
  renderTimeline();
  const total = app.lines ? app.lines.count() : 0;
  $("terminal-position").textContent = app.filtered ? formatCount(app.filtered.count()) + " matching lines loaded" : formatCount(total) + " lines";
}

// The sum of the stages' tokens, while the runner's own total is not known.
function jobTokens(job) {
  let total = null;
  for (const st of Object.values(job.stages)) if (st.tokens !== null) total = (total || 0) + st.tokens;
  return total;
}

function renderTrace(job, gone) {
  const s = job.summary || {};
  const id = typeof s.trace_id === "string" && /^[0-9a-f]{32}$/.test(s.trace_id) ? s.trace_id : null;
  const box = $("job-trace");
  box.hidden = !id || gone;
  if (!id) return;
  if ($("trace-id").textContent !== id) {
    $("trace-id").textContent = id;
    $("trace-copied").textContent = "";
  }
  const url = safeHttpUrl(s.trace_url, location.href);
  const link = $("trace-link");
  link.hidden = !url;
  if (url && link.href !== url) link.href = url;
}

async function copyTraceId() {
  const code = $("trace-id");
  const text = code.textContent;
  const note = $("trace-copied");
  try {
    await navigator.clipboard.writeText(text);
    note.textContent = "Copied";
  } catch (_) {
    // No clipboard access: select it for Ctrl+C.
    const range = document.createRange();
    range.selectNodeContents(code);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    note.textContent = "Selected: press Ctrl+C to copy";
  }
}

function renderFailure() {
  const job = app.job;
  const failed = orderedStages(job).find((s) => s.status === "error");
  const box = $("failure");
  if (!failed || !job.ended || job.deleted) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  $("failure-title").textContent = failed.name + " failed";
  $("failure-error").textContent = failed.error || "(no error text)";
}

const stageRows = new Map();

function stageRow(name) {
  let row = stageRows.get(name);
  if (row) return row;
  const li = el("li", "stage");
  const button = el("button", "stage-button");
  button.type = "button";
  button.dataset.stage = name;
  const icon = el("span", "stage-icon");
  icon.setAttribute("aria-hidden", "true");
  const layer = el("span", "stage-layer");
  const label = el("span", "stage-name", name);
  const duration = el("span", "stage-duration");
  const status = el("span", "stage-status");
  button.append(icon, layer, label, status, duration);
  button.addEventListener("click", () => selectStage(app.stage === name ? null : name));
  const track = el("div", "track");
  track.setAttribute("aria-hidden", "true");
  const bar = el("div", "bar");
  const barLabel = el("span", "bar-label");
  track.append(bar, barLabel);
  const error = el("p", "stage-error");
  const extra = el("p", "stage-extra");
  const usual = el("span", "stage-usual");
  const tokens = el("span", "stage-tokens");
  const trace = el("a", "stage-trace", "trace");
  trace.target = "_blank";
  trace.rel = "noopener noreferrer";
  trace.setAttribute("aria-label", "Open the trace of stage " + name);
  extra.append(usual, tokens, trace);
  li.append(button, track, error, extra);
  row = { li, button, layer, duration, status, track, bar, barLabel, error, extra, usual, tokens, trace, announced: null };
  stageRows.set(name, row);
  return row;
}

function renderStages() {
  const job = app.job;
  const stages = orderedStages(job);
  const list = $("stages");
  const wanted = stages.map((s) => stageRow(s.name).li);
  const current = [...list.children];
  if (wanted.length !== current.length || wanted.some((li, i) => li !== current[i])) list.replaceChildren(...wanted);
  for (const s of stages) {
    const row = stageRow(s.name);
    const cls = s.status + (s.notRun ? " not-run" : "");
    if (row.li.className !== "stage " + cls) {
      row.li.className = "stage " + cls;
      row.button.className = "stage-button " + cls;
    }
    row.button.dataset.status = s.status;
    row.button.dataset.history = s.history.join(" ");
    row.button.setAttribute("aria-pressed", String(app.stage === s.name));
    row.layer.textContent = s.layer === null ? "" : "L" + s.layer;
    const duration = formatDuration(s.durationMs);
    row.duration.textContent = duration;
    const word = s.notRun ? "did not run" : STAGE_WORDS[s.status] || s.status;
    row.status.textContent = word;
    const name = [s.name + ": " + word];
    if (duration) name.push(duration);
    const cmp = s.status === "complete" || s.status === "error" ? usualOf(s) : null;
    if (cmp) name.push(cmp.label);
    if (s.tokens !== null) name.push(formatTokens(s.tokens));
    if (s.error && s.status !== "complete") name.push(s.error);
    row.usual.textContent = cmp ? cmp.text : "";
    row.usual.dataset.level = cmp ? cmp.level : "";
    row.usual.title = cmp ? cmp.label : "";
    row.button.dataset.usual = cmp ? cmp.text : "";
    row.tokens.textContent = s.tokens !== null ? formatTokens(s.tokens) : "";
    const traceUrl = safeHttpUrl(s.traceUrl, location.href);
    row.trace.hidden = !traceUrl;
    if (traceUrl && row.trace.href !== traceUrl) row.trace.href = traceUrl;
    row.extra.hidden = !cmp && s.tokens === null && !traceUrl;
    row.button.setAttribute("aria-label", name.join(", "));
    row.button.title = name.join(" \u00b7 ");
    // "cancelled" is already the status word; any other error text shows.
    const showError = (s.status === "error" || s.status === "cancelled") && s.error && s.error !== "cancelled";
    row.error.hidden = !showError;
    row.error.textContent = showError ? s.error : "";
    if (row.announced !== null && row.announced !== s.status && s.status !== "pending") {
      announce("Stage " + s.name + " " + word);
    }
    row.announced = s.status;
  }
  $("no-stages").hidden = stages.length > 0;
  $("no-stages").textContent = job.ended ? "This job ran no stages." : "No stages yet.";
}

// This run of a stage against its usual (p50) duration over the history.
function usualOf(stage) {
  const stats = app.history.byName.get(stage.name);
  return stats ? compareToUsual(stage.durationMs, stats.p50) : null;
}

function renderTimeline() {
  const job = app.job;
  if (!job) return;
  const now = app.frozenNow || Date.now();
  const t = timeline(job, job.ended ? job.pipelineEnd || now : now);
  const axis = $("axis");
  const step = t.span > 1 ? axisStep(t.span) : 0;
  if (step) {
    const labels = [];
    for (let ms = 0; ms <= t.span; ms += step) {
      const at = (ms / t.span) * 100;
      const label = el("span", "tick", formatTick(ms, step));
      label.style.left = at + "%";
      if (at > 88) label.classList.add("end");
      labels.push(label);
    }
    // Fewer labels when they would collide on a narrow track.
    const width = axis.clientWidth || 600;
    const room = Math.max(1, Math.floor(width / 56));
    const every = Math.ceil(labels.length / room);
    axis.replaceChildren(...labels.filter((_, i) => i % every === 0));
  } else {
    axis.replaceChildren();
  }
  for (const s of Object.values(job.stages)) {
    const row = stageRow(s.name);
    const bar = t.bars[s.name];
    if (!bar) {
      row.bar.hidden = true;
      row.barLabel.textContent = s.status === "skipped" ? "skipped" : s.notRun ? "did not run" : "";
      row.barLabel.className = "bar-label";
      row.barLabel.style.left = "0%";
      continue;
    }
    row.bar.hidden = false;
    row.bar.style.left = bar.left + "%";
    row.bar.style.width = bar.width + "%";
    row.barLabel.textContent = formatDuration(bar.lengthMs);
    const end = bar.left + bar.width;
    const place = 100 - end >= 20 ? "after" : bar.left >= 20 ? "before" : "inside";
    row.barLabel.className = "bar-label " + place;
    row.barLabel.style.left = (place === "before" ? bar.left : end) + "%";
  }
}

function renderStageDetail() {
  const job = app.job;
  const box = $("stage-detail");
  const stage = app.stage !== null && !job.deleted ? job.stages[app.stage] : null;
  if (!stage) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.dataset.stage = stage.name;
  $("stage-detail-title").textContent = stage.name;
  const fields = [
    ["status", stage.notRun ? "did not run" : STAGE_WORDS[stage.status] || stage.status],
    ["layer", stage.layer === null ? "" : String(stage.layer)],
    ["duration", formatDuration(stage.durationMs)],
  ];
  const stats = app.history.byName.get(stage.name);
  if (stats) {
    const cmp = compareToUsual(stage.durationMs, stats.p50);
    if (cmp) fields.push(["against usual", cmp.text]);
    fields.push(["history", summaryText(stats)]);
  }
  if (stage.error) fields.push(["error", stage.error]);
  if (stage.tokens !== null) fields.push(["tokens", formatCount(stage.tokens)]);
  if (stage.spanId) fields.push(["span id", stage.spanId]);
  for (const [k, v] of Object.entries(stage.metadata || {})) fields.push([k, formatValue(v)]);
  const nodes = [];
  for (const [k, v] of fields) {
    if (v === "") continue;
    const dt = el("dt", null, k);
    const dd = el("dd", null, v);
    dd.dataset.field = k;
    nodes.push(dt, dd);
  }
  const traceUrl = safeHttpUrl(stage.traceUrl, location.href);
  if (traceUrl) {
    const dd = el("dd");
    dd.dataset.field = "trace";
    const a = el("a", null, "open the stage's span");
    a.href = traceUrl;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    dd.appendChild(a);
    nodes.push(el("dt", null, "trace"), dd);
  }
  $("stage-detail-fields").replaceChildren(...nodes);
}

// ---------------------------------------------------------------- stage history

const historyRows = new Map();
let lastHistory = null; // what renderHistory last drew

function historyRow(name) {
  let row = historyRows.get(name);
  if (row) return row;
  const tr = el("tr", "history-row");
  tr.dataset.stage = name;
  const head = el("th", "history-stage");
  head.scope = "row";
  const layer = el("span", "stage-layer");
  const label = el("span", "stage-name", name);
  head.append(layer, label);
  const cell = (cls, heading) => {
    const td = el("td", cls);
    td.dataset.label = heading;
    return td;
  };
  const chart = cell("history-chart-cell", "Recent runs");
  const runs = cell("num history-runs", "Runs");
  const p50 = cell("num history-p50", "p50");
  const p95 = cell("num history-p95", "p95");
  const failures = cell("num history-failures", "Failures");
  const tokens = cell("num history-tokens", "Tokens");
  tr.append(head, chart, runs, p50, p95, failures, tokens);
  row = { tr, layer, chart, runs, p50, p95, failures, tokens, svg: "" };
  historyRows.set(name, row);
  return row;
}

function renderHistory() {
  const view = $("empty-view");
  if (view.hidden) return;
  const { stats, error, window } = app.history;
  // Drawn again only when a new answer (or window, or error) came in.
  const key = [stats, error, window];
  if (lastHistory && key.every((v, i) => v === lastHistory[i])) return;
  lastHistory = key;
  const stages = stats ? stats.stages : [];
  $("empty-hint").hidden = !!stats && stats.jobs > 0;
  $("history-error").hidden = !error;
  $("history-error").textContent = error ? "Could not load the stage history: " + error : "";
  $("history-jobs").textContent = stats ? formatCount(stats.jobs) + (stats.jobs === 1 ? " job" : " jobs") + " in the window" : "loading\u2026";
  $("history-window").value = String(window);
  const table = $("history-table");
  table.hidden = stages.length === 0;
  $("history-legend").hidden = stages.length === 0;
  $("history-empty").hidden = !stats || stages.length > 0;
  const rows = stages.map((st) => {
    const row = historyRow(st.name);
    row.layer.textContent = st.layer === null ? "" : "L" + st.layer;
    // The chart is escaped markup (history.js); redrawn only when it changes.
    const svg = historyChart(st);
    if (svg !== row.svg) {
      row.chart.innerHTML = svg;
      row.svg = svg;
    }
    row.runs.textContent = formatCount(st.runs);
    row.p50.textContent = st.p50 === null ? "\u2013" : formatDuration(st.p50);
    row.p95.textContent = st.p95 === null ? "\u2013" : formatDuration(st.p95);
    const failed = st.error + st.cancelled;
    row.failures.textContent = formatRate(st.failureRate) + (failed ? " (" + formatCount(failed) + ")" : "");
    row.failures.dataset.level = st.failureRate >= 0.25 ? "high" : st.failureRate > 0 ? "some" : "none";
    row.tokens.textContent = st.tokens === null ? "\u2013" : formatCount(st.tokens);
    return row.tr;
  });
  const body = $("history-rows");
  const current = [...body.children];
  if (rows.length !== current.length || rows.some((tr, i) => tr !== current[i])) body.replaceChildren(...rows);
}

// ---------------------------------------------------------------- jobs list

async function loadList(before = app.list.before || null) {
  const filter = app.list.filter;
  try {
    const answer = await api.listJobs({ limit: LIST_LIMIT, before, status: filter.status, q: filter.q });
    if (filter !== app.list.filter) return;
    app.list = reduceList(app.list, { type: "page", answer, before });
    scheduleRender();
  } catch (err) {
    // The banner says when the runner is unreachable; the list stays.
  }
}

const listItems = new Map();

function renderList() {
  const list = $("job-list");
  const current = app.job ? app.job.jobId : null;
  const items = app.list.jobs.map((job) => {
    let item = listItems.get(job.job_id);
    if (!item) {
      const li = el("li", "job-item");
      const a = el("a", "job-link");
      a.href = "#/jobs/" + encodeURIComponent(job.job_id);
      a.dataset.job = job.job_id;
      const name = el("span", "job-name", job.job_id);
      const pill = el("span", "pill small");
      const meta = el("span", "job-meta muted");
      a.append(name, pill, meta);
      li.appendChild(a);
      item = { li, a, pill, meta };
      listItems.set(job.job_id, item);
    }
    const outcome = outcomeOf(job);
    item.pill.textContent = OUTCOME_WORDS[outcome] || outcome;
    item.pill.dataset.status = outcome;
    const meta = [];
    if (outcome === "queued") {
      if (typeof job.queue_position === "number") meta.push("#" + formatCount(job.queue_position) + " in queue");
      if (job.created_at) meta.push("created " + formatUtc(job.created_at));
    } else {
      meta.push(formatUtc(job.started_at || job.created_at));
    }
    if (typeof job.duration_ms === "number") meta.push(formatDuration(job.duration_ms));
    if (typeof job.rerun_of === "string") meta.push("re-run of " + job.rerun_of);
    // The open job's count is the live one; the others move with their state.
    const lines = job.job_id === current && app.job ? Math.max(job.lines || 0, app.job.lastSeq) : job.lines;
    if (typeof lines === "number" && outcome !== "queued") meta.push(formatCount(lines) + " lines");
    item.meta.textContent = meta.filter(Boolean).join(" \u00b7 ");
    item.a.classList.toggle("selected", job.job_id === current);
    if (job.job_id === current) item.a.setAttribute("aria-current", "page");
    else item.a.removeAttribute("aria-current");
    return item.li;
  });
  const children = [...list.children];
  if (items.length !== children.length || items.some((li, i) => li !== children[i])) list.replaceChildren(...items);
  $("no-jobs").hidden = items.length > 0;
  const f = app.list.filter;
  $("no-jobs").textContent = f.q || f.status ? "No jobs match." : "No jobs yet. Press Run to start one.";
  $("jobs-total").textContent = "(" + formatCount(app.list.total) + ")";
  $("jobs-older").disabled = !app.list.nextBefore;
  $("jobs-newer").disabled = !app.list.cursors.length;
}

let filterTimer = null;
function listFilterChanged() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    app.list = reduceList(app.list, { type: "filter", filter: { q: $("jobs-q").value.trim(), status: $("jobs-status").value } });
    loadList(null);
  }, 200);
}

// ---------------------------------------------------------------- actions

async function runJob() {
  const button = $("run");
  const errorLine = $("run-error");
  button.disabled = true;
  errorLine.hidden = true;
  try {
    const id = await api.createJob();
    location.hash = "#/jobs/" + encodeURIComponent(id);
    loadList(null);
  } catch (err) {
    errorLine.textContent = "Could not start a job: " + err.message;
    errorLine.hidden = false;
  } finally {
    button.disabled = false;
    // Keep the keyboard where it was: on Run.
    button.focus();
  }
}

function askCancel() {
  if (!app.job) return;
  $("confirm-text").textContent =
    app.job.outcome === "queued"
      ? "Job " + app.job.jobId + " is waiting in the queue; cancelling takes it out, and it never runs."
      : "Job " + app.job.jobId + " will be stopped; its running stages end as cancelled.";
  $("confirm-cancel").showModal();
  $("confirm-keep").focus();
}

async function rerun() {
  if (!app.job) return;
  const button = $("rerun");
  button.disabled = true;
  try {
    const id = await api.rerunJob(app.job.jobId);
    announce("Started job " + id + ", a re-run of " + app.job.jobId);
    location.hash = "#/jobs/" + encodeURIComponent(id);
    loadList(null);
  } catch (err) {
    $("run-error").textContent = "Could not re-run: " + err.message;
    $("run-error").hidden = false;
  } finally {
    button.disabled = false;
  }
}

function askDelete() {
  if (!app.job) return;
  $("delete-text").textContent =
    "Job " + app.job.jobId + " and its log will be removed from the runner. Its stages still count in the stage history.";
  $("confirm-delete").showModal();
  $("delete-keep").focus();
}

async function confirmDelete() {
  $("confirm-delete").close();
  if (!app.job) return;
  const id = app.job.jobId;
  const button = $("delete");
  button.disabled = true;
  try {
    await api.deleteJob(id);
    jobDeleted(id);
    announce("Deleted job " + id);
    location.hash = "#/";
  } catch (err) {
    $("run-error").textContent = "Could not delete: " + err.message;
    $("run-error").hidden = false;
    button.focus();
  } finally {
    button.disabled = false;
  }
}

async function confirmCancel() {
  const dialog = $("confirm-cancel");
  dialog.close();
  if (!app.job) return;
  const button = $("cancel");
  button.disabled = true;
  try {
    await api.cancelJob(app.job.jobId);
    announce("Cancelling job " + app.job.jobId);
  } catch (err) {
    $("run-error").textContent = "Could not cancel: " + err.message;
    $("run-error").hidden = false;
  } finally {
    button.disabled = false;
    button.focus();
  }
}

// ---------------------------------------------------------------- start

function start() {
  $("run").addEventListener("click", runJob);
  $("cancel").addEventListener("click", askCancel);
  $("confirm-keep").addEventListener("click", () => $("confirm-cancel").close());
  $("confirm-yes").addEventListener("click", confirmCancel);
  $("rerun").addEventListener("click", rerun);
  $("delete").addEventListener("click", askDelete);
  $("delete-keep").addEventListener("click", () => $("confirm-delete").close());
  $("delete-yes").addEventListener("click", confirmDelete);
  $("trace-copy").addEventListener("click", copyTraceId);
  $("history-window").addEventListener("change", () => {
    const n = Number($("history-window").value);
    app.history = { ...app.history, window: n, stats: null, byName: new Map() };
    scheduleRender();
    requestHistory();
  });
  $("stage-detail-close").addEventListener("click", () => selectStage(null));
  $("level").addEventListener("change", () => {
    app.level = $("level").value;
    applyFilters();
    scheduleRender();
  });
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    if (app.search.q && app.search.q === $("search-q").value) moveMatch(1);
    else runSearch();
  });
  $("search-next").addEventListener("click", () => (app.search.q === $("search-q").value ? moveMatch(1) : runSearch()));
  $("search-prev").addEventListener("click", () => moveMatch(-1));
  $("jobs-q").addEventListener("input", listFilterChanged);
  $("jobs-status").addEventListener("change", listFilterChanged);
  $("jobs-older").addEventListener("click", () => {
    if (!app.list.nextBefore) return;
    app.list = { ...app.list, cursors: [...app.list.cursors, app.list.before || null] };
    loadList(app.list.nextBefore);
  });
  $("jobs-newer").addEventListener("click", () => {
    const cursors = app.list.cursors.slice();
    const before = cursors.pop();
    app.list = { ...app.list, cursors };
    loadList(before === undefined ? null : before);
  });
  // On a phone the job comes first and the list starts folded.
  if (window.matchMedia("(max-width: 700px)").matches && parseRoute()) $("jobs-box").open = false;
  window.addEventListener("hashchange", route);
  stream.watchJobs(true);
  loadList(null);
  requestHealth();
  route();
}

start();
