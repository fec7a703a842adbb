// The tab's side of the event stream: a SharedWorker (stream-worker.js)
// when the browser has one, else a hub of its own that closes its
// connection while the tab is hidden and reopens it, resuming, when shown.
//
// `connectStream(onMessage)` returns `{kind, watch(job, after),
// unwatch(job), watchJobs(on)}`; `onMessage` gets the hub's messages
// (`conn`, `lines`, `end`, `jobs`).

import { StreamHub } from "./hub.js";

const PING_MS = 5000;

function sharedStream(onMessage) {
  const worker = new SharedWorker(new URL("stream-worker.js", document.baseURI), {
    type: "module",
    name: "pipeline-stream",
  });
  const port = worker.port;
  port.onmessage = (e) => onMessage(e.data);
  port.start();
  const send = (msg) => port.postMessage(msg);
  setInterval(() => send({ type: "ping" }), PING_MS);
  window.addEventListener("pagehide", () => send({ type: "bye" }));
  return {
    kind: "shared",
    watch: (job, after) => send({ type: "watch", job, after }),
    unwatch: (job) => send({ type: "unwatch", job }),
    watchJobs: (on) => send({ type: "jobs", on }),
  };
}

function directStream(onMessage) {
  const hub = new StreamHub({
    EventSource: window.EventSource,
    fetch: (...args) => window.fetch(...args),
    setTimeout: (f, ms) => window.setTimeout(f, ms),
    clearTimeout: (t) => window.clearTimeout(t),
    base: document.baseURI,
  });
  const client = { post: onMessage };
  hub.addClient(client);
  const sync = () => (document.hidden ? hub.suspend() : hub.resume());
  document.addEventListener("visibilitychange", sync);
  if (document.hidden) hub.suspend();
  return {
    kind: "direct",
    watch: (job, after) => hub.watch(client, job, after),
    unwatch: (job) => hub.unwatch(client, job),
    watchJobs: (on) => hub.watchJobs(client, on),
  };
}

/** Opens the page's stream: shared across tabs where the browser can. */
export function connectStream(onMessage, { forceDirect = false } = {}) {
  if (!forceDirect && typeof SharedWorker === "function") {
    try {
      return sharedStream(onMessage);
    } catch (_) {
      // A browser that refuses module workers: one stream per tab.
    }
  }
  return directStream(onMessage);
}
