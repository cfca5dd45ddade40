//! Multiple-choice tasks (COPA) for decoders: each candidate continuation is appended to the
//! rendered prompt and scored by its log-likelihood (MeZO `large_models`: the candidate with the
//! highest likelihood wins; MeZO averages per token by default, which a model can do with
//! `continuation_mask`).
//!
//! The [`crate::batch::Batch`] contract scores one position per example against shared label
//! words, which cannot express this; a [`ChoiceBatch`] holds one row per (example, candidate).
//! The prompt and the continuation (`candidate_prefix` + candidate) are tokenised separately, so
//! the boundary between them is exact.

use tch::Tensor;
use tokenizers::Tokenizer;

use super::encode::{ModelConventions, PaddingSide};
use super::error::{DataError, Result};
use super::example::Example;
use super::task::TaskSpec;
use super::template::DecoderTemplate;

/// One row per (example, candidate), all tensors int64 on the CPU.
#[derive(Debug)]
pub struct ChoiceBatch {
    /// `[R, L]` token ids, padded.
    pub input_ids: Tensor,
    /// `[R, L]`: 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[R, L]`: 1 at the tokens of the candidate continuation; token t is scored by the
    /// logits at position t - 1.
    pub continuation_mask: Tensor,
    /// `[R]`: which example of the batch each row belongs to.
    pub example_index: Tensor,
    /// `[R]`: which candidate of its example each row is.
    pub candidate_index: Tensor,
    /// `[B]`: index of the correct candidate of each example.
    pub labels: Tensor,
}

/// Encodes multiple-choice examples for a decoder.
#[derive(Debug, Clone)]
pub struct ChoiceEncoder<'t> {
    tokenizer: &'t Tokenizer,
    task: String,
    template: DecoderTemplate,
    candidate_prefix: String,
    bos: Option<i64>,
    pad: i64,
    padding_side: PaddingSide,
    max_length: usize,
}

impl<'t> ChoiceEncoder<'t> {
    /// An encoder for a multiple-choice task and a decoder family.
    ///
    /// # Errors
    /// [`DataError::Template`] when the task is not multiple choice or the family is not a
    /// decoder; [`DataError::MissingSpecialToken`].
    pub fn new(
        tokenizer: &'t Tokenizer,
        task: &str,
        spec: &TaskSpec,
        conventions: &ModelConventions,
        padding_side: PaddingSide,
    ) -> Result<Self> {
        let not_choice = |message: &str| DataError::Template {
            template: spec.decoder_template.clone(),
            message: format!("task {task}: {message}"),
        };
        let candidate_prefix = spec
            .candidate_prefix
            .clone()
            .ok_or_else(|| not_choice("not a multiple-choice task (no candidate_prefix)"))?;
        let ModelConventions::Decoder {
            bos_token,
            pad_token,
        } = conventions
        else {
            return Err(not_choice("multiple choice is scored with decoders only"));
        };
        let id = |token: &str, role| {
            tokenizer.token_to_id(token).map(i64::from).ok_or_else(|| {
                DataError::MissingSpecialToken {
                    token: token.to_string(),
                    role,
                }
            })
        };
        Ok(Self {
            tokenizer,
            task: task.to_string(),
            template: DecoderTemplate::parse(&spec.decoder_template)?,
            candidate_prefix,
            bos: bos_token.as_deref().map(|t| id(t, "bos")).transpose()?,
            pad: id(pad_token, "pad")?,
            padding_side,
            max_length: spec.max_length,
        })
    }

    fn tokenize(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|error| DataError::Tokenizer(error.to_string()))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// The rows of one example: `(token ids, index where the continuation starts)`, one per
    /// candidate. The prompt loses tokens from its start when a row exceeds `max_length`.
    ///
    /// # Errors
    /// [`DataError::Encoding`] for an example without candidates or a continuation that alone
    /// exceeds `max_length`.
    pub fn encode(&self, index: usize, example: &Example) -> Result<Vec<(Vec<i64>, usize)>> {
        let error = |message: String| DataError::Encoding {
            task: self.task.clone(),
            index,
            message,
        };
        if example.candidates.is_empty() || example.label >= example.candidates.len() {
            return Err(error(format!(
                "label {} with {} candidates",
                example.label,
                example.candidates.len()
            )));
        }
        let prompt = self.tokenize(&self.template.render(example)?)?;
        example
            .candidates
            .iter()
            .map(|candidate| {
                let continuation =
                    self.tokenize(&format!("{}{candidate}", self.candidate_prefix))?;
                let bos = usize::from(self.bos.is_some());
                if continuation.is_empty() || continuation.len() + bos + 1 > self.max_length {
                    return Err(error(format!(
                        "candidate {candidate:?} is {} tokens; max_length is {}",
                        continuation.len(),
                        self.max_length
                    )));
                }
                let room = self.max_length - bos - continuation.len();
                let kept = &prompt[prompt.len().saturating_sub(room)..];
                let mut ids: Vec<i64> = self.bos.iter().copied().collect();
                ids.extend_from_slice(kept);
                let start = ids.len();
                ids.extend(continuation);
                Ok((ids, start))
            })
            .collect()
    }

    /// Encodes and pads `examples` into one [`ChoiceBatch`].
    ///
    /// # Errors
    /// As [`ChoiceEncoder::encode`].
    pub fn batch(&self, examples: &[Example]) -> Result<ChoiceBatch> {
        let mut rows = Vec::new();
        let mut labels = Vec::with_capacity(examples.len());
        for (index, example) in examples.iter().enumerate() {
            for (candidate, (ids, start)) in self.encode(index, example)?.into_iter().enumerate() {
                rows.push((index as i64, candidate as i64, ids, start));
            }
            labels.push(example.label as i64);
        }
        let length = rows
            .iter()
            .map(|(_, _, ids, _)| ids.len())
            .max()
            .unwrap_or(0);
        let mut input_ids = vec![self.pad; rows.len() * length];
        let mut attention_mask = vec![0i64; rows.len() * length];
        let mut continuation_mask = vec![0i64; rows.len() * length];
        for (row, (_, _, ids, start)) in rows.iter().enumerate() {
            let offset = match self.padding_side {
                PaddingSide::Right => 0,
                PaddingSide::Left => length - ids.len(),
            };
            let base = row * length + offset;
            input_ids[base..base + ids.len()].copy_from_slice(ids);
            attention_mask[base..base + ids.len()].fill(1);
            continuation_mask[base + start..base + ids.len()].fill(1);
        }
        let shape = [rows.len() as i64, length as i64];
        let example_index: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let candidate_index: Vec<i64> = rows.iter().map(|r| r.1).collect();
        Ok(ChoiceBatch {
            input_ids: Tensor::from_slice(&input_ids).view(shape),
            attention_mask: Tensor::from_slice(&attention_mask).view(shape),
            continuation_mask: Tensor::from_slice(&continuation_mask).view(shape),
            example_index: Tensor::from_slice(&example_index),
            candidate_index: Tensor::from_slice(&candidate_index),
            labels: Tensor::from_slice(&labels),
        })
    }
}
