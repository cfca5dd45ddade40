//! Per-example clipping from one forward and one backward, without per-example gradients.
//!
//! The forward runs under the layer tape ([`crate::models::tape`]); one backward gives the
//! gradient `g` of the summed loss at every recorded layer output. Example `i`'s gradient of a
//! parameter is then a function of its own rows of the layer input and of `g`:
//!
//! ```text
//! linear  W:  G_i = g_i^T a_i                 ||G_i||^2 = sum_{t,s} (a_it . a_is)(g_it . g_is)
//! bias       b:  G_i = sum_t g_it              (ghost norm, Li et al. ICLR 2022, eq. 4)
//! norm gain  w:  G_i = sum_t g_it * xhat_it
//! embedding  E:  G_i = sum_t e_{id_t} g_it^T    ||G_i||^2 = sum_{t,s} [id_t = id_s] (g_it . g_is)
//! ```
//! For a linear layer the ghost norm costs `B T^2 (d + p)` and the per-example outer product
//! `B T d p`; the cheaper one is used per layer (Bu et al. ICML 2023, "book-keeping" (BK)).
//! Rows of a tied embedding used both as input lookup and as output head are grouped, so the
//! cross term between the two uses is in the norm. The clipped sum
//! `sum_i min(1, C / ||G_i||) G_i` is then formed per layer from the same inputs and output
//! gradients with the per-example factors folded into `g` (BK: no second backward).
//!
//! An example may take several adjacent model rows (a multiple-choice example's candidates,
//! `crate::data::choice`): its rows are read as one sequence of positions (`[R, T, d]` ->
//! `[B, (R/B) T, d]`), so the sums over `t, s` above run over all its candidates' tokens and the
//! norm is that of the example's whole gradient, clipped as one unit.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::loss;
use super::params::TrainableParams;
use super::{OptimError, Result};
use crate::batch::ExampleBatch;
use crate::compute::accumulation_kind;
use crate::model::LabelWordModel;
use crate::models::tape::{self, LayerRecord, PackedRows};

/// Per-example quantities of one clipped step (in batch order).
#[derive(Debug, Clone, PartialEq)]
pub struct PerExampleClipping {
    /// Per-example loss.
    pub losses: Vec<f64>,
    /// Per-example gradient norm `||grad l_i||` over all trainable parameters.
    pub norms: Vec<f64>,
    /// Examples whose norm exceeded the bound.
    pub clipped: usize,
}

/// `min(1, C / norm)` for each norm and the number of norms above `C`.
pub fn clip_factors(norms: &[f64], clip_norm: f64) -> (Vec<f64>, usize) {
    let factors: Vec<f64> = norms
        .iter()
        .map(|&n| if n > clip_norm { clip_norm / n } else { 1.0 })
        .collect();
    let clipped = norms.iter().filter(|&&n| n > clip_norm).count();
    (factors, clipped)
}

/// How one trainable parameter's per-example gradient is obtained.
enum Contribution {
    /// Small per-example gradients, materialised: `[B, numel]` (norm gains, biases).
    PerExample(Tensor),
    /// A linear weight: `input [B, T, d]`, output gradient `[B, T, p]` (model dtype).
    LinearWeight { input: Tensor, grad: Tensor },
    /// Row uses of an embedding-like table: `(ids [B, P], row gradients [B, P, D])` per use.
    Rows(Vec<(Tensor, Tensor)>),
}

/// The batch's layout on the tape: `b` examples of `rows / b` adjacent model rows each (a
/// multiple-choice example's candidates), so every recorded tensor leads with `rows`.
#[derive(Clone, Copy)]
struct Layout {
    b: i64,
    rows: i64,
}

/// `[R, ...]` -> `[B, -1, last]`: an example's rows (all its candidates) become one sequence of
/// positions, so each per-example norm and clipped sum below covers the whole example.
fn per_example_rows(t: &Tensor, layout: Layout) -> Result<Tensor> {
    let last = *t.size().last().unwrap_or(&1);
    if t.size().first() != Some(&layout.rows) {
        return Err(OptimError::GhostClipping(format!(
            "a recorded layer tensor {:?} does not lead with the batch's {} rows",
            t.size(),
            layout.rows
        )));
    }
    Ok(t.f_reshape([layout.b, -1, last])?)
}

struct Slots<'a> {
    names: &'a [(String, Tensor)],
    index: HashMap<usize, usize>,
    contributions: Vec<Option<Contribution>>,
}

impl Slots<'_> {
    fn find(&self, t: Option<&Tensor>) -> Option<usize> {
        t.and_then(|t| self.index.get(&(t.data_ptr() as usize)).copied())
    }

    fn single(&mut self, param: usize, c: Contribution) -> Result<()> {
        if self.contributions[param].is_some() {
            return Err(OptimError::GhostClipping(format!(
                "parameter {} is used by more than one layer in the forward; ghost clipping \
                 handles that only for embedding rows (use dp-sgd-microbatch)",
                self.names[param].0
            )));
        }
        self.contributions[param] = Some(c);
        Ok(())
    }

    fn rows(&mut self, param: usize, ids: Tensor, vecs: Tensor) -> Result<()> {
        match &mut self.contributions[param] {
            None => self.contributions[param] = Some(Contribution::Rows(vec![(ids, vecs)])),
            Some(Contribution::Rows(uses)) => uses.push((ids, vecs)),
            Some(_) => {
                return Err(OptimError::GhostClipping(format!(
                    "parameter {} is used both as a table and as a dense layer",
                    self.names[param].0
                )))
            }
        }
        Ok(())
    }
}

/// Squared per-example norms `[B]` (accumulation dtype) of one contribution to `param`.
fn squared_norms(c: &Contribution, acc: Kind, param: &Tensor) -> Result<Tensor> {
    Ok(match c {
        Contribution::PerExample(per) => per.f_square()?.f_sum_dim_intlist(1, false, acc)?,
        Contribution::LinearWeight { input, grad } => {
            let (a, g) = (input.f_to_kind(acc)?, grad.f_to_kind(acc)?);
            let (t, d, p) = (a.size()[1], a.size()[2], g.size()[2]);
            if t * (d + p) < d * p {
                let aa = a.f_bmm(&a.f_transpose(1, 2)?)?;
                let gg = g.f_bmm(&g.f_transpose(1, 2)?)?;
                aa.f_mul(&gg)?
                    .f_sum_dim_intlist([1, 2].as_slice(), false, acc)?
            } else {
                g.f_transpose(1, 2)?
                    .f_bmm(&a)?
                    .f_square()?
                    .f_sum_dim_intlist([1, 2].as_slice(), false, acc)?
            }
        }
        Contribution::Rows(uses) => {
            let ids = Tensor::f_cat(&uses.iter().map(|u| &u.0).collect::<Vec<_>>(), 1)?;
            let vecs = Tensor::f_cat(&uses.iter().map(|u| &u.1).collect::<Vec<_>>(), 1)?;
            let (b, p, width) = (vecs.size()[0], vecs.size()[1], vecs.size()[2]);
            let rows = param.size()[0];
            if p * p > rows * width {
                // More uses than table entries (e.g. a full-vocabulary head): scatter the
                // per-example gradients densely instead of the [B, P, P] Gram matrix.
                let index = ids.f_unsqueeze(2)?.f_expand([b, p, width], false)?;
                return Ok(Tensor::f_zeros([b, rows, width], (acc, vecs.device()))?
                    .f_scatter_add(1, &index, &vecs)?
                    .f_square()?
                    .f_sum_dim_intlist([1, 2].as_slice(), false, acc)?);
            }
            let same = ids.f_unsqueeze(2)?.f_eq_tensor(&ids.f_unsqueeze(1)?)?;
            vecs.f_bmm(&vecs.f_transpose(1, 2)?)?
                .f_mul(&same.f_to_kind(acc)?)?
                .f_sum_dim_intlist([1, 2].as_slice(), false, acc)?
        }
    })
}

/// `sum_i factor_i G_i`, shaped like `param`; `factors [B]` in the accumulation dtype.
fn clipped_sum(c: &Contribution, factors: &Tensor, param: &Tensor) -> Result<Tensor> {
    let b = factors.size()[0];
    let grad = match c {
        Contribution::PerExample(per) => factors.f_unsqueeze(0)?.f_mm(per)?,
        Contribution::LinearWeight { input, grad } => {
            let (d, p) = (input.size()[2], grad.size()[2]);
            let scaled = grad.f_mul(&factors.f_view([b, 1, 1])?.f_to_kind(grad.kind())?)?;
            scaled
                .f_reshape([-1, p])?
                .f_transpose(0, 1)?
                .f_mm(&input.f_reshape([-1, d])?)?
        }
        Contribution::Rows(uses) => {
            let rows = param.size()[0];
            let width = uses[0].1.size()[2];
            let mut total = Tensor::f_zeros([rows, width], (factors.kind(), param.device()))?;
            for (ids, vecs) in uses {
                let scaled = vecs.f_mul(&factors.f_view([b, 1, 1])?)?;
                total =
                    total.f_index_add(0, &ids.f_reshape([-1])?, &scaled.f_reshape([-1, width])?)?;
            }
            total
        }
    };
    Ok(grad.f_reshape(param.size())?)
}

/// Per-example clipping by ghost norms and book-keeping: calls `sink(k, grad)` once for every
/// trainable parameter `k` (index in `params.named()`) with `sum_i min(1, C/||g_i||) grad l_i`
/// (f32, f64 for an f64 model; the model dtype for linear weights). If a loss is not finite no
/// gradient is formed and `sink` is not called: the caller sees it in the returned losses.
///
/// # Errors
/// A model that does not record its layers, a trainable parameter the forward does not use or
/// uses in a way the ghost norms do not cover, or a libtorch failure.
pub fn ghost_clipped_gradient(
    model: &dyn LabelWordModel,
    params: &TrainableParams,
    batch: &dyn ExampleBatch,
    clip_norm: f64,
    sink: &mut dyn FnMut(usize, Tensor) -> Result<()>,
) -> Result<PerExampleClipping> {
    if !(clip_norm > 0.0 && clip_norm.is_finite()) {
        return Err(OptimError::invalid(
            "clip_norm",
            clip_norm,
            "must be finite and > 0",
        ));
    }
    if !model.records_layers() {
        return Err(OptimError::GhostClipping(
            "the model does not record its layers; use dp-sgd-microbatch".into(),
        ));
    }
    if batch.num_examples() == 0 {
        return Ok(PerExampleClipping {
            losses: Vec::new(),
            norms: Vec::new(),
            clipped: 0,
        });
    }
    let b = batch.num_examples() as i64;
    let layout = Layout {
        b,
        rows: b * batch.rows_per_example() as i64,
    };
    let (losses, records) = tape::record(|| loss::per_example_losses(model, batch))?;
    let losses = losses?;
    let loss_values = Vec::<f64>::try_from(
        losses
            .f_detach()?
            .f_to_kind(Kind::Double)?
            .f_to_device(tch::Device::Cpu)?,
    )?;
    if loss_values.iter().any(|l| !l.is_finite()) {
        return Ok(PerExampleClipping {
            losses: loss_values,
            norms: Vec::new(),
            clipped: 0,
        });
    }
    let outputs: Vec<Tensor> = records
        .iter()
        .map(|r| match r {
            LayerRecord::Linear { output, .. }
            | LayerRecord::Norm { output, .. }
            | LayerRecord::Embedding { output, .. }
            | LayerRecord::Rows { output, .. } => output.shallow_clone(),
        })
        .collect();
    let total = losses.f_sum(losses.kind())?;
    let output_grads = Tensor::f_run_backward(&[&total], &outputs, false, false)?;
    drop(outputs);

    let named = params.named();
    let acc = accumulation_kind(named[0].1.kind());
    let mut slots = Slots {
        names: named,
        index: named
            .iter()
            .enumerate()
            .map(|(k, (_, t))| (t.data_ptr() as usize, k))
            .collect(),
        contributions: (0..named.len()).map(|_| None).collect(),
    };
    for (record, g) in records.into_iter().zip(output_grads) {
        let g = if g.defined() {
            g
        } else {
            // The output does not reach the loss: zero gradient.
            match &record {
                LayerRecord::Linear { output, .. }
                | LayerRecord::Norm { output, .. }
                | LayerRecord::Embedding { output, .. }
                | LayerRecord::Rows { output, .. } => output.f_zeros_like()?,
            }
        };
        // A packed layer's tensors hold the real tokens only: laid out again by example, with
        // zeros (no contribution) at padding.
        let packed = match &record {
            LayerRecord::Linear { packed, .. } | LayerRecord::Norm { packed, .. } => {
                packed.as_ref().map(PackedRows::shallow_clone)
            }
            _ => None,
        };
        let by_example = |t: &Tensor| -> Result<Tensor> {
            match &packed {
                Some(rows) => per_example_rows(&rows.unpack(t)?, layout),
                None => per_example_rows(t, layout),
            }
        };
        let g = by_example(&g)?;
        match record {
            LayerRecord::Linear {
                weight,
                bias,
                input,
                ..
            } => {
                if let Some(k) = slots.find(bias.as_ref()) {
                    let per = g.f_sum_dim_intlist(1, false, acc)?;
                    slots.single(k, Contribution::PerExample(per))?;
                }
                if let Some(k) = slots.find(Some(&weight)) {
                    let input = by_example(&input.f_detach()?)?;
                    slots.single(
                        k,
                        Contribution::LinearWeight {
                            input,
                            grad: g.shallow_clone(),
                        },
                    )?;
                }
            }
            LayerRecord::Norm {
                weight,
                bias,
                normed,
                ..
            } => {
                if let Some(k) = slots.find(Some(&weight)) {
                    let normed = by_example(&normed.f_detach()?)?.f_to_kind(acc)?;
                    let per = g
                        .f_to_kind(acc)?
                        .f_mul(&normed)?
                        .f_sum_dim_intlist(1, false, acc)?;
                    slots.single(k, Contribution::PerExample(per))?;
                }
                if let Some(k) = slots.find(bias.as_ref()) {
                    let per = g.f_sum_dim_intlist(1, false, acc)?;
                    slots.single(k, Contribution::PerExample(per))?;
                }
            }
            LayerRecord::Embedding { table, ids, .. } => {
                if let Some(k) = slots.find(Some(&table)) {
                    let ids = ids.f_reshape([b, -1])?;
                    slots.rows(k, ids, g.f_to_kind(acc)?)?;
                }
            }
            LayerRecord::Rows {
                matrix,
                bias,
                rows,
                input,
                ..
            } => {
                let n = rows.size()[0];
                let ids = rows.f_unsqueeze(0)?.f_expand([b, n], false)?;
                if let Some(k) = slots.find(Some(&matrix)) {
                    let h = per_example_rows(&input.f_detach()?, layout)?.f_to_kind(acc)?;
                    let vecs = g.f_to_kind(acc)?.f_transpose(1, 2)?.f_bmm(&h)?;
                    slots.rows(k, ids.shallow_clone(), vecs)?;
                }
                if let Some(k) = slots.find(bias.as_ref()) {
                    let vecs = g.f_sum_dim_intlist(1, false, acc)?.f_unsqueeze(2)?;
                    slots.rows(k, ids, vecs)?;
                }
            }
        }
    }
    let contributions: Vec<Contribution> = slots
        .contributions
        .into_iter()
        .zip(named)
        .map(|(c, (name, _))| {
            c.ok_or_else(|| {
                OptimError::GhostClipping(format!(
                    "trainable parameter {name} is not used by a recorded layer"
                ))
            })
        })
        .collect::<Result<_>>()?;

    let mut squared = Tensor::f_zeros([b], (Kind::Double, named[0].1.device()))?;
    for (k, c) in contributions.iter().enumerate() {
        squared = squared.f_add(&squared_norms(c, acc, &named[k].1)?.f_to_kind(Kind::Double)?)?;
    }
    let norms: Vec<f64> = Vec::<f64>::try_from(squared.f_to_device(tch::Device::Cpu)?)?
        .into_iter()
        .map(|s| s.max(0.0).sqrt())
        .collect();
    let (factors, clipped) = clip_factors(&norms, clip_norm);
    let factors = Tensor::from_slice(&factors)
        .f_to_kind(acc)?
        .f_to_device(named[0].1.device())?;
    for (k, c) in contributions.iter().enumerate() {
        sink(k, clipped_sum(c, &factors, &named[k].1)?)?;
    }
    Ok(PerExampleClipping {
        losses: loss_values,
        norms,
        clipped,
    })
}
