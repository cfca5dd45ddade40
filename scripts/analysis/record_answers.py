"""The test answers that run records carry, for the analysis scripts beside this file.

A record's `trainer.test.predicted` and `trainer.test.gold` hold a digit per test example, in the
test file's order; records from before they were stored have neither and are skipped.
Python 3 standard library only.
"""
import glob
import json
import os
import sys


def records_with_answers(folders, task):
    """(path, record, predicted, gold) for each FOLDER/runs/TASK__*.json that carries its test
    answers, in path order within each folder. Exits naming the file if a record's answers and
    gold labels differ in length, or if its gold labels differ from the first record's (another
    test set); and if no record carries answers."""
    gold_seen = None
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "runs", f"{task}__*.json"))):
            with open(path) as f:
                record = json.load(f)
            test = record["trainer"]["test"]
            if test.get("predicted") is None or test.get("gold") is None:
                continue
            predicted, gold = [int(c) for c in test["predicted"]], [int(c) for c in test["gold"]]
            if len(predicted) != len(gold):
                sys.exit(f"{path}: {len(predicted)} predictions for {len(gold)} gold labels")
            if gold_seen is None:
                gold_seen = gold
            elif gold != gold_seen:
                sys.exit(f"{path}: its gold labels differ from the other records' (another test set?)")
            yield path, record, predicted, gold
    if gold_seen is None:
        sys.exit(f"{', '.join(folders)}: no {task} record with predicted and gold test labels")
