//! Privacy events, neighbouring relations and the serialisable ledger of what was composed.

use crate::error::{check_noise_multiplier, check_sampling_rate, AccountantError, Result};
use serde::{Deserialize, Serialize};

/// Which datasets count as neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighboringRelation {
    /// Add or remove one record (Poisson subsampling; MTZ19).
    AddOrRemoveOne,
    /// Replace one record (fixed-size batches without replacement; WBK19).
    ReplaceOne,
}

impl std::fmt::Display for NeighboringRelation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NeighboringRelation::AddOrRemoveOne => write!(f, "add-or-remove-one"),
            NeighboringRelation::ReplaceOne => write!(f, "replace-one"),
        }
    }
}

/// One privacy-relevant operation. Sensitivity is 1 throughout; the noise multiplier is the
/// ratio of the noise standard deviation to that sensitivity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DpEvent {
    /// The Gaussian mechanism on the full dataset.
    Gaussian {
        /// sigma.
        noise_multiplier: f64,
    },
    /// The Gaussian mechanism on a Poisson subsample with rate q (add/remove adjacency).
    PoissonSampledGaussian {
        /// q.
        sampling_rate: f64,
        /// sigma.
        noise_multiplier: f64,
    },
    /// The Gaussian mechanism on a uniformly random batch of `batch_size` out of
    /// `dataset_size` records, without replacement (replace-one adjacency).
    FixedBatchGaussian {
        /// n.
        dataset_size: u64,
        /// m.
        batch_size: u64,
        /// sigma.
        noise_multiplier: f64,
    },
    /// A rho-zCDP mechanism.
    Zcdp {
        /// rho.
        rho: f64,
    },
    /// An event repeated `count` times.
    SelfComposed {
        /// The repeated event.
        event: Box<DpEvent>,
        /// How many times.
        count: u64,
    },
    /// Several events composed in sequence.
    Composed {
        /// The events.
        events: Vec<DpEvent>,
    },
}

impl DpEvent {
    /// Validates the event's parameters (not its relation; see [`DpEvent::check_relation`]).
    pub fn validate(&self) -> Result<()> {
        match self {
            DpEvent::Gaussian { noise_multiplier } => check_noise_multiplier(*noise_multiplier),
            DpEvent::PoissonSampledGaussian {
                sampling_rate,
                noise_multiplier,
            } => {
                check_sampling_rate(*sampling_rate)?;
                check_noise_multiplier(*noise_multiplier)
            }
            DpEvent::FixedBatchGaussian {
                dataset_size,
                batch_size,
                noise_multiplier,
            } => {
                if *batch_size == 0 || batch_size > dataset_size {
                    return Err(AccountantError::InvalidBatch {
                        dataset_size: *dataset_size,
                        batch_size: *batch_size,
                    });
                }
                check_noise_multiplier(*noise_multiplier)
            }
            DpEvent::Zcdp { rho } => {
                if *rho >= 0.0 {
                    Ok(())
                } else {
                    Err(AccountantError::InvalidRho(*rho))
                }
            }
            DpEvent::SelfComposed { event, .. } => event.validate(),
            DpEvent::Composed { events } => events.iter().try_for_each(|e| e.validate()),
        }
    }

    /// Refuses event/relation pairs the implemented theory does not cover: Poisson sampling is
    /// analysed under add/remove-one only (MTZ19), sampling without replacement under
    /// replace-one only (WBK19 Thm 27), as in dp-accounting's `supports()`.
    pub fn check_relation(&self, relation: NeighboringRelation) -> Result<()> {
        let refuse = |reason: &str| {
            Err(AccountantError::UnsupportedEvent {
                event: format!("{self:?}"),
                relation: relation.to_string(),
                reason: reason.to_string(),
            })
        };
        match self {
            DpEvent::PoissonSampledGaussian { .. }
                if relation != NeighboringRelation::AddOrRemoveOne =>
            {
                refuse("the Poisson-subsampled Gaussian bound (MTZ19) assumes add/remove-one")
            }
            DpEvent::FixedBatchGaussian { .. } if relation != NeighboringRelation::ReplaceOne => {
                refuse("the sampling-without-replacement bound (WBK19 Thm 27) assumes replace-one")
            }
            DpEvent::SelfComposed { event, .. } => event.check_relation(relation),
            DpEvent::Composed { events } => {
                events.iter().try_for_each(|e| e.check_relation(relation))
            }
            _ => Ok(()),
        }
    }
}

/// One ledger line: `event` composed `count` times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The event.
    pub event: DpEvent,
    /// How many times it was composed.
    pub count: u64,
}

/// Everything an accountant composed, in order; serialisable to JSON so that a training run
/// can store it and the guarantee can be recomputed later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// The neighbouring relation the events were accounted under.
    pub relation: NeighboringRelation,
    /// The composed events.
    pub entries: Vec<LedgerEntry>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(relation: NeighboringRelation) -> Self {
        Ledger {
            relation,
            entries: Vec::new(),
        }
    }

    /// JSON text of the ledger.
    pub fn to_json(&self) -> std::result::Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// Parses a ledger from JSON text.
    pub fn from_json(text: &str) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}
