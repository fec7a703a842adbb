#!/usr/bin/env python3
"""Render docs/perf-ratios.svg from criterion's results of `cargo bench --bench layer`.

Reads <criterion dir>/<group>/<bench>/new/estimates.json (the last run of
each benchmark), prints the tables of docs/performance.md as Markdown, and
writes a horizontal bar chart of each variant's cost relative to the
hand-written baseline. Python 3 standard library only.

    python3 scripts/perf_chart.py [CRITERION_DIR] [OUT_SVG]

CRITERION_DIR defaults to $CRITERION_HOME, else $CARGO_TARGET_DIR/criterion,
else target/criterion; OUT_SVG to docs/perf-ratios.svg.
"""

import json
import os
import sys
from pathlib import Path
from xml.sax.saxutils import escape

RUN = "pipeline_run"
FILTERED = "filtered_info"
BASELINE = "hand_written"
TARGET = 1.2

# (criterion id, label in the chart and the tables), in display order.
VARIANTS = [
    ("no_subscriber", "no subscriber (floor)"),
    ("registry_only", "registry, no layer"),
    ("hand_written", "hand-written, no tracing"),
    ("pipeline_layer", "PipelineLayer"),
    ("bunyan", "tracing-bunyan-formatter"),
    ("fmt_json", "fmt().json(), NEW + CLOSE"),
]


def criterion_dir() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    if os.environ.get("CRITERION_HOME"):
        return Path(os.environ["CRITERION_HOME"])
    root = Path(__file__).resolve().parent.parent
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    return target / "criterion"


def mean_ns(base: Path, group: str, name: str):
    path = base / group / name / "new" / "estimates.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    est = data["mean"]
    return est["point_estimate"], est["confidence_interval"]


def svg_chart(rows, filtered) -> str:
    """rows: [(label, ratio, ns)], drawn as bars on a linear scale."""
    width, left, right, bar, gap, top = 760, 210, 150, 22, 10, 58
    height = top + len(rows) * (bar + gap) + 56
    span = width - left - right
    top_ratio = max(r for _, r, _ in rows)
    scale = span / top_ratio
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        '<text x="16" y="24" font-size="16" font-weight="bold">'
        "One pipeline run (9 spans, 8 events, 26 lines): cost relative to writing the bytes by hand</text>",
        '<text x="16" y="44" fill="#555">criterion means of one run, '
        "lower is better; 1.0 = hand-written baseline</text>",
    ]
    for i, (label, ratio, ns) in enumerate(rows):
        y = top + i * (bar + gap)
        w = max(ratio * scale, 1.5)
        colour = "#2b7bb9" if label == "PipelineLayer" else (
            "#7a7a7a" if ratio <= 1.0 else "#c8553d")
        out.append(
            f'<text x="{left - 8}" y="{y + bar * 0.7:.1f}" text-anchor="end">{escape(label)}</text>')
        out.append(
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colour}"/>')
        # Labels of short bars start past the reference lines.
        label_x = left + max(w, TARGET * scale) + 6
        out.append(
            f'<text x="{label_x:.1f}" y="{y + bar * 0.7:.1f}">'
            f'{ratio:.2f}x ({ns / 1000:.1f} µs)</text>')
    bottom = top + len(rows) * (bar + gap)
    for ref, text, dash in ((1.0, "1.0x", ""), (TARGET, "target 1.2x", ' stroke-dasharray="4 3"')):
        x = left + ref * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{bottom}" stroke="#333"{dash}/>')
        anchor = "end" if ref == 1.0 else "start"
        dx = -3 if ref == 1.0 else 3
        out.append(
            f'<text x="{x + dx:.1f}" y="{bottom + 14}" font-size="11" text-anchor="{anchor}">{text}</text>')
    if filtered:
        layer_ns, none_ns = filtered
        out.append(
            f'<text x="16" y="{height - 12}" fill="#333">An info! filtered out by LOG_LEVEL=warn: '
            f'{layer_ns:.2f} ns vs {none_ns:.2f} ns with no subscriber '
            f'({layer_ns / none_ns:.2f}x, target 1.5x)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    base = criterion_dir()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else \
        Path(__file__).resolve().parent.parent / "docs" / "perf-ratios.svg"
    baseline = mean_ns(base, RUN, BASELINE)
    if baseline is None:
        print(f"no {RUN}/{BASELINE} results under {base}: run `cargo bench --bench layer` first",
              file=sys.stderr)
        return 1
    base_ns = baseline[0]
    rows = []
    print("| variant | ns per run | 95% CI | ratio to hand-written |")
    print("|---|---:|---:|---:|")
    for name, label in VARIANTS:
        m = mean_ns(base, RUN, name)
        if m is None:
            continue
        ns, ci = m
        rows.append((label, ns / base_ns, ns))
        print(f"| {label} | {ns:,.0f} | {ci['lower_bound']:,.0f} – {ci['upper_bound']:,.0f} "
              f"| {ns / base_ns:.2f}x |")
    filtered = None
    layer = mean_ns(base, FILTERED, "pipeline_layer_warn")
    none = mean_ns(base, FILTERED, "no_subscriber")
    if layer and none:
        filtered = (layer[0], none[0])
        print()
        print("| an `info!` outside any pipeline | ns per call | ratio to no subscriber |")
        print("|---|---:|---:|")
        print(f"| PipelineLayer, LOG_LEVEL=warn | {layer[0]:.2f} | {layer[0] / none[0]:.2f}x |")
        print(f"| no subscriber | {none[0]:.2f} | 1.00x |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg_chart(rows, filtered), encoding="utf-8")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
