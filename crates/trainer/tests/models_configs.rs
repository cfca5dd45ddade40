//! Published configurations, the analytic parameter count and `random_from_config`.

use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use trainer::batch::Batch;
use trainer::model::LabelWordModel;
use trainer::models::config::{published, PUBLISHED_NAMES};
use trainer::models::{load_model, random_from_config, ModelConfig};

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn published_configs_have_the_parameter_counts_transformers_gives() {
    // Reference: sum of p.numel() over transformers 5.24.0 RobertaForMaskedLM / OPTForCausalLM
    // built from these files on the meta device (tied weights counted once).
    for (file, expected) in [
        ("configs/roberta-large.json", 355_412_057i64),
        ("configs/opt-1.3b.json", 1_315_758_080),
        ("configs/opt-2.7b.json", 2_651_596_800),
        // Closed form for a pre-LN OPT with tied head and word_embed_proj_dim = h:
        // V h + (P + 2) h + L (12 h^2 + 13 h) + 2 h (V 50272, P 2048, FFN 4h).
        ("configs/opt-30b.json", 29_974_540_288),
        ("configs/opt-66b.json", 65_719_701_504),
        // Closed form for a tied Llama with GQA and no biases: V h + L (2 h^2 + 2 h kv_w +
        // 3 h I + 2 h) + h (V 49152, h 576, kv_w 192, I 1536, L 30): SmolLM2-135M's published
        // 134,515,008.
        ("configs/smollm2-135m.json", 134_515_008),
    ] {
        let config = ModelConfig::from_file(&path(file)).unwrap();
        assert_eq!(config.parameter_count(), expected, "{file}");
    }
}

#[test]
fn published_names_cover_the_configs_folder_and_parse_as_the_files() {
    let mut on_disk: Vec<String> = std::fs::read_dir(path("configs"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = PUBLISHED_NAMES.iter().map(|n| n.to_string()).collect();
    names.sort();
    assert_eq!(names, on_disk);
    for name in PUBLISHED_NAMES {
        let from_disk = ModelConfig::from_file(&path(&format!("configs/{name}.json"))).unwrap();
        let shipped = published(name).unwrap();
        assert_eq!(
            shipped.parameter_count(),
            from_disk.parameter_count(),
            "{name}"
        );
        assert_eq!(shipped.model_type(), from_disk.model_type(), "{name}");
    }
    let error = published("opt-7b").unwrap_err().to_string();
    assert!(
        error.contains("\"opt-7b\"") && error.contains("opt-66b"),
        "{error}"
    );
}

#[test]
fn analytic_count_matches_built_models() {
    for name in [
        "roberta_tiny",
        "opt_tiny",
        "opt_tiny_proj_postln",
        "llama_tiny_gqa_untied",
        "llama_tiny_tied_bf16",
    ] {
        let dir = path("tests/fixtures").join(name);
        let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let model = load_model(&dir, Kind::Float, Device::Cpu).unwrap();
        assert_eq!(model.parameter_count(), config.parameter_count(), "{name}");
    }
}

/// Random models of each dtype run, train every parameter, and give label-word logits in the
/// dtype of their losses: f32, or f64 for an f64 model (a reference run in f64 must not round
/// its losses, or norms, to f32 anywhere).
#[test]
fn random_models_run_in_each_dtype_and_have_trainable_parameters() {
    for name in ["opt_tiny", "llama_tiny_gqa_untied"] {
        let config =
            ModelConfig::from_file(&path("tests/fixtures").join(name).join("config.json")).unwrap();
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half, Kind::Double] {
            tch::manual_seed(7);
            let model = random_from_config(&config, kind, Device::Cpu).unwrap();
            assert!(model
                .var_store()
                .variables()
                .values()
                .all(|v| v.kind() == kind));
            assert_eq!(
                model.var_store().trainable_variables().len(),
                model.var_store().len()
            );
            let batch = Batch {
                input_ids: Tensor::from_slice(&[5i64, 6, 7, 1, 8, 9, 10, 11]).view([2, 4]),
                attention_mask: Tensor::from_slice(&[1i64, 1, 1, 0, 1, 1, 1, 1]).view([2, 4]),
                positions: Tensor::from_slice(&[2i64, 3]),
                labels: Tensor::from_slice(&[0i64, 1]),
                label_word_ids: Tensor::from_slice(&[20i64, 30]),
            };
            let logits = model.label_word_logits(&batch).unwrap();
            assert_eq!(logits.size(), [2, 2]);
            let expected = if kind == Kind::Double {
                Kind::Double
            } else {
                Kind::Float
            };
            assert_eq!(logits.kind(), expected, "{name} {kind:?}");
            let finite = logits.isfinite().all().int64_value(&[]) == 1;
            assert!(finite, "{name} {kind:?}: non-finite logits {logits}");
        }
    }
}

#[test]
fn refused_configs_name_the_field() {
    let text = r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}"#;
    let err = ModelConfig::from_json_str(text, Path::new("x.json")).expect_err("scaled RoPE");
    assert!(err.to_string().contains("rope_scaling"), "{err}");
    let err = ModelConfig::from_json_str(r#"{"model_type": "bert"}"#, Path::new("y.json"))
        .expect_err("bert");
    assert!(err.to_string().contains("\"bert\""), "{err}");
}
