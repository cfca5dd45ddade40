//! The CPU path: plain loops over the tensors' contiguous storage, split across threads. An
//! out-of-place entry reads its source's storage and writes its destination's.

use super::error::PerturbError;
use super::normal::{normal_at, normal_block};
use super::param_set::{ParamEntry, Selection};
use half::{bf16, f16};
use tch::Kind;

/// Below this many elements a tensor is updated on the calling thread only.
const PARALLEL_THRESHOLD: usize = 1 << 16;

/// An element type the update can be written in: theta + delta computed in f32 (f64 for f64
/// tensors) and rounded once, to nearest even, to the element type.
pub(crate) trait Element: Copy + Send + Sync {
    fn add_delta(self, delta: f32) -> Self;
}

impl Element for f32 {
    #[inline(always)]
    fn add_delta(self, delta: f32) -> Self {
        self + delta
    }
}

impl Element for f64 {
    #[inline(always)]
    fn add_delta(self, delta: f32) -> Self {
        self + f64::from(delta)
    }
}

impl Element for f16 {
    #[inline(always)]
    fn add_delta(self, delta: f32) -> Self {
        f16::from_f32(self.to_f32() + delta)
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn add_delta(self, delta: f32) -> Self {
        bf16::from_f32(self.to_f32() + delta)
    }
}

/// delta[lane] = sum_k scale_k * z(seed_k, 4 * block + lane), accumulated from 0 in term order.
#[inline(always)]
fn block_delta(terms: &[(u64, f32)], block: u64) -> [f32; 4] {
    let mut delta = [0.0f32; 4];
    for &(seed, scale) in terms {
        let z = normal_block(seed, block);
        for (sum, z_lane) in delta.iter_mut().zip(z) {
            *sum += scale * z_lane;
        }
    }
    delta
}

/// Dense update of `data`, whose first element has global index `offset`.
pub(crate) fn dense_update<T: Element>(data: &mut [T], offset: u64, terms: &[(u64, f32)]) {
    let mut local = 0usize;
    while local < data.len() {
        let global = offset + local as u64;
        let first_lane = (global % 4) as usize;
        let count = (4 - first_lane).min(data.len() - local);
        let delta = block_delta(terms, global / 4);
        let lanes = &delta[first_lane..first_lane + count];
        for (slot, &lane_delta) in data[local..local + count].iter_mut().zip(lanes) {
            *slot = slot.add_delta(lane_delta);
        }
        local += count;
    }
}

/// Dense update split into one chunk per available core.
fn dense_update_parallel<T: Element>(data: &mut [T], offset: u64, terms: &[(u64, f32)]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || data.len() < PARALLEL_THRESHOLD {
        dense_update(data, offset, terms);
        return;
    }
    let chunk = data.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (index, part) in data.chunks_mut(chunk).enumerate() {
            let part_offset = offset + (index * chunk) as u64;
            scope.spawn(move || dense_update(part, part_offset, terms));
        }
    });
}

/// Out-of-place dense update: `destination = source + delta`, `source[0]` at global index
/// `offset` (the slices have equal lengths).
fn dense_update_into<T: Element>(
    source: &[T],
    destination: &mut [T],
    offset: u64,
    terms: &[(u64, f32)],
) {
    let mut local = 0usize;
    while local < source.len() {
        let global = offset + local as u64;
        let first_lane = (global % 4) as usize;
        let count = (4 - first_lane).min(source.len() - local);
        let delta = block_delta(terms, global / 4);
        let lanes = &delta[first_lane..first_lane + count];
        let read = &source[local..local + count];
        for ((slot, &value), &lane_delta) in destination[local..local + count]
            .iter_mut()
            .zip(read)
            .zip(lanes)
        {
            *slot = value.add_delta(lane_delta);
        }
        local += count;
    }
}

/// [`dense_update_into`] split into one chunk per available core, as [`dense_update_parallel`].
fn dense_update_into_parallel<T: Element>(
    source: &[T],
    destination: &mut [T],
    offset: u64,
    terms: &[(u64, f32)],
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || source.len() < PARALLEL_THRESHOLD {
        dense_update_into(source, destination, offset, terms);
        return;
    }
    let chunk = source.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts = source.chunks(chunk).zip(destination.chunks_mut(chunk));
        for (index, (read, write)) in parts.enumerate() {
            let part_offset = offset + (index * chunk) as u64;
            scope.spawn(move || dense_update_into(read, write, part_offset, terms));
        }
    });
}

/// delta = sum_k scale_k * z(seed_k, offset + index) for one masked coordinate.
#[inline(always)]
pub(crate) fn masked_delta(offset: u64, index: i64, terms: &[(u64, f32)]) -> f32 {
    let global = offset + index as u64;
    let mut delta = 0.0f32;
    for &(seed, scale) in terms {
        delta += scale * normal_at(seed, global);
    }
    delta
}

/// Masked update: only `data[i]` for i in `indices` (validated in range and distinct).
pub(crate) fn masked_update<T: Element>(
    data: &mut [T],
    offset: u64,
    indices: &[i64],
    terms: &[(u64, f32)],
) {
    for &index in indices {
        let slot = &mut data[index as usize];
        *slot = slot.add_delta(masked_delta(offset, index, terms));
    }
}

/// Out-of-place masked update: `destination[i] = source[i] + delta` for i in `indices`.
fn masked_update_into<T: Element>(
    source: &[T],
    destination: &mut [T],
    offset: u64,
    indices: &[i64],
    terms: &[(u64, f32)],
) {
    for &index in indices {
        let value = source[index as usize];
        destination[index as usize] = value.add_delta(masked_delta(offset, index, terms));
    }
}

fn update_typed<T: Element>(entry: &ParamEntry, terms: &[(u64, f32)]) {
    let numel = entry.numel as usize;
    if numel == 0 {
        return;
    }
    if let Some(source) = &entry.source {
        // SAFETY: the source and the destination were validated (and re-validated by the
        // caller) to be contiguous CPU tensors of `numel` elements of dtype T whose storage
        // outlives this call; `ParamSet::writing_to` refused a destination sharing memory with
        // any source or other destination (and the caller re-checks that the source is not the
        // destination), so the two slices do not overlap.
        let (read, write) = unsafe {
            (
                std::slice::from_raw_parts(source.data_ptr() as *const T, numel),
                std::slice::from_raw_parts_mut(entry.tensor.data_ptr() as *mut T, numel),
            )
        };
        match &entry.selection {
            Selection::Dense => dense_update_into_parallel(read, write, entry.offset, terms),
            Selection::Masked { indices, .. } => {
                masked_update_into(read, write, entry.offset, indices, terms)
            }
            Selection::Untouched => {}
        }
        return;
    }
    // SAFETY: the entry was validated (and re-validated by the caller) to be a contiguous CPU
    // tensor of `numel` elements of dtype T; its storage outlives this call, and the ParamSet
    // holds the only handle we write through during the call.
    let data = unsafe { std::slice::from_raw_parts_mut(entry.tensor.data_ptr() as *mut T, numel) };
    match &entry.selection {
        Selection::Dense => dense_update_parallel(data, entry.offset, terms),
        Selection::Masked { indices, .. } => masked_update(data, entry.offset, indices, terms),
        Selection::Untouched => {}
    }
}

/// Apply the update to one CPU entry.
pub(crate) fn update_entry(entry: &ParamEntry, terms: &[(u64, f32)]) -> Result<(), PerturbError> {
    match entry.kind {
        Kind::Float => update_typed::<f32>(entry, terms),
        Kind::Double => update_typed::<f64>(entry, terms),
        Kind::Half => update_typed::<f16>(entry, terms),
        Kind::BFloat16 => update_typed::<bf16>(entry, terms),
        kind => {
            return Err(PerturbError::UnsupportedKind {
                name: entry.name.clone(),
                kind,
            })
        }
    }
    Ok(())
}
