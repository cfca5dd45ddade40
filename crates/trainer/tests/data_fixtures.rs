//! Data pipeline on small committed fixtures (tests/data-fixtures/) and a word-level tokenizer
//! built in the test: readers, error locations, templates, encoding into `Batch`, batching.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;
use trainer::data::choice::ChoiceEncoder;
use trainer::data::template::{DecoderTemplate, MlmPart, MlmTemplate, SentenceSlot};
use trainer::data::{
    lmbff, sequential_batches, standin, superglue, AssetsDir, DataDir, DataError, Example,
    ModelConventions, PaddingSide, PoissonSampler, PromptEncoder, ShuffledBatches, TaskRegistry,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data-fixtures")
}

fn registry() -> TaskRegistry {
    TaskRegistry::from_file(&trainer::data::dir::workspace_root().join("experiments/tasks.toml"))
        .expect("experiments/tasks.toml parses")
}

/// A word-level tokenizer (split on `\w+|[^\w\s]+`, so a leading space is dropped): ids are the
/// positions in `WORDS`, which makes expected ids easy to write by hand.
const WORDS: &[&str] = &[
    "[UNK]", "<s>", "</s>", "<mask>", "<pad>", "It", "was", ".", "?", ",", "great", "terrible",
    "a", "movie", "awful", "Yes", "No", "Maybe", "one", "two", "three", "four", "five", "six",
    "hello",
];

fn id(word: &str) -> i64 {
    WORDS
        .iter()
        .position(|w| *w == word)
        .expect("word in WORDS") as i64
}

fn word_tokenizer() -> Tokenizer {
    let vocab: serde_json::Map<String, serde_json::Value> = WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    Tokenizer::from_bytes(json.to_string().as_bytes()).expect("tokenizer json")
}

fn sentence(text: &str, label: usize) -> Example {
    Example::new(vec![("sent_0".into(), text.into())], label)
}

fn tensor_vec(t: &tch::Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).expect("int64 tensor")
}

// ------------------------------------------------------------------ readers

#[test]
fn reads_glue_tsv_split_and_trims_trailing_space() {
    let registry = registry();
    let spec = registry.get("SST-2").unwrap();
    let data = DataDir::new(fixtures()).unwrap();
    let splits = lmbff::load(spec, &data, 16, 13).unwrap();
    assert_eq!(
        (splits.train.len(), splits.dev.len(), splits.test.len()),
        (3, 2, 1)
    );
    assert_eq!(splits.train[0].field("sent_0"), Some("a great movie"));
    assert_eq!(
        splits.train.iter().map(|e| e.label).collect::<Vec<_>>(),
        vec![1, 0, 1]
    );
}

#[test]
fn reads_quoted_csv_split() {
    let registry = registry();
    let spec = registry.get("sst-5").unwrap();
    let data = DataDir::new(fixtures()).unwrap();
    let splits = lmbff::load(spec, &data, 16, 13).unwrap();
    assert_eq!(
        splits.train[0].field("sent_0"),
        Some("a great, great movie")
    );
    assert_eq!(splits.train[2].field("sent_0"), Some("it was \"okay\""));
    assert_eq!(
        splits.train.iter().map(|e| e.label).collect::<Vec<_>>(),
        vec![4, 0, 2]
    );
}

#[test]
fn missing_split_names_the_directory() {
    let registry = registry();
    let data = DataDir::new(fixtures()).unwrap();
    let error = lmbff::load(registry.get("SNLI").unwrap(), &data, 512, 42).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("k-shot-1k-test/SNLI/512-42"), "{message}");
}

fn malformed(name: &str) -> PathBuf {
    fixtures().join("malformed").join(name)
}

#[test]
fn missing_column_reports_file_and_line() {
    let registry = registry();
    let error = lmbff::read_split(
        registry.get("RTE").unwrap(),
        &malformed("missing_column.tsv"),
    )
    .unwrap_err();
    assert!(
        matches!(error, DataError::Malformed { line: 3, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("missing_column.tsv:3: 2 columns where the header has 4"),
        "{error}"
    );
}

#[test]
fn extra_column_reports_file_and_line() {
    // `hip \tEXTRA\t1` used to load as the sentence "hip " with label 1.
    let registry = registry();
    let error = lmbff::read_split(
        registry.get("SST-2").unwrap(),
        &malformed("extra_column.tsv"),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("extra_column.tsv:3: 3 columns where the header has 2"),
        "{error}"
    );
}

#[test]
fn unknown_label_reports_file_line_and_label() {
    let registry = registry();
    let spec = registry.get("SST-2").unwrap();
    let error = lmbff::read_split(spec, &malformed("unknown_label.tsv")).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("unknown_label.tsv:3: unknown label \"7\""),
        "{message}"
    );
    // csv: the bad row starts on line 3 because row 1 spans two lines inside quotes.
    let spec = registry.get("sst-5").unwrap();
    let error = lmbff::read_split(spec, &malformed("unknown_label.csv")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("unknown_label.csv:3: unknown label \"9\""),
        "{error}"
    );
}

#[test]
fn empty_split_is_an_error() {
    let registry = registry();
    let error =
        lmbff::read_split(registry.get("SST-2").unwrap(), &malformed("empty.tsv")).unwrap_err();
    assert!(matches!(error, DataError::EmptySplit { .. }), "{error:?}");
    assert!(
        error.to_string().contains("empty.tsv: empty split"),
        "{error}"
    );
}

#[test]
fn bad_utf8_reports_the_line() {
    let registry = registry();
    let error =
        lmbff::read_split(registry.get("SST-2").unwrap(), &malformed("bad_utf8.tsv")).unwrap_err();
    assert!(
        matches!(error, DataError::BadUtf8 { line: 3, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("bad_utf8.tsv:3: invalid UTF-8"),
        "{error}"
    );
}

#[test]
fn bad_jsonl_reports_file_and_line() {
    let registry = registry();
    let spec = registry.get("CB").unwrap();
    let error = superglue::read_file(spec, &malformed("bad_json.jsonl")).unwrap_err();
    assert!(
        error.to_string().contains("bad_json.jsonl:2: invalid JSON"),
        "{error}"
    );
    let error = superglue::read_file(spec, &malformed("missing_key.jsonl")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("missing_key.jsonl:1: missing string field \"hypothesis\""),
        "{error}"
    );
}

#[test]
fn vader_non_numeric_rating_reports_line() {
    let registry = registry();
    let mut spec = registry.get("vader5").unwrap().clone();
    // Point the reader at a directory holding the malformed file under the expected name.
    let dir = std::env::temp_dir().join(format!("dpzo-data-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data/vader-bad")).unwrap();
    std::fs::copy(
        malformed("vader_bad_rating.txt"),
        dir.join("data/vader-bad").join(standin::VADER_FILE),
    )
    .unwrap();
    spec.dir = "vader-bad".into();
    let error = standin::read_all(&spec, &AssetsDir::new(&dir)).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        error
            .to_string()
            .contains("movieReviewSnippets_GroundTruth.txt:2: rating \"abc\""),
        "{error}"
    );
}

#[test]
fn sampling_from_original_follows_the_k_shot_protocol() {
    let registry = registry();
    let spec = registry.get("trec").unwrap();
    let data = DataDir::new(fixtures()).unwrap();
    // No pre-generated trec split in the fixtures, so `load` samples from original/.
    let splits = lmbff::load(spec, &data, 2, 13).unwrap();
    let again = lmbff::load(spec, &data, 2, 13).unwrap();
    let other_seed = lmbff::load(spec, &data, 2, 21).unwrap();
    assert_eq!(splits, again, "same seed, same splits");
    assert_ne!(
        splits.train, other_seed.train,
        "seeds 13 and 21 drew the same train set"
    );
    // 3 labels with 5 rows each: 2 per label in train, the next 2 in dev, grouped by label.
    assert_eq!(splits.train.len(), 6);
    assert_eq!(splits.dev.len(), 6);
    for split in [&splits.train, &splits.dev] {
        for pair in split.chunks(2) {
            assert_eq!(pair[0].label, pair[1].label, "rows are grouped by label");
        }
    }
    let text = |e: &Example| e.field("sent_0").unwrap().to_string();
    for example in &splits.dev {
        assert!(
            !splits.train.iter().any(|t| text(t) == text(example)),
            "dev overlaps train"
        );
    }
    // The test file has 2 rows (<= 1000): kept whole and in order.
    assert_eq!(
        splits.test.iter().map(|e| e.label).collect::<Vec<_>>(),
        vec![0, 3]
    );
}

#[test]
fn superglue_sampling_takes_dev_from_the_end_of_the_permutation() {
    let registry = registry();
    let spec = registry.get("CB").unwrap();
    let data = DataDir::new(fixtures()).unwrap();
    // 12 train rows < 1000 + 100, so all 12 are drawn and the last 100 of them are dev: every
    // row goes to dev and train is empty, which must be an error rather than training on
    // nothing.
    let error = superglue::load(spec, &data, 0).unwrap_err();
    assert!(matches!(error, DataError::EmptySplit { .. }), "{error:?}");
    let mut small = spec.clone();
    small.num_dev = Some(4);
    let splits = superglue::load(&small, &data, 0).unwrap();
    assert_eq!(
        (splits.train.len(), splits.dev.len(), splits.test.len()),
        (8, 4, 4)
    );
    let mut all: Vec<_> = splits.train.iter().chain(&splits.dev).cloned().collect();
    all.sort_by(|a, b| a.fields.cmp(&b.fields));
    all.dedup();
    assert_eq!(
        all.len(),
        12,
        "train and dev are disjoint and cover the file"
    );
}

#[test]
fn superglue_without_full_train_is_an_error() {
    let registry = registry();
    let data = DataDir::new(fixtures()).unwrap();
    let error = superglue::load(registry.get("COPA").unwrap(), &data, 0).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("COPA/train.jsonl not found"), "{message}");
    assert!(
        message.contains("fewglue_train32.jsonl is not the full train set"),
        "{message}"
    );
}

#[test]
fn standins_read_and_split() {
    let registry = registry();
    let assets = AssetsDir::new(fixtures().join("assets"));
    let polarity = standin::read_all(registry.get("polarity").unwrap(), &assets).unwrap();
    assert_eq!(polarity.len(), 40);
    assert_eq!(
        polarity[0].field("sent_0"),
        Some("sentence 0 , with \" quotes \" .")
    );
    assert_eq!(polarity[0].label, 0, "first row is -1 (negative)");
    // vader: class = number of edges (-2, -0.5, 0.5, 2) <= rating (left-closed bins).
    let vader = standin::read_all(registry.get("vader5").unwrap(), &assets).unwrap();
    let classes: Vec<usize> = vader.iter().take(12).map(|e| e.label).collect();
    assert_eq!(classes, vec![0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 0]);
    let bbc = standin::read_all(registry.get("bbc").unwrap(), &assets).unwrap();
    assert_eq!(bbc.len(), 41);
    let latin1 = bbc
        .iter()
        .find(|e| e.field("sent_0").unwrap().starts_with("Latin-1"))
        .unwrap();
    assert_eq!(
        latin1.field("sent_0"),
        Some("Latin-1 pound \u{a3} sign Body.")
    );
    let splits = standin::load(registry.get("bbc").unwrap(), &assets, 2, 42).unwrap();
    // 41 rows: test = 41 / 4 = 10 rows; train 2 per topic, dev the next 2.
    assert_eq!(
        (splits.train.len(), splits.dev.len(), splits.test.len()),
        (10, 10, 10)
    );
}

#[test]
fn standins_missing_say_how_to_fetch() {
    let registry = registry();
    let assets = AssetsDir::new(fixtures().join("no-such-dir"));
    let error = standin::read_all(registry.get("polarity").unwrap(), &assets).unwrap_err();
    assert!(error.to_string().contains("scripts/assets.sh"), "{error}");
}

// ------------------------------------------------------------------ registry and templates

#[test]
fn registry_defines_all_tasks_of_the_issue() {
    let registry = registry();
    for name in [
        "SST-2", "sst-5", "SNLI", "MNLI", "MNLI-mm", "RTE", "trec", "CB", "BoolQ", "RTE-sg", "WiC",
        "WSC", "COPA", "MultiRC", "polarity", "vader5", "bbc",
    ] {
        let spec = registry.get(name).unwrap();
        if let Some(template) = &spec.mlm_template {
            MlmTemplate::parse(template).unwrap();
        }
        DecoderTemplate::parse(&spec.decoder_template).unwrap();
    }
    let error = registry.get("sst2").unwrap_err();
    assert!(
        error.to_string().contains("unknown task \"sst2\""),
        "{error}"
    );
}

#[test]
fn bad_tasks_file_is_rejected_with_the_task_name() {
    let text = r#"
[tasks.x]
reader = "pang-lee"
dir = "x"
labels = ["a", "b"]
label_words = [" a"]
decoder_template = "{sent_0}"
max_length = 8
"#;
    let error = TaskRegistry::parse(text, "inline").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("task \"x\": 2 labels but 1 label_words"),
        "{error}"
    );
    let error = TaskRegistry::parse("[tasks.x]\nreeder = 1\n", "inline").unwrap_err();
    assert!(error.to_string().contains("inline"), "{error}");
}

#[test]
fn lm_bff_templates_parse_as_in_the_paper() {
    // docs/paper.md §3.1 (DPZO.sh): MNLI/SNLI/RTE template.
    let template = MlmTemplate::parse("*cls**sent-_0*?*mask*,*+sentl_1**sep+*").unwrap();
    let slot = |index, leading_space, lower_first, drop_last_char| {
        MlmPart::Sentence(SentenceSlot {
            index,
            leading_space,
            lower_first,
            upper_first: false,
            drop_last_char,
        })
    };
    assert_eq!(
        template.parts,
        vec![
            MlmPart::Cls,
            slot(0, false, false, true),
            MlmPart::Text("?".into()),
            MlmPart::Mask,
            MlmPart::Text(",".into()),
            slot(1, true, true, false),
            MlmPart::Sep,
        ]
    );
    let error = MlmTemplate::parse("*cls**sent_0**sep+*").unwrap_err();
    assert!(error.to_string().contains("exactly one *mask*"), "{error}");
    let error = MlmTemplate::parse("*cls**sentx_0**mask*").unwrap_err();
    assert!(
        error.to_string().contains("unknown modifier 'x'"),
        "{error}"
    );
}

#[test]
fn decoder_templates_render_mezo_prompts() {
    let registry = registry();
    // Expected strings written from MeZO large_models/templates.py (CBTemplate, BoolQTemplate,
    // WSCTemplate, SST2Template, CopaTemplate).
    let cb = Example::new(
        vec![
            ("premise".into(), "It rains.".into()),
            ("hypothesis".into(), "It is wet".into()),
        ],
        0,
    );
    let rendered = DecoderTemplate::parse(&registry.get("CB").unwrap().decoder_template)
        .unwrap()
        .render(&cb)
        .unwrap();
    assert_eq!(
        rendered,
        "Suppose It rains. Can we infer that \"It is wet\"? Yes, No, or Maybe?\n"
    );
    let boolq = Example::new(
        vec![
            ("passage".into(), "P.".into()),
            ("question".into(), "is it true".into()),
        ],
        1,
    );
    let rendered = DecoderTemplate::parse(&registry.get("BoolQ").unwrap().decoder_template)
        .unwrap()
        .render(&boolq)
        .unwrap();
    assert_eq!(rendered, "P. Is it true?");
    let wsc = Example::new(
        vec![
            ("text".into(), "Mark told Pete he was late.".into()),
            ("span1_text".into(), "Mark".into()),
            ("span2_text".into(), "He".into()),
        ],
        0,
    );
    let rendered = DecoderTemplate::parse(&registry.get("WSC").unwrap().decoder_template)
        .unwrap()
        .render(&wsc)
        .unwrap();
    assert_eq!(
        rendered,
        "Mark told Pete he was late.\nIn the previous sentence, does the pronoun \"he\" refer to \
         Mark? Yes or No?\n"
    );
    let sst2 = sentence(" a fine film ", 1);
    let rendered = DecoderTemplate::parse(&registry.get("SST-2").unwrap().decoder_template)
        .unwrap()
        .render(&sst2)
        .unwrap();
    assert_eq!(rendered, "a fine film It was");
    let error = DecoderTemplate::parse("{sent_0|shout}").unwrap_err();
    assert!(
        error.to_string().contains("unknown filter \"shout\""),
        "{error}"
    );
    let error = DecoderTemplate::parse("{premise}")
        .unwrap()
        .render(&sst2)
        .unwrap_err();
    assert!(
        error.to_string().contains("no field \"premise\""),
        "{error}"
    );
}

// ------------------------------------------------------------------ encoding

#[test]
fn mlm_encoding_matches_hand_tokenisation() {
    let tokenizer = word_tokenizer();
    let registry = registry();
    let spec = registry.get("SST-2").unwrap();
    let encoder = PromptEncoder::new(
        &tokenizer,
        "SST-2",
        spec,
        &ModelConventions::roberta(),
        PaddingSide::Right,
    )
    .unwrap();
    assert_eq!(encoder.label_word_ids(), &[id("terrible"), id("great")]);
    let examples = vec![sentence("a great movie", 1), sentence("awful", 0)];
    let encoded = encoder.encode_all(&examples).unwrap();
    // <s> a great movie It was <mask> . </s>
    let expected = vec![
        id("<s>"),
        id("a"),
        id("great"),
        id("movie"),
        id("It"),
        id("was"),
        id("<mask>"),
        id("."),
        id("</s>"),
    ];
    assert_eq!(encoded[0].input_ids, expected);
    assert_eq!(encoded[0].position, 6);
    let batch = encoder.collate(&encoded, &[0, 1]).unwrap();
    assert_eq!(batch.input_ids.size(), vec![2, 9]);
    assert_eq!(batch.input_ids.kind(), tch::Kind::Int64);
    assert_eq!(tensor_vec(&batch.positions), vec![6, 4]);
    assert_eq!(tensor_vec(&batch.labels), vec![1, 0]);
    assert_eq!(
        tensor_vec(&batch.label_word_ids),
        vec![id("terrible"), id("great")]
    );
    let ids = tensor_vec(&batch.input_ids);
    assert_eq!(
        &ids[9..],
        &[1, 14, 5, 6, 3, 7, 2, 4, 4],
        "row 2 right-padded with <pad>"
    );
    assert_eq!(
        tensor_vec(&batch.attention_mask)[9..],
        [1, 1, 1, 1, 1, 1, 1, 0, 0]
    );
}

#[test]
fn mlm_sentence_limit_and_lost_mask() {
    let tokenizer = word_tokenizer();
    let registry = registry();
    let mut spec = registry.get("SST-2").unwrap().clone();
    spec.first_sent_limit = Some(2);
    let encoder = PromptEncoder::new(
        &tokenizer,
        "SST-2",
        &spec,
        &ModelConventions::roberta(),
        PaddingSide::Right,
    )
    .unwrap();
    let encoded = encoder
        .encode(0, &sentence("one two three four five", 0))
        .unwrap();
    assert_eq!(
        encoded.input_ids,
        vec![
            id("<s>"),
            id("one"),
            id("two"),
            id("It"),
            id("was"),
            id("<mask>"),
            id("."),
            id("</s>")
        ]
    );
    // max_length 4 would cut the mask (at token 5) off: an error, not a silent drop.
    let encoder = encoder.with_max_length(4).unwrap();
    let error = encoder.encode(3, &sentence("one two", 0)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("example 3 of task SST-2: the mask is at token 5"),
        "{error}"
    );
}

#[test]
fn label_word_of_several_tokens_is_named() {
    let tokenizer = word_tokenizer();
    let registry = registry();
    let mut spec = registry.get("SST-2").unwrap().clone();
    spec.label_words = vec![" terrible".into(), " a great".into()];
    let error = PromptEncoder::new(
        &tokenizer,
        "SST-2",
        &spec,
        &ModelConventions::roberta(),
        PaddingSide::Right,
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("label word \" a great\" of task SST-2 is 2 token(s)"),
        "{error}"
    );
    let conventions = ModelConventions::MaskedLm {
        cls_token: "<s>".into(),
        sep_token: "</s>".into(),
        mask_token: "[MASK]".into(),
        pad_token: "<pad>".into(),
    };
    let error = PromptEncoder::new(
        &tokenizer,
        "SST-2",
        registry.get("SST-2").unwrap(),
        &conventions,
        PaddingSide::Right,
    )
    .unwrap_err();
    assert!(error.to_string().contains("\"[MASK]\" (mask)"), "{error}");
}

#[test]
fn decoder_encoding_scores_the_last_token_with_left_padding() {
    let tokenizer = word_tokenizer();
    let registry = registry();
    let spec = registry.get("SST-2").unwrap();
    let conventions = ModelConventions::opt(); // BOS "</s>"
    let encoder =
        PromptEncoder::new(&tokenizer, "SST-2", spec, &conventions, PaddingSide::Left).unwrap();
    let encoded = encoder
        .encode_all(&[sentence("a great movie", 1), sentence("awful", 0)])
        .unwrap();
    assert_eq!(
        encoded[0].input_ids,
        vec![
            id("</s>"),
            id("a"),
            id("great"),
            id("movie"),
            id("It"),
            id("was")
        ]
    );
    assert_eq!(encoded[0].position, 5);
    let batch = encoder.collate(&encoded, &[1, 0]).unwrap();
    // Left padding: every row's last real token is at L - 1.
    assert_eq!(tensor_vec(&batch.positions), vec![5, 5]);
    assert_eq!(
        tensor_vec(&batch.input_ids)[..6],
        [
            id("<pad>"),
            id("<pad>"),
            id("</s>"),
            id("awful"),
            id("It"),
            id("was")
        ]
    );
    // max_length cuts the prompt from the left and keeps BOS first.
    let short = encoder.with_max_length(3).unwrap();
    let encoded = short.encode(0, &sentence("a great movie", 1)).unwrap();
    assert_eq!(encoded.input_ids, vec![id("</s>"), id("It"), id("was")]);
    // Right padding: the position is the row's own last token.
    let right =
        PromptEncoder::new(&tokenizer, "SST-2", spec, &conventions, PaddingSide::Right).unwrap();
    let encoded = right
        .encode_all(&[sentence("a great movie", 1), sentence("awful", 0)])
        .unwrap();
    let batch = right.collate(&encoded, &[0, 1]).unwrap();
    assert_eq!(tensor_vec(&batch.positions), vec![5, 3]);
    let empty = right.collate(&encoded, &[]).unwrap();
    assert!(empty.is_empty());
    assert!(right.collate(&encoded, &[2]).is_err());
}

#[test]
fn decoder_sentence_limit_cuts_the_text_at_a_token_boundary() {
    let tokenizer = word_tokenizer();
    let registry = registry();
    let mut spec = registry.get("SST-2").unwrap().clone();
    spec.first_sent_limit = Some(2);
    let conventions = ModelConventions::Decoder {
        bos_token: None,
        pad_token: "<pad>".into(),
    };
    let encoder =
        PromptEncoder::new(&tokenizer, "SST-2", &spec, &conventions, PaddingSide::Left).unwrap();
    let encoded = encoder.encode(0, &sentence("one two three", 0)).unwrap();
    assert_eq!(
        encoded.input_ids,
        vec![id("one"), id("two"), id("It"), id("was")]
    );
}

#[test]
fn copa_candidates_are_scored_as_continuations() {
    let tokenizer = word_tokenizer();
    let registry = registry();
    let spec = registry.get("COPA").unwrap();
    let data = DataDir::new(fixtures()).unwrap();
    let examples = superglue::read_file(spec, &data.superglue("COPA").join("val.jsonl")).unwrap();
    // MeZO CopaTemplate: first word lower-cased unless it is "I"; connector from the question.
    assert_eq!(
        examples[0].candidates,
        vec![
            "he dropped a hammer on his foot.",
            "I got a hole in my sock."
        ]
    );
    assert_eq!(examples[0].field("connector"), Some("because"));
    assert_eq!(
        DecoderTemplate::parse(&spec.decoder_template)
            .unwrap()
            .render(&examples[1])
            .unwrap(),
        "I tipped the bottle so"
    );
    let conventions = ModelConventions::Decoder {
        bos_token: Some("<s>".into()),
        pad_token: "<pad>".into(),
    };
    let encoder =
        ChoiceEncoder::new(&tokenizer, "COPA", spec, &conventions, PaddingSide::Right).unwrap();
    let rows = encoder.encode(0, &examples[1]).unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.ids[0], id("<s>"));
        assert!(row.start > 1 && row.start < row.ids.len());
    }
    let batch = encoder.batch(&examples).unwrap();
    assert_eq!(batch.input_ids.size()[0], 4, "2 examples x 2 candidates");
    assert_eq!(tensor_vec(&batch.example_index), vec![0, 0, 1, 1]);
    assert_eq!(tensor_vec(&batch.labels), vec![0, 1]);
    let mask = tensor_vec(&batch.continuation_mask);
    let attention = tensor_vec(&batch.attention_mask);
    assert!(
        mask.iter().zip(&attention).all(|(m, a)| m <= a),
        "continuation inside real tokens"
    );
    let error =
        PromptEncoder::new(&tokenizer, "COPA", spec, &conventions, PaddingSide::Right).unwrap_err();
    assert!(error.to_string().contains("ChoiceEncoder"), "{error}");
}

// ------------------------------------------------------------------ batching

#[test]
fn poisson_batches_are_seeded_and_have_rate_q() {
    let (n, q, steps, seed) = (1000usize, 0.1, 200usize, 7u64);
    let mut sampler = PoissonSampler::new(n, q, seed).unwrap();
    let mut replay = PoissonSampler::new(n, q, seed).unwrap();
    let mut total = 0usize;
    let mut differs = false;
    let mut previous: Vec<usize> = Vec::new();
    for _ in 0..steps {
        let batch = sampler.next_batch();
        assert_eq!(batch, replay.next_batch(), "same seed, same batches");
        assert!(batch.windows(2).all(|w| w[0] < w[1]) && batch.iter().all(|&i| i < n));
        differs |= batch != previous;
        previous = batch.clone();
        total += batch.len();
    }
    assert!(differs);
    // total ~ Binomial(n * steps, q): mean 20000, sd 134.2; |z| > 5 has probability 5.7e-7.
    let trials = (n * steps) as f64;
    let z = (total as f64 - trials * q) / (trials * q * (1.0 - q)).sqrt();
    assert!(
        z.abs() < 5.0,
        "total {total}, z = {z:.2}, bound 5, n = {trials}, seed = {seed}"
    );
    for bad in [0.0, -0.1, 1.5, f64::NAN] {
        assert!(
            PoissonSampler::new(n, bad, 0).is_err(),
            "rate {bad} accepted"
        );
    }
}

#[test]
fn shuffled_batches_cover_each_epoch_once() {
    let mut batches = ShuffledBatches::new(10, 4, false, 3).unwrap();
    let mut epoch: Vec<usize> = (0..3).flat_map(|_| batches.next_batch()).collect();
    assert_eq!(epoch.len(), 10, "4 + 4 + 2");
    epoch.sort_unstable();
    assert_eq!(epoch, (0..10).collect::<Vec<_>>());
    let mut dropping = ShuffledBatches::new(10, 4, true, 3).unwrap();
    let sizes: Vec<usize> = (0..4).map(|_| dropping.next_batch().len()).collect();
    assert_eq!(sizes, vec![4, 4, 4, 4], "short final batch dropped");
    let mut a = ShuffledBatches::new(50, 5, true, 1).unwrap();
    let mut b = ShuffledBatches::new(50, 5, true, 2).unwrap();
    assert_ne!(
        a.next_batch(),
        b.next_batch(),
        "seeds 1 and 2 gave the same first batch"
    );
    assert!(ShuffledBatches::new(10, 0, false, 0).is_err());
    let ranges: Vec<_> = sequential_batches(10, 4).unwrap().collect();
    assert_eq!(ranges, vec![0..4, 4..8, 8..10]);
}
