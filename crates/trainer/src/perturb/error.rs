//! Errors of the perturbation module; each variant carries the offending value.

use thiserror::Error;

/// Why a parameter set could not be built or perturbed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PerturbError {
    /// Two tensors were given the same name.
    #[error("parameter {name:?} appears twice in the parameter set")]
    DuplicateName { name: String },
    /// Strided tensors are rejected: z is indexed by the flat memory order.
    #[error("parameter {name:?} is not contiguous (sizes {sizes:?}, strides {strides:?})")]
    NotContiguous {
        name: String,
        sizes: Vec<i64>,
        strides: Vec<i64>,
    },
    /// Only f32, f16, bf16 and f64 tensors can be perturbed.
    #[error("parameter {name:?} has dtype {kind:?}; expected Float, Half, BFloat16 or Double")]
    UnsupportedKind { name: String, kind: tch::Kind },
    /// Only CPU and CUDA tensors are supported.
    #[error("parameter {name:?} lives on {device:?}; expected the CPU or a CUDA device")]
    UnsupportedDevice { name: String, device: tch::Device },
    /// A mask names a tensor that is not in the set.
    #[error("mask given for {name:?}, which is not a parameter of this set")]
    MaskUnknownName { name: String },
    /// A tensor received two masks.
    #[error("two masks given for parameter {name:?}")]
    DuplicateMask { name: String },
    /// Mask indices must be a 1-D int64 tensor.
    #[error(
        "mask for {name:?} must be a 1-D int64 tensor, got dtype {kind:?} and sizes {sizes:?}"
    )]
    MaskShape {
        name: String,
        kind: tch::Kind,
        sizes: Vec<i64>,
    },
    /// A mask index outside `0..numel`.
    #[error("mask for {name:?} holds index {index}, outside 0..{numel}")]
    MaskIndexOutOfRange {
        name: String,
        index: i64,
        numel: u64,
    },
    /// A mask index listed twice (it would be perturbed twice).
    #[error("mask for {name:?} lists index {index} more than once")]
    MaskDuplicateIndex { name: String, index: i64 },
    /// A scale that is NaN, infinite, or beyond the f32 range the update is computed in.
    #[error("term {term} has scale {scale}, which is not a finite f32 value")]
    InvalidScale { term: usize, scale: f64 },
    /// A proximal pull weight that is NaN or infinite.
    #[error("proximal pull weight {weight} is not finite")]
    InvalidPullWeight { weight: f64 },
    /// A proximal anchor that does not fit its tensor.
    #[error("proximal anchor for {name:?}: {reason}")]
    AnchorMismatch { name: String, reason: String },
    /// A failure reported by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A failure of the CUDA driver or NVRTC path.
    #[error("CUDA perturbation kernel: {0}")]
    Cuda(String),
}
