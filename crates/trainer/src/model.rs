//! The one interface every training method needs from a model.

use crate::batch::Batch;
use tch::{nn::VarStore, Tensor};

/// A model that scores label words at one position per example (prompt-based classification).
///
/// Implemented by RoBERTa (MLM head), OPT and Llama (LM head). The ZO methods need only forwards;
/// DP-SGD and full fine-tuning also backpropagate through the same call.
pub trait LabelWordModel {
    /// Logits of `batch.label_word_ids` at `batch.positions`: `[B, n_labels]`, f32 whatever the
    /// compute dtype. Only these columns of the LM head are computed, never the full vocabulary
    /// at every position.
    fn label_word_logits(&self, batch: &Batch) -> Result<Tensor, tch::TchError>;

    /// Multiple choice: each row's mean log-likelihood of its continuation tokens, `[R]` f32
    /// (`crate::data::choice`). Only causal LMs score continuations; the default is an error.
    fn continuation_scores(
        &self,
        batch: &crate::data::choice::ChoiceBatch,
    ) -> Result<Tensor, tch::TchError> {
        let _ = batch;
        Err(tch::TchError::Kind(
            "this model scores label words only; multiple-choice tasks need a causal LM that \
             scores continuations (opt or llama)"
                .into(),
        ))
    }

    /// The output vocabulary size, when the model has a language-model head over a vocabulary
    /// (DP-ZOPO's data-free score of a multiple-choice task reads all of it).
    fn vocab_size(&self) -> Option<i64> {
        None
    }

    /// The parameters. Trainable ones are `var_store().trainable_variables()`; the methods order
    /// them by name (`var_store().variables()` sorted) so a seed maps to the same z everywhere.
    fn var_store(&self) -> &VarStore;

    /// Mutable access, for loading checkpoints and freezing.
    fn var_store_mut(&mut self) -> &mut VarStore;

    /// True when every use of a trainable parameter in [`Self::label_word_logits`] is recorded
    /// on the layer tape ([`crate::models::tape`]), which ghost clipping needs.
    fn records_layers(&self) -> bool {
        false
    }

    /// The adapter attached to a frozen base, if any (`crate::models::adapters`).
    fn adapter(&self) -> Option<&crate::models::adapters::AdapterConfig> {
        None
    }

    /// Freezes the model and attaches `config`'s adapter (random draws keyed by `seed`).
    fn attach_adapter(
        &mut self,
        config: &crate::models::adapters::AdapterConfig,
        seed: u64,
    ) -> Result<(), String> {
        let _ = seed;
        Err(format!(
            "this model does not support adapters (asked for {config:?})"
        ))
    }
}

/// Per-example cross-entropy over the label words, `[B]` f32 (the paper's per-sample loss).
pub fn per_example_loss(
    model: &dyn LabelWordModel,
    batch: &Batch,
) -> Result<Tensor, tch::TchError> {
    let logits = model.label_word_logits(batch)?;
    Ok(logits
        .to_kind(tch::Kind::Float)
        .log_softmax(-1, tch::Kind::Float)
        .gather(1, &batch.labels.unsqueeze(1), false)
        .squeeze_dim(1)
        .neg())
}
