//! Measuring helpers for the perturbation benchmarks (`benches/perturb_pass.rs`) and the GPU
//! harness (`scripts/perf/run_gpu.sh`): model-shaped parameter sets, a synchronised median
//! timer, the bandwidth floor, and the CSV row shared with `scripts/perf/reference_pytorch.py`.

use super::error::PerturbError;
use super::param_set::ParamSet;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Device-to-device copy bandwidth of one H200 measured on the GPU host (docs/gpu.md), bytes/s.
pub const H200_COPY_BANDWIDTH: f64 = 4.3e12;

/// Transformer dimensions that fix the parameter shapes.
#[derive(Debug, Clone, Copy)]
pub struct TransformerShape {
    /// Model name used in CSV rows.
    pub name: &'static str,
    pub hidden: i64,
    pub layers: i64,
    pub ffn: i64,
    pub vocab: i64,
    pub max_positions: i64,
}

/// RoBERTa-large (HF `roberta-large` config.json: 1024 hidden, 24 layers, 4096 FFN, 50265 vocab,
/// 514 positions).
pub const ROBERTA_LARGE: TransformerShape = TransformerShape {
    name: "roberta-large",
    hidden: 1024,
    layers: 24,
    ffn: 4096,
    vocab: 50265,
    max_positions: 514,
};
/// OPT-1.3B (HF `facebook/opt-1.3b`: 2048, 24 layers, 8192 FFN, 50272 vocab, 2050 positions).
pub const OPT_1_3B: TransformerShape = TransformerShape {
    name: "opt-1.3b",
    hidden: 2048,
    layers: 24,
    ffn: 8192,
    vocab: 50272,
    max_positions: 2050,
};
/// OPT-2.7B (HF `facebook/opt-2.7b`: 2560, 32 layers, 10240 FFN, 50272 vocab, 2050 positions).
pub const OPT_2_7B: TransformerShape = TransformerShape {
    name: "opt-2.7b",
    hidden: 2560,
    layers: 32,
    ffn: 10240,
    vocab: 50272,
    max_positions: 2050,
};

impl TransformerShape {
    /// Named parameter shapes of a pre-LN/post-LN encoder or decoder block stack: embeddings,
    /// per layer q/k/v/out projections with biases, two layer norms, the FFN pair with biases,
    /// and a final norm. (Tied LM head: no extra matrix.)
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let (h, f) = (self.hidden, self.ffn);
        let mut shapes = vec![
            ("embed_tokens.weight".to_string(), vec![self.vocab, h]),
            (
                "embed_positions.weight".to_string(),
                vec![self.max_positions, h],
            ),
            ("final_norm.weight".to_string(), vec![h]),
            ("final_norm.bias".to_string(), vec![h]),
        ];
        for layer in 0..self.layers {
            let p = format!("layers.{layer:03}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                shapes.push((format!("{p}.attn.{proj}.weight"), vec![h, h]));
                shapes.push((format!("{p}.attn.{proj}.bias"), vec![h]));
            }
            for norm in ["attn_norm", "ffn_norm"] {
                shapes.push((format!("{p}.{norm}.weight"), vec![h]));
                shapes.push((format!("{p}.{norm}.bias"), vec![h]));
            }
            shapes.push((format!("{p}.fc1.weight"), vec![f, h]));
            shapes.push((format!("{p}.fc1.bias"), vec![f]));
            shapes.push((format!("{p}.fc2.weight"), vec![h, f]));
            shapes.push((format!("{p}.fc2.bias"), vec![h]));
        }
        shapes
    }
}

/// Parameters of `shapes` filled with small values (0.02 * N(0,1) from libtorch's generator).
pub fn random_tensors(
    shapes: &[(String, Vec<i64>)],
    kind: Kind,
    device: Device,
) -> Vec<(String, Tensor)> {
    shapes
        .iter()
        .map(|(name, shape)| {
            let t = (Tensor::randn(shape.as_slice(), (Kind::Float, device)) * 0.02).to_kind(kind);
            (name.clone(), t)
        })
        .collect()
}

/// A mask keeping each coordinate of every tensor with probability `fraction` (DP-ZOPO style),
/// as sorted int64 flat indices on the tensor's device.
pub fn random_masks(tensors: &[(String, Tensor)], fraction: f64) -> Vec<(String, Tensor)> {
    tensors
        .iter()
        .map(|(name, t)| {
            let keep = Tensor::rand([t.numel() as i64], (Kind::Float, t.device())).lt(fraction);
            (name.clone(), keep.nonzero().squeeze_dim(1))
        })
        .collect()
}

/// Wait for all queued work on `device`.
pub fn synchronize(device: Device) {
    if let Device::Cuda(ordinal) = device {
        tch::Cuda::synchronize(ordinal as i64);
    }
}

/// Median wall time in milliseconds of `repetitions` synchronised calls after `warmups`.
pub fn median_ms(
    device: Device,
    warmups: usize,
    repetitions: usize,
    mut step: impl FnMut() -> Result<(), PerturbError>,
) -> Result<f64, PerturbError> {
    for _ in 0..warmups {
        step()?;
    }
    synchronize(device);
    let mut times = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let start = Instant::now();
        step()?;
        synchronize(device);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(f64::NAN))
}

/// The bandwidth floor of one pass over `params`: bytes read and written over `bandwidth`.
pub fn bandwidth_floor_ms(params: &ParamSet, bandwidth_bytes_per_second: f64) -> f64 {
    params.pass_bytes() as f64 / bandwidth_bytes_per_second * 1e3
}

/// One row of `results/perf/*.csv`:
/// `model,dtype,batch,seq,method,impl,ms_median,peak_bytes` (same header as the PyTorch script).
#[derive(Debug, Clone)]
pub struct PerfRow {
    pub model: String,
    pub dtype: String,
    pub batch: i64,
    pub seq: i64,
    pub method: String,
    pub implementation: String,
    pub ms_median: f64,
    pub peak_bytes: i64,
}

impl PerfRow {
    /// The CSV header line.
    pub const HEADER: &'static str = "model,dtype,batch,seq,method,impl,ms_median,peak_bytes";

    /// The row as a CSV line (no field holds a comma).
    pub fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{},{},{:.4},{}",
            self.model,
            self.dtype,
            self.batch,
            self.seq,
            self.method,
            self.implementation,
            self.ms_median,
            self.peak_bytes
        )
    }
}
