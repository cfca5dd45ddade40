//! A_α - 1 of the Poisson-subsampled Gaussian for many orders on one shared node grid.
//!
//! The integrand φ_σ(z)[r^α - 1 - α(r - 1)] of poisson_gaussian.rs is analytic in the strip
//! |Im z| < πσ² (the branch points of r^α, r = 1 - q + q e^{(2z-1)/(2σ²)}, sit at
//! Im z = ±πσ²) and decays like a Gaussian, so the trapezoidal rule on the real line converges
//! geometrically: its error is the aliasing sum Σ_{k≠0} f̂(2πk/h) (Poisson summation), bounded by
//! 2M/(e^{2πa/h} - 1) for any strip half-width a (Trefethen & Weideman, SIAM Rev. 56 (2014),
//! Thm 5.1). The nodes z_j = jh and their α-independent terms are computed once per (q, σ);
//! each order then costs one log-sum-exp over its nodes.
//!
//! Per-order error estimate: the eight interleaved sub-rules of step 8h (j ≡ r mod 8) differ
//! only through the aliases, and their discrete Fourier transform over r gives |f̂(πm/(4h))|
//! for m = 2, 3 free of phase cancellations. Extrapolating that decay geometrically to
//! f̂(2π/h) = f̂(8π/(4h)), with four powers of the decay ratio where the geometric model gives
//! six (a 1/ratio² safety margin), bounds the discretisation error; rigorous Gaussian envelopes
//! bound the truncated tails. An order whose estimate exceeds [`TOLERANCE`] is left to the
//! adaptive quadrature (`None`).

use super::poisson_gaussian::{Mixture, NodeTerms};
use crate::numeric::{log_add, log_normal_cdf};

/// Relative tolerance on A - 1 for accepting the trapezoidal value (the adaptive quadrature
/// it replaces works to 1e-12).
const TOLERANCE: f64 = 1e-13;
/// Nodes reach this many σ below 0: Φ(-10) = 7.6e-24.
const REACH: f64 = 10.0;
/// Orders needing more nodes than this go straight to the adaptive quadrature.
pub(super) const MAX_NODES: i64 = 4096;
/// Target log error of the a-priori step choice, ln(1e-17).
const TARGET_LOG_ERROR: f64 = 39.0;
/// Largest step in units of σ: keeps the step-8h sub-rules fine enough that their aliases
/// resolve the Gaussian decay of f̂ (the error estimate needs |f̂| at two frequencies).
const MAX_ETA: f64 = 0.42;
/// The sub-rules have step 8h; the node ranges are aligned to it.
const PHASES: i64 = 8;

/// (cos, sin) of 2πk/8, k = 0..7.
const EIGHTH_ROOTS: [(f64, f64); 8] = {
    let h = std::f64::consts::FRAC_1_SQRT_2;
    [
        (1.0, 0.0),
        (h, h),
        (0.0, 1.0),
        (-h, h),
        (-1.0, 0.0),
        (-h, -h),
        (0.0, -1.0),
        (h, -h),
    ]
};

/// Step h for noise σ: minimises e^{t²/2 - 2πt/η} (the Gaussian's growth e^{y²/(2σ²)} at height
/// y = tσ times the strip factor e^{-2πy/h}, η = h/σ) over t below 0.9 of the branch-point
/// distance πσ, and picks η so the minimum is e^{-39}.
fn step(sigma: f64) -> f64 {
    let usable = 0.9 * std::f64::consts::PI * sigma;
    let unconstrained = std::f64::consts::PI * (2.0 / TARGET_LOG_ERROR).sqrt();
    let eta = if 2.0 * std::f64::consts::PI / unconstrained <= usable {
        unconstrained
    } else {
        2.0 * std::f64::consts::PI * usable / (0.5 * usable * usable + TARGET_LOG_ERROR)
    };
    eta.min(MAX_ETA) * sigma
}

/// Upper end of order α's nodes: c σ above max(α, 2), where Φ(-c) <= 1e-15 · 2^-α leaves
/// room for the 2^α of the upper tail envelope (`log_tail_bound`).
fn upper_reach(sigma: f64, alpha: f64) -> f64 {
    let c = (2.0 * (36.0 + alpha * std::f64::consts::LN_2))
        .sqrt()
        .max(REACH);
    alpha.max(2.0) + c * sigma
}

/// Node index range [lo, hi) of order α, aligned to [`PHASES`].
fn node_range(sigma: f64, h: f64, alpha: f64) -> (i64, i64) {
    let lo = (-REACH * sigma / h).floor() as i64;
    let hi = (upper_reach(sigma, alpha) / h).ceil() as i64 + 1;
    (
        lo.div_euclid(PHASES) * PHASES,
        -((-hi).div_euclid(PHASES)) * PHASES,
    )
}

/// True when the shared grid would evaluate order α (few enough nodes).
pub(super) fn covers(sigma: f64, alpha: f64) -> bool {
    let h = step(sigma);
    if !(h > 0.0 && h.is_finite()) {
        return false;
    }
    let span = (upper_reach(sigma, alpha) + REACH * sigma) / h;
    if !(span < MAX_NODES as f64) {
        return false;
    }
    let (lo, hi) = node_range(sigma, h, alpha);
    hi - lo <= MAX_NODES
}

/// The shared nodes of one (q, σ) for orders up to some α_max.
pub(super) struct SharedNodes {
    mixture: Mixture,
    q: f64,
    sigma: f64,
    h: f64,
    /// Index j of `nodes[0]` (z = jh).
    first: i64,
    nodes: Vec<NodeTerms>,
}

impl SharedNodes {
    /// Nodes for every order α <= `max_alpha` that [`covers`] accepts.
    pub(super) fn new(q: f64, sigma: f64, max_alpha: f64) -> Self {
        let mixture = Mixture::new(q, sigma);
        let h = step(sigma);
        let (first, last) = node_range(sigma, h, max_alpha);
        let nodes = (first..last).map(|j| mixture.node(j as f64 * h)).collect();
        SharedNodes {
            mixture,
            q,
            sigma,
            h,
            first,
            nodes,
        }
    }

    /// log(A_α - 1), or `None` where the error estimate exceeds the tolerance (or the grid
    /// does not reach α). `buffer` is scratch space reused across orders.
    pub(super) fn log_a_minus_1(&self, alpha: f64, buffer: &mut Vec<f64>) -> Option<f64> {
        let (lo, hi) = node_range(self.sigma, self.h, alpha);
        if lo < self.first || hi > self.first + self.nodes.len() as i64 {
            return None;
        }
        let ln_alpha = alpha.ln();
        let nodes = &self.nodes[(lo - self.first) as usize..(hi - self.first) as usize];
        buffer.clear();
        buffer.extend(
            nodes
                .iter()
                .map(|node| self.mixture.log_value(node, alpha, ln_alpha)),
        );
        let max = buffer.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return None;
        }
        // Phase sums s_r = Σ_{j ≡ r mod 8} e^{l_j - max}; lo is a multiple of 8.
        let mut phase = [0.0; PHASES as usize];
        for chunk in buffer.chunks_exact(PHASES as usize) {
            for (s, l) in phase.iter_mut().zip(chunk) {
                *s += (l - max).exp();
            }
        }
        let total: f64 = phase.iter().sum();
        let log_value = max + (self.h * total).ln();
        // |Σ_r s_r e^{-iπmr/4}| / Σ_r s_r = |f̂(πm/(4h))| / T (leading alias of class m).
        let alias = |m: usize| -> f64 {
            let (mut re, mut im) = (0.0, 0.0);
            for (r, s) in phase.iter().enumerate() {
                let (cos, sin) = EIGHTH_ROOTS[(m * r) % 8];
                re += s * cos;
                im -= s * sin;
            }
            re.hypot(im) / total
        };
        let (a2, a3) = (alias(2), alias(3));
        let ratio = if a2 > 0.0 { (a3 / a2).min(1.0) } else { 1.0 };
        let discretisation = 2.0 * a3 * ratio.powi(4);
        let tails = (self.log_tail_bound(alpha, ln_alpha, lo, hi) - log_value).exp();
        let estimate = discretisation + tails;
        (estimate <= TOLERANCE && log_value.is_finite()).then_some(log_value)
    }

    /// log of a bound on the integrand's (and the node sum's) mass outside [lo h, (hi-1) h].
    /// Below z = lo h < 1/2: u ∈ (-q, 0) and g(u) = (1+u)^α - 1 - αu decreases in u, so
    /// f <= g(-q) φ_σ(z). Above R = (hi-1) h (x > 0, so 0 <= u <= q e^x and 1 + u <= e^x):
    /// (a) g <= (1+u)^α <= e^{αx}, and <= (2q)^α e^{αx} once q e^x >= 1 - q;
    /// (b) g = C(α,2)(1+ξ)^{α-2} u² for some ξ ∈ (0, u) (Taylor), so g <= C(α,2) q² e^{βx}
    /// with β = max(α, 2). With φ_σ(z) e^{βx} = e^{(β²-β)/(2σ²)} φ_σ(z - β) and R >= β, the
    /// envelopes decrease beyond the range, so they bound the node sums as well as the integrals.
    fn log_tail_bound(&self, alpha: f64, ln_alpha: f64, lo: i64, hi: i64) -> f64 {
        let (q, sigma) = (self.q, self.sigma);
        let inv_two_var = 1.0 / (2.0 * sigma * sigma);
        let left = self.mixture.log_excess_at_lower_limit(alpha, ln_alpha)
            + log_normal_cdf(lo as f64 * self.h / sigma);
        let edge = (hi - 1) as f64 * self.h;
        let split = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
        let sampling = if edge >= split && 2.0 * q < 1.0 {
            alpha * (2.0 * q).ln()
        } else {
            0.0
        };
        let power = (alpha * alpha - alpha) * inv_two_var
            + sampling
            + log_normal_cdf(-(edge - alpha) / sigma);
        let beta = alpha.max(2.0);
        let taylor = (0.5 * alpha * (alpha - 1.0)).ln()
            + 2.0 * q.ln()
            + (beta * beta - beta) * inv_two_var
            + log_normal_cdf(-(edge - beta) / sigma);
        log_add(left, power.min(taylor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdp::poisson_gaussian::{log_a_minus_1_integer, log_a_minus_1_quadrature};

    /// |a - b| / max(|b|, 1) of two log(A - 1) values (as in poisson_gaussian.rs' tests).
    fn log_relative(a: f64, b: f64) -> f64 {
        ((a - b) / b.abs().max(1.0)).abs()
    }

    #[test]
    fn shared_nodes_agree_with_the_adaptive_quadrature_and_the_integer_sum() {
        let mut buffer = Vec::new();
        let (mut accepted, mut total) = (0, 0);
        for &sigma in &[0.3, 0.5, 1.0, 2.3, 7.0, 50.0] {
            for &q in &[1e-6, 1e-4, 0.01, 0.2, 0.5, 0.99, 1.0 - 1e-9] {
                let nodes = SharedNodes::new(q, sigma, 40.0);
                for &alpha in &[1.01, 1.1, 1.5, 2.0, 2.7, 3.0, 5.5, 8.0, 10.9, 17.3, 40.0] {
                    if !covers(sigma, alpha) {
                        continue;
                    }
                    total += 1;
                    let Some(fast) = nodes.log_a_minus_1(alpha, &mut buffer) else {
                        continue;
                    };
                    accepted += 1;
                    let reference = if alpha.fract() == 0.0 {
                        log_a_minus_1_integer(q, sigma, alpha as u64)
                    } else {
                        log_a_minus_1_quadrature(q, sigma, alpha).unwrap()
                    };
                    let bound = if alpha.fract() == 0.0 { 1e-13 } else { 1e-11 };
                    assert!(
                        log_relative(fast, reference) <= bound,
                        "q={q} sigma={sigma} alpha={alpha}: {fast} vs {reference}"
                    );
                }
            }
        }
        // The rule is meant to carry the grid: nearly every order must be accepted.
        assert!(accepted * 10 >= total * 9, "{accepted} of {total} accepted");
    }

    #[test]
    fn too_coarse_a_step_is_refused_not_returned() {
        // The same estimate on a grid four times coarser than the a-priori step: the error
        // estimate must refuse (the caller then falls back to the adaptive quadrature) rather
        // than return a value outside the tolerance.
        let mut buffer = Vec::new();
        let mut refused = 0;
        for &(q, sigma, alpha) in &[(0.01, 1.0, 2.5), (0.3, 0.5, 4.5), (1e-4, 3.0, 1.5)] {
            let mut nodes = SharedNodes::new(q, sigma, alpha);
            let coarse = 4.0 * nodes.h;
            let (first, last) = node_range(sigma, coarse, alpha);
            nodes.h = coarse;
            nodes.first = first;
            nodes.nodes = (first..last)
                .map(|j| nodes.mixture.node(j as f64 * coarse))
                .collect();
            let reference = log_a_minus_1_quadrature(q, sigma, alpha).unwrap();
            match nodes.log_a_minus_1(alpha, &mut buffer) {
                None => refused += 1,
                Some(value) => assert!(
                    log_relative(value, reference) <= 1e-12,
                    "accepted {value} vs {reference} at q={q} sigma={sigma} alpha={alpha}"
                ),
            }
            // And the public entry point still returns the adaptive value there.
            let rdp = crate::rdp::poisson_subsampled_gaussian_rdp(q, sigma, alpha).unwrap();
            let want = crate::numeric::log1p_exp(reference) / (alpha - 1.0);
            assert!(((rdp - want) / want).abs() <= 1e-12, "{rdp} vs {want}");
        }
        assert_eq!(refused, 3);
    }

    #[test]
    fn very_small_noise_is_left_to_the_adaptive_quadrature() {
        // σ = 0.01: the branch points sit 3e-4 from the real line; the node count exceeds the cap.
        assert!(!covers(0.01, 5.5));
        assert!(covers(1.0, 10.9));
    }
}
