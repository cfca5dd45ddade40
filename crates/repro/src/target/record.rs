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
    /// How `--tune` chose this run's settings, with the privacy of the whole procedure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<super::tune::TuningNote>,
}

impl CellRecord {
    /// Reads a record, refusing one whose content checksum fails (`integrity`).
    pub fn read(path: &Path) -> Result<CellRecord> {
        Ok(super::integrity::read_verified(path)?.0)
    }

    /// Writes atomically with a content checksum (`integrity`).
    pub fn write(&self, path: &Path) -> Result<()> {
        super::integrity::write_sealed(path, self)
    }
}

/// All records under `runs_dir`, sorted by file name: those that pass their checksum (or carry
/// none), and one message per record that fails it (never aggregated).
pub fn read_all_checked(runs_dir: &Path) -> Result<(Vec<CellRecord>, Vec<String>)> {
    let mut paths: Vec<_> = std::fs::read_dir(runs_dir)
        .with_context(|| format!("no run records in {}", runs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    paths.sort();
    let (mut good, mut failed) = (Vec::new(), Vec::new());
    for p in &paths {
        match CellRecord::read(p) {
            Ok(record) => good.push(record),
            Err(err) => failed.push(format!("{err:#}")),
        }
    }
    Ok((good, failed))
}
