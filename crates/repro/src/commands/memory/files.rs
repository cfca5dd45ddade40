//! The files of a `repro memory` output folder: `zo_step.csv` (the columns of
//! `results/perf/zo_step.csv`, `commands::perf_table::HEADER`), `details.jsonl` (one JSON object
//! per cell: every measured field, or the error of a failed cell), `cells.log` (the children's
//! stderr), and reading `details.jsonl` back.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use trainer::models::config::PUBLISHED_NAMES;

use super::cell::CellResult;
use crate::commands::perf_table::HEADER;

/// The dtype column: `tf32` for f32 runs whose cuBLAS matmuls use TF32, i.e. under libtorch's
/// `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1` (ATen/Context.h reads it when the context is created;
/// the PyTorch reference script labels its rows the same way).
pub(super) fn dtype_label(dtype: &str) -> String {
    let tf32 = std::env::var("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE").is_ok_and(|v| v == "1");
    if dtype == "f32" && tf32 {
        "tf32".into()
    } else {
        dtype.to_string()
    }
}

/// The model name as written in CSV rows (a config path becomes its parent folder's name).
pub(super) fn model_label(model: &str) -> String {
    if PUBLISHED_NAMES.contains(&model) {
        return model.to_string();
    }
    let path = PathBuf::from(model);
    path.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.to_string())
}

/// The three files, built in memory and written (atomically) only when every cell has run, so
/// an interrupted run leaves the previous results in the folder intact.
pub(super) struct Outputs {
    csv: csv::Writer<Vec<u8>>,
    details: Vec<u8>,
    log: Vec<u8>,
}

impl Outputs {
    pub(super) fn new() -> Result<Outputs> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(HEADER)?;
        Ok(Outputs {
            csv,
            details: Vec::new(),
            log: Vec::new(),
        })
    }

    /// A child's stderr, kept in `cells.log`.
    pub(super) fn log(&mut self, stderr: &[u8]) -> Result<()> {
        Ok(self.log.write_all(stderr)?)
    }

    /// A measured cell: its `details.jsonl` line and `zo_step.csv` row.
    pub(super) fn measured(&mut self, label: &str, dtype: &str, result: &CellResult) -> Result<()> {
        writeln!(self.details, "{}", serde_json::to_string(result)?)?;
        self.row(
            label,
            dtype,
            result.batch,
            result.seq,
            &result.method,
            format!("{:.4}", result.ms_median),
            result.peak_bytes,
        )
    }

    /// A failed cell: its error in `details.jsonl` and a `nan` row in `zo_step.csv`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn failed(
        &mut self,
        label: &str,
        dtype: &str,
        batch: i64,
        seq: i64,
        method: &str,
        reason: &str,
    ) -> Result<()> {
        writeln!(
            self.details,
            "{}",
            serde_json::json!({"model": label, "method": method, "batch": batch, "error": reason})
        )?;
        self.row(label, dtype, batch, seq, method, "nan".into(), -1)
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        label: &str,
        dtype: &str,
        batch: i64,
        seq: i64,
        method: &str,
        ms: String,
        peak: i64,
    ) -> Result<()> {
        self.csv.write_record([
            label.to_string(),
            dtype_label(dtype),
            batch.to_string(),
            seq.to_string(),
            method.to_string(),
            "ours".into(),
            ms,
            peak.to_string(),
        ])?;
        Ok(())
    }

    /// Writes `cells.log`, `details.jsonl` and `zo_step.csv` into `out`; returns the CSV's path.
    pub(super) fn write(self, out: &Path) -> Result<PathBuf> {
        let csv_bytes = self.csv.into_inner().context("finishing zo_step.csv")?;
        let csv_path = out.join("zo_step.csv");
        for (path, bytes) in [
            (out.join("cells.log"), &self.log),
            (out.join("details.jsonl"), &self.details),
            (csv_path.clone(), &csv_bytes),
        ] {
            atomic_file::write(&path, bytes)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(csv_path)
    }
}

/// The measured cells of `details.jsonl` in `dirs` (failed cells skipped), later dirs overriding
/// earlier ones per (model, method, batch); `dp-sgd` cells of the dirs in `microbatch` are
/// renamed `dp-sgd-microbatch`.
pub(super) fn read_details(dirs: &[PathBuf], microbatch: &[PathBuf]) -> Result<Vec<CellResult>> {
    let mut cells: Vec<CellResult> = Vec::new();
    for dir in dirs {
        let path = dir.join("details.jsonl");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for (line_no, line) in text.lines().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), line_no + 1))?;
            if value.get("error").is_some() {
                continue;
            }
            let mut cell: CellResult = serde_json::from_value(value).with_context(|| {
                format!("{}:{}: not a cell result", path.display(), line_no + 1)
            })?;
            cell.model = model_label(&cell.model);
            if microbatch.contains(dir) && cell.method == "dp-sgd" {
                cell.method = "dp-sgd-microbatch".into();
            }
            cells.retain(|c| {
                (c.model.as_str(), c.method.as_str(), c.batch)
                    != (cell.model.as_str(), cell.method.as_str(), cell.batch)
            });
            cells.push(cell);
        }
    }
    Ok(cells)
}
