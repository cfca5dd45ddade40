//! Closed forms and bounds the checks compare against, each with its source.

use ndarray::Array1;
use statrs::function::erf::erf;

use crate::error::{non_negative, positive, Result, TheoryError};

/// `E||g||^2` of the n-direction Gaussian two-point estimator on a quadratic, with per-direction
/// scalar noise of standard deviation `noise_std`:
///
/// ```text
/// E||g||^2 = (d + n + 1)/n ||grad f||^2 + d s^2 / n
/// ```
///
/// Derivation: `E[(z^T g)^2 ||z||^2] = (d + 2)||g||^2` for `z ~ N(0, I_d)` (Isserlis), cross
/// terms `E[z z^T g] = g`, and `E[xi^2 ||z||^2] = s^2 d`. The sphere version is
/// [`sphere_second_moment`].
pub fn gaussian_second_moment(
    dim: usize,
    directions: usize,
    grad_norm_sq: f64,
    noise_std: f64,
) -> f64 {
    let (d, n) = (dim as f64, directions as f64);
    (d + n + 1.0) / n * grad_norm_sq + d * noise_std * noise_std / n
}

/// `E||g||^2` with directions uniform on the `sqrt(d)`-sphere: `(d + n - 1)/n ||grad f||^2 +
/// d s^2 / n` (MeZO, Malladi et al. 2023, Lemma 2, plus the noise term).
pub fn sphere_second_moment(
    dim: usize,
    directions: usize,
    grad_norm_sq: f64,
    noise_std: f64,
) -> f64 {
    let (d, n) = (dim as f64, directions as f64);
    (d + n - 1.0) / n * grad_norm_sq + d * noise_std * noise_std / n
}

/// Mean of the clipped Gaussian projection: `E[clip_C(z^T g) z] = erf(C / (sqrt(2) ||g||)) g`.
/// This function returns the factor `erf(C / (sqrt(2) ||g||))` (1 when `g = 0`).
///
/// Derivation (this crate, README claim 2): write `z = w u + z_perp` with `u = g/||g||`,
/// `w ~ N(0,1)` independent of `z_perp`. Then `E[clip_C(||g|| w) z] = u E[clip_C(||g|| w) w]`,
/// and with `a = C/||g||`:
/// `E[clip(||g|| w) w] = ||g|| (2 Phi(a) - 1 - 2 a phi(a)) + C 2 phi(a) = ||g|| (2 Phi(a) - 1)`.
/// The bias `-(erfc(a/sqrt 2)) g` vanishes as `C -> infinity` (faster than `exp(-a^2/2)`).
pub fn clipped_projection_mean_factor(clip_norm: f64, grad_norm: f64) -> f64 {
    if grad_norm == 0.0 {
        return 1.0;
    }
    erf(clip_norm / (std::f64::consts::SQRT_2 * grad_norm))
}

/// Nesterov & Spokoiny (2017), Theorem 1, eq. (19): for L-smooth f and Gaussian smoothing
/// `f_mu(x) = E f(x + mu u)`, `|f_mu(x) - f(x)| <= mu^2 L d / 2`.
pub fn smoothing_value_gap_bound(zo_eps: f64, smoothness: f64, dim: usize) -> f64 {
    zo_eps * zo_eps * smoothness * dim as f64 / 2.0
}

/// Nesterov & Spokoiny (2017), Lemma 3, eq. (30): `||grad f_mu(x) - grad f(x)|| <=
/// (mu/2) L (d + 3)^(3/2)`.
pub fn smoothing_gradient_gap_bound(zo_eps: f64, smoothness: f64, dim: usize) -> f64 {
    zo_eps / 2.0 * smoothness * (dim as f64 + 3.0).powf(1.5)
}

/// Linear-rate-to-noise-floor bound for DP-ZO-SGD (full batch, one Gaussian direction,
/// clipping inactive) on `F(x) = 1/2 (x - x*)^T A (x - x*)` with `mu I <= A <= L I`:
///
/// ```text
/// if eta (2 L + tr A) <= 1:
///   E F(x_t) - F* <= (1 - eta mu)^t D_0 + (1 - (1 - eta mu)^t) eta nu^2 tr(A) / (2 mu)
/// ```
///
/// where `nu` is the standard deviation of the scalar noise on the averaged projection
/// (`nu = sigma C / B`). Derivation (README claim 4): `E[z z^T M z z^T] = 2M + tr(M) I` gives
/// per eigen-direction the factor `1 - 2 eta l + 2 eta^2 l^2 + eta^2 tr(A) l <= 1 - eta l`;
/// the noise adds `eta^2 nu^2 tr(A) / 2` per step. The same argument as the ZO-SGD analyses of
/// Nesterov & Spokoiny (2017) and DPZero (Zhang et al. 2024, Thm 3 / Remark 4.4, PL case), with
/// `tr(A) = r L` in place of `d L`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvergenceBound {
    step_size: f64,
    strong_convexity: f64,
    trace: f64,
    noise_std: f64,
    initial_excess: f64,
}

impl ConvergenceBound {
    /// Validates the step-size condition `eta (2 L + tr A) <= 1`.
    ///
    /// # Errors
    /// Non-positive inputs, or a step size violating the condition.
    pub fn new(
        eigenvalues: &Array1<f64>,
        step_size: f64,
        noise_std: f64,
        initial_excess: f64,
    ) -> Result<Self> {
        positive("step_size", step_size)?;
        non_negative("noise_std", noise_std)?;
        non_negative("initial_excess", initial_excess)?;
        let smoothness = eigenvalues.fold(0.0, |a, &b| f64::max(a, b));
        let strong_convexity = eigenvalues.fold(f64::INFINITY, |a, &b| f64::min(a, b));
        positive("strong_convexity (lambda_min)", strong_convexity)?;
        let trace = eigenvalues.sum();
        let limit = 1.0 / (2.0 * smoothness + trace);
        if step_size > limit {
            return Err(TheoryError::InvalidSchedule {
                reason: format!("step_size {step_size} exceeds 1/(2L + tr A) = {limit}"),
            });
        }
        Ok(Self {
            step_size,
            strong_convexity,
            trace,
            noise_std,
            initial_excess,
        })
    }

    /// Largest step size allowed by the bound, `1 / (2L + tr A)`.
    pub fn max_step_size(eigenvalues: &Array1<f64>) -> f64 {
        let smoothness = eigenvalues.fold(0.0, |a, &b| f64::max(a, b));
        1.0 / (2.0 * smoothness + eigenvalues.sum())
    }

    /// The noise floor `eta nu^2 tr(A) / (2 mu)`.
    pub fn floor(&self) -> f64 {
        self.step_size * self.noise_std * self.noise_std * self.trace
            / (2.0 * self.strong_convexity)
    }

    /// The bound after `steps` steps.
    pub fn at(&self, steps: usize) -> f64 {
        let contraction = (1.0 - self.step_size * self.strong_convexity)
            .powi(i32::try_from(steps).unwrap_or(i32::MAX));
        contraction * self.initial_excess + (1.0 - contraction) * self.floor()
    }
}

/// Exact `E F(x_t) - F*` for the same unclipped full-batch algorithm with per-step step sizes,
/// via the recursion on the diagonal second moments `s_k = E (x_k - x*_k)^2` (A diagonal):
///
/// ```text
/// s_k <- s_k (1 - 2 eta l_k + 2 eta^2 l_k^2) + eta^2 (sum_j l_j^2 s_j + nu^2)
/// ```
///
/// Returns `steps + 1` values (t = 0..=steps).
///
/// # Errors
/// Length mismatch between `eigenvalues` and `initial_error_sq`, or a non-finite result.
pub fn exact_excess_curve(
    eigenvalues: &Array1<f64>,
    initial_error_sq: &Array1<f64>,
    step_sizes: &[f64],
    noise_std: f64,
) -> Result<Vec<f64>> {
    if eigenvalues.len() != initial_error_sq.len() {
        return Err(TheoryError::DimensionMismatch {
            what: "initial_error_sq vs eigenvalues",
            expected: eigenvalues.len(),
            got: initial_error_sq.len(),
        });
    }
    let mut second_moments = initial_error_sq.clone();
    let excess = |s: &Array1<f64>| 0.5 * eigenvalues.dot(s);
    let mut curve = Vec::with_capacity(step_sizes.len() + 1);
    curve.push(excess(&second_moments));
    for &eta in step_sizes {
        let coupling: f64 = eigenvalues
            .iter()
            .zip(second_moments.iter())
            .map(|(&l, &s)| l * l * s)
            .sum::<f64>()
            + noise_std * noise_std;
        second_moments.zip_mut_with(eigenvalues, |s, &l| {
            *s = *s * (1.0 - 2.0 * eta * l + 2.0 * eta * eta * l * l) + eta * eta * coupling;
        });
        let value = excess(&second_moments);
        if !value.is_finite() {
            return Err(TheoryError::NonFinite {
                what: "exact_excess_curve",
                value,
            });
        }
        curve.push(value);
    }
    Ok(curve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_moment_closed_forms_match_mezo_lemma_2() {
        // MeZO Lemma 2 with n = 1 (sphere): E||g||^2 = d ||grad||^2.
        assert_eq!(sphere_second_moment(10, 1, 2.0, 0.0), 20.0);
        // Gaussian n = 1: (d + 2) ||grad||^2.
        assert_eq!(gaussian_second_moment(10, 1, 2.0, 0.0), 24.0);
        assert_eq!(gaussian_second_moment(10, 4, 0.0, 2.0), 10.0);
    }

    #[test]
    fn clip_factor_limits() {
        assert!(clipped_projection_mean_factor(1e9, 1.0) > 1.0 - 1e-15);
        assert!(clipped_projection_mean_factor(1e-9, 1.0) < 1e-9);
    }

    #[test]
    fn bound_rejects_large_step() {
        let eigenvalues = Array1::from(vec![1.0, 0.5]);
        assert!(ConvergenceBound::new(&eigenvalues, 0.5, 0.0, 1.0).is_err());
        let bound = ConvergenceBound::new(&eigenvalues, 0.2, 1.0, 1.0).unwrap();
        assert!((bound.floor() - 0.2 * 1.5 / 1.0).abs() < 1e-12);
    }
}
