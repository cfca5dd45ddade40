//! `repro perf-table` rebuilds the committed `results/perf/zo_step.csv` byte for byte from the
//! committed run folders it is given (the command of results/perf/README.md), renames the
//! micro-batch DP-SGD rows of the folders measured before ghost clipping, and refuses a folder
//! that does not exist.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The run folders of results/perf/README.md, earliest first.
const RUNS: [&str; 7] = [
    "h200-2026-11-30b/run-a",
    "h200-2026-11-30b/run-b",
    "h200-2026-11-30c/run-b",
    "h200-2026-11-30c/run-g",
    "h200-2026-11-30d/run-e",
    "h200-2026-11-30e/run-i",
    "h200-2026-12-04/dpsgd",
];

/// The folder whose `dp-sgd` rows are the micro-batch method (measured before ghost clipping).
const MICROBATCH: &str = "h200-2026-11-30b/run-a";

fn perf_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../results/perf")
}

/// `repro perf-table` on `runs` (with [`MICROBATCH`] marked when `mark`): the table it writes.
fn rebuild(name: &str, runs: &[&str], mark: bool) -> String {
    let out = std::env::temp_dir().join(format!("dpzo-perf-table-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let from: Vec<String> = runs
        .iter()
        .map(|run| perf_dir().join(run).display().to_string())
        .collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_repro"));
    command.args(["perf-table", "--from", &from.join(",")]);
    if mark {
        command
            .arg("--microbatch-dp-sgd")
            .arg(perf_dir().join(MICROBATCH));
    }
    let output = command
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the repro binary runs");
    common::assert_success(&output);
    let table = std::fs::read_to_string(out.join("zo_step.csv")).unwrap();
    std::fs::remove_dir_all(&out).ok();
    table
}

#[test]
fn rebuilds_the_committed_zo_step_table() {
    let rebuilt = rebuild("same", &RUNS, true);
    let committed = std::fs::read_to_string(perf_dir().join("zo_step.csv")).unwrap();
    assert_eq!(rebuilt, committed);
}

#[test]
fn the_table_has_ghost_and_microbatch_dp_sgd_beside_backprop() {
    let table = rebuild("rows", &RUNS, true);
    for (model, shape) in [
        ("roberta-large", "f32,64,128"),
        ("opt-2.7b", "f16,16,256"),
        ("smollm2-135m", "f32,64,64"),
    ] {
        for method in ["dp-sgd", "dp-sgd-microbatch", "backprop"] {
            let key = format!("{model},{shape},{method},ours,");
            assert!(
                table.lines().any(|l| l.starts_with(&key)),
                "no row {key} in\n{table}"
            );
        }
    }
    // The ghost-clipping rows are the 2026-12-04 call's, not the older micro-batch ones.
    assert!(table.contains("roberta-large,f32,64,128,dp-sgd,ours,372.9417,"));
    assert!(table.contains("roberta-large,f32,64,128,dp-sgd-microbatch,ours,4575.0438,"));
    // Session 2's micro-batch rows at B = 4 and 1 keep their method's name.
    assert!(table.contains("opt-2.7b,f16,4,256,dp-sgd-microbatch,ours,542.4467,"));
    assert!(!table.contains("opt-2.7b,f16,4,256,dp-sgd,ours,"));
}

#[test]
fn unmarked_microbatch_rows_would_pass_as_ghost_clipping() {
    // Without the mark, session 2's micro-batch rows at B = 4 and 1 are called `dp-sgd`.
    let table = rebuild("unmarked", &RUNS, false);
    assert!(table.contains("opt-2.7b,f16,4,256,dp-sgd,ours,542.4467,"));
}

#[test]
fn a_microbatch_folder_must_be_among_the_run_folders() {
    common::assert_fails_naming(
        "perf-table --from . --microbatch-dp-sgd no/such/run --out /tmp",
        "--microbatch-dp-sgd no/such/run: not among the --from folders",
    );
}

#[test]
fn later_folders_win() {
    // Reversed, the oldest run's rows replace the newer ones: a different table.
    let runs: Vec<&str> = RUNS.iter().rev().copied().collect();
    let reversed = rebuild("rev", &runs, true);
    let committed = std::fs::read_to_string(perf_dir().join("zo_step.csv")).unwrap();
    assert_ne!(reversed, committed);
}

#[test]
fn a_missing_run_folder_is_an_error_naming_it() {
    common::assert_fails_naming(
        "perf-table --from no/such/run --out /tmp",
        "run folder no/such/run does not exist",
    );
}
