#!/usr/bin/env python3
"""Assemble results/perf/zo_step.csv and results/perf/zo_step.svg from GPU runs.

    python3 scripts/perf/merge_results.py OUT_DIR RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a folder written by scripts/perf/run_gpu.sh (or a later partial run): its
`memory-exact/zo_step.csv` or `mem/zo_step.csv`, then `memory-fast/zo_step.csv` (impl ours; the
fast normal math is the default since session 5, so its rows win within a run) and
`reference.csv` (impl pytorch-reference), and the TF32 files `memory-tf32-{exact,fast}/zo_step.csv`
/ `reference-tf32.csv` (dtype tf32). Later RUN_DIRs override earlier ones row by row, keyed on
(model, dtype, batch, seq, method, impl). Only the methods of the zo_step.csv contract
(infer, zo, dp-zoso, dp-zopo, dp-sgd, dp-sgd-microbatch, backprop, backprop-sgd) are kept;
`memory-<model>/zo_step.csv` folders come from scripts/gpu/dp_sgd.sh, and rows whose measurement failed
(ms_median nan) are dropped; the run folders keep everything. Standard library only.
"""
import csv
import math
import os
import sys

METHODS = ["infer", "zo", "dp-zoso", "dp-zopo", "dp-sgd", "dp-sgd-microbatch", "backprop",
           "backprop-sgd"]
# scripts/gpu/dp_sgd.sh writes one folder per model.
DP_SGD_MODELS = ["roberta-large", "opt-2.7b", "smollm2-135m", "opt-1.3b"]
HEADER = ["model", "dtype", "batch", "seq", "method", "impl", "ms_median", "peak_bytes"]


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def merged(run_dirs):
    rows = {}
    for run in run_dirs:
        # Within a run the default configuration wins: since session 5 the fast normal math
        # (memory-fast*), before it the exact one.
        for name in ["memory-exact/zo_step.csv", "mem/zo_step.csv", "memory-fast/zo_step.csv",
                     "reference.csv", "memory-tf32-exact/zo_step.csv",
                     "memory-tf32-fast/zo_step.csv", "reference-tf32.csv"] + [
                         f"memory-{m}/zo_step.csv" for m in DP_SGD_MODELS]:
            for row in read_rows(os.path.join(run, name)):
                if row["method"] not in METHODS or math.isnan(float(row["ms_median"])):
                    continue
                key = tuple(row[k] for k in HEADER[:6])
                rows[key] = row
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(rows.values(), key=lambda r: (r["model"], int(r["batch"]) * -1, order[r["method"]], r["impl"]))


def svg_bars(rows, path):
    """Two panels (step time, peak memory) of grouped bars: ours vs the PyTorch reference."""
    default = [r for r in rows if not (r["method"] == "dp-sgd" and r["batch"] not in ("16", "64"))]
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
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_dir, runs = sys.argv[1], sys.argv[2:]
    rows = merged(runs)
    with open(os.path.join(out_dir, "zo_step.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HEADER, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    svg_bars(rows, os.path.join(out_dir, "zo_step.svg"))
    print(f"wrote {len(rows)} rows to {out_dir}/zo_step.csv and the plot zo_step.svg")


if __name__ == "__main__":
    main()
