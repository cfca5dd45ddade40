#!/usr/bin/env python3
"""Do a sentence-pair task's trained models answer by surface cues? Per run record, the
correlation of "predicts label 0" with three cues of each test example: the share of the
second sentence's words that also occur in the first (lexical overlap, the classic RTE/NLI
shortcut), and each sentence's length in words. The gold labels' correlations come first, as
the reference: a cue the models follow more than the gold labels do is one they learned or
inherited. Descriptive (one correlation per seed), not a test.

Predictions come from the records (`trainer.test.predicted`, `trainer.test.gold`: a digit per
example); the texts
from the public test file, whose row order the records follow (checked on the gold labels).
Python 3 standard library only.

    scripts/analysis/surface_cues.py RESULTS_DIR TEST_TSV TASK OUT_CSV
    e.g. results/table2/mini $DATA/lm-bff/k-shot-1k-test/RTE/512-13/test.tsv RTE out.csv
"""
import csv
import re
import statistics
import sys

from record_answers import records_with_answers


def words(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def correlation(xs, ys):
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None  # a constant answer: no correlation defined
    return sxy / (sxx * syy) ** 0.5


def main(results, test_tsv, task, out):
    with open(test_tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for key in ("sentence1", "sentence2"):
        if rows and key not in rows[0]:
            sys.exit(f"{test_tsv}: no column {key!r}: not a sentence-pair task file")
    def overlap(row):
        first, second = set(words(row["sentence1"])), set(words(row["sentence2"]))
        return len(second & first) / max(1, len(second))

    cues = {
        "overlap": [overlap(r) for r in rows],
        "first_words": [len(words(r["sentence1"])) for r in rows],
        "second_words": [len(words(r["sentence2"])) for r in rows],
    }
    lines = []
    for path, record, predicted, gold in records_with_answers([results], task):
        if len(gold) != len(rows):
            sys.exit(f"{path}: {len(gold)} test examples but {len(rows)} rows in {test_tsv}")
        if not lines:
            lines.append(("gold", "", "", gold))
        eps = record.get("epsilon")
        lines.append((record["method"], "" if eps is None else f"{eps:g}", record["seed"], predicted))
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["task", "method", "epsilon", "seed", "label0_share"]
                   + [f"corr_label0_{name}" for name in cues])
        for method, eps, seed, labels in lines:
            label0 = [1.0 if y == 0 else 0.0 for y in labels]
            corrs = [correlation(label0, values) for values in cues.values()]
            w.writerow([task, method, eps, seed, f"{100 * statistics.fmean(label0):.2f}"]
                       + ["" if c is None else f"{c:+.3f}" for c in corrs])


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
