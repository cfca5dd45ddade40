//! Synthetic objectives: quadratics with a controlled spectrum, per-example quadratics for
//! minibatch / clipping effects, and smooth non-quadratic test functions (log-sum-exp, quartic).
//!
//! The zeroth-order algorithms only need loss values ([`Objective`]); the checks also use exact
//! gradients ([`Gradient`]).

use ndarray::{Array1, Array2, ArrayView1, Axis};
use ndarray_linalg::{Eigh, QR, UPLO};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{at_least, positive, Result, TheoryError};

/// A finite-sum objective `F(x) = (1/N) sum_i f_i(x)` seen through loss values only.
pub trait Objective {
    /// Dimension `d` of `x`.
    fn dim(&self) -> usize;
    /// Number of examples `N` (1 for a plain function).
    fn num_examples(&self) -> usize;
    /// Per-example loss `f_i(x)`.
    fn example_loss(&self, example: usize, x: ArrayView1<f64>) -> f64;
    /// Full loss `F(x)`; the default averages [`Objective::example_loss`].
    fn loss(&self, x: ArrayView1<f64>) -> f64 {
        let n = self.num_examples();
        (0..n).map(|i| self.example_loss(i, x)).sum::<f64>() / n as f64
    }
}

/// Objectives with an exact gradient of the full loss.
pub trait Gradient: Objective {
    /// `grad F(x)`.
    fn gradient(&self, x: ArrayView1<f64>) -> Array1<f64>;
}

/// Eigenvalue profiles with a controlled condition number and effective rank
/// `r = tr(A) / lambda_max` (DPZero Assumption 3.5).
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    eigenvalues: Array1<f64>,
}

impl Spectrum {
    /// `d` eigenvalues spaced geometrically from `lambda_max` down to
    /// `lambda_max / condition_number`.
    ///
    /// # Errors
    /// `dim == 0`, non-positive `lambda_max`, or `condition_number < 1`.
    pub fn geometric(dim: usize, lambda_max: f64, condition_number: f64) -> Result<Self> {
        at_least("dim", dim, 1)?;
        positive("lambda_max", lambda_max)?;
        if !(condition_number.is_finite() && condition_number >= 1.0) {
            return Err(TheoryError::NotPositive {
                name: "condition_number - 1 (condition_number >= 1)",
                value: condition_number - 1.0,
            });
        }
        let eigenvalues = Array1::from_shape_fn(dim, |k| {
            let fraction = if dim == 1 {
                0.0
            } else {
                k as f64 / (dim - 1) as f64
            };
            lambda_max * condition_number.powf(-fraction)
        });
        Ok(Self { eigenvalues })
    }

    /// `top` eigenvalues equal to `lambda_max`; the other `dim - top` share `tail_trace`
    /// equally. Then `tr(A) = top * lambda_max + tail_trace` does not depend on `dim`.
    ///
    /// # Errors
    /// `top == 0`, `top > dim`, `tail_trace < 0`, a tail eigenvalue above `lambda_max`, or
    /// `tail_trace > 0` with `top == dim`.
    pub fn spiked(dim: usize, top: usize, lambda_max: f64, tail_trace: f64) -> Result<Self> {
        at_least("top", top, 1)?;
        positive("lambda_max", lambda_max)?;
        crate::error::non_negative("tail_trace", tail_trace)?;
        if top > dim {
            return Err(TheoryError::CountTooLarge {
                name: "top",
                value: top,
                max: dim,
            });
        }
        let tail_count = dim - top;
        if tail_count == 0 && tail_trace > 0.0 {
            return Err(TheoryError::CountTooSmall {
                name: "dim - top",
                value: 0,
                min: 1,
            });
        }
        let tail_value = if tail_count == 0 {
            0.0
        } else {
            tail_trace / tail_count as f64
        };
        if tail_value > lambda_max {
            return Err(TheoryError::InvalidSchedule {
                reason: format!("tail eigenvalue {tail_value} exceeds lambda_max {lambda_max}"),
            });
        }
        let eigenvalues =
            Array1::from_shape_fn(dim, |k| if k < top { lambda_max } else { tail_value });
        Ok(Self { eigenvalues })
    }

    /// Wraps explicit eigenvalues.
    ///
    /// # Errors
    /// Empty input or an eigenvalue that is not finite and >= 0.
    pub fn from_eigenvalues(eigenvalues: Array1<f64>) -> Result<Self> {
        at_least("dim", eigenvalues.len(), 1)?;
        for &value in &eigenvalues {
            crate::error::non_negative("eigenvalue", value)?;
        }
        Ok(Self { eigenvalues })
    }

    /// The eigenvalues.
    pub fn eigenvalues(&self) -> &Array1<f64> {
        &self.eigenvalues
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.eigenvalues.len()
    }

    /// `lambda_max` (the smoothness constant L).
    pub fn lambda_max(&self) -> f64 {
        self.eigenvalues.fold(0.0, |a, &b| f64::max(a, b))
    }

    /// `lambda_min` (the strong-convexity constant).
    pub fn lambda_min(&self) -> f64 {
        self.eigenvalues.fold(f64::INFINITY, |a, &b| f64::min(a, b))
    }

    /// `tr(A)`.
    pub fn trace(&self) -> f64 {
        self.eigenvalues.sum()
    }

    /// Effective rank `tr(A) / lambda_max`.
    pub fn effective_rank(&self) -> f64 {
        self.trace() / self.lambda_max()
    }
}

/// Dense quadratic `f(x) = 1/2 x^T A x - b^T x` with `A = Q diag(lambda) Q^T`, `Q` a random
/// orthogonal matrix (QR of a Gaussian matrix).
#[derive(Debug, Clone)]
pub struct Quadratic {
    hessian: Array2<f64>,
    linear: Array1<f64>,
}

impl Quadratic {
    /// Random rotation of `spectrum`, with `b ~ N(0, I)`.
    ///
    /// # Errors
    /// A LAPACK failure in the QR factorisation.
    pub fn random_using<R: Rng>(spectrum: &Spectrum, rng: &mut R) -> Result<Self> {
        let d = spectrum.dim();
        let gaussian =
            Array2::from_shape_simple_fn((d, d), || rng.sample::<f64, _>(StandardNormal));
        let (q, _r) = gaussian.qr().map_err(|e| TheoryError::Linalg {
            operation: "qr",
            message: e.to_string(),
        })?;
        let scaled = &q * spectrum.eigenvalues();
        let hessian = scaled.dot(&q.t());
        let hessian = (&hessian + &hessian.t()) * 0.5;
        let linear = Array1::from_shape_simple_fn(d, || rng.sample::<f64, _>(StandardNormal));
        Ok(Self { hessian, linear })
    }

    /// The Hessian `A`.
    pub fn hessian(&self) -> &Array2<f64> {
        &self.hessian
    }

    /// Eigenvalues of `A` in ascending order, recomputed with LAPACK `syevd`.
    ///
    /// # Errors
    /// A LAPACK failure.
    pub fn computed_eigenvalues(&self) -> Result<Array1<f64>> {
        let (values, _vectors) =
            self.hessian
                .eigh(UPLO::Lower)
                .map_err(|e| TheoryError::Linalg {
                    operation: "eigh",
                    message: e.to_string(),
                })?;
        Ok(values)
    }
}

impl Objective for Quadratic {
    fn dim(&self) -> usize {
        self.linear.len()
    }
    fn num_examples(&self) -> usize {
        1
    }
    fn example_loss(&self, _example: usize, x: ArrayView1<f64>) -> f64 {
        0.5 * x.dot(&self.hessian.dot(&x)) - self.linear.dot(&x)
    }
}

impl Gradient for Quadratic {
    fn gradient(&self, x: ArrayView1<f64>) -> Array1<f64> {
        self.hessian.dot(&x) - &self.linear
    }
}

/// Per-example quadratics sharing a diagonal Hessian:
/// `f_i(x) = 1/2 (x - c_i)^T diag(lambda) (x - c_i)`, `F = mean_i f_i`, minimised at the mean
/// centre `c_bar`. The eigenbasis is the coordinate basis, so coordinate masks (DP-ZOPO) act on
/// eigen-directions; Gaussian directions are rotation invariant, so nothing else depends on it.
#[derive(Debug, Clone)]
pub struct PerExampleQuadratic {
    eigenvalues: Array1<f64>,
    centers: Array2<f64>,
    mean_center: Array1<f64>,
    optimal_loss: f64,
}

impl PerExampleQuadratic {
    /// Centres `c_i = c_0 + spread * N(0, I)` with `c_0 ~ N(0, I)`.
    ///
    /// # Errors
    /// `num_examples == 0` or a negative `spread`.
    pub fn random_using<R: Rng>(
        spectrum: &Spectrum,
        num_examples: usize,
        spread: f64,
        rng: &mut R,
    ) -> Result<Self> {
        at_least("num_examples", num_examples, 1)?;
        crate::error::non_negative("spread", spread)?;
        let d = spectrum.dim();
        let base = Array1::from_shape_simple_fn(d, || rng.sample::<f64, _>(StandardNormal));
        let centers = Array2::from_shape_fn((num_examples, d), |(_, k)| {
            base[k] + spread * rng.sample::<f64, _>(StandardNormal)
        });
        Self::new(spectrum.eigenvalues().clone(), centers)
    }

    /// Explicit eigenvalues (diagonal Hessian) and centres (`N x d`).
    ///
    /// # Errors
    /// Shape mismatch or no examples.
    pub fn new(eigenvalues: Array1<f64>, centers: Array2<f64>) -> Result<Self> {
        at_least("num_examples", centers.nrows(), 1)?;
        if centers.ncols() != eigenvalues.len() {
            return Err(TheoryError::DimensionMismatch {
                what: "centers columns vs eigenvalues",
                expected: eigenvalues.len(),
                got: centers.ncols(),
            });
        }
        let mean_center = centers
            .mean_axis(Axis(0))
            .ok_or(TheoryError::CountTooSmall {
                name: "num_examples",
                value: 0,
                min: 1,
            })?;
        let mut objective = Self {
            eigenvalues,
            centers,
            mean_center,
            optimal_loss: 0.0,
        };
        let n = objective.num_examples();
        let at_minimum = objective.mean_center.clone();
        objective.optimal_loss = (0..n)
            .map(|i| objective.example_loss(i, at_minimum.view()))
            .sum::<f64>()
            / n as f64;
        Ok(objective)
    }

    /// The minimiser `c_bar`.
    pub fn minimizer(&self) -> &Array1<f64> {
        &self.mean_center
    }

    /// Diagonal of the Hessian.
    pub fn eigenvalues(&self) -> &Array1<f64> {
        &self.eigenvalues
    }

    /// `F(x) - F*` in closed form, `1/2 (x - c_bar)^T A (x - c_bar)`.
    pub fn excess_loss(&self, x: ArrayView1<f64>) -> f64 {
        0.5 * x
            .iter()
            .zip(self.mean_center.iter())
            .zip(self.eigenvalues.iter())
            .map(|((&xk, &ck), &lk)| lk * (xk - ck) * (xk - ck))
            .sum::<f64>()
    }

    /// `grad f_i(x) = A (x - c_i)`.
    pub fn example_gradient(&self, example: usize, x: ArrayView1<f64>) -> Array1<f64> {
        let center = self.centers.row(example);
        Array1::from_shape_fn(x.len(), |k| self.eigenvalues[k] * (x[k] - center[k]))
    }
}

impl Objective for PerExampleQuadratic {
    fn dim(&self) -> usize {
        self.eigenvalues.len()
    }
    fn num_examples(&self) -> usize {
        self.centers.nrows()
    }
    fn example_loss(&self, example: usize, x: ArrayView1<f64>) -> f64 {
        let center = self.centers.row(example);
        0.5 * x
            .iter()
            .zip(center.iter())
            .zip(self.eigenvalues.iter())
            .map(|((&xk, &ck), &lk)| lk * (xk - ck) * (xk - ck))
            .sum::<f64>()
    }
    fn loss(&self, x: ArrayView1<f64>) -> f64 {
        // Closed form: F(x) = F* + excess; F* is computed once by averaging in `new`.
        self.optimal_loss + self.excess_loss(x)
    }
}

impl Gradient for PerExampleQuadratic {
    fn gradient(&self, x: ArrayView1<f64>) -> Array1<f64> {
        Array1::from_shape_fn(x.len(), |k| {
            self.eigenvalues[k] * (x[k] - self.mean_center[k])
        })
    }
}

/// `f(x) = log sum_k exp(x_k)`: convex, gradient `softmax(x)`, Hessian
/// `diag(p) - p p^T <= I`, so L = 1 (Nesterov & Spokoiny's smoothness assumption holds).
#[derive(Debug, Clone, Copy)]
pub struct LogSumExp {
    dim: usize,
}

impl LogSumExp {
    /// A log-sum-exp in dimension `dim`.
    ///
    /// # Errors
    /// `dim == 0`.
    pub fn new(dim: usize) -> Result<Self> {
        at_least("dim", dim, 1)?;
        Ok(Self { dim })
    }

    /// Gradient Lipschitz constant used in the bounds.
    pub const SMOOTHNESS: f64 = 1.0;
}

impl Objective for LogSumExp {
    fn dim(&self) -> usize {
        self.dim
    }
    fn num_examples(&self) -> usize {
        1
    }
    fn example_loss(&self, _example: usize, x: ArrayView1<f64>) -> f64 {
        let max = x.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        max + x.iter().map(|&v| (v - max).exp()).sum::<f64>().ln()
    }
}

impl Gradient for LogSumExp {
    fn gradient(&self, x: ArrayView1<f64>) -> Array1<f64> {
        let max = x.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let weights = x.mapv(|v| (v - max).exp());
        let total = weights.sum();
        weights / total
    }
}

/// `f(x) = 1/4 sum_k x_k^4`. Not globally smooth, but its Gaussian smoothing is known in
/// closed form, `grad f_mu(x) = x^3 + 3 mu^2 x` (coordinate-wise), which validates the
/// Monte-Carlo smoothing estimator used for the Nesterov–Spokoiny checks.
#[derive(Debug, Clone, Copy)]
pub struct Quartic {
    dim: usize,
}

impl Quartic {
    /// A quartic in dimension `dim`.
    ///
    /// # Errors
    /// `dim == 0`.
    pub fn new(dim: usize) -> Result<Self> {
        at_least("dim", dim, 1)?;
        Ok(Self { dim })
    }

    /// Closed-form `grad f_mu(x) = x^3 + 3 mu^2 x` (E (x + mu u)^3 with u ~ N(0, 1)).
    pub fn smoothed_gradient(&self, x: ArrayView1<f64>, zo_eps: f64) -> Array1<f64> {
        x.mapv(|v| v * v * v + 3.0 * zo_eps * zo_eps * v)
    }
}

impl Objective for Quartic {
    fn dim(&self) -> usize {
        self.dim
    }
    fn num_examples(&self) -> usize {
        1
    }
    fn example_loss(&self, _example: usize, x: ArrayView1<f64>) -> f64 {
        0.25 * x.iter().map(|v| v.powi(4)).sum::<f64>()
    }
}

impl Gradient for Quartic {
    fn gradient(&self, x: ArrayView1<f64>) -> Array1<f64> {
        x.mapv(|v| v * v * v)
    }
}
