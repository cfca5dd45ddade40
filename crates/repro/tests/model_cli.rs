//! `repro load-memory` contract: JSON fields on the last stdout line, and a clear error for a
//! missing checkpoint.
#![cfg(feature = "torch")]

use std::path::Path;
use std::process::Command;

fn repro() -> Command {
    Command::new(env!("CARGO_BIN_EXE_repro"))
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../trainer/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn load_memory_reports_the_model_and_the_resident_set() {
    let output = repro()
        .args(["load-memory", "--model-dir", &fixture("roberta_tiny")])
        .args(["--dtype", "f32", "--device", "cpu"])
        .output()
        .expect("run repro");
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("a JSON line");
    let value: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    let model_bytes = value["model_bytes"].as_u64().expect("model_bytes");
    // The tiny RoBERTa fixture: its parameters in f32 (the count the library reports).
    assert!(
        model_bytes > 0 && model_bytes.is_multiple_of(4),
        "{model_bytes}"
    );
    let before = value["rss_before"].as_u64().expect("rss_before");
    let peak = value["rss_peak"].as_u64().expect("rss_peak");
    assert!(peak >= before, "peak {peak} < before {before}");
    let ratio = value["peak_over_model"].as_f64().expect("ratio");
    assert!(ratio.is_finite() && ratio >= 0.0, "{ratio}");
    assert_eq!(value["dtype"], "f32");
}

#[test]
fn load_memory_names_a_missing_checkpoint() {
    let output = repro()
        .args(["load-memory", "--model-dir", "/nonexistent/checkpoint"])
        .output()
        .expect("run repro");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/checkpoint"),
        "stderr: {stderr}"
    );
}
