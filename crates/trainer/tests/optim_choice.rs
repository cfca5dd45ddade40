//! Multiple choice through the methods' per-example machinery, on the tiny OPT and Llama
//! checkpoints (f32, CPU): candidate scores against the full-vocabulary logits, ghost clipping
//! against the micro-batch reference with all candidates of an example as one unit, and the ZO
//! step's clipping of one scalar per example (not per candidate row).

use tch::{Device, Kind, Tensor};
use trainer::batch::ExampleBatch;
use trainer::data::PaddingSide;
use trainer::model::LabelWordModel;
use trainer::models::adapters::AdapterConfig;
use trainer::models::{load_model, Model};
use trainer::optim::loss::{per_example_loss_values, per_example_losses};
use trainer::optim::params::TrainableParams;
use trainer::optim::zo::{directional_differences, first_direction_seed, zo_step};

mod optim_support;
mod parity_fixtures;
use optim_support::{clip_norm_keeping, reporting_dp_step};
use parity_fixtures::{assert_ghost_matches_microbatch, choice_batch, fixture};

const FIXTURES: [&str; 3] = ["opt_tiny", "llama_tiny_gqa_untied", "llama_tiny_tied_bf16"];

fn load(name: &str) -> Model {
    load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap()
}

fn vocab(model: &Model) -> i64 {
    model.vocab_size().unwrap()
}

/// Each candidate's score is the mean over its continuation tokens of log p(token | prefix),
/// read here from the full-vocabulary logits at every position; the loss is the cross-entropy
/// over the example's candidates; both padding sides give the same values.
#[test]
fn choice_scores_are_mean_continuation_log_likelihoods_and_the_loss_their_cross_entropy() {
    for name in FIXTURES {
        let model = load(name);
        let mut by_side = Vec::new();
        for side in [PaddingSide::Right, PaddingSide::Left] {
            let batch = choice_batch(vocab(&model), side);
            let scores = tch::no_grad(|| batch.scores(&model)).unwrap();
            assert_eq!(scores.size(), [5, 2], "{name}");
            let log_probs = tch::no_grad(|| {
                model
                    .full_logits(&batch.input_ids, &batch.attention_mask)
                    .unwrap()
                    .log_softmax(-1, Kind::Double)
            });
            let ids: Vec<Vec<i64>> = Vec::try_from(&batch.input_ids).unwrap();
            let marks: Vec<Vec<i64>> = Vec::try_from(&batch.continuation_mask).unwrap();
            let labels: Vec<i64> = Vec::try_from(&batch.labels).unwrap();
            let losses = per_example_loss_values(&model, &batch).unwrap();
            for e in 0..5 {
                let mut expected = [0.0f64; 2];
                for (c, slot) in expected.iter_mut().enumerate() {
                    let r = 2 * e + c;
                    let positions: Vec<usize> =
                        (0..ids[r].len()).filter(|&t| marks[r][t] == 1).collect();
                    assert!(!positions.is_empty());
                    *slot = positions
                        .iter()
                        .map(|&t| log_probs.double_value(&[r as i64, t as i64 - 1, ids[r][t]]))
                        .sum::<f64>()
                        / positions.len() as f64;
                    let ours = scores.double_value(&[e as i64, c as i64]);
                    assert!(
                        (ours - *slot).abs() < 1e-5,
                        "{name} {side:?}: example {e} candidate {c}: {ours} vs {slot}"
                    );
                }
                let norm = (expected[0].exp() + expected[1].exp()).ln();
                let loss = norm - expected[labels[e] as usize];
                assert!(
                    (losses[e] - loss).abs() < 1e-5,
                    "{name} {side:?}: loss {e}: {} vs {loss}",
                    losses[e]
                );
            }
            by_side.push(Vec::<f64>::try_from(scores.to_kind(Kind::Double).view(-1)).unwrap());
        }
        for (right, left) in by_side[0].iter().zip(&by_side[1]) {
            assert!(
                (right - left).abs() < 1e-5,
                "{name}: padding side changes a score"
            );
        }
    }
}

/// Ghost clipping groups an example's candidate rows: its per-example norms, losses, clipped
/// count and clipped sum equal the micro-batch reference's, which backpropagates each example
/// (both its rows) alone.
fn check_ghost(model: &Model, what: &str) {
    for side in [PaddingSide::Right, PaddingSide::Left] {
        let params = TrainableParams::from_model(model).unwrap();
        let batch = choice_batch(vocab(model), side);
        assert_ghost_matches_microbatch(model, &params, &batch, 1, &format!("{what} {side:?}"));
    }
}

#[test]
fn ghost_matches_microbatch_on_choice_batches() {
    for name in FIXTURES {
        check_ghost(&load(name), name);
    }
}

/// The adapters of `dp-lora` and `dp-prefix` on a choice batch: LoRA (B moved off its zero
/// init so A has a gradient) and MeZO's prefix.
#[test]
fn ghost_matches_microbatch_on_choice_batches_with_adapters() {
    tch::manual_seed(11);
    for name in ["opt_tiny", "llama_tiny_tied_bf16"] {
        let mut model = load(name);
        model
            .attach_adapter(&AdapterConfig::dpzero_lora(), 5)
            .unwrap();
        tch::no_grad(|| {
            for (n, t) in TrainableParams::from_model(&model).unwrap().named() {
                if n.ends_with("lora_B.weight") {
                    t.shallow_clone().copy_(&(Tensor::randn_like(t) * 0.3));
                }
            }
        });
        check_ghost(&model, &format!("{name} lora"));
        let mut model = load(name);
        model
            .attach_adapter(&AdapterConfig::mezo_prefix(), 5)
            .unwrap();
        check_ghost(&model, &format!("{name} prefix"));
    }
}

/// A DP ZO step on a choice batch clips B per-example differences (each example's loss over
/// all its candidates), and releases their clipped sum over B.
#[test]
fn zo_step_clips_one_scalar_per_example_of_a_choice_batch() {
    let model = load("llama_tiny_gqa_untied");
    let params = TrainableParams::from_model(&model).unwrap();
    let batch = choice_batch(vocab(&model), PaddingSide::Left);
    let (run_seed, step, mu) = (9u64, 3u64, 1e-3);
    let seed = first_direction_seed(run_seed, step);
    let differences = directional_differences(&model, &params, &batch, seed, mu).unwrap();
    assert_eq!(
        differences.len(),
        5,
        "one scalar per example, not per candidate row"
    );
    let clip_norm = clip_norm_keeping(&differences, 2);
    let expected: f64 = differences
        .iter()
        .map(|d| d.clamp(-clip_norm, clip_norm))
        .sum::<f64>()
        / 5.0;
    let settings = reporting_dp_step(mu, 1, clip_norm, 0.0, None);
    let (report, carried) = zo_step(
        &model, &params, &batch, &settings, run_seed, step, None, None,
    )
    .unwrap();
    assert!(carried.is_none());
    assert_eq!(report.seeds, vec![seed]);
    assert_eq!(
        report.clipped, 3,
        "3 of the 5 per-example scalars exceed the median bound"
    );
    let released = report.projected_grads[0];
    assert!(
        (released - expected).abs() <= 1e-4 * expected.abs().max(clip_norm),
        "released {released} vs clipped mean {expected}"
    );
    let diagnostics = report.diagnostics.unwrap();
    assert!((diagnostics.clipped_fraction - 3.0 / 5.0).abs() < 1e-12);
    // The per-example losses are B values too.
    let losses = per_example_losses(&model, &batch).unwrap();
    assert_eq!(losses.size(), [5]);
}
