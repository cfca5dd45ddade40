//! Noise calibration: the smallest noise multiplier whose ε meets a target.
//!
//! Bracket on the fixed grid σ ∈ {2^k}, then find the smallest feasible point of a fixed finer
//! grid of log σ (by regula falsi, which gives the same point as bisection in fewer evaluations),
//! then return it after a final feasibility check. Because the bracket grid and the iteration count do not depend
//! on the accountant, the result is monotone whenever ε(σ) is: a larger ε curve (more steps,
//! larger q) or a smaller target can only move the answer up (docs/accountant.md §5.8).

use crate::error::{check_epsilon, AccountantError, Result};

/// Default relative tolerance on σ.
pub const DEFAULT_RELATIVE_TOLERANCE: f64 = 1e-9;

/// Smallest σ (to `relative_tolerance`) with `epsilon_of_sigma(σ) <= target_epsilon`, where
/// `epsilon_of_sigma` is non-increasing. The returned σ is verified feasible, and
/// σ·(1 - relative_tolerance) was found infeasible (or σ is the smallest bracket, 2^-20).
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    relative_tolerance: f64,
    mut epsilon_of_sigma: impl FnMut(f64) -> Result<f64>,
) -> Result<f64> {
    check_epsilon(target_epsilon)?;
    if target_epsilon == 0.0 {
        // ε = 0 needs infinite noise for any mechanism that touches the data.
        return Err(AccountantError::InvalidParameter {
            name: "target epsilon",
            value: target_epsilon,
            reason: "a noise calibration needs epsilon > 0 (epsilon = 0 needs infinite noise)",
        });
    }
    if !(relative_tolerance > 0.0 && relative_tolerance < 0.5) {
        return Err(AccountantError::InvalidParameter {
            name: "relative_tolerance",
            value: relative_tolerance,
            reason: "must be in (0, 0.5)",
        });
    }
    // Every σ is evaluated once: the bracket's ends are reused by the search and the final check.
    let mut memo: Vec<(f64, f64)> = Vec::new();
    let mut epsilon_at = |sigma: f64| -> Result<f64> {
        if let Some(&(_, epsilon)) = memo.iter().find(|(s, _)| *s == sigma) {
            return Ok(epsilon);
        }
        let epsilon = epsilon_of_sigma(sigma)?;
        memo.push((sigma, epsilon));
        Ok(epsilon)
    };
    let feasible = |sigma: f64, eps: &mut dyn FnMut(f64) -> Result<f64>| -> Result<bool> {
        Ok(eps(sigma)? <= target_epsilon)
    };
    const MIN_EXPONENT: i32 = -20;
    const MAX_EXPONENT: i32 = 40;
    // Smallest k with 2^k feasible, scanning from k = 0.
    let mut exponent = 0;
    if feasible(1.0, &mut epsilon_at)? {
        while exponent > MIN_EXPONENT && feasible(2f64.powi(exponent - 1), &mut epsilon_at)? {
            exponent -= 1;
        }
        if exponent == MIN_EXPONENT {
            return Ok(2f64.powi(MIN_EXPONENT));
        }
    } else {
        loop {
            exponent += 1;
            if exponent > MAX_EXPONENT {
                return Err(AccountantError::Calibration(format!(
                    "epsilon = {target_epsilon} not reached even at noise multiplier 2^{MAX_EXPONENT}"
                )));
            }
            if feasible(2f64.powi(exponent), &mut epsilon_at)? {
                break;
            }
        }
    }
    // Infeasible at 2^(k-1), feasible at 2^k. The answer is the smallest feasible point of the
    // grid log2 σ = k - 1 + j / 2^bits: unique for a monotone ε(σ), whatever order the points
    // are tried in. Bisection would need `bits` evaluations; Illinois-style regula falsi on
    // log ε over the same grid needs far fewer, and returns the very same grid point.
    let bits = (1.0 / (relative_tolerance / std::f64::consts::LN_2))
        .log2()
        .ceil()
        .min(52.0) as u32;
    let steps = 1u64 << bits;
    let at = |j: u64| ((exponent - 1) as f64 + j as f64 / steps as f64).exp2();
    let log_target = target_epsilon.ln();
    let (mut low, mut high) = (0u64, steps);
    let mut low_log = epsilon_at(at(low))?.ln() - log_target; // > 0 (infeasible)
    let mut high_log = epsilon_at(at(high))?.ln() - log_target; // <= 0 (feasible)
    let mut last_side = 0i8;
    while high - low > 1 {
        let width = high - low;
        let interpolated = if low_log.is_finite() && high_log.is_finite() && low_log > high_log {
            let fraction = low_log / (low_log - high_log);
            low + (fraction * width as f64)
                .round()
                .clamp(1.0, (width - 1) as f64) as u64
        } else {
            low + width / 2
        };
        let j = interpolated.clamp(low + 1, high - 1);
        let log_excess = epsilon_at(at(j))?.ln() - log_target;
        if log_excess <= 0.0 {
            high = j;
            high_log = log_excess;
            if last_side == 1 {
                low_log *= 0.5; // Illinois: the stale end's weight halves
            }
            last_side = 1;
        } else {
            low = j;
            low_log = log_excess;
            if last_side == -1 {
                high_log *= 0.5;
            }
            last_side = -1;
        }
    }
    let high = (exponent - 1) as f64 + high as f64 / steps as f64;
    let sigma = high.exp2();
    if !feasible(sigma, &mut epsilon_at)? {
        return Err(AccountantError::Calibration(format!(
            "noise multiplier {sigma} failed the final feasibility check for epsilon = {target_epsilon}"
        )));
    }
    Ok(sigma)
}
