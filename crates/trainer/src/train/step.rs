//! One step of each training method, with the state it keeps between steps: the code that
//! [`super::run_training`] runs and that `repro memory` times. The training loop keeps the
//! schedule, the anchor and mask resets, evaluation, checkpoints and the privacy ledger; a
//! [`MethodStep`] does the method's update given the step's schedule point.

use std::cell::Cell;

use super::config::Method;
use crate::batch::ExampleBatch;
use crate::model::LabelWordModel;
use crate::optim::adamw::{AdamW, AdamWSettings};
use crate::optim::dp_sgd::{dp_sgd_step, DpSgdClipping, DpSgdSettings};
use crate::optim::params::{Anchor, TrainableParams};
use crate::optim::zo::{
    settle, zo_step, Carried, ClipDiagnostics, ZoForward, ZoPrivacy, ZoStepSettings,
};
use crate::optim::Result;

/// What a method needs beyond the step's schedule point, fixed for a run.
#[derive(Debug, Clone, Copy)]
pub struct MethodSettings {
    /// Seed of the run (direction and noise seeds derive from it and the step number).
    pub seed: u64,
    /// Directions per ZO step.
    pub num_directions: usize,
    /// Clipping and noise of the DP methods (ZO: of the scalar; DP-SGD: of the gradient; the
    /// `zo-clip-only` ablation: clipping with zero noise); `None` for non-private methods.
    pub privacy: Option<ZoPrivacy>,
    /// The fixed normaliser of Poisson-sampled DP steps (the expected batch size); `None`
    /// normalises by the batch's size.
    pub normaliser: Option<f64>,
    /// Weight of DP-ZOSO / DP-ZOPO's proximal term toward the anchor (used only when a step is
    /// given an anchor).
    pub proximal_weight: f64,
    /// DP-SGD's per-example clipping (models that do not record their layers fall back to
    /// micro-batches).
    pub dp_sgd_clipping: DpSgdClipping,
    /// AdamW of non-private fine-tuning.
    pub adamw: AdamWSettings,
    /// How the ZO methods evaluate a direction's two points.
    pub zo_forward: ZoForward,
}

/// The schedule's point for one step, and what the loop decides around it.
#[derive(Clone, Copy)]
pub struct StepInput<'a> {
    /// Global step number (1-based).
    pub step: u64,
    /// Perturbation scale mu of the step.
    pub zo_eps: f64,
    /// Step size eta of the step.
    pub step_size: f64,
    /// DP-ZOSO / DP-ZOPO's proximal anchor, when the run uses one.
    pub anchor: Option<&'a Anchor>,
    /// The next step's mu when this ZO step may leave the next step's first perturbation on
    /// theta (`optim::zo::zo_step`); `None` ends on plain weights.
    pub carry_out: Option<f64>,
}

/// What one step reports.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// Mean training loss of the batch (`None` for evaluation-only methods or an empty batch).
    pub loss: Option<f64>,
    /// Clipping diagnostics of a DP ZO step.
    pub clip: Option<ClipDiagnostics>,
    /// DP-SGD: bytes held beyond inference by the per-example strategy.
    pub dp_sgd_extra_state_bytes: Option<usize>,
}

thread_local! {
    static STEPS: Cell<u64> = const { Cell::new(0) };
}

/// How many [`MethodStep::step`] calls this thread has made: lets a caller check that what it
/// ran (or timed) was this code.
pub fn method_steps_on_this_thread() -> u64 {
    STEPS.with(|steps| steps.get())
}

/// A method's state between steps: the perturbation a chained ZO step left on theta, AdamW's
/// moments.
pub struct MethodStep {
    method: Method,
    settings: MethodSettings,
    carried: Option<Carried>,
    adam: Option<AdamW>,
}

impl MethodStep {
    /// The state of `method` at the start of a run over `params`.
    pub fn new(
        method: Method,
        settings: MethodSettings,
        params: &TrainableParams,
    ) -> Result<MethodStep> {
        let adam = match method {
            Method::FullFineTune => Some(AdamW::new(params, settings.adamw)?),
            _ => None,
        };
        Ok(MethodStep {
            method,
            settings,
            carried: None,
            adam,
        })
    }

    /// Sets the DP methods' clipping and noise (known once the run's privacy is planned, which a
    /// resume may re-plan).
    pub fn set_privacy(&mut self, privacy: Option<ZoPrivacy>) {
        self.settings.privacy = privacy;
    }

    /// AdamW's state (non-private fine-tuning), for checkpoints.
    pub fn adam(&self) -> Option<&AdamW> {
        self.adam.as_ref()
    }

    /// AdamW's state, to restore it from a checkpoint.
    pub fn adam_mut(&mut self) -> Option<&mut AdamW> {
        self.adam.as_mut()
    }

    /// One step of the method on `batch`. A ZO step first removes a perturbation the previous
    /// step left (when that one chained into this one) and may leave the next one's.
    pub fn step(
        &mut self,
        model: &dyn LabelWordModel,
        params: &TrainableParams,
        batch: &dyn ExampleBatch,
        input: StepInput<'_>,
    ) -> Result<StepOutput> {
        STEPS.with(|steps| steps.set(steps.get() + 1));
        let s = &self.settings;
        match self.method {
            Method::ZeroShot | Method::ZeroShotCalibrated | Method::ZeroShotDevBias => {
                Ok(StepOutput::default())
            }
            Method::Mezo
            | Method::Dpzero
            | Method::DpZoso
            | Method::DpZopo
            | Method::ZoClipOnly => {
                let private = self.method != Method::Mezo;
                let settings = ZoStepSettings {
                    zo_eps: input.zo_eps,
                    step_size: input.step_size,
                    num_directions: s.num_directions,
                    privacy: if private { s.privacy } else { None },
                    normaliser: if private { s.normaliser } else { None },
                    proximal: input.anchor.map(|a| (a, s.proximal_weight)),
                    forward: s.zo_forward,
                };
                let (report, next) = zo_step(
                    model,
                    params,
                    batch,
                    &settings,
                    s.seed,
                    input.step,
                    self.carried.take(),
                    input.carry_out,
                )?;
                self.carried = next;
                Ok(StepOutput {
                    loss: report.loss,
                    clip: report.diagnostics,
                    dp_sgd_extra_state_bytes: None,
                })
            }
            Method::DpSgd => {
                let privacy = s.privacy.ok_or_else(|| {
                    crate::optim::OptimError::Privacy("DP-SGD needs a clip norm and noise".into())
                })?;
                let settings = DpSgdSettings {
                    step_size: input.step_size,
                    clip_norm: privacy.clip_norm,
                    noise_std: privacy.noise_std,
                    normaliser: s.normaliser,
                    clipping: if model.records_layers() {
                        s.dp_sgd_clipping
                    } else {
                        DpSgdClipping::Microbatch
                    },
                };
                let report = dp_sgd_step(model, params, batch, &settings, s.seed, input.step)?;
                Ok(StepOutput {
                    loss: report.loss,
                    clip: None,
                    dp_sgd_extra_state_bytes: Some(report.extra_state_bytes),
                })
            }
            Method::FullFineTune => {
                let adam = self
                    .adam
                    .as_mut()
                    .expect("invariant: MethodStep::new made AdamW's state");
                let loss = adam.step(model, params, batch, input.step_size, input.step)?;
                Ok(StepOutput {
                    loss: Some(loss),
                    clip: None,
                    dp_sgd_extra_state_bytes: None,
                })
            }
        }
    }

    /// Removes a perturbation the last ZO step left on theta, so that theta is plain (before an
    /// evaluation, a checkpoint, an anchor or mask reset, or on an error). A no-op otherwise.
    pub fn settle(&mut self, params: &TrainableParams) -> Result<()> {
        settle(params, self.carried.take())
    }
}
