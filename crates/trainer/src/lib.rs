//! Models (RoBERTa, OPT, Llama) in tch and the DP zeroth-order trainers of Liu et al. (NDSS 2025).
//!
//! Module ownership: `batch` and `model` are the contracts between the other modules:
//! `data` produces [`batch::Batch`]es, `models` implements [`model::LabelWordModel`], `perturb`
//! regenerates z from a seed, and `optim` runs the methods on any `LabelWordModel`.
pub mod batch;
pub mod data;
pub mod device;
pub mod model;
pub mod models;
pub mod perturb;
pub mod optim;
pub mod train;
