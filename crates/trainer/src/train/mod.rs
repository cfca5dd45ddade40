//! The training loop: configuration, batches per step, checkpoint/resume, run records and the
//! privacy ledger (issue 6). See [`run::run_training`].
pub mod checkpoint;
pub mod config;
mod error;
pub mod record;
pub mod run;
pub mod source;
pub mod step;

pub use config::{DType, MaskConfig, Method, ProximalMode, Sampling, StageConfig, TrainConfig};
pub use error::{Result, TrainError};
pub use record::{PhaseSeconds, PrivacyLedger, Provenance, RunRecord};
pub use run::{run_training, run_training_with, ContentFree, RunOptions};
pub use source::{BatchRequest, TrainBatches};
pub use step::{method_steps_on_this_thread, MethodSettings, MethodStep, StepInput, StepOutput};
