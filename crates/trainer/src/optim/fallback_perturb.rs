//! A private stand-in for `crate::perturb` (owned by another module, same API): in-place
//! `theta += sum_k scale_k * z(seed_k)` with z ~ N(0, 1) regenerated from (seed, element index)
//! by a counter-based generator, so z never has to be stored (MeZO's seed trick, paper.md §6.3).
//!
//! The generator here is splitmix64 over (seed, index) followed by Box-Muller, filled on the CPU
//! in chunks; it is exact and deterministic but slow on large GPU models. `crate::perturb`
//! replaces it (same signatures) once it lands.

use tch::{Kind, Tensor};

use super::{OptimError, Result};

/// Elements generated per CPU chunk.
const CHUNK: usize = 1 << 16;

/// Trainable tensors sorted by name; the element index of z is global over their
/// concatenation in that order. Optional masks restrict every operation to flat indices.
#[derive(Debug)]
pub struct ParamSet {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    tensor: Tensor,
    offset: u64,
    mask: Option<Vec<i64>>,
}

impl ParamSet {
    /// Sorts by name and assigns each tensor its offset in the concatenation.
    pub fn new(mut named: Vec<(String, Tensor)>) -> Result<ParamSet> {
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut offset = 0u64;
        let mut entries = Vec::with_capacity(named.len());
        for (name, tensor) in named {
            let numel = tensor.numel() as u64;
            entries.push(Entry { name, tensor, offset, mask: None });
            offset += numel;
        }
        Ok(ParamSet { entries })
    }

    /// Restricts the set to the given flat indices (int64) of the named tensors; tensors not
    /// named are left out entirely.
    pub fn with_masks(mut self, masks: Vec<(String, Tensor)>) -> Result<ParamSet> {
        let mut by_name = std::collections::HashMap::new();
        for (name, indices) in masks {
            let values = Vec::<i64>::try_from(indices.to_kind(Kind::Int64).flatten(0, -1))?;
            by_name.insert(name, values);
        }
        let mut kept = Vec::new();
        for mut entry in self.entries.drain(..) {
            if let Some(indices) = by_name.remove(&entry.name) {
                let numel = entry.tensor.numel() as i64;
                if let Some(bad) = indices.iter().find(|&&i| i < 0 || i >= numel) {
                    return Err(OptimError::BadMask {
                        name: entry.name,
                        reason: format!("index {bad} outside 0..{numel}"),
                    });
                }
                entry.mask = Some(indices);
                kept.push(entry);
            }
        }
        if let Some(name) = by_name.into_keys().next() {
            return Err(OptimError::BadMask {
                name,
                reason: "not a parameter of the set".into(),
            });
        }
        Ok(ParamSet { entries: kept })
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// z(seed, index) ~ N(0, 1): two 53-bit uniforms from a hash of (seed, index), Box-Muller.
fn normal_at(seed: u64, index: u64) -> f64 {
    let key = splitmix64(seed ^ 0xD1B5_4A32_D192_ED03);
    let a = splitmix64(key ^ index.wrapping_mul(2));
    let b = splitmix64(key ^ index.wrapping_mul(2).wrapping_add(1));
    let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64; // in (0, 1)
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn combined(terms: &[(u64, f64)], index: u64) -> f64 {
    terms.iter().map(|&(seed, scale)| scale * normal_at(seed, index)).sum()
}

fn source_tensor(values: &[f64], like: &Tensor) -> Tensor {
    let host = if like.kind() == Kind::Double {
        Tensor::from_slice(values)
    } else {
        let single: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        Tensor::from_slice(&single)
    };
    host.to_device(like.device()).to_kind(like.kind())
}

/// `theta += sum_k scale_k * z(seed_k)` on every (masked) coordinate of `params`, in place and
/// under `no_grad`. One pass over the parameters whatever the number of terms.
pub fn axpy_z(params: &ParamSet, terms: &[(u64, f64)]) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for entry in &params.entries {
            let flat = entry.tensor.f_view(-1)?;
            match &entry.mask {
                None => {
                    let numel = entry.tensor.numel();
                    let mut start = 0usize;
                    while start < numel {
                        let len = CHUNK.min(numel - start);
                        let values: Vec<f64> = (start..start + len)
                            .map(|j| combined(terms, entry.offset + j as u64))
                            .collect();
                        let mut part = flat.f_narrow(0, start as i64, len as i64)?;
                        part.f_add_(&source_tensor(&values, &entry.tensor))?;
                        start += len;
                    }
                }
                Some(indices) => {
                    if indices.is_empty() {
                        continue;
                    }
                    let values: Vec<f64> = indices
                        .iter()
                        .map(|&j| combined(terms, entry.offset + j as u64))
                        .collect();
                    let index = Tensor::from_slice(indices).to_device(entry.tensor.device());
                    let mut flat = flat;
                    flat.f_put_(&index, &source_tensor(&values, &entry.tensor), true)?;
                }
            }
        }
        Ok(())
    })
}
