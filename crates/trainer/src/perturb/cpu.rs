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

/// What a pass writes: theta + delta in place, or a source's values + delta into a destination
/// of the same length (`ParamSet::writing_to`).
pub(crate) enum Span<'a, T> {
    InPlace(&'a mut [T]),
    Into {
        source: &'a [T],
        destination: &'a mut [T],
    },
}

impl<'a, T: Element> Span<'a, T> {
    fn len(&self) -> usize {
        match self {
            Span::InPlace(data) => data.len(),
            Span::Into { source, .. } => source.len(),
        }
    }

    /// Element `i` := (its value, or the source's) + `delta`.
    #[inline(always)]
    fn add(&mut self, i: usize, delta: f32) {
        match self {
            Span::InPlace(data) => data[i] = data[i].add_delta(delta),
            Span::Into {
                source,
                destination,
            } => destination[i] = source[i].add_delta(delta),
        }
    }

    /// Consecutive pieces of at most `chunk` elements.
    fn pieces(self, chunk: usize) -> Vec<Span<'a, T>> {
        match self {
            Span::InPlace(data) => data.chunks_mut(chunk).map(Span::InPlace).collect(),
            Span::Into {
                source,
                destination,
            } => source
                .chunks(chunk)
                .zip(destination.chunks_mut(chunk))
                .map(|(source, destination)| Span::Into {
                    source,
                    destination,
                })
                .collect(),
        }
    }
}

/// Dense update of `span`, whose first element has global index `offset`.
fn dense_update_span<T: Element>(span: &mut Span<'_, T>, offset: u64, terms: &[(u64, f32)]) {
    let mut local = 0usize;
    while local < span.len() {
        let global = offset + local as u64;
        let first_lane = (global % 4) as usize;
        let count = (4 - first_lane).min(span.len() - local);
        let delta = block_delta(terms, global / 4);
        for (i, &lane_delta) in delta[first_lane..first_lane + count].iter().enumerate() {
            span.add(local + i, lane_delta);
        }
        local += count;
    }
}

/// Dense in-place update of `data`, whose first element has global index `offset`.
pub(crate) fn dense_update<T: Element>(data: &mut [T], offset: u64, terms: &[(u64, f32)]) {
    dense_update_span(&mut Span::InPlace(data), offset, terms);
}

/// Dense update split into one piece per available core.
fn dense_update_parallel<T: Element>(span: Span<'_, T>, offset: u64, terms: &[(u64, f32)]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || span.len() < PARALLEL_THRESHOLD {
        let mut span = span;
        dense_update_span(&mut span, offset, terms);
        return;
    }
    let chunk = span.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (index, mut piece) in span.pieces(chunk).into_iter().enumerate() {
            let piece_offset = offset + (index * chunk) as u64;
            scope.spawn(move || dense_update_span(&mut piece, piece_offset, terms));
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

/// Masked update: only element `i` of `span` for i in `indices` (validated in range and
/// distinct).
fn masked_update<T: Element>(
    span: &mut Span<'_, T>,
    offset: u64,
    indices: &[i64],
    terms: &[(u64, f32)],
) {
    for &index in indices {
        span.add(index as usize, masked_delta(offset, index, terms));
    }
}

fn update_typed<T: Element>(entry: &ParamEntry, terms: &[(u64, f32)]) {
    let numel = entry.numel as usize;
    if numel == 0 {
        return;
    }
    // SAFETY: the tensors were validated (and re-validated by the caller) to be contiguous CPU
    // tensors of `numel` elements of dtype T whose storage outlives this call, and the ParamSet
    // holds the only handle we write through during the call. A source and its destination do
    // not overlap: `ParamSet::writing_to` refused a destination sharing memory with any source
    // or other destination, and the caller re-checks that the source is not the destination.
    let mut span = unsafe {
        let write = std::slice::from_raw_parts_mut(entry.tensor.data_ptr() as *mut T, numel);
        match &entry.source {
            None => Span::InPlace(write),
            Some(source) => Span::Into {
                source: std::slice::from_raw_parts(source.data_ptr() as *const T, numel),
                destination: write,
            },
        }
    };
    match &entry.selection {
        Selection::Dense => dense_update_parallel(span, entry.offset, terms),
        Selection::Masked { indices, .. } => masked_update(&mut span, entry.offset, indices, terms),
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
