//! `repro memory`: peak GPU memory and median step time of every method on the paper's model
//! sizes (random weights from the published configs), one child process per (model, method) so
//! that each peak is measured from a clean caching allocator.
//!
//! Peak memory is device memory (`cuMemGetInfo`: total - free) at the end of the cell minus the
//! reading taken after CUDA and libtorch initialised and before the model was built. libtorch's
//! caching allocator never hands memory back unless asked, so this is its peak reservation plus
//! the cuBLAS workspace: the memory a user has to have. `scripts/perf/reference_pytorch.py`
//! measures PyTorch the same way (and also reports `max_memory_allocated`).
//!
//! Output (under `--out`): `zo_step.csv` (`model,dtype,batch,seq,method,impl,ms_median,
//! peak_bytes`, the contract of issue 8), `details.jsonl` (one JSON object per cell: every
//! measured field), `cells.log` (the children's stderr) and `provenance.json`.

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use trainer::batch::Batch;
use trainer::device::{self, DeviceRequest};
use trainer::model::LabelWordModel;
use trainer::models::config::{published, PUBLISHED_NAMES};
use trainer::models::{random_from_config, ModelConfig};
use trainer::optim::adamw::{AdamW, AdamWSettings};
use trainer::optim::dp_sgd::{dp_sgd_step, DpSgdClipping, DpSgdSettings};
use trainer::optim::loss::per_example_loss_values;
use trainer::optim::params::TrainableParams;
use trainer::optim::zo::{settle, zo_step, ZoPrivacy, ZoStepSettings};
use trainer::perturb::{axpy_z, passes_on_this_thread, set_normal_math, NormalMath};

/// The shapes of docs/gpu.md's reference table: RoBERTa-large f32 64 x 128, OPT f16 16 x 256;
/// SmolLM2 f32 64 x 64 (the shape of the SmolLM2 training runs).
fn default_shape(model: &str) -> (&'static str, i64, i64) {
    if model.starts_with("roberta") {
        ("f32", 64, 128)
    } else if model.starts_with("smollm2") {
        ("f32", 64, 64)
    } else {
        ("f16", 16, 256)
    }
}

/// Methods, named as in `results/perf/zo_step.csv`.
const METHODS: [&str; 9] = [
    "infer",
    "zo",
    "dp-zoso",
    "dp-zoso-noanchor",
    "dp-zopo",
    "dp-sgd",
    "dp-sgd-microbatch",
    "backprop",
    "backprop-sgd",
];

#[derive(clap::Args)]
pub struct MemoryArgs {
    /// Published configs by name (roberta-large, opt-1.3b, opt-2.7b) or paths to a config.json;
    /// weights are random (std 0.02).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "roberta-large,opt-1.3b,opt-2.7b"
    )]
    pub models: Vec<String>,
    /// Methods: infer (one label-word forward), zo (MeZO step), dp-zoso (DPZero step + stagewise
    /// proximal anchor, the trainer's default), dp-zoso-noanchor (the released code's no-op
    /// anchor), dp-zopo (1% mask), dp-sgd (ghost clipping: one forward, one backward),
    /// dp-sgd-microbatch (the reference: one backward per example), backprop (AdamW),
    /// backprop-sgd (one forward, one backward and a plain SGD update: DP-SGD's work without the
    /// privacy).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "infer,zo,dp-zoso,dp-zoso-noanchor,dp-zopo,dp-sgd,backprop"
    )]
    pub methods: Vec<String>,
    /// Extra batch sizes at which DP-SGD is measured (memory and time against batch size).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub dp_sgd_batches: Vec<i64>,
    /// Timed steps per cell (median reported).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Untimed steps first (NVRTC compile, cuBLAS heuristics, allocator warm-up, clocks); at
    /// least 1.5 s of them.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Override the batch size of every model.
    #[arg(long)]
    pub batch: Option<i64>,
    /// Override the sequence length of every model.
    #[arg(long)]
    pub seq: Option<i64>,
    /// Override the dtype of every model (f32, f16, bf16).
    #[arg(long)]
    pub dtype: Option<String>,
    /// The CUDA kernel's normal math (fast, the default, or exact: bitwise equal to the CPU;
    /// trainer::perturb::NormalMath).
    #[arg(long, default_value = "fast")]
    pub normal_math: String,
    /// ZO steps without merging the update with the next step's first perturbation (3 passes
    /// per step instead of 2; trainer::optim::zo::zo_step).
    #[arg(long)]
    pub no_carry: bool,
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// Output directory.
    #[arg(long, default_value = "results/perf/latest")]
    pub out: PathBuf,
    /// Measure nothing: write `comparison.md` into `--out` from the `details.jsonl` of these
    /// earlier output directories (later ones override earlier cells).
    #[arg(long, value_delimiter = ',')]
    pub compare_only: Option<Vec<PathBuf>>,
    /// With `--compare-only`: earlier output directories (each also given there) measured
    /// before ghost clipping became DP-SGD's default; their `dp-sgd` cells are the micro-batch
    /// method and are read as `dp-sgd-microbatch` (as `repro perf-table --microbatch-dp-sgd`).
    #[arg(long, value_delimiter = ',', requires = "compare_only")]
    pub microbatch_dp_sgd: Vec<PathBuf>,
    /// The paper's memory figure as data.
    #[arg(long, default_value = "paper-tables/memory.csv")]
    pub paper_table: PathBuf,
}

/// One (model, method, shape) measurement, run in a child process.
#[derive(clap::Args, Clone)]
pub struct CellArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub method: String,
    #[arg(long)]
    pub dtype: String,
    #[arg(long)]
    pub batch: i64,
    #[arg(long)]
    pub seq: i64,
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value = "fast")]
    pub normal_math: String,
    #[arg(long)]
    pub no_carry: bool,
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
}

/// What a cell measured (one line of `details.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    pub model: String,
    pub dtype: String,
    pub batch: i64,
    pub seq: i64,
    pub method: String,
    pub device: String,
    pub normal_math: String,
    /// Whether ZO steps merged their update with the next step's first perturbation (rows
    /// written before the option existed did not).
    #[serde(default)]
    pub carry: bool,
    /// Perturbation passes per timed step (ZO methods).
    #[serde(default)]
    pub passes_per_step: Option<f64>,
    /// Median wall time of one step (synchronised), ms.
    pub ms_median: f64,
    /// All timed steps, ms.
    pub ms_all: Vec<f64>,
    /// Device memory used at the end minus before the model (bytes); -1 on CPU.
    pub peak_bytes: i64,
    /// Bytes of the weights.
    pub weight_bytes: i64,
    /// Parameters in the model.
    pub parameters: i64,
    /// Coordinates a step updates (|M| for dp-zopo).
    pub trained_coordinates: i64,
    /// Median time of one perturbation pass over the trained coordinates, ms (ZO methods).
    pub perturb_ms: Option<f64>,
    /// Bytes of the proximal anchor (dp-zoso) or mask indices (dp-zopo) the method keeps.
    pub method_state_bytes: i64,
}

/// The dtype column: `tf32` for f32 runs whose cuBLAS matmuls use TF32, i.e. under libtorch's
/// `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1` (ATen/Context.h reads it when the context is created;
/// the PyTorch reference script labels its rows the same way).
fn dtype_label(dtype: &str) -> String {
    let tf32 = std::env::var("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE").is_ok_and(|v| v == "1");
    if dtype == "f32" && tf32 {
        "tf32".into()
    } else {
        dtype.to_string()
    }
}

fn parse_math(name: &str) -> Result<NormalMath> {
    name.parse()
        .map_err(|reason: String| anyhow!("--normal-math: {reason}"))
}

fn load_config(model: &str) -> Result<ModelConfig> {
    if PUBLISHED_NAMES.contains(&model) {
        return published(model).map_err(|e| anyhow!("{e}"));
    }
    let path = PathBuf::from(model);
    if !path.is_file() {
        bail!(
            "--models {model}: neither a known config ({}) nor a config.json file",
            PUBLISHED_NAMES.join(", ")
        );
    }
    ModelConfig::from_file(&path).map_err(|e| anyhow!("{e}"))
}

/// Random token ids (never the special ids 0..4), every token real, two label words (1000 and
/// 2000, as the PyTorch reference; a third and two thirds of a tiny vocabulary) scored at the
/// last position: the shape of a prompt-classification batch.
fn random_batch(vocab: i64, batch: i64, seq: i64, device: Device) -> Result<Batch> {
    if batch < 1 || seq < 2 {
        bail!("batch {batch} and seq {seq}: need batch >= 1 and seq >= 2");
    }
    if vocab < 8 {
        bail!("vocabulary of {vocab} is too small for a test batch");
    }
    let label_words = if vocab > 2001 {
        [1000i64, 2000]
    } else {
        [vocab / 3, 2 * vocab / 3]
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let ids: Vec<i64> = (0..batch * seq)
        .map(|_| rng.random_range(4..vocab))
        .collect();
    let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..2)).collect();
    Ok(Batch {
        input_ids: Tensor::from_slice(&ids)
            .view([batch, seq])
            .to_device(device),
        attention_mask: Tensor::ones([batch, seq], (Kind::Int64, device)),
        positions: Tensor::full([batch], seq - 1, (Kind::Int64, device)),
        labels: Tensor::from_slice(&labels).to_device(device),
        label_word_ids: Tensor::from_slice(&label_words).to_device(device),
    })
}

/// 1% of each tensor's coordinates, uniformly at random (duplicates dropped): the cost of a
/// DP-ZOPO step depends on |M| and its layout only, so the data-free scorer (run once per
/// stage) is not part of the step measurement.
fn random_masks(params: &TrainableParams, ratio: f64) -> Result<Vec<(String, Tensor)>> {
    tch::manual_seed(7);
    let mut masks = Vec::new();
    for (name, tensor) in params.named() {
        let numel = tensor.numel() as i64;
        let count = ((numel as f64) * ratio).round() as i64;
        if count == 0 {
            continue;
        }
        let draws = Tensor::randint(numel, [count], (Kind::Int64, tensor.device()));
        let (unique, _, _) = draws.unique_dim(0, true, false, false);
        masks.push((name.clone(), unique));
    }
    Ok(masks)
}

fn synchronize(device: Device) {
    if let Device::Cuda(ordinal) = device {
        tch::Cuda::synchronize(ordinal as i64);
    }
}

fn memory_used(device: Device) -> Result<Option<u64>> {
    match device {
        Device::Cuda(ordinal) => trainer::device::device_memory_used(ordinal)
            .map(Some)
            .map_err(|e| anyhow!("cuMemGetInfo: {e}")),
        _ => Ok(None),
    }
}

/// Untimed steps run for at least this long before timing: the H200 lowers its clocks within
/// the first second of sustained load (session 5 `run-h`: OPT-1.3B forwards 16.4 ms on the
/// first timed repeat, 18.0 ms from the fifth on), so every cell is timed at steady clocks.
const MIN_WARMUP_SECONDS: f64 = 1.5;

/// What [`time_steps`] measured.
struct Timing {
    /// Median of the timed steps, ms.
    median_ms: f64,
    /// Every timed step, ms.
    all_ms: Vec<f64>,
    /// Steps run in all, warm-up included.
    steps: u64,
}

/// Median of `repeats` synchronised runs of `step` after at least `warmup` untimed ones (and
/// at least [`MIN_WARMUP_SECONDS`] of them).
fn time_steps(
    device: Device,
    warmup: usize,
    repeats: usize,
    mut step: impl FnMut(u64) -> Result<()>,
) -> Result<Timing> {
    let mut counter = 0u64;
    let warm_start = Instant::now();
    while counter < warmup as u64 || warm_start.elapsed().as_secs_f64() < MIN_WARMUP_SECONDS {
        counter += 1;
        step(counter)?;
        if counter.is_multiple_of(8) {
            synchronize(device);
        }
    }
    synchronize(device);
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        counter += 1;
        let start = Instant::now();
        step(counter)?;
        synchronize(device);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Timing {
        median_ms: sorted[sorted.len() / 2],
        all_ms: times,
        steps: counter,
    })
}

/// Measures one cell in this process.
pub fn measure_cell(args: &CellArgs) -> Result<CellResult> {
    if !METHODS.contains(&args.method.as_str()) {
        bail!(
            "--method {}: expected one of {}",
            args.method,
            METHODS.join(", ")
        );
    }
    let math = parse_math(&args.normal_math)?;
    set_normal_math(math);
    let device = device::select(args.device).map_err(anyhow::Error::msg)?;
    let kind = trainer::models::parse_dtype(&args.dtype).map_err(|e| anyhow!("{e}"))?;
    let config = load_config(&args.model)?;
    // Initialise CUDA, libtorch and the kernels before the baseline reading.
    let _touch = Tensor::zeros([1], (Kind::Float, device));
    if device.is_cuda() {
        // Load the perturbation kernels now, so their module is part of the baseline.
        let _loaded = trainer::perturb::cuda_kernel_available();
    }
    synchronize(device);
    let baseline = memory_used(device)?;

    let model = random_from_config(&config, kind, device).map_err(|e| anyhow!("{e}"))?;
    let batch = random_batch(config.vocab_size(), args.batch, args.seq, device)?;
    let mut params = TrainableParams::from_model(&model).map_err(|e| anyhow!("{e}"))?;
    let parameters = params.total_numel() as i64;
    let weight_bytes = params
        .named()
        .iter()
        .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as i64)
        .sum();
    let mut method_state_bytes = 0i64;
    let (zo_eps, step_size, clip_norm, noise_std, lambda) = (1e-3, 1e-7, 1.0, 1.0, 5e-4);
    let dp = Some(ZoPrivacy {
        clip_norm,
        noise_std,
    });
    let mut perturb_ms = None;
    let model_ref: &dyn LabelWordModel = &model;
    let err = |e: trainer::optim::OptimError| anyhow!("{e}");

    // Method state (mask, proximal anchor, optimiser) first, then one timed step loop.
    let method = args.method.as_str();
    if method == "dp-zopo" {
        params
            .set_masks(Some(random_masks(&params, 0.01)?))
            .map_err(err)?;
        method_state_bytes = params
            .masks()
            .unwrap_or(&[])
            .iter()
            .map(|(_, m)| (m.numel() * 8) as i64)
            .sum();
    }
    let anchor = match method {
        "dp-zoso" | "dp-zopo" => {
            method_state_bytes += params.anchor_bytes() as i64;
            Some(params.snapshot_anchor().map_err(err)?)
        }
        _ => None,
    };
    let zo_settings = ZoStepSettings {
        zo_eps,
        step_size,
        num_directions: 1,
        privacy: if method == "zo" { None } else { dp },
        normaliser: None,
        proximal: anchor.as_ref().map(|a| (a, lambda)),
    };
    let dp_sgd_settings = DpSgdSettings {
        step_size,
        clip_norm,
        noise_std,
        normaliser: None,
        clipping: if method == "dp-sgd-microbatch" {
            DpSgdClipping::Microbatch
        } else {
            DpSgdClipping::Ghost
        },
    };
    let mut optimizer = match method {
        "backprop" => Some(AdamW::new(&params, AdamWSettings::default()).map_err(err)?),
        _ => None,
    };
    let tensors: Vec<Tensor> = params
        .named()
        .iter()
        .map(|(_, t)| t.shallow_clone())
        .collect();
    let params = &params;
    let zeroth_order = matches!(method, "zo" | "dp-zoso" | "dp-zoso-noanchor" | "dp-zopo");
    if zeroth_order {
        let set = params.param_set().map_err(err)?;
        let pass = time_steps(device, 1, args.repeats, |s| {
            axpy_z(set, &[(s, 0.0)]).map_err(|e| anyhow!("{e}"))
        })?;
        perturb_ms = Some(pass.median_ms);
    }
    // ZO steps chain as in training: each leaves the next one's first perturbation on theta.
    let carry_out = (!args.no_carry).then_some(zo_eps);
    let mut carried = None;
    let passes_before = passes_on_this_thread();
    let timing = time_steps(device, args.warmup, args.repeats, |s| {
        match (method, optimizer.as_mut()) {
            ("infer", _) => per_example_loss_values(model_ref, &batch).map(drop),
            ("dp-sgd" | "dp-sgd-microbatch", _) => {
                dp_sgd_step(model_ref, params, &batch, &dp_sgd_settings, 11, s).map(drop)
            }
            ("backprop-sgd", _) => sgd_step(model_ref, &tensors, &batch, step_size),
            (_, Some(adamw)) => adamw
                .step(model_ref, params, &batch, step_size, s)
                .map(drop),
            _ => zo_step(
                model_ref,
                params,
                &batch,
                &zo_settings,
                11,
                s,
                carried.take(),
                carry_out,
            )
            .map(|(_, next)| carried = next),
        }
        .map_err(err)
    })?;
    let passes_per_step = zeroth_order
        .then(|| (passes_on_this_thread() - passes_before) as f64 / timing.steps as f64);
    settle(params, carried.take()).map_err(err)?;
    synchronize(device);
    let peak_bytes = match (baseline, memory_used(device)?) {
        (Some(before), Some(after)) => after.saturating_sub(before) as i64,
        _ => -1,
    };
    Ok(CellResult {
        model: args.model.clone(),
        dtype: args.dtype.clone(),
        batch: args.batch,
        seq: args.seq,
        method: args.method.clone(),
        device: device::name(device).to_string(),
        normal_math: args.normal_math.clone(),
        carry: zeroth_order && !args.no_carry,
        passes_per_step,
        ms_median: timing.median_ms,
        ms_all: timing.all_ms,
        peak_bytes,
        weight_bytes,
        parameters,
        trained_coordinates: params.trained_numel() as i64,
        perturb_ms,
        method_state_bytes,
    })
}

/// Non-private `theta <- theta - eta grad (mean loss)`: one forward, one backward, no optimiser
/// state (the work of a DP-SGD step without clipping and noise).
fn sgd_step(
    model: &dyn LabelWordModel,
    params: &[Tensor],
    batch: &Batch,
    step_size: f64,
) -> std::result::Result<(), trainer::optim::OptimError> {
    let loss = trainer::optim::loss::per_example_losses(model, batch)?.f_mean(Kind::Float)?;
    let grads = Tensor::f_run_backward(&[&loss], params, false, false)?;
    tch::no_grad(|| -> std::result::Result<(), tch::TchError> {
        for (p, g) in params.iter().zip(&grads) {
            let _ = p.shallow_clone().f_sub_(&g.f_mul_scalar(step_size)?)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// `repro memory-cell`: one cell, JSON on the last stdout line.
pub fn cell(args: CellArgs) -> Result<()> {
    let result = measure_cell(&args)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The model name as written in CSV rows (a config path becomes its parent folder's name).
fn model_label(model: &str) -> String {
    if PUBLISHED_NAMES.contains(&model) {
        return model.to_string();
    }
    let path = PathBuf::from(model);
    path.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.to_string())
}

/// `repro memory`: every (model, method) cell in its own process, then `comparison.md`.
pub fn run(args: MemoryArgs) -> Result<()> {
    if let Some(dirs) = &args.compare_only {
        for dir in &args.microbatch_dp_sgd {
            if !dirs.contains(dir) {
                bail!(
                    "--microbatch-dp-sgd {}: not among the --compare-only directories",
                    dir.display()
                );
            }
        }
        let cells = read_details(dirs, &args.microbatch_dp_sgd)?;
        write_comparison(&args.out, &cells, &args.paper_table)?;
        return crate::provenance::Provenance::collect("cpu").write_to_folder(&args.out);
    }
    parse_math(&args.normal_math)?;
    for method in &args.methods {
        if !METHODS.contains(&method.as_str()) {
            bail!("--methods {method}: expected among {}", METHODS.join(", "));
        }
    }
    for model in &args.models {
        load_config(model)?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let exe = std::env::current_exe().context("locating the repro binary")?;
    let csv_path = args.out.join("zo_step.csv");
    // The three files are built in memory and written (atomically) only when every cell has
    // run, so an interrupted run leaves the previous results in --out intact.
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record([
        "model",
        "dtype",
        "batch",
        "seq",
        "method",
        "impl",
        "ms_median",
        "peak_bytes",
    ])?;
    let details_path = args.out.join("details.jsonl");
    let mut details: Vec<u8> = Vec::new();
    let log_path = args.out.join("cells.log");
    let mut log: Vec<u8> = Vec::new();
    // The device the cells ran on, as they report it (the parent never initialises CUDA).
    let mut device_used: Option<String> = None;

    for model in &args.models {
        let (dtype, batch, seq) = default_shape(&model_label(model));
        let dtype = args.dtype.clone().unwrap_or_else(|| dtype.to_string());
        let batch = args.batch.unwrap_or(batch);
        let seq = args.seq.unwrap_or(seq);
        let mut cells: Vec<(String, i64)> =
            args.methods.iter().map(|m| (m.clone(), batch)).collect();
        if args.methods.iter().any(|m| m == "dp-sgd") {
            for &b in &args.dp_sgd_batches {
                if b != batch {
                    cells.push(("dp-sgd".into(), b));
                }
            }
        }
        for (method, batch) in cells {
            let cell = CellArgs {
                model: model.clone(),
                method: method.clone(),
                dtype: dtype.clone(),
                batch,
                seq,
                repeats: args.repeats,
                warmup: args.warmup,
                normal_math: args.normal_math.clone(),
                no_carry: args.no_carry,
                device: args.device,
            };
            let started = Instant::now();
            let output = Command::new(&exe)
                .args(cell_command_line(&cell))
                .output()
                .with_context(|| format!("running {} memory-cell", exe.display()))?;
            log.write_all(&output.stderr)?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let parsed = stdout
                .lines()
                .last()
                .and_then(|line| serde_json::from_str::<CellResult>(line).ok());
            let label = model_label(model);
            let (ms, peak) = match (output.status.success(), parsed) {
                (true, Some(result)) => {
                    device_used.get_or_insert_with(|| result.device.clone());
                    writeln!(details, "{}", serde_json::to_string(&result)?)?;
                    eprintln!(
                        "{label} {method} B={batch}: {:.2} ms, peak {:.1} MiB ({:.0} s)",
                        result.ms_median,
                        result.peak_bytes as f64 / 1048576.0,
                        started.elapsed().as_secs_f64()
                    );
                    (format!("{:.4}", result.ms_median), result.peak_bytes)
                }
                _ => {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    let reason = stderr
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("no output");
                    eprintln!("{label} {method} B={batch}: failed: {reason}");
                    writeln!(
                        details,
                        "{}",
                        serde_json::json!({"model": label, "method": method, "batch": batch,
                                           "error": reason})
                    )?;
                    ("nan".to_string(), -1)
                }
            };
            csv.write_record([
                label,
                dtype_label(&dtype),
                batch.to_string(),
                seq.to_string(),
                method.clone(),
                "ours".into(),
                ms,
                peak.to_string(),
            ])?;
        }
    }
    let csv_bytes = csv.into_inner().context("finishing zo_step.csv")?;
    for (path, bytes) in [
        (&log_path, &log),
        (&details_path, &details),
        (&csv_path, &csv_bytes),
    ] {
        atomic_file::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("wrote {}", csv_path.display());
    let device = device_used.unwrap_or_else(|| match args.device {
        DeviceRequest::Cpu => "cpu".into(),
        DeviceRequest::Cuda | DeviceRequest::Auto => "cuda".into(),
    });
    crate::provenance::Provenance::collect(&device).write_to_folder(&args.out)?;
    let cells = read_details(std::slice::from_ref(&args.out), &[])?;
    write_comparison(&args.out, &cells, &args.paper_table)
}

/// The measured cells of `details.jsonl` in `dirs` (failed cells skipped), later dirs overriding
/// earlier ones per (model, method, batch); `dp-sgd` cells of the dirs in `microbatch` are
/// renamed `dp-sgd-microbatch`.
fn read_details(dirs: &[PathBuf], microbatch: &[PathBuf]) -> Result<Vec<CellResult>> {
    let mut cells: Vec<CellResult> = Vec::new();
    for dir in dirs {
        let path = dir.join("details.jsonl");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for (line_no, line) in text.lines().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), line_no + 1))?;
            if value.get("error").is_some() {
                continue;
            }
            let mut cell: CellResult = serde_json::from_value(value).with_context(|| {
                format!("{}:{}: not a cell result", path.display(), line_no + 1)
            })?;
            cell.model = model_label(&cell.model);
            if microbatch.contains(dir) && cell.method == "dp-sgd" {
                cell.method = "dp-sgd-microbatch".into();
            }
            cells.retain(|c| {
                (c.model.as_str(), c.method.as_str(), c.batch)
                    != (cell.model.as_str(), cell.method.as_str(), cell.batch)
            });
            cells.push(cell);
        }
    }
    Ok(cells)
}

/// `comparison.md`: our peaks and times against the paper's memory figure, and its claims.
fn write_comparison(
    out: &std::path::Path,
    cells: &[CellResult],
    paper: &std::path::Path,
) -> Result<()> {
    let paper_rows = crate::target::compare::read_paper_table(paper)?;
    let paper_value = |model: &str, method: &str, metric: &str| {
        paper_rows
            .iter()
            .find(|row| row.model == model && row.method == method && row.metric == metric)
            .map(|row| row.value)
    };
    // Paper method -> our cell (the default batch of the model: the largest measured).
    const MAP: [(&str, &str); 4] = [
        ("zero-shot", "infer"),
        ("dp-zoso", "dp-zoso-noanchor"),
        ("dp-zopo", "dp-zopo"),
        ("dp-ft", "dp-sgd"),
    ];
    let ours = |model: &str, method: &str| {
        cells
            .iter()
            .filter(|c| c.model == model && c.method == method && c.peak_bytes > 0)
            .max_by_key(|c| c.batch)
    };
    let mib = |b: i64| b as f64 / 1048576.0;
    let mut md = String::from("# Memory target: ours against the paper's memory figure\n\n");
    md.push_str(
        "Paper: `paper-tables/memory.csv` (liu2025:fig-memory; its peaks equal the fp16 weight \
         sizes, i.e. weights only). Ours: `repro memory` on one GPU, random weights from the \
         published configs, f16, 16 x 256; peak = device memory in use beyond the CUDA context \
         (weights, activations, workspaces); time = median step (ms). The paper's times are \
         totals of an unstated budget, so only ratios between methods are compared.\n\n",
    );
    md.push_str("| model | method (paper) | our cell | paper peak (MB) | our peak (MiB) | paper / zero-shot | ours / inference | our step (ms) |\n|---|---|---|---|---|---|---|---|\n");
    let mut claims = Vec::new();
    for model in ["opt-1.3b", "opt-2.7b"] {
        let base_paper = paper_value(model, "zero-shot", "peak_mb");
        let base_ours = ours(model, "infer").map(|c| mib(c.peak_bytes));
        for (paper_method, cell_method) in MAP {
            let p = paper_value(model, paper_method, "peak_mb");
            let o = ours(model, cell_method);
            let fmt =
                |v: Option<f64>, d: usize| v.map_or("–".to_string(), |v| format!("{v:.d$}"));
            md.push_str(&format!(
                "| {model} | {paper_method} | {cell_method} | {} | {} | {} | {} | {} |\n",
                fmt(p, 1),
                fmt(o.map(|c| mib(c.peak_bytes)), 0),
                fmt(p.zip(base_paper).map(|(a, b)| a / b), 2),
                fmt(
                    o.map(|c| mib(c.peak_bytes))
                        .zip(base_ours)
                        .map(|(a, b)| a / b),
                    2
                ),
                fmt(o.map(|c| c.ms_median), 1),
            ));
        }
        if let Some(micro) = ours(model, "dp-sgd-microbatch") {
            md.push_str(&format!(
                "| {model} | (dp-ft, micro-batch DP-SGD) | dp-sgd-microbatch | – | {:.0} | – | {} | {:.1} |\n",
                mib(micro.peak_bytes),
                base_ours.map_or("–".into(), |b| format!("{:.2}", mib(micro.peak_bytes) / b)),
                micro.ms_median
            ));
        }
        if let Some(anchor) = ours(model, "dp-zoso") {
            md.push_str(&format!(
                "| {model} | (dp-zoso, intended anchor) | dp-zoso | – | {:.0} | – | {} | {:.1} |\n",
                mib(anchor.peak_bytes),
                base_ours.map_or("–".into(), |b| format!(
                    "{:.2}",
                    mib(anchor.peak_bytes) / b
                )),
                anchor.ms_median
            ));
        }
        let ratio = |m: &str| {
            ours(model, m)
                .map(|c| mib(c.peak_bytes))
                .zip(base_ours)
                .map(|(a, b)| a / b)
        };
        let verdict = |ok: bool| if ok { "reproduced" } else { "not reproduced" };
        if let Some(r) = ratio("dp-zoso-noanchor") {
            claims.push(format!("| {model}: DP-ZOSO memory = inference memory | yes | {r:.3} x (released no-op anchor); {} with the intended anchor copy | {} |",
                ratio("dp-zoso").map_or("–".into(), |a| format!("{a:.2} x")), verdict(r <= 1.02)));
        }
        if let (Some(ft), Some(zoso)) = (ours(model, "dp-sgd"), ours(model, "dp-zoso-noanchor")) {
            let r = ft.peak_bytes as f64 / zoso.peak_bytes as f64;
            let paper_r = paper_value(model, "dp-ft", "peak_mb")
                .zip(paper_value(model, "dp-zoso", "peak_mb"))
                .map(|(a, b)| a / b);
            let micro = ours(model, "dp-sgd-microbatch").map_or(String::new(), |m| {
                format!(
                    "; micro-batch DP-SGD {:.2} x",
                    m.peak_bytes as f64 / zoso.peak_bytes as f64
                )
            });
            claims.push(format!("| {model}: DP FT needs 3-4 x DP-ZOSO's memory | {} | {r:.2} x (ghost-clipping DP-SGD, one backward, B = {}){micro} | {} |",
                paper_r.map_or("–".into(), |p| format!("{p:.2} x")), ft.batch, verdict(r >= 3.0)));
        }
        if let (Some(zopo), Some(zoso)) = (ours(model, "dp-zopo"), ours(model, "dp-zoso-noanchor"))
        {
            let extra = mib(zopo.peak_bytes - zoso.peak_bytes);
            let paper_extra = paper_value(model, "dp-zopo", "peak_mb")
                .zip(paper_value(model, "dp-zoso", "peak_mb"))
                .map(|(a, b)| a - b);
            claims.push(format!("| {model}: DP-ZOPO adds little memory over DP-ZOSO | {} | +{extra:.0} MiB (int64 indices of the 1% mask + its anchor) | {} |",
                paper_extra.map_or("–".into(), |p| format!("+{p:.0} MB")), verdict(extra < 0.15 * mib(zoso.peak_bytes))));
        }
    }
    md.push_str(
        "\n## The paper's claims\n\n| claim | paper | ours | verdict |\n|---|---|---|---|\n",
    );
    for c in claims {
        md.push_str(&c);
        md.push('\n');
    }
    md.push_str(&dp_sgd_section(cells));
    let path = out.join("comparison.md");
    std::fs::create_dir_all(out)?;
    atomic_file::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// DP-SGD against non-private backprop at the same batch, per model: the targets step time
/// <= 2 x and peak <= 1.3 x backprop (AdamW; also against the plain SGD step).
fn dp_sgd_section(cells: &[CellResult]) -> String {
    let mut models: Vec<&str> = Vec::new();
    for cell in cells {
        if !models.contains(&cell.model.as_str()) {
            models.push(&cell.model);
        }
    }
    let find = |model: &str, method: &str, batch: i64| {
        cells
            .iter()
            .find(|c| c.model == model && c.method == method && c.batch == batch)
    };
    let mut rows = String::new();
    // -1: no device reading (CPU).
    let peak_mib = |b: i64| {
        if b > 0 {
            format!("{:.0}", b as f64 / 1048576.0)
        } else {
            "–".into()
        }
    };
    for model in models {
        let Some(backprop) = cells
            .iter()
            .filter(|c| c.model == model && c.method == "backprop")
            .max_by_key(|c| c.batch)
        else {
            continue;
        };
        let b = backprop.batch;
        let sgd = find(model, "backprop-sgd", b);
        for method in ["dp-sgd", "dp-sgd-microbatch"] {
            let Some(dp) = find(model, method, b) else {
                continue;
            };
            let time = dp.ms_median / backprop.ms_median;
            let peak = (backprop.peak_bytes > 0 && dp.peak_bytes > 0)
                .then(|| dp.peak_bytes as f64 / backprop.peak_bytes as f64);
            let versus_sgd = sgd.map_or("–".to_string(), |s| {
                let peak = (s.peak_bytes > 0 && dp.peak_bytes > 0)
                    .then(|| format!("{:.2}", dp.peak_bytes as f64 / s.peak_bytes as f64));
                format!(
                    "{:.2} / {}",
                    dp.ms_median / s.ms_median,
                    peak.unwrap_or_else(|| "–".into())
                )
            });
            let met = time <= 2.0 && peak.is_some_and(|p| p <= 1.3);
            rows.push_str(&format!(
                "| {model} | {} | {b} x {} | {method} | {:.1} | {} | {:.1} | {} | {time:.2} | {} | {versus_sgd} | {} |\n",
                dp.dtype,
                dp.seq,
                dp.ms_median,
                peak_mib(dp.peak_bytes),
                backprop.ms_median,
                peak_mib(backprop.peak_bytes),
                peak.map_or("–".into(), |p| format!("{p:.2}")),
                if met { "met" } else { "not met" },
            ));
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\n## DP-SGD against non-private backprop\n\nSame batch, same call. Targets: DP-SGD step \
         <= 2 x backprop (AdamW) and peak <= 1.3 x. `dp-sgd` clips by ghost norms (one forward, \
         one backward); `dp-sgd-microbatch` backpropagates each example alone. The last but one \
         column compares with `backprop-sgd` (forward, backward, plain SGD update: no optimiser \
         state).\n\n| model | dtype | B x L | DP-SGD | step (ms) | peak (MiB) | backprop step \
         (ms) | backprop peak (MiB) | time ratio | peak ratio | vs backprop-sgd (time / peak) | \
         targets |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n{rows}"
    )
}

fn cell_command_line(cell: &CellArgs) -> Vec<String> {
    let device = match cell.device {
        DeviceRequest::Auto => "auto",
        DeviceRequest::Cpu => "cpu",
        DeviceRequest::Cuda => "cuda",
    };
    let flags = [
        ("--model", cell.model.clone()),
        ("--method", cell.method.clone()),
        ("--dtype", cell.dtype.clone()),
        ("--batch", cell.batch.to_string()),
        ("--seq", cell.seq.to_string()),
        ("--repeats", cell.repeats.to_string()),
        ("--warmup", cell.warmup.to_string()),
        ("--normal-math", cell.normal_math.clone()),
        ("--device", device.to_string()),
    ];
    std::iter::once("memory-cell".to_string())
        .chain(
            flags
                .into_iter()
                .flat_map(|(flag, value)| [flag.to_string(), value]),
        )
        .chain(cell.no_carry.then(|| "--no-carry".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(method: &str) -> CellArgs {
        let config = trainer::data::dir::workspace_root()
            .join("crates/trainer/tests/fixtures/opt_tiny/config.json");
        CellArgs {
            model: config.to_string_lossy().into_owned(),
            method: method.into(),
            dtype: "f32".into(),
            batch: 3,
            seq: 8,
            repeats: 2,
            warmup: 1,
            normal_math: "exact".into(),
            no_carry: false,
            device: DeviceRequest::Cpu,
        }
    }

    #[test]
    fn every_method_measures_on_a_tiny_model() {
        for method in METHODS {
            let result = measure_cell(&tiny(method)).unwrap_or_else(|e| panic!("{method}: {e:#}"));
            assert!(
                result.ms_median.is_finite() && result.ms_median > 0.0,
                "{method}"
            );
            assert_eq!(result.peak_bytes, -1, "no device memory reading on CPU");
            let expected_trained = if method == "dp-zopo" {
                result.parameters / 100
            } else {
                result.parameters
            };
            // Per-tensor rounding of 1% and dropped duplicate draws move |M| a little.
            assert!(
                (result.trained_coordinates - expected_trained).abs() <= expected_trained / 5,
                "{method}: trained {} of {}",
                result.trained_coordinates,
                result.parameters
            );
            let zeroth_order = method.starts_with("zo") || method.starts_with("dp-zo");
            assert_eq!(result.perturb_ms.is_some(), zeroth_order);
            // n chained steps (1.5 s of warm-up, 2 timed): 3 passes for the first, 2 for the
            // others, i.e. 2 + 1 / n per step.
            if let Some(passes) = result.passes_per_step {
                let n = 1.0 / (passes - 2.0);
                assert!(
                    n >= 3.0 && (n - n.round()).abs() < 1e-6,
                    "{method}: {passes} passes per step"
                );
            }
            assert_eq!(result.passes_per_step.is_some(), zeroth_order, "{method}");
            assert_eq!(result.carry, zeroth_order, "{method}");
        }
    }

    fn cell(model: &str, method: &str, peak_mib: i64) -> CellResult {
        CellResult {
            model: model.into(),
            dtype: "f16".into(),
            batch: 16,
            seq: 256,
            method: method.into(),
            device: "cuda".into(),
            normal_math: "fast".into(),
            carry: false,
            passes_per_step: None,
            ms_median: 10.0,
            ms_all: vec![10.0],
            peak_bytes: peak_mib * 1048576,
            weight_bytes: 0,
            parameters: 0,
            trained_coordinates: 0,
            perturb_ms: None,
            method_state_bytes: 0,
        }
    }

    #[test]
    fn the_comparison_reads_the_paper_table_by_column_name() {
        // The paper table with its columns in another order: the same ratios come out.
        let dir = std::env::temp_dir().join(format!("dpzo-memory-cmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paper = dir.join("memory.csv");
        std::fs::write(
            &paper,
            "value,metric,method,model,task,epsilon,std,source,target\n\
             1000,peak_mb,zero-shot,opt-1.3b,,,,test,memory\n\
             1000,peak_mb,dp-zoso,opt-1.3b,,,,test,memory\n\
             3000,peak_mb,dp-ft,opt-1.3b,,,,test,memory\n",
        )
        .unwrap();
        let cells = [
            cell("opt-1.3b", "infer", 100),
            cell("opt-1.3b", "dp-zoso-noanchor", 100),
            cell("opt-1.3b", "dp-sgd", 450),
        ];
        write_comparison(&dir, &cells, &paper).unwrap();
        let md = std::fs::read_to_string(dir.join("comparison.md")).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            md.contains("| opt-1.3b | dp-ft | dp-sgd | 3000.0 | 450 | 3.00 | 4.50 | 10.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| 3.00 x | 4.50 x (ghost-clipping DP-SGD"),
            "{md}"
        );
    }

    #[test]
    fn a_malformed_paper_row_names_file_and_line() {
        let dir = std::env::temp_dir().join(format!("dpzo-memory-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paper = dir.join("memory.csv");
        std::fs::write(
            &paper,
            "target,model,task,method,epsilon,metric,value,std,source\n\
             memory,opt-1.3b,,dp-ft,,peak_mb,lots,,test\n",
        )
        .unwrap();
        let e = format!("{:#}", write_comparison(&dir, &[], &paper).unwrap_err());
        std::fs::remove_dir_all(&dir).ok();
        assert!(e.contains("memory.csv:2"), "{e}");
    }

    #[test]
    fn unchained_zo_steps_take_three_passes() {
        let mut args = tiny("dp-zopo");
        args.no_carry = true;
        let result = measure_cell(&args).unwrap();
        assert_eq!(result.passes_per_step, Some(3.0));
        assert!(!result.carry);
    }

    #[test]
    fn bad_cells_are_errors_naming_the_value() {
        let mut args = tiny("nope");
        let e = measure_cell(&args).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        args.method = "infer".into();
        args.model = "/no/such/config.json".into();
        let e = measure_cell(&args).unwrap_err().to_string();
        assert!(e.contains("/no/such/config.json"), "{e}");
        let mut args = tiny("infer");
        args.normal_math = "sloppy".into();
        assert!(measure_cell(&args)
            .unwrap_err()
            .to_string()
            .contains("sloppy"));
    }
}
