//! LoRA and prefix-tuning on the tiny RoBERTa, OPT and Llama checkpoints (f32, CPU): a LoRA
//! with B = 0 leaves the logits bit for bit; a Llama prefix initialised from real activations
//! computes what the base model computes with those tokens prepended; DP-SGD (ghost and
//! micro-batch) and DPZero steps change only the adapter tensors; an adapter run checkpoints
//! only its adapter and resumes to the uninterrupted result. (Ghost clipping of the adapters
//! against micro-batches: `optim_ghost.rs`.)

mod optim_support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use optim_support::SyntheticTask;
use tch::{Device, Kind, Tensor};
use trainer::model::LabelWordModel;
use trainer::models::adapters::{prefix_init_tokens, AdapterConfig, PrefixInit};
use trainer::models::{load_model, Model};
use trainer::optim::dp_sgd::DpSgdClipping;
use trainer::train::{run_training, Method, RunOptions, RunRecord, TrainConfig};

const FAMILIES: [&str; 3] = ["roberta_tiny", "opt_tiny", "llama_tiny_gqa_untied"];

mod parity_fixtures;
use parity_fixtures::fixture;

fn load(name: &str) -> Model {
    load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap()
}

fn is_adapter(name: &str) -> bool {
    name.contains("lora_") || name.contains("prefix_")
}

/// The parity fixture's right-padded rows (ids, mask).
fn padded_inputs(name: &str) -> (Tensor, Tensor) {
    let refs: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(fixture(name).join("reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    (
        refs["right_input_ids"].shallow_clone(),
        refs["right_attention_mask"].shallow_clone(),
    )
}

fn all_variables(model: &dyn LabelWordModel) -> BTreeMap<String, Tensor> {
    model
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

#[test]
fn lora_with_zero_b_gives_exactly_the_base_logits() {
    for name in FAMILIES {
        let mut model = load(name);
        let (ids, mask) = padded_inputs(name);
        assert!(mask.eq(0).any().int64_value(&[]) != 0, "{name}: padding");
        let base = model.full_logits(&ids, &mask).unwrap();
        let base_count = model.parameter_count();
        model
            .attach_adapter(&AdapterConfig::dpzero_lora(), 3)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let adapted = model.full_logits(&ids, &mask).unwrap();
        assert!(
            adapted.equal(&base),
            "{name}: LoRA with B = 0 changed the logits"
        );
        // r = 8 on the query and value projections of both layers: r (in + out) values per
        // projection (the Llama fixture's GQA value projection is 16 wide); the base is frozen.
        let value_out = if name.starts_with("llama") { 16 } else { 32 };
        let trainable: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        assert_eq!(trainable.len(), 8, "{name}");
        assert!(trainable.iter().all(|(n, _)| is_adapter(n)), "{name}");
        let numel: i64 = trainable.iter().map(|(_, t)| t.numel() as i64).sum();
        assert_eq!(numel, 2 * (8 * (32 + 32) + 8 * (32 + value_out)), "{name}");
        assert_eq!(model.parameter_count(), base_count + numel, "{name}");
        // The branch is live: a non-zero B moves the logits.
        tch::no_grad(|| {
            for (n, t) in &trainable {
                if n.ends_with("lora_B.weight") {
                    let _ = t.shallow_clone().fill_(0.05);
                }
            }
        });
        let moved = model.full_logits(&ids, &mask).unwrap();
        assert!(!moved.allclose(&base, 1e-4, 1e-4, false), "{name}");
    }
}

/// A duplicate is the loaded model again, bit for bit, in storage of its own: same variables and
/// logits, and moving its weights leaves the original as loaded. A model carrying an adapter is
/// not duplicated.
#[test]
fn a_duplicate_is_the_loaded_model_in_storage_of_its_own() {
    for name in FAMILIES {
        let original = load(name);
        let copy = original.duplicate(Device::Cpu).unwrap();
        let (before, copied) = (all_variables(&original), all_variables(&copy));
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            copied.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (n, t) in &before {
            assert!(t.equal(&copied[n]), "{name}: {n} differs");
            assert_eq!(t.kind(), copied[n].kind(), "{name}: {n}");
        }
        let (ids, mask) = padded_inputs(name);
        let logits = original.full_logits(&ids, &mask).unwrap();
        assert!(
            copy.full_logits(&ids, &mask).unwrap().equal(&logits),
            "{name}"
        );
        tch::no_grad(|| {
            for (_, t) in copy.var_store().variables() {
                let _ = t.shallow_clone().fill_(0.5);
            }
        });
        for (n, t) in all_variables(&original) {
            assert!(
                t.equal(&before[&n]),
                "{name}: the copy's storage is the original's ({n})"
            );
        }
        let mut adapted = load(name);
        adapted
            .attach_adapter(&AdapterConfig::dpzero_lora(), 3)
            .unwrap();
        let err = adapted.duplicate(Device::Cpu).err().expect("refused");
        assert!(err.to_string().contains("adapter"), "{name}: {err}");
    }
}

/// A Llama prefix taken from the activations of tokens s equals, on a causal model, prepending s
/// to the input: the keys and values of s at every layer do not depend on later tokens, and
/// the real tokens are rotated from position P as after P cached positions.
#[test]
fn llama_prefix_from_real_activations_equals_prepending_its_tokens() {
    let name = "llama_tiny_gqa_untied";
    let seed = 23;
    let tokens = 5;
    let mut model = load(name);
    let (ids, mask) = padded_inputs(name);
    let vocab = model.config().vocab_size();
    let prefix = Tensor::from_slice(&prefix_init_tokens(vocab, tokens, seed));
    let b = ids.size()[0];
    let long_ids = Tensor::cat(&[&prefix.unsqueeze(0).expand([b, tokens], false), &ids], 1);
    let long_mask = Tensor::cat(&[&mask.ones_like().narrow(1, 0, tokens), &mask], 1);
    let expected =
        model
            .full_logits(&long_ids, &long_mask)
            .unwrap()
            .narrow(1, tokens, ids.size()[1]);
    model
        .attach_adapter(
            &AdapterConfig::Prefix {
                tokens,
                init: PrefixInit::RealActivations,
            },
            seed,
        )
        .unwrap();
    let ours = model.full_logits(&ids, &mask).unwrap();
    // Compare the real (unpadded) positions only.
    let real = mask.ne(0).unsqueeze(-1).expand_as(&ours);
    let diff = (ours.masked_select(&real) - expected.masked_select(&real))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-5, "max |diff| {diff:e}");
}

fn small_run(method: Method, adapter: AdapterConfig) -> TrainConfig {
    TrainConfig {
        method,
        learning_rate: if method == Method::DpSgd { 0.5 } else { 1e-2 },
        steps: 3,
        batch_size: 8,
        zo_eps: 1e-3,
        clip_norm: 1.0,
        epsilon: Some(8.0),
        eval_every: 0,
        checkpoint_every: 0,
        seed: 7,
        adapter: Some(adapter),
        ..TrainConfig::default()
    }
}

fn train(model: &mut Model, config: &TrainConfig, resume: bool) -> RunRecord {
    let mut source = SyntheticTask::new(64, 17);
    let dev = SyntheticTask::new(16, 18).batches(16);
    let test = SyntheticTask::new(16, 19).batches(16);
    let options = RunOptions {
        resume,
        ..RunOptions::default()
    };
    run_training(model, config, &mut source, &dev, &test, &options).unwrap()
}

/// DP-SGD (ghost and micro-batch clipping) and DPZero with LoRA and with a prefix, on each
/// family: after training every base tensor is bit for bit what it was, every adapter tensor
/// moved, and the run counted only the adapter's coordinates.
#[test]
fn training_changes_only_the_adapter_tensors() {
    let runs: [(Method, DpSgdClipping); 3] = [
        (Method::DpSgd, DpSgdClipping::Ghost),
        (Method::DpSgd, DpSgdClipping::Microbatch),
        (Method::Dpzero, DpSgdClipping::Ghost),
    ];
    for name in FAMILIES {
        for adapter in [AdapterConfig::dpzero_lora(), AdapterConfig::mezo_prefix()] {
            for (method, clipping) in runs {
                let what = format!("{name} {adapter:?} {method:?} {clipping:?}");
                let mut model = load(name);
                let mut config = small_run(method, adapter.clone());
                config.dp_sgd_clipping = clipping;
                // Attached here with the run's seed; run_training accepts the same adapter.
                model.attach_adapter(&adapter, config.seed).unwrap();
                let before = all_variables(&model);
                let record = train(&mut model, &config, false);
                let after = all_variables(&model);
                assert_eq!(before.len(), after.len(), "{what}");
                let mut adapter_numel = 0;
                for (n, t) in &before {
                    if is_adapter(n) {
                        adapter_numel += t.numel();
                        assert!(
                            !after[n].equal(t),
                            "{what}: adapter tensor {n} did not move"
                        );
                    } else {
                        assert!(after[n].equal(t), "{what}: base tensor {n} changed");
                    }
                }
                assert_eq!(record.resolved.total_coordinates, adapter_numel, "{what}");
            }
        }
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dpzo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An adapter run interrupted after 3 of 6 steps and resumed from its checkpoint ends bit for
/// bit where the uninterrupted run does; the checkpoint holds the adapter tensors only.
/// DP-SGD with LoRA on OPT, DPZero with a prefix on Llama (checkpoints every step, so no
/// perturbation is carried across the interruption).
#[test]
fn adapter_checkpoint_resume_round_trip() {
    let cases = [
        ("opt_tiny", Method::DpSgd, AdapterConfig::dpzero_lora(), 2),
        (
            "llama_tiny_gqa_untied",
            Method::Dpzero,
            AdapterConfig::mezo_prefix(),
            1,
        ),
    ];
    for (name, method, adapter, every) in cases {
        let what = format!("{name} {method:?}");
        let dir = scratch_dir(&format!("adapter-resume-{name}"));
        let mut config = small_run(method, adapter);
        config.steps = 6;
        // A fixed noise multiplier: the resumed run plans more steps than the first part.
        config.epsilon = None;
        config.noise_multiplier = Some(1.0);
        config.checkpoint_every = every;
        config.checkpoint_dir = Some(dir.join("whole"));
        let mut whole = load(name);
        let uninterrupted = train(&mut whole, &config, false);

        config.checkpoint_dir = Some(dir.join("split"));
        config.steps = 3;
        let mut first = load(name);
        train(&mut first, &config, false);
        let latest = trainer::train::checkpoint::latest(&dir.join("split"))
            .unwrap()
            .unwrap()
            .0;
        let saved: Vec<String> = Tensor::read_safetensors(latest.join("weights.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let trained = first
            .var_store()
            .variables()
            .into_iter()
            .filter(|(n, _)| is_adapter(n))
            .count();
        assert_eq!(saved.len(), trained, "{what}: {saved:?}");
        assert!(saved.iter().all(|n| is_adapter(n)), "{what}: {saved:?}");

        config.steps = 6;
        let mut resumed_model = load(name);
        let resumed = train(&mut resumed_model, &config, true);
        assert_eq!(resumed.resumed_from, Some(3), "{what}");
        assert_eq!(resumed.test, uninterrupted.test, "{what}");
        let (a, b) = (all_variables(&whole), all_variables(&resumed_model));
        for (n, t) in &a {
            assert!(b[n].equal(t), "{what}: {n} differs after resume");
        }
        // A bare run cannot resume an adapter checkpoint.
        let mut bare = config.clone();
        bare.adapter = None;
        let err = run_training(
            &mut load(name),
            &bare,
            &mut SyntheticTask::new(64, 17),
            &[],
            &[] as &[trainer::batch::Batch],
            &RunOptions {
                resume: true,
                ..RunOptions::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("adapter"), "{what}: {err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Settings that cannot work are refused with the value named.
#[test]
fn bad_adapter_settings_are_refused() {
    let mut model = load("opt_tiny");
    let cases = [
        (
            AdapterConfig::Lora {
                rank: 0,
                alpha: 16.0,
                targets: vec![],
            },
            "rank 0",
        ),
        (
            AdapterConfig::Lora {
                rank: 64,
                alpha: 16.0,
                targets: vec![trainer::models::adapters::LoraTarget::Query],
            },
            "rank 64",
        ),
        (
            AdapterConfig::Prefix {
                tokens: 0,
                init: PrefixInit::Normal,
            },
            "tokens 0",
        ),
    ];
    for (config, needle) in cases {
        let err = model.attach_adapter(&config, 1).unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
    let err: Result<AdapterConfig, _> =
        serde_json::from_str(r#"{"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.1}"#);
    assert!(err.unwrap_err().to_string().contains("dropout"));
}

/// PEFT export: `adapter_model.safetensors` holds exactly the LoRA factors under PEFT's keys
/// (`base_model.model.` + the transformers module path), and merging them as PEFT does,
/// `W + (alpha / r) B A`, into a bare copy of the base reproduces the adapted model's logits.
#[test]
fn lora_exports_in_peft_layout_and_merges_to_the_same_logits() {
    let first_keys = [
        (
            "roberta_tiny",
            "base_model.model.roberta.encoder.layer.0.attention.self.query.lora_A.weight",
            "roberta.",
        ),
        (
            "opt_tiny",
            "base_model.model.model.decoder.layers.0.self_attn.q_proj.lora_A.weight",
            "model.",
        ),
        (
            "llama_tiny_gqa_untied",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "model.",
        ),
    ];
    for (name, first_key, hf_prefix) in first_keys {
        let mut model = load(name);
        model
            .attach_adapter(&AdapterConfig::dpzero_lora(), 9)
            .unwrap();
        tch::no_grad(|| {
            for (n, t) in model.var_store().variables() {
                if n.ends_with("lora_B.weight") {
                    let _ = t.shallow_clone().normal_(0.0, 0.2);
                }
            }
        });
        let dir = scratch_dir(&format!("peft-{name}"));
        trainer::models::export::export_peft_lora(&model, &dir, Some(name)).unwrap();
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["peft_type"], "LORA");
        assert_eq!(config["r"], 8);
        assert_eq!(config["lora_alpha"], 16.0);
        let expected_targets = if name.starts_with("roberta") {
            serde_json::json!(["query", "value"])
        } else {
            serde_json::json!(["q_proj", "v_proj"])
        };
        assert_eq!(config["target_modules"], expected_targets, "{name}");
        let saved: BTreeMap<String, Tensor> =
            Tensor::read_safetensors(dir.join("adapter_model.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(saved.len(), 8, "{name}: {:?}", saved.keys());
        assert!(saved.contains_key(first_key), "{name}: {:?}", saved.keys());

        let bare = load(name);
        let base_vars = bare.var_store().variables();
        tch::no_grad(|| {
            for (key, a) in &saved {
                let Some(module) = key.strip_suffix(".lora_A.weight") else {
                    continue;
                };
                let b = &saved[&format!("{module}.lora_B.weight")];
                let ours = module
                    .strip_prefix("base_model.model.")
                    .and_then(|m| m.strip_prefix(hf_prefix))
                    .unwrap();
                let weight = &base_vars[&format!("{ours}.weight")];
                let _ = weight.shallow_clone().g_add_(&(b.matmul(a) * 2.0));
            }
        });
        let (ids, mask) = padded_inputs(name);
        let adapted = model.full_logits(&ids, &mask).unwrap();
        let merged = bare.full_logits(&ids, &mask).unwrap();
        let diff = (adapted - merged).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: merged vs adapted max |diff| {diff:e}");
        // The whole-model export refuses a model with an adapter.
        assert!(trainer::models::export::export_hf(&model, &dir, None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
