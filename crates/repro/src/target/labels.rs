//! Which labels each method predicts: `labels.csv`, read from the final test evaluations'
//! per-example predicted and gold labels (`trainer.test.predicted` and `trainer.test.gold`, one
//! base-36 digit per example, written by the trainer). A label is a score column: the task's
//! label words in `experiments/tasks.toml` order, or a candidate of a multiple-choice task.
//!
//! A prompt's label bias shows as a predicted share far from the gold share (zero-shot SST-2
//! predicts one label for nearly every example); per-label recall shows on which labels a
//! method's errors fall. Records written before these fields existed are left out (the row's
//! `n_seeds` counts the seeds used).

use super::record::CellRecord;
use super::summary::{by_cell, cell_row, points, write_cell_table};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// One label of one (task, method, ε): shares and recall in percent, means over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRow {
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    pub n_seeds: usize,
    pub label: u32,
    /// Share of test examples whose gold label is this one.
    pub gold_share: f64,
    /// Share of test examples predicted as this label.
    pub predicted_share: f64,
    /// Of the examples with this gold label, the share predicted as it; `None` when none has it.
    pub recall: Option<f64>,
}

/// One seed's final test labels: `(predicted, gold)`, one entry per example.
type SeedLabels = (Vec<u32>, Vec<u32>);

/// A record's final test labels, when it has them; an error when they are
/// malformed or disagree with its `correct` string.
fn test_labels(r: &CellRecord) -> Result<Option<SeedLabels>> {
    let field = |name: &str| {
        r.trainer
            .pointer(&format!("/test/{name}"))
            .and_then(|v| v.as_str())
    };
    let (Some(predicted), Some(gold)) = (field("predicted"), field("gold")) else {
        return Ok(None);
    };
    let context = || {
        format!(
            "{} {} {} seed {}: trainer.test",
            r.task,
            r.method,
            r.epsilon
                .map_or("non-private".into(), |e| format!("eps {e}")),
            r.seed
        )
    };
    let decode = |text: &str, name: &str| -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                c.to_digit(36).with_context(|| {
                    format!("{}.{name}[{i}] = {c:?}: not a base-36 digit", context())
                })
            })
            .collect()
    };
    let (predicted, gold) = (decode(predicted, "predicted")?, decode(gold, "gold")?);
    if predicted.len() != gold.len() {
        bail!(
            "{}: {} predicted labels but {} gold labels",
            context(),
            predicted.len(),
            gold.len()
        );
    }
    if let Some(correct) = field("correct") {
        let agrees = correct.len() == gold.len()
            && correct
                .chars()
                .zip(predicted.iter().zip(&gold))
                .all(|(c, (p, g))| (c == '1') == (p == g));
        if !agrees {
            bail!(
                "{}: the predicted and gold labels disagree with `correct`",
                context()
            );
        }
    }
    Ok(Some((predicted, gold)))
}

/// `labels.csv`'s rows: per (task, method, ε) in the records' order and per label seen.
pub fn label_rows(records: &[CellRecord]) -> Result<Vec<LabelRow>> {
    let mut out = Vec::new();
    for (first, seeds) in by_cell(records, test_labels)? {
        let labels: BTreeSet<u32> = seeds
            .iter()
            .flat_map(|(p, g)| p.iter().chain(g).copied())
            .collect();
        let n = seeds.len() as f64;
        for label in labels {
            let mean = |f: &dyn Fn(&[u32], &[u32]) -> f64| -> f64 {
                seeds.iter().map(|(p, g)| f(p, g)).sum::<f64>() / n
            };
            let share = |xs: &[u32]| {
                100.0 * xs.iter().filter(|&&x| x == label).count() as f64 / xs.len().max(1) as f64
            };
            let recalls: Vec<f64> = seeds
                .iter()
                .filter_map(|(p, g)| {
                    let with_label = g.iter().filter(|&&x| x == label).count();
                    (with_label > 0).then(|| {
                        let hits = p
                            .iter()
                            .zip(g)
                            .filter(|(p, g)| **p == label && **g == label);
                        100.0 * hits.count() as f64 / with_label as f64
                    })
                })
                .collect();
            out.push(LabelRow {
                task: first.task.clone(),
                method: first.method.clone(),
                epsilon: first.epsilon,
                n_seeds: seeds.len(),
                label,
                gold_share: mean(&|_, g| share(g)),
                predicted_share: mean(&|p, _| share(p)),
                recall: (!recalls.is_empty())
                    .then(|| recalls.iter().sum::<f64>() / recalls.len() as f64),
            });
        }
    }
    Ok(out)
}

/// Write `labels.csv`; nothing when no record carries its labels.
pub fn write_csv(rows: &[LabelRow], path: &Path) -> Result<bool> {
    let columns = ["label", "gold_share", "predicted_share", "recall"];
    write_cell_table(path, &columns, rows, |r| {
        vec![
            r.label.to_string(),
            points(Some(r.gold_share)),
            points(Some(r.predicted_share)),
            points(r.recall),
        ]
    })
}

cell_row!(LabelRow);

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seed: u64, test: serde_json::Value) -> CellRecord {
        crate::target::record::test_record(seed, serde_json::json!({ "test": test }))
    }

    /// Two seeds on four examples (gold 1, 1, 0, 0): seed 1 predicts 1, 1, 1, 0; seed 2
    /// predicts 0, 1, 1, 1. Shares and recalls by hand: label 1 predicted 75% both times,
    /// recall of label 1 (100 + 50)/2 = 75, of label 0 (50 + 0)/2 = 25.
    #[test]
    fn shares_and_recall_by_hand() {
        let records = [
            record(
                1,
                serde_json::json!({"predicted": "1110", "gold": "1100", "correct": "1101"}),
            ),
            record(
                2,
                serde_json::json!({"predicted": "0111", "gold": "1100", "correct": "0100"}),
            ),
            // Without labels: left out.
            record(3, serde_json::json!({"correct": "1111"})),
        ];
        let rows = label_rows(&records).unwrap();
        assert_eq!(rows.len(), 2);
        let (zero, one) = (&rows[0], &rows[1]);
        assert_eq!((zero.label, one.label), (0, 1));
        assert_eq!(one.n_seeds, 2);
        assert!((one.gold_share - 50.0).abs() < 1e-12);
        assert!((one.predicted_share - 75.0).abs() < 1e-12);
        assert!((zero.predicted_share - 25.0).abs() < 1e-12);
        assert!((one.recall.unwrap() - 75.0).abs() < 1e-12);
        assert!((zero.recall.unwrap() - 25.0).abs() < 1e-12);
    }

    #[test]
    fn malformed_or_inconsistent_labels_are_errors_naming_the_record() {
        for (test, says) in [
            (
                serde_json::json!({"predicted": "1!", "gold": "10"}),
                "predicted[1]",
            ),
            (
                serde_json::json!({"predicted": "1", "gold": "10"}),
                "1 predicted labels but 2",
            ),
            (
                serde_json::json!({"predicted": "10", "gold": "10", "correct": "10"}),
                "disagree with `correct`",
            ),
        ] {
            let err = label_rows(&[record(21, test)]).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("seed 21"), "{err}");
        }
    }

    #[test]
    fn no_labelled_record_writes_nothing() {
        let dir = crate::target::test_scratch("labels-none");
        let path = dir.join("labels.csv");
        assert!(!write_csv(&[], &path).unwrap());
        assert!(!path.exists());
    }
}
