//! Ghost clipping against the micro-batch reference on the tiny RoBERTa, OPT and Llama
//! checkpoints (f32, CPU): per-example gradient norms and the clipped, summed gradient agree to
//! 1e-5 relative, on a batch mixing right- and left-padded rows whose label words also occur in
//! the inputs (so a tied embedding's lookup and head uses meet in the same rows).

use tch::{Device, Kind, Tensor};
use trainer::model::LabelWordModel;
use trainer::models::adapters::{AdapterConfig, LoraTarget};
use trainer::models::tape::{self, LayerRecord};
use trainer::models::{load_model, Model};
use trainer::optim::params::TrainableParams;

mod parity_fixtures;
use parity_fixtures::{assert_ghost_matches_microbatch, fixture, padded_batch};

fn check(model: &Model, name: &str) {
    let params = TrainableParams::from_model(model).unwrap();
    let batch = padded_batch(name);
    assert!(
        batch.attention_mask.eq(0).any().int64_value(&[]) != 0,
        "{name}: the batch must contain padding"
    );
    // The recorded forward packs the real tokens: its trained projections' records say so
    // (with only a prefix trained, no projection is recorded).
    let (_, records) = tape::record(|| {
        model
            .hidden_states(&batch.input_ids, &batch.attention_mask)
            .map(|_| ())
    })
    .unwrap();
    let linear = |packed: bool| {
        records
            .iter()
            .filter(|r| matches!(r, LayerRecord::Linear { packed: p, .. } if p.is_some() == packed))
            .count()
    };
    assert!(
        linear(true) > 0 || linear(false) == 0,
        "{name}: no packed layer on the tape"
    );
    // A bound between two reference norms, so that about half the examples are clipped.
    assert_ghost_matches_microbatch(model, &params, &batch, batch.len() / 2 - 1, name);
}

fn for_fixture(name: &str) {
    let model = load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap();
    check(&model, name);
}

#[test]
fn ghost_matches_microbatch_roberta() {
    for_fixture("roberta_tiny");
}

#[test]
fn ghost_matches_microbatch_opt() {
    for_fixture("opt_tiny");
    // project_in / project_out and post-LN blocks.
    for_fixture("opt_tiny_proj_postln");
}

#[test]
fn ghost_matches_microbatch_llama_gqa_untied_and_tied() {
    for_fixture("llama_tiny_gqa_untied");
    // Tied embeddings (stored in bf16, computed here in f32).
    for_fixture("llama_tiny_tied_bf16");
}

/// With part of the model frozen, only the trainable tensors count in the norm and the sum.
#[test]
fn ghost_matches_microbatch_with_frozen_parameters() {
    let name = "llama_tiny_tied_bf16";
    let mut model = load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap();
    for (param, tensor) in model.var_store_mut().variables() {
        if !(param.contains("layers.0.") || param.contains("norm")) {
            let _ = tensor.shallow_clone().set_requires_grad(false);
        }
    }
    check(&model, name);
}

/// LoRA (r = 4, alpha = 8 on the 32-wide fixtures) on attention projections of a frozen base: the per-example norms and clipped sums cover exactly the A
/// and B factors. B is set away from its zero init so that A's gradient is not zero.
fn lora_fixture(name: &str, targets: Vec<LoraTarget>) {
    let mut model = load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap();
    let config = AdapterConfig::Lora {
        rank: 4,
        alpha: 8.0,
        targets,
    };
    model.attach_adapter(&config, 5).unwrap();
    let params = TrainableParams::from_model(&model).unwrap();
    assert!(params
        .named()
        .iter()
        .all(|(n, _)| n.ends_with("lora_A.weight") || n.ends_with("lora_B.weight")));
    tch::no_grad(|| {
        for (n, t) in params.named() {
            if n.ends_with("lora_B.weight") {
                t.shallow_clone().copy_(&(Tensor::randn_like(t) * 0.3));
            }
        }
    });
    check(&model, name);
}

/// Prefix-tuning (MeZO's 5 tokens from real activations) on a frozen base: each example's
/// gradient of the prefix keys and values is its own rows' gradient.
fn prefix_fixture(name: &str) {
    let mut model = load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap();
    model
        .attach_adapter(&AdapterConfig::mezo_prefix(), 5)
        .unwrap();
    let params = TrainableParams::from_model(&model).unwrap();
    assert!(params
        .named()
        .iter()
        .all(|(n, _)| n.ends_with("prefix_keys") || n.ends_with("prefix_values")));
    check(&model, name);
}

#[test]
fn ghost_matches_microbatch_lora_all_families() {
    tch::manual_seed(11);
    let qv = || vec![LoraTarget::Query, LoraTarget::Value];
    lora_fixture("roberta_tiny", qv());
    lora_fixture("opt_tiny", qv());
    lora_fixture("llama_tiny_gqa_untied", qv());
    // Key projections too (GQA: narrower than the query).
    lora_fixture(
        "llama_tiny_tied_bf16",
        vec![LoraTarget::Query, LoraTarget::Key, LoraTarget::Value],
    );
}

#[test]
fn ghost_matches_microbatch_prefix_all_families() {
    prefix_fixture("roberta_tiny");
    prefix_fixture("opt_tiny_proj_postln");
    prefix_fixture("llama_tiny_gqa_untied");
}
