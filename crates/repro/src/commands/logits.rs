//! `repro logits`: full-vocabulary logits at one position for one sequence (parity contract).

use anyhow::Context;
use std::path::PathBuf;
use trainer::device::{self, DeviceRequest};

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

pub fn run(args: LogitsArgs) -> anyhow::Result<()> {
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
