//! Models (RoBERTa, OPT, Llama) in tch and the DP zeroth-order trainers of Liu et al. (NDSS 2025).
//!
//! Module ownership: `batch` and `model` are the contracts between the other modules:
//! `data` produces [`batch::Batch`]es, `models` implements [`model::LabelWordModel`], `perturb`
//! regenerates z from a seed, and `optim` runs the methods on any `LabelWordModel`.
// `x = x + y` on tensors stays out of place on purpose: autograd may keep `x` for the backward
// pass (DP-SGD, fine-tuning), and `x += y` would modify it in place.
#![allow(clippy::assign_op_pattern)]

pub mod batch;
pub mod compute;
pub mod data;
pub mod device;
pub mod model;
pub mod models;
pub mod optim;
pub mod perturb;
pub mod train;
