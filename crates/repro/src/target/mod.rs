//! Paper targets (`table2`, `table3`): run the grid of an experiment spec, then summarise, compare
//! with the paper and plot. `check` re-renders the comparison from the records without running.

#[cfg(feature = "torch")]
pub mod cell;
pub mod compare;
pub mod filter;
pub mod integrity;
pub mod plot;
pub mod record;
pub mod spec;
pub mod summary;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use spec::{RunSpec, Spec};
use std::path::{Path, PathBuf};

/// Options shared by every paper target.
#[derive(clap::Args, Debug, Clone)]
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
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The CUDA perturbation kernel's normal math: fast (the default) or exact (bit-identical
    /// to a CPU run; trainer::perturb::NormalMath). Recorded in each run's provenance.
    #[arg(long, default_value = "fast")]
    pub normal_math: String,
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
}

/// `repro check <target>`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// table2 or table3.
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
    /// Run (or resume from `checkpoint_dir`) one spec and return its record.
    fn run(
        &mut self,
        spec: &RunSpec,
        config: &serde_json::Value,
        checkpoint_dir: &Path,
    ) -> Result<record::CellRecord>;
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

/// SHA-256 of the canonical JSON of a resolved configuration.
pub fn spec_hash(config: &serde_json::Value) -> String {
    // serde_json maps are ordered (BTreeMap), so this serialisation is canonical.
    let digest = Sha256::digest(config.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn results_dir(out: &Path, target: &str, preset: &str) -> PathBuf {
    out.join(target).join(preset)
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
    let runs = filter::apply(
        spec.runs(preset_name)?,
        filter::Filters {
            tasks: args.tasks.as_deref(),
            methods: args.methods.as_deref(),
            seeds: args.seeds.as_deref(),
            epsilons: args.epsilons.as_deref(),
        },
        &format!("{target} preset {preset_name}"),
    )?;
    println!("{target} · preset {preset_name}: {}", preset.description);
    println!("deviations from the paper's protocol:");
    for d in &preset.deviations {
        println!("  - {d}");
    }
    let dir = results_dir(&args.out, target, preset_name);
    let runs_dir = dir.join("runs");
    std::fs::create_dir_all(&runs_dir)
        .with_context(|| format!("cannot create {}", runs_dir.display()))?;
    let model = runner.model_name();
    println!(
        "{} runs on {} with model {model}",
        runs.len(),
        runner.device_name()
    );
    if args.dry_run {
        for r in &runs {
            println!("  {}", r.stem());
        }
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("grid [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("static template"),
    );
    // Result lines and warnings go to stdout whether or not a terminal shows the bar
    // (`ProgressBar::println` drops them when the bar is hidden, as in a redirected log).
    let say = |line: String| bar.suspend(|| println!("{line}"));
    let mut skipped = 0usize;
    for r in &runs {
        let config = resolved_config(r, &model)?;
        let hash = spec_hash(&config);
        let path = runs_dir.join(format!("{}.json", r.stem()));
        if let Ok(done) = record::CellRecord::read(&path) {
            if done.spec_hash == hash && !args.rerun {
                skipped += 1;
                bar.inc(1);
                continue;
            }
            if done.spec_hash != hash {
                say(format!(
                    "{}: spec changed since the last record, rerunning",
                    r.stem()
                ));
            }
        }
        bar.set_message(r.stem());
        let ckpt = dir.join("checkpoints").join(&hash[..16]);
        if args.restart && ckpt.exists() {
            std::fs::remove_dir_all(&ckpt)
                .with_context(|| format!("cannot remove {}", ckpt.display()))?;
        }
        let rec = runner
            .run(r, &config, &ckpt)
            .with_context(|| format!("run {} failed", r.stem()))?;
        let rec = record::CellRecord {
            spec_hash: hash,
            ..rec
        };
        rec.write(&path)?;
        say(format!(
            "{}: test accuracy {:.1}% in {:.0} s",
            r.stem(),
            rec.test_accuracy,
            rec.wall_secs
        ));
        let _ = std::fs::remove_dir_all(&ckpt);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if skipped > 0 {
        println!(
            "{skipped} of {} runs skipped: already recorded in {} (rerun them with --rerun, or use a fresh --out)",
            runs.len(),
            runs_dir.display()
        );
    }
    render(&spec, preset_name, &args.out)
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
    let model_run = records[0].model.clone();
    let rows = summary::summarise(&records);
    summary::write_csv(&rows, &dir.join("summary.csv"))?;
    let paper = compare::read_paper_table(Path::new(&spec.meta.paper_table))?;
    let md = compare::render(&spec.meta, preset_name, preset, &model_run, &paper, &rows);
    let comparison = dir.join("comparison.md");
    atomic_file::write(&comparison, md)
        .with_context(|| format!("writing {}", comparison.display()))?;
    let ticks = if model_run == spec.meta.paper_model {
        plot::paper_ticks(&paper, &spec.meta.paper_model, &spec.meta.paper_source)
    } else {
        Vec::new()
    };
    let title = format!("{} — {preset_name} preset, {model_run}", spec.meta.title);
    plot::privacy_utility_bars(&rows, &ticks, &title, &dir.join("privacy_utility.svg"))?;
    println!(
        "wrote {}/{{summary.csv,comparison.md,privacy_utility.svg}} from {} records",
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

/// `repro check <target> --preset P`.
pub fn check(args: CheckArgs) -> Result<()> {
    let spec = Spec::load(&args.experiments.join(format!("{}.toml", args.target)))?;
    render(&spec, &args.preset, &args.out)
}

/// `repro table2` / `repro table3`: resolve the preset and device, then run the grid.
#[cfg(feature = "torch")]
pub fn run_paper_target(target: &str, args: TargetArgs) -> Result<()> {
    use trainer::device::{self, DeviceRequest};
    let request: DeviceRequest = args.device.parse().map_err(anyhow::Error::msg)?;
    let math: trainer::perturb::NormalMath = args
        .normal_math
        .parse()
        .map_err(|reason: String| anyhow::anyhow!("--normal-math: {reason}"))?;
    trainer::perturb::set_normal_math(math);
    let dev = device::select(request).map_err(anyhow::Error::msg)?;
    println!("device: {}", device::name(dev));
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
    run_target(target, &args, &preset_name, &mut cells)
}
