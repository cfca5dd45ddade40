//! The grid filters `--tasks`, `--methods`, `--seeds` and `--epsilons`, checked against the
//! preset's grid: an unknown or invalid value is an error that names it and lists the valid
//! ones (never a silently smaller grid). Task and method names match case-insensitively where
//! that is unambiguous.

use super::spec::RunSpec;
use anyhow::{bail, Result};

/// The filter values given on the command line (`None`: no filter).
#[derive(Debug, Clone, Copy, Default)]
pub struct Filters<'a> {
    /// `--tasks`.
    pub tasks: Option<&'a [String]>,
    /// `--methods`.
    pub methods: Option<&'a [String]>,
    /// `--seeds`.
    pub seeds: Option<&'a [u64]>,
    /// `--epsilons` (non-private runs are kept).
    pub epsilons: Option<&'a [f64]>,
}

/// The distinct values of `key` over the grid, in grid order.
fn distinct<T: PartialEq + Clone>(runs: &[RunSpec], key: impl Fn(&RunSpec) -> T) -> Vec<T> {
    let mut values: Vec<T> = Vec::new();
    for r in runs {
        let v = key(r);
        if !values.contains(&v) {
            values.push(v);
        }
    }
    values
}

/// The grid's spelling of a name given on the command line: exact, else the one
/// case-insensitive match.
fn resolve_name(kind: &str, given: &str, valid: &[String], where_: &str) -> Result<String> {
    if let Some(exact) = valid.iter().find(|v| v.as_str() == given.trim()) {
        return Ok(exact.clone());
    }
    let matches: Vec<&String> = valid
        .iter()
        .filter(|v| v.eq_ignore_ascii_case(given.trim()))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "unknown {kind} {given:?} for {where_}; valid: {}",
            valid.join(", ")
        ),
        many => bail!(
            "{kind} {given:?} is ambiguous for {where_}: it matches {} (case differs); give it exactly",
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn list<T: std::fmt::Display>(values: &[T]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runs of `runs` (one preset's grid; `where_` names it in errors) that the filters keep.
///
/// # Errors
/// A filter value that is not in the grid, an ε that is not finite and > 0, or filters that
/// together leave no run.
pub fn apply(runs: Vec<RunSpec>, filters: Filters, where_: &str) -> Result<Vec<RunSpec>> {
    let tasks = distinct(&runs, |r| r.task.clone());
    let methods = distinct(&runs, |r| r.method.clone());
    let seeds = distinct(&runs, |r| r.seed);
    let mut epsilons: Vec<f64> = Vec::new();
    for e in runs.iter().filter_map(|r| r.epsilon) {
        if !epsilons.contains(&e) {
            epsilons.push(e);
        }
    }
    let wanted_tasks = filters
        .tasks
        .map(|given| {
            given
                .iter()
                .map(|t| resolve_name("task", t, &tasks, where_))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let wanted_methods = filters
        .methods
        .map(|given| {
            given
                .iter()
                .map(|m| resolve_name("method", m, &methods, where_))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    if let Some(given) = filters.seeds {
        if let Some(bad) = given.iter().find(|s| !seeds.contains(s)) {
            bail!(
                "seed {bad} is not in the grid of {where_}; valid: {}",
                list(&seeds)
            );
        }
    }
    if let Some(given) = filters.epsilons {
        for e in given {
            if !(e.is_finite() && *e > 0.0) {
                bail!(
                    "--epsilons: {e} is not a privacy budget (must be finite and > 0); the grid of {where_} has {}",
                    list(&epsilons)
                );
            }
            if !epsilons.contains(e) {
                bail!(
                    "--epsilons: {e} is not in the grid of {where_}; valid: {}",
                    list(&epsilons)
                );
            }
        }
    }
    let kept: Vec<RunSpec> = runs
        .into_iter()
        .filter(|r| wanted_tasks.as_ref().is_none_or(|t| t.contains(&r.task)))
        .filter(|r| {
            wanted_methods
                .as_ref()
                .is_none_or(|m| m.contains(&r.method))
        })
        .filter(|r| filters.seeds.is_none_or(|s| s.contains(&r.seed)))
        .filter(|r| {
            filters
                .epsilons
                .is_none_or(|e| r.epsilon.is_none_or(|eps| e.contains(&eps)))
        })
        .collect();
    if kept.is_empty() {
        bail!("the filters leave no run of {where_}");
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<RunSpec> {
        let mut runs = Vec::new();
        for task in ["SST-2", "TREC"] {
            for (method, epsilons) in [
                ("zero-shot", vec![None]),
                ("dpzero", vec![Some(2.0), Some(8.0)]),
            ] {
                for epsilon in epsilons {
                    runs.push(RunSpec {
                        target: "table2".into(),
                        preset: "smoke".into(),
                        task: task.into(),
                        method: method.into(),
                        epsilon,
                        seed: 13,
                        settings: toml::Table::new(),
                    });
                }
            }
        }
        runs
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_method_is_named_with_the_valid_ones() {
        let methods = strings(&["dpzer", "dpzero"]);
        let err = apply(
            grid(),
            Filters {
                methods: Some(&methods),
                ..Filters::default()
            },
            "table2 preset smoke",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"dpzer\"") && err.contains("zero-shot, dpzero"),
            "{err}"
        );
    }

    #[test]
    fn invalid_or_absent_epsilons_are_errors() {
        for bad in [0.0, f64::NAN, f64::INFINITY, -1.0, 4.0] {
            let err = apply(
                grid(),
                Filters {
                    epsilons: Some(&[bad]),
                    ..Filters::default()
                },
                "table2 preset smoke",
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&bad.to_string()) && err.contains("2, 8"),
                "{err}"
            );
        }
        // A valid budget keeps its runs and the non-private ones.
        let kept = apply(
            grid(),
            Filters {
                epsilons: Some(&[8.0]),
                ..Filters::default()
            },
            "x",
        )
        .unwrap();
        assert_eq!(kept.len(), 4);
    }

    #[test]
    fn task_names_match_case_insensitively() {
        let tasks = strings(&["sst-2"]);
        let kept = apply(
            grid(),
            Filters {
                tasks: Some(&tasks),
                ..Filters::default()
            },
            "x",
        )
        .unwrap();
        assert!(kept.iter().all(|r| r.task == "SST-2") && kept.len() == 3);
        let err = apply(
            grid(),
            Filters {
                seeds: Some(&[42]),
                ..Filters::default()
            },
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("42") && err.contains("13"), "{err}");
    }

    #[test]
    fn ambiguous_case_insensitive_names_are_refused() {
        let mut runs = grid();
        runs[0].task = "sst-2".into();
        let tasks = strings(&["Sst-2"]);
        let err = apply(
            runs,
            Filters {
                tasks: Some(&tasks),
                ..Filters::default()
            },
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ambiguous"), "{err}");
    }
}
