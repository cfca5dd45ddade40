//! The ordered set of tensors that one seed perturbs, with optional coordinate masks.

use super::error::PerturbError;
use tch::{Device, Kind, Tensor};

/// One tensor of a [`ParamSet`]: where it sits in the global element order and which of its
/// coordinates are touched.
#[derive(Debug)]
pub struct ParamEntry {
    /// The caller's name for the tensor (the sort key).
    pub name: String,
    /// A shallow clone sharing storage with the caller's tensor.
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
    /// bandwidth floor of the pass is this over the device's memory bandwidth).
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
