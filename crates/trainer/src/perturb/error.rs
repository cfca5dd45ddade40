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
    /// [`ParamSet::writing_to`](super::ParamSet::writing_to) got no destination for a
    /// parameter.
    #[error("no destination given for parameter {name:?}")]
    DestinationMissing { name: String },
    /// A destination names no parameter of the set.
    #[error("destination given for {name:?}, which is not a parameter of this set")]
    DestinationUnknownName { name: String },
    /// A parameter received two destinations.
    #[error("two destinations given for parameter {name:?}")]
    DuplicateDestination { name: String },
    /// A destination whose dtype, shape or device differs from its source's, or that is not
    /// contiguous.
    #[error("destination for {name:?}: {reason}")]
    DestinationMismatch { name: String, reason: String },
    /// A destination that shares memory with its source or another tensor of the set.
    #[error("destination for {name:?} shares memory with {other}")]
    DestinationAliases { name: String, other: String },
    /// The source of an out-of-place entry no longer has the dtype, device, layout or size it
    /// had when the set was built.
    #[error("source of {name:?} changed since the set was built: {reason}")]
    SourceChanged { name: String, reason: String },
    /// A failure reported by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A failure of the CUDA driver or NVRTC path.
    #[error("CUDA perturbation kernel: {0}")]
    Cuda(#[from] CudaError),
}

/// Why the NVRTC kernel path could not load or launch. Cloneable: a failed load is cached per
/// device and reported again on every later use.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum CudaError {
    /// A shared library could not be `dlopen`ed.
    #[error("{library} cannot be loaded{hint}")]
    LibraryUnavailable {
        library: &'static str,
        /// What to do about it (empty when there is nothing to add).
        hint: &'static str,
    },
    /// A driver API call returned an error code.
    #[error("{call} failed with {code:?}")]
    Driver {
        call: String,
        code: cudarc::driver::sys::CUresult,
    },
    /// The kernels convert to bf16 with an instruction of compute capability 8.0.
    #[error("compute capability {major}.{minor} lacks cvt.rn.bf16.f32 (needs 8.0)")]
    ComputeCapability { major: i32, minor: i32 },
    /// NVRTC rejected the kernel source.
    #[error("NVRTC ({math:?}): {log}")]
    Compile {
        math: super::NormalMath,
        /// NVRTC's message.
        log: String,
    },
    /// A string handed to the driver held a NUL byte.
    #[error("{what} holds a NUL byte")]
    NulByte { what: String },
    /// cudarc panicked (e.g. a symbol missing from the loaded library).
    #[error("cudarc panicked while loading CUDA or NVRTC")]
    LoaderPanicked,
    /// A thread panicked while holding one of the module's caches.
    #[error("{cache} cache poisoned")]
    CachePoisoned { cache: &'static str },
    /// A tuning variable of the environment holds an unsupported value.
    #[error("{name}={value:?}: expected one of {allowed:?}")]
    InvalidSetting {
        name: &'static str,
        value: String,
        allowed: &'static [u64],
    },
    /// No kernel for this element type.
    #[error("unsupported dtype {kind:?}")]
    UnsupportedKind { kind: tch::Kind },
    /// More terms than one launch takes.
    #[error("{terms} terms exceed the kernel's {max}")]
    TooManyTerms { terms: usize, max: usize },
    /// A launch larger than the grid limit.
    #[error("{grid_blocks} blocks exceed the grid limit")]
    GridTooLarge { grid_blocks: u64 },
    /// More tensors than the kernel's u32 segment index can number.
    #[error("{segments} tensors exceed the kernel's u32 segment index")]
    TooManySegments { segments: usize },
    /// Copying a launch table to the device failed.
    #[error("{what} upload: {message}")]
    Upload {
        what: &'static str,
        /// libtorch's message.
        message: String,
    },
}
