//! DP-ZOPO's data-free parameter selection (docs/paper.md §1.3, transcribed from the released
//! `src/prune.py`; dynamic and incremental strategies are our reading of the paper's names).
//!
//! ```text
//! 1. linearise (SynFlow): theta <- |theta|                 (signs restored afterwards)
//! 2. R(theta) = sum of the label-word logits for the one-token input [1] (no training data)
//! 3. grad1 = (R(theta + e z1) - R(theta - e z1)) / 2        (no division by e, as released)
//! 4. theta' = theta + e z1 grad1; grad2 likewise at theta' with a fresh z2
//! 5. Hg = (z2 grad2 - z1 grad1) / e                          (ZO Hessian-gradient estimate)
//! 6. score = mean over queries of Hg * |theta|
//! 7. M = the ceil(r d) coordinates with the smallest |score| over all tensors (global), or the
//!    largest as an option
//! ```
//! The score touches no training example, so it costs no privacy budget; the run ledger says
//! so. It needs, once per scoring, a copy of the trainable weights (for an exact restore) and two
//! f32 buffers of the same size.

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::params::TrainableParams;
use super::rng::{stream, Purpose};
use super::zo::materialise_direction;
use super::{axpy_z, OptimError, Result};
use crate::batch::Batch;
use crate::model::LabelWordModel;

/// When the mask is (re)computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskStrategy {
    /// Scored once before training (the released code).
    Static,
    /// Re-scored at every stage boundary; the new mask replaces the old one.
    Dynamic,
    /// Re-scored at every stage boundary; `ceil(r d)` new coordinates are added to M, so M grows
    /// to `(s + 1) ceil(r d)` coordinates in stage s.
    Incremental,
}

/// Tensors left out of the mask whatever their score; the ratio still counts every trainable
/// coordinate, so the mask takes as many coordinates from the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKeepOut {
    /// None (the released code).
    #[default]
    Nothing,
    /// The input token embedding (an ablation): its rows of tokens that no training input uses
    /// get no gradient, so a ZO step only moves them at random.
    TokenEmbedding,
}

impl MaskKeepOut {
    /// Whether the tensor `name` is left out.
    pub fn keeps_out(self, name: &str) -> bool {
        match self {
            MaskKeepOut::Nothing => false,
            MaskKeepOut::TokenEmbedding => is_token_embedding(name),
        }
    }
}

/// Whether `name` is the input token embedding (rows indexed by token id) of a Llama, OPT or
/// RoBERTa model.
pub fn is_token_embedding(name: &str) -> bool {
    name.ends_with("embed_tokens.weight") || name.ends_with("word_embeddings.weight")
}

/// Which end of the |score| ranking is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskSelection {
    /// The smallest |score| (the released code's `|score| <= kthvalue`).
    Smallest,
    /// The largest |score|.
    Largest,
}

/// What a coordinate's score is (ablations of the paper's score).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskScore {
    /// The paper's `Hg * |theta|` (module docs, steps 1-6).
    #[default]
    HessianGradient,
    /// `|theta|` alone (magnitude pruning, no forward pass).
    Magnitude,
    /// A standard normal draw per coordinate, seeded by (run seed, stage): ranking by it selects
    /// a uniformly random subset of `ceil(r d)` coordinates (a control for the score).
    Random,
}

/// Hyper-parameters of the data-free score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaskScoreSettings {
    /// The score (default: the paper's; absent in configurations written before it existed).
    #[serde(default)]
    pub kind: MaskScore,
    /// Fraction r of all trainable coordinates to select (default 0.01).
    pub ratio: f64,
    /// Smallest or largest |score|.
    pub selection: MaskSelection,
    /// Perturbation scale of the score (released default 1e-3).
    pub zo_eps: f64,
    /// Number of queries averaged (released default 1).
    pub queries: usize,
}

impl Default for MaskScoreSettings {
    fn default() -> Self {
        Self {
            kind: MaskScore::HessianGradient,
            ratio: 0.01,
            selection: MaskSelection::Smallest,
            zo_eps: 1e-3,
            queries: 1,
        }
    }
}

/// The constant-token input: one example, token id 1 at position 0.
fn constant_token_batch(label_word_ids: &Tensor) -> Result<Batch> {
    let device = label_word_ids.device();
    let one = Tensor::f_ones([1, 1], (Kind::Int64, device))?;
    Ok(Batch {
        input_ids: one.shallow_clone(),
        attention_mask: one,
        positions: Tensor::f_zeros([1], (Kind::Int64, device))?,
        labels: Tensor::f_zeros([1], (Kind::Int64, device))?,
        label_word_ids: label_word_ids.shallow_clone(),
    })
}

fn objective(model: &dyn LabelWordModel, batch: &Batch) -> Result<f64> {
    let logits = tch::no_grad(|| model.label_word_logits(batch))?;
    Ok(logits
        .f_sum(Kind::Double)?
        .f_to_device(tch::Device::Cpu)?
        .double_value(&[]))
}

/// The data-free scores `Hg * |theta|` of every trainable coordinate (module docs, steps 1-6).
/// `params` must be unmasked; theta is restored bit for bit afterwards.
///
/// # Errors
/// A masked `params`, bad settings, a non-finite objective, or a libtorch failure.
pub fn data_free_scores(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    label_word_ids: &Tensor,
    settings: &MaskScoreSettings,
    run_seed: u64,
    stage: u64,
) -> Result<Vec<(String, Tensor)>> {
    if params.masks().is_some() {
        return Err(OptimError::invalid(
            "mask",
            "installed",
            "scoring needs unmasked parameters",
        ));
    }
    if !(settings.zo_eps > 0.0 && settings.zo_eps.is_finite()) {
        return Err(OptimError::invalid(
            "mask_zo_eps",
            settings.zo_eps,
            "must be > 0",
        ));
    }
    if settings.queries == 0 {
        return Err(OptimError::invalid("mask_queries", 0, "must be >= 1"));
    }
    match settings.kind {
        MaskScore::HessianGradient => {}
        MaskScore::Magnitude => {
            return params
                .named()
                .iter()
                .map(|(name, t)| Ok((name.clone(), t.f_detach()?.f_abs()?)))
                .collect();
        }
        MaskScore::Random => {
            let seed: u64 = stream(run_seed, stage, Purpose::MaskScore).random();
            return materialise_direction(params, &[(seed, 1.0)]);
        }
    }
    let saved: Vec<Tensor> = params
        .named()
        .iter()
        .map(|(_, t)| t.f_detach_copy())
        .collect::<std::result::Result<_, _>>()?;
    tch::no_grad(|| -> Result<()> {
        for (_, t) in params.named() {
            let _ = t.shallow_clone().f_abs_()?;
        }
        Ok(())
    })?;
    let result = score_linearised(model, params, label_word_ids, settings, run_seed, stage);
    tch::no_grad(|| -> Result<()> {
        for ((_, t), original) in params.named().iter().zip(&saved) {
            t.shallow_clone().f_copy_(original)?;
        }
        Ok(())
    })?;
    let hessian_gradient = result?;
    hessian_gradient
        .into_iter()
        .zip(&saved)
        .map(|((name, hg), original)| {
            let magnitude = original.f_abs()?.f_to_kind(hg.kind())?;
            Ok((name, hg.f_mul(&magnitude)?))
        })
        .collect()
}

fn score_linearised(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    label_word_ids: &Tensor,
    settings: &MaskScoreSettings,
    run_seed: u64,
    stage: u64,
) -> Result<Vec<(String, Tensor)>> {
    let batch = constant_token_batch(label_word_ids)?;
    let set = params.param_set()?;
    let e = settings.zo_eps;
    let q = settings.queries as f64;
    let mut rng = stream(run_seed, stage, Purpose::MaskScore);
    let mut total: Option<Vec<(String, Tensor)>> = None;
    let half_difference = |seed: u64| -> Result<f64> {
        axpy_z(set, &[(seed, e)])?;
        let plus = objective(model, &batch)?;
        axpy_z(set, &[(seed, -2.0 * e)])?;
        let minus = objective(model, &batch)?;
        axpy_z(set, &[(seed, e)])?;
        let value = (plus - minus) / 2.0;
        if !value.is_finite() {
            return Err(OptimError::NonFiniteLoss {
                step: 0,
                loss: value,
                context: "data-free mask objective",
            });
        }
        Ok(value)
    };
    for _ in 0..settings.queries {
        let (seed1, seed2): (u64, u64) = (rng.random(), rng.random());
        let grad1 = half_difference(seed1)?;
        axpy_z(set, &[(seed1, e * grad1 / q)])?;
        let grad2 = half_difference(seed2);
        axpy_z(set, &[(seed1, -e * grad1 / q)])?;
        let grad2 = grad2?;
        // Hg / q = (z2 grad2 - z1 grad1) / (e q)
        let hg = materialise_direction(
            params,
            &[(seed2, grad2 / (e * q)), (seed1, -grad1 / (e * q))],
        )?;
        total = Some(match total {
            None => hg,
            Some(acc) => acc
                .into_iter()
                .zip(hg)
                .map(|((n, a), (_, b))| Ok((n, a.f_add(&b)?)))
                .collect::<Result<_>>()?,
        });
    }
    Ok(total.expect("invariant: queries >= 1"))
}

/// Global selection of `ceil(ratio d)` coordinates by |score| (module docs, step 7), skipping
/// the coordinates of `exclude`. Returns `(name, sorted int64 flat indices on the CPU)` for the
/// tensors with at least one selected coordinate.
///
/// # Errors
/// A ratio outside (0, 1], or fewer candidates than requested.
pub fn select_mask(
    scores: &[(String, Tensor)],
    ratio: f64,
    selection: MaskSelection,
    exclude: Option<&[(String, Tensor)]>,
) -> Result<Vec<(String, Tensor)>> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(OptimError::invalid(
            "mask_ratio",
            ratio,
            "must be in (0, 1]",
        ));
    }
    let total: usize = scores.iter().map(|(_, s)| s.numel()).sum();
    let excluded: usize = exclude.map_or(0, |e| e.iter().map(|(_, m)| m.numel()).sum());
    let count = ((ratio * total as f64).ceil() as usize).max(1);
    if count + excluded > total {
        return Err(OptimError::invalid(
            "mask_ratio",
            ratio,
            "selects more coordinates than remain unselected",
        ));
    }
    let flats: Vec<Tensor> = scores
        .iter()
        .map(|(name, s)| {
            let mut flat = s
                .f_abs()?
                .f_to_kind(Kind::Double)?
                .f_to_device(tch::Device::Cpu)?
                .f_view(-1)?;
            if let Some((_, indices)) = exclude.and_then(|e| e.iter().find(|(n, _)| n == name)) {
                let never = match selection {
                    MaskSelection::Smallest => f64::INFINITY,
                    MaskSelection::Largest => f64::NEG_INFINITY,
                };
                let fill = Tensor::f_full(
                    [indices.numel() as i64],
                    never,
                    (Kind::Double, tch::Device::Cpu),
                )?;
                let _ = flat.f_put_(&indices.to_device(tch::Device::Cpu), &fill, false)?;
            }
            Ok(flat)
        })
        .collect::<Result<_>>()?;
    let all = Tensor::f_cat(&flats, 0)?;
    let largest = selection == MaskSelection::Largest;
    let (_, chosen) = all.f_topk(count as i64, 0, largest, false)?;
    let (chosen, _) = chosen.f_sort(0, false)?;
    let chosen = Vec::<i64>::try_from(chosen)?;
    let mut masks = Vec::new();
    let mut offset = 0i64;
    let mut cursor = 0usize;
    for (name, s) in scores {
        let end = offset + s.numel() as i64;
        let start_cursor = cursor;
        while cursor < chosen.len() && chosen[cursor] < end {
            cursor += 1;
        }
        if cursor > start_cursor {
            let local: Vec<i64> = chosen[start_cursor..cursor]
                .iter()
                .map(|i| i - offset)
                .collect();
            masks.push((name.clone(), Tensor::from_slice(&local)));
        }
        offset = end;
    }
    Ok(masks)
}

/// The union of two masks (sorted indices per tensor), for the incremental strategy.
pub fn union_masks(
    old: &[(String, Tensor)],
    new: &[(String, Tensor)],
) -> Result<Vec<(String, Tensor)>> {
    let mut names: Vec<&String> = old.iter().chain(new).map(|(n, _)| n).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let parts: Vec<Tensor> = old
                .iter()
                .chain(new)
                .filter(|(n, _)| n == name)
                .map(|(_, m)| m.shallow_clone())
                .collect();
            let (sorted, _) = Tensor::f_cat(&parts, 0)?.f_sort(0, false)?;
            Ok((
                name.clone(),
                sorted.f_unique_consecutive(false, false, 0)?.0,
            ))
        })
        .collect()
}
