//! Differential-privacy accounting for DP zeroth-order and DP-SGD training.
//!
//! Pure Rust, no libtorch. Accountants offered:
//! * [`rdp`]: Renyi DP (Mironov 2017) of the Gaussian, the Poisson-subsampled Gaussian
//!   (exact at integer and fractional orders, MTZ19; or dp-accounting 0.6.0-compatible), fixed
//!   batches without replacement (WBK19 Thm 27) and zCDP events; composition, a serialisable
//!   ledger, and the improved RDP → (ε, δ) conversion (CKS20 Prop. 12).
//! * [`zcdp`]: ρ-zCDP with the Bun–Steinke and the tight CKS20 conversions.
//! * [`analytic_gaussian`]: the exact Gaussian (Balle & Wang 2018) for full-batch composition.
//! * [`prv`]: the PRV accountant (Gopi, Lee & Wutschitz 2021) with explicit ε error bounds.
//! * [`calibrate`]: the smallest noise multiplier meeting (ε, δ).
//! * [`tuning`]: Papernot & Steinke's RDP bound for tuning with a random number of candidates.
//!
//! Every accountant implements [`Accountant`] (compose, supports, ε, δ) and is built by name
//! from [`AccountantKind`]; [`SampledGaussian`] maps a batch [`Sampling`] scheme to its events.
//!
//! Neighbouring relations: Poisson sampling is analysed under add/remove-one, fixed-size
//! batches under replace-one; other pairs are refused with [`AccountantError::UnsupportedEvent`].
//! Formulas, conventions and anchors: docs/accountant.md of the project.

mod accountants;
pub mod analytic_gaussian;
pub mod calibrate;
mod error;
mod event;
mod numeric;
mod orders;
pub mod prv;
mod quadrature;
pub mod rdp;
mod sampling;
pub mod tuning;
pub mod zcdp;

pub use accountants::{
    Accountant, AccountantKind, AnalyticGaussianAccountant, PrvComposition, ZcdpAccountant,
    DEFAULT_PRV_EPSILON_ERROR, PRV_DELTA_ERROR_FRACTION,
};
pub use calibrate::calibrate_noise_multiplier;
pub use sampling::{poisson_composition, sum_sensitivity, SampledGaussian, Sampling};

/// Checks δ ∈ (0, 1), returning [`AccountantError::InvalidDelta`] otherwise.
pub fn validate_delta(delta: f64) -> Result<()> {
    error::check_delta(delta)
}
pub use error::{AccountantError, Result};
pub use event::{DpEvent, Ledger, LedgerEntry, NeighboringRelation};
pub use orders::Orders;
pub use prv::{DeltaBounds, EpsilonBounds, PrvAccountant};
pub use rdp::{poisson_gaussian_epsilon, RdpAccountant, RdpMethod};
pub use zcdp::Zcdp;
