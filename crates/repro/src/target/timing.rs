//! `timing.csv`: where each cell's wall time went, for planning device time (cells x seconds).
//!
//! One row per record that times its phases (`setup_secs` and the trainer's `seconds`,
//! `trainer::train::PhaseSeconds`, read by name so that this builds without libtorch): the
//! results' own runs and every tuning candidate under `tuning/*/runs/` (the winner adopted as a
//! final once, as the final). Records written before
//! the phases existed are left out; a folder without any timed record gets no file.

use super::record::{self, CellRecord};
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;

/// The trainer's phases, in the file's column order.
const PHASES: [&str; 5] = ["setup", "steps", "checkpoints", "accounting", "evaluation"];

/// One cell's row: `None` when the record does not time its phases.
fn row(kind: &str, rec: &CellRecord) -> Option<Vec<String>> {
    let phases = rec.trainer.get("seconds")?.as_object()?;
    let phase = |name: &str| phases.get(name).and_then(Value::as_f64);
    let steps_done = rec
        .trainer
        .pointer("/ledger/steps_done")
        .and_then(Value::as_u64)
        .or_else(|| rec.trainer.pointer("/resolved/total_steps")?.as_u64())?;
    let step_secs = phase("steps")?;
    let steps_per_s = if step_secs > 0.0 {
        format!("{:.3}", steps_done as f64 / step_secs)
    } else {
        String::new()
    };
    let compute = rec
        .trainer
        .pointer("/provenance/compute")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut cells = vec![
        kind.to_string(),
        rec.task.clone(),
        rec.method.clone(),
        rec.epsilon.map_or("non-private".into(), |e| e.to_string()),
        rec.seed.to_string(),
        rec.provenance.device.clone(),
        compute.to_string(),
        steps_done.to_string(),
        format!("{:.3}", rec.wall_secs),
        format!("{:.3}", rec.setup_secs?),
    ];
    for name in PHASES {
        cells.push(format!("{:.3}", phase(name)?));
    }
    cells.push(steps_per_s);
    Some(cells)
}

/// Writes `dir/timing.csv` from the records under `dir/runs` and `dir/tuning/*/runs`, when any
/// of them times its phases; returns the number of rows written.
pub fn write(dir: &Path, runs: &[CellRecord]) -> Result<usize> {
    let mut rows: Vec<Vec<String>> = runs.iter().filter_map(|r| row("final", r)).collect();
    let tuning = dir.join("tuning");
    if tuning.is_dir() {
        let mut folders: Vec<_> = std::fs::read_dir(&tuning)
            .with_context(|| format!("reading {}", tuning.display()))?
            .filter_map(|e| e.ok().map(|e| e.path().join("runs")))
            .filter(|p| p.is_dir())
            .collect();
        folders.sort();
        for folder in folders {
            // Unreadable candidates are reported by the tuning step itself; timing skips them.
            let (records, _) = record::read_all_checked(&folder)?;
            // The winner on the tuning seed is adopted as a final (same spec hash): one row.
            rows.extend(
                records
                    .iter()
                    .filter(|c| !runs.iter().any(|r| r.spec_hash == c.spec_hash))
                    .filter_map(|r| row("candidate", r)),
            );
        }
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let path = dir.join("timing.csv");
    let mut header = vec![
        "kind",
        "task",
        "method",
        "epsilon",
        "seed",
        "device",
        "compute",
        "steps",
        "wall_s",
        "cell_setup_s",
    ];
    let phase_columns: Vec<String> = PHASES.iter().map(|p| format!("{p}_s")).collect();
    header.extend(phase_columns.iter().map(String::as_str));
    header.push("steps_per_s");
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header)?;
    for r in &rows {
        writer.write_record(r)?;
    }
    let bytes = writer.into_inner().context("finishing timing.csv")?;
    atomic_file::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seconds: Option<Value>, setup: Option<f64>) -> CellRecord {
        let mut trainer = json!({
            "ledger": { "steps_done": 1200 },
            "provenance": { "compute": "f32" }
        });
        if let Some(s) = seconds {
            trainer["seconds"] = s;
        }
        let mut rec: CellRecord = serde_json::from_value(json!({
            "target": "table2", "preset": "mini", "task": "SST-2", "method": "dpzero",
            "epsilon": 4.0, "seed": 13, "model": "m", "spec_hash": "h", "config": {},
            "provenance": { "git_commit": null, "git_dirty": null, "device": "cuda",
                            "libtorch": null, "date": null, "host": null, "repro_version": null },
            "test_accuracy": 80.0, "dev_accuracy": 70.0, "data": "real", "wall_secs": 66.0,
            "trainer": trainer
        }))
        .unwrap();
        rec.setup_secs = setup;
        rec
    }

    fn phases() -> Value {
        json!({ "setup": 0.5, "steps": 60.0, "checkpoints": 0.7, "accounting": 0.2,
                "evaluation": 1.1 })
    }

    #[test]
    fn a_timed_record_gives_one_row_with_its_phases_and_steps_per_second() {
        let dir = std::env::temp_dir().join(format!("dpzo-timing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let runs = [
            record(Some(phases()), Some(2.5)),
            record(None, None),           // written before the phases existed
            record(Some(phases()), None), // no cell setup: incomplete, left out
        ];
        assert_eq!(write(&dir, &runs).unwrap(), 1);
        let text = std::fs::read_to_string(dir.join("timing.csv")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "kind,task,method,epsilon,seed,device,compute,steps,wall_s,cell_setup_s,setup_s,\
             steps_s,checkpoints_s,accounting_s,evaluation_s,steps_per_s"
        );
        assert_eq!(
            lines[1],
            "final,SST-2,dpzero,4,13,cuda,f32,1200,66.000,2.500,0.500,60.000,0.700,0.200,1.100,20.000"
        );
        assert_eq!(lines.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_folder_without_timed_records_gets_no_file() {
        let dir = std::env::temp_dir().join(format!("dpzo-timing-none-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(write(&dir, &[record(None, None)]).unwrap(), 0);
        assert!(!dir.join("timing.csv").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
