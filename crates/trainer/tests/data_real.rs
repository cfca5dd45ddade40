//! Data pipeline on the real task files and on the stand-in assets.
//!
//! Real data: `DPZO_DATA_DIR` if set, else `../shared/data` beside the workspace; without
//! either the tests fail and say how to set it (they never pass without data). Stand-ins:
//! `DPZO_ASSETS_DIR` or `<workspace>/.assets`, filled by `scripts/assets.sh`.
//!
//! Expected counts come from the task-data folder's own README (`$DPZO_DATA_DIR/README.md`,
//! §2, §3.6) and docs/assets.md.

use std::path::PathBuf;

use trainer::data::dir::workspace_root;
use trainer::data::{lmbff, standin, superglue, AssetsDir, DataDir, Splits, TaskRegistry};

const SEEDS: [u64; 5] = [13, 21, 42, 87, 100];

fn data_dir() -> DataDir {
    if let Some(path) = std::env::var_os(DataDir::ENV).filter(|p| !p.is_empty()) {
        return DataDir::new(PathBuf::from(path)).expect("DPZO_DATA_DIR is not a directory");
    }
    let beside = workspace_root().join("../shared/data");
    if beside.is_dir() {
        return DataDir::new(beside).expect("../shared/data");
    }
    panic!(
        "no task data: set {}=/path/to/data (laid out as lm-bff/k-shot-1k-test/<TASK>/<k>-<seed>/ \
         and superglue/<TASK>/) or place it at ../shared/data beside the workspace",
        DataDir::ENV
    );
}

/// The committed task registry (`experiments/tasks.toml`).
fn registry() -> TaskRegistry {
    TaskRegistry::from_file(&trainer::data::dir::workspace_root().join("experiments/tasks.toml"))
        .unwrap()
}

fn assets_dir() -> AssetsDir {
    let assets = AssetsDir::from_flag_or_env(None);
    assert!(
        assets.data("pang-lee").is_dir(),
        "no stand-in data in {}: run scripts/assets.sh (or set {})",
        assets.root().display(),
        AssetsDir::ENV
    );
    assets
}

fn label_counts(examples: &[trainer::data::Example], n_labels: usize) -> Vec<usize> {
    let mut counts = vec![0; n_labels];
    for example in examples {
        counts[example.label] += 1;
    }
    counts
}

fn sizes(splits: &Splits) -> (usize, usize, usize) {
    (splits.train.len(), splits.dev.len(), splits.test.len())
}

#[test]
fn mezo_splits_have_the_documented_sizes() {
    let data = data_dir();
    let registry = registry();
    // (task, k, train, dev, test) from the data README §2.
    let expected = [
        ("SST-2", 16, 32, 32, 872),
        ("SST-2", 512, 1024, 1024, 872),
        ("sst-5", 16, 80, 80, 1000),
        ("sst-5", 512, 2560, 2560, 1000),
        ("trec", 16, 96, 96, 500),
        ("trec", 512, 2646, 2243, 500),
        ("RTE", 16, 32, 32, 277),
        ("RTE", 512, 1024, 1024, 277),
        ("SNLI", 16, 48, 48, 1000),
        ("SNLI", 512, 1536, 1536, 1000),
        ("MNLI", 16, 48, 48, 1000),
        ("MNLI", 512, 1536, 1536, 1000),
        ("MNLI-mm", 512, 1536, 1536, 1000),
    ];
    for (task, k, train, dev, test) in expected {
        let spec = registry.get(task).unwrap();
        for seed in SEEDS {
            let split_dir = data.mezo_split(&spec.dir, k, seed);
            let splits = lmbff::load_pregenerated(spec, &split_dir).unwrap();
            assert_eq!(
                sizes(&splits),
                (train, dev, test),
                "{task} k={k} seed={seed}"
            );
            // k per class in train except where a class runs short (trec 512: ABBR has 86).
            let counts = label_counts(&splits.train, spec.labels.len());
            if !(task == "trec" && k == 512) {
                assert!(
                    counts.iter().all(|&c| c == k),
                    "{task} k={k} seed={seed}: {counts:?}"
                );
            }
        }
    }
}

#[test]
fn nli_test_sets_have_the_documented_label_counts() {
    let data = data_dir();
    let registry = registry();
    // README §3.6 (contradiction, entailment, neutral).
    for (task, expected) in [
        ("SNLI", [341, 347, 312]),
        ("MNLI", [349, 333, 318]),
        ("MNLI-mm", [334, 350, 316]),
    ] {
        let spec = registry.get(task).unwrap();
        let splits = lmbff::load_pregenerated(spec, &data.mezo_split(&spec.dir, 512, 42)).unwrap();
        assert_eq!(label_counts(&splits.test, 3), expected, "{task}");
    }
}

/// The sampler re-implements LM-BFF's generate_k_shot_data.py (numpy MT19937 shuffle, group by
/// label, first k / next k); MeZO's published splits are the independent reference (the data
/// README §3 reports 30/30 split files reproduced this way for trec, sst-5 and RTE).
#[test]
fn sampling_from_original_reproduces_the_published_splits() {
    let data = data_dir();
    let registry = registry();
    for task in ["trec", "sst-5", "RTE"] {
        let spec = registry.get(task).unwrap();
        for k in [16, 512] {
            for seed in SEEDS {
                let published =
                    lmbff::load_pregenerated(spec, &data.mezo_split(&spec.dir, k, seed)).unwrap();
                let sampled = lmbff::sample_from_original(spec, &data, k, seed).unwrap();
                assert!(
                    sampled.train == published.train,
                    "{task} k={k} seed={seed}: train differs"
                );
                assert!(
                    sampled.dev == published.dev,
                    "{task} k={k} seed={seed}: dev differs"
                );
                assert!(
                    sampled.test == published.test,
                    "{task} k={k} seed={seed}: test differs"
                );
            }
        }
    }
}

#[test]
fn superglue_files_read_and_sample_as_mezo() {
    let data = data_dir();
    let registry = registry();
    // Row counts of the validation files (README §3.7; MultiRC: 4,848 answers).
    for (task, rows) in [
        ("CB", 56),
        ("RTE-sg", 277),
        ("BoolQ", 3270),
        ("COPA", 100),
        ("WiC", 638),
        ("WSC", 104),
        ("MultiRC", 4848),
    ] {
        let spec = registry.get(task).unwrap();
        let val = superglue::read_file(spec, &data.superglue(&spec.dir).join("val.jsonl")).unwrap();
        assert_eq!(val.len(), rows, "{task}");
    }
    let cb = registry.get("CB").unwrap();
    let splits = superglue::load(cb, &data, 0).unwrap();
    // 250 train rows < 1000 + 100: 150 train, 100 dev; test = all 56 val rows (permuted).
    assert_eq!(sizes(&splits), (150, 100, 56));
    let rte = registry.get("RTE-sg").unwrap();
    let splits = superglue::load(rte, &data, 0).unwrap();
    assert_eq!(sizes(&splits), (1000, 500, 277));
    let other = superglue::load(rte, &data, 29).unwrap();
    assert_ne!(
        splits.train, other.train,
        "seeds 0 and 29 gave the same train set"
    );
    // No full train file for BoolQ here: an error, never the 32-example FewGLUE subset.
    let error = superglue::load(registry.get("BoolQ").unwrap(), &data, 0).unwrap_err();
    assert!(
        error.to_string().contains("BoolQ/train.jsonl not found"),
        "{error}"
    );
}

#[test]
fn validation_only_splits_are_disjoint_and_sized() {
    let data = data_dir();
    let registry = registry();
    // (task, train, dev, test): test takes rows until 1000 examples or half the rows; dev is
    // min(MeZO's dev size, a quarter of the remaining pool); train is the rest, up to 1000.
    for (task, want) in [
        ("BoolQ", (1000, 500, 1000)),
        ("WiC", (240, 79, 319)),
        ("WSC", (36, 12, 48)),
        ("COPA", (38, 12, 50)),
    ] {
        let spec = registry.get(task).unwrap();
        let s = superglue::load_from_validation(spec, &data, 13).unwrap();
        assert_eq!(sizes(&s), want, "{task}");
        for e in &s.test {
            assert!(
                !s.train.contains(e) && !s.dev.contains(e),
                "{task}: a test example is also in train or dev"
            );
        }
        for e in &s.dev {
            assert!(
                !s.train.contains(e),
                "{task}: a dev example is also in train"
            );
        }
        // The test set does not depend on the training seed; the training set does.
        let other = superglue::load_from_validation(spec, &data, 42).unwrap();
        assert_eq!(s.test, other.test, "{task}");
        assert_ne!(s.train, other.train, "{task}");
    }
    // BoolQ (one example per row): the test set is exactly MeZO's draw from the validation file.
    let boolq = registry.get("BoolQ").unwrap();
    let val = superglue::read_file(boolq, &data.superglue("BoolQ").join("val.jsonl")).unwrap();
    let order = trainer::data::numpy_rng::NumpyRandomState::seed(0).permutation(val.len());
    let mezo_test: Vec<_> = order[..1000].iter().map(|&i| val[i].clone()).collect();
    let s = superglue::load_from_validation(boolq, &data, 13).unwrap();
    assert_eq!(s.test, mezo_test);
    // MultiRC: whole paragraphs on one side only.
    let multirc = registry.get("MultiRC").unwrap();
    let s = superglue::load_from_validation(multirc, &data, 13).unwrap();
    assert_eq!(s.test.len(), 1000);
    let paragraph = |e: &trainer::data::Example| e.fields[0].1.clone();
    let test_paragraphs: std::collections::BTreeSet<String> =
        s.test.iter().map(paragraph).collect();
    assert!(s
        .train
        .iter()
        .chain(&s.dev)
        .all(|e| !test_paragraphs.contains(&paragraph(e))));
    assert!(!s.train.is_empty() && !s.dev.is_empty());
}

#[test]
fn standin_assets_read_with_the_documented_counts() {
    let assets = assets_dir();
    let registry = registry();
    // docs/assets.md: 4,000 Pang & Lee sentences (2,000 / 2,000); 10,605 VADER snippets binned
    // at -2, -0.5, 0.5, 2 into 1,904 / 3,157 / 548 / 2,809 / 2,187; 2,225 BBC articles.
    let polarity = standin::read_all(registry.get("polarity").unwrap(), &assets).unwrap();
    assert_eq!(label_counts(&polarity, 2), vec![2000, 2000]);
    let vader = standin::read_all(registry.get("vader5").unwrap(), &assets).unwrap();
    assert_eq!(label_counts(&vader, 5), vec![1904, 3157, 548, 2809, 2187]);
    let bbc = standin::read_all(registry.get("bbc").unwrap(), &assets).unwrap();
    assert_eq!(bbc.len(), 2225);
    let splits = standin::load(registry.get("polarity").unwrap(), &assets, 512, 42).unwrap();
    assert_eq!(sizes(&splits), (1024, 1024, 1000));
    let splits = standin::load(registry.get("bbc").unwrap(), &assets, 16, 13).unwrap();
    assert_eq!(sizes(&splits), (80, 80, 556));
}

/// COPA's real examples as SmolLM2 reads them for training and evaluation: every example two
/// candidate rows, each row the rendered premise and connector followed by exactly the
/// candidate's tokens (the continuation that is scored).
#[test]
fn copa_examples_encode_as_two_scored_continuations_with_smollm2() {
    use trainer::data::choice::ChoiceEncoder;
    use trainer::data::{ModelConventions, PaddingSide};
    let data = data_dir();
    let registry = registry();
    let spec = registry.get("COPA").unwrap();
    let splits = superglue::load_from_validation(spec, &data, 13).unwrap();
    let assets = assets_dir();
    let tokenizer =
        trainer::models::tokenizer::load_gguf_tokenizer(&assets.smollm2_gguf()).unwrap();
    let conventions = ModelConventions::Decoder {
        bos_token: None,
        pad_token: "<|endoftext|>".into(),
    };
    let encoder =
        ChoiceEncoder::new(&tokenizer, "COPA", spec, &conventions, PaddingSide::Left).unwrap();
    let batch = encoder.batch(&splits.test).unwrap();
    assert_eq!(batch.candidates, 2);
    assert_eq!(batch.input_ids.size()[0], 2 * splits.test.len() as i64);
    let ids: Vec<Vec<i64>> = Vec::try_from(&batch.input_ids).unwrap();
    let marks: Vec<Vec<i64>> = Vec::try_from(&batch.continuation_mask).unwrap();
    for (e, example) in splits.test.iter().enumerate() {
        for (c, candidate) in example.candidates.iter().enumerate() {
            let row = 2 * e + c;
            let continuation: Vec<u32> = ids[row]
                .iter()
                .zip(&marks[row])
                .filter(|(_, &m)| m == 1)
                .map(|(&t, _)| t as u32)
                .collect();
            let text = tokenizer.decode(&continuation, false).unwrap();
            assert_eq!(text, format!(" {candidate}"), "example {e} candidate {c}");
        }
    }
}
