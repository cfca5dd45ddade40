//! The dev plateau in T, judged by a rule fixed before the horizon runs (the campaign asks for
//! "steps enough to reach a plateau on dev"). For each method family of a horizon grid
//! ([`super::ablation::horizon_family`]) and each pair of consecutive horizons `T_a < T_b`, the
//! gain in dev accuracy from `T_a` to `T_b`, paired by seed, with its 95% t-interval over seeds:
//!
//! - **plateau by `T_a`**: the whole interval lies below [`MARGIN_POINTS`]: going on to `T_b`
//!   buys less than a point, with 95% confidence;
//! - **rising at `T_a`**: the whole interval lies above 0 (and reaches the margin);
//! - **undetermined** otherwise, or with fewer than two seeds paired.
//!
//! Dev decides, as for every other hyper-parameter; the test gain is shown beside it.

use super::ablation::{eps_label, estimate, estimate_cells, horizon_family, Estimate};
use super::record::CellRecord;
use super::spec::Spec;
use super::summary::write_table;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// The gain in dev accuracy (points) below which more steps count as a plateau.
pub const MARGIN_POINTS: f64 = 1.0;

/// What one step up in T does to a family's dev accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Plateau,
    Rising,
    Undetermined,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Plateau => "plateau",
            Verdict::Rising => "rising",
            Verdict::Undetermined => "undetermined",
        }
    }

    /// The rule of the module docs, on a gain's 95% interval.
    pub fn of(ci95: Option<(f64, f64)>) -> Verdict {
        match ci95 {
            Some((_, hi)) if hi < MARGIN_POINTS => Verdict::Plateau,
            Some((lo, _)) if lo > 0.0 => Verdict::Rising,
            _ => Verdict::Undetermined,
        }
    }
}

/// One step up in T of one family in one (task, ε).
#[derive(Debug, Clone, PartialEq)]
pub struct PlateauStep {
    pub task: String,
    pub epsilon: Option<f64>,
    pub family: String,
    pub steps_from: i64,
    pub steps_to: i64,
    /// Seeds with a dev accuracy at both horizons.
    pub n_pairs: usize,
    /// Dev accuracy at `steps_to` minus at `steps_from`, over the paired seeds.
    pub dev_gain: Estimate,
    /// The same for test accuracy (over the seeds paired on dev).
    pub test_gain: Estimate,
    pub verdict: Verdict,
}

/// The steps up in T of every horizon family in `records` (methods of the grid `methods`).
pub fn plateau(spec: &Spec, methods: &[String], records: &[CellRecord]) -> Vec<PlateauStep> {
    // (task, ε, family) -> T -> seed -> (dev, test).
    type BySeed = BTreeMap<u64, (f64, f64)>;
    type Runs = BTreeMap<i64, BySeed>;
    let mut groups: BTreeMap<(String, Option<u64>, String), Runs> = BTreeMap::new();
    for r in records {
        if !methods.contains(&r.method) {
            continue;
        }
        let (Some(family), Some(t), Some(dev)) = (
            horizon_family(spec, methods, &r.method),
            r.config.get("steps").and_then(serde_json::Value::as_i64),
            r.dev_accuracy,
        ) else {
            continue;
        };
        groups
            .entry((r.task.clone(), r.epsilon.map(f64::to_bits), family))
            .or_default()
            .entry(t)
            .or_default()
            .insert(r.seed, (dev, r.test_accuracy));
    }
    let mut out = Vec::new();
    for ((task, eps, family), by_t) in groups {
        let horizons: Vec<(&i64, &BySeed)> = by_t.iter().collect();
        for pair in horizons.windows(2) {
            let ((&from, a), (&to, b)) = (pair[0], pair[1]);
            let (dev, test): (Vec<f64>, Vec<f64>) = a
                .iter()
                .filter_map(|(seed, (dev_a, test_a))| {
                    let (dev_b, test_b) = b.get(seed)?;
                    Some((dev_b - dev_a, test_b - test_a))
                })
                .unzip();
            let (Some(dev_gain), Some(test_gain)) = (estimate(&dev), estimate(&test)) else {
                continue;
            };
            out.push(PlateauStep {
                task: task.clone(),
                epsilon: eps.map(f64::from_bits),
                family: family.clone(),
                steps_from: from,
                steps_to: to,
                n_pairs: dev.len(),
                verdict: Verdict::of(dev_gain.ci95),
                dev_gain,
                test_gain,
            });
        }
    }
    out
}

/// `plateau.csv`: one row per step up in T (no file when there is none).
pub fn write_csv(steps: &[PlateauStep], path: &Path) -> Result<bool> {
    let rows = steps
        .iter()
        .map(|s| {
            let mut row = vec![
                s.task.clone(),
                eps_label(s.epsilon),
                s.family.clone(),
                s.steps_from.to_string(),
                s.steps_to.to_string(),
                s.n_pairs.to_string(),
            ];
            row.extend(estimate_cells(Some(s.dev_gain)));
            row.extend(estimate_cells(Some(s.test_gain)));
            row.push(s.verdict.name().to_string());
            row
        })
        .collect();
    write_table(
        path,
        &[
            "task",
            "epsilon",
            "family",
            "steps_from",
            "steps_to",
            "n_seeds_paired",
            "dev_gain",
            "dev_gain_ci_low",
            "dev_gain_ci_high",
            "test_gain",
            "test_gain_ci_low",
            "test_gain_ci_high",
            "verdict",
        ],
        rows,
    )
}

/// The section of `ablations.md` that states the rule and applies it.
pub fn render_markdown(steps: &[PlateauStep]) -> String {
    let ci = |e: &Estimate| match e.ci95 {
        Some((lo, hi)) => format!("{:+.1} [{lo:+.1}, {hi:+.1}]", e.mean),
        None => format!("{:+.1} (no CI)", e.mean),
    };
    let mut md = format!(
        "## Dev plateau in T\n\nRule, fixed before the runs: a family has reached its plateau \
         by T when the dev-accuracy gain from T to the next T, paired by seed, has its whole 95% \
         interval below +{MARGIN_POINTS} point; it is still rising at T when the interval lies \
         above 0; otherwise undetermined. `plateau.csv` has the figures.\n\n\
         | task | ε | family | T → next T | seeds | dev gain [95% CI] | test gain [95% CI] | verdict |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for s in steps {
        md.push_str(&format!(
            "| {} | {} | {} | {} → {} | {} | {} | {} | {} |\n",
            s.task,
            eps_label(s.epsilon),
            s.family,
            s.steps_from,
            s.steps_to,
            s.n_pairs,
            ci(&s.dev_gain),
            ci(&s.test_gain),
            s.verdict.name()
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::super::ablation::tests::record;
    use super::*;

    #[test]
    fn the_rule_reads_the_interval() {
        assert_eq!(Verdict::of(Some((-0.5, 0.9))), Verdict::Plateau);
        // A gain that is positive but surely below the margin is a plateau too.
        assert_eq!(Verdict::of(Some((0.2, 0.8))), Verdict::Plateau);
        assert_eq!(Verdict::of(Some((0.1, 3.0))), Verdict::Rising);
        assert_eq!(Verdict::of(Some((-0.5, 1.5))), Verdict::Undetermined);
        assert_eq!(Verdict::of(Some((-3.0, -1.0))), Verdict::Plateau);
        assert_eq!(Verdict::of(None), Verdict::Undetermined);
    }

    /// On the committed mini-horizon grid: DPZero at 600 / 1200 / 2400, paired by seed, with the
    /// t-interval (t(0.975, 2) = 4.302652729911275, a table value; t(0.975, 1) = 12.706204736174705).
    #[test]
    fn gains_are_paired_by_seed_between_consecutive_horizons() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let spec = Spec::load(&root.join("experiments/ablations.toml")).unwrap();
        let methods = super::super::ablation::methods_of(&spec, "mini-horizon").unwrap();
        let mut records = Vec::new();
        // Dev gains 600 -> 1200 of 4, 5, 6 points (rising); 1200 -> 2400 of 0.2, 0.4, 0.0 for
        // seeds 13, 21 and 42, seed 42 lacking dev at 2400 (paired over two seeds).
        for (seed, dev600, dev1200, dev2400) in [
            (13, 70.0, 74.0, Some(74.2)),
            (21, 71.0, 76.0, Some(76.4)),
            (42, 72.0, 78.0, None),
        ] {
            records.push(record("dpzero-t600", seed, 600, dev600 + 1.0, Some(dev600)));
            records.push(record("dpzero", seed, 1200, dev1200 + 1.0, Some(dev1200)));
            records.push(record("dpzero-t2400", seed, 2400, 90.0, dev2400));
        }
        // Not a horizon family here: left out.
        records.push(record("dp-zopo", 13, 1200, 90.0, Some(90.0)));
        let steps = plateau(&spec, methods, &records);
        assert_eq!(steps.len(), 2, "{steps:?}");
        let first = &steps[0];
        assert_eq!(
            (first.steps_from, first.steps_to, first.n_pairs),
            (600, 1200, 3)
        );
        assert!((first.dev_gain.mean - 5.0).abs() < 1e-12);
        let half = 4.302652729911275 * 1.0 / 3f64.sqrt();
        let (lo, hi) = first.dev_gain.ci95.unwrap();
        assert!((lo - (5.0 - half)).abs() < 1e-9 && (hi - (5.0 + half)).abs() < 1e-9);
        assert_eq!(first.verdict, Verdict::Rising);
        assert!((first.test_gain.mean - 5.0).abs() < 1e-12);
        let second = &steps[1];
        assert_eq!(
            (second.steps_from, second.steps_to, second.n_pairs),
            (1200, 2400, 2)
        );
        assert!((second.dev_gain.mean - 0.3).abs() < 1e-9);
        // Two seeds: sd of (0.2, 0.4) is sqrt(0.02), half-width t(1) * sd / sqrt 2 = 1.27.
        let half = 12.706204736174705 * 0.02f64.sqrt() / 2f64.sqrt();
        let (lo, hi) = second.dev_gain.ci95.unwrap();
        assert!((lo - (0.3 - half)).abs() < 1e-9 && (hi - (0.3 + half)).abs() < 1e-9);
        assert_eq!(second.verdict, Verdict::Undetermined, "{hi}");
        let dir = std::env::temp_dir().join(format!("dpzo-plateau-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(write_csv(&steps, &dir.join("plateau.csv")).unwrap());
        let csv = std::fs::read_to_string(dir.join("plateau.csv")).unwrap();
        assert!(
            csv.contains("SST-2,4,dpzero,600,1200,3,5.00,2.52,7.48,5.00,2.52,7.48,rising"),
            "{csv}"
        );
        let md = render_markdown(&steps);
        assert!(
            md.contains("| SST-2 | 4 | dpzero | 1200 → 2400 | 2 | +0.3 [-1.0, +1.6] |"),
            "{md}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
