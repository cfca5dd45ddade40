//! The run record (JSON): the resolved configuration, seeds, provenance, metrics over time and
//! the privacy ledger.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Sampling, TrainConfig};
use super::error::{Result, TrainError};
use crate::optim::privacy::{AccountantKind, NeighboringRelation};

/// Loss and schedule values after one training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetric {
    /// Global step (1-based).
    pub step: u64,
    /// Training loss seen by the step (ZO: mean of the two perturbed losses; `None` for an
    /// empty Poisson batch).
    pub loss: Option<f64>,
    /// Step size used.
    pub learning_rate: f64,
    /// mu used (ZO methods).
    pub zo_eps: f64,
    /// Stage index.
    pub stage: u64,
    /// Clipping and signal-to-noise of a DP ZO step (not private; absent in records written
    /// before it existed, and in private records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<crate::optim::zo::ClipDiagnostics>,
}

/// An evaluation on dev or test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetric {
    /// Step after which it was taken (0 = before training).
    pub step: u64,
    /// Mean per-example loss.
    pub loss: f64,
    /// Accuracy in [0, 1].
    pub accuracy: f64,
    /// Number of examples.
    pub examples: usize,
    /// Whether each example was predicted correctly, in evaluation order, as a string of `1`
    /// (correct) and `0`. Final evaluations carry it so a
    /// comparison can resample the test set; absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<String>,
    /// The predicted label of each example (its score column: label word or candidate), in
    /// evaluation order, one base-36 digit per example (`0`–`9`, then `a`–`z`). Final evaluations
    /// carry it, so label shares and per-label recall can be read without the data; absent in
    /// records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<String>,
    /// The gold label of each example, encoded as `predicted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<String>,
}

/// Labels a record's `predicted` / `gold` strings can encode (one base-36 digit each).
pub const MAX_ENCODED_LABELS: i64 = 36;

impl EvalMetric {
    /// The metric of per-example `outcomes` (the accuracy, `correct`, `predicted` and `gold`).
    ///
    /// # Errors
    /// A label outside `0..MAX_ENCODED_LABELS`.
    pub fn from_outcomes(
        step: u64,
        loss: f64,
        outcomes: &[crate::optim::loss::Outcome],
    ) -> std::result::Result<Option<Self>, String> {
        if outcomes.is_empty() {
            return Ok(None);
        }
        let digit = |label: i64| -> std::result::Result<char, String> {
            u32::try_from(label)
                .ok()
                .filter(|&l| i64::from(l) < MAX_ENCODED_LABELS)
                .and_then(|l| char::from_digit(l, MAX_ENCODED_LABELS as u32))
                .ok_or_else(|| {
                    format!("label {label}: a record encodes labels 0..{MAX_ENCODED_LABELS} only")
                })
        };
        let hits = outcomes.iter().filter(|o| o.correct()).count();
        Ok(Some(EvalMetric {
            step,
            loss,
            accuracy: hits as f64 / outcomes.len() as f64,
            examples: outcomes.len(),
            correct: Some(
                outcomes
                    .iter()
                    .map(|o| if o.correct() { '1' } else { '0' })
                    .collect(),
            ),
            predicted: Some(
                outcomes
                    .iter()
                    .map(|o| digit(o.predicted))
                    .collect::<std::result::Result<_, _>>()?,
            ),
            gold: Some(
                outcomes
                    .iter()
                    .map(|o| digit(o.gold))
                    .collect::<std::result::Result<_, _>>()?,
            ),
        }))
    }

    /// The same metric without per-example outcomes (for the dev history during training).
    pub fn without_examples(self) -> Self {
        Self {
            correct: None,
            predicted: None,
            gold: None,
            ..self
        }
    }
}

/// How the privacy of a DP run is accounted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// What each composition releases.
    pub mechanism: String,
    /// Accountant asked for in the configuration.
    pub accountant_requested: AccountantKind,
    /// Accountant that produced the numbers.
    pub accountant_used: String,
    /// Neighbouring relation.
    pub relation: NeighboringRelation,
    /// Batch sampling.
    pub sampling: Sampling,
    /// q = B / n.
    pub sampling_rate: f64,
    /// delta.
    pub delta: f64,
    /// Target epsilon, if calibrated to one.
    pub epsilon_target: Option<f64>,
    /// sigma = noise std / sensitivity.
    pub noise_multiplier: f64,
    /// C.
    pub clip_norm: f64,
    /// Std of the noise added to each clipped sum.
    pub noise_std: f64,
    /// Compositions per step (ZO: the number of directions, each with its own noise draw).
    pub compositions_per_step: u64,
    /// Planned steps T.
    pub steps_planned: u64,
    /// epsilon after the planned T steps.
    pub epsilon_planned: f64,
    /// n.
    pub dataset_size: u64,
    /// B.
    pub batch_size: u64,
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEvent {
    /// Step at which it happened (0 = before training).
    pub step: u64,
    /// What happened.
    pub description: String,
    /// Privacy it cost, in epsilon (0 for data-free work).
    pub epsilon_cost: f64,
}

/// The privacy ledger written into every checkpoint and run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    /// `None` for a non-private method (no guarantee at all).
    pub accounting: Option<Accounting>,
    /// Steps taken so far.
    pub steps_done: u64,
    /// epsilon after `steps_done` steps (0 for none, `None` for a non-private method).
    pub epsilon_spent: Option<f64>,
    /// Notable events (DP-ZOPO mask scoring, at no privacy cost).
    pub events: Vec<LedgerEvent>,
    /// The accountant crate's ledger of what was composed in the `steps_done` steps, from which
    /// the guarantee can be recomputed.
    pub accountant_ledger: Option<accountant::Ledger>,
}

/// Where and with what a run was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the working directory, if available.
    pub git_commit: Option<String>,
    /// `cpu` or `cuda`.
    pub device: String,
    /// libtorch version (from `$LIBTORCH/build-version`), if found.
    pub libtorch: Option<String>,
    /// The tch crate version.
    pub tch: String,
    /// This crate's version.
    pub trainer: String,
    /// The CUDA kernel's normal math (`exact` or `fast`, trainer::perturb::NormalMath); `exact`
    /// on CPU. Absent in records written before the option existed, all exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal_math: Option<String>,
    /// Precision the matrix products ran in (crate::compute::Compute::effective). Absent in
    /// records written before the setting existed, all f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    /// The run's paired ZO forwards were joined with those of other cells, threads of one
    /// process, into forwards of up to this many cells (crate::optim::paired::ForwardGroup;
    /// results equal to rounding). Absent for a run on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_group: Option<usize>,
}

impl Provenance {
    /// Best-effort detection for `device`.
    pub fn detect(device: tch::Device) -> Self {
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let libtorch = std::env::var_os("LIBTORCH")
            .map(|dir| PathBuf::from(dir).join("build-version"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string());
        Self {
            git_commit,
            device: crate::device::name(device).to_string(),
            libtorch,
            tch: "0.24.0".into(),
            trainer: env!("CARGO_PKG_VERSION").into(),
            normal_math: Some(
                match device {
                    tch::Device::Cpu => crate::perturb::NormalMath::Exact,
                    _ => crate::perturb::normal_math(),
                }
                .name()
                .into(),
            ),
            compute: None,
            forward_group: None,
        }
    }
}

/// Resolved quantities the configuration leaves implicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Steps actually run T.
    pub total_steps: u64,
    /// Training examples n.
    pub train_examples: usize,
    /// All trainable coordinates d.
    pub total_coordinates: usize,
    /// Coordinates the method touches at the end of the run (|M| for DP-ZOPO).
    pub trained_coordinates: usize,
    /// Bytes of the proximal anchor (0 without).
    pub anchor_bytes: usize,
    /// DP-SGD: bytes held beyond inference by the per-example strategy.
    pub dp_sgd_extra_state_bytes: Option<usize>,
}

/// Where a run's wall time went, in seconds of the host clock. Not a result: two runs of one
/// spec differ here as they do in wall time, so comparisons of records leave it out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// Noise calibration, budget check and (on resume) loading the checkpoint, before step 1.
    pub setup: f64,
    /// The training steps: batches, forwards, updates, DP-ZOPO's mask scoring.
    pub steps: f64,
    /// Checkpoint saves: tensors copied to the host, written and checksummed.
    pub checkpoints: f64,
    /// The privacy accountant's epsilon spent, at checkpoints and at the end.
    pub accounting: f64,
    /// Dev and test evaluations (and contextual calibration's content-free pass).
    pub evaluation: f64,
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The configuration.
    pub config: TrainConfig,
    /// Resolved quantities.
    pub resolved: Resolved,
    /// Provenance.
    pub provenance: Provenance,
    /// Per-step metrics.
    pub steps: Vec<StepMetric>,
    /// Dev evaluations during training.
    pub dev: Vec<EvalMetric>,
    /// Dev accuracy of the final iterate.
    pub final_dev: Option<EvalMetric>,
    /// Test accuracy of the final iterate (what the paper reports).
    pub test: Option<EvalMetric>,
    /// The same final iterate on test, contextually calibrated (`calibration`): for every method
    /// but calibrated and dev-bias zero-shot, whose `test` already is corrected, when the run
    /// was given content-free inputs. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_calibrated: Option<EvalMetric>,
    /// Privacy ledger.
    pub ledger: PrivacyLedger,
    /// Step of the checkpoint this run was resumed from, if any.
    pub resumed_from: Option<u64>,
    /// Whether `steps` carries values computed from the training data without noise (per-step
    /// training losses, clipping diagnostics). They are not covered by the run's DP guarantee:
    /// publishing them leaks information about the training examples. Records written before
    /// the field existed all carry them.
    #[serde(default = "carries_nonprivate_diagnostics")]
    pub nonprivate_diagnostics: bool,
    /// The contextual calibration: of the final evaluations (calibrated zero-shot) or of
    /// `test_calibrated` (the other methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::optim::calibration::Calibration>,
    /// The dev-fitted label bias of zero-shot-dev-bias's final evaluations. Absent for every
    /// other method, and in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_bias: Option<crate::optim::calibration::DevBias>,
    /// Where this process's wall time went (absent in records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<PhaseSeconds>,
}

fn carries_nonprivate_diagnostics() -> bool {
    true
}

impl RunRecord {
    /// The record without its non-private diagnostics: per-step training losses and clipping
    /// statistics removed; the schedule, the evaluations (on held-out splits) and the privacy
    /// ledger kept.
    pub fn without_nonprivate_diagnostics(mut self) -> Self {
        for step in &mut self.steps {
            step.loss = None;
            step.clip = None;
        }
        self.nonprivate_diagnostics = false;
        self
    }

    /// Writes the record as pretty JSON, atomically (temporary file + rename).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| TrainError::Format {
            path: path.into(),
            reason: e.to_string(),
        })?;
        super::checkpoint::write_atomically(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::loss::Outcome;

    fn outcome(predicted: i64, gold: i64) -> Outcome {
        Outcome { predicted, gold }
    }

    #[test]
    fn outcomes_encode_as_one_digit_per_example() {
        let metric = EvalMetric::from_outcomes(
            7,
            0.5,
            &[
                outcome(1, 1),
                outcome(0, 1),
                outcome(11, 11),
                outcome(35, 2),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(metric.step, 7);
        assert_eq!(metric.examples, 4);
        assert!((metric.accuracy - 0.5).abs() < 1e-12);
        assert_eq!(metric.correct.as_deref(), Some("1010"));
        assert_eq!(metric.predicted.as_deref(), Some("10bz"));
        assert_eq!(metric.gold.as_deref(), Some("11b2"));
        let bare = metric.without_examples();
        assert!(bare.correct.is_none() && bare.predicted.is_none() && bare.gold.is_none());
        assert!(EvalMetric::from_outcomes(0, 0.0, &[]).unwrap().is_none());
    }

    #[test]
    fn a_label_a_record_cannot_encode_is_an_error_naming_it() {
        for label in [36, -1] {
            let err = EvalMetric::from_outcomes(0, 0.0, &[outcome(label, 0)]).unwrap_err();
            assert!(err.contains(&format!("label {label}")), "{err}");
        }
    }
}
