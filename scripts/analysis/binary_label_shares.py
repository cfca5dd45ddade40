#!/usr/bin/env python3
"""Label shares and per-label recall of a binary task's final test evaluations, for run records
written before the trainer recorded predicted labels (`trainer.test.predicted`).

For a binary task the prediction follows from the record's per-example outcome
(`trainer.test.correct`) and the gold label in the public test file: predicted = gold when
correct, else the other label. The columns are those of `repro check`'s labels.csv (means over
seeds, percent). Python 3 standard library only.

    scripts/analysis/binary_label_shares.py RESULTS_DIR TEST_TSV TASK OUT_CSV
    e.g. results/table2/mini $DATA/lm-bff/k-shot-1k-test/SST-2/512-13/test.tsv SST-2 out.csv
"""
import csv
import glob
import json
import os
import sys


def main(results, test_tsv, task, out):
    with open(test_tsv, newline="") as f:
        gold = [int(row["label"]) for row in csv.DictReader(f, delimiter="\t")]
    if set(gold) - {0, 1}:
        sys.exit(f"{test_tsv}: labels {sorted(set(gold))}: not a binary task")
    groups = {}
    for path in sorted(glob.glob(os.path.join(results, "runs", f"{task}__*.json"))):
        with open(path) as f:
            record = json.load(f)
        correct = record["trainer"]["test"].get("correct")
        if correct is None:
            continue
        if len(correct) != len(gold):
            sys.exit(f"{path}: {len(correct)} outcomes but {len(gold)} rows in {test_tsv}")
        predicted = [g if c == "1" else 1 - g for g, c in zip(gold, correct)]
        key = (record["method"], record["epsilon"])
        groups.setdefault(key, []).append(predicted)
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["task", "method", "epsilon", "n_seeds", "label", "gold_share",
                    "predicted_share", "recall"])
        for (method, eps), seeds in groups.items():
            for label in (0, 1):
                share = lambda xs: 100.0 * sum(x == label for x in xs) / len(xs)
                with_label = sum(g == label for g in gold)
                recall = [100.0 * sum(p == label and g == label for p, g in zip(pred, gold))
                          / with_label for pred in seeds]
                w.writerow([task, method, "" if eps is None else f"{eps:g}", len(seeds), label,
                            f"{share(gold):.2f}",
                            f"{sum(share(p) for p in seeds) / len(seeds):.2f}",
                            f"{sum(recall) / len(recall):.2f}"])


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
