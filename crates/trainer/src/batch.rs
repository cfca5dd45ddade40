//! A tokenised mini-batch for prompt-based classification by label words (LM-BFF / MeZO style),
//! and [`ExampleBatch`], what the methods need from a batch of either classification or
//! multiple choice ([`crate::data::choice::ChoiceBatch`]).

use tch::{TchError, Tensor};

use crate::data::choice::ChoiceBatch;
use crate::model::LabelWordModel;

/// One mini-batch. All tensors live on the model's device.
#[derive(Debug)]
pub struct Batch {
    /// Token ids, `[B, L]`, int64, padded (left or right) with the tokenizer's pad id.
    pub input_ids: Tensor,
    /// `[B, L]`, int64: 1 for a real token, 0 for padding.
    pub attention_mask: Tensor,
    /// `[B]`, int64: the position whose logits score the label words (the `<mask>` token for an
    /// MLM, the last real token for a decoder).
    pub positions: Tensor,
    /// `[B]`, int64 in `0..n_labels`: the gold label of each example.
    pub labels: Tensor,
    /// `[n_labels]`, int64: the vocabulary id of each label word (single-token verbalisers).
    pub label_word_ids: Tensor,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.input_ids.size()[0] as usize
    }

    /// True when the batch holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same tensors under new handles.
    pub fn shallow_clone(&self) -> Batch {
        Batch {
            input_ids: self.input_ids.shallow_clone(),
            attention_mask: self.attention_mask.shallow_clone(),
            positions: self.positions.shallow_clone(),
            labels: self.labels.shallow_clone(),
            label_word_ids: self.label_word_ids.shallow_clone(),
        }
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: tch::Device) -> Batch {
        Batch {
            input_ids: self.input_ids.to_device(device),
            attention_mask: self.attention_mask.to_device(device),
            positions: self.positions.to_device(device),
            labels: self.labels.to_device(device),
            label_word_ids: self.label_word_ids.to_device(device),
        }
    }
}

/// What the training methods and the evaluation need from a batch, for label-word
/// classification ([`Batch`]) and multiple choice ([`ChoiceBatch`]) alike: per example one row
/// of scores whose argmax is the prediction and whose cross-entropy at the gold label is the
/// example's loss (`crate::optim::loss::per_example_losses`). An example is the privacy unit:
/// DP-ZO clips one finite difference per example and DP-SGD one gradient per example, however
/// many model rows the example takes.
pub trait ExampleBatch {
    /// Number of examples B (the batch size that Poisson sampling and the accountant count).
    fn num_examples(&self) -> usize;

    /// Model input rows per example, adjacent in the batch (1 for label words; the number of
    /// candidates for multiple choice).
    fn rows_per_example(&self) -> usize;

    /// Scores `[B, n]` (f32, or f64 from an f64 model): label-word logits, or each candidate's
    /// continuation log-likelihood.
    fn scores(&self, model: &dyn LabelWordModel) -> Result<Tensor, TchError>;

    /// `[B]` int64: the gold label of each example (a column of [`ExampleBatch::scores`]).
    fn labels(&self) -> &Tensor;

    /// Example `index` as a batch of one (DP-SGD's micro-batches).
    fn single(&self, index: usize) -> Result<Box<dyn ExampleBatch>, TchError>;

    /// The label words, for a classification batch; `None` for multiple choice.
    fn label_word_ids(&self) -> Option<&Tensor>;

    /// The batch `times` times over, copy after copy (`times * B` examples): the input of a
    /// replicated forward ([`crate::models::replicas`]), whose copy r runs at replica r's
    /// weights.
    fn repeated(&self, times: usize) -> Result<Box<dyn ExampleBatch>, TchError>;

    /// The batch as a label-word [`Batch`], if it is one (a joint paired forward,
    /// `crate::optim::paired::ForwardGroup`, pads and joins only those).
    fn as_labels(&self) -> Option<&Batch> {
        None
    }
}

/// `times` copies of `t` along its first dimension.
pub(crate) fn repeat_rows(t: &Tensor, times: usize) -> Result<Tensor, TchError> {
    let copies = vec![t; times];
    Tensor::f_cat(&copies, 0)
}

impl ExampleBatch for Batch {
    fn num_examples(&self) -> usize {
        self.len()
    }

    fn rows_per_example(&self) -> usize {
        1
    }

    fn scores(&self, model: &dyn LabelWordModel) -> Result<Tensor, TchError> {
        model.label_word_logits(self)
    }

    fn labels(&self) -> &Tensor {
        &self.labels
    }

    fn single(&self, index: usize) -> Result<Box<dyn ExampleBatch>, TchError> {
        let i = index as i64;
        Ok(Box::new(Batch {
            input_ids: self.input_ids.f_narrow(0, i, 1)?,
            attention_mask: self.attention_mask.f_narrow(0, i, 1)?,
            positions: self.positions.f_narrow(0, i, 1)?,
            labels: self.labels.f_narrow(0, i, 1)?,
            label_word_ids: self.label_word_ids.shallow_clone(),
        }))
    }

    fn label_word_ids(&self) -> Option<&Tensor> {
        Some(&self.label_word_ids)
    }

    fn as_labels(&self) -> Option<&Batch> {
        Some(self)
    }

    fn repeated(&self, times: usize) -> Result<Box<dyn ExampleBatch>, TchError> {
        Ok(Box::new(Batch {
            input_ids: repeat_rows(&self.input_ids, times)?,
            attention_mask: repeat_rows(&self.attention_mask, times)?,
            positions: repeat_rows(&self.positions, times)?,
            labels: repeat_rows(&self.labels, times)?,
            label_word_ids: self.label_word_ids.shallow_clone(),
        }))
    }
}

/// A training batch of either kind, as a [`crate::train::TrainBatches`] source serves it.
#[derive(Debug)]
pub enum TaskBatch {
    /// Prompt-based classification by label words.
    Labels(Batch),
    /// Multiple choice, one row per (example, candidate).
    Choice(ChoiceBatch),
}

impl TaskBatch {
    /// The batch behind the common interface.
    pub fn as_dyn(&self) -> &dyn ExampleBatch {
        match self {
            TaskBatch::Labels(b) => b,
            TaskBatch::Choice(b) => b,
        }
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: tch::Device) -> TaskBatch {
        match self {
            TaskBatch::Labels(b) => TaskBatch::Labels(b.to_device(device)),
            TaskBatch::Choice(b) => TaskBatch::Choice(b.to_device(device)),
        }
    }
}

impl From<Batch> for TaskBatch {
    fn from(batch: Batch) -> Self {
        TaskBatch::Labels(batch)
    }
}

impl From<ChoiceBatch> for TaskBatch {
    fn from(batch: ChoiceBatch) -> Self {
        TaskBatch::Choice(batch)
    }
}

impl ExampleBatch for TaskBatch {
    fn num_examples(&self) -> usize {
        self.as_dyn().num_examples()
    }

    fn rows_per_example(&self) -> usize {
        self.as_dyn().rows_per_example()
    }

    fn scores(&self, model: &dyn LabelWordModel) -> Result<Tensor, TchError> {
        self.as_dyn().scores(model)
    }

    fn labels(&self) -> &Tensor {
        self.as_dyn().labels()
    }

    fn single(&self, index: usize) -> Result<Box<dyn ExampleBatch>, TchError> {
        self.as_dyn().single(index)
    }

    fn label_word_ids(&self) -> Option<&Tensor> {
        self.as_dyn().label_word_ids()
    }

    fn repeated(&self, times: usize) -> Result<Box<dyn ExampleBatch>, TchError> {
        self.as_dyn().repeated(times)
    }

    fn as_labels(&self) -> Option<&Batch> {
        self.as_dyn().as_labels()
    }
}
