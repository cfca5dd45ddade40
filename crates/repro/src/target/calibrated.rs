//! How much of each method's test accuracy a label-prior correction changes: `calibrated.csv`.
//!
//! Every record of a label-word task evaluates its final model on test twice: as it is
//! (`trainer.test`, what the paper reports) and contextually calibrated from public
//! content-free inputs (`trainer.test_calibrated`; Zhao et al. 2021). Per (task, method, ε)
//! the row gives both means over seeds and their paired difference, calibrated − raw, with the
//! 95% CI of `stats` (paired by seed and test example). A method whose accuracy rises under
//! calibration still carries a label bias that a correction needing no training data removes;
//! one that falls had none left to remove. Calibrated zero-shot has no row (its `test` is
//! already calibrated), and records written before the field existed are left out.
//!
//! `over_calibrated_zero_shot.csv` asks the converse: how much of a trained method's gain over
//! zero-shot is more than label-bias removal. Per (task, method, ε) it gives the gain over
//! zero-shot, split into calibration's share (calibrated − plain zero-shot, needing no training
//! data) and the rest (method − calibrated zero-shot), the rest with the 95% CI of `stats`,
//! paired by test example. Zero-shot is deterministic: when its calibrated records agree on
//! every seed (one shared test file), every seed of the method is paired with that one
//! evaluation; otherwise seed by seed.

use super::record::CellRecord;
use super::stats::{self, SeedSample};
use super::summary::{by_cell, cell_row, outcomes_of, points, write_cell_table, SummaryRow};
use anyhow::{Context, Result};
use std::path::Path;

/// One (task, method, ε): raw and calibrated test accuracy (points) and their difference.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibratedRow {
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    pub n_seeds: usize,
    pub raw: f64,
    pub calibrated: f64,
    /// Mean over seeds of calibrated − raw.
    pub delta: f64,
    /// Its 95% CI; `None` with one seed.
    pub ci: Option<(f64, f64)>,
}

/// A record's (raw, calibrated) test accuracy in points and per-example difference
/// (−1/0/1), when it has both evaluations. Dev-bias zero-shot's `test` is already corrected
/// for label bias (by the dev-fitted prior), so its pair would set one correction against
/// another, not against the raw prompt: it has none (records written before the trainer
/// stopped adding it still carry a `test_calibrated`).
fn pair(r: &CellRecord) -> Option<(f64, f64, Option<Vec<i8>>)> {
    if r.method == DEV_BIAS_ZERO_SHOT {
        return None;
    }
    let accuracy = |name: &str| {
        r.trainer
            .pointer(&format!("/{name}/accuracy"))
            .and_then(|v| v.as_f64())
            .map(|a| 100.0 * a)
    };
    let (raw, calibrated) = (accuracy("test")?, accuracy("test_calibrated")?);
    let examples = match (outcomes_of(r, "test"), outcomes_of(r, "test_calibrated")) {
        (Some(a), Some(b)) if a.len() == b.len() => {
            Some(b.iter().zip(&a).map(|(c, r)| c - r).collect())
        }
        _ => None,
    };
    Some((raw, calibrated, examples))
}

/// `calibrated.csv`'s rows, per (task, method, ε) in the records' order.
pub fn rows(records: &[CellRecord]) -> Result<Vec<CalibratedRow>> {
    let mut out = Vec::new();
    for (first, seeds) in by_cell(records, |r| Ok(pair(r)))? {
        let n = seeds.len() as f64;
        let values: Vec<f64> = seeds.iter().map(|(raw, cal, _)| cal - raw).collect();
        let examples: Option<Vec<Vec<i8>>> = seeds.iter().map(|s| s.2.clone()).collect();
        let sample = SeedSample {
            values: values.clone(),
            examples,
        };
        let ci = stats::interval(&sample)
            .with_context(|| {
                format!(
                    "{} {}: calibrated − raw test accuracy",
                    first.task, first.method
                )
            })?
            .map(|iv| (iv.low, iv.high));
        out.push(CalibratedRow {
            task: first.task.clone(),
            method: first.method.clone(),
            epsilon: first.epsilon,
            n_seeds: seeds.len(),
            raw: seeds.iter().map(|s| s.0).sum::<f64>() / n,
            calibrated: seeds.iter().map(|s| s.1).sum::<f64>() / n,
            delta: values.iter().sum::<f64>() / n,
            ci,
        });
    }
    Ok(out)
}

/// Write `calibrated.csv`; nothing when no record has a calibrated test evaluation.
pub fn write_csv(rows: &[CalibratedRow], path: &Path) -> Result<bool> {
    let columns = ["test_raw", "test_calibrated", "delta", "ci_low", "ci_high"];
    write_cell_table(path, &columns, rows, |r| {
        vec![
            points(Some(r.raw)),
            points(Some(r.calibrated)),
            points(Some(r.delta)),
            points(r.ci.map(|c| c.0)),
            points(r.ci.map(|c| c.1)),
        ]
    })
}

cell_row!(CalibratedRow);
cell_row!(OverCalibratedRow);

/// The method whose `test` evaluation is contextually calibrated zero-shot.
pub const CALIBRATED_ZERO_SHOT: &str = "zero-shot-calibrated";
/// The method whose `test` evaluation is zero-shot with the dev-fitted label bias
/// (`trainer::optim::calibration::dev_fitted_log_prior`).
pub const DEV_BIAS_ZERO_SHOT: &str = "zero-shot-dev-bias";

/// A label-bias-corrected zero-shot that trained methods are set against: its method and the
/// names of its three columns in the CSV ([`write_over_reference_csv`]).
#[derive(Debug, Clone, Copy)]
pub struct ZeroShotReference {
    pub method: &'static str,
    /// The reference's own accuracy.
    pub accuracy_column: &'static str,
    /// The reference's gain over plain zero-shot.
    pub gain_column: &'static str,
    /// A method's accuracy minus the reference's.
    pub over_column: &'static str,
    /// The file's name in the results directory.
    pub file: &'static str,
}

/// Contextual calibration from content-free inputs (`over_calibrated_zero_shot.csv`).
pub const CALIBRATED: ZeroShotReference = ZeroShotReference {
    method: CALIBRATED_ZERO_SHOT,
    accuracy_column: "zero_shot_calibrated",
    gain_column: "calibration",
    over_column: "over_calibrated",
    file: "over_calibrated_zero_shot.csv",
};

/// The label bias fitted on dev in likelihood (`over_dev_bias_zero_shot.csv`): a label-bias
/// correction that does not depend on content-free inputs suiting the prompt.
pub const DEV_BIAS: ZeroShotReference = ZeroShotReference {
    method: DEV_BIAS_ZERO_SHOT,
    accuracy_column: "zero_shot_dev_bias",
    gain_column: "dev_bias",
    over_column: "over_dev_bias",
    file: "over_dev_bias_zero_shot.csv",
};

/// Whether `method` is zero-shot in any form (evaluated, never trained).
pub fn is_zero_shot(method: &str) -> bool {
    super::cell::trainer_method_of(method).is_some_and(|m| m.is_evaluation_only())
}
/// Plain zero-shot: the prompt as it is, no training, no calibration.
pub const ZERO_SHOT: &str = "zero-shot";

/// One trained (task, method, ε) against zero-shot and calibrated zero-shot on the same test set.
#[derive(Debug, Clone, PartialEq)]
pub struct OverCalibratedRow {
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    /// Seeds of the method paired with a calibrated zero-shot evaluation.
    pub n_seeds: usize,
    /// The method's mean test accuracy over those seeds.
    pub test: f64,
    /// Plain zero-shot's test accuracy, when the task has a fixed one.
    pub zero_shot: Option<f64>,
    /// Calibrated zero-shot's mean test accuracy over the paired seeds.
    pub zero_shot_calibrated: f64,
    /// Mean over seeds of method − calibrated zero-shot.
    pub over_calibrated: f64,
    /// Its 95% CI; `None` with one seed.
    pub ci: Option<(f64, f64)>,
}

/// A zero-shot evaluation per seed of one task: fixed when every seed gave the same accuracy
/// and the same per-example outcomes.
struct Reference<'a> {
    row: &'a SummaryRow,
    fixed: bool,
}

impl<'a> Reference<'a> {
    fn new(row: &'a SummaryRow) -> Self {
        let same_accuracy = row
            .accuracies
            .iter()
            .all(|a| (a - row.accuracies[0]).abs() < 1e-9);
        let same_outcomes = row.outcomes.iter().all(|o| *o == row.outcomes[0]);
        Reference {
            row,
            fixed: same_accuracy && same_outcomes,
        }
    }

    /// The evaluation that `seed` of a trained method is paired with.
    fn for_seed(&self, seed: u64) -> Option<(f64, &Option<Vec<i8>>)> {
        let i = if self.fixed {
            0
        } else {
            self.row.seeds.iter().position(|&s| s == seed)?
        };
        Some((self.row.accuracies[i], &self.row.outcomes[i]))
    }
}

/// `reference.file`'s rows: every trained (task, method, ε) of `summary` whose task has an
/// evaluation of `reference.method`, in `summary`'s order.
pub fn over_reference_rows(
    summary: &[SummaryRow],
    reference_method: ZeroShotReference,
) -> Result<Vec<OverCalibratedRow>> {
    let reference = |task: &str, method: &str| {
        summary
            .iter()
            .find(|r| r.task == task && r.method == method && r.epsilon.is_none())
            .map(Reference::new)
    };
    let mut out = Vec::new();
    for row in summary {
        if is_zero_shot(&row.method) {
            continue;
        }
        let Some(base) = reference(&row.task, reference_method.method) else {
            continue;
        };
        let mut values = Vec::new();
        let mut references = Vec::new();
        let mut examples: Option<Vec<Vec<i8>>> = Some(Vec::new());
        for ((seed, accuracy), outcomes) in row.seeds.iter().zip(&row.accuracies).zip(&row.outcomes)
        {
            let Some((reference_accuracy, reference_outcomes)) = base.for_seed(*seed) else {
                continue;
            };
            values.push(accuracy - reference_accuracy);
            references.push(reference_accuracy);
            examples = match (examples, outcomes, reference_outcomes) {
                (Some(mut e), Some(x), Some(y)) if x.len() == y.len() => {
                    e.push(x.iter().zip(y).map(|(p, q)| p - q).collect());
                    Some(e)
                }
                _ => None,
            };
        }
        if values.is_empty() {
            continue;
        }
        let n = values.len() as f64;
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / n;
        let over_calibrated = mean(&values);
        let zero_shot_calibrated = mean(&references);
        let ci = stats::interval(&SeedSample {
            values: values.clone(),
            examples,
        })
        .with_context(|| {
            format!(
                "{} {}: test accuracy − {}",
                row.task, row.method, reference_method.method
            )
        })?
        .map(|iv| (iv.low, iv.high));
        let zero_shot = reference(&row.task, ZERO_SHOT)
            .filter(|r| r.fixed)
            .map(|r| r.row.accuracies[0]);
        out.push(OverCalibratedRow {
            task: row.task.clone(),
            method: row.method.clone(),
            epsilon: row.epsilon,
            n_seeds: values.len(),
            test: over_calibrated + zero_shot_calibrated,
            zero_shot,
            zero_shot_calibrated,
            over_calibrated,
            ci,
        });
    }
    Ok(out)
}

/// Write `reference.file`'s rows (from [`over_reference_rows`]): the gain over zero-shot
/// (`over_zero_shot`), the part of it the reference's label-bias correction alone gives (e.g.
/// `calibration`), and the rest with its CI (e.g. `over_calibrated`). Nothing when no task has
/// an evaluation of the reference.
pub fn write_over_reference_csv(
    rows: &[OverCalibratedRow],
    reference: ZeroShotReference,
    path: &Path,
) -> Result<bool> {
    let columns = [
        "test",
        "zero_shot",
        reference.accuracy_column,
        "over_zero_shot",
        reference.gain_column,
        reference.over_column,
        "ci_low",
        "ci_high",
    ];
    write_cell_table(path, &columns, rows, |r| {
        vec![
            points(Some(r.test)),
            points(r.zero_shot),
            points(Some(r.zero_shot_calibrated)),
            points(r.zero_shot.map(|z| r.test - z)),
            points(r.zero_shot.map(|z| r.zero_shot_calibrated - z)),
            points(Some(r.over_calibrated)),
            points(r.ci.map(|c| c.0)),
            points(r.ci.map(|c| c.1)),
        ]
    })
}

/// `comparison.md`'s section on the claims whose two methods both fail to beat calibrated
/// zero-shot: for each method-difference claim with a CI (`a - b` at one ε), when neither side's
/// `over_calibrated` CI lies above 0. Such a claim compares two methods that have learned
/// nothing measurable beyond label-bias removal, so its verdict, whichever it is, says little
/// about the methods. `None` when no claim has a CI or no task has calibrated zero-shot.
pub fn render_claims_against_calibration(
    claims: &[super::compare::Claim],
    over: &[OverCalibratedRow],
) -> Option<String> {
    let side = |task: &str, method: &str, epsilon: &str| {
        over.iter().find(|r| {
            r.task == task
                && r.method == method
                && r.epsilon.map(|e| e.to_string()).unwrap_or_default() == epsilon
        })
    };
    let beats = |r: &OverCalibratedRow| r.ci.is_some_and(|(low, _)| low > 0.0);
    let shown = |r: &OverCalibratedRow| match r.ci {
        Some((low, high)) => format!(
            "{} {:+.1} [{low:+.1}, {high:+.1}]",
            r.method, r.over_calibrated
        ),
        None => format!("{} {:+.1} (one seed)", r.method, r.over_calibrated),
    };
    let mut considered = 0;
    let mut lines = Vec::new();
    for c in claims.iter().filter(|c| c.ci.is_some()) {
        let Some((a, b)) = c.claim.split_once(" - ") else {
            continue;
        };
        if a.contains(':') {
            continue; // an ε claim (`method: eps8 - eps2`), not two methods
        }
        let (Some(ra), Some(rb)) = (side(&c.task, a, &c.epsilon), side(&c.task, b, &c.epsilon))
        else {
            continue;
        };
        considered += 1;
        if !beats(ra) && !beats(rb) {
            lines.push(format!(
                "- {} {} (ε {}): {}; {}",
                c.task,
                c.claim,
                c.epsilon,
                shown(ra),
                shown(rb)
            ));
        }
    }
    if considered == 0 {
        return None;
    }
    let mut s = String::from(
        "## Claims between methods that do not beat calibrated zero-shot\n\n\
         Content-free calibration of the zero-shot prompt needs no training and no private data. \
         Each line is a claim with a CI whose two methods both fail to exceed it (each method \
         minus calibrated zero-shot, 95% CI paired by test example, \
         `over_calibrated_zero_shot.csv`): the claim compares methods that have learned nothing \
         measurable beyond label-bias removal, so its verdict stands but says little about them.\n\n",
    );
    if lines.is_empty() {
        s.push_str(&format!(
            "None: in each of the {considered} claims at least one method exceeds calibrated \
             zero-shot.\n"
        ));
    } else {
        s.push_str(&lines.join("\n"));
        s.push('\n');
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seed: u64, raw: &str, calibrated: Option<&str>) -> CellRecord {
        let metric = |correct: &str| {
            let hits = correct.chars().filter(|&c| c == '1').count();
            serde_json::json!({
                "accuracy": hits as f64 / correct.len() as f64,
                "correct": correct,
            })
        };
        let mut trainer = serde_json::json!({ "test": metric(raw) });
        if let Some(c) = calibrated {
            trainer["test_calibrated"] = metric(c);
        }
        crate::target::record::test_record(seed, trainer)
    }

    /// Seed 1: raw 2/4, calibrated 3/4 (+25 points); seed 2: raw 3/4, calibrated 3/4 (0);
    /// a third record without a calibrated evaluation is left out. The CI is the paired one of
    /// `stats` over the two seeds' per-example differences.
    #[test]
    fn raw_calibrated_and_their_paired_difference() {
        let records = [
            record(1, "1100", Some("1110")),
            record(2, "1110", Some("0111")),
            record(3, "1111", None),
        ];
        let rows = rows(&records).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.n_seeds, 2);
        assert!((r.raw - 62.5).abs() < 1e-9 && (r.calibrated - 75.0).abs() < 1e-9);
        assert!((r.delta - 12.5).abs() < 1e-9);
        let want = stats::interval(&SeedSample {
            values: vec![25.0, 0.0],
            examples: Some(vec![vec![0, 0, 1, 0], vec![-1, 0, 0, 1]]),
        })
        .unwrap()
        .unwrap();
        assert_eq!(r.ci, Some((want.low, want.high)));
    }

    /// A record of `method` (`None`: non-private) on `seed` whose plain test evaluation is
    /// `correct`, its accuracy in `test_accuracy` as the trainer writes it.
    fn scored(method: &str, epsilon: Option<f64>, seed: u64, correct: &str) -> CellRecord {
        let hits = correct.chars().filter(|&c| c == '1').count() as f64;
        let accuracy = hits / correct.len() as f64;
        CellRecord {
            method: method.into(),
            epsilon,
            test_accuracy: 100.0 * accuracy,
            ..crate::target::record::test_record(
                seed,
                serde_json::json!({ "test": { "accuracy": accuracy, "correct": correct } }),
            )
        }
    }

    /// `over_calibrated_zero_shot.csv`'s rows of `records`.
    fn over(records: &[CellRecord]) -> Vec<OverCalibratedRow> {
        over_reference_rows(&crate::target::summary::summarise(records), CALIBRATED).unwrap()
    }

    /// Calibrated zero-shot gives the same 2/4 on both its seeds, so each of DPZero's three
    /// seeds is paired with it (seed 3 too, which zero-shot never ran): 75 − 50, 100 − 50 and
    /// 50 − 50 points; the CI is `stats`' over those per-example differences. Plain zero-shot's
    /// 1/4 splits the gain over zero-shot (75 − 25 = 50) into calibration's 25 and the rest's 25.
    #[test]
    fn a_fixed_calibrated_zero_shot_is_paired_with_every_seed() {
        let records = [
            scored(CALIBRATED_ZERO_SHOT, None, 1, "1100"),
            scored(CALIBRATED_ZERO_SHOT, None, 2, "1100"),
            scored(ZERO_SHOT, None, 1, "1000"),
            scored(ZERO_SHOT, None, 2, "1000"),
            scored("dpzero", Some(4.0), 1, "1110"),
            scored("dpzero", Some(4.0), 2, "1111"),
            scored("dpzero", Some(4.0), 3, "1100"),
        ];
        let rows = over(&records);
        assert_eq!(
            rows.len(),
            1,
            "zero-shot rows are references, not rows: {rows:?}"
        );
        let r = &rows[0];
        assert_eq!((r.method.as_str(), r.n_seeds), ("dpzero", 3));
        assert!((r.over_calibrated - 25.0).abs() < 1e-9);
        assert!((r.test - 75.0).abs() < 1e-9);
        assert_eq!(r.zero_shot, Some(25.0));
        assert!((r.zero_shot_calibrated - 50.0).abs() < 1e-9);
        let want = stats::interval(&SeedSample {
            values: vec![25.0, 50.0, 0.0],
            examples: Some(vec![vec![0, 0, 1, 0], vec![0, 0, 1, 1], vec![0, 0, 0, 0]]),
        })
        .unwrap()
        .unwrap();
        assert_eq!(r.ci, Some((want.low, want.high)));
        let dir = crate::target::test_scratch("over-calibrated");
        let path = dir.join("over_calibrated_zero_shot.csv");
        assert!(write_over_reference_csv(&rows, CALIBRATED, &path).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(
            line.starts_with("SST-2,dpzero,4,3,75.00,25.00,50.00,50.00,25.00,25.00,"),
            "{line}"
        );
    }

    /// Calibrated zero-shot that differs between seeds is paired seed by seed: DPZero's seed 3
    /// has no partner, and plain zero-shot, never run here, leaves its columns empty.
    #[test]
    fn a_calibrated_zero_shot_that_varies_is_paired_seed_by_seed() {
        let records = [
            scored(CALIBRATED_ZERO_SHOT, None, 1, "1100"),
            scored(CALIBRATED_ZERO_SHOT, None, 2, "1000"),
            scored("dpzero", Some(4.0), 1, "1110"),
            scored("dpzero", Some(4.0), 2, "1111"),
            scored("dpzero", Some(4.0), 3, "1100"),
        ];
        let rows = over(&records);
        let r = &rows[0];
        assert_eq!(r.n_seeds, 2);
        assert!((r.over_calibrated - 50.0).abs() < 1e-9, "(25 + 75) / 2");
        assert!((r.zero_shot_calibrated - 37.5).abs() < 1e-9);
        assert_eq!(r.zero_shot, None);
    }

    /// The dev-bias reference is paired as calibrated zero-shot is, against its own method's
    /// records only, and is no row of either file; its file names its own columns.
    #[test]
    fn the_dev_bias_reference_pairs_with_its_own_records() {
        let records = [
            scored(CALIBRATED_ZERO_SHOT, None, 1, "1100"),
            scored(DEV_BIAS_ZERO_SHOT, None, 1, "1000"),
            scored(DEV_BIAS_ZERO_SHOT, None, 2, "1110"),
            scored("dpzero", Some(4.0), 1, "1110"),
            scored("dpzero", Some(4.0), 2, "1111"),
        ];
        let summary = crate::target::summary::summarise(&records);
        let rows = over_reference_rows(&summary, DEV_BIAS).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!((r.method.as_str(), r.n_seeds), ("dpzero", 2));
        assert!((r.over_calibrated - 37.5).abs() < 1e-9, "(50 + 25) / 2");
        assert!((r.zero_shot_calibrated - 50.0).abs() < 1e-9);
        let calibrated = over_reference_rows(&summary, CALIBRATED).unwrap();
        assert_eq!(
            calibrated.len(),
            1,
            "dev-bias zero-shot is a reference, not a row"
        );
        let dir = crate::target::test_scratch("over-dev-bias");
        let path = dir.join(DEV_BIAS.file);
        assert!(write_over_reference_csv(&rows, DEV_BIAS, &path).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().next().unwrap().contains(
                "test,zero_shot,zero_shot_dev_bias,over_zero_shot,dev_bias,over_dev_bias,ci_low"
            ),
            "{text}"
        );
    }

    /// Of two claims with a CI, the one whose sides both fail to beat calibrated zero-shot is
    /// listed; one where a side beats it, and a claim without a CI, are not.
    #[test]
    fn claims_whose_sides_do_not_beat_calibration_are_listed() {
        let over = |task: &str, method: &str, ci: (f64, f64)| OverCalibratedRow {
            task: task.into(),
            method: method.into(),
            epsilon: Some(4.0),
            n_seeds: 5,
            test: 40.0,
            zero_shot: None,
            zero_shot_calibrated: 40.0,
            over_calibrated: (ci.0 + ci.1) / 2.0,
            ci: Some(ci),
        };
        let rows = [
            over("SST-5", "dp-zoso", (-3.0, 3.0)),
            over("SST-5", "dpzero", (-2.9, 3.3)),
            over("TREC", "dp-zoso", (31.9, 43.2)),
            over("TREC", "dpzero", (37.1, 48.7)),
        ];
        let claim = |task: &str, ci: Option<(f64, f64)>| crate::target::compare::Claim {
            claim: "dp-zoso - dpzero".into(),
            task: task.into(),
            epsilon: "4".into(),
            paper_delta: Some(-4.0),
            ours_delta: Some(0.0),
            ci,
            n_seeds: 5,
            verdict: crate::target::compare::Verdict::NotTestable,
            why: String::new(),
            open_tuning: String::new(),
            sample: None,
        };
        let claims = [
            claim("SST-5", Some((-1.7, 1.3))),
            claim("TREC", Some((-8.3, -2.4))),
            claim("SNLI", None),
        ];
        let text = render_claims_against_calibration(&claims, &rows).unwrap();
        assert!(
            text.contains("- SST-5 dp-zoso - dpzero (ε 4): dp-zoso +0.0 [-3.0, +3.0]; dpzero +0.2 [-2.9, +3.3]"),
            "{text}"
        );
        assert!(!text.contains("- TREC"), "{text}");
        let none = render_claims_against_calibration(&claims[1..], &rows).unwrap();
        assert!(none.contains("None: in each of the 1 claims"), "{none}");
        assert!(render_claims_against_calibration(&claims[2..], &rows).is_none());
    }

    /// A task without a calibrated zero-shot evaluation has no row.
    #[test]
    fn no_calibrated_zero_shot_no_row() {
        let records = [
            scored(ZERO_SHOT, None, 1, "1000"),
            scored("dpzero", Some(4.0), 1, "1110"),
        ];
        let rows = over(&records);
        assert!(rows.is_empty(), "{rows:?}");
    }

    #[test]
    fn no_calibrated_record_writes_nothing() {
        let rows = rows(&[record(1, "10", None)]).unwrap();
        assert!(rows.is_empty());
        let dir = crate::target::test_scratch("calibrated-none");
        assert!(!write_csv(&rows, &dir.join("calibrated.csv")).unwrap());
    }
}
