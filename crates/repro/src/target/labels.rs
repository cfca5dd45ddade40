//! Which labels each method predicts: `labels.csv`, read from the final test evaluations'
//! per-example predicted and gold labels (`trainer.test.predicted` and `trainer.test.gold`, one
//! base-36 digit per example, written by the trainer). A label is a score column: the task's
//! label words in `experiments/tasks.toml` order, or a candidate of a multiple-choice task.
//!
//! A prompt's label bias shows as a predicted share far from the gold share (zero-shot SST-2
//! predicts one label for nearly every example); per-label recall shows on which labels a
//! method's errors fall. Records written before these fields existed are left out (the row's
//! `n_seeds` counts the seeds used).
//!
//! `label_association.csv` asks, seed by seed, whether a model's predictions carry any
//! information about the gold label at all: Pearson's χ² test of independence on the gold ×
//! predicted table, with Cramér's V as its size. Accuracy near chance can hide an association
//! (labels systematically confused) or none (a prior only); this tells them apart.

use super::record::CellRecord;
use super::summary::{by_cell, cell_key, cell_row, points, write_cell_table, write_keyed_table};
use anyhow::{bail, Context, Result};
use statrs::distribution::{ChiSquared, ContinuousCDF};
use std::collections::{BTreeMap, BTreeSet};
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

/// One tuning candidate's own run on the tuning seed, read after its group's selection
/// (`candidates_test.csv`): the dev accuracy the selection saw, the test accuracy it never saw
/// (`tune::select` reads dev accuracy alone, and nothing reads this file back), and how often
/// the candidate answers with the test set's most frequent gold label. It explains results
/// across step sizes: e.g. on BoolQ (2026-12-07) every candidate but each method's smallest few
/// answered *yes* to nearly every question and scored the constant answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateRow {
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    /// From the candidate folder's name (`clip_norm=10 learning_rate=0.0001`).
    pub settings: String,
    pub seed: u64,
    pub dev_accuracy: Option<f64>,
    pub test_accuracy: f64,
    /// The test set's most frequent gold label (the smallest on a tie) and its share, and the
    /// share of test examples the candidate predicts as it; `None` without per-example labels.
    pub majority: Option<(u32, f64, f64)>,
}

/// `candidates_test.csv`'s rows: every record under `dir/tuning/<candidate>/runs/`, by folder
/// and file name. No `tuning/` folder: none.
pub fn candidate_rows(dir: &Path) -> Result<Vec<CandidateRow>> {
    let mut out = Vec::new();
    for folder in super::tune::tuning_folders(&dir.join("tuning"))? {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let runs = folder.join("runs");
        if !runs.is_dir() {
            continue;
        }
        let (records, failed) = super::record::read_all_checked(&runs)?;
        if let Some(first) = failed.first() {
            bail!(
                "{} candidate record(s) failed their checksum: {first}",
                failed.len()
            );
        }
        for r in records {
            let majority = test_labels(&r)?.map(|(predicted, gold)| {
                let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
                for g in &gold {
                    *counts.entry(*g).or_default() += 1;
                }
                // The most frequent gold label, the smallest on a tie.
                let (label, n) = counts.iter().fold(
                    (0, 0),
                    |best, (&l, &n)| if n > best.1 { (l, n) } else { best },
                );
                let share = |k: usize| 100.0 * k as f64 / gold.len().max(1) as f64;
                let answered = predicted.iter().filter(|&&p| p == label).count();
                (label, share(n), share(answered))
            });
            out.push(CandidateRow {
                task: r.task,
                method: r.method,
                epsilon: r.epsilon,
                settings: super::tune::folder_settings(&name),
                seed: r.seed,
                dev_accuracy: r.dev_accuracy,
                test_accuracy: r.test_accuracy,
                majority,
            });
        }
    }
    Ok(out)
}

/// Writes `candidates_test.csv`; nothing, and `false`, without rows.
pub fn write_candidates_csv(rows: &[CandidateRow], path: &Path) -> Result<bool> {
    let columns = [
        "settings",
        "dev_accuracy",
        "test_accuracy",
        "majority_label",
        "majority_gold_share",
        "predicted_majority_share",
    ];
    let key = |r: &CandidateRow| seed_key(&r.task, &r.method, r.epsilon, r.seed);
    write_keyed_table(path, &SEED_KEY, &columns, rows, key, |r| {
        vec![
            r.settings.clone(),
            points(r.dev_accuracy),
            points(Some(r.test_accuracy)),
            r.majority.map_or(String::new(), |m| m.0.to_string()),
            points(r.majority.map(|m| m.1)),
            points(r.majority.map(|m| m.2)),
        ]
    })
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

/// Per task (in `rows`' order), the test accuracy in percent of answering one label throughout,
/// the one most frequent among the gold labels: the largest mean gold share of the (method, ε)
/// row with the most seeds (the first such). The level a model that ignores its input can reach
/// without any training signal beyond the label prior.
pub fn constant_answer(rows: &[LabelRow]) -> Vec<(String, f64)> {
    let mut best: Vec<(String, usize, &str, Option<f64>)> = Vec::new();
    for r in rows {
        match best.iter_mut().find(|b| b.0 == r.task) {
            Some(b) if r.n_seeds > b.1 => *b = (r.task.clone(), r.n_seeds, &r.method, r.epsilon),
            Some(_) => {}
            None => best.push((r.task.clone(), r.n_seeds, &r.method, r.epsilon)),
        }
    }
    best.into_iter()
        .map(|(task, _, method, epsilon)| {
            let share = rows
                .iter()
                .filter(|r| r.task == task && r.method == method && r.epsilon == epsilon)
                .map(|r| r.gold_share)
                .fold(0.0, f64::max);
            (task, share)
        })
        .collect()
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

/// One seed's test of independence between its predicted and gold test labels.
#[derive(Debug, Clone, PartialEq)]
pub struct AssociationRow {
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    pub seed: u64,
    pub examples: usize,
    pub test: Independence,
}

/// Pearson's χ² test of independence on a gold × predicted table, and its size.
#[derive(Debug, Clone, PartialEq)]
pub struct Independence {
    /// χ² over the gold labels present × the predicted labels present.
    pub chi2: f64,
    /// (rows − 1)(columns − 1); 0 when one label is predicted (or present in gold) throughout.
    pub df: usize,
    /// P(χ²_df ≥ chi2) under independence; `None` when df = 0 (no test).
    pub p_value: Option<f64>,
    /// Cramér's V = sqrt(χ² / (n (min(rows, columns) − 1))), 0 to 1; `None` when df = 0.
    pub cramers_v: Option<f64>,
    /// The smallest expected count: below about 5 the χ² approximation is rough.
    pub min_expected: f64,
}

/// Pearson's χ² test of independence (e.g. Agresti, *Categorical Data Analysis*, 3rd ed.,
/// §3.2.1) on one seed's labels. Labels absent from both margins drop out; a table with one
/// row or one column has df = 0 and no test.
fn independence_test(predicted: &[u32], gold: &[u32]) -> Result<Independence> {
    // Each label present on a side, numbered in label order.
    let present = |labels: &[u32]| -> BTreeMap<u32, usize> {
        let distinct: BTreeSet<u32> = labels.iter().copied().collect();
        distinct
            .into_iter()
            .enumerate()
            .map(|(i, l)| (l, i))
            .collect()
    };
    let (rows, cols) = (present(gold), present(predicted));
    let n = gold.len() as f64;
    let mut counts = vec![vec![0.0f64; cols.len()]; rows.len()];
    for (p, g) in predicted.iter().zip(gold) {
        counts[rows[g]][cols[p]] += 1.0;
    }
    let row_sums: Vec<f64> = counts.iter().map(|r| r.iter().sum()).collect();
    let col_sums: Vec<f64> = (0..cols.len())
        .map(|j| counts.iter().map(|r| r[j]).sum())
        .collect();
    let (mut chi2, mut min_expected) = (0.0, f64::INFINITY);
    for (i, row) in counts.iter().enumerate() {
        for (j, &observed) in row.iter().enumerate() {
            let expected = row_sums[i] * col_sums[j] / n;
            min_expected = min_expected.min(expected);
            chi2 += (observed - expected).powi(2) / expected;
        }
    }
    let df = (rows.len() - 1) * (cols.len() - 1);
    let mut test = Independence {
        chi2,
        df,
        p_value: None,
        cramers_v: None,
        min_expected,
    };
    if df > 0 {
        let distribution = ChiSquared::new(df as f64)
            .with_context(|| format!("χ² distribution with {df} degrees of freedom"))?;
        test.p_value = Some(distribution.sf(chi2));
        test.cramers_v = Some((chi2 / (n * (rows.len().min(cols.len()) - 1) as f64)).sqrt());
    }
    Ok(test)
}

/// `label_association.csv`'s rows: one per record with test labels, in the records' order.
pub fn association_rows(records: &[CellRecord]) -> Result<Vec<AssociationRow>> {
    let mut out = Vec::new();
    for r in records {
        let Some((predicted, gold)) = test_labels(r)? else {
            continue;
        };
        if gold.is_empty() {
            continue;
        }
        out.push(AssociationRow {
            task: r.task.clone(),
            method: r.method.clone(),
            epsilon: r.epsilon,
            seed: r.seed,
            examples: gold.len(),
            test: independence_test(&predicted, &gold)?,
        });
    }
    Ok(out)
}

/// Write `label_association.csv`; nothing when no record carries its labels.
pub fn write_association_csv(rows: &[AssociationRow], path: &Path) -> Result<bool> {
    let columns = [
        "examples",
        "chi2",
        "df",
        "p_value",
        "cramers_v",
        "min_expected",
    ];
    let key = |r: &AssociationRow| seed_key(&r.task, &r.method, r.epsilon, r.seed);
    write_keyed_table(path, &SEED_KEY, &columns, rows, key, |r| {
        vec![
            r.examples.to_string(),
            format!("{:.3}", r.test.chi2),
            r.test.df.to_string(),
            r.test
                .p_value
                .map(|p| format!("{p:.3e}"))
                .unwrap_or_default(),
            r.test
                .cramers_v
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default(),
            format!("{:.2}", r.test.min_expected),
        ]
    })
}

/// The leading columns of a per-seed table (`label_association.csv`, `candidates_test.csv`).
const SEED_KEY: [&str; 4] = ["task", "method", "epsilon", "seed"];

/// A per-seed row's leading cells under [`SEED_KEY`].
fn seed_key(task: &str, method: &str, epsilon: Option<f64>, seed: u64) -> Vec<String> {
    let mut cells = cell_key(task, method, epsilon);
    cells.push(seed.to_string());
    cells
}

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

    /// Three candidates' own runs under `tuning/`, read back in folder-name order with their
    /// settings from the folder names. Gold 1, 1, 1, 0 (label 1 is the majority, 75%): the first predicts 1 everywhere
    /// (100%), the second 0, 1, 0, 0 (25%). A record without labels keeps its accuracies and
    /// leaves the label columns empty; no `tuning/` folder gives no rows and no file.
    #[test]
    fn candidates_read_back_with_their_majority_answer_share() {
        let dir = std::env::temp_dir().join(format!("dpzo-candidates-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |folder: &str, seed: u64, dev: f64, test: serde_json::Value| {
            let mut r = record(seed, test);
            r.dev_accuracy = Some(dev);
            r.test_accuracy = 50.0 + dev / 10.0;
            let runs = dir.join("tuning").join(folder).join("runs");
            std::fs::create_dir_all(&runs).unwrap();
            r.write(&runs.join(format!("SST-2__dpzero__eps4__seed{seed}.json")))
                .unwrap();
        };
        write(
            "dpzero__clip_norm=10__learning_rate=0.0001",
            13,
            70.0,
            serde_json::json!({"predicted": "1111", "gold": "1110", "correct": "1110"}),
        );
        write(
            "dpzero__clip_norm=10__learning_rate=0.00001",
            13,
            60.0,
            serde_json::json!({"predicted": "0100", "gold": "1110", "correct": "0101"}),
        );
        write(
            "dpzero__clip_norm=10__learning_rate=0.001",
            13,
            40.0,
            serde_json::json!({"correct": "0101"}),
        );
        let rows = candidate_rows(&dir).unwrap();
        type Seen<'a> = (&'a str, Option<f64>, Option<(u32, f64, f64)>);
        let got: Vec<Seen> = rows
            .iter()
            .map(|r| (r.settings.as_str(), r.dev_accuracy, r.majority))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "clip_norm=10 learning_rate=0.00001",
                    Some(60.0),
                    Some((1, 75.0, 25.0))
                ),
                (
                    "clip_norm=10 learning_rate=0.0001",
                    Some(70.0),
                    Some((1, 75.0, 100.0))
                ),
                ("clip_norm=10 learning_rate=0.001", Some(40.0), None),
            ]
        );
        let path = dir.join("candidates_test.csv");
        assert!(write_candidates_csv(&rows, &path).unwrap());
        let csv = std::fs::read_to_string(&path).unwrap();
        assert!(
            csv.contains(
                "SST-2,dpzero,4,13,clip_norm=10 learning_rate=0.00001,60.00,56.00,1,75.00,25.00\n"
            ),
            "{csv}"
        );
        assert!(
            csv.contains("SST-2,dpzero,4,13,clip_norm=10 learning_rate=0.001,40.00,54.00,,,\n"),
            "{csv}"
        );
        let empty = dir.join("none");
        assert!(candidate_rows(&empty).unwrap().is_empty());
        assert!(!write_candidates_csv(&[], &empty.join("c.csv")).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The constant answer by hand: on task A a one-seed row whose gold is all label 1 gives way
    /// to the two-seed row beside it, whose labels' mean gold shares are 50, 0 and 50: 50. Task B
    /// has one row, 60% of its gold labels 0: 60.
    #[test]
    fn the_constant_answer_is_the_largest_gold_share_of_the_row_with_most_seeds() {
        let row = |task: &str, method: &str, n_seeds, label, gold_share| LabelRow {
            task: task.into(),
            method: method.into(),
            epsilon: Some(4.0),
            n_seeds,
            label,
            gold_share,
            predicted_share: 0.0,
            recall: None,
        };
        let rows = [
            row("A", "zero-shot", 1, 1, 100.0),
            row("A", "dpzero", 2, 0, 50.0),
            row("A", "dpzero", 2, 1, 0.0),
            row("A", "dpzero", 2, 2, 50.0),
            row("B", "dpzero", 1, 0, 60.0),
            row("B", "dpzero", 1, 1, 40.0),
        ];
        assert_eq!(
            constant_answer(&rows),
            [("A".to_string(), 50.0), ("B".to_string(), 60.0)]
        );
        assert!(constant_answer(&[]).is_empty());
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

    /// Encode per-cell counts of a gold × predicted table as label strings.
    fn table(counts: &[&[usize]]) -> (String, String) {
        let (mut predicted, mut gold) = (String::new(), String::new());
        for (g, row) in counts.iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                for _ in 0..count {
                    gold.push(char::from_digit(g as u32, 36).unwrap());
                    predicted.push(char::from_digit(p as u32, 36).unwrap());
                }
            }
        }
        (predicted, gold)
    }

    fn association(counts: &[&[usize]]) -> AssociationRow {
        let (predicted, gold) = table(counts);
        let records = [record(
            7,
            serde_json::json!({"predicted": predicted, "gold": gold}),
        )];
        let mut rows = association_rows(&records).unwrap();
        assert_eq!(rows.len(), 1);
        rows.remove(0)
    }

    fn test_of(counts: &[&[usize]]) -> Independence {
        association(counts).test
    }

    /// 2 × 2: χ² = n (ad − bc)² / ((a+b)(c+d)(a+c)(b+d)), its 1-df tail erfc(√(χ²/2)), and
    /// V = |ad − bc| / √((a+b)(c+d)(a+c)(b+d)) (the φ coefficient): closed forms.
    #[test]
    fn two_by_two_matches_the_closed_forms() {
        let (a, b, c, d) = (30.0, 10.0, 15.0, 45.0);
        let full = association(&[&[30, 10], &[15, 45]]);
        assert_eq!((full.examples, full.seed), (100, 7));
        let row = full.test;
        let margins = (a + b) * (c + d) * (a + c) * (b + d);
        let chi2 = 100.0 * (a * d - b * c) * (a * d - b * c) / margins;
        assert_eq!(row.df, 1);
        assert!((row.chi2 - chi2).abs() < 1e-9, "{}", row.chi2);
        let p = statrs::function::erf::erfc((chi2 / 2.0).sqrt());
        assert!(
            ((row.p_value.unwrap() - p) / p).abs() < 1e-9,
            "{:?} {p}",
            row.p_value
        );
        let v = (a * d - b * c).abs() / margins.sqrt();
        assert!((row.cramers_v.unwrap() - v).abs() < 1e-12);
        assert!((row.min_expected - 40.0 * 45.0 / 100.0).abs() < 1e-12);
    }

    /// 3 × 3 by hand: gold rows (5, 3, 2), (2, 6, 2), (1, 1, 8); expected counts 8/3, 10/3 and 4
    /// in every row; χ² = 78/24 + 114/30 + 6 = 13.05. With 4 df the tail is e^(−x/2)(1 + x/2).
    #[test]
    fn three_by_three_by_hand() {
        let row = test_of(&[&[5, 3, 2], &[2, 6, 2], &[1, 1, 8]]);
        assert_eq!(row.df, 4);
        assert!((row.chi2 - 13.05).abs() < 1e-9, "{}", row.chi2);
        let p = (-13.05f64 / 2.0).exp() * (1.0 + 13.05 / 2.0);
        assert!(
            (row.p_value.unwrap() - p).abs() < 1e-12,
            "{:?}",
            row.p_value
        );
        assert!((row.cramers_v.unwrap() - (13.05f64 / 60.0).sqrt()).abs() < 1e-12);
        assert!((row.min_expected - 8.0 / 3.0).abs() < 1e-12);
    }

    /// Rows proportional to the column margins: χ² = 0, p = 1, V = 0. Perfect agreement on
    /// three labels: χ² = n (k − 1), V = 1.
    #[test]
    fn independence_and_perfect_association() {
        let none = test_of(&[&[2, 4, 6], &[1, 2, 3]]);
        assert_eq!(none.df, 2);
        assert!(none.chi2.abs() < 1e-12);
        assert!((none.p_value.unwrap() - 1.0).abs() < 1e-12);
        assert!(none.cramers_v.unwrap().abs() < 1e-12);
        let all = test_of(&[&[10, 0, 0], &[0, 10, 0], &[0, 0, 10]]);
        assert!((all.chi2 - 60.0).abs() < 1e-9);
        assert!((all.cramers_v.unwrap() - 1.0).abs() < 1e-12);
        let p = (-30.0f64).exp() * 31.0; // 4 df: e^(−x/2)(1 + x/2) at x = 60
        assert!(
            ((all.p_value.unwrap() - p) / p).abs() < 1e-9,
            "{:?}",
            all.p_value
        );
    }

    /// One label predicted for every example: no table to test, so no p-value and no V (never
    /// a NaN). A label never predicted drops its column: 3 gold × 2 predicted has df 2.
    #[test]
    fn a_constant_prediction_has_no_test_and_empty_columns_drop_out() {
        let constant = association(&[&[4, 0], &[6, 0]]);
        assert_eq!(constant.test.df, 0);
        assert_eq!(
            (constant.test.p_value, constant.test.cramers_v),
            (None, None)
        );
        assert!(constant.test.chi2.abs() < 1e-12);
        let two_predicted = test_of(&[&[3, 0, 1], &[1, 0, 3], &[2, 0, 2]]);
        assert_eq!(two_predicted.df, 2);
        let dir = crate::target::test_scratch("labels-association");
        let path = dir.join("label_association.csv");
        assert!(write_association_csv(&[constant], &path).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("NaN"), "{text}");
        assert!(text.lines().nth(1).unwrap().contains(",0,,,"), "{text}");
    }

    #[test]
    fn no_labelled_record_writes_nothing() {
        let dir = crate::target::test_scratch("labels-none");
        let path = dir.join("labels.csv");
        assert!(!write_csv(&[], &path).unwrap());
        assert!(!path.exists());
        let path = dir.join("label_association.csv");
        assert!(!write_association_csv(&[], &path).unwrap());
        assert!(!path.exists());
    }
}
