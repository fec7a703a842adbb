// A virtualised terminal: only the rows in view exist in the DOM.
//
// The scroll height stands for every line of the job (capped at MAX_PX, past
// which a scroll position maps to a line proportionally), and the rows in
// view are drawn, at most once per animation frame, from a source that
// fetches the lines it lacks from the runner in pages. Two sources:
// `AllLines` (every line of the job, row i is sequence number i + 1, fed
// live from the stream) and `FilteredLines` (the rows of `/lines` with a
// stage or level filter, fetched page after page as the view reaches the
// end).

import { ansiToHtml } from "./ansi.js";
import { clockOf, formatValue } from "./format.js";

const MAX_PX = 8000000;
const PAGE = 500;
const MAX_PAGES = 80;
const LIVE_DRAW_MS = 200;
const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** Every line of a job, in pages fetched on demand. */
export class AllLines {
  constructor(fetchPage, onChange) {
    this.fetchPage = fetchPage; // (from, limit) => Promise<{rows}>
    this.onChange = onChange;
    this.total = 0;
    this.pages = new Map(); // page number -> {rows: Array, used}
    this.loading = new Set();
    this.clock = 0;
  }

  count() {
    return this.total;
  }

  setTotal(n) {
    if (n > this.total) this.total = n;
  }

  page(number) {
    let page = this.pages.get(number);
    if (!page) {
      page = { rows: new Array(PAGE), used: 0 };
      this.pages.set(number, page);
    }
    page.used = ++this.clock;
    return page;
  }

  put(rows) {
    for (const row of rows) {
      if (!row || typeof row.seq !== "number" || row.seq < 1) continue;
      const n = Math.floor((row.seq - 1) / PAGE);
      this.page(n).rows[(row.seq - 1) % PAGE] = row;
      if (row.seq > this.total) this.total = row.seq;
    }
    this.evict();
  }

  evict() {
    if (this.pages.size <= MAX_PAGES) return;
    const last = Math.floor((this.total - 1) / PAGE);
    const byAge = [...this.pages.entries()].filter(([n]) => n !== last).sort((a, b) => a[1].used - b[1].used);
    for (const [n] of byAge.slice(0, this.pages.size - MAX_PAGES)) this.pages.delete(n);
  }

  row(index) {
    const page = this.pages.get(Math.floor(index / PAGE));
    return page ? page.rows[index % PAGE] || null : null;
  }

  ensure(first, last) {
    const end = Math.min(last, this.total - 1);
    if (end < first) return;
    for (let n = Math.floor(first / PAGE); n <= Math.floor(Math.max(end, first) / PAGE); n++) {
      if (this.loading.has(n)) continue;
      const page = this.pages.get(n);
      let missing = !page;
      if (page) {
        page.used = ++this.clock;
        const lo = Math.max(first, n * PAGE);
        const hi = Math.min(end, n * PAGE + PAGE - 1);
        for (let i = lo; i <= hi && !missing; i++) if (!page.rows[i % PAGE]) missing = true;
      }
      if (!missing) continue;
      this.loading.add(n);
      this.fetchPage(n * PAGE + 1, PAGE)
        .then((answer) => {
          this.put(answer.rows);
          if (typeof answer.lastSeq === "number") this.setTotal(answer.lastSeq);
        })
        .catch(() => {
          // Unreachable runner: the rows stay placeholders and are asked for
          // again the next time they are in view.
        })
        .finally(() => {
          this.loading.delete(n);
          this.onChange();
        });
    }
  }

  indexOfSeq(seq) {
    return seq - 1;
  }
}

/** Whether a line belongs in a view filtered by stage and level. */
export function lineMatches(data, { stage = null, level = null } = {}) {
  if (!data || typeof data !== "object") return false;
  if (stage !== null && data.layer_name !== stage) return false;
  if (level !== null) {
    if (data.event !== "log") return false;
    const at = LEVELS.indexOf(String(data.level || "").toLowerCase());
    if (at < LEVELS.indexOf(level)) return false;
  }
  return true;
}

/** The rows of `/lines` with a filter, fetched in order as they are reached. */
export class FilteredLines {
  constructor(fetchFrom, filter, onChange) {
    this.fetchFrom = fetchFrom; // (from, limit) => Promise<{rows, nextFrom}>
    this.filter = filter;
    this.onChange = onChange;
    this.rows = [];
    this.nextFrom = 1;
    this.loading = false;
    this.done = false;
    this.failed = false;
    this.lastSeq = 0;
  }

  count() {
    return this.rows.length;
  }

  row(index) {
    return this.rows[index] || null;
  }

  ensure(_first, last) {
    if (this.loading || this.done || last < this.rows.length - PAGE / 2) return;
    this.loading = true;
    this.fetchFrom(this.nextFrom, PAGE * 2)
      .then((answer) => {
        for (const row of answer.rows) {
          if (row.seq > this.lastSeq) {
            this.rows.push(row);
            this.lastSeq = row.seq;
          }
        }
        if (answer.nextFrom === null) {
          this.done = true;
          if (typeof answer.lastSeq === "number" && answer.lastSeq > this.lastSeq) this.lastSeq = answer.lastSeq;
        } else {
          this.nextFrom = answer.nextFrom;
        }
        this.failed = false;
      })
      .catch(() => {
        this.failed = true;
      })
      .finally(() => {
        this.loading = false;
        this.onChange();
      });
  }

  // Live lines: appended once every earlier match has been fetched. (A
  // thinned batch leaves out only plain output lines, which no stage or
  // level filter matches.)
  put(rows, lastSeq) {
    if (!this.done) return;
    for (const row of rows) {
      if (row.seq > this.lastSeq) {
        this.lastSeq = row.seq;
        if (lineMatches(row.data, this.filter)) this.rows.push(row);
      }
    }
    if (typeof lastSeq === "number" && lastSeq > this.lastSeq) this.lastSeq = lastSeq;
  }

  indexOfSeq(seq) {
    let lo = 0;
    let hi = this.rows.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.rows[mid].seq < seq) lo = mid + 1;
      else hi = mid - 1;
    }
    return lo < this.rows.length ? lo : -1;
  }
}

// ---------------------------------------------------------------- rendering

function span(className, text) {
  const node = document.createElement("span");
  node.className = className;
  node.textContent = text;
  return node;
}

// Pipeline text through the ANSI library: escaped, styles as classes.
function ansiSpan(className, text) {
  const node = document.createElement("span");
  node.className = className;
  node.innerHTML = ansiToHtml(text === undefined || text === null ? "" : String(text));
  return node;
}

/** The content of one terminal row for a stored line. */
export function describeLine(data) {
  if (!data || typeof data !== "object") return { kind: "output", text: String(data) };
  if (data.type === "output") {
    return { kind: data.stream === "stderr" ? "stderr" : "output", text: data.text, where: data.layer_name };
  }
  switch (data.event) {
    case "log":
      return { kind: "log", level: String(data.level || "info").toLowerCase(), text: data.message, where: data.layer_name || data.target };
    case "pipeline_start":
      return { kind: "event", text: "pipeline started" };
    case "pipeline_complete":
      if (data.error === "cancelled") return { kind: "event-cancel", text: "pipeline cancelled" };
      return {
        kind: data.status === "success" ? "event" : "event-bad",
        text: "pipeline " + (data.status || "ended") + (data.error ? ": " + data.error : ""),
      };
    case "layer_start":
      return { kind: "event", text: "stage started", where: data.layer_name };
    case "layer_complete":
      return { kind: "event", text: "stage complete", where: data.layer_name };
    case "layer_skip":
      return { kind: "event", text: "stage skipped" + (data.reason ? ": " + data.reason : ""), where: data.layer_name };
    case "layer_error":
      return {
        kind: data.error === "cancelled" ? "event-cancel" : "event-bad",
        text: (data.error === "cancelled" ? "stage cancelled" : "stage failed") + (data.error && data.error !== "cancelled" ? ": " + data.error : ""),
        where: data.layer_name,
      };
    default:
      return { kind: "event", text: String(data.event || data.type || "line") };
  }
}

/** Fills `node` (a row element) with the line `row` of job `jobId`. */
export function renderRow(node, row, jobId, seqHint) {
  const seq = row ? row.seq : seqHint;
  node.replaceChildren();
  node.className = "line";
  node.dataset.seq = seq === null || seq === undefined ? "" : String(seq);
  const link = document.createElement("a");
  link.className = "seq";
  link.textContent = seq === null || seq === undefined ? "" : String(seq);
  if (seq) link.href = "#/jobs/" + encodeURIComponent(jobId) + "/lines/" + seq;
  link.tabIndex = -1;
  node.appendChild(link);
  if (!row) {
    node.classList.add("placeholder");
    node.appendChild(span("msg", "\u2026"));
    return;
  }
  const data = row.data;
  const d = describeLine(data);
  node.classList.add(d.kind);
  if (d.kind === "log") {
    node.classList.add("level-" + (LEVELS.includes(d.level) ? d.level : "info"));
    node.appendChild(span("ts", clockOf(data.timestamp)));
    node.appendChild(span("level", d.level.toUpperCase()));
  } else if (data && typeof data.timestamp === "string") {
    node.appendChild(span("ts", clockOf(data.timestamp)));
  }
  if (d.where) node.appendChild(span("where", String(d.where)));
  node.appendChild(ansiSpan("msg", d.text));
  if (data && data.metadata && typeof data.metadata === "object") {
    const pairs = Object.entries(data.metadata).map(([k, v]) => k + "=" + formatValue(v));
    if (pairs.length) node.appendChild(ansiSpan("meta", pairs.join(" ")));
  }
}

/** The scrolling view over a source. */
export class VirtualTerminal {
  constructor(scroller, { rowHeight = 20, jobId = () => "" } = {}) {
    this.scroller = scroller;
    this.rowHeight = rowHeight;
    this.jobId = jobId;
    this.source = null;
    this.spacer = document.createElement("div");
    this.spacer.className = "term-spacer";
    this.rowsBox = document.createElement("div");
    this.rowsBox.className = "term-rows";
    this.empty = document.createElement("p");
    this.empty.className = "term-empty";
    this.empty.hidden = true;
    scroller.replaceChildren(this.spacer, this.rowsBox, this.empty);
    this.pool = [];
    this.follow = true;
    this.frame = null;
    this.marks = new Set(); // search matches (seqs)
    this.current = null; // the seq jumped to
    this.emptyText = "No lines yet.";
    this.lastTop = 0;
    this.lastDraw = -Infinity;
    this.longestDrawMs = 0;
    scroller.addEventListener("scroll", () => {
      const top = scroller.scrollTop;
      // Scrolling up leaves follow mode; reaching the bottom enters it.
      if (top < this.lastTop - 1) this.follow = false;
      this.lastTop = top;
      if (this.atBottom()) this.follow = true;
      this.schedule(true);
    });
    window.addEventListener("resize", () => this.schedule(true));
  }

  setSource(source, emptyText) {
    this.source = source;
    this.emptyText = emptyText || "No lines yet.";
    this.follow = true;
    this.current = null;
    this.marks = new Set();
    for (const node of this.pool) node.dataset.key = "";
    this.scroller.scrollTop = 0;
    this.lastTop = 0;
    this.schedule(true);
  }

  geometry() {
    const count = this.source ? this.source.count() : 0;
    const view = Math.max(this.scroller.clientHeight, this.rowHeight);
    const height = Math.min(count * this.rowHeight, MAX_PX);
    const scrollMax = Math.max(0, height - view);
    const maxFirst = Math.max(0, count - view / this.rowHeight);
    return { count, view, height, scrollMax, maxFirst };
  }

  atBottom() {
    const g = this.geometry();
    return this.scroller.scrollTop >= g.scrollMax - 2;
  }

  // Draws in the next animation frame. New lines arriving (`urgent` false)
  // draw at most every LIVE_DRAW_MS, so a job printing as fast as it can
  // leaves the main thread free; scrolling draws in the next frame.
  schedule(urgent = false) {
    if (this.frame !== null) return;
    const wait = urgent ? 0 : this.lastDraw + LIVE_DRAW_MS - performance.now();
    const frame = () => {
      this.frame = requestAnimationFrame(() => {
        this.frame = null;
        const started = performance.now();
        this.lastDraw = started;
        this.draw();
        this.longestDrawMs = Math.max(this.longestDrawMs, performance.now() - started);
      });
    };
    if (wait > 0) {
      this.frame = setTimeout(frame, wait);
    } else {
      frame();
    }
  }

  /** Scrolls so that sequence number `seq` is in view (centred). */
  scrollToSeq(seq) {
    if (!this.source) return false;
    const index = this.source.indexOfSeq(seq);
    if (index < 0) return false;
    this.current = seq;
    this.follow = false;
    const g = this.geometry();
    const rowsInView = g.view / this.rowHeight;
    const first = Math.max(0, Math.min(g.maxFirst, index - rowsInView / 2 + 0.5));
    this.spacer.style.height = g.height + "px";
    this.scroller.scrollTop = g.maxFirst > 0 ? (first / g.maxFirst) * g.scrollMax : 0;
    this.lastTop = this.scroller.scrollTop;
    this.schedule(true);
    return true;
  }

  /** Draws the rows in view; asks the source for the ones it lacks. */
  draw() {
    const source = this.source;
    const g = this.geometry();
    this.spacer.style.height = g.height + "px";
    if (this.follow && g.count > 0) {
      this.scroller.scrollTop = g.scrollMax;
      this.lastTop = this.scroller.scrollTop;
    }
    this.empty.hidden = g.count > 0;
    this.scroller.dataset.total = String(g.count);
    if (!source || g.count === 0) {
      // An empty filtered view fetches its first page from here.
      if (source) source.ensure(0, Math.ceil(g.view / this.rowHeight));
      this.empty.textContent = source && source.loading === true ? "Loading\u2026" : this.emptyText;
      for (const node of this.pool) node.hidden = true;
      return;
    }
    const top = Math.min(this.scroller.scrollTop, g.scrollMax);
    const pos = g.scrollMax > 0 ? (top / g.scrollMax) * g.maxFirst : 0;
    const first = Math.floor(pos);
    const visible = Math.min(g.count - first, Math.ceil(g.view / this.rowHeight) + 1);
    this.rowsBox.style.transform = "translateY(" + (top - (pos - first) * this.rowHeight) + "px)";
    source.ensure(first, first + visible - 1);
    while (this.pool.length < visible) {
      const node = document.createElement("div");
      this.rowsBox.appendChild(node);
      this.pool.push(node);
    }
    const jobId = this.jobId();
    for (let i = 0; i < this.pool.length; i++) {
      const node = this.pool[i];
      if (i >= visible) {
        node.hidden = true;
        continue;
      }
      node.hidden = false;
      const index = first + i;
      const row = source.row(index);
      const seqHint = source instanceof AllLines ? index + 1 : null;
      const key = row ? "r" + row.seq : "p" + seqHint;
      if (node.dataset.key !== key) {
        renderRow(node, row, jobId, seqHint);
        node.dataset.key = key;
      }
      const seq = row ? row.seq : seqHint;
      node.classList.toggle("match", this.marks.has(seq));
      node.classList.toggle("current", seq !== null && seq === this.current);
    }
    this.scroller.dataset.first = String(first + 1);
  }
}
