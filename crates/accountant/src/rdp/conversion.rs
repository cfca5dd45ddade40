//! RDP curve → (ε, δ), with dp-accounting 0.6.0's edge-case conventions.
//!
//! Improved conversion (Canonne, Kamath & Steinke 2020, Prop. 12 = Balle et al. 2020, Thm 21):
//! ε = ε(α) + ln(1 - 1/α) - (ln δ + ln α)/(α - 1), minimised over the grid;
//! δ = exp((α-1)(ε(α) - ε)) (1 - 1/α)^(α-1) / α, minimised over the grid.
//! Conventions (dp-accounting `compute_epsilon` / `compute_delta`): orders α <= 1.01 are used
//! only through the KL bound δ <= sqrt(1 - e^{-ε(α)}); a negative ε(α) yields ε = 0 / δ = 0;
//! the result is clamped at 0 (ε) or 1 (δ); ties go to the first order.

use crate::error::{check_delta, check_epsilon, AccountantError, Result};

/// Orders at or below this are too close to 1 for the improved bound (dp-accounting's cut).
const MIN_CONVERSION_ORDER: f64 = 1.01;

/// A conversion result with the order that attained it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conversion {
    /// ε or δ.
    pub value: f64,
    /// The optimal Renyi order.
    pub order: f64,
}

fn check_curve(orders: &[f64], rdp: &[f64]) -> Result<()> {
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(AccountantError::OrderGridMismatch {
            left: orders.len(),
            right: rdp.len(),
        });
    }
    if let Some(bad) = orders.iter().find(|a| !(**a >= 1.0)) {
        return Err(AccountantError::InvalidOrder(*bad));
    }
    if let Some(bad) = rdp.iter().find(|r| r.is_nan()) {
        return Err(AccountantError::InvalidParameter {
            name: "RDP value",
            value: *bad,
            reason: "an RDP curve value must not be NaN",
        });
    }
    Ok(())
}

/// Smallest ε over the grid for the given δ (improved conversion), with its order.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<Conversion> {
    check_delta(delta)?;
    check_curve(orders, rdp)?;
    let mut best = Conversion {
        value: f64::INFINITY,
        order: orders[0],
    };
    for (&alpha, &value) in orders.iter().zip(rdp) {
        let epsilon = if value < 0.0 || delta * delta + (-value).exp_m1() > 0.0 {
            0.0
        } else if alpha > MIN_CONVERSION_ORDER {
            value + (-1.0 / alpha).ln_1p() - (delta * alpha).ln() / (alpha - 1.0)
        } else {
            f64::INFINITY
        };
        if epsilon < best.value {
            best = Conversion {
                value: epsilon,
                order: alpha,
            };
        }
    }
    best.value = best.value.max(0.0);
    Ok(best)
}

/// Smallest δ over the grid for the given ε (improved conversion and KL bound), with its order.
pub fn delta_from_rdp(orders: &[f64], rdp: &[f64], epsilon: f64) -> Result<Conversion> {
    check_epsilon(epsilon)?;
    check_curve(orders, rdp)?;
    let mut best = Conversion {
        value: f64::INFINITY,
        order: orders[0],
    };
    for (&alpha, &value) in orders.iter().zip(rdp) {
        let mut log_delta = if value <= 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-value).exp()).ln_1p()
        };
        if alpha > MIN_CONVERSION_ORDER && value > 0.0 {
            let bound = (alpha - 1.0) * (value - epsilon + (-1.0 / alpha).ln_1p()) - alpha.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.value {
            best = Conversion {
                value: log_delta,
                order: alpha,
            };
        }
    }
    best.value = best.value.exp().min(1.0);
    Ok(best)
}

/// The classical conversion (Mironov 2017, Prop. 3): ε = min ε(α) + ln(1/δ)/(α - 1).
pub fn epsilon_from_rdp_classical(orders: &[f64], rdp: &[f64], delta: f64) -> Result<Conversion> {
    check_delta(delta)?;
    check_curve(orders, rdp)?;
    let mut best = Conversion {
        value: f64::INFINITY,
        order: orders[0],
    };
    for (&alpha, &value) in orders.iter().zip(rdp) {
        if alpha > 1.0 {
            let epsilon = value - delta.ln() / (alpha - 1.0);
            if epsilon < best.value {
                best = Conversion {
                    value: epsilon,
                    order: alpha,
                };
            }
        }
    }
    best.value = best.value.max(0.0);
    Ok(best)
}
