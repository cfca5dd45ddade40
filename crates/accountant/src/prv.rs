//! PRV accountant (Gopi, Lee & Wutschitz 2021, "Numerical composition of differential
//! privacy") for the Poisson-subsampled Gaussian, remove direction, with explicit error bounds.
//!
//! The privacy loss of one step is Y = ln(1 - q + q e^{(2x-1)/(2σ²)}) with
//! x ~ (1-q)N(0,σ²) + qN(1,σ²). Its law is truncated to [-L, L] (L from an RDP tail bound,
//! GLW21 Remark 5.6), discretised on a mesh of width
//! h = ε_err / sqrt(T/2 · ln(12/δ_err)) with cell-centred masses and a shift that restores the
//! truncated mean, and self-composed T times by FFT. Then
//! δ_Ỹ(ε + ε_err) - δ_err <= δ_Y(ε) <= δ_Ỹ(ε - ε_err) + δ_err (GLW21 Thm 5.5), which gives the
//! (lower, estimate, upper) bounds below.

use crate::error::{check_delta, check_epsilon, check_noise_multiplier, check_sampling_rate};
use crate::error::{AccountantError, Result};
use crate::numeric::normal_cdf;
use crate::orders::Orders;
use crate::quadrature::integrate_log;
use crate::rdp::poisson_subsampled_gaussian_rdp_curve;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// ε bounds: the true ε lies in [lower, upper]; `estimate` is the discretised value.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EpsilonBounds {
    /// Lower bound on ε.
    pub lower: f64,
    /// The discretised estimate.
    pub estimate: f64,
    /// Upper bound on ε (the value to report as a guarantee).
    pub upper: f64,
}

/// δ bounds for a given ε.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct DeltaBounds {
    /// Lower bound on δ.
    pub lower: f64,
    /// The discretised estimate.
    pub estimate: f64,
    /// Upper bound on δ.
    pub upper: f64,
}

/// The privacy-loss distribution of one Poisson-subsampled Gaussian step (remove direction).
struct PrivacyLoss {
    q: f64,
    sigma: f64,
}

impl PrivacyLoss {
    /// x(t): the threshold on the output with Y <= t iff x <= x(t).
    fn threshold(&self, t: f64) -> f64 {
        // ln((e^t - (1-q))/q) = ln(1 + expm1(t)/q), in logs for large t.
        let log_ratio = if t > 700.0 {
            t - self.q.ln() + (-(1.0 - self.q) * (-t).exp() / 1.0).ln_1p()
        } else {
            (t.exp_m1() / self.q).ln_1p()
        };
        self.sigma * self.sigma * log_ratio + 0.5
    }

    /// Lower end of the support, ln(1 - q).
    fn support_start(&self) -> f64 {
        (-self.q).ln_1p()
    }

    /// P(Y <= t).
    fn cdf(&self, t: f64) -> f64 {
        if t <= self.support_start() {
            return 0.0;
        }
        let x = self.threshold(t);
        (1.0 - self.q) * normal_cdf(x / self.sigma) + self.q * normal_cdf((x - 1.0) / self.sigma)
    }

    /// P(Y > t), accurate in the upper tail.
    fn survival(&self, t: f64) -> f64 {
        if t <= self.support_start() {
            return 1.0;
        }
        let x = self.threshold(t);
        (1.0 - self.q) * normal_cdf(-x / self.sigma) + self.q * normal_cdf(-(x - 1.0) / self.sigma)
    }

    /// P(a < Y <= b), from whichever tail keeps precision.
    fn mass(&self, a: f64, b: f64) -> f64 {
        if b <= a {
            return 0.0;
        }
        let upper_half = self.cdf(a) > 0.5;
        let mass = if upper_half {
            self.survival(a) - self.survival(b)
        } else {
            self.cdf(b) - self.cdf(a)
        };
        mass.max(0.0)
    }

    /// E[Y | t_min <= Y <= t_max], by quadrature of the tails (integration by parts).
    fn truncated_mean(&self, t_min: f64, t_max: f64) -> Result<f64> {
        let total = self.mass(t_min, t_max);
        let s_max = self.survival(t_max);
        let f_min = self.cdf(t_min);
        let mut positive_points = vec![0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, t_max];
        positive_points.retain(|p| *p <= t_max);
        positive_points.dedup();
        let upper = integrate_log(
            |t| (self.survival(t) - s_max).max(0.0).ln(),
            &positive_points,
            1e-10,
            4000,
            "PRV truncated mean (upper part)",
        )?;
        let start = self.support_start().max(t_min);
        let mut negative_points = vec![start, -1.0, -1e-1, -1e-2, -1e-3, -1e-4, -1e-5, 0.0];
        negative_points.retain(|p| *p >= start);
        negative_points.dedup();
        let lower = if negative_points.len() >= 2 {
            integrate_log(
                |t| (self.cdf(t) - f_min).max(0.0).ln(),
                &negative_points,
                1e-10,
                4000,
                "PRV truncated mean (lower part)",
            )?
            .log_value
            .exp()
        } else {
            0.0
        };
        Ok((upper.log_value.exp() - lower) / total)
    }
}

/// Largest discretisation grid built (each point costs about [`SECONDS_PER_POINT`]).
pub const MAX_GRID_POINTS: usize = 1 << 22;
/// Measured cost of one grid point (CDF pair, FFT and ε search) on one core of the 2-core CI
/// machine: an order of magnitude for refusals, not a promise.
pub const SECONDS_PER_POINT: f64 = 3e-7;

/// GLW21 Alg. 1's mesh width h = ε_err / sqrt(T/2 · ln(12/δ_err)).
fn mesh_width(steps: u64, epsilon_error: f64, delta_error: f64) -> f64 {
    epsilon_error / (steps as f64 / 2.0 * (12.0 / delta_error).ln()).sqrt()
}

fn too_many_points(
    points: f64,
    q: f64,
    sigma: f64,
    steps: u64,
    epsilon_error: f64,
) -> AccountantError {
    AccountantError::TooExpensive {
        what: format!(
            "the PRV accountant at q = {q}, sigma = {sigma}, steps = {steps}, eps_error = {epsilon_error}"
        ),
        cost: format!(
            "its grid needs {points:.3e} points (about {:.0} s and {:.0} MiB)",
            points * SECONDS_PER_POINT,
            points * 40.0 / (1 << 20) as f64
        ),
        limit: format!("{MAX_GRID_POINTS} points"),
        hint: "; raise eps_error (the grid shrinks in proportion) or use the RDP accountant".into(),
    }
}

/// ε_err finite and > 0, δ_err in (0, 1).
fn check_error_budget(epsilon_error: f64, delta_error: f64) -> Result<()> {
    if !(epsilon_error > 0.0 && epsilon_error.is_finite()) {
        return Err(AccountantError::InvalidParameter {
            name: "eps_error",
            value: epsilon_error,
            reason: "must be finite and > 0",
        });
    }
    if !(delta_error > 0.0 && delta_error < 1.0) {
        return Err(AccountantError::InvalidParameter {
            name: "delta_error",
            value: delta_error,
            reason: "must be in (0, 1)",
        });
    }
    Ok(())
}

/// Number of grid points the PRV accountant would build for these inputs (the domain comes
/// from RDP, so this costs a few µs). Lets a caller estimate a command's cost before running.
pub fn grid_points(
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    epsilon_error: f64,
    delta_error: f64,
) -> Result<f64> {
    check_sampling_rate(sampling_rate)?;
    check_noise_multiplier(noise_multiplier)?;
    check_error_budget(epsilon_error, delta_error)?;
    let half_width = safe_domain_half_width(
        sampling_rate,
        noise_multiplier,
        steps,
        epsilon_error,
        delta_error,
    )?;
    Ok(2.0 * (half_width / mesh_width(steps, epsilon_error, delta_error)).ceil() + 2.0)
}

/// Numerical PRV accountant for T-fold composition of one Poisson-subsampled Gaussian.
#[derive(Clone, Debug)]
pub struct PrvAccountant {
    epsilon_error: f64,
    delta_error: f64,
    max_steps: u64,
    mesh: f64,
    /// Index of t = 0 in the unshifted grid: t_i = (i - centre) h + shift.
    centre: usize,
    shift: f64,
    pmf: Vec<f64>,
    /// No privacy loss at all (q = 0 or σ = ∞): ε = δ = 0.
    trivial: bool,
}

impl PrvAccountant {
    /// Builds the discretised one-step PRV for up to `max_steps` compositions with the
    /// requested error budget (GLW21 Alg. 1; domain by Remark 5.6).
    pub fn poisson_subsampled_gaussian(
        sampling_rate: f64,
        noise_multiplier: f64,
        max_steps: u64,
        epsilon_error: f64,
        delta_error: f64,
    ) -> Result<Self> {
        check_sampling_rate(sampling_rate)?;
        check_noise_multiplier(noise_multiplier)?;
        if max_steps == 0 {
            return Err(AccountantError::InvalidSteps(0));
        }
        check_error_budget(epsilon_error, delta_error)?;
        if noise_multiplier == 0.0 {
            return Err(AccountantError::Prv(format!(
                "noise multiplier 0 at sampling rate {sampling_rate}: the privacy loss is infinite"
            )));
        }
        let trivial = sampling_rate == 0.0 || noise_multiplier == f64::INFINITY;
        let mut accountant = PrvAccountant {
            epsilon_error,
            delta_error,
            max_steps,
            mesh: 0.0,
            centre: 0,
            shift: 0.0,
            pmf: Vec::new(),
            trivial,
        };
        if trivial {
            return Ok(accountant);
        }
        let loss = PrivacyLoss {
            q: sampling_rate,
            sigma: noise_multiplier,
        };
        let half_width = safe_domain_half_width(
            sampling_rate,
            noise_multiplier,
            max_steps,
            epsilon_error,
            delta_error,
        )?;
        let mesh = mesh_width(max_steps, epsilon_error, delta_error);
        let points = 2.0 * (half_width / mesh).ceil() + 2.0;
        if points > MAX_GRID_POINTS as f64 {
            return Err(too_many_points(
                points,
                sampling_rate,
                noise_multiplier,
                max_steps,
                epsilon_error,
            ));
        }
        let k = (half_width / mesh).ceil() as usize;
        let size = 2 * k + 2;
        let t_min = -(k as f64) * mesh;
        let t_max = (k as f64 + 1.0) * mesh;
        let total = loss.mass(t_min, t_max);
        // Cell i is (e_i, e_{i+1}] with e_i = t_i - h/2 clamped to [t_min, t_max]; each edge's
        // CDF (lower half) or survival function (upper half) is evaluated once and shared by
        // the two cells it bounds, as `PrivacyLoss::mass` would compute it per cell.
        let edge = |i: usize| (t_min + (i as f64 - 0.5) * mesh).clamp(t_min, t_max);
        let upper_half = |t: f64| loss.cdf(t) > 0.5;
        let mut pmf = Vec::with_capacity(size);
        let mut discrete_mean = 0.0;
        let mut left = edge(0);
        let mut left_in_upper = upper_half(left);
        let mut left_value = if left_in_upper {
            loss.survival(left)
        } else {
            loss.cdf(left)
        };
        for i in 0..size {
            let t = t_min + i as f64 * mesh;
            let right = edge(i + 1);
            let mass = if right <= left {
                0.0
            } else if left_in_upper {
                let right_value = loss.survival(right);
                let m = left_value - right_value;
                left_value = right_value;
                m
            } else {
                let right_cdf = loss.cdf(right);
                let m = right_cdf - left_value;
                left_in_upper = right_cdf > 0.5;
                left_value = if left_in_upper {
                    loss.survival(right)
                } else {
                    right_cdf
                };
                m
            };
            left = right;
            let p = mass.max(0.0) / total;
            discrete_mean += t * p;
            pmf.push(p);
        }
        let shift = loss.truncated_mean(t_min, t_max)? - discrete_mean;
        if !(shift.abs() < mesh / 2.0) {
            return Err(AccountantError::Prv(format!(
                "discrete mean differs from the continuous mean by {shift:e} (mesh {mesh:e})"
            )));
        }
        accountant.mesh = mesh;
        accountant.centre = k;
        accountant.shift = shift;
        accountant.pmf = pmf;
        Ok(accountant)
    }

    /// The mesh width h.
    pub fn mesh(&self) -> f64 {
        self.mesh
    }

    /// Number of grid points.
    pub fn grid_size(&self) -> usize {
        self.pmf.len()
    }

    /// The T-fold composition: (grid of privacy-loss values, probabilities, the FFT's roundoff
    /// floor η = max(0, -min p̃)).
    fn compose(&self, steps: u64) -> Result<(Vec<f64>, Vec<f64>, f64)> {
        if steps == 0 {
            return Err(AccountantError::InvalidSteps(0));
        }
        if steps > self.max_steps {
            return Err(AccountantError::Prv(format!(
                "{steps} steps exceed the {} the accountant was built for",
                self.max_steps
            )));
        }
        // The FFT length is the grid's own (as prv-accountant's): zero-padding would change
        // where the circular wrap-around lands and move ε off prv-accountant's values.
        let n = self.pmf.len();
        let mut planner = FftPlanner::<f64>::new();
        let mut spectrum: Vec<Complex<f64>> =
            self.pmf.iter().map(|&p| Complex::new(p, 0.0)).collect();
        // One forward plan serves both directions: IFFT(x) = conj(FFT(conj(x))) (the 1/n is
        // applied below), which halves the planning cost.
        let fft = planner.plan_fft_forward(n);
        fft.process(&mut spectrum);
        // |z|^T underflows below f64's range when |z|² < e^{-2·745/T}: those terms are 0 in the
        // repeated squaring too (up to subnormals, ~1e-308 against probabilities), so skip it.
        let negligible = (-2.0 * 745.0 / steps as f64).exp();
        for value in spectrum.iter_mut() {
            *value = if value.norm_sqr() < negligible {
                Complex::new(0.0, 0.0)
            } else {
                complex_power(*value, steps).conj()
            };
        }
        fft.process(&mut spectrum);
        // Index sum Σ i_j maps to composed index j = Σ i_j - (T-1)·centre (mod n).
        let offset = ((steps - 1) as u128 * self.centre as u128 % n as u128) as usize;
        let scale = 1.0 / n as f64;
        let mut pmf = vec![0.0; n];
        for (j, p) in pmf.iter_mut().enumerate() {
            // conj of the second forward transform: the real part is unchanged.
            *p = spectrum[(j + offset) % n].re * scale;
        }
        let start = -(self.centre as f64) * self.mesh + steps as f64 * self.shift;
        let grid = (0..n).map(|j| start + j as f64 * self.mesh).collect();
        let floor = pmf.iter().fold(0.0_f64, |m, &p| m.max(-p));
        Ok((grid, pmf, floor))
    }

    /// ε bounds for `delta` after `steps` compositions.
    pub fn epsilon(&self, delta: f64, steps: u64) -> Result<EpsilonBounds> {
        check_delta(delta)?;
        if self.trivial {
            return Ok(EpsilonBounds {
                lower: 0.0,
                estimate: 0.0,
                upper: 0.0,
            });
        }
        if delta <= self.delta_error {
            return Err(AccountantError::Prv(format!(
                "delta = {delta} must exceed delta_error = {}",
                self.delta_error
            )));
        }
        let (grid, pmf, _) = self.compose(steps)?;
        if f64::EPSILON * grid.len() as f64 > delta - self.delta_error {
            return Err(AccountantError::Prv(format!(
                "delta = {delta} is too small for the f64 FFT on {} points",
                grid.len()
            )));
        }
        let n = grid.len();
        // Tail sums d1_i = Σ_{k>=i} p_k, d2_i = Σ_{k>=i} p_k e^{-t_k}.
        let mut tail_mass = vec![0.0; n];
        let mut tail_weighted = vec![0.0; n];
        let (mut d1, mut d2) = (0.0, 0.0);
        for i in (0..n).rev() {
            d1 += pmf[i];
            d2 += pmf[i] * (-grid[i]).exp();
            tail_mass[i] = d1;
            tail_weighted[i] = d2;
        }
        // The smallest ε' on the grid's range with δ_Ỹ(ε') <= target; `None` when already
        // δ_Ỹ(t_0) <= target at the grid's lower end t_0 (the smallest such ε' lies at or below
        // t_0: t_0 is an upper bound on it, -∞ a lower bound).
        let find_epsilon = |target: f64| -> Result<Option<f64>> {
            // δ(t_i) = d1_i - e^{t_i} d2_i decreases in i; first i with δ(t_i) <= target.
            let index = (0..n)
                .find(|&i| tail_mass[i] - grid[i].exp() * tail_weighted[i] <= target)
                .unwrap_or(n);
            if index == 0 {
                return Ok(None);
            }
            if index == n {
                return Err(AccountantError::Prv(format!(
                    "delta = {target} lies outside the discretised domain; the true epsilon may exceed the domain"
                )));
            }
            // On (t_{i-1}, t_i], δ_Ỹ(ε) = d1_i - e^ε d2_i, continuous and decreasing, so its
            // root lies in that interval (kept there against roundoff); where roundoff leaves no
            // positive ratio, t_i itself, at which δ_Ỹ <= target already holds.
            let root = ((tail_mass[index] - target) / tail_weighted[index]).ln();
            Ok(Some(if root.is_finite() {
                root.clamp(grid[index - 1], grid[index])
            } else {
                grid[index]
            }))
        };
        // GLW21 Thm 5.5: δ_Y(ε' + ε_err) <= δ_Ỹ(ε') + δ_err. ε >= 0 by definition, and δ_Y is
        // non-increasing, so where these bounds fall below 0 the exact ε is 0 (δ_Y(0) <= δ
        // already): that, and only that, is why they are raised to 0.
        let upper = find_epsilon(delta - self.delta_error)?.unwrap_or(grid[0]) + self.epsilon_error;
        let lower = find_epsilon(delta + self.delta_error)?.unwrap_or(f64::NEG_INFINITY)
            - self.epsilon_error;
        let estimate = find_epsilon(delta)?.unwrap_or(grid[0]);
        Ok(EpsilonBounds {
            lower: lower.max(0.0),
            estimate: estimate.max(0.0),
            upper: upper.max(0.0),
        })
    }

    /// δ bounds for `epsilon` after `steps` compositions.
    ///
    /// The composed probabilities carry the FFT's roundoff. True probabilities are >= 0, so the
    /// most negative composed entry measures that noise floor η; the upper bound adds η to every
    /// entry (each p̃ + η >= max(p, 0)), the estimate and the lower bound drop entries below 0.
    /// Hence 0 <= lower <= estimate <= upper <= 1.
    pub fn delta(&self, epsilon: f64, steps: u64) -> Result<DeltaBounds> {
        check_epsilon(epsilon)?;
        if self.trivial {
            return Ok(DeltaBounds {
                lower: 0.0,
                estimate: 0.0,
                upper: 0.0,
            });
        }
        let (grid, pmf, floor) = self.compose(steps)?;
        let delta_at = |e: f64, raise: f64| -> f64 {
            grid.iter()
                .zip(&pmf)
                .filter(|(t, _)| **t >= e)
                .map(|(t, p)| (p + raise).max(0.0) * (-(e - t).exp_m1()))
                .sum()
        };
        let estimate = delta_at(epsilon, 0.0).min(1.0);
        let lower = (delta_at(epsilon + self.epsilon_error, 0.0) - self.delta_error).max(0.0);
        let upper = (delta_at(epsilon - self.epsilon_error, floor) + self.delta_error).min(1.0);
        Ok(DeltaBounds {
            lower,
            estimate,
            upper,
        })
    }
}

/// z^n by repeated squaring.
fn complex_power(mut base: Complex<f64>, mut exponent: u64) -> Complex<f64> {
    let mut result = Complex::new(1.0, 0.0);
    while exponent > 0 {
        if exponent & 1 == 1 {
            result *= base;
        }
        base *= base;
        exponent >>= 1;
    }
    result
}

/// GLW21 Remark 5.6 (as in prv-accountant 0.2.0): L = max(ε_RDP(T steps, δ_err/4),
/// ε_RDP(1 step, δ_err/(8T)), ε_err) + 3, with the improved RDP conversion on Opacus' grid.
fn safe_domain_half_width(
    q: f64,
    sigma: f64,
    steps: u64,
    epsilon_error: f64,
    delta_error: f64,
) -> Result<f64> {
    let orders = Orders::opacus();
    let rdp = poisson_subsampled_gaussian_rdp_curve(q, sigma, orders.as_slice())?;
    let epsilon_at = |scale: f64, delta: f64| -> f64 {
        orders
            .as_slice()
            .iter()
            .zip(&rdp)
            .map(|(&a, &r)| scale * r - (delta * a).ln() / (a - 1.0) + (-1.0 / a).ln_1p())
            .fold(f64::INFINITY, f64::min)
    };
    let steps_f = steps as f64;
    let composed = epsilon_at(steps_f, delta_error / 4.0);
    let single = epsilon_at(1.0, delta_error / 8.0 / steps_f);
    let half_width = composed.max(single).max(epsilon_error) + 3.0;
    if !half_width.is_finite() {
        return Err(AccountantError::Prv(format!(
            "no finite domain for q = {q}, sigma = {sigma}, steps = {steps}"
        )));
    }
    Ok(half_width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discretised_pmf_is_a_probability_vector() {
        let prv = PrvAccountant::poisson_subsampled_gaussian(0.01, 1.0, 100, 0.1, 1e-8).unwrap();
        let total: f64 = prv.pmf.iter().sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        assert!(prv.pmf.iter().all(|p| *p >= 0.0));
    }

    #[test]
    fn gaussian_prv_matches_the_analytic_gaussian() {
        // q = 1: T steps of σ are one Gaussian with σ/√T (Balle & Wang 2018 Thm 8).
        let (sigma, steps, delta) = (2.0, 50u64, 1e-5);
        let prv =
            PrvAccountant::poisson_subsampled_gaussian(1.0, sigma, steps, 0.01, 1e-8).unwrap();
        let bounds = prv.epsilon(delta, steps).unwrap();
        let exact =
            crate::analytic_gaussian::epsilon(sigma / (steps as f64).sqrt(), delta).unwrap();
        assert!(
            bounds.lower <= exact && exact <= bounds.upper,
            "{bounds:?} vs {exact}"
        );
        assert!(
            (bounds.estimate - exact).abs() < 5e-3,
            "{bounds:?} vs {exact}"
        );
    }
}
