//! Errors of the `theory` crate: every invalid input is reported with the offending value.

use thiserror::Error;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, TheoryError>;

/// Everything that can go wrong when building an objective, a schedule or an experiment.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum TheoryError {
    /// A parameter that must be finite and strictly positive was not.
    #[error("{name} must be finite and > 0, got {value}")]
    NotPositive {
        /// Parameter name as spelled in the API.
        name: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A parameter that must be finite and non-negative was not.
    #[error("{name} must be finite and >= 0, got {value}")]
    Negative {
        /// Parameter name as spelled in the API.
        name: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A count that must be at least `min` was smaller.
    #[error("{name} must be >= {min}, got {value}")]
    CountTooSmall {
        /// Parameter name as spelled in the API.
        name: &'static str,
        /// The offending value.
        value: usize,
        /// Smallest accepted value.
        min: usize,
    },
    /// A count exceeded its admissible maximum.
    #[error("{name} must be <= {max}, got {value}")]
    CountTooLarge {
        /// Parameter name as spelled in the API.
        name: &'static str,
        /// The offending value.
        value: usize,
        /// Largest accepted value.
        max: usize,
    },
    /// Two arrays that must agree in length did not.
    #[error("dimension mismatch for {what}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// What was being compared.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A schedule parameter combination has no finite meaning.
    #[error("invalid schedule: {reason}")]
    InvalidSchedule {
        /// Human-readable reason with the offending values.
        reason: String,
    },
    /// A linear-algebra routine (LAPACK via ndarray-linalg) failed.
    #[error("linear algebra failure in {operation}: {message}")]
    Linalg {
        /// Which operation failed.
        operation: &'static str,
        /// The library's message.
        message: String,
    },
    /// The privacy accountant could not calibrate a noise multiplier.
    #[error("accountant failed for epsilon={epsilon}, delta={delta}: {message}")]
    Accountant {
        /// Target epsilon.
        epsilon: f64,
        /// Target delta.
        delta: f64,
        /// The accountant's message.
        message: String,
    },
    /// A quantity expected to be finite became NaN or infinite.
    #[error("non-finite value in {what}: {value}")]
    NonFinite {
        /// Where it happened.
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// The stagewise schedule rejected its parameters.
    #[error(transparent)]
    Schedule(#[from] schedule::ScheduleError),
}

/// Checks `value` is finite and > 0.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(TheoryError::NotPositive { name, value })
    }
}

/// Checks `value` is finite and >= 0.
pub(crate) fn non_negative(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(TheoryError::Negative { name, value })
    }
}

/// Checks `value >= min`.
pub(crate) fn at_least(name: &'static str, value: usize, min: usize) -> Result<usize> {
    if value >= min {
        Ok(value)
    } else {
        Err(TheoryError::CountTooSmall { name, value, min })
    }
}
