//! Prompt encoding with a real byte-level BPE tokenizer: SmolLM2-135M's, rebuilt from the GGUF
//! that `scripts/assets.sh` fetches (`DPZO_ASSETS_DIR` or `<workspace>/.assets`; the test fails
//! with a message when it is absent), and the model's packed and padded forwards on such prompts. Reference ids from docs/assets.md: " great" = 1109,
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

fn registry() -> TaskRegistry {
    TaskRegistry::from_file(&trainer::data::dir::workspace_root().join("experiments/tasks.toml"))
        .unwrap()
}

/// The polarity task's prompts for SmolLM2, left-padded.
fn polarity_encoder<'a>(
    tokenizer: &'a tokenizers::Tokenizer,
    registry: &'a TaskRegistry,
) -> PromptEncoder<'a> {
    PromptEncoder::new(
        tokenizer,
        "polarity",
        registry.get("polarity").unwrap(),
        &smollm2_conventions(),
        PaddingSide::Left,
    )
    .unwrap()
}

#[test]
fn label_words_are_single_smollm2_tokens() {
    let tokenizer = smollm2();
    let registry = registry();
    let encoder = polarity_encoder(&tokenizer, &registry);
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
    let registry = registry();
    let encoder = polarity_encoder(&tokenizer, &registry);
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

/// SmolLM2 itself (GQA 9/3 heads, tied head) on a left-padded batch of prompts of very different
/// lengths: the packed forward (the default) gives the padded layout's label-word logits, and the
/// two layouts' per-example ZO differences at mu = 1e-3 agree far inside the clip norms the grid
/// uses (C >= 1).
#[test]
fn packed_and_padded_forwards_agree_on_smollm2() {
    use tch::{Device, Kind};
    use trainer::model::LabelWordModel;
    use trainer::models::layers::{with_padded_layout, TokenLayout};
    use trainer::optim::params::TrainableParams;
    use trainer::optim::zo::directional_differences;

    let tokenizer = smollm2();
    let registry = registry();
    let encoder = polarity_encoder(&tokenizer, &registry);
    let texts = [
        "dull",
        "a gorgeous , witty , seductive movie . ",
        "the plot is nothing but boilerplate clichés from start to finish , and the script \
         assumes that not only would subtlety be lost on the target audience , but that it's \
         also too stupid to realize that they've already seen this exact same movie a hundred \
         times ",
        "an utterly charming and hilarious film that reminded me of the best of the 1980s . ",
    ];
    let examples: Vec<Example> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Example::new(vec![("sent_0".into(), (*t).into())], i % 2))
        .collect();
    let encoded = encoder.encode_all(&examples).unwrap();
    let batch = encoder.collate(&encoded, &[0, 1, 2, 3]).unwrap();
    assert!(matches!(
        TokenLayout::for_mask(&batch.attention_mask).unwrap(),
        TokenLayout::Packed(_)
    ));
    let path = AssetsDir::from_flag_or_env(None).smollm2_gguf();
    let model = trainer::models::load_model(&path, Kind::Float, Device::Cpu).unwrap();
    let logits = |padded: bool| {
        let run = || tch::no_grad(|| model.label_word_logits(&batch)).unwrap();
        if padded {
            with_padded_layout(run)
        } else {
            run()
        }
    };
    let (packed, padded) = (logits(false), logits(true));
    let diff = (&packed - &padded).abs().max().double_value(&[]);
    let scale = padded.abs().max().double_value(&[]);
    assert!(
        diff <= 1e-4 * scale,
        "logits differ by {diff:e} (scale {scale})"
    );

    // Both layouts from the same theta: perturbing and restoring theta leaves rounding behind,
    // so theta is copied back before the second run.
    let params = TrainableParams::from_model(&model).unwrap();
    let theta: Vec<tch::Tensor> = params.named().iter().map(|(_, t)| t.copy()).collect();
    let mu = 1e-3;
    let packed = directional_differences(&model, &params, &batch, 11, mu).unwrap();
    tch::no_grad(|| {
        for ((_, t), saved) in params.named().iter().zip(&theta) {
            t.shallow_clone().copy_(saved);
        }
    });
    let padded =
        with_padded_layout(|| directional_differences(&model, &params, &batch, 11, mu)).unwrap();
    // The cross-entropy over two label words moves by at most |dz1| + |dz2| <= 2 max |dz| when
    // the logits move by dz, so each point's loss differs between the layouts by at most twice
    // their logits' discrepancy, and a ZO difference by the sum over its two points over 2 mu.
    // The points theta +- mu z are taken to round like theta, with a factor 2 to spare: the bound
    // is 4 diff / mu (how large diff is depends on the CPU's kernels: 1.8e-5 on a 2-core CI
    // machine). It must stay far inside the clip norms the grid uses (C >= 1).
    let bound = 4.0 * diff / mu;
    assert!(
        bound <= 0.1,
        "layout discrepancy {diff:e} allows ZO errors up to {bound}"
    );
    for (i, (a, b)) in packed.iter().zip(&padded).enumerate() {
        assert!(
            (a - b).abs() <= bound,
            "example {i}: packed {a} vs padded {b} (bound {bound})"
        );
    }
    eprintln!("logits max |diff| {diff:e}; ZO differences packed {packed:?} padded {padded:?}");
}
