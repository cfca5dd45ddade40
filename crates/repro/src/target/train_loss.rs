//! How well each method fits its training data: `train_loss.csv`, from the un-noised per-step
//! training losses that records keep as non-private diagnostics (`trainer.steps[].loss`, in the
//! steps sidecar; `--private-records` drops them, and such records are left out).
//!
//! Per (task, method, ε): the mean loss over the first and over the last sixth of the steps
//! (the last stage of the paper's stage proportions, T0 = T/6 and S = 3, is half the run; the
//! last sixth is its end), each averaged over seeds, and a 95% t-interval over seeds of the end
//! value. A method that ends with a higher training loss than another underfits: its test deficit
//! is not overfitting. The losses are those of the sampled batches (Poisson, so of varying size),
//! as the trainer logged them before any noise.
//!
//! Whether the loss still falls at the end: per seed, the mean over the second-last sixth minus
//! the mean over the last sixth, averaged over seeds with a 95% t-interval. An interval above 0
//! says the run had not reached its training plateau at T; one that covers 0 is consistent with a
//! plateau (of the training loss, not of dev accuracy, which the horizon ablations measure).

use super::record::{CellRecord, SIDECAR_FIELD, STEPS_FIELD};
use super::stats::{self, SeedSample};
use super::summary::{by_cell, cell_row, write_cell_table};
use anyhow::{Context, Result};
use std::path::Path;

/// One (task, method, ε): the training loss at the start and the end of the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainLossRow {
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    pub n_seeds: usize,
    /// Steps per run (the smallest over seeds).
    pub steps: usize,
    /// Steps averaged at each end: a sixth of `steps`.
    pub window: usize,
    pub loss_start: f64,
    pub loss_end: f64,
    /// 95% CI of `loss_end` over seeds; `None` with one seed.
    pub ci_end: Option<(f64, f64)>,
    /// The mean over the second-last window, averaged over seeds.
    pub loss_before_end: f64,
    /// `loss_before_end - loss_end`: how much the loss still fell over the last window.
    pub drop_end: f64,
    /// 95% CI of `drop_end` over seeds (paired within each seed); `None` with one seed.
    pub ci_drop: Option<(f64, f64)>,
}

/// A run's mean losses over its first, second-last and last sixth.
#[derive(Debug, Clone, Copy)]
struct Ends {
    steps: usize,
    start: f64,
    before_end: f64,
    end: f64,
}

/// A run's [`Ends`], when its steps carry losses (at least 6 of them).
fn ends(losses: &[f64]) -> Option<Ends> {
    let window = losses.len() / 6;
    if window == 0 {
        return None;
    }
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let n = losses.len();
    Some(Ends {
        steps: n,
        start: mean(&losses[..window]),
        before_end: mean(&losses[n - 2 * window..n - window]),
        end: mean(&losses[n - window..]),
    })
}

/// The mean of `values` and its 95% t-interval over seeds (`None` with one seed).
fn mean_and_interval(values: Vec<f64>) -> Result<(f64, Option<(f64, f64)>)> {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let ci = stats::interval(&SeedSample {
        values,
        examples: None,
    })?
    .map(|iv| (iv.low, iv.high));
    Ok((mean, ci))
}

/// The logged losses of the record at `runs_dir/<stem>.json`; `None` when it logged none.
fn losses(r: &CellRecord, runs_dir: &Path) -> Result<Option<Vec<f64>>> {
    let path = runs_dir.join(format!("{}.json", r.stem()));
    let has_steps = r
        .trainer
        .as_object()
        .is_some_and(|t| t.contains_key(STEPS_FIELD) || t.contains_key(SIDECAR_FIELD));
    if !has_steps {
        return Ok(None);
    }
    let steps = r.steps(&path)?;
    let losses: Option<Vec<f64>> = steps
        .iter()
        .map(|s| s.get("loss").and_then(|l| l.as_f64()))
        .collect();
    Ok(losses.filter(|l| !l.is_empty()))
}

/// The mean logged training loss over the first and over the last sixth of the steps of `r`,
/// read from `runs_dir` (the windows of `train_loss.csv`); `None` when it logged fewer than six.
/// A last value above the first says the run's loss rose: it diverged or never learned.
pub fn first_and_last(r: &CellRecord, runs_dir: &Path) -> Result<Option<(f64, f64)>> {
    Ok(losses(r, runs_dir)?
        .as_deref()
        .and_then(ends)
        .map(|e| (e.start, e.end)))
}

/// `train_loss.csv`'s rows, per (task, method, ε) in the records' order; records read from
/// `runs_dir`.
pub fn rows(records: &[CellRecord], runs_dir: &Path) -> Result<Vec<TrainLossRow>> {
    let mut out = Vec::new();
    let groups = by_cell(records, |r| {
        Ok(losses(r, runs_dir)
            .with_context(|| format!("{}: training losses", r.stem()))?
            .as_deref()
            .and_then(ends))
    })?;
    for (first, seeds) in groups {
        let n = seeds.len() as f64;
        let steps = seeds.iter().map(|s| s.steps).min().unwrap_or(0);
        let (loss_end, ci_end) = mean_and_interval(seeds.iter().map(|s| s.end).collect())?;
        let (drop_end, ci_drop) =
            mean_and_interval(seeds.iter().map(|s| s.before_end - s.end).collect())?;
        out.push(TrainLossRow {
            task: first.task.clone(),
            method: first.method.clone(),
            epsilon: first.epsilon,
            n_seeds: seeds.len(),
            steps,
            window: steps / 6,
            loss_start: seeds.iter().map(|s| s.start).sum::<f64>() / n,
            loss_end,
            ci_end,
            loss_before_end: seeds.iter().map(|s| s.before_end).sum::<f64>() / n,
            drop_end,
            ci_drop,
        });
    }
    Ok(out)
}

/// Write `train_loss.csv`; nothing, and `false`, when no record logged its losses.
pub fn write_csv(rows: &[TrainLossRow], path: &Path) -> Result<bool> {
    let columns = [
        "steps",
        "window",
        "loss_start",
        "loss_end",
        "ci_low",
        "ci_high",
        "loss_before_end",
        "drop_end",
        "drop_ci_low",
        "drop_ci_high",
    ];
    let fmt = |x: f64| format!("{x:.4}");
    write_cell_table(path, &columns, rows, |r| {
        vec![
            r.steps.to_string(),
            r.window.to_string(),
            fmt(r.loss_start),
            fmt(r.loss_end),
            r.ci_end.map(|c| fmt(c.0)).unwrap_or_default(),
            r.ci_end.map(|c| fmt(c.1)).unwrap_or_default(),
            fmt(r.loss_before_end),
            fmt(r.drop_end),
            r.ci_drop.map(|c| fmt(c.0)).unwrap_or_default(),
            r.ci_drop.map(|c| fmt(c.1)).unwrap_or_default(),
        ]
    })
}

cell_row!(TrainLossRow);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::record::test_record;
    use crate::target::test_scratch;
    use serde_json::json;

    /// Two seeds of 12 logged steps (window 2) written with their sidecars, plus a record whose
    /// steps carry no loss (`--private-records`), which is left out.
    #[test]
    fn start_and_end_losses_are_window_means_with_a_t_interval_over_seeds() {
        let dir = test_scratch("train-loss");
        let run = |seed: u64, losses: Vec<Option<f64>>| {
            let steps: Vec<_> = losses
                .iter()
                .enumerate()
                .map(|(i, l)| match l {
                    Some(l) => json!({"step": i + 1, "loss": l}),
                    None => json!({"step": i + 1}),
                })
                .collect();
            let r = test_record(seed, json!({ "steps": steps }));
            r.write(&dir.join(format!("{}.json", r.stem()))).unwrap();
            CellRecord::read(&dir.join(format!("{}.json", r.stem()))).unwrap()
        };
        // Seed 13: 1.0, 0.95, …, 0.55, then 0.4, 0.2 at the end; seed 21 the same shifted by
        // +0.1, except that its last two steps are flat (0.55, 0.55 before the shift).
        let curve = |shift: f64, tail: [f64; 2]| -> Vec<Option<f64>> {
            let mut v: Vec<f64> = (0..10).map(|i| 1.0 - 0.05 * i as f64 + shift).collect();
            v.extend(tail.map(|t| t + shift));
            v.into_iter().map(Some).collect()
        };
        let records = vec![
            run(13, curve(0.0, [0.4, 0.2])),
            run(21, curve(0.1, [0.55, 0.55])),
            run(42, vec![None; 12]),
        ];
        let rows = rows(&records, &dir).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!((r.n_seeds, r.steps, r.window), (2, 12, 2));
        assert!(
            (r.loss_start - (0.975 + 1.075) / 2.0).abs() < 1e-12,
            "{r:?}"
        );
        // Ends: seed 13 (0.4 + 0.2) / 2 = 0.3, seed 21 0.55 + 0.1 = 0.65.
        assert!((r.loss_end - (0.3 + 0.65) / 2.0).abs() < 1e-12, "{r:?}");
        // Two seeds 0.35 apart: s.d. 0.35/sqrt(2), half-width t(0.975, 1) * 0.35 / 2.
        let (lo, hi) = r.ci_end.unwrap();
        assert!((hi - lo - 2.0 * 12.7062 * 0.175).abs() < 1e-3, "{lo} {hi}");
        // Second-last window (steps 9-10): (0.6 + 0.55) / 2 = 0.575, and 0.675 for seed 21; the
        // drops 0.275 and 0.025, so the mean 0.15 with half-width 12.7062 * 0.125.
        assert!(
            (r.loss_before_end - (0.575 + 0.675) / 2.0).abs() < 1e-12,
            "{r:?}"
        );
        assert!((r.drop_end - 0.15).abs() < 1e-12, "{r:?}");
        let (lo, hi) = r.ci_drop.unwrap();
        assert!((lo - (0.15 - 12.7062 * 0.125)).abs() < 1e-3, "{lo} {hi}");
        assert!((hi - (0.15 + 12.7062 * 0.125)).abs() < 1e-3, "{lo} {hi}");

        // A damaged sidecar is an error naming the run, never a silent gap.
        let sidecar = dir.join("SST-2__dpzero__eps4__seed13.steps.jsonl.gz");
        std::fs::write(&sidecar, b"not gzip").unwrap();
        let err = format!("{:#}", super::rows(&records, &dir).unwrap_err());
        assert!(err.contains("SST-2__dpzero__eps4__seed13"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
