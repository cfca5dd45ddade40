//! Per-example losses and accuracy from each example's scores (docs/paper.md §1.1: per-sample
//! cross-entropy over the label words, model in eval mode; for multiple choice over the
//! candidates' continuation log-likelihoods, `crate::data::choice`).

use tch::{Kind, Tensor};

use super::{OptimError, Result};
use crate::batch::ExampleBatch;
use crate::model::LabelWordModel;

/// Per-example cross-entropy `[B]` of the batch's scores ([`ExampleBatch::scores`]): f32 (as
/// [`crate::model::per_example_loss`]), except that an f64 model keeps f64 so finite
/// differences can be checked at full precision.
pub fn per_example_losses(model: &dyn LabelWordModel, batch: &dyn ExampleBatch) -> Result<Tensor> {
    losses_from_logits(&batch.scores(model)?, batch.labels())
}

/// Cross-entropy of `[B, n_labels]` logits against `[B]` labels (f64 kept, else f32).
pub fn losses_from_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let kind = crate::compute::accumulation_kind(logits.kind());
    Ok(logits
        .f_to_kind(kind)?
        .f_log_softmax(-1, kind)?
        .f_gather(1, &labels.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?
        .f_neg()?)
}

/// The per-example losses as host f64 values (forward only, no graph).
pub fn per_example_loss_values(
    model: &dyn LabelWordModel,
    batch: &dyn ExampleBatch,
) -> Result<Vec<f64>> {
    let losses = tch::no_grad(|| per_example_losses(model, batch))?;
    Ok(Vec::<f64>::try_from(
        losses
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?,
    )?)
}

/// Mean loss and number of correct argmax predictions over `batches` (forward only).
pub fn evaluate<B: ExampleBatch>(
    model: &dyn LabelWordModel,
    batches: &[B],
) -> Result<(f64, usize, usize)> {
    evaluate_keeping_logits(model, batches).map(|(mean, correct, total, _)| (mean, correct, total))
}

/// Mean loss and each example's predicted and gold label (score columns), in batch order
/// (forward only). The per-example outcomes let a comparison resample the test set (a bootstrap
/// over examples) without rerunning the model, and show which labels a method predicts.
///
/// With `log_prior` (log p_cf of [`super::calibration::content_free_log_prior`]) the scores are
/// the contextually calibrated log-probabilities, so loss and predictions are the calibrated
/// classifier's.
pub fn evaluate_per_example<B: ExampleBatch>(
    model: &dyn LabelWordModel,
    batches: &[B],
    log_prior: Option<&Tensor>,
) -> Result<(f64, Vec<Outcome>)> {
    let (mean, _, _, logits) = evaluate_scored(model, batches, log_prior)?;
    let mut outcomes = Vec::new();
    for (batch, logits) in batches.iter().zip(&logits) {
        let predicted =
            Vec::<i64>::try_from(logits.f_argmax(-1, false)?.f_to_device(tch::Device::Cpu)?)?;
        let gold = Vec::<i64>::try_from(batch.labels().f_to_device(tch::Device::Cpu)?)?;
        outcomes.extend(
            predicted
                .into_iter()
                .zip(gold)
                .map(|(predicted, gold)| Outcome { predicted, gold }),
        );
    }
    Ok((mean, outcomes))
}

/// One example's evaluation: the predicted label (the argmax score column) and the gold one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub predicted: i64,
    pub gold: i64,
}

impl Outcome {
    pub fn correct(self) -> bool {
        self.predicted == self.gold
    }
}

/// [`evaluate`], also returning each batch's `[B, n]` scores (label-word logits or candidate
/// log-likelihoods, on the model's device) for scores beyond accuracy, such as a ROC AUC.
pub fn evaluate_keeping_logits<B: ExampleBatch>(
    model: &dyn LabelWordModel,
    batches: &[B],
) -> Result<(f64, usize, usize, Vec<Tensor>)> {
    evaluate_scored(model, batches, None)
}

/// [`evaluate_keeping_logits`] with optional contextual calibration: with `log_prior` the
/// returned scores are calibrated log-probabilities ([`super::calibration`]) and loss and
/// accuracy are computed on them; without it, the scores as they are. Calibration is defined
/// for label words only: a multiple-choice batch with `log_prior` is an error.
pub fn evaluate_scored<B: ExampleBatch>(
    model: &dyn LabelWordModel,
    batches: &[B],
    log_prior: Option<&Tensor>,
) -> Result<(f64, usize, usize, Vec<Tensor>)> {
    let mut loss_sum = 0.0;
    let mut correct = 0usize;
    let mut total = 0usize;
    let mut all_logits = Vec::with_capacity(batches.len());
    tch::no_grad(|| -> Result<()> {
        for batch in batches {
            let mut logits = batch.scores(model)?;
            if let Some(prior) = log_prior {
                if batch.label_word_ids().is_none() {
                    return Err(OptimError::invalid(
                        "calibration",
                        "a multiple-choice batch",
                        "contextual calibration is defined for label-word classification only",
                    ));
                }
                logits = super::calibration::calibrated_log_probs(&logits, prior)?;
            }
            let losses = losses_from_logits(&logits, batch.labels())?;
            loss_sum += losses
                .f_sum(Kind::Double)?
                .f_to_device(tch::Device::Cpu)?
                .double_value(&[]);
            let predicted = logits.f_argmax(-1, false)?;
            correct += predicted
                .f_eq_tensor(batch.labels())?
                .f_sum(Kind::Int64)?
                .int64_value(&[]) as usize;
            total += batch.num_examples();
            all_logits.push(logits);
        }
        Ok(())
    })?;
    let mean = if total == 0 {
        f64::NAN
    } else {
        loss_sum / total as f64
    };
    Ok((mean, correct, total, all_logits))
}
