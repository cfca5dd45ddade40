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

use super::record::CellRecord;
use super::stats::{self, SeedSample};
use super::summary::{by_cell, cell_columns, outcomes_of, write_table};
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
/// (−1/0/1), when it has both evaluations.
fn pair(r: &CellRecord) -> Option<(f64, f64, Option<Vec<i8>>)> {
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
    let header = [
        "task",
        "method",
        "epsilon",
        "n_seeds",
        "test_raw",
        "test_calibrated",
        "delta",
        "ci_low",
        "ci_high",
    ];
    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
    let rows = rows
        .iter()
        .map(|r| {
            let mut row = cell_columns(&r.task, &r.method, r.epsilon, r.n_seeds);
            row.extend([
                format!("{:.2}", r.raw),
                format!("{:.2}", r.calibrated),
                format!("{:.2}", r.delta),
                fmt(r.ci.map(|c| c.0)),
                fmt(r.ci.map(|c| c.1)),
            ]);
            row
        })
        .collect();
    write_table(path, &header, rows)
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

    #[test]
    fn no_calibrated_record_writes_nothing() {
        let rows = rows(&[record(1, "10", None)]).unwrap();
        assert!(rows.is_empty());
        let dir = crate::target::test_scratch("calibrated-none");
        assert!(!write_csv(&rows, &dir.join("calibrated.csv")).unwrap());
    }
}
