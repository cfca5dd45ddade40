#!/usr/bin/env python3
"""How much do a task's trained models agree with each other, test example by test example?
For each method of a results folder's records (one per seed), and for each pair of methods:
the share of test examples on which two models give the same answer, averaged over pairs of
seeds (within a method: its distinct seeds; between methods: the pairs that share a seed, i.e.
the same training split, and separately every pair), with the lowest and highest pair; and,
within a method, on how many examples every seed's model gives the same answer and on how many
every one of them is wrong. On a two-label task, also how *nested* two models' answers are: the
share of the examples that the model answering label 0 less often gives label 0 which the other
gives label 0 too, beside what independent answers would give (the other's label-0 share). Two
models that threshold one common score at different points are fully nested (100%): a shift of
the label bias alone, with the ranking of the examples unchanged, gives that. Descriptive, not a
test.

Predictions come from the records (`trainer.test.predicted`, `trainer.test.gold`: a digit per
example, in the test file's order; `record_answers.py`). Python 3 standard library only.

    scripts/analysis/agreement.py TASK OUT_CSV RESULTS_DIR...
    e.g. RTE out.csv results/ablations/mini-rte-mask results/table2/mini

Records of one method and seed found in several folders (an ablation's taken-over runs) count
once, and must give the same answers.
"""
import csv
import itertools
import statistics
import sys

from record_answers import records_with_answers


def load(folders, task):
    """{method: {seed: predicted}} and the gold labels, from each FOLDER/runs/TASK__*.json."""
    models = {}
    for path, record, predicted, gold in records_with_answers(folders, task):
        seeds = models.setdefault(record["method"], {})
        if seeds.get(record["seed"], predicted) != predicted:
            sys.exit(f"{path}: another {record['method']} record for seed {record['seed']} "
                     "answers differently")
        seeds[record["seed"]] = predicted
    return models, gold


def agreement(a, b):
    return sum(x == y for x, y in zip(a, b)) / len(a)


def nesting(a, b):
    """(share of the smaller label-0 set inside the larger, the larger's label-0 share)."""
    first, second = ({i for i, x in enumerate(p) if x == 0} for p in (a, b))
    small, large = sorted((first, second), key=len)
    if not small:
        return None  # one model never answers label 0: nothing to nest
    return len(small & large) / len(small), len(large) / len(a)


def summary(pairs, binary):
    """pairs, mean / min / max agreement (%), and the mean nesting and its independent value
    (%, blank where the task has more than two labels or a model never answers label 0)."""
    pairs = list(pairs)
    shares = [agreement(a, b) for a, b in pairs]
    nests = [n for n in (nesting(a, b) for a, b in pairs) if n is not None] if binary else []
    nested = [f"{100 * statistics.fmean(n[k] for n in nests):.1f}" if nests else "" for k in (0, 1)]
    return (len(shares), 100 * statistics.fmean(shares), 100 * min(shares), 100 * max(shares),
            *nested)


def main(task, out, *folders):
    models, gold = load(folders, task)
    binary = set(gold) | {x for seeds in models.values() for p in seeds.values() for x in p} <= {0, 1}
    rows = []
    for method, seeds in sorted(models.items()):
        runs = [seeds[s] for s in sorted(seeds)]
        if len(runs) < 2:
            continue
        stats = summary(itertools.combinations(runs, 2), binary)
        all_same = sum(len(set(answers)) == 1 for answers in zip(*runs))
        all_wrong = sum(all(a != g for a in answers) for answers, g in zip(zip(*runs), gold))
        rows.append((method, method, "distinct seeds", len(runs), *stats, all_same, all_wrong))
    for (m1, s1), (m2, s2) in itertools.combinations(sorted(models.items()), 2):
        shared = sorted(set(s1) & set(s2))
        if shared:
            rows.append((m1, m2, "same seed", len(shared),
                         *summary(((s1[s], s2[s]) for s in shared), binary), "", ""))
        every = [(a, b) for a in s1.values() for b in s2.values()]
        rows.append((m1, m2, "every pair", f"{len(s1)}x{len(s2)}", *summary(every, binary),
                     "", ""))
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["task", "method_a", "method_b", "pairs_of", "seeds", "pairs",
                    "agreement_mean", "agreement_min", "agreement_max", "label0_nested_mean",
                    "label0_nested_if_independent", "all_same_answer", "all_wrong"])
        for m1, m2, kind, seeds, pairs, mean, low, high, nested, independent, same, wrong in rows:
            w.writerow([task, m1, m2, kind, seeds, pairs, f"{mean:.1f}", f"{low:.1f}",
                        f"{high:.1f}", nested, independent, same, wrong])
    print(f"wrote {out}: {len(rows)} rows over {len(gold)} test examples")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: scripts/analysis/agreement.py TASK OUT_CSV RESULTS_DIR...")
    main(*sys.argv[1:])
