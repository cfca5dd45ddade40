//! DP-SGD with per-example clipping and Gaussian noise on every coordinate (Abadi et al. 2016),
//! the real first-order baseline (docs/paper.md §3.3: the released code's whole-batch clip is not
//! DP-SGD).
//!
//! ```text
//! g_i = grad l_i(theta),  g~_i = g_i min(1, C / ||g_i||)
//! theta <- theta - eta (sum_i g~_i + noise_std z) / normaliser,  z ~ N(0, I_d) from a seed
//! ```
//! Two ways to clip per example ([`DpSgdClipping`]):
//! * `Ghost` (default): one forward and one backward, per-example norms from each layer's inputs
//!   and output gradients and the clipped sum formed layer by layer ([`super::ghost`]). Beyond
//!   inference it holds the layers' output gradients and one parameter's gradient at a time.
//! * `Microbatch` (reference): micro-batches of one example, each backpropagated alone and its
//!   clipped gradient accumulated: B backward passes per step, and the gradients plus one
//!   accumulator, i.e. two extra copies of the trainable weights.

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::ghost::{clip_factors, ghost_clipped_gradient, PerExampleClipping};
use super::params::TrainableParams;
use super::rng::{stream, Purpose};
use super::{axpy_z, loss, OptimError, ParamSet, Result};
use crate::batch::ExampleBatch;
use crate::model::LabelWordModel;

/// How the per-example gradients are clipped (both give the same update up to rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpSgdClipping {
    /// Ghost norms and book-keeping: one forward, one backward ([`super::ghost`]).
    #[default]
    Ghost,
    /// One backward per example (the reference).
    Microbatch,
}

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
    /// How per-example gradients are clipped.
    pub clipping: DpSgdClipping,
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
    /// Bytes held beyond inference by the parameter gradients: for micro-batches the gradients
    /// plus the clipped-sum accumulator; for ghost clipping the largest single parameter
    /// gradient (the layer output gradients, activation-sized, are not counted here).
    pub extra_state_bytes: usize,
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

/// `(sum_i clip_C(grad l_i), per-example losses, number clipped)` by micro-batches: the
/// accumulators have the parameters' shapes (f32, or f64 for an f64 model). Gradients are left
/// zeroed.
pub fn clipped_gradient_sum(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &dyn ExampleBatch,
    clip_norm: f64,
) -> Result<(Vec<Tensor>, Vec<f64>, usize)> {
    let (sum, per_example) = microbatch_clipped_gradient(model, params, batch, clip_norm)?;
    Ok((sum, per_example.losses, per_example.clipped))
}

/// `sum_i clip_C(grad l_i)` by ghost clipping, in the layout of [`clipped_gradient_sum`] (f32,
/// or f64 for an f64 model), with the per-example losses and norms.
pub fn ghost_clipped_gradient_sum(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &dyn ExampleBatch,
    clip_norm: f64,
) -> Result<(Vec<Tensor>, PerExampleClipping)> {
    let mut sums: Vec<Tensor> = params
        .zeros_like_f32()?
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let per_example = ghost_clipped_gradient(model, params, batch, clip_norm, &mut |k, grad| {
        sums[k] = grad.f_to_kind(sums[k].kind())?;
        Ok(())
    })?;
    Ok((sums, per_example))
}

/// Micro-batch clipping (one backward per example): the clipped sum (layout of
/// [`clipped_gradient_sum`]) with the per-example losses and norms.
pub fn microbatch_clipped_gradient(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &dyn ExampleBatch,
    clip_norm: f64,
) -> Result<(Vec<Tensor>, PerExampleClipping)> {
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
    let mut losses = Vec::with_capacity(batch.num_examples());
    let mut norms = Vec::with_capacity(batch.num_examples());
    for i in 0..batch.num_examples() {
        zero_grads(params)?;
        // All rows of the example (a multiple-choice example's candidates) in one backward.
        let example = batch.single(i)?;
        let example_loss = loss::per_example_losses(model, example.as_ref())?.f_sum(Kind::Float)?;
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
            norms.push(norm);
            let factor = clip_factors(&[norm], clip_norm).0[0];
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
    let clipped = clip_factors(&norms, clip_norm).1;
    Ok((
        accumulators,
        PerExampleClipping {
            losses,
            norms,
            clipped,
        },
    ))
}

/// One DP-SGD step at global step `step` (noise seed from [`super::rng::stream`]).
/// A non-finite loss leaves theta untouched.
pub fn dp_sgd_step(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &dyn ExampleBatch,
    settings: &DpSgdSettings,
    run_seed: u64,
    step: u64,
) -> Result<DpSgdReport> {
    if batch.num_examples() == 0 && settings.normaliser.is_none() {
        return Err(OptimError::EmptyBatch { step });
    }
    if !(settings.noise_std >= 0.0 && settings.noise_std.is_finite()) {
        return Err(OptimError::invalid(
            "noise_std",
            settings.noise_std,
            "must be >= 0",
        ));
    }
    let normaliser = settings.normaliser.unwrap_or(batch.num_examples() as f64);
    let scale = -settings.step_size / normaliser;
    let non_finite = |losses: &[f64]| match losses.iter().find(|l| !l.is_finite()) {
        Some(&bad) => Err(OptimError::NonFiniteLoss {
            step,
            loss: bad,
            context: "DP-SGD example loss",
        }),
        None => Ok(()),
    };
    let elt = params.named()[0].1.kind().elt_size_in_bytes();
    let (per_example, extra_state_bytes) = match settings.clipping {
        DpSgdClipping::Microbatch => {
            let (accumulators, per_example) =
                microbatch_clipped_gradient(model, params, batch, settings.clip_norm)?;
            non_finite(&per_example.losses)?;
            tch::no_grad(|| -> Result<()> {
                for ((_, p), acc) in params.named().iter().zip(&accumulators) {
                    let update = acc.f_mul_scalar(scale)?.f_to_kind(p.kind())?;
                    let _ = p.shallow_clone().f_add_(&update)?;
                }
                Ok(())
            })?;
            let bytes = params.total_numel() * (elt + accumulators[0].kind().elt_size_in_bytes());
            (per_example, bytes)
        }
        DpSgdClipping::Ghost => {
            let mut largest = 0usize;
            // Each parameter is updated as soon as its clipped sum is formed, so only one
            // parameter-sized gradient is alive at a time.
            let per_example = ghost_clipped_gradient(
                model,
                params,
                batch,
                settings.clip_norm,
                &mut |k, grad| {
                    largest = largest.max(grad.numel() * grad.kind().elt_size_in_bytes());
                    let p = &params.named()[k].1;
                    tch::no_grad(|| -> Result<()> {
                        let update = grad.f_mul_scalar(scale)?.f_to_kind(p.kind())?;
                        let _ = p.shallow_clone().f_add_(&update)?;
                        Ok(())
                    })
                },
            )?;
            non_finite(&per_example.losses)?;
            (per_example, largest)
        }
    };
    let PerExampleClipping {
        losses, clipped, ..
    } = per_example;
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
    Ok(DpSgdReport {
        loss: (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64),
        clipped,
        noise_seed,
        extra_state_bytes,
    })
}
