//! `export_hf` round trip: a model written in the Hugging Face layout loads back with identical
//! parameters and logits.

use std::path::Path;
use tch::{Device, Kind, Tensor};
use trainer::model::LabelWordModel;
use trainer::models::export::export_hf;
use trainer::models::load_model;

#[test]
fn exported_checkpoints_reload_identically() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, kind) in [
        ("roberta_tiny", Kind::Float),
        ("opt_tiny_proj_postln", Kind::Float),
        ("llama_tiny_gqa_untied", Kind::BFloat16),
        ("llama_tiny_tied_bf16", Kind::Float),
    ] {
        let original = load_model(&fixtures.join(name), kind, Device::Cpu).unwrap();
        let dir = std::env::temp_dir().join(format!("models_export_{name}_{}", std::process::id()));
        export_hf(&original, &dir, None).unwrap();
        let reloaded = load_model(&dir, kind, Device::Cpu).unwrap();
        assert_eq!(reloaded.config(), original.config(), "{name}: config");
        let before = original.var_store().variables();
        let after = reloaded.var_store().variables();
        assert_eq!(before.len(), after.len(), "{name}");
        for (param, value) in &before {
            assert!(value.equal(&after[param]), "{name}: {param} changed");
        }
        let ids = Tensor::from_slice(&[3i64, 9, 27, 81]).view([1, 4]);
        let mask = ids.ones_like();
        let a = tch::no_grad(|| original.full_logits(&ids, &mask)).unwrap();
        let b = tch::no_grad(|| reloaded.full_logits(&ids, &mask)).unwrap();
        assert!(a.equal(&b), "{name}: logits changed");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Tensors above the loader's 16 MiB run size are copied in runs of rows (checkpoint.rs,
/// `copy_in_chunks`): a 140,000 x 32 f32 embedding (17.9 MB, two runs) and its untied output
/// matrix reload bit for bit, and converted to bf16 on load equal the bf16 conversion of the
/// original.
#[test]
fn tensors_larger_than_one_load_run_reload_identically() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = std::env::temp_dir().join(format!("models_export_large_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(fixtures.join("llama_tiny_gqa_untied/config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["vocab_size"] = 140_000.into();
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let config = trainer::models::ModelConfig::from_file(&config_path).unwrap();
    let original = trainer::models::random_from_config(&config, Kind::Float, Device::Cpu).unwrap();
    let export_dir = dir.join("checkpoint");
    export_hf(&original, &export_dir, None).unwrap();
    let before = original.var_store().variables();
    let embedding = &before["embed_tokens.weight"];
    assert!(
        embedding.numel() * 4 > 16 << 20,
        "the test needs a multi-run tensor"
    );
    for kind in [Kind::Float, Kind::BFloat16] {
        let reloaded = load_model(&export_dir, kind, Device::Cpu).unwrap();
        let after = reloaded.var_store().variables();
        assert_eq!(before.len(), after.len());
        for (param, value) in &before {
            assert!(
                value.to_kind(kind).equal(&after[param]),
                "{param} changed on reload as {kind:?}"
            );
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
