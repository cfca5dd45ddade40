//! LM-BFF layout reader (SST-2, sst-5, trec, SNLI, MNLI, RTE) and the LM-BFF / MeZO k-shot
//! sampling protocol.
//!
//! Pre-generated MeZO splits are read as they are from `k-shot-1k-test/<TASK>/<k>-<seed>/`
//! (the data folder's `README.md` §2; trec 512 has unequal classes and MNLI has
//! `dev_matched` / `test_matched` / `test_mismatched`: the file names come from
//! `experiments/tasks.toml`). When a split directory is absent, the splits are sampled from
//! `original/<TASK>/` exactly as LM-BFF's `tools/generate_k_shot_data.py` does: seed numpy's
//! legacy generator with the seed, shuffle the training rows, group them by label in first-seen
//! order, take the first k of each label for train and the next k for dev; the test set is the
//! evaluation file, cut to 1000 rows after a shuffle with seed 42 when it is longer.

use std::path::Path;

use super::dir::DataDir;
use super::error::{DataError, Result};
use super::example::{non_empty, read_lines, read_utf8, Example, Splits};
use super::numpy_rng::NumpyRandomState;
use super::task::{label_index, FileFormat, TaskSpec};

/// Size cap of sampled test sets (MeZO's `k-shot-1k-test`).
pub const MAX_TEST_EXAMPLES: usize = 1000;
/// Seed of the test-set draw (MeZO always uses 42).
pub const TEST_SEED: u32 = 42;

/// One row of an LM-BFF file before label lookup.
#[derive(Debug, Clone)]
struct Row {
    line: u64,
    texts: Vec<String>,
    label: String,
}

/// Reads one split file of an LM-BFF task.
///
/// # Errors
/// [`DataError`] naming `path:line` for a missing column, an unknown label or bad UTF-8, and
/// [`DataError::EmptySplit`] for a file without rows.
pub fn read_split(spec: &TaskSpec, path: &Path) -> Result<Vec<Example>> {
    let rows = read_rows(spec, path)?;
    let examples = to_examples(spec, path, rows)?;
    non_empty(examples, path)
}

/// The splits of `task` for `k` examples per class and `seed`: MeZO's pre-generated directory
/// when it exists, else sampled from `original/` with the same protocol.
///
/// # Errors
/// [`DataError::NotFound`] when neither exists, or any reading error.
pub fn load(spec: &TaskSpec, data: &DataDir, k: usize, seed: u64) -> Result<Splits> {
    let split_dir = data.mezo_split(&spec.dir, k, seed);
    if split_dir.is_dir() {
        return load_pregenerated(spec, &split_dir);
    }
    match &spec.original {
        Some(_) if data.original(&spec.dir).is_dir() => sample_from_original(spec, data, k, seed),
        _ => Err(DataError::NotFound {
            path: split_dir,
            hint: format!(
                "no pre-generated split for k={k} seed={seed}, and no original/{} files to \
                 sample it from",
                spec.dir
            ),
        }),
    }
}

/// Reads a pre-generated split directory (`train`, `dev`, `test` files named by the task).
///
/// # Errors
/// As [`read_split`]; the spec must name the split files.
pub fn load_pregenerated(spec: &TaskSpec, split_dir: &Path) -> Result<Splits> {
    let files = spec.files.as_ref().ok_or_else(|| DataError::TaskSpec {
        source_name: "tasks".into(),
        task: spec.dir.clone(),
        message: "no split file names".into(),
    })?;
    Ok(Splits {
        train: read_split(spec, &split_dir.join(&files.train))?,
        dev: read_split(spec, &split_dir.join(&files.dev))?,
        test: read_split(spec, &split_dir.join(&files.test))?,
    })
}

/// Samples the splits from `original/<TASK>/` (LM-BFF protocol, see the module docs).
///
/// # Errors
/// [`DataError::NotFound`] when the task has no original files; reading errors.
pub fn sample_from_original(
    spec: &TaskSpec,
    data: &DataDir,
    k: usize,
    seed: u64,
) -> Result<Splits> {
    let original = spec.original.as_ref().ok_or_else(|| DataError::NotFound {
        path: data.original(&spec.dir),
        hint: "the task defines no original files".into(),
    })?;
    let seed = numpy_seed(&spec.dir, seed)?;
    let train_path = data.original(&spec.dir).join(&original.train);
    let rows = read_rows(spec, &train_path)?;
    let (train_rows, dev_rows) = k_shot_by_label(rows, |row| row.label.clone(), k, seed);
    let test_path = data.original(&spec.dir).join(&original.test);
    let test_rows = cap_test(read_rows(spec, &test_path)?);
    Ok(Splits {
        train: non_empty(to_examples(spec, &train_path, train_rows)?, &train_path)?,
        dev: non_empty(to_examples(spec, &train_path, dev_rows)?, &train_path)?,
        test: non_empty(to_examples(spec, &test_path, test_rows)?, &test_path)?,
    })
}

/// LM-BFF's k-shot draw: shuffle with numpy's legacy generator seeded with `seed`, group by
/// label in first-seen order, take the first `k` of each group for train and the next `k` for
/// dev (fewer when a label runs short, as for trec's ABBR). Output is grouped by label.
pub fn k_shot_by_label<T, L: PartialEq>(
    mut items: Vec<T>,
    label_of: impl Fn(&T) -> L,
    k: usize,
    seed: u32,
) -> (Vec<T>, Vec<T>) {
    NumpyRandomState::seed(seed).shuffle(&mut items);
    let mut groups: Vec<(L, Vec<T>)> = Vec::new();
    for item in items {
        let label = label_of(&item);
        match groups.iter_mut().find(|(known, _)| *known == label) {
            Some((_, members)) => members.push(item),
            None => groups.push((label, vec![item])),
        }
    }
    let mut train = Vec::new();
    let mut dev = Vec::new();
    for (_, members) in groups {
        for (i, item) in members.into_iter().enumerate() {
            if i < k {
                train.push(item);
            } else if i < 2 * k {
                dev.push(item);
            }
        }
    }
    (train, dev)
}

/// The test-set rule of MeZO's `k-shot-1k-test`: an evaluation file of at most 1000 rows is
/// kept as is; a longer one is shuffled with seed 42 and cut to its first 1000 rows (for csv
/// tasks this is pandas' `sample(n=1000, random_state=42)`, the same permutation).
fn cap_test<T>(mut rows: Vec<T>) -> Vec<T> {
    if rows.len() > MAX_TEST_EXAMPLES {
        NumpyRandomState::seed(TEST_SEED).shuffle(&mut rows);
        rows.truncate(MAX_TEST_EXAMPLES);
    }
    rows
}

/// numpy seeds must lie in `0..2^32`.
pub(crate) fn numpy_seed(task: &str, seed: u64) -> Result<u32> {
    u32::try_from(seed).map_err(|_| DataError::Sampling {
        task: task.to_string(),
        message: format!("seed {seed} is outside numpy's range 0..2^32"),
    })
}

fn read_rows(spec: &TaskSpec, path: &Path) -> Result<Vec<Row>> {
    match spec.format {
        Some(FileFormat::Tsv) => read_tsv_rows(spec, path),
        Some(FileFormat::Csv) => read_csv_rows(spec, path),
        None => Err(DataError::TaskSpec {
            source_name: "tasks".into(),
            task: spec.dir.clone(),
            message: "an lm-bff task needs a format".into(),
        }),
    }
}

fn column<'a>(fields: &[&'a str], index: i64) -> Option<&'a str> {
    let resolved = if index < 0 {
        fields.len().checked_sub(index.unsigned_abs() as usize)?
    } else {
        index as usize
    };
    fields.get(resolved).copied()
}

fn pick_columns(spec: &TaskSpec, path: &Path, line: u64, fields: &[&str]) -> Result<Row> {
    let missing = |index: i64| DataError::Malformed {
        path: path.to_path_buf(),
        line,
        message: format!(
            "missing column {index} (the row has {} columns)",
            fields.len()
        ),
    };
    let label_column = spec.label_column.unwrap_or(-1);
    let label = column(fields, label_column)
        .ok_or_else(|| missing(label_column))?
        .trim()
        .to_string();
    let texts = spec
        .text_columns
        .iter()
        .map(|&index| {
            column(fields, index)
                .map(|text| text.trim_end().to_string())
                .ok_or_else(|| missing(index))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Row { line, texts, label })
}

/// GLUE tsv: a header, then TAB-separated rows (no quoting; LM-BFF splits raw lines).
fn read_tsv_rows(spec: &TaskSpec, path: &Path) -> Result<Vec<Row>> {
    let lines = read_lines(path)?;
    let header = lines
        .first()
        .map_or(0, |(_, text)| text.split('\t').count());
    lines
        .iter()
        .skip(1)
        .map(|(line, text)| {
            let fields: Vec<&str> = text.split('\t').collect();
            if !spec.variable_columns && fields.len() != header {
                return Err(DataError::Malformed {
                    path: path.to_path_buf(),
                    line: *line,
                    message: format!(
                        "{} columns where the header has {header} (a stray TAB?)",
                        fields.len()
                    ),
                });
            }
            pick_columns(spec, path, *line, &fields)
        })
        .collect()
}

/// pandas csv without a header.
fn read_csv_rows(spec: &TaskSpec, path: &Path) -> Result<Vec<Row>> {
    let text = read_utf8(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|error| DataError::Malformed {
            path: path.to_path_buf(),
            line: error.position().map_or(0, |p| p.line()),
            message: error.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let fields: Vec<&str> = record.iter().collect();
        rows.push(pick_columns(spec, path, line, &fields)?);
    }
    Ok(rows)
}

fn to_examples(spec: &TaskSpec, path: &Path, rows: Vec<Row>) -> Result<Vec<Example>> {
    rows.into_iter()
        .map(|row| {
            let label = label_index(spec, &row.label).ok_or_else(|| DataError::UnknownLabel {
                path: path.to_path_buf(),
                line: row.line,
                label: row.label.clone(),
                expected: spec.labels.clone(),
            })?;
            let fields = row
                .texts
                .into_iter()
                .enumerate()
                .map(|(i, text)| (format!("sent_{i}"), text))
                .collect();
            Ok(Example::new(fields, label))
        })
        .collect()
}
