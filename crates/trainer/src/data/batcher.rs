//! Deterministic choice of which examples form each batch.
//!
//! - [`PoissonSampler`]: every example joins a batch independently with probability
//!   `sampling_rate` (q); the batch size is random and can be 0. This is the sampling the
//!   privacy accountant assumes (Poisson-subsampled Gaussian; docs/paper.md §7 item 2) and the
//!   default.
//! - [`ShuffledBatches`]: fixed-size batches from a fresh shuffle each epoch, as the paper's
//!   released code does (a HF `RandomSampler`); a declared deviation from the accountant.
//! - [`sequential_batches`]: evaluation batches in order.
//!
//! Both random samplers draw from a `ChaCha20Rng` seeded by the caller, so a seed fixes the
//! whole batch sequence.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::error::{DataError, Result};

/// Poisson sampling with rate q over `num_examples` examples.
#[derive(Debug, Clone)]
pub struct PoissonSampler {
    num_examples: usize,
    sampling_rate: f64,
    rng: ChaCha20Rng,
}

impl PoissonSampler {
    /// A sampler with rate `sampling_rate` in (0, 1].
    ///
    /// # Errors
    /// [`DataError::InvalidOption`] for a rate outside (0, 1] (NaN included) or no example.
    pub fn new(num_examples: usize, sampling_rate: f64, seed: u64) -> Result<Self> {
        if !(sampling_rate > 0.0 && sampling_rate <= 1.0) {
            return Err(DataError::InvalidOption {
                name: "sampling_rate",
                value: sampling_rate.to_string(),
                reason: "must lie in (0, 1]",
            });
        }
        if num_examples == 0 {
            return Err(DataError::InvalidOption {
                name: "num_examples",
                value: "0".into(),
                reason: "Poisson sampling needs at least one example",
            });
        }
        Ok(Self {
            num_examples,
            sampling_rate,
            rng: ChaCha20Rng::seed_from_u64(seed),
        })
    }

    /// The sampling rate q.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate
    }

    /// The indices of the next batch, increasing (possibly none).
    pub fn next_batch(&mut self) -> Vec<usize> {
        (0..self.num_examples)
            .filter(|_| self.rng.random::<f64>() < self.sampling_rate)
            .collect()
    }
}

/// Fixed-size batches over a reshuffled order each epoch.
#[derive(Debug, Clone)]
pub struct ShuffledBatches {
    order: Vec<usize>,
    batch_size: usize,
    cursor: usize,
    drop_last: bool,
    rng: ChaCha20Rng,
}

impl ShuffledBatches {
    /// Batches of `batch_size` over `num_examples`; with `drop_last` an epoch's short final
    /// batch is skipped, otherwise it is returned.
    ///
    /// # Errors
    /// [`DataError::InvalidOption`] for a zero batch size, no example, or (with `drop_last`) a
    /// batch larger than the data.
    pub fn new(num_examples: usize, batch_size: usize, drop_last: bool, seed: u64) -> Result<Self> {
        if batch_size == 0 || num_examples == 0 || (drop_last && batch_size > num_examples) {
            return Err(DataError::InvalidOption {
                name: "batch_size",
                value: format!("{batch_size} (for {num_examples} examples)"),
                reason: "must be at least 1 and, with drop_last, at most the number of examples",
            });
        }
        // The cursor starts at the end so that the first call shuffles.
        Ok(Self {
            order: (0..num_examples).collect(),
            batch_size,
            cursor: num_examples,
            drop_last,
            rng: ChaCha20Rng::seed_from_u64(seed),
        })
    }

    /// The indices of the next batch; a new epoch (fresh shuffle) starts when the current one
    /// is used up.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let remaining = self.order.len() - self.cursor;
        if remaining == 0 || (self.drop_last && remaining < self.batch_size) {
            // Fisher-Yates with the seeded generator.
            for i in (1..self.order.len()).rev() {
                let j = self.rng.random_range(0..=i);
                self.order.swap(i, j);
            }
            self.cursor = 0;
        }
        let end = (self.cursor + self.batch_size).min(self.order.len());
        let batch = self.order[self.cursor..end].to_vec();
        self.cursor = end;
        batch
    }
}

/// Evaluation batches `0..batch_size`, `batch_size..2*batch_size`, ... (the last may be short).
///
/// # Errors
/// [`DataError::InvalidOption`] for a zero batch size.
pub fn sequential_batches(
    num_examples: usize,
    batch_size: usize,
) -> Result<impl Iterator<Item = std::ops::Range<usize>>> {
    if batch_size == 0 {
        return Err(DataError::InvalidOption {
            name: "batch_size",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    Ok((0..num_examples)
        .step_by(batch_size)
        .map(move |start| start..(start + batch_size).min(num_examples)))
}
