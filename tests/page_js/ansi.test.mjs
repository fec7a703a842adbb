// ANSI to HTML through the vendored library: escaped, class-only, safe.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ansiToHtml, ansiToText, afterCarriageReturn, nearestClass } from "../../src/runner/page/ansi.js";

test("SGR colours and bold become classes, never style attributes", () => {
  const html = ansiToHtml("\x1b[1;31mfailed\x1b[0m ok");
  assert.equal(html, '<span class="ansi-bold ansi-red-fg">failed</span> ok');
  const many = ansiToHtml("\x1b[38;5;196mx\x1b[48;2;0;0;200my\x1b[93;44mz");
  assert.doesNotMatch(many, /style=/);
  assert.match(many, /ansi-red-fg/);
  assert.match(many, /ansi-blue-bg/);
});

test("hostile text stays text", () => {
  for (const hostile of ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\x1b[31m<b onmouseover=x>\x1b[0m", "\"'&"]) {
    const html = ansiToHtml(hostile);
    assert.doesNotMatch(html, /<(?!\/?span\b)/, html);
    assert.equal(html.replace(/<\/?span[^>]*>/g, "").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&amp;/g, "&"), ansiToText(hostile));
  }
});

test("OSC 8 links show their text only", () => {
  const html = ansiToHtml("see \x1b]8;;javascript:alert(1)\x07here\x1b]8;;\x07.");
  assert.doesNotMatch(html, /href|<a/);
  assert.match(html, /here/);
});

test("other escapes and control characters are stripped", () => {
  assert.equal(ansiToHtml("\x1b[2K\x1b[1Gdone\x07\x08"), "done");
  assert.equal(ansiToText("\x1b[1;32mgreen\x1b[0m \x1b]0;title\x07x"), "green x");
});

test("a carriage return replaces the line", () => {
  assert.equal(afterCarriageReturn("10%\r50%\r100%"), "100%");
  assert.equal(afterCarriageReturn("progress\r"), "progress");
  assert.equal(ansiToHtml("\x1b[33m10%\r\x1b[32m100%"), '<span class="ansi-green-fg">100%</span>');
  assert.equal(ansiToText("a\rb"), "b");
});

test("a colour left open does not leak into the next line", () => {
  ansiToHtml("\x1b[31mred");
  assert.equal(ansiToHtml("plain"), "plain");
});

test("true colours map to the nearest named colour", () => {
  assert.equal(nearestClass([250, 90, 90]), "ansi-bright-red");
  assert.equal(nearestClass([0, 0, 0]), "ansi-black");
});
