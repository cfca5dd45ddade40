//! Ghost clipping against the micro-batch reference on the tiny RoBERTa, OPT and Llama
//! checkpoints (f32, CPU): per-example gradient norms and the clipped, summed gradient agree to
//! 1e-5 relative, on a batch mixing right- and left-padded rows whose label words also occur in
//! the inputs (so a tied embedding's lookup and head uses meet in the same rows).

use tch::{Device, Kind, Tensor};
use trainer::model::LabelWordModel;
use trainer::models::adapters::{AdapterConfig, LoraTarget};
use trainer::models::{load_model, Model};
use trainer::optim::dp_sgd::{ghost_clipped_gradient_sum, microbatch_clipped_gradient};
use trainer::optim::params::TrainableParams;

mod parity_fixtures;
use parity_fixtures::{fixture, padded_batch};

const RELATIVE: f64 = 1e-5;

/// `||ours - reference|| / max(||reference||, floor)`.
fn relative_error(ours: &Tensor, reference: &Tensor, floor: f64) -> f64 {
    let diff = (ours - reference).norm().double_value(&[]);
    diff / reference.norm().double_value(&[]).max(floor)
}

fn check(model: &Model, name: &str) {
    let params = TrainableParams::from_model(model).unwrap();
    let batch = padded_batch(name);
    assert!(
        batch.attention_mask.eq(0).any().int64_value(&[]) != 0,
        "{name}: the batch must contain padding"
    );
    // Reference norms first, then a bound between two of them so that about half are clipped.
    let (_, probe) = microbatch_clipped_gradient(model, &params, &batch, 1e30).unwrap();
    let mut sorted = probe.norms.clone();
    sorted.sort_by(f64::total_cmp);
    let half = sorted.len() / 2;
    let clip_norm = 0.5 * (sorted[half - 1] + sorted[half]);
    let (reference, micro) =
        microbatch_clipped_gradient(model, &params, &batch, clip_norm).unwrap();
    let (ghost, per_example) =
        ghost_clipped_gradient_sum(model, &params, &batch, clip_norm).unwrap();
    assert_eq!(per_example.norms.len(), batch.len());
    for (i, (g, m)) in per_example.norms.iter().zip(&micro.norms).enumerate() {
        assert!(
            (g - m).abs() <= RELATIVE * m,
            "{name}: example {i} norm ghost {g} vs micro-batch {m}"
        );
    }
    for (i, (g, m)) in per_example.losses.iter().zip(&micro.losses).enumerate() {
        assert!(
            (g - m).abs() <= 1e-5 * m.abs().max(1.0),
            "{name}: loss {i}: {g} vs {m}"
        );
    }
    assert_eq!(per_example.clipped, micro.clipped, "{name}: clipped count");
    assert!(micro.clipped > 0 && micro.clipped < batch.len(), "{name}");
    // Tensors whose exact gradient vanishes (attention key biases: softmax ignores a shift
    // shared by all keys) hold only rounding; they are measured against 1% of the whole sum.
    let total = reference
        .iter()
        .map(|t| t.square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    for ((param, _), (g, m)) in params.named().iter().zip(ghost.iter().zip(&reference)) {
        let error = relative_error(g, m, 1e-2 * total);
        assert!(
            error <= RELATIVE,
            "{name}: {param}: relative error {error:e}"
        );
    }
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
