//! The crate's error type: every invalid input is reported with the offending value.

/// Errors returned by the accountant. Each variant carries the value that was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountantError {
    /// The sampling rate q must lie in [0, 1].
    #[error("sampling rate q = {0} is not in [0, 1]")]
    InvalidSamplingRate(f64),
    /// The noise multiplier must be >= 0 and not NaN (+inf means no privacy loss).
    #[error("noise multiplier sigma = {0} must be >= 0 and not NaN")]
    InvalidNoiseMultiplier(f64),
    /// delta must lie in the open interval (0, 1).
    #[error("delta = {0} is not in (0, 1)")]
    InvalidDelta(f64),
    /// epsilon must be finite and >= 0.
    #[error("epsilon = {0} must be finite and >= 0")]
    InvalidEpsilon(f64),
    /// A Renyi order must be > 1 and not NaN.
    #[error("Renyi order alpha = {0} must be > 1 (and not NaN)")]
    InvalidOrder(f64),
    /// The zCDP parameter rho must be >= 0 and not NaN.
    #[error("zCDP rho = {0} must be >= 0 and not NaN")]
    InvalidRho(f64),
    /// A step count that must be positive was zero.
    #[error("number of steps must be >= 1, got {0}")]
    InvalidSteps(u64),
    /// A fixed-size batch needs 1 <= batch_size <= dataset_size.
    #[error("fixed-size batch needs 1 <= batch_size <= dataset_size, got batch_size = {batch_size}, dataset_size = {dataset_size}")]
    InvalidBatch {
        /// The dataset size n.
        dataset_size: u64,
        /// The batch size m.
        batch_size: u64,
    },
    /// A numerical knob (error tolerance, target) is out of its valid range.
    #[error("{name} = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The refused value.
        value: f64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An order grid is empty, unsorted, or holds an order <= 1.
    #[error("invalid order grid: {0}")]
    InvalidOrders(String),
    /// Two RDP curves on different order grids cannot be composed.
    #[error("RDP curves on different order grids ({left} vs {right} orders) cannot be composed")]
    OrderGridMismatch {
        /// Number of orders of the left curve.
        left: usize,
        /// Number of orders of the right curve.
        right: usize,
    },
    /// The theory implemented here does not cover this event under this neighbouring relation.
    #[error("event {event} is not supported under {relation} adjacency: {reason}")]
    UnsupportedEvent {
        /// The refused event, in words.
        event: String,
        /// The neighbouring relation in force.
        relation: String,
        /// Why it is refused.
        reason: String,
    },
    /// Adaptive quadrature did not reach its tolerance.
    #[error("quadrature did not converge for {what}: relative error estimate {relative_error:e} after {intervals} intervals")]
    QuadratureNotConverged {
        /// What was integrated.
        what: String,
        /// Achieved relative error estimate.
        relative_error: f64,
        /// Number of sub-intervals used.
        intervals: usize,
    },
    /// The noise calibration could not find a feasible noise multiplier.
    #[error("calibration failed: {0}")]
    Calibration(String),
    /// The PRV accountant cannot answer this query at its precision.
    #[error("PRV accountant: {0}")]
    Prv(String),
    /// The query is valid but its evaluation would exceed a documented work limit.
    #[error("{what} is refused: {cost}, above the limit of {limit}{hint}")]
    TooExpensive {
        /// The refused computation, with its inputs.
        what: String,
        /// Its estimated cost.
        cost: String,
        /// The limit it exceeds.
        limit: String,
        /// How to get an answer instead (may be empty; starts with "; ").
        hint: String,
    },
    /// The accountant does not cover this event (see [`crate::Accountant::supports`]).
    #[error("accountant {accountant} does not support {event}: {reason}")]
    Unsupported {
        /// The accountant's name.
        accountant: &'static str,
        /// The refused event, in words.
        event: String,
        /// Why.
        reason: String,
    },
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, AccountantError>;

/// Checks q in [0, 1].
pub(crate) fn check_sampling_rate(sampling_rate: f64) -> Result<()> {
    if (0.0..=1.0).contains(&sampling_rate) {
        Ok(())
    } else {
        Err(AccountantError::InvalidSamplingRate(sampling_rate))
    }
}

/// Checks sigma >= 0 (+inf allowed: no privacy loss).
pub(crate) fn check_noise_multiplier(noise_multiplier: f64) -> Result<()> {
    if noise_multiplier >= 0.0 {
        Ok(())
    } else {
        Err(AccountantError::InvalidNoiseMultiplier(noise_multiplier))
    }
}

/// Checks delta in (0, 1).
pub(crate) fn check_delta(delta: f64) -> Result<()> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(AccountantError::InvalidDelta(delta))
    }
}

/// Checks epsilon finite and >= 0.
pub(crate) fn check_epsilon(epsilon: f64) -> Result<()> {
    if epsilon >= 0.0 && epsilon.is_finite() {
        Ok(())
    } else {
        Err(AccountantError::InvalidEpsilon(epsilon))
    }
}

/// Checks a Renyi order alpha > 1 (+inf allowed).
pub(crate) fn check_order(alpha: f64) -> Result<()> {
    if alpha > 1.0 {
        Ok(())
    } else {
        Err(AccountantError::InvalidOrder(alpha))
    }
}
