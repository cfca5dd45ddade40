//! `repro ablations`: the smoke preset's effective configuration of every variant (`--dry-run
//! --json`, checked against closed forms of the step-size rules), and a cheap part of the grid
//! end to end on CPU (zero-shot and calibrated zero-shot on two seeds): summary, the variant's
//! paired comparison with its CI, and the plot.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ablations(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .current_dir(workspace())
        .env_remove("DPZO_DATA_DIR")
        .args(["ablations", "--preset", "smoke", "--device", "cpu"])
        .args(args)
        .output()
        .expect("the repro binary runs")
}

#[test]
fn dry_run_json_resolves_every_variant() {
    let output = ablations(&["--dry-run", "--json"]);
    common::assert_success(&output);
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let cells = doc["cells"].as_array().unwrap();
    let config = |stem: &str| -> &serde_json::Value {
        &cells
            .iter()
            .find(|c| c["stem"] == stem)
            .unwrap_or_else(|| panic!("no cell {stem}"))["config"]
    };
    let spec: toml::Table = toml::from_str(
        &std::fs::read_to_string(workspace().join("experiments/ablations.toml")).unwrap(),
    )
    .unwrap();
    let methods = spec["grid"]["methods"].as_array().unwrap();
    // Two seeds of every method; private ones at eps 8, the others once per seed.
    assert_eq!(cells.len(), 2 * methods.len());
    let lr = |stem: &str| config(stem)["learning_rate"].as_f64().unwrap();
    let zopo = lr("SST-2__dp-zopo__eps8__seed13");
    // Mask ratio 1% -> 0.1% / 10%: eta r kept.
    assert!((lr("SST-2__zopo-ratio-0.1pct__eps8__seed13") - 10.0 * zopo).abs() < 1e-12 * zopo);
    assert!((lr("SST-2__zopo-ratio-10pct__eps8__seed13") - zopo / 10.0).abs() < 1e-12 * zopo);
    // Smoke: T = 4, T0 = 2, S = 2: two steps at eta, two at eta/2 (sum 3 eta); without halving
    // four steps at eta' = 3 eta / 4.
    let zoso = lr("SST-2__dp-zoso__eps8__seed13");
    assert!((lr("SST-2__zoso-no-halving__eps8__seed13") - 0.75 * zoso).abs() < 1e-15);
    let flat = config("SST-2__zoso-no-halving__eps8__seed13");
    assert_eq!(flat["stage"]["step_halving"], false);
    assert_eq!(flat["base_method"], "dp-zoso");
    assert_eq!(
        config("SST-2__zoso-prox__eps8__seed13")["proximal_weight"],
        50.0
    );
    assert_eq!(
        config("SST-2__zopo-random__eps8__seed13")["mask"]["score"]["kind"],
        "random"
    );
    assert_eq!(
        config("SST-2__zopo-dynamic__eps8__seed13")["mask"]["strategy"],
        "dynamic"
    );
    // MeZO and sigma = 0 carry no budget.
    assert!(config("SST-2__mezo-eps-inf__nonprivate__seed13")["epsilon"].is_null());
    assert_eq!(
        config("SST-2__dpzero-sigma0__nonprivate__seed21")["base_method"],
        "dpzero-no-noise"
    );
}

#[test]
fn calibrated_zero_shot_against_zero_shot_end_to_end() {
    let out = std::env::temp_dir().join(format!("dpzo-ablations-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = ablations(&[
        "--methods",
        "zero-shot,calibrated",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    let dir = out.join("ablations/smoke");
    let csv = std::fs::read_to_string(dir.join("ablations.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let col = |r: &csv::StringRecord, name: &str| -> String {
        r[headers.iter().position(|h| h == name).unwrap()].to_string()
    };
    let row = rows
        .iter()
        .find(|r| col(r, "variant") == "calibrated")
        .unwrap_or_else(|| panic!("{csv}"));
    assert_eq!(col(row, "reference"), "zero-shot");
    assert_eq!(col(row, "n_seeds"), "2");
    // The paired difference equals the difference of the two cells' means in summary.csv.
    let summary = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mean = |method: &str| -> f64 {
        let mut r = csv::Reader::from_reader(summary.as_bytes());
        let h = r.headers().unwrap().clone();
        let m = h.iter().position(|x| x == "method").unwrap();
        let v = h.iter().position(|x| x == "mean").unwrap();
        r.records()
            .map(Result::unwrap)
            .find(|rec| &rec[m] == method)
            .unwrap()[v]
            .parse()
            .unwrap()
    };
    let delta: f64 = col(row, "delta").parse().unwrap();
    assert!(
        (delta - (mean("calibrated") - mean("zero-shot"))).abs() < 0.011,
        "{csv}"
    );
    let (lo, hi): (f64, f64) = (
        col(row, "ci_low").parse().unwrap(),
        col(row, "ci_high").parse().unwrap(),
    );
    assert!(lo <= delta && delta <= hi, "{csv}");
    assert!(std::fs::read_to_string(dir.join("ablations.svg"))
        .unwrap()
        .contains("<svg"));
    let md = std::fs::read_to_string(dir.join("ablations.md")).unwrap();
    assert!(md.contains("| calibrated | zero-shot | SST-2 |"), "{md}");
    // The same comparison's precision: one row, its CI as in ablations.csv, a family of one.
    let precision = std::fs::read_to_string(dir.join("precision.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(precision.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{precision}");
    let col = |name: &str| -> String {
        rows[0][headers.iter().position(|h| h == name).unwrap()].to_string()
    };
    assert_eq!(col("claim"), "calibrated - zero-shot");
    assert_eq!(col("family_size"), "1");
    assert_eq!(col("ci_low_family"), col("ci_low"));
    let low: f64 = col("ci_low").parse().unwrap();
    assert!((low - lo).abs() < 0.011, "{precision}");
    assert!(
        md.contains("## Precision: what more seeds would decide"),
        "{md}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// A preset that inherits table2's tuned settings refuses to start (even a dry run) when table2
/// has no winner for a group it needs, naming each group and the command that tunes it.
#[test]
fn an_inheriting_preset_without_table2_winners_refuses_naming_the_commands() {
    let out = std::env::temp_dir().join(format!("dpzo-ablations-inherit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_repro"))
        .current_dir(workspace())
        .env_remove("DPZO_DATA_DIR")
        .args(["ablations", "--preset", "mini-horizon", "--device", "cpu"])
        .args(["--out", out.to_str().unwrap(), "--dry-run", "--json"])
        .output()
        .expect("the repro binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(output.stdout.is_empty(), "no configuration is printed");
    for (method, family) in [("dpzero", "dpzero"), ("dp-zoso", "zoso"), ("dp-ft", "dpft")] {
        assert!(
            stderr.contains(&format!("(SST-2, {method}, eps 4)"))
                && stderr.contains(&format!(
                    "repro table2 --preset mini --tune --tasks SST-2 --methods {method} --epsilons 4"
                )),
            "{family}: {stderr}"
        );
    }
    assert!(stderr.contains("never replaced by defaults"), "{stderr}");
    let _ = std::fs::remove_dir_all(&out);
}

/// `mini-compute` runs DPZero and DP-ZOPO with TF32 products at table2 mini's committed f32
/// winners: each TF32 variant differs from its base's resolved configuration in `compute` alone,
/// and the dry run names the f32 finals it would take over instead of planning them (in a fresh
/// results tree whose `table2/mini` is the committed one). In the committed tree every cell is
/// recorded.
#[test]
#[cfg(unix)]
fn the_precision_preset_changes_only_compute_and_takes_over_the_f32_finals() {
    let out = std::env::temp_dir().join(format!("dpzo-ablations-compute-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("table2")).unwrap();
    std::os::unix::fs::symlink(
        workspace().join("results/table2/mini"),
        out.join("table2/mini"),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_repro"))
            .current_dir(workspace())
            .env_remove("DPZO_DATA_DIR")
            .args(["ablations", "--preset", "mini-compute", "--device", "cpu"])
            .args(["--out", out.to_str().unwrap(), "--dry-run"])
            .args(extra)
            .output()
            .expect("the repro binary runs")
    };
    let output = run(&["--json"]);
    common::assert_success(&output);
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let cells = doc["cells"].as_array().unwrap();
    let config = |stem: &str| -> serde_json::Map<String, serde_json::Value> {
        cells
            .iter()
            .find(|c| c["stem"] == stem)
            .unwrap_or_else(|| panic!("no cell {stem}"))["config"]
            .as_object()
            .unwrap()
            .clone()
    };
    for task in ["SST-2", "SST-5"] {
        for (base, variant) in [("dpzero", "dpzero-tf32"), ("dp-zopo", "zopo-tf32")] {
            let stem = |m: &str| format!("{task}__{m}__eps4__seed21");
            let (mut f32_cfg, mut tf32_cfg) = (config(&stem(base)), config(&stem(variant)));
            assert_eq!(tf32_cfg.remove("compute"), Some("tf32".into()));
            assert_eq!(f32_cfg.remove("compute"), None, "f32 is the default");
            // Apart from the method's own name, every training setting is the base's.
            assert_eq!(tf32_cfg.remove("method"), Some(variant.into()));
            assert_eq!(f32_cfg.remove("method"), Some(base.into()));
            assert_eq!(tf32_cfg.remove("base_method"), Some(base.into()));
            assert_eq!(f32_cfg.remove("base_method"), None);
            assert_eq!(f32_cfg, tf32_cfg, "{task} {variant}");
        }
    }
    let output = run(&[]);
    common::assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let source = format!("(taken over from {}/", out.join("table2/mini").display());
    let taken = stdout.lines().filter(|l| l.contains(&source)).count();
    assert_eq!(taken, 12, "{stdout}");
    assert!(
        stdout.contains("plan: 12 of 24 cells to run (0 recorded, 12 to take over"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&out).unwrap();
    // The committed tree: every cell recorded under the spec hash planned today.
    let committed = Command::new(env!("CARGO_BIN_EXE_repro"))
        .current_dir(workspace())
        .env_remove("DPZO_DATA_DIR")
        .args([
            "ablations",
            "--preset",
            "mini-compute",
            "--device",
            "cpu",
            "--dry-run",
        ])
        .output()
        .expect("the repro binary runs");
    common::assert_success(&committed);
    let stdout = String::from_utf8_lossy(&committed.stdout);
    assert!(
        stdout.contains("plan: 0 of 24 cells to run (24 recorded)"),
        "{stdout}"
    );
}
