#!/usr/bin/env python3
"""Does DP-ZOPO lose its test accuracy on examples whose tokens its mask has left to drift?

An embedding row of a token that no training input uses gets no gradient, but a ZO step still
moves every coordinate it perturbs: by -lr * a_t * z_t,i, with z_t,i independent of a_t for such
a coordinate. Over a run the coordinate random-walks with standard deviation
lr * sqrt(sum_t a_t^2). This script reads, per seed, `repro mask-anatomy --exposure`'s CSV (how
many masked coordinates sit in the rows of each test example's unseen tokens, under the released
mask) and the run records' per-example test outcomes (`trainer.test.correct`), and compares
method A (default dp-zopo) with method B (default dpzero):
- per seed, the test examples split at that seed's median exposure (low: at or below, high:
  above), and A's accuracy minus B's in each half;
- the difference in differences (high minus low) per seed, and its mean over seeds with a 95%
  t-interval (t quantiles of the NIST/SEMATECH e-Handbook of Statistical Methods, table 1.3.6.7.2);
- the drift standard deviation of a dead coordinate, from each record's per-step sidecar
  (`learning_rate`, and `clip.mean_clipped_scalar` and `clip.noise_scale`: E[a_t^2] is the sum
  of their squares, as the noise is independent and centred).
Python 3 standard library only.

    scripts/analysis/mask_exposure.py RUNS_DIR TASK EPSILON OUT_CSV SEED=EXPOSURE_CSV... \
        [--a dp-zopo] [--b dpzero] [--selection smallest-score]
    e.g. results/table2/mini/runs SST-2 4 out.csv 13=exposure-13.csv 21=exposure-21.csv
--selection names the mask method A ran (the exposure CSV's columns: smallest-score, the
released one; largest-score, magnitude, random for the ablation variants).
"""
import argparse
import csv
import gzip
import json
import math
import os
import statistics
import sys

# Two-sided 95% quantiles of Student's t, by degrees of freedom (NIST/SEMATECH table 1.3.6.7.2).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}


def record(runs, task, method, epsilon, seed):
    path = os.path.join(runs, f"{task}__{method}__eps{epsilon:g}__seed{seed}.json")
    with open(path) as f:
        r = json.load(f)
    steps = os.path.join(runs, f"{task}__{method}__eps{epsilon:g}__seed{seed}.steps.jsonl.gz")
    drift2 = 0.0
    with gzip.open(steps, "rt") as f:
        for line in f:
            s = json.loads(line)
            c = s["clip"]
            drift2 += s["learning_rate"] ** 2 * (c["mean_clipped_scalar"] ** 2
                                                  + c["noise_scale"] ** 2)
    return r["trainer"]["test"]["correct"], math.sqrt(drift2), path


def accuracy(correct, indices):
    return 100.0 * sum(correct[i] == "1" for i in indices) / len(indices)


def main(runs, task, epsilon, out, pairs, a, b, selection):
    dose_column = f"exposed_coordinates_{selection}"
    rows, dids = [], []
    for pair in pairs:
        seed, exposure = pair.split("=", 1)
        with open(exposure, newline="") as f:
            dose = [int(row[dose_column]) for row in csv.DictReader(f)]
        ca, drift_a, pa = record(runs, task, a, epsilon, seed)
        cb, drift_b, pb = record(runs, task, b, epsilon, seed)
        for path, c in ((pa, ca), (pb, cb)):
            if len(c) != len(dose):
                sys.exit(f"{path}: {len(c)} test outcomes but {len(dose)} rows in {exposure}")
        median = statistics.median(dose)
        low = [i for i, d in enumerate(dose) if d <= median]
        high = [i for i, d in enumerate(dose) if d > median]
        if not low or not high:
            sys.exit(f"{exposure}: every example has the same exposure; no split")
        deltas = {}
        for name, part in (("low", low), ("high", high)):
            acc_a, acc_b = accuracy(ca, part), accuracy(cb, part)
            deltas[name] = acc_a - acc_b
            rows.append([task, epsilon, seed, name, len(part),
                         f"{statistics.mean(dose[i] for i in part):.1f}",
                         f"{acc_a:.2f}", f"{acc_b:.2f}", f"{acc_a - acc_b:.2f}",
                         f"{drift_a:.4f}", f"{drift_b:.4f}"])
        dids.append(deltas["high"] - deltas["low"])
        print(f"seed {seed}: median exposure {median}; {a} - {b}: low {deltas['low']:+.2f} "
              f"(n {len(low)}), high {deltas['high']:+.2f} (n {len(high)}); drift sd of a "
              f"dead coordinate {a} {drift_a:.4f}, {b} {drift_b:.4f}")
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["task", "epsilon", "seed", "exposure", "examples", "mean_exposed_coordinates",
                    f"accuracy_{a}", f"accuracy_{b}", "difference",
                    f"dead_coordinate_drift_sd_{a}", f"dead_coordinate_drift_sd_{b}"])
        w.writerows(rows)
    n = len(dids)
    mean = statistics.mean(dids)
    if n >= 2 and n - 1 in T975:
        half = T975[n - 1] * statistics.stdev(dids) / math.sqrt(n)
        interval = f"[{mean - half:+.2f}, {mean + half:+.2f}]"
    else:
        interval = "(no interval: fewer than 2 seeds, or more than the table holds)"
    print(f"difference in differences (high - low exposure) of {a} - {b}: {mean:+.2f} points "
          f"{interval} over {n} seeds; per seed {', '.join(f'{d:+.2f}' for d in dids)}")
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs")
    parser.add_argument("task")
    parser.add_argument("epsilon", type=float)
    parser.add_argument("out")
    parser.add_argument("pairs", nargs="+", metavar="SEED=EXPOSURE_CSV")
    parser.add_argument("--a", default="dp-zopo")
    parser.add_argument("--b", default="dpzero")
    parser.add_argument("--selection", default="smallest-score")
    args = parser.parse_args()
    main(args.runs, args.task, args.epsilon, args.out, args.pairs, args.a, args.b,
         args.selection)
