//! The Monte-Carlo experiments behind each claim of `crates/theory/README.md`.
//!
//! Each `claimN_*` function runs with fixed seeds and returns a [`ClaimReport`]: a list of
//! [`Check`]s (statistic, bound, sample count, seed) and [`Table`]s of curves that `repro theory`
//! writes as CSV and plots. Unit of failure: a claim fails if any of its checks fails. The
//! false-failure rate of each claim is at most [`crate::stats::ALPHA`] (Bonferroni over its
//! statistical checks, CLT approximation); deterministic checks cannot fail by chance.

use std::fmt;
use std::path::Path;

use crate::error::Result;

mod convergence;
mod estimators;
mod privacy_utility;
mod smoothing;
mod subspace;

pub use convergence::{claim4_convergence, claim5_dimension, claim6_stagewise};
pub use estimators::{claim1_two_point, claim2_clipping, variance_contract, VarianceResult};
pub use privacy_utility::{claim8_privacy_utility, noise_multiplier_for};
pub use smoothing::claim3_smoothing;
pub use subspace::claim7_pruned_subspace;

/// One pass/fail comparison `statistic <= bound`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is compared.
    pub description: String,
    /// The measured statistic.
    pub statistic: f64,
    /// The acceptance bound.
    pub bound: f64,
    /// Number of Monte-Carlo draws (or seeds) behind the statistic.
    pub samples: usize,
    /// Seed of the experiment.
    pub seed: u64,
    /// `statistic <= bound` (and both finite).
    pub passed: bool,
}

impl Check {
    /// Passes when `statistic <= bound` and the statistic is not NaN.
    pub fn at_most(
        description: impl Into<String>,
        statistic: f64,
        bound: f64,
        samples: usize,
        seed: u64,
    ) -> Self {
        Self {
            description: description.into(),
            statistic,
            bound,
            samples,
            seed,
            passed: !statistic.is_nan() && !bound.is_nan() && statistic <= bound,
        }
    }

    /// Passes when `statistic >= bound`; stored as `-statistic <= -bound` would lose
    /// readability, so the description should say "at least".
    pub fn at_least(
        description: impl Into<String>,
        statistic: f64,
        bound: f64,
        samples: usize,
        seed: u64,
    ) -> Self {
        Self {
            passed: !statistic.is_nan() && !bound.is_nan() && statistic >= bound,
            ..Self::at_most(description, statistic, bound, samples, seed)
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: statistic={:.6e} bound={:.6e} n={} seed={:#x}",
            if self.passed { "ok" } else { "FAIL" },
            self.description,
            self.statistic,
            self.bound,
            self.samples,
            self.seed
        )
    }
}

/// A named numeric table (one CSV file).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// File stem, e.g. `claim4_convergence`.
    pub name: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows of values, one per line.
    pub rows: Vec<Vec<f64>>,
}

impl Table {
    /// An empty table.
    pub fn new(name: &str, header: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Column index by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// Writes `<dir>/<name>.csv`.
    ///
    /// # Errors
    /// I/O or CSV errors, reported with the path.
    pub fn write_csv(&self, dir: &Path) -> std::result::Result<(), String> {
        let path = dir.join(format!("{}.csv", self.name));
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer
            .write_record(&self.header)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for row in &self.rows {
            writer
                .write_record(row.iter().map(|v| format!("{v}")))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // Written in one atomic rename, so a failed run never leaves a truncated table.
        atomic_file::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Outcome of one claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimReport {
    /// Claim number (1–8, README order).
    pub id: usize,
    /// One-line statement.
    pub title: String,
    /// Comparisons made.
    pub checks: Vec<Check>,
    /// Curves for plots.
    pub tables: Vec<Table>,
    /// Findings worth reporting that are not pass/fail (e.g. regimes where a method loses).
    pub notes: Vec<String>,
}

impl ClaimReport {
    fn new(id: usize, title: &str) -> Self {
        Self {
            id,
            title: title.to_string(),
            checks: Vec::new(),
            tables: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// True when every check passed (and there is at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// All checks and notes, one per line.
    pub fn details(&self) -> String {
        let mut lines: Vec<String> = self.checks.iter().map(|c| c.to_string()).collect();
        lines.extend(self.notes.iter().map(|n| format!("note: {n}")));
        lines.join("\n")
    }
}

/// Runs every claim in order.
///
/// # Errors
/// The first experiment that cannot run (invalid set-up or accountant failure).
pub fn all_claims() -> Result<Vec<ClaimReport>> {
    Ok(vec![
        claim1_two_point()?,
        claim2_clipping()?,
        claim3_smoothing()?,
        claim4_convergence()?,
        claim5_dimension()?,
        claim6_stagewise()?,
        claim7_pruned_subspace()?,
        claim8_privacy_utility()?,
    ])
}
