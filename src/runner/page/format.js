// Formatting shared by the views: durations, UTC times, status words.
// Pure functions, unit-tested under node.

/** "850 ms", "1.2 s", "12 s", "1 m 5 s", "2 h 3 m"; "" when unknown. */
export function formatDuration(ms) {
  if (typeof ms !== "number" || !isFinite(ms) || ms < 0) return "";
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 60) return Math.round(s) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " m " + Math.round(s - m * 60) + " s";
  const h = Math.floor(m / 60);
  return h + " h " + (m - h * 60) + " m";
}

/** Axis label for `ms` on a timeline whose step is `step` ms. */
export function formatTick(ms, step) {
  if (ms === 0) return "0";
  if (ms < 1000) return ms + " ms";
  if (ms >= 60000 && ms % 60000 === 0) return ms / 60000 + " min";
  return (ms / 1000).toFixed(step % 1000 === 0 ? 0 : 1) + " s";
}

/** Milliseconds since the epoch, or null. */
export function parseTime(ts) {
  const t = typeof ts === "string" ? Date.parse(ts) : NaN;
  return isFinite(t) ? t : null;
}

/** "2026-12-01 16:47:33 UTC": every time on the page is UTC, zone written. */
export function formatUtc(ts) {
  const t = parseTime(ts);
  if (t === null) return "";
  const iso = new Date(t).toISOString(); // 2026-12-01T16:47:33.123Z
  return iso.slice(0, 10) + " " + iso.slice(11, 19) + " UTC";
}

/** "16:47:33.123" of a pipeline timestamp (UTC; the zone is in the header). */
export function clockOf(ts) {
  if (typeof ts !== "string") return "";
  const m = /T(\d\d:\d\d:\d\d(?:\.\d{1,3})?)/.exec(ts);
  return m ? m[1] : "";
}

/** "1,000,000". */
export function formatCount(n) {
  if (typeof n !== "number" || !isFinite(n)) return "";
  return Math.round(n).toLocaleString("en-US");
}

/** The words shown for a job outcome. */
export const OUTCOME_WORDS = {
  queued: "queued",
  running: "running",
  success: "success",
  partial: "partial",
  error: "failed",
  cancelled: "cancelled",
  interrupted: "interrupted",
  unknown: "unknown",
};

/** The words shown for a stage status. */
export const STAGE_WORDS = {
  pending: "pending",
  running: "running",
  complete: "complete",
  error: "failed",
  skipped: "skipped",
  cancelled: "cancelled",
};

/** A metadata value as short text. */
export function formatValue(v) {
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean" || v === null) return String(v);
  try {
    return JSON.stringify(v);
  } catch (_) {
    return String(v);
  }
}
