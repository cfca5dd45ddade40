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
