//! Hugging Face `config.json` for the three families, read by `model_type`.
//!
//! Field names and defaults follow transformers' `RobertaConfig`, `OPTConfig` and `LlamaConfig`.

use super::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The published configurations shipped in `crates/trainer/configs/`, by name: the full-size
/// shapes the memory and throughput measurements instantiate with random weights.
const PUBLISHED: [(&str, &str); 6] = [
    (
        "roberta-large",
        include_str!("../../configs/roberta-large.json"),
    ),
    ("opt-1.3b", include_str!("../../configs/opt-1.3b.json")),
    ("opt-2.7b", include_str!("../../configs/opt-2.7b.json")),
    (
        "smollm2-135m",
        include_str!("../../configs/smollm2-135m.json"),
    ),
    ("opt-30b", include_str!("../../configs/opt-30b.json")),
    ("opt-66b", include_str!("../../configs/opt-66b.json")),
];

/// Names [`published`] accepts.
pub const PUBLISHED_NAMES: [&str; 6] = [
    PUBLISHED[0].0,
    PUBLISHED[1].0,
    PUBLISHED[2].0,
    PUBLISHED[3].0,
    PUBLISHED[4].0,
    PUBLISHED[5].0,
];

/// The published configuration `name` (one of [`PUBLISHED_NAMES`]).
///
/// # Errors
/// [`ModelError::UnknownPublished`] for another name (the message lists the known ones).
pub fn published(name: &str) -> Result<ModelConfig> {
    let (name, text) = PUBLISHED
        .iter()
        .find(|(known, _)| *known == name)
        .ok_or_else(|| ModelError::UnknownPublished {
            name: name.to_string(),
            known: PUBLISHED_NAMES.join(", "),
        })?;
    ModelConfig::from_json_str(text, Path::new(name))
}

fn default_true() -> bool {
    true
}

/// `RobertaConfig` (encoder with MLM head).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RobertaConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "RobertaConfig::default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: i64,
    #[serde(default = "RobertaConfig::default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "RobertaConfig::default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "RobertaConfig::default_pad")]
    pub pad_token_id: i64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

impl RobertaConfig {
    fn default_act() -> String {
        "gelu".into()
    }
    fn default_type_vocab() -> i64 {
        1
    }
    fn default_eps() -> f64 {
        1e-12
    }
    fn default_pad() -> i64 {
        1
    }
}

/// `OPTConfig` (decoder-only, learned positions with an offset of 2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OptConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub ffn_dim: i64,
    pub num_attention_heads: i64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_true")]
    pub do_layer_norm_before: bool,
    #[serde(default)]
    pub word_embed_proj_dim: Option<i64>,
    #[serde(default = "OptConfig::default_act")]
    pub activation_function: String,
    #[serde(default = "OptConfig::default_pad")]
    pub pad_token_id: i64,
    #[serde(default = "default_true")]
    pub enable_bias: bool,
    #[serde(default = "default_true")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default, rename = "_remove_final_layer_norm")]
    pub remove_final_layer_norm: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

impl OptConfig {
    fn default_act() -> String {
        "relu".into()
    }
    fn default_pad() -> i64 {
        1
    }
    /// Width of the token embedding (= hidden_size unless the checkpoint projects in and out).
    pub fn embed_dim(&self) -> i64 {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }
    /// OPT keeps a final LayerNorm only in its pre-LN variants (transformers' `OPTDecoder`).
    pub fn has_final_layer_norm(&self) -> bool {
        self.do_layer_norm_before && !self.remove_final_layer_norm
    }
}

/// `LlamaConfig` (RMSNorm, RoPE, GQA, SwiGLU).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "LlamaConfig::default_act")]
    pub hidden_act: String,
    #[serde(default = "LlamaConfig::default_eps")]
    pub rms_norm_eps: f64,
    /// transformers < 5 writes `rope_theta` at the top level ...
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// ... transformers >= 5 writes `rope_parameters: {rope_theta, rope_type}`.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "LlamaConfig::default_max_pos")]
    pub max_position_embeddings: i64,
}

impl LlamaConfig {
    fn default_act() -> String {
        "silu".into()
    }
    fn default_eps() -> f64 {
        1e-6
    }
    fn default_max_pos() -> i64 {
        2048
    }
    /// Number of key/value heads (GQA); equals the query heads when absent.
    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Per-head width.
    pub fn head_width(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    /// RoPE base, from either config layout (default 10000 as in transformers).
    pub fn rope_base(&self) -> f64 {
        if let Some(theta) = self.rope_theta {
            return theta;
        }
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
            .unwrap_or(10000.0)
    }
}

/// A parsed `config.json` of one of the supported families.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Roberta(RobertaConfig),
    Opt(OptConfig),
    Llama(LlamaConfig),
}

impl ModelConfig {
    /// Parse a config from JSON text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self> {
        let json_err = |source| ModelError::Json {
            path: origin.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(json_err)?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("<missing>");
        let config = match model_type {
            "roberta" => Self::Roberta(serde_json::from_value(value.clone()).map_err(json_err)?),
            "opt" => Self::Opt(serde_json::from_value(value.clone()).map_err(json_err)?),
            "llama" => Self::Llama(serde_json::from_value(value.clone()).map_err(json_err)?),
            other => {
                return Err(ModelError::UnsupportedModelType {
                    path: origin.to_path_buf(),
                    model_type: other.to_string(),
                })
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Read `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// The `model_type` string.
    pub fn model_type(&self) -> &'static str {
        match self {
            Self::Roberta(_) => "roberta",
            Self::Opt(_) => "opt",
            Self::Llama(_) => "llama",
        }
    }

    /// Vocabulary size (rows of the output matrix).
    pub fn vocab_size(&self) -> i64 {
        match self {
            Self::Roberta(c) => c.vocab_size,
            Self::Opt(c) => c.vocab_size,
            Self::Llama(c) => c.vocab_size,
        }
    }

    /// Reject configurations this implementation does not compute faithfully.
    pub fn validate(&self) -> Result<()> {
        let unsupported = |field, value: String, reason| {
            Err(ModelError::UnsupportedConfig {
                field,
                value,
                reason,
            })
        };
        let positive = |field: &'static str, value: i64| {
            if value <= 0 {
                unsupported(field, value.to_string(), "must be positive")
            } else {
                Ok(())
            }
        };
        match self {
            Self::Roberta(c) => {
                positive("vocab_size", c.vocab_size)?;
                positive("hidden_size", c.hidden_size)?;
                positive("num_attention_heads", c.num_attention_heads)?;
                if c.hidden_size % c.num_attention_heads != 0 {
                    return unsupported(
                        "hidden_size",
                        c.hidden_size.to_string(),
                        "not divisible by num_attention_heads",
                    );
                }
                if c.hidden_act != "gelu" {
                    return unsupported(
                        "hidden_act",
                        c.hidden_act.clone(),
                        "only gelu is implemented",
                    );
                }
                if let Some(kind) = &c.position_embedding_type {
                    if kind != "absolute" {
                        return unsupported(
                            "position_embedding_type",
                            kind.clone(),
                            "only absolute positions are implemented",
                        );
                    }
                }
            }
            Self::Opt(c) => {
                positive("vocab_size", c.vocab_size)?;
                positive("hidden_size", c.hidden_size)?;
                positive("num_attention_heads", c.num_attention_heads)?;
                if c.hidden_size % c.num_attention_heads != 0 {
                    return unsupported(
                        "hidden_size",
                        c.hidden_size.to_string(),
                        "not divisible by num_attention_heads",
                    );
                }
                if !matches!(c.activation_function.as_str(), "relu" | "gelu") {
                    return unsupported(
                        "activation_function",
                        c.activation_function.clone(),
                        "only relu and gelu are implemented",
                    );
                }
                if !c.layer_norm_elementwise_affine {
                    return unsupported(
                        "layer_norm_elementwise_affine",
                        "false".into(),
                        "only affine LayerNorms are implemented",
                    );
                }
                if !c.tie_word_embeddings {
                    return unsupported(
                        "tie_word_embeddings",
                        "false".into(),
                        "OPT's LM head is tied to embed_tokens",
                    );
                }
            }
            Self::Llama(c) => {
                positive("vocab_size", c.vocab_size)?;
                positive("hidden_size", c.hidden_size)?;
                positive("num_attention_heads", c.num_attention_heads)?;
                positive("num_key_value_heads", c.kv_heads())?;
                if c.num_attention_heads % c.kv_heads() != 0 {
                    return unsupported(
                        "num_key_value_heads",
                        c.kv_heads().to_string(),
                        "must divide num_attention_heads",
                    );
                }
                if c.head_width() % 2 != 0 {
                    return unsupported(
                        "head_dim",
                        c.head_width().to_string(),
                        "RoPE needs it even",
                    );
                }
                if c.hidden_act != "silu" {
                    return unsupported(
                        "hidden_act",
                        c.hidden_act.clone(),
                        "only silu is implemented",
                    );
                }
                let scaled = |v: &serde_json::Value| {
                    let kind = v
                        .get("rope_type")
                        .or_else(|| v.get("type"))
                        .and_then(|t| t.as_str())
                        .unwrap_or("default");
                    kind != "default"
                };
                for (field, value) in [
                    ("rope_scaling", &c.rope_scaling),
                    ("rope_parameters", &c.rope_parameters),
                ] {
                    if let Some(v) = value {
                        if !v.is_null() && scaled(v) {
                            return unsupported(
                                field,
                                v.to_string(),
                                "only unscaled RoPE is implemented",
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Number of scalar parameters a model of this configuration holds (tied matrices counted
    /// once), computed from the shapes without building it.
    pub fn parameter_count(&self) -> i64 {
        match self {
            Self::Roberta(c) => {
                let h = c.hidden_size;
                let embeddings =
                    (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * h + 2 * h;
                let attention = 4 * (h * h + h) + 2 * h;
                let ffn = 2 * h * c.intermediate_size + c.intermediate_size + h + 2 * h;
                let head = h * h + h + 2 * h + c.vocab_size;
                embeddings + c.num_hidden_layers * (attention + ffn) + head
            }
            Self::Opt(c) => {
                let (h, e) = (c.hidden_size, c.embed_dim());
                let bias = i64::from(c.enable_bias);
                let mut total = c.vocab_size * e + (c.max_position_embeddings + 2) * h;
                if e != h {
                    total += 2 * e * h;
                }
                if c.has_final_layer_norm() {
                    total += 2 * h;
                }
                let layer =
                    4 * (h * h + bias * h) + 2 * h * c.ffn_dim + bias * (c.ffn_dim + h) + 4 * h;
                total + c.num_hidden_layers * layer
            }
            Self::Llama(c) => {
                let h = c.hidden_size;
                let d = c.head_width();
                let (q, kv) = (c.num_attention_heads * d, c.kv_heads() * d);
                let attention_bias = if c.attention_bias { q + 2 * kv + h } else { 0 };
                let mlp_bias = if c.mlp_bias {
                    2 * c.intermediate_size + h
                } else {
                    0
                };
                let layer = h * (q + 2 * kv)
                    + q * h
                    + attention_bias
                    + 3 * h * c.intermediate_size
                    + mlp_bias
                    + 2 * h;
                let head = if c.tie_word_embeddings {
                    0
                } else {
                    c.vocab_size * h
                };
                c.vocab_size * h + c.num_hidden_layers * layer + h + head
            }
        }
    }
}
