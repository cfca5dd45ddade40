//! Calibrated zero-shot (contextual calibration, Zhao et al. 2021) through `run_training_with`
//! on the tiny RoBERTa, OPT and Llama checkpoints (f32, CPU): the recorded label prior, loss and
//! per-example outcomes equal a by-hand computation from the model's label-word logits, and a
//! content-free input equal to the evaluated one gives uniform calibrated scores.

use tch::{Device, Kind, Tensor};
use trainer::batch::Batch;
use trainer::model::LabelWordModel;
use trainer::models::load_model;
use trainer::train::{
    run_training, run_training_with, BatchRequest, ContentFree, Method, RunOptions, RunRecord,
    TrainBatches, TrainConfig,
};

mod parity_fixtures;
use parity_fixtures::{fixture, padded_batch};

fn rows(batch: &Batch, which: &[i64]) -> Batch {
    let index = Tensor::from_slice(which);
    Batch {
        input_ids: batch.input_ids.index_select(0, &index),
        attention_mask: batch.attention_mask.index_select(0, &index),
        positions: batch.positions.index_select(0, &index),
        labels: batch.labels.index_select(0, &index),
        label_word_ids: batch.label_word_ids.shallow_clone(),
    }
}

/// Zero-shot methods read no training data.
struct NoTraining;

impl TrainBatches for NoTraining {
    fn num_examples(&self) -> usize {
        0
    }
    fn batch(&mut self, request: BatchRequest) -> Result<trainer::batch::TaskBatch, String> {
        Err(format!(
            "zero-shot asked for the batch of step {}",
            request.step
        ))
    }
}

fn config(method: Method) -> TrainConfig {
    TrainConfig {
        method,
        epsilon: None,
        eval_every: 0,
        ..TrainConfig::default()
    }
}

/// Row-wise label-word softmax of `batch`, by hand in f64 from the model's logits.
fn probabilities(model: &dyn LabelWordModel, batch: &Batch) -> Vec<Vec<f64>> {
    let logits = tch::no_grad(|| model.label_word_logits(batch)).unwrap();
    let n = logits.size()[1] as usize;
    let flat = Vec::<f64>::try_from(logits.to_kind(Kind::Double).view([-1])).unwrap();
    flat.chunks(n)
        .map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        })
        .collect()
}

/// A zero-shot `method` evaluated on `dev` and `test`, given `content_free`'s rows as the
/// content-free inputs `row 0`, `row 1`, ….
fn with_content_free(
    model: &mut dyn LabelWordModel,
    method: Method,
    dev: &[Batch],
    test: &[Batch],
    content_free: &Batch,
) -> RunRecord {
    let inputs: Vec<String> = (0..content_free.len())
        .map(|i| format!("row {i}"))
        .collect();
    run_training_with(
        model,
        &config(method),
        &mut NoTraining,
        dev,
        test,
        Some(ContentFree {
            inputs: &inputs,
            batch: content_free,
        }),
        &RunOptions::default(),
    )
    .unwrap()
}

fn calibrated(
    model: &mut dyn LabelWordModel,
    dev: &[Batch],
    test: &[Batch],
    content_free: &Batch,
) -> RunRecord {
    with_content_free(model, Method::ZeroShotCalibrated, dev, test, content_free)
}

fn check(name: &str) {
    let mut model = load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap();
    let test = padded_batch(name);
    let labels = Vec::<i64>::try_from(&test.labels).unwrap();
    let p = probabilities(&model, &test);
    let content_free = rows(&test, &[0, 1]);
    let p_cf = probabilities(&model, &content_free);
    let prior: Vec<f64> = (0..2).map(|j| 0.5 * (p_cf[0][j] + p_cf[1][j])).collect();

    let record = calibrated(&mut model, &[], std::slice::from_ref(&test), &content_free);
    let calibration = record.calibration.as_ref().unwrap();
    assert_eq!(calibration.content_free_inputs, ["row 0", "row 1"]);
    for (got, want) in calibration.label_prior.iter().zip(&prior) {
        assert!((got - want).abs() < 1e-6, "{name}: prior {got} vs {want}");
    }
    // Calibrated distribution p / p_cf renormalised; its argmax and cross-entropy.
    let mut loss = 0.0;
    let mut outcomes = String::new();
    for (row, &label) in p.iter().zip(&labels) {
        let ratio: Vec<f64> = row.iter().zip(&prior).map(|(a, b)| a / b).collect();
        let total: f64 = ratio.iter().sum();
        loss -= (ratio[label as usize] / total).ln();
        let predicted = usize::from(ratio[1] > ratio[0]);
        outcomes.push(if predicted == label as usize {
            '1'
        } else {
            '0'
        });
    }
    loss /= p.len() as f64;
    let metric = record.test.as_ref().unwrap();
    assert!(
        (metric.loss - loss).abs() < 1e-5,
        "{name}: loss {} vs {loss}",
        metric.loss
    );
    assert_eq!(metric.correct.as_deref(), Some(outcomes.as_str()), "{name}");
    assert!(record.ledger.epsilon_spent.is_none() && record.steps.is_empty());

    // A content-free input equal to the evaluated one: every label scores 1/2, loss ln 2.
    let one = rows(&test, &[2]);
    let record = calibrated(&mut model, std::slice::from_ref(&one), &[], &one);
    let dev = record.final_dev.unwrap();
    assert!(
        (dev.loss - 2f64.ln()).abs() < 1e-6,
        "{name}: self-calibrated loss {} (uniform: ln 2)",
        dev.loss
    );

    // Plain zero-shot scores the raw logits through the same evaluation.
    let plain = run_training(
        &mut model,
        &config(Method::ZeroShot),
        &mut NoTraining,
        &[],
        std::slice::from_ref(&test),
        &RunOptions::default(),
    )
    .unwrap();
    let raw: f64 = -p
        .iter()
        .zip(&labels)
        .map(|(row, &l)| row[l as usize].ln())
        .sum::<f64>()
        / p.len() as f64;
    assert!(
        (plain.test.as_ref().unwrap().loss - raw).abs() < 1e-5,
        "{name}"
    );
    assert!(plain.calibration.is_none() && plain.test_calibrated.is_none());

    // Zero-shot given the content-free inputs keeps its raw test evaluation and adds the
    // calibrated one: exactly calibrated zero-shot's test evaluation.
    let both = with_content_free(
        &mut model,
        Method::ZeroShot,
        &[],
        std::slice::from_ref(&test),
        &content_free,
    );
    assert_eq!(both.test, plain.test, "{name}");
    let calibrated_test = calibrated(&mut model, &[], std::slice::from_ref(&test), &content_free);
    assert_eq!(both.test_calibrated, calibrated_test.test, "{name}");
    assert_eq!(both.calibration, calibrated_test.calibration, "{name}");
    assert!(calibrated_test.test_calibrated.is_none(), "{name}");
}

#[test]
fn calibrated_zero_shot_roberta() {
    check("roberta_tiny");
}

#[test]
fn calibrated_zero_shot_opt() {
    check("opt_tiny");
}

#[test]
fn calibrated_zero_shot_llama() {
    check("llama_tiny_gqa_untied");
}

#[test]
fn calibration_needs_content_free_inputs_with_matching_label_words() {
    let name = "opt_tiny";
    let mut model = load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap();
    let test = padded_batch(name);
    let inputs = vec!["N/A".to_string()];
    let mut run = |method: Method, cf: Option<&Batch>| {
        run_training_with(
            &mut model,
            &config(method),
            &mut NoTraining,
            &[],
            std::slice::from_ref(&test),
            cf.map(|batch| ContentFree {
                inputs: &inputs,
                batch,
            }),
            &RunOptions::default(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    assert!(run(Method::ZeroShotCalibrated, None).contains("content-free"));
    let mut other = rows(&test, &[0]);
    other.label_word_ids = Tensor::from_slice(&[1i64, 2]);
    assert!(run(Method::ZeroShotCalibrated, Some(&other)).contains("label words"));
    assert!(run(Method::ZeroShot, Some(&other)).contains("label words"));
}

/// Zero-shot with the dev-fitted label bias, by hand from the model's label-word softmax: the
/// recorded bias solves the likelihood equations on dev (each label's mean biased probability
/// equals its dev share), the final dev loss equals the fit's own, and the test outcomes are
/// the argmax of log p + b. The plain-Rust fit and the tch evaluation are separate code paths.
#[test]
fn dev_bias_zero_shot_fits_the_dev_label_shares() {
    for name in ["opt_tiny", "llama_tiny_gqa_untied"] {
        let mut model = load_model(&fixture(name), Kind::Float, Device::Cpu).unwrap();
        let batch = padded_batch(name);
        let labels = Vec::<i64>::try_from(&batch.labels).unwrap();
        assert!(
            labels.contains(&0) && labels.contains(&1),
            "{name}: {labels:?}"
        );
        let p = probabilities(&model, &batch);
        // Given content-free inputs too, as every label-word cell is: they add nothing.
        let record = with_content_free(
            &mut model,
            Method::ZeroShotDevBias,
            std::slice::from_ref(&batch),
            std::slice::from_ref(&batch),
            &rows(&batch, &[0]),
        );
        assert!(record.calibration.is_none() && record.test_calibrated.is_none());
        let fitted = record.dev_bias.as_ref().unwrap();
        assert_eq!(fitted.dev_examples, labels.len(), "{name}");
        let biased: Vec<Vec<f64>> = p
            .iter()
            .map(|row| {
                let z: Vec<f64> = row
                    .iter()
                    .zip(&fitted.label_bias)
                    .map(|(a, b)| a * b.exp())
                    .collect();
                let s: f64 = z.iter().sum();
                z.iter().map(|v| v / s).collect()
            })
            .collect();
        for k in 0..2 {
            let share = labels.iter().filter(|&&y| y == k as i64).count() as f64 / p.len() as f64;
            let mean: f64 = biased.iter().map(|q| q[k]).sum::<f64>() / p.len() as f64;
            assert!(
                (mean - share).abs() < 1e-5,
                "{name}: label {k} {mean} vs {share}"
            );
        }
        let dev = record.final_dev.as_ref().unwrap();
        assert!(
            (dev.loss - fitted.dev_loss_after).abs() < 1e-5,
            "{name}: {} vs {}",
            dev.loss,
            fitted.dev_loss_after
        );
        let outcomes: String = biased
            .iter()
            .zip(&labels)
            .map(|(q, &y)| {
                if usize::from(q[1] > q[0]) == y as usize {
                    '1'
                } else {
                    '0'
                }
            })
            .collect();
        assert_eq!(
            record.test.as_ref().unwrap().correct.as_deref(),
            Some(outcomes.as_str())
        );
        assert!(record.ledger.epsilon_spent.is_none() && record.steps.is_empty());
    }
}
