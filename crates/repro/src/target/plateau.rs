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
//!
//! A seed whose dev set chose the settings (`tuning.tuning_seed` of a `--tune` or
//! `inherit_tuning` record) is left out of the dev pairs: its base run is the best of several
//! candidates on that very dev set, so its dev accuracy is biased upward (the winner's curse), and
//! a gain measured from it is biased downward, towards a plateau. Its test gain, which nothing
//! selected on, stays in the test pairs.

use super::ablation::{eps_label, estimate, estimate_cells, horizon_family, Estimate};
use super::compare::signed_ci;
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
    /// Seeds with a dev accuracy at both horizons, the tuning seed left out.
    pub n_pairs: usize,
    /// Seeds with a test accuracy at both horizons.
    pub n_test_pairs: usize,
    /// The tuning seed, when it ran at both horizons and was left out of the dev pairs.
    pub tuning_seed_left_out: Option<u64>,
    /// Dev accuracy at `steps_to` minus at `steps_from`, over the paired seeds (`None` when no
    /// seed pairs).
    pub dev_gain: Option<Estimate>,
    /// The same for test accuracy, over every seed at both horizons.
    pub test_gain: Estimate,
    pub verdict: Verdict,
}

/// One run at one horizon: its dev accuracy unless its seed chose the settings, its test
/// accuracy, and whether its seed chose them.
#[derive(Debug, Clone, Copy)]
struct Run {
    dev: Option<f64>,
    test: f64,
    chose_settings: bool,
}

/// The steps up in T of every horizon family in `records` (methods of the grid `methods`).
pub fn plateau(spec: &Spec, methods: &[String], records: &[CellRecord]) -> Vec<PlateauStep> {
    // (task, ε, family) -> T -> seed -> its run.
    type BySeed = BTreeMap<u64, Run>;
    type Runs = BTreeMap<i64, BySeed>;
    let mut groups: BTreeMap<(String, Option<u64>, String), Runs> = BTreeMap::new();
    for r in records {
        if !methods.contains(&r.method) {
            continue;
        }
        let (Some(family), Some(t)) = (
            horizon_family(spec, methods, &r.method),
            r.config.get("steps").and_then(serde_json::Value::as_i64),
        ) else {
            continue;
        };
        let chose_settings = r.seed_chose_settings();
        let run = Run {
            dev: r.dev_accuracy.filter(|_| !chose_settings),
            test: r.test_accuracy,
            chose_settings,
        };
        groups
            .entry((r.task.clone(), r.epsilon.map(f64::to_bits), family))
            .or_default()
            .entry(t)
            .or_default()
            .insert(r.seed, run);
    }
    let mut out = Vec::new();
    for ((task, eps, family), by_t) in groups {
        let horizons: Vec<(&i64, &BySeed)> = by_t.iter().collect();
        for pair in horizons.windows(2) {
            let ((&from, a), (&to, b)) = (pair[0], pair[1]);
            // The seeds that ran at both horizons.
            let both: Vec<(u64, Run, Run)> = a
                .iter()
                .filter_map(|(seed, at_a)| Some((*seed, *at_a, *b.get(seed)?)))
                .collect();
            let test: Vec<f64> = both.iter().map(|(_, a, b)| b.test - a.test).collect();
            let dev: Vec<f64> = both
                .iter()
                .filter_map(|(_, a, b)| Some(b.dev? - a.dev?))
                .collect();
            let Some(test_gain) = estimate(&test) else {
                continue;
            };
            let dev_gain = estimate(&dev);
            let left_out = both
                .iter()
                .find(|(_, a, b)| a.chose_settings || b.chose_settings)
                .map(|(seed, _, _)| *seed);
            out.push(PlateauStep {
                task: task.clone(),
                epsilon: eps.map(f64::from_bits),
                family: family.clone(),
                steps_from: from,
                steps_to: to,
                n_pairs: dev.len(),
                n_test_pairs: test.len(),
                tuning_seed_left_out: left_out,
                verdict: Verdict::of(dev_gain.and_then(|g| g.ci95)),
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
                s.tuning_seed_left_out
                    .map_or(String::new(), |seed| seed.to_string()),
                s.n_test_pairs.to_string(),
            ];
            row.extend(estimate_cells(s.dev_gain));
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
            "n_dev_pairs",
            "tuning_seed_left_out",
            "n_test_pairs",
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
    let ci = |e: Option<&Estimate>| match e {
        Some(Estimate {
            mean,
            ci95: Some(ci),
        }) => format!("{mean:+.1} {}", signed_ci(*ci)),
        Some(e) => format!("{:+.1} (no CI)", e.mean),
        None => "no seed pairs".to_string(),
    };
    let mut md = format!(
        "## Dev plateau in T\n\nRule, fixed before the runs: a family has reached its plateau \
         by T when the dev-accuracy gain from T to the next T, paired by seed, has its whole 95% \
         interval below +{MARGIN_POINTS} point; it is still rising at T when the interval lies \
         above 0; otherwise undetermined. The seed whose dev set chose the settings (`--tune`'s \
         tuning seed) is left out of the dev pairs: its base run is the best of several \
         candidates on that dev set, so a dev gain from it is biased towards a plateau. The test \
         gain pairs every seed. `plateau.csv` has the figures.\n\n\
         | task | ε | family | T → next T | seeds (dev; test) | dev gain [95% CI] | test gain [95% CI] | verdict |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for s in steps {
        md.push_str(&format!(
            "| {} | {} | {} | {} → {} | {}{}; {} | {} | {} | {} |\n",
            s.task,
            eps_label(s.epsilon),
            s.family,
            s.steps_from,
            s.steps_to,
            s.n_pairs,
            s.tuning_seed_left_out
                .map_or(String::new(), |seed| format!(" (seed {seed} left out)")),
            s.n_test_pairs,
            ci(s.dev_gain.as_ref()),
            ci(Some(&s.test_gain)),
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
        let dev_gain = first.dev_gain.unwrap();
        assert!((dev_gain.mean - 5.0).abs() < 1e-12);
        let half = 4.302652729911275 * 1.0 / 3f64.sqrt();
        let (lo, hi) = dev_gain.ci95.unwrap();
        assert!((lo - (5.0 - half)).abs() < 1e-9 && (hi - (5.0 + half)).abs() < 1e-9);
        assert_eq!(first.verdict, Verdict::Rising);
        assert!((first.test_gain.mean - 5.0).abs() < 1e-12);
        let second = &steps[1];
        assert_eq!(
            (second.steps_from, second.steps_to, second.n_pairs),
            (1200, 2400, 2)
        );
        let dev_gain = second.dev_gain.unwrap();
        assert!((dev_gain.mean - 0.3).abs() < 1e-9);
        // Two seeds: sd of (0.2, 0.4) is sqrt(0.02), half-width t(1) * sd / sqrt 2 = 1.27.
        let half = 12.706204736174705 * 0.02f64.sqrt() / 2f64.sqrt();
        let (lo, hi) = dev_gain.ci95.unwrap();
        assert!((lo - (0.3 - half)).abs() < 1e-9 && (hi - (0.3 + half)).abs() < 1e-9);
        assert_eq!(second.verdict, Verdict::Undetermined, "{hi}");
        // Test pairs every seed, seed 42 too: 90 - 75, 90 - 77, 90 - 79.
        assert_eq!(second.n_test_pairs, 3);
        assert!((second.test_gain.mean - 13.0).abs() < 1e-9);
        assert_eq!(second.tuning_seed_left_out, None);
        let dir = std::env::temp_dir().join(format!("dpzo-plateau-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(write_csv(&steps, &dir.join("plateau.csv")).unwrap());
        let csv = std::fs::read_to_string(dir.join("plateau.csv")).unwrap();
        assert!(
            csv.contains("SST-2,4,dpzero,600,1200,3,,3,5.00,2.52,7.48,5.00,2.52,7.48,rising"),
            "{csv}"
        );
        let md = render_markdown(&steps);
        assert!(
            md.contains("| SST-2 | 4 | dpzero | 1200 → 2400 | 2; 3 | +0.3 [-1.0, +1.6] |"),
            "{md}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The seed whose dev set chose the settings is left out of the dev pairs (its base run is
    /// the best of the candidates on that dev set) but stays in the test pairs; with it left
    /// out, a selection-inflated base no longer reads as a plateau.
    #[test]
    fn the_tuning_seed_is_left_out_of_the_dev_pairs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let spec = Spec::load(&root.join("experiments/ablations.toml")).unwrap();
        let methods = super::super::ablation::methods_of(&spec, "mini-horizon").unwrap();
        let note: super::super::tune::TuningNote = serde_json::from_value(serde_json::json!({
            "tuning_seed": 13, "candidates": 5, "selected": 3,
            "selected_settings": { "learning_rate": 1e-4 }, "selected_dev_accuracy": 80.0,
            "epsilon_run": 4.0, "epsilon_procedure": 8.0, "runs_composed": 6,
            "accountant": "prv", "delta": 1e-3
        }))
        .unwrap();
        let mut records = Vec::new();
        // Seed 13's base dev (80) is the best candidate's; at T = 2400 it scores 78. The other
        // seeds gain 2, 3 and 4 points. With seed 13 paired the dev gain would be
        // (-2 + 2 + 3 + 4) / 4 = 1.75 with a CI reaching below 0; without it, 3 [0.52, 5.48].
        for (seed, dev1200, dev2400) in [
            (13, 80.0, 78.0),
            (21, 74.0, 76.0),
            (42, 73.0, 76.0),
            (87, 72.0, 76.0),
        ] {
            for (method, steps, dev) in [("dpzero", 1200, dev1200), ("dpzero-t2400", 2400, dev2400)]
            {
                let mut r = record(method, seed, steps, dev, Some(dev));
                r.tuning = Some(note.clone());
                records.push(r);
            }
        }
        let steps = plateau(&spec, methods, &records);
        assert_eq!(steps.len(), 1, "{steps:?}");
        let step = &steps[0];
        assert_eq!((step.n_pairs, step.n_test_pairs), (3, 4));
        assert_eq!(step.tuning_seed_left_out, Some(13));
        let dev_gain = step.dev_gain.unwrap();
        assert!((dev_gain.mean - 3.0).abs() < 1e-12);
        // sd of (2, 3, 4) is 1: half-width t(0.975, 2) / sqrt 3.
        let half = 4.302652729911275 / 3f64.sqrt();
        let (lo, hi) = dev_gain.ci95.unwrap();
        assert!((lo - (3.0 - half)).abs() < 1e-9 && (hi - (3.0 + half)).abs() < 1e-9);
        assert_eq!(step.verdict, Verdict::Rising);
        // Test (here equal to dev) pairs all four seeds: (-2 + 2 + 3 + 4) / 4.
        assert!((step.test_gain.mean - 1.75).abs() < 1e-12);
        let md = render_markdown(&steps);
        assert!(md.contains("| 3 (seed 13 left out); 4 |"), "{md}");
    }
}
