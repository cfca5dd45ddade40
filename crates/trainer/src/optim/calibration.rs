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
}
