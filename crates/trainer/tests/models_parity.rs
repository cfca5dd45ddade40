//! Parity of the tch RoBERTa / OPT / Llama forwards with Hugging Face transformers.
//!
//! Reference logits come from transformers 5.24.0 (eager attention, f32, CPU) on tiny random
//! checkpoints written by `scripts/fixtures/gen_tiny_models.py` (versions pinned there), for a
//! batch of three rows of lengths 7, 10 and 4, padded right and padded left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use trainer::batch::Batch;
use trainer::model::LabelWordModel;
use trainer::models::layers::{with_padded_layout, TokenLayout};
use trainer::models::{load_model, Model, ModelError};

/// f32 CPU tolerance demanded by the issue.
const F32_TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name).join("reference.safetensors"))
        .expect("reference.safetensors")
        .into_iter()
        .collect()
}

/// Max |ours - reference| over real (unpadded) positions.
fn masked_max_abs_diff(ours: &Tensor, reference: &Tensor, mask: &Tensor) -> f64 {
    let real = mask.ne(0).unsqueeze(-1).expand_as(ours);
    let diff = (ours - reference)
        .abs()
        .masked_fill(&real.logical_not(), 0.0);
    diff.max().double_value(&[])
}

/// One real position per row: the last real token (what a decoder scores) for `side`.
fn last_real_positions(mask: &Tensor, side: &str) -> Tensor {
    let length = mask.size()[1];
    if side == "right" {
        mask.sum_dim_intlist(1, false, Kind::Int64) - 1
    } else {
        Tensor::full([mask.size()[0]], length - 1, (Kind::Int64, Device::Cpu))
    }
}

fn check_parity(name: &str, kind: Kind, device: Device, tolerance: f64) {
    let model = load_model(&fixture(name), kind, device).unwrap_or_else(|e| panic!("{name}: {e}"));
    let refs = reference(name);
    for side in ["right", "left"] {
        let ids = refs[&format!("{side}_input_ids")].to_device(device);
        let mask = refs[&format!("{side}_attention_mask")].to_device(device);
        let expected = &refs[&format!("{side}_logits")];
        // The batch has padding, so the default forward packs its real tokens; the padded
        // layout must match transformers too.
        assert!(matches!(
            TokenLayout::for_mask(&mask).unwrap(),
            TokenLayout::Packed { .. }
        ));
        let forward = || {
            tch::no_grad(|| model.full_logits(&ids, &mask))
                .unwrap()
                .to_device(Device::Cpu)
        };
        let ours = forward();
        let padded = with_padded_layout(forward);
        let cpu_mask = mask.to_device(Device::Cpu);
        for (layout, logits) in [("packed", &ours), ("padded", &padded)] {
            assert_eq!(
                logits.size(),
                expected.size(),
                "{name} {side}: logits shape"
            );
            let diff = masked_max_abs_diff(logits, expected, &cpu_mask);
            let scale = expected.abs().max().double_value(&[]);
            eprintln!(
                "{name} {kind:?} {device:?} {side} {layout}: max |diff| {diff:.2e}, max |logit| {scale:.2}"
            );
            assert!(
                diff <= tolerance,
                "{name} ({kind:?}, {device:?}) {side} padding, {layout} layout: max |logit diff| \
                 {diff:.3e} > {tolerance:.1e} (logits up to {scale:.2})"
            );
        }
        // The two layouts compute the same real rows, up to the rounding of differently shaped
        // products: far inside the tolerance against transformers.
        let between = masked_max_abs_diff(&ours, &padded, &cpu_mask);
        assert!(
            between <= tolerance / 10.0,
            "{name} ({kind:?}) {side}: packed and padded layouts differ by {between:.3e}"
        );

        // The label-word path: gathered hidden states times the label-word rows only.
        let positions = last_real_positions(&mask.to_device(Device::Cpu), side);
        let vocab = expected.size()[2];
        let label_word_ids = Tensor::from_slice(&[3i64, vocab / 2, vocab - 1]);
        let batch = Batch {
            input_ids: ids.shallow_clone(),
            attention_mask: mask.shallow_clone(),
            positions: positions.to_device(device),
            labels: Tensor::zeros([3], (Kind::Int64, device)),
            label_word_ids: label_word_ids.to_device(device),
        };
        let words = tch::no_grad(|| model.label_word_logits(&batch))
            .unwrap()
            .to_device(Device::Cpu);
        assert_eq!(words.kind(), Kind::Float);
        let index = positions.view([3, 1, 1]).expand([3, 1, vocab], false);
        let expected_words = expected
            .gather(1, &index, false)
            .squeeze_dim(1)
            .index_select(1, &label_word_ids);
        let word_diff = (&words - &expected_words).abs().max().double_value(&[]);
        assert!(
            word_diff <= tolerance,
            "{name} ({kind:?}) {side}: label-word logits differ by {word_diff:.3e} > {tolerance:.1e}"
        );
    }
}

#[test]
fn roberta_matches_transformers_f32_cpu() {
    check_parity("roberta_tiny", Kind::Float, Device::Cpu, F32_TOLERANCE);
}

#[test]
fn opt_pre_ln_matches_transformers_f32_cpu() {
    check_parity("opt_tiny", Kind::Float, Device::Cpu, F32_TOLERANCE);
}

#[test]
fn opt_post_ln_with_projections_matches_transformers_f32_cpu() {
    check_parity(
        "opt_tiny_proj_postln",
        Kind::Float,
        Device::Cpu,
        F32_TOLERANCE,
    );
}

#[test]
fn llama_gqa_untied_sharded_matches_transformers_f32_cpu() {
    check_parity(
        "llama_tiny_gqa_untied",
        Kind::Float,
        Device::Cpu,
        F32_TOLERANCE,
    );
}

#[test]
fn llama_tied_bf16_checkpoint_matches_transformers_f32_cpu() {
    check_parity(
        "llama_tiny_tied_bf16",
        Kind::Float,
        Device::Cpu,
        F32_TOLERANCE,
    );
}

/// bf16 compute on CUDA. Tolerance 0.15 absolute: bf16 keeps 8 mantissa bits (relative
/// rounding 2^-9 ≈ 2e-3 per op); logits here reach ~5, and two layers of matmuls, norms and
/// softmax compound that to a few 1e-2.
/// GPU: run with --ignored on a CUDA host.
#[test]
#[ignore]
fn all_families_match_transformers_bf16_cuda() {
    let device = trainer::device::select(trainer::device::DeviceRequest::Cuda)
        .expect("this test needs a CUDA device");
    for name in [
        "roberta_tiny",
        "opt_tiny",
        "opt_tiny_proj_postln",
        "llama_tiny_gqa_untied",
        "llama_tiny_tied_bf16",
    ] {
        check_parity(name, Kind::BFloat16, device, 0.15);
        check_parity(name, Kind::Float, device, 1e-3);
    }
}

#[test]
fn f16_and_bf16_compute_on_cpu_stay_close() {
    // Not a parity claim: half-precision CPU forwards run and stay near the f32 reference.
    let name = "llama_tiny_gqa_untied";
    let refs = reference(name);
    let (ids, mask) = (&refs["right_input_ids"], &refs["right_attention_mask"]);
    for kind in [Kind::BFloat16, Kind::Half] {
        let model = load_model(&fixture(name), kind, Device::Cpu).unwrap();
        let ours = tch::no_grad(|| model.full_logits(ids, mask)).unwrap();
        let diff = masked_max_abs_diff(&ours, &refs["right_logits"], mask);
        assert!(diff < 0.25, "{kind:?}: max diff {diff}");
        assert!(
            diff > 0.0,
            "{kind:?}: half-precision result identical to f32: dtype ignored?"
        );
    }
}

/// Rewrite a fixture checkpoint with some tensors removed or added, in a fresh temp dir.
fn altered_checkpoint(name: &str, drop: &str, add: Option<&str>) -> PathBuf {
    let source = fixture(name);
    let dir = std::env::temp_dir().join(format!(
        "models_parity_{name}_{}_{}",
        std::process::id(),
        drop.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(source.join("config.json"), dir.join("config.json")).unwrap();
    let mut tensors: Vec<(String, Tensor)> =
        Tensor::read_safetensors(source.join("model.safetensors")).unwrap();
    tensors.retain(|(n, _)| n != drop);
    if let Some(extra) = add {
        tensors.push((
            extra.to_string(),
            Tensor::zeros([2], (Kind::Float, Device::Cpu)),
        ));
    }
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn missing_tensor_is_an_error_naming_it() {
    let dir = altered_checkpoint("opt_tiny", "model.decoder.layers.1.fc2.bias", None);
    let err = Model::from_hf_dir(&dir, Kind::Float, Device::Cpu)
        .err()
        .expect("must fail");
    assert!(matches!(err, ModelError::MissingTensors { .. }), "{err}");
    assert!(
        err.to_string().contains("decoder.layers.1.fc2.bias"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unexpected_tensor_is_an_error_naming_it_but_known_extras_are_ignored() {
    let dir = altered_checkpoint("roberta_tiny", "", Some("roberta.encoder.layer.0.surprise"));
    let err = Model::from_hf_dir(&dir, Kind::Float, Device::Cpu)
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("roberta.encoder.layer.0.surprise"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
    // transformers ignores RoBERTa's pooler when loading RobertaForMaskedLM; so do we.
    let dir = altered_checkpoint("roberta_tiny", "", Some("roberta.pooler.dense.bias"));
    Model::from_hf_dir(&dir, Kind::Float, Device::Cpu).expect("pooler must be ignored");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let model = load_model(&fixture("opt_tiny"), Kind::Float, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[5i64, 6, 7]).view([1, 3]);
    let mask = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
    let batch = |positions: &[i64], words: &[i64]| Batch {
        input_ids: ids.shallow_clone(),
        attention_mask: mask.shallow_clone(),
        positions: Tensor::from_slice(positions),
        labels: Tensor::from_slice(&[0i64]),
        label_word_ids: Tensor::from_slice(words),
    };
    let err = model
        .label_word_logits(&batch(&[3], &[5]))
        .expect_err("position 3 of 3");
    assert!(err.to_string().contains("outside 0..3"), "{err}");
    let err = model
        .label_word_logits(&batch(&[2], &[5, 110]))
        .expect_err("word 110 of 110");
    assert!(err.to_string().contains("110"), "{err}");
    let ok = model.label_word_logits(&batch(&[2], &[5, 109])).unwrap();
    assert_eq!(ok.size(), [1, 2]);
}

#[test]
fn continuation_log_prob_equals_sum_of_token_log_softmax() {
    // Independent of transformers: recompute from the f32 full logits, which the parity tests
    // tie to the reference.
    let name = "llama_tiny_gqa_untied";
    let model = load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap();
    let refs = reference(name);
    let (ids, mask) = (&refs["right_input_ids"], &refs["right_attention_mask"]);
    // Score the last two real tokens of each row (lengths 7, 10, 4).
    let lengths = [7i64, 10, 4];
    let mut cont = vec![0i64; 30];
    for (row, &n) in lengths.iter().enumerate() {
        cont[row * 10 + n as usize - 1] = 1;
        cont[row * 10 + n as usize - 2] = 1;
    }
    let cont = Tensor::from_slice(&cont).view([3, 10]);
    let got = tch::no_grad(|| model.continuation_log_prob(ids, mask, &cont)).unwrap();
    let log_probs = refs["right_logits"].log_softmax(-1, Kind::Float);
    for (row, &n) in lengths.iter().enumerate() {
        let mut expected = 0.0;
        for t in [n - 2, n - 1] {
            let token = ids.int64_value(&[row as i64, t]);
            expected += log_probs.double_value(&[row as i64, t - 1, token]);
        }
        let value = got.double_value(&[row as i64]);
        assert!(
            (value - expected).abs() < 1e-4,
            "row {row}: {value} vs {expected}"
        );
    }
}
