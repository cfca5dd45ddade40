//! SuperGLUE jsonl reader (CB, RTE, BoolQ, WiC, WSC, MultiRC, COPA) and MeZO's large-model
//! sampling protocol (MeZO `large_models/tasks.py::sample_subset` and `run.py`):
//! - train: `np.random.seed(seed)`, `permutation(len(train))[:num_train + num_dev]`; the last
//!   `num_dev` of these are the dev set (500, or 100 for CB and COPA), the rest the training set.
//!   A train file shorter than that is used whole (CB: 250 rows give 150 train + 100 dev);
//! - test: `np.random.seed(0)`, `permutation(len(val))[:1000]` of the official validation file.
//!
//! Fields are named after the json keys (`premise`, `hypothesis`, `passage`...). MultiRC is
//! flattened to one example per (question, answer) pair with fields `paragraph`, `question`,
//! `answer`. COPA is multiple choice: fields `premise` and `connector` ("so" for effect,
//! "because" for cause) and two candidates whose first word is lower-cased unless it is "I"
//! (MeZO `CopaTemplate`, capitalization "correct").

use std::path::Path;

use serde_json::Value;

use super::dir::DataDir;
use super::error::{DataError, Result};
use super::example::{non_empty, read_lines, Example, Splits};
use super::lmbff::numpy_seed;
use super::numpy_rng::NumpyRandomState;
use super::task::{label_index, TaskSpec};

/// MeZO's number of training examples.
pub const NUM_TRAIN: usize = 1000;
/// MeZO's number of test examples (drawn from the validation file).
pub const NUM_TEST: usize = 1000;
/// MeZO's seed for the test draw.
pub const TEST_SEED: u32 = 0;

/// Reads one SuperGLUE jsonl file of the task.
///
/// # Errors
/// [`DataError`] with `file:line` for bad JSON, a missing key or an unknown label.
pub fn read_file(spec: &TaskSpec, path: &Path) -> Result<Vec<Example>> {
    non_empty(parse_rows(spec, path, read_lines(path)?)?, path)
}

/// The examples of some rows (`(line, json)`) of `path`.
fn parse_rows(spec: &TaskSpec, path: &Path, rows: Vec<(u64, String)>) -> Result<Vec<Example>> {
    let mut examples = Vec::new();
    for (line, text) in rows {
        let value: Value = serde_json::from_str(&text).map_err(|error| DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!("invalid JSON: {error}"),
        })?;
        let row = RowContext {
            spec,
            path,
            line,
            value: &value,
        };
        row.examples(&mut examples)?;
    }
    Ok(examples)
}

/// The splits of a SuperGLUE task for training seed `seed` (module docs).
///
/// # Errors
/// [`DataError::NotFound`] when `train.jsonl` or `val.jsonl` is missing (the FewGLUE 32-example
/// files are not the full training set and are never used in their place).
pub fn load(spec: &TaskSpec, data: &DataDir, seed: u64) -> Result<Splits> {
    let dir = data.superglue(&spec.dir);
    let train_path = dir.join("train.jsonl");
    let val_path = dir.join("val.jsonl");
    for path in [&train_path, &val_path] {
        if !path.is_file() {
            return Err(DataError::NotFound {
                path: path.clone(),
                hint: "MeZO's protocol samples from the full SuperGLUE train and val files \
                       (fewglue_train32.jsonl is not the full train set)"
                    .into(),
            });
        }
    }
    let num_dev = spec.num_dev.unwrap_or(0);
    let pool = read_file(spec, &train_path)?;
    let mut sampled = subset(pool, numpy_seed(&spec.dir, seed)?, NUM_TRAIN + num_dev);
    let dev = sampled.split_off(sampled.len().saturating_sub(num_dev));
    let test = subset(read_file(spec, &val_path)?, TEST_SEED, NUM_TEST);
    Ok(Splits {
        train: non_empty(sampled, &train_path)?,
        dev: non_empty(dev, &train_path)?,
        test: non_empty(test, &val_path)?,
    })
}

/// What to do when a SuperGLUE task has no `train.jsonl` (BoolQ, WiC, WSC, MultiRC and COPA ship
/// only their validation file in many copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WithoutTrain {
    /// An error naming the missing file (MeZO's protocol needs the train file).
    #[default]
    Refuse,
    /// Draw disjoint train, dev and test sets from `val.jsonl` ([`load_from_validation`]).
    SplitValidation,
}

/// The splits of a task that has only `val.jsonl`, all three drawn from it and disjoint:
/// - the rows (json lines: a MultiRC row is a whole paragraph with its questions, so no paragraph
///   is on both sides), without repeated rows, are permuted with MeZO's test seed; test takes rows in that order until it
///   has [`NUM_TEST`] examples or half the rows;
/// - the remaining rows are the training pool, sampled as MeZO samples a train file (seeded by the
///   training seed, [`NUM_TRAIN`] + dev), with the dev set capped at a quarter of the pool so a
///   small file (WSC, COPA: about 100 rows) still trains on most of it.
///
/// # Errors
/// [`DataError::NotFound`] without `val.jsonl`; [`DataError::Malformed`] (file:line) for a bad
/// row; an empty split is an error naming the file.
pub fn load_from_validation(spec: &TaskSpec, data: &DataDir, seed: u64) -> Result<Splits> {
    let val_path = data.superglue(&spec.dir).join("val.jsonl");
    if !val_path.is_file() {
        return Err(DataError::NotFound {
            path: val_path,
            hint: "the validation-only split draws train, dev and test from val.jsonl".into(),
        });
    }
    // One entry per row; a row whose examples repeat an earlier row's (8 of WSC's 104 rows: the
    // same text and spans, differing only in `idx` or span offsets) is dropped, or the same
    // prompt could sit on both sides.
    let mut rows: Vec<Vec<Example>> = Vec::new();
    for row in read_lines(&val_path)? {
        let examples = parse_rows(spec, &val_path, vec![row])?;
        if !rows.contains(&examples) {
            rows.push(examples);
        }
    }
    let order = NumpyRandomState::seed(TEST_SEED).permutation(rows.len());
    let mut slots: Vec<Option<Vec<Example>>> = rows.into_iter().map(Some).collect();
    // Test: rows in MeZO's test order until NUM_TEST examples or half the rows (a file of one
    // example per row and no repeats, e.g. BoolQ, gets exactly MeZO's test set).
    let mut test = Vec::new();
    let mut test_rows = 0;
    for &i in &order[..order.len() / 2] {
        if test.len() >= NUM_TEST {
            break;
        }
        test.extend(slots[i].take().unwrap_or_default());
        test_rows += 1;
    }
    // The last MultiRC paragraph may overshoot: its surplus answers are dropped, not reused.
    test.truncate(NUM_TEST);
    let pool: Vec<Example> = order[test_rows..]
        .iter()
        .filter_map(|&i| slots[i].take())
        .flatten()
        .collect();
    let num_dev = spec.num_dev.unwrap_or(0).min(pool.len() / 4);
    let mut sampled = subset(pool, numpy_seed(&spec.dir, seed)?, NUM_TRAIN + num_dev);
    let dev = sampled.split_off(sampled.len().saturating_sub(num_dev));
    Ok(Splits {
        train: non_empty(sampled, &val_path)?,
        dev: non_empty(dev, &val_path)?,
        test: non_empty(test, &val_path)?,
    })
}

/// MeZO `sample_subset`: the first `num` of a seeded permutation.
fn subset(examples: Vec<Example>, seed: u32, num: usize) -> Vec<Example> {
    let order = NumpyRandomState::seed(seed).permutation(examples.len());
    let mut slots: Vec<Option<Example>> = examples.into_iter().map(Some).collect();
    order
        .into_iter()
        .take(num)
        .map(|i| {
            slots[i]
                .take()
                .expect("invariant: a permutation visits each index once")
        })
        .collect()
}

struct RowContext<'a> {
    spec: &'a TaskSpec,
    path: &'a Path,
    line: u64,
    value: &'a Value,
}

impl RowContext<'_> {
    fn malformed(&self, message: String) -> DataError {
        DataError::Malformed {
            path: self.path.to_path_buf(),
            line: self.line,
            message,
        }
    }

    fn text(&self, object: &Value, key: &str) -> Result<String> {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.malformed(format!("missing string field {key:?}")))
    }

    /// The label as the task lists it: JSON strings as they are, booleans as "true"/"false",
    /// integers in decimal.
    fn label(&self, object: &Value) -> Result<usize> {
        let raw = object
            .get("label")
            .ok_or_else(|| self.malformed("missing field \"label\"".into()))?;
        let label = match raw {
            Value::String(text) => text.clone(),
            Value::Bool(flag) => flag.to_string(),
            Value::Number(number) => number.to_string(),
            other => {
                return Err(
                    self.malformed(format!("label {other} is not a string, bool or integer"))
                )
            }
        };
        label_index(self.spec, &label).ok_or_else(|| DataError::UnknownLabel {
            path: self.path.to_path_buf(),
            line: self.line,
            label,
            expected: self.spec.labels.clone(),
        })
    }

    fn examples(&self, out: &mut Vec<Example>) -> Result<()> {
        let value = self.value;
        let field = |name: &str, text: String| (name.to_string(), text);
        match self.spec.dir.as_str() {
            "CB" | "RTE" => out.push(Example::new(
                vec![
                    field("premise", self.text(value, "premise")?),
                    field("hypothesis", self.text(value, "hypothesis")?),
                ],
                self.label(value)?,
            )),
            "BoolQ" => out.push(Example::new(
                vec![
                    field("passage", self.text(value, "passage")?),
                    field("question", self.text(value, "question")?),
                ],
                self.label(value)?,
            )),
            "WiC" => out.push(Example::new(
                vec![
                    field("word", self.text(value, "word")?),
                    field("sentence1", self.text(value, "sentence1")?),
                    field("sentence2", self.text(value, "sentence2")?),
                ],
                self.label(value)?,
            )),
            "WSC" => {
                let target = value
                    .get("target")
                    .ok_or_else(|| self.malformed("missing field \"target\"".into()))?;
                out.push(Example::new(
                    vec![
                        field("text", self.text(value, "text")?),
                        field("span1_text", self.text(target, "span1_text")?),
                        field("span2_text", self.text(target, "span2_text")?),
                    ],
                    self.label(value)?,
                ));
            }
            "MultiRC" => {
                let passage = value
                    .get("passage")
                    .ok_or_else(|| self.malformed("missing field \"passage\"".into()))?;
                let paragraph = self.text(passage, "text")?;
                let questions = passage
                    .get("questions")
                    .and_then(Value::as_array)
                    .ok_or_else(|| self.malformed("missing array passage.questions".into()))?;
                for question in questions {
                    let question_text = self.text(question, "question")?;
                    let answers = question
                        .get("answers")
                        .and_then(Value::as_array)
                        .ok_or_else(|| self.malformed("missing array answers".into()))?;
                    for answer in answers {
                        out.push(Example::new(
                            vec![
                                field("paragraph", paragraph.clone()),
                                field("question", question_text.clone()),
                                field("answer", self.text(answer, "text")?),
                            ],
                            self.label(answer)?,
                        ));
                    }
                }
            }
            "COPA" => {
                let connector = match self.text(value, "question")?.as_str() {
                    "effect" => "so",
                    "cause" => "because",
                    other => {
                        return Err(self.malformed(format!(
                            "question {other:?} is neither \"effect\" nor \"cause\""
                        )))
                    }
                };
                let candidates = ["choice1", "choice2"]
                    .iter()
                    .map(|key| {
                        self.text(value, key)
                            .map(|choice| lower_first_word(&choice))
                    })
                    .collect::<Result<Vec<_>>>()?;
                out.push(Example {
                    fields: vec![
                        field("premise", self.text(value, "premise")?),
                        field("connector", connector.to_string()),
                    ],
                    label: self.label(value)?,
                    candidates,
                });
            }
            other => {
                return Err(DataError::TaskSpec {
                    source_name: "tasks".into(),
                    task: other.to_string(),
                    message: "no SuperGLUE reader for this directory (CB, RTE, BoolQ, WiC, WSC, \
                              MultiRC, COPA)"
                        .into(),
                })
            }
        }
        Ok(())
    }
}

/// MeZO COPA "correct" capitalization: lower-case the first word unless it is "I".
fn lower_first_word(choice: &str) -> String {
    let (first, rest) = choice.split_once(' ').unwrap_or((choice, ""));
    let first = if first == "I" {
        first.to_string()
    } else {
        first.to_lowercase()
    };
    if rest.is_empty() && !choice.contains(' ') {
        first
    } else {
        format!("{first} {rest}")
    }
}
