//! The task registry: `experiments/tasks.toml` parsed into [`TaskSpec`]s (file layout, labels,
//! label words, templates and truncation limits of every task). The trainer does not know where
//! that file lives: the caller passes its text ([`TaskRegistry::parse`]) or its path
//! ([`TaskRegistry::from_file`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::{DataError, Result};

/// Which reader turns the task's files into [`super::Example`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReaderKind {
    /// LM-BFF layout: `k-shot-1k-test/<dir>/<k>-<seed>/` or `original/<dir>/`.
    LmBff,
    /// SuperGLUE jsonl: `superglue/<dir>/{train,val}.jsonl`.
    Superglue,
    /// Pang & Lee sentence polarity csv (stand-in).
    PangLee,
    /// VADER movie review snippets with mean ratings (stand-in, derived classes).
    Vader,
    /// BBC News, one directory per topic (stand-in).
    Bbc,
}

/// Column layout of LM-BFF files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// GLUE tsv: a header line, columns split on TAB, no quoting.
    Tsv,
    /// pandas csv: no header, RFC 4180 quoting.
    Csv,
}

/// File names of the k-shot splits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFiles {
    /// Training split.
    pub train: String,
    /// Development split.
    pub dev: String,
    /// Test split.
    pub test: String,
}

/// File names of the full original data.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalFiles {
    /// The file the k-shot train and dev sets are sampled from.
    pub train: String,
    /// The evaluation file the test set is drawn from.
    pub test: String,
}

/// One task of `experiments/tasks.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The reader.
    pub reader: ReaderKind,
    /// Directory name under the reader's root (spelled as the data spells it).
    pub dir: String,
    /// LM-BFF only: file format.
    pub format: Option<FileFormat>,
    /// LM-BFF only: 0-based columns of the sentences (`sent_0`, `sent_1`).
    #[serde(default)]
    pub text_columns: Vec<i64>,
    /// LM-BFF only: 0-based label column; negative counts from the end.
    pub label_column: Option<i64>,
    /// LM-BFF tsv only: rows may hold more or fewer columns than the header (SNLI carries one
    /// to five annotator labels before `gold_label`); otherwise every row must have exactly the
    /// header's columns.
    #[serde(default)]
    pub variable_columns: bool,
    /// LM-BFF only: names of the pre-generated split files.
    pub files: Option<SplitFiles>,
    /// LM-BFF only: names of the original files (absent when only the splits exist).
    pub original: Option<OriginalFiles>,
    /// SuperGLUE only: dev examples taken from the end of the sampled training set.
    pub num_dev: Option<usize>,
    /// VADER only: bin edges of the mean rating (class = number of edges <= rating).
    #[serde(default)]
    pub rating_bin_edges: Vec<f64>,
    /// Labels as written in the files, in class order.
    pub labels: Vec<String>,
    /// Label words for masked LMs (and for decoders unless `decoder_label_words` is given).
    pub label_words: Vec<String>,
    /// Label words for decoders when they differ (e.g. no leading space after a newline).
    pub decoder_label_words: Option<Vec<String>>,
    /// LM-BFF template for masked LMs.
    pub mlm_template: Option<String>,
    /// Text template for decoders; ends right before the label word.
    pub decoder_template: String,
    /// Multiple choice only: text put before each candidate continuation.
    pub candidate_prefix: Option<String>,
    /// Maximum sequence length in tokens, special tokens included.
    pub max_length: usize,
    /// Token limit for `sent_0`.
    pub first_sent_limit: Option<usize>,
    /// Token limit for the other sentences.
    pub other_sent_limit: Option<usize>,
}

impl TaskSpec {
    /// True for multiple-choice tasks (scored per candidate continuation).
    pub fn is_multiple_choice(&self) -> bool {
        self.candidate_prefix.is_some()
    }

    /// The label words a decoder scores.
    pub fn decoder_words(&self) -> &[String] {
        self.decoder_label_words
            .as_deref()
            .unwrap_or(&self.label_words)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksFile {
    tasks: BTreeMap<String, TaskSpec>,
}

/// All tasks, by name.
#[derive(Debug, Clone)]
pub struct TaskRegistry {
    source_name: String,
    tasks: BTreeMap<String, TaskSpec>,
}

impl TaskRegistry {
    /// The tasks of a tasks file on disk.
    ///
    /// # Errors
    /// [`DataError::Io`], [`DataError::TasksFile`] or [`DataError::TaskSpec`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = super::example::read_utf8(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates tasks-file text.
    ///
    /// # Errors
    /// [`DataError::TasksFile`] for TOML or schema errors, [`DataError::TaskSpec`] for
    /// inconsistent tasks (label and label-word counts, missing fields of a reader).
    pub fn parse(text: &str, source_name: &str) -> Result<Self> {
        let file: TasksFile = toml::from_str(text).map_err(|error| DataError::TasksFile {
            source_name: source_name.to_string(),
            message: error.to_string(),
        })?;
        for (name, spec) in &file.tasks {
            validate(spec).map_err(|message| DataError::TaskSpec {
                source_name: source_name.to_string(),
                task: name.clone(),
                message,
            })?;
        }
        Ok(Self {
            source_name: source_name.to_string(),
            tasks: file.tasks,
        })
    }

    /// The task called `name`.
    ///
    /// # Errors
    /// [`DataError::UnknownTask`] listing the known names.
    pub fn get(&self, name: &str) -> Result<&TaskSpec> {
        self.tasks.get(name).ok_or_else(|| DataError::UnknownTask {
            name: name.to_string(),
            known: self.names(),
        })
    }

    /// The task names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// Where the tasks came from.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }
}

fn validate(spec: &TaskSpec) -> std::result::Result<(), String> {
    if spec.labels.is_empty() {
        return Err("no labels".into());
    }
    if spec.max_length < 2 {
        return Err(format!("max_length = {} is below 2", spec.max_length));
    }
    if spec.is_multiple_choice() {
        if !spec.label_words.is_empty() || spec.decoder_label_words.is_some() {
            return Err("a multiple-choice task has no label words".into());
        }
    } else {
        if spec.label_words.len() != spec.labels.len() {
            return Err(format!(
                "{} labels but {} label_words",
                spec.labels.len(),
                spec.label_words.len()
            ));
        }
        if spec.decoder_words().len() != spec.labels.len() {
            return Err(format!(
                "{} labels but {} decoder_label_words",
                spec.labels.len(),
                spec.decoder_words().len()
            ));
        }
    }
    match spec.reader {
        ReaderKind::LmBff => {
            if spec.format.is_none() || spec.label_column.is_none() || spec.files.is_none() {
                return Err("an lm-bff task needs format, label_column and files".into());
            }
            if spec.text_columns.is_empty() {
                return Err("an lm-bff task needs text_columns".into());
            }
        }
        ReaderKind::Superglue => {
            if spec.num_dev.is_none() {
                return Err("a superglue task needs num_dev".into());
            }
        }
        ReaderKind::Vader => {
            if spec.rating_bin_edges.len() + 1 != spec.labels.len() {
                return Err(format!(
                    "{} rating_bin_edges make {} classes, but there are {} labels",
                    spec.rating_bin_edges.len(),
                    spec.rating_bin_edges.len() + 1,
                    spec.labels.len()
                ));
            }
            if spec
                .rating_bin_edges
                .windows(2)
                .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
            {
                return Err("rating_bin_edges must be finite and increasing".into());
            }
        }
        ReaderKind::PangLee | ReaderKind::Bbc => {}
    }
    Ok(())
}

/// Position of `label` in the task's labels.
pub(crate) fn label_index(spec: &TaskSpec, label: &str) -> Option<usize> {
    spec.labels.iter().position(|known| known == label)
}
