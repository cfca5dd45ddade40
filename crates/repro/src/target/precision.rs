//! How precise each claim's interval is, what more seeds would buy, and a stricter reading of
//! the claims of no effect: `precision.csv` and the precision section of `comparison.md`.
//!
//! The verdicts of `claims.csv` follow the contracted rule (`compare::verdict`). For a claim of
//! no effect (|paper Δ| ≤ tol) that rule says *reproduced* whenever our CI meets [−tol, tol], so
//! a wide CI passes by being wide. Beside it we report the equivalence reading that a two
//! one-sided test (TOST) gives at the same level: *within ±tol* when the whole 95% CI lies in
//! the band (each one-sided test at 2.5%), *outside ±tol* when it misses the band, *undetermined*
//! otherwise.
//!
//! Each CI holds at 95% on its own; over a family of K claims some will miss by chance. Beside
//! it we give the simultaneous (Bonferroni) interval of the family: each claim's interval at
//! level 1 − 0.05/K from the same spread, so that all K hold together with probability at least
//! 95%. The family is every claim of the file that has a CI.
//!
//! The projections use the variance components of the claim's own paired sample
//! (`stats::Spread`): the half-width a 95% CI would have from n seeds on the same test set, the
//! floor that the test set's size sets whatever the seeds, and the fewest seeds at which a CI
//! centred on our point estimate would exclude 0, or would lie within ±tol. They are planning
//! figures: components estimated from 3 seeds are themselves uncertain (2 degrees of freedom for
//! the seed part), and the true difference is not our point estimate.

use super::compare::Claim;
use super::stats::{self, Spread};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// The most seeds a plan considers; more is reported as `>` this.
pub const MAX_PLANNED_SEEDS: usize = 30;

/// Seed counts whose projected half-width `precision.csv` lists.
pub const PROJECTED_SEEDS: [usize; 2] = [5, 10];

/// How many seeds a decision needs, at our point estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedsNeeded {
    /// This many (the smallest from 2 up).
    Seeds(usize),
    /// More than [`MAX_PLANNED_SEEDS`].
    MoreThanPlanned,
    /// No number of seeds: the test set's floor alone is too wide.
    Never,
}

impl SeedsNeeded {
    pub fn label(self) -> String {
        match self {
            SeedsNeeded::Seeds(n) => n.to_string(),
            SeedsNeeded::MoreThanPlanned => format!(">{MAX_PLANNED_SEEDS}"),
            SeedsNeeded::Never => "never".into(),
        }
    }
}

/// The equivalence (TOST) reading of a CI against ±tol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equivalence {
    Within,
    Outside,
    Undetermined,
}

impl Equivalence {
    pub fn of(low: f64, high: f64, tol: f64) -> Equivalence {
        if -tol <= low && high <= tol {
            Equivalence::Within
        } else if high < -tol || low > tol {
            Equivalence::Outside
        } else {
            Equivalence::Undetermined
        }
    }

    pub fn label(self, tol: f64) -> String {
        match self {
            Equivalence::Within => format!("within ±{tol}"),
            Equivalence::Outside => format!("outside ±{tol}"),
            Equivalence::Undetermined => "undetermined".into(),
        }
    }
}

/// One claim's precision and plan.
#[derive(Debug, Clone)]
pub struct Precision<'a> {
    pub claim: &'a Claim,
    pub spread: Spread,
    /// Half-width of the claim's 95% CI.
    pub half_width: f64,
    /// Half-width of its simultaneous interval over the family (Bonferroni, level 1 − 0.05/K).
    pub family_half_width: f64,
    /// K, the claims in the family.
    pub family_size: usize,
    /// (seeds, projected half-width) for [`PROJECTED_SEEDS`].
    pub projected: Vec<(usize, f64)>,
    /// The half-width no number of seeds goes below (test-set sampling).
    pub floor: f64,
    pub to_exclude_zero: SeedsNeeded,
    pub for_equivalence: SeedsNeeded,
    pub equivalence: Equivalence,
}

/// The smallest n in 2..=[`MAX_PLANNED_SEEDS`] whose projected half-width passes `ok`.
fn seeds_needed(spread: &Spread, floor_ok: bool, ok: impl Fn(f64) -> bool) -> Result<SeedsNeeded> {
    if !floor_ok {
        return Ok(SeedsNeeded::Never);
    }
    for n in stats::MIN_SEEDS..=MAX_PLANNED_SEEDS {
        if ok(spread.with_seeds(n).half_width()?) {
            return Ok(SeedsNeeded::Seeds(n));
        }
    }
    Ok(SeedsNeeded::MoreThanPlanned)
}

/// The precision of every claim that has an interval (at least 2 paired seeds); these claims
/// form the family of the simultaneous intervals.
pub fn precision(claims: &[Claim], tol: f64) -> Result<Vec<Precision<'_>>> {
    let mut with_ci = Vec::new();
    for claim in claims {
        let (Some(sample), Some(_), Some(_)) = (&claim.sample, claim.ci, claim.ours_delta) else {
            continue;
        };
        // A sample whose per-example outcomes were unusable got the seed-only interval.
        let spread = match stats::spread(sample) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(_) => stats::spread(&stats::SeedSample {
                values: sample.values.clone(),
                examples: None,
            })?
            .context("a claim with a CI has at least 2 seeds")?,
        };
        with_ci.push((claim, spread));
    }
    let family_size = with_ci.len();
    let family_level = 1.0 - (1.0 - stats::LEVEL) / family_size.max(1) as f64;
    let mut out = Vec::new();
    for (claim, spread) in with_ci {
        let (Some((low, high)), Some(delta)) = (claim.ci, claim.ours_delta) else {
            continue;
        };
        let floor = spread.floor_half_width()?;
        let projected = PROJECTED_SEEDS
            .iter()
            .map(|&n| Ok((n, spread.with_seeds(n).half_width()?)))
            .collect::<Result<Vec<_>>>()?;
        let size = delta.abs();
        out.push(Precision {
            claim,
            half_width: (high - low) / 2.0,
            family_half_width: spread.half_width_at(family_level)?,
            family_size,
            projected,
            floor,
            to_exclude_zero: seeds_needed(&spread, floor < size, |h| h < size)?,
            for_equivalence: seeds_needed(&spread, size + floor < tol, |h| size + h < tol)?,
            equivalence: Equivalence::of(low, high, tol),
            spread,
        });
    }
    Ok(out)
}

/// Standard deviation of a variance component (a negative estimate reads as 0); empty when the
/// spread has no such component.
fn sd(variance: Option<f64>) -> String {
    variance
        .map(|v| format!("{:.2}", v.max(0.0).sqrt()))
        .unwrap_or_default()
}

/// Write `precision.csv`.
pub fn write_csv(rows: &[Precision], tol: f64, path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "claim",
        "task",
        "epsilon",
        "ours_delta",
        "ci_low",
        "ci_high",
        "n_seeds",
        "test_examples",
        "sd_seed",
        "sd_example",
        "sd_residual",
        "half_width",
        "family_size",
        "ci_low_family",
        "ci_high_family",
    ]
    .map(String::from)
    .to_vec();
    header.extend(
        PROJECTED_SEEDS
            .iter()
            .map(|n| format!("half_width_{n}_seeds")),
    );
    header.extend(
        [
            "half_width_floor",
            "seeds_to_exclude_zero",
            "seeds_for_equivalence",
            "equivalence",
        ]
        .map(String::from),
    );
    w.write_record(&header)?;
    for p in rows {
        let c = p.claim;
        let (low, high) = c.ci.unwrap_or_default();
        let components = p.spread.components();
        let m = match p.spread {
            Spread::Crossed { m, .. } => m.to_string(),
            Spread::SeedsOnly { .. } => String::new(),
        };
        let mut record = vec![
            c.claim.clone(),
            c.task.clone(),
            c.epsilon.clone(),
            format!("{:.2}", c.ours_delta.unwrap_or_default()),
            format!("{low:.2}"),
            format!("{high:.2}"),
            c.n_seeds.to_string(),
            m,
            sd(Some(components.seed)),
            sd(components.example),
            sd(components.residual),
            format!("{:.2}", p.half_width),
            p.family_size.to_string(),
            format!(
                "{:.2}",
                c.ours_delta.unwrap_or_default() - p.family_half_width
            ),
            format!(
                "{:.2}",
                c.ours_delta.unwrap_or_default() + p.family_half_width
            ),
        ];
        record.extend(p.projected.iter().map(|(_, h)| format!("{h:.2}")));
        record.extend([
            format!("{:.2}", p.floor),
            p.to_exclude_zero.label(),
            p.for_equivalence.label(),
            p.equivalence.label(tol),
        ]);
        w.write_record(&record)?;
    }
    atomic_file::write(path, w.into_inner()?).with_context(|| format!("writing {}", path.display()))
}

/// Write `dir/precision.csv` for `claims` and return its markdown section (for `comparison.md`
/// or `ablations.md`).
pub fn write_and_render(claims: &[Claim], tol: f64, dir: &Path) -> Result<String> {
    let rows = precision(claims, tol)?;
    write_csv(&rows, tol, &dir.join("precision.csv"))?;
    Ok(render_markdown(&rows, tol))
}

/// The precision section of `comparison.md`.
pub fn render_markdown(rows: &[Precision], tol: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Precision: what more seeds would decide\n");
    let _ = writeln!(
        s,
        "For each claim with a CI: its half-width now, the half-width projected to {} seeds on the same test set from the claim's own variance components (seed, test example, residual; `target/stats.rs`), the floor that the test set's size sets whatever the number of seeds, and the fewest seeds (up to {MAX_PLANNED_SEEDS}) at which a CI centred on our point estimate would exclude 0, or would lie within ±{tol}. These are planning figures: components estimated from a few seeds are uncertain, and the true difference is not our estimate. The simultaneous CI holds for all the table's claims together at 95% (Bonferroni: each at 1 − 0.05/K, K the number of claims with a CI); a claim whose simultaneous CI still excludes 0 survives the number of claims tested. The last column is the equivalence reading (two one-sided tests at the CI's level): *within ±{tol}* when the whole 95% CI lies in the band, *outside* when it misses it, *undetermined* otherwise. For a claim of no effect it is stricter than the verdict rule of `claims.csv`, which only asks the CI to meet the band. The same rows are in `precision.csv`.\n",
        PROJECTED_SEEDS.map(|n| n.to_string()).join(" and "),
    );
    if rows.is_empty() {
        let _ = writeln!(s, "No claim has 2 or more paired seeds yet.");
        return s;
    }
    let projected_head: Vec<String> = PROJECTED_SEEDS
        .iter()
        .map(|n| format!("± at {n} seeds"))
        .collect();
    let _ = writeln!(
        s,
        "| claim | task | ε | ours Δ [95% CI], n | simultaneous CI (K = {}) | ± now | {} | floor | seeds to exclude 0 | seeds for ±{tol} | equivalence |",
        rows[0].family_size,
        projected_head.join(" | ")
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|{}---|---|---|---|",
        "---|".repeat(PROJECTED_SEEDS.len())
    );
    for p in rows {
        let c = p.claim;
        let (low, high) = c.ci.unwrap_or_default();
        let projected: Vec<String> = p.projected.iter().map(|(_, h)| format!("{h:.1}")).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:+.1} [{low:+.1}, {high:+.1}], {} | [{:+.1}, {:+.1}] | {:.1} | {} | {:.1} | {} | {} | {} |",
            c.claim,
            c.task,
            c.epsilon,
            c.ours_delta.unwrap_or_default(),
            c.n_seeds,
            c.ours_delta.unwrap_or_default() - p.family_half_width,
            c.ours_delta.unwrap_or_default() + p.family_half_width,
            p.half_width,
            projected.join(" | "),
            p.floor,
            p.to_exclude_zero.label(),
            p.for_equivalence.label(),
            p.equivalence.label(tol),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::compare::Verdict;
    use crate::target::stats::SeedSample;

    /// A claim with the given per-seed paired differences and, optionally, per-example outcomes.
    fn claim(values: Vec<f64>, examples: Option<Vec<Vec<i8>>>) -> Claim {
        let sample = SeedSample { values, examples };
        let iv = stats::interval(&sample).unwrap().unwrap();
        Claim {
            claim: "a - b".into(),
            task: "T".into(),
            epsilon: "4".into(),
            paper_delta: Some(0.5),
            ours_delta: Some(iv.mean),
            ci: Some((iv.low, iv.high)),
            n_seeds: iv.n_seeds,
            verdict: Verdict::Reproduced,
            why: String::new(),
            open_tuning: String::new(),
            sample: Some(sample),
        }
    }

    #[test]
    fn equivalence_reading_of_a_ci() {
        assert_eq!(Equivalence::of(-1.0, 1.5, 2.0), Equivalence::Within);
        assert_eq!(Equivalence::of(-7.0, -0.3, 2.0), Equivalence::Undetermined);
        assert_eq!(Equivalence::of(-7.0, -2.5, 2.0), Equivalence::Outside);
        assert_eq!(Equivalence::of(2.1, 3.0, 2.0), Equivalence::Outside);
        assert_eq!(Equivalence::of(-2.0, 2.0, 2.0), Equivalence::Within);
    }

    /// Seed-only differences of −3, −4, −5 points (s = 1): the CI excludes 0 already at 3 seeds
    /// (t(0.975, 2) · 1/√3 = 2.48 < 4), so 2 seeds are checked first: t(0.975, 1) · 1/√2 = 8.98
    /// does not exclude 0, and 3 is the answer. |Δ| = 4 ≥ tol: no number of seeds shows
    /// equivalence within ±2.
    #[test]
    fn seeds_needed_for_a_clear_seed_only_effect() {
        let claims = vec![claim(vec![-3.0, -4.0, -5.0], None)];
        let p = precision(&claims, 2.0).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].to_exclude_zero, SeedsNeeded::Seeds(3));
        assert_eq!(p[0].for_equivalence, SeedsNeeded::Never);
        assert_eq!(p[0].floor, 0.0);
        // CI −4 ± 2.48 = [−6.48, −1.52] reaches into ±2.
        assert_eq!(p[0].equivalence, Equivalence::Undetermined);
        // Projection to 5 seeds: t(0.975, 4) = 2.7764 (t table) · 1 / √5.
        let (n, h) = p[0].projected[0];
        assert_eq!(n, 5);
        assert!((h - 2.7764 / 5f64.sqrt()).abs() < 1e-4, "{h}");
    }

    /// Identical seeds on a 12-example test set where the two methods differ on 3 examples
    /// (+1, +1, −1): Δ = 100/12 points, and the whole interval is test-set sampling, so more
    /// seeds never narrow it. The CI contains 0, so excluding it is "never"; the floor already
    /// exceeds tol, so equivalence is "never" too.
    #[test]
    fn a_small_test_set_sets_a_floor_that_seeds_cannot_pass() {
        let mut row = vec![0i8; 12];
        row[0] = 1;
        row[1] = 1;
        row[2] = -1;
        let value = 100.0 / 12.0;
        let claims = vec![claim(
            vec![value; 3],
            Some(vec![row.clone(), row.clone(), row]),
        )];
        let p = precision(&claims, 2.0).unwrap();
        assert!((p[0].floor - p[0].half_width).abs() < 1e-9, "{:?}", p[0]);
        assert!(p[0].floor > value, "{:?}", p[0]);
        assert_eq!(p[0].to_exclude_zero, SeedsNeeded::Never);
        assert_eq!(p[0].for_equivalence, SeedsNeeded::Never);
        assert_eq!(p[0].equivalence, Equivalence::Undetermined);
    }

    /// No difference (Δ = 0) with a wide seed spread (−2, 0, 2: s = 2): equivalence within ±2
    /// needs t(0.975, n − 1) · 2/√n < 2. From the t table: n = 6 gives 2.5706 · 2/√6 = 2.099,
    /// n = 7 gives 2.4469 · 2/√7 = 1.850, so 7. A CI centred on 0 never excludes 0.
    #[test]
    fn seeds_for_equivalence_is_the_smallest_n_that_fits() {
        let claims = vec![claim(vec![-2.0, 0.0, 2.0], None)];
        let p = precision(&claims, 2.0).unwrap();
        assert_eq!(p[0].for_equivalence, SeedsNeeded::Seeds(7));
        assert_eq!(p[0].to_exclude_zero, SeedsNeeded::Never);
        assert_eq!(p[0].equivalence, Equivalence::Undetermined);
    }

    /// The simultaneous interval of a family of K claims is each claim's interval at level
    /// 1 − 0.05/K: for K = 2 seed-only claims of 3 seeds, t(0.9875, 2) = 6.2053 (t table) in
    /// place of t(0.975, 2) = 4.3027.
    #[test]
    fn family_intervals_are_bonferroni_over_the_claims_with_a_ci() {
        let claims = vec![
            claim(vec![-3.0, -4.0, -5.0], None),
            claim(vec![1.0, 2.0, 3.0], None),
        ];
        let p = precision(&claims, 2.0).unwrap();
        assert!(p.iter().all(|r| r.family_size == 2));
        for r in &p {
            let ratio = r.family_half_width / r.half_width;
            assert!((ratio - 6.2053 / 4.3027).abs() < 1e-3, "{ratio}");
        }
        // One claim alone: its family interval is its own.
        let one = precision(&claims[..1], 2.0).unwrap();
        assert!((one[0].family_half_width - one[0].half_width).abs() < 1e-9);
    }

    #[test]
    fn claims_without_a_ci_are_left_out_and_the_csv_has_one_row_per_claim() {
        let mut none = claim(vec![1.0, 2.0], None);
        none.ci = None;
        let claims = vec![none, claim(vec![1.0, 2.0, 4.0], None)];
        let p = precision(&claims, 2.0).unwrap();
        assert_eq!(p.len(), 1);
        let dir = crate::target::test_scratch("precision-csv");
        let path = dir.join("precision.csv");
        write_csv(&p, 2.0, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("claim,task,epsilon,ours_delta"),
            "{text}"
        );
        assert!(
            lines[0].contains("half_width_5_seeds,half_width_10_seeds"),
            "{text}"
        );
        assert!(lines[1].ends_with(",undetermined"), "{text}");
        let md = render_markdown(&p, 2.0);
        assert!(md.contains("| a - b | T | 4 |"), "{md}");
    }
}
