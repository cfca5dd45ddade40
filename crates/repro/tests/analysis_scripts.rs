//! The analysis scripts under `scripts/analysis/` on hand-made inputs whose answers follow by
//! hand (needs `python3`, as `scripts/setup.sh` does).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dpzo-analysis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A record with per-example outcomes `correct` and a one-step sidecar (lr 0.1, signal 3,
/// noise 4: a dead coordinate's drift s.d. 0.1 * 5 = 0.5).
fn write_run(runs: &Path, method: &str, seed: u64, correct: &str) {
    let stem = format!("SST-2__{method}__eps4__seed{seed}");
    let record = serde_json::json!({ "trainer": { "test": { "correct": correct } } });
    std::fs::write(runs.join(format!("{stem}.json")), record.to_string()).unwrap();
    let step = r#"{"clip":{"mean_clipped_scalar":3.0,"noise_scale":4.0},"learning_rate":0.1}"#;
    let file = std::fs::File::create(runs.join(format!("{stem}.steps.jsonl.gz"))).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    writeln!(gz, "{step}").unwrap();
    gz.finish().unwrap();
}

/// Four test examples of exposure 0, 1, 5, 6 (median 3: the first two low, the last two high).
/// Seed 13: A right on the low half only, B everywhere: high - low = -100 points. Seed 21: A
/// wrong once on the high half: -50. Mean -75, s.d. 35.36, t(0.975, 1) = 12.706: half-width
/// 12.706 * 35.36 / sqrt(2) = 317.65.
#[test]
fn mask_exposure_takes_the_difference_in_differences_over_seeds() {
    let dir = scratch("exposure");
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    for (seed, a) in [(13, "1100"), (21, "1110")] {
        write_run(&runs, "dp-zopo", seed, a);
        write_run(&runs, "dpzero", seed, "1111");
    }
    let exposure = dir.join("exposure.csv");
    let mut csv = String::from("example,tokens,unseen_tokens,exposed_rows_smallest-score,exposed_coordinates_smallest-score\n");
    for (i, dose) in [0, 1, 5, 6].iter().enumerate() {
        csv.push_str(&format!("{i},9,2,1,{dose}\n"));
    }
    std::fs::write(&exposure, csv).unwrap();
    let out = dir.join("out.csv");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/analysis/mask_exposure.py");
    let pair = |seed: u64| format!("{seed}={}", exposure.display());
    let output = Command::new("python3")
        .arg(&script)
        .arg(&runs)
        .args(["SST-2", "4"])
        .arg(&out)
        .args([pair(13), pair(21)])
        .output()
        .expect("python3 runs");
    common::assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("-75.00 points [-392.65, +242.65] over 2 seeds; per seed -100.00, -50.00"),
        "{stdout}"
    );
    let table = std::fs::read_to_string(&out).unwrap();
    assert!(
        table.contains("SST-2,4.0,13,high,2,5.5,0.00,100.00,-100.00,0.5000,0.5000"),
        "{table}"
    );
    // A record whose outcomes do not match the exposure file is refused by name.
    write_run(&runs, "dpzero", 21, "111");
    let output = Command::new("python3")
        .arg(&script)
        .arg(&runs)
        .args(["SST-2", "4"])
        .arg(&out)
        .arg(pair(21))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("3 test outcomes but 4 rows"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record of `method` and `seed` with per-example answers `predicted` against `gold`.
fn write_answers(runs: &Path, method: &str, seed: u64, predicted: &str, gold: &str) {
    let record = serde_json::json!({
        "method": method,
        "seed": seed,
        "trainer": { "test": { "predicted": predicted, "gold": gold } },
    });
    let stem = format!("RTE__{method}__eps4__seed{seed}");
    std::fs::write(runs.join(format!("{stem}.json")), record.to_string()).unwrap();
}

/// Gold 0011. dp-zopo: seed 13 answers 0011, seed 21 0001: they agree on 3 of 4 (75%), give one
/// answer on 3 examples, are never both wrong; label 0 on {0, 1} inside {0, 1, 2}: nested 100%,
/// 75% if independent. dpzero: 1110 and 1111: 75%, the same answer on 3, both wrong on examples
/// 0 and 1; seed 21 never answers 0, so no nesting. Between them, seed by seed: 25% and 25%;
/// over every pair 25, 50, 0, 25 (mean 25); only the pairs with dpzero's seed 13 nest, at 0%
/// (its label-0 example 3 is label 1 in both dp-zopo runs), independent 2/4 and 3/4.
#[test]
fn agreement_counts_common_answers_and_nesting_by_hand() {
    let dir = scratch("agreement");
    let (first, second) = (dir.join("a"), dir.join("b"));
    for folder in [&first, &second] {
        std::fs::create_dir_all(folder.join("runs")).unwrap();
    }
    let gold = "0011";
    write_answers(&first.join("runs"), "dp-zopo", 13, "0011", gold);
    write_answers(&first.join("runs"), "dp-zopo", 21, "0001", gold);
    write_answers(&first.join("runs"), "dpzero", 13, "1110", gold);
    write_answers(&first.join("runs"), "dpzero", 21, "1111", gold);
    // A taken-over copy in a second folder counts once.
    write_answers(&second.join("runs"), "dp-zopo", 13, "0011", gold);
    let out = dir.join("out.csv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/analysis/agreement.py");
    let run = |folders: &[&PathBuf]| {
        Command::new("python3")
            .arg(&script)
            .arg("RTE")
            .arg(&out)
            .args(folders)
            .output()
            .expect("python3 runs")
    };
    common::assert_success(&run(&[&first, &second]));
    let table = std::fs::read_to_string(&out).unwrap();
    for row in [
        "RTE,dp-zopo,dp-zopo,distinct seeds,2,1,75.0,75.0,75.0,100.0,75.0,3,0",
        "RTE,dpzero,dpzero,distinct seeds,2,1,75.0,75.0,75.0,,,3,2",
        "RTE,dp-zopo,dpzero,same seed,2,2,25.0,25.0,25.0,0.0,50.0,,",
        "RTE,dp-zopo,dpzero,every pair,2x2,4,25.0,0.0,50.0,0.0,62.5,,",
    ] {
        assert!(table.lines().any(|l| l == row), "no row {row} in\n{table}");
    }
    // A copy that answers differently is refused by name.
    write_answers(&second.join("runs"), "dp-zopo", 13, "0111", gold);
    let output = run(&[&first, &second]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RTE__dp-zopo__eps4__seed13.json: another dp-zopo record for seed 13 answers differently"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
