//! What the training loop needs from the data side: one batch per global step.

use super::config::Sampling;
use crate::batch::TaskBatch;

/// A request for the batch of one global step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRequest {
    /// Global step (1-based).
    pub step: u64,
    /// B (the expected size under Poisson sampling).
    pub batch_size: usize,
    /// Poisson or shuffled fixed-size batches.
    pub sampling: Sampling,
    /// The run seed.
    pub seed: u64,
}

/// The training examples, served one batch per step.
///
/// For checkpoint/resume to be exact, [`TrainBatches::batch`] must depend only on the request
/// (derive the sampling randomness from `(seed, step)`, e.g. with
/// [`crate::optim::rng::stream`] and [`crate::optim::rng::Purpose::Batches`]), not on how many
/// batches were drawn before in this process.
pub trait TrainBatches {
    /// Number of training examples n (q = B / n, default delta = 1 / n).
    fn num_examples(&self) -> usize;

    /// The batch of `request.step`, on the model's device: label-word classification or
    /// multiple choice, sampled by example (Poisson sampling draws examples, never a
    /// multiple-choice example's candidate rows separately). Under Poisson sampling it may be
    /// empty; a classification batch must then still carry the task's `label_word_ids`.
    fn batch(&mut self, request: BatchRequest) -> Result<TaskBatch, String>;
}
