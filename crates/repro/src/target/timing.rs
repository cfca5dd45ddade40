//! `timing.csv`: where each cell's wall time went, for planning device time (cells x seconds).
//!
//! One row per record: the results' own runs and every tuning candidate under `tuning/*/runs/`
//! (the winner adopted as a final once, as the final), with its wall time per step and, where the
//! record times them, its phases (`setup_secs` and `CellRecord::phase_seconds`; empty in records
//! written before they existed).

use super::grid::Cell;
use super::record::{self, CellRecord};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The trainer's phases, in the file's column order.
const PHASES: [&str; 5] = ["setup", "steps", "checkpoints", "accounting", "evaluation"];

/// One cell's row: wall time, steps and, when the record times them, its phases (empty
/// otherwise); `None` when the record states no step count.
fn row(kind: &str, rec: &CellRecord) -> Option<Vec<String>> {
    let phases = rec.phase_seconds();
    let steps_done = rec
        .trainer
        .pointer("/ledger/steps_done")
        .and_then(Value::as_u64)
        .or_else(|| rec.trainer.pointer("/resolved/total_steps")?.as_u64())?;
    let compute = rec
        .trainer
        .pointer("/provenance/compute")
        .and_then(Value::as_str)
        .unwrap_or("");
    let seconds = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    // A resumed run's times cover only the steps this process ran.
    let resumed_from = rec
        .trainer
        .get("resumed_from")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let steps_run = steps_done.saturating_sub(resumed_from);
    let per_step = |total: Option<f64>| match total {
        Some(t) if steps_run > 0 => format!("{:.5}", t / steps_run as f64),
        _ => String::new(),
    };
    let phase = |name: &str| phases.and_then(|p| p.get(name)).and_then(Value::as_f64);
    let mut cells = vec![
        kind.to_string(),
        rec.task.clone(),
        rec.method.clone(),
        rec.epsilon.map_or("non-private".into(), |e| e.to_string()),
        rec.seed.to_string(),
        rec.provenance.device.clone(),
        compute.to_string(),
        steps_done.to_string(),
        steps_run.to_string(),
        seconds(Some(rec.wall_secs)),
        per_step(Some(rec.wall_secs)),
        seconds(rec.setup_secs),
    ];
    cells.extend(PHASES.iter().map(|name| seconds(phase(name))));
    cells.push(per_step(phase("steps")));
    Some(cells)
}

/// Writes `dir/timing.csv` from the records under `dir/runs` and `dir/tuning/*/runs`; returns
/// the number of rows written (none: no file).
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
        "steps_run",
        "wall_s",
        "wall_s_per_step",
        "cell_setup_s",
    ];
    let phase_columns: Vec<String> = PHASES.iter().map(|p| format!("{p}_s")).collect();
    header.extend(phase_columns.iter().map(String::as_str));
    header.push("steps_s_per_step");
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header)?;
    for r in &rows {
        writer.write_record(r)?;
    }
    let bytes = writer.into_inner().context("finishing timing.csv")?;
    atomic_file::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(rows.len())
}

/// What one row of `timing.csv` says of its cell's length.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    /// Wall seconds per step of a cell that trained (whole cell: setup and evaluation included).
    PerStep(f64),
    /// Wall seconds of a cell that took no steps (zero-shot: an evaluation only).
    Evaluation(f64),
}

/// Each row of `dir/timing.csv` measured on `device` (`cpu` or `cuda`, as records state it)
/// that times its cell: (task, method, [`Rate`]); empty without the file. A row of a cell that
/// trained but ran no step in its last process (resumed at its end) times nothing.
fn rates(dir: &Path, device: &str) -> Result<Vec<(String, String, Rate)>> {
    let path = dir.join("timing.csv");
    let Some((mut reader, [task, method, dev, steps, wall, per_step])) = super::csv_with_columns(
        &path,
        [
            "task",
            "method",
            "device",
            "steps",
            "wall_s",
            "wall_s_per_step",
        ],
    )?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (line, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}:{}", path.display(), line + 2))?;
        let number = |column: usize, name: &str| {
            row[column].parse::<f64>().with_context(|| {
                format!(
                    "{}:{}: {name} {:?} is not a number",
                    path.display(),
                    line + 2,
                    &row[column]
                )
            })
        };
        if &row[dev] != device {
            continue;
        }
        let rate = if &row[steps] == "0" {
            Rate::Evaluation(number(wall, "wall_s")?)
        } else if row[per_step].is_empty() {
            continue;
        } else {
            Rate::PerStep(number(per_step, "wall_s_per_step")?)
        };
        out.push((row[task].to_string(), row[method].to_string(), rate));
    }
    Ok(out)
}

/// The fastest wall seconds per step of each method in `dir/timing.csv` on `device`
/// ([`rates`]).
pub fn seconds_per_step(dir: &Path, device: &str) -> Result<BTreeMap<String, f64>> {
    // The fastest cell, not a central value: cells that shared the device with other workers
    // (--jobs-per-gpu) took longer in wall time for the same device time, and the records do
    // not say how many shared it; a plan for one process per device wants the cell run alone.
    let mut fastest: BTreeMap<String, f64> = BTreeMap::new();
    for (_, method, rate) in rates(dir, device)? {
        if let Rate::PerStep(seconds) = rate {
            let slot = fastest.entry(method).or_insert(f64::INFINITY);
            *slot = slot.min(seconds);
        }
    }
    Ok(fastest)
}

/// The slowest cells of each (task, method) in `dir/timing.csv` on one device, for
/// `--deadline` ([`super::grid::estimate`]): estimates that err long, since the rows do not
/// say how many workers shared the device, and a cell started on too short an estimate is cut
/// off and its steps lost with the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlowestRates {
    /// Wall seconds per step of the cells that trained.
    pub per_step: BTreeMap<(String, String), f64>,
    /// Wall seconds of the evaluation-only (zero-shot) cells: seconds on a GPU, but about half an
    /// hour on two CPU cores for MultiRC's long paragraphs.
    pub evaluation: BTreeMap<(String, String), f64>,
}

/// [`SlowestRates`] of `dir/timing.csv` on `device` ([`rates`]).
pub fn slowest(dir: &Path, device: &str) -> Result<SlowestRates> {
    let mut out = SlowestRates::default();
    for (task, method, rate) in rates(dir, device)? {
        let (map, seconds) = match rate {
            Rate::PerStep(s) => (&mut out.per_step, s),
            Rate::Evaluation(s) => (&mut out.evaluation, s),
        };
        let slot = map.entry((task, method)).or_insert(0.0);
        *slot = slot.max(seconds);
    }
    Ok(out)
}

/// [`slowest`] of `dir`, with the (task, method) rates it lacks taken from `source`, the results
/// of the target whose records this preset takes over or inherits ([`super::record_source_dir`]:
/// the same model, tasks and schedule). A preset's first `--deadline` call then has rates for
/// its tasks before any cell of its own has run; its own rows win wherever both have one.
pub fn slowest_or_source(dir: &Path, source: Option<&Path>, device: &str) -> Result<SlowestRates> {
    let mut out = slowest(dir, device)?;
    if let Some(source) = source {
        let borrowed = slowest(source, device)?;
        for (key, seconds) in borrowed.per_step {
            out.per_step.entry(key).or_insert(seconds);
        }
        for (key, seconds) in borrowed.evaluation {
            out.evaluation.entry(key).or_insert(seconds);
        }
    }
    Ok(out)
}

/// A dry run's plan: the cells still to run, their steps, and the device time they need at
/// `rates` (seconds per step by method, [`seconds_per_step`]), naming the methods without one.
/// `taken_over` more cells of the grid, not among `cells`, take a tuning source's records.
pub fn plan_line(
    label: &str,
    cells: &[&Cell],
    taken_over: usize,
    rates: &BTreeMap<String, f64>,
) -> String {
    let to_run: Vec<&&Cell> = cells.iter().filter(|c| !c.is_recorded()).collect();
    let steps_of = |c: &Cell| c.config.get("steps").and_then(Value::as_u64).unwrap_or(0);
    // A zero-shot cell's configured steps are not taken, and it has no per-step rate, so it is
    // named below among the methods without timing.
    let steps: u64 = to_run
        .iter()
        .filter(|c| c.trains())
        .map(|c| steps_of(c))
        .sum();
    let (mut seconds, mut timed) = (0.0, 0);
    let mut unknown: Vec<&str> = Vec::new();
    for c in &to_run {
        match rates.get(&c.run.method) {
            Some(r) => {
                seconds += r * steps_of(c) as f64;
                timed += 1;
            }
            None if !unknown.contains(&c.run.method.as_str()) => unknown.push(&c.run.method),
            None => {}
        }
    }
    let taken = if taken_over > 0 {
        format!(", {taken_over} to take over from the tuning source")
    } else {
        String::new()
    };
    let mut line = format!(
        "{label}: {} of {} cells to run ({} recorded{taken}), {steps} steps",
        to_run.len(),
        cells.len() + taken_over,
        cells.len() - to_run.len()
    );
    if timed > 0 {
        line.push_str(&format!(
            "; about {:.0} min at the fastest seconds per step of each method in timing.csv",
            seconds / 60.0
        ));
    }
    if !unknown.is_empty() {
        line.push_str(&format!(
            " (no timing yet for {}: {})",
            unknown.join(", "),
            if timed > 0 {
                "not counted"
            } else {
                "no estimate"
            }
        ));
    }
    line
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

    fn scratch(name: &str) -> std::path::PathBuf {
        crate::target::test_scratch(&format!("timing-{name}"))
    }

    #[test]
    fn every_record_gives_a_row_with_its_wall_time_per_step_and_its_phases_when_timed() {
        let dir = scratch("rows");
        let mut resumed = record(None, None);
        resumed.trainer["resumed_from"] = json!(1000);
        resumed.wall_secs = 11.0;
        let runs = [
            record(Some(phases()), Some(2.5)),
            record(None, None), // written before the phases existed
            resumed,
        ];
        assert_eq!(write(&dir, &runs).unwrap(), 3);
        let text = std::fs::read_to_string(dir.join("timing.csv")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "kind,task,method,epsilon,seed,device,compute,steps,steps_run,wall_s,wall_s_per_step,\
             cell_setup_s,setup_s,steps_s,checkpoints_s,accounting_s,evaluation_s,steps_s_per_step"
        );
        assert_eq!(
            lines[1],
            "final,SST-2,dpzero,4,13,cuda,f32,1200,1200,66.000,0.05500,2.500,0.500,60.000,0.700,\
             0.200,1.100,0.05000"
        );
        assert_eq!(
            lines[2],
            "final,SST-2,dpzero,4,13,cuda,f32,1200,1200,66.000,0.05500,,,,,,,"
        );
        assert_eq!(
            lines[3], "final,SST-2,dpzero,4,13,cuda,f32,1200,200,11.000,0.05500,,,,,,,",
            "a run resumed at step 1000: its times cover 200 steps"
        );
        assert_eq!(lines.len(), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_record_no_file_and_no_rates() {
        let dir = scratch("none");
        assert_eq!(write(&dir, &[]).unwrap(), 0);
        assert!(!dir.join("timing.csv").exists());
        assert!(seconds_per_step(&dir, "cuda").unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rates_are_the_fastest_per_method_or_the_slowest_per_task_and_method_on_the_asked_device() {
        let dir = scratch("rates");
        let header = "task,method,device,steps,wall_s,wall_s_per_step\n";
        // Rows: per-step rates on two tasks and devices; MeZO resumed at its end (no time of
        // its own); zero-shot cells (no steps) timed whole, one of them on the CPU.
        let rows =
            "A,dpzero,cuda,1200,60,0.05\nB,dpzero,cuda,1200,84,0.07\nA,dpzero,cuda,1200,72,0.06\n\
                    A,dpzero,cpu,1200,10800,9\nA,mezo,cuda,1200,1,\nA,dp-ft,cuda,300,30,0.1\n\
                    A,dp-ft,cuda,300,60,0.2\nA,zero-shot,cuda,0,4.5,\nA,zero-shot,cuda,0,3.5,\n\
                    A,zero-shot,cpu,0,1900,\n";
        std::fs::write(dir.join("timing.csv"), format!("{header}{rows}")).unwrap();
        let rates = seconds_per_step(&dir, "cuda").unwrap();
        assert_eq!(rates.len(), 2, "{rates:?}");
        assert_eq!(rates["dpzero"], 0.05);
        assert_eq!(rates["dp-ft"], 0.1);
        // For a deadline: the slowest of each (task, method), on the asked device only.
        let slowest = slowest(&dir, "cuda").unwrap();
        let key = |t: &str, m: &str| (t.to_string(), m.to_string());
        assert_eq!(slowest.per_step.len(), 3, "{slowest:?}");
        assert_eq!(slowest.per_step[&key("A", "dpzero")], 0.06);
        assert_eq!(slowest.per_step[&key("B", "dpzero")], 0.07);
        assert_eq!(slowest.per_step[&key("A", "dp-ft")], 0.2);
        assert_eq!(
            slowest.evaluation,
            BTreeMap::from([(key("A", "zero-shot"), 4.5)])
        );
        assert_eq!(
            super::slowest(&dir, "cpu").unwrap().evaluation,
            BTreeMap::from([(key("A", "zero-shot"), 1900.0)])
        );
        for (bad, column, value) in [
            ("A,dpzero,cuda,1200,60,fast", "wall_s_per_step", "fast"),
            ("A,zero-shot,cuda,0,soon,", "wall_s", "soon"),
        ] {
            std::fs::write(dir.join("timing.csv"), format!("{header}{bad}\n")).unwrap();
            let err = format!("{:#}", super::slowest(&dir, "cuda").unwrap_err());
            assert!(
                err.contains(&format!("timing.csv:2: {column} {value:?}")),
                "{err}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    /// A preset with no timing of its own takes its source's rates; where both have a row for
    /// a (task, method), its own wins; keys only the preset has stay; no source: its own only.
    #[test]
    fn a_preset_without_rates_takes_its_sources_and_keeps_its_own() {
        let own = scratch("own");
        let source = scratch("source");
        let empty = scratch("empty");
        let header = "task,method,device,steps,wall_s,wall_s_per_step\n";
        std::fs::write(
            own.join("timing.csv"),
            format!("{header}A,dp-zopo,cuda,1200,144,0.12\nC,zopo-random,cuda,1200,120,0.1\n"),
        )
        .unwrap();
        std::fs::write(
            source.join("timing.csv"),
            format!(
                "{header}A,dp-zopo,cuda,1200,72,0.06\nB,dpzero,cuda,1200,84,0.07\n\
                 B,zero-shot,cuda,0,4.5,\n"
            ),
        )
        .unwrap();
        let key = |t: &str, m: &str| (t.to_string(), m.to_string());
        let merged = slowest_or_source(&own, Some(&source), "cuda").unwrap();
        assert_eq!(
            merged.per_step,
            BTreeMap::from([
                (key("A", "dp-zopo"), 0.12),
                (key("B", "dpzero"), 0.07),
                (key("C", "zopo-random"), 0.1),
            ])
        );
        assert_eq!(
            merged.evaluation,
            BTreeMap::from([(key("B", "zero-shot"), 4.5)])
        );
        let fresh = slowest_or_source(&empty, Some(&source), "cuda").unwrap();
        assert_eq!(fresh, slowest(&source, "cuda").unwrap());
        assert_eq!(
            slowest_or_source(&own, None, "cuda").unwrap(),
            slowest(&own, "cuda").unwrap()
        );
        for d in [own, source, empty] {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}
