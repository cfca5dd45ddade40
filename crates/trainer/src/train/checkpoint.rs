//! Periodic checkpoints, written atomically: weights as safetensors (`VarStore::save`), extra
//! tensors (proximal anchor, DP-ZOPO mask, AdamW moments) as safetensors, and a JSON state
//! (step, metrics so far, ledger, configuration). Random streams are keyed by (seed, step), so
//! no generator state needs saving.
//!
//! Layout: `<dir>/step-<step>/{weights.safetensors, extra.safetensors, state.json}` and a
//! `<dir>/latest` file naming the newest complete one. A checkpoint is built in a temporary
//! directory, renamed into place, and only then `latest` is replaced (temp file + rename), so a
//! `kill -9` at any moment leaves the previous checkpoint usable.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

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

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    let mut file = std::fs::File::create(&temporary).map_err(io_err(&temporary))?;
    file.write_all(bytes).map_err(io_err(&temporary))?;
    file.sync_all().map_err(io_err(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_err(path))
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:010}")
}

/// Saves a checkpoint under `root` and points `latest` at it; older ones are removed.
pub fn save(
    root: &Path,
    var_store: &VarStore,
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
    var_store.save(temporary.join("weights.safetensors"))?;
    if !extra.is_empty() {
        Tensor::write_safetensors(extra, temporary.join("extra.safetensors"))?;
    }
    let state_path = temporary.join("state.json");
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::Format {
        path: state_path.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&state_path, text.as_bytes())?;
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
