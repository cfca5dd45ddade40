//! Private hyper-parameter tuning with a random number of candidate runs (Papernot & Steinke,
//! "Hyperparameter Tuning with Renyi Differential Privacy", ICLR 2022, Thm 2).
//!
//! The procedure: draw K from a truncated negative binomial distribution D_{η,γ}, run a
//! randomized algorithm Q (one training run with a candidate drawn at random, independently of
//! the data) K times, release the best result. If Q is (λ, ε(λ))-RDP at every order, the
//! procedure is (λ, ε′(λ))-RDP with, for every λ̂ ≥ 1,
//!
//! ```text
//! ε′(λ) = ε(λ) + (1 + η) (1 − 1/λ̂) ε(λ̂) + (1 + η) ln(1/γ) / λ̂ + ln E[K] / (λ − 1)
//! ```
//!
//! D_{η,γ} (η > −1, γ ∈ (0, 1)): P[K = k] ∝ (1 − γ)^k C(k + η − 1, k) for k ≥ 1; η = 1 is the
//! geometric distribution (E[K] = 1/γ), η → 0 the logarithmic one. A mixture over candidates
//! chosen independently of the data is at most as private as its least private component (joint
//! quasi-convexity of the Rényi divergence), so ε(λ) may be the pointwise maximum of the
//! candidates' curves. The bound is minimised here over λ̂ on the curve's own order grid (each λ̂
//! gives a valid bound).

use crate::error::{AccountantError, Result};

/// A truncated negative binomial distribution D_{η,γ} of the number of candidate runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TruncatedNegativeBinomial {
    /// η > −1 (1: geometric; 0: logarithmic).
    pub eta: f64,
    /// γ ∈ (0, 1).
    pub gamma: f64,
}

impl TruncatedNegativeBinomial {
    /// The geometric distribution on {1, 2, …} with mean `mean` ≥ 1 (η = 1, γ = 1/mean).
    pub fn geometric_with_mean(mean: f64) -> Result<Self> {
        if !(mean.is_finite() && mean >= 1.0) {
            return Err(AccountantError::InvalidParameter {
                name: "expected number of candidate runs",
                value: mean,
                reason: "must be finite and >= 1",
            });
        }
        let d = TruncatedNegativeBinomial {
            eta: 1.0,
            gamma: (1.0 / mean).min(1.0 - f64::EPSILON),
        };
        d.validate()?;
        Ok(d)
    }

    fn validate(&self) -> Result<()> {
        if !(self.eta.is_finite() && self.eta > -1.0) {
            return Err(AccountantError::InvalidParameter {
                name: "eta",
                value: self.eta,
                reason: "the truncated negative binomial needs eta > -1",
            });
        }
        if !(self.gamma > 0.0 && self.gamma < 1.0) {
            return Err(AccountantError::InvalidParameter {
                name: "gamma",
                value: self.gamma,
                reason: "the truncated negative binomial needs gamma in (0, 1)",
            });
        }
        Ok(())
    }

    /// E[K]: η (1 − γ) / (γ (1 − γ^η)), and (1/γ − 1) / ln(1/γ) at η = 0.
    pub fn mean(&self) -> Result<f64> {
        self.validate()?;
        let (eta, gamma) = (self.eta, self.gamma);
        Ok(if eta == 0.0 {
            (1.0 / gamma - 1.0) / (1.0 / gamma).ln()
        } else {
            eta * (1.0 - gamma) / (gamma * (1.0 - gamma.powf(eta)))
        })
    }
}

/// ε′ on `orders` of the tuning procedure whose candidate run has RDP `rdp` on the same grid
/// (module docs).
///
/// # Errors
/// Grids of different lengths, an order ≤ 1, a NaN or negative RDP value, or invalid
/// distribution parameters.
pub fn tuning_rdp(
    orders: &[f64],
    rdp: &[f64],
    candidates: TruncatedNegativeBinomial,
) -> Result<Vec<f64>> {
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(AccountantError::OrderGridMismatch {
            left: orders.len(),
            right: rdp.len(),
        });
    }
    if let Some(bad) = orders.iter().find(|a| !(**a > 1.0)) {
        return Err(AccountantError::InvalidOrder(*bad));
    }
    if let Some(bad) = rdp.iter().find(|r| !(**r >= 0.0)) {
        return Err(AccountantError::InvalidParameter {
            name: "RDP value",
            value: *bad,
            reason: "a candidate's RDP must be >= 0 and not NaN",
        });
    }
    let log_mean = candidates.mean()?.ln();
    let (eta, gamma) = (candidates.eta, candidates.gamma);
    // min over λ̂ of (1 + η) ((1 − 1/λ̂) ε(λ̂) + ln(1/γ)/λ̂): the same for every λ.
    let selection_cost = orders
        .iter()
        .zip(rdp)
        .map(|(&hat, &eps_hat)| (1.0 + eta) * ((1.0 - 1.0 / hat) * eps_hat - gamma.ln() / hat))
        .fold(f64::INFINITY, f64::min);
    Ok(orders
        .iter()
        .zip(rdp)
        .map(|(&lambda, &eps)| eps + selection_cost + log_mean / (lambda - 1.0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// E[K] from the closed form against the mean of the probability mass function summed
    /// directly (P[K = k] ∝ (1 − γ)^k Π_{l<k} (l + η)/(l + 1); the logarithmic limit
    /// (1 − γ)^k / k at η = 0).
    #[test]
    fn mean_matches_the_summed_distribution() {
        for (eta, gamma) in [
            (1.0, 0.1),
            (0.0, 0.05),
            (0.5, 0.2),
            (-0.5, 0.01),
            (3.0, 0.3),
        ] {
            let d = TruncatedNegativeBinomial { eta, gamma };
            let (mut mass, mut first_moment) = (0.0, 0.0);
            let mut weight = 1.0; // Π_{l<k} (l + η)/(l + 1) · (1 − γ)^k, built up in k
            for k in 1..200_000u32 {
                let l = f64::from(k - 1);
                let term = if eta == 0.0 {
                    (1.0 - gamma).powi(k as i32) / f64::from(k)
                } else {
                    weight *= (l + eta) / (l + 1.0) * (1.0 - gamma);
                    weight
                };
                mass += term;
                first_moment += f64::from(k) * term;
            }
            let want = first_moment / mass;
            let got = d.mean().unwrap();
            assert!(
                (got - want).abs() < 1e-9 * want,
                "eta {eta} gamma {gamma}: {got} vs {want}"
            );
        }
        let g = TruncatedNegativeBinomial::geometric_with_mean(8.0).unwrap();
        assert!((g.mean().unwrap() - 8.0).abs() < 1e-12);
        assert!(TruncatedNegativeBinomial::geometric_with_mean(0.5).is_err());
        assert!(TruncatedNegativeBinomial {
            eta: -1.0,
            gamma: 0.5
        }
        .mean()
        .is_err());
    }

    /// For a ρ-zCDP candidate (ε(λ) = ρλ), the bound minimised over continuous λ̂ is
    /// ε′(λ) = ρλ + (1 + η)(2 √(ρ ln(1/γ)) − ρ) + ln E[K]/(λ − 1) (at λ̂* = √(ln(1/γ)/ρ) ≥ 1).
    /// On a fine grid around λ̂* the computed bound is at least that and within 1e-6 of it.
    #[test]
    fn zcdp_candidate_matches_the_closed_form() {
        let rho = 0.05;
        let d = TruncatedNegativeBinomial {
            eta: 1.0,
            gamma: 0.1,
        };
        let orders: Vec<f64> = (1..=40_000).map(|i| 1.0 + f64::from(i) * 1e-3).collect();
        let rdp: Vec<f64> = orders.iter().map(|a| rho * a).collect();
        let got = tuning_rdp(&orders, &rdp, d).unwrap();
        let extra = (1.0 + d.eta) * (2.0 * (rho * (1.0 / d.gamma).ln()).sqrt() - rho);
        let log_mean = (1.0 / d.gamma).ln();
        for (i, &lambda) in orders.iter().enumerate().step_by(997) {
            let want = rho * lambda + extra + log_mean / (lambda - 1.0);
            assert!(
                got[i] >= want - 1e-12,
                "order {lambda}: {} < {want}",
                got[i]
            );
            assert!(got[i] - want < 1e-6, "order {lambda}: {} vs {want}", got[i]);
        }
        // More expected candidates cost more.
        let more = tuning_rdp(
            &orders,
            &rdp,
            TruncatedNegativeBinomial {
                eta: 1.0,
                gamma: 0.01,
            },
        )
        .unwrap();
        assert!(more.iter().zip(&got).all(|(a, b)| a > b));
        assert!(tuning_rdp(&[2.0], &[f64::NAN], d).is_err());
        assert!(tuning_rdp(&[2.0, 3.0], &[0.1], d).is_err());
    }
}
