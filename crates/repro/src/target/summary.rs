//! Mean ± sample s.d. and a 95% t-interval over seeds, per (task, method, epsilon): `summary.csv`.

use super::record::CellRecord;
use anyhow::{Context, Result};
use statrs::distribution::{ContinuousCDF, StudentsT};
use std::collections::BTreeMap;
use std::path::Path;

/// One summary row.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub model: String,
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    pub mean: f64,
    /// Sample standard deviation (n − 1); `None` with one seed.
    pub sd: Option<f64>,
    pub n_seeds: usize,
    /// 95% t-interval of the mean over seeds; `None` with one seed.
    pub ci95: Option<(f64, f64)>,
    pub seeds: Vec<u64>,
    /// Final test accuracy of each seed, aligned with `seeds` (for paired differences).
    pub accuracies: Vec<f64>,
    /// Per seed (as `seeds`), the final test evaluation's per-example outcomes (0/1), when the
    /// record carries them (`stats`).
    pub outcomes: Vec<Option<Vec<i8>>>,
    pub data: String,
}

impl SummaryRow {
    /// The same cell over only the seeds in `seeds` (mean, s.d. and interval recomputed);
    /// `None` when it ran none of them.
    pub fn restricted_to(&self, seeds: &[u64]) -> Option<SummaryRow> {
        let keep: Vec<usize> = (0..self.seeds.len())
            .filter(|&i| seeds.contains(&self.seeds[i]))
            .collect();
        if keep.is_empty() {
            return None;
        }
        let xs: Vec<f64> = keep.iter().map(|&i| self.accuracies[i]).collect();
        let (mean, sd) = mean_sd(&xs);
        Some(SummaryRow {
            mean,
            sd,
            n_seeds: xs.len(),
            ci95: t_interval95(&xs),
            seeds: keep.iter().map(|&i| self.seeds[i]).collect(),
            accuracies: xs,
            outcomes: keep.iter().map(|&i| self.outcomes[i].clone()).collect(),
            ..self.clone()
        })
    }
}

/// Mean and sample s.d. (n − 1; `None` with one value) of a non-empty `xs`.
fn mean_sd(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = (xs.len() > 1)
        .then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, sd)
}

/// Two-sided 95% Student-t interval of the mean of `xs`; `None` with fewer than two values.
pub fn t_interval95(xs: &[f64]) -> Option<(f64, f64)> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0)).sqrt();
    // n ≥ 2 gives n − 1 ≥ 1 degrees of freedom, which StudentsT accepts.
    let t = StudentsT::new(0.0, 1.0, n as f64 - 1.0)
        .ok()?
        .inverse_cdf(0.975);
    let half = t * sd / (n as f64).sqrt();
    Some((mean - half, mean + half))
}

/// Group records by (task, method, epsilon) and average the final test accuracy.
pub fn summarise(records: &[CellRecord]) -> Vec<SummaryRow> {
    let mut groups: BTreeMap<(String, String, String), Vec<&CellRecord>> = BTreeMap::new();
    for r in records {
        let eps = r.epsilon.map(|e| format!("{e:08.3}")).unwrap_or_default();
        groups
            .entry((r.task.clone(), r.method.clone(), eps))
            .or_default()
            .push(r);
    }
    groups
        .into_values()
        .map(|rs| {
            let xs: Vec<f64> = rs.iter().map(|r| r.test_accuracy).collect();
            let n = xs.len();
            let (mean, sd) = mean_sd(&xs);
            let mut data: Vec<&str> = rs.iter().map(|r| r.data.as_str()).collect();
            data.dedup();
            SummaryRow {
                model: rs[0].model.clone(),
                task: rs[0].task.clone(),
                method: rs[0].method.clone(),
                epsilon: rs[0].epsilon,
                mean,
                sd,
                n_seeds: n,
                ci95: t_interval95(&xs),
                seeds: rs.iter().map(|r| r.seed).collect(),
                accuracies: xs.clone(),
                outcomes: rs.iter().map(|r| test_outcomes(r)).collect(),
                data: data.join(";"),
            }
        })
        .collect()
}

/// Write `summary.csv` (columns keyed like the paper tables: task, method, epsilon).
pub fn write_csv(rows: &[SummaryRow], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "model",
        "task",
        "method",
        "epsilon",
        "metric",
        "mean",
        "sd",
        "n_seeds",
        "seeds",
        "data",
        "ci95_low",
        "ci95_high",
    ])?;
    for r in rows {
        w.write_record([
            r.model.clone(),
            r.task.clone(),
            r.method.clone(),
            r.epsilon.map(|e| e.to_string()).unwrap_or_default(),
            "accuracy".into(),
            format!("{:.2}", r.mean),
            r.sd.map(|s| format!("{s:.2}")).unwrap_or_default(),
            r.n_seeds.to_string(),
            r.seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            r.data.clone(),
            r.ci95.map(|c| format!("{:.2}", c.0)).unwrap_or_default(),
            r.ci95.map(|c| format!("{:.2}", c.1)).unwrap_or_default(),
        ])?;
    }
    atomic_file::write(path, w.into_inner()?)?;
    Ok(())
}

/// Records grouped by cell (task, method, ε), each group in the order of its first record, with
/// what `of` reads from each record (records for which it reads nothing are left out).
pub fn by_cell<T>(
    records: &[CellRecord],
    mut of: impl FnMut(&CellRecord) -> Result<Option<T>>,
) -> Result<Vec<(&CellRecord, Vec<T>)>> {
    let mut groups: Vec<(&CellRecord, Vec<T>)> = Vec::new();
    for r in records {
        let Some(value) = of(r)? else { continue };
        let same = |first: &CellRecord| {
            first.task == r.task
                && first.method == r.method
                && first.epsilon.map(f64::to_bits) == r.epsilon.map(f64::to_bits)
        };
        match groups.iter_mut().find(|g| same(g.0)) {
            Some(g) => g.1.push(value),
            None => groups.push((r, vec![value])),
        }
    }
    Ok(groups)
}

/// A row of a per-cell table (`calibrated.csv`, `labels.csv`, …): the (task, method, ε) it
/// describes and over how many seeds.
pub trait CellRow {
    fn task(&self) -> &str;
    fn method(&self) -> &str;
    fn epsilon(&self) -> Option<f64>;
    fn n_seeds(&self) -> usize;
}

/// Implements [`CellRow`] for a struct with the fields `task`, `method`, `epsilon`, `n_seeds`.
macro_rules! cell_row {
    ($row:ty) => {
        impl $crate::target::summary::CellRow for $row {
            fn task(&self) -> &str {
                &self.task
            }
            fn method(&self) -> &str {
                &self.method
            }
            fn epsilon(&self) -> Option<f64> {
                self.epsilon
            }
            fn n_seeds(&self) -> usize {
                self.n_seeds
            }
        }
    };
}
pub(crate) use cell_row;

/// Writes a per-cell table atomically: task, method, ε (empty when non-private) and seeds, then
/// `columns` with each row's `values`. Nothing, and `false`, when `rows` is empty.
pub fn write_cell_table<R: CellRow>(
    path: &Path,
    columns: &[&str],
    rows: &[R],
    values: impl Fn(&R) -> Vec<String>,
) -> Result<bool> {
    let key = |r: &R| {
        let mut cells = cell_key(r.task(), r.method(), r.epsilon());
        cells.push(r.n_seeds().to_string());
        cells
    };
    let key_columns = ["task", "method", "epsilon", "n_seeds"];
    write_keyed_table(path, &key_columns, columns, rows, key, values)
}

/// A row's leading cells: task, method and ε (empty when non-private).
pub fn cell_key(task: &str, method: &str, epsilon: Option<f64>) -> Vec<String> {
    let eps = epsilon.map(|e| e.to_string()).unwrap_or_default();
    vec![task.to_string(), method.to_string(), eps]
}

/// Writes a table atomically whose rows start with `key`'s cells under `key_columns`, then
/// `columns` with each row's `values`. Nothing, and `false`, when `rows` is empty.
pub fn write_keyed_table<R>(
    path: &Path,
    key_columns: &[&str],
    columns: &[&str],
    rows: &[R],
    key: impl Fn(&R) -> Vec<String>,
    values: impl Fn(&R) -> Vec<String>,
) -> Result<bool> {
    let header: Vec<&str> = key_columns.iter().chain(columns).copied().collect();
    let rows = rows
        .iter()
        .map(|r| key(r).into_iter().chain(values(r)).collect())
        .collect();
    write_table(path, &header, rows)
}

/// A value in points with two decimals, empty when absent: the per-cell tables' format.
pub fn points(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_default()
}

/// Write a CSV table (`header`, then `rows`) atomically; nothing, and `false`, when `rows` is
/// empty.
pub fn write_table(path: &Path, header: &[&str], rows: Vec<Vec<String>>) -> Result<bool> {
    if rows.is_empty() {
        return Ok(false);
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header)?;
    for row in rows {
        w.write_record(row)?;
    }
    atomic_file::write(path, w.into_inner()?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// Per-example outcomes of a record's final test evaluation (`trainer.test.correct`, a string of
/// `0`/`1` written by the trainer); `None` when the record predates them or holds anything else.
pub fn test_outcomes(r: &CellRecord) -> Option<Vec<i8>> {
    outcomes_of(r, "test")
}

/// Per-example outcomes of the record's evaluation `trainer.<evaluation>` (`test`,
/// `test_calibrated`), as [`test_outcomes`].
pub fn outcomes_of(r: &CellRecord, evaluation: &str) -> Option<Vec<i8>> {
    let text = r
        .trainer
        .pointer(&format!("/{evaluation}/correct"))?
        .as_str()?;
    text.chars()
        .map(|c| match c {
            '1' => Some(1),
            '0' => Some(0),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd_match_closed_form() {
        let rec = |seed, acc| CellRecord {
            test_accuracy: acc,
            ..crate::target::record::test_record(seed, serde_json::Value::Null)
        };
        let rows = summarise(&[rec(1, 80.0), rec(2, 82.0), rec(3, 84.0)]);
        assert_eq!(rows.len(), 1);
        assert!((rows[0].mean - 82.0).abs() < 1e-12);
        // sample s.d. of {80, 82, 84} = 2
        assert!((rows[0].sd.unwrap() - 2.0).abs() < 1e-12);
        // Student t quantile with 2 d.f. in closed form: t_q = (2q − 1) · sqrt(2 / (4q(1 − q))),
        // q = 0.975 (≈ 4.3027); half-width t · s / sqrt(n) = t · 2 / sqrt(3).
        let (lo, hi) = rows[0].ci95.unwrap();
        let q: f64 = 0.975;
        let t = (2.0 * q - 1.0) * (2.0 / (4.0 * q * (1.0 - q))).sqrt();
        let half = t * 2.0 / 3f64.sqrt();
        assert!((lo - (82.0 - half)).abs() < 1e-6 && (hi - (82.0 + half)).abs() < 1e-6);
        assert_eq!(rows[0].accuracies, vec![80.0, 82.0, 84.0]);
        assert_eq!(summarise(&[rec(1, 80.0)])[0].ci95, None);
    }
}
