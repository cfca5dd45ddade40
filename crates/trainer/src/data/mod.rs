//! Task data: readers for the LM-BFF / MeZO / SuperGLUE files and the stand-in sets, prompt
//! templates and label words (`experiments/tasks.toml`), tokenisation into
//! [`crate::batch::Batch`], and deterministic batching.
//!
//! ```text
//! TaskRegistry ──get──> TaskSpec ──load_task──> Splits { train, dev, test: Vec<Example> }
//!                               └──PromptEncoder::new(tokenizer)──encode_all──collate──> Batch
//! PoissonSampler / ShuffledBatches / sequential_batches ──> indices for collate
//! ```

pub mod batcher;
pub mod choice;
pub mod dir;
pub mod encode;
pub mod error;
pub mod example;
pub mod lmbff;
pub mod numpy_rng;
pub mod standin;
pub mod superglue;
pub mod task;
pub mod template;

pub use batcher::{sequential_batches, PoissonSampler, ShuffledBatches};
pub use dir::{AssetsDir, DataDir};
pub use encode::{EncodedExample, ModelConventions, PaddingSide, PromptEncoder};
pub use error::{DataError, Result};
pub use example::{seeded_subsample, Example, Splits};
pub use task::{ReaderKind, TaskRegistry, TaskSpec};

/// Loads the splits of one task instance: `k` examples per class (LM-BFF tasks and stand-ins;
/// SuperGLUE tasks use MeZO's fixed sizes and ignore `k`) for `seed`.
///
/// Real data comes from `data` (required for LM-BFF and SuperGLUE tasks), stand-ins from
/// `assets`.
///
/// # Errors
/// [`DataError::NotFound`] when the needed directory is missing (naming how to provide it),
/// and any reading error.
pub fn load_task(
    spec: &TaskSpec,
    data: Option<&DataDir>,
    assets: &AssetsDir,
    k: usize,
    seed: u64,
) -> Result<Splits> {
    let need_data = || {
        data.ok_or_else(|| DataError::NotFound {
            path: std::path::PathBuf::from(format!("${}", DataDir::ENV)),
            hint: format!(
                "task {} reads real data: pass --data-dir or set {}",
                spec.dir,
                DataDir::ENV
            ),
        })
    };
    match spec.reader {
        ReaderKind::LmBff => lmbff::load(spec, need_data()?, k, seed),
        ReaderKind::Superglue => superglue::load(spec, need_data()?, seed),
        ReaderKind::PangLee | ReaderKind::Vader | ReaderKind::Bbc => {
            standin::load(spec, assets, k, seed)
        }
    }
}
