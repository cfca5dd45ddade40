//! Adaptive Gauss–Kronrod (G7/K15) quadrature of a positive integrand given by its logarithm.
//!
//! The integral and every error estimate stay in log space, so integrands whose values span
//! e^-700 … e^(10^6) (large Renyi orders, small noise) neither overflow nor underflow.
//! Node and weight values are the classical 15-point Kronrod extension of the 7-point
//! Gauss–Legendre rule (Piessens et al., QUADPACK, 1983).

use crate::error::{AccountantError, Result};
use crate::numeric::{log_abs_diff, log_sum_exp};

/// Kronrod abscissae on [-1, 1] (non-negative half; index 7 is the centre).
const KRONROD_NODES: [f64; 8] = [
    0.991_455_371_120_812_639_206_854_697_526_329,
    0.949_107_912_342_758_524_526_189_684_047_851,
    0.864_864_423_359_769_072_789_712_788_640_926,
    0.741_531_185_599_394_439_863_864_773_280_788,
    0.586_087_235_467_691_130_294_144_845_693_013,
    0.405_845_151_377_397_166_906_606_412_076_961,
    0.207_784_955_007_898_467_600_689_403_773_245,
    0.0,
];
/// Kronrod weights matching `KRONROD_NODES`.
const KRONROD_WEIGHTS: [f64; 8] = [
    0.022_935_322_010_529_224_963_732_008_058_970,
    0.063_092_092_629_978_553_290_700_663_189_204,
    0.104_790_010_322_250_183_839_876_322_541_518,
    0.140_653_259_715_525_918_745_189_590_510_238,
    0.169_004_726_639_267_902_826_583_426_598_550,
    0.190_350_578_064_785_409_913_256_402_421_014,
    0.204_432_940_075_298_892_414_161_999_234_649,
    0.209_482_141_084_727_828_012_999_174_891_714,
];
/// Gauss weights for the odd Kronrod nodes (indices 1, 3, 5, 7).
const GAUSS_WEIGHTS: [f64; 4] = [
    0.129_484_966_168_869_693_270_611_432_679_082,
    0.279_705_391_489_276_667_901_467_771_423_780,
    0.381_830_050_505_118_944_950_369_775_488_975,
    0.417_959_183_673_469_387_755_102_040_816_327,
];

/// One sub-interval with its log-integral (Kronrod) and log error estimate |K - G|.
/// ln of the Kronrod and Gauss weights, computed once per integral instead of per piece.
struct LogWeights {
    kronrod: [f64; 8],
    gauss: [f64; 4],
}

impl LogWeights {
    fn new() -> Self {
        LogWeights {
            kronrod: KRONROD_WEIGHTS.map(f64::ln),
            gauss: GAUSS_WEIGHTS.map(f64::ln),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Piece {
    left: f64,
    right: f64,
    log_value: f64,
    log_error: f64,
}

fn gauss_kronrod_log(
    log_integrand: &impl Fn(f64) -> f64,
    weights: &LogWeights,
    left: f64,
    right: f64,
) -> Piece {
    let centre = 0.5 * (left + right);
    let half = 0.5 * (right - left);
    let log_half = half.ln();
    let mut kronrod_terms = [f64::NEG_INFINITY; 15];
    let mut gauss_terms = [f64::NEG_INFINITY; 7];
    for i in 0..7 {
        let offset = half * KRONROD_NODES[i];
        let lw = weights.kronrod[i];
        let f_minus = log_integrand(centre - offset);
        let f_plus = log_integrand(centre + offset);
        kronrod_terms[2 * i] = lw + f_minus;
        kronrod_terms[2 * i + 1] = lw + f_plus;
        if i % 2 == 1 {
            let gw = weights.gauss[i / 2];
            gauss_terms[i - 1] = gw + f_minus;
            gauss_terms[i] = gw + f_plus;
        }
    }
    let f_centre = log_integrand(centre);
    kronrod_terms[14] = weights.kronrod[7] + f_centre;
    gauss_terms[6] = weights.gauss[3] + f_centre;
    let log_kronrod = log_sum_exp(&kronrod_terms) + log_half;
    let log_gauss = log_sum_exp(&gauss_terms) + log_half;
    Piece {
        left,
        right,
        log_value: log_kronrod,
        log_error: log_abs_diff(log_kronrod, log_gauss),
    }
}

/// Result of a log-space integration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogIntegral {
    /// log of the integral.
    pub log_value: f64,
    /// log of the (conservative) absolute error estimate.
    #[allow(dead_code)]
    pub log_error: f64,
}

/// Integrates exp(log_integrand) over [breakpoints[0], breakpoints[last]] adaptively until the
/// summed |K15 - G7| estimate is below `relative_tolerance` times the integral.
/// `breakpoints` must be sorted; each initial interval is refined separately.
pub(crate) fn integrate_log(
    log_integrand: impl Fn(f64) -> f64,
    breakpoints: &[f64],
    relative_tolerance: f64,
    max_pieces: usize,
    what: &str,
) -> Result<LogIntegral> {
    let weights = LogWeights::new();
    let mut pieces: Vec<Piece> = breakpoints
        .windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| gauss_kronrod_log(&log_integrand, &weights, w[0], w[1]))
        .collect();
    let log_tolerance = relative_tolerance.ln();
    let mut values = Vec::with_capacity(max_pieces);
    let mut errors = Vec::with_capacity(max_pieces);
    loop {
        values.clear();
        errors.clear();
        values.extend(pieces.iter().map(|p| p.log_value));
        errors.extend(pieces.iter().map(|p| p.log_error));
        let log_value = log_sum_exp(&values);
        let log_error = log_sum_exp(&errors);
        if log_value.is_nan() || log_error.is_nan() {
            return Err(AccountantError::QuadratureNotConverged {
                what: what.to_string(),
                relative_error: f64::NAN,
                intervals: pieces.len(),
            });
        }
        if log_error <= log_tolerance + log_value || log_value == f64::NEG_INFINITY {
            return Ok(LogIntegral {
                log_value,
                log_error,
            });
        }
        let worst = pieces
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.log_error.total_cmp(&b.1.log_error))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let piece = pieces[worst];
        let middle = 0.5 * (piece.left + piece.right);
        if pieces.len() >= max_pieces || middle <= piece.left || middle >= piece.right {
            return Err(AccountantError::QuadratureNotConverged {
                what: what.to_string(),
                relative_error: (log_error - log_value).exp(),
                intervals: pieces.len(),
            });
        }
        pieces[worst] = gauss_kronrod_log(&log_integrand, &weights, piece.left, middle);
        pieces.push(gauss_kronrod_log(
            &log_integrand,
            &weights,
            middle,
            piece.right,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kronrod_rule_is_exact_for_polynomials_up_to_degree_22() {
        // ∫_0^1 x^d dx = 1/(d+1); one K15 piece on [0, 1] must be exact to rounding.
        for degree in 0..=22 {
            let piece = gauss_kronrod_log(
                &|x: f64| degree as f64 * x.ln(),
                &LogWeights::new(),
                0.0,
                1.0,
            );
            let exact = 1.0 / (degree as f64 + 1.0);
            let got = piece.log_value.exp();
            assert!(
                (got - exact).abs() < 1e-14,
                "degree {degree}: {got} vs {exact}"
            );
        }
        // The embedded 7-point Gauss rule is exact up to degree 13, so K - G vanishes there.
        let piece = gauss_kronrod_log(&|x: f64| 13.0 * x.ln(), &LogWeights::new(), 0.0, 1.0);
        assert!(piece.log_error < (1e-14_f64).ln(), "{}", piece.log_error);
    }

    #[test]
    fn gaussian_integral_in_log_space_with_huge_scale() {
        // ∫ exp(1e5 - (x-3)^2/2) dx = e^1e5 sqrt(2π).
        let result = integrate_log(
            |x| 1e5 - 0.5 * (x - 3.0) * (x - 3.0),
            &[-40.0, 0.0, 3.0, 6.0, 40.0],
            1e-13,
            1000,
            "test",
        )
        .unwrap();
        let expected = 1e5 + 0.5 * (2.0 * std::f64::consts::PI).ln();
        assert!(
            (result.log_value - expected).abs() < 1e-11,
            "{}",
            result.log_value
        );
    }
}
