//! The paired forward of a two-point ZO step ([`super::zo::ZoForward::Paired`]): the losses at
//! theta + mu z and theta - mu z from one forward over the batch twice, with the two points'
//! weights as replicas ([`crate::models::replicas`]).
//!
//! Each perturbed tensor gets a stack `[2, ...]` beside theta. Per direction, one out-of-place
//! pass writes `theta + mu z` into replica 0 and one writes `theta - mu z` into replica 1
//! ([`crate::perturb::ParamSet::writing_to`]); theta itself is never perturbed, so nothing is
//! restored afterwards. Coordinates a DP-ZOPO mask leaves out are never written: the replicas
//! hold theta's values there from their construction, and the methods change theta only on the
//! masked coordinates while the mask stands ([`super::params::TrainableParams::set_masks`]
//! drops the replicas with the mask). Tensors the mask leaves out entirely are shared.
//!
//! Cost: two more copies of the perturbed tensors (for SmolLM2-135M in f32, 1.1 GB), so this is
//! for small models; the sequential forward keeps MeZO's inference memory.

use tch::{Kind, Tensor};

use super::{axpy_z, ParamSet, Result};
use crate::batch::ExampleBatch;
use crate::model::LabelWordModel;
use crate::models::replicas::{with_replicas, WeightReplicas};
use crate::perturb::Selection;

/// The two replicas of theta's perturbed tensors and the passes that fill them.
#[derive(Debug)]
pub struct PairedWeights {
    replicas: WeightReplicasHandle,
    plus: ParamSet,
    minus: ParamSet,
}

/// [`WeightReplicas`] behind `Debug`.
struct WeightReplicasHandle(WeightReplicas);

impl std::fmt::Debug for WeightReplicasHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightReplicas({})", self.0.count())
    }
}

impl PairedWeights {
    /// Replicas of the touched tensors of `set` (theta's z-generator view), both starting equal
    /// to theta.
    pub fn new(set: &ParamSet) -> Result<Self> {
        let mut stacks = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for entry in set.entries() {
                if matches!(entry.selection, Selection::Untouched) || entry.numel == 0 {
                    continue;
                }
                let theta = entry.tensor.f_detach()?;
                let stacked = Tensor::f_stack(&[&theta, &theta], 0)?;
                stacks.push((entry.name.clone(), entry.tensor.shallow_clone(), stacked));
            }
            Ok(())
        })?;
        let destinations = |r: i64| -> Result<Vec<(String, Tensor)>> {
            stacks
                .iter()
                .map(|(name, _, stacked)| Ok((name.clone(), stacked.f_select(0, r)?)))
                .collect()
        };
        let plus = set.writing_to(destinations(0)?)?;
        let minus = set.writing_to(destinations(1)?)?;
        let replicas = WeightReplicas::new(
            2,
            stacks
                .iter()
                .map(|(name, theta, stacked)| (name.clone(), theta, stacked.shallow_clone()))
                .collect(),
        )?;
        Ok(Self {
            replicas: WeightReplicasHandle(replicas),
            plus,
            minus,
        })
    }

    /// Per-example losses at theta + mu z(seed) and at theta - mu z(seed), from one forward of
    /// `doubled` (the batch repeated twice, [`ExampleBatch::repeated`]). Theta is not touched.
    pub fn losses(
        &self,
        model: &dyn LabelWordModel,
        doubled: &dyn ExampleBatch,
        seed: u64,
        mu: f64,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        axpy_z(&self.plus, &[(seed, mu)])?;
        axpy_z(&self.minus, &[(seed, -mu)])?;
        let scores = tch::no_grad(|| with_replicas(&self.replicas.0, || doubled.scores(model)))?;
        let losses = super::loss::losses_from_logits(&scores, doubled.labels())?;
        let values = Vec::<f64>::try_from(
            losses
                .f_to_kind(Kind::Double)?
                .f_to_device(tch::Device::Cpu)?,
        )?;
        let half = values.len() / 2;
        let minus = values[half..].to_vec();
        let mut plus = values;
        plus.truncate(half);
        Ok((plus, minus))
    }
}
