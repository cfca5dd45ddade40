//! Parameter-efficient adapters on a frozen base: LoRA and prefix-tuning, for the three
//! families.
//!
//! [`attach`] freezes every parameter of the loaded model (`requires_grad = false`) and adds the
//! adapter's tensors to the same var store, trainable. The methods train
//! `TrainableParams::from_model`, i.e. the tensors with `requires_grad`, so DP-SGD (ghost or
//! micro-batch clipping), the ZO methods (whose perturbation set is the trainable set) and
//! checkpoints all see only the adapter; the base weights are shared, never copied.
//!
//! * **LoRA** (Hu et al., ICLR 2022): on each targeted attention projection
//!   `y = x W^T + b + (alpha / r) (x A^T) B^T`, `A: [r, in]` drawn from `U(-1/sqrt(in),
//!   1/sqrt(in))` (the Kaiming-uniform, `a = sqrt(5)`, init of PEFT's and MeZO's `lora_A`) and
//!   `B: [out, r] = 0`, so the adapted model starts as the base model. No LoRA dropout (the DP
//!   and ZO estimators assume a deterministic forward). DPZero's DP-LoRA baseline uses r = 8,
//!   alpha = 16 on the query and value projections (DPZero, Zhang et al. ICML 2024, App. on
//!   baselines; docs/paper.md §6.1), as does MeZO's LoRA variant.
//! * **Prefix-tuning** (Li & Liang, ACL 2021) in MeZO's form (Malladi et al. NeurIPS 2023,
//!   `prefix.py`, no reparametrisation): each attention layer gets `P` trainable key and value
//!   vectors `[P, kv_width]` in front of the real keys and values, visible to every query. MeZO
//!   uses `P = 5` initialised from real activations: the key and value projections of `P`
//!   tokens drawn uniformly from the vocabulary, run through the base model. For Llama the keys
//!   are taken after RoPE at positions `0..P` and real tokens are rotated from position `P`, as
//!   transformers does after `P` past key/values (MeZO has no Llama prefix).

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::error::{ModelError, Result};
use super::layers::{Linear, LoraBranch, Prefix};
use super::tape::{self, LayerRecord};
use super::{Architecture, Model};
use crate::optim::rng::{standard_normal, stream, Purpose};

/// An attention projection a LoRA branch can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    Query,
    Key,
    Value,
}

/// How prefix keys and values start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixInit {
    /// The base model's key/value activations of `P` random vocabulary tokens (MeZO's
    /// `--prefix_init_by_real_act`).
    #[default]
    RealActivations,
    /// Independent N(0, 1) entries (MeZO's `torch.randn` without that flag).
    Normal,
}

fn default_lora_targets() -> Vec<LoraTarget> {
    vec![LoraTarget::Query, LoraTarget::Value]
}

/// The adapter of a run (`TrainConfig::adapter`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdapterConfig {
    /// LoRA of rank `rank` with scale `alpha / rank` on `targets` of every attention layer.
    Lora {
        rank: i64,
        alpha: f64,
        #[serde(default = "default_lora_targets")]
        targets: Vec<LoraTarget>,
    },
    /// `tokens` trainable key/value positions in every attention layer.
    Prefix {
        tokens: i64,
        #[serde(default)]
        init: PrefixInit,
    },
}

impl AdapterConfig {
    /// DPZero's DP-LoRA setting: r = 8, alpha = 16, query and value projections.
    pub fn dpzero_lora() -> Self {
        AdapterConfig::Lora {
            rank: 8,
            alpha: 16.0,
            targets: default_lora_targets(),
        }
    }

    /// MeZO's prefix setting: 5 tokens initialised from real activations.
    pub fn mezo_prefix() -> Self {
        AdapterConfig::Prefix {
            tokens: 5,
            init: PrefixInit::RealActivations,
        }
    }

    /// Checks the settings, naming the offending value.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(ModelError::BadInput(format!("adapter: {what}")));
        match self {
            AdapterConfig::Lora {
                rank,
                alpha,
                targets,
            } => {
                if *rank < 1 {
                    return bad(format!("rank {rank} must be >= 1"));
                }
                if !(alpha.is_finite() && *alpha > 0.0) {
                    return bad(format!("alpha {alpha} must be finite and > 0"));
                }
                if targets.is_empty() {
                    return bad("targets must name at least one projection".into());
                }
                for (i, t) in targets.iter().enumerate() {
                    if targets[..i].contains(t) {
                        return bad(format!("target {t:?} is listed twice"));
                    }
                }
            }
            AdapterConfig::Prefix { tokens, .. } => {
                if *tokens < 1 {
                    return bad(format!("prefix tokens {tokens} must be >= 1"));
                }
            }
        }
        Ok(())
    }
}

/// One attention block of a family, as the adapters see it: its var-store path, its query,
/// key and value projections (each with its name relative to the block) and its prefix slot.
pub(crate) struct AttentionSite<'a> {
    pub path: String,
    pub query: (&'static str, &'a mut Linear),
    pub key: (&'static str, &'a mut Linear),
    pub value: (&'static str, &'a mut Linear),
    pub prefix: &'a mut Option<Prefix>,
}

impl<'a> AttentionSite<'a> {
    fn projection(&mut self, target: LoraTarget) -> (&'static str, &mut Linear) {
        let (name, linear) = match target {
            LoraTarget::Query => &mut self.query,
            LoraTarget::Key => &mut self.key,
            LoraTarget::Value => &mut self.value,
        };
        (name, linear)
    }
}

/// The var-store path `root.a.b.c` of a dotted name `a.b.c`.
fn path_of<'a>(root: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    let mut parts = dotted.split('.');
    let mut path = root.sub(parts.next().unwrap_or_default());
    for part in parts {
        path = path.sub(part);
    }
    path
}

fn sites(model: &mut Model) -> Vec<AttentionSite<'_>> {
    match &mut model.architecture {
        Architecture::Roberta(m) => m.attention_sites(),
        Architecture::Opt(m) => m.attention_sites(),
        Architecture::Llama(m) => m.attention_sites(),
    }
}

/// Key and value activations `[P, kv_width]` per attention layer of `ids [1, P]` under the
/// base model (Llama keys rotated at positions `0..P`).
fn real_activations(model: &mut Model, ids: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
    // The tape records only layers whose weights require a gradient: mark the key and value
    // projections for this one forward (the whole base is frozen right after).
    let mut pointers = Vec::new();
    for site in sites(model) {
        let _ = site.key.1.weight.set_requires_grad(true);
        let _ = site.value.1.weight.set_requires_grad(true);
        pointers.push((
            site.key.1.weight.data_ptr() as usize,
            site.value.1.weight.data_ptr() as usize,
        ));
    }
    let mask = ids.f_ones_like()?;
    let (hidden, records) = tape::record(|| tch::no_grad(|| model.hidden_states(ids, &mask)))?;
    let _ = hidden?;
    let mut outputs = std::collections::HashMap::new();
    for record in records {
        if let LayerRecord::Linear { weight, output, .. } = record {
            outputs.insert(weight.data_ptr() as usize, output);
        }
    }
    let mut activations = Vec::with_capacity(pointers.len());
    for (k, v) in pointers {
        let (Some(keys), Some(values)) = (outputs.remove(&k), outputs.remove(&v)) else {
            return Err(ModelError::BadInput(
                "prefix init: a key or value projection did not run in the forward".into(),
            ));
        };
        let keys = match &model.architecture {
            Architecture::Llama(m) => m.rotate_leading_keys(&keys)?,
            _ => keys,
        };
        activations.push((
            keys.f_squeeze_dim(0)?.f_detach_copy()?,
            values.f_squeeze_dim(0)?.f_detach_copy()?,
        ));
    }
    Ok(activations)
}

/// `n` values of `U(-bound, bound)` (or N(0, 1) when `bound` is `None`) as a tensor.
fn draw<R: Rng>(
    rng: &mut R,
    dims: &[i64],
    bound: Option<f64>,
    kind: Kind,
    device: Device,
) -> Result<Tensor> {
    let n: i64 = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| match bound {
            Some(b) => ((2.0 * rng.random::<f64>() - 1.0) * b) as f32,
            None => standard_normal(rng) as f32,
        })
        .collect();
    Ok(Tensor::from_slice(&values)
        .f_view(dims)?
        .f_to_kind(kind)?
        .f_to_device(device)?)
}

/// The `tokens` vocabulary ids, uniform over `0..vocab`, whose activations initialise a prefix
/// under `PrefixInit::RealActivations` for run seed `seed`.
pub fn prefix_init_tokens(vocab: i64, tokens: i64, seed: u64) -> Vec<i64> {
    let mut rng = stream(seed, 0, Purpose::AdapterInit);
    (0..tokens).map(|_| rng.random_range(0..vocab)).collect()
}

/// Freezes `model` and attaches `config`'s adapter, its random draws keyed by `seed`
/// ([`Purpose::AdapterInit`]).
///
/// # Errors
/// A model that already has an adapter, invalid settings, or a libtorch failure.
pub fn attach(model: &mut Model, config: &AdapterConfig, seed: u64) -> Result<()> {
    if let Some(existing) = &model.adapter {
        return Err(ModelError::BadInput(format!(
            "the model already carries an adapter ({existing:?})"
        )));
    }
    config.validate()?;
    if let AdapterConfig::Lora { rank, targets, .. } = config {
        // Every shape is checked before the model is touched.
        for mut site in sites(model) {
            let block = site.path.clone();
            for &target in targets {
                let (name, linear) = site.projection(target);
                let size = linear.weight.size();
                if *rank > size[0].min(size[1]) {
                    return Err(ModelError::BadInput(format!(
                        "adapter: LoRA rank {rank} exceeds {block}.{name} {size:?}"
                    )));
                }
            }
        }
    }
    // LoRA's A draws; the prefix tokens have their own stream (prefix_init_tokens).
    let mut rng = stream(seed, 0, Purpose::AdapterInit);
    let kind = model.kind();
    let device = model.device();
    let initial_prefix = match config {
        AdapterConfig::Prefix {
            tokens,
            init: PrefixInit::RealActivations,
        } => {
            let ids = prefix_init_tokens(model.config.vocab_size(), *tokens, seed);
            let ids = Tensor::from_slice(&ids)
                .f_view([1, *tokens])?
                .f_to_device(device)?;
            Some(real_activations(model, &ids)?)
        }
        _ => None,
    };
    for (_, tensor) in model.var_store.variables() {
        let _ = tensor.set_requires_grad(false);
    }
    let root = model.var_store.root();
    let mut sites = match &mut model.architecture {
        Architecture::Roberta(m) => m.attention_sites(),
        Architecture::Opt(m) => m.attention_sites(),
        Architecture::Llama(m) => m.attention_sites(),
    };
    if sites.is_empty() {
        return Err(ModelError::BadInput(
            "adapter: the model has no attention layer".into(),
        ));
    }
    match config {
        AdapterConfig::Lora {
            rank,
            alpha,
            targets,
        } => {
            for site in &mut sites {
                let block = site.path.clone();
                for &target in targets {
                    let (name, linear) = site.projection(target);
                    let size = linear.weight.size();
                    let (out_dim, in_dim) = (size[0], size[1]);
                    let module = path_of(&root, &format!("{block}.{name}"));
                    let bound = 1.0 / (in_dim as f64).sqrt();
                    let a = draw(&mut rng, &[*rank, in_dim], Some(bound), kind, device)?;
                    let b = Tensor::f_zeros([out_dim, *rank], (kind, device))?;
                    linear.lora = Some(LoraBranch {
                        a: module.sub("lora_A").add("weight", a, true),
                        b: module.sub("lora_B").add("weight", b, true),
                        scale: alpha / *rank as f64,
                    });
                }
            }
        }
        AdapterConfig::Prefix { tokens, .. } => {
            for (i, site) in sites.iter_mut().enumerate() {
                let width = site.key.1.weight.size()[0];
                let (keys, values) = match &initial_prefix {
                    Some(acts) => (acts[i].0.shallow_clone(), acts[i].1.shallow_clone()),
                    None => (
                        draw(&mut rng, &[*tokens, width], None, kind, device)?,
                        draw(&mut rng, &[*tokens, width], None, kind, device)?,
                    ),
                };
                let block = path_of(&root, &site.path);
                *site.prefix = Some(Prefix {
                    keys: block.add("prefix_keys", keys, true),
                    values: block.add("prefix_values", values, true),
                });
            }
        }
    }
    drop(sites);
    model.adapter = Some(config.clone());
    Ok(())
}

/// Brings `model` to the adapter a run asks for: attaches `wanted` to a bare model, accepts a
/// model that already carries exactly `wanted`, and refuses any other combination (a run must
/// never train the whole model when an adapter was asked for, or the reverse).
///
/// # Errors
/// The mismatch, or the attachment's error, in words.
pub fn ensure(
    model: &mut dyn crate::model::LabelWordModel,
    wanted: Option<&AdapterConfig>,
    seed: u64,
) -> std::result::Result<(), String> {
    match (wanted, model.adapter()) {
        (None, None) => Ok(()),
        (Some(want), None) => model.attach_adapter(want, seed),
        (Some(want), Some(have)) if want == have => Ok(()),
        (want, have) => Err(format!(
            "the run asks for adapter {want:?} but the model carries {have:?}"
        )),
    }
}
