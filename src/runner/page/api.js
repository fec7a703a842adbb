// The runner's HTTP API as the page uses it (relative URLs, so the runner
// can sit under a proxy's sub-path). Each function resolves to parsed data
// or throws an Error whose message is fit to show.

/** An API error: the runner's own message, and the HTTP status. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function failure(res) {
  let message = "the runner answered " + res.status;
  try {
    const body = await res.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch (_) {
    // Not JSON: keep the status line.
  }
  return new ApiError(message, res.status);
}

async function getJson(url, signal) {
  const res = await fetch(url, { cache: "no-store", signal });
  if (!res.ok) throw await failure(res);
  return res.json();
}

function jobUrl(id, tail) {
  return "api/jobs/" + encodeURIComponent(id) + (tail || "");
}

/** `GET api/jobs` with `limit`, `before`, `status`, `q`. */
export function listJobs({ limit = 50, before = null, status = "", q = "" } = {}, signal) {
  const p = new URLSearchParams();
  p.set("limit", String(limit));
  if (before) p.set("before", before);
  if (status) p.set("status", status);
  if (q) p.set("q", q);
  return getJson("api/jobs?" + p.toString(), signal);
}

/** `GET api/jobs/{id}`: the summary and the stages. */
export function jobDetail(id, signal) {
  return getJson(jobUrl(id), signal);
}

/**
 * `GET api/stages?window=N`: per-stage statistics over the last N finished
 * jobs (`{window, jobs, stages:[...]}`).
 */
export function stageStats(window, signal) {
  return getJson("api/stages?window=" + encodeURIComponent(String(window)), signal);
}

/** `GET api/health`: the runner's version, data size, retention, queue. */
export function health(signal) {
  return getJson("api/health", signal);
}

/** Parses `application/x-ndjson` rows; a broken row is skipped. */
export function parseNdjson(text) {
  const rows = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    try {
      rows.push(JSON.parse(line));
    } catch (_) {
      // A partial or broken row: nothing to show for it.
    }
  }
  return rows;
}

/**
 * `GET api/jobs/{id}/lines`: `{rows, lastSeq, nextFrom}` with rows
 * `{seq, data}`; options `from`, `limit`, `stage`, `level`.
 */
export async function jobLines(id, { from = 1, limit = 1000, stage = null, level = null } = {}, signal) {
  const p = new URLSearchParams();
  p.set("from", String(Math.max(1, Math.floor(from))));
  p.set("limit", String(limit));
  if (stage) p.set("stage", stage);
  if (level) p.set("level", level);
  const res = await fetch(jobUrl(id, "/lines?" + p.toString()), { cache: "no-store", signal });
  if (!res.ok) throw await failure(res);
  const rows = parseNdjson(await res.text());
  const last = Number(res.headers.get("X-Last-Seq"));
  const next = res.headers.get("X-Next-From");
  return {
    rows,
    lastSeq: isFinite(last) ? last : null,
    nextFrom: next !== null && isFinite(Number(next)) ? Number(next) : null,
  };
}

/** `GET api/jobs/{id}/search`: `{count, seqs, truncated}`. */
export function searchJob(id, q, { level = null, limit = 10000 } = {}, signal) {
  const p = new URLSearchParams();
  p.set("q", q);
  if (level) p.set("level", level);
  p.set("limit", String(limit));
  return getJson(jobUrl(id, "/search?" + p.toString()), signal);
}

/** The URL of a job's raw log (the download button's target). */
export function logUrl(id) {
  return jobUrl(id, "/log");
}

/** `POST api/jobs`: starts a job, resolves to its id. */
export async function createJob() {
  const res = await fetch("api/jobs", { method: "POST" });
  if (res.status !== 201) throw await failure(res);
  const body = await res.json();
  return body.job_id;
}

/** `POST api/jobs/{id}/cancel`. */
export async function cancelJob(id) {
  const res = await fetch(jobUrl(id, "/cancel"), { method: "POST" });
  if (!res.ok) throw await failure(res);
}

/** `DELETE api/jobs/{id}`: removes a finished job. */
export async function deleteJob(id) {
  const res = await fetch(jobUrl(id), { method: "DELETE" });
  if (!res.ok) throw await failure(res);
}

/** `POST api/jobs/{id}/rerun`: starts the job again, resolves to the new id. */
export async function rerunJob(id) {
  const res = await fetch(jobUrl(id, "/rerun"), { method: "POST" });
  if (res.status !== 201) throw await failure(res);
  const body = await res.json();
  return body.job_id;
}
