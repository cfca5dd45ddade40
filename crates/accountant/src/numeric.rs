//! Log-space arithmetic and special functions shared by the accountants.

use statrs::function::erf::erfc;

/// ln(2π)/2.
pub(crate) const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// log(e^a + e^b) without overflow; -inf is the log of zero.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    if low == f64::NEG_INFINITY || high == f64::INFINITY {
        return high;
    }
    high + (low - high).exp().ln_1p()
}

/// log(Σ e^{x_i}) with a max shift; -inf for an empty or all -inf input.
pub(crate) fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max.is_infinite() {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// log(|e^a - e^b|), -inf when a == b.
pub(crate) fn log_abs_diff(a: f64, b: f64) -> f64 {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    if high == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    high + (-(low - high).exp_m1()).ln()
}

/// log(e^y - 1) for y > 0, accurate for small and large y.
pub(crate) fn log_expm1(y: f64) -> f64 {
    y + (-(-y).exp_m1()).ln()
}

/// log(1 + e^x), accurate for both signs of x.
pub(crate) fn log1p_exp(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// ln Φ(x) of the standard normal CDF, accurate far into the lower tail.
pub(crate) fn log_normal_cdf(x: f64) -> f64 {
    if x > -30.0 {
        (0.5 * erfc(-x / std::f64::consts::SQRT_2)).ln()
    } else {
        // Asymptotic series Φ(x) = φ(x)/|x| (1 - 1/x² + 3/x⁴ - 15/x⁶ + 105/x⁸ ...).
        let inv_x2 = 1.0 / (x * x);
        let series = 1.0 - inv_x2 * (1.0 - inv_x2 * (3.0 - inv_x2 * (15.0 - 105.0 * inv_x2)));
        -0.5 * x * x - (-x).ln() - HALF_LN_2PI + series.ln()
    }
}

/// Φ(x), the standard normal CDF.
pub(crate) fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// ln Γ(x) for x > 0 (statrs' Lanczos approximation).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    statrs::function::gamma::ln_gamma(x)
}

/// log |C(n, k)| for real n, k through ln Γ (dp-accounting's `_log_comb`), using
/// the reflection formula where n - k + 1 <= 0.
pub(crate) fn log_abs_binomial(n: f64, k: f64) -> f64 {
    let m = n - k + 1.0;
    let log_gamma_m = if m > 0.0 {
        ln_gamma(m)
    } else {
        // |Γ(m)| = π / (|sin(π m)| Γ(1 - m)).
        std::f64::consts::PI.ln() - (std::f64::consts::PI * m).sin().abs().ln() - ln_gamma(1.0 - m)
    };
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - log_gamma_m
}

/// e^y - 1 - y, accurate for small |y| (Taylor series) and large y.
pub(crate) fn expm1_minus_x(y: f64) -> f64 {
    if y.abs() < 0.5 {
        let mut term = y * y / 2.0;
        let mut sum = term;
        let mut k = 3.0;
        while term.abs() > 1e-18 * sum.abs() {
            term *= y / k;
            sum += term;
            k += 1.0;
        }
        sum
    } else {
        y.exp_m1() - y
    }
}

/// ln(1 + u) - u given ln(1 + u), accurate for small |u| (series) and otherwise direct.
pub(crate) fn log1p_minus_x(u: f64, log1p_u: f64) -> f64 {
    if u.abs() < 0.1 {
        // -u²/2 + u³/3 - u⁴/4 + ...
        let mut power = u * u;
        let mut sum = -power / 2.0;
        let mut k = 3.0;
        let mut sign = 1.0;
        loop {
            power *= u;
            let term = sign * power / k;
            sum += term;
            if term.abs() <= 1e-18 * sum.abs() {
                break;
            }
            sign = -sign;
            k += 1.0;
        }
        sum
    } else {
        log1p_u - u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_add_and_sum_agree_with_direct_sums() {
        assert!((log_add(1.0_f64.ln(), 2.0_f64.ln()) - 3.0_f64.ln()).abs() < 1e-15);
        assert_eq!(log_add(f64::NEG_INFINITY, 0.5), 0.5);
        assert!((log_sum_exp(&[0.0, 0.0, 0.0]) - 3.0_f64.ln()).abs() < 1e-15);
        assert!((log_abs_diff(3.0_f64.ln(), 1.0_f64.ln()) - 2.0_f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn series_branches_match_direct_formulas_at_the_switch() {
        for &y in &[0.49_f64, -0.49, 0.3] {
            let direct: f64 = y.exp_m1() - y;
            assert!((expm1_minus_x(y) - direct).abs() < 1e-15 * direct.abs() * 100.0);
        }
        for &u in &[0.099_f64, -0.099] {
            let l: f64 = u.ln_1p();
            assert!((log1p_minus_x(u, l) - (l - u)).abs() < 1e-12 * (l - u).abs());
        }
    }

    #[test]
    fn log_normal_cdf_is_continuous_at_the_asymptotic_switch() {
        let a = log_normal_cdf(-30.0 + 1e-9);
        let b = log_normal_cdf(-30.0 - 1e-9);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        // Φ(0) = 1/2.
        assert!((log_normal_cdf(0.0) - 0.5_f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn generalized_binomial_matches_integer_binomials() {
        assert!((log_abs_binomial(10.0, 3.0) - 120.0_f64.ln()).abs() < 1e-12);
        // C(1.5, 3) = 1.5*0.5*(-0.5)/6 = -0.0625.
        assert!((log_abs_binomial(1.5, 3.0) - 0.0625_f64.ln()).abs() < 1e-12);
    }
}
