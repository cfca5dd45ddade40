//! The analytic Gaussian mechanism (Balle & Wang 2018, arXiv:1805.06530, Thm 8): the exact
//! (ε, δ) curve of the Gaussian mechanism, hence of T full-batch Gaussian steps with
//! σ_eff = σ/√T.

use crate::error::{check_delta, check_epsilon, check_noise_multiplier, Result};
use crate::numeric::log_normal_cdf;

/// Exact δ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2), μ = 1/σ.
pub fn delta(noise_multiplier: f64, epsilon: f64) -> Result<f64> {
    check_noise_multiplier(noise_multiplier)?;
    check_epsilon(epsilon)?;
    if noise_multiplier == 0.0 {
        return Ok(1.0);
    }
    if noise_multiplier == f64::INFINITY {
        return Ok(0.0);
    }
    let mu = 1.0 / noise_multiplier;
    let log_first = log_normal_cdf(-epsilon / mu + mu / 2.0);
    let log_second = epsilon + log_normal_cdf(-epsilon / mu - mu / 2.0);
    if log_first == f64::NEG_INFINITY || log_second >= log_first {
        return Ok(0.0);
    }
    Ok(log_first.exp() * (-(log_second - log_first).exp_m1()))
}

/// Smallest ε with δ(ε) <= `delta` (bisection to full precision; 0 when δ(0) <= delta).
pub fn epsilon(noise_multiplier: f64, delta_target: f64) -> Result<f64> {
    check_noise_multiplier(noise_multiplier)?;
    check_delta(delta_target)?;
    if noise_multiplier == 0.0 {
        return Ok(f64::INFINITY);
    }
    if delta(noise_multiplier, 0.0)? <= delta_target {
        return Ok(0.0);
    }
    let mut low = 0.0;
    let mut high = 1.0;
    while delta(noise_multiplier, high)? > delta_target {
        low = high;
        high *= 2.0;
        if high > 1e300 {
            // No ε within f64's range certifies δ: reported as +∞ (at most ~1000 doublings).
            return Ok(f64::INFINITY);
        }
    }
    for _ in 0..200 {
        let middle = 0.5 * (low + high);
        if middle <= low || middle >= high {
            break;
        }
        if delta(noise_multiplier, middle)? > delta_target {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(high)
}
