//! Models (RoBERTa, OPT, Llama) in tch and the DP zeroth-order trainers of Liu et al. (NDSS 2025).
pub mod device;
