//! Noise calibration and ε spent for a training run. Privacy is defined once, in the
//! `accountant` crate: the accountants ([`AccountantKind`]), the sampling schemes ([`Sampling`])
//! and how a sampled step maps to privacy events ([`SampledGaussian`]); this module only adapts
//! its errors. PRV (Gopi et al. 2021, the paper's choice, upper bound with eps_error 0.1) is the
//! default (docs/paper.md §1.1 "Privacy accounting").
//!
//! Each ZO direction releases its own noisy scalar, so a step with k directions is k releases
//! (rather than a rescaled noise std).

pub use accountant::{
    sum_sensitivity as sensitivity, AccountantKind, NeighboringRelation, SampledGaussian, Sampling,
};

use super::{OptimError, Result};

/// PRV discretisation error on epsilon (the released code's `eps_error=0.1`).
pub const PRV_EPSILON_ERROR: f64 = accountant::DEFAULT_PRV_EPSILON_ERROR;
/// Relative tolerance of the noise calibration.
pub const CALIBRATION_TOLERANCE: f64 = 1e-6;

fn privacy_err(e: accountant::AccountantError) -> OptimError {
    OptimError::Privacy(e.to_string())
}

/// Epsilon (an upper bound) after `steps` steps of `mechanism`, each releasing
/// `releases_per_step` noisy values, at `delta`.
///
/// # Errors
/// Out-of-range inputs or an accountant that does not cover the sampling, as reported by the
/// accountant.
pub fn epsilon_spent(
    kind: AccountantKind,
    mechanism: &SampledGaussian,
    steps: u64,
    releases_per_step: u64,
    delta: f64,
) -> Result<f64> {
    if steps == 0 {
        return Ok(0.0);
    }
    mechanism
        .epsilon(kind, PRV_EPSILON_ERROR, steps, releases_per_step, delta)
        .map_err(privacy_err)
}

/// The smallest noise multiplier (to [`CALIBRATION_TOLERANCE`]) whose epsilon after `steps`
/// steps is at most `epsilon`.
///
/// # Errors
/// Out-of-range inputs or an unreachable target, as reported by the accountant.
pub fn calibrate_noise_multiplier(
    kind: AccountantKind,
    epsilon: f64,
    delta: f64,
    mechanism: &SampledGaussian,
    steps: u64,
    releases_per_step: u64,
) -> Result<f64> {
    if steps == 0 {
        return Err(OptimError::invalid(
            "steps",
            0,
            "must be >= 1 to calibrate noise",
        ));
    }
    mechanism
        .calibrate(
            kind,
            PRV_EPSILON_ERROR,
            steps,
            releases_per_step,
            epsilon,
            delta,
            CALIBRATION_TOLERANCE,
        )
        .map_err(privacy_err)
}
