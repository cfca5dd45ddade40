//! The JSON record of one finished run: its spec, provenance, metrics and privacy ledger.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What `repro <target>` writes to `results/<target>/<preset>/runs/<stem>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRecord {
    pub target: String,
    pub preset: String,
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    pub seed: u64,
    /// Model as run (e.g. `smollm2-135m`), which may differ from the paper's model.
    pub model: String,
    /// SHA-256 of the fully resolved configuration; a finished record with the same hash is reused.
    pub spec_hash: String,
    /// The fully resolved configuration handed to the trainer.
    pub config: serde_json::Value,
    pub provenance: crate::provenance::Provenance,
    /// Final-iterate test accuracy in percent (the paper reports the last iterate).
    pub test_accuracy: f64,
    /// Dev accuracy of the final iterate, in percent, when a dev split exists.
    pub dev_accuracy: Option<f64>,
    /// Whether the run used the task's real data or a stand-in (and which).
    pub data: String,
    /// Wall time of the run in seconds.
    pub wall_secs: f64,
    /// The trainer's own record: metrics over time and the privacy ledger.
    pub trainer: serde_json::Value,
}

impl CellRecord {
    pub fn read(path: &Path) -> Result<CellRecord> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("malformed run record {}", path.display()))
    }

    /// Write atomically (temp file, then rename) so an interrupted write never leaves half a record.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))
    }
}

/// All records under `runs_dir`, sorted by file name.
pub fn read_all(runs_dir: &Path) -> Result<Vec<CellRecord>> {
    let mut paths: Vec<_> = std::fs::read_dir(runs_dir)
        .with_context(|| format!("no run records in {}", runs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| CellRecord::read(p)).collect()
}
