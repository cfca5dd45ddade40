//! Contextual calibration of a prompted classifier (Zhao, Wallace, Feng, Klein and Singh,
//! "Calibrate Before Use: Improving Few-Shot Performance of Language Models", ICML 2021, §5).
//!
//! A prompt biases the model towards some label words whatever the input. The bias is estimated
//! from content-free inputs (the task's prompt with every text field replaced by `N/A`,
//! `[MASK]` or the empty string): p_cf is the mean over them of the label-word distribution
//! (softmax over the label words). Predictions then use the diagonal correction W = diag(p_cf)^-1,
//! b = 0: the calibrated distribution of an input with label-word distribution p is p / p_cf,
//! renormalised. Its argmax equals that of the paper's softmax(W p); the renormalised ratio is
//! the one that is a probability (a correction of the label prior), so it is what the
//! evaluation's loss is computed on. No training data is read and nothing is trained, so the
//! calibration costs no privacy.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{OptimError, Result};
use crate::batch::Batch;
use crate::model::LabelWordModel;

/// The content-free strings of the paper, averaged over.
pub const CONTENT_FREE_INPUTS: [&str; 3] = ["N/A", "[MASK]", ""];

/// What a calibrated evaluation used, for the run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The content-free inputs, in the order of the content-free batch's rows.
    pub content_free_inputs: Vec<String>,
    /// p_cf: the mean label-word distribution of the content-free inputs (sums to 1).
    pub label_prior: Vec<f64>,
}

/// log p_cf, `[n_labels]` f64: the log of the mean over `content_free`'s rows of the label-word
/// softmax (forward only).
///
/// # Errors
/// An empty batch, a non-finite prior (a label word with zero probability on every content-free
/// input cannot be corrected for), or a libtorch failure.
pub fn content_free_log_prior(model: &dyn LabelWordModel, content_free: &Batch) -> Result<Tensor> {
    let rows = content_free.len();
    if rows == 0 {
        return Err(OptimError::invalid(
            "content_free",
            "an empty batch",
            "needs at least one content-free input",
        ));
    }
    let log_probs = tch::no_grad(|| model.label_word_logits(content_free))?
        .f_to_kind(Kind::Double)?
        .f_log_softmax(-1, Kind::Double)?;
    // log mean_i p_i = logsumexp_i log p_i - log(rows), stable when some p_i underflow.
    let log_prior = log_probs.f_logsumexp(&[0i64][..], false)? - (rows as f64).ln();
    let values = Vec::<f64>::try_from(log_prior.f_to_device(tch::Device::Cpu)?)?;
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(OptimError::invalid(
            "content-free label prior",
            format!("log p_cf = {bad} (all {values:?})"),
            "every label word needs a non-zero probability on some content-free input",
        ));
    }
    Ok(log_prior)
}

/// Calibrated log-probabilities `[B, n_labels]` f64: log(p / p_cf) renormalised over the labels,
/// with p = softmax(`logits`) and `log_prior` = log p_cf from [`content_free_log_prior`].
///
/// # Errors
/// Shapes that disagree, or a libtorch failure.
pub fn calibrated_log_probs(logits: &Tensor, log_prior: &Tensor) -> Result<Tensor> {
    let labels = logits.size().last().copied().unwrap_or(0);
    if log_prior.size() != [labels] {
        return Err(OptimError::invalid(
            "content-free label prior",
            format!("shape {:?}", log_prior.size()),
            "needs one value per label word of the evaluated batches",
        ));
    }
    let log_p = logits
        .f_to_kind(Kind::Double)?
        .f_log_softmax(-1, Kind::Double)?;
    let prior = log_prior.f_to_device(logits.device())?;
    Ok(log_p.f_sub(&prior)?.f_log_softmax(-1, Kind::Double)?)
}

/// The record of a calibration from its log prior and the content-free strings used.
///
/// # Errors
/// A libtorch failure reading the prior back.
pub fn describe(log_prior: &Tensor, inputs: &[String]) -> Result<Calibration> {
    let prior = Vec::<f64>::try_from(log_prior.f_exp()?.f_to_device(tch::Device::Cpu)?)?;
    Ok(Calibration {
        content_free_inputs: inputs.to_vec(),
        label_prior: prior,
    })
}

/// What a dev-fitted label bias used, for the run record ([`dev_fitted_log_prior`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevBias {
    /// Labelled dev examples the bias was fitted on.
    pub dev_examples: usize,
    /// b: the additive bias of each label's log-probability (centred to sum 0).
    pub label_bias: Vec<f64>,
    /// Mean dev cross-entropy before and after the bias.
    pub dev_loss_before: f64,
    pub dev_loss_after: f64,
}

/// Newton iterations allowed to fit a label bias; convergence takes a handful.
const MAX_NEWTON_STEPS: usize = 100;

/// The dev-fitted label bias as a log prior for [`calibrated_log_probs`]: b maximises the dev
/// likelihood of softmax(log p + b), p the label-word distribution of each dev example, and the
/// returned tensor is -b, so that the calibrated scores are log_softmax(log p + b). This is
/// contextual calibration's correction of the label prior with the prior fitted to labelled dev
/// examples instead of content-free inputs: the input-independent label prior most likely on dev.
/// It is not the prior of best accuracy (accuracy is not what it fits; on SST-5 it scores below
/// contextual calibration). It reads dev labels (public here, as for tuning), no training data.
///
/// The objective is convex in b, with gradient mean_i softmax(log p_i + b) - (the dev label
/// shares) and Hessian mean_i (diag(q_i) - q_i q_i^T); Newton's method with a backtracking line
/// search converges to its minimum, which is unique up to a constant (fixed by centring b).
///
/// # Errors
/// No dev example, a multiple-choice batch, a label with no dev example (its bias would go to
/// -infinity), no convergence, or a libtorch failure.
pub fn dev_fitted_log_prior<B: crate::batch::ExampleBatch>(
    model: &dyn LabelWordModel,
    dev: &[B],
) -> Result<(Tensor, DevBias)> {
    let (_, _, _, logits) = super::loss::evaluate_keeping_logits(model, dev)?;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut gold: Vec<usize> = Vec::new();
    for (batch, logits) in dev.iter().zip(&logits) {
        if batch.num_examples() == 0 {
            continue;
        }
        if batch.label_word_ids().is_none() {
            return Err(OptimError::invalid(
                "dev-fitted label bias",
                "a multiple-choice batch",
                "a label bias is defined for label-word classification only",
            ));
        }
        let log_p = logits
            .f_to_kind(Kind::Double)?
            .f_log_softmax(-1, Kind::Double)?
            .f_to_device(tch::Device::Cpu)?;
        let labels = log_p.size()[1] as usize;
        let flat = Vec::<f64>::try_from(log_p.f_view([-1])?)?;
        rows.extend(flat.chunks(labels).map(<[f64]>::to_vec));
        let labels_of = Vec::<i64>::try_from(batch.labels().f_to_device(tch::Device::Cpu)?)?;
        gold.extend(labels_of.into_iter().map(|y| y as usize));
    }
    let fitted = fit_label_bias(&rows, &gold)?;
    let log_prior = Tensor::from_slice(&fitted.label_bias.iter().map(|b| -b).collect::<Vec<_>>());
    Ok((log_prior, fitted))
}

/// Mean cross-entropy of softmax(`row` + `bias`) at each row's gold label, and its gradient and
/// Hessian in the bias.
fn bias_objective(rows: &[Vec<f64>], gold: &[usize], bias: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
    let k = bias.len();
    let n = rows.len() as f64;
    let (mut loss, mut grad, mut hess) = (0.0, vec![0.0; k], vec![0.0; k * k]);
    for (row, &y) in rows.iter().zip(gold) {
        let z: Vec<f64> = row.iter().zip(bias).map(|(a, b)| a + b).collect();
        let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_norm = top + z.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
        let q: Vec<f64> = z.iter().map(|v| (v - log_norm).exp()).collect();
        loss += (log_norm - z[y]) / n;
        for i in 0..k {
            grad[i] += (q[i] - f64::from(u8::from(i == y))) / n;
            hess[i * k + i] += q[i] / n;
            for j in 0..k {
                hess[i * k + j] -= q[i] * q[j] / n;
            }
        }
    }
    (loss, grad, hess)
}

/// Solves the k x k system `a` x = `b` by Gaussian elimination with partial pivoting; `None`
/// when `a` is singular.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let k = b.len();
    for col in 0..k {
        let pivot =
            (col..k).max_by(|&r, &s| a[r * k + col].abs().total_cmp(&a[s * k + col].abs()))?;
        if a[pivot * k + col].abs() < 1e-300 {
            return None;
        }
        for j in 0..k {
            a.swap(col * k + j, pivot * k + j);
        }
        b.swap(col, pivot);
        for r in col + 1..k {
            let f = a[r * k + col] / a[col * k + col];
            for j in col..k {
                a[r * k + j] -= f * a[col * k + j];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; k];
    for r in (0..k).rev() {
        let tail: f64 = (r + 1..k).map(|j| a[r * k + j] * x[j]).sum();
        x[r] = (b[r] - tail) / a[r * k + r];
    }
    Some(x)
}

/// The label bias maximising the likelihood of `gold` under softmax(row + b) over `rows`
/// (log-probabilities, one row per example), centred to sum 0 ([`dev_fitted_log_prior`]).
fn fit_label_bias(rows: &[Vec<f64>], gold: &[usize]) -> Result<DevBias> {
    let Some(k) = rows.first().map(Vec::len) else {
        return Err(OptimError::invalid(
            "dev-fitted label bias",
            "no dev example",
            "needs labelled dev examples",
        ));
    };
    let mut counts = vec![0usize; k];
    for &y in gold {
        match counts.get_mut(y) {
            Some(c) => *c += 1,
            None => {
                return Err(OptimError::invalid(
                    "dev-fitted label bias",
                    format!("gold label {y} of {k} labels"),
                    "must be one of the labels",
                ))
            }
        }
    }
    if let Some(missing) = counts.iter().position(|&c| c == 0) {
        return Err(OptimError::invalid(
            "dev-fitted label bias",
            format!("label {missing} has no dev example (counts {counts:?})"),
            "every label needs a dev example, or its bias diverges to -infinity",
        ));
    }
    let mut bias = vec![0.0; k];
    let (before, mut grad, mut hess) = bias_objective(rows, gold, &bias);
    let mut loss = before;
    for _ in 0..MAX_NEWTON_STEPS {
        // The Hessian is singular along (1, …, 1), to which the gradient is orthogonal: adding
        // 11^T / k makes it invertible without moving the step within the orthogonal space.
        for v in hess.iter_mut() {
            *v += 1.0 / k as f64;
        }
        let direction = solve(hess, grad.clone()).ok_or_else(|| {
            OptimError::invalid(
                "dev-fitted label bias",
                "a singular Hessian",
                "dev predictions must not all be certain",
            )
        })?;
        // Newton decrement g^T H^-1 g: twice the decrease a full step predicts.
        let decrement: f64 = grad.iter().zip(&direction).map(|(g, d)| g * d).sum();
        // Converged when every label's mean predicted probability is within 1e-8 of its dev
        // share, or when no step can lower the loss beyond f64 rounding.
        if grad.iter().all(|g| g.abs() < 1e-8) || decrement < 1e-15 * loss.max(1.0) {
            let mean = bias.iter().sum::<f64>() / k as f64;
            return Ok(DevBias {
                dev_examples: rows.len(),
                label_bias: bias.iter().map(|b| b - mean).collect(),
                dev_loss_before: before,
                dev_loss_after: loss,
            });
        }
        let mut t = 1.0;
        loop {
            let trial: Vec<f64> = bias
                .iter()
                .zip(&direction)
                .map(|(b, d)| b - t * d)
                .collect();
            let next = bias_objective(rows, gold, &trial);
            // Armijo: a decrease of at least a quarter of the linear prediction.
            if next.0 <= loss - 0.25 * t * decrement {
                (bias, loss, grad, hess) = (trial, next.0, next.1, next.2);
                break;
            }
            t *= 0.5;
            if t < 1e-10 {
                return Err(OptimError::invalid(
                    "dev-fitted label bias",
                    format!("no decrease along the Newton step (gradient {grad:?})"),
                    "the fit must converge",
                ));
            }
        }
    }
    Err(OptimError::invalid(
        "dev-fitted label bias",
        format!("gradient {grad:?} after {MAX_NEWTON_STEPS} Newton steps"),
        "the fit must converge",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits built as log q + log p_cf + a per-row constant: calibration against p_cf recovers
    /// q exactly (up to f64 rounding), whatever the row constants.
    #[test]
    fn calibration_removes_a_constructed_label_bias_exactly() {
        let prior = [0.7f64, 0.2, 0.1];
        let targets = [
            [0.2f64, 0.3, 0.5],
            [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
            [0.6, 0.3, 0.1],
        ];
        let shifts = [0.0, -4.0, 17.5];
        let mut logits = Vec::new();
        for (q, c) in targets.iter().zip(shifts) {
            for (qi, pi) in q.iter().zip(prior) {
                logits.push(qi.ln() + pi.ln() + c);
            }
        }
        let logits = Tensor::from_slice(&logits).view([3, 3]);
        let log_prior = Tensor::from_slice(&prior.map(f64::ln));
        let calibrated = calibrated_log_probs(&logits, &log_prior).unwrap();
        let got = Vec::<f64>::try_from(calibrated.exp().view([-1])).unwrap();
        let want: Vec<f64> = targets.iter().flatten().copied().collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        // The bias decides the first row's prediction (label 0); calibration restores label 2.
        assert_eq!(logits.get(0).argmax(0, false).int64_value(&[]), 0);
        assert_eq!(calibrated.get(0).argmax(0, false).int64_value(&[]), 2);
        let wrong = Tensor::from_slice(&[0.0f64, 0.0]);
        assert!(calibrated_log_probs(&logits, &wrong).is_err());
    }

    /// The fitted bias solves the likelihood equations: after it, each label's mean predicted
    /// probability over the dev rows equals its share of the gold labels (the score equations of
    /// a bias-only softmax model, a closed-form condition independent of how it is found).
    /// Examples drawn from softmax(row + b*) give back b* within sampling error, and a constant
    /// added to every row's scores changes nothing.
    #[test]
    fn a_dev_fitted_bias_matches_the_label_shares_and_recovers_a_planted_bias() {
        use rand::{Rng, SeedableRng};
        let planted = [1.2f64, -0.4, -0.8];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut rows, mut gold) = (Vec::new(), Vec::new());
        for _ in 0..20000 {
            let raw: Vec<f64> = (0..3).map(|_| rng.random_range(-2.0..2.0)).collect();
            let norm = raw.iter().map(|v| v.exp()).sum::<f64>().ln();
            let row: Vec<f64> = raw.iter().map(|v| v - norm).collect();
            let z: Vec<f64> = row
                .iter()
                .zip(planted)
                .map(|(a, b)| (a + b).exp())
                .collect();
            let u = rng.random_range(0.0..z.iter().sum::<f64>());
            let y = if u < z[0] {
                0
            } else if u < z[0] + z[1] {
                1
            } else {
                2
            };
            rows.push(row);
            gold.push(y);
        }
        let fit = fit_label_bias(&rows, &gold).unwrap();
        let n = rows.len() as f64;
        for k in 0..3 {
            let share = gold.iter().filter(|&&y| y == k).count() as f64 / n;
            let mean_q: f64 = rows
                .iter()
                .map(|r| {
                    let z: Vec<f64> = r
                        .iter()
                        .zip(&fit.label_bias)
                        .map(|(a, b)| (a + b).exp())
                        .collect();
                    z[k] / z.iter().sum::<f64>()
                })
                .sum::<f64>()
                / n;
            assert!(
                (mean_q - share).abs() < 1e-9,
                "label {k}: {mean_q} vs {share}"
            );
        }
        let centred = planted.map(|b| b - planted.iter().sum::<f64>() / 3.0);
        for (got, want) in fit.label_bias.iter().zip(centred) {
            assert!(
                (got - want).abs() < 0.06,
                "{:?} vs {centred:?}",
                fit.label_bias
            );
        }
        assert!(fit.dev_loss_after < fit.dev_loss_before);
        assert!(fit.label_bias.iter().sum::<f64>().abs() < 1e-12);
        let shifted: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.iter().map(|v| v + 3.0).collect())
            .collect();
        let again = fit_label_bias(&shifted, &gold).unwrap();
        for (a, b) in again.label_bias.iter().zip(&fit.label_bias) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    /// A label absent from dev, a label out of range and an empty dev are errors naming them.
    #[test]
    fn a_dev_fitted_bias_refuses_what_it_cannot_fit() {
        let rows = vec![vec![-0.5f64, -1.0, -2.0]; 4];
        let err = fit_label_bias(&rows, &[0, 1, 0, 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 2 has no dev example"), "{err}");
        let err = fit_label_bias(&rows, &[0, 1, 2, 3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("gold label 3"), "{err}");
        let err = fit_label_bias(&[], &[]).unwrap_err().to_string();
        assert!(err.contains("no dev example"), "{err}");
    }
}
