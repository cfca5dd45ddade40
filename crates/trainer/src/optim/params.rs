//! The trainable parameters of a [`LabelWordModel`], sorted by name (so a seed maps to the same z
//! everywhere), with an optional DP-ZOPO coordinate mask and the DP-ZOSO proximal anchor.

use std::cell::OnceCell;
use tch::Tensor;

use super::paired::PairedWeights;
use super::{OptimError, ParamSet, Result};
use crate::model::LabelWordModel;

/// Trainable tensors (sharing storage with the model) and, for DP-ZOPO, the selected flat
/// indices of each tensor.
#[derive(Debug)]
pub struct TrainableParams {
    named: Vec<(String, Tensor)>,
    masks: Option<Vec<(String, Tensor)>>,
    /// The z generator's view, built (and its mask validated and uploaded) once per mask, not
    /// once per step: for a 1% mask of OPT-2.7B that validation copies 26M indices to the host.
    set: OnceCell<ParamSet>,
    /// The paired forward's replicas (built on first use after each mask, like `set`).
    paired: OnceCell<PairedWeights>,
}

/// A copy of the trainable coordinates at a stage boundary: the proximal anchor `theta_anchor`.
/// Dense it costs one copy of the trainable weights; under a DP-ZOPO mask only the |M| masked
/// values are copied.
#[derive(Debug)]
pub struct Anchor {
    /// `(parameter name, values)`: the whole tensor, or the masked values in mask order.
    pub values: Vec<(String, Tensor)>,
}

impl TrainableParams {
    /// The model's trainable variables (`requires_grad`), sorted by name.
    ///
    /// # Errors
    /// [`OptimError::NoTrainableParameter`] when the model has none.
    pub fn from_model(model: &dyn LabelWordModel) -> Result<Self> {
        let mut named: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        if named.is_empty() {
            return Err(OptimError::NoTrainableParameter(
                "the var store has no variable with requires_grad".into(),
            ));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            named,
            masks: None,
            set: OnceCell::new(),
            paired: OnceCell::new(),
        })
    }

    /// The tensors, sorted by name (shallow clones: in-place updates reach the model).
    pub fn named(&self) -> &[(String, Tensor)] {
        &self.named
    }

    /// The current mask, if any: `(name, int64 flat indices)` for the tensors with at least one
    /// selected coordinate.
    pub fn masks(&self) -> Option<&[(String, Tensor)]> {
        self.masks.as_deref()
    }

    /// Installs (or removes) a mask. Tensors absent from the mask are frozen.
    ///
    /// # Errors
    /// A name that is not a trainable parameter, or an index out of range.
    pub fn set_masks(&mut self, masks: Option<Vec<(String, Tensor)>>) -> Result<()> {
        if let Some(masks) = &masks {
            for (name, indices) in masks {
                let Some((_, tensor)) = self.named.iter().find(|(n, _)| n == name) else {
                    return Err(OptimError::BadMask {
                        name: name.clone(),
                        reason: "not a trainable parameter".into(),
                    });
                };
                if indices.numel() > 0 {
                    let max = indices.max().int64_value(&[]);
                    let min = indices.min().int64_value(&[]);
                    if min < 0 || max >= tensor.numel() as i64 {
                        return Err(OptimError::BadMask {
                            name: name.clone(),
                            reason: format!(
                                "indices span {min}..={max}, tensor has {} elements",
                                tensor.numel()
                            ),
                        });
                    }
                }
            }
        }
        self.masks = masks;
        self.set = OnceCell::new();
        self.paired = OnceCell::new();
        Ok(())
    }

    /// Number of coordinates all tensors hold (`d`).
    pub fn total_numel(&self) -> usize {
        self.named.iter().map(|(_, t)| t.numel()).sum()
    }

    /// Number of coordinates the methods touch: `d`, or `|M|` under a mask.
    pub fn trained_numel(&self) -> usize {
        match &self.masks {
            None => self.total_numel(),
            Some(masks) => masks.iter().map(|(_, m)| m.numel()).sum(),
        }
    }

    /// The set handed to the z generator (masked if a mask is installed), built on first use
    /// after each [`Self::set_masks`].
    pub fn param_set(&self) -> Result<&ParamSet> {
        if let Some(set) = self.set.get() {
            return Ok(set);
        }
        let set = self.build_param_set()?;
        Ok(self.set.get_or_init(|| set))
    }

    /// The replicas of the paired forward ([`super::zo::ZoForward::Paired`]), built from theta
    /// on first use after each [`Self::set_masks`].
    pub fn paired_weights(&self) -> Result<&PairedWeights> {
        if let Some(paired) = self.paired.get() {
            return Ok(paired);
        }
        let paired = PairedWeights::new(self.param_set()?)?;
        Ok(self.paired.get_or_init(|| paired))
    }

    fn build_param_set(&self) -> Result<ParamSet> {
        let named = self
            .named
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        let set = ParamSet::new(named)?;
        match &self.masks {
            None => Ok(set),
            Some(masks) => Ok(set.with_masks(
                masks
                    .iter()
                    .map(|(n, m)| (n.clone(), m.shallow_clone()))
                    .collect(),
            )?),
        }
    }

    fn mask_of(&self, name: &str) -> Option<Option<&Tensor>> {
        match &self.masks {
            None => Some(None),
            Some(masks) => masks.iter().find(|(n, _)| n == name).map(|(_, m)| Some(m)),
        }
    }

    /// Copies the trained coordinates: the proximal anchor of a new stage.
    pub fn snapshot_anchor(&self) -> Result<Anchor> {
        let mut values = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (name, tensor) in &self.named {
                match self.mask_of(name) {
                    None => {}
                    Some(None) => values.push((name.clone(), tensor.f_detach_copy()?)),
                    Some(Some(mask)) => {
                        let index = mask.to_device(tensor.device());
                        values.push((name.clone(), tensor.f_view(-1)?.f_take(&index)?));
                    }
                }
            }
            Ok(())
        })?;
        Ok(Anchor { values })
    }

    /// `theta <- (1 - w) theta + w theta_anchor` on the trained coordinates, with
    /// `w = step_size * proximal_weight`: the proximal part of
    /// `theta <- theta - eta (a z + lambda (theta - theta_anchor))`. One kernel launch per
    /// element type on CUDA ([`crate::perturb::pull_towards`]).
    pub fn pull_towards(&self, anchor: &Anchor, weight: f64) -> Result<()> {
        crate::perturb::pull_towards(self.param_set()?, &anchor.values, weight)?;
        Ok(())
    }

    /// Bytes of one copy of the trained coordinates (the anchor's cost).
    pub fn anchor_bytes(&self) -> usize {
        let elt = self
            .named
            .first()
            .map(|(_, t)| t.kind().elt_size_in_bytes())
            .unwrap_or(4);
        self.trained_numel() * elt
    }

    /// Zero tensors shaped like the parameters (f32, or f64 for f64 parameters), for scores.
    pub fn zeros_like_f32(&self) -> Result<Vec<(String, Tensor)>> {
        self.named
            .iter()
            .map(|(n, t)| {
                let kind = crate::compute::accumulation_kind(t.kind());
                Ok((n.clone(), Tensor::f_zeros(t.size(), (kind, t.device()))?))
            })
            .collect()
    }
}
