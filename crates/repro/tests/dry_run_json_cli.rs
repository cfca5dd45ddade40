//! `repro table2 --dry-run --json` prints one JSON document with every cell's effective
//! configuration; the method's own settings win over the preset's general ones.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn dry_run_json_prints_each_cells_effective_configuration() {
    let output = dry_run(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "repro failed: {stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stderr}"));
    assert_eq!(doc["preset"], "smoke");
    let cells = doc["cells"].as_array().unwrap();
    assert!(!cells.is_empty());
    let dp_ft: Vec<_> = cells
        .iter()
        .filter(|c| c["config"]["method"] == "dp-ft")
        .collect();
    assert!(!dp_ft.is_empty(), "no dp-ft cell in the smoke grid");
    for c in dp_ft {
        // [method.dp-ft] learning_rate = 0.05 beats [preset.smoke.train] learning_rate = 1e-5.
        assert_eq!(
            c["config"]["learning_rate"].as_f64(),
            Some(0.05),
            "{}",
            c["stem"]
        );
        // [preset.smoke.method.dp-ft] steps = 2 beats [method.dp-ft] steps = 1000.
        assert_eq!(c["config"]["steps"].as_i64(), Some(2), "{}", c["stem"]);
    }
    let dpzero = cells
        .iter()
        .find(|c| c["config"]["method"] == "dpzero")
        .unwrap();
    assert_eq!(dpzero["config"]["learning_rate"].as_f64(), Some(1e-5));
}

/// `repro table2 --preset smoke --device cpu` with `extra`.
fn smoke(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .current_dir(workspace())
        .args(["table2", "--preset", "smoke", "--device", "cpu"])
        .args(extra)
        .output()
        .unwrap()
}

fn dry_run(extra: &[&str]) -> std::process::Output {
    smoke(&[&["--dry-run", "--json"][..], extra].concat())
}

#[test]
fn set_overrides_the_aimed_cells_and_enters_their_spec_hash() {
    let plain = dry_run(&["--methods", "dpzero"]);
    let set = dry_run(&[
        "--methods",
        "dpzero",
        "--set",
        "learning_rate=1e-4",
        "--set",
        "clip_norm=3",
        "--set",
        "stage.num_stages=2",
        "--set",
        "compute=tf32",
    ]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let doc = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (plain, set) = (doc(&plain), doc(&set));
    let (plain, set) = (
        plain["cells"].as_array().unwrap(),
        set["cells"].as_array().unwrap(),
    );
    assert_eq!(plain.len(), set.len());
    for (p, s) in plain.iter().zip(set) {
        let c = &s["config"];
        assert_eq!(c["learning_rate"].as_f64(), Some(1e-4), "{}", s["stem"]);
        // An integer where the spec has a float is that float: one configuration, one hash.
        assert!(c["clip_norm"].is_f64(), "{}", s["stem"]);
        assert_eq!(c["clip_norm"].as_f64(), Some(3.0), "{}", s["stem"]);
        assert_eq!(c["compute"], "tf32", "a bare word is a string");
        // A dotted key changes one field of a nested table and keeps its siblings.
        assert_eq!(c["stage"]["num_stages"].as_i64(), Some(2));
        assert_eq!(
            c["stage"]["first_stage_steps"],
            p["config"]["stage"]["first_stage_steps"]
        );
        assert_ne!(p["spec_hash"], s["spec_hash"]);
    }
}

#[test]
fn set_without_a_value_or_with_tune_is_refused() {
    let out = dry_run(&["--set", "learning_rate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));
    let out = dry_run(&["--set", "learning_rate=1e-4", "--tune"]);
    assert!(!out.status.success(), "--set with --tune must be refused");
}

#[test]
fn a_dry_run_writes_nothing() {
    let out = std::env::temp_dir().join(format!("dpzo-dry-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    for extra in [&[][..], &["--tune"][..]] {
        let out_arg = out.display().to_string();
        let run = smoke(&[&["--dry-run", "--out", out_arg.as_str()][..], extra].concat());
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            !out.exists(),
            "--dry-run {extra:?} created {}",
            out.display()
        );
    }
}
