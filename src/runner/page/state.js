// The page's state as pure functions: events in, view state out.
//
// `reduceJob` folds what the runner says about one job (its detail, its
// numbered lines in bulk or from the stream, the end of its stream) into a
// plain object; `reduceList` does the same for the jobs list. Nothing here
// touches the DOM, the network or the clock, so node's test runner checks it
// directly. A line at or below the last sequence number already folded in is
// ignored: a replay after a reconnect never doubles anything.

import { parseTime } from "./format.js";

/** Stage statuses, in the order a stage goes through them. */
export const STAGE_STATUSES = ["pending", "running", "complete", "error", "skipped", "cancelled"];
/** Job outcomes. */
export const OUTCOMES = ["queued", "running", "success", "partial", "error", "cancelled", "interrupted"];
const ENDED_STATES = ["finished", "interrupted"];
const CANCELLED = "cancelled";

/** The state of a job view before anything is known. */
export function initialJob(jobId) {
  return {
    jobId,
    loaded: false,
    notFound: false,
    deleted: false,
    summary: null,
    outcome: "unknown",
    reason: null,
    ended: false,
    stages: {},
    lastSeq: 0,
    pipelineStart: null,
    pipelineEnd: null,
    pipelineDurationMs: null,
  };
}

/** A job's outcome from a summary, also for runners that do not send one. */
export function outcomeOf(summary) {
  if (!summary || typeof summary !== "object") return "unknown";
  if (OUTCOMES.includes(summary.outcome)) return summary.outcome;
  if (summary.state === "queued" || summary.state === "running") return summary.state;
  if (summary.state === "interrupted") return "interrupted";
  if (summary.reason === CANCELLED) return "cancelled";
  if (OUTCOMES.includes(summary.status)) return summary.status;
  return "unknown";
}

/** Why a job ended the way it did, as one line of text, or null. */
export function reasonOf(summary) {
  if (!summary || typeof summary !== "object") return null;
  if (typeof summary.reason === "string" && summary.reason) return summary.reason;
  const outcome = outcomeOf(summary);
  if ((outcome === "error" || outcome === "interrupted") && typeof summary.exit_code === "number") {
    return "exit status: " + summary.exit_code;
  }
  return null;
}

function newStage(name, layer) {
  return {
    name,
    layer: typeof layer === "number" ? layer : null,
    status: "pending",
    history: ["pending"],
    startMs: null,
    durationMs: null,
    error: null,
    metadata: null,
    startedSeq: null,
    endedSeq: null,
    notRun: false,
    tokens: null,
    traceUrl: null,
    spanId: null,
  };
}

// Copy-on-write helpers: one copy of `stages` per reduction, not per line.
function stageFor(draft, name, layer) {
  if (!draft.stagesCopied) {
    draft.state.stages = { ...draft.state.stages };
    draft.stagesCopied = true;
  }
  const old = draft.state.stages[name];
  let stage;
  if (!old) {
    stage = newStage(name, layer);
  } else if (draft.touched.has(name)) {
    stage = old;
  } else {
    stage = { ...old, history: old.history.slice() };
  }
  if (typeof layer === "number") stage.layer = layer;
  draft.state.stages[name] = stage;
  draft.touched.add(name);
  return stage;
}

function setStatus(stage, status) {
  if (!STAGE_STATUSES.includes(status) || stage.status === status) return;
  stage.status = status;
  stage.history.push(status);
}

// The status a terminal lifecycle line gives its stage.
function terminalStatus(event, error) {
  if (event === "layer_complete") return "complete";
  if (event === "layer_skip") return "skipped";
  return error === CANCELLED ? "cancelled" : "error";
}

function applyLine(draft, seq, data) {
  const state = draft.state;
  if (!data || typeof data !== "object" || data.type === "output") return;
  const t = parseTime(data.timestamp);
  const name = typeof data.layer_name === "string" ? data.layer_name : null;
  switch (data.event) {
    case "pipeline_start":
      if (state.pipelineStart === null) state.pipelineStart = t;
      if (!state.ended && (state.outcome === "unknown" || state.outcome === "queued")) state.outcome = "running";
      break;
    case "layer_start": {
      if (name === null) break;
      const stage = stageFor(draft, name, data.layer);
      if (t !== null) stage.startMs = t;
      stage.startedSeq = seq;
      setStatus(stage, "running");
      break;
    }
    case "layer_complete":
    case "layer_error":
    case "layer_skip": {
      if (name === null) break;
      const stage = stageFor(draft, name, data.layer);
      if (typeof data.duration_ms === "number") stage.durationMs = data.duration_ms;
      if (data.event === "layer_error") {
        stage.error = data.error === undefined || data.error === null ? "error" : String(data.error);
      }
      if (data.metadata && typeof data.metadata === "object") stage.metadata = data.metadata;
      if (stage.startMs === null && t !== null && typeof data.duration_ms === "number") {
        stage.startMs = t - data.duration_ms;
      }
      stage.endedSeq = seq;
      // A stage seen only by its end still went through running.
      if (stage.status === "pending" && data.event !== "layer_skip") setStatus(stage, "running");
      setStatus(stage, terminalStatus(data.event, stage.error));
      break;
    }
    case "pipeline_complete": {
      state.pipelineEnd = t;
      if (typeof data.duration_ms === "number") state.pipelineDurationMs = data.duration_ms;
      if (state.pipelineStart === null && t !== null && typeof data.duration_ms === "number") {
        state.pipelineStart = t - data.duration_ms;
      }
      const error = typeof data.error === "string" && data.error ? data.error : null;
      if (error === CANCELLED) state.outcome = "cancelled";
      else if (OUTCOMES.includes(data.status)) state.outcome = data.status;
      if (error) state.reason = error;
      closeOpenStages(draft, error);
      break;
    }
    default:
      break;
  }
}

// A job's end closes every stage still running; stages it never reached
// are marked as not run.
function closeOpenStages(draft, reason) {
  for (const name of Object.keys(draft.state.stages)) {
    const s = draft.state.stages[name];
    if (s.status === "running") {
      const stage = stageFor(draft, name);
      stage.error = stage.error || reason || "did not finish: the job ended";
      setStatus(stage, reason === CANCELLED ? "cancelled" : "error");
    }
  }
}

function markNotRun(draft) {
  for (const name of Object.keys(draft.state.stages)) {
    if (draft.state.stages[name].status === "pending" && !draft.state.stages[name].notRun) {
      stageFor(draft, name).notRun = true;
    }
  }
}

function applySummary(state, summary) {
  state.summary = summary;
  const outcome = outcomeOf(summary);
  if (outcome !== "unknown") state.outcome = outcome;
  const reason = reasonOf(summary);
  if (reason) state.reason = reason;
  if (ENDED_STATES.includes(summary.state)) state.ended = true;
  if (typeof summary.lines === "number" && summary.lines > state.lastSeq) state.lastSeq = summary.lines;
}

/**
 * Folds one event into a job's state and returns the new state (the old one
 * is not changed). Events:
 * - `{type:"detail", detail}`: `GET /api/jobs/{id}` (summary and stages;
 *   a stage's tokens come from here only, as the runner counts them with
 *   its configured metadata key, so a live view and a reload agree);
 * - `{type:"lines", rows:[{seq, data}], lastSeq}`: numbered lines, in
 *   order (`lastSeq`, optional: the last sequence number they cover);
 * - `{type:"end", summary}`: the stream's last word on the job;
 * - `{type:"known-stages", stages:[{layer_name, layer}]}`: stages seen in
 *   earlier jobs, shown as pending until they start;
 * - `{type:"stage-start", name, startMs}`: a stage's start time, read from
 *   its layer_start line;
 * - `{type:"summary", summary}`: a `jobs` message of the stream about this
 *   job (it left the queue, ended...): its keys are kept, its outcome
 *   taken while the job runs or waits (the end comes with `end`);
 * - `{type:"deleted"}`: the job was deleted (by a user or by retention);
 * - `{type:"not-found"}`: the runner does not know this job.
 */
export function reduceJob(prev, event) {
  const draft = { state: { ...prev }, stagesCopied: false, touched: new Set() };
  const state = draft.state;
  switch (event.type) {
    case "detail": {
      const detail = event.detail || {};
      state.loaded = true;
      state.notFound = false;
      applySummary(state, detail);
      for (const s of Array.isArray(detail.stages) ? detail.stages : []) {
        if (!s || typeof s.layer_name !== "string") continue;
        const stage = stageFor(draft, s.layer_name, s.layer);
        if (typeof s.duration_ms === "number") stage.durationMs = s.duration_ms;
        if (typeof s.error === "string") stage.error = s.error;
        if (s.metadata && typeof s.metadata === "object") stage.metadata = s.metadata;
        if (typeof s.tokens === "number" && isFinite(s.tokens) && s.tokens >= 0) stage.tokens = s.tokens;
        if (typeof s.trace_url === "string" && s.trace_url) stage.traceUrl = s.trace_url;
        if (typeof s.span_id === "string" && s.span_id) stage.spanId = s.span_id;
        if (typeof s.started_seq === "number") stage.startedSeq = s.started_seq;
        if (typeof s.ended_seq === "number") stage.endedSeq = s.ended_seq;
        const started = parseTime(s.started_at);
        if (started !== null) stage.startMs = started;
        let status = STAGE_STATUSES.includes(s.status) ? s.status : "pending";
        if (status === "error" && stage.error === CANCELLED) status = "cancelled";
        // A stage that started went through running, even if it ended skipped.
        const entered = status !== "skipped" || typeof s.started_seq === "number";
        if (status !== "pending" && entered && stage.status === "pending") {
          setStatus(stage, "running");
        }
        setStatus(stage, status);
      }
      const started = parseTime(detail.started_at);
      if (state.pipelineStart === null && started !== null) state.pipelineStart = started;
      const finished = parseTime(detail.finished_at);
      if (finished !== null) state.pipelineEnd = finished;
      if (typeof detail.duration_ms === "number") state.pipelineDurationMs = detail.duration_ms;
      if (state.ended) {
        closeOpenStages(draft, state.reason);
        markNotRun(draft);
      }
      break;
    }
    case "lines": {
      for (const row of event.rows || []) {
        if (!row || typeof row.seq !== "number" || row.seq <= state.lastSeq) continue;
        state.lastSeq = row.seq;
        applyLine(draft, row.seq, row.data);
      }
      // A thinned batch says where it ended (the plain output lines left
      // out carry no state).
      if (typeof event.lastSeq === "number" && event.lastSeq > state.lastSeq) state.lastSeq = event.lastSeq;
      break;
    }
    case "end": {
      if (event.summary && typeof event.summary === "object") applySummary(state, event.summary);
      state.ended = true;
      if (state.outcome === "running" || state.outcome === "queued" || state.outcome === "unknown") {
        state.outcome = "interrupted";
      }
      closeOpenStages(draft, state.reason);
      markNotRun(draft);
      break;
    }
    case "known-stages": {
      for (const s of event.stages || []) {
        if (s && typeof s.layer_name === "string" && !state.stages[s.layer_name]) {
          stageFor(draft, s.layer_name, s.layer);
        }
      }
      if (state.ended) markNotRun(draft);
      break;
    }
    case "stage-start": {
      const old = state.stages[event.name];
      if (old && old.startMs === null && typeof event.startMs === "number") {
        stageFor(draft, event.name).startMs = event.startMs;
      }
      break;
    }
    case "summary": {
      const s = event.summary;
      if (!s || typeof s !== "object" || s.job_id !== state.jobId) return prev;
      if (s.deleted) return reduceJob(prev, { type: "deleted" });
      // The line count stays the stream's: lines not yet folded in must not
      // be skipped as already seen.
      const merged = { ...(state.summary || {}), ...s, lines: state.summary ? state.summary.lines : undefined };
      if (state.ended || ENDED_STATES.includes(s.state)) {
        // The end itself comes with the stream's `end` (or the detail).
        state.summary = merged;
        break;
      }
      if (s.state === "queued" && state.pipelineStart !== null) return prev;
      state.summary = merged;
      const outcome = outcomeOf(s);
      if (outcome !== "unknown") state.outcome = outcome;
      break;
    }
    case "deleted":
      if (state.deleted) return prev;
      state.deleted = true;
      state.ended = true;
      break;
    case "not-found":
      state.notFound = true;
      state.loaded = true;
      break;
    default:
      return prev;
  }
  return state;
}

/** Stages in page order: by layer number, then by name. */
export function orderedStages(state) {
  return Object.values(state.stages).sort((a, b) => {
    const la = a.layer === null ? Infinity : a.layer;
    const lb = b.layer === null ? Infinity : b.layer;
    if (la !== lb) return la - lb;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
}

/** Stage counts by status, from the stages themselves. */
export function stageCounts(state) {
  const counts = {};
  for (const s of Object.values(state.stages)) counts[s.status] = (counts[s.status] || 0) + 1;
  return counts;
}

/**
 * Bars of the timeline. `now` is the time to draw running stages up to; the
 * caller freezes it while the runner is unreachable, so bars stop growing.
 * Returns `{origin, span, bars: {name: {left, width} | null}}` in percent.
 */
export function timeline(state, now) {
  const stages = Object.values(state.stages);
  let origin = state.pipelineStart;
  for (const s of stages) {
    if (s.startMs !== null && (origin === null || s.startMs < origin)) origin = s.startMs;
  }
  let end = state.pipelineEnd !== null ? state.pipelineEnd : now;
  for (const s of stages) {
    if (s.startMs !== null && s.durationMs !== null && s.startMs + s.durationMs > (end || 0)) {
      end = s.startMs + s.durationMs;
    }
  }
  const span = origin !== null && end !== null ? Math.max(end - origin, 1) : 0;
  const bars = {};
  for (const s of stages) {
    if (s.startMs === null || span <= 0) {
      bars[s.name] = null;
      continue;
    }
    let length = s.durationMs;
    if (s.status === "running") length = Math.max(0, (end || s.startMs) - s.startMs);
    if (length === null) length = 0;
    const left = Math.min(100, Math.max(0, ((s.startMs - origin) / span) * 100));
    const width = Math.min(100 - left, Math.max(0, (length / span) * 100));
    bars[s.name] = { left, width, lengthMs: length };
  }
  return { origin, span, bars };
}

/** Round axis steps for a timeline `span` ms long: at most 8 labels. */
export function axisStep(span) {
  const steps = [100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000];
  return steps.find((s) => span / s <= 8) || Math.ceil(span / 8 / 3600000) * 3600000;
}

// ---------------------------------------------------------------- jobs list

/** The jobs list before the first page arrives. */
export function initialList(filter) {
  return { filter: { q: "", status: "", ...(filter || {}) }, jobs: [], total: 0, nextBefore: null, cursors: [] };
}

/** Whether a job summary belongs in a list with this filter. */
export function matchesFilter(summary, filter) {
  if (!summary || typeof summary.job_id !== "string") return false;
  if (filter.q && !summary.job_id.toLowerCase().includes(filter.q.toLowerCase())) return false;
  if (filter.status) {
    const wanted = filter.status.split(",");
    if (!wanted.includes(outcomeOf(summary))) return false;
  }
  return true;
}

/**
 * Folds an event into the jobs list:
 * - `{type:"page", answer, before}`: a page of `GET /api/jobs` (the cursor
 *   it was fetched with, null for the first page);
 * - `{type:"job", summary}`: a `jobs` message of the stream (a new or
 *   changed job, or `{job_id, deleted:true}`);
 * - `{type:"filter", filter}`: a new search or status filter (the list is
 *   emptied until its first page arrives).
 */
export function reduceList(prev, event) {
  switch (event.type) {
    case "page": {
      const answer = event.answer || {};
      return {
        ...prev,
        jobs: Array.isArray(answer.jobs) ? answer.jobs : [],
        total: typeof answer.total === "number" ? answer.total : 0,
        nextBefore: typeof answer.next_before === "string" ? answer.next_before : null,
        before: event.before || null,
      };
    }
    case "job": {
      const s = event.summary;
      if (!s || typeof s.job_id !== "string") return prev;
      const index = prev.jobs.findIndex((j) => j.job_id === s.job_id);
      if (s.deleted) {
        if (index === -1) return prev;
        return { ...prev, jobs: prev.jobs.filter((j) => j.job_id !== s.job_id), total: Math.max(0, prev.total - 1) };
      }
      const matches = matchesFilter(s, prev.filter);
      if (index !== -1) {
        const jobs = prev.jobs.slice();
        if (matches) jobs[index] = { ...jobs[index], ...s };
        else jobs.splice(index, 1);
        return { ...prev, jobs, total: matches ? prev.total : Math.max(0, prev.total - 1) };
      }
      // A job not on this page: new jobs go on top of the first page.
      if (!matches || prev.before) return prev;
      return { ...prev, jobs: [s, ...prev.jobs], total: prev.total + 1 };
    }
    case "filter":
      return { ...initialList(event.filter) };
    default:
      return prev;
  }
}
