//! Differential-privacy accounting for DP zeroth-order and DP-SGD training.
