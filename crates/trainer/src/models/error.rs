//! Errors of model construction, checkpoint loading and tokenizer building.

use std::path::PathBuf;

/// Everything that can go wrong while building or loading a model or tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: model_type {model_type:?} is not supported (expected roberta, opt or llama)")]
    UnsupportedModelType { path: PathBuf, model_type: String },
    #[error("config field {field} = {value}: {reason}")]
    UnsupportedConfig {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: tensor {name} has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("{path}: tensor {name} has dtype {dtype}, which the loader does not read")]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: unexpected tensor {name} (no parameter of the model maps to it)")]
    UnexpectedTensor { path: PathBuf, name: String },
    #[error("{path}: checkpoint lacks tensors the model needs: {names:?}")]
    MissingTensors { path: PathBuf, names: Vec<String> },
    #[error("{path}: tensor {name} appears twice (also in {other})")]
    DuplicateTensor {
        path: PathBuf,
        name: String,
        other: PathBuf,
    },
    #[error("{path}: GGUF: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{name:?} is not a published config (known: {known})")]
    UnknownPublished { name: String, known: String },
    #[error("bad input: {0}")]
    BadInput(String),
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, ModelError>;
