//! The two-point zeroth-order step shared by MeZO, DPZero, DP-ZOSO and DP-ZOPO
//! (docs/paper.md §1.1, §1.2, §6.1, §6.3).
//!
//! ```text
//! for each direction j = 1..q (seed s_j, z_j = z(s_j) regenerated, never stored):
//!     g_i  = (l_i(theta + mu z_j) - l_i(theta - mu z_j)) / (2 mu)          per example
//!     MeZO:         a_j = (1/|B|) sum_i g_i
//!     DP (DPZero):  a_j = (sum_i g_i min(1, C/|g_i|) + N(0, noise_std^2)) / normaliser
//! theta <- theta - eta ( (1/q) sum_j a_j z_j + lambda (theta - theta_anchor) )
//! ```
//! `noise_std` is sigma C under add/remove-one with Poisson sampling (normaliser = expected batch
//! size) and 2 sigma C under replace-one with fixed-size batches (normaliser = |B|). Each of the
//! q directions gets its own noise draw and counts as one composition in the accountant.
//!
//! Passes over the parameters: the restore `+mu z_j` is merged with the next direction's
//! `+mu z_{j+1}`, and the last restore with the update (MeZO's 4 passes become 3 for q = 1).
//! [`zo_step`] also merges the update with the next step's first `+mu z`, leaving that
//! perturbation on theta for the next step ([`Carried`]): 2 passes per step for q = 1. Where
//! theta is read between steps (evaluation, checkpoints, anchors, masks) the caller does not
//! carry, so theta is plain there.
//!
//! With [`ZoForward::Paired`] a direction's two losses come from one forward over the batch
//! twice, with theta + mu z and theta - mu z held as replicas ([`super::paired`]): theta is not
//! perturbed, so there is nothing to restore or carry, and a step makes 2q + 1 passes.
//!
//! The proximal term is exact without a copy of theta_t: with w = eta lambda, pulling the
//! sequential step's current point theta_t - mu z_q towards the anchor by w and restoring with (1 - w) mu gives
//! (1 - w) theta_t + w theta_anchor - eta (1/q) sum_j a_j z_j, the update above.

use rand::Rng;
use tch::Tensor;

use super::params::{Anchor, TrainableParams};
use super::rng::{standard_normal, stream, Purpose};
use super::{axpy_z, loss, OptimError, ParamSet, Result};
use crate::batch::ExampleBatch;
use crate::model::LabelWordModel;

/// The differential-privacy part of a ZO step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoPrivacy {
    /// Clipping threshold C of the per-example scalar finite difference.
    pub clip_norm: f64,
    /// Std of the one Gaussian scalar added to the clipped sum per direction (sigma C or
    /// 2 sigma C, see the module docs).
    pub noise_std: f64,
}

/// Settings of one ZO step.
#[derive(Debug, Clone, Copy)]
pub struct ZoStepSettings<'a> {
    /// Perturbation scale mu (`zo_eps`).
    pub zo_eps: f64,
    /// Step size eta.
    pub step_size: f64,
    /// Number of directions q (each costs two forwards).
    pub num_directions: usize,
    /// `None` for MeZO.
    pub privacy: Option<ZoPrivacy>,
    /// Divide the (noisy) sum by this; `None` divides by the actual batch size.
    pub normaliser: Option<f64>,
    /// DP-ZOSO/ZOPO proximal term `(anchor, lambda)`; `None` for none (or the released code's
    /// no-op anchor).
    pub proximal: Option<(&'a Anchor, f64)>,
    /// How the two points of a direction are evaluated.
    pub forward: ZoForward,
}

/// How a ZO step evaluates the losses at theta + mu z and theta - mu z.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ZoForward {
    /// Two forwards, theta perturbed in place between them (MeZO's inference memory; the
    /// passes chain across steps, module docs).
    #[default]
    Sequential,
    /// One forward over the batch twice, the two points' weights as replicas
    /// ([`super::paired`]): half the kernel launches, two more copies of the perturbed
    /// weights. The same step up to the rounding of products of another shape; theta is never
    /// perturbed, so nothing carries between steps.
    Paired,
}

impl ZoForward {
    /// `sequential` or `paired`.
    pub fn name(self) -> &'static str {
        match self {
            ZoForward::Sequential => "sequential",
            ZoForward::Paired => "paired",
        }
    }

    /// Whether this is the default (left out of serialised configurations, so that their hashes
    /// do not change).
    pub fn is_default(&self) -> bool {
        *self == ZoForward::default()
    }
}

/// What a ZO step did.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoStepReport {
    /// Mean of (l(theta + mu z_1) + l(theta - mu z_1)) / 2 over the batch (about L(theta));
    /// `None` for an empty (Poisson) batch.
    pub loss: Option<f64>,
    /// The released scalars a_j.
    pub projected_grads: Vec<f64>,
    /// The direction seeds s_j.
    pub seeds: Vec<u64>,
    /// The noise draws added to the sums (empty for MeZO).
    pub noise: Vec<f64>,
    /// How many per-example differences were clipped (over all directions).
    pub clipped: usize,
    /// Clipping and signal-to-noise of a DP step (`None` for MeZO and an empty batch).
    pub diagnostics: Option<ClipDiagnostics>,
}

/// What clipping and noise did to one DP step: the measured side of "why epsilon barely
/// matters". Computed from un-noised per-example values, so it is not private
/// (`RunRecord::nonprivate_diagnostics`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClipDiagnostics {
    /// Fraction of the per-example scalars (over all directions) whose magnitude exceeded C.
    pub clipped_fraction: f64,
    /// Mean over directions of |sum_i clip_C(g_i)| / normaliser: the signal in a_j.
    pub mean_clipped_scalar: f64,
    /// Std of the noise in a_j: noise_std / normaliser (sigma C / B under Poisson sampling).
    pub noise_scale: f64,
}

impl ClipDiagnostics {
    /// Signal over noise std of the released scalar (infinite without noise).
    pub fn signal_to_noise(&self) -> f64 {
        self.mean_clipped_scalar / self.noise_scale
    }
}

fn check_settings(settings: &ZoStepSettings<'_>) -> Result<()> {
    if !(settings.zo_eps > 0.0 && settings.zo_eps.is_finite()) {
        return Err(OptimError::invalid(
            "zo_eps",
            settings.zo_eps,
            "must be finite and > 0",
        ));
    }
    if !settings.step_size.is_finite() || settings.step_size < 0.0 {
        return Err(OptimError::invalid(
            "learning_rate",
            settings.step_size,
            "must be >= 0",
        ));
    }
    if settings.num_directions == 0 {
        return Err(OptimError::invalid("num_directions", 0, "must be >= 1"));
    }
    if let Some(p) = settings.privacy {
        if !(p.clip_norm > 0.0 && p.clip_norm.is_finite()) {
            return Err(OptimError::invalid(
                "clip_norm",
                p.clip_norm,
                "must be finite and > 0",
            ));
        }
        if !(p.noise_std >= 0.0 && p.noise_std.is_finite()) {
            return Err(OptimError::invalid(
                "noise_std",
                p.noise_std,
                "must be finite and >= 0",
            ));
        }
    }
    if let Some(n) = settings.normaliser {
        if !(n > 0.0 && n.is_finite()) {
            return Err(OptimError::invalid(
                "normaliser",
                n,
                "must be finite and > 0",
            ));
        }
    }
    Ok(())
}

fn finite_or_err(values: &[f64], step: u64, context: &'static str) -> Result<()> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(&loss) => Err(OptimError::NonFiniteLoss {
            step,
            loss,
            context,
        }),
        None => Ok(()),
    }
}

/// A perturbation `+scale z(seed)` that a step's final pass left on theta: the next step's
/// first `+mu z` (module docs). Whoever holds one owns removing it ([`settle`]) before theta is
/// read for anything else.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "theta carries this perturbation until it is settled or consumed"]
pub struct Carried {
    /// The direction seed.
    pub seed: u64,
    /// The scale on theta (the next step's mu).
    pub scale: f64,
}

/// The first direction seed `zo_step` draws at `step` of the run seeded `run_seed`.
pub fn first_direction_seed(run_seed: u64, step: u64) -> u64 {
    stream(run_seed, step, Purpose::Directions).random()
}

/// Removes a carried perturbation from theta (no pass when there is none).
pub fn settle(params: &TrainableParams, carried: Option<Carried>) -> Result<()> {
    match carried {
        None => Ok(()),
        Some(c) => axpy_z(params.param_set()?, &[(c.seed, -c.scale)]).map_err(Into::into),
    }
}

/// Terms with equal seeds summed (in f64, in order of first appearance) and zero scales
/// dropped: one kernel term per distinct direction.
fn merged(terms: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let mut out: Vec<(u64, f64)> = Vec::with_capacity(terms.len());
    for &(seed, scale) in terms {
        match out.iter_mut().find(|(s, _)| *s == seed) {
            Some(term) => term.1 += scale,
            None => out.push((seed, scale)),
        }
    }
    out.retain(|(_, scale)| *scale != 0.0);
    out
}

/// The update's terms `-eta a_j / q` along each direction z_j.
fn update_terms(seeds: &[u64], projected_grads: &[f64], step_size: f64) -> Vec<(u64, f64)> {
    let q = seeds.len() as f64;
    seeds
        .iter()
        .zip(projected_grads)
        .map(|(&seed, &a)| (seed, -step_size * a / q))
        .collect()
}

/// One pass with `terms` merged; none when they cancel.
fn apply(set: &ParamSet, terms: &[(u64, f64)]) -> Result<()> {
    let terms = merged(terms);
    if terms.is_empty() {
        return Ok(());
    }
    axpy_z(set, &terms).map_err(Into::into)
}

/// Per-example central differences `(l_i(theta + mu z) - l_i(theta - mu z)) / (2 mu)` for
/// `z = z(seed)` on the trained coordinates; theta is restored (up to rounding) afterwards.
pub fn directional_differences(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &dyn ExampleBatch,
    seed: u64,
    zo_eps: f64,
) -> Result<Vec<f64>> {
    let set = params.param_set()?;
    axpy_z(set, &[(seed, zo_eps)])?;
    let plus = loss::per_example_loss_values(model, batch);
    axpy_z(set, &[(seed, -2.0 * zo_eps)])?;
    let minus = loss::per_example_loss_values(model, batch);
    axpy_z(set, &[(seed, zo_eps)])?;
    let (plus, minus) = (plus?, minus?);
    Ok(plus
        .iter()
        .zip(&minus)
        .map(|(p, m)| (p - m) / (2.0 * zo_eps))
        .collect())
}

/// z(seed) materialised on the trained coordinates: `(name, tensor)` shaped like the
/// parameters, zero off the mask. For tests and the mask score; costs one copy of theta.
pub fn materialise_direction(
    params: &TrainableParams,
    terms: &[(u64, f64)],
) -> Result<Vec<(String, Tensor)>> {
    let zeros = params.zeros_like_f32()?;
    let set = ParamSet::new(
        zeros
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
    )?;
    let set = match params.masks() {
        None => set,
        Some(masks) => set.with_masks(
            masks
                .iter()
                .map(|(n, m)| (n.clone(), m.shallow_clone()))
                .collect(),
        )?,
    };
    axpy_z(&set, terms)?;
    Ok(zeros)
}

/// Directions at most this many carry: the final pass then has at most 8 terms, what one
/// kernel launch takes.
const MAX_CARRYING_DIRECTIONS: usize = 7;

/// One ZO step at global step `step` of the run seeded `run_seed` (directions and noise come
/// from [`super::rng::stream`]). On a non-finite loss theta is restored and the update skipped.
///
/// Passes chain across steps (module docs): `carried_in` is on theta already (the previous
/// step's [`Carried`]; any seed and scale are accepted, a match saves the first pass). With
/// `carry_out = Some(next_mu)` the final pass also adds step + 1's first `+next_mu z`, returned
/// as the new [`Carried`] (`None` when the final pass would exceed one launch's terms).
/// `None, None` is a self-contained step. On `Err` theta carries nothing (the carried
/// perturbation is removed).
#[allow(clippy::too_many_arguments)]
pub fn zo_step(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &dyn ExampleBatch,
    settings: &ZoStepSettings<'_>,
    run_seed: u64,
    step: u64,
    carried_in: Option<Carried>,
    carry_out: Option<f64>,
) -> Result<(ZoStepReport, Option<Carried>)> {
    if let Err(err) = check_settings(settings) {
        settle(params, carried_in)?;
        return Err(err);
    }
    if let Some(next_mu) = carry_out {
        if !(next_mu > 0.0 && next_mu.is_finite()) {
            settle(params, carried_in)?;
            return Err(OptimError::invalid(
                "zo_eps",
                next_mu,
                "must be finite and > 0 (next step)",
            ));
        }
    }
    let paired = settings.forward == ZoForward::Paired;
    let (carried_in, carry_out) = if paired {
        // Theta is never perturbed by a paired step: settle what an earlier sequential step
        // left, and leave nothing.
        settle(params, carried_in)?;
        (None, None)
    } else {
        (carried_in, carry_out)
    };
    let set = params.param_set()?;
    let mu = settings.zo_eps;
    let mut direction_rng = stream(run_seed, step, Purpose::Directions);
    let mut noise_rng = stream(run_seed, step, Purpose::Noise);
    let seeds: Vec<u64> = (0..settings.num_directions)
        .map(|_| direction_rng.random())
        .collect();
    // The perturbation left for step + 1 (seed, scale), added by this step's final pass.
    let carry = carry_out
        .filter(|_| seeds.len() <= MAX_CARRYING_DIRECTIONS)
        .map(|next_mu| Carried {
            seed: first_direction_seed(run_seed, step + 1),
            scale: next_mu,
        });
    // Undoing what theta carries in: merged into the first pass.
    let uncarry: Vec<(u64, f64)> = carried_in.iter().map(|c| (c.seed, -c.scale)).collect();
    if batch.num_examples() == 0 {
        return noise_only_step(
            params,
            set,
            settings,
            seeds,
            &mut noise_rng,
            step,
            &uncarry,
            carry,
        );
    }
    let normaliser = settings.normaliser.unwrap_or(batch.num_examples() as f64);

    let mut report = ZoStepReport {
        loss: None,
        projected_grads: Vec::with_capacity(seeds.len()),
        seeds: seeds.clone(),
        noise: Vec::new(),
        clipped: 0,
        diagnostics: None,
    };
    // Sum over directions of |clipped sum| (diagnostics only).
    let mut clipped_signal = 0.0;
    let mut pending_restore: Option<u64> = None;
    for (j, &seed) in seeds.iter().enumerate() {
        let (plus, minus) = if paired {
            let (plus, minus) = params.paired_weights()?.losses(model, batch, seed, mu)?;
            finite_or_err(&plus, step, "loss at theta + mu z")?;
            finite_or_err(&minus, step, "loss at theta - mu z")?;
            (plus, minus)
        } else {
            sequential_losses(
                model,
                set,
                batch,
                seed,
                mu,
                step,
                pending_restore.take(),
                (j == 0).then_some((uncarry.as_slice(), || settle(params, carried_in))),
            )?
        };
        if !paired {
            pending_restore = Some(seed);
        }
        if report.loss.is_none() {
            let total: f64 = plus.iter().zip(&minus).map(|(p, m)| 0.5 * (p + m)).sum();
            report.loss = Some(total / plus.len() as f64);
        }
        let mut sum = 0.0;
        for (p, m) in plus.iter().zip(&minus) {
            let difference = (p - m) / (2.0 * mu);
            sum += match settings.privacy {
                None => difference,
                Some(privacy) => {
                    if difference.abs() > privacy.clip_norm {
                        report.clipped += 1;
                        privacy.clip_norm * difference.signum()
                    } else {
                        difference
                    }
                }
            };
        }
        if let Some(privacy) = settings.privacy {
            clipped_signal += sum.abs();
            let noise = privacy.noise_std * standard_normal(&mut noise_rng);
            report.noise.push(noise);
            sum += noise;
        }
        report.projected_grads.push(sum / normaliser);
    }

    if let Some(privacy) = settings.privacy {
        let q = seeds.len() as f64;
        report.diagnostics = Some(ClipDiagnostics {
            clipped_fraction: report.clipped as f64 / (q * batch.num_examples() as f64),
            mean_clipped_scalar: clipped_signal / (q * normaliser),
            noise_scale: privacy.noise_std / normaliser,
        });
    }

    // Final pass: restore of the last direction (sequential forward) merged with the update
    // (module docs).
    let mut restore_scale = mu;
    if let Some((anchor, lambda)) = settings.proximal {
        let weight = settings.step_size * lambda;
        params.pull_towards(anchor, weight)?;
        restore_scale = mu * (1.0 - weight);
    }
    // `apply` sums the restore into the last direction's update term (same f64 order as
    // before: update, then restore).
    let mut terms = update_terms(&seeds, &report.projected_grads, settings.step_size);
    terms.extend(pending_restore.map(|last| (last, restore_scale)));
    terms.extend(carry.iter().map(|c| (c.seed, c.scale)));
    apply(set, &terms)?;
    Ok((report, carry))
}

/// The sequential forward of direction `seed`: losses at theta + mu z (that pass merged with
/// the restore of the `previous` direction and, for the first direction, with `first`'s removal
/// of what theta carries in), then at theta - mu z, where theta is left for the next pass to
/// restore. On a non-finite or failed forward theta is restored first; if the first pass
/// itself fails, `first`'s settle removes the carried perturbation.
#[allow(clippy::too_many_arguments)]
fn sequential_losses(
    model: &dyn LabelWordModel,
    set: &ParamSet,
    batch: &dyn ExampleBatch,
    seed: u64,
    mu: f64,
    step: u64,
    previous: Option<u64>,
    first: Option<(&[(u64, f64)], impl FnOnce() -> Result<()>)>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut terms = vec![(seed, mu)];
    terms.extend(previous.map(|p| (p, mu)));
    let settle_carried = first.map(|(uncarry, settle_carried)| {
        terms.extend_from_slice(uncarry);
        settle_carried
    });
    if let Err(err) = apply(set, &terms) {
        if let Some(settle_carried) = settle_carried {
            settle_carried()?;
        }
        return Err(err);
    }
    let plus = loss::per_example_loss_values(model, batch);
    axpy_z(set, &[(seed, -2.0 * mu)])?;
    let minus = loss::per_example_loss_values(model, batch);
    let checked = plus.and_then(|p| minus.map(|m| (p, m))).and_then(|(p, m)| {
        finite_or_err(&p, step, "loss at theta + mu z")?;
        finite_or_err(&m, step, "loss at theta - mu z")?;
        Ok((p, m))
    });
    if checked.is_err() {
        axpy_z(set, &[(seed, mu)])?;
    }
    checked
}

/// An empty Poisson batch: the mechanism still runs, so each direction releases
/// `a_j = N(0, noise_std^2) / normaliser` and theta moves along it (no forward pass).
#[allow(clippy::too_many_arguments)]
fn noise_only_step(
    params: &TrainableParams,
    set: &ParamSet,
    settings: &ZoStepSettings<'_>,
    seeds: Vec<u64>,
    noise_rng: &mut rand_chacha::ChaCha8Rng,
    step: u64,
    uncarry: &[(u64, f64)],
    carry: Option<Carried>,
) -> Result<(ZoStepReport, Option<Carried>)> {
    let (Some(privacy), Some(normaliser)) = (settings.privacy, settings.normaliser) else {
        apply(set, uncarry)?;
        return Err(OptimError::EmptyBatch { step });
    };
    // The pull acts on plain theta: remove the carried perturbation first when there is one,
    // else in the update's pass.
    let mut terms: Vec<(u64, f64)> = Vec::with_capacity(seeds.len() + 2);
    if settings.proximal.is_some() {
        apply(set, uncarry)?;
    } else {
        terms.extend_from_slice(uncarry);
    }
    let noise: Vec<f64> = seeds
        .iter()
        .map(|_| privacy.noise_std * standard_normal(noise_rng))
        .collect();
    let projected_grads: Vec<f64> = noise.iter().map(|n| n / normaliser).collect();
    if let Some((anchor, lambda)) = settings.proximal {
        params.pull_towards(anchor, settings.step_size * lambda)?;
    }
    terms.extend(update_terms(&seeds, &projected_grads, settings.step_size));
    terms.extend(carry.iter().map(|c| (c.seed, c.scale)));
    apply(set, &terms)?;
    let report = ZoStepReport {
        loss: None,
        projected_grads,
        seeds,
        noise,
        clipped: 0,
        diagnostics: None,
    };
    Ok((report, carry))
}
