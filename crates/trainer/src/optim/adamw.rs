//! Non-private full fine-tuning with AdamW (Loshchilov & Hutter 2019, decoupled weight decay).
//!
//! Written out rather than using `tch::nn::AdamW` so that its moments can be checkpointed and a
//! resumed run continues bit for bit.
//!
//! ```text
//! m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2
//! theta <- theta (1 - eta wd) - eta (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! ```

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::params::TrainableParams;
use super::{loss, OptimError, Result};
use crate::batch::ExampleBatch;
use crate::model::LabelWordModel;

/// AdamW hyper-parameters (defaults as PyTorch's `AdamW`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWSettings {
    /// b1.
    pub beta1: f64,
    /// b2.
    pub beta2: f64,
    /// Denominator guard.
    pub adam_eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW state: step count and f32 moments per trainable tensor.
#[derive(Debug)]
pub struct AdamW {
    settings: AdamWSettings,
    /// Steps taken.
    pub steps: u64,
    first_moments: Vec<Tensor>,
    second_moments: Vec<Tensor>,
}

impl AdamW {
    /// Zero moments shaped like `params`.
    pub fn new(params: &TrainableParams, settings: AdamWSettings) -> Result<Self> {
        let zeros = || -> Result<Vec<Tensor>> {
            Ok(params
                .zeros_like_f32()?
                .into_iter()
                .map(|(_, t)| t)
                .collect())
        };
        Ok(Self {
            settings,
            steps: 0,
            first_moments: zeros()?,
            second_moments: zeros()?,
        })
    }

    /// The moments as `(name, tensor)` for a checkpoint (`adam_m/<param>`, `adam_v/<param>`).
    pub fn state_tensors(&self, params: &TrainableParams) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (((name, _), m), v) in params
            .named()
            .iter()
            .zip(&self.first_moments)
            .zip(&self.second_moments)
        {
            out.push((format!("adam_m/{name}"), m.shallow_clone()));
            out.push((format!("adam_v/{name}"), v.shallow_clone()));
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`].
    ///
    /// # Errors
    /// A missing tensor, named in the message.
    pub fn load_state(
        &mut self,
        params: &TrainableParams,
        saved: &[(String, Tensor)],
        steps: u64,
    ) -> Result<()> {
        let find = |key: String| -> Result<Tensor> {
            saved
                .iter()
                .find(|(n, _)| *n == key)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| {
                    OptimError::invalid("checkpoint", key, "AdamW moment missing from checkpoint")
                })
        };
        for (i, (name, p)) in params.named().iter().enumerate() {
            self.first_moments[i] = find(format!("adam_m/{name}"))?.f_to_device(p.device())?;
            self.second_moments[i] = find(format!("adam_v/{name}"))?.f_to_device(p.device())?;
        }
        self.steps = steps;
        Ok(())
    }

    /// One step on the batch-mean loss; returns the loss. A non-finite loss leaves theta as is.
    pub fn step(
        &mut self,
        model: &dyn LabelWordModel,
        params: &TrainableParams,
        batch: &dyn ExampleBatch,
        step_size: f64,
        global_step: u64,
    ) -> Result<f64> {
        for (_, p) in params.named() {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.f_zero_()?;
            }
        }
        let mean_loss = loss::per_example_losses(model, batch)?.f_mean(Kind::Float)?;
        let value = mean_loss.f_to_kind(Kind::Double)?.double_value(&[]);
        if !value.is_finite() {
            return Err(OptimError::NonFiniteLoss {
                step: global_step,
                loss: value,
                context: "AdamW batch loss",
            });
        }
        mean_loss.f_backward()?;
        self.steps += 1;
        let s = self.settings;
        let t = self.steps as i32;
        let bias1 = 1.0 - s.beta1.powi(t);
        let bias2 = 1.0 - s.beta2.powi(t);
        tch::no_grad(|| -> Result<()> {
            for (((_, p), m), v) in params
                .named()
                .iter()
                .zip(&self.first_moments)
                .zip(&self.second_moments)
            {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let g = grad.f_to_kind(m.kind())?;
                let _ = m.shallow_clone().f_mul_scalar_(s.beta1)?;
                let _ = m.shallow_clone().f_add_(&g.f_mul_scalar(1.0 - s.beta1)?)?;
                let _ = v.shallow_clone().f_mul_scalar_(s.beta2)?;
                let _ = v
                    .shallow_clone()
                    .f_add_(&g.f_square()?.f_mul_scalar(1.0 - s.beta2)?)?;
                let denominator = v.f_div_scalar(bias2)?.f_sqrt()?.f_add_scalar(s.adam_eps)?;
                let update = m
                    .f_div_scalar(bias1)?
                    .f_div(&denominator)?
                    .f_mul_scalar(-step_size)?;
                let mut target = p.shallow_clone();
                if s.weight_decay != 0.0 {
                    let _ = target.f_mul_scalar_(1.0 - step_size * s.weight_decay)?;
                }
                let _ = target.f_add_(&update.f_to_kind(p.kind())?)?;
            }
            Ok(())
        })?;
        Ok(value)
    }
}
