//! The training methods of the paper and its baselines, written against
//! [`crate::model::LabelWordModel`] (docs/paper.md §1, §3.3, §6).
//!
//! * [`zo`]: the shared two-point zeroth-order step: MeZO (non-private), DPZero (per-example
//!   scalar clipping + one scalar Gaussian per direction), and the DP-ZOSO/DP-ZOPO variants with
//!   a proximal term and an optional coordinate mask. z is regenerated from a seed, never stored.
//! * [`mask`]: the data-free DP-ZOPO parameter score (SynFlow linearisation, constant-token
//!   input, ZO Hessian-gradient times |theta|) and the global top-r selection.
//! * [`dp_sgd`]: real DP-SGD (per-example clipping, per-coordinate Gaussian noise), clipping by
//!   [`ghost`] norms (one forward, one backward) or by micro-batches of one example.
//! * [`calibration`]: contextual calibration of zero-shot predictions (label-bias removal).
//! * [`adamw`]: non-private AdamW with a state that can be checkpointed.
//! * [`privacy`]: noise calibration and epsilon spent (the swap point to the accountant crate).
//! * [`params`]: the trainable parameters sorted by name, optional masks and proximal anchors.
//!
//! All randomness is drawn from `rand_chacha` generators seeded per run and step (never the
//! process-global tch generator), so runs are reproducible and tests can run in parallel. DP
//! noise is therefore seeded: this is a research reproduction, not a deployment-grade mechanism.
pub mod adamw;
pub mod calibration;
pub mod dp_sgd;
mod error;
pub mod ghost;
pub mod loss;
pub mod mask;
pub mod paired;
pub mod params;
pub mod privacy;
pub mod rng;
pub mod zo;

pub use error::{OptimError, Result};

/// The z generator used by the methods: `axpy_z(params, terms)` does
/// `theta += sum_k scale_k * z(seed_k)` in place on the trainable (masked) coordinates, with z
/// regenerated from (seed, element index) by Philox (see [`crate::perturb`]).
pub(crate) use crate::perturb::{axpy_z, ParamSet};
