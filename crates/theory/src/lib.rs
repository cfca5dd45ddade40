//! Zeroth-order and differential-privacy claims, checked on synthetic quadratics.
//!
//! See `crates/theory/README.md` for each claim, its source and the measured result.
//!
//! The DP-ZOSO stagewise schedule lives in the `schedule` crate, shared with the trainer.
//!
//! * [`objective`]: quadratics with a controlled spectrum and smooth test functions.
//! * [`estimator`]: two-point ZO estimators, clipping.
//! * [`bounds`]: closed forms and bounds with their sources.
//! * [`algorithm`]: ZO-SGD / DPZero / DP-ZOSO / DP-ZOPO, generic over [`objective::Objective`].
//! * [`claims`]: the Monte-Carlo experiments behind each claim (used by tests and `repro`).
//! * [`stats`]: summaries and CLT acceptance bounds at `ALPHA = 1e-6`.
#![forbid(unsafe_code)]

pub mod algorithm;
pub mod bounds;
pub mod claims;
pub mod error;
pub mod estimator;
pub mod objective;
pub mod stats;

pub use error::{Result, TheoryError};
