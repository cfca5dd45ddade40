//! Noise calibration: the smallest noise multiplier whose ε meets a target.
//!
//! Bracket on the fixed grid σ ∈ {2^k}, then bisect log σ a fixed number of times, then
//! return the feasible end. Because the bracket grid and the iteration count do not depend
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
        return Err(AccountantError::InvalidEpsilon(target_epsilon));
    }
    if !(relative_tolerance > 0.0 && relative_tolerance < 0.5) {
        return Err(AccountantError::InvalidParameter {
            name: "relative_tolerance",
            value: relative_tolerance,
            reason: "must be in (0, 0.5)",
        });
    }
    let mut feasible = |sigma: f64| -> Result<bool> {
        let epsilon = epsilon_of_sigma(sigma)?;
        Ok(epsilon <= target_epsilon)
    };
    const MIN_EXPONENT: i32 = -20;
    const MAX_EXPONENT: i32 = 40;
    // Smallest k with 2^k feasible, scanning from k = 0.
    let mut exponent = 0;
    if feasible(1.0)? {
        while exponent > MIN_EXPONENT && feasible(2f64.powi(exponent - 1))? {
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
            if feasible(2f64.powi(exponent))? {
                break;
            }
        }
    }
    // Infeasible at 2^(k-1), feasible at 2^k: bisect in log2 σ.
    let mut low = (exponent - 1) as f64;
    let mut high = exponent as f64;
    let iterations = (1.0 / (relative_tolerance / std::f64::consts::LN_2))
        .log2()
        .ceil() as u32;
    for _ in 0..iterations {
        let middle = 0.5 * (low + high);
        if feasible(middle.exp2())? {
            high = middle;
        } else {
            low = middle;
        }
    }
    let sigma = high.exp2();
    if !feasible(sigma)? {
        return Err(AccountantError::Calibration(format!(
            "noise multiplier {sigma} failed the final feasibility check for epsilon = {target_epsilon}"
        )));
    }
    Ok(sigma)
}
