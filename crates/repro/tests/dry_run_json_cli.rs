//! `repro table2 --dry-run --json` prints one JSON document with every cell's effective
//! configuration; the method's own settings win over the preset's general ones.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn dry_run_json_prints_each_cells_effective_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_repro"))
        .current_dir(workspace())
        .args([
            "table2",
            "--preset",
            "smoke",
            "--device",
            "cpu",
            "--dry-run",
            "--json",
        ])
        .output()
        .unwrap();
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
