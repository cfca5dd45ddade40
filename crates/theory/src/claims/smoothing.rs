//! Claim 3: Gaussian-smoothing error bounds of Nesterov & Spokoiny (2017) on non-quadratic
//! smooth functions, plus two exact references that validate the Monte-Carlo machinery.

use ndarray::Array1;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{Check, ClaimReport, Table};
use crate::bounds::{smoothing_gradient_gap_bound, smoothing_value_gap_bound};
use crate::error::Result;
use crate::estimator::{sample_direction_using, DirectionKind};
use crate::objective::{Gradient, LogSumExp, Objective, PerExampleQuadratic, Quartic, Spectrum};
use crate::stats::{normal_quantile, RunningSummary, ALPHA};

/// Monte-Carlo estimates of `f_mu(x) - f(x)` and `grad f_mu(x)` (antithetic pairs:
/// `(f(x+mu u) + f(x-mu u))/2 - f(x)` and `(f(x+mu u) - f(x-mu u))/(2 mu) u`, both unbiased).
struct SmoothingEstimate {
    value_gap: RunningSummary,
    gradient: Vec<RunningSummary>,
}

fn estimate<O: Objective>(
    objective: &O,
    x: &Array1<f64>,
    zo_eps: f64,
    samples: usize,
    rng: &mut ChaCha8Rng,
) -> SmoothingEstimate {
    let dim = objective.dim();
    let center = objective.loss(x.view());
    let mut value_gap = RunningSummary::default();
    let mut gradient = vec![RunningSummary::default(); dim];
    for _ in 0..samples {
        let u = sample_direction_using(DirectionKind::Gaussian, dim, rng);
        let plus = objective.loss((x + &(&u * zo_eps)).view());
        let minus = objective.loss((x - &(&u * zo_eps)).view());
        value_gap.push(0.5 * (plus + minus) - center);
        let slope = (plus - minus) / (2.0 * zo_eps);
        for (summary, &uk) in gradient.iter_mut().zip(u.iter()) {
            summary.push(slope * uk);
        }
    }
    SmoothingEstimate {
        value_gap,
        gradient,
    }
}

/// Claim 3: `|f_mu - f| <= mu^2 L d / 2` and `||grad f_mu - grad f|| <= (mu/2) L (d+3)^(3/2)`
/// (Nesterov & Spokoiny 2017, eqs. (19), (30)) on log-sum-exp (L = 1); the value bound is
/// attained by `f = L/2 ||x||^2`; the Monte-Carlo gradient of `f_mu` matches the quartic's
/// closed form.
///
/// # Errors
/// Set-up failures.
pub fn claim3_smoothing() -> Result<ClaimReport> {
    const SEED: u64 = 0xC1A3_0003;
    let mut report = ClaimReport::new(
        3,
        "Nesterov-Spokoiny smoothing: |f_mu - f| <= mu^2 L d/2, ||grad f_mu - grad f|| <= \
         mu/2 L (d+3)^1.5 (log-sum-exp); value bound tight on L/2||x||^2",
    );
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let dim = 10;
    let samples = 20_000;
    let zo_eps_values = [0.1, 0.3, 1.0];
    // Comparisons: per mu two one-sided LSE checks + one tightness check + d quartic coordinates.
    let comparisons = zo_eps_values.len() * (3 + dim);
    let z_one = normal_quantile(ALPHA / comparisons as f64);
    let z_two = normal_quantile(ALPHA / (2.0 * comparisons as f64));

    let lse = LogSumExp::new(dim)?;
    let x = Array1::from_shape_simple_fn(dim, || rng.sample::<f64, _>(StandardNormal));
    let true_gradient = lse.gradient(x.view());
    let sphere_quadratic = PerExampleQuadratic::new(
        Spectrum::spiked(dim, dim, 1.0, 0.0)?.eigenvalues().clone(),
        ndarray::Array2::zeros((1, dim)),
    )?;
    let quartic = Quartic::new(dim)?;
    let quartic_x =
        Array1::from_shape_simple_fn(dim, || 0.8 * rng.sample::<f64, _>(StandardNormal));

    let mut table = Table::new(
        "claim3_smoothing",
        &[
            "zo_eps",
            "lse_value_gap",
            "value_bound",
            "lse_gradient_gap",
            "gradient_bound",
            "quadratic_value_gap",
        ],
    );
    for &zo_eps in &zo_eps_values {
        let lse_estimate = estimate(&lse, &x, zo_eps, samples, &mut rng);
        let value = lse_estimate.value_gap.summary();
        let value_bound = smoothing_value_gap_bound(zo_eps, LogSumExp::SMOOTHNESS, dim);
        report.checks.push(Check::at_most(
            format!("LSE mu={zo_eps}: |f_mu - f| (MC) minus CLT margin <= mu^2 L d / 2"),
            value.mean.abs() - z_one * value.standard_error(),
            value_bound,
            samples,
            SEED,
        ));
        let difference: Vec<f64> = lse_estimate
            .gradient
            .iter()
            .zip(true_gradient.iter())
            .map(|(s, g)| s.summary().mean - g)
            .collect();
        let gap = difference.iter().map(|v| v * v).sum::<f64>().sqrt();
        let margin = lse_estimate
            .gradient
            .iter()
            .map(|s| (z_one * s.summary().standard_error()).powi(2))
            .sum::<f64>()
            .sqrt();
        let gradient_bound = smoothing_gradient_gap_bound(zo_eps, LogSumExp::SMOOTHNESS, dim);
        report.checks.push(Check::at_most(
            format!(
                "LSE mu={zo_eps}: ||grad f_mu - grad f|| (MC) minus CLT margin <= mu/2 L (d+3)^1.5"
            ),
            gap - margin,
            gradient_bound,
            samples,
            SEED,
        ));

        // Tightness of the value bound: for f = 1/2 ||x||^2, f_mu - f = mu^2 d / 2 exactly.
        let quadratic_estimate = estimate(&sphere_quadratic, &x, zo_eps, samples, &mut rng);
        let quadratic_value = quadratic_estimate.value_gap.summary();
        report.checks.push(Check::at_most(
            format!("1/2||x||^2 mu={zo_eps}: |MC (f_mu - f) - mu^2 d/2| / se (bound attained)"),
            (quadratic_value.mean - value_bound).abs() / quadratic_value.standard_error(),
            z_two,
            samples,
            SEED,
        ));

        // The quartic's smoothed gradient is x^3 + 3 mu^2 x: validates the MC estimator.
        let quartic_estimate = estimate(&quartic, &quartic_x, zo_eps, samples, &mut rng);
        let reference = quartic.smoothed_gradient(quartic_x.view(), zo_eps);
        let max_z = quartic_estimate
            .gradient
            .iter()
            .zip(reference.iter())
            .map(|(s, r)| {
                let s = s.summary();
                (s.mean - r).abs() / s.standard_error()
            })
            .fold(0.0, f64::max);
        report.checks.push(Check::at_most(
            format!("quartic mu={zo_eps}: max_k |MC grad f_mu - (x^3 + 3 mu^2 x)|_k / se_k"),
            max_z,
            z_two,
            samples,
            SEED,
        ));
        table.rows.push(vec![
            zo_eps,
            value.mean,
            value_bound,
            gap,
            gradient_bound,
            quadratic_value.mean,
        ]);
        report.notes.push(format!(
            "mu={zo_eps}: LSE value gap {:.3e} = {:.1}% of the bound, gradient gap {gap:.3e} = {:.2}% of the bound",
            value.mean,
            100.0 * value.mean / value_bound,
            100.0 * gap / gradient_bound
        ));
    }
    report.tables.push(table);
    Ok(report)
}
