//! Prompt encoding with a real byte-level BPE tokenizer: SmolLM2-135M's, rebuilt from the GGUF
//! that `scripts/assets.sh` fetches (`DPZO_ASSETS_DIR` or `<workspace>/.assets`; the test fails
//! with a message when it is absent). Reference ids from docs/assets.md: " great" = 1109,
//! " terrible" = 13321 (computed there with the Python `tokenizers` package).

use trainer::data::example::Example;
use trainer::data::{AssetsDir, ModelConventions, PaddingSide, PromptEncoder, TaskRegistry};
use trainer::models::tokenizer::load_gguf_tokenizer;

fn smollm2() -> tokenizers::Tokenizer {
    let assets = AssetsDir::from_flag_or_env(None);
    let path = assets.smollm2_gguf();
    assert!(
        path.is_file(),
        "{} missing: run scripts/assets.sh",
        path.display()
    );
    load_gguf_tokenizer(&path).expect("GGUF tokenizer")
}

fn smollm2_conventions() -> ModelConventions {
    // SmolLM2 (Llama family) adds no BOS for plain text; pad with <|endoftext|> (id 0).
    ModelConventions::Decoder {
        bos_token: None,
        pad_token: "<|endoftext|>".into(),
    }
}

#[test]
fn label_words_are_single_smollm2_tokens() {
    let tokenizer = smollm2();
    let registry = TaskRegistry::from_file(
        &trainer::data::dir::workspace_root().join("experiments/tasks.toml"),
    )
    .unwrap();
    let spec = registry.get("polarity").unwrap();
    let encoder = PromptEncoder::new(
        &tokenizer,
        "polarity",
        spec,
        &smollm2_conventions(),
        PaddingSide::Left,
    )
    .unwrap();
    assert_eq!(encoder.label_word_ids(), &[13321, 1109]);
    // Every classification task must be usable with this decoder, or say which word is not.
    let mut failures = Vec::new();
    for name in registry.names() {
        let spec = registry.get(&name).unwrap();
        if spec.is_multiple_choice() {
            continue;
        }
        if let Err(error) = PromptEncoder::new(
            &tokenizer,
            &name,
            spec,
            &smollm2_conventions(),
            PaddingSide::Left,
        ) {
            failures.push(error.to_string());
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn decoder_prompt_round_trips_and_scores_the_last_token() {
    let tokenizer = smollm2();
    let registry = TaskRegistry::from_file(
        &trainer::data::dir::workspace_root().join("experiments/tasks.toml"),
    )
    .unwrap();
    let spec = registry.get("polarity").unwrap();
    let encoder = PromptEncoder::new(
        &tokenizer,
        "polarity",
        spec,
        &smollm2_conventions(),
        PaddingSide::Left,
    )
    .unwrap();
    let examples = vec![
        Example::new(
            vec![("sent_0".into(), "a gorgeous , witty film . ".into())],
            1,
        ),
        Example::new(vec![("sent_0".into(), "dull".into())], 0),
    ];
    let encoded = encoder.encode_all(&examples).unwrap();
    let ids: Vec<u32> = encoded[0].input_ids.iter().map(|&i| i as u32).collect();
    assert_eq!(
        tokenizer.decode(&ids, false).unwrap(),
        "a gorgeous , witty film . It was"
    );
    // Appending the label word gives the label-word id as the next token.
    let full = tokenizer
        .encode("a gorgeous , witty film . It was great", false)
        .unwrap();
    assert_eq!(full.get_ids()[..ids.len()], ids[..]);
    assert_eq!(full.get_ids()[ids.len()], 1109);
    let batch = encoder.collate(&encoded, &[0, 1]).unwrap();
    let width = batch.input_ids.size()[1];
    assert_eq!(
        Vec::<i64>::try_from(&batch.positions).unwrap(),
        vec![width - 1, width - 1]
    );
    // max_length of the polarity task (128) is respected on a long sentence.
    let long = Example::new(vec![("sent_0".into(), "word ".repeat(400))], 0);
    assert!(encoder.encode(0, &long).unwrap().input_ids.len() <= 128);
}
