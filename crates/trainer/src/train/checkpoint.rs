//! Periodic checkpoints, written atomically: the trained tensors as safetensors (every
//! parameter of a full-model run; only the adapter's on a frozen base, whose weights are
//! re-read from the model's own checkpoint), extra
//! tensors (proximal anchor, DP-ZOPO mask, AdamW moments) as safetensors, and a JSON state
//! (step, metrics so far, ledger, configuration). Random streams are keyed by (seed, step), so
//! no generator state needs saving.
//!
//! Layout: `<dir>/step-<step>/{weights.safetensors, extra.safetensors, state.json}` and a
//! `<dir>/latest` file naming the newest complete one. A checkpoint is built in a temporary
//! directory, renamed into place, and only then `latest` is replaced (temp file + rename), so a
//! `kill -9` at any moment leaves the previous checkpoint usable. `checksums.json` holds the
//! SHA-256 of every other file of the checkpoint; [`latest`] verifies them, so an edited step or
//! damaged weights are refused with a hint instead of resuming into wrong results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::config::TrainConfig;
use super::error::{Result, TrainError};
use super::record::{EvalMetric, PrivacyLedger, StepMetric};

/// Version of the state layout.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Layout version.
    pub format_version: u32,
    /// Configuration of the run.
    pub config: TrainConfig,
    /// Steps completed.
    pub step: u64,
    /// Stage of the last completed step.
    pub stage: u64,
    /// Per-step metrics so far.
    pub steps: Vec<StepMetric>,
    /// Dev evaluations so far.
    pub dev: Vec<EvalMetric>,
    /// Privacy ledger so far.
    pub ledger: PrivacyLedger,
    /// AdamW steps taken (full fine-tuning).
    pub adam_steps: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (the workspace's one atomic writer).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_file::write(path, bytes).map_err(io_err(path))
}

/// The files a checksum covers, in a checkpoint directory.
const CHECKSUMMED: [&str; 3] = ["weights.safetensors", "extra.safetensors", "state.json"];
/// The checksum file of a checkpoint directory.
const CHECKSUMS: &str = "checksums.json";

/// Lower-case hex SHA-256 of a file's bytes, streamed.
fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// SHA-256 of each present file of `dir` among [`CHECKSUMMED`].
fn checksums(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for name in CHECKSUMMED {
        let path = dir.join(name);
        if path.exists() {
            sums.insert(name.to_string(), sha256_file(&path)?);
        }
    }
    Ok(sums)
}

/// Verifies `dir` against its `checksums.json`: every listed file present with its digest, and
/// no checksummed file unlisted.
fn verify_checksums(dir: &Path) -> Result<()> {
    let corrupt = |file: &str, reason: String| TrainError::CheckpointCorrupt {
        path: dir.to_path_buf(),
        file: file.to_string(),
        reason,
    };
    let path = dir.join(CHECKSUMS);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| corrupt(CHECKSUMS, format!("cannot read it: {e}")))?;
    let expected: BTreeMap<String, String> = serde_json::from_str(&text)
        .map_err(|e| corrupt(CHECKSUMS, format!("not valid JSON: {e}")))?;
    let found = checksums(dir)?;
    for name in CHECKSUMMED {
        match (expected.get(name), found.get(name)) {
            (Some(want), Some(got)) if want != got => {
                return Err(corrupt(name, format!("sha256 {got}, expected {want}")))
            }
            (Some(_), None) => return Err(corrupt(name, "the file is missing".into())),
            (None, Some(_)) => return Err(corrupt(name, "the file is not listed".into())),
            _ => {}
        }
    }
    Ok(())
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:010}")
}

/// The step of the checkpoint `root/latest` names, read from the pointer alone (no checksum
/// is verified, no state read: [`latest`] does that when the run resumes); `None` without a
/// pointer or with one that names no `step-<n>`. For planning, e.g. the steps a cell has left.
pub fn latest_step(root: &Path) -> Option<u64> {
    let name = std::fs::read_to_string(root.join("latest")).ok()?;
    name.trim().strip_prefix("step-")?.parse().ok()
}

/// Saves a checkpoint under `root` and points `latest` at it; older ones are removed.
/// `weights` are the trained tensors (`TrainableParams::named`).
pub fn save(
    root: &Path,
    weights: &[(String, Tensor)],
    state: &CheckpointState,
    extra: &[(String, Tensor)],
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let name = step_dir_name(state.step);
    let final_dir = root.join(&name);
    let temporary = root.join(format!(".{name}.tmp"));
    if temporary.exists() {
        std::fs::remove_dir_all(&temporary).map_err(io_err(&temporary))?;
    }
    std::fs::create_dir_all(&temporary).map_err(io_err(&temporary))?;
    Tensor::write_safetensors(weights, temporary.join("weights.safetensors"))?;
    if !extra.is_empty() {
        Tensor::write_safetensors(extra, temporary.join("extra.safetensors"))?;
    }
    let state_path = temporary.join("state.json");
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::Format {
        path: state_path.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&state_path, text.as_bytes())?;
    let sums =
        serde_json::to_string_pretty(&checksums(&temporary)?).map_err(|e| TrainError::Format {
            path: temporary.join(CHECKSUMS),
            reason: e.to_string(),
        })?;
    write_atomically(&temporary.join(CHECKSUMS), sums.as_bytes())?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io_err(&final_dir))?;
    }
    std::fs::rename(&temporary, &final_dir).map_err(io_err(&final_dir))?;
    write_atomically(&root.join("latest"), name.as_bytes())?;
    // Older checkpoints are no longer needed once `latest` names this one.
    for entry in std::fs::read_dir(root).map_err(io_err(root))?.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if entry_name.starts_with("step-") && entry_name != name {
            std::fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
        }
    }
    Ok(final_dir)
}

/// The newest complete checkpoint under `root`, if any: its directory and state.
pub fn latest(root: &Path) -> Result<Option<(PathBuf, CheckpointState)>> {
    let pointer = root.join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).map_err(io_err(&pointer))?;
    let dir = root.join(name.trim());
    verify_checksums(&dir)?;
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| TrainError::Format {
        path: state_path.clone(),
        reason: e.to_string(),
    })?;
    if state.format_version != FORMAT_VERSION {
        return Err(TrainError::Format {
            path: state_path,
            reason: format!(
                "format_version {} (this build reads {FORMAT_VERSION})",
                state.format_version
            ),
        });
    }
    Ok(Some((dir, state)))
}

/// The extra tensors of a checkpoint (empty when none were saved).
pub fn load_extra(dir: &Path) -> Result<Vec<(String, Tensor)>> {
    let path = dir.join("extra.safetensors");
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(Tensor::read_safetensors(&path)?)
}

/// Copies a checkpoint's `weights.safetensors` into the trained tensors `weights` (in place).
/// The file must hold exactly these names with their shapes: a checkpoint of another model or
/// adapter is refused, naming the first difference.
pub fn load_weights(dir: &Path, weights: &[(String, Tensor)]) -> Result<()> {
    let path = dir.join("weights.safetensors");
    let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)?.into_iter().collect();
    let mismatch = |reason: String| TrainError::Format {
        path: path.clone(),
        reason,
    };
    if let Some(extra) = saved
        .keys()
        .find(|name| !weights.iter().any(|(n, _)| n == *name))
    {
        return Err(mismatch(format!(
            "holds {extra}, which this run does not train"
        )));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, tensor) in weights {
            let value = saved
                .get(name)
                .ok_or_else(|| mismatch(format!("has no tensor {name}")))?;
            if value.size() != tensor.size() {
                return Err(mismatch(format!(
                    "{name} is {:?}, the model's is {:?}",
                    value.size(),
                    tensor.size()
                )));
            }
            tensor.shallow_clone().f_copy_(value)?;
        }
        Ok(())
    })
}
