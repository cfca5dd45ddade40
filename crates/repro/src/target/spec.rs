//! Experiments as data: `experiments/<target>.toml` parsed into a grid of run specs.
//!
//! Layout of a spec file:
//! - `[meta]`: the paper artefact, where its numbers live (`paper-tables/<target>.csv`) and which rows of
//!   that file are the paper's own (`paper_source` prefix).
//! - `[grid]`: tasks, methods, epsilons and seeds. Zero-shot and non-private methods ignore epsilon.
//! - `[train]`: trainer settings shared by every run; `[method.<name>]` overrides them per method.
//! - `[tune.<method>]`: the method's hyper-parameter search space (`--tune`, [`TuneSpace`]).
//! - `[preset.<name>]`: model, optional grid overrides, `[preset.<name>.train]` overrides,
//!   `[preset.<name>.method.<m>]` and `[preset.<name>.tune.<m>]`, and the list of deviations from
//!   the paper's protocol that the preset makes.
//!
//! - `include = "<other>.toml"` (top level, optional): the other spec's `[train]`, `[method.*]`
//!   and `[tune.*]` lie beneath this file's own ([`with_included`]), so tables two targets share
//!   are written once.
//!
//! Settings are kept as TOML tables and merged, weakest to strongest: `[train]` (the defaults) <
//! `[preset.<p>.train]` < `[method.<m>]` < `[preset.<p>.method.<m>]`. A preset's general settings
//! never replace a method's own; only the preset's method table does. The result is handed to the
//! trainer, which rejects unknown keys.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// `include = "<file>.toml"`: a spec that takes its shared tables from another spec.
const INCLUDE_KEY: &str = "include";

/// The tables an include takes: the shared settings, method tables and search spaces (never the
/// other file's meta, grid, variants or presets).
const INCLUDED_TABLES: [&str; 3] = ["train", "method", "tune"];

/// `own` with the included file's shared tables beneath its own: `[train]` and each
/// `[method.<m>]` merge key by key (nested tables too), this file's values winning; a
/// `[tune.<m>]` of this file replaces the included space of that method as a whole. The path is
/// relative to the including file; an included file may not include another.
fn with_included(path: &Path, mut own: toml::Table) -> Result<toml::Table> {
    let Some(include) = own.remove(INCLUDE_KEY) else {
        return Ok(own);
    };
    let name = include.as_str().with_context(|| {
        format!(
            "{}: include = {include}: expected the file name of another spec",
            path.display()
        )
    })?;
    let included_path = path.parent().unwrap_or(Path::new(".")).join(name);
    let text = std::fs::read_to_string(&included_path).with_context(|| {
        format!(
            "{}: include = {name:?}: cannot read {}",
            path.display(),
            included_path.display()
        )
    })?;
    let mut included: toml::Table = toml::from_str(&text)
        .with_context(|| format!("invalid experiment spec {}", included_path.display()))?;
    if included.contains_key(INCLUDE_KEY) {
        bail!(
            "{}: the included {} includes another file; one level of include only",
            path.display(),
            included_path.display()
        );
    }
    for key in INCLUDED_TABLES {
        let Some(theirs) = included.remove(key) else {
            continue;
        };
        let as_table = |v: toml::Value, whose: &Path| match v {
            toml::Value::Table(t) => Ok(t),
            other => bail!("{}: {key} = {other} is not a table", whose.display()),
        };
        let theirs = as_table(theirs, &included_path)?;
        let merged = match own.remove(key) {
            None => theirs,
            Some(mine) => {
                let mine = as_table(mine, path)?;
                if key == "tune" {
                    let mut spaces = theirs;
                    spaces.extend(mine);
                    spaces
                } else {
                    overlaid(&theirs, &mine)
                }
            }
        };
        own.insert(key.into(), toml::Value::Table(merged));
    }
    Ok(own)
}

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
    /// `[tune.<method>]`: search spaces for `--tune`.
    #[serde(default)]
    pub tune: BTreeMap<String, toml::Table>,
    /// `[variant.<name>]`: named ablations, each a base method with setting overrides; a grid
    /// method may name one.
    #[serde(default)]
    pub variant: BTreeMap<String, Variant>,
    pub preset: BTreeMap<String, Preset>,
}

/// The settings key under which a variant's cells carry their base method (so the spec hash
/// covers it and the trainer learns which method to run).
pub const BASE_METHOD_KEY: &str = "base_method";

/// `[variant.<name>]`: an ablation of a base method.
///
/// Its settings resolve as the base's (`[train]` < `[preset.<p>.train]` < `[method.<base>]` <
/// `[preset.<p>.method.<base>]`), then `settings`, then `[preset.<p>.method.<name>]`, and finally
/// the step-size rule. `--tune` uses `[tune.<name>]` if given, else the base's space.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The method it modifies (a method the trainer knows: `dp-zopo`, `dpzero`, ...).
    pub base: String,
    /// What the variant isolates, in words (printed in the ablation report).
    pub description: String,
    /// The grid method it is compared with, paired by seed (default: `base`).
    #[serde(default)]
    pub compare_to: Option<String>,
    /// What the comparison isolates, shared by the variants that isolate the same thing (`DP-ZOPO
    /// mask ratio`): `ablations.svg` draws each group under this label, in the order the grid
    /// first lists a member ([`Variant::group_label`]).
    #[serde(default)]
    pub group: Option<String>,
    /// Setting overrides laid over the base's settings.
    #[serde(default)]
    pub settings: toml::Table,
    /// How the variant's step size follows from the base's.
    #[serde(default)]
    pub step_size: VariantStepSize,
    /// A horizon variant: the base's `steps` and `stage.first_stage_steps` times this factor
    /// (each product a whole number), so the stage proportions are kept; the trainer calibrates
    /// the noise to the new T at the same ε. Applied before the step-size rule.
    #[serde(default)]
    pub steps_scale: Option<f64>,
    /// The method whose tuned settings the variant takes under `[preset.<p>.inherit_tuning]`
    /// (default: `base`), e.g. `dpzero` for MeZO, which the source target does not tune.
    #[serde(default)]
    pub tune_from: Option<String>,
}

/// The group of a variant without `group`.
pub const UNGROUPED: &str = "other";

impl Variant {
    /// `group`, else [`UNGROUPED`].
    pub fn group_label(&self) -> &str {
        self.group.as_deref().unwrap_or(UNGROUPED)
    }
}

/// `[preset.<p>.inherit_tuning]`: every run whose method is tuned takes, instead of its own
/// defaults or its own `--tune`, the settings that another target's `--tune` selected for the
/// same (task, method, ε) under a preset of the same name (`target::tune::inherit`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InheritTuning {
    /// The target whose tuning records supply the settings (`table2`): read from
    /// `<out>/<target>/<preset>/`, with `experiments/<target>.toml` for its search spaces.
    pub target: String,
    /// The source target's preset (default: this preset's name).
    #[serde(default)]
    pub preset: Option<String>,
    /// The ε whose winner a non-private run (MeZO, σ = 0) takes; default the preset's only ε.
    #[serde(default)]
    pub non_private_epsilon: Option<f64>,
}

/// `[preset.<p>.tune_options.take_over]`: `--tune` under this preset first copies in the
/// records of its very runs (same spec hash) that another target's tuned preset already holds,
/// rather than running them again (`target::tune::take_over`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeOver {
    /// The target holding the records (`table2`), read from `<out>/<target>/<preset>/`.
    pub target: String,
    /// Its preset (default: this preset's name).
    #[serde(default)]
    pub preset: Option<String>,
}

/// `[preset.<p>.tune_options]`: how `--tune` forms its groups under this preset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneOptions {
    /// Run the candidates at this ε only: the groups of the same (task, method) at the other ε
    /// reuse its winner, and their procedure ε composes its candidates with their final run.
    /// Off by default (each ε is tuned on its own); a deviation to state where it is on.
    #[serde(default)]
    pub at_epsilon: Option<f64>,
    /// Records of identical runs to copy in before running ([`TakeOver`]).
    #[serde(default)]
    pub take_over: Option<TakeOver>,
}

/// How a variant's step size is derived from its base's resolved settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VariantStepSize {
    /// The resolved `learning_rate` as it is (the variant may set its own).
    #[default]
    AsSet,
    /// eta times r_base / r_variant (mask ratios): eta r, the step size per unit of the dense
    /// method's, stays the base's (the rule of [`StepSizeScaling::InverseMaskRatio`]).
    InverseMaskRatio,
    /// eta0 such that the sum of the step sizes over the run equals the base's (e.g. halving
    /// off: a constant eta0' = eta0 sum_t 2^-s(t) / T).
    MatchedTotal,
}

fn mask_ratio(settings: &toml::Table) -> Option<f64> {
    settings
        .get("mask")
        .and_then(|m| m.get("score"))
        .and_then(|s| s.get("ratio"))
        .and_then(toml::Value::as_float)
}

fn int_setting(table: &toml::Table, key: &str) -> Result<u64> {
    table
        .get(key)
        .and_then(toml::Value::as_integer)
        .and_then(|v| u64::try_from(v).ok())
        .with_context(|| format!("needs a non-negative integer {key} setting"))
}

/// `steps` and `stage.first_stage_steps` (when set) times `scale`, each a whole number >= 1.
fn scale_horizon(settings: &mut toml::Table, scale: f64) -> Result<()> {
    if !(scale.is_finite() && scale > 0.0) {
        bail!("steps_scale = {scale}: must be a finite number > 0");
    }
    let scaled = |key: &str, value: u64| -> Result<toml::Value> {
        let x = value as f64 * scale;
        if x < 1.0 || (x - x.round()).abs() > 1e-9 {
            bail!(
                "steps_scale = {scale}: {key} = {value} x {scale} = {x} is not a whole number >= 1"
            );
        }
        Ok(toml::Value::Integer(x.round() as i64))
    };
    let steps = int_setting(settings, "steps")?;
    settings.insert("steps".into(), scaled("steps", steps)?);
    if let Some(toml::Value::Table(stage)) = settings.get_mut("stage") {
        if stage.contains_key("first_stage_steps") {
            let t0 = int_setting(stage, "first_stage_steps")?;
            stage.insert(
                "first_stage_steps".into(),
                scaled("stage.first_stage_steps", t0)?,
            );
        }
    }
    Ok(())
}

/// The sum of the stagewise step sizes over the run at eta0 = 1 (schedule::StagewiseSchedule).
fn total_step_size_factor(settings: &toml::Table) -> Result<f64> {
    let steps = int_setting(settings, "steps")?;
    let stage = settings
        .get("stage")
        .and_then(toml::Value::as_table)
        .context("needs a stage setting (a stagewise base method)")?;
    let t0 = int_setting(stage, "first_stage_steps")?;
    let stages = int_setting(stage, "num_stages")?;
    let halving = stage
        .get("step_halving")
        .and_then(toml::Value::as_bool)
        .unwrap_or(true);
    let capacity = t0.saturating_mul((1u64 << stages.min(62)) - 1);
    let schedule = schedule::StagewiseSchedule::new(
        1.0,
        t0 as usize,
        stages as usize,
        steps.min(capacity) as usize,
        1.0,
        1.0,
        schedule::MuSchedule::Geometric,
    )
    .map_err(|e| anyhow::anyhow!("stage settings: {e}"))?;
    Ok(if halving {
        schedule
    } else {
        schedule.without_step_halving()
    }
    .total_step_size())
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
    /// `[[grid.exclude]]`: (task, method) pairs left out of every preset's grid, each with why.
    #[serde(default)]
    pub exclude: Vec<Exclusion>,
}

/// `[[preset.<p>.extra_seeds]]`: seeds beyond the preset's for some methods (at some ε), decided
/// before their runs, e.g. where the claims' intervals need more seeds than the rest of the grid
/// (`precision.csv`). Runs on them come after the preset's seeds of the same cell.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraSeeds {
    pub methods: Vec<String>,
    /// The ε they apply to; every ε of the preset when absent (non-private methods only then).
    #[serde(default)]
    pub epsilons: Option<Vec<f64>>,
    pub seeds: Vec<u64>,
    /// Why, printed with the deviations.
    pub reason: String,
}

impl ExtraSeeds {
    /// Whether these seeds apply to `method` at `epsilon`.
    fn applies(&self, method: &str, epsilon: Option<f64>) -> bool {
        self.methods.iter().any(|m| m == method)
            && match (&self.epsilons, epsilon) {
                (None, _) => true,
                (Some(list), Some(e)) => list.iter().any(|x| (x - e).abs() < 1e-12),
                (Some(_), None) => false,
            }
    }
}

/// A (task, method) pair the grid does not run, and the reason (a method not defined for the
/// task, e.g. contextual calibration of a multiple-choice task).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    pub task: String,
    pub method: String,
    pub reason: String,
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
    /// `[preset.<p>.tune.<m>]`: replaces the whole `[tune.<m>]` space under this preset.
    #[serde(default)]
    pub tune: BTreeMap<String, toml::Table>,
    /// Every deviation of this preset from the paper's protocol, printed and recorded.
    pub deviations: Vec<String>,
    /// Settings taken from another target's tuning records ([`InheritTuning`]).
    #[serde(default)]
    pub inherit_tuning: Option<InheritTuning>,
    /// How `--tune` forms its groups ([`TuneOptions`]).
    #[serde(default)]
    pub tune_options: TuneOptions,
    /// More seeds for some methods ([`ExtraSeeds`]).
    #[serde(default)]
    pub extra_seeds: Vec<ExtraSeeds>,
    /// Grid methods that every variant of this (ablation) preset is also compared with, beside
    /// the reference it names: e.g. each mask variant against DPZero as well as against
    /// DP-ZOPO. They form a family of their own in `ablations.md` (`ablations_also.csv`), so
    /// they widen no simultaneous CI of the comparisons the variants name.
    #[serde(default)]
    pub also_compare_to: Vec<String>,
}

/// One cell of the grid for one seed, with its merged settings.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub target: String,
    pub preset: String,
    pub task: String,
    pub method: String,
    /// `None` for methods without a privacy budget (zero-shot, calibrated zero-shot, MeZO,
    /// non-private FT).
    pub epsilon: Option<f64>,
    pub seed: u64,
    pub settings: toml::Table,
}

impl RunSpec {
    /// File-name stem: `SST-2__dp-zopo__eps4__seed13`.
    pub fn stem(&self) -> String {
        stem_of(&self.task, &self.method, self.epsilon, self.seed)
    }
}

/// The file-name stem of a run (its record is `runs/<stem>.json`): `SST-2__dp-zopo__eps4__seed13`.
pub fn stem_of(task: &str, method: &str, epsilon: Option<f64>, seed: u64) -> String {
    let eps = match epsilon {
        Some(e) => format!("eps{e}"),
        None => "nonprivate".to_string(),
    };
    format!("{task}__{method}__{eps}__seed{seed}")
}

/// Methods that spend no privacy budget and so run once per (task, seed).
pub fn is_non_private(method: &str) -> bool {
    matches!(
        method,
        "zero-shot"
            | "zero-shot-calibrated"
            | "zero-shot-dev-bias"
            | "mezo"
            | "ft"
            | "dpzero-no-noise"
    )
}

impl Spec {
    /// Parse `experiments/<target>.toml`.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment spec {}", path.display()))?;
        let invalid = || format!("invalid experiment spec {}", path.display());
        let table: toml::Table = toml::from_str(&text).with_context(invalid)?;
        let spec: Spec = if table.contains_key(INCLUDE_KEY) {
            toml::Value::Table(with_included(path, table)?)
                .try_into()
                .with_context(invalid)?
        } else {
            // Parsed from the text itself, so that errors name the line.
            toml::from_str(&text).with_context(invalid)?
        };
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

    /// The method the trainer runs for grid method `method`: a variant's base, else itself.
    pub fn base_method<'a>(&'a self, method: &'a str) -> &'a str {
        self.variant.get(method).map_or(method, |v| v.base.as_str())
    }

    /// The search space of `method` under `preset` (`None`: the method is not tuned).
    /// An empty `[preset.<p>.tune.<m>]` leaves the method untuned under that preset. A variant
    /// without a space of its own takes its base's.
    pub fn tune_space(&self, preset: &Preset, method: &str) -> Result<Option<TuneSpace>> {
        let base = self.base_method(method);
        preset
            .tune
            .get(method)
            .or_else(|| self.tune.get(method))
            .or_else(|| preset.tune.get(base))
            .or_else(|| self.tune.get(base))
            .filter(|t| !t.is_empty())
            .map(|t| {
                TuneSpace::parse(t)
                    .with_context(|| format!("{}: [tune.{method}] is malformed", self.meta.target))
            })
            .transpose()
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
        if let Some(m) = preset.also_compare_to.iter().find(|m| !methods.contains(m)) {
            bail!(
                "{}: [preset.{preset_name}] also_compare_to: method {m:?} is not in the \
                 preset's grid {methods:?}",
                self.meta.target
            );
        }
        for x in &preset.extra_seeds {
            let context = || format!("{}: [[preset.{preset_name}.extra_seeds]]", self.meta.target);
            if let Some(m) = x.methods.iter().find(|m| !methods.contains(m)) {
                bail!(
                    "{}: method {m:?} is not in the preset's grid {methods:?}",
                    context()
                );
            }
            if let Some(e) = x
                .epsilons
                .iter()
                .flatten()
                .find(|e| !epsilons.iter().any(|g| (*g - **e).abs() < 1e-12))
            {
                bail!(
                    "{}: epsilon {e} is not in the preset's grid {epsilons:?}",
                    context()
                );
            }
            if let Some(s) = x.seeds.iter().find(|s| seeds.contains(s)) {
                bail!(
                    "{}: seed {s} is already one of the preset's seeds {seeds:?}",
                    context()
                );
            }
        }
        let mut out = Vec::new();
        for task in tasks {
            for method in methods {
                if self
                    .grid
                    .exclude
                    .iter()
                    .any(|x| &x.task == task && &x.method == method)
                {
                    continue;
                }
                let eps_list: Vec<Option<f64>> = if is_non_private(self.base_method(method)) {
                    vec![None]
                } else {
                    epsilons.iter().map(|e| Some(*e)).collect()
                };
                for epsilon in eps_list {
                    let extra = preset
                        .extra_seeds
                        .iter()
                        .filter(|x| x.applies(method, epsilon))
                        .flat_map(|x| x.seeds.iter());
                    for &seed in seeds.iter().chain(extra) {
                        let settings = self.settings(preset, method)?;
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
    /// The effective settings of `method` under `preset` (precedence in the module docs; a
    /// variant's in [`Variant`]).
    pub fn settings(&self, preset: &Preset, method: &str) -> Result<toml::Table> {
        self.settings_tuned(preset, method, None)
    }

    /// The method whose tuned settings `method` takes: a variant's `tune_from`, else its base,
    /// else itself.
    pub fn tune_source<'a>(&'a self, method: &'a str) -> &'a str {
        self.variant
            .get(method)
            .and_then(|v| v.tune_from.as_deref())
            .unwrap_or_else(|| self.base_method(method))
    }

    /// [`Spec::settings`] with `tuned` (a tuning winner's settings, e.g. `learning_rate` and
    /// `clip_norm`) laid over the base method's resolved settings: a plain method ends with
    /// them; a variant then applies its own settings and its step-size rule on top, so it holds
    /// the tuned base fixed except for the ingredient it changes.
    pub fn settings_tuned(
        &self,
        preset: &Preset,
        method: &str,
        tuned: Option<&toml::Table>,
    ) -> Result<toml::Table> {
        let Some(variant) = self.variant.get(method) else {
            let mut settings = self.train.clone();
            merge(&mut settings, Some(&preset.train));
            merge(&mut settings, self.method.get(method));
            merge(&mut settings, preset.method.get(method));
            merge(&mut settings, tuned);
            return Ok(settings);
        };
        let context = || format!("{}: [variant.{method}]", self.meta.target);
        if self.variant.contains_key(&variant.base) {
            bail!("{}: base {:?} is itself a variant", context(), variant.base);
        }
        let base = self.settings_tuned(preset, &variant.base, tuned)?;
        let mut settings = base.clone();
        merge(&mut settings, Some(&variant.settings));
        merge(&mut settings, preset.method.get(method));
        if let Some(scale) = variant.steps_scale {
            scale_horizon(&mut settings, scale).with_context(context)?;
        }
        let learning_rate = || {
            settings
                .get("learning_rate")
                .and_then(toml::Value::as_float)
                .with_context(|| format!("{}: needs a learning_rate setting", context()))
        };
        let factor = match variant.step_size {
            VariantStepSize::AsSet => None,
            VariantStepSize::InverseMaskRatio => {
                let (Some(before), Some(after)) = (mask_ratio(&base), mask_ratio(&settings)) else {
                    bail!(
                        "{}: step_size = \"inverse-mask-ratio\" needs mask.score.ratio in the \
                         base's and the variant's settings",
                        context()
                    );
                };
                if !(before > 0.0 && before <= 1.0 && after > 0.0 && after <= 1.0) {
                    bail!(
                        "{}: mask.score.ratio {before} -> {after}: must be in (0, 1]",
                        context()
                    );
                }
                Some(before / after)
            }
            VariantStepSize::MatchedTotal => {
                let before = total_step_size_factor(&base).with_context(context)?;
                let after = total_step_size_factor(&settings).with_context(context)?;
                Some(before / after)
            }
        };
        if let Some(factor) = factor {
            let eta = learning_rate()?;
            settings.insert("learning_rate".into(), toml::Value::Float(eta * factor));
        }
        settings.insert(
            BASE_METHOD_KEY.into(),
            toml::Value::String(variant.base.clone()),
        );
        Ok(settings)
    }
}

/// How a search space's step sizes relate to the run's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepSizeScaling {
    /// The listed values as they are.
    AsListed,
    /// Each listed value times d/|M| = 1 / `mask.score.ratio`: a ZO estimate along a direction
    /// restricted to |M| of d coordinates has about |M|/d of the dense one's variance, so its
    /// stable step size is about d/|M| times larger (the dense step-size bound of MeZO's and
    /// DPZero's analyses is proportional to 1/d; docs/paper.md, DP-ZOPO). The space is then
    /// centred where the masked method's optimum is expected, not the dense method's.
    InverseMaskRatio,
}

/// One method's hyper-parameter search space: the Cartesian product of the listed values of each
/// setting (`learning_rate = [..]`, `clip_norm = [..]`), in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneSpace {
    pub values: BTreeMap<String, Vec<toml::Value>>,
    pub learning_rate_scaling: StepSizeScaling,
}

impl TuneSpace {
    /// Parses `[tune.<m>]`: every key a non-empty array of numbers, except
    /// `learning_rate_scaling = "as-listed" | "inverse-mask-ratio"`.
    pub fn parse(table: &toml::Table) -> Result<TuneSpace> {
        let mut values = BTreeMap::new();
        let mut learning_rate_scaling = StepSizeScaling::AsListed;
        for (key, value) in table {
            if key == "learning_rate_scaling" {
                learning_rate_scaling = match value.as_str() {
                    Some("as-listed") => StepSizeScaling::AsListed,
                    Some("inverse-mask-ratio") => StepSizeScaling::InverseMaskRatio,
                    _ => bail!(
                        "learning_rate_scaling = {value}: expected \"as-listed\" or \"inverse-mask-ratio\""
                    ),
                };
                continue;
            }
            let list = value.as_array().with_context(|| {
                format!("{key} = {value}: expected an array of candidate values")
            })?;
            if list.is_empty() {
                bail!("{key} = []: a search space needs at least one value");
            }
            for v in list {
                let x = v.as_float().or(v.as_integer().map(|i| i as f64));
                if !x.is_some_and(|x| x.is_finite() && x > 0.0) {
                    bail!("{key}: candidate {v} must be a finite number > 0");
                }
            }
            values.insert(key.clone(), list.clone());
        }
        if values.is_empty() {
            bail!("a search space needs at least one setting");
        }
        Ok(TuneSpace {
            values,
            learning_rate_scaling,
        })
    }

    /// The candidates as setting overrides for a run whose own settings are `settings`, in a
    /// stable order (the last key varies fastest).
    pub fn candidates(&self, settings: &toml::Table) -> Result<Vec<toml::Table>> {
        let scale = match self.learning_rate_scaling {
            StepSizeScaling::AsListed => 1.0,
            StepSizeScaling::InverseMaskRatio => {
                let ratio = settings
                    .get("mask")
                    .and_then(|m| m.get("score"))
                    .and_then(|s| s.get("ratio"))
                    .and_then(|r| r.as_float())
                    .context(
                        "learning_rate_scaling = \"inverse-mask-ratio\" needs the run's \
                         mask.score.ratio setting",
                    )?;
                if !(ratio > 0.0 && ratio <= 1.0) {
                    bail!("mask.score.ratio = {ratio}: must be in (0, 1]");
                }
                1.0 / ratio
            }
        };
        let mut out = vec![toml::Table::new()];
        for (key, list) in &self.values {
            let mut next = Vec::with_capacity(out.len() * list.len());
            for partial in &out {
                for v in list {
                    let mut c = partial.clone();
                    let v = match (
                        key.as_str(),
                        v.as_float().or(v.as_integer().map(|i| i as f64)),
                    ) {
                        ("learning_rate", Some(x)) => toml::Value::Float(x * scale),
                        _ => v.clone(),
                    };
                    c.insert(key.clone(), v);
                    next.push(c);
                }
            }
            out = next;
        }
        Ok(out)
    }
}

/// `settings` with `over` laid on top (nested tables merge).
pub fn overlaid(settings: &toml::Table, over: &toml::Table) -> toml::Table {
    let mut out = settings.clone();
    merge(&mut out, Some(over));
    out
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

/// The `[meta]` table of a test spec for `target`, shared by the spec, tune and ablation tests.
#[cfg(test)]
pub(crate) fn test_meta(target: &str) -> String {
    format!(
        r#"
        [meta]
        target = "{target}"
        title = "x"
        paper_table = "p.csv"
        paper_source = "liu"
        metric = "accuracy"
        paper_model = "m"
        tolerance_points = 1.0
        tolerance_reason = "r"
        "#
    )
}

/// A plain CPU preset `p` of a test spec (no deviations).
#[cfg(test)]
pub(crate) const TEST_PRESET_P: &str = r#"
        [preset.p]
        description = "d"
        model = "m"
        device = "cpu"
        deviations = []
        "#;

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
    fn tune_space_expands_to_its_product_and_scales_masked_step_sizes() {
        let table: toml::Table = toml::from_str(
            r#"
            learning_rate = [1e-6, 1e-5]
            clip_norm = [1.0, 10.0, 100.0]
            learning_rate_scaling = "inverse-mask-ratio"
            "#,
        )
        .unwrap();
        let space = TuneSpace::parse(&table).unwrap();
        let settings: toml::Table = toml::from_str("mask = { score = { ratio = 0.01 } }").unwrap();
        let c = space.candidates(&settings).unwrap();
        assert_eq!(c.len(), 6);
        // Keys in order (clip_norm, learning_rate), the last varying fastest.
        assert_eq!(c[0]["clip_norm"].as_float(), Some(1.0));
        assert_eq!(c[1]["clip_norm"].as_float(), Some(1.0));
        let lr: Vec<f64> = c
            .iter()
            .map(|t| t["learning_rate"].as_float().unwrap())
            .collect();
        assert!(
            (lr[0] - 1e-4).abs() < 1e-18 && (lr[1] - 1e-3).abs() < 1e-17,
            "{lr:?}"
        );
        // Without a mask ratio the scaling is an error, not a silent 1.
        assert!(space.candidates(&toml::Table::new()).is_err());
        for bad in [
            "learning_rate = []",
            "learning_rate = [0.0]",
            "learning_rate = 1e-5",
            "learning_rate_scaling = \"x\"\nlearning_rate = [1.0]",
        ] {
            let t: toml::Table = toml::from_str(bad).unwrap();
            assert!(TuneSpace::parse(&t).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_precedence_is_defaults_preset_method_preset_method() {
        let text = test_meta("t")
            + r#"
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
        let spec: Spec = toml::from_str(&text).unwrap();
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

    /// `extra_seeds` adds seeds to the named methods at the named ε only, after the preset's
    /// seeds; a method, ε or seed it cannot mean is an error naming it, as is a method of
    /// `also_compare_to` outside the grid.
    #[test]
    fn extra_seeds_add_runs_where_named_and_refuse_what_they_cannot_mean() {
        let grid = r#"
            [grid]
            tasks = ["A"]
            methods = ["zero-shot", "dpzero", "dp-zopo"]
            epsilons = [2.0, 4.0]
            seeds = [1, 2]
        "#;
        let with = |extra: &str| -> Result<Vec<RunSpec>> {
            let text = test_meta("t") + grid + TEST_PRESET_P + extra;
            let spec: Spec = toml::from_str(&text).unwrap();
            spec.runs("p")
        };
        let runs = with(
            r#"
            [[preset.p.extra_seeds]]
            methods = ["dpzero", "dp-zopo"]
            epsilons = [4.0]
            seeds = [3, 4]
            reason = "claims"
            "#,
        )
        .unwrap();
        let seeds_of = |method: &str, eps: Option<f64>| -> Vec<u64> {
            runs.iter()
                .filter(|r| r.method == method && r.epsilon == eps)
                .map(|r| r.seed)
                .collect()
        };
        assert_eq!(seeds_of("dpzero", Some(4.0)), [1, 2, 3, 4]);
        assert_eq!(seeds_of("dp-zopo", Some(4.0)), [1, 2, 3, 4]);
        assert_eq!(seeds_of("dpzero", Some(2.0)), [1, 2]);
        assert_eq!(seeds_of("zero-shot", None), [1, 2]);
        assert_eq!(runs.len(), 2 + 4 * 2 + 2 * 2);
        for (extra, names) in [
            ("methods = [\"mezo\"]\nseeds = [3]", "\"mezo\""),
            (
                "methods = [\"dpzero\"]\nepsilons = [8.0]\nseeds = [3]",
                "epsilon 8",
            ),
            ("methods = [\"dpzero\"]\nseeds = [2]", "seed 2"),
        ] {
            let err = with(&format!(
                "[[preset.p.extra_seeds]]\n{extra}\nreason = \"r\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(names) && err.contains("extra_seeds"), "{err}");
        }
        // `also_compare_to` (ablation presets) names grid methods too.
        assert_eq!(
            with("also_compare_to = [\"dpzero\"]\n").unwrap().len(),
            2 + 4 * 2
        );
        let err = with("also_compare_to = [\"mezo\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("also_compare_to") && err.contains("\"mezo\""),
            "{err}"
        );
    }

    #[test]
    fn variants_resolve_over_their_base_with_their_step_size_rule() {
        let text = test_meta("t")
            + r#"
            [grid]
            tasks = ["A"]
            methods = ["dp-zopo", "sparse", "flat", "noiseless", "bad"]
            epsilons = [4.0]
            seeds = [1]
            [train]
            learning_rate = 1.0
            steps = 70
            stage = { first_stage_steps = 10, num_stages = 3, mu_schedule = "geometric" }
            mask = { score = { ratio = 0.01 } }
            [method.dp-zopo]
            learning_rate = 100.0
            [tune.dp-zopo]
            learning_rate = [1.0]
            [variant.sparse]
            base = "dp-zopo"
            step_size = "inverse-mask-ratio"
            settings = { mask = { score = { ratio = 0.001 } } }
            description = "d"
            [variant.flat]
            base = "dp-zoso"
            step_size = "matched-total"
            settings = { stage = { step_halving = false } }
            description = "d"
            [variant.noiseless]
            base = "mezo"
            compare_to = "dp-zopo"
            description = "d"
            [variant.bad]
            base = "sparse"
            description = "d"
            [preset.p]
            description = "d"
            model = "m"
            device = "cpu"
            deviations = []
            methods = ["dp-zopo", "sparse", "flat", "noiseless"]
        "#;
        let spec: Spec = toml::from_str(&text).unwrap();
        let runs = spec.runs("p").unwrap();
        let get = |m: &str| runs.iter().find(|r| r.method == m).unwrap();
        let lr = |m: &str| get(m).settings["learning_rate"].as_float().unwrap();
        assert_eq!(lr("dp-zopo"), 100.0);
        assert!(!get("dp-zopo").settings.contains_key(BASE_METHOD_KEY));
        // eta r kept: 100 x 0.01 / 0.001.
        assert!((lr("sparse") - 1000.0).abs() < 1e-9);
        assert_eq!(
            get("sparse").settings[BASE_METHOD_KEY].as_str(),
            Some("dp-zopo")
        );
        // Stages of 10, 20, 40 steps at 1, 1/2, 1/4 sum to 30; without halving 70 steps at eta.
        assert!((lr("flat") - 30.0 / 70.0).abs() < 1e-12);
        // A variant of a non-private base runs once, without epsilon.
        assert_eq!(get("noiseless").epsilon, None);
        assert_eq!(get("sparse").epsilon, Some(4.0));
        // A variant takes its base's search space.
        let preset = spec.preset("p").unwrap();
        assert!(spec.tune_space(preset, "sparse").unwrap().is_some());
        assert!(spec.tune_space(preset, "noiseless").unwrap().is_none());
        // A variant of a variant is an error naming it.
        let err = spec.settings(preset, "bad").unwrap_err().to_string();
        assert!(
            err.contains("variant.bad") && err.contains("itself a variant"),
            "{err}"
        );
    }

    /// `group` is optional (`other` without it), a misspelt key is refused, and every committed
    /// ablation variant names its group.
    #[test]
    fn a_variant_names_its_group_or_is_other() {
        let head = test_meta("t")
            + r#"
            [grid]
            tasks = ["A"]
            methods = ["dp-zopo", "sparse", "plain"]
            epsilons = [4.0]
            seeds = [1]
            [variant.plain]
            base = "dp-zopo"
            description = "d"
            "#
            + TEST_PRESET_P;
        let grouped = head.clone()
            + r#"
            [variant.sparse]
            base = "dp-zopo"
            group = "DP-ZOPO mask ratio"
            description = "d"
            "#;
        let spec: Spec = toml::from_str(&grouped).unwrap();
        assert_eq!(spec.variant["sparse"].group_label(), "DP-ZOPO mask ratio");
        assert_eq!(spec.variant["plain"].group_label(), UNGROUPED);
        let misspelt = head
            + r#"
            [variant.sparse]
            base = "dp-zopo"
            groups = "DP-ZOPO mask ratio"
            description = "d"
            "#;
        let err = toml::from_str::<Spec>(&misspelt).unwrap_err().to_string();
        assert!(err.contains("groups"), "{err}");
        let abl = Spec::load(&workspace().join("experiments/ablations.toml")).unwrap();
        let ungrouped: Vec<&String> = abl
            .variant
            .iter()
            .filter(|(_, v)| v.group.is_none())
            .map(|(name, _)| name)
            .collect();
        assert!(ungrouped.is_empty(), "{ungrouped:?}");
    }

    /// `include`: the other file's shared tables lie beneath this file's own (train and method
    /// key by key, a search space replaced whole); its meta, grid and presets never come in; a
    /// nested include and a missing file are errors naming the file.
    #[test]
    fn include_lays_the_other_specs_shared_tables_beneath_this_files() {
        let dir = std::env::temp_dir().join(format!("dpzo-include-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let head = |target: &str| {
            test_meta(target)
                + r#"
                [grid]
                tasks = ["A"]
                methods = ["dpzero", "dp-ft"]
                epsilons = [4.0]
                seeds = [1]
                "#
                + TEST_PRESET_P
        };
        std::fs::write(
            dir.join("base.toml"),
            head("base")
                + r#"
                [train]
                learning_rate = 1.0
                steps = 10
                stage = { first_stage_steps = 2, num_stages = 3 }
                [method.dp-ft]
                learning_rate = 0.05
                clip_norm = 1.0
                [tune.dpzero]
                learning_rate = [1.0, 2.0]
                clip_norm = [3.0]
                [tune.dp-ft]
                learning_rate = [0.1]
                "#,
        )
        .unwrap();
        std::fs::write(
            dir.join("abl.toml"),
            String::from("include = \"base.toml\"\n")
                + &head("abl")
                + r#"
                [train]
                steps = 20
                stage = { num_stages = 2 }
                [method.dp-ft]
                clip_norm = 2.0
                [tune.dpzero]
                learning_rate = [5.0]
                "#,
        )
        .unwrap();
        let spec = Spec::load(&dir.join("abl.toml")).unwrap();
        assert_eq!(spec.meta.target, "abl");
        let preset = spec.preset("p").unwrap();
        let dpzero = spec.settings(preset, "dpzero").unwrap();
        assert_eq!(dpzero["learning_rate"].as_float(), Some(1.0));
        assert_eq!(dpzero["steps"].as_integer(), Some(20));
        assert_eq!(dpzero["stage"]["first_stage_steps"].as_integer(), Some(2));
        assert_eq!(dpzero["stage"]["num_stages"].as_integer(), Some(2));
        let ft = spec.settings(preset, "dp-ft").unwrap();
        assert_eq!(ft["learning_rate"].as_float(), Some(0.05));
        assert_eq!(ft["clip_norm"].as_float(), Some(2.0));
        // This file's space replaces the included one whole (no clip_norm list left over); the
        // included space of another method comes in.
        let space = spec.tune_space(preset, "dpzero").unwrap().unwrap();
        assert_eq!(space.values.keys().collect::<Vec<_>>(), ["learning_rate"]);
        assert!(spec.tune_space(preset, "dp-ft").unwrap().is_some());
        // Errors name the files.
        std::fs::write(
            dir.join("nested.toml"),
            String::from("include = \"abl.toml\"\n") + &head("nested"),
        )
        .unwrap();
        let err = format!("{:#}", Spec::load(&dir.join("nested.toml")).unwrap_err());
        assert!(err.contains("one level of include only"), "{err}");
        std::fs::write(
            dir.join("lost.toml"),
            String::from("include = \"nowhere.toml\"\n") + &head("lost"),
        )
        .unwrap();
        let err = format!("{:#}", Spec::load(&dir.join("lost.toml")).unwrap_err());
        assert!(err.contains("nowhere.toml"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The ablations' base methods resolve to table2's very settings (through `include` and the
    /// presets' tables): mini-horizon's bases are table2 mini's cells, whose records they take
    /// over, and every ablation of mini holds table2 mini's settings beneath its own changes.
    #[test]
    fn ablation_bases_resolve_to_table2s_settings() {
        let abl = Spec::load(&workspace().join("experiments/ablations.toml")).unwrap();
        let t2 = Spec::load(&workspace().join("experiments/table2.toml")).unwrap();
        let t2_mini = t2.preset("mini").unwrap();
        let tuned: toml::Table = toml::from_str("learning_rate = 3e-5\nclip_norm = 3.0").unwrap();
        for (preset, methods) in [
            ("mini-horizon", &["dpzero", "dp-zoso", "dp-ft"][..]),
            ("mini", &["dpzero", "dp-zoso"][..]),
        ] {
            let p = abl.preset(preset).unwrap();
            for m in methods {
                for over in [None, Some(&tuned)] {
                    assert_eq!(
                        abl.settings_tuned(p, m, over).unwrap(),
                        t2.settings_tuned(t2_mini, m, over).unwrap(),
                        "{preset} {m}"
                    );
                }
            }
        }
        // DP-ZOPO has untuned defaults of its own here; tuned, they are table2's.
        let over: toml::Table = toml::from_str("learning_rate = 3e-3\nclip_norm = 0.3").unwrap();
        assert_eq!(
            abl.settings_tuned(abl.preset("mini").unwrap(), "dp-zopo", Some(&over))
                .unwrap(),
            t2.settings_tuned(t2_mini, "dp-zopo", Some(&over)).unwrap()
        );
    }

    /// The committed horizon variants (preset mini-horizon): DPZero and DP-ZOSO at T = 600 and
    /// 2400 around the base's 1200 (DP-ZOSO with T0 = T/6, S = 3), DP-SGD at 150 and 600 around
    /// its 300 steps of B 32, each at the base's step size, tuned or not.
    #[test]
    fn horizon_variants_scale_t_and_the_stages_at_the_bases_step_size() {
        let spec = Spec::load(&workspace().join("experiments/ablations.toml")).unwrap();
        let preset = spec.preset("mini-horizon").unwrap();
        let tuned: toml::Table = toml::from_str("learning_rate = 0.25\nclip_norm = 3.0").unwrap();
        for (method, base, steps) in [
            ("dpzero-t600", "dpzero", 600),
            ("dpzero-t2400", "dpzero", 2400),
            ("zoso-t600", "dp-zoso", 600),
            ("zoso-t2400", "dp-zoso", 2400),
            ("dpft-t150", "dp-ft", 150),
            ("dpft-t600", "dp-ft", 600),
        ] {
            for over in [None, Some(&tuned)] {
                let s = spec.settings_tuned(preset, method, over).unwrap();
                let b = spec.settings_tuned(preset, base, over).unwrap();
                assert_eq!(s["steps"].as_integer(), Some(steps), "{method}");
                assert_eq!(s["learning_rate"], b["learning_rate"], "{method}");
                assert_eq!(s["clip_norm"], b["clip_norm"], "{method}");
                assert_eq!(s["batch_size"], b["batch_size"], "{method}");
                if base == "dp-zoso" {
                    let stage = s["stage"].as_table().unwrap();
                    assert_eq!(
                        stage["first_stage_steps"].as_integer(),
                        Some(steps / 6),
                        "{method}"
                    );
                    assert_eq!(stage["num_stages"].as_integer(), Some(3), "{method}");
                }
            }
        }
        let base_steps = |m: &str| spec.settings(preset, m).unwrap()["steps"].as_integer();
        assert_eq!(base_steps("dpzero"), Some(1200));
        assert_eq!(base_steps("dp-zoso"), Some(1200));
        assert_eq!(base_steps("dp-ft"), Some(300));
        assert_eq!(
            spec.settings(preset, "dpft-t150").unwrap()["batch_size"].as_integer(),
            Some(32)
        );
        // A factor that leaves a fractional step count is an error naming it.
        let mut settings: toml::Table =
            toml::from_str("steps = 1200\nstage = { first_stage_steps = 200 }").unwrap();
        let err = scale_horizon(&mut settings, 0.3333)
            .unwrap_err()
            .to_string();
        assert!(err.contains("steps_scale = 0.3333"), "{err}");
        assert!(scale_horizon(&mut settings, 0.0).is_err());
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

    /// Every committed spec's search spaces parse for every preset and method, and the mini
    /// presets keep the paper's schedule proportions (T0 = T/6, S = 3) and the whole test files.
    #[test]
    fn committed_search_spaces_parse_and_mini_keeps_the_papers_proportions() {
        for target in ["table2", "table3"] {
            let spec = Spec::load(&workspace().join(format!("experiments/{target}.toml"))).unwrap();
            for (name, preset) in &spec.preset {
                for method in &spec.grid.methods {
                    spec.tune_space(preset, method)
                        .unwrap_or_else(|e| panic!("{target} {name} {method}: {e:#}"));
                }
            }
            let mini = spec.preset("mini").unwrap();
            let settings = spec.settings(mini, "dp-zoso").unwrap();
            let steps = settings["steps"].as_integer().unwrap();
            let stage = settings["stage"].as_table().unwrap();
            assert_eq!(
                stage["first_stage_steps"].as_integer().unwrap() * 6,
                steps,
                "{target}"
            );
            assert_eq!(stage["num_stages"].as_integer(), Some(3), "{target}");
            assert!(settings.contains_key("zo_eps_end"), "{target}");
        }
    }
}
