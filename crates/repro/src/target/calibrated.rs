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
use super::summary::outcomes_of;
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
    type Seeds = Vec<(f64, f64, Option<Vec<i8>>)>;
    let mut groups: Vec<(&CellRecord, Seeds)> = Vec::new();
    for r in records {
        let Some(p) = pair(r) else { continue };
        let same = |g: &&mut (&CellRecord, Seeds)| {
            g.0.task == r.task
                && g.0.method == r.method
                && g.0.epsilon.map(f64::to_bits) == r.epsilon.map(f64::to_bits)
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.1.push(p),
            None => groups.push((r, vec![p])),
        }
    }
    let mut out = Vec::new();
    for (first, seeds) in groups {
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
    if rows.is_empty() {
        return Ok(false);
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "task",
        "method",
        "epsilon",
        "n_seeds",
        "test_raw",
        "test_calibrated",
        "delta",
        "ci_low",
        "ci_high",
    ])?;
    for r in rows {
        w.write_record([
            r.task.clone(),
            r.method.clone(),
            r.epsilon.map(|e| e.to_string()).unwrap_or_default(),
            r.n_seeds.to_string(),
            format!("{:.2}", r.raw),
            format!("{:.2}", r.calibrated),
            format!("{:.2}", r.delta),
            r.ci.map(|c| format!("{:.2}", c.0)).unwrap_or_default(),
            r.ci.map(|c| format!("{:.2}", c.1)).unwrap_or_default(),
        ])?;
    }
    atomic_file::write(path, w.into_inner()?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
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
        CellRecord {
            target: "t".into(),
            preset: "p".into(),
            task: "SST-2".into(),
            method: "dpzero".into(),
            epsilon: Some(4.0),
            seed,
            model: "m".into(),
            spec_hash: String::new(),
            config: serde_json::Value::Null,
            provenance: crate::provenance::Provenance::collect("cpu"),
            test_accuracy: 0.0,
            dev_accuracy: None,
            data: "real".into(),
            wall_secs: 0.0,
            setup_secs: None,
            trainer,
            tuning: None,
        }
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
