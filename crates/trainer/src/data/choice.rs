//! Multiple-choice tasks (COPA) for decoders: each candidate continuation is appended to the
//! rendered prompt and scored by its log-likelihood.
//!
//! A candidate's score is the mean log-likelihood of its continuation tokens, and an example's
//! loss is the cross-entropy over its candidates of these scores, the prediction their argmax.
//! This is MeZO's multiple-choice scoring (Malladi et al. 2023, `large_models/run.py`,
//! `one_step_pred`: `log_probs.mean()` per candidate) and the loss of its
//! `--train_as_classification` mode (`large_models/utils.py`, `forward_wrap_with_option_len`:
//! the option's summed log-probability divided by its length, then cross-entropy over the
//! options). MeZO's own COPA runs (`mezo.sh`) switch that mode off and train the language-model
//! loss of the gold candidate alone; here the loss is the one the prediction is made from, a
//! per-example scalar over all candidates of the example.
//!
//! The [`crate::batch::Batch`] contract scores one position per example against shared label
//! words, which cannot express this; a [`ChoiceBatch`] holds one row per (example, candidate),
//! the rows of an example adjacent and every example with the same number of candidates, so
//! anything computed per row reshapes to `[B, candidates, ...]` (ghost clipping groups an
//! example's rows that way: all candidates of an example are one privacy unit). The prompt and
//! the continuation (`candidate_prefix` + candidate) are tokenised separately, so the boundary
//! between them is exact.

use tch::{TchError, Tensor};
use tokenizers::Tokenizer;

use super::encode::{checked_max_length, token_ids, ModelConventions, PaddingSide};
use super::error::{DataError, Result};
use super::example::Example;
use super::task::TaskSpec;
use super::template::DecoderTemplate;
use crate::batch::{repeat_rows, ExampleBatch};
use crate::model::LabelWordModel;

/// One row per (example, candidate), example-major (the rows of example `i` are
/// `i * candidates .. (i + 1) * candidates`). All tensors int64, on the CPU unless moved with
/// [`ChoiceBatch::to_device`].
#[derive(Debug)]
pub struct ChoiceBatch {
    /// `[R, L]` token ids, padded.
    pub input_ids: Tensor,
    /// `[R, L]`: 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[R, L]`: 1 at the tokens of the candidate continuation; token t is scored by the
    /// logits at position t - 1.
    pub continuation_mask: Tensor,
    /// `[R, K]` (K the longest continuation): the positions whose logits score each
    /// continuation token (t - 1 for token t), 0 past a row's continuation.
    pub score_positions: Tensor,
    /// `[R, K]`: the continuation token each of `score_positions` predicts, 0 past the end.
    pub score_targets: Tensor,
    /// `[R, K]`: 1 where `score_positions` is a real continuation token.
    pub score_mask: Tensor,
    /// `[R]`: which example of the batch each row belongs to.
    pub example_index: Tensor,
    /// `[R]`: which candidate of its example each row is.
    pub candidate_index: Tensor,
    /// `[B]`: index of the correct candidate of each example.
    pub labels: Tensor,
    /// Candidates per example (the same for every example of the batch).
    pub candidates: usize,
}

/// One encoded candidate: its token ids and the index where the continuation starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceRow {
    /// Token ids of prompt and continuation.
    pub ids: Vec<i64>,
    /// Index of the first continuation token (>= 1: a token is scored by its predecessor).
    pub start: usize,
}

impl ChoiceBatch {
    /// Pads the candidates of each example (`examples[i]`: its rows, `labels[i]`: the correct
    /// one) into one batch with `pad` on `padding_side`.
    ///
    /// # Errors
    /// [`DataError::Encoding`] for an example whose number of candidates differs from the
    /// first's, a label out of range, or a row whose continuation is empty or starts at 0.
    pub fn collate(
        task: &str,
        examples: &[Vec<ChoiceRow>],
        labels: &[usize],
        pad: i64,
        padding_side: PaddingSide,
    ) -> Result<ChoiceBatch> {
        let candidates = examples.first().map_or(0, Vec::len);
        for (index, (rows, &label)) in examples.iter().zip(labels).enumerate() {
            let error = |message: String| DataError::Encoding {
                task: task.to_string(),
                index,
                message,
            };
            if rows.len() != candidates || rows.is_empty() {
                return Err(error(format!(
                    "{} candidates where the batch's first example has {candidates}: a \
                     multiple-choice batch needs the same number for every example",
                    rows.len()
                )));
            }
            if label >= rows.len() {
                return Err(error(format!(
                    "label {label} with {} candidates",
                    rows.len()
                )));
            }
            if let Some(row) = rows.iter().find(|r| r.start == 0 || r.start >= r.ids.len()) {
                return Err(error(format!(
                    "continuation starts at {} of {} tokens: it needs a preceding token and at \
                     least one token of its own",
                    row.start,
                    row.ids.len()
                )));
            }
        }
        if examples.len() != labels.len() {
            return Err(DataError::Encoding {
                task: task.to_string(),
                index: examples.len().min(labels.len()),
                message: format!("{} examples but {} labels", examples.len(), labels.len()),
            });
        }
        let rows: Vec<(usize, usize, &ChoiceRow)> = examples
            .iter()
            .enumerate()
            .flat_map(|(e, rows)| rows.iter().enumerate().map(move |(c, r)| (e, c, r)))
            .collect();
        let length = rows.iter().map(|(_, _, r)| r.ids.len()).max().unwrap_or(0);
        let scored = rows
            .iter()
            .map(|(_, _, r)| r.ids.len() - r.start)
            .max()
            .unwrap_or(0);
        let n = rows.len();
        let mut input_ids = vec![pad; n * length];
        let mut attention_mask = vec![0i64; n * length];
        let mut continuation_mask = vec![0i64; n * length];
        let mut score_positions = vec![0i64; n * scored];
        let mut score_targets = vec![0i64; n * scored];
        let mut score_mask = vec![0i64; n * scored];
        for (row, (_, _, r)) in rows.iter().enumerate() {
            let offset = match padding_side {
                PaddingSide::Right => 0,
                PaddingSide::Left => length - r.ids.len(),
            };
            let base = row * length + offset;
            input_ids[base..base + r.ids.len()].copy_from_slice(&r.ids);
            attention_mask[base..base + r.ids.len()].fill(1);
            continuation_mask[base + r.start..base + r.ids.len()].fill(1);
            for (k, t) in (r.start..r.ids.len()).enumerate() {
                let slot = row * scored + k;
                score_positions[slot] = (offset + t - 1) as i64;
                score_targets[slot] = r.ids[t];
                score_mask[slot] = 1;
            }
        }
        let shape = [n as i64, length as i64];
        let scored_shape = [n as i64, scored as i64];
        let example_index: Vec<i64> = rows.iter().map(|r| r.0 as i64).collect();
        let candidate_index: Vec<i64> = rows.iter().map(|r| r.1 as i64).collect();
        let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        Ok(ChoiceBatch {
            input_ids: Tensor::from_slice(&input_ids).view(shape),
            attention_mask: Tensor::from_slice(&attention_mask).view(shape),
            continuation_mask: Tensor::from_slice(&continuation_mask).view(shape),
            score_positions: Tensor::from_slice(&score_positions).view(scored_shape),
            score_targets: Tensor::from_slice(&score_targets).view(scored_shape),
            score_mask: Tensor::from_slice(&score_mask).view(scored_shape),
            example_index: Tensor::from_slice(&example_index),
            candidate_index: Tensor::from_slice(&candidate_index),
            labels: Tensor::from_slice(&labels),
            candidates,
        })
    }

    /// Number of examples B (rows are B times the candidates).
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// True when the batch holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: tch::Device) -> ChoiceBatch {
        ChoiceBatch {
            input_ids: self.input_ids.to_device(device),
            attention_mask: self.attention_mask.to_device(device),
            continuation_mask: self.continuation_mask.to_device(device),
            score_positions: self.score_positions.to_device(device),
            score_targets: self.score_targets.to_device(device),
            score_mask: self.score_mask.to_device(device),
            example_index: self.example_index.to_device(device),
            candidate_index: self.candidate_index.to_device(device),
            labels: self.labels.to_device(device),
            candidates: self.candidates,
        }
    }

    /// Example `index` (its candidate rows) as a batch of one.
    pub fn single_example(&self, index: usize) -> std::result::Result<ChoiceBatch, TchError> {
        let c = self.candidates as i64;
        let rows = |t: &Tensor| t.f_narrow(0, index as i64 * c, c);
        Ok(ChoiceBatch {
            input_ids: rows(&self.input_ids)?,
            attention_mask: rows(&self.attention_mask)?,
            continuation_mask: rows(&self.continuation_mask)?,
            score_positions: rows(&self.score_positions)?,
            score_targets: rows(&self.score_targets)?,
            score_mask: rows(&self.score_mask)?,
            example_index: rows(&self.example_index)?.f_zeros_like()?,
            candidate_index: rows(&self.candidate_index)?,
            labels: self.labels.f_narrow(0, index as i64, 1)?,
            candidates: self.candidates,
        })
    }
}

impl ExampleBatch for ChoiceBatch {
    fn num_examples(&self) -> usize {
        self.len()
    }

    fn rows_per_example(&self) -> usize {
        self.candidates
    }

    /// `[B, candidates]`: each candidate's mean continuation log-likelihood (module docs).
    fn scores(&self, model: &dyn LabelWordModel) -> std::result::Result<Tensor, TchError> {
        let b = self.len() as i64;
        model
            .continuation_scores(self)?
            .f_view([b, self.candidates as i64])
    }

    fn labels(&self) -> &Tensor {
        &self.labels
    }

    fn single(&self, index: usize) -> std::result::Result<Box<dyn ExampleBatch>, TchError> {
        Ok(Box::new(self.single_example(index)?))
    }

    fn label_word_ids(&self) -> Option<&Tensor> {
        None
    }

    fn repeated(&self, times: usize) -> std::result::Result<Box<dyn ExampleBatch>, TchError> {
        let b = self.len() as i64;
        let shifted: Vec<Tensor> = (0..times as i64)
            .map(|r| self.example_index.f_add_scalar(r * b))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Box::new(ChoiceBatch {
            input_ids: repeat_rows(&self.input_ids, times)?,
            attention_mask: repeat_rows(&self.attention_mask, times)?,
            continuation_mask: repeat_rows(&self.continuation_mask, times)?,
            score_positions: repeat_rows(&self.score_positions, times)?,
            score_targets: repeat_rows(&self.score_targets, times)?,
            score_mask: repeat_rows(&self.score_mask, times)?,
            example_index: Tensor::f_cat(&shifted, 0)?,
            candidate_index: repeat_rows(&self.candidate_index, times)?,
            labels: repeat_rows(&self.labels, times)?,
            candidates: self.candidates,
        }))
    }
}

/// Mean log-likelihood `[R]` of each row's continuation from a causal LM's log-probabilities
/// at the scored positions, `token_log_probs [R, K]` (f32): the rows' scores of
/// [`LabelWordModel::continuation_scores`].
pub fn mean_over_continuation(
    token_log_probs: &Tensor,
    batch: &ChoiceBatch,
) -> std::result::Result<Tensor, TchError> {
    let mask = batch.score_mask.f_to_kind(token_log_probs.kind())?;
    token_log_probs
        .f_mul(&mask)?
        .f_sum_dim_intlist(1, false, token_log_probs.kind())?
        .f_div(&mask.f_sum_dim_intlist(1, false, token_log_probs.kind())?)
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

    /// The same encoder with rows capped at `max_length` tokens (the prompt is cut from its
    /// start, never the continuation).
    ///
    /// # Errors
    /// [`DataError::InvalidOption`] for a length below 2 (a scored token needs a predecessor).
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        self.max_length = checked_max_length(max_length)?;
        Ok(self)
    }

    fn tokenize(&self, text: &str) -> Result<Vec<i64>> {
        token_ids(self.tokenizer, text)
    }

    /// The rows of one example, one per candidate. The prompt loses tokens from its start when
    /// a row exceeds `max_length`.
    ///
    /// # Errors
    /// [`DataError::Encoding`] for an example without candidates or a continuation that alone
    /// exceeds `max_length`.
    pub fn encode(&self, index: usize, example: &Example) -> Result<Vec<ChoiceRow>> {
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
                Ok(ChoiceRow { ids, start })
            })
            .collect()
    }

    /// Encodes every example once (the rows and the label of each), for batching later with
    /// [`ChoiceEncoder::collate`].
    ///
    /// # Errors
    /// As [`ChoiceEncoder::encode`].
    pub fn encode_all(&self, examples: &[Example]) -> Result<Vec<(Vec<ChoiceRow>, usize)>> {
        examples
            .iter()
            .enumerate()
            .map(|(index, example)| Ok((self.encode(index, example)?, example.label)))
            .collect()
    }

    /// The batch of `indices` of encoded examples ([`ChoiceEncoder::encode_all`]).
    ///
    /// # Errors
    /// As [`ChoiceBatch::collate`]; an index out of range.
    pub fn collate(
        &self,
        encoded: &[(Vec<ChoiceRow>, usize)],
        indices: &[usize],
    ) -> Result<ChoiceBatch> {
        let mut rows = Vec::with_capacity(indices.len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (example, label) = encoded.get(i).ok_or_else(|| DataError::Encoding {
                task: self.task.clone(),
                index: i,
                message: format!("index {i} of {} encoded examples", encoded.len()),
            })?;
            rows.push(example.clone());
            labels.push(*label);
        }
        ChoiceBatch::collate(&self.task, &rows, &labels, self.pad, self.padding_side)
    }

    /// Encodes and pads `examples` into one [`ChoiceBatch`].
    ///
    /// # Errors
    /// As [`ChoiceEncoder::encode`] and [`ChoiceBatch::collate`].
    pub fn batch(&self, examples: &[Example]) -> Result<ChoiceBatch> {
        let encoded = self.encode_all(examples)?;
        let indices: Vec<usize> = (0..encoded.len()).collect();
        self.collate(&encoded, &indices)
    }
}
