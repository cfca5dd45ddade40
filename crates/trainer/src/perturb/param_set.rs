//! The ordered set of tensors that one seed perturbs, with optional coordinate masks, and its
//! out-of-place form ([`ParamSet::writing_to`]).

use super::error::PerturbError;
use tch::{Device, Kind, Tensor};

/// One tensor of a [`ParamSet`]: where it sits in the global element order and which of its
/// coordinates are touched.
#[derive(Debug)]
pub struct ParamEntry {
    /// The caller's name for the tensor (the sort key).
    pub name: String,
    /// A shallow clone sharing storage with the caller's tensor: the tensor written (for a set
    /// built by [`ParamSet::writing_to`], the destination).
    pub tensor: Tensor,
    /// Global element index of the tensor's first element.
    pub offset: u64,
    /// Number of elements.
    pub numel: u64,
    /// Dtype (one of f32, f16, bf16, f64).
    pub kind: Kind,
    /// Device of the tensor.
    pub device: Device,
    /// Coordinate selection: every element, listed elements, or none.
    pub selection: Selection,
    /// For a set built by [`ParamSet::writing_to`], the tensor read (same dtype, shape and
    /// device as `tensor`, never written); None for an in-place set.
    pub source: Option<Tensor>,
}

/// Which coordinates of a tensor are perturbed.
#[derive(Debug)]
pub enum Selection {
    /// Every element.
    Dense,
    /// Only these flat indices (validated: in range, no repeats). `indices_on_device` holds the
    /// same indices as an int64 tensor on the parameter's device, for the GPU paths.
    Masked {
        indices: Vec<i64>,
        indices_on_device: Tensor,
    },
    /// Left untouched (absent from the mask list of [`ParamSet::with_masks`]).
    Untouched,
}

impl Selection {
    /// The same selection; the device indices share storage.
    fn shallow_clone(&self) -> Selection {
        match self {
            Selection::Dense => Selection::Dense,
            Selection::Masked {
                indices,
                indices_on_device,
            } => Selection::Masked {
                indices: indices.clone(),
                indices_on_device: indices_on_device.shallow_clone(),
            },
            Selection::Untouched => Selection::Untouched,
        }
    }
}

/// Tensors sorted by name; element `i` of tensor `t` has global index `offset(t) + i`, and
/// z(seed, global index) is the same value wherever it is generated (CPU, GPU, masked or dense).
#[derive(Debug)]
pub struct ParamSet {
    pub(crate) entries: Vec<ParamEntry>,
    pub(crate) total_numel: u64,
}

fn supported_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
    )
}

impl ParamSet {
    /// Build a set from named tensors. They are sorted by name; the global element order is the
    /// concatenation of their flat (contiguous) storage in that order.
    ///
    /// # Errors
    /// Duplicate names, non-contiguous tensors, dtypes other than f32/f16/bf16/f64, devices
    /// other than CPU/CUDA.
    pub fn new(named: Vec<(String, Tensor)>) -> Result<ParamSet, PerturbError> {
        let mut named = named;
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for pair in named.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(PerturbError::DuplicateName {
                    name: pair[0].0.clone(),
                });
            }
        }
        let mut entries = Vec::with_capacity(named.len());
        let mut offset = 0u64;
        for (name, tensor) in named {
            let kind = tensor.kind();
            if !supported_kind(kind) {
                return Err(PerturbError::UnsupportedKind { name, kind });
            }
            let device = tensor.device();
            if !matches!(device, Device::Cpu | Device::Cuda(_)) {
                return Err(PerturbError::UnsupportedDevice { name, device });
            }
            if !tensor.is_contiguous() {
                return Err(PerturbError::NotContiguous {
                    sizes: tensor.size(),
                    strides: tensor.stride(),
                    name,
                });
            }
            let numel = tensor.numel() as u64;
            entries.push(ParamEntry {
                name,
                tensor: tensor.shallow_clone(),
                offset,
                numel,
                kind,
                device,
                selection: Selection::Dense,
                source: None,
            });
            offset += numel;
        }
        Ok(ParamSet {
            entries,
            total_numel: offset,
        })
    }

    /// Restrict the set to masked coordinates (DP-ZOPO). Each mask is a 1-D int64 tensor of flat
    /// indices into the named tensor (any device). Listed tensors are perturbed only at those
    /// indices, with the same z values as the dense set; tensors without a mask are untouched.
    ///
    /// # Errors
    /// Unknown names, two masks for one tensor, wrong mask dtype/shape, an index out of range or
    /// listed twice.
    pub fn with_masks(self, masks: Vec<(String, Tensor)>) -> Result<ParamSet, PerturbError> {
        let mut set = self;
        let mut given: Vec<Option<Vec<i64>>> = vec![None; set.entries.len()];
        for (name, mask) in masks {
            let Some(position) = set.position(&name) else {
                return Err(PerturbError::MaskUnknownName { name });
            };
            if given[position].is_some() {
                return Err(PerturbError::DuplicateMask { name });
            }
            if mask.kind() != Kind::Int64 || mask.dim() != 1 {
                return Err(PerturbError::MaskShape {
                    kind: mask.kind(),
                    sizes: mask.size(),
                    name,
                });
            }
            let indices = Vec::<i64>::try_from(&mask.to_device(Device::Cpu).contiguous())?;
            let numel = set.entries[position].numel;
            let mut seen = vec![false; numel as usize];
            for &index in &indices {
                if index < 0 || index as u64 >= numel {
                    return Err(PerturbError::MaskIndexOutOfRange { name, index, numel });
                }
                if std::mem::replace(&mut seen[index as usize], true) {
                    return Err(PerturbError::MaskDuplicateIndex { name, index });
                }
            }
            given[position] = Some(indices);
        }
        for (entry, indices) in set.entries.iter_mut().zip(given) {
            entry.selection = match indices {
                None => Selection::Untouched,
                Some(indices) => {
                    let indices_on_device = Tensor::from_slice(&indices).to_device(entry.device);
                    Selection::Masked {
                        indices,
                        indices_on_device,
                    }
                }
            };
        }
        Ok(set)
    }

    /// A set that writes into `destinations` (one per entry of `self` that a pass writes, matched
    /// by name; same dtype, shape, device; contiguous; an untouched or empty entry may have none
    /// and is then left out of the set): `axpy_z` on it computes, at each touched coordinate of
    /// `self`'s selection, destination = source + sum_k scale_k z(seed_k, global index), where
    /// source is `self`'s tensor, read and never written. Untouched coordinates of a destination
    /// are not written (the caller keeps them equal to the source). Same offsets and
    /// selections (masks) as `self`.
    ///
    /// The result is bit-identical to copying each source into its destination and perturbing
    /// the destinations in place, on every path, and a pass moves the same bytes.
    ///
    /// # Errors
    /// A touched parameter without a destination, a destination for an unknown name or given twice, a
    /// dtype, shape or device that differs from the source's, a non-contiguous destination, a
    /// destination that shares memory with its source or with another tensor of the set, or a
    /// source changed since `self` was built.
    pub fn writing_to(
        &self,
        destinations: Vec<(String, Tensor)>,
    ) -> Result<ParamSet, PerturbError> {
        let mut given: Vec<Option<Tensor>> = self.entries.iter().map(|_| None).collect();
        for (name, destination) in destinations {
            let Some(position) = self.position(&name) else {
                return Err(PerturbError::DestinationUnknownName { name });
            };
            if given[position].is_some() {
                return Err(PerturbError::DuplicateDestination { name });
            }
            check_destination(&self.entries[position], &destination)?;
            given[position] = Some(destination);
        }
        let mut entries = Vec::with_capacity(self.entries.len());
        for (entry, destination) in self.entries.iter().zip(given) {
            let Some(destination) = destination else {
                if matches!(entry.selection, Selection::Untouched) || entry.numel == 0 {
                    continue;
                }
                return Err(PerturbError::DestinationMissing {
                    name: entry.name.clone(),
                });
            };
            entries.push(ParamEntry {
                name: entry.name.clone(),
                tensor: destination,
                offset: entry.offset,
                numel: entry.numel,
                kind: entry.kind,
                device: entry.device,
                selection: entry.selection.shallow_clone(),
                source: Some(entry.tensor.shallow_clone()),
            });
        }
        check_destinations_apart(&entries)?;
        Ok(ParamSet {
            entries,
            total_numel: self.total_numel,
        })
    }

    /// Index of the entry named `name` (entries are sorted by name).
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
    }

    /// The entries in global order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Total number of elements over all tensors (touched or not): the dimension of z.
    pub fn total_numel(&self) -> u64 {
        self.total_numel
    }

    /// Number of coordinates an [`axpy_z`](super::axpy_z) call writes.
    pub fn touched_numel(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.selection {
                Selection::Dense => e.numel,
                Selection::Masked { indices, .. } => indices.len() as u64,
                Selection::Untouched => 0,
            })
            .sum()
    }

    /// Bytes read plus written by one perturbation pass over the touched coordinates (the
    /// bandwidth floor of the pass is this over the device's memory bandwidth). An out-of-place
    /// pass reads the source and writes the destination: the same count.
    pub fn pass_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| {
                let element_bytes = e.kind.elt_size_in_bytes() as u64;
                match &e.selection {
                    Selection::Dense => 2 * element_bytes * e.numel,
                    // Index read (8 bytes) plus a read and a write of the element.
                    Selection::Masked { indices, .. } => {
                        (8 + 2 * element_bytes) * indices.len() as u64
                    }
                    Selection::Untouched => 0,
                }
            })
            .sum()
    }
}

/// Why `tensor` is not `numel` contiguous elements of `kind` on `device`; `None` when it is.
pub(crate) fn layout_mismatch(
    tensor: &Tensor,
    kind: Kind,
    device: Device,
    numel: u64,
) -> Option<String> {
    if tensor.kind() != kind {
        Some(format!("dtype {:?}, expected {kind:?}", tensor.kind()))
    } else if tensor.device() != device {
        Some(format!("device {:?}, expected {device:?}", tensor.device()))
    } else if !tensor.is_contiguous() {
        Some(format!(
            "not contiguous (sizes {:?}, strides {:?})",
            tensor.size(),
            tensor.stride()
        ))
    } else if tensor.numel() as u64 != numel {
        Some(format!(
            "sizes {:?}; expected {numel} elements",
            tensor.size()
        ))
    } else {
        None
    }
}

/// A destination must match its (unchanged) source in dtype, shape and device, and be
/// contiguous.
fn check_destination(entry: &ParamEntry, destination: &Tensor) -> Result<(), PerturbError> {
    super::check_unchanged(entry)?;
    let mismatch = |reason: String| PerturbError::DestinationMismatch {
        name: entry.name.clone(),
        reason,
    };
    if let Some(reason) = layout_mismatch(destination, entry.kind, entry.device, entry.numel) {
        return Err(mismatch(reason));
    }
    if destination.size() != entry.tensor.size() {
        return Err(mismatch(format!(
            "sizes {:?}, the source's {:?}",
            destination.size(),
            entry.tensor.size()
        )));
    }
    Ok(())
}

/// Refuse a destination whose memory overlaps its source, another source or another
/// destination of the set: the passes read sources while they write destinations.
fn check_destinations_apart(entries: &[ParamEntry]) -> Result<(), PerturbError> {
    /// A tensor's byte range on one device.
    struct Span {
        device: i64,
        start: u64,
        end: u64,
        entry: usize,
        destination: bool,
    }
    let mut spans = Vec::with_capacity(2 * entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let bytes = entry.numel * entry.kind.elt_size_in_bytes() as u64;
        if bytes == 0 {
            continue;
        }
        let device = match entry.device {
            Device::Cuda(ordinal) => ordinal as i64,
            _ => -1,
        };
        let sources = entry.source.iter().map(|source| (source, false));
        for (tensor, destination) in sources.chain([(&entry.tensor, true)]) {
            let start = tensor.data_ptr() as u64;
            spans.push(Span {
                device,
                start,
                end: start.saturating_add(bytes),
                entry: index,
                destination,
            });
        }
    }
    spans.sort_by_key(|span| (span.device, span.start));
    // Sweep in address order, keeping the span that reaches furthest among all earlier ones and
    // among earlier destinations: an overlap with a destination shows against one of them.
    let mut furthest: Option<usize> = None;
    let mut furthest_destination: Option<usize> = None;
    for (i, span) in spans.iter().enumerate() {
        if i > 0 && spans[i - 1].device != span.device {
            furthest = None;
            furthest_destination = None;
        }
        let earlier = if span.destination {
            furthest
        } else {
            furthest_destination
        };
        if let Some(j) = earlier.filter(|&j| spans[j].end > span.start) {
            let (destination, other) = if span.destination {
                (span, &spans[j])
            } else {
                (&spans[j], span)
            };
            let other_name = &entries[other.entry].name;
            return Err(PerturbError::DestinationAliases {
                name: entries[destination.entry].name.clone(),
                other: match (other.entry == destination.entry, other.destination) {
                    (true, _) => "its source".to_string(),
                    (false, false) => format!("the source of {other_name:?}"),
                    (false, true) => format!("the destination of {other_name:?}"),
                },
            });
        }
        if furthest.is_none_or(|j| span.end > spans[j].end) {
            furthest = Some(i);
        }
        if span.destination && furthest_destination.is_none_or(|j| span.end > spans[j].end) {
            furthest_destination = Some(i);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweep refuses a set exactly when some destination shares memory with a source or
    /// another destination (sources may share memory with each other).
    #[test]
    fn overlap_sweep_agrees_with_the_pairwise_check() {
        let buffer = Tensor::zeros([64], (Kind::Float, Device::Cpu));
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let overlap = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
        let mut refused = 0;
        for _ in 0..2000 {
            let count = 1 + next(4) as usize;
            let mut sources = Vec::new();
            let mut destinations = Vec::new();
            let mut spans = Vec::new();
            for i in 0..count {
                let len = 1 + next(8);
                let (source, destination) = (next(65 - len), next(65 - len));
                let view = |start: u64| buffer.narrow(0, start as i64, len as i64);
                sources.push((format!("p{i}"), view(source)));
                destinations.push((format!("p{i}"), view(destination)));
                spans.push(((source, source + len), (destination, destination + len)));
            }
            let expected = (0..count).any(|i| {
                (0..count).any(|j| {
                    overlap(spans[i].1, spans[j].0) || (i != j && overlap(spans[i].1, spans[j].1))
                })
            });
            let result = ParamSet::new(sources).unwrap().writing_to(destinations);
            assert_eq!(result.is_err(), expected, "spans {spans:?}");
            if let Err(error) = result {
                assert!(
                    matches!(error, PerturbError::DestinationAliases { .. }),
                    "{error}"
                );
                refused += 1;
            }
        }
        assert!(refused > 100 && refused < 1900, "{refused} of 2000 refused");
    }
}
