// The runner's live page: a jobs list, and for one job its stage buttons, a
// timeline and a terminal, rebuilt from the job's SSE stream.
//
// Everything shown comes from the stream (`GET /api/jobs/{id}/events`), so a
// reload or a reconnect replays the history into an empty view and arrives at
// the same picture. Each SSE message carries a sequence number as its id; any
// message at or below the last one seen is ignored, so nothing is shown twice.
//
// Text from the pipeline is only ever inserted with textContent or text nodes:
// the page runs under `Content-Security-Policy: default-src 'self'` and never
// builds HTML from strings.
"use strict";

(function () {
  const JOBS_POLL_MS = 2000;
  const TICK_MS = 200;
  const TERMINAL_MAX_LINES = 20000;
  const STATUSES = ["pending", "running", "complete", "error", "skipped"];

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // ---------------------------------------------------------------- formatting

  function formatDuration(ms) {
    if (typeof ms !== "number" || !isFinite(ms) || ms < 0) return "";
    if (ms < 1000) return Math.round(ms) + " ms";
    const s = ms / 1000;
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 60) return Math.round(s) + " s";
    const m = Math.floor(s / 60);
    return m + " m " + Math.round(s - m * 60) + " s";
  }

  function formatTick(ms, step) {
    if (ms === 0) return "0";
    if (ms < 1000) return ms + " ms";
    if (ms >= 60000 && ms % 60000 === 0) return ms / 60000 + " min";
    return (ms / 1000).toFixed(step % 1000 === 0 ? 0 : 1) + " s";
  }

  function parseTime(ts) {
    const t = typeof ts === "string" ? Date.parse(ts) : NaN;
    return isFinite(t) ? t : null;
  }

  // "2025-11-29T10:30:45.123Z" -> "10:30:45.123" (the pipeline's own clock, UTC).
  function clockOf(ts) {
    if (typeof ts !== "string") return "";
    const m = /T(\d\d:\d\d:\d\d(?:\.\d+)?)/.exec(ts);
    return m ? m[1] : ts;
  }

  function localTime(ts) {
    const t = parseTime(ts);
    return t === null ? String(ts || "") : new Date(t).toLocaleTimeString();
  }

  // --------------------------------------------------------------- jobs list

  const jobsList = {
    jobs: [],
    timer: null,

    async refresh() {
      try {
        const res = await fetch("api/jobs", { cache: "no-store" });
        if (!res.ok) return;
        const jobs = await res.json();
        if (Array.isArray(jobs)) {
          this.jobs = jobs;
          this.render();
        }
      } catch (_) {
        // The runner is unreachable; keep the last list and try again later.
      }
    },

    start() {
      this.refresh();
      this.timer = setInterval(() => this.refresh(), JOBS_POLL_MS);
    },

    render() {
      const list = $("job-list");
      const current = jobView.jobId;
      const items = this.jobs.map((job) => {
        const li = el("li", "job-item");
        const a = el("a", "job-link");
        a.href = "#/jobs/" + encodeURIComponent(job.job_id);
        a.dataset.job = job.job_id;
        if (job.job_id === current) a.classList.add("selected");
        a.appendChild(el("span", "job-name", job.job_id));
        const shown = job.state === "running" ? "running" : job.status || job.state;
        const pill = el("span", "pill small", shown);
        pill.dataset.status = shown;
        a.appendChild(pill);
        a.appendChild(el("span", "job-time muted", localTime(job.started_at)));
        li.appendChild(a);
        return li;
      });
      list.replaceChildren(...items);
      $("no-jobs").hidden = this.jobs.length > 0;
    },
  };

  async function runJob() {
    const button = $("run");
    const errorLine = $("run-error");
    button.disabled = true;
    errorLine.hidden = true;
    try {
      const res = await fetch("api/jobs", { method: "POST" });
      if (res.status !== 201) {
        throw new Error("the runner answered " + res.status);
      }
      const body = await res.json();
      location.hash = "#/jobs/" + encodeURIComponent(body.job_id);
      jobsList.refresh();
    } catch (err) {
      errorLine.textContent = "Could not start a job: " + err.message;
      errorLine.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- job view

  // One stage of the job being shown: its button row, its timeline bar.
  class Stage {
    constructor(layerName, layer) {
      this.name = layerName;
      this.layer = typeof layer === "number" ? layer : null;
      this.status = null;
      this.history = [];
      this.start = null; // ms since the epoch, pipeline clock
      this.durationMs = null;
      this.error = null;
      this.cutOff = false; // still running when the pipeline ended

      this.row = el("li", "stage");
      this.button = el("button", "stage-button");
      this.button.type = "button";
      this.button.dataset.stage = layerName;
      this.icon = el("span", "stage-icon");
      this.icon.setAttribute("aria-hidden", "true");
      this.layerLabel = el("span", "stage-layer");
      this.nameLabel = el("span", "stage-name", layerName);
      this.durationLabel = el("span", "stage-duration");
      this.button.append(this.icon, this.layerLabel, this.nameLabel, this.durationLabel);

      this.track = el("div", "track");
      this.bar = el("div", "bar");
      this.barLabel = el("span", "bar-label");
      this.track.append(this.bar, this.barLabel);
      this.row.append(this.button, this.track);

      this.setLayer(layer);
      this.setStatus("pending");
    }

    setLayer(layer) {
      if (typeof layer !== "number") return;
      this.layer = layer;
      this.layerLabel.textContent = "L" + layer;
    }

    setStatus(status) {
      if (!STATUSES.includes(status) || status === this.status) return;
      if (this.status) this.button.classList.remove(this.status);
      if (this.status) this.row.classList.remove(this.status);
      this.status = status;
      this.history.push(status);
      this.button.classList.add(status);
      this.row.classList.add(status);
      this.button.dataset.status = status;
      this.button.dataset.history = this.history.join(" ");
      this.updateText();
    }

    // The job ended without reaching this stage.
    markNotRun() {
      this.row.classList.add("not-run");
      this.button.classList.add("not-run");
      this.button.title = this.name + " did not run in this job";
      this.track.title = this.button.title;
      this.barLabel.textContent = "did not run";
    }

    setDuration(ms) {
      if (typeof ms === "number" && isFinite(ms)) this.durationMs = ms;
      this.updateText();
    }

    setError(text) {
      if (text !== undefined && text !== null) this.error = String(text);
      this.updateText();
    }

    updateText() {
      const duration = formatDuration(this.durationMs);
      this.durationLabel.textContent = duration;
      this.barLabel.textContent = duration;
      const tip = [this.name, this.status];
      if (duration) tip.push(duration);
      this.button.title = this.error ? this.error : tip.join(" · ");
      this.track.title = this.button.title;
    }

    // Place the bar on a timeline from `origin` spanning `span` ms.
    layout(origin, span, now, stepPercent) {
      this.track.style.backgroundSize = stepPercent ? stepPercent + "% 100%" : "";
      if (this.start === null || origin === null || span <= 0) {
        this.bar.hidden = true;
        const idle = this.row.classList.contains("not-run") ? "did not run" : "";
        this.barLabel.textContent = this.status === "skipped" ? "skipped" : idle;
        this.barLabel.classList.remove("before", "inside");
        this.barLabel.style.left = "0%";
        return;
      }
      let length = this.durationMs;
      if (this.cutOff && length === null) length = Math.max(0, now - this.start); // until the end
      if (this.status === "running") {
        length = Math.max(0, now - this.start);
        this.barLabel.textContent = formatDuration(length);
      }
      if (length === null) length = 0;
      const left = Math.min(100, Math.max(0, ((this.start - origin) / span) * 100));
      const width = Math.min(100 - left, Math.max(0, (length / span) * 100));
      this.bar.hidden = false;
      this.bar.style.left = left + "%";
      this.bar.style.width = width + "%";
      // The label goes after the bar, else before it, else inside its end.
      const end = left + width;
      const place = 100 - end >= 12 ? "after" : left >= 12 ? "before" : "inside";
      this.barLabel.classList.remove("after", "before", "inside");
      this.barLabel.classList.add(place);
      const at = place === "before" ? left : end;
      const nudge = place === "after" ? "+ 6px" : "- 6px";
      this.barLabel.style.left = "calc(" + at + "% " + nudge + ")";
    }
  }

  const jobView = {
    jobId: null,
    source: null,
    lastSeq: -1,
    finished: false,
    stages: new Map(),
    pipelineStart: null,
    pipelineEnd: null,
    pipelineStatus: "pending",
    pipelineDurationMs: null,
    clockOffset: null, // browser clock minus pipeline clock (smallest seen)
    lineCount: 0,
    pendingLines: [],
    flushScheduled: false,
    tickTimer: null,
    filter: null,
    generation: 0,

    open(jobId) {
      this.close();
      this.generation += 1;
      this.jobId = jobId;
      this.lastSeq = -1;
      this.finished = false;
      this.stages = new Map();
      this.pipelineStart = null;
      this.pipelineEnd = null;
      this.pipelineDurationMs = null;
      this.clockOffset = null;
      this.lineCount = 0;
      this.pendingLines = [];
      this.filter = null;

      $("empty-view").hidden = true;
      $("job-view").hidden = false;
      $("job-id").textContent = jobId;
      $("stages").replaceChildren();
      $("terminal").replaceChildren();
      $("terminal").removeAttribute("data-filter");
      $("terminal").removeAttribute("data-dropped");
      $("terminal").removeAttribute("title");
      $("terminal-filter").textContent = "";
      this.setPipelineStatus("pending");
      this.layout();
      jobsList.render();

      $("connection").dataset.history = "";
      setConnection("connecting");
      this.tickTimer = setInterval(() => this.tick(), TICK_MS);
      // Known stages first, so that a reload always builds the same rows.
      const generation = this.generation;
      this.loadKnownStages(generation).then(() => {
        if (generation === this.generation) this.connect();
      });
    },

    close() {
      this.generation += 1; // callbacks of the closed view become no-ops
      if (this.source) this.source.close();
      this.source = null;
      if (this.tickTimer) clearInterval(this.tickTimer);
      this.tickTimer = null;
      this.jobId = null;
    },

    showEmpty() {
      this.close();
      $("connection").dataset.history = "";
      $("job-view").hidden = true;
      $("empty-view").hidden = false;
      setConnection("idle");
      jobsList.render();
    },

    // Stages seen in earlier runs are shown as pending before they start.
    async loadKnownStages(generation) {
      try {
        const res = await fetch("api/stages", { cache: "no-store" });
        if (!res.ok) return;
        const known = await res.json();
        if (generation !== this.generation || !Array.isArray(known)) return;
        for (const s of known) {
          if (s && typeof s.layer_name === "string") this.stage(s.layer_name, s.layer);
        }
        this.layout();
      } catch (_) {
        // Not essential: stages appear as the stream reports them.
      }
    },

    connect() {
      const url = "api/jobs/" + encodeURIComponent(this.jobId) + "/events";
      const source = new EventSource(url);
      const generation = this.generation;
      this.source = source;
      setConnection("connecting");

      source.onopen = () => {
        if (generation === this.generation && !this.finished) setConnection("live");
      };
      source.onmessage = (msg) => {
        if (generation !== this.generation) return;
        const seq = Number(msg.lastEventId);
        if (msg.lastEventId !== "" && isFinite(seq)) {
          if (seq <= this.lastSeq) return; // already shown (replay after reconnect)
          this.lastSeq = seq;
        }
        let data;
        try {
          data = JSON.parse(msg.data);
        } catch (_) {
          data = { type: "output", text: String(msg.data) };
        }
        this.handle(data);
      };
      source.addEventListener("end", (msg) => {
        if (generation !== this.generation) return;
        let data = {};
        try {
          data = JSON.parse(msg.data) || {};
        } catch (_) {
          // An end without a readable body still ends the stream.
        }
        // Closing matters: a stream that just ends makes EventSource reconnect.
        source.close();
        this.finish(data.status);
      });
      source.onerror = () => {
        if (generation !== this.generation || this.finished) return;
        if (source.readyState === EventSource.CLOSED) {
          // The browser gave up (the runner answered with an error status).
          // An unknown job stays unknown; anything else is retried, and the
          // replay is deduplicated by sequence number.
          this.retryOrGiveUp(generation);
        } else {
          setConnection("reconnecting");
        }
      };
    },

    async retryOrGiveUp(generation) {
      setConnection("reconnecting");
      try {
        const res = await fetch("api/jobs/" + encodeURIComponent(this.jobId), { cache: "no-store" });
        if (res.status === 404 && generation === this.generation) {
          setConnection("unavailable");
          $("job-summary").textContent = "The runner does not know this job.";
          return;
        }
      } catch (_) {
        // The runner is unreachable: keep trying.
      }
      setTimeout(() => {
        if (generation === this.generation && !this.finished) this.connect();
      }, 3000);
    },

    stage(name, layer) {
      let stage = this.stages.get(name);
      if (!stage) {
        stage = new Stage(name, layer);
        stage.button.addEventListener("click", () => this.toggleFilter(name));
        this.stages.set(name, stage);
        this.placeStage(stage);
      } else if (typeof layer === "number" && stage.layer !== layer) {
        stage.setLayer(layer);
        this.placeStage(stage);
      }
      return stage;
    },

    // Insert (or move) a stage's row so rows stay ordered by layer number,
    // then by name (two stages may share a layer number).
    placeStage(stage) {
      const list = $("stages");
      const key = (s) => [s.layer === null ? Infinity : s.layer, s.name];
      const [layer, name] = key(stage);
      let before = null;
      for (const other of this.stages.values()) {
        if (other === stage) continue;
        const [ol, on] = key(other);
        if (ol > layer || (ol === layer && on > name)) {
          if (!before || key(before)[0] > ol || (key(before)[0] === ol && key(before)[1] > on)) {
            before = other;
          }
        }
      }
      list.insertBefore(stage.row, before ? before.row : null);
      $("no-stages").hidden = true;
    },

    observeClock(ts) {
      const t = parseTime(ts);
      if (t === null) return null;
      const offset = Date.now() - t;
      if (this.clockOffset === null || offset < this.clockOffset) this.clockOffset = offset;
      return t;
    },

    handle(data) {
      if (!data || typeof data !== "object") return;
      if (data.type === "output") {
        this.outputLine(data);
        return;
      }
      const t = this.observeClock(data.timestamp);
      switch (data.event) {
        case "pipeline_start":
          if (this.pipelineStart === null) this.pipelineStart = t;
          this.setPipelineStatus("running");
          break;
        case "layer_start": {
          if (typeof data.layer_name !== "string") break;
          const stage = this.stage(data.layer_name, data.layer);
          stage.start = t;
          stage.setStatus("running");
          break;
        }
        case "layer_complete":
        case "layer_error":
        case "layer_skip": {
          if (typeof data.layer_name !== "string") break;
          const stage = this.stage(data.layer_name, data.layer);
          stage.setDuration(data.duration_ms);
          if (data.event === "layer_error") {
            stage.setError(data.error !== undefined ? data.error : "error");
          }
          if (stage.start === null && t !== null && typeof data.duration_ms === "number") {
            stage.start = t - data.duration_ms;
          }
          stage.setStatus(
            data.event === "layer_complete" ? "complete" : data.event === "layer_error" ? "error" : "skipped"
          );
          break;
        }
        case "pipeline_complete":
          this.pipelineEnd = t;
          if (typeof data.duration_ms === "number") this.pipelineDurationMs = data.duration_ms;
          if (this.pipelineStart === null && t !== null && typeof data.duration_ms === "number") {
            this.pipelineStart = t - data.duration_ms;
          }
          if (typeof data.status === "string") this.setPipelineStatus(data.status, data.error);
          this.stopRunningStages(data.error);
          break;
        case "log":
          this.logLine(data);
          break;
        default:
          break; // an event kind this page does not know: nothing to show
      }
      this.layout();
    },

    // A stage still running when its pipeline ended never finished.
    stopRunningStages(reason) {
      for (const stage of this.stages.values()) {
        if (stage.status === "running") {
          stage.cutOff = true;
          stage.setError("did not finish: the pipeline ended" + (reason ? " (" + reason + ")" : ""));
          stage.setStatus("error");
        }
      }
    },

    finish(status) {
      this.finished = true;
      if (typeof status === "string" && status) this.setPipelineStatus(status);
      this.stopRunningStages(typeof status === "string" ? status : "");
      // Stages known from earlier runs that this job never reached.
      for (const stage of this.stages.values()) {
        if (stage.status === "pending") stage.markNotRun();
      }
      if (this.tickTimer) clearInterval(this.tickTimer);
      this.tickTimer = null;
      this.layout();
      setConnection("finished");
      jobsList.refresh();
    },

    setPipelineStatus(status, error) {
      this.pipelineStatus = status;
      const pill = $("pipeline-status");
      pill.textContent = status;
      pill.dataset.status = status;
      pill.title = error ? String(error) : "pipeline " + status;
      $("cancel").hidden = !(status === "pending" || status === "running") || this.finished;
    },

    // ---- timeline

    now() {
      if (this.pipelineEnd !== null) return this.pipelineEnd;
      if (this.finished || this.clockOffset === null) return this.latestKnownTime();
      return Date.now() - this.clockOffset;
    },

    latestKnownTime() {
      let latest = this.pipelineStart;
      for (const s of this.stages.values()) {
        if (s.start === null) continue;
        const end = s.start + (s.durationMs || 0);
        if (latest === null || end > latest) latest = end;
      }
      return latest;
    },

    layout() {
      let origin = this.pipelineStart;
      if (origin === null) {
        for (const s of this.stages.values()) {
          if (s.start !== null && (origin === null || s.start < origin)) origin = s.start;
        }
      }
      const now = this.now();
      let end = now;
      for (const s of this.stages.values()) {
        if (s.start !== null && s.durationMs !== null && s.start + s.durationMs > end) {
          end = s.start + s.durationMs;
        }
      }
      const span = origin !== null && end !== null ? Math.max(end - origin, 1) : 0;
      const step = this.renderAxis(span);
      const stepPercent = step ? (step / span) * 100 : 0;
      for (const s of this.stages.values()) s.layout(origin, span, now, stepPercent);

      $("no-stages").hidden = this.stages.size > 0;
      this.updateSummary(span);
    },

    // Time labels above the tracks at a round step; returns the step in ms.
    renderAxis(span) {
      const axis = $("axis");
      if (!(span > 1)) {
        axis.replaceChildren();
        return 0;
      }
      const steps = [100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000];
      const step = steps.find((s) => span / s <= 8) || Math.ceil(span / 8 / 3600000) * 3600000;
      const labels = [];
      for (let t = 0; t <= span; t += step) {
        const at = (t / span) * 100;
        const label = el("span", "tick", formatTick(t, step));
        label.style.left = at + "%";
        if (at > 94) label.classList.add("end"); // keep the last label inside
        labels.push(label);
      }
      axis.replaceChildren(...labels);
      return step;
    },

    tick() {
      if (!this.finished && this.pipelineStatus === "running") this.layout();
    },

    updateSummary(span) {
      const counts = {};
      for (const s of this.stages.values()) counts[s.status] = (counts[s.status] || 0) + 1;
      const parts = [];
      for (const status of ["complete", "error", "skipped", "running", "pending"]) {
        if (counts[status]) parts.push(counts[status] + " " + status);
      }
      // A pipeline_complete added for a crashed or interrupted child may say 0.
      const total = this.pipelineDurationMs ? this.pipelineDurationMs : span > 1 ? span : null;
      if (total !== null) parts.push(formatDuration(total) + (this.pipelineEnd === null ? " so far" : " total"));
      $("job-summary").textContent = parts.join(" · ");
    },

    // ---- terminal

    logLine(data) {
      const line = el("div", "line log");
      const level = typeof data.level === "string" ? data.level.toLowerCase() : "info";
      line.classList.add("level-" + (["trace", "debug", "info", "warn", "error"].includes(level) ? level : "info"));
      if (typeof data.layer_name === "string") line.dataset.layerName = data.layer_name;
      line.appendChild(el("span", "ts", clockOf(data.timestamp)));
      line.appendChild(el("span", "level", level.toUpperCase()));
      if (typeof data.layer_name === "string") line.appendChild(el("span", "where", data.layer_name));
      else if (typeof data.target === "string") line.appendChild(el("span", "where", data.target));
      line.appendChild(el("span", "msg", data.message === undefined ? "" : String(data.message)));
      if (data.metadata && typeof data.metadata === "object") {
        const pairs = Object.entries(data.metadata).map(([k, v]) => k + "=" + (typeof v === "string" ? v : JSON.stringify(v)));
        if (pairs.length) line.appendChild(el("span", "meta", pairs.join(" ")));
      }
      this.queueLine(line);
    },

    outputLine(data) {
      const line = el("div", "line output");
      if (data.stream === "stderr") line.classList.add("stderr");
      line.appendChild(el("span", "msg", data.text === undefined ? "" : String(data.text)));
      this.queueLine(line);
    },

    // Lines are appended in batches so that replaying a long history does not
    // lay the page out once per line.
    queueLine(line) {
      this.pendingLines.push(line);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setTimeout(() => this.flushLines(), 16);
      }
    },

    flushLines() {
      this.flushScheduled = false;
      if (!this.pendingLines.length) return;
      const terminal = $("terminal");
      const atBottom = terminal.scrollHeight - terminal.scrollTop - terminal.clientHeight < 40;
      const batch = document.createDocumentFragment();
      for (const line of this.pendingLines) {
        if (this.filter !== null && line.dataset.layerName !== this.filter) line.classList.add("filtered-out");
        batch.appendChild(line);
      }
      this.lineCount += this.pendingLines.length;
      this.pendingLines = [];
      terminal.appendChild(batch);
      // Bound the page's memory on very long jobs: drop the oldest lines.
      let excess = terminal.childElementCount - TERMINAL_MAX_LINES;
      while (excess-- > 0) terminal.firstElementChild.remove();
      if (this.lineCount > TERMINAL_MAX_LINES) {
        terminal.dataset.dropped = String(this.lineCount - TERMINAL_MAX_LINES);
        terminal.title = "The oldest " + terminal.dataset.dropped + " lines are no longer shown.";
      }
      if (atBottom) terminal.scrollTop = terminal.scrollHeight;
    },

    // Clicking a stage shows only its log lines; clicking it again shows all.
    toggleFilter(name) {
      this.filter = this.filter === name ? null : name;
      const terminal = $("terminal");
      for (const stage of this.stages.values()) {
        stage.button.classList.toggle("focused", stage.name === this.filter);
        stage.button.setAttribute("aria-pressed", String(stage.name === this.filter));
      }
      if (this.filter === null) {
        terminal.removeAttribute("data-filter");
        $("terminal-filter").textContent = "";
      } else {
        terminal.dataset.filter = this.filter;
        $("terminal-filter").textContent = "showing " + this.filter + " only (click it again for all)";
      }
      for (const line of terminal.querySelectorAll(".line")) {
        line.classList.toggle("filtered-out", this.filter !== null && line.dataset.layerName !== this.filter);
      }
    },
  };

  // The connection's state, and the states it went through for this job
  // (`data-history`), which tests read to see that a reconnect happened.
  function setConnection(state) {
    const node = $("connection");
    if (node.dataset.state === state && node.dataset.history) return;
    node.dataset.state = state;
    node.dataset.history = node.dataset.history ? node.dataset.history + " " + state : state;
    node.textContent = state;
  }

  // ---------------------------------------------------------------- routing

  function route() {
    const m = /^#\/jobs\/([^/]+)$/.exec(location.hash);
    if (m) {
      let id;
      try {
        id = decodeURIComponent(m[1]);
      } catch (_) {
        id = m[1];
      }
      if (id !== jobView.jobId) jobView.open(id);
    } else {
      jobView.showEmpty();
    }
  }

  async function cancelJob() {
    if (!jobView.jobId) return;
    $("cancel").disabled = true;
    try {
      await fetch("api/jobs/" + encodeURIComponent(jobView.jobId) + "/cancel", { method: "POST" });
    } finally {
      $("cancel").disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("run").addEventListener("click", runJob);
    $("cancel").addEventListener("click", cancelJob);
    window.addEventListener("hashchange", route);
    jobsList.start();
    route();
  });
})();
