//! Zero-concentrated DP (Bun & Steinke 2016, arXiv:1605.02065) and its conversions to (ε, δ).

use crate::error::{check_delta, check_epsilon, check_noise_multiplier, AccountantError, Result};

/// Smallest order used by the continuous-α conversions (OpenDP's lower search bound).
const MIN_ORDER: f64 = 1.01;

/// A ρ-zCDP guarantee. Composition adds ρ.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Zcdp {
    rho: f64,
}

impl Zcdp {
    /// A ρ-zCDP guarantee; ρ must be >= 0 and not NaN (+∞ means no privacy).
    pub fn new(rho: f64) -> Result<Self> {
        if rho >= 0.0 {
            Ok(Zcdp { rho })
        } else {
            Err(AccountantError::InvalidRho(rho))
        }
    }

    /// The Gaussian mechanism with sensitivity 1 and noise multiplier σ: ρ = 1/(2σ²)
    /// (BS16 Prop. 1.6).
    pub fn from_gaussian(noise_multiplier: f64) -> Result<Self> {
        check_noise_multiplier(noise_multiplier)?;
        Zcdp::new(1.0 / (2.0 * noise_multiplier * noise_multiplier))
    }

    /// ρ.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// Sequential composition: ρ1 + ρ2.
    pub fn compose(&self, other: &Zcdp) -> Zcdp {
        Zcdp {
            rho: self.rho + other.rho,
        }
    }

    /// `count`-fold self-composition: count · ρ.
    pub fn compose_times(&self, count: u64) -> Zcdp {
        Zcdp {
            rho: if count == 0 {
                0.0
            } else {
                self.rho * count as f64
            },
        }
    }

    /// BS16 Prop. 1.3: ε = ρ + 2 sqrt(ρ ln(1/δ)).
    pub fn epsilon_bun_steinke(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        Ok(self.rho + 2.0 * (self.rho * (1.0 / delta).ln()).sqrt())
    }

    /// Tight conversion (Canonne, Kamath & Steinke 2020, Cor. 13) over continuous α:
    /// ε = min_{α>1} αρ + ln(1 - 1/α) + (ln(1/δ) - ln α)/(α - 1), clamped at 0.
    /// The optimum solves ρ(α - 1)² + ln(αδ) = 0 (increasing in α), found by bisection as in
    /// OpenDP's `cdp_epsilon`.
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        if self.rho == 0.0 {
            return Ok(0.0);
        }
        if self.rho == f64::INFINITY {
            return Ok(f64::INFINITY);
        }
        let rho = self.rho;
        let slope = |alpha: f64| rho * (alpha - 1.0) * (alpha - 1.0) + (alpha * delta).ln();
        let alpha = bisect_increasing(slope, MIN_ORDER);
        let epsilon = alpha * rho + (-1.0 / alpha).ln_1p() - (delta * alpha).ln() / (alpha - 1.0);
        Ok(epsilon.max(0.0))
    }

    /// Tight δ for a given ε (CKS20 Cor. 13): δ = min_α exp((α-1)(αρ - ε)) (1 - 1/α)^α/(α - 1),
    /// at the α solving 2αρ - ρ - ε + ln(1 - 1/α) = 0; capped at 1.
    pub fn delta(&self, epsilon: f64) -> Result<f64> {
        check_epsilon(epsilon)?;
        if self.rho == 0.0 {
            return Ok(0.0);
        }
        if self.rho == f64::INFINITY {
            return Ok(1.0);
        }
        let rho = self.rho;
        let slope = |alpha: f64| 2.0 * alpha * rho - rho - epsilon + (-1.0 / alpha).ln_1p();
        let alpha = bisect_increasing(slope, 1.0 + 1e-12);
        let log_delta = (alpha - 1.0) * (alpha * rho - epsilon) + alpha * (-1.0 / alpha).ln_1p()
            - (alpha - 1.0).ln();
        Ok(log_delta.exp().min(1.0))
    }
}

/// Root of an increasing function on (lower, ∞) by bracketing and bisection to full precision;
/// returns `lower` if the function is already >= 0 there.
fn bisect_increasing(f: impl Fn(f64) -> f64, lower: f64) -> f64 {
    if f(lower) >= 0.0 {
        return lower;
    }
    let mut low = lower;
    let mut high = 2.0 * lower;
    while f(high) < 0.0 && high < 1e300 {
        low = high;
        high *= 2.0;
    }
    for _ in 0..2000 {
        let middle = 0.5 * (low + high);
        if middle <= low || middle >= high {
            break;
        }
        if f(middle) < 0.0 {
            low = middle;
        } else {
            high = middle;
        }
    }
    high
}
