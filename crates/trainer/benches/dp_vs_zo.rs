//! One step of each DP method against non-private backprop, with its peak memory.
//!
//! `infer` is one label-word forward (no gradient), `infer-padded` the same with packing off
//! (`trainer::models::layers::with_padded_layout`); at these tiny shapes a forward's time is
//! mostly the cost of dispatching its operations, so the two compare how many each layout runs.
//!
//! `dpzero-paired` and `dp-zopo-paired` evaluate both points in one forward
//! (`trainer::optim::paired`). On the CPU a dense step's time here is mostly generating z for
//! every weight (a paired step makes three passes instead of two); under DP-ZOPO's 1% mask the
//! forwards dominate, so `dp-zopo` against `dp-zopo-paired` shows what halving the dispatched
//! operations gives.
//!
//! `cargo bench -p trainer --bench dp_vs_zo`: criterion times one step of DPZero, DP-ZOSO
//! (proximal anchor), DP-ZOPO (1% random mask), DP-SGD by ghost clipping, DP-SGD by micro-batches
//! and non-private backprop (AdamW) on the tiny RoBERTa, OPT and Llama (GQA) fixtures, batch 8 x
//! 10 with padding, on the CPU and on CUDA when present; and the same DP-SGD (ghost) and DPZero
//! steps on adapters of the frozen model: LoRA r 8, alpha 16 on query/value (`dp-lora`,
//! `dpzero-lora`) and a 5-token prefix (`dp-prefix`, `dpzero-prefix`). Before criterion runs, each method's own
//! median step time and peak memory are written to `target/criterion/dp_vs_zo.csv` (or
//! `$DP_VS_ZO_CSV`): `device,model,method,ms_median,peak_bytes,peak_measure`.
//!
//! Peak memory: on the CPU the growth of the process's peak resident set (`VmHWM`, reset through
//! `/proc/self/clear_refs` before each method) over its resident set at the method's start; on
//! CUDA the growth of device memory in use (`cuMemGetInfo`) over the method's steps. libtorch's
//! caching allocator keeps what earlier methods reserved, so a CUDA figure is what the method
//! needed beyond the earlier ones (a lower bound); methods run from the leanest to the heaviest.

use criterion::Criterion;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use trainer::batch::Batch;
use trainer::device::device_memory_used;
use trainer::device::{select, DeviceRequest};
use trainer::model::LabelWordModel;
use trainer::models::adapters::AdapterConfig;
use trainer::models::layers::with_padded_layout;
use trainer::models::load_model;
use trainer::optim::adamw::{AdamW, AdamWSettings};
use trainer::optim::dp_sgd::{dp_sgd_step, DpSgdClipping, DpSgdSettings};
use trainer::optim::params::TrainableParams;
use trainer::optim::zo::{settle, zo_step, ZoForward, ZoPrivacy, ZoStepSettings};
use trainer::perturb::bench::{random_masks, synchronize};

const MODELS: [&str; 3] = ["roberta_tiny", "opt_tiny", "llama_tiny_gqa_untied"];
const METHODS: [&str; 14] = [
    "infer",
    "infer-padded",
    "dpzero",
    "dpzero-paired",
    "dpzero-lora",
    "dpzero-prefix",
    "dp-zoso",
    "dp-zopo",
    "dp-zopo-paired",
    "dp-lora",
    "dp-prefix",
    "dp-sgd",
    "dp-sgd-microbatch",
    "backprop",
];

/// The adapter a bench method trains (on a frozen copy of the fixture), if any.
fn adapter_of(method: &str) -> Option<AdapterConfig> {
    if method.ends_with("-lora") {
        Some(AdapterConfig::dpzero_lora())
    } else if method.ends_with("-prefix") {
        Some(AdapterConfig::mezo_prefix())
    } else {
        None
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// 8 rows of 10 tokens, the last three rows left-padded by 3, scored at the last position.
fn batch(vocab: i64, device: Device) -> Batch {
    let (b, l) = (8i64, 10i64);
    let ids: Vec<i64> = (0..b * l).map(|i| 4 + (i * 7919) % (vocab - 4)).collect();
    let mask: Vec<i64> = (0..b * l)
        .map(|i| i64::from(!(i / l >= 5 && i % l < 3)))
        .collect();
    Batch {
        input_ids: Tensor::from_slice(&ids).view([b, l]).to_device(device),
        attention_mask: Tensor::from_slice(&mask).view([b, l]).to_device(device),
        positions: Tensor::full([b], l - 1, (Kind::Int64, device)),
        labels: Tensor::from_slice(&[0i64, 1, 0, 1, 1, 0, 0, 1]).to_device(device),
        label_word_ids: Tensor::from_slice(&[5i64, 9]).to_device(device),
    }
}

/// One method's step, closed over its state.
struct Stepper<'a> {
    model: &'a dyn LabelWordModel,
    params: TrainableParams,
    anchor: Option<trainer::optim::params::Anchor>,
    adam: Option<AdamW>,
    batch: &'a Batch,
    method: &'static str,
    step: u64,
}

impl Stepper<'_> {
    fn run(&mut self) {
        self.step += 1;
        let step = self.step;
        let dp = Some(ZoPrivacy {
            clip_norm: 1.0,
            noise_std: 1.0,
        });
        match self.method {
            "infer" => {
                let _ = tch::no_grad(|| self.model.label_word_logits(self.batch)).expect("forward");
            }
            "infer-padded" => {
                let _ = with_padded_layout(|| {
                    tch::no_grad(|| self.model.label_word_logits(self.batch))
                })
                .expect("forward");
            }
            "dpzero" | "dpzero-paired" | "dpzero-lora" | "dpzero-prefix" | "dp-zoso"
            | "dp-zopo" | "dp-zopo-paired" => {
                let settings = ZoStepSettings {
                    zo_eps: 1e-3,
                    step_size: 1e-6,
                    num_directions: 1,
                    privacy: dp,
                    normaliser: None,
                    proximal: self.anchor.as_ref().map(|a| (a, 5e-4)),
                    forward: if self.method.ends_with("-paired") {
                        ZoForward::Paired
                    } else {
                        ZoForward::Sequential
                    },
                };
                let (_, carried) = zo_step(
                    self.model,
                    &self.params,
                    self.batch,
                    &settings,
                    7,
                    step,
                    None,
                    None,
                )
                .expect("zo step");
                settle(&self.params, carried).expect("settle");
            }
            "dp-sgd" | "dp-sgd-microbatch" | "dp-lora" | "dp-prefix" => {
                let settings = DpSgdSettings {
                    step_size: 1e-6,
                    clip_norm: 1.0,
                    noise_std: 1.0,
                    normaliser: None,
                    clipping: if self.method == "dp-sgd-microbatch" {
                        DpSgdClipping::Microbatch
                    } else {
                        DpSgdClipping::Ghost
                    },
                };
                dp_sgd_step(self.model, &self.params, self.batch, &settings, 7, step)
                    .expect("dp-sgd step");
            }
            _ => {
                let adam = self.adam.as_mut().expect("AdamW state");
                adam.step(self.model, &self.params, self.batch, 1e-6, step)
                    .expect("AdamW step");
            }
        }
    }
}

fn stepper<'a>(
    model: &'a dyn LabelWordModel,
    batch: &'a Batch,
    method: &'static str,
) -> Stepper<'a> {
    let mut params = TrainableParams::from_model(model).expect("trainable parameters");
    if method.starts_with("dp-zopo") {
        let masks = random_masks(params.named(), 0.01);
        params.set_masks(Some(masks)).expect("mask");
    }
    let anchor = matches!(method, "dp-zoso" | "dp-zopo" | "dp-zopo-paired")
        .then(|| params.snapshot_anchor().expect("anchor"));
    let adam = (method == "backprop")
        .then(|| AdamW::new(&params, AdamWSettings::default()).expect("AdamW"));
    Stepper {
        model,
        params,
        anchor,
        adam,
        batch,
        method,
        step: 0,
    }
}

/// `(VmRSS, VmHWM)` in bytes from `/proc/self/status`.
fn resident_set() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `(median ms, peak bytes, what the peak measures)` of `steps` steps after two warm-up steps.
fn measure(stepper: &mut Stepper<'_>, device: Device, steps: usize) -> (f64, i64, &'static str) {
    let before = match device {
        Device::Cuda(ordinal) => device_memory_used(ordinal).ok().map(|u| (u, u)),
        _ => {
            // Writing 5 resets the peak resident set to the current one (Linux >= 4.0).
            let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
            resident_set().filter(|_| reset)
        }
    };
    let mut times = Vec::with_capacity(steps);
    for i in 0..steps + 2 {
        let start = Instant::now();
        stepper.run();
        synchronize(device);
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let (peak, measure) = match (device, before) {
        (Device::Cuda(ordinal), Some((used, _))) => (
            device_memory_used(ordinal).map_or(-1, |after| after.saturating_sub(used) as i64),
            "cuda-device-memory-growth",
        ),
        (_, Some((rss, _))) => (
            resident_set().map_or(-1, |(_, hwm)| hwm.saturating_sub(rss) as i64),
            "cpu-peak-rss-growth",
        ),
        _ => (-1, "unavailable"),
    };
    (times[times.len() / 2], peak, measure)
}

fn main() {
    let mut devices = vec![Device::Cpu];
    if let Ok(cuda @ Device::Cuda(_)) = select(DeviceRequest::Auto) {
        devices.push(cuda);
    }
    let csv_path = std::env::var_os("DP_VS_ZO_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion/dp_vs_zo.csv")
        });
    if let Some(dir) = csv_path.parent() {
        std::fs::create_dir_all(dir).expect("creating the CSV folder");
    }
    let mut csv = std::fs::File::create(&csv_path).expect("creating the CSV");
    writeln!(csv, "device,model,method,ms_median,peak_bytes,peak_measure").expect("CSV");
    let mut criterion = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    for &device in &devices {
        let device_name = trainer::device::name(device);
        for name in MODELS {
            let model = load_model(&fixture(name), Kind::Float, device).expect("fixture model");
            let batch = batch(model.config().vocab_size(), device);
            for method in METHODS {
                let adapted = adapter_of(method).map(|adapter| {
                    let mut m = load_model(&fixture(name), Kind::Float, device).expect("fixture");
                    m.attach_adapter(&adapter, 7).expect("adapter");
                    m
                });
                let mut stepper = stepper(adapted.as_ref().unwrap_or(&model), &batch, method);
                let (ms, peak, what) = measure(&mut stepper, device, 9);
                writeln!(csv, "{device_name},{name},{method},{ms:.4},{peak},{what}").expect("CSV");
                println!("{device_name} {name} {method}: {ms:.3} ms, peak {peak} B ({what})");
                let mut group = criterion.benchmark_group(format!("dp_vs_zo/{device_name}/{name}"));
                group.bench_function(method, |b| b.iter(|| stepper.run()));
                group.finish();
            }
        }
    }
    println!("wrote {}", csv_path.display());
    criterion.final_summary();
}
