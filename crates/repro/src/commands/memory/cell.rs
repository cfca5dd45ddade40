//! One cell of `repro memory`, measured in this process (`repro memory-cell`): the model built
//! from its config with random weights, the method's state, then the timed steps, and the device
//! memory in use at the end beyond the reading taken before the model was built.

use anyhow::{anyhow, bail, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};
use trainer::batch::Batch;
use trainer::device::{self, DeviceRequest};
use trainer::model::LabelWordModel;
use trainer::models::config::{published, PUBLISHED_NAMES};
use trainer::models::{random_from_config, ModelConfig};
use trainer::optim::adamw::AdamWSettings;
use trainer::optim::dp_sgd::DpSgdClipping;
use trainer::optim::loss::per_example_loss_values;
use trainer::optim::params::TrainableParams;
use trainer::optim::zo::{ZoForward, ZoPrivacy};
use trainer::perturb::{axpy_z, passes_on_this_thread, set_normal_math, NormalMath};
use trainer::train::{method_steps_on_this_thread, Method, MethodSettings, MethodStep, StepInput};

/// Methods, named as in `results/perf/zo_step.csv`.
pub(super) const METHODS: [&str; 10] = [
    "infer",
    "zo",
    "zo-paired",
    "dp-zoso",
    "dp-zoso-noanchor",
    "dp-zopo",
    "dp-sgd",
    "dp-sgd-microbatch",
    "backprop",
    "backprop-sgd",
];

/// One (model, method, shape) measurement (`repro memory-cell`, run by `repro memory` in a
/// child process).
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
    #[command(flatten)]
    pub timing: RunFlags,
}

/// How cells are run and timed: the same flags on `repro memory` and on each `memory-cell`
/// child it starts.
#[derive(clap::Args, Clone, Debug)]
pub struct RunFlags {
    /// Timed steps per cell (median reported).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Untimed steps first (NVRTC compile, cuBLAS heuristics, allocator warm-up, clocks); at
    /// least 1.5 s of them.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// The CUDA kernel's normal math (fast, the default, or exact: bitwise equal to the CPU;
    /// trainer::perturb::NormalMath).
    #[arg(long, value_enum, default_value = "fast")]
    pub normal_math: NormalMath,
    /// ZO steps without merging the update with the next step's first perturbation (3 passes
    /// per step instead of 2; trainer::optim::zo::zo_step).
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
    /// Steps run in all, warm-up included (absent in cells measured before it was recorded).
    #[serde(default)]
    pub steps: Option<u64>,
    /// Of them, calls of the trainer's step (`trainer::train::MethodStep::step`, the one
    /// `run_training` makes): all of them for the training methods, `None` for `infer` and
    /// `backprop-sgd`.
    #[serde(default)]
    pub method_steps: Option<u64>,
}

pub(super) fn load_config(model: &str) -> Result<ModelConfig> {
    if PUBLISHED_NAMES.contains(&model) {
        return Ok(published(model)?);
    }
    let path = PathBuf::from(model);
    if !path.is_file() {
        bail!(
            "--models {model}: neither a known config ({}) nor a config.json file",
            PUBLISHED_NAMES.join(", ")
        );
    }
    Ok(ModelConfig::from_file(&path)?)
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
    set_normal_math(args.timing.normal_math);
    let device = device::select(args.timing.device).map_err(anyhow::Error::msg)?;
    let kind = trainer::models::parse_dtype(&args.dtype)?;
    let config = load_config(&args.model)?;
    // Initialise CUDA, libtorch and the kernels before the baseline reading.
    let _touch = Tensor::zeros([1], (Kind::Float, device));
    if device.is_cuda() {
        // Load the perturbation kernels now, so their module is part of the baseline.
        let _loaded = trainer::perturb::cuda_kernel_available();
    }
    synchronize(device);
    let baseline = memory_used(device)?;

    let model = random_from_config(&config, kind, device)?;
    let batch = random_batch(config.vocab_size(), args.batch, args.seq, device)?;
    let mut params = TrainableParams::from_model(&model)?;
    let parameters = params.total_numel() as i64;
    let weight_bytes = params
        .named()
        .iter()
        .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as i64)
        .sum();
    let mut method_state_bytes = 0i64;
    let (zo_eps, step_size, clip_norm, noise_std, lambda) = (1e-3, 1e-7, 1.0, 1.0, 5e-4);
    let mut perturb_ms = None;
    let model_ref: &dyn LabelWordModel = &model;

    // Method state (mask, proximal anchor, optimiser) first, then one timed step loop.
    let method = args.method.as_str();
    if method == "dp-zopo" {
        params.set_masks(Some(random_masks(&params, 0.01)?))?;
        method_state_bytes = params
            .masks()
            .unwrap_or(&[])
            .iter()
            .map(|(_, m)| (m.numel() * 8) as i64)
            .sum();
    }
    if method == "zo-paired" {
        // The paired forward's two replicas of every perturbed weight (trainer::optim::paired).
        params.paired_weights()?;
        method_state_bytes += 2 * weight_bytes;
    }
    let anchor = match method {
        "dp-zoso" | "dp-zopo" => {
            method_state_bytes += params.anchor_bytes() as i64;
            Some(params.snapshot_anchor()?)
        }
        _ => None,
    };
    // The training methods run the trainer's own step (trainer::train::MethodStep), as
    // `run_training` does; `infer` and `backprop-sgd` are the baselines beside them.
    let training_method = match method {
        "zo" | "zo-paired" => Some(Method::Mezo),
        "dp-zoso" | "dp-zoso-noanchor" => Some(Method::DpZoso),
        "dp-zopo" => Some(Method::DpZopo),
        "dp-sgd" | "dp-sgd-microbatch" => Some(Method::DpSgd),
        "backprop" => Some(Method::FullFineTune),
        _ => None,
    };
    let settings = MethodSettings {
        seed: 11,
        num_directions: 1,
        privacy: Some(ZoPrivacy {
            clip_norm,
            noise_std,
        }),
        normaliser: None,
        proximal_weight: lambda,
        dp_sgd_clipping: if method == "dp-sgd-microbatch" {
            DpSgdClipping::Microbatch
        } else {
            DpSgdClipping::Ghost
        },
        adamw: AdamWSettings::default(),
        zo_forward: if method == "zo-paired" {
            ZoForward::Paired
        } else {
            ZoForward::Sequential
        },
    };
    let mut method_step = training_method
        .map(|m| MethodStep::new(m, settings, &params))
        .transpose()?;
    let tensors: Vec<Tensor> = params
        .named()
        .iter()
        .map(|(_, t)| t.shallow_clone())
        .collect();
    let params = &params;
    let zeroth_order = matches!(
        method,
        "zo" | "zo-paired" | "dp-zoso" | "dp-zoso-noanchor" | "dp-zopo"
    );
    // A paired step never perturbs theta, so it never chains.
    let chains = zeroth_order && method != "zo-paired" && !args.timing.no_carry;
    if zeroth_order {
        let set = params.param_set()?;
        let pass = time_steps(device, 1, args.timing.repeats, |s| {
            axpy_z(set, &[(s, 0.0)]).map_err(anyhow::Error::from)
        })?;
        perturb_ms = Some(pass.median_ms);
    }
    // ZO steps chain as in training: each leaves the next one's first perturbation on theta.
    let carry_out = chains.then_some(zo_eps);
    let passes_before = passes_on_this_thread();
    let method_steps_before = method_steps_on_this_thread();
    let timing = time_steps(device, args.timing.warmup, args.timing.repeats, |s| {
        match (method, method_step.as_mut()) {
            ("infer", _) => per_example_loss_values(model_ref, &batch).map(drop),
            ("backprop-sgd", _) => sgd_step(model_ref, &tensors, &batch, step_size),
            (_, Some(state)) => {
                let input = StepInput {
                    step: s,
                    zo_eps,
                    step_size,
                    anchor: anchor.as_ref(),
                    carry_out,
                };
                state.step(model_ref, params, &batch, input).map(drop)
            }
            (other, None) => unreachable!("method {other} was checked against METHODS"),
        }
        .map_err(anyhow::Error::from)
    })?;
    let passes_per_step = zeroth_order
        .then(|| (passes_on_this_thread() - passes_before) as f64 / timing.steps as f64);
    let method_steps = training_method.map(|_| method_steps_on_this_thread() - method_steps_before);
    if let Some(state) = method_step.as_mut() {
        state.settle(params)?;
    }
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
        normal_math: args.timing.normal_math.name().to_string(),
        carry: chains,
        passes_per_step,
        ms_median: timing.median_ms,
        ms_all: timing.all_ms,
        peak_bytes,
        weight_bytes,
        parameters,
        trained_coordinates: params.trained_numel() as i64,
        perturb_ms,
        method_state_bytes,
        steps: Some(timing.steps),
        method_steps,
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
pub fn run_cell(args: CellArgs) -> Result<()> {
    let result = measure_cell(&args)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
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
            timing: RunFlags {
                repeats: 2,
                warmup: 1,
                normal_math: NormalMath::Exact,
                no_carry: false,
                device: DeviceRequest::Cpu,
            },
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
            // A paired step: two out-of-place passes and the update. n chained steps (1.5 s of
            // warm-up, 2 timed): 3 passes for the first, 2 for the others, i.e. 2 + 1 / n per
            // step.
            if method == "zo-paired" {
                assert_eq!(result.passes_per_step, Some(3.0), "{method}");
                assert!(!result.carry, "{method}");
                assert_eq!(
                    result.method_state_bytes,
                    2 * result.weight_bytes,
                    "{method}"
                );
            } else if let Some(passes) = result.passes_per_step {
                let n = 1.0 / (passes - 2.0);
                assert!(
                    n >= 3.0 && (n - n.round()).abs() < 1e-6,
                    "{method}: {passes} passes per step"
                );
            }
            assert_eq!(result.passes_per_step.is_some(), zeroth_order, "{method}");
            assert_eq!(
                result.carry,
                zeroth_order && method != "zo-paired",
                "{method}"
            );
            // Every timed (and warm-up) step of a training method is the trainer's own step
            // (trainer::train::MethodStep::step, which run_training calls).
            let steps = result.steps.expect("steps recorded");
            assert!(steps >= 3, "{method}: {steps} steps");
            let baseline = matches!(method, "infer" | "backprop-sgd");
            assert_eq!(
                result.method_steps,
                (!baseline).then_some(steps),
                "{method}: the trainer's step ran {:?} of {steps} steps",
                result.method_steps
            );
        }
    }

    #[test]
    fn unchained_zo_steps_take_three_passes() {
        let mut args = tiny("dp-zopo");
        args.timing.no_carry = true;
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
    }
}
