//! `repro perf-table` rebuilds the committed `results/perf/zo_step.csv` byte for byte from the
//! committed run folders it is given (the command of results/perf/README.md), and refuses a
//! folder that does not exist.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The run folders of results/perf/README.md, earliest first.
const RUNS: [&str; 6] = [
    "h200-2026-11-30b/run-a",
    "h200-2026-11-30b/run-b",
    "h200-2026-11-30c/run-b",
    "h200-2026-11-30c/run-g",
    "h200-2026-11-30d/run-e",
    "h200-2026-11-30e/run-i",
];

fn perf_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../results/perf")
}

#[test]
fn rebuilds_the_committed_zo_step_table() {
    let out = std::env::temp_dir().join(format!("dpzo-perf-table-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let from: Vec<String> = RUNS
        .iter()
        .map(|run| perf_dir().join(run).display().to_string())
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["perf-table", "--from", &from.join(","), "--out"])
        .arg(&out)
        .output()
        .expect("the repro binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rebuilt = std::fs::read_to_string(out.join("zo_step.csv")).unwrap();
    let committed = std::fs::read_to_string(perf_dir().join("zo_step.csv")).unwrap();
    std::fs::remove_dir_all(&out).ok();
    assert_eq!(rebuilt, committed);
}

#[test]
fn later_folders_win() {
    // Reversed, the oldest run's rows replace the newer ones: a different table.
    let out = std::env::temp_dir().join(format!("dpzo-perf-table-rev-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let from: Vec<String> = RUNS
        .iter()
        .rev()
        .map(|run| perf_dir().join(run).display().to_string())
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["perf-table", "--from", &from.join(","), "--out"])
        .arg(&out)
        .output()
        .expect("the repro binary runs");
    assert!(output.status.success());
    let reversed = std::fs::read_to_string(out.join("zo_step.csv")).unwrap();
    let committed = std::fs::read_to_string(perf_dir().join("zo_step.csv")).unwrap();
    std::fs::remove_dir_all(&out).ok();
    assert_ne!(reversed, committed);
}

#[test]
fn a_missing_run_folder_is_an_error_naming_it() {
    common::assert_fails_naming(
        "perf-table --from no/such/run --out /tmp",
        "run folder no/such/run does not exist",
    );
}
