//! `TrainConfig`: every hyper-parameter of a run, serialisable (the run record stores it fully
//! resolved).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::optim::adamw::AdamWSettings;
use crate::optim::dp_sgd::DpSgdClipping;
use crate::optim::mask::{MaskKeepOut, MaskScoreSettings, MaskStrategy};
use crate::optim::privacy::AccountantKind;

/// The training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Evaluation only.
    ZeroShot,
    /// Evaluation only, contextually calibrated against content-free inputs (Zhao et al. 2021;
    /// [`crate::optim::calibration`]): no training data, no privacy cost.
    ZeroShotCalibrated,
    /// Evaluation only, with the label bias that best fits the labelled dev examples
    /// ([`crate::optim::calibration::dev_fitted_log_prior`]) in likelihood: a second reference,
    /// beside contextual calibration, for how much of a method's gain removing label bias
    /// explains. Reads dev labels, as tuning does; no training data, no privacy cost.
    ZeroShotDevBias,
    /// Non-private full fine-tuning with AdamW.
    FullFineTune,
    /// Non-private two-point ZO-SGD (Malladi et al. 2023).
    Mezo,
    /// DPZero (Zhang et al. 2024): clipped scalar finite difference + one scalar noise draw.
    Dpzero,
    /// DP-ZOSO: DPZero with the stagewise schedule and proximal term (docs/paper.md §1.2).
    DpZoso,
    /// DP-ZOPO: DP-ZOSO on a data-free mask (docs/paper.md §1.3).
    DpZopo,
    /// DPZero's clipped, batch-normalised ZO step without noise (sigma = 0): no privacy
    /// guarantee; an ablation separating the effect of clipping from that of the noise.
    ZoClipOnly,
    /// DP-SGD with per-example clipping and per-coordinate noise.
    DpSgd,
}

impl Method {
    /// True for the methods with a DP guarantee.
    pub fn is_private(self) -> bool {
        matches!(
            self,
            Method::Dpzero | Method::DpZoso | Method::DpZopo | Method::DpSgd
        )
    }

    /// True for the methods that only evaluate the model as loaded (no step, no training data).
    pub fn is_evaluation_only(self) -> bool {
        matches!(
            self,
            Method::ZeroShot | Method::ZeroShotCalibrated | Method::ZeroShotDevBias
        )
    }

    /// True for the zeroth-order methods.
    pub fn is_zeroth_order(self) -> bool {
        matches!(
            self,
            Method::Mezo | Method::Dpzero | Method::DpZoso | Method::DpZopo | Method::ZoClipOnly
        )
    }

    /// True for the methods with the stagewise schedule.
    pub fn is_stagewise(self) -> bool {
        matches!(self, Method::DpZoso | Method::DpZopo)
    }
}

/// How training batches are drawn (defined with its privacy events in the accountant).
/// Poisson: sums divided by B, noise std σC (add/remove-one); fixed-size and shuffled batches:
/// sums divided by |B_t|, noise std 2σC (replace-one); shuffled batches are accounted per epoch.
pub use crate::optim::privacy::Sampling;

/// Parameter dtype (losses are always computed in f32, or f64 for f64 models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    Bf16,
    /// float64 (tests).
    F64,
}

impl DType {
    /// The tch kind.
    pub fn kind(self) -> tch::Kind {
        match self {
            DType::F32 => tch::Kind::Float,
            DType::F16 => tch::Kind::Half,
            DType::Bf16 => tch::Kind::BFloat16,
            DType::F64 => tch::Kind::Double,
        }
    }
}

/// The proximal anchor's semantics (docs/paper.md §1.2, caveat 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProximalMode {
    /// theta <- theta - eta (a z + lambda (theta - theta_anchor)), the anchor a copy of theta
    /// taken at each stage start (costs a copy of the trained coordinates).
    Intended,
    /// The released code: the anchor shares storage with the live weights, so the proximal term
    /// is identically zero. Kept for comparison.
    ReleasedNoOp,
}

/// How mu changes between stages (see the `schedule` crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MuScheduleChoice {
    /// k = (mu_start / mu_end)^(1/S).
    Geometric,
    /// The released k = (mu_end - mu_start)^(1/S).
    ReleasedCode,
}

/// Stagewise schedule of DP-ZOSO/ZOPO.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    /// T0, the length of stage 0 (released default 1000).
    pub first_stage_steps: u64,
    /// S (released default 3); T = min(T0 (2^S - 1), steps).
    pub num_stages: u32,
    /// mu schedule.
    pub mu_schedule: MuScheduleChoice,
    /// Halve the step size at each stage (the paper); `false` keeps eta_0 in every stage, an
    /// ablation (absent in configurations written before it existed: halving).
    #[serde(default = "halving_by_default")]
    pub step_halving: bool,
}

fn halving_by_default() -> bool {
    true
}

/// DP-ZOPO mask settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaskConfig {
    /// Score and selection.
    pub score: MaskScoreSettings,
    /// Static, dynamic or incremental.
    pub strategy: MaskStrategy,
    /// Tensors never masked (absent in configurations written before it existed: none).
    #[serde(default, skip_serializing_if = "is_nothing")]
    pub keep_out: MaskKeepOut,
}

fn is_nothing(keep_out: &MaskKeepOut) -> bool {
    *keep_out == MaskKeepOut::Nothing
}

/// All hyper-parameters of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The method.
    pub method: Method,
    /// Initial step size eta_0.
    pub learning_rate: f64,
    /// Training steps (T_max; the stagewise methods cap it at T0 (2^S - 1)).
    pub steps: u64,
    /// Batch size B (expected size under Poisson sampling).
    pub batch_size: usize,
    /// ZO perturbation scale mu (mu_start for the stagewise methods).
    pub zo_eps: f64,
    /// mu_end for the stagewise methods (`None`: equal to `zo_eps`).
    pub zo_eps_end: Option<f64>,
    /// ZO directions per step; each is one composition in the accountant.
    pub num_directions: usize,
    /// Clipping threshold C (scalar for ZO, gradient norm for DP-SGD).
    pub clip_norm: f64,
    /// DP-SGD's per-example clipping: `ghost` (one backward; used when the model records its
    /// layers, as every model of `trainer::models` does, else micro-batches) or `microbatch`.
    pub dp_sgd_clipping: DpSgdClipping,
    /// Target epsilon (required by the DP methods unless `noise_multiplier` is given).
    pub epsilon: Option<f64>,
    /// delta (`None`: 1/n as in the released code).
    pub delta: Option<f64>,
    /// Fixed noise multiplier instead of calibrating it (its epsilon is still checked).
    pub noise_multiplier: Option<f64>,
    /// Accountant asked for.
    pub accountant: AccountantKind,
    /// Batch sampling.
    pub sampling: Sampling,
    /// Stagewise schedule.
    pub stage: StageConfig,
    /// Proximal weight lambda (released default 5e-4).
    pub proximal_weight: f64,
    /// Proximal semantics.
    pub proximal_mode: ProximalMode,
    /// DP-ZOPO mask.
    pub mask: MaskConfig,
    /// AdamW settings (full fine-tuning).
    pub adamw: AdamWSettings,
    /// Dev evaluation every this many steps (0: never during training).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0: never).
    pub checkpoint_every: u64,
    /// Where checkpoints go (`None`: no checkpoints).
    pub checkpoint_dir: Option<PathBuf>,
    /// Run seed: directions, noise, mask score.
    pub seed: u64,
    /// Parameter dtype.
    pub dtype: DType,
    /// Precision of the matrix products (`f32`, `tf32`, `bf16`); weights, perturbations and
    /// updates keep `dtype` (crate::compute).
    pub compute: crate::compute::Compute,
    /// How the ZO methods evaluate a direction's two points (`sequential`, or `paired`: one
    /// forward with replicated weights, `crate::optim::paired`). Left out when sequential, so
    /// that existing configurations keep their hashes.
    #[serde(skip_serializing_if = "crate::optim::zo::ZoForward::is_default")]
    pub zo_forward: crate::optim::zo::ZoForward,
    /// Show a progress bar.
    pub progress: bool,
    /// An adapter on the frozen base (LoRA or prefix-tuning, `crate::models::adapters`): only
    /// its tensors train, are perturbed, clipped and checkpointed. `None`: the whole model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<crate::models::adapters::AdapterConfig>,
}

impl Default for TrainConfig {
    /// The logged DP-ZOSO run of docs/paper.md §3.1 (SST-2, RoBERTa-large), where known.
    fn default() -> Self {
        Self {
            method: Method::DpZoso,
            learning_rate: 2e-5,
            steps: 6000,
            batch_size: 64,
            zo_eps: 1e-6,
            zo_eps_end: None,
            num_directions: 1,
            clip_norm: 30.0,
            dp_sgd_clipping: DpSgdClipping::Ghost,
            epsilon: Some(4.0),
            delta: None,
            noise_multiplier: None,
            accountant: AccountantKind::Prv,
            sampling: Sampling::Poisson,
            stage: StageConfig {
                first_stage_steps: 1000,
                num_stages: 3,
                mu_schedule: MuScheduleChoice::Geometric,
                step_halving: true,
            },
            proximal_weight: 5e-4,
            proximal_mode: ProximalMode::Intended,
            mask: MaskConfig {
                score: MaskScoreSettings::default(),
                strategy: MaskStrategy::Static,
                keep_out: MaskKeepOut::Nothing,
            },
            adamw: AdamWSettings::default(),
            eval_every: 10,
            checkpoint_every: 0,
            checkpoint_dir: None,
            seed: 42,
            dtype: DType::F32,
            compute: crate::compute::Compute::F32,
            zo_forward: crate::optim::zo::ZoForward::Sequential,
            progress: false,
            adapter: None,
        }
    }
}
