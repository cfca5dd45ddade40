//! Zeroth-order and differential-privacy claims, checked on synthetic quadratics.
