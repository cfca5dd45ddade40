//! RDP of the Gaussian mechanism on fixed-size batches sampled without replacement
//! (replace-one adjacency): Wang, Balle & Kasiviswanathan 2019 (arXiv:1808.00087) Theorem 27,
//! specialised to the Gaussian with ε_G(j) = j/(2σ²) and cgf(x) = x(x+1)/(2σ²), as in
//! dp-accounting 0.6.0 `_compute_rdp_sample_wor_gaussian`. All values are upper bounds.
//! Fractional orders interpolate the CGF linearly between ⌊α⌋ and ⌈α⌉ (WBK19 Cor. 10).

use crate::error::{check_noise_multiplier, check_order, check_sampling_rate, Result};
use crate::numeric::{log_abs_binomial, log_add};

/// Orders above this use only the 2e^{cgf(j-1)} branch (dp-accounting's `max_alpha`).
const MAX_EXACT_ORDER: u64 = 256;
/// Thm 27's sum has α terms; above this order the unsampled Gaussian's α/(2σ²) is returned
/// instead (a valid upper bound: Rényi divergence is jointly quasi-convex and every pair of
/// batches differs in at most one replaced record).
pub const MAX_SUM_ORDER: f64 = 65_536.0;

/// One-step RDP at `order` for a batch fraction q = m/n of the Gaussian with noise σ.
pub fn fixed_batch_gaussian_rdp(
    sampling_rate: f64,
    noise_multiplier: f64,
    order: f64,
) -> Result<f64> {
    check_sampling_rate(sampling_rate)?;
    check_noise_multiplier(noise_multiplier)?;
    check_order(order)?;
    if sampling_rate == 0.0 || noise_multiplier == f64::INFINITY {
        return Ok(0.0);
    }
    // σ² underflowing to 0 is σ = 0 for every formula below.
    if order == f64::INFINITY || noise_multiplier * noise_multiplier == 0.0 {
        return Ok(f64::INFINITY);
    }
    if sampling_rate == 1.0 || order > MAX_SUM_ORDER {
        return Ok(order / (2.0 * noise_multiplier * noise_multiplier));
    }
    if order.fract() == 0.0 {
        return Ok(log_a_integer(sampling_rate, noise_multiplier, order as u64) / (order - 1.0));
    }
    let floor = order.floor();
    let ceil = order.ceil();
    let low = log_a_integer(sampling_rate, noise_multiplier, floor as u64);
    let high = log_a_integer(sampling_rate, noise_multiplier, ceil as u64);
    let t = order - floor;
    Ok(((1.0 - t) * low + t * high) / (order - 1.0))
}

/// A value in log-magnitude/sign form.
#[derive(Clone, Copy)]
struct Signed {
    log_magnitude: f64,
    positive: bool,
}

/// log(e^a - e^b) with its sign (dp-accounting `_log_sub_sign`).
fn log_sub_sign(a: f64, b: f64) -> Signed {
    if a > b {
        Signed {
            log_magnitude: a + (-(b - a).exp()).ln_1p(),
            positive: true,
        }
    } else if a < b {
        Signed {
            log_magnitude: b + (-(a - b).exp()).ln_1p(),
            positive: false,
        }
    } else {
        Signed {
            log_magnitude: f64::NEG_INFINITY,
            positive: true,
        }
    }
}

/// log|Δ^i f(0)| for f(x) = exp(cgf(x)) prefixed as in dp-accounting `_get_forward_diffs`.
fn forward_differences(sigma: f64, n: usize) -> Vec<f64> {
    let cgf = |x: f64| x * (x + 1.0) / (2.0 * sigma * sigma);
    let mut values: Vec<Signed> = (0..n + 3)
        .map(|i| Signed {
            log_magnitude: if i == 0 { 0.0 } else { cgf(i as f64 - 1.0) },
            positive: true,
        })
        .collect();
    let mut deltas = vec![0.0; n + 2];
    for (i, delta) in deltas.iter_mut().enumerate() {
        let count = n + 2 - i;
        for j in 0..count {
            let (here, next) = (values[j], values[j + 1]);
            values[j] = if here.positive == next.positive {
                let mut d = log_sub_sign(next.log_magnitude, here.log_magnitude);
                if !next.positive {
                    d.positive = !d.positive;
                }
                d
            } else {
                Signed {
                    log_magnitude: log_add(here.log_magnitude, next.log_magnitude),
                    positive: next.positive,
                }
            };
        }
        *delta = values[0].log_magnitude;
    }
    deltas
}

/// log A_α of WBK19 Thm 27 for integer α (`_compute_rdp_sample_wor_gaussian_int`).
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    if alpha == 1 {
        return 0.0;
    }
    let cgf = |x: f64| x * (x + 1.0) / (2.0 * sigma * sigma);
    let gaussian_rdp = |x: f64| x / (2.0 * sigma * sigma);
    let a = alpha as f64;
    let ln_q = q.ln();
    let ln4 = 4.0_f64.ln();
    let ln2 = std::f64::consts::LN_2;
    let log_f2_minus_1 = gaussian_rdp(2.0) + (-(-gaussian_rdp(2.0)).exp()).ln_1p();
    let second =
        2.0 * ln_q + log_abs_binomial(a, 2.0) + (ln4 + log_f2_minus_1).min(gaussian_rdp(2.0) + ln2);
    let mut log_a = log_add(0.0, second);
    let deltas = if alpha <= MAX_EXACT_ORDER {
        forward_differences(sigma, alpha as usize)
    } else {
        Vec::new()
    };
    for i in 3..=alpha {
        let fi = i as f64;
        let mut s = ln2 + cgf(fi - 1.0);
        if alpha <= MAX_EXACT_ORDER {
            let lo = deltas[(2.0 * (fi / 2.0).floor()) as usize - 1];
            let hi = deltas[(2.0 * (fi / 2.0).ceil()) as usize - 1];
            s = s.min(ln4 + 0.5 * (lo + hi));
        }
        log_a = log_add(log_a, s + fi * ln_q + log_abs_binomial(a, fi));
    }
    log_a
}
