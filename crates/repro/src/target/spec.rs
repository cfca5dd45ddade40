//! Experiments as data: `experiments/<target>.toml` parsed into a grid of run specs.
//!
//! Layout of a spec file:
//! - `[meta]`: the paper artefact, where its numbers live (`paper-tables/<target>.csv`) and which rows of
//!   that file are the paper's own (`paper_source` prefix).
//! - `[grid]`: tasks, methods, epsilons and seeds. Zero-shot and non-private methods ignore epsilon.
//! - `[train]`: trainer settings shared by every run; `[method.<name>]` overrides them per method.
//! - `[preset.<name>]`: model, optional grid overrides, `[preset.<name>.train]` overrides and the
//!   list of deviations from the paper's protocol that the preset makes.
//!
//! Settings are kept as TOML tables and merged, weakest to strongest: `[train]` (the defaults) <
//! `[preset.<p>.train]` < `[method.<m>]` < `[preset.<p>.method.<m>]`. A preset's general settings
//! never replace a method's own; only the preset's method table does. The result is handed to the
//! trainer, which rejects unknown keys.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A whole spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub meta: Meta,
    pub grid: Grid,
    #[serde(default)]
    pub train: toml::Table,
    #[serde(default)]
    pub method: BTreeMap<String, toml::Table>,
    pub preset: BTreeMap<String, Preset>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Target name, equal to the file stem (`table2`).
    pub target: String,
    pub title: String,
    /// CSV of published numbers, relative to the workspace root.
    pub paper_table: String,
    /// Rows of `paper_table` whose `source` starts with this are the paper's own numbers; the
    /// others are secondary anchors (DPZero, MeZO).
    pub paper_source: String,
    /// The metric compared (`accuracy`).
    pub metric: String,
    /// Paper model name as keyed in the paper table (`roberta-large`).
    pub paper_model: String,
    /// Absolute tolerance (percentage points) within which a cell counts as matching, with reason.
    pub tolerance_points: f64,
    pub tolerance_reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub tasks: Vec<String>,
    pub methods: Vec<String>,
    pub epsilons: Vec<f64>,
    pub seeds: Vec<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub description: String,
    /// `model-dir` (the user's `--model-dir`), or a named asset such as `smollm2-135m`.
    pub model: String,
    /// Device class the preset is meant for (`cuda` or `cpu`); `auto` picks by this.
    pub device: String,
    #[serde(default)]
    pub tasks: Option<Vec<String>>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub epsilons: Option<Vec<f64>>,
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    /// Stand-in task used when the real task's data is missing (`SST-2` -> `polarity`).
    #[serde(default)]
    pub stand_ins: BTreeMap<String, String>,
    #[serde(default)]
    pub train: toml::Table,
    #[serde(default)]
    pub method: BTreeMap<String, toml::Table>,
    /// Every deviation of this preset from the paper's protocol, printed and recorded.
    pub deviations: Vec<String>,
}

/// One cell of the grid for one seed, with its merged settings.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub target: String,
    pub preset: String,
    pub task: String,
    pub method: String,
    /// `None` for methods without a privacy budget (zero-shot, MeZO, non-private FT).
    pub epsilon: Option<f64>,
    pub seed: u64,
    pub settings: toml::Table,
}

impl RunSpec {
    /// File-name stem: `SST-2__dp-zopo__eps4__seed13`.
    pub fn stem(&self) -> String {
        let eps = match self.epsilon {
            Some(e) => format!("eps{e}"),
            None => "nonprivate".to_string(),
        };
        format!("{}__{}__{}__seed{}", self.task, self.method, eps, self.seed)
    }
}

/// Methods that spend no privacy budget and so run once per (task, seed).
pub fn is_non_private(method: &str) -> bool {
    matches!(method, "zero-shot" | "mezo" | "ft")
}

impl Spec {
    /// Parse `experiments/<target>.toml`.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment spec {}", path.display()))?;
        let spec: Spec = toml::from_str(&text)
            .with_context(|| format!("invalid experiment spec {}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if spec.meta.target != stem {
            bail!(
                "{}: meta.target = {:?} but the file is named {stem:?}",
                path.display(),
                spec.meta.target
            );
        }
        Ok(spec)
    }

    /// The preset called `name`, or an error listing the available ones.
    pub fn preset(&self, name: &str) -> Result<&Preset> {
        self.preset.get(name).with_context(|| {
            let names: Vec<&str> = self.preset.keys().map(String::as_str).collect();
            format!(
                "unknown preset {name:?} for {}: available {names:?}",
                self.meta.target
            )
        })
    }

    /// Expand the grid of `preset` into run specs, in a stable order.
    pub fn runs(&self, preset_name: &str) -> Result<Vec<RunSpec>> {
        let preset = self.preset(preset_name)?;
        let tasks = preset.tasks.as_ref().unwrap_or(&self.grid.tasks);
        let methods = preset.methods.as_ref().unwrap_or(&self.grid.methods);
        let epsilons = preset.epsilons.as_ref().unwrap_or(&self.grid.epsilons);
        let seeds = preset.seeds.as_ref().unwrap_or(&self.grid.seeds);
        for e in epsilons {
            if !(e.is_finite() && *e > 0.0) {
                bail!(
                    "{}: epsilon {e} in the grid must be finite and > 0",
                    self.meta.target
                );
            }
        }
        let mut out = Vec::new();
        for task in tasks {
            for method in methods {
                let eps_list: Vec<Option<f64>> = if is_non_private(method) {
                    vec![None]
                } else {
                    epsilons.iter().map(|e| Some(*e)).collect()
                };
                for epsilon in eps_list {
                    for &seed in seeds {
                        let settings = self.settings(preset, method);
                        out.push(RunSpec {
                            target: self.meta.target.clone(),
                            preset: preset_name.to_string(),
                            task: task.clone(),
                            method: method.clone(),
                            epsilon,
                            seed,
                            settings,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Spec {
    /// The effective settings of `method` under `preset` (precedence in the module docs).
    pub fn settings(&self, preset: &Preset, method: &str) -> toml::Table {
        let mut settings = self.train.clone();
        merge(&mut settings, Some(&preset.train));
        merge(&mut settings, self.method.get(method));
        merge(&mut settings, preset.method.get(method));
        settings
    }
}

/// Overlay `over` onto `base`, key by key (nested tables merge recursively).
fn merge(base: &mut toml::Table, over: Option<&toml::Table>) {
    let Some(over) = over else { return };
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, Some(o)),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn every_committed_spec_parses_and_expands() {
        let dir = workspace().join("experiments");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml")
                || path.ends_with("tasks.toml")
            {
                continue;
            }
            let spec = Spec::load(&path).unwrap();
            for name in spec.preset.keys() {
                let runs = spec.runs(name).unwrap();
                assert!(
                    !runs.is_empty(),
                    "{}: preset {name} expands to no run",
                    path.display()
                );
            }
            seen += 1;
        }
        assert!(seen >= 1, "no experiment spec found in {}", dir.display());
    }

    #[test]
    fn settings_precedence_is_defaults_preset_method_preset_method() {
        let text = r#"
            [meta]
            target = "t"
            title = "x"
            paper_table = "p.csv"
            paper_source = "liu"
            metric = "accuracy"
            paper_model = "m"
            tolerance_points = 1.0
            tolerance_reason = "r"
            [grid]
            tasks = ["A"]
            methods = ["zero-shot", "dpzero"]
            epsilons = [2.0, 4.0]
            seeds = [1]
            [train]
            steps = 100
            lr = 1.0
            clip = 1.0
            [method.dpzero]
            lr = 2.0
            batch = 8
            [preset.p]
            description = "d"
            model = "m"
            device = "cpu"
            deviations = []
            [preset.p.train]
            steps = 5
            lr = 3.0
            clip = 7.0
            [preset.p.method.dpzero]
            batch = 4
        "#;
        let spec: Spec = toml::from_str(text).unwrap();
        let runs = spec.runs("p").unwrap();
        assert_eq!(runs.len(), 3, "zero-shot once, dpzero at two epsilons");
        let dp = runs.iter().find(|r| r.method == "dpzero").unwrap();
        // The method's own lr beats the preset's general one ...
        assert_eq!(dp.settings["lr"].as_float(), Some(2.0));
        // ... the preset's general settings beat the defaults ...
        assert_eq!(dp.settings["steps"].as_integer(), Some(5));
        assert_eq!(dp.settings["clip"].as_float(), Some(7.0));
        // ... and the preset's method table beats the method's.
        assert_eq!(dp.settings["batch"].as_integer(), Some(4));
        let zs = runs.iter().find(|r| r.method == "zero-shot").unwrap();
        assert_eq!(zs.settings["lr"].as_float(), Some(3.0));
        assert!(runs[0].epsilon.is_none());
        assert!(spec
            .runs("nope")
            .unwrap_err()
            .to_string()
            .contains("available"));
    }

    /// Every committed preset of table2 and table3 gives each method the values of its own
    /// `[method.<m>]` table unless the preset's `[preset.<p>.method.<m>]` sets them.
    #[test]
    fn committed_presets_keep_each_methods_own_settings() {
        for target in ["table2", "table3"] {
            let path = workspace().join(format!("experiments/{target}.toml"));
            let spec = Spec::load(&path).unwrap();
            for (name, preset) in &spec.preset {
                for run in spec.runs(name).unwrap() {
                    let Some(own) = spec.method.get(&run.method) else {
                        continue;
                    };
                    let preset_own = preset.method.get(&run.method);
                    for (key, value) in own {
                        let expected = preset_own.and_then(|t| t.get(key)).unwrap_or(value);
                        if value.is_table() {
                            continue;
                        }
                        assert_eq!(
                            run.settings.get(key),
                            Some(expected),
                            "{target} preset {name}: {} setting {key}",
                            run.method
                        );
                    }
                }
            }
        }
        // The case that went wrong: DP-SGD's step size is its own (0.05) in every table2 preset.
        let spec = Spec::load(&workspace().join("experiments/table2.toml")).unwrap();
        for name in spec.preset.keys() {
            for run in spec.runs(name).unwrap() {
                if run.method == "dp-ft" {
                    assert_eq!(
                        run.settings["learning_rate"].as_float(),
                        Some(0.05),
                        "table2 preset {name}"
                    );
                }
            }
        }
    }
}
