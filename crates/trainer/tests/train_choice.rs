//! A multiple-choice task through `run_training` on the tiny Llama checkpoint (f32, CPU): every
//! ZO method, DP-SGD (ghost and micro-batch) and zero-shot run a few steps, sampled and
//! accounted per example; calibrated zero-shot is refused with the reason.

use rand::Rng;
use tch::{Device, Kind};
use trainer::batch::TaskBatch;
use trainer::data::choice::{ChoiceBatch, ChoiceRow};
use trainer::data::PaddingSide;
use trainer::model::LabelWordModel;
use trainer::models::{load_model, Model};
use trainer::optim::dp_sgd::DpSgdClipping;
use trainer::optim::rng::{stream, Purpose};
use trainer::train::{
    run_training, BatchRequest, Method, RunOptions, RunRecord, Sampling, TrainBatches, TrainConfig,
};

mod optim_support;
mod parity_fixtures;
use optim_support::snapshot;
use parity_fixtures::fixture;

/// Examples of two candidates each; the correct one continues with the prompt's first token.
struct ChoiceTask {
    examples: Vec<(Vec<ChoiceRow>, usize)>,
}

impl ChoiceTask {
    fn new(n: usize, seed: u64, vocab: i64) -> Self {
        let mut rng = stream(seed, 0, Purpose::Batches);
        let examples = (0..n)
            .map(|_| {
                let prompt: Vec<i64> = (0..rng.random_range(3..6))
                    .map(|_| rng.random_range(3..vocab))
                    .collect();
                let label = rng.random_range(0..2usize);
                let rows = (0..2)
                    .map(|c| {
                        let mut ids = prompt.clone();
                        let start = ids.len();
                        let first = if c == label {
                            prompt[0]
                        } else {
                            rng.random_range(3..vocab)
                        };
                        ids.push(first);
                        ids.extend((0..c).map(|_| rng.random_range(3..vocab)));
                        ChoiceRow { ids, start }
                    })
                    .collect();
                (rows, label)
            })
            .collect();
        Self { examples }
    }

    fn batch_of(&self, indices: &[usize]) -> ChoiceBatch {
        let rows: Vec<Vec<ChoiceRow>> = indices
            .iter()
            .map(|&i| self.examples[i].0.clone())
            .collect();
        let labels: Vec<usize> = indices.iter().map(|&i| self.examples[i].1).collect();
        ChoiceBatch::collate("choice", &rows, &labels, 0, PaddingSide::Left).unwrap()
    }

    fn batches(&self, size: usize) -> Vec<TaskBatch> {
        let all: Vec<usize> = (0..self.examples.len()).collect();
        all.chunks(size).map(|c| self.batch_of(c).into()).collect()
    }
}

impl TrainBatches for ChoiceTask {
    fn num_examples(&self) -> usize {
        self.examples.len()
    }

    /// Poisson sampling of examples: an example joins with all its candidates or not at all.
    fn batch(&mut self, request: BatchRequest) -> Result<TaskBatch, String> {
        assert_eq!(request.sampling, Sampling::Poisson);
        let mut rng = stream(request.seed, request.step, Purpose::Batches);
        let n = self.examples.len();
        let q = request.batch_size as f64 / n as f64;
        let indices: Vec<usize> = (0..n).filter(|_| rng.random::<f64>() < q).collect();
        Ok(self.batch_of(&indices).into())
    }
}

fn model() -> Model {
    load_model(&fixture("llama_tiny_gqa_untied"), Kind::Float, Device::Cpu).unwrap()
}

fn config(method: Method, learning_rate: f64) -> TrainConfig {
    let mut config = TrainConfig {
        method,
        learning_rate,
        steps: 6,
        batch_size: 4,
        zo_eps: 1e-3,
        clip_norm: 1.0,
        epsilon: Some(8.0),
        eval_every: 3,
        seed: 77,
        sampling: Sampling::Poisson,
        dtype: trainer::train::DType::F32,
        ..TrainConfig::default()
    };
    config.stage.first_stage_steps = 2;
    config.stage.num_stages = 2;
    config.mask.score.ratio = 0.1;
    config
}

fn run(config: &TrainConfig) -> (RunRecord, Model) {
    let mut model = model();
    let vocab = model.vocab_size().unwrap();
    let mut train = ChoiceTask::new(24, 1, vocab);
    let dev = ChoiceTask::new(10, 2, vocab).batches(4);
    let test = ChoiceTask::new(12, 3, vocab).batches(5);
    let record = run_training(
        &mut model,
        config,
        &mut train,
        &dev,
        &test,
        &RunOptions::default(),
    )
    .unwrap();
    (record, model)
}

#[test]
fn every_method_trains_and_evaluates_a_multiple_choice_task() {
    let initial = snapshot(&model());
    let cases = [
        (Method::ZeroShot, 0.0, DpSgdClipping::Ghost),
        (Method::Mezo, 1e-3, DpSgdClipping::Ghost),
        (Method::Dpzero, 1e-3, DpSgdClipping::Ghost),
        (Method::DpZoso, 1e-3, DpSgdClipping::Ghost),
        (Method::DpZopo, 1e-3, DpSgdClipping::Ghost),
        (Method::DpSgd, 1e-2, DpSgdClipping::Ghost),
        (Method::DpSgd, 1e-2, DpSgdClipping::Microbatch),
        (Method::FullFineTune, 1e-3, DpSgdClipping::Ghost),
    ];
    let mut dp_sgd_runs = Vec::new();
    for (method, learning_rate, clipping) in cases {
        let mut config = config(method, learning_rate);
        config.dp_sgd_clipping = clipping;
        let (record, model) = run(&config);
        let what = format!("{method:?} {clipping:?}");
        // Sampling and accounting count examples, not candidate rows.
        assert_eq!(record.resolved.train_examples, 24, "{what}");
        let test = record.test.as_ref().unwrap();
        assert_eq!(test.examples, 12, "{what}: one outcome per example");
        assert_eq!(test.correct.as_ref().unwrap().len(), 12, "{what}");
        // The gold labels are the test set's, in order; `correct` is where the prediction
        // equals it.
        let gold: String = ChoiceTask::new(12, 3, model.vocab_size().unwrap())
            .examples
            .iter()
            .map(|e| char::from_digit(e.1 as u32, 36).unwrap())
            .collect();
        assert_eq!(test.gold.as_deref(), Some(gold.as_str()), "{what}");
        let predicted = test.predicted.as_ref().unwrap();
        assert_eq!(predicted.len(), 12, "{what}");
        assert!(predicted.chars().all(|c| c == '0' || c == '1'), "{what}");
        let agrees = test
            .correct
            .as_ref()
            .unwrap()
            .chars()
            .zip(predicted.chars().zip(gold.chars()))
            .all(|(c, (p, g))| (c == '1') == (p == g));
        assert!(agrees, "{what}: {predicted} vs {gold}");
        assert_eq!(record.final_dev.as_ref().unwrap().examples, 10, "{what}");
        assert!(test.loss.is_finite(), "{what}");
        let changed = snapshot(&model) != initial;
        if method == Method::ZeroShot {
            assert!(record.steps.is_empty() && !changed, "{what}");
            continue;
        }
        assert_eq!(record.steps.len(), 6, "{what}");
        assert!(changed, "{what}: the run moved no weight");
        assert!(
            record
                .steps
                .iter()
                .any(|s| s.loss.is_some_and(f64::is_finite)),
            "{what}"
        );
        if method.is_private() {
            let accounting = record.ledger.accounting.as_ref().unwrap();
            assert_eq!(accounting.dataset_size, 24, "{what}");
            assert!(
                (accounting.sampling_rate - 4.0 / 24.0).abs() < 1e-12,
                "{what}"
            );
            let spent = record.ledger.epsilon_spent.unwrap();
            assert!(
                spent > 0.0 && spent <= 8.0 * (1.0 + 1e-9),
                "{what}: eps {spent}"
            );
        }
        if method.is_zeroth_order() && method != Method::Mezo {
            assert!(
                record.steps.iter().any(|s| s.clip.is_some()),
                "{what}: no clipping diagnostics"
            );
        }
        if method == Method::DpSgd {
            dp_sgd_runs.push(snapshot(&model));
        }
    }
    // Ghost and micro-batch clipping give the same DP-SGD run up to rounding.
    let (ghost, micro) = (&dp_sgd_runs[0], &dp_sgd_runs[1]);
    for ((name, g), (_, m)) in ghost.iter().zip(micro) {
        let diff = g
            .iter()
            .zip(m)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            diff < 1e-5,
            "{name}: ghost and micro-batch runs differ by {diff}"
        );
    }
}

#[test]
fn calibrated_zero_shot_is_refused_on_a_multiple_choice_task() {
    let mut model = model();
    let vocab = model.vocab_size().unwrap();
    let test = ChoiceTask::new(6, 3, vocab).batches(3);
    let error = run_training(
        &mut model,
        &config(Method::ZeroShotCalibrated, 0.0),
        &mut ChoiceTask::new(8, 1, vocab),
        &[],
        &test,
        &RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("not for multiple-choice tasks"), "{error}");
}

/// A label-word model (no continuation scoring) refuses a multiple-choice task by name.
#[test]
fn a_label_word_only_model_refuses_multiple_choice() {
    let mut model = optim_support::TinyModel::new(5, Kind::Float);
    let test = ChoiceTask::new(6, 3, optim_support::VOCAB).batches(3);
    let error = run_training(
        &mut model,
        &config(Method::ZeroShot, 0.0),
        &mut ChoiceTask::new(8, 1, optim_support::VOCAB),
        &[],
        &test,
        &RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("multiple-choice tasks need a causal LM"),
        "{error}"
    );
}
