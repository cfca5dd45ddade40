//! `repro throughput`: how fast and how faithful reduced-precision compute is for a grid's small
//! cells (scripts/gpu/throughput.sh runs it on the GPU host).
//!
//! - `fidelity`: per-example ZO differences `(l_i(θ + μz) − l_i(θ − μz)) / 2μ` under f32, TF32 and
//!   bf16 compute (trainer::compute) at the same (θ, z, batch), over many draws; θ moves along a
//!   DPZero trajectory (the f32 clipped-mean update), batches are drawn from the run's real
//!   training split, z from fresh seeds. Against f32: the correlation of the per-example values and
//!   the error of the clipped mean. A second f32 pass (`f32-repeat`) measures the floor that
//!   restoring θ after a perturbation leaves (rounding of θ ± μz ∓ μz). `f32-paired` and
//!   `tf32-paired` evaluate both points in one forward (trainer::optim::paired).
//! - `steps`: DPZero steps per second of one process on the run's real batches, timed over a
//!   window shared by concurrent processes (`--rendezvous`), JSON on the last stdout line.
//! - `total`: sums the JSON of concurrent `steps` processes into one row of
//!   `mini_throughput.csv` with the fraction of the GPU's bf16 matrix roofline it reaches.
//! - `kernels`: where a step's GPU time goes, from an Nsight Compute capture (`super::kernels`).

use crate::target::cell::{EncodedTask, TrainerCells};
use crate::target::spec::{RunSpec, Spec};
use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tch::{Device, Kind};
use trainer::batch::Batch;
use trainer::compute::{self, Compute};
use trainer::device::{self, DeviceRequest};
use trainer::model::LabelWordModel;
use trainer::models::layers::{recorded_forwards_pack, with_padded_layout};
use trainer::optim::dp_sgd::{dp_sgd_step, DpSgdClipping, DpSgdSettings};
use trainer::optim::paired::{with_group, ForwardGroup, PATIENCE};
use trainer::optim::params::TrainableParams;
use trainer::optim::zo::{
    directional_differences, settle, zo_step, ZoForward, ZoPrivacy, ZoStepSettings,
};
use trainer::perturb::axpy_z;

/// Dense bf16 tensor-core peak of one H200 (SXM), FLOP/s: the roofline the fractions refer to.
pub const H200_BF16_PEAK_FLOPS: f64 = 989.4e12;

#[derive(clap::Args, Debug)]
pub struct ThroughputArgs {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Per-example ZO differences under tf32 and bf16 compute and the paired forward against the
    /// sequential f32 forward (one CSV row each).
    Fidelity(FidelityArgs),
    /// DPZero steps per second of this process (JSON on the last stdout line).
    Steps(StepsArgs),
    /// Sum concurrent `steps` results into one row of a throughput CSV.
    Total(TotalArgs),
    /// Real and padded tokens of the `steps` batch pool, per task (one CSV row each).
    Padding(PaddingArgs),
    /// Launches and kernel time per step by kind of kernel, from an Nsight Compute capture of a
    /// `steps` process (rows appended to a CSV).
    Kernels(super::kernels::KernelsArgs),
}

/// Which run's model, data and settings to measure.
#[derive(clap::Args, Debug, Clone)]
pub struct RunChoice {
    /// Experiment spec directory.
    #[arg(long, default_value = "experiments")]
    pub experiments: PathBuf,
    /// Target whose spec names the run.
    #[arg(long, default_value = "table2")]
    pub target: String,
    #[arg(long, default_value = "mini")]
    pub preset: String,
    /// Task of the run (its real training split, or the preset's stand-in without --data-dir).
    #[arg(long, default_value = "SST-2")]
    pub task: String,
    /// Seed of the run (default: the first of the preset's runs of that task and method).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Batch size (default: the run's).
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, env = "DPZO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "DPZO_ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceRequest,
}

#[derive(clap::Args, Debug)]
pub struct FidelityArgs {
    #[command(flatten)]
    pub run: RunChoice,
    /// (θ, z, batch) draws.
    #[arg(long, default_value_t = 1000)]
    pub draws: usize,
    /// Stop drawing after this many seconds and report the draws done (the CSV says how many).
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// CSV to write (one row per compute setting).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct StepsArgs {
    #[command(flatten)]
    pub run: RunChoice,
    /// f32, tf32 or bf16.
    #[arg(long, default_value = "f32")]
    pub compute: String,
    /// Length of the timed window in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Folder where concurrent processes meet: each warms up (at least 5 steps and 3 s), writes
    /// its ready time there, and keeps warming until `--parties` have; the shared window then
    /// starts 2 s plus two of the slowest step after the last one was ready. Model loading may take any time (under MPS four
    /// loads took a minute). Default: the window starts once this process has warmed up.
    #[arg(long, requires = "parties")]
    pub rendezvous: Option<PathBuf>,
    /// How many parties meet in `--rendezvous`: processes, or with `--cells` the cells of all
    /// processes.
    #[arg(long)]
    pub parties: Option<usize>,
    /// Token layout of the forwards: `packed` (the trainer's default: only real tokens outside
    /// attention) or `padded` (every position of the padded batch), for side-by-side timings.
    #[arg(long, value_enum, default_value = "packed")]
    pub layout: Layout,
    /// The step timed: `dpzero` (two forwards) or `dp-ft` (DP-SGD of the whole model by ghost
    /// clipping: a recorded forward and a backward), each with its run's settings and batch size.
    #[arg(long, value_enum, default_value = "dpzero")]
    pub method: StepMethod,
    /// How a DPZero step evaluates its two points: `sequential` (two forwards, theta perturbed
    /// in place) or `paired` (one forward with replicated weights, `trainer::optim::paired`).
    #[arg(long, value_enum, default_value = "sequential")]
    pub zo_forward: ZoForward,
    /// Cells in this process, each a thread with its own model copy, batches and seed, their
    /// paired forwards joined into one (`trainer::optim::paired::ForwardGroup`; needs
    /// `--zo-forward paired`). With `--rendezvous`, `--parties` counts every cell of every process.
    #[arg(long, default_value_t = 1)]
    pub cells: usize,
}

/// The step `throughput steps` times.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMethod {
    Dpzero,
    DpFt,
}

impl StepMethod {
    /// The method's name in the experiment specs.
    fn name(self) -> &'static str {
        match self {
            StepMethod::Dpzero => "dpzero",
            StepMethod::DpFt => "dp-ft",
        }
    }

    /// Matrix FLOPs of one step in forwards: DPZero's two; DP-SGD's forward and a backward of
    /// about two forwards (ghost clipping's norms left out).
    fn forwards_per_step(self) -> f64 {
        match self {
            StepMethod::Dpzero => 2.0,
            StepMethod::DpFt => 3.0,
        }
    }
}

fn dpzero_name() -> String {
    StepMethod::Dpzero.name().into()
}

fn sequential_name() -> String {
    ZoForward::Sequential.name().into()
}

fn one_cell() -> usize {
    1
}

/// The token layout a `steps` process runs its forwards in (`trainer::models::layers::TokenLayout`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Packed,
    Padded,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Packed => "packed",
            Layout::Padded => "padded",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct PaddingArgs {
    #[command(flatten)]
    pub run: RunChoice,
    /// Tasks to measure (default: --task alone).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// CSV to write (one row per task).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct TotalArgs {
    /// CSV to append the row to (created with its header if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Model label of the row.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// The processes shared the GPU through MPS (the compute column then reads e.g. `bf16+mps`).
    #[arg(long)]
    pub mps: bool,
    /// JSON outputs of the concurrent `steps` processes.
    pub results: Vec<PathBuf>,
}

/// What `steps` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct StepsResult {
    pub compute: String,
    pub compute_effective: String,
    pub batch: usize,
    pub steps: u64,
    pub seconds: f64,
    pub steps_per_s: f64,
    /// `dpzero` or `dp-ft` (results written before methods existed are DPZero's).
    #[serde(default = "dpzero_name")]
    pub method: String,
    /// Matrix FLOPs of one step: 2 (DPZero) or 3 (DP-SGD) forwards of 2 · (non-embedding
    /// parameters) · tokens.
    pub flops_per_step: f64,
    /// Token rows the products of one forward run on: the padded batch's `B · L`, or its real
    /// tokens when packed.
    pub tokens_per_step: f64,
    /// Real (unpadded) tokens of one forward's batch.
    #[serde(default)]
    pub real_tokens_per_step: f64,
    /// `packed` or `padded`; empty in results written before layouts existed (padded).
    #[serde(default)]
    pub layout: String,
    /// `sequential` or `paired` (results written before the paired forward are sequential).
    #[serde(default = "sequential_name")]
    pub zo_forward: String,
    /// Cells this result covers: the threads of one process whose paired forwards were joined
    /// (results written before `--cells` cover one).
    #[serde(default = "one_cell")]
    pub cells: usize,
    /// With several cells: the mean number of cells each joint forward served, warm-up
    /// included (`ForwardGroup::forwards`; equal to `cells` when they always met).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells_per_forward: Option<f64>,
    /// The warm-up ended after the shared window had begun (the window was shortened).
    pub started_late: bool,
    pub data: String,
    pub device: String,
}

/// A loaded measurement setup.
pub(crate) struct Setup {
    pub(crate) cells: TrainerCells,
    pub(crate) run: RunSpec,
    pub(crate) config: trainer::train::TrainConfig,
    pub(crate) device: Device,
    batch: usize,
}

/// The measurement setup of `choice`'s task and `method`'s run (its settings and batch size).
pub(crate) fn setup(choice: &RunChoice, method: &str) -> Result<Setup> {
    let device = device::select(choice.device).map_err(anyhow::Error::msg)?;
    let spec = Spec::load(&choice.experiments.join(format!("{}.toml", choice.target)))?;
    let preset = spec.preset(&choice.preset)?;
    let run = spec
        .runs(&choice.preset)?
        .into_iter()
        .find(|r| {
            r.task == choice.task
                && r.method == method
                && choice.seed.is_none_or(|seed| r.seed == seed)
        })
        .with_context(|| {
            let seed = choice
                .seed
                .map(|s| format!(" with seed {s}"))
                .unwrap_or_default();
            format!(
                "{} preset {} has no {method} run of task {}{seed}",
                choice.target, choice.preset, choice.task
            )
        })?;
    let config = crate::target::cell::train_config(&run, Path::new("unused"))?;
    let batch = choice.batch.unwrap_or(config.batch_size);
    if batch == 0 {
        bail!("--batch 0: must be >= 1");
    }
    let cells = TrainerCells::new(
        preset,
        None,
        choice.data_dir.as_deref(),
        choice.assets_dir.as_deref(),
        device,
    )?;
    Ok(Setup {
        cells,
        run,
        config,
        device,
        batch,
    })
}

/// `batch` distinct example indices of `n` for draw `draw`.
fn draw_indices(n: usize, batch: usize, draw: u64) -> Vec<usize> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xB47C_0000 ^ draw);
    rand::seq::index::sample(&mut rng, n, batch.min(n)).into_vec()
}

/// Direction seed of draw `draw`.
fn direction_seed(draw: u64) -> u64 {
    0x5EED_0000_0000 + draw
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

fn clipped_mean(values: &[f64], clip: f64) -> f64 {
    values.iter().map(|v| v.clamp(-clip, clip)).sum::<f64>() / values.len() as f64
}

/// One compute setting's per-example differences and clipped means over all draws.
#[derive(Default)]
struct Series {
    per_example: Vec<f64>,
    means: Vec<f64>,
}

pub fn run(args: ThroughputArgs) -> Result<()> {
    match args.what {
        What::Fidelity(a) => fidelity(a),
        What::Steps(a) => steps(a),
        What::Total(a) => total(a),
        What::Padding(a) => padding(a),
        What::Kernels(a) => super::kernels::run(&a),
    }
}

/// Batches in the `steps` pool (cycled through).
const POOL_BATCHES: u64 = 32;

/// The `steps` pool: [`POOL_BATCHES`] real training batches of `s.batch`, collated once.
fn batch_pool(s: &Setup, task: &EncodedTask<'_>) -> Result<Vec<Batch>> {
    (0..POOL_BATCHES)
        .map(|d| task.batch(&draw_indices(task.examples.len(), s.batch, d), s.device))
        .collect()
}

/// `(padded B · L, real tokens)` of a batch.
fn token_counts(b: &Batch) -> Result<(f64, f64)> {
    let padded = (b.input_ids.size()[0] * b.input_ids.size()[1]) as f64;
    let real = b.attention_mask.f_sum(Kind::Int64)?.f_int64_value(&[])? as f64;
    Ok((padded, real))
}

fn padding(args: PaddingArgs) -> Result<()> {
    let tasks = if args.tasks.is_empty() {
        vec![args.run.task.clone()]
    } else {
        args.tasks.clone()
    };
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record([
        "task",
        "batch",
        "batches",
        "max_length",
        "padded_tokens_per_batch",
        "real_tokens_per_batch",
        "padding_fraction",
        "data",
    ])?;
    for task_name in &tasks {
        let choice = RunChoice {
            task: task_name.clone(),
            ..args.run.clone()
        };
        let s = setup(&choice, "dpzero")?;
        let task = s.cells.encoded_train(&s.run)?;
        let pool = batch_pool(&s, &task)?;
        let (mut padded, mut real, mut longest) = (0.0, 0.0, 0);
        for b in &pool {
            let (p, r) = token_counts(b)?;
            padded += p;
            real += r;
            longest = longest.max(b.input_ids.size()[1]);
        }
        let n = pool.len() as f64;
        let fraction = 1.0 - real / padded;
        println!(
            "{task_name}: per batch of {} {:.0} padded and {:.0} real tokens ({:.1}% padding)",
            s.batch,
            padded / n,
            real / n,
            100.0 * fraction
        );
        csv.write_record([
            task_name.clone(),
            s.batch.to_string(),
            pool.len().to_string(),
            longest.to_string(),
            format!("{:.1}", padded / n),
            format!("{:.1}", real / n),
            format!("{fraction:.4}"),
            task.data.clone(),
        ])?;
    }
    let csv = csv.into_inner()?;
    write_result(&args.out, csv)?;
    Ok(())
}

fn fidelity(args: FidelityArgs) -> Result<()> {
    if args.draws == 0 {
        bail!("--draws 0: must be >= 1");
    }
    let s = setup(&args.run, "dpzero")?;
    let task = s.cells.encoded_train(&s.run)?;
    let model = s.cells.model(Kind::Float)?;
    let params = TrainableParams::from_model(&model)?;
    let (mu, clip, lr) = (s.config.zo_eps, s.config.clip_norm, s.config.learning_rate);
    // (label, compute, forward): the sequential f32 forward is the reference; its repeat is the
    // floor; `-paired` rows evaluate both points in one forward (trainer::optim::paired).
    let settings = [
        ("f32", Compute::F32, ZoForward::Sequential),
        ("f32-repeat", Compute::F32, ZoForward::Sequential),
        ("tf32", Compute::Tf32, ZoForward::Sequential),
        ("bf16", Compute::Bf16, ZoForward::Sequential),
        ("f32-paired", Compute::F32, ZoForward::Paired),
        ("tf32-paired", Compute::Tf32, ZoForward::Paired),
    ];
    let mut series: Vec<Series> = settings.iter().map(|_| Series::default()).collect();
    let start = Instant::now();
    let mut done = 0usize;
    for draw in 0..args.draws as u64 {
        if args
            .max_seconds
            .is_some_and(|limit| start.elapsed().as_secs_f64() > limit)
        {
            eprintln!(
                "fidelity: stopped at {draw} of {} draws (--max-seconds)",
                args.draws
            );
            break;
        }
        done += 1;
        let batch = task.batch(&draw_indices(task.examples.len(), s.batch, draw), s.device)?;
        let seed = direction_seed(draw);
        for ((_, c, forward), out) in settings.iter().zip(series.iter_mut()) {
            let _guard = compute::activate(*c, s.device);
            let d = match forward {
                ZoForward::Sequential => {
                    directional_differences(&model, &params, &batch, seed, mu)?
                }
                ZoForward::Paired => {
                    let (plus, minus) =
                        params.paired_weights()?.losses(&model, &batch, seed, mu)?;
                    plus.iter()
                        .zip(&minus)
                        .map(|(p, m)| (p - m) / (2.0 * mu))
                        .collect()
                }
            };
            out.means.push(clipped_mean(&d, clip));
            out.per_example.extend(d);
        }
        // θ moves as a (noise-free) DPZero run would: θ − η · clipped mean · z.
        let step = -lr * series[0].means[draw as usize];
        axpy_z(params.param_set()?, &[(seed, step)])?;
        if (draw + 1) % 100 == 0 {
            eprintln!(
                "fidelity: {} of {} draws in {:.0} s",
                draw + 1,
                args.draws,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let reference = &series[0];
    let rms = |v: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x * x, n + 1));
        (sum / n as f64).sqrt()
    };
    let reference_rms = rms(&mut reference.means.iter().copied());
    let mut csv = String::from(
        "model,compute,compute_effective,draws,batch,zo_eps,clip_norm,data,per_example_corr,\
         per_example_max_abs_diff,clip_status_flips,clipped_mean_rel_rms_error,\
         clipped_mean_rms_error_per_noise_unit,seconds\n",
    );
    println!(
        "{:<11} {:>14} {:>12} {:>6} {:>14} {:>16}",
        "compute", "corr", "max |Δ|", "flips", "rel RMS err", "err / (C/B)"
    );
    for ((label, c, _), out) in settings.iter().zip(&series) {
        let corr = pearson(&reference.per_example, &out.per_example);
        let max_abs = reference
            .per_example
            .iter()
            .zip(&out.per_example)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let flips = reference
            .per_example
            .iter()
            .zip(&out.per_example)
            .filter(|(a, b)| (a.abs() > clip) != (b.abs() > clip))
            .count();
        let err_rms = rms(&mut reference.means.iter().zip(&out.means).map(|(a, b)| a - b));
        let rel = err_rms / reference_rms;
        // C/B: the std of the DP noise on the clipped mean at noise multiplier 1.
        let per_noise_unit = err_rms / (clip / s.batch as f64);
        println!("{label:<11} {corr:>14.9} {max_abs:>12.3e} {flips:>6} {rel:>14.3e} {per_noise_unit:>16.3e}");
        csv.push_str(&format!(
            "{},{label},{},{},{},{mu},{clip},{},{corr},{max_abs},{flips},{rel},{per_noise_unit},{:.1}\n",
            s.cells_model_name(),
            c.effective(s.device),
            done,
            s.batch,
            task.data,
            start.elapsed().as_secs_f64()
        ));
    }
    write_result(&args.out, csv)?;
    Ok(())
}

impl Setup {
    fn cells_model_name(&self) -> String {
        use crate::target::CellRunner;
        self.cells.model_name()
    }
}

/// Matrix FLOPs of one forward: 2 · (parameters outside the embeddings) · tokens (attention
/// scores and the label-word head are left out, so this undercounts slightly).
fn forward_flops(params: &TrainableParams, tokens: f64) -> f64 {
    let dense: usize = params
        .named()
        .iter()
        .filter(|(name, _)| !name.contains("embed"))
        .map(|(_, t)| t.numel())
        .sum();
    2.0 * dense as f64 * tokens
}

/// Writes a result file atomically, its folder created if missing, and says so.
fn write_result(out: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    atomic_file::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The durations of a process's last five steps.
#[derive(Default)]
struct RecentSteps(std::collections::VecDeque<f64>);

impl RecentSteps {
    fn push(&mut self, seconds: f64) {
        if self.0.len() == 5 {
            self.0.pop_front();
        }
        self.0.push_back(seconds);
    }

    fn slowest(&self) -> f64 {
        self.0.iter().cloned().fold(0.0, f64::max)
    }
}

/// How long a `steps` process waits for the others at the rendezvous.
const RENDEZVOUS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

/// Writes a party's ready time (Unix seconds) and the length of its last step (seconds) into
/// `dir/ready-<party>` (`<pid>-<cell>`), atomically.
fn announce_ready(dir: &Path, party: &str, step_seconds: f64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The temporary file is hidden (`.ready-…`), so a half-written one is never counted.
    let path = dir.join(format!("ready-{party}"));
    atomic_file::write(&path, format!("{} {step_seconds}\n", unix_now()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The shared window's start once `parties` processes are ready in `dir`: after the last ready
/// time, 2 s plus two of the slowest step (a waiting process looks between its steps), the same
/// for every process since the set no longer changes. `None` before.
fn shared_start(dir: &Path, parties: usize) -> Result<Option<f64>> {
    let mut times = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let is_ready = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("ready-"));
        if !is_ready {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let parsed: Option<Vec<f64>> = text.split_whitespace().map(|w| w.parse().ok()).collect();
        match parsed.as_deref() {
            Some(&[t, step]) if t.is_finite() && step.is_finite() && step >= 0.0 => {
                times.push((t, step))
            }
            _ => bail!(
                "{}: {:?} is not `<Unix time> <step seconds>`",
                path.display(),
                text.trim()
            ),
        }
    }
    if times.len() > parties {
        bail!(
            "{}: {} processes are ready but --parties is {parties}; use a fresh folder per run",
            dir.display(),
            times.len()
        );
    }
    let last = times.iter().map(|t| t.0).fold(f64::MIN, f64::max);
    let slowest = times.iter().map(|t| t.1).fold(0.0, f64::max);
    Ok((times.len() == parties).then_some(last + 2.0 + 2.0 * slowest))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `throughput steps`: one cell, or `--cells K` threads whose paired forwards are joined, timed
/// over one window; one JSON line for the process.
fn steps(args: StepsArgs) -> Result<()> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds {}: must be finite and > 0", args.seconds);
    }
    if args.cells == 0 {
        bail!("--cells 0: must be >= 1");
    }
    if args.cells == 1 {
        let result = cell_steps(&args, 0, None, args.rendezvous.clone(), None)?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    if args.zo_forward != ZoForward::Paired || args.method != StepMethod::Dpzero {
        bail!(
            "--cells {}: joins paired DPZero forwards; add --zo-forward paired",
            args.cells
        );
    }
    // With --rendezvous the cells meet the other processes' cells there, like processes do.
    // Alone, they start their window together at a barrier: no file protocol, and no cell can
    // start late because a scheduler delayed it past a start time computed in advance.
    let meeting = args.rendezvous.clone();
    let together = meeting
        .is_none()
        .then(|| Arc::new(Barrier::new(args.cells)));
    let mut args = args;
    if meeting.is_some() {
        args.parties = args.parties.or(Some(args.cells));
    }
    let group = Arc::new(ForwardGroup::new(args.cells, PATIENCE)?);
    // The cells are threads of this process, which has one TF32 flag: held for all of them, so
    // the first to end does not switch it under the others (trainer::compute::hold_tf32).
    let compute: Compute = args.compute.parse().map_err(anyhow::Error::msg)?;
    let _tf32 = compute::hold_tf32(compute);
    let args = &args;
    let results: Vec<Result<StepsResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.cells)
            .map(|cell| {
                let group = group.clone();
                let meeting = meeting.clone();
                let together = together.clone();
                scope.spawn(move || cell_steps(args, cell, Some(group), meeting, together))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a cell's thread panicked")))
            })
            .collect()
    });
    let results: Vec<StepsResult> = results.into_iter().collect::<Result<_>>()?;
    let first = &results[0];
    let n = results.len() as f64;
    let joint = StepsResult {
        steps: results.iter().map(|r| r.steps).sum(),
        seconds: results.iter().map(|r| r.seconds).fold(0.0, f64::max),
        steps_per_s: results.iter().map(|r| r.steps_per_s).sum(),
        flops_per_step: results.iter().map(|r| r.flops_per_step).sum::<f64>() / n,
        tokens_per_step: results.iter().map(|r| r.tokens_per_step).sum::<f64>() / n,
        real_tokens_per_step: results.iter().map(|r| r.real_tokens_per_step).sum::<f64>() / n,
        started_late: results.iter().any(|r| r.started_late),
        cells: results.len(),
        cells_per_forward: Some(match group.forwards()? {
            (0, _) => 0.0,
            (forwards, served) => served as f64 / forwards as f64,
        }),
        compute: first.compute.clone(),
        compute_effective: first.compute_effective.clone(),
        batch: first.batch,
        method: first.method.clone(),
        layout: first.layout.clone(),
        zo_forward: first.zo_forward.clone(),
        data: first.data.clone(),
        device: first.device.clone(),
    };
    println!("{}", serde_json::to_string(&joint)?);
    Ok(())
}

/// The steps of cell `cell` of this process over the shared window (`steps`). Cell k draws its
/// batches k places further along the pool and seeds its directions with 7 + k, so that the
/// cells of one process differ.
fn cell_steps(
    args: &StepsArgs,
    cell: usize,
    group: Option<Arc<ForwardGroup>>,
    meeting: Option<PathBuf>,
    together: Option<Arc<Barrier>>,
) -> Result<StepsResult> {
    let compute: Compute = args.compute.parse().map_err(anyhow::Error::msg)?;
    let s = setup(&args.run, args.method.name())?;
    let task = s.cells.encoded_train(&s.run)?;
    let model = s.cells.model(Kind::Float)?;
    let params = TrainableParams::from_model(&model)?;
    let pool = batch_pool(&s, &task)?;
    // The layout the step really runs in: ghost clipping's recorded forwards may keep padding.
    let layout = match (args.method, args.layout) {
        (StepMethod::DpFt, Layout::Packed) if !recorded_forwards_pack(s.device) => {
            eprintln!("layout: recorded forwards keep padding on this device; timing that layout");
            Layout::Padded
        }
        (_, layout) => layout,
    };
    // Per batch: (token rows the products run on, real tokens).
    let counts: Vec<(f64, f64)> = pool.iter().map(token_counts).collect::<Result<_>>()?;
    let tokens: Vec<(f64, f64)> = counts
        .iter()
        .map(|&(padded, real)| match layout {
            Layout::Packed => (real, real),
            Layout::Padded => (padded, real),
        })
        .collect();
    let padded: f64 = counts.iter().map(|c| c.0).sum();
    let real: f64 = counts.iter().map(|c| c.1).sum();
    eprintln!(
        "pool: {} batches of {}; per batch {:.0} padded and {:.0} real tokens ({:.1}% padding); \
         layout {}",
        pool.len(),
        s.batch,
        padded / pool.len() as f64,
        real / pool.len() as f64,
        100.0 * (1.0 - real / padded),
        layout.name()
    );
    let settings = ZoStepSettings {
        zo_eps: s.config.zo_eps,
        step_size: s.config.learning_rate,
        num_directions: 1,
        privacy: Some(ZoPrivacy {
            clip_norm: s.config.clip_norm,
            noise_std: s.config.clip_norm,
        }),
        normaliser: None,
        proximal: None,
        forward: args.zo_forward,
    };
    let dp_sgd = DpSgdSettings {
        step_size: s.config.learning_rate,
        clip_norm: s.config.clip_norm,
        noise_std: s.config.clip_norm,
        normaliser: None,
        clipping: DpSgdClipping::Ghost,
    };
    let model_ref: &dyn LabelWordModel = &model;
    let _guard = compute::activate(compute, s.device);
    let in_layout = |run: &mut dyn FnMut() -> Result<()>| match layout {
        Layout::Packed => run(),
        Layout::Padded => with_padded_layout(run),
    };
    let mut carried = None;
    let mut step = 0u64;
    let seed = 7 + cell as u64;
    let one_step = |step: u64, carried: &mut Option<_>| -> Result<()> {
        let b = &pool[(step as usize + cell) % pool.len()];
        match args.method {
            StepMethod::Dpzero => in_layout(&mut || {
                let zo = |carried_in| {
                    zo_step(
                        model_ref,
                        &params,
                        b,
                        &settings,
                        seed,
                        step,
                        carried_in,
                        Some(settings.zo_eps),
                    )
                };
                let (_, next) = match &group {
                    Some(group) => with_group(group, || zo(carried.take()))?,
                    None => zo(carried.take())?,
                };
                *carried = next;
                Ok(())
            }),
            StepMethod::DpFt => in_layout(&mut || {
                dp_sgd_step(model_ref, &params, b, &dp_sgd, seed, step)?;
                // The update is queued on the device; read a value so that the step is done.
                params.named()[0]
                    .1
                    .f_sum(Kind::Float)?
                    .f_double_value(&[])?;
                Ok(())
            }),
        }
    };
    let warm_from = Instant::now();
    let own_warmup_end = unix_now() + 3.0;
    // The slowest of the last few steps: what a step may take near the shared start.
    let mut recent = RecentSteps::default();
    let timed_step = |step: u64, carried: &mut Option<_>, recent: &mut RecentSteps| -> Result<()> {
        let t = Instant::now();
        one_step(step, carried)?;
        recent.push(t.elapsed().as_secs_f64());
        Ok(())
    };
    while step < 5 || unix_now() < own_warmup_end {
        step += 1;
        timed_step(step, &mut carried, &mut recent)?;
    }
    let start_at = match (&meeting, args.parties) {
        (Some(dir), Some(parties)) => {
            announce_ready(
                dir,
                &format!("{}-{cell}", std::process::id()),
                recent.slowest(),
            )?;
            let deadline = Instant::now() + RENDEZVOUS_PATIENCE;
            let start = loop {
                if let Some(start) = shared_start(dir, parties)? {
                    break start;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{}: fewer than {parties} processes were ready after {} s",
                        dir.display(),
                        RENDEZVOUS_PATIENCE.as_secs()
                    );
                }
                step += 1;
                timed_step(step, &mut carried, &mut recent)?;
            };
            // Warm while a step fits before the start with room to spare, then wait for it:
            // every process begins its first timed step at the same instant. A cell of a joint
            // group that steps once more than its partners, which already wait for the start,
            // waits for their forwards first, up to the group's patience (the larger of
            // PATIENCE and three step intervals: trainer/src/optim/paired.rs), so it steps only
            // with room for that wait too.
            let room = |slowest: f64| match &group {
                Some(_) => 1.5 * slowest + PATIENCE.as_secs_f64().max(3.0 * slowest),
                None => 1.5 * slowest,
            };
            while unix_now() + room(recent.slowest()) < start {
                step += 1;
                timed_step(step, &mut carried, &mut recent)?;
            }
            let wait = start - unix_now();
            if wait > 0.0 {
                std::thread::sleep(std::time::Duration::from_secs_f64(wait));
            }
            start
        }
        _ => {
            // A cell waiting here no longer steps; a partner's joint forward waits for it at
            // most the group's patience, then runs alone, so every cell reaches the barrier.
            if let Some(barrier) = &together {
                barrier.wait();
            }
            unix_now()
        }
    };
    let started_late = unix_now() > start_at + 1.0;
    eprintln!(
        "steps: warm-up {step} steps in {:.1} s{}",
        warm_from.elapsed().as_secs_f64(),
        if started_late {
            " (ended after the shared window began)"
        } else {
            ""
        }
    );
    let end = start_at + args.seconds;
    if end - unix_now() < 0.5 * args.seconds {
        bail!(
            "the warm-up ended {:.1} s into the {:.1} s window: one step is slower than the window",
            unix_now() - start_at,
            args.seconds
        );
    }
    let first = step;
    let timer = Instant::now();
    let (mut row_sum, mut real_sum) = (0.0, 0.0);
    while step == first || unix_now() < end {
        step += 1;
        let (rows, real) = tokens[step as usize % pool.len()];
        row_sum += rows;
        real_sum += real;
        one_step(step, &mut carried)?;
    }
    // zo_step reads the losses on the host every step, so the queue is empty here.
    let seconds = timer.elapsed().as_secs_f64();
    settle(&params, carried.take())?;
    let n = step - first;
    let tokens_per_step = row_sum / n.max(1) as f64;
    Ok(StepsResult {
        compute: compute.name().into(),
        compute_effective: compute.effective(s.device).into(),
        batch: s.batch,
        steps: n,
        seconds,
        steps_per_s: n as f64 / seconds,
        method: args.method.name().into(),
        flops_per_step: args.method.forwards_per_step() * forward_flops(&params, tokens_per_step),
        tokens_per_step,
        real_tokens_per_step: real_sum / n.max(1) as f64,
        layout: layout.name().into(),
        zo_forward: args.zo_forward.name().into(),
        cells: 1,
        cells_per_forward: None,
        started_late,
        data: task.data.clone(),
        device: device::name(s.device).into(),
    })
}

fn total(args: TotalArgs) -> Result<()> {
    if args.results.is_empty() {
        bail!("no `steps` result given");
    }
    let mut rows = Vec::new();
    for path in &args.results {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .with_context(|| format!("{}: no JSON result line", path.display()))?;
        let r: StepsResult = serde_json::from_str(line)
            .with_context(|| format!("{}: malformed result", path.display()))?;
        if r.steps == 0 || !(r.steps_per_s > 0.0) {
            bail!("{}: no step was timed", path.display());
        }
        rows.push(r);
    }
    let first = &rows[0];
    if let Some(other) = rows.iter().find(|r| {
        r.compute != first.compute
            || r.batch != first.batch
            || r.layout != first.layout
            || r.method != first.method
            || r.zo_forward != first.zo_forward
            || r.cells != first.cells
    }) {
        bail!(
            "results mix settings: {} compute {} batch {} layout {:?} forward {} cells {} and {} \
             compute {} batch {} layout {:?} forward {} cells {}",
            first.method,
            first.compute,
            first.batch,
            first.layout,
            first.zo_forward,
            first.cells,
            other.method,
            other.compute,
            other.batch,
            other.layout,
            other.zo_forward,
            other.cells
        );
    }
    if let Some(late) = rows.iter().position(|r| r.started_late) {
        eprintln!(
            "warning: {} began timing late; the processes overlapped for less than the window",
            args.results[late].display()
        );
    }
    let steps_per_s: f64 = rows.iter().map(|r| r.steps_per_s).sum();
    let flops: f64 = rows.iter().map(|r| r.steps_per_s * r.flops_per_step).sum();
    let roofline = flops / H200_BF16_PEAK_FLOPS;
    let header = "model,compute,batch,cells_concurrent,steps_per_s_total,roofline_fraction\n";
    let mut csv = match std::fs::read_to_string(&args.out) {
        Ok(existing) if existing.starts_with(header.trim_end()) => existing,
        Ok(_) => bail!(
            "{} exists with another header; expected {}",
            args.out.display(),
            header.trim_end()
        ),
        Err(_) => header.to_string(),
    };
    // e.g. `tf32+packed+mps`; results from before layouts existed (padded) keep the bare name.
    let mut compute = first.compute.clone();
    if !first.layout.is_empty() {
        compute = format!("{compute}+{}", first.layout);
    }
    if first.zo_forward == ZoForward::Paired.name() {
        compute.push_str("+paired");
    }
    if first.cells > 1 {
        // Each process ran several cells whose paired forwards were joined.
        compute.push_str(&format!("+joint{}", first.cells));
    }
    if args.mps {
        compute.push_str("+mps");
    }
    if first.method != StepMethod::Dpzero.name() {
        compute = format!("{compute}+{}", first.method);
    }
    let cells: usize = rows.iter().map(|r| r.cells).sum();
    csv.push_str(&format!(
        "{},{compute},{},{cells},{steps_per_s:.2},{roofline:.4}\n",
        args.model, first.batch,
    ));
    write_result(&args.out, csv)?;
    println!(
        "{} compute {compute} × {cells}: {steps_per_s:.1} steps/s in total, {:.1}% of the bf16 \
         roofline",
        args.model,
        100.0 * roofline
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window starts 2 s plus two of the slowest step after the last of `parties` ready
    /// times; too few is `None`, too many or a malformed time is an error naming the folder or
    /// file.
    #[test]
    fn rendezvous_starts_after_the_last_ready_process() {
        let dir = crate::target::test_scratch("rendezvous");
        let dir = dir.as_path();
        std::fs::write(dir.join("ready-1"), "100.5 0.25\n").unwrap();
        std::fs::write(dir.join(".ready-2"), "999\n").unwrap(); // not yet renamed
        assert_eq!(shared_start(dir, 2).unwrap(), None);
        std::fs::write(dir.join("ready-2"), "103.25 0.125\n").unwrap();
        assert_eq!(shared_start(dir, 2).unwrap(), Some(103.25 + 2.0 + 0.5));
        let too_many = shared_start(dir, 1).unwrap_err().to_string();
        assert!(
            too_many.contains("2 processes are ready but --parties is 1"),
            "{too_many}"
        );
        std::fs::write(dir.join("ready-3"), "soon 1\n").unwrap();
        let bad = format!("{:#}", shared_start(dir, 3).unwrap_err());
        assert!(
            bad.contains("ready-3") && bad.contains("\"soon 1\""),
            "{bad}"
        );
        announce_ready(dir, "me-0", 0.5).unwrap();
        let own = std::fs::read_to_string(dir.join("ready-me-0"));
        let own: Vec<f64> = own
            .unwrap()
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        assert!(
            (own[0] - unix_now()).abs() < 60.0 && own[1] == 0.5,
            "{own:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Only the last five steps count: a slow first step (kernel compilation) ages out.
    #[test]
    fn recent_steps_keep_the_slowest_of_the_last_five() {
        let mut recent = RecentSteps::default();
        assert_eq!(recent.slowest(), 0.0);
        for s in [9.0, 0.5, 0.25, 0.75, 0.5] {
            recent.push(s);
        }
        assert_eq!(recent.slowest(), 9.0);
        recent.push(0.25);
        assert_eq!(recent.slowest(), 0.75);
    }

    #[test]
    fn pearson_and_clipped_mean_match_closed_forms() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(
            clipped_mean(&[-5.0, 0.5, 5.0, 1.0], 2.0),
            (-2.0 + 0.5 + 2.0 + 1.0) / 4.0
        );
    }

    /// `B · L` and the mask's ones, for a right- and a left-padded row.
    #[test]
    fn token_counts_are_padded_and_real_tokens() {
        let mask = tch::Tensor::from_slice(&[1i64, 1, 1, 0, 0, 0, 1, 1]).view([2, 4]);
        let batch = Batch {
            input_ids: mask.zeros_like(),
            attention_mask: mask,
            positions: tch::Tensor::from_slice(&[2i64, 3]),
            labels: tch::Tensor::from_slice(&[0i64, 1]),
            label_word_ids: tch::Tensor::from_slice(&[5i64, 6]),
        };
        assert_eq!(token_counts(&batch).unwrap(), (8.0, 5.0));
    }

    #[test]
    fn draws_are_distinct_indices_and_reproducible() {
        let a = draw_indices(100, 64, 3);
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 64);
        assert_eq!(a, draw_indices(100, 64, 3));
        assert_ne!(a, draw_indices(100, 64, 4));
    }
}
