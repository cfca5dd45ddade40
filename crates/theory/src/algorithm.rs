//! ZO-SGD, DPZero, DP-ZOSO and DP-ZOPO as one loop, generic over [`Objective`]
//! (docs/paper.md §1.1–1.3):
//!
//! ```text
//! for t = 1..T:  (stage, eta, mu, anchor_reset) = schedule.at(t); if anchor_reset: anchor <- x
//!   draw a minibatch B_t (|B_t| = B, without replacement)
//!   for j = 1..q:  z_j ~ N(0, I) on the coordinates M (all of them unless masked)
//!     g_i = (f_i(x + mu z_j) - f_i(x - mu z_j)) / (2 mu);  g_i <- clip_C(g_i)
//!     a_j = (sum_i g_i + N(0, sigma^2 C^2)) / B
//!   x <- x - eta ( (1/q) sum_j a_j z_j + lambda (x - anchor) )
//! ```
//!
//! * ZO-SGD (MeZO): no clipping, `sigma = 0`, constant schedule.
//! * DPZero: clipping + noise, constant schedule, `lambda = 0`.
//! * DP-ZOSO: a [`StagewiseSchedule`] and a proximal weight `lambda`.
//! * DP-ZOPO: DP-ZOSO restricted to a coordinate subset `M`.
//!
//! The proximal term is added as `lambda (x - anchor)`, the intended form; the released code
//! multiplies it by `z` and, because the anchor shares storage, it is a no-op there
//! (docs/paper.md §1.2 caveats 1–2).

use ndarray::{Array1, ArrayView1};
use rand::seq::index::sample;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{at_least, non_negative, Result, TheoryError};
use crate::objective::Objective;
use schedule::StagewiseSchedule;

/// Privacy, batching and subspace settings of the DP zeroth-order loop.
#[derive(Debug, Clone, PartialEq)]
pub struct DpZoConfig {
    /// Minibatch size `B` (sampled without replacement each step).
    pub batch_size: usize,
    /// Per-example scalar clipping threshold `C`; `None` for no clipping (ZO-SGD).
    pub clip_norm: Option<f64>,
    /// Noise multiplier `sigma`: the sum of clipped differences gets `N(0, sigma^2 C^2)`.
    pub noise_multiplier: f64,
    /// Number of directions `q` per step.
    pub directions: usize,
    /// Proximal weight `lambda` towards the stage anchor.
    pub proximal_weight: f64,
    /// Coordinates `M` that are perturbed and updated (DP-ZOPO); `None` means all.
    pub coordinates: Option<Vec<usize>>,
}

impl DpZoConfig {
    /// Plain ZO-SGD with minibatch size `batch_size` (no clipping, no noise, no mask).
    pub fn zo_sgd(batch_size: usize) -> Self {
        Self {
            batch_size,
            clip_norm: None,
            noise_multiplier: 0.0,
            directions: 1,
            proximal_weight: 0.0,
            coordinates: None,
        }
    }

    /// DPZero: clipping at `clip_norm` and noise multiplier `noise_multiplier`.
    pub fn dp_zero(batch_size: usize, clip_norm: f64, noise_multiplier: f64) -> Self {
        Self {
            clip_norm: Some(clip_norm),
            noise_multiplier,
            ..Self::zo_sgd(batch_size)
        }
    }

    /// Standard deviation of the scalar noise on the averaged projection, `sigma C / B`.
    pub fn scalar_noise_std(&self) -> f64 {
        self.noise_multiplier * self.clip_norm.unwrap_or(0.0) / self.batch_size as f64
    }

    fn validate(&self, objective_dim: usize, num_examples: usize) -> Result<()> {
        at_least("batch_size", self.batch_size, 1)?;
        if self.batch_size > num_examples {
            return Err(TheoryError::CountTooLarge {
                name: "batch_size",
                value: self.batch_size,
                max: num_examples,
            });
        }
        at_least("directions", self.directions, 1)?;
        non_negative("noise_multiplier", self.noise_multiplier)?;
        non_negative("proximal_weight", self.proximal_weight)?;
        match self.clip_norm {
            Some(clip) => {
                crate::error::positive("clip_norm", clip)?;
            }
            None if self.noise_multiplier > 0.0 => {
                return Err(TheoryError::NotPositive {
                    name: "clip_norm (needed for noise)",
                    value: 0.0,
                })
            }
            None => {}
        }
        if let Some(coordinates) = &self.coordinates {
            at_least("coordinates.len()", coordinates.len(), 1)?;
            if let Some(&bad) = coordinates.iter().find(|&&k| k >= objective_dim) {
                return Err(TheoryError::CountTooLarge {
                    name: "coordinate index",
                    value: bad,
                    max: objective_dim - 1,
                });
            }
        }
        Ok(())
    }
}

/// Runs the loop from `x0` for `schedule.total_steps()` steps. `observe(t, &x)` is called at
/// `t = 0` and after every step (cheap observers only; they see the iterate by reference).
///
/// # Errors
/// Invalid configuration, a dimension mismatch, or a non-finite iterate (divergence).
pub fn run_dp_zo_using<O, R, F>(
    objective: &O,
    x0: ArrayView1<f64>,
    config: &DpZoConfig,
    schedule: &StagewiseSchedule,
    rng: &mut R,
    mut observe: F,
) -> Result<Array1<f64>>
where
    O: Objective + ?Sized,
    R: Rng,
    F: FnMut(usize, ArrayView1<f64>),
{
    let dim = objective.dim();
    if x0.len() != dim {
        return Err(TheoryError::DimensionMismatch {
            what: "x0",
            expected: dim,
            got: x0.len(),
        });
    }
    let num_examples = objective.num_examples();
    config.validate(dim, num_examples)?;
    let all: Vec<usize>;
    let coordinates: &[usize] = match &config.coordinates {
        Some(c) => c,
        None => {
            all = (0..dim).collect();
            &all
        }
    };
    let batch = config.batch_size as f64;
    let noise_std = config.noise_multiplier * config.clip_norm.unwrap_or(0.0);
    let mut x = x0.to_owned();
    let mut anchor = x.clone();
    let mut plus = x.clone();
    let mut minus = x.clone();
    let mut direction = vec![0.0; coordinates.len()];
    let mut update = Array1::<f64>::zeros(dim);
    observe(0, x.view());
    for t in 1..=schedule.total_steps() {
        let step = schedule.at(t)?;
        if step.anchor_reset {
            anchor.assign(&x);
        }
        let members = sample(rng, num_examples, config.batch_size);
        update.fill(0.0);
        for _ in 0..config.directions {
            for value in direction.iter_mut() {
                *value = rng.sample(StandardNormal);
            }
            for (&k, &z) in coordinates.iter().zip(direction.iter()) {
                plus[k] = x[k] + step.zo_eps * z;
                minus[k] = x[k] - step.zo_eps * z;
            }
            let mut sum = 0.0;
            for i in members.iter() {
                let difference = (objective.example_loss(i, plus.view())
                    - objective.example_loss(i, minus.view()))
                    / (2.0 * step.zo_eps);
                sum += match config.clip_norm {
                    Some(clip) => difference.clamp(-clip, clip),
                    None => difference,
                };
            }
            if noise_std > 0.0 {
                sum += noise_std * rng.sample::<f64, _>(StandardNormal);
            }
            let projected = sum / batch / config.directions as f64;
            for (&k, &z) in coordinates.iter().zip(direction.iter()) {
                update[k] += projected * z;
            }
        }
        for &k in coordinates {
            x[k] -= step.step_size * (update[k] + config.proximal_weight * (x[k] - anchor[k]));
            plus[k] = x[k];
            minus[k] = x[k];
        }
        if let Some(&bad) = x.iter().find(|v| !v.is_finite()) {
            return Err(TheoryError::NonFinite {
                what: "iterate (divergence)",
                value: bad,
            });
        }
        observe(t, x.view());
    }
    Ok(x)
}
