//! RoBERTa (MLM head), OPT and Llama in tch, loaded from Hugging Face checkpoints or GGUF.
//!
//! [`load_model`] reads a checkpoint directory (`config.json` + safetensors) or a `.gguf` file
//! and returns a [`Model`], which implements [`LabelWordModel`]: hidden states are gathered at
//! one position per example and multiplied by only the label-word rows of the output matrix
//! (for RoBERTa the MLM head transform runs only on the gathered positions).
//! [`Model::full_logits`] computes the whole vocabulary at every position, for parity tests.

pub mod adapters;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod export;
pub mod gguf;
pub mod layers;
pub mod llama;
pub mod opt;
pub mod replicas;
pub mod roberta;
pub mod tape;
pub mod tokenizer;

use crate::batch::Batch;
use crate::compute::accumulation_kind;
use crate::model::LabelWordModel;
pub use config::{LlamaConfig, ModelConfig, OptConfig, RobertaConfig};
pub use error::{ModelError, Result};
use layers::{check_indices, gather_checked_positions, ParamFactory, ParamInit};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, TchError, Tensor};

/// The network of one family.
pub enum Architecture {
    Roberta(roberta::Roberta),
    Opt(opt::Opt),
    Llama(llama::Llama),
}

/// A model with its parameters. The architecture holds shallow copies of the `VarStore`
/// variables, so in-place updates of the variables (perturbations, optimiser steps) are seen
/// by the forward; replacing variables (e.g. `VarStore::set_kind`) is not.
pub struct Model {
    config: ModelConfig,
    architecture: Architecture,
    var_store: VarStore,
    /// The attached adapter, if any ([`adapters::attach`]): then only its tensors train.
    adapter: Option<adapters::AdapterConfig>,
}

/// Parse a compute dtype name: `f32`, `f16` or `bf16`.
pub fn parse_dtype(name: &str) -> Result<Kind> {
    match name {
        "f32" | "float32" => Ok(Kind::Float),
        "f16" | "float16" => Ok(Kind::Half),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        other => Err(ModelError::BadInput(format!(
            "dtype {other:?}: expected f32, f16 or bf16"
        ))),
    }
}

/// Float, Half and BFloat16 train; Double is for reference runs in tests, whose rounding must
/// not hide a difference between two code paths.
fn check_dtype(kind: Kind) -> Result<()> {
    match kind {
        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double => Ok(()),
        other => Err(ModelError::BadInput(format!(
            "compute dtype {other:?}: expected Float, Half, BFloat16 or Double"
        ))),
    }
}

impl Model {
    /// Build the parameters of `config` (zeros for `ParamInit::ForLoading`).
    pub fn build(
        config: &ModelConfig,
        kind: Kind,
        device: Device,
        init: ParamInit,
    ) -> Result<Self> {
        check_dtype(kind)?;
        config.validate()?;
        let mut var_store = VarStore::new(device);
        // On an empty store this only sets the dtype reported by `VarStore::kind`.
        var_store.set_kind(kind);
        let factory = ParamFactory { kind, device, init };
        let root = var_store.root();
        let architecture = match config {
            ModelConfig::Roberta(c) => {
                Architecture::Roberta(roberta::Roberta::new(c, &root, &factory)?)
            }
            ModelConfig::Opt(c) => Architecture::Opt(opt::Opt::new(c, &root, &factory)?),
            ModelConfig::Llama(c) => Architecture::Llama(llama::Llama::new(c, &root, &factory)?),
        };
        Ok(Self {
            config: config.clone(),
            architecture,
            var_store,
            adapter: None,
        })
    }

    /// Load a Hugging Face checkpoint directory: `config.json` and `model.safetensors` or
    /// shards listed in `model.safetensors.index.json`, converted to `kind` on `device`.
    pub fn from_hf_dir(dir: &Path, kind: Kind, device: Device) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let model = Self::build(&config, kind, device, ParamInit::ForLoading)?;
        let files = checkpoint::checkpoint_files(dir)?;
        checkpoint::load_safetensors(&model.var_store, &config, &files)?;
        Ok(model)
    }

    /// A new model with this one's configuration and a copy of its weights on `device`, in the
    /// same dtype and bit for bit: what loading the same checkpoint again would give, without
    /// reading and converting it again (a grid of cells keeps one host copy and duplicates it for
    /// each cell). The copy shares no storage with this model.
    ///
    /// # Errors
    /// A model carrying an adapter: duplicate the base model, then attach to the copy.
    pub fn duplicate(&self, device: Device) -> Result<Self> {
        if let Some(adapter) = &self.adapter {
            return Err(ModelError::BadInput(format!(
                "duplicate: the model carries an adapter ({adapter:?}); duplicate the base model \
                 and attach the adapter to the copy"
            )));
        }
        let copy = Self::build(&self.config, self.kind(), device, ParamInit::ForLoading)?;
        let source = self.var_store.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, mut target) in copy.var_store.variables() {
                let from = source.get(&name).ok_or_else(|| {
                    ModelError::BadInput(format!("duplicate: the source has no variable {name}"))
                })?;
                target.f_copy_(from)?;
            }
            Ok(())
        })?;
        Ok(copy)
    }

    /// The parsed configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The network.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// The compute dtype.
    pub fn kind(&self) -> Kind {
        self.var_store.kind()
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.var_store.device()
    }

    /// Number of scalar parameters.
    pub fn parameter_count(&self) -> i64 {
        self.var_store
            .variables()
            .values()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// Last hidden states `[B, L, H]` (after the final norm for the decoders; the encoder
    /// output for RoBERTa, before its MLM head).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> std::result::Result<Tensor, TchError> {
        match &self.architecture {
            Architecture::Roberta(m) => m.hidden_states(input_ids, attention_mask),
            Architecture::Opt(m) => m.hidden_states(input_ids, attention_mask),
            Architecture::Llama(m) => m.hidden_states(input_ids, attention_mask),
        }
    }

    /// The output head on hidden states `[..., H]`: all vocabulary logits or only `rows`
    /// (checked to lie in the vocabulary).
    pub fn head(
        &self,
        hidden: &Tensor,
        rows: Option<&Tensor>,
    ) -> std::result::Result<Tensor, TchError> {
        if let Some(rows) = rows {
            check_indices(&[("label_word_ids", rows, self.config.vocab_size())])?;
        }
        self.head_checked_rows(hidden, rows)
    }

    /// [`Model::head`] with `rows` already checked.
    fn head_checked_rows(
        &self,
        hidden: &Tensor,
        rows: Option<&Tensor>,
    ) -> std::result::Result<Tensor, TchError> {
        match &self.architecture {
            Architecture::Roberta(m) => m.head(hidden, rows),
            Architecture::Opt(m) => m.head(hidden, rows),
            Architecture::Llama(m) => m.head(hidden, rows),
        }
    }

    /// Full-vocabulary logits at every position, `[B, L, V]` f32 (f64 for an f64 model; for
    /// parity tests: a training step should use [`LabelWordModel::label_word_logits`]).
    pub fn full_logits(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> std::result::Result<Tensor, TchError> {
        let hidden = self.hidden_states(input_ids, attention_mask)?;
        let logits = self.head(&hidden, None)?;
        logits.f_to_kind(accumulation_kind(logits.kind()))
    }

    /// Log-probability of a continuation under a decoder, per sequence, `[B]` f32 (f64 for an
    /// f64 model):
    /// `sum_t continuation_mask[t] * log p(x_t | x_<t)` (multiple-choice scoring, e.g. COPA).
    /// `continuation_mask` is `[B, L]` with 1 on the continuation tokens; position 0 cannot be
    /// scored. The vocabulary is projected only at the positions that predict a scored token.
    pub fn continuation_log_prob(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        continuation_mask: &Tensor,
    ) -> std::result::Result<Tensor, TchError> {
        if matches!(self.architecture, Architecture::Roberta(_)) {
            return Err(TchError::Kind(
                "continuation_log_prob needs a causal LM (opt or llama), not roberta".into(),
            ));
        }
        let (b, l) = layers::batch_dims(input_ids, attention_mask)?;
        if continuation_mask.size() != [b, l] {
            return Err(TchError::Shape(format!(
                "continuation_mask {:?} must be [{b}, {l}]",
                continuation_mask.size()
            )));
        }
        let scored = continuation_mask.f_ne(0)?;
        if scored.f_select(1, 0)?.f_any()?.f_int64_value(&[])? != 0 {
            return Err(TchError::Shape("continuation_mask marks position 0".into()));
        }
        let hidden = self.hidden_states(input_ids, attention_mask)?;
        // Token t is predicted by the hidden state at t - 1.
        let targets = scored.f_narrow(1, 1, l - 1)?;
        let predictor = hidden.f_narrow(1, 0, l - 1)?;
        let flat_index = targets.f_flatten(0, 1)?.f_nonzero()?.f_squeeze_dim(1)?;
        let width = predictor.size()[2];
        let rows = predictor
            .f_reshape([-1, width])?
            .f_index_select(0, &flat_index)?;
        let acc = accumulation_kind(self.kind());
        let log_probs = self.head(&rows, None)?.f_log_softmax(-1, acc)?;
        let next_tokens = input_ids
            .f_narrow(1, 1, l - 1)?
            .f_flatten(0, 1)?
            .f_index_select(0, &flat_index)?;
        let token_log_probs = log_probs
            .f_gather(1, &next_tokens.f_unsqueeze(1)?, false)?
            .f_squeeze_dim(1)?;
        let example = flat_index.f_div_scalar_mode(l - 1, "floor")?;
        Tensor::f_zeros([b], (acc, hidden.device()))?.f_index_add(0, &example, &token_log_probs)
    }
}

impl LabelWordModel for Model {
    fn label_word_logits(&self, batch: &Batch) -> std::result::Result<Tensor, TchError> {
        // Both index checks in one device-to-host read, before the encoder is queued, so the GPU
        // never waits for the host between the encoder and the head.
        let length = batch.input_ids.size().get(1).copied().unwrap_or(0);
        check_indices(&[
            ("positions", &batch.positions, length),
            (
                "label_word_ids",
                &batch.label_word_ids,
                self.config.vocab_size(),
            ),
        ])?;
        let hidden = self.hidden_states(&batch.input_ids, &batch.attention_mask)?;
        let gathered = gather_checked_positions(&hidden, &batch.positions)?;
        let logits = self.head_checked_rows(&gathered, Some(&batch.label_word_ids))?;
        logits.f_to_kind(accumulation_kind(logits.kind()))
    }

    fn continuation_scores(
        &self,
        batch: &crate::data::choice::ChoiceBatch,
    ) -> std::result::Result<Tensor, TchError> {
        if matches!(self.architecture, Architecture::Roberta(_)) {
            return Err(TchError::Kind(
                "multiple-choice scoring needs a causal LM (opt or llama), not roberta".into(),
            ));
        }
        let (r, l) = layers::batch_dims(&batch.input_ids, &batch.attention_mask)?;
        let k = batch.score_positions.size().get(1).copied().unwrap_or(0);
        if batch.score_positions.size() != [r, k]
            || batch.score_targets.size() != [r, k]
            || batch.score_mask.size() != [r, k]
        {
            return Err(TchError::Shape(format!(
                "score_positions {:?}, score_targets {:?} and score_mask {:?} must all be [{r}, K]",
                batch.score_positions.size(),
                batch.score_targets.size(),
                batch.score_mask.size()
            )));
        }
        check_indices(&[
            ("score_positions", &batch.score_positions, l),
            (
                "score_targets",
                &batch.score_targets,
                self.config.vocab_size(),
            ),
        ])?;
        let hidden = self.hidden_states(&batch.input_ids, &batch.attention_mask)?;
        let width = hidden.size()[2];
        // [R, K, H]: the hidden state before each continuation token (it predicts the token),
        // so the head's input keeps one leading row per model row (ghost clipping groups rows).
        let index = batch
            .score_positions
            .f_unsqueeze(-1)?
            .f_expand([r, k, width], false)?;
        let predictors = hidden.f_gather(1, &index, false)?;
        let token_log_probs = self
            .head_checked_rows(&predictors, None)?
            .f_log_softmax(-1, accumulation_kind(self.kind()))?
            .f_gather(2, &batch.score_targets.f_unsqueeze(-1)?, false)?
            .f_squeeze_dim(-1)?;
        crate::data::choice::mean_over_continuation(&token_log_probs, batch)
    }

    fn vocab_size(&self) -> Option<i64> {
        Some(self.config.vocab_size())
    }

    fn var_store(&self) -> &VarStore {
        &self.var_store
    }

    fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.var_store
    }

    fn records_layers(&self) -> bool {
        true
    }

    fn adapter(&self) -> Option<&adapters::AdapterConfig> {
        self.adapter.as_ref()
    }

    fn attach_adapter(
        &mut self,
        config: &adapters::AdapterConfig,
        seed: u64,
    ) -> std::result::Result<(), String> {
        adapters::attach(self, config, seed).map_err(|e| e.to_string())
    }
}

/// Load a model from a Hugging Face checkpoint directory (with `config.json`; the family is
/// its `model_type`) or from a `.gguf` file (Llama architecture), in `kind` on `device`.
pub fn load_model(path: &Path, kind: Kind, device: Device) -> Result<Model> {
    if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
        return gguf::load_gguf_model(path, kind, device);
    }
    if !path.join("config.json").exists() {
        return Err(ModelError::BadInput(format!(
            "{}: neither a directory with config.json nor a .gguf file",
            path.display()
        )));
    }
    Model::from_hf_dir(path, kind, device)
}

/// A model with random weights (normal, std `initializer_range` = 0.02) from a config, for
/// benchmarks of configurations without checkpoints (e.g. RoBERTa-large, OPT-2.7B).
pub fn random_from_config(config: &ModelConfig, kind: Kind, device: Device) -> Result<Model> {
    Model::build(config, kind, device, ParamInit::Random { std: 0.02 })
}
