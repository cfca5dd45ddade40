//! `repro check` on records that fail their content checksum: it reports each one, leaves it out
//! of the summary, and exits non-zero; records without a checksum (written before checksums)
//! and intact ones are aggregated.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_record_failing_its_checksum_is_reported_and_not_aggregated() {
    let out = std::env::temp_dir().join(format!("dpzo-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let smoke = out.join("table2/smoke");
    copy_dir(&workspace().join("results/table2/smoke"), &smoke);
    let runs = smoke.join("runs");
    let victim = runs.join("SST-2__dp-ft__eps2__seed13.json");
    // Give the record a checksum that its (edited) content no longer matches.
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&victim).unwrap()).unwrap();
    value["content_sha256"] = "0".repeat(64).into();
    value["test_accuracy"] = 99.0.into();
    std::fs::write(&victim, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_repro"))
        .current_dir(workspace())
        .args(["check", "table2", "--preset", "smoke", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("SST-2__dp-ft__eps2__seed13.json") && stderr.contains("checksum"),
        "{stderr}"
    );
    let summary = std::fs::read_to_string(smoke.join("summary.csv")).unwrap();
    assert!(!summary.contains("dp-ft,2,"), "{summary}");
    assert!(summary.contains("dp-ft,8,"), "{summary}");
    std::fs::remove_dir_all(&out).unwrap();
}
