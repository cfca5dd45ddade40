//! Byte-level BPE tokenizers from `vocab.json` + `merges.txt` and from `tokenizer.json`, against
//! ids that transformers 5.24.0's `RobertaTokenizer` produced on the same files
//! (`scripts/fixtures/gen_tiny_models.py`, `tests/fixtures/tokenizer_bpe/expected.json`).

use std::path::{Path, PathBuf};
use trainer::models::tokenizer::load_tokenizer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("tokenizer_bpe/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check(dir: &str) {
    let tokenizer = load_tokenizer(&fixture(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let expected = expected();
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 4);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ours = tokenizer.encode(text, true).unwrap();
        assert_eq!(ours.get_ids(), ids.as_slice(), "{dir}: {text:?}");
    }
    for (word, ids) in expected["words"].as_object().unwrap() {
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tokenizer.encode(word.as_str(), false).unwrap().get_ids(),
            ids.as_slice(),
            "{word:?}"
        );
    }
}

#[test]
fn roberta_vocab_and_merges_match_transformers() {
    check("tokenizer_bpe");
}

#[test]
fn tokenizer_json_matches_transformers() {
    check("tokenizer_json");
}

#[test]
fn missing_tokenizer_files_are_named() {
    let err = load_tokenizer(&fixture("opt_tiny")).expect_err("opt_tiny has no tokenizer");
    assert!(err.to_string().contains("vocab.json"), "{err}");
}
