//! Prompt templates.
//!
//! - [`MlmTemplate`]: LM-BFF's template language (Gao et al., ACL 2021, `src/dataset.py`
//!   `tokenize_multipart_input`), in which the paper's RoBERTa prompts are written
//!   (docs/paper.md §3.1), e.g. `*cls**sent_0*_It_was*mask*.*sep+*`. Parts between `*` are
//!   special tokens, sentences or literal text (`_` = space); each part is tokenised on its own.
//! - [`DecoderTemplate`]: plain text with `{field}` / `{field|filter}` slots for MeZO's OPT
//!   prompts (docs/paper.md §6.3), e.g. `{sent_0|trim} It was`. The rendered text ends right
//!   before the label word.

use super::error::{DataError, Result};
use super::example::Example;

/// One part of an LM-BFF template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MlmPart {
    /// `*cls*`: the begin-of-sequence token (`<s>` for RoBERTa).
    Cls,
    /// `*mask*`: the mask token, whose logits score the label words.
    Mask,
    /// `*sep*` / `*sep+*`: the separator / end token (`</s>`).
    Sep,
    /// `*sent_i*` with modifiers.
    Sentence(SentenceSlot),
    /// Literal text (`_` already turned into spaces).
    Text(String),
}

/// A sentence slot of an LM-BFF template: `*[+]sent[l|u][-]_i*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentenceSlot {
    /// Index `i`: the example field `sent_i`.
    pub index: usize,
    /// `+`: prepend a space.
    pub leading_space: bool,
    /// `l`: lower-case the first character.
    pub lower_first: bool,
    /// `u`: upper-case the first character.
    pub upper_first: bool,
    /// `-`: drop the last character (typically the final period).
    pub drop_last_char: bool,
}

impl SentenceSlot {
    /// The example field this slot reads.
    pub fn field_name(&self) -> String {
        format!("sent_{}", self.index)
    }

    /// Applies the modifiers to the sentence text.
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_string();
        if self.drop_last_char {
            text.pop();
        }
        if self.lower_first {
            text = map_first(&text, |c| c.to_lowercase().collect());
        }
        if self.upper_first {
            text = map_first(&text, |c| c.to_uppercase().collect());
        }
        if self.leading_space {
            text.insert(0, ' ');
        }
        text
    }
}

/// A parsed LM-BFF template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlmTemplate {
    /// The source text.
    pub source: String,
    /// Its parts, in order.
    pub parts: Vec<MlmPart>,
}

impl MlmTemplate {
    /// Parses an LM-BFF template; exactly one `*mask*` is required.
    ///
    /// # Errors
    /// [`DataError::Template`] naming the template and the bad part.
    pub fn parse(source: &str) -> Result<Self> {
        let error = |message: String| DataError::Template {
            template: source.to_string(),
            message,
        };
        let mut parts = Vec::new();
        for raw in source.split('*').filter(|part| !part.is_empty()) {
            let part = match raw {
                "cls" => MlmPart::Cls,
                "mask" => MlmPart::Mask,
                "sep" | "sep+" => MlmPart::Sep,
                _ if raw.trim_start_matches('+').starts_with("sent") => {
                    MlmPart::Sentence(parse_sentence(raw).map_err(error)?)
                }
                _ => MlmPart::Text(raw.replace('_', " ")),
            };
            parts.push(part);
        }
        let masks = parts.iter().filter(|part| **part == MlmPart::Mask).count();
        if masks != 1 {
            return Err(error(format!("needs exactly one *mask*, found {masks}")));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }
}

fn parse_sentence(raw: &str) -> std::result::Result<SentenceSlot, String> {
    let (leading_space, rest) = match raw.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let rest = rest
        .strip_prefix("sent")
        .ok_or(format!("bad sentence part {raw:?}"))?;
    let (modifiers, index) = rest
        .split_once('_')
        .ok_or(format!("sentence part {raw:?} has no _index"))?;
    let index: usize = index
        .parse()
        .map_err(|_| format!("sentence part {raw:?}: index {index:?} is not a number"))?;
    let mut slot = SentenceSlot {
        index,
        leading_space,
        lower_first: false,
        upper_first: false,
        drop_last_char: false,
    };
    for modifier in modifiers.chars() {
        match modifier {
            'l' => slot.lower_first = true,
            'u' => slot.upper_first = true,
            '-' => slot.drop_last_char = true,
            other => return Err(format!("sentence part {raw:?}: unknown modifier {other:?}")),
        }
    }
    Ok(slot)
}

/// A text transformation applied to a decoder-template field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Lower-case everything (MeZO WSC: `span2.lower()`).
    Lower,
    /// Lower-case the first character.
    LowerFirst,
    /// Upper-case the first character (MeZO BoolQ question).
    UpperFirst,
    /// Remove one trailing period (MeZO COPA premise).
    StripPeriod,
    /// Append `?` unless the text ends with one (MeZO BoolQ question).
    QuestionMark,
    /// Remove surrounding whitespace (MeZO SST-2: `sentence.strip()`).
    Trim,
}

impl Filter {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "lower" => Self::Lower,
            "lower_first" => Self::LowerFirst,
            "upper_first" => Self::UpperFirst,
            "strip_period" => Self::StripPeriod,
            "question_mark" => Self::QuestionMark,
            "trim" => Self::Trim,
            _ => return None,
        })
    }

    /// Applies the filter.
    pub fn apply(self, text: &str) -> String {
        match self {
            Self::Lower => text.to_lowercase(),
            Self::LowerFirst => map_first(text, |c| c.to_lowercase().collect()),
            Self::UpperFirst => map_first(text, |c| c.to_uppercase().collect()),
            Self::StripPeriod => text.strip_suffix('.').unwrap_or(text).to_string(),
            Self::QuestionMark if text.ends_with('?') => text.to_string(),
            Self::QuestionMark => format!("{text}?"),
            Self::Trim => text.trim().to_string(),
        }
    }
}

/// One part of a decoder template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecoderPart {
    /// Literal text.
    Text(String),
    /// A field slot with its filters, applied left to right.
    Field {
        /// The example field.
        name: String,
        /// The filters.
        filters: Vec<Filter>,
    },
}

/// A parsed decoder template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderTemplate {
    /// The source text.
    pub source: String,
    /// Its parts, in order.
    pub parts: Vec<DecoderPart>,
}

impl DecoderTemplate {
    /// Parses `text {field|filter} text`.
    ///
    /// # Errors
    /// [`DataError::Template`] for an unclosed `{`, an empty field name or an unknown filter.
    pub fn parse(source: &str) -> Result<Self> {
        let error = |message: String| DataError::Template {
            template: source.to_string(),
            message,
        };
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(DecoderPart::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| error(format!("unclosed '{{' at {:?}", &rest[open..])))?;
            let slot = &rest[open + 1..open + close];
            let mut pieces = slot.split('|');
            let name = pieces.next().unwrap_or("").trim().to_string();
            if name.is_empty() {
                return Err(error(format!("empty field name in {{{slot}}}")));
            }
            let filters = pieces
                .map(|filter| {
                    Filter::parse(filter.trim())
                        .ok_or_else(|| error(format!("unknown filter {filter:?} in {{{slot}}}")))
                })
                .collect::<Result<Vec<_>>>()?;
            parts.push(DecoderPart::Field { name, filters });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(error(format!("unmatched '}}' in {rest:?}")));
        }
        if !rest.is_empty() {
            parts.push(DecoderPart::Text(rest.to_string()));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    /// Renders the template for `example`, reading each field through `field_text` (which
    /// may truncate it) and then applying the filters.
    ///
    /// # Errors
    /// [`DataError::Template`] when the example lacks a field.
    pub fn render_with(
        &self,
        example: &Example,
        mut field_text: impl FnMut(&str, &str) -> Result<String>,
    ) -> Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                DecoderPart::Text(text) => out.push_str(text),
                DecoderPart::Field { name, filters } => {
                    let raw = example.field(name).ok_or_else(|| DataError::Template {
                        template: self.source.clone(),
                        message: format!(
                            "the example has no field {name:?} (it has {:?})",
                            example.fields.iter().map(|(n, _)| n).collect::<Vec<_>>()
                        ),
                    })?;
                    let mut text = field_text(name, raw)?;
                    for filter in filters {
                        text = filter.apply(&text);
                    }
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }

    /// Renders the template for `example` without truncation.
    ///
    /// # Errors
    /// As [`DecoderTemplate::render_with`].
    pub fn render(&self, example: &Example) -> Result<String> {
        self.render_with(example, |_, text| Ok(text.to_string()))
    }
}

fn map_first(text: &str, f: impl Fn(char) -> String) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => f(first) + chars.as_str(),
        None => String::new(),
    }
}
