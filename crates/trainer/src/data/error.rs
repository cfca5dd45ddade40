//! Errors of the data pipeline. Every variant names the offending file (with its line when there
//! is one), task, template or value.

use std::path::PathBuf;

/// What went wrong while reading, sampling, templating or tokenising task data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A row does not have the expected shape (missing column, bad number, bad JSON...).
    #[error("{path}:{line}: {message}", path = path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A label that the task does not define.
    #[error("{path}:{line}: unknown label {label:?} (the task's labels are {expected:?})", path = path.display())]
    UnknownLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The label as written in the file.
        label: String,
        /// The labels the task defines.
        expected: Vec<String>,
    },
    /// A line that is not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8", path = path.display())]
    BadUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
    },
    /// A split with no example.
    #[error("{path}: empty split (no example)", path = path.display())]
    EmptySplit {
        /// The file (or directory) of the split.
        path: PathBuf,
    },
    /// A file or directory that should exist does not.
    #[error("{path} not found: {hint}", path = path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A task name that `experiments/tasks.toml` does not define.
    #[error("unknown task {name:?} (known tasks: {known:?})")]
    UnknownTask {
        /// The requested name.
        name: String,
        /// The tasks that are defined.
        known: Vec<String>,
    },
    /// A task definition in the tasks file that cannot be used.
    #[error("tasks file {source_name}, task {task:?}: {message}")]
    TaskSpec {
        /// The tasks file (or `<built-in>`).
        source_name: String,
        /// The task.
        task: String,
        /// What is wrong.
        message: String,
    },
    /// The tasks file is not valid TOML or does not match the schema.
    #[error("tasks file {source_name}: {message}")]
    TasksFile {
        /// The tasks file (or `<built-in>`).
        source_name: String,
        /// The parse error.
        message: String,
    },
    /// The sampling protocol cannot be applied (e.g. asking for more test examples than exist).
    #[error("task {task}: {message}")]
    Sampling {
        /// The task.
        task: String,
        /// What is wrong.
        message: String,
    },
    /// A template that cannot be parsed or rendered.
    #[error("template {template:?}: {message}")]
    Template {
        /// The template text.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// A label word that the tokenizer splits into several tokens (or none).
    #[error(
        "label word {word:?} of task {task} is {} token(s) {tokens:?} for this tokenizer; \
         label words must be exactly one token",
        tokens.len()
    )]
    LabelWordNotOneToken {
        /// The task.
        task: String,
        /// The label word, leading space included.
        word: String,
        /// The tokens it was split into.
        tokens: Vec<String>,
    },
    /// A special token that the model family needs is not in the vocabulary.
    #[error("special token {token:?} ({role}) is not in the tokenizer's vocabulary")]
    MissingSpecialToken {
        /// The token text.
        token: String,
        /// What it is used for (mask, cls, pad...).
        role: &'static str,
    },
    /// An example whose encoding lost its score position (the mask was truncated away) or is
    /// empty.
    #[error("example {index} of task {task}: {message}")]
    Encoding {
        /// The task.
        task: String,
        /// Index of the example in the slice being encoded.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An invalid option value (sampling rate, batch size, max length...).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Its value, formatted.
        value: String,
        /// The valid range.
        reason: &'static str,
    },
    /// libtorch refused to build a tensor.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

/// Result of the data pipeline.
pub type Result<T> = std::result::Result<T, DataError>;
