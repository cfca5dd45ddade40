//! Paper targets (`table2`, `table3`): run the grid of an experiment spec, then summarise, compare
//! with the paper and plot. `check` re-renders the comparison from the records without running.

pub mod ablation;
pub mod calibrated;
#[cfg(feature = "torch")]
pub mod cell;
pub mod compare;
pub mod filter;
pub mod grid;
pub mod integrity;
pub mod labels;
pub mod plateau;
pub mod plot;
pub mod precision;
pub mod record;
pub mod spec;
pub mod stats;
pub mod summary;
pub mod timing;
pub mod train_loss;
pub mod tune;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use spec::{RunSpec, Spec};
use std::path::{Path, PathBuf};

/// Options shared by every paper target.
#[derive(clap::Args, Debug, Clone)]
// `--epsilons -1` must reach the filter, which names the value and the valid ones.
#[command(allow_negative_numbers = true)]
pub struct TargetArgs {
    /// auto (mini on a CUDA host, smoke otherwise), paper, mini or smoke.
    #[arg(long, default_value = "auto")]
    pub preset: String,
    /// HF checkpoint directory (config.json + safetensors) for the `paper` preset.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Task data root (LM-BFF `k-shot-1k-test/`, `original/`, `superglue/`).
    #[arg(long, env = "DPZO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Downloaded assets (SmolLM2 GGUF, stand-in data); default `<workspace>/.assets`.
    #[arg(long, env = "DPZO_ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,
    /// auto, cpu or cuda.
    #[cfg(feature = "torch")]
    #[arg(long, value_enum, default_value = "auto")]
    pub device: trainer::device::DeviceRequest,
    /// The CUDA perturbation kernel's normal math: fast (the default) or exact (bit-identical
    /// to a CPU run; trainer::perturb::NormalMath). Recorded in each run's provenance.
    #[cfg(feature = "torch")]
    #[arg(long, value_enum, default_value = "fast")]
    pub normal_math: trainer::perturb::NormalMath,
    /// How the ZO methods evaluate a direction's two points: `sequential` (two forwards,
    /// MeZO's inference memory) or `paired` (one forward with both points' weights, two more
    /// copies of them; trainer::optim::paired). Like --normal-math it changes results only at
    /// rounding level, so it is not part of the spec hash; each record's trainer config states
    /// it. Default: the spec's `zo_forward` (sequential when unset).
    #[cfg(feature = "torch")]
    #[arg(long, value_enum)]
    pub zo_forward: Option<trainer::optim::zo::ZoForward>,
    /// Where `results/<target>/<preset>/` goes.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Directory holding `<target>.toml`.
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
    /// Run only these tasks (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Option<Vec<String>>,
    /// Run only these methods (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// Run only these seeds (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Run only these privacy budgets (comma-separated; non-private runs are kept).
    #[arg(long, value_delimiter = ',')]
    pub epsilons: Option<Vec<f64>>,
    /// Print the resolved grid and deviations, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print one JSON document with every cell's effective configuration.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Choose each method's hyper-parameters on dev from its `[tune.<method>]` space first
    /// (target::tune), then run the winners on every seed.
    #[arg(long)]
    pub tune: bool,
    /// Run again the cells that already have a record (a new record replaces the old one only
    /// when its run succeeds).
    #[arg(long)]
    pub rerun: bool,
    /// Discard each cell's checkpoint (e.g. a corrupt one) and start the cell afresh.
    #[arg(long)]
    pub restart: bool,
    /// Write run records without the non-private diagnostics (per-step training losses and
    /// clipping statistics, computed from the training data without noise). Records say which
    /// they are (`nonprivate_diagnostics`); records already written are not rewritten.
    #[arg(long)]
    pub private_records: bool,
    /// Precision of the matrix products for every run: f32, tf32 or bf16 (weights, perturbations
    /// and updates stay f32). Overrides the spec's `compute` setting, so it enters the spec hash.
    #[arg(long)]
    pub compute: Option<String>,
    /// Set a training setting for every planned run (repeatable): `KEY=VALUE` with a TOML value,
    /// dotted keys for nested tables (`--set learning_rate=1e-4 --set stage.step_halving=false`;
    /// a bare word is a string). The strongest layer of the spec's precedence, so it enters the
    /// spec hash; use --methods to aim it. Not with --tune, whose candidates set their own keys.
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "tune")]
    pub set: Vec<String>,
    /// How the cells are executed: concurrently, sharded, or through Slurm.
    #[command(flatten)]
    pub grid: grid::GridArgs,
}

impl TargetArgs {
    /// Whether `--device cpu` was given.
    fn cpu_requested(&self) -> bool {
        #[cfg(feature = "torch")]
        return self.device == trainer::device::DeviceRequest::Cpu;
        #[cfg(not(feature = "torch"))]
        return true;
    }
}

/// `repro check <target>`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// The grid target: table2, table3 or ablations (`experiments/<target>.toml`).
    pub target: String,
    /// The preset whose records to compare.
    #[arg(long)]
    pub preset: String,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
}

/// Runs one cell of the grid; implemented on top of the trainer.
pub trait CellRunner {
    /// The model name recorded for this preset (e.g. `smollm2-135m`).
    fn model_name(&self) -> String;
    /// Device name (`cpu` / `cuda`).
    fn device_name(&self) -> String;
    /// CUDA devices this process sees (0 on a CPU-only host).
    fn cuda_devices(&self) -> usize {
        0
    }
    /// Run (or resume from `checkpoint_dir`) one spec and return its record.
    fn run(
        &mut self,
        spec: &RunSpec,
        config: &serde_json::Value,
        checkpoint_dir: &Path,
    ) -> Result<record::CellRecord>;
    /// A runner like this one for a thread of its own whose paired ZO forwards go through
    /// `group` (`--joint-cells`).
    #[cfg(feature = "torch")]
    fn fork(
        &self,
        _group: std::sync::Arc<trainer::optim::paired::ForwardGroup>,
    ) -> Result<Box<dyn CellRunner + Send>> {
        bail!("this runner cannot run cells in threads (--joint-cells)")
    }
}

/// The fully resolved configuration of one run, which the spec hash covers.
pub fn resolved_config(spec: &RunSpec, model: &str) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(&spec.settings)?;
    let obj = v.as_object_mut().context("settings must be a table")?;
    obj.insert("task".into(), spec.task.clone().into());
    obj.insert("method".into(), spec.method.clone().into());
    obj.insert("epsilon".into(), spec.epsilon.into());
    obj.insert("seed".into(), spec.seed.into());
    obj.insert("model".into(), model.into());
    Ok(v)
}

/// The CSV file `path` (headers on its first line) and the positions of the columns `names`, or
/// `None` when the file does not exist; a missing column is an error naming the file.
pub fn csv_with_columns<const N: usize>(
    path: &Path,
    names: [&str; N],
) -> Result<Option<(csv::Reader<std::fs::File>, [usize; N])>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let mut columns = [0; N];
    for (slot, name) in columns.iter_mut().zip(names) {
        *slot = headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column {name}", path.display()))?;
    }
    Ok(Some((reader, columns)))
}

/// SHA-256 of the canonical JSON of a resolved configuration.
pub fn spec_hash(config: &serde_json::Value) -> String {
    // serde_json maps are ordered (BTreeMap), so this serialisation is canonical.
    let digest = Sha256::digest(config.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn results_dir(out: &Path, target: &str, preset: &str) -> PathBuf {
    out.join(target).join(preset)
}

/// The results folder of the target whose records `preset` takes over (`tune_options.take_over`)
/// or inherits its settings from (`inherit_tuning`), if any.
pub(crate) fn record_source_dir(
    out: &Path,
    preset: &spec::Preset,
    preset_name: &str,
) -> Option<PathBuf> {
    let (target, source_preset) = match (&preset.tune_options.take_over, &preset.inherit_tuning) {
        (Some(t), _) => (&t.target, t.preset.as_deref()),
        (None, Some(i)) => (&i.target, i.preset.as_deref()),
        (None, None) => return None,
    };
    Some(results_dir(
        out,
        target,
        source_preset.unwrap_or(preset_name),
    ))
}

/// Run every cell of `args.preset` not already finished, then write summary, comparison and plot.
pub fn run_target(
    target: &str,
    args: &TargetArgs,
    preset_name: &str,
    runner: &mut dyn CellRunner,
) -> Result<()> {
    let spec = Spec::load(&args.experiments.join(format!("{target}.toml")))?;
    let preset = spec.preset(preset_name)?.clone();
    let model = runner.model_name();
    let (runs, inheritance) = planned_runs(&spec, args, preset_name, &model)?;
    if args.tune && inheritance.is_some() {
        bail!(
            "{target} preset {preset_name} inherits its settings from another target's tuning \
             ([preset.{preset_name}.inherit_tuning]); --tune would choose them again"
        );
    }
    println!("{target} · preset {preset_name}: {}", preset.description);
    println!("deviations from the paper's protocol:");
    for d in &preset.deviations {
        println!("  - {d}");
    }
    for x in &spec.grid.exclude {
        println!("  - not run: {} x {}: {}", x.task, x.method, x.reason);
    }
    for x in &preset.extra_seeds {
        let seeds: Vec<String> = x.seeds.iter().map(u64::to_string).collect();
        println!(
            "  - more seeds ({}) for {}: {}",
            seeds.join(", "),
            x.methods.join(", "),
            x.reason
        );
    }
    let dir = results_dir(&args.out, target, preset_name);
    let runs_dir = dir.join("runs");
    if !args.dry_run {
        std::fs::create_dir_all(&runs_dir)
            .with_context(|| format!("cannot create {}", runs_dir.display()))?;
    }
    println!(
        "{} runs on {} with model {model}",
        runs.len(),
        runner.device_name()
    );
    if args.tune {
        if tune::run(args, &spec, preset_name, &dir, &runs, runner)? {
            render(&spec, preset_name, &args.out)?;
        }
        return Ok(());
    }
    execute_grid(
        target,
        args,
        &spec,
        preset_name,
        &dir,
        &runs,
        inheritance.as_ref(),
        runner,
    )
}

/// The runs of `preset_name` after the grid filters, the settings inherited from another
/// target's tuning (`inherit_tuning`, [`tune::inherit`]), `--compute` and `--set`.
fn planned_runs(
    spec: &Spec,
    args: &TargetArgs,
    preset_name: &str,
    model: &str,
) -> Result<(Vec<RunSpec>, Option<tune::Inheritance>)> {
    let runs = filter::apply(
        spec.runs(preset_name)?,
        filter::Filters {
            tasks: args.tasks.as_deref(),
            methods: args.methods.as_deref(),
            seeds: args.seeds.as_deref(),
            epsilons: args.epsilons.as_deref(),
        },
        &format!("{} preset {preset_name}", spec.meta.target),
    )?;
    let compute = |runs: &mut [RunSpec]| match &args.compute {
        Some(c) => override_compute(runs, c),
        None => Ok(()),
    };
    let (mut runs, inheritance) = tune::inherit(
        spec,
        preset_name,
        runs,
        &args.experiments,
        &args.out,
        model,
        &compute,
    )?;
    compute(&mut runs)?;
    let overrides = setting_overrides(&args.set)?;
    for r in &mut runs {
        let mut over = overrides.clone();
        float_where_float(&r.settings, &mut over);
        r.settings = spec::overlaid(&r.settings, &over);
    }
    Ok((runs, inheritance))
}

/// An integer given where the settings hold a float becomes that float (`--set clip_norm=30`
/// means 30.0), so that one configuration never has two spec hashes.
fn float_where_float(settings: &toml::Table, over: &mut toml::Table) {
    for (key, value) in over.iter_mut() {
        match (settings.get(key), value) {
            (Some(toml::Value::Float(_)), v @ toml::Value::Integer(_)) => {
                *v = toml::Value::Float(v.as_integer().unwrap_or_default() as f64);
            }
            (Some(toml::Value::Table(s)), toml::Value::Table(o)) => float_where_float(s, o),
            _ => {}
        }
    }
}

/// `--set KEY=VALUE…` as one table of settings (dotted keys nest). A value that is not TOML is
/// taken as a string, so `--set compute=tf32` needs no quotes.
fn setting_overrides(assignments: &[String]) -> Result<toml::Table> {
    let mut out = toml::Table::new();
    for a in assignments {
        let Some((key, value)) = a.split_once('=') else {
            bail!("--set {a:?}: expected KEY=VALUE");
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            bail!("--set {a:?}: expected KEY=VALUE");
        }
        let table: toml::Table = format!("{key} = {value}")
            .parse()
            .or_else(|_| format!("{key} = {}", toml::Value::String(value.into())).parse())
            .with_context(|| format!("--set {a:?}: {key:?} is not a setting name"))?;
        out = spec::overlaid(&out, &table);
    }
    Ok(out)
}

/// `--dry-run --json`: one JSON document with every cell's effective configuration (the exact
/// configuration its spec hash covers), printed on stdout; nothing runs and no model is loaded.
pub fn dry_run_json(target: &str, args: &TargetArgs, preset_name: &str) -> Result<()> {
    let spec = Spec::load(&args.experiments.join(format!("{target}.toml")))?;
    let preset = spec.preset(preset_name)?;
    let model = match (preset.model.as_str(), &args.model_dir) {
        ("model-dir", Some(dir)) => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        (name, _) => name.to_string(),
    };
    let cells: Vec<serde_json::Value> = planned_runs(&spec, args, preset_name, &model)?
        .0
        .iter()
        .map(|r| {
            let config = resolved_config(r, &model)?;
            Ok(serde_json::json!({
                "stem": r.stem(),
                "spec_hash": spec_hash(&config),
                "config": config,
            }))
        })
        .collect::<Result<_>>()?;
    let doc = serde_json::json!({
        "target": target,
        "preset": preset_name,
        "description": preset.description,
        "deviations": preset.deviations,
        "cells": cells,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// `--compute`: set every run's `compute` setting. `f32`, the trainer's default, is not added where
/// the spec sets none, so that records made before the setting existed keep their spec hash.
fn override_compute(runs: &mut [RunSpec], compute: &str) -> Result<()> {
    if !["f32", "tf32", "bf16"].contains(&compute) {
        bail!("--compute {compute:?}: expected f32, tf32 or bf16");
    }
    for r in runs {
        if compute != "f32" || r.settings.contains_key("compute") {
            r.settings
                .insert("compute".into(), toml::Value::String(compute.into()));
        }
    }
    Ok(())
}

/// The worker slots of the grid flags (`--gpus`, `--jobs-per-gpu`) on `runner`'s device.
fn worker_slots(g: &grid::GridArgs, runner: &dyn CellRunner) -> Result<Vec<grid::Slot>> {
    grid::slots(
        g.gpus.as_deref(),
        g.jobs_per_gpu,
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
        runner.cuda_devices(),
        runner.device_name() == "cuda",
    )
}

/// Runs `cells` in this process: one after another, or with `--joint-cells K` on K threads, each
/// with its own model copy, whose paired ZO forwards are joined into one forward.
fn execute_here(
    args: &TargetArgs,
    cells: &[grid::Cell],
    runner: &mut dyn CellRunner,
    policy: grid::Policy,
) -> Result<grid::Outcome> {
    let threads = args.grid.joint_cells;
    if threads == 0 {
        bail!("--joint-cells 0: must be >= 1");
    }
    if threads == 1 {
        return grid::execute(cells, runner, policy);
    }
    #[cfg(feature = "torch")]
    {
        use trainer::optim::zo::ZoForward;
        if args.zo_forward != Some(ZoForward::Paired) {
            bail!("--joint-cells {threads}: joins paired ZO forwards; add --zo-forward paired");
        }
        let group = std::sync::Arc::new(trainer::optim::paired::ForwardGroup::new(
            threads,
            trainer::optim::paired::PATIENCE,
        )?);
        // The TF32 flag is one per process: the threads' cells share one compute setting, held
        // for the whole grid (trainer::compute::hold_tf32).
        let _tf32 = trainer::compute::hold_tf32(uniform_compute(cells)?);
        let runners = (0..threads)
            .map(|_| runner.fork(group.clone()))
            .collect::<Result<Vec<_>>>()?;
        let outcome = grid::execute_threads(cells, runners, policy)?;
        let (forwards, served) = group.forwards()?;
        if forwards > 0 {
            println!(
                "joint forwards: {forwards} served {served} cell forwards ({:.2} cells each)",
                served as f64 / forwards as f64
            );
        }
        Ok(outcome)
    }
    #[cfg(not(feature = "torch"))]
    bail!("--joint-cells {threads}: needs a build with the torch feature")
}

/// The one `compute` setting of `cells` (f32 where a cell sets none), or an error naming two
/// cells that differ: cells run as threads of one process share the process-wide TF32 flag.
#[cfg(feature = "torch")]
fn uniform_compute(cells: &[grid::Cell]) -> Result<trainer::compute::Compute> {
    let of = |c: &grid::Cell| -> Result<trainer::compute::Compute> {
        c.config
            .get("compute")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("f32")
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{}: {e}", c.run.stem()))
    };
    let Some(first) = cells.first() else {
        return Ok(trainer::compute::Compute::F32);
    };
    let compute = of(first)?;
    for c in cells {
        let other = of(c)?;
        if other != compute {
            bail!(
                "--joint-cells runs cells as threads of one process, which share one TF32 \
                 setting, but {} computes in {} and {} in {}: run them in separate calls (or \
                 --jobs-per-gpu, separate processes)",
                first.run.stem(),
                compute.name(),
                c.run.stem(),
                other.name()
            );
        }
    }
    Ok(compute)
}

/// Execute the cells of `runs` as the grid flags ask (see [`grid`]), then render unless this
/// process is one worker or shard of a larger grid. Cells that inherit their settings first
/// adopt the source's record of the very same run, and get their tuning note before rendering.
#[allow(clippy::too_many_arguments)]
fn execute_grid(
    target: &str,
    args: &TargetArgs,
    spec: &Spec,
    preset_name: &str,
    dir: &Path,
    runs: &[RunSpec],
    inheritance: Option<&tune::Inheritance>,
    runner: &mut dyn CellRunner,
) -> Result<()> {
    let g = &args.grid;
    if g.jobs_per_gpu == 0 {
        bail!("--jobs-per-gpu 0: must be >= 1");
    }
    let model = runner.model_name();
    let all_cells = grid::plan(runs, dir, &model)?;
    if let Some(script) = &g.emit_slurm {
        let tasks = g
            .slurm_tasks
            .unwrap_or(all_cells.len())
            .clamp(1, all_cells.len());
        let preset = spec.preset(preset_name)?;
        let gpu = !args.cpu_requested() && preset.device == "cuda";
        let argv: Vec<String> = std::env::args().skip(2).collect();
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let text = grid::slurm_script(
            &grid::SlurmJob {
                target,
                preset: preset_name,
                args: &argv,
                out: &args.out,
                experiments: &args.experiments,
                tasks,
                gpu,
                sbatch_args: &g.slurm_arg,
            },
            &abs(script),
            &std::env::current_exe().context("cannot locate the repro binary")?,
            &abs(Path::new(".")),
        );
        atomic_file::write(script, text)
            .with_context(|| format!("cannot write {}", script.display()))?;
        println!(
            "wrote {} ({tasks} array tasks over {} cells, {}); submit it with: bash {}",
            script.display(),
            all_cells.len(),
            if gpu { "one GPU per task" } else { "CPU" },
            script.display()
        );
        return Ok(());
    }
    let cells = match &g.shard {
        Some(s) => {
            let shard: grid::Shard = s.parse().map_err(anyhow::Error::msg)?;
            let cells = shard.select(&all_cells);
            println!(
                "shard {}/{}: {} of {} cells",
                shard.index,
                shard.count,
                cells.len(),
                all_cells.len()
            );
            cells
        }
        None => all_cells,
    };
    if args.dry_run {
        // Cells a run would take over from the tuning source are neither run nor planned.
        let mut to_plan: Vec<&grid::Cell> = Vec::with_capacity(cells.len());
        for c in &cells {
            let adoptable = inheritance
                .as_ref()
                .filter(|_| !args.rerun && !args.restart)
                .and_then(|i| i.adoptable(c));
            let mark = match &adoptable {
                _ if c.is_recorded() => " (recorded)".to_string(),
                Some(from) => format!(" (taken over from {})", from.display()),
                None => String::new(),
            };
            println!("  {}{mark}", c.run.stem());
            if adoptable.is_none() {
                to_plan.push(c);
            }
        }
        let rates = timing::seconds_per_step(dir, &spec.preset(preset_name)?.device)?;
        let taken_over = cells.len() - to_plan.len();
        println!(
            "{}",
            timing::plan_line("plan", &to_plan, taken_over, &rates)
        );
        return Ok(());
    }
    if cells.is_empty() {
        println!("this shard has no cell");
        return Ok(());
    }
    if let Some(inheritance) = inheritance.filter(|_| !args.rerun && !args.restart) {
        let adopted = inheritance.adopt(&cells)?;
        if adopted > 0 {
            println!(
                "{adopted} cells are runs of the tuning source with the same configuration: \
                 their records were taken over, not run again"
            );
        }
    }
    let policy = grid::Policy::from_flags(args.rerun, args.restart, g.deadline);
    let mut cells = cells;
    if policy.deadline.is_some() {
        let source = record_source_dir(&args.out, spec.preset(preset_name)?, preset_name);
        let slowest = timing::slowest_or_source(dir, source.as_deref(), &runner.device_name())?;
        grid::estimate(&mut cells, &slowest);
    }
    let parallel = !g.worker && (g.gpus.is_some() || g.jobs_per_gpu > 1);
    if parallel {
        let slots = worker_slots(g, runner)?;
        grid::run_workers(&cells, &slots, policy)?;
    } else {
        let outcome = execute_here(args, &cells, runner, policy)?;
        if !outcome.failed.is_empty() {
            let failures: Vec<String> = outcome
                .failed
                .iter()
                .map(|(stem, message)| format!("{stem}: {message}"))
                .collect();
            bail!(
                "{} of {} cells failed (their checkpoints are kept; rerun to resume): {}",
                failures.len(),
                cells.len(),
                failures.join("; ")
            );
        }
    }
    if let Some(inheritance) = inheritance {
        inheritance.annotate(&cells)?;
    }
    if g.worker || g.shard.is_some() {
        println!(
            "done; `repro check {target} --preset {preset_name}` merges the records once every \
             worker has finished"
        );
        return Ok(());
    }
    render(spec, preset_name, &args.out)
}

/// Summary, comparison and plot from the records on disk.
pub fn render(spec: &Spec, preset_name: &str, out: &Path) -> Result<()> {
    let preset = spec.preset(preset_name)?;
    let dir = results_dir(out, &spec.meta.target, preset_name);
    // A record failing its content checksum is reported and never aggregated.
    let (records, failed) = record::read_all_checked(&dir.join("runs"))?;
    for message in &failed {
        eprintln!("warning: {message}; left out of the summary");
    }
    if records.is_empty() {
        bail!("no run record in {}", dir.join("runs").display());
    }
    let unnoted = tune::unnoted_records(spec, preset_name, &records)?;
    if !unnoted.is_empty() {
        eprintln!(
            "warning: {} records of methods this preset tunes carry no tuning note, so no \
             procedure ε (run untuned, or by a --tune call cut short; `repro {} --preset \
             {preset_name} --tune` with the same filters writes the notes and reruns nothing \
             recorded): {}",
            unnoted.len(),
            spec.meta.target,
            unnoted.join(", ")
        );
    }
    let model_run = records[0].model.clone();
    let rows = summary::summarise(&records);
    summary::write_csv(&rows, &dir.join("summary.csv"))?;
    let timed = timing::write(&dir, &records)?;
    if timed > 0 {
        println!(
            "wrote {} ({timed} timed cells)",
            dir.join("timing.csv").display()
        );
    }
    let label_rows = labels::label_rows(&records)?;
    if labels::write_csv(&label_rows, &dir.join("labels.csv"))? {
        println!("wrote {}", dir.join("labels.csv").display());
    }
    let candidates = dir.join("candidates_test.csv");
    if labels::write_candidates_csv(&labels::candidate_rows(&dir)?, &candidates)? {
        println!("wrote {}", candidates.display());
    }
    let association = dir.join("label_association.csv");
    if labels::write_association_csv(&labels::association_rows(&records)?, &association)? {
        println!("wrote {}", association.display());
    }
    if calibrated::write_csv(&calibrated::rows(&records)?, &dir.join("calibrated.csv"))? {
        println!("wrote {}", dir.join("calibrated.csv").display());
    }
    let over_calibrated_rows = calibrated::over_reference_rows(&rows, calibrated::CALIBRATED)?;
    let over_dev_bias_rows = calibrated::over_reference_rows(&rows, calibrated::DEV_BIAS)?;
    for (reference, over) in [
        (calibrated::CALIBRATED, &over_calibrated_rows),
        (calibrated::DEV_BIAS, &over_dev_bias_rows),
    ] {
        let path = dir.join(reference.file);
        if calibrated::write_over_reference_csv(over, reference, &path)? {
            println!("wrote {}", path.display());
        }
    }
    let losses = train_loss::rows(&records, &dir.join("runs"))?;
    if train_loss::write_csv(&losses, &dir.join("train_loss.csv"))? {
        println!("wrote {}", dir.join("train_loss.csv").display());
    }
    if !spec.variant.is_empty() {
        // An ablation spec: each variant against its reference, no paper claims.
        let methods = ablation::methods_of(spec, preset_name)?;
        // Comparisons over a method whose dev search is open are provisional.
        let open = tune::open_groups(&dir)?;
        let comparisons = ablation::comparisons(spec, methods, &rows, &open);
        ablation::write_csv(&comparisons, &dir.join("ablations.csv"))?;
        let claims: Vec<compare::Claim> = comparisons.iter().map(|r| r.claim.clone()).collect();
        let mut md = ablation::render_markdown(spec, preset_name, &comparisons)
            + "\n"
            + &precision::write_and_render(&claims, spec.meta.tolerance_points, &dir)?;
        if let Some((seed, untouched)) = without_tuning_seed(&records, &rows) {
            let again = ablation::comparisons(spec, methods, &untouched, &open);
            md += &format!("\n{}", ablation::render_without_tuning_seed(&again, seed));
        }
        let also = ablation::also_comparisons(spec, preset_name, methods, &rows, &open)?;
        if !also.is_empty() {
            ablation::write_csv(&also, &dir.join("ablations_also.csv"))?;
            println!("wrote {}", dir.join("ablations_also.csv").display());
            md += &format!(
                "\n{}",
                ablation::render_also(&also, spec.meta.tolerance_points)?
            );
        }
        let plateau_steps = plateau::plateau(spec, methods, &records);
        if !plateau_steps.is_empty() {
            plateau::write_csv(&plateau_steps, &dir.join("plateau.csv"))?;
            md += &format!("\n{}", plateau::render_markdown(&plateau_steps));
            println!("wrote {}", dir.join("plateau.csv").display());
        }
        atomic_file::write(dir.join("ablations.md"), md)
            .with_context(|| format!("writing {}", dir.join("ablations.md").display()))?;
        let title = format!("{} — {preset_name} preset, {model_run}", spec.meta.title);
        ablation::plot(&comparisons, &title, &dir.join("ablations.svg"))?;
        println!(
            "wrote {}/{{summary.csv,ablations.csv,precision.csv,ablations.md,ablations.svg}} from {} records",
            dir.display(),
            records.len()
        );
        let points = ablation::horizon(spec, methods, &records);
        if !points.is_empty() {
            ablation::write_horizon_csv(&points, &dir.join("horizon.csv"))?;
            let title = format!(
                "{} — {preset_name}: accuracy against T at fixed ε, {model_run}",
                spec.meta.title
            );
            ablation::plot_horizon(&points, &title, &dir.join("horizon.svg"))?;
            println!("wrote {}/{{horizon.csv,horizon.svg}}", dir.display());
        }
        if !failed.is_empty() {
            bail!(
                "{} run record(s) failed their content checksum and were left out (listed above)",
                failed.len()
            );
        }
        return Ok(());
    }
    let paper = compare::read_paper_table(Path::new(&spec.meta.paper_table))?;
    // Groups whose winner sits on an edge of its space make the claims over them provisional.
    let open = tune::open_groups(&dir)?;
    compare::write_claims_csv(&spec.meta, &paper, &rows, &open, &dir.join("claims.csv"))?;
    let claims = compare::claims(&spec.meta, &paper, &rows, &open);
    let precision = precision::write_and_render(&claims, spec.meta.tolerance_points, &dir)?;
    let base_seeds = preset.seeds.as_ref().unwrap_or(&spec.grid.seeds);
    let mut md = compare::render(
        &spec.meta,
        preset_name,
        preset,
        &model_run,
        &paper,
        &rows,
        &open,
    );
    if let Some(section) = compare::render_base_seeds(&spec.meta, &paper, &rows, &open, base_seeds)
    {
        md = md + "\n" + &section;
    }
    // The claims again without the finals that are themselves tuning winners.
    if let Some((seed, untouched)) = without_tuning_seed(&records, &rows) {
        compare::write_claims_csv(
            &spec.meta,
            &paper,
            &untouched,
            &open,
            &dir.join("claims_without_tuning_seed.csv"),
        )?;
        md = md
            + "\n"
            + &compare::render_without_tuning_seed(&spec.meta, &paper, &untouched, &open, seed);
    }
    md = md + "\n" + &precision;
    if let Some(section) =
        calibrated::render_claims_against_calibration(&claims, &over_calibrated_rows)
    {
        md = md + "\n" + &section;
    }
    let comparison = dir.join("comparison.md");
    atomic_file::write(&comparison, md)
        .with_context(|| format!("writing {}", comparison.display()))?;
    // The paper's values are drawn whatever model ran, labelled with the paper's model.
    let paper_points = plot::paper_points(
        &paper,
        &spec.meta.paper_model,
        &spec.meta.paper_source,
        &spec.meta.metric,
    );
    let constant_answer = labels::constant_answer(&label_rows);
    let figure = plot::Figure {
        rows: &rows,
        paper: &paper_points,
        constant_answer: &constant_answer,
        // Panels and slots in the grid's order.
        tasks: preset.tasks.as_ref().unwrap_or(&spec.grid.tasks),
        methods: preset.methods.as_ref().unwrap_or(&spec.grid.methods),
        model_run: &model_run,
        paper_model: &spec.meta.paper_model,
        title: format!(
            "{} ({preset_name} preset): {model_run}, final test accuracy",
            spec.meta.target
        ),
    };
    plot::privacy_utility(&figure, &dir.join("privacy_utility.svg"))?;
    println!(
        "wrote {}/{{summary.csv,claims.csv,precision.csv,comparison.md,privacy_utility.svg}} from {} records",
        dir.display(),
        records.len()
    );
    if !failed.is_empty() {
        bail!(
            "{} run record(s) failed their content checksum and were left out (listed above); rerun those cells (--rerun) or restore the records",
            failed.len()
        );
    }
    Ok(())
}

/// The tuning seed of `records` (from any record's `--tune` or inherited tuning note) and `rows`
/// without it ([`compare::without_tuning_seed`]); `None` when nothing was tuned or no row ran
/// that seed.
fn without_tuning_seed(
    records: &[record::CellRecord],
    rows: &[summary::SummaryRow],
) -> Option<(u64, Vec<summary::SummaryRow>)> {
    let seed = records
        .iter()
        .find_map(|r| r.tuning.as_ref().map(|n| n.tuning_seed))?;
    Some((seed, compare::without_tuning_seed(rows, seed)?))
}

/// `repro check <target> --preset P`.
pub fn check(args: CheckArgs) -> Result<()> {
    let spec = Spec::load(&args.experiments.join(format!("{}.toml", args.target)))?;
    render(&spec, &args.preset, &args.out)
}

/// `repro table2` / `repro table3`: resolve the preset and device, then run the grid.
#[cfg(feature = "torch")]
pub fn run_paper_target(target: &str, args: TargetArgs) -> Result<()> {
    use trainer::device;
    trainer::perturb::set_normal_math(args.normal_math);
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    // stdout carries only the JSON document under --dry-run --json.
    if !(args.dry_run && args.json) {
        println!("device: {}", device::name(dev));
    }
    let spec = Spec::load(&args.experiments.join(format!("{target}.toml")))?;
    let preset_name = if args.preset == "auto" {
        // The first preset meant for this device class (`mini` on CUDA, `smoke` on CPU).
        let class = if dev == tch::Device::Cpu {
            "cpu"
        } else {
            "cuda"
        };
        let fallback = if class == "cpu" { "smoke" } else { "mini" };
        spec.preset
            .iter()
            .find(|(name, p)| p.device == class && name.as_str() == fallback)
            .or_else(|| {
                spec.preset
                    .iter()
                    .find(|(name, p)| p.device == class && name.as_str() != "paper")
            })
            .map(|(name, _)| name.clone())
            .with_context(|| format!("{target}: no preset for device class {class}"))?
    } else {
        args.preset.clone()
    };
    if args.dry_run && args.json {
        return dry_run_json(target, &args, &preset_name);
    }
    println!("preset: {preset_name}");
    let preset = spec.preset(&preset_name)?;
    let mut cells = cell::TrainerCells::new(
        preset,
        args.model_dir.as_deref(),
        args.data_dir.as_deref(),
        args.assets_dir.as_deref(),
        dev,
    )?;
    cells.private_records = args.private_records;
    cells.zo_forward = args.zo_forward;
    run_target(target, &args, &preset_name, &mut cells)
}

/// An empty scratch folder `dpzo-<name>-<pid>` under the temporary directory, for the unit tests
/// of the target modules.
#[cfg(test)]
pub(crate) fn test_scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dpzo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;
    use trainer::compute::Compute;

    fn cell(method: &str, compute: Option<&str>) -> grid::Cell {
        let mut config = serde_json::json!({ "steps": 4 });
        if let Some(c) = compute {
            config["compute"] = c.into();
        }
        grid::Cell {
            run: spec::RunSpec {
                target: "ablations".into(),
                preset: "p".into(),
                task: "SST-2".into(),
                method: method.into(),
                epsilon: Some(4.0),
                seed: 13,
                settings: toml::Table::new(),
            },
            config,
            hash: String::new(),
            record: PathBuf::new(),
            lock: PathBuf::new(),
            checkpoint: PathBuf::new(),
            length: grid::Length::Unknown,
        }
    }

    /// Cells run as threads of one process must share one compute setting (one TF32 flag per
    /// process); a cell without one is f32.
    #[test]
    fn joint_cells_share_one_compute_setting() {
        assert_eq!(uniform_compute(&[]).unwrap(), Compute::F32);
        let f32_cells = [cell("dpzero", None), cell("dp-zopo", Some("f32"))];
        assert_eq!(uniform_compute(&f32_cells).unwrap(), Compute::F32);
        let tf32_cells = [
            cell("dpzero-tf32", Some("tf32")),
            cell("zopo-tf32", Some("tf32")),
        ];
        assert_eq!(uniform_compute(&tf32_cells).unwrap(), Compute::Tf32);
        let mixed = [cell("dpzero", None), cell("dpzero-tf32", Some("tf32"))];
        let err = format!("{:#}", uniform_compute(&mixed).unwrap_err());
        assert!(
            err.contains("SST-2__dpzero__eps4__seed13 computes in f32")
                && err.contains("SST-2__dpzero-tf32__eps4__seed13 in tf32"),
            "{err}"
        );
        let bad = [cell("dpzero", Some("fp8"))];
        let err = format!("{:#}", uniform_compute(&bad).unwrap_err());
        assert!(
            err.contains("SST-2__dpzero__eps4__seed13") && err.contains("\"fp8\""),
            "{err}"
        );
    }
}
