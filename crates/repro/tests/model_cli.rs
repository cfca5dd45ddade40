//! `repro load-memory` contract: JSON fields on the last stdout line, and a clear error for a
//! missing checkpoint; an unknown `--normal-math` is refused naming it.
#![cfg(feature = "torch")]

mod common;

use std::path::Path;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../trainer/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn load_memory_reports_the_model_and_the_resident_set() {
    let line = format!(
        "load-memory --model-dir {} --dtype f32 --device cpu",
        fixture("roberta_tiny")
    );
    let value = common::last_json(&common::repro_line(&line));
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
    common::assert_fails_naming(
        "load-memory --model-dir /nonexistent/checkpoint",
        "/nonexistent/checkpoint",
    );
}

#[test]
fn an_unknown_normal_math_is_refused_naming_it() {
    for command in [
        "table2 --dry-run",
        "table3 --dry-run",
        "memory --out /tmp/unused",
    ] {
        common::assert_fails_naming(&format!("{command} --normal-math sloppy"), "sloppy");
    }
}
