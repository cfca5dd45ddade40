//! Claim 8: final error against epsilon, with the noise multiplier from a privacy accountant.

use super::convergence::{dp_problem, final_excess, DP_BATCH, DP_CLIP, DP_EXAMPLES};
use super::{Check, ClaimReport, Table};
use crate::algorithm::DpZoConfig;
use crate::error::{Result, TheoryError};
use crate::schedule::StagewiseSchedule;
use crate::stats::{normal_quantile, welch_statistic, Summary, ALPHA};

/// Smallest noise multiplier whose (epsilon, delta) after `steps` Poisson-subsampled Gaussian
/// steps at `sampling_rate` is at most `epsilon` (RDP accounting, Mironov et al. 2019).
///
/// # Errors
/// Invalid inputs or no noise multiplier in `[0.05, 1000]` reaching `epsilon`.
pub fn noise_multiplier_for(
    epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    steps: usize,
) -> Result<f64> {
    local_rdp::calibrate(epsilon, delta, sampling_rate, steps)
}

mod local_rdp {
    //! Poisson-subsampled Gaussian RDP at integer orders (paper.md §2 formula).
    use super::{Result, TheoryError};

    fn log_add(a: f64, b: f64) -> f64 {
        let (hi, lo) = if a > b { (a, b) } else { (b, a) };
        if lo == f64::NEG_INFINITY {
            hi
        } else {
            hi + (lo - hi).exp().ln_1p()
        }
    }

    fn ln_binomial(n: u32, k: u32) -> f64 {
        (1..=k)
            .map(|i| ((n - k + i) as f64).ln() - (i as f64).ln())
            .sum()
    }

    fn epsilon(noise_multiplier: f64, delta: f64, q: f64, steps: usize) -> f64 {
        let mut best = f64::INFINITY;
        for order in 2u32..=256 {
            let mut log_a = f64::NEG_INFINITY;
            for k in 0..=order {
                let kf = k as f64;
                let term = ln_binomial(order, k)
                    + (order - k) as f64 * (1.0 - q).ln()
                    + if k == 0 { 0.0 } else { kf * q.ln() }
                    + (kf * kf - kf) / (2.0 * noise_multiplier * noise_multiplier);
                log_a = log_add(log_a, term);
            }
            let alpha = order as f64;
            let rdp = steps as f64 * log_a / (alpha - 1.0);
            let value =
                rdp + ((alpha - 1.0) / alpha).ln() - (delta.ln() + alpha.ln()) / (alpha - 1.0);
            best = best.min(value);
        }
        best
    }

    pub(super) fn calibrate(target: f64, delta: f64, q: f64, steps: usize) -> Result<f64> {
        let fail = |message: String| TheoryError::Accountant {
            epsilon: target,
            delta,
            message,
        };
        let valid = target.is_finite()
            && target > 0.0
            && delta > 0.0
            && delta < 1.0
            && q > 0.0
            && q <= 1.0
            && steps > 0;
        if !valid {
            return Err(fail(format!("invalid input q={q}, steps={steps}")));
        }
        let (mut low, mut high) = (0.05, 1000.0);
        if epsilon(high, delta, q, steps) > target {
            return Err(fail("sigma=1000 does not reach the target".into()));
        }
        while high - low > 1e-4 * high {
            let mid = 0.5 * (low + high);
            if epsilon(mid, delta, q, steps) > target {
                low = mid;
            } else {
                high = mid;
            }
        }
        Ok(high)
    }
}

/// Claim 8: with sigma calibrated per epsilon (equal T, q, delta), the final error of DPZero is
/// monotone (non-increasing) in epsilon, and significantly lower at the largest epsilon.
///
/// # Errors
/// Set-up or accountant failures.
pub fn claim8_privacy_utility() -> Result<ClaimReport> {
    const SEED: u64 = 0xC1A8_0008;
    let mut report = ClaimReport::new(
        8,
        "privacy-utility: final error non-increasing in epsilon (sigma from the accountant)",
    );
    let (dim, steps, seeds) = (50usize, 1000usize, 24u64);
    let epsilons = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
    let comparisons = epsilons.len();
    let z_one = normal_quantile(ALPHA / comparisons as f64);
    let problem = dp_problem(dim, 10.0, SEED)?;
    let delta = 1.0 / DP_EXAMPLES as f64;
    let sampling_rate = DP_BATCH as f64 / DP_EXAMPLES as f64;
    let schedule = StagewiseSchedule::constant(0.5 * problem.max_step_size, steps, 1e-2)?;
    let mut table = Table::new(
        "claim8_epsilon_sweep",
        &[
            "epsilon",
            "noise_multiplier",
            "mean_final_excess",
            "standard_error",
        ],
    );
    let mut summaries: Vec<Summary> = Vec::new();
    for (index, &epsilon) in epsilons.iter().enumerate() {
        let sigma = noise_multiplier_for(epsilon, delta, sampling_rate, steps)?;
        let config = DpZoConfig::dp_zero(DP_BATCH, DP_CLIP, sigma);
        let seed = SEED + 1000 * index as u64;
        let finals = Summary::of(&final_excess(
            &problem.objective,
            &problem.x0,
            &config,
            &schedule,
            seed..seed + seeds,
        )?);
        if let Some(previous) = summaries.last() {
            report.checks.push(Check::at_most(
                format!(
                    "eps {} -> {epsilon}: no significant increase, Welch (later - earlier)",
                    epsilons[index - 1]
                ),
                welch_statistic(&finals, previous),
                z_one,
                seeds as usize,
                seed,
            ));
        }
        table
            .rows
            .push(vec![epsilon, sigma, finals.mean, finals.standard_error()]);
        summaries.push(finals);
    }
    let (first, last) = (summaries[0], summaries[summaries.len() - 1]);
    report.checks.push(Check::at_least(
        "eps 0.5 vs 16: Welch (error at 0.5 - error at 16) is significant",
        welch_statistic(&first, &last),
        z_one,
        seeds as usize,
        SEED,
    ));
    if summaries.windows(2).any(|w| w[1].mean > w[0].mean) {
        report
            .notes
            .push("the seed means are not strictly monotone (differences within noise)".into());
    }
    report.tables.push(table);
    Ok(report)
}
