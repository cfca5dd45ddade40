//! Exact RDP of the Poisson-subsampled Gaussian mechanism (add/remove-one adjacency).
//!
//! MTZ19 (Mironov, Talwar & Zhang, arXiv:1908.10530): RDP(α) = log(A_α)/(α - 1) with
//! A_α = E_{z~N(0,σ²)}[(1 - q + q·exp((2z - 1)/(2σ²)))^α].
//!
//! * Integer α: A_α - 1 = Σ_{k=2..α} C(α,k)(1-q)^(α-k) q^k expm1((k² - k)/(2σ²)), a sum of
//!   positive terms summed in log space (docs/accountant.md §4.2), then log A = log1p(A - 1).
//! * Fractional α: A_α - 1 = ∫ φ_σ(z)[r^α - 1 - α(r - 1)] dz with r = 1 + q·expm1((2z-1)/(2σ²))
//!   (E[r] = 1, so the subtracted terms integrate to 0). The integrand is non-negative, so
//!   adaptive quadrature in log space has no cancellation (docs/accountant.md §5.2).

use super::trapezoid::{self, SharedNodes};
use crate::error::{
    check_noise_multiplier, check_order, check_sampling_rate, AccountantError, Result,
};
use crate::numeric::{
    expm1_minus_x, log1p_exp, log1p_minus_x, log_abs_binomial, log_add, log_expm1, HALF_LN_2PI,
};
use crate::quadrature::integrate_log;

/// Largest integer order evaluated by the finite sum; larger ones use the quadrature.
const MAX_SUM_ORDER: f64 = 20_000.0;
/// Relative tolerance on A - 1 of the quadrature (|K15 - G7| estimate, conservative).
const QUADRATURE_TOLERANCE: f64 = 1e-12;
/// Cap on the number of quadrature sub-intervals.
const MAX_PIECES: usize = 4000;
/// A closed-form sandwich (see [`closed_form_bound`]) narrower than this, relative to the
/// value, is returned instead of the quadrature (whose own relative tolerance is 1e-12).
const CLOSED_FORM_TOLERANCE: f64 = 1e-12;
/// Largest order the quadrature is run at: beyond it the integrand's support [-40σ, α + 40σ]
/// spans more than f64 resolves around the peak, so the answer must come from the closed form.
pub const MAX_QUADRATURE_ORDER: f64 = 1e15;

/// A closed-form value of the one-step RDP when its bracket is narrower than
/// [`CLOSED_FORM_TOLERANCE`] (huge orders, tiny σ); returns the bracket's upper end.
///
/// * Upper, any real α: ε(α) <= α/(2σ²), the unsampled Gaussian (Rényi divergence is jointly
///   quasi-convex, and the subsampled pair is a mixture of the identical pair and the Gaussian's).
/// * Lower, any real α: (1 - q + q e^x)^α >= q^α e^{αx} with x = (2z-1)/(2σ²), and
///   E[e^{αz/σ²}] = e^{α²/(2σ²)}, so log A_α >= ℓ = α ln q + α(α-1)/(2σ²).
/// * Integer α: A_α = Σ_k w_k with w_k = C(α,k)(1-q)^(α-k) q^k e^{(k²-k)/(2σ²)} (MTZ19); for
///   j >= 1, w_{α-j}/w_α <= x^j/j! with x = α (1-q)/q · e^{-(α-1)/(2σ²)}, so
///   log A_α <= ℓ + x: the top term alone is exact to x/(α-1).
fn closed_form_bound(q: f64, sigma: f64, order: f64) -> Option<f64> {
    let inv_two_var = 1.0 / (2.0 * sigma * sigma);
    let gaussian = order * inv_two_var;
    if gaussian == f64::INFINITY {
        // Both ends exceed f64's range.
        return Some(f64::INFINITY);
    }
    let lower = gaussian + order / (order - 1.0) * q.ln();
    if lower > 0.0 && gaussian - lower <= CLOSED_FORM_TOLERANCE * lower {
        return Some(gaussian);
    }
    if order.fract() == 0.0 && lower > 0.0 {
        let ln_x = order.ln() + ((1.0 - q) / q).ln() - (order - 1.0) * inv_two_var;
        let gap = (ln_x - (order - 1.0).ln()).exp();
        if gap <= CLOSED_FORM_TOLERANCE * lower {
            return Some((lower + gap).min(gaussian));
        }
    }
    None
}

/// Exact one-step RDP ε(α) of the Poisson-subsampled Gaussian. Special cases as in every
/// library: q = 0 gives 0; σ = 0 (q > 0) or α = ∞ gives ∞; q = 1 gives α/(2σ²).
pub fn poisson_subsampled_gaussian_rdp(
    sampling_rate: f64,
    noise_multiplier: f64,
    order: f64,
) -> Result<f64> {
    Ok(poisson_subsampled_gaussian_rdp_curve(sampling_rate, noise_multiplier, &[order])?[0])
}

/// [`poisson_subsampled_gaussian_rdp`] at every order of `orders`, sharing the quadrature
/// nodes of the fractional orders (trapezoid.rs). Each value is bit-identical to the
/// single-order call: an order's nodes and summation order do not depend on the other orders.
pub fn poisson_subsampled_gaussian_rdp_curve(
    sampling_rate: f64,
    noise_multiplier: f64,
    orders: &[f64],
) -> Result<Vec<f64>> {
    check_sampling_rate(sampling_rate)?;
    check_noise_multiplier(noise_multiplier)?;
    for &order in orders {
        check_order(order)?;
    }
    let (q, sigma) = (sampling_rate, noise_multiplier);
    if q == 0.0 || sigma == f64::INFINITY {
        return Ok(vec![0.0; orders.len()]);
    }
    // σ² underflowing to 0 is σ = 0 for every formula below.
    let sigma_zero = sigma * sigma == 0.0;
    let closed_form = |order: f64| -> Option<f64> {
        if order == f64::INFINITY || sigma_zero {
            Some(f64::INFINITY)
        } else if q == 1.0 {
            Some(order / (2.0 * sigma * sigma))
        } else {
            closed_form_bound(q, sigma, order)
        }
    };
    if let Some(&order) = orders.iter().find(|&&a| {
        a > MAX_QUADRATURE_ORDER
            && !(a.fract() == 0.0 && a <= MAX_SUM_ORDER)
            && closed_form(a).is_none()
    }) {
        // ℓ's bracket narrows once α >= 2σ²|ln q| / tolerance (or, for integer α, once
        // α ≳ 2σ² ln(α(1-q)/q)); report the first such order the caller can use instead.
        let needed = 2.0 * sigma * sigma * q.ln().abs() / CLOSED_FORM_TOLERANCE;
        return Err(AccountantError::TooExpensive {
            what: format!("the RDP of the Poisson-subsampled Gaussian at order {order} (q = {q}, sigma = {sigma})"),
            cost: format!("order {order} is beyond the quadrature's range and the closed form's bracket is wider than {CLOSED_FORM_TOLERANCE:e} relative"),
            limit: format!("order {MAX_QUADRATURE_ORDER:e} for the quadrature"),
            hint: format!("; orders <= {MAX_QUADRATURE_ORDER:e}, or >= {needed:e} (closed form), are answered"),
        });
    }
    let summed = |order: f64| order.fract() == 0.0 && order <= MAX_SUM_ORDER;
    let shared = |order: f64| {
        closed_form(order).is_none() && !summed(order) && trapezoid::covers(sigma, order)
    };
    let max_shared = orders
        .iter()
        .copied()
        .filter(|&a| shared(a))
        .fold(f64::NEG_INFINITY, f64::max);
    let nodes = (max_shared > 1.0).then(|| SharedNodes::new(q, sigma, max_shared));
    let mut buffer = Vec::new();
    orders
        .iter()
        .map(|&order| {
            if let Some(value) = closed_form(order) {
                return Ok(value);
            }
            let log_a_minus_1 = if summed(order) {
                log_a_minus_1_integer(q, sigma, order as u64)
            } else {
                let fast = nodes
                    .as_ref()
                    .filter(|_| shared(order))
                    .and_then(|n| n.log_a_minus_1(order, &mut buffer));
                match fast {
                    Some(value) => value,
                    None => match log_a_minus_1_quadrature(q, sigma, order) {
                        Ok(value) => value,
                        // Tiny σ: the integrand is a spike the quadrature cannot resolve, but
                        // then the closed-form bracket is narrow; its upper end is returned.
                        Err(err) => return loose_upper_bound(q, sigma, order).ok_or(err),
                    },
                }
            };
            Ok(log1p_exp(log_a_minus_1) / (order - 1.0))
        })
        .collect()
}

/// Largest relative width of the closed-form bracket accepted where the quadrature fails.
const LOOSE_TOLERANCE: f64 = 1e-3;

/// The upper end α/(2σ²) of [`closed_form_bound`]'s bracket when the bracket is narrower than
/// [`LOOSE_TOLERANCE`] relative: a valid upper bound that exceeds the exact value by at most
/// α|ln q|/(α - 1). Used only where the quadrature did not converge (σ far below 1).
fn loose_upper_bound(q: f64, sigma: f64, order: f64) -> Option<f64> {
    let gaussian = order / (2.0 * sigma * sigma);
    let lower = gaussian + order / (order - 1.0) * q.ln();
    (lower > 0.0 && gaussian - lower <= LOOSE_TOLERANCE * lower).then_some(gaussian)
}

/// log(A_α - 1) for integer α >= 2 by the positive-term sum (§4.2 of docs/accountant.md).
pub(super) fn log_a_minus_1_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let inv_two_var = 1.0 / (2.0 * sigma * sigma);
    let a = alpha as f64;
    // log C(α, k) by the recurrence C(α,k) = C(α,k-1)(α-k+1)/k, starting at C(α,1) = α.
    let mut log_binomial = a.ln();
    let mut total = f64::NEG_INFINITY;
    for k in 2..=alpha {
        let kf = k as f64;
        log_binomial += ((a - kf + 1.0) / kf).ln();
        let term =
            log_binomial + kf * ln_q + (a - kf) * ln_1mq + log_expm1((kf * kf - kf) * inv_two_var);
        total = log_add(total, term);
    }
    total
}

/// The (q, σ)-dependent parts of the quadrature integrand φ_σ(z)[r^α - 1 - α(r - 1)], split so
/// that the z-dependent terms ([`NodeTerms`]) can be shared by every order α.
pub(super) struct Mixture {
    sampling_rate: f64,
    ln_q: f64,
    inv_two_var: f64,
    ln_normaliser: f64,
}

/// The α-independent terms of the integrand at one point z (x = (2z-1)/(2σ²), u = q·expm1(x)).
#[derive(Clone, Copy, Debug)]
pub(super) struct NodeTerms {
    /// log φ_σ(z).
    log_density: f64,
    /// x > 40: u ≈ q e^x may overflow, so only ln u and ln(1+u) are kept.
    large: bool,
    /// ln u (NaN where u <= 0; only read where u > 0).
    ln_u: f64,
    /// ln(1 + u).
    log1p_u: f64,
    /// ln(1 + u) - u (unused where `large`).
    log1p_u_minus_u: f64,
}

impl Mixture {
    pub(super) fn new(q: f64, sigma: f64) -> Self {
        Mixture {
            sampling_rate: q,
            ln_q: q.ln(),
            inv_two_var: 1.0 / (2.0 * sigma * sigma),
            ln_normaliser: -(sigma.ln() + HALF_LN_2PI),
        }
    }

    pub(super) fn node(&self, z: f64) -> NodeTerms {
        let log_density = self.ln_normaliser - z * z * self.inv_two_var;
        let x = (2.0 * z - 1.0) * self.inv_two_var;
        if x > 40.0 {
            let ln_u = self.ln_q + x + (-(-x).exp_m1()).ln();
            return NodeTerms {
                log_density,
                large: true,
                ln_u,
                log1p_u: log1p_exp(ln_u),
                log1p_u_minus_u: f64::NAN,
            };
        }
        let u = self.sampling_rate * x.exp_m1();
        let log1p_u = u.ln_1p();
        NodeTerms {
            log_density,
            large: false,
            ln_u: if u > 0.0 { u.ln() } else { f64::NAN },
            log1p_u,
            log1p_u_minus_u: log1p_minus_x(u, log1p_u),
        }
    }

    /// log g(-q), the supremum of g over z < 1/2 (the limit z → -∞).
    pub(super) fn log_excess_at_lower_limit(&self, alpha: f64, ln_alpha: f64) -> f64 {
        let u = -self.sampling_rate;
        let log1p_u = u.ln_1p();
        let node = NodeTerms {
            log_density: 0.0,
            large: false,
            ln_u: f64::NAN,
            log1p_u,
            log1p_u_minus_u: log1p_minus_x(u, log1p_u),
        };
        log_excess(&node, alpha, ln_alpha)
    }

    /// log of the integrand at a node for order α (`ln_alpha` = ln α).
    pub(super) fn log_value(&self, node: &NodeTerms, alpha: f64, ln_alpha: f64) -> f64 {
        node.log_density + log_excess(node, alpha, ln_alpha)
    }
}

/// log g with g(u) = (1+u)^α - 1 - αu.
fn log_excess(node: &NodeTerms, alpha: f64, ln_alpha: f64) -> f64 {
    let alpha_log1p_u = alpha * node.log1p_u;
    if node.large || alpha_log1p_u > 40.0 {
        // (1+u)^α dominates: g = (1+u)^α (1 - (1+αu)(1+u)^-α).
        let ln_linear = log1p_exp(ln_alpha + node.ln_u);
        return alpha_log1p_u + (-(ln_linear - alpha_log1p_u).exp()).ln_1p();
    }
    // g = [expm1(αL) - αL] + α[L - u], both brackets accurate near u = 0.
    let excess = expm1_minus_x(alpha_log1p_u) + alpha * node.log1p_u_minus_u;
    if excess > 0.0 {
        excess.ln()
    } else {
        f64::NEG_INFINITY
    }
}

/// Centre z of the dominant term of the mixture A_α = Σ_k w_k E[N(k, σ²)-shifted] (the
/// integrand is a mixture of Gaussians centred at k = 0..α with weights
/// C(α,k)(1-q)^(α-k) q^k e^{(k²-k)/(2σ²)}); used to place breakpoints.
fn dominant_centre(q: f64, sigma: f64, alpha: f64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let inv_two_var = 1.0 / (2.0 * sigma * sigma);
    let weight = |k: f64| {
        log_abs_binomial(alpha, k) + k * ln_q + (alpha - k) * ln_1mq + (k * k - k) * inv_two_var
    };
    let top = alpha.floor();
    let stride = (top / 2000.0).ceil().max(1.0);
    let mut best = (alpha, weight(alpha));
    let mut k = 0.0;
    while k <= top {
        let w = weight(k);
        if w > best.1 {
            best = (k, w);
        }
        let next = k + stride;
        if next <= k {
            break;
        }
        k = next;
    }
    if stride > 1.0 {
        // Refine around the coarse optimum with at most 4000 more evaluations (a step of 1
        // would take 2·stride, unbounded for huge α).
        let (centre, _) = best;
        let fine = (stride / 2000.0).ceil().max(1.0);
        let mut k = (centre - stride).max(0.0);
        let end = (centre + stride).min(top);
        while k <= end {
            let w = weight(k);
            if w > best.1 {
                best = (k, w);
            }
            let next = k + fine;
            if next <= k {
                break;
            }
            k = next;
        }
    }
    best.0
}

/// log(A_α - 1) by adaptive log-space Gauss–Kronrod quadrature (any real α > 1).
pub(crate) fn log_a_minus_1_quadrature(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    let mixture = Mixture::new(q, sigma);
    let ln_alpha = alpha.ln();
    let reach = 40.0 * sigma + 1.0;
    let lower = -reach;
    let upper = alpha + reach;
    let centre = dominant_centre(q, sigma, alpha);
    // z0: where q e^x = 1 - q (MTZ19 §3.3 split point); 1/2: where r = 1.
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let mut breakpoints = vec![lower, upper, 0.0, 0.5, alpha, centre];
    if z0.is_finite() {
        breakpoints.push(z0);
    }
    for &scale in &[1.0, 2.0, 4.0, 8.0, 16.0] {
        for &c in &[0.0, centre, alpha] {
            breakpoints.push(c - scale * sigma);
            breakpoints.push(c + scale * sigma);
        }
    }
    breakpoints.retain(|b| *b >= lower && *b <= upper);
    breakpoints.sort_by(f64::total_cmp);
    breakpoints.dedup_by(|a, b| (*a - *b).abs() <= 1e-12 * (1.0 + b.abs()));
    let result = integrate_log(
        |z| mixture.log_value(&mixture.node(z), alpha, ln_alpha),
        &breakpoints,
        QUADRATURE_TOLERANCE,
        MAX_PIECES,
        &format!("A_alpha - 1 at q = {q}, sigma = {sigma}, alpha = {alpha}"),
    )?;
    Ok(result.log_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadrature_agrees_with_the_integer_sum() {
        for &(q, sigma, alpha) in &[
            (0.01, 1.0, 2u64),
            (0.1, 0.5, 7),
            (0.5, 2.0, 32),
            (0.001, 50.0, 3),
            (0.9, 0.3, 128),
            (0.2, 0.7, 1024),
        ] {
            let exact = log_a_minus_1_integer(q, sigma, alpha);
            let quad = log_a_minus_1_quadrature(q, sigma, alpha as f64).unwrap();
            let rel = ((quad - exact) / exact.abs().max(1.0)).abs();
            assert!(
                rel < 1e-11,
                "q={q} sigma={sigma} alpha={alpha}: {quad} vs {exact}"
            );
        }
    }
}
