//! dp-accounting 0.6.0-compatible evaluation of the Poisson-subsampled Gaussian RDP.
//!
//! Reproduces `rdp_privacy_accountant._compute_log_a_int` and `_compute_log_a_frac`: the
//! fractional series of MTZ19 §3.3 with every term added in absolute value (an upper bound on
//! A_α) and a hard cap of 1000 terms, past which the order is reported as +∞ (dropped from the
//! ε minimisation). Use it only to reproduce dp-accounting's numbers; the exact evaluation is
//! [`crate::rdp::poisson_subsampled_gaussian_rdp`].

use crate::error::{
    check_noise_multiplier, check_order, check_sampling_rate, AccountantError, Result,
};
use crate::numeric::{log_abs_binomial, log_add, log_normal_cdf};

/// dp-accounting's `_MAX_STEPS_LOG_A_FRAC`.
const MAX_FRACTIONAL_TERMS: usize = 1000;
/// Integer orders sum α + 1 terms (~0.1 µs each); larger orders are refused.
pub const MAX_INTEGER_ORDER: f64 = 1e7;

/// One-step RDP as dp-accounting 0.6.0 computes it (including its +∞ at some fractional orders).
pub fn poisson_subsampled_gaussian_rdp_compat(
    sampling_rate: f64,
    noise_multiplier: f64,
    order: f64,
) -> Result<f64> {
    check_sampling_rate(sampling_rate)?;
    check_noise_multiplier(noise_multiplier)?;
    check_order(order)?;
    if sampling_rate == 0.0 || noise_multiplier == f64::INFINITY {
        return Ok(0.0);
    }
    // σ² underflowing to 0 is σ = 0 for every formula below.
    if order == f64::INFINITY || noise_multiplier * noise_multiplier == 0.0 {
        return Ok(f64::INFINITY);
    }
    if sampling_rate == 1.0 {
        return Ok(order / (2.0 * noise_multiplier * noise_multiplier));
    }
    if order.fract() == 0.0 && order > MAX_INTEGER_ORDER {
        return Err(AccountantError::TooExpensive {
            what: format!("the dp-accounting-compatible RDP at order {order}"),
            cost: format!("its sum has {order:e} terms (about {:.0} s)", order * 1e-7),
            limit: format!("{MAX_INTEGER_ORDER:e} terms"),
            hint: "; the exact evaluation (accountant rdp) has a closed form for huge orders"
                .into(),
        });
    }
    let log_a = if order.fract() == 0.0 {
        // dp-accounting sums the α + 1 terms of A_α itself, whose roundoff can make
        // log A slightly negative at large σ (A >= 1 by Jensen); the same sum written for A - 1
        // has only positive terms (MTZ19 §3.3), equal in exact arithmetic.
        crate::numeric::log1p_exp(super::poisson_gaussian::log_a_minus_1_integer(
            sampling_rate,
            noise_multiplier,
            order as u64,
        ))
    } else {
        // A_α >= 1 (Jensen: E[r^α] >= E[r]^α = 1), and the series sums terms of order 1 to a
        // few ulp, so a negative log A is roundoff of an exact value within ulps of 0 (at
        // q -> 0 or σ -> ∞): only there is it raised to 0.
        log_a_fractional(sampling_rate, noise_multiplier, order).max(0.0)
    };
    Ok(log_a / (order - 1.0))
}

/// `_compute_log_a_frac`: |terms| summed, stopping rule "both decreasing and < total - 30".
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let mut log_a0 = f64::NEG_INFINITY;
    let mut log_a1 = f64::NEG_INFINITY;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let mut last_s0 = f64::NEG_INFINITY;
    let mut last_s1 = f64::NEG_INFINITY;
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    for step in 0..MAX_FRACTIONAL_TERMS {
        let i = step as f64;
        let log_coefficient = log_abs_binomial(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coefficient + i * ln_q + j * ln_1mq;
        let log_t1 = log_coefficient + j * ln_q + i * ln_1mq;
        // log(erfc(x)/2) = log Φ(-√2 x).
        let log_e0 = log_normal_cdf(-(i - z0) / sqrt2_sigma * std::f64::consts::SQRT_2);
        let log_e1 = log_normal_cdf(-(z0 - j) / sqrt2_sigma * std::f64::consts::SQRT_2);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}
