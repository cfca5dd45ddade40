//! Zeroth-order gradient estimators: the two-point (central-difference, SPSA / MeZO) estimator
//! with Gaussian or sphere directions, per-direction scalar noise, and scalar clipping.
//!
//! ```text
//! g = (1/n) sum_j ( (F(x + mu z_j) - F(x - mu z_j)) / (2 mu) + xi_j ) z_j,   xi_j ~ N(0, s^2)
//! ```

use ndarray::{Array1, ArrayView1};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{at_least, non_negative, positive, Result};
use crate::objective::Objective;

/// Distribution of the perturbation directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectionKind {
    /// `z ~ N(0, I_d)` (MeZO, DPZero experiments, the DP-ZOSO code).
    Gaussian,
    /// `z` uniform on the sphere of radius `sqrt(d)` (DPZero Algorithm 2, MeZO Lemma 2).
    Sphere,
}

/// Draws one direction of length `dim`.
pub fn sample_direction_using<R: Rng>(kind: DirectionKind, dim: usize, rng: &mut R) -> Array1<f64> {
    let gaussian = Array1::from_shape_simple_fn(dim, || rng.sample::<f64, _>(StandardNormal));
    match kind {
        DirectionKind::Gaussian => gaussian,
        DirectionKind::Sphere => {
            let norm = gaussian.dot(&gaussian).sqrt();
            gaussian * ((dim as f64).sqrt() / norm)
        }
    }
}

/// Central difference `(f_i(x + mu z) - f_i(x - mu z)) / (2 mu)` for example `example`.
/// On a quadratic this equals `z^T grad f_i(x)` exactly (up to rounding).
pub fn central_difference<O: Objective + ?Sized>(
    objective: &O,
    example: usize,
    x: ArrayView1<f64>,
    direction: ArrayView1<f64>,
    zo_eps: f64,
) -> f64 {
    let plus = &x + &(&direction * zo_eps);
    let minus = &x - &(&direction * zo_eps);
    (objective.example_loss(example, plus.view()) - objective.example_loss(example, minus.view()))
        / (2.0 * zo_eps)
}

/// Scalar clipping `v * min(1, C / |v|)` (DPZero / DP-ZOSO per-example clipping).
pub fn clip_scalar(value: f64, clip_norm: f64) -> f64 {
    value.clamp(-clip_norm, clip_norm)
}

/// The n-direction two-point estimator of `grad F(x)` with per-direction scalar noise of
/// standard deviation `noise_std` (see module docs).
///
/// # Errors
/// `zo_eps <= 0`, `directions == 0` or `noise_std < 0`.
pub fn two_point_estimate_using<O: Objective + ?Sized, R: Rng>(
    objective: &O,
    x: ArrayView1<f64>,
    zo_eps: f64,
    directions: usize,
    noise_std: f64,
    kind: DirectionKind,
    rng: &mut R,
) -> Result<Array1<f64>> {
    positive("zo_eps", zo_eps)?;
    at_least("directions", directions, 1)?;
    non_negative("noise_std", noise_std)?;
    let dim = objective.dim();
    let mut estimate = Array1::zeros(dim);
    for _ in 0..directions {
        let direction = sample_direction_using(kind, dim, rng);
        let plus = &x + &(&direction * zo_eps);
        let minus = &x - &(&direction * zo_eps);
        let difference =
            (objective.loss(plus.view()) - objective.loss(minus.view())) / (2.0 * zo_eps);
        let noise = noise_std * rng.sample::<f64, _>(StandardNormal);
        estimate.scaled_add(difference + noise, &direction);
    }
    Ok(estimate / directions as f64)
}

/// One clipped projection `clip_C(z^T g) z` with `z ~ N(0, I)`: the per-example DPZero
/// estimator when the central difference is exact (quadratics).
pub fn clipped_projection_using<R: Rng>(
    gradient: ArrayView1<f64>,
    clip_norm: f64,
    rng: &mut R,
) -> Array1<f64> {
    let direction = sample_direction_using(DirectionKind::Gaussian, gradient.len(), rng);
    let projection = clip_scalar(direction.dot(&gradient), clip_norm);
    direction * projection
}
