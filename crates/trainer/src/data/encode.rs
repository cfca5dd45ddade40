//! Tokenisation of prompted examples into [`Batch`]es.
//!
//! Masked LMs (RoBERTa, LM-BFF): the template's parts are tokenised one by one without special
//! tokens, `sent_0` is cut to `first_sent_limit` tokens and other sentences to
//! `other_sent_limit`, `*cls*` / `*sep*` / `*mask*` become the model's special ids, and a
//! sequence longer than `max_length` loses its tail (LM-BFF's default); an example whose mask
//! falls off is an error. The score position is the mask.
//!
//! Decoders (OPT, Llama; MeZO `large_models`): the template is rendered to text (sentences cut
//! to their token limits first), tokenised as a whole, prefixed with the BOS token when the
//! family uses one, and cut from the left to `max_length` (MeZO keeps the end of the prompt).
//! The score position is the last real token: the label word is the next token.

use tch::Tensor;
use tokenizers::Tokenizer;

use super::error::{DataError, Result};
use super::example::Example;
use super::task::TaskSpec;
use super::template::{DecoderTemplate, MlmPart, MlmTemplate};
use crate::batch::Batch;

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// Pad after the tokens (usual for MLMs).
    Right,
    /// Pad before the tokens (usual for decoders: the last real token is at `L - 1`).
    Left,
}

/// Tokenizer conventions of a model family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelConventions {
    /// A masked LM scored at its mask token.
    MaskedLm {
        /// Begin token (`<s>`).
        cls_token: String,
        /// Separator / end token (`</s>`).
        sep_token: String,
        /// Mask token (`<mask>`).
        mask_token: String,
        /// Padding token (`<pad>`).
        pad_token: String,
    },
    /// A decoder scored at its last token.
    Decoder {
        /// Token put before every prompt (OPT: `</s>`; SmolLM2 uses none).
        bos_token: Option<String>,
        /// Padding token (any id works: padded positions are masked out).
        pad_token: String,
    },
}

impl ModelConventions {
    /// RoBERTa: `<s>`, `</s>`, `<mask>`, `<pad>`.
    pub fn roberta() -> Self {
        Self::MaskedLm {
            cls_token: "<s>".into(),
            sep_token: "</s>".into(),
            mask_token: "<mask>".into(),
            pad_token: "<pad>".into(),
        }
    }

    /// OPT: every sequence starts with `</s>` (its BOS), padding `<pad>`.
    pub fn opt() -> Self {
        Self::Decoder {
            bos_token: Some("</s>".into()),
            pad_token: "<pad>".into(),
        }
    }

    /// True for decoders.
    pub fn is_decoder(&self) -> bool {
        matches!(self, Self::Decoder { .. })
    }
}

/// One encoded example: token ids without padding, the score position and the gold label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedExample {
    /// Token ids.
    pub input_ids: Vec<i64>,
    /// Index (in `input_ids`) of the position whose logits score the label words.
    pub position: usize,
    /// Gold label.
    pub label: usize,
}

#[derive(Debug, Clone)]
enum Prompt {
    Mlm {
        template: MlmTemplate,
        cls: i64,
        sep: i64,
        mask: i64,
    },
    Decoder {
        template: DecoderTemplate,
        bos: Option<i64>,
    },
}

/// Turns a task's examples into [`Batch`]es for one tokenizer and model family.
#[derive(Debug, Clone)]
pub struct PromptEncoder<'t> {
    tokenizer: &'t Tokenizer,
    task: String,
    spec: TaskSpec,
    prompt: Prompt,
    pad: i64,
    padding_side: PaddingSide,
    max_length: usize,
    label_word_ids: Vec<i64>,
}

/// A sequence-length cap, refused below 2 (a scored token needs a predecessor).
pub(crate) fn checked_max_length(max_length: usize) -> Result<usize> {
    if max_length < 2 {
        return Err(DataError::InvalidOption {
            name: "max_length",
            value: max_length.to_string(),
            reason: "must be at least 2",
        });
    }
    Ok(max_length)
}

/// The token ids of `text`, without special tokens.
pub(crate) fn token_ids(tokenizer: &Tokenizer, text: &str) -> Result<Vec<i64>> {
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|error| DataError::Tokenizer(error.to_string()))?;
    Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
}

fn special_id(tokenizer: &Tokenizer, token: &str, role: &'static str) -> Result<i64> {
    tokenizer
        .token_to_id(token)
        .map(i64::from)
        .ok_or_else(|| DataError::MissingSpecialToken {
            token: token.to_string(),
            role,
        })
}

impl<'t> PromptEncoder<'t> {
    /// An encoder for task `task` (its spec from the registry). Checks that the family's
    /// special tokens exist and that every label word is exactly one token.
    ///
    /// # Errors
    /// [`DataError::MissingSpecialToken`], [`DataError::LabelWordNotOneToken`] naming the word,
    /// [`DataError::Template`] for a bad template or an MLM task without `mlm_template`.
    pub fn new(
        tokenizer: &'t Tokenizer,
        task: &str,
        spec: &TaskSpec,
        conventions: &ModelConventions,
        padding_side: PaddingSide,
    ) -> Result<Self> {
        if spec.is_multiple_choice() {
            return Err(DataError::Template {
                template: spec.decoder_template.clone(),
                message: format!(
                    "task {task} is multiple choice: encode it with data::choice::ChoiceEncoder"
                ),
            });
        }
        let (prompt, pad) = match conventions {
            ModelConventions::MaskedLm {
                cls_token,
                sep_token,
                mask_token,
                pad_token,
            } => {
                let source = spec
                    .mlm_template
                    .as_deref()
                    .ok_or_else(|| DataError::Template {
                        template: String::new(),
                        message: format!("task {task} has no mlm_template (decoders only)"),
                    })?;
                let prompt = Prompt::Mlm {
                    template: MlmTemplate::parse(source)?,
                    cls: special_id(tokenizer, cls_token, "cls")?,
                    sep: special_id(tokenizer, sep_token, "sep")?,
                    mask: special_id(tokenizer, mask_token, "mask")?,
                };
                (prompt, special_id(tokenizer, pad_token, "pad")?)
            }
            ModelConventions::Decoder {
                bos_token,
                pad_token,
            } => {
                let bos = bos_token
                    .as_deref()
                    .map(|token| special_id(tokenizer, token, "bos"))
                    .transpose()?;
                let prompt = Prompt::Decoder {
                    template: DecoderTemplate::parse(&spec.decoder_template)?,
                    bos,
                };
                (prompt, special_id(tokenizer, pad_token, "pad")?)
            }
        };
        let words = if conventions.is_decoder() {
            spec.decoder_words()
        } else {
            &spec.label_words
        };
        let label_word_ids = words
            .iter()
            .map(|word| {
                let encoding = tokenizer
                    .encode(word.as_str(), false)
                    .map_err(|error| DataError::Tokenizer(error.to_string()))?;
                match encoding.get_ids() {
                    [id] => Ok(i64::from(*id)),
                    _ => Err(DataError::LabelWordNotOneToken {
                        task: task.to_string(),
                        word: word.clone(),
                        tokens: encoding.get_tokens().to_vec(),
                    }),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tokenizer,
            task: task.to_string(),
            spec: spec.clone(),
            prompt,
            pad,
            padding_side,
            max_length: spec.max_length,
            label_word_ids,
        })
    }

    /// Overrides the task's `max_length`.
    ///
    /// # Errors
    /// [`DataError::InvalidOption`] below 2.
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        self.max_length = checked_max_length(max_length)?;
        Ok(self)
    }

    /// Vocabulary id of each label word, in label order.
    pub fn label_word_ids(&self) -> &[i64] {
        &self.label_word_ids
    }

    /// The maximum sequence length in force.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn tokenize(&self, text: &str) -> Result<Vec<i64>> {
        token_ids(self.tokenizer, text)
    }

    fn sentence_limit(&self, field: &str) -> Option<usize> {
        match field.strip_prefix("sent_")?.parse::<usize>().ok()? {
            0 => self.spec.first_sent_limit,
            _ => self.spec.other_sent_limit,
        }
    }

    /// `text` cut after its first `limit` tokens (at the end offset of the last kept token).
    fn truncate_text(&self, text: &str, limit: usize) -> Result<String> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|error| DataError::Tokenizer(error.to_string()))?;
        if encoding.get_ids().len() <= limit {
            return Ok(text.to_string());
        }
        let mut end = if limit == 0 {
            0
        } else {
            encoding.get_offsets()[limit - 1].1.min(text.len())
        };
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Ok(text[..end].to_string())
    }

    /// Encodes one example (`index` only labels errors).
    ///
    /// # Errors
    /// [`DataError::Encoding`] when truncation removes the mask or leaves nothing;
    /// [`DataError::Template`] when the example lacks a field the template needs.
    pub fn encode(&self, index: usize, example: &Example) -> Result<EncodedExample> {
        let encoding_error = |message: String| DataError::Encoding {
            task: self.task.clone(),
            index,
            message,
        };
        if example.label >= self.label_word_ids.len() {
            return Err(encoding_error(format!(
                "label {} but the task has {} label words",
                example.label,
                self.label_word_ids.len()
            )));
        }
        match &self.prompt {
            Prompt::Mlm {
                template,
                cls,
                sep,
                mask,
            } => {
                let mut ids = Vec::new();
                let mut position = None;
                for part in &template.parts {
                    match part {
                        MlmPart::Cls => ids.push(*cls),
                        MlmPart::Sep => ids.push(*sep),
                        MlmPart::Mask => {
                            position = Some(ids.len());
                            ids.push(*mask);
                        }
                        MlmPart::Text(text) => ids.extend(self.tokenize(text)?),
                        MlmPart::Sentence(slot) => {
                            let name = slot.field_name();
                            let text = example.field(&name).ok_or_else(|| DataError::Template {
                                template: template.source.clone(),
                                message: format!("example {index} has no field {name:?}"),
                            })?;
                            let mut tokens = self.tokenize(&slot.apply(text))?;
                            if let Some(limit) = self.sentence_limit(&name) {
                                tokens.truncate(limit);
                            }
                            ids.extend(tokens);
                        }
                    }
                }
                let position = position.expect("invariant: MlmTemplate::parse checks one mask");
                if position >= self.max_length {
                    return Err(encoding_error(format!(
                        "the mask is at token {position}, beyond max_length {}",
                        self.max_length
                    )));
                }
                ids.truncate(self.max_length);
                Ok(EncodedExample {
                    input_ids: ids,
                    position,
                    label: example.label,
                })
            }
            Prompt::Decoder { template, bos } => {
                let text =
                    template.render_with(example, |name, raw| match self.sentence_limit(name) {
                        Some(limit) => self.truncate_text(raw, limit),
                        None => Ok(raw.to_string()),
                    })?;
                let mut tokens = self.tokenize(&text)?;
                let room = self.max_length - usize::from(bos.is_some());
                if tokens.len() > room {
                    tokens.drain(..tokens.len() - room);
                }
                let mut ids: Vec<i64> = bos.iter().copied().collect();
                ids.extend(tokens);
                if ids.is_empty() {
                    return Err(encoding_error("the prompt encodes to no token".into()));
                }
                Ok(EncodedExample {
                    position: ids.len() - 1,
                    input_ids: ids,
                    label: example.label,
                })
            }
        }
    }

    /// Encodes every example.
    ///
    /// # Errors
    /// The first error of [`PromptEncoder::encode`].
    pub fn encode_all(&self, examples: &[Example]) -> Result<Vec<EncodedExample>> {
        examples
            .iter()
            .enumerate()
            .map(|(index, example)| self.encode(index, example))
            .collect()
    }

    /// Pads `examples[i]` for `i` in `indices` into a [`Batch`] on the CPU (an empty `indices`
    /// gives a batch of shape `[0, 0]`, which Poisson sampling can produce).
    ///
    /// # Errors
    /// [`DataError::InvalidOption`] for an index out of range.
    pub fn collate(&self, examples: &[EncodedExample], indices: &[usize]) -> Result<Batch> {
        let chosen = indices
            .iter()
            .map(|&i| {
                examples.get(i).ok_or_else(|| DataError::InvalidOption {
                    name: "batch index",
                    value: format!("{i} (of {} examples)", examples.len()),
                    reason: "out of range",
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(collate(
            &chosen,
            self.pad,
            self.padding_side,
            &self.label_word_ids,
        ))
    }
}

/// Pads encoded examples into a [`Batch`] (CPU tensors, int64).
pub fn collate(
    examples: &[&EncodedExample],
    pad_id: i64,
    padding_side: PaddingSide,
    label_word_ids: &[i64],
) -> Batch {
    let batch_size = examples.len();
    let length = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let mut input_ids = vec![pad_id; batch_size * length];
    let mut attention_mask = vec![0i64; batch_size * length];
    let mut positions = Vec::with_capacity(batch_size);
    let mut labels = Vec::with_capacity(batch_size);
    for (row, example) in examples.iter().enumerate() {
        let offset = match padding_side {
            PaddingSide::Right => 0,
            PaddingSide::Left => length - example.input_ids.len(),
        };
        let start = row * length + offset;
        input_ids[start..start + example.input_ids.len()].copy_from_slice(&example.input_ids);
        attention_mask[start..start + example.input_ids.len()].fill(1);
        positions.push((offset + example.position) as i64);
        labels.push(example.label as i64);
    }
    let shape = [batch_size as i64, length as i64];
    Batch {
        input_ids: Tensor::from_slice(&input_ids).view(shape),
        attention_mask: Tensor::from_slice(&attention_mask).view(shape),
        positions: Tensor::from_slice(&positions),
        labels: Tensor::from_slice(&labels),
        label_word_ids: Tensor::from_slice(label_word_ids),
    }
}
