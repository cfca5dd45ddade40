//! Monte-Carlo summaries and CLT-based acceptance bounds with a stated false-failure rate.
//!
//! Every statistical check in this crate uses a normal-approximation (CLT) confidence bound at
//! level [`ALPHA`] = 1e-6 per claim, split (Bonferroni) over the comparisons the claim makes.
//! The CLT is asymptotic; sample sizes are chosen so that the approximation is reasonable for
//! the statistics involved (sums of squared Gaussians, averaged over thousands of draws, or
//! final errors averaged over tens of seeds).

use statrs::distribution::{ContinuousCDF, Normal};

/// False-failure rate allowed per claim (OpenDP / statrs convention).
pub const ALPHA: f64 = 1e-6;

/// The `1 - tail` quantile of the standard normal (e.g. `tail = 5e-7` gives about 4.89).
pub fn normal_quantile(tail: f64) -> f64 {
    // Normal::new(0, 1) cannot fail; fall back to a conservative constant if it ever did.
    Normal::new(0.0, 1.0)
        .map(|n| n.inverse_cdf(1.0 - tail))
        .unwrap_or(6.0)
}

/// Mean, unbiased variance and sample count of a set of draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Sample mean.
    pub mean: f64,
    /// Unbiased sample variance.
    pub variance: f64,
    /// Number of draws.
    pub count: usize,
}

impl Summary {
    /// Summarises `values` (Welford's algorithm).
    pub fn of(values: &[f64]) -> Self {
        let mut mean = 0.0;
        let mut m2 = 0.0;
        for (i, &v) in values.iter().enumerate() {
            let delta = v - mean;
            mean += delta / (i + 1) as f64;
            m2 += delta * (v - mean);
        }
        let count = values.len();
        let variance = if count > 1 {
            m2 / (count - 1) as f64
        } else {
            0.0
        };
        Self {
            mean,
            variance,
            count,
        }
    }

    /// Standard error of the mean.
    pub fn standard_error(&self) -> f64 {
        (self.variance / self.count.max(1) as f64).sqrt()
    }
}

/// Streaming version of [`Summary`] for long Monte-Carlo loops.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunningSummary {
    count: usize,
    mean: f64,
    m2: f64,
}

impl RunningSummary {
    /// Adds one draw.
    pub fn push(&mut self, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
    }

    /// The summary so far.
    pub fn summary(&self) -> Summary {
        let variance = if self.count > 1 {
            self.m2 / (self.count - 1) as f64
        } else {
            0.0
        };
        Summary {
            mean: self.mean,
            variance,
            count: self.count,
        }
    }
}

/// Welch statistic `(a.mean - b.mean) / sqrt(se_a^2 + se_b^2)`.
pub fn welch_statistic(a: &Summary, b: &Summary) -> f64 {
    let se = (a.standard_error().powi(2) + b.standard_error().powi(2)).sqrt();
    if se > 0.0 {
        (a.mean - b.mean) / se
    } else if a.mean == b.mean {
        0.0
    } else {
        f64::INFINITY.copysign(a.mean - b.mean)
    }
}
