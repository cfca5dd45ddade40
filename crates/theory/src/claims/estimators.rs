//! Claims 1 (two-point estimator: unbiasedness, exactness, second moment) and 2 (clipping bias).

use ndarray::{Array1, ArrayView1};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{Check, ClaimReport, Table};
use crate::bounds::{clipped_projection_mean_factor, gaussian_second_moment, sphere_second_moment};
use crate::error::{at_least, non_negative, Result};
use crate::estimator::{
    central_difference, clipped_projection_using, sample_direction_using, two_point_estimate_using,
    DirectionKind,
};
use crate::objective::{Gradient, Objective, Quadratic, Spectrum};
use crate::stats::{normal_quantile, RunningSummary, Summary, ALPHA};

/// Result of the `repro theory variance` contract.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceResult {
    /// Monte-Carlo `E||g||^2`.
    pub empirical: f64,
    /// Closed form `(d + n + 1)/n ||grad f||^2 + d s^2 / n`.
    pub theory: f64,
    /// `||grad f(x)||^2` at the evaluation point.
    pub grad_norm_sq: f64,
    /// Standard error of `empirical`.
    pub standard_error: f64,
}

/// Random rotated quadratic (geometric spectrum, condition number 10) at a random point.
fn random_quadratic_point(dim: usize, rng: &mut ChaCha8Rng) -> Result<(Quadratic, Array1<f64>)> {
    let spectrum = Spectrum::geometric(dim, 1.0, 10.0)?;
    let quadratic = Quadratic::random_using(&spectrum, rng)?;
    let x = Array1::from_shape_simple_fn(dim, || rng.sample::<f64, _>(StandardNormal));
    Ok((quadratic, x))
}

fn second_moment_summary<O: Objective>(
    objective: &O,
    x: ArrayView1<f64>,
    directions: usize,
    noise_std: f64,
    kind: DirectionKind,
    samples: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Summary> {
    let mut summary = RunningSummary::default();
    for _ in 0..samples {
        let g = two_point_estimate_using(objective, x, 1e-2, directions, noise_std, kind, rng)?;
        summary.push(g.dot(&g));
    }
    Ok(summary.summary())
}

/// `E||g||^2` of the n-direction Gaussian two-point estimator with per-direction `N(0, s^2)`
/// noise, at a random point of a random quadratic of dimension `dim` (the CLI contract).
///
/// # Errors
/// `dim`, `directions` or `samples` of 0, negative `noise_std`, or a LAPACK failure.
pub fn variance_contract(
    dim: usize,
    directions: usize,
    samples: usize,
    seed: u64,
    noise_std: f64,
) -> Result<VarianceResult> {
    at_least("dim", dim, 1)?;
    at_least("directions", directions, 1)?;
    at_least("samples", samples, 2)?;
    non_negative("noise_std", noise_std)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (quadratic, x) = random_quadratic_point(dim, &mut rng)?;
    let gradient = quadratic.gradient(x.view());
    let grad_norm_sq = gradient.dot(&gradient);
    let summary = second_moment_summary(
        &quadratic,
        x.view(),
        directions,
        noise_std,
        DirectionKind::Gaussian,
        samples,
        &mut rng,
    )?;
    Ok(VarianceResult {
        empirical: summary.mean,
        theory: gaussian_second_moment(dim, directions, grad_norm_sq, noise_std),
        grad_norm_sq,
        standard_error: summary.standard_error(),
    })
}

/// Claim 1: the Gaussian two-point estimator is unbiased on quadratics, the central difference
/// is exact there, and `E||g||^2` follows the closed forms of [`gaussian_second_moment`] /
/// [`sphere_second_moment`] (MeZO Lemma 2 plus the noise term `d s^2 / n`).
///
/// # Errors
/// Set-up failures (LAPACK).
pub fn claim1_two_point() -> Result<ClaimReport> {
    const SEED: u64 = 0xC1A1_0001;
    let mut report = ClaimReport::new(
        1,
        "two-point estimator: exact central difference, unbiased, E||g||^2 = (d+n+1)/n ||grad||^2 \
         (Gaussian) or (d+n-1)/n (sphere) + d s^2/n",
    );
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let dim = 20;
    let spectrum = Spectrum::geometric(dim, 1.0, 10.0)?;
    let quadratic = Quadratic::random_using(&spectrum, &mut rng)?;

    // Deterministic: the constructed spectrum is the LAPACK spectrum.
    let computed = quadratic.computed_eigenvalues()?;
    let mut expected = spectrum.eigenvalues().to_vec();
    expected.sort_by(f64::total_cmp);
    let spectrum_error = computed
        .iter()
        .zip(expected.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    report.checks.push(Check::at_most(
        "max |eigh(A) - prescribed spectrum| (condition number 10, d=20)",
        spectrum_error,
        1e-10,
        dim,
        SEED,
    ));

    let x = Array1::from_shape_simple_fn(dim, || rng.sample::<f64, _>(StandardNormal));
    let gradient = quadratic.gradient(x.view());
    let grad_norm = gradient.dot(&gradient).sqrt();

    // Deterministic: the central difference equals z^T grad f up to rounding.
    let exactness_draws = 200;
    let mut worst = 0.0f64;
    for _ in 0..exactness_draws {
        let z = sample_direction_using(DirectionKind::Gaussian, dim, &mut rng);
        let difference = central_difference(&quadratic, 0, x.view(), z.view(), 0.5);
        let scale = z.dot(&z).sqrt() * grad_norm;
        worst = worst.max((difference - z.dot(&gradient)).abs() / scale);
    }
    report.checks.push(Check::at_most(
        "max relative |central difference (mu=0.5) - z^T grad f| on the quadratic",
        worst,
        1e-12,
        exactness_draws,
        SEED,
    ));

    // Statistical checks share ALPHA (Bonferroni): d coordinates + the moment configurations.
    let configurations: [(usize, usize, f64, DirectionKind); 6] = [
        (20, 1, 0.0, DirectionKind::Gaussian),
        (20, 4, 0.0, DirectionKind::Gaussian),
        (20, 4, 0.5, DirectionKind::Gaussian),
        (50, 2, 0.0, DirectionKind::Sphere),
        (50, 8, 1.0, DirectionKind::Sphere),
        (100, 1, 0.3, DirectionKind::Gaussian),
    ];
    let comparisons = dim + configurations.len();
    let z_two_sided = normal_quantile(ALPHA / (2.0 * comparisons as f64));

    // Unbiasedness: coordinate-wise z statistics of the mean estimate, n = 1, s = 0.5.
    let samples = 20_000;
    let mut coordinates = vec![RunningSummary::default(); dim];
    for _ in 0..samples {
        let g = two_point_estimate_using(
            &quadratic,
            x.view(),
            1e-2,
            1,
            0.5,
            DirectionKind::Gaussian,
            &mut rng,
        )?;
        for (summary, value) in coordinates.iter_mut().zip(g.iter()) {
            summary.push(*value);
        }
    }
    let max_z = coordinates
        .iter()
        .zip(gradient.iter())
        .map(|(s, g)| {
            let s = s.summary();
            (s.mean - g).abs() / s.standard_error()
        })
        .fold(0.0, f64::max);
    report.checks.push(Check::at_most(
        "unbiasedness: max_k |mean(g_k) - grad_k| / se_k (n=1, s=0.5)",
        max_z,
        z_two_sided,
        samples,
        SEED,
    ));

    let mut table = Table::new(
        "claim1_second_moment",
        &[
            "dim",
            "directions",
            "noise_std",
            "sphere",
            "empirical",
            "theory",
            "standard_error",
        ],
    );
    let moment_samples = 20_000;
    for (index, &(d, n, s, kind)) in configurations.iter().enumerate() {
        let seed = SEED + 1 + index as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (quadratic, x) = random_quadratic_point(d, &mut rng)?;
        let gradient = quadratic.gradient(x.view());
        let grad_norm_sq = gradient.dot(&gradient);
        let summary =
            second_moment_summary(&quadratic, x.view(), n, s, kind, moment_samples, &mut rng)?;
        let theory = match kind {
            DirectionKind::Gaussian => gaussian_second_moment(d, n, grad_norm_sq, s),
            DirectionKind::Sphere => sphere_second_moment(d, n, grad_norm_sq, s),
        };
        let z = (summary.mean - theory).abs() / summary.standard_error();
        report.checks.push(Check::at_most(
            format!(
                "E||g||^2 {kind:?} d={d} n={n} s={s}: |empirical {:.4} - theory {theory:.4}| / se",
                summary.mean
            ),
            z,
            z_two_sided,
            moment_samples,
            seed,
        ));
        table.rows.push(vec![
            d as f64,
            n as f64,
            s,
            f64::from(u8::from(kind == DirectionKind::Sphere)),
            summary.mean,
            theory,
            summary.standard_error(),
        ]);
    }
    report.tables.push(table);
    report.tables.push(variance_grid()?);
    Ok(report)
}

/// Normalised second moment `E||g||^2 / ||grad||^2` over a grid of d and n (for the plot).
fn variance_grid() -> Result<Table> {
    const SEED: u64 = 0xC1A1_0100;
    let mut table = Table::new(
        "variance_vs_dim_directions",
        &[
            "dim",
            "directions",
            "empirical_ratio",
            "theory_ratio",
            "standard_error",
        ],
    );
    for (i, &dim) in [5usize, 10, 20, 50, 100].iter().enumerate() {
        for (j, &directions) in [1usize, 4, 16].iter().enumerate() {
            let seed = SEED + (10 * i + j) as u64;
            let result = variance_contract(dim, directions, 1000, seed, 0.0)?;
            table.rows.push(vec![
                dim as f64,
                directions as f64,
                result.empirical / result.grad_norm_sq,
                result.theory / result.grad_norm_sq,
                result.standard_error / result.grad_norm_sq,
            ]);
        }
    }
    Ok(table)
}

/// Claim 2: `E[clip_C(z^T g) z] = erf(C / (sqrt 2 ||g||)) g` for `z ~ N(0, I)`; the minibatch
/// clipping bias `(1/B) sum_i (erf(C / (sqrt 2 ||g_i||)) - 1) g_i` decreases to 0 as C grows.
///
/// # Errors
/// None in practice (kept for a uniform signature).
pub fn claim2_clipping() -> Result<ClaimReport> {
    const SEED: u64 = 0xC1A2_0002;
    let mut report = ClaimReport::new(
        2,
        "per-example scalar clipping: E[clip_C(z^T g) z] = erf(C/(sqrt2 ||g||)) g; bias -> 0 as C grows",
    );
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let dim = 10;
    let gradient = Array1::from_shape_simple_fn(dim, || rng.sample::<f64, _>(StandardNormal));
    let grad_norm = gradient.dot(&gradient).sqrt();
    let ratios = [0.25, 0.5, 1.0, 2.0, 4.0];
    let samples = 40_000;
    let z_two_sided = normal_quantile(ALPHA / (2.0 * (ratios.len() * dim) as f64));
    let mut table = Table::new(
        "claim2_clipping_mean",
        &[
            "clip_over_grad_norm",
            "closed_form_factor",
            "empirical_factor",
            "standard_error",
        ],
    );
    let mut power_statistic = 0.0;
    for &ratio in &ratios {
        let clip_norm = ratio * grad_norm;
        let mut coordinates = vec![RunningSummary::default(); dim];
        for _ in 0..samples {
            let projection = clipped_projection_using(gradient.view(), clip_norm, &mut rng);
            for (summary, value) in coordinates.iter_mut().zip(projection.iter()) {
                summary.push(*value);
            }
        }
        let factor = clipped_projection_mean_factor(clip_norm, grad_norm);
        let summaries: Vec<Summary> = coordinates.iter().map(|s| s.summary()).collect();
        let max_z = summaries
            .iter()
            .zip(gradient.iter())
            .map(|(s, g)| (s.mean - factor * g).abs() / s.standard_error())
            .fold(0.0, f64::max);
        report.checks.push(Check::at_most(
            format!("clip C={ratio}||g||: max_k |mean_k - erf(C/(sqrt2||g||)) g_k| / se_k"),
            max_z,
            z_two_sided,
            samples,
            SEED,
        ));
        if ratio == 0.5 {
            power_statistic = summaries
                .iter()
                .zip(gradient.iter())
                .map(|(s, g)| (s.mean - g).abs() / s.standard_error())
                .fold(0.0, f64::max);
        }
        // Least-squares projection of the empirical mean on g gives the empirical factor.
        let mean = Array1::from_iter(summaries.iter().map(|s| s.mean));
        let se = summaries.iter().map(|s| s.standard_error()).sum::<f64>() / dim as f64;
        table.rows.push(vec![
            ratio,
            factor,
            mean.dot(&gradient) / (grad_norm * grad_norm),
            se / grad_norm,
        ]);
    }
    // Power: at C = ||g||/2 the unclipped mean g must be rejected (the bias is detectable).
    report.checks.push(Check::at_least(
        "power: at C=0.5||g|| max_k |mean_k - g_k| / se_k is at least the acceptance bound",
        power_statistic,
        z_two_sided,
        samples,
        SEED,
    ));

    // Minibatch bias in closed form for B = 8 examples with gradient norms 0.2 .. 5.
    let examples: Vec<Array1<f64>> = (0..8)
        .map(|i| {
            let g = Array1::from_shape_simple_fn(dim, || rng.sample::<f64, _>(StandardNormal));
            let norm = g.dot(&g).sqrt();
            g * (0.2 * 25f64.powf(i as f64 / 7.0) / norm)
        })
        .collect();
    let mean_gradient = examples
        .iter()
        .fold(Array1::<f64>::zeros(dim), |acc, g| acc + g)
        / 8.0;
    let mut bias_table = Table::new(
        "claim2_minibatch_bias",
        &["clip_norm", "bias_norm", "relative_bias"],
    );
    let mut previous = f64::INFINITY;
    let mut monotone = true;
    let mut last_relative = f64::NAN;
    for step in 0..=40 {
        let clip_norm = 0.05 * 10f64.powf(step as f64 / 10.0);
        let expected = examples.iter().fold(Array1::<f64>::zeros(dim), |acc, g| {
            let norm = g.dot(g).sqrt();
            acc + g * clipped_projection_mean_factor(clip_norm, norm)
        }) / 8.0;
        let bias = &expected - &mean_gradient;
        let bias_norm = bias.dot(&bias).sqrt();
        monotone &= bias_norm < previous || bias_norm == 0.0;
        previous = bias_norm;
        last_relative = bias_norm / mean_gradient.dot(&mean_gradient).sqrt();
        bias_table
            .rows
            .push(vec![clip_norm, bias_norm, last_relative]);
    }
    report.checks.push(Check::at_most(
        "minibatch clipping bias strictly decreasing in C (0 = yes)",
        f64::from(u8::from(!monotone)),
        0.0,
        41,
        SEED,
    ));
    report.checks.push(Check::at_most(
        "relative minibatch bias at C = 500 (100 x max ||g_i||)",
        last_relative,
        1e-12,
        8,
        SEED,
    ));
    report.tables.push(table);
    report.tables.push(bias_table);
    Ok(report)
}
