//! `repro <target> --dry-run --json` for every target and preset (dry_run_json_cli.rs checks the
//! smoke preset in detail): every cell's effective configuration. The settings a method
//! declares in `[method.<m>]` reach every one of its cells in every preset, unless the preset's own
//! `[preset.<p>.method.<m>]` table sets them (precedence: defaults < preset < method < preset-method).
#![cfg(feature = "torch")]

mod common;

use std::path::Path;

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn effective(target: &str, preset: &str) -> serde_json::Value {
    let root = workspace();
    let line = format!(
        "{target} --preset {preset} --device cpu --dry-run --json --experiments {} --model-dir {}",
        root.join("experiments").display(),
        root.join("crates/trainer/tests/fixtures/roberta_tiny")
            .display(),
    );
    let output = common::repro_line(&line);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{line}: {stderr}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{line}: stdout is not one JSON document ({e}): {stderr}"))
}

#[test]
fn method_settings_win_over_preset_settings_in_every_preset() {
    for target in ["table2", "table3"] {
        let path = workspace().join(format!("experiments/{target}.toml"));
        let spec: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let methods = spec.get("method").and_then(|m| m.as_table()).cloned();
        let presets = spec["preset"].as_table().unwrap();
        for (preset_name, preset) in presets {
            let doc = effective(target, preset_name);
            let cells = doc["cells"].as_array().unwrap();
            assert!(!cells.is_empty(), "{target}/{preset_name}: no cell");
            let Some(methods) = &methods else { continue };
            for (method, own) in methods {
                let preset_own = preset
                    .get("method")
                    .and_then(|m| m.get(method))
                    .and_then(|m| m.as_table());
                let mine: Vec<_> = cells
                    .iter()
                    .filter(|c| c["config"]["method"] == method.as_str())
                    .collect();
                for (key, value) in own.as_table().unwrap() {
                    if preset_own.is_some_and(|p| p.contains_key(key)) || value.is_table() {
                        continue;
                    }
                    let want = serde_json::to_value(value).unwrap();
                    for c in &mine {
                        assert_eq!(
                            c["config"][key], want,
                            "{target}/{preset_name}/{}: {key}",
                            c["stem"]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn dp_ft_runs_at_its_own_learning_rate_in_every_preset() {
    let spec: toml::Table = toml::from_str(
        &std::fs::read_to_string(workspace().join("experiments/table2.toml")).unwrap(),
    )
    .unwrap();
    let lr = spec["method"]["dp-ft"]["learning_rate"].as_float().unwrap();
    let general = spec["train"]["learning_rate"].as_float().unwrap();
    assert_ne!(
        lr, general,
        "the test needs distinct values to mean anything"
    );
    for preset in spec["preset"].as_table().unwrap().keys() {
        let doc = effective("table2", preset);
        let dp_ft: Vec<_> = doc["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["config"]["method"] == "dp-ft")
            .collect();
        assert!(!dp_ft.is_empty(), "{preset}: no dp-ft cell");
        for c in dp_ft {
            assert_eq!(
                c["config"]["learning_rate"].as_f64(),
                Some(lr),
                "{preset}: {}",
                c["stem"]
            );
        }
    }
}
