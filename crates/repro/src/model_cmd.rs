//! Model-level commands: `device`, `logits`.

use anyhow::Context;
use std::path::PathBuf;
use trainer::device::{self, DeviceRequest};

#[derive(clap::Args)]
pub struct DeviceArgs {
    /// auto picks CUDA when libtorch_cuda.so loads and a GPU is visible.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
}

pub fn device(args: DeviceArgs) -> anyhow::Result<()> {
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    println!("device: {}", device::name(dev));
    if dev != tch::Device::Cpu {
        println!("cuda devices: {}", tch::Cuda::device_count());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LogitsArgs {
    /// Hugging Face checkpoint directory (config.json + safetensors; roberta, opt or llama),
    /// or a Llama `.gguf` file.
    #[arg(long)]
    pub model_dir: PathBuf,
    /// Comma-separated token ids of the single sequence, e.g. `0,17,523`.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub ids: Vec<i64>,
    /// Position (0-based) whose full-vocabulary logits are printed.
    #[arg(long)]
    pub position: i64,
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Print `{"logits": [f32; vocab]}` instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub fn logits(args: LogitsArgs) -> anyhow::Result<()> {
    let length = args.ids.len() as i64;
    if length == 0 {
        anyhow::bail!("--ids: empty sequence");
    }
    if args.position < 0 || args.position >= length {
        anyhow::bail!("--position {}: outside 0..{length} for {length} ids", args.position);
    }
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    let kind = trainer::models::parse_dtype(&args.dtype)?;
    let model = trainer::models::load_model(&args.model_dir, kind, dev)
        .with_context(|| format!("loading {}", args.model_dir.display()))?;
    let vocab = model.config().vocab_size();
    if let Some(bad) = args.ids.iter().find(|&&id| id < 0 || id >= vocab) {
        anyhow::bail!("--ids: token id {bad} outside the vocabulary 0..{vocab}");
    }
    let ids = tch::Tensor::from_slice(&args.ids).view([1, length]).to_device(dev);
    let mask = ids.ones_like();
    let logits = tch::no_grad(|| model.full_logits(&ids, &mask))?
        .get(0)
        .get(args.position)
        .to_device(tch::Device::Cpu);
    let values: Vec<f32> = Vec::<f32>::try_from(&logits)?;
    if args.json {
        println!("{}", serde_json::json!({ "logits": values }));
    } else {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        println!(
            "{} ({}), {} on {}: {} logits at position {}",
            args.model_dir.display(),
            model.config().model_type(),
            args.dtype,
            device::name(dev),
            values.len(),
            args.position
        );
        for &id in order.iter().take(5) {
            println!("  token {id:>6}: {:.4}", values[id]);
        }
    }
    Ok(())
}
