//! `repro eval`: zero-shot accuracy of a checkpoint on one task's test split (issue 5).

use crate::target::cell::TrainerCells;
use crate::target::spec::Preset;
use anyhow::Result;
use std::path::PathBuf;
use trainer::device::{self, DeviceRequest};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Hugging Face checkpoint directory (RoBERTa, OPT or Llama); omitted: SmolLM2-135M from the
    /// assets directory (`scripts/assets.sh`).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Task name of `experiments/tasks.toml` (SST-2, sst-5, SNLI, MNLI, RTE, trec, CB, BoolQ,
    /// polarity, vader5, bbc, ...).
    #[arg(long)]
    pub task: String,
    /// LM-BFF / SuperGLUE data directory; without it SST-2, SST-5 and TREC fall back to the
    /// Pang & Lee, VADER and BBC stand-ins.
    #[arg(long, env = "DPZO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "DPZO_ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,
    /// Examples per class of the k-shot split whose test set is used (LM-BFF layout).
    #[arg(long, default_value_t = 512)]
    pub k: usize,
    /// Seed of the k-shot split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Evaluate a seeded subsample (seed 42) of at most this many test examples.
    #[arg(long)]
    pub max_examples: Option<usize>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size 0: must be at least 1");
    }
    let dev = device::select(args.device).map_err(anyhow::Error::msg)?;
    let kind = trainer::models::parse_dtype(&args.dtype)?;
    let preset = Preset {
        description: "repro eval".into(),
        model: if args.model_dir.is_some() {
            "model-dir".into()
        } else {
            "smollm2-135m".into()
        },
        device: device::name(dev).into(),
        tasks: None,
        methods: None,
        epsilons: None,
        seeds: None,
        stand_ins: [("SST-2", "polarity"), ("SST-5", "vader5"), ("TREC", "bbc")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        train: Default::default(),
        method: Default::default(),
        tune: Default::default(),
        deviations: Vec::new(),
        inherit_tuning: None,
        tune_options: Default::default(),
        extra_seeds: Vec::new(),
        also_compare_to: Vec::new(),
    };
    let cells = TrainerCells::new(
        &preset,
        args.model_dir.as_deref(),
        args.data_dir.as_deref(),
        args.assets_dir.as_deref(),
        dev,
    )?;
    let (accuracy, examples, loss, data, auc) = cells.evaluate(
        &args.task,
        args.k,
        args.seed,
        args.max_examples,
        args.batch_size,
        kind,
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"task": args.task, "accuracy": accuracy, "examples": examples,
                               "loss": loss, "auc": auc, "data": data,
                               "device": device::name(dev)})
        );
    } else {
        let auc = auc.map_or(String::new(), |a| format!(", ROC AUC {a:.3}"));
        println!(
            "{}: accuracy {accuracy:.2}% on {examples} test examples{auc} (mean loss {loss:.4}; data: {data})",
            args.task
        );
    }
    Ok(())
}
