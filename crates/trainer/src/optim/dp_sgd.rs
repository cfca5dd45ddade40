//! DP-SGD with per-example clipping and Gaussian noise on every coordinate (Abadi et al. 2016),
//! the real first-order baseline (paper.md §3.3: the released code's whole-batch clip is not
//! DP-SGD).
//!
//! ```text
//! g_i = grad l_i(theta),  g~_i = g_i min(1, C / ||g_i||)
//! theta <- theta - eta (sum_i g~_i + noise_std z) / normaliser,  z ~ N(0, I_d) from a seed
//! ```
//! Memory-lean per-example strategy: micro-batches of one example, each backpropagated alone and
//! its clipped gradient accumulated. Beyond inference it holds the gradients and one
//! accumulator, i.e. two extra copies of the trainable weights (reported in
//! [`DpSgdReport::extra_state_bytes`]); time is B backward passes per step.

use rand::Rng;
use tch::{Kind, Tensor};

use super::params::TrainableParams;
use super::rng::{stream, Purpose};
use super::{axpy_z, loss, OptimError, ParamSet, Result};
use crate::batch::Batch;
use crate::model::LabelWordModel;

/// Settings of one DP-SGD step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgdSettings {
    /// Step size eta.
    pub step_size: f64,
    /// Per-example gradient norm bound C.
    pub clip_norm: f64,
    /// Std of the per-coordinate noise on the clipped sum (sigma C or 2 sigma C).
    pub noise_std: f64,
    /// Divide the noisy sum by this; `None`: the actual batch size.
    pub normaliser: Option<f64>,
}

/// What a DP-SGD step did.
#[derive(Debug, Clone, PartialEq)]
pub struct DpSgdReport {
    /// Mean per-example loss before the update (`None` for an empty Poisson batch, where only
    /// the noise moves theta).
    pub loss: Option<f64>,
    /// Examples whose gradient norm exceeded C.
    pub clipped: usize,
    /// Seed of the per-coordinate noise.
    pub noise_seed: u64,
    /// Bytes held beyond inference: gradients plus the clipped-sum accumulator.
    pub extra_state_bytes: usize,
}

/// One example of `batch` as a batch of one.
pub fn single_example(batch: &Batch, index: i64) -> Result<Batch> {
    Ok(Batch {
        input_ids: batch.input_ids.f_narrow(0, index, 1)?,
        attention_mask: batch.attention_mask.f_narrow(0, index, 1)?,
        positions: batch.positions.f_narrow(0, index, 1)?,
        labels: batch.labels.f_narrow(0, index, 1)?,
        label_word_ids: batch.label_word_ids.shallow_clone(),
    })
}

fn zero_grads(params: &TrainableParams) -> Result<()> {
    for (_, p) in params.named() {
        let mut grad = p.grad();
        if grad.defined() {
            let _ = grad.f_zero_()?;
        }
    }
    Ok(())
}

/// `(sum_i clip_C(grad l_i), per-example losses, number clipped)`: the accumulators have the
/// parameters' shapes (f32, or f64 for an f64 model). Gradients are left zeroed.
pub fn clipped_gradient_sum(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &Batch,
    clip_norm: f64,
) -> Result<(Vec<Tensor>, Vec<f64>, usize)> {
    if !(clip_norm > 0.0 && clip_norm.is_finite()) {
        return Err(OptimError::invalid(
            "clip_norm",
            clip_norm,
            "must be finite and > 0",
        ));
    }
    let accumulators: Vec<Tensor> = params
        .zeros_like_f32()?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let mut losses = Vec::with_capacity(batch.len());
    let mut clipped = 0;
    for i in 0..batch.len() as i64 {
        zero_grads(params)?;
        let example = single_example(batch, i)?;
        let example_loss = loss::per_example_losses(model, &example)?.f_sum(Kind::Float)?;
        losses.push(example_loss.f_to_kind(Kind::Double)?.double_value(&[]));
        example_loss.f_backward()?;
        tch::no_grad(|| -> Result<()> {
            let mut squared_norm = 0.0;
            let grads: Vec<Tensor> = params.named().iter().map(|(_, p)| p.grad()).collect();
            for grad in grads.iter().filter(|g| g.defined()) {
                squared_norm += grad
                    .f_to_kind(Kind::Double)?
                    .f_square()?
                    .f_sum(Kind::Double)?
                    .double_value(&[]);
            }
            let norm = squared_norm.sqrt();
            let factor = if norm > clip_norm {
                clipped += 1;
                clip_norm / norm
            } else {
                1.0
            };
            for (acc, grad) in accumulators.iter().zip(&grads) {
                if grad.defined() {
                    let scaled = grad.f_to_kind(acc.kind())?.f_mul_scalar(factor)?;
                    let _ = acc.shallow_clone().f_add_(&scaled)?;
                }
            }
            Ok(())
        })?;
    }
    zero_grads(params)?;
    Ok((accumulators, losses, clipped))
}

/// One DP-SGD step at global step `step` (noise seed from [`super::rng::stream`]).
/// A non-finite loss leaves theta untouched.
pub fn dp_sgd_step(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &Batch,
    settings: &DpSgdSettings,
    run_seed: u64,
    step: u64,
) -> Result<DpSgdReport> {
    if batch.is_empty() && settings.normaliser.is_none() {
        return Err(OptimError::EmptyBatch { step });
    }
    if !(settings.noise_std >= 0.0 && settings.noise_std.is_finite()) {
        return Err(OptimError::invalid(
            "noise_std",
            settings.noise_std,
            "must be >= 0",
        ));
    }
    let (accumulators, losses, clipped) =
        clipped_gradient_sum(model, params, batch, settings.clip_norm)?;
    if let Some(&bad) = losses.iter().find(|l| !l.is_finite()) {
        return Err(OptimError::NonFiniteLoss {
            step,
            loss: bad,
            context: "DP-SGD example loss",
        });
    }
    let normaliser = settings.normaliser.unwrap_or(batch.len() as f64);
    tch::no_grad(|| -> Result<()> {
        for ((_, p), acc) in params.named().iter().zip(&accumulators) {
            let update = acc
                .f_mul_scalar(-settings.step_size / normaliser)?
                .f_to_kind(p.kind())?;
            let _ = p.shallow_clone().f_add_(&update)?;
        }
        Ok(())
    })?;
    let noise_seed: u64 = stream(run_seed, step, Purpose::Noise).random();
    let set = ParamSet::new(
        params
            .named()
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
    )?;
    axpy_z(
        &set,
        &[(
            noise_seed,
            -settings.step_size * settings.noise_std / normaliser,
        )],
    )?;
    let elt = params.named()[0].1.kind().elt_size_in_bytes();
    let extra_state_bytes =
        params.total_numel() * (elt + accumulators[0].kind().elt_size_in_bytes());
    Ok(DpSgdReport {
        loss: (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64),
        clipped,
        noise_seed,
        extra_state_bytes,
    })
}
