// The SharedWorker every tab of the page shares: one event stream to the
// runner for the jobs all tabs watch (see hub.js), whatever the number of
// tabs, so browsers' six-connections-per-host limit never starves a tab.
//
// Tabs talk to it over their port: `{type:"watch", job, after}`,
// `{type:"unwatch", job}`, `{type:"jobs", on}`, `{type:"ping"}` every few
// seconds, and `{type:"bye"}` when they go away. A tab silent for longer
// than CLIENT_TIMEOUT_MS is taken for closed.

import { StreamHub } from "./hub.js";

const CLIENT_TIMEOUT_MS = 30000;

const hub = new StreamHub({
  EventSource,
  fetch: (...args) => fetch(...args),
  setTimeout: (f, ms) => setTimeout(f, ms),
  clearTimeout: (t) => clearTimeout(t),
  base: self.location.href,
});

const ports = new Set();

self.onconnect = (event) => {
  const port = event.ports[0];
  const client = { post: (msg) => port.postMessage(msg), port, seen: Date.now() };
  ports.add(client);
  hub.addClient(client);
  port.onmessage = (e) => {
    const msg = e.data || {};
    client.seen = Date.now();
    if (msg.type === "watch") hub.watch(client, msg.job, msg.after);
    else if (msg.type === "unwatch") hub.unwatch(client, msg.job);
    else if (msg.type === "jobs") hub.watchJobs(client, msg.on);
    else if (msg.type === "bye") {
      ports.delete(client);
      hub.removeClient(client);
    }
  };
  port.start();
};

setInterval(() => {
  const now = Date.now();
  for (const client of ports) {
    if (now - client.seen > CLIENT_TIMEOUT_MS) {
      ports.delete(client);
      hub.removeClient(client);
    }
  }
}, CLIENT_TIMEOUT_MS / 3);
