//! 95% confidence intervals for a test accuracy, or a seed-paired accuracy difference, that
//! account for both sources of chance in our numbers: the training seed and the test set.
//!
//! Layout: `n` seeds × `m` test examples. Every seed of a task is evaluated on the same test file
//! (the `k-shot-1k-test` splits share one `test.tsv` across seeds, and a capped split is drawn with
//! one fixed subsample seed), so seeds and examples are *crossed* random factors, and a paired
//! difference is paired by seed and by example (outcome −1, 0 or 1 per seed and example). The
//! statistic is the grand mean of x_sj = a_s + b_j + e_sj (seed effect, example effect, residual),
//! whose variance is σ²_seed/n + σ²_example/m + σ²_residual/(nm).
//!
//! Interval: grand mean ± t(0.975, df) · √V, with V = (MS_seeds + MS_examples − MS_residual)/(nm)
//! the unbiased two-way ANOVA estimate of that variance and df from Welch–Satterthwaite. MS_seeds
//! /(nm) is exactly s²/n of the per-seed values, so V is the seed-only variance plus the test-set
//! component; a negative test-set component estimate is set to zero (then the interval is the
//! seed-only t-interval). We use this closed form rather than the crossed ("pigeonhole")
//! bootstrap that resamples seeds and examples together: that bootstrap counts the residual
//! term about three times (Owen, Ann. Appl. Stat. 2007), and with 3 seeds and 0/1 outcomes the
//! residual dominates, so its intervals are far too wide (a simulation gave 100% coverage at a
//! nominal 95%). The coverage test below checks the closed form on simulated crossed data.
//!
//! Records without per-example outcomes (written before they existed) get the seed-only
//! t-interval, mean ± t(0.975, n − 1) · s / √n, which ignores test-set sampling; the caller says so.

use anyhow::{bail, Result};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Two-sided confidence level.
pub const LEVEL: f64 = 0.95;
/// Fewest seeds for an interval (a t-interval needs n − 1 ≥ 1 degrees of freedom).
pub const MIN_SEEDS: usize = 2;

/// One statistic observed over seeds, in percentage points.
#[derive(Debug, Clone)]
pub struct SeedSample {
    /// Per seed: the accuracy, or the paired difference of two accuracies, in points.
    pub values: Vec<f64>,
    /// Per seed, per test example (same example order for every seed): the outcome whose mean
    /// ×100 is that seed's value: 0/1 for an accuracy, −1/0/1 for a paired difference. `None`
    /// when a record lacks per-example outcomes.
    pub examples: Option<Vec<Vec<i8>>>,
}

/// How an interval was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalMethod {
    /// Seeds and test examples as crossed random factors (`examples` = m).
    SeedsAndExamples { examples: usize },
    /// Seed-only t-interval (no per-example outcomes).
    SeedsOnly,
}

impl IntervalMethod {
    /// Short description for notes and comparison.md.
    pub fn describe(self) -> String {
        match self {
            IntervalMethod::SeedsAndExamples { examples } => format!(
                "seeds × {examples} test examples, two-way variance components, Satterthwaite t"
            ),
            IntervalMethod::SeedsOnly => {
                "seed-only t-interval (records lack per-example outcomes; test-set sampling not counted)".into()
            }
        }
    }
}

/// A 95% interval around a mean over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    pub n_seeds: usize,
    pub method: IntervalMethod,
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample variance (n − 1).
fn sample_variance(xs: &[f64]) -> f64 {
    let m = mean(xs);
    xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0)
}

/// t(0.975, df).
fn t_quantile(df: f64) -> Result<f64> {
    let t = StudentsT::new(0.0, 1.0, df)
        .map_err(|e| anyhow::anyhow!("Student t with {df} degrees of freedom: {e}"))?;
    Ok(t.inverse_cdf(0.5 + LEVEL / 2.0))
}

/// The interval of `sample`; `None` with fewer than [`MIN_SEEDS`] seeds. Per-example outcomes of
/// unequal lengths, or whose mean disagrees with the seed's value, are an error.
pub fn interval(sample: &SeedSample) -> Result<Option<Interval>> {
    let n = sample.values.len();
    if n < MIN_SEEDS {
        return Ok(None);
    }
    let centre = mean(&sample.values);
    let seed_only = |centre: f64| -> Result<Option<Interval>> {
        let half =
            t_quantile((n - 1) as f64)? * (sample_variance(&sample.values) / n as f64).sqrt();
        Ok(Some(Interval {
            mean: centre,
            low: centre - half,
            high: centre + half,
            n_seeds: n,
            method: IntervalMethod::SeedsOnly,
        }))
    };
    let Some(examples) = &sample.examples else {
        return seed_only(centre);
    };
    if examples.len() != n {
        bail!("{n} seeds but per-example outcomes for {}", examples.len());
    }
    let m = examples[0].len();
    if m < 2 {
        bail!("{m} per-example outcome(s): an interval over test examples needs at least 2");
    }
    for (s, row) in examples.iter().enumerate() {
        if row.len() != m {
            bail!(
                "seed {s} has {} per-example outcomes, seed 0 has {m}: the seeds were not evaluated on the same test set",
                row.len()
            );
        }
        let from_examples = 100.0 * row.iter().map(|&x| f64::from(x)).sum::<f64>() / m as f64;
        if (from_examples - sample.values[s]).abs() > 1e-6 {
            bail!(
                "seed {s}: per-example outcomes give {from_examples:.4} points, the record says {:.4}",
                sample.values[s]
            );
        }
    }
    // Two-way crossed layout, one observation x_sj (points) per seed s and example j.
    let (nf, mf) = (n as f64, m as f64);
    let x = |s: usize, j: usize| 100.0 * f64::from(examples[s][j]);
    let seed_means: Vec<f64> = (0..n)
        .map(|s| (0..m).map(|j| x(s, j)).sum::<f64>() / mf)
        .collect();
    let example_means: Vec<f64> = (0..m)
        .map(|j| (0..n).map(|s| x(s, j)).sum::<f64>() / nf)
        .collect();
    let grand = mean(&seed_means);
    let ms_seeds = mf * seed_means.iter().map(|a| (a - grand).powi(2)).sum::<f64>() / (nf - 1.0);
    let ms_examples = nf
        * example_means
            .iter()
            .map(|b| (b - grand).powi(2))
            .sum::<f64>()
        / (mf - 1.0);
    let mut ss_residual = 0.0;
    for (s, seed_mean) in seed_means.iter().enumerate() {
        for (j, example_mean) in example_means.iter().enumerate() {
            ss_residual += (x(s, j) - seed_mean - example_mean + grand).powi(2);
        }
    }
    let ms_residual = ss_residual / ((nf - 1.0) * (mf - 1.0));
    // Var(grand mean) = σ²_seed/n + σ²_example/m + σ²_residual/(nm), estimated without bias by
    // (MS_seeds + MS_examples − MS_residual)/(nm). A negative test-set component estimate
    // (MS_examples < MS_residual) is set to zero, which leaves the seed-only t-interval.
    if ms_examples <= ms_residual {
        return Ok(seed_only(centre)?.map(|iv| Interval {
            method: IntervalMethod::SeedsAndExamples { examples: m },
            ..iv
        }));
    }
    let (seed_part, example_part) = (
        ms_seeds / (nf * mf),
        (ms_examples - ms_residual) / (nf * mf),
    );
    let variance = seed_part + example_part;
    // Welch–Satterthwaite degrees of freedom of the linear combination of mean squares.
    let term = |c_ms: f64, df: f64| c_ms * c_ms / df;
    let df = variance * variance
        / (term(seed_part, nf - 1.0)
            + term(ms_examples / (nf * mf), mf - 1.0)
            + term(ms_residual / (nf * mf), (nf - 1.0) * (mf - 1.0)));
    let half = t_quantile(df)? * variance.sqrt();
    Ok(Some(Interval {
        mean: centre,
        low: centre - half,
        high: centre + half,
        n_seeds: n,
        method: IntervalMethod::SeedsAndExamples { examples: m },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    /// The seed-only interval against the closed form with a tabulated t quantile.
    #[test]
    fn seed_only_interval_is_the_t_interval() {
        let values = vec![80.0, 82.0, 84.0];
        let iv = interval(&SeedSample {
            values,
            examples: None,
        })
        .unwrap()
        .unwrap();
        // mean 82, s = 2, n = 3; with 2 degrees of freedom the t quantile has the closed form
        // (2p − 1) / sqrt(2p(1 − p)), p = 0.975.
        let p: f64 = 0.975;
        let t2 = (2.0 * p - 1.0) / (2.0 * p * (1.0 - p)).sqrt();
        let half = t2 * 2.0 / 3f64.sqrt();
        assert!((iv.mean - 82.0).abs() < 1e-12);
        assert!((iv.low - (82.0 - half)).abs() < 1e-9, "{iv:?}");
        assert!((iv.high - (82.0 + half)).abs() < 1e-9, "{iv:?}");
        assert_eq!(iv.method, IntervalMethod::SeedsOnly);
    }

    /// A large test set makes the example-level variance negligible: the interval must then be
    /// the seed-only t-interval.
    #[test]
    fn large_test_set_reduces_to_the_seed_t_interval() {
        // Seeds at 60%, 70%, 80%, 65% on 20000 examples: outcomes i.i.d. per seed would add
        // example variance ~ 0.35 points² / 20000 — negligible against the seed variance.
        let m = 20_000;
        let accs = [0.60, 0.70, 0.80, 0.65];
        let examples: Vec<Vec<i8>> = accs
            .iter()
            .map(|&a| {
                let hits = (a * m as f64).round() as usize;
                (0..m).map(|j| i8::from(j < hits)).collect()
            })
            .collect();
        let values: Vec<f64> = accs.iter().map(|a| 100.0 * a).collect();
        let both = interval(&SeedSample {
            values: values.clone(),
            examples: Some(examples),
        })
        .unwrap()
        .unwrap();
        let t = interval(&SeedSample {
            values,
            examples: None,
        })
        .unwrap()
        .unwrap();
        let (wb, wt) = (both.high - both.low, t.high - t.low);
        assert!(
            (wb / wt - 1.0).abs() < 0.01,
            "seeds × examples {wb} vs seed-only t {wt}"
        );
        assert!((both.mean - t.mean).abs() < 1e-12);
    }

    /// Coverage on simulated data with all three sources of chance: seed effects N(0, 1²) points,
    /// a test set of 100 examples of uniform difficulty drawn anew per simulation (true accuracy
    /// 55%), and Bernoulli outcomes. The nominal 95% interval must cover 55 in ≈ 95% of 400
    /// simulations (binomial s.d. 1.1%); the seed-only interval, blind to the test-set draw,
    /// undercovers.
    #[test]
    fn interval_covers_the_true_mean_on_simulated_crossed_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n, m, sims) = (4, 100, 400);
        let seed_effect = Normal::new(0.0, 0.01).unwrap();
        let (mut covered, mut covered_seed_only) = (0, 0);
        for _ in 0..sims {
            // Each test example has a difficulty: its chance of being right, mean 0.55.
            let difficulty: Vec<f64> = (0..m).map(|_| rng.random_range(0.1..1.0)).collect();
            let mut values = Vec::new();
            let mut examples = Vec::new();
            for _ in 0..n {
                let shift: f64 = seed_effect.sample(&mut rng);
                let row: Vec<i8> = difficulty
                    .iter()
                    .map(|&p| i8::from(rng.random::<f64>() < (p + shift).clamp(0.0, 1.0)))
                    .collect();
                values.push(100.0 * row.iter().map(|&x| f64::from(x)).sum::<f64>() / m as f64);
                examples.push(row);
            }
            let seed_only = interval(&SeedSample {
                values: values.clone(),
                examples: None,
            })
            .unwrap()
            .unwrap();
            let iv = interval(&SeedSample {
                values,
                examples: Some(examples),
            })
            .unwrap()
            .unwrap();
            covered += usize::from(iv.low <= 55.0 && 55.0 <= iv.high);
            covered_seed_only += usize::from(seed_only.low <= 55.0 && 55.0 <= seed_only.high);
        }
        let coverage = covered as f64 / sims as f64;
        let seed_only = covered_seed_only as f64 / sims as f64;
        assert!(seed_only < 0.9, "seed-only coverage {seed_only}");
        assert!(
            (0.92..=0.98).contains(&coverage),
            "coverage {coverage} of a nominal 95% interval"
        );
    }

    /// Identical seeds (no seed effect, no residual): the interval is the one-sample t-interval
    /// over the test examples' outcomes, mean ± t(0.975, m − 1) · s_examples / √m.
    #[test]
    fn identical_seeds_give_the_t_interval_over_examples() {
        let row: Vec<i8> = (0..50).map(|j| i8::from(j % 3 != 0)).collect();
        let m = row.len() as f64;
        let xs: Vec<f64> = row.iter().map(|&x| 100.0 * f64::from(x)).collect();
        let value = mean(&xs);
        let iv = interval(&SeedSample {
            values: vec![value; 3],
            examples: Some(vec![row.clone(), row.clone(), row]),
        })
        .unwrap()
        .unwrap();
        let t = StudentsT::new(0.0, 1.0, m - 1.0)
            .unwrap()
            .inverse_cdf(0.975);
        let half = t * (sample_variance(&xs) / m).sqrt();
        assert!((iv.low - (value - half)).abs() < 1e-9, "{iv:?}");
        assert!((iv.high - (value + half)).abs() < 1e-9, "{iv:?}");
    }

    #[test]
    fn one_seed_gives_no_interval_and_bad_outcomes_are_errors() {
        let one = SeedSample {
            values: vec![50.0],
            examples: None,
        };
        assert!(interval(&one).unwrap().is_none());
        let mismatched = SeedSample {
            values: vec![50.0, 100.0],
            examples: Some(vec![vec![1, 0], vec![1, 1, 1]]),
        };
        assert!(interval(&mismatched).is_err());
        let disagreeing = SeedSample {
            values: vec![50.0, 50.0],
            examples: Some(vec![vec![1, 0], vec![1, 1]]),
        };
        let err = interval(&disagreeing).unwrap_err().to_string();
        assert!(err.contains("seed 1"), "{err}");
    }
}
