// WCAG AA (4.5:1) for the page's text colours, light and dark themes,
// read from style.css's custom properties.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const css = readFileSync(new URL("../../src/runner/page/style.css", import.meta.url), "utf8");

function vars(block) {
  const out = {};
  for (const m of block.matchAll(/--([a-z-]+):\s*(#[0-9a-f]{6})\s*;/gi)) out[m[1]] = m[2];
  return out;
}
const light = vars(css.slice(css.indexOf(":root {"), css.indexOf("@media (prefers-color-scheme: dark)")));
const darkBlock = css.slice(css.indexOf("@media (prefers-color-scheme: dark)"));
const dark = { ...light, ...vars(darkBlock.slice(0, darkBlock.indexOf("\n}\n"))) };

function luminance(hex) {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255).map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}
export function ratio(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

const PAIRS = [
  ["text", "panel"], ["text", "bg"], ["muted", "panel"], ["muted", "bg"], ["link", "panel"],
  ["topbar-text", "topbar"], ["term-text", "term-bg"], ["term-muted", "term-bg"],
];
for (const status of ["pending", "running", "complete", "error", "skipped", "cancelled", "interrupted"]) {
  PAIRS.push([status, status + "-bg"], ["text", status + "-bg"]);
}
PAIRS.push(["muted", "pending-bg"]);
// The stage history's marks and the "2.3x p50" text sit on the panel.
for (const status of ["complete", "error", "skipped", "cancelled", "running"]) PAIRS.push([status, "panel"]);

for (const [name, theme] of [["light", light], ["dark", dark]]) {
  test(`AA contrast in the ${name} theme`, () => {
    for (const [fg, bg] of PAIRS) {
      assert.ok(theme[fg] && theme[bg], `--${fg} and --${bg} are defined`);
      const r = ratio(theme[fg], theme[bg]);
      assert.ok(r >= 4.5, `--${fg} ${theme[fg]} on --${bg} ${theme[bg]}: ${r.toFixed(2)}:1`);
    }
  });
}
