//! One labelled example and the train/dev/test splits of a task.

use std::path::Path;

use super::error::{DataError, Result};

/// A labelled example: named text fields (`sent_0`, `sent_1` for LM-BFF tasks; `premise`,
/// `passage`... for SuperGLUE) that a template refers to, plus the gold label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// `(name, text)` pairs, in the order the reader produced them.
    pub fields: Vec<(String, String)>,
    /// Index of the gold label in the task's label list (for multiple choice: index of the
    /// correct candidate).
    pub label: usize,
    /// Candidate continuations for multiple-choice tasks (COPA); empty for classification.
    pub candidates: Vec<String>,
}

impl Example {
    /// A classification example.
    pub fn new(fields: Vec<(String, String)>, label: usize) -> Self {
        Self {
            fields,
            label,
            candidates: Vec::new(),
        }
    }

    /// The text of field `name`, if the example has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, text)| text.as_str())
    }
}

/// The three splits of one task instance (one k and seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splits {
    /// Training examples.
    pub train: Vec<Example>,
    /// Development examples (model selection).
    pub dev: Vec<Example>,
    /// Test examples.
    pub test: Vec<Example>,
}

/// At most `max` of `items`, drawn uniformly without replacement with a ChaCha8 generator seeded
/// with `seed`, in their original order. Evaluation caps use this instead of "the first n",
/// because LM-BFF's k-shot dev files are grouped by label (the first n would be one class).
pub fn seeded_subsample<T>(items: Vec<T>, max: usize, seed: u64) -> Vec<T> {
    use rand::SeedableRng;
    if items.len() <= max {
        return items;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut keep = rand::seq::index::sample(&mut rng, items.len(), max).into_vec();
    keep.sort_unstable();
    let mut keep = keep.into_iter().peekable();
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| (keep.next_if_eq(&i).is_some()).then_some(item))
        .collect()
}

/// The lines of a text file, `\r\n` or `\n` terminated, each checked to be UTF-8; a leading
/// byte-order mark is dropped. Returns `(1-based line number, text)`.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read, [`DataError::BadUtf8`] naming the first
/// invalid line.
pub fn read_lines(path: &Path) -> Result<Vec<(u64, String)>> {
    let text = read_utf8(path)?;
    Ok(text
        .split('\n')
        .enumerate()
        .map(|(i, line)| {
            (
                i as u64 + 1,
                line.strip_suffix('\r').unwrap_or(line).to_string(),
            )
        })
        .filter(|(_, line)| !line.is_empty())
        .collect())
}

/// The whole file as UTF-8 (a leading byte-order mark dropped).
///
/// # Errors
/// [`DataError::Io`], or [`DataError::BadUtf8`] with the line of the first invalid byte.
pub fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text
            .strip_prefix('\u{feff}')
            .map(str::to_string)
            .unwrap_or(text)),
        Err(error) => {
            let valid_up_to = error.utf8_error().valid_up_to();
            let bytes = error.as_bytes();
            let line = 1 + bytes[..valid_up_to].iter().filter(|&&b| b == b'\n').count() as u64;
            Err(DataError::BadUtf8 {
                path: path.to_path_buf(),
                line,
            })
        }
    }
}

/// Fails with [`DataError::EmptySplit`] when `examples` is empty.
pub(crate) fn non_empty(examples: Vec<Example>, path: &Path) -> Result<Vec<Example>> {
    if examples.is_empty() {
        Err(DataError::EmptySplit {
            path: path.to_path_buf(),
        })
    } else {
        Ok(examples)
    }
}

#[cfg(test)]
mod tests {
    use super::seeded_subsample;

    #[test]
    fn seeded_subsample_keeps_order_and_mixes_grouped_labels() {
        // A label-grouped split (as LM-BFF's dev files are): 100 of class 0, then 100 of class 1.
        let items: Vec<(usize, usize)> = (0..200).map(|i| (i, i / 100)).collect();
        let picked = seeded_subsample(items.clone(), 50, 42);
        assert_eq!(picked.len(), 50);
        assert!(picked.windows(2).all(|w| w[0].0 < w[1].0), "order kept");
        let ones = picked.iter().filter(|(_, label)| *label == 1).count();
        // Hypergeometric(200, 100, 50): P(ones outside 10..=40) < 1e-6.
        assert!((10..=40).contains(&ones), "class 1 count {ones} of 50");
        assert_eq!(
            picked,
            seeded_subsample(items.clone(), 50, 42),
            "deterministic"
        );
        assert_ne!(
            picked,
            seeded_subsample(items.clone(), 50, 43),
            "seed matters"
        );
        assert_eq!(
            seeded_subsample(items.clone(), 500, 42),
            items,
            "short input kept whole"
        );
    }
}
