//! How a training run draws its batches, and the privacy events its noisy releases are: the one
//! place where sampling is mapped to events (the trainer and `repro privacy` both call it).

use crate::accountants::AccountantKind;
use crate::error::{check_delta, check_epsilon, check_noise_multiplier, AccountantError, Result};
use crate::event::{DpEvent, Ledger, LedgerEntry, NeighboringRelation};
use serde::{Deserialize, Serialize};

/// How batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Each example joins each batch independently with probability q = B/n (add/remove-one).
    Poisson,
    /// Each step a fresh uniformly random batch of exactly B of the n examples, without
    /// replacement (replace-one; WBK19 Thm 27).
    FixedSize,
    /// A fresh shuffle each epoch cut into disjoint batches of B (the last may be short), as
    /// the paper's released code draws them (replace-one). No amplification is claimed: within
    /// an epoch a record lies in exactly one batch, so an epoch is at most one Gaussian release
    /// per noisy value of a step (conditioned on the data-independent shuffle, neighbours differ
    /// in one step's releases; mixing over shuffles cannot increase the divergence), and epochs
    /// compose.
    Shuffled,
}

impl Sampling {
    /// Every sampling scheme.
    pub const ALL: [Sampling; 3] = [Sampling::Poisson, Sampling::FixedSize, Sampling::Shuffled];

    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Sampling::Poisson => "poisson",
            Sampling::FixedSize => "fixed-size",
            Sampling::Shuffled => "shuffled",
        }
    }

    /// The neighbouring relation the scheme is analysed under.
    pub fn relation(self) -> NeighboringRelation {
        match self {
            Sampling::Poisson => NeighboringRelation::AddOrRemoveOne,
            Sampling::FixedSize | Sampling::Shuffled => NeighboringRelation::ReplaceOne,
        }
    }
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Sampling {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
        // "fixed" was this option's earlier name on the command line.
        let wanted = if wanted == "fixed" {
            "fixed-size".to_string()
        } else {
            wanted
        };
        Sampling::ALL
            .into_iter()
            .find(|s| s.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = Sampling::ALL.iter().map(|s| s.name()).collect();
                format!("unknown sampling {text:?}; valid: {}", names.join(", "))
            })
    }
}

/// The composition of `steps` Poisson-sampled steps at rate `sampling_rate`, each releasing
/// `releases_per_step` values (for callers that know q but not n and B).
pub fn poisson_composition(
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    releases_per_step: u64,
) -> Result<LedgerEntry> {
    let event = DpEvent::PoissonSampledGaussian {
        sampling_rate,
        noise_multiplier,
    };
    event.validate()?;
    // At q = 1 every example is in every batch: the unsampled Gaussian.
    let event = if sampling_rate == 1.0 {
        DpEvent::Gaussian { noise_multiplier }
    } else {
        event
    };
    let count = steps
        .checked_mul(releases_per_step)
        .ok_or(AccountantError::InvalidSteps(u64::MAX))?;
    Ok(LedgerEntry { event, count })
}

/// Sensitivity of a sum of per-example contributions clipped at `clip_norm`: C under
/// add/remove-one, 2C under replace-one.
pub fn sum_sensitivity(relation: NeighboringRelation, clip_norm: f64) -> f64 {
    match relation {
        NeighboringRelation::AddOrRemoveOne => clip_norm,
        NeighboringRelation::ReplaceOne => 2.0 * clip_norm,
    }
}

/// The Gaussian mechanism on the sum over a sampled batch: noise std = σ · sensitivity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampledGaussian {
    /// How batches are drawn.
    pub sampling: Sampling,
    /// n, the number of training examples.
    pub dataset_size: u64,
    /// B (the expected size under Poisson sampling).
    pub batch_size: u64,
    /// σ, the noise std over the sum's sensitivity.
    pub noise_multiplier: f64,
}

impl SampledGaussian {
    /// q = B / n.
    pub fn sampling_rate(&self) -> f64 {
        self.batch_size as f64 / self.dataset_size as f64
    }

    /// The neighbouring relation.
    pub fn relation(&self) -> NeighboringRelation {
        self.sampling.relation()
    }

    /// Steps in one shuffled epoch, ⌈n / B⌉.
    pub fn steps_per_epoch(&self) -> u64 {
        self.dataset_size.div_ceil(self.batch_size.max(1))
    }

    /// Refuses n = 0, B outside 1..=n and an invalid σ.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.batch_size > self.dataset_size {
            return Err(AccountantError::InvalidBatch {
                dataset_size: self.dataset_size,
                batch_size: self.batch_size,
            });
        }
        check_noise_multiplier(self.noise_multiplier)
    }

    /// The composition of `steps` steps that each release `releases_per_step` noisy values
    /// computed on the step's batch (a DP zeroth-order step releases one scalar per direction):
    /// one event and how many times it is composed.
    pub fn composition(&self, steps: u64, releases_per_step: u64) -> Result<LedgerEntry> {
        self.validate()?;
        let sigma = self.noise_multiplier;
        let (event, times) = match self.sampling {
            Sampling::Poisson => {
                return poisson_composition(self.sampling_rate(), sigma, steps, releases_per_step)
            }
            Sampling::FixedSize => (
                DpEvent::FixedBatchGaussian {
                    dataset_size: self.dataset_size,
                    batch_size: self.batch_size,
                    noise_multiplier: sigma,
                },
                steps,
            ),
            // An epoch (or its started part) is one release per value: see `Sampling::Shuffled`.
            Sampling::Shuffled => (
                DpEvent::Gaussian {
                    noise_multiplier: sigma,
                },
                steps.div_ceil(self.steps_per_epoch()),
            ),
        };
        let count = times
            .checked_mul(releases_per_step)
            .ok_or(AccountantError::InvalidSteps(u64::MAX))?;
        Ok(LedgerEntry { event, count })
    }

    /// The ledger of `steps` steps (see [`SampledGaussian::composition`]).
    pub fn ledger(&self, steps: u64, releases_per_step: u64) -> Result<Ledger> {
        let mut ledger = Ledger::new(self.relation());
        let entry = self.composition(steps, releases_per_step)?;
        if entry.count > 0 {
            ledger.entries.push(entry);
        }
        Ok(ledger)
    }

    /// ε (an upper bound) after `steps` steps, by `kind` (`epsilon_error`: PRV's budget).
    pub fn epsilon(
        &self,
        kind: AccountantKind,
        epsilon_error: f64,
        steps: u64,
        releases_per_step: u64,
        delta: f64,
    ) -> Result<f64> {
        check_delta(delta)?;
        let entry = self.composition(steps, releases_per_step)?;
        let mut accountant = kind.build(self.relation(), epsilon_error);
        accountant.compose(&entry.event, entry.count)?;
        accountant.epsilon(delta)
    }

    /// δ (an upper bound) after `steps` steps at `epsilon`, by `kind`.
    pub fn delta(
        &self,
        kind: AccountantKind,
        epsilon_error: f64,
        steps: u64,
        releases_per_step: u64,
        epsilon: f64,
    ) -> Result<f64> {
        check_epsilon(epsilon)?;
        let entry = self.composition(steps, releases_per_step)?;
        let mut accountant = kind.build(self.relation(), epsilon_error);
        accountant.compose(&entry.event, entry.count)?;
        accountant.delta(epsilon)
    }

    /// The smallest noise multiplier (to `relative_tolerance`) meeting (ε, δ) after `steps`
    /// steps; `self.noise_multiplier` is ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn calibrate(
        &self,
        kind: AccountantKind,
        epsilon_error: f64,
        steps: u64,
        releases_per_step: u64,
        epsilon: f64,
        delta: f64,
        relative_tolerance: f64,
    ) -> Result<f64> {
        check_delta(delta)?;
        if steps == 0 || releases_per_step == 0 {
            return Err(AccountantError::InvalidSteps(0));
        }
        // Refuse an unsupported pairing once, before the search hides it.
        let probe = SampledGaussian {
            noise_multiplier: 1.0,
            ..*self
        };
        let entry = probe.composition(steps, releases_per_step)?;
        kind.build(self.relation(), epsilon_error)
            .check_supported(&entry.event)?;
        crate::calibrate::calibrate_noise_multiplier(epsilon, relative_tolerance, |sigma| {
            SampledGaussian {
                noise_multiplier: sigma,
                ..*self
            }
            .epsilon(kind, epsilon_error, steps, releases_per_step, delta)
        })
    }
}
