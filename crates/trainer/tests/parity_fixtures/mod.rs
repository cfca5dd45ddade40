//! Test support shared by the tests on the tiny parity checkpoints (`tests/fixtures/*_tiny*`):
//! their folders, one batch of their reference rows, and the ghost-clipping check against the
//! micro-batch reference.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use trainer::batch::{Batch, ExampleBatch};
use trainer::data::choice::{ChoiceBatch, ChoiceRow};
use trainer::data::PaddingSide;
use trainer::model::LabelWordModel;
use trainer::models::layers::with_padded_layout;
use trainer::optim::dp_sgd::{ghost_clipped_gradient_sum, microbatch_clipped_gradient};
use trainer::optim::ghost::PerExampleClipping;
use trainer::optim::params::TrainableParams;

/// Agreement of ghost clipping with the micro-batch reference (relative).
pub const GHOST_RELATIVE: f64 = 1e-5;

/// `||ours - reference|| / max(||reference||, floor)`.
pub fn relative_error(ours: &Tensor, reference: &Tensor, floor: f64) -> f64 {
    let diff = (ours - reference).norm().double_value(&[]);
    diff / reference.norm().double_value(&[]).max(floor)
}

/// Ghost clipping of `batch` at a bound between the `low`-th and `low + 1`-th smallest
/// per-example norm (so some examples are clipped and some not) equals the micro-batch
/// reference: per-example norms, losses, the clipped count and the clipped sum, to
/// [`GHOST_RELATIVE`]. Tensors whose exact gradient vanishes (attention key biases: softmax
/// ignores a shift shared by all keys) hold only rounding; they are measured against 1% of the
/// whole sum.
pub fn assert_ghost_matches_microbatch(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &dyn ExampleBatch,
    low: usize,
    what: &str,
) {
    // The reference runs every forward in the padded layout; ghost clipping runs in both.
    let (_, probe) =
        with_padded_layout(|| microbatch_clipped_gradient(model, params, batch, 1e30)).unwrap();
    let n = batch.num_examples();
    assert_eq!(probe.norms.len(), n, "{what}: one norm per example");
    let mut sorted = probe.norms.clone();
    sorted.sort_by(f64::total_cmp);
    let clip_norm = 0.5 * (sorted[low] + sorted[low + 1]);
    let (reference, micro) =
        with_padded_layout(|| microbatch_clipped_gradient(model, params, batch, clip_norm))
            .unwrap();
    let ghost_run = || ghost_clipped_gradient_sum(model, params, batch, clip_norm).unwrap();
    for (layout, (ghost, per_example)) in [
        ("packed", ghost_run()),
        ("padded", with_padded_layout(ghost_run)),
    ] {
        let what = format!("{what} ({layout} layout)");
        check_against_reference(&ghost, &per_example, &reference, &micro, params, n, &what);
    }
}

fn check_against_reference(
    ghost: &[Tensor],
    per_example: &PerExampleClipping,
    reference: &[Tensor],
    micro: &PerExampleClipping,
    params: &TrainableParams,
    n: usize,
    what: &str,
) {
    assert_eq!(per_example.norms.len(), n, "{what}");
    for (i, (g, m)) in per_example.norms.iter().zip(&micro.norms).enumerate() {
        assert!(
            (g - m).abs() <= GHOST_RELATIVE * m,
            "{what}: example {i} norm ghost {g} vs micro-batch {m}"
        );
    }
    for (i, (g, m)) in per_example.losses.iter().zip(&micro.losses).enumerate() {
        assert!(
            (g - m).abs() <= 1e-5 * m.abs().max(1.0),
            "{what}: loss {i}: {g} vs {m}"
        );
    }
    assert_eq!(per_example.clipped, micro.clipped, "{what}: clipped count");
    assert!(micro.clipped > 0 && micro.clipped < n, "{what}");
    let total = reference
        .iter()
        .map(|t| t.square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    for ((param, _), (g, m)) in params.named().iter().zip(ghost.iter().zip(reference)) {
        let error = relative_error(g, m, 1e-2 * total);
        assert!(
            error <= GHOST_RELATIVE,
            "{what}: {param}: relative error {error:e}"
        );
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The parity fixtures' right- and left-padded rows in one batch, scored at each row's last
/// real token, with two label words taken from the real tokens.
pub fn padded_batch(name: &str) -> Batch {
    let refs: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture(name).join("reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let ids = Tensor::cat(&[&refs["right_input_ids"], &refs["left_input_ids"]], 0);
    let mask = Tensor::cat(
        &[&refs["right_attention_mask"], &refs["left_attention_mask"]],
        0,
    );
    let (b, l) = (ids.size()[0], ids.size()[1]);
    let right = refs["right_input_ids"].size()[0];
    let lengths = mask.sum_dim_intlist(1, false, Kind::Int64);
    let positions: Vec<i64> = (0..b)
        .map(|i| {
            if i < right {
                lengths.int64_value(&[i]) - 1
            } else {
                l - 1
            }
        })
        .collect();
    let real: Vec<i64> = Vec::try_from(ids.masked_select(&mask.ne(0))).unwrap();
    let first = real[0];
    let second = *real
        .iter()
        .find(|&&t| t != first)
        .expect("two distinct tokens");
    Batch {
        input_ids: ids,
        attention_mask: mask,
        positions: Tensor::from_slice(&positions),
        labels: Tensor::from_slice(&(0..b).map(|i| i % 2).collect::<Vec<i64>>()),
        label_word_ids: Tensor::from_slice(&[first, second]),
    }
}

/// Five examples of two candidates: prompts of 3-5 tokens, continuations of 1-3 tokens (so
/// rows are padded), token ids spread over `3..vocab`; labels alternate.
pub fn choice_batch(vocab: i64, side: PaddingSide) -> ChoiceBatch {
    let token = |x: usize| 3 + (x as i64 % (vocab - 3));
    let mut examples = Vec::new();
    let mut labels = Vec::new();
    for e in 0..5usize {
        let prompt: Vec<i64> = (0..3 + e % 3).map(|t| token(7 * e + 3 * t + 1)).collect();
        let rows = (0..2usize)
            .map(|c| {
                let mut ids = prompt.clone();
                let start = ids.len();
                ids.extend((0..1 + (e + c) % 3).map(|t| token(11 * e + 5 * c + 2 * t + 2)));
                ChoiceRow { ids, start }
            })
            .collect();
        examples.push(rows);
        labels.push(e % 2);
    }
    ChoiceBatch::collate("synthetic", &examples, &labels, 0, side).unwrap()
}
