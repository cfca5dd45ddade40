//! Tokenizers for the three families, as `tokenizers::Tokenizer`s: a checkpoint's
//! `tokenizer.json`, a byte-level BPE from `vocab.json` + `merges.txt` (RoBERTa, OPT/GPT-2
//! style), or the vocabulary embedded in a GGUF file.

use super::error::{ModelError, Result};
use super::gguf::GgufFile;
use serde_json::{json, Value};
use std::path::Path;
use std::str::FromStr;
use tokenizers::Tokenizer;

fn tokenizer_error(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// An `added_tokens` entry of a `tokenizer.json`.
fn added_token(id: i64, content: &str, lstrip: bool) -> Value {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": lstrip,
        "rstrip": false, "normalized": false, "special": true
    })
}

/// A byte-level BPE `tokenizer.json` document (GPT-2 family) from its parts.
fn byte_level_bpe_json(
    vocab: Value,
    merges: Vec<String>,
    added_tokens: Vec<Value>,
    pre_tokenizer: Value,
    post_processor: Value,
) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    })
}

fn byte_level_pre_tokenizer() -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
}

/// Load the tokenizer of a checkpoint directory: `tokenizer.json` if present, else
/// `vocab.json` + `merges.txt` with the special tokens and post-processing of the family named
/// by `config.json` (RoBERTa: `<s> … </s>`; OPT: a leading `</s>`; otherwise none).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let json_path = dir.join("tokenizer.json");
    if json_path.exists() {
        return Tokenizer::from_file(&json_path).map_err(|e| tokenizer_error(&json_path, e));
    }
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    if !vocab_path.exists() || !merges_path.exists() {
        return Err(tokenizer_error(
            dir,
            "neither tokenizer.json nor vocab.json + merges.txt found",
        ));
    }
    // Only `model_type` matters here, so a partial config.json is enough.
    let model_type: Option<String> = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| {
            v.get("model_type")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        });
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ModelError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let vocab: Value =
        serde_json::from_str(&read(&vocab_path)?).map_err(|source| ModelError::Json {
            path: vocab_path.clone(),
            source,
        })?;
    let vocab_map = vocab
        .as_object()
        .ok_or_else(|| tokenizer_error(&vocab_path, "not a JSON object"))?;
    let id_of = |token: &str| vocab_map.get(token).and_then(|v| v.as_i64());
    let merges: Vec<String> = read(&merges_path)?
        .lines()
        .filter(|line| !line.starts_with("#version") && !line.trim().is_empty())
        .map(str::to_string)
        .collect();
    let mut added = Vec::new();
    let post_processor = match model_type.as_deref() {
        Some("roberta") => {
            for (token, lstrip) in [
                ("<s>", false),
                ("<pad>", false),
                ("</s>", false),
                ("<unk>", false),
                ("<mask>", true),
            ] {
                if let Some(id) = id_of(token) {
                    added.push(added_token(id, token, lstrip));
                }
            }
            let (bos, eos) = match (id_of("<s>"), id_of("</s>")) {
                (Some(b), Some(e)) => (b, e),
                _ => {
                    return Err(tokenizer_error(
                        &vocab_path,
                        "RoBERTa vocabulary lacks <s> or </s>",
                    ))
                }
            };
            json!({"type": "RobertaProcessing", "sep": ["</s>", eos], "cls": ["<s>", bos],
                   "trim_offsets": true, "add_prefix_space": false})
        }
        Some("opt") => {
            for token in ["<s>", "<pad>", "</s>", "<unk>"] {
                if let Some(id) = id_of(token) {
                    added.push(added_token(id, token, false));
                }
            }
            // OPT's tokenizer prepends its bos token `</s>` to every sequence.
            let bos = id_of("</s>")
                .ok_or_else(|| tokenizer_error(&vocab_path, "OPT vocabulary lacks </s>"))?;
            json!({"type": "TemplateProcessing",
                   "single": [{"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [{"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                            {"Sequence": {"id": "B", "type_id": 1}}],
                   "special_tokens": {"</s>": {"id": "</s>", "ids": [bos], "tokens": ["</s>"]}}})
        }
        _ => Value::Null,
    };
    let document = byte_level_bpe_json(
        vocab,
        merges,
        added,
        byte_level_pre_tokenizer(),
        post_processor,
    );
    Tokenizer::from_str(&document.to_string()).map_err(|e| tokenizer_error(&vocab_path, e))
}

/// The `tokenizer.json` document of a GGUF file's GPT-2-style BPE vocabulary
/// (`tokenizer.ggml.model = gpt2`): pre-tokenizer Digits(individual) then ByteLevel without a
/// prefix space, ByteLevel decoder, control tokens (type 3) as special added tokens.
pub fn gguf_tokenizer_json(file: &GgufFile) -> Result<Value> {
    let model = file
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.as_str())
        .unwrap_or("<missing>");
    if model != "gpt2" {
        return Err(tokenizer_error(
            &file.path,
            format!("tokenizer.ggml.model {model:?}: only gpt2 (byte-level BPE) is supported"),
        ));
    }
    let tokens = file.string_array("tokenizer.ggml.tokens")?;
    let merges = file.string_array("tokenizer.ggml.merges")?;
    let types = file
        .integer_array("tokenizer.ggml.token_type")
        .unwrap_or_default();
    let mut vocab = serde_json::Map::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.insert(token.clone(), json!(id));
    }
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == 3)
        .map(|(id, _)| added_token(id as i64, &tokens[id], false))
        .collect();
    let pre_tokenizer = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true}, byte_level_pre_tokenizer()]});
    Ok(byte_level_bpe_json(
        Value::Object(vocab),
        merges,
        added,
        pre_tokenizer,
        Value::Null,
    ))
}

/// The tokenizer embedded in a GGUF file.
pub fn load_gguf_tokenizer(path: &Path) -> Result<Tokenizer> {
    let file = GgufFile::open(path)?;
    let document = gguf_tokenizer_json(&file)?;
    Tokenizer::from_str(&document.to_string()).map_err(|e| tokenizer_error(path, e))
}

/// A special token of `tokenizer_config.json` (a string, or an object with `content`).
fn configured_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The padding token of a decoder checkpoint directory: the first of `tokenizer_config.json`'s
/// `pad_token` and `eos_token`, then `<pad>` and `<|endoftext|>`, that the tokenizer's
/// vocabulary holds. Padded positions are masked out of attention and never scored, so any
/// token of the vocabulary serves; what matters is that it exists.
///
/// # Errors
/// A malformed `tokenizer_config.json`, or no candidate in the vocabulary (all named).
pub fn decoder_pad_token(dir: &Path, tokenizer: &Tokenizer) -> Result<String> {
    let config_path = dir.join("tokenizer_config.json");
    let config: Value = if config_path.exists() {
        let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: config_path.clone(),
            source,
        })?
    } else {
        Value::Null
    };
    let mut candidates: Vec<String> = ["pad_token", "eos_token"]
        .iter()
        .filter_map(|key| configured_token(&config, key))
        .collect();
    candidates.extend(["<pad>".to_string(), "<|endoftext|>".to_string()]);
    candidates
        .iter()
        .find(|t| tokenizer.token_to_id(t).is_some())
        .cloned()
        .ok_or_else(|| {
            tokenizer_error(
                dir,
                format!(
                    "no padding token: none of {candidates:?} (tokenizer_config.json's pad_token and eos_token, then defaults) is in the vocabulary"
                ),
            )
        })
}

/// `tokenizer_config.json` for a GGUF vocabulary: its BOS, EOS and padding tokens by name
/// (`tokenizer.ggml.*_token_id`), so that a checkpoint exported from it names its specials.
pub fn gguf_tokenizer_config(file: &GgufFile) -> Result<Value> {
    let tokens = file.string_array("tokenizer.ggml.tokens")?;
    let name = |key: &str| {
        file.optional_u64(key)
            .and_then(|id| tokens.get(id as usize).cloned())
    };
    let mut config = serde_json::Map::new();
    for (field, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
    ] {
        if let Some(token) = name(key) {
            config.insert(field.into(), Value::String(token));
        }
    }
    config.insert(
        "tokenizer_class".into(),
        Value::String("PreTrainedTokenizerFast".into()),
    );
    Ok(Value::Object(config))
}
