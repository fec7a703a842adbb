// Terminal text to safe HTML: ANSI colours and bold through the vendored
// ansi_up library (its parser and its HTML escaping), with class names only.
//
// The page runs under a Content-Security-Policy without 'unsafe-inline', so a
// `style="..."` attribute would be blocked: every colour and weight becomes a
// class (`ansi-red-fg`, `ansi-bold`, ...) that style.css defines. 256-colour
// and true-colour codes map to the nearest of the 16 named colours. OSC 8
// hyperlinks show their text only. Other escape sequences are dropped by the
// parser; other control characters are removed here. A carriage return means
// "the line was redrawn": only the text after the last one is shown.

import { AnsiUp } from "./vendor/ansi_up.js";

const NAMED = [
  ["ansi-black", [0, 0, 0]],
  ["ansi-red", [187, 0, 0]],
  ["ansi-green", [0, 187, 0]],
  ["ansi-yellow", [187, 187, 0]],
  ["ansi-blue", [0, 0, 187]],
  ["ansi-magenta", [187, 0, 187]],
  ["ansi-cyan", [0, 187, 187]],
  ["ansi-white", [229, 229, 229]],
  ["ansi-bright-black", [85, 85, 85]],
  ["ansi-bright-red", [255, 85, 85]],
  ["ansi-bright-green", [85, 255, 85]],
  ["ansi-bright-yellow", [255, 255, 85]],
  ["ansi-bright-blue", [85, 85, 255]],
  ["ansi-bright-magenta", [255, 85, 255]],
  ["ansi-bright-cyan", [85, 255, 255]],
  ["ansi-bright-white", [255, 255, 255]],
];

/** The named colour class nearest to an RGB triple. */
export function nearestClass(rgb) {
  let best = NAMED[0][0];
  let bestDistance = Infinity;
  for (const [name, [r, g, b]] of NAMED) {
    const d = (r - rgb[0]) ** 2 + (g - rgb[1]) ** 2 + (b - rgb[2]) ** 2;
    if (d < bestDistance) {
      bestDistance = d;
      best = name;
    }
  }
  return best;
}

// ansi_up with class-only output: the library parses and escapes; this
// subclass only decides which class names a fragment gets.
class ClassAnsiUp extends AnsiUp {
  constructor() {
    super();
    this.use_classes = true;
    this.escape_html = true;
  }

  transform_to_html(fragment) {
    const text = fragment.text;
    if (text.length === 0) return "";
    const escaped = this.escape_txt_for_html(text);
    const classes = [];
    if (fragment.bold) classes.push("ansi-bold");
    if (fragment.faint) classes.push("ansi-faint");
    if (fragment.italic) classes.push("ansi-italic");
    if (fragment.underline) classes.push("ansi-underline");
    for (const [color, suffix] of [
      [fragment.fg, "-fg"],
      [fragment.bg, "-bg"],
    ]) {
      if (!color) continue;
      const name = color.class_name === "truecolor" ? nearestClass(color.rgb) : color.class_name;
      classes.push(name + suffix);
    }
    if (!classes.length) return escaped;
    return '<span class="' + classes.join(" ") + '">' + escaped + "</span>";
  }

  process_hyperlink(packet) {
    return this.escape_txt_for_html(packet.text);
  }
}

// Control characters other than tab. ESC and BEL are left to the parser
// first (they start and end the sequences it handles), then removed.
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f]/g;
// eslint-disable-next-line no-control-regex
const PARSER_KEEPS = /[\x00-\x06\x08\x0b-\x1a\x1c-\x1f\x7f]/g;
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[()][0-9A-Za-z]|[@-Z\\-_])/g;

/** The part of a line a terminal would show after carriage returns. */
export function afterCarriageReturn(text) {
  if (text.indexOf("\r") === -1) return text;
  const parts = text.split("\r");
  for (let i = parts.length - 1; i >= 0; i--) {
    if (parts[i] !== "") return parts[i];
  }
  return "";
}

/** Terminal text as HTML: escaped, with ANSI styles as classes. */
export function ansiToHtml(text) {
  const shown = afterCarriageReturn(String(text)).replace(PARSER_KEEPS, "");
  // A fresh parser per line: a colour left open does not leak into the
  // next line, which may be shown without this one (virtual scrolling).
  const parser = new ClassAnsiUp();
  return parser.ansi_to_html(shown).replace(CONTROLS, "");
}

/** Terminal text as plain text: every escape sequence removed. */
export function ansiToText(text) {
  return afterCarriageReturn(String(text)).replace(ESCAPES, "").replace(CONTROLS, "");
}
