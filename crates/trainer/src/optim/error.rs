//! Errors of the training methods; every variant names the offending value.

/// Result of the optimisation code.
pub type Result<T> = std::result::Result<T, OptimError>;

/// What can go wrong in a training step or its set-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The seed-replayed perturbation rejected its parameters or failed.
    #[error("perturbation: {0}")]
    Perturb(#[from] crate::perturb::PerturbError),
    /// A hyper-parameter is out of range.
    #[error("invalid {name}: {value} ({requirement})")]
    InvalidHyperparameter {
        /// Parameter name as in `TrainConfig`.
        name: &'static str,
        /// The value given.
        value: String,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// A loss evaluation produced NaN or infinity; the step was not applied.
    #[error("non-finite loss {loss} at step {step} ({context}); the update was not applied")]
    NonFiniteLoss {
        /// Global step.
        step: u64,
        /// The offending loss value.
        loss: f64,
        /// Which evaluation.
        context: &'static str,
    },
    /// The model has no trainable parameter (or the mask selects none).
    #[error("no trainable parameter: {0}")]
    NoTrainableParameter(String),
    /// A mask names a parameter that is not trainable, or an index out of range.
    #[error("bad mask for {name}: {reason}")]
    BadMask {
        /// Parameter name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The batch is empty.
    #[error("empty batch at step {step}")]
    EmptyBatch {
        /// Global step.
        step: u64,
    },
    /// Ghost clipping cannot cover this model's parameters.
    #[error("ghost clipping: {0}")]
    GhostClipping(String),
    /// Privacy calibration or accounting failed.
    #[error("privacy accounting: {0}")]
    Privacy(String),
}

impl OptimError {
    pub(crate) fn invalid(
        name: &'static str,
        value: impl ToString,
        requirement: &'static str,
    ) -> Self {
        OptimError::InvalidHyperparameter {
            name,
            value: value.to_string(),
            requirement,
        }
    }
}
