//! `repro table2` as a cluster job sees it (output redirected, not a terminal): per-run result
//! lines and the count of cells skipped as already recorded reach the log; a `--data-dir`
//! without the task's files is an error naming the paths looked for (never a silent stand-in),
//! stand-ins without `--data-dir` are announced; invalid filter values are errors naming the
//! value and the valid ones. Runs zero-shot SmolLM2 cells of the smoke preset on the fixture data.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    workspace().join("crates/trainer/tests/data-fixtures")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dpzo-target-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `repro table2 --preset smoke --device cpu ARGS` from the workspace root, stdout piped.
fn table2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .current_dir(workspace())
        .env_remove("DPZO_DATA_DIR")
        .args(["table2", "--preset", "smoke", "--device", "cpu"])
        .args(args)
        .output()
        .expect("the repro binary runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn per_run_lines_and_skipped_cells_reach_a_redirected_log() {
    let out = scratch("log");
    let data = fixtures();
    // The fixture data has the seed-13 split only.
    let args = [
        "--methods",
        "zero-shot,zero-shot-calibrated",
        "--seeds",
        "13",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let first = table2(&args);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("SST-2__zero-shot__nonprivate__seed13: test accuracy"),
        "{stdout}"
    );
    // Calibrated zero-shot: the label prior of the three content-free prompts is recorded and
    // is a distribution over the task's two label words.
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            out.join("table2/smoke/runs/SST-2__zero-shot-calibrated__nonprivate__seed13.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let calibration = &record["trainer"]["calibration"];
    assert_eq!(
        calibration["content_free_inputs"],
        serde_json::json!(["N/A", "[MASK]", ""])
    );
    let prior: Vec<f64> = calibration["label_prior"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert_eq!(prior.len(), 2);
    assert!(prior.iter().all(|p| *p > 0.0) && (prior.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let second = table2(&args);
    let (stdout, stderr) = text(&second);
    assert!(second.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("2 of 2 runs skipped: already recorded") && stdout.contains("--rerun"),
        "{stdout}"
    );
    // The two timed records are in timing.csv, and a dry run marks them and plans the rest.
    let timing = std::fs::read_to_string(out.join("table2/smoke/timing.csv")).unwrap();
    assert_eq!(timing.lines().count(), 3, "{timing}");
    let dry = table2(&[
        "--methods",
        "zero-shot,mezo",
        "--seeds",
        "13",
        "--out",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    let (stdout, stderr) = text(&dry);
    assert!(dry.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("SST-2__zero-shot__nonprivate__seed13 (recorded)")
            && stdout.contains("SST-2__mezo__nonprivate__seed13\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plan: 1 of 2 cells to run (1 recorded), 4 steps")
            && stdout.contains("no timing yet for mezo"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_data_dir_without_the_task_files_is_an_error_naming_the_paths() {
    // One level too deep: the folder that holds k-shot-1k-test/, not the one holding lm-bff/.
    let out = scratch("deep");
    let deep = fixtures().join("lm-bff");
    let output = table2(&[
        "--methods",
        "zero-shot",
        "--data-dir",
        deep.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stderr.contains("lm-bff/lm-bff/k-shot-1k-test/SST-2/16-13")
            && stderr.contains("lm-bff/lm-bff/original/SST-2"),
        "{stderr}"
    );
    assert!(!stdout.contains("test accuracy"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn stand_ins_are_used_only_without_a_data_dir_and_announced() {
    let out = scratch("standin");
    let output = table2(&["--methods", "zero-shot", "--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("SST-2: no --data-dir given, so the stand-in task polarity is used"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn invalid_filter_values_are_errors_naming_the_value_and_the_valid_ones() {
    for (filter, value, valid) in [
        ("--methods", "dpzer,dp-zoso", "zero-shot"),
        ("--epsilons", "0", "8"),
        ("--epsilons", "NaN", "8"),
        ("--epsilons", "inf", "8"),
        ("--epsilons", "-1", "8"),
        ("--epsilons", "4", "8"),
        ("--tasks", "TREC", "SST-2"),
        ("--seeds", "42", "13"),
    ] {
        let output = table2(&["--dry-run", filter, value]);
        let (stdout, stderr) = text(&output);
        assert!(!output.status.success(), "{filter} {value}: {stdout}");
        let named = value.split(',').next().unwrap();
        assert!(
            stderr.contains(named) && stderr.contains(valid),
            "{filter} {value}: {stderr}"
        );
    }
    // Case differs only: accepted (unambiguous).
    let output = table2(&["--dry-run", "--tasks", "sst-2"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
}

/// `--zo-forward paired` runs the ZO methods with both points in one forward: the record is the
/// same cell (same spec hash: the flag is not part of it), its trainer config says `paired`,
/// and it ends where the sequential run ends up to rounding (same test accuracy, test loss
/// within 1e-7 relative). The step-level agreement is `trainer/tests/optim_paired.rs`.
///
/// Both runs are in f64 (`--set dtype=f64`). In f32, one forward of both points has products of
/// another shape, which round otherwise, and each ZO difference divides the losses' rounding by
/// 2 mu = 2e-3: the end point then depends on the CPU's kernels. In f64 what is left is the
/// sequential step's fused perturbation, whose summed deltas (mu z, the update, the next mu z)
/// are f32 (`trainer::perturb`): theta drifts from the paired run's by ~1e-11 a coordinate a
/// step, and the test loss by 4.5e-9 relative after this run's four steps.
#[test]
fn a_paired_forward_run_matches_the_sequential_one() {
    // The stand-in data: the fixture data is too small to train on.
    let run = |name: &str, extra: &[&str]| -> serde_json::Value {
        let out = scratch(name);
        let mut args = vec![
            "--methods",
            "dpzero",
            "--seeds",
            "13",
            "--set",
            "dtype=f64",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let output = table2(&args);
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        let dir = out.join("table2/smoke/runs");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let record =
            serde_json::from_str(&std::fs::read_to_string(dir.join(&names[0])).unwrap()).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        record
    };
    let sequential = run("sequential", &[]);
    let paired = run("paired", &["--zo-forward", "paired"]);
    assert_eq!(sequential["spec_hash"], paired["spec_hash"]);
    assert!(sequential["trainer"]["config"].get("zo_forward").is_none());
    assert_eq!(paired["trainer"]["config"]["zo_forward"], "paired");
    assert_eq!(sequential["test_accuracy"], paired["test_accuracy"]);
    let loss = |r: &serde_json::Value| r["trainer"]["test"]["loss"].as_f64().unwrap();
    let (a, b) = (loss(&sequential), loss(&paired));
    assert!((a - b).abs() <= 1e-7 * a.abs(), "test loss {a} against {b}");
}
