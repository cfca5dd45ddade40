//! Errors of the training loop; every variant names the offending values.

use std::path::PathBuf;

use crate::optim::OptimError;

/// Result of the training loop.
pub type Result<T> = std::result::Result<T, TrainError>;

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A method failed (bad hyper-parameter, libtorch, ...).
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Reading or writing a checkpoint or record failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint or record could not be (de)serialised.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// The planned run would spend more privacy than its target.
    #[error(
        "refusing to start: epsilon for the planned {steps} steps would be {planned:.6}, above \
         the target {target}"
    )]
    BudgetExceeded {
        /// epsilon of the planned run.
        planned: f64,
        /// The target epsilon.
        target: f64,
        /// Planned steps.
        steps: u64,
    },
    /// A DP method without a target epsilon or a noise multiplier.
    #[error("{method}: set `epsilon` (or `noise_multiplier`) for a private method")]
    MissingPrivacyTarget {
        /// The method.
        method: String,
    },
    /// The training source failed.
    #[error("training batches at step {step}: {reason}")]
    Source {
        /// Step.
        step: u64,
        /// The source's message.
        reason: String,
    },
    /// A non-finite loss stopped the run; the update was not applied.
    #[error(
        "non-finite loss {loss} at step {step} ({context}); run stopped, last good state is \
         step {last_good_step}{}", checkpoint.as_ref().map(|p| format!(", saved at {}", p.display())).unwrap_or_default()
    )]
    NonFiniteLoss {
        /// Step whose loss was bad.
        step: u64,
        /// The loss.
        loss: f64,
        /// Which evaluation.
        context: String,
        /// The step whose end state is kept.
        last_good_step: u64,
        /// Where that state was saved, if checkpointing is on.
        checkpoint: Option<PathBuf>,
    },
    /// Resuming with a configuration that differs from the checkpoint's.
    #[error("checkpoint {path} was written with a different `{field}`: {saved} vs {current}")]
    ConfigMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// The field.
        field: String,
        /// The checkpoint's value.
        saved: String,
        /// The current value.
        current: String,
    },
    /// A fresh run would overwrite a checkpoint.
    #[error("{path} already holds a checkpoint at step {step}; resume it or choose another dir")]
    CheckpointExists {
        /// The directory.
        path: PathBuf,
        /// Its step.
        step: u64,
    },
    /// A checkpoint's file does not match the checksum written with it.
    #[error("checkpoint {}: {file} does not match its checksum ({reason}); the checkpoint is corrupt or was edited: delete {} (or pass --restart) to start this run afresh", path.display(), path.display())]
    CheckpointCorrupt {
        /// The checkpoint directory.
        path: PathBuf,
        /// The file that failed.
        file: String,
        /// Expected and found digests, or what is missing.
        reason: String,
    },
}
