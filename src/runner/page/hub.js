// One multiplexed event stream for many watchers.
//
// A hub holds at most one `GET api/stream?job=ID:AFTER&...&jobs=1`
// connection for the union of the jobs its clients watch, and fans the
// messages out: each client gets each line of a job it watches once, in
// order, batched (one message per client every few tens of milliseconds,
// not one per line), with `lastSeq`, the batch's last sequence number; of
// plain output lines only a batch's tail is sent (see `thin`). When the set of watched jobs changes the connection is
// reopened, each job resuming after the lowest sequence number any of its
// watchers holds; lines a client already has are not sent to it again.
//
// The page runs a hub inside a SharedWorker (one connection for every tab of
// the runner) or, where SharedWorker is missing, one per tab. When the
// connection breaks the hub polls `api/health` with a growing delay and
// reopens the stream once the runner answers again, telling its clients
// `{type:"conn", state}` with state `connecting`, `live`, `down` or `idle`.

const BATCH_MS = 200;
const BATCH_MAX_ROWS = 10000;
const TAIL_ROWS = 400;
const REOPEN_MS = 20;
const HEALTH_FIRST_MS = 500;
const HEALTH_MAX_MS = 5000;

export class StreamHub {
  /**
   * @param {object} env  `EventSource`, `fetch`, `setTimeout`,
   *   `clearTimeout` and `base` (the URL `api/...` is resolved against).
   */
  constructor(env) {
    this.env = env;
    this.clients = new Set();
    this.source = null;
    this.openSet = null; // Map job -> after, of the open connection
    this.hubLast = new Map(); // job -> last seq received on this connection
    this.reopenTimer = null;
    this.healthTimer = null;
    this.healthDelay = HEALTH_FIRST_MS;
    this.state = "idle";
    this.suspended = false;
    this.down = false;
  }

  addClient(client) {
    client.jobs = new Map(); // job -> last seq delivered to this client
    client.wantsJobs = false;
    client.pending = [];
    client.flushTimer = null;
    this.clients.add(client);
    client.post({ type: "conn", state: this.state });
  }

  removeClient(client) {
    if (!this.clients.delete(client)) return;
    if (client.flushTimer !== null) this.env.clearTimeout(client.flushTimer);
    this.scheduleReopen();
  }

  watch(client, job, after) {
    const seq = typeof after === "number" && after >= 0 ? after : 0;
    client.jobs.set(job, seq);
    const open = this.openSet && this.openSet.has(job);
    const last = this.hubLast.has(job) ? this.hubLast.get(job) : open ? this.openSet.get(job) : -1;
    if (!open || seq < last) this.scheduleReopen();
  }

  unwatch(client, job) {
    if (client.jobs.delete(job)) this.scheduleReopen();
  }

  watchJobs(client, on) {
    client.wantsJobs = !!on;
    this.scheduleReopen();
  }

  // Hidden tab without a shared worker: no connection until it is shown.
  suspend() {
    this.suspended = true;
    this.closeSource();
    this.setState("idle");
  }

  resume() {
    if (!this.suspended) return;
    this.suspended = false;
    this.scheduleReopen();
  }

  // ---- the connection

  wanted() {
    const jobs = new Map();
    let wantsJobs = false;
    for (const c of this.clients) {
      if (c.wantsJobs) wantsJobs = true;
      for (const [job, seq] of c.jobs) {
        jobs.set(job, jobs.has(job) ? Math.min(jobs.get(job), seq) : seq);
      }
    }
    return { jobs, wantsJobs };
  }

  scheduleReopen() {
    if (this.reopenTimer !== null || this.suspended) return;
    this.reopenTimer = this.env.setTimeout(() => {
      this.reopenTimer = null;
      if (!this.down) this.open();
    }, REOPEN_MS);
  }

  open() {
    this.closeSource();
    const { jobs, wantsJobs } = this.wanted();
    if (jobs.size === 0 && !wantsJobs) {
      this.setState("idle");
      return;
    }
    const params = [];
    for (const [job, after] of jobs) params.push("job=" + encodeURIComponent(job + ":" + after));
    if (wantsJobs) params.push("jobs=1");
    const url = new URL("api/stream?" + params.join("&"), this.env.base).toString();
    const source = new this.env.EventSource(url);
    this.source = source;
    this.openSet = jobs;
    this.hubLast = new Map();
    this.setState("connecting");
    source.onopen = () => {
      if (this.source !== source) return;
      this.healthDelay = HEALTH_FIRST_MS;
      this.setState("live");
    };
    source.addEventListener("line", (msg) => {
      if (this.source === source) this.onLine(msg.data);
    });
    source.addEventListener("end", (msg) => {
      if (this.source === source) this.onEnd(msg.data);
    });
    source.addEventListener("jobs", (msg) => {
      if (this.source === source) this.onJobs(msg.data);
    });
    source.onerror = () => {
      if (this.source !== source) return;
      // The browser would retry with the same URL (and replay from the
      // original positions); the hub retries itself, once the runner answers.
      this.closeSource();
      this.goDown();
    };
  }

  closeSource() {
    if (this.source) this.source.close();
    this.source = null;
    this.openSet = null;
  }

  goDown() {
    this.down = true;
    this.setState("down");
    if (this.healthTimer !== null) return;
    const check = async () => {
      this.healthTimer = null;
      let ok = false;
      try {
        const res = await this.env.fetch(new URL("api/health", this.env.base).toString(), { cache: "no-store" });
        ok = res.ok;
      } catch (_) {
        ok = false;
      }
      if (ok) {
        this.down = false;
        this.healthDelay = HEALTH_FIRST_MS;
        if (!this.suspended) this.open();
      } else {
        this.healthDelay = Math.min(this.healthDelay * 2, HEALTH_MAX_MS);
        this.healthTimer = this.env.setTimeout(check, this.healthDelay);
      }
    };
    this.healthTimer = this.env.setTimeout(check, this.healthDelay);
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    for (const c of this.clients) c.post({ type: "conn", state });
  }

  // ---- messages

  onLine(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (_) {
      return;
    }
    if (!msg || typeof msg.job !== "string" || typeof msg.seq !== "number") return;
    const last = this.hubLast.get(msg.job);
    if (last !== undefined && msg.seq <= last) return;
    this.hubLast.set(msg.job, msg.seq);
    const row = { seq: msg.seq, data: msg.data };
    for (const c of this.clients) {
      const have = c.jobs.get(msg.job);
      if (have === undefined || msg.seq <= have) continue;
      c.jobs.set(msg.job, msg.seq);
      this.queue(c, msg.job, row);
    }
  }

  onEnd(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (_) {
      return;
    }
    if (!msg || typeof msg.job !== "string") return;
    if (this.openSet) this.openSet.delete(msg.job);
    for (const c of this.clients) {
      if (!c.jobs.has(msg.job)) continue;
      c.jobs.delete(msg.job);
      this.flush(c);
      c.post({ type: "end", job: msg.job, summary: msg.summary || null, deleted: msg.deleted === true });
    }
  }

  onJobs(raw) {
    let summary;
    try {
      summary = JSON.parse(raw);
    } catch (_) {
      return;
    }
    for (const c of this.clients) {
      if (c.wantsJobs) {
        this.flush(c);
        c.post({ type: "jobs", summary });
      }
    }
  }

  queue(client, job, row) {
    const last = client.pending[client.pending.length - 1];
    if (last && last.job === job) last.rows.push(row);
    else client.pending.push({ job, rows: [row] });
    let count = 0;
    for (const p of client.pending) count += p.rows.length;
    if (count >= BATCH_MAX_ROWS) {
      this.flush(client);
    } else if (client.flushTimer === null) {
      client.flushTimer = this.env.setTimeout(() => this.flush(client), BATCH_MS);
    }
  }

  flush(client) {
    if (client.flushTimer !== null) this.env.clearTimeout(client.flushTimer);
    client.flushTimer = null;
    const pending = client.pending;
    client.pending = [];
    for (const p of pending) {
      const lastSeq = p.rows[p.rows.length - 1].seq;
      client.post({ type: "lines", job: p.job, rows: thin(p.rows), lastSeq });
    }
  }
}

/**
 * The rows of a batch a tab needs: every structured line (they carry the
 * job's state) and every output line attributed to a stage (a stage's view
 * shows them live), but of the other output lines only the last TAIL_ROWS.
 * A tab following a fast job draws only its tail; the lines left out are
 * fetched from the runner if it scrolls back to them.
 */
export function thin(rows) {
  if (rows.length <= TAIL_ROWS) return rows;
  const tailFrom = rows.length - TAIL_ROWS;
  const kept = [];
  for (let i = 0; i < rows.length; i++) {
    const data = rows[i].data;
    const plainOutput = data && data.type === "output" && typeof data.layer_name !== "string";
    if (!plainOutput || i >= tailFrom) kept.push(rows[i]);
  }
  return kept;
}

