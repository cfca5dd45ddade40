//! `run_training`: the loop shared by every method (docs/paper.md §1.1-§1.3, §3.1): per-step batch,
//! stage boundaries (step halving, mu schedule, anchor reset, DP-ZOPO re-scoring), the method's
//! step (`super::step::MethodStep`, the step `repro memory` times), dev evaluation every
//! `eval_every` steps, checkpoints, and final-iterate dev/test accuracy (the paper reports the
//! last iterate).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use schedule::{MuSchedule, StagewiseSchedule};
use tch::Tensor;

use super::checkpoint::{self, CheckpointState, FORMAT_VERSION};
use super::config::{Method, MuScheduleChoice, ProximalMode, Sampling, TrainConfig};
use super::error::{Result, TrainError};
use super::record::{
    Accounting, EvalMetric, LedgerEvent, PhaseSeconds, PrivacyLedger, Provenance, Resolved,
    RunRecord, StepMetric,
};
use super::source::{BatchRequest, TrainBatches};
use super::step::{MethodSettings, MethodStep, StepInput};
use crate::batch::{Batch, ExampleBatch};
use crate::model::LabelWordModel;
use crate::optim::calibration;
use crate::optim::mask::{data_free_scores, select_mask, union_masks, MaskKeepOut, MaskStrategy};
use crate::optim::params::{Anchor, TrainableParams};
use crate::optim::privacy::{self, SampledGaussian};
use crate::optim::zo::{ZoForward, ZoPrivacy};
use crate::optim::{loss, OptimError};

/// How to start a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the newest checkpoint in `checkpoint_dir` if there is one. Without it, an
    /// existing checkpoint is an error (never silently overwritten).
    pub resume: bool,
    /// Provenance to record (`None`: [`Provenance::detect`]).
    pub provenance: Option<Provenance>,
    /// Do not merge a ZO step's update with the next step's first perturbation
    /// ([`crate::optim::zo::zo_step`]): 3 passes per step instead of 2. Same
    /// arithmetic up to the rounding of the intermediate theta; for comparisons.
    pub no_carry: bool,
    /// Return a record without the non-private diagnostics (per-step training losses and
    /// clipping statistics; [`RunRecord::without_nonprivate_diagnostics`]). Checkpoints keep
    /// them, since a resumed run must continue the same record.
    pub private_record: bool,
}

fn invalid(name: &'static str, value: impl ToString, requirement: &'static str) -> TrainError {
    OptimError::invalid(name, value, requirement).into()
}

fn theory_err(e: impl std::fmt::Display) -> TrainError {
    invalid(
        "schedule",
        e.to_string(),
        "rejected by the stagewise schedule",
    )
}

/// Steps actually run: the stagewise methods cap `steps` at T0 (2^S - 1).
pub fn total_steps(config: &TrainConfig) -> u64 {
    match config.method {
        m if m.is_evaluation_only() => 0,
        m if m.is_stagewise() => {
            let capacity = config
                .stage
                .first_stage_steps
                .saturating_mul((1u64 << config.stage.num_stages.min(62)) - 1);
            config.steps.min(capacity)
        }
        _ => config.steps,
    }
}

fn schedule_of(config: &TrainConfig, steps: u64) -> Result<StagewiseSchedule> {
    let mu_end = config.zo_eps_end.unwrap_or(config.zo_eps);
    if config.method.is_stagewise() {
        let mu_schedule = match config.stage.mu_schedule {
            MuScheduleChoice::Geometric => MuSchedule::Geometric,
            MuScheduleChoice::ReleasedCode => MuSchedule::ReleasedCode,
        };
        StagewiseSchedule::new(
            config.learning_rate,
            config.stage.first_stage_steps as usize,
            config.stage.num_stages as usize,
            steps as usize,
            config.zo_eps,
            mu_end,
            mu_schedule,
        )
        .map(|s| {
            if config.stage.step_halving {
                s
            } else {
                s.without_step_halving()
            }
        })
        .map_err(theory_err)
    } else {
        StagewiseSchedule::constant(config.learning_rate, steps as usize, config.zo_eps)
            .map_err(theory_err)
    }
}

/// The privacy plan of a DP run: calibrated (or given) noise multiplier and planned epsilon.
///
/// # Errors
/// Missing target, out-of-range inputs, or calibration failure.
pub fn plan_privacy(config: &TrainConfig, train_examples: usize, steps: u64) -> Result<Accounting> {
    let relation = config.sampling.relation();
    let delta = config.delta.unwrap_or(1.0 / train_examples as f64);
    let compositions_per_step = if config.method.is_zeroth_order() {
        config.num_directions as u64
    } else {
        1
    };
    let mut mechanism = SampledGaussian {
        sampling: config.sampling,
        dataset_size: train_examples as u64,
        batch_size: config.batch_size as u64,
        noise_multiplier: 1.0,
    };
    mechanism.noise_multiplier = match (config.noise_multiplier, config.epsilon) {
        (Some(sigma), _) => sigma,
        (None, Some(epsilon)) => privacy::calibrate_noise_multiplier(
            config.accountant,
            epsilon,
            delta,
            &mechanism,
            steps,
            compositions_per_step,
        )?,
        (None, None) => {
            return Err(TrainError::MissingPrivacyTarget {
                method: format!("{:?}", config.method),
            })
        }
    };
    let epsilon_planned = privacy::epsilon_spent(
        config.accountant,
        &mechanism,
        steps,
        compositions_per_step,
        delta,
    )?;
    let what = if config.method.is_zeroth_order() {
        "the clipped per-example scalar finite differences, one Gaussian scalar per direction \
         (each direction one composition)"
    } else {
        "the clipped per-example gradients, Gaussian noise on every coordinate"
    };
    let sampling_note = match config.sampling {
        Sampling::Poisson => {
            "Poisson sampling at rate q = B/n, add/remove-one adjacency, noise \
             std sigma C, sums divided by B"
        }
        Sampling::FixedSize => {
            "a fresh fixed-size batch each step, sampled without replacement (WBK19 Thm 27), \
             replace-one adjacency, noise std 2 sigma C, sums divided by B"
        }
        Sampling::Shuffled => {
            "disjoint fixed-size batches of a fresh shuffle each epoch, accounted as one \
             unsampled Gaussian release per direction per epoch (no amplification), replace-one \
             adjacency, noise std 2 sigma C, sums divided by |B_t|"
        }
    };
    Ok(Accounting {
        mechanism: format!("subsampled Gaussian on the sum of {what}; {sampling_note}"),
        accountant_requested: config.accountant,
        accountant_used: format!(
            "{} ({})",
            config.accountant.name(),
            config.accountant.description()
        ),
        relation,
        sampling: config.sampling,
        sampling_rate: mechanism.sampling_rate(),
        delta,
        epsilon_target: config.epsilon,
        noise_multiplier: mechanism.noise_multiplier,
        clip_norm: config.clip_norm,
        noise_std: mechanism.noise_multiplier * privacy::sensitivity(relation, config.clip_norm),
        compositions_per_step,
        steps_planned: steps,
        epsilon_planned,
        dataset_size: train_examples as u64,
        batch_size: config.batch_size as u64,
    })
}

fn check_budget(accounting: &Accounting) -> Result<()> {
    if let Some(target) = accounting.epsilon_target {
        if accounting.epsilon_planned > target * (1.0 + 1e-12) {
            return Err(TrainError::BudgetExceeded {
                planned: accounting.epsilon_planned,
                target,
                steps: accounting.steps_planned,
            });
        }
    }
    Ok(())
}

fn mechanism_of(accounting: &Accounting) -> SampledGaussian {
    SampledGaussian {
        sampling: accounting.sampling,
        dataset_size: accounting.dataset_size,
        batch_size: accounting.batch_size,
        noise_multiplier: accounting.noise_multiplier,
    }
}

/// Runs `f`, adding its wall time to `total`.
fn timed<T>(total: &mut f64, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    *total += started.elapsed().as_secs_f64();
    out
}

/// Updates epsilon spent and the accountant's ledger for `steps_done` steps.
fn account(ledger: &mut PrivacyLedger, accounting: &Accounting, steps_done: u64) -> Result<()> {
    let mechanism = mechanism_of(accounting);
    ledger.epsilon_spent = Some(privacy::epsilon_spent(
        accounting.accountant_requested,
        &mechanism,
        steps_done,
        accounting.compositions_per_step,
        accounting.delta,
    )?);
    ledger.accountant_ledger = Some(
        mechanism
            .ledger(steps_done, accounting.compositions_per_step)
            .map_err(|e| OptimError::Privacy(e.to_string()))?,
    );
    Ok(())
}

fn evaluate<B: ExampleBatch>(
    model: &dyn LabelWordModel,
    batches: &[B],
    step: u64,
    log_prior: Option<&Tensor>,
) -> Result<Option<EvalMetric>> {
    let (loss, outcomes) = loss::evaluate_per_example(model, batches, log_prior)?;
    EvalMetric::from_outcomes(step, loss, &outcomes)
        .map_err(|e| invalid("evaluation", e, "labels a record can encode"))
}

/// Fields that may change between a checkpoint and its resume.
const RESUMABLE_CHANGES: [&str; 4] = ["progress", "checkpoint_dir", "checkpoint_every", "steps"];

fn check_same_config(
    path: &std::path::Path,
    saved: &TrainConfig,
    current: &TrainConfig,
) -> Result<()> {
    let to_map = |c: &TrainConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        other => Err(TrainError::Format {
            path: path.into(),
            reason: format!("{other:?}"),
        }),
    };
    let (saved_map, current_map) = (to_map(saved)?, to_map(current)?);
    // Keys of either side: a field only one side serialises (e.g. `adapter`) is compared too.
    let keys: std::collections::BTreeSet<&String> =
        current_map.keys().chain(saved_map.keys()).collect();
    for key in keys {
        if RESUMABLE_CHANGES.contains(&key.as_str()) {
            continue;
        }
        let before = saved_map
            .get(key)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let value = current_map
            .get(key)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if before != value {
            return Err(TrainError::ConfigMismatch {
                path: path.into(),
                field: key.clone(),
                saved: before.to_string(),
                current: value.to_string(),
            });
        }
    }
    Ok(())
}

/// A checkpoint being written by a background thread. Its tensors are copied to the host
/// before the thread starts, so training goes on while they are written and checksummed
/// (`checkpoint::save`, which makes the checkpoint appear atomically and only then removes the
/// older one). Dropping it waits for the write.
#[derive(Default)]
struct PendingSave {
    root: PathBuf,
    writer: Option<std::thread::JoinHandle<Result<PathBuf>>>,
}

impl PendingSave {
    /// Waits for the write in flight, if any: its directory, or its error.
    fn finish(&mut self) -> Result<Option<PathBuf>> {
        let Some(writer) = self.writer.take() else {
            return Ok(None);
        };
        match writer.join() {
            Ok(saved) => saved.map(Some),
            Err(_) => Err(TrainError::Io {
                path: self.root.clone(),
                source: std::io::Error::other("the checkpoint writer thread panicked"),
            }),
        }
    }
}

impl Drop for PendingSave {
    fn drop(&mut self) {
        // An early return has its own error to report; this one only must not outlive the run.
        let _ = self.finish();
    }
}

/// A host copy of `t` that shares no storage with it (a CPU tensor is copied, not aliased).
fn host_copy(t: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
    if t.device() == tch::Device::Cpu {
        let copy = t.f_zeros_like()?;
        let mut target = copy.shallow_clone();
        target.f_copy_(t)?;
        Ok(copy)
    } else {
        t.f_to_device(tch::Device::Cpu)
    }
}

struct Loop<'a> {
    config: &'a TrainConfig,
    params: TrainableParams,
    anchor: Option<Anchor>,
    /// The method's step and its state (a chained ZO perturbation, AdamW's moments).
    method: MethodStep,
    steps: Vec<StepMetric>,
    dev: Vec<EvalMetric>,
    ledger: PrivacyLedger,
    step: u64,
    stage: u64,
    dp_sgd_extra_state_bytes: Option<usize>,
    /// The checkpoint still being written, if any.
    pending_save: PendingSave,
}

impl Loop<'_> {
    fn extra_tensors(&self) -> Vec<(String, Tensor)> {
        let mut extra = Vec::new();
        if let Some(anchor) = &self.anchor {
            for (name, t) in &anchor.values {
                extra.push((format!("anchor/{name}"), t.shallow_clone()));
            }
        }
        if let Some(masks) = self.params.masks() {
            for (name, m) in masks {
                extra.push((format!("mask/{name}"), m.shallow_clone()));
            }
        }
        if let Some(adam) = self.method.adam() {
            extra.extend(adam.state_tensors(&self.params));
        }
        extra
    }

    /// Saves a checkpoint and waits until it is on disk.
    fn save(&mut self) -> Result<Option<PathBuf>> {
        self.save_in_background()?;
        self.pending_save.finish()
    }

    /// Starts saving a checkpoint of the current state, after the previous save has finished;
    /// returns once the tensors are copied to the host.
    fn save_in_background(&mut self) -> Result<()> {
        let Some(root) = &self.config.checkpoint_dir else {
            return Ok(());
        };
        self.pending_save.finish()?;
        let to_host = |tensors: &[(String, Tensor)]| -> Result<Vec<(String, Tensor)>> {
            tensors
                .iter()
                .map(|(name, t)| Ok((name.clone(), host_copy(t)?)))
                .collect()
        };
        let weights = to_host(self.params.named())?;
        let extra = to_host(&self.extra_tensors())?;
        let state = CheckpointState {
            format_version: FORMAT_VERSION,
            config: self.config.clone(),
            step: self.step,
            stage: self.stage,
            steps: self.steps.clone(),
            dev: self.dev.clone(),
            ledger: self.ledger.clone(),
            adam_steps: self.method.adam().map_or(0, |a| a.steps),
        };
        let root = root.clone();
        self.pending_save = PendingSave {
            root: root.clone(),
            writer: Some(std::thread::spawn(move || {
                checkpoint::save(&root, &weights, &state, &extra)
            })),
        };
        Ok(())
    }

    /// DP-ZOPO mask at the first step of stage `stage` (module docs of `optim::mask`).
    fn rescore_mask(
        &mut self,
        model: &dyn LabelWordModel,
        batch: &dyn ExampleBatch,
        stage: u64,
    ) -> Result<()> {
        let strategy = self.config.mask.strategy;
        if strategy == MaskStrategy::Static && self.params.masks().is_some() {
            return Ok(());
        }
        let old: Option<Vec<(String, Tensor)>> = self.params.masks().map(|m| {
            m.iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect()
        });
        self.params.set_masks(None)?;
        let settings = &self.config.mask.score;
        // The objective's output rows: the task's label words; a multiple-choice task has none,
        // so the whole vocabulary (the sum of all logits of the constant-token input, what the
        // released `model(x)[0]` sums for a plain LM head). Either way no example is read.
        let all_words;
        let label_word_ids = match batch.label_word_ids() {
            Some(ids) => ids,
            None => {
                let vocab = model.vocab_size().ok_or_else(|| {
                    invalid(
                        "method",
                        "dp_zopo",
                        "a multiple-choice task's data-free mask scores the whole vocabulary, \
                         which needs a model with a vocabulary head",
                    )
                })?;
                let device = model.var_store().device();
                all_words = Tensor::f_arange(vocab, (tch::Kind::Int64, device))
                    .map_err(OptimError::from)?;
                &all_words
            }
        };
        let scores = data_free_scores(
            model,
            &self.params,
            label_word_ids,
            settings,
            self.config.seed,
            stage,
        )?;
        let incremental = match (strategy, &old) {
            (MaskStrategy::Incremental, Some(old)) => Some(old.as_slice()),
            _ => None,
        };
        let exclude = mask_exclusions(&scores, self.config.mask.keep_out, incremental)?;
        let new = select_mask(
            &scores,
            settings.ratio,
            settings.selection,
            (!exclude.is_empty()).then_some(exclude.as_slice()),
        )?;
        let masks = match incremental {
            Some(old) => union_masks(old, &new)?,
            None => new,
        };
        self.params.set_masks(Some(masks))?;
        self.ledger.events.push(LedgerEvent {
            step: self.step,
            description: format!(
                "DP-ZOPO data-free mask ({strategy:?}, stage {stage}): {} of {} coordinates; \
                 scored on the constant-token input only, no training data, no privacy cost",
                self.params.trained_numel(),
                self.params.total_numel()
            ),
            epsilon_cost: 0.0,
        });
        Ok(())
    }
}

/// Trains `model` with `config` and returns the run record.
///
/// `train` serves one batch per global step (see [`TrainBatches`]); `dev` is evaluated every
/// `eval_every` steps and at the end, `test` at the end only (final iterate, as the paper
/// reports it).
///
/// # Errors
/// Invalid configuration, a privacy plan above its target (checked before step 1 and on
/// resume), a non-finite loss (the run stops with the last good state kept and, if
/// checkpointing, saved), checkpoint I/O, or a libtorch failure.
/// The mu of step + 1 when step's ZO update may carry step + 1's first perturbation: the next
/// step follows directly, with no evaluation, checkpoint, anchor or mask reset between that
/// would read theta. A function of the config and the step only, so a resumed run takes the
/// same passes as an uninterrupted one.
fn next_step_mu(
    config: &TrainConfig,
    schedule: &StagewiseSchedule,
    step: u64,
    steps_total: u64,
) -> Option<f64> {
    let due = |every: u64| every > 0 && step.is_multiple_of(every);
    if step >= steps_total || due(config.eval_every) || due(config.checkpoint_every) {
        return None;
    }
    let next = schedule.at(step as usize + 1).ok()?;
    if next.anchor_reset && config.method.is_stagewise() {
        return None;
    }
    Some(next.zo_eps)
}

pub fn run_training<B: ExampleBatch>(
    model: &mut dyn LabelWordModel,
    config: &TrainConfig,
    train: &mut dyn TrainBatches,
    dev: &[B],
    test: &[B],
    options: &RunOptions,
) -> Result<RunRecord> {
    run_training_with(model, config, train, dev, test, None, options)
}

/// The content-free inputs of a calibrated zero-shot run ([`crate::optim::calibration`]): the
/// task's prompt with every text field replaced by each of `inputs`, one row each in `batch`.
#[derive(Clone, Copy)]
pub struct ContentFree<'a> {
    /// The content-free strings, in row order.
    pub inputs: &'a [String],
    /// Their encodings, with the task's label words.
    pub batch: &'a Batch,
}

fn same_label_words(a: &dyn ExampleBatch, b: &Batch) -> Result<bool> {
    let Some(words) = a.label_word_ids() else {
        return Ok(false);
    };
    let device = tch::Device::Cpu;
    Ok(words
        .f_to_device(device)?
        .f_equal(&b.label_word_ids.f_to_device(device)?)?)
}

/// [`run_training`] with a content-free batch: `Method::ZeroShotCalibrated` needs it, and its
/// final dev and test evaluations are then calibrated; any other method evaluates the trained
/// model on test a second time, calibrated, into `test_calibrated`.
///
/// # Errors
/// As [`run_training`]; also a calibrated method without `content_free`, or content-free label
/// words that differ from the evaluated batches' (a multiple-choice task has none).
#[allow(clippy::too_many_arguments)]
pub fn run_training_with<B: ExampleBatch>(
    model: &mut dyn LabelWordModel,
    config: &TrainConfig,
    train: &mut dyn TrainBatches,
    dev: &[B],
    test: &[B],
    content_free: Option<ContentFree<'_>>,
    options: &RunOptions,
) -> Result<RunRecord> {
    let started = std::time::Instant::now();
    let mut seconds = PhaseSeconds::default();
    let method = config.method;
    if method == Method::ZeroShotCalibrated
        && dev.iter().chain(test).any(|b| b.label_word_ids().is_none())
    {
        // Contextual calibration corrects a prior over shared label words; the candidates of
        // a multiple-choice example are its own, so there is no prior to estimate.
        return Err(invalid(
            "method",
            "zero_shot_calibrated",
            "contextual calibration is defined for label-word classification, not for \
             multiple-choice tasks",
        ));
    }
    if config.batch_size == 0 {
        return Err(invalid("batch_size", 0, "must be >= 1"));
    }
    if !(config.learning_rate.is_finite() && config.learning_rate >= 0.0) {
        return Err(invalid(
            "learning_rate",
            config.learning_rate,
            "must be finite and >= 0",
        ));
    }
    if config.num_directions == 0 {
        return Err(invalid("num_directions", 0, "must be >= 1"));
    }
    let train_examples = train.num_examples();
    if train_examples < config.batch_size && !method.is_evaluation_only() {
        return Err(invalid(
            "batch_size",
            config.batch_size,
            "must be <= the number of training examples",
        ));
    }
    let steps_total = total_steps(config);
    if steps_total == 0 && !method.is_evaluation_only() {
        return Err(invalid("steps", config.steps, "must be >= 1"));
    }
    // Models keep shallow copies of their variables: `VarStore::set_kind` would replace the
    // tensors behind their back, so a dtype mismatch is an error (load the model in the dtype).
    let loaded_kind = model
        .var_store()
        .trainable_variables()
        .first()
        .map(|t| t.kind());
    if let Some(kind) = loaded_kind.filter(|k| *k != config.dtype.kind()) {
        return Err(invalid(
            "dtype",
            format!("{:?} (model loaded as {kind:?})", config.dtype),
            "load the model in the configured dtype",
        ));
    }
    let device = model.var_store().device();
    if config.compute != crate::compute::Compute::F32 && config.dtype != super::config::DType::F32 {
        return Err(invalid(
            "compute",
            config.compute,
            "tf32 and bf16 compute apply to f32 weights (dtype = \"f32\")",
        ));
    }
    // Products in the configured precision for the whole run; restored when the run returns.
    let _compute = crate::compute::activate(config.compute, device);
    let schedule = if steps_total > 0 {
        Some(schedule_of(config, steps_total)?)
    } else {
        None
    };
    let mut accounting = if method.is_private() {
        Some(plan_privacy(config, train_examples, steps_total)?)
    } else {
        None
    };

    crate::models::adapters::ensure(model, config.adapter.as_ref(), config.seed)
        .map_err(|reason| invalid("adapter", reason, "must match the model's adapter"))?;
    let params = TrainableParams::from_model(model)?;
    let normaliser = match config.sampling {
        Sampling::Poisson => Some(config.batch_size as f64),
        Sampling::FixedSize | Sampling::Shuffled => None,
    };
    // The privacy of the DP steps is set once it is planned (a resume re-plans it).
    let method_settings = MethodSettings {
        seed: config.seed,
        num_directions: config.num_directions,
        privacy: None,
        normaliser,
        proximal_weight: config.proximal_weight,
        dp_sgd_clipping: config.dp_sgd_clipping,
        adamw: config.adamw,
        zo_forward: config.zo_forward,
    };
    let mut state = Loop {
        config,
        method: MethodStep::new(method, method_settings, &params)?,
        params,
        anchor: None,
        steps: Vec::new(),
        dev: Vec::new(),
        ledger: PrivacyLedger {
            accounting: None,
            steps_done: 0,
            epsilon_spent: method.is_private().then_some(0.0),
            events: Vec::new(),
            accountant_ledger: None,
        },
        step: 0,
        stage: 0,
        dp_sgd_extra_state_bytes: None,
        pending_save: PendingSave::default(),
    };

    let mut resumed_from = None;
    if let Some(root) = &config.checkpoint_dir {
        if let Some((dir, saved)) = checkpoint::latest(root)? {
            if !options.resume {
                return Err(TrainError::CheckpointExists {
                    path: root.clone(),
                    step: saved.step,
                });
            }
            check_same_config(&dir, &saved.config, config)?;
            checkpoint::load_weights(&dir, state.params.named())?;
            let extra = checkpoint::load_extra(&dir)?;
            let take = |prefix: &str| -> Vec<(String, Tensor)> {
                extra
                    .iter()
                    .filter_map(|(n, t)| {
                        n.strip_prefix(prefix)
                            .map(|rest| (rest.to_string(), t.to_device(device)))
                    })
                    .collect()
            };
            let masks = take("mask/");
            let mut masks_sorted = masks;
            masks_sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let masks: Vec<(String, Tensor)> = masks_sorted
                .into_iter()
                .map(|(n, t)| (n, t.to_device(tch::Device::Cpu)))
                .collect();
            if !masks.is_empty() {
                state.params.set_masks(Some(masks))?;
            }
            let mut anchor_values = take("anchor/");
            if !anchor_values.is_empty() {
                anchor_values.sort_by(|a, b| a.0.cmp(&b.0));
                state.anchor = Some(Anchor {
                    values: anchor_values,
                });
            }
            if let Some(adam) = state.method.adam_mut() {
                adam.load_state(&state.params, &extra, saved.adam_steps)?;
            }
            state.steps = saved.steps;
            state.dev = saved.dev;
            state.ledger = saved.ledger;
            state.step = saved.step;
            state.stage = saved.stage;
            if let (Some(a), Some(saved_accounting)) = (&mut accounting, &state.ledger.accounting) {
                // Keep the noise multiplier the run started with; re-plan epsilon for the
                // (possibly changed) number of steps.
                let mut replanned = TrainConfig {
                    noise_multiplier: Some(saved_accounting.noise_multiplier),
                    ..config.clone()
                };
                replanned.epsilon = config.epsilon;
                *a = plan_privacy(&replanned, train_examples, steps_total)?;
            }
            resumed_from = Some(saved.step);
        }
    }
    if let Some(a) = &accounting {
        check_budget(a)?;
    }
    state.ledger.accounting = accounting.clone();

    let bar = ProgressBar::with_draw_target(
        Some(steps_total),
        if config.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_position(state.step);

    state.method.set_privacy(match method {
        // DPZero's clipping with sigma = 0 (no guarantee).
        Method::ZoClipOnly => Some(ZoPrivacy {
            clip_norm: config.clip_norm,
            noise_std: 0.0,
        }),
        _ => accounting.as_ref().map(|a| ZoPrivacy {
            clip_norm: config.clip_norm,
            noise_std: a.noise_std,
        }),
    });
    let use_anchor = method.is_stagewise()
        && config.proximal_mode == ProximalMode::Intended
        && config.proximal_weight > 0.0;

    seconds.setup = started.elapsed().as_secs_f64();
    // A ZO step may leave the next one's first perturbation on theta (optim::zo module docs),
    // only when that step follows directly (next_step_mu), so theta is plain wherever it is
    // read; `state.method.settle` removes it where the loop stops or resets.
    for step in state.step + 1..=steps_total {
        let step_started = std::time::Instant::now();
        let mut clip = None;
        let schedule = schedule.as_ref().expect("invariant: steps_total > 0");
        let at = match schedule.at(step as usize) {
            Ok(at) => at,
            Err(err) => {
                state.method.settle(&state.params)?;
                return Err(theory_err(err));
            }
        };
        let request = BatchRequest {
            step,
            batch_size: config.batch_size,
            sampling: config.sampling,
            seed: config.seed,
        };
        let batch = match train.batch(request) {
            Ok(batch) => batch,
            Err(reason) => {
                state.method.settle(&state.params)?;
                return Err(TrainError::Source { step, reason });
            }
        };
        if at.anchor_reset && method.is_stagewise() {
            // next_step_mu never carries into a reset; settle regardless, as the anchor and
            // the mask score read theta.
            state.method.settle(&state.params)?;
            if method == Method::DpZopo {
                state.rescore_mask(model, batch.as_dyn(), at.stage as u64)?;
            }
            if use_anchor {
                state.anchor = Some(state.params.snapshot_anchor()?);
            }
        } else if method == Method::DpZopo && state.params.masks().is_none() {
            state.rescore_mask(model, batch.as_dyn(), at.stage as u64)?;
        }
        let carry_out = (!options.no_carry && config.zo_forward == ZoForward::Sequential)
            .then(|| next_step_mu(config, schedule, step, steps_total))
            .flatten();
        let input = StepInput {
            step,
            zo_eps: at.zo_eps,
            step_size: at.step_size,
            anchor: if use_anchor {
                state.anchor.as_ref()
            } else {
                None
            },
            carry_out,
        };
        let outcome = state
            .method
            .step(model, &state.params, batch.as_dyn(), input)
            .map(|out| {
                clip = out.clip;
                if let Some(bytes) = out.dp_sgd_extra_state_bytes {
                    state.dp_sgd_extra_state_bytes = Some(bytes);
                }
                out.loss
            });
        let step_loss = match outcome {
            Ok(loss) => loss,
            Err(OptimError::NonFiniteLoss {
                step: bad_step,
                loss,
                context,
            }) => {
                bar.abandon_with_message(format!("non-finite loss at step {bad_step}"));
                let saved = state.save()?;
                return Err(TrainError::NonFiniteLoss {
                    step: bad_step,
                    loss,
                    context: context.to_string(),
                    last_good_step: state.step,
                    checkpoint: saved,
                });
            }
            Err(other) => return Err(other.into()),
        };
        seconds.steps += step_started.elapsed().as_secs_f64();
        state.step = step;
        state.stage = at.stage as u64;
        state.ledger.steps_done = step;
        state.steps.push(StepMetric {
            step,
            loss: step_loss,
            learning_rate: at.step_size,
            zo_eps: at.zo_eps,
            stage: at.stage as u64,
            clip,
        });
        if config.eval_every > 0 && step % config.eval_every == 0 {
            if let Some(metric) =
                timed(&mut seconds.evaluation, || evaluate(model, dev, step, None))?
            {
                state.dev.push(metric.without_examples());
            }
            if let Some(a) = &accounting {
                timed(&mut seconds.accounting, || {
                    account(&mut state.ledger, a, step)
                })?;
            }
            let epsilon = state
                .ledger
                .epsilon_spent
                .map_or("n/a".into(), |e| format!("{e:.3}"));
            let dev_accuracy = state
                .dev
                .last()
                .map_or("n/a".into(), |m| format!("{:.4}", m.accuracy));
            bar.set_message(format!(
                "loss {} dev acc {dev_accuracy} eps {epsilon}",
                step_loss.map_or("n/a".into(), |l| format!("{l:.4}"))
            ));
        }
        if let Some(a) = &accounting {
            if config.checkpoint_every > 0 && step % config.checkpoint_every == 0 {
                timed(&mut seconds.accounting, || {
                    account(&mut state.ledger, a, step)
                })?;
            }
        }
        if config.checkpoint_every > 0 && step % config.checkpoint_every == 0 {
            timed(&mut seconds.checkpoints, || state.save_in_background())?;
        }
        bar.inc(1);
    }
    bar.finish();
    if let Some(a) = &accounting {
        let steps_done = state.step;
        timed(&mut seconds.accounting, || {
            account(&mut state.ledger, a, steps_done)
        })?;
    }
    // The loop saved the last step's state when the step is a multiple of checkpoint_every
    // (or the run resumed from that very checkpoint); otherwise its last save is older.
    if config.checkpoint_dir.is_some()
        && config.checkpoint_every > 0
        && state.step > 0
        && !state.step.is_multiple_of(config.checkpoint_every)
    {
        timed(&mut seconds.checkpoints, || state.save_in_background())?;
    }
    let evaluation_started = std::time::Instant::now();
    // Contextual calibration (Zhao et al. 2021) from public content-free inputs: the evaluation
    // of calibrated zero-shot, and for every other method a second test evaluation of the same
    // trained model (`test_calibrated`), which shows how much of its accuracy a label-prior
    // correction changes. Neither reads training data.
    // Dev-bias zero-shot corrects the label prior from dev instead: content-free inputs add
    // nothing to its record.
    let content_free = content_free.filter(|_| method != Method::ZeroShotDevBias);
    let log_prior = match content_free {
        Some(cf) => {
            for batch in dev.iter().chain(test) {
                if batch.num_examples() > 0 && !same_label_words(batch, cf.batch)? {
                    return Err(invalid(
                        "content-free batch",
                        "label words differ from the evaluated batches'",
                        "encode the content-free inputs with the task's own prompt",
                    ));
                }
            }
            Some(calibration::content_free_log_prior(model, cf.batch)?)
        }
        None if method == Method::ZeroShotCalibrated => {
            return Err(invalid(
                "method",
                "zero_shot_calibrated",
                "needs a content-free batch (run_training_with)",
            ))
        }
        None => None,
    };
    // Zero-shot with the dev-fitted label bias: its final dev evaluation is in-sample (the bias
    // is fitted there), its test evaluation is not.
    let dev_bias = match method {
        Method::ZeroShotDevBias => Some(calibration::dev_fitted_log_prior(model, dev)?),
        _ => None,
    };
    let own = log_prior
        .as_ref()
        .filter(|_| method == Method::ZeroShotCalibrated)
        .or(dev_bias.as_ref().map(|(prior, _)| prior));
    let final_dev = evaluate(model, dev, state.step, own)?;
    let test_metric = evaluate(model, test, state.step, own)?;
    let test_calibrated = match &log_prior {
        Some(prior) if method != Method::ZeroShotCalibrated => {
            evaluate(model, test, state.step, Some(prior))?
        }
        _ => None,
    };
    seconds.evaluation += evaluation_started.elapsed().as_secs_f64();
    // The run's last checkpoint is complete before its record exists.
    timed(&mut seconds.checkpoints, || state.pending_save.finish())?;
    let record = RunRecord {
        config: config.clone(),
        resolved: Resolved {
            total_steps: steps_total,
            train_examples,
            total_coordinates: state.params.total_numel(),
            trained_coordinates: state.params.trained_numel(),
            anchor_bytes: if use_anchor {
                state.params.anchor_bytes()
            } else {
                0
            },
            dp_sgd_extra_state_bytes: state.dp_sgd_extra_state_bytes,
        },
        provenance: Provenance {
            compute: Some(config.compute.effective(device).into()),
            ..options
                .provenance
                .clone()
                .unwrap_or_else(|| Provenance::detect(device))
        },
        steps: state.steps,
        dev: state.dev,
        final_dev,
        test: test_metric,
        test_calibrated,
        ledger: state.ledger,
        resumed_from,
        nonprivate_diagnostics: true,
        dev_bias: dev_bias.map(|(_, fitted)| fitted),
        calibration: match (&log_prior, content_free) {
            (Some(log_prior), Some(cf)) => Some(calibration::describe(log_prior, cf.inputs)?),
            _ => None,
        },
        seconds: Some(seconds),
    };
    Ok(if options.private_record {
        record.without_nonprivate_diagnostics()
    } else {
        record
    })
}

/// The coordinates a mask selection leaves out (flat indices per tensor of `scores`): every
/// coordinate of the tensors `keep_out` names, and the coordinates of an incremental mask so far.
fn mask_exclusions(
    scores: &[(String, Tensor)],
    keep_out: MaskKeepOut,
    incremental: Option<&[(String, Tensor)]>,
) -> Result<Vec<(String, Tensor)>> {
    let mut exclude = Vec::new();
    for (name, score) in scores.iter().filter(|(n, _)| keep_out.keeps_out(n)) {
        let all = Tensor::f_arange(score.numel() as i64, (tch::Kind::Int64, score.device()))
            .map_err(OptimError::from)?;
        exclude.push((name.clone(), all));
    }
    for (name, indices) in incremental.into_iter().flatten() {
        if !keep_out.keeps_out(name) {
            exclude.push((name.clone(), indices.shallow_clone()));
        }
    }
    Ok(exclude)
}

#[cfg(test)]
mod tests {

    /// Keeping the token embedding out: the selection takes none of its coordinates and as
    /// many as before from the rest; an incremental mask's coordinates elsewhere stay out too.
    #[test]
    fn a_kept_out_embedding_gets_no_mask_coordinate() {
        use crate::optim::mask::{select_mask, MaskSelection};
        let scores = vec![
            // The embedding holds the smallest scores: the released selection would take it.
            (
                "model.embed_tokens.weight".to_string(),
                Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4]).view([2, 2]),
            ),
            (
                "model.layers.0.mlp.up_proj.weight".to_string(),
                Tensor::from_slice(&[5.0f32, 6.0, 7.0, 8.0]).view([2, 2]),
            ),
        ];
        let old = vec![(
            "model.layers.0.mlp.up_proj.weight".to_string(),
            Tensor::from_slice(&[0i64]),
        )];
        let exclude = mask_exclusions(&scores, MaskKeepOut::TokenEmbedding, Some(&old)).unwrap();
        let mask = select_mask(&scores, 0.25, MaskSelection::Smallest, Some(&exclude)).unwrap();
        let chosen: Vec<(String, Vec<i64>)> = mask
            .into_iter()
            .map(|(n, t)| (n, Vec::<i64>::try_from(&t).unwrap()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        assert_eq!(
            chosen,
            vec![("model.layers.0.mlp.up_proj.weight".to_string(), vec![1, 2])]
        );
        // Without keeping out: the embedding's two smallest.
        let exclude = mask_exclusions(&scores, MaskKeepOut::Nothing, None).unwrap();
        assert!(exclude.is_empty());
        let mask = select_mask(&scores, 0.25, MaskSelection::Smallest, None).unwrap();
        assert_eq!(Vec::<i64>::try_from(&mask[0].1).unwrap(), vec![0, 1]);
    }
    use super::{host_copy, mask_exclusions, MaskKeepOut};
    use tch::{Device, Kind, Tensor};

    /// A background checkpoint must not see the steps after its own: its host copy of a CPU
    /// tensor shares no storage with the tensor training goes on updating.
    #[test]
    fn a_host_copy_of_a_cpu_tensor_keeps_its_values_when_the_tensor_changes() {
        let mut t = Tensor::f_arange(6, (Kind::Float, Device::Cpu)).unwrap();
        let copy = host_copy(&t).unwrap();
        let _ = t.f_add_scalar_(1.0).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&copy).unwrap(),
            vec![0., 1., 2., 3., 4., 5.]
        );
        assert_eq!(copy.device(), Device::Cpu);
        assert_eq!(copy.kind(), Kind::Float);
    }
}
