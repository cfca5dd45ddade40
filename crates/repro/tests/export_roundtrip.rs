//! What we export, we load: `repro export-hf` turns the SmolLM2 GGUF into a Hugging Face
//! directory that `repro eval --model-dir` and `table2 --preset paper --model-dir` accept, and
//! that scores exactly as the GGUF it came from (same f32 weights, same tokenizer).
#![cfg(feature = "torch")]

mod common;

use std::path::PathBuf;

fn gguf() -> PathBuf {
    let assets = std::env::var_os("DPZO_ASSETS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.assets"));
    let path = assets.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} not found: run scripts/assets.sh",
        path.display()
    );
    path
}

#[test]
fn exported_checkpoint_loads_in_eval_and_table2() {
    let dir = std::env::temp_dir().join(format!("dpzo-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = common::repro_line(&format!(
        "export-hf --gguf {} --out {} --dtype f32",
        gguf().display(),
        dir.display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("tokenizer_config.json").exists());
    let eval = |model: &str| {
        common::last_json(&common::repro_line(&format!(
            "eval --task polarity --max-examples 6 --batch-size 6 --device cpu --json {model}"
        )))
    };
    let from_gguf = eval("");
    let from_dir = eval(&format!("--model-dir {}", dir.display()));
    assert_eq!(
        from_gguf["accuracy"], from_dir["accuracy"],
        "{from_gguf} vs {from_dir}"
    );
    let (a, b) = (
        from_gguf["loss"].as_f64().unwrap(),
        from_dir["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-6 * a.abs(), "{from_gguf} vs {from_dir}");
    // The paper preset builds its encoder from the directory before anything runs.
    let out = common::repro_line(&format!(
        "table2 --preset paper --model-dir {} --device cpu --dry-run --experiments {}/../../experiments",
        dir.display(),
        env!("CARGO_MANIFEST_DIR")
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
