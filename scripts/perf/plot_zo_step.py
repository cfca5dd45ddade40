#!/usr/bin/env python3
"""Plot results/perf/zo_step.csv (built by `repro perf-table`) as results/perf/zo_step.svg.

    python3 scripts/perf/plot_zo_step.py [PERF_DIR]     # default results/perf

Two panels (step time, peak memory) of grouped bars, ours vs the PyTorch reference. Standard
library only.
"""
import csv
import math
import os
import sys

METHODS = ["infer", "zo", "dp-zoso", "dp-zopo", "dp-sgd", "dp-sgd-microbatch", "backprop",
           "backprop-sgd"]


def svg_bars(rows, path):
    """Two panels (step time, peak memory) of grouped bars: ours vs the PyTorch reference."""
    default = [r for r in rows
               if not (r["method"].startswith("dp-sgd") and r["batch"] not in ("16", "64"))]
    models = sorted({r["model"] for r in default})
    groups = [(m, meth) for m in models for meth in METHODS
              if any(r["model"] == m and r["method"] == meth for r in default)]
    colours = {"ours": "#1f77b4", "pytorch-reference": "#ff7f0e"}
    width, bar, gap, top = 60 + 46 * len(groups), 18, 10, 40
    panels = [("ms_median", "median step time (ms, log)"), ("peak_bytes", "peak device memory (GiB, log)")]
    height = 40 + 260 * len(panels)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">']
    for p, (field, title) in enumerate(panels):
        y0 = top + 260 * p
        values = [float(r[field]) / (2**30 if field == "peak_bytes" else 1) for r in default if float(r[field]) > 0]
        lo, hi = math.log10(min(values)) - 0.2, math.log10(max(values)) + 0.1
        scale = lambda v: 200 * (math.log10(v) - lo) / (hi - lo)
        out.append(f'<text x="10" y="{y0 - 12}" font-size="12">{title}</text>')
        out.append(f'<line x1="50" y1="{y0 + 200}" x2="{width - 10}" y2="{y0 + 200}" stroke="black"/>')
        for g, (model, method) in enumerate(groups):
            x = 55 + 46 * g
            for i, impl in enumerate(["ours", "pytorch-reference"]):
                match = [r for r in default if r["model"] == model and r["method"] == method and r["impl"] == impl]
                if not match or float(match[0][field]) <= 0:
                    continue
                v = float(match[0][field]) / (2**30 if field == "peak_bytes" else 1)
                h = max(scale(v), 1)
                out.append(f'<rect x="{x + i * bar}" y="{y0 + 200 - h:.1f}" width="{bar - 2}" height="{h:.1f}" fill="{colours[impl]}"><title>{model} {method} {impl}: {v:.4g}</title></rect>')
                out.append(f'<text x="{x + i * bar + 1}" y="{y0 + 197 - h:.1f}" font-size="7">{v:.3g}</text>')
            out.append(f'<text x="{x}" y="{y0 + 212}" font-size="8">{method}</text>')
            out.append(f'<text x="{x}" y="{y0 + 222}" font-size="7">{model}</text>')
    for i, (impl, colour) in enumerate(colours.items()):
        out.append(f'<rect x="{width - 220 + i * 110}" y="8" width="10" height="10" fill="{colour}"/><text x="{width - 206 + i * 110}" y="17">{impl}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    perf_dir = sys.argv[1] if len(sys.argv) > 1 else "results/perf"
    with open(os.path.join(perf_dir, "zo_step.csv")) as f:
        rows = list(csv.DictReader(f))
    svg_bars(rows, os.path.join(perf_dir, "zo_step.svg"))
    print(f"plotted {len(rows)} rows into {perf_dir}/zo_step.svg")


if __name__ == "__main__":
    main()
