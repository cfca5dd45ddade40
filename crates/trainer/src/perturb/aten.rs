//! Fallback for CUDA tensors when the NVRTC kernel is unavailable: z is generated on the CPU in
//! chunks (the same code as the CPU path), copied to the device, and added with ATen ops. Same
//! values as the kernel and the CPU path; slow (host generation plus a copy per chunk). An
//! out-of-place entry computes from its source's values and writes its destination.

use super::cpu::{dense_update, masked_delta};
use super::error::PerturbError;
use super::param_set::{ParamEntry, Selection};
use tch::{Kind, Tensor};

/// Elements generated on the host per chunk (16 MiB of f32 deltas).
const CHUNK_ELEMENTS: i64 = 1 << 22;

/// theta + delta, computed in f32 (f64 for f64 tensors) and rounded once to theta's dtype.
fn add_delta(theta: &Tensor, delta: &Tensor, kind: Kind) -> Result<Tensor, PerturbError> {
    Ok(if kind == Kind::Double {
        theta.f_add(&delta.f_to_kind(Kind::Double)?)?
    } else {
        theta
            .f_to_kind(Kind::Float)?
            .f_add(delta)?
            .f_to_kind(kind)?
    })
}

/// Apply the update to one entry with ATen ops on its device.
pub(crate) fn update_entry(entry: &ParamEntry, terms: &[(u64, f32)]) -> Result<(), PerturbError> {
    if entry.numel == 0 {
        return Ok(());
    }
    tch::no_grad(|| {
        let mut flat = entry.tensor.f_view([-1])?;
        let source = match &entry.source {
            Some(source) => source.f_view([-1])?,
            None => flat.shallow_clone(),
        };
        match &entry.selection {
            Selection::Dense => {
                let numel = entry.numel as i64;
                let mut start = 0i64;
                while start < numel {
                    let length = CHUNK_ELEMENTS.min(numel - start);
                    let mut delta = vec![0.0f32; length as usize];
                    dense_update(&mut delta, entry.offset + start as u64, terms);
                    let delta = Tensor::from_slice(&delta).f_to_device(entry.device)?;
                    let mut part = flat.f_narrow(0, start, length)?;
                    let current = source.f_narrow(0, start, length)?;
                    let updated = add_delta(&current, &delta, entry.kind)?;
                    part.f_copy_(&updated)?;
                    start += length;
                }
            }
            Selection::Masked {
                indices,
                indices_on_device,
            } => {
                let delta: Vec<f32> = indices
                    .iter()
                    .map(|&index| masked_delta(entry.offset, index, terms))
                    .collect();
                let delta = Tensor::from_slice(&delta).f_to_device(entry.device)?;
                let current = source.f_index_select(0, indices_on_device)?;
                let updated = add_delta(&current, &delta, entry.kind)?;
                let _ = flat.f_index_copy_(0, indices_on_device, &updated)?;
            }
            Selection::Untouched => {}
        }
        Ok(())
    })
}
