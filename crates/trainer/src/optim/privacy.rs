//! Noise calibration and epsilon spent, from the `accountant` crate (paper.md §1.1 "Privacy
//! accounting"): PRV (Gopi et al. 2021, the paper's choice, upper bound with eps_error 0.1) for
//! Poisson sampling, or RDP. Fixed-size shuffled batches are accounted as sampling without
//! replacement under replace-one adjacency (RDP, Wang, Balle & Kasiviswanathan 2019, Thm 27),
//! since the PRV accountant covers Poisson sampling only.
//!
//! Each ZO direction releases its own noisy scalar, so a step with q directions is q
//! compositions (rather than a rescaled noise std).

use accountant::{DpEvent, Ledger, LedgerEntry, Orders, PrvAccountant, RdpAccountant, RdpMethod};
use serde::{Deserialize, Serialize};

pub use accountant::NeighboringRelation;

use super::{OptimError, Result};

/// Which accountant the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountantKind {
    /// Privacy random variables (Gopi et al. 2021), the paper's choice.
    Prv,
    /// Rényi DP of the subsampled Gaussian (dp-accounting's default orders, exact evaluation).
    Rdp,
}

/// PRV discretisation error on epsilon (the released code's `eps_error=0.1`).
pub const PRV_EPSILON_ERROR: f64 = 0.1;
/// Relative tolerance of the noise calibration.
pub const CALIBRATION_TOLERANCE: f64 = 1e-6;

/// Sensitivity of a sum of per-example contributions clipped at `clip_norm`: C under
/// add/remove-one, 2C under replace-one.
pub fn sensitivity(relation: NeighboringRelation, clip_norm: f64) -> f64 {
    match relation {
        NeighboringRelation::AddOrRemoveOne => clip_norm,
        NeighboringRelation::ReplaceOne => 2.0 * clip_norm,
    }
}

/// One step's mechanism: the Gaussian on a subsampled sum, noise multiplier = std / sensitivity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubsampledGaussian {
    /// Add/remove-one (Poisson sampling) or replace-one (fixed-size batches).
    pub relation: NeighboringRelation,
    /// n.
    pub dataset_size: u64,
    /// B (expected size under Poisson sampling).
    pub batch_size: u64,
    /// sigma.
    pub noise_multiplier: f64,
}

impl SubsampledGaussian {
    /// q = B / n.
    pub fn sampling_rate(&self) -> f64 {
        self.batch_size as f64 / self.dataset_size as f64
    }

    /// The accountant's event for one composition.
    pub fn event(&self) -> DpEvent {
        match self.relation {
            NeighboringRelation::AddOrRemoveOne => DpEvent::PoissonSampledGaussian {
                sampling_rate: self.sampling_rate(),
                noise_multiplier: self.noise_multiplier,
            },
            NeighboringRelation::ReplaceOne => DpEvent::FixedBatchGaussian {
                dataset_size: self.dataset_size,
                batch_size: self.batch_size,
                noise_multiplier: self.noise_multiplier,
            },
        }
    }

    /// The accountant's ledger after `compositions` releases.
    pub fn ledger(&self, compositions: u64) -> Ledger {
        let mut ledger = Ledger::new(self.relation);
        if compositions > 0 {
            ledger.entries.push(LedgerEntry {
                event: self.event(),
                count: compositions,
            });
        }
        ledger
    }
}

/// The accountant that actually answers for `kind` and `relation` (recorded in the ledger).
pub fn accountant_used(kind: AccountantKind, relation: NeighboringRelation) -> &'static str {
    match (kind, relation) {
        (AccountantKind::Prv, NeighboringRelation::AddOrRemoveOne) => {
            "prv (accountant::PrvAccountant, upper bound, eps_error 0.1, delta_error delta/1000)"
        }
        (AccountantKind::Prv, NeighboringRelation::ReplaceOne) => {
            "rdp fixed-batch without replacement (PRV covers Poisson sampling only; \
             accountant::RdpAccountant, dp-accounting default orders)"
        }
        (AccountantKind::Rdp, _) => "rdp (accountant::RdpAccountant, dp-accounting default orders)",
    }
}

fn privacy_err(e: accountant::AccountantError) -> OptimError {
    OptimError::Privacy(e.to_string())
}

/// Epsilon (an upper bound) after `compositions` releases of `mechanism` at `delta`.
///
/// # Errors
/// Out-of-range inputs, as reported by the accountant.
pub fn epsilon_spent(
    kind: AccountantKind,
    mechanism: &SubsampledGaussian,
    compositions: u64,
    delta: f64,
) -> Result<f64> {
    if compositions == 0 {
        return Ok(0.0);
    }
    if mechanism.batch_size == 0 || mechanism.batch_size > mechanism.dataset_size {
        return Err(OptimError::invalid(
            "batch_size",
            mechanism.batch_size,
            "must be in 1..=number of training examples",
        ));
    }
    match (kind, mechanism.relation) {
        (AccountantKind::Prv, NeighboringRelation::AddOrRemoveOne) => {
            let prv = PrvAccountant::poisson_subsampled_gaussian(
                mechanism.sampling_rate(),
                mechanism.noise_multiplier,
                compositions,
                PRV_EPSILON_ERROR,
                delta * 1e-3,
            )
            .map_err(privacy_err)?;
            Ok(prv.epsilon(delta, compositions).map_err(privacy_err)?.upper)
        }
        _ => {
            let mut rdp = RdpAccountant::new(
                Orders::dp_accounting_default(),
                mechanism.relation,
                RdpMethod::Exact,
            );
            rdp.compose(&mechanism.event(), compositions)
                .map_err(privacy_err)?;
            Ok(rdp.epsilon(delta).map_err(privacy_err)?.value)
        }
    }
}

/// The smallest noise multiplier (to [`CALIBRATION_TOLERANCE`]) whose epsilon after
/// `compositions` releases is at most `epsilon`.
///
/// # Errors
/// Out-of-range inputs or an unreachable target, as reported by the accountant.
pub fn calibrate_noise_multiplier(
    kind: AccountantKind,
    epsilon: f64,
    delta: f64,
    mechanism: &SubsampledGaussian,
    compositions: u64,
) -> Result<f64> {
    if compositions == 0 {
        return Err(OptimError::invalid(
            "steps",
            0,
            "must be >= 1 to calibrate noise",
        ));
    }
    accountant::calibrate_noise_multiplier(epsilon, CALIBRATION_TOLERANCE, |sigma| {
        let candidate = SubsampledGaussian {
            noise_multiplier: sigma,
            ..*mechanism
        };
        epsilon_spent(kind, &candidate, compositions, delta)
            .map_err(|e| accountant::AccountantError::Calibration(e.to_string()))
    })
    .map_err(privacy_err)
}
