//! A tokenised mini-batch for prompt-based classification by label words (LM-BFF / MeZO style).

use tch::Tensor;

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
