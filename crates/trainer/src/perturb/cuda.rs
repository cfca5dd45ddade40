//! The CUDA path: `kernel.cu` compiled once per device by NVRTC and launched on the tensors'
//! `data_ptr()`s, one launch for all dense tensors of a device and element type, and one for all
//! masked ones. An out-of-place entry ([`ParamSet::writing_to`](super::ParamSet::writing_to))
//! puts its source's pointer in record word 7, 0 for in-place ones: the same launches.
//!
//! The CUDA driver and NVRTC are loaded at run time (cudarc, `dynamic-loading`), so nothing CUDA
//! is needed to build. We work in the device's primary context (the one libtorch uses) and
//! launch on the legacy default stream (stream 0), which is libtorch's default current stream:
//! the launch is ordered after earlier ATen work and before later ATen work on that stream.
//! Callers that switch libtorch to another stream must synchronise themselves.

use super::error::{CudaError, PerturbError};
use super::normal::{
    ATANH_COEFFICIENTS, COS_COEFFICIENTS, LN2_HIGH, LN2_LOW, SIN_COEFFICIENTS, SQRT_2,
    TWO_PI_OVER_2_24,
};
use super::param_set::{ParamEntry, Selection};
use super::philox::{PHILOX_MULTIPLIER_0, PHILOX_MULTIPLIER_1, PHILOX_WEYL_0, PHILOX_WEYL_1};
use super::{normal_math, NormalMath};
use crate::device::library_loadable;
use cudarc::driver::sys;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Mutex, OnceLock};
use tch::{Device, Kind, Tensor};

/// Terms one launch takes (the kernel's `MAX_TERMS`); longer term lists use the ATen fallback.
pub const MAX_KERNEL_TERMS: usize = 8;
/// Threads per block (the kernel's `THREADS`).
const THREADS: u64 = 256;
/// The kernels' shape: the dense kernels' Philox blocks per thread (the kernel's `CHUNKS`) and
/// the resident grid blocks per SM their register budget must allow (`MIN_BLOCKS`,
/// `__launch_bounds__`), and the masked kernels' coordinates per thread (`MASKED_PER_THREAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DenseShape {
    chunks: u64,
    min_blocks: u32,
    masked_per_thread: u64,
}

/// The default dense shape: the fastest of 8:1, 8:2, 8:3, 8:4, 4:4 and 4:3 on the H200
/// (results/perf/README.md, h200-2026-11-30c/run-d/tune-*): at most 64 registers, four resident
/// blocks (half occupancy) without spills (ptxas 13, sm_90).
const DEFAULT_DENSE_SHAPE: DenseShape = DenseShape {
    chunks: 8,
    min_blocks: 4,
    masked_per_thread: 4,
};

/// The kernel shape of this process: the default, or `DPZO_PERTURB_CHUNKS` (1, 2, 4, 8 or 16),
/// `DPZO_PERTURB_MIN_BLOCKS` (1 to 8) and `DPZO_PERTURB_MASKED` (1, 2, 4, 8 or 16) for tuning
/// runs. Read once.
fn dense_shape() -> Result<DenseShape, CudaError> {
    static SHAPE: OnceLock<Result<DenseShape, CudaError>> = OnceLock::new();
    SHAPE
        .get_or_init(|| {
            let read = |name: &'static str,
                        default: u64,
                        allowed: &'static [u64]|
             -> Result<u64, CudaError> {
                match std::env::var(name) {
                    Err(_) => Ok(default),
                    Ok(text) => match text.trim().parse::<u64>() {
                        Ok(v) if allowed.contains(&v) => Ok(v),
                        _ => Err(CudaError::InvalidSetting {
                            name,
                            value: text,
                            allowed,
                        }),
                    },
                }
            };
            Ok(DenseShape {
                chunks: read(
                    "DPZO_PERTURB_CHUNKS",
                    DEFAULT_DENSE_SHAPE.chunks,
                    &[1, 2, 4, 8, 16],
                )?,
                min_blocks: read(
                    "DPZO_PERTURB_MIN_BLOCKS",
                    u64::from(DEFAULT_DENSE_SHAPE.min_blocks),
                    &[1, 2, 3, 4, 5, 6, 7, 8],
                )? as u32,
                masked_per_thread: read(
                    "DPZO_PERTURB_MASKED",
                    DEFAULT_DENSE_SHAPE.masked_per_thread,
                    &[1, 2, 4, 8, 16],
                )?,
            })
        })
        .clone()
}
/// Element types with a kernel each, indexed by [`dtype_code`]: the kernels' name suffixes.
const DTYPE_SUFFIXES: [&str; 4] = ["f32", "f16", "bf16", "f64"];
/// u64 words per segment record (see `kernel.cu`).
const RECORD_WORDS: usize = 8;

/// The kernel's `Terms` argument, passed by value: scales and each seed's Philox round keys
/// (`PhiloxKeys`: ten words for key 0, then ten for key 1).
#[repr(C)]
#[derive(Clone, Copy)]
struct KernelTerms {
    scales: [f32; MAX_KERNEL_TERMS],
    count: u32,
    _padding: u32,
    round_keys: [[u32; 20]; MAX_KERNEL_TERMS],
}

/// The round keys of Philox4x32-10 for `seed`: key + r * Weyl increment, r = 0..9 (philox.rs).
fn philox_round_keys(seed: u64) -> [u32; 20] {
    let mut keys = [0u32; 20];
    let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
    for round in 0..10 {
        keys[round] = k0;
        keys[10 + round] = k1;
        k0 = k0.wrapping_add(PHILOX_WEYL_0);
        k1 = k1.wrapping_add(PHILOX_WEYL_1);
    }
    keys
}

/// The dense, masked and proximal-pull kernels of one compiled module, one per element type
/// (indexed by [`dtype_code`]).
#[derive(Clone, Copy)]
struct KernelPair {
    dense: [sys::CUfunction; 4],
    masked: [sys::CUfunction; 4],
    pull: [sys::CUfunction; 4],
}

/// A device's kernels (exact and fast normal math), with the primary context they live in.
struct DeviceKernels {
    context: sys::CUcontext,
    exact: KernelPair,
    fast: KernelPair,
}

impl DeviceKernels {
    fn pair(&self, math: NormalMath) -> KernelPair {
        match math {
            NormalMath::Exact => self.exact,
            NormalMath::Fast => self.fast,
        }
    }
}

// SAFETY: CUDA driver handles may be used from any thread once the context is made current on
// that thread, which `launch` does before every use.
unsafe impl Send for DeviceKernels {}

static KERNELS: OnceLock<Mutex<HashMap<usize, Result<DeviceKernels, CudaError>>>> = OnceLock::new();

/// `#define`s of every constant shared with `normal.rs`/`philox.rs`, as exact bit patterns,
/// then `kernel.cu` (with `DPZO_FAST_NORMAL` defined for the fast variant).
fn kernel_source(math: NormalMath, shape: DenseShape) -> String {
    let float = |name: &str, value: f32| {
        format!(
            "#define {name} __uint_as_float(0x{:08X}u) /* {value:e} */\n",
            value.to_bits()
        )
    };
    let mut source = format!(
        "#define CHUNKS {}\n#define MIN_BLOCKS {}\n#define MASKED_PER_THREAD {}\n",
        shape.chunks, shape.min_blocks, shape.masked_per_thread
    );
    if math == NormalMath::Fast {
        source.push_str("#define DPZO_FAST_NORMAL 1\n");
    }
    source.push_str(&format!(
        "#define PHILOX_MULTIPLIER_0 0x{PHILOX_MULTIPLIER_0:08X}u\n\
         #define PHILOX_MULTIPLIER_1 0x{PHILOX_MULTIPLIER_1:08X}u\n\
         #define PHILOX_WEYL_0 0x{PHILOX_WEYL_0:08X}u\n\
         #define PHILOX_WEYL_1 0x{PHILOX_WEYL_1:08X}u\n"
    ));
    source.push_str(&float("LN2_HIGH", LN2_HIGH));
    source.push_str(&float("LN2_LOW", LN2_LOW));
    source.push_str(&float("SQRT_2", SQRT_2));
    source.push_str(&float("TWO_PI_OVER_2_24", TWO_PI_OVER_2_24));
    for (name, value) in ["ATANH_3", "ATANH_5", "ATANH_7", "ATANH_9", "ATANH_11"]
        .iter()
        .zip(ATANH_COEFFICIENTS)
    {
        source.push_str(&float(name, value));
    }
    for (name, value) in ["SIN_3", "SIN_5", "SIN_7", "SIN_9"]
        .iter()
        .zip(SIN_COEFFICIENTS)
    {
        source.push_str(&float(name, value));
    }
    for (name, value) in ["COS_2", "COS_4", "COS_6", "COS_8", "COS_10"]
        .iter()
        .zip(COS_COEFFICIENTS)
    {
        source.push_str(&float(name, value));
    }
    source.push_str(include_str!("kernel.cu"));
    source
}

fn check(call: &str, code: sys::CUresult) -> Result<(), CudaError> {
    if code == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Driver {
            call: call.to_string(),
            code,
        })
    }
}

/// Compile and load the kernels for CUDA device `ordinal`.
fn load_kernels(ordinal: usize) -> Result<DeviceKernels, CudaError> {
    if !library_loadable(&["libcuda.so.1", "libcuda.so"]) {
        return Err(CudaError::LibraryUnavailable {
            library: "libcuda.so",
            hint: "",
        });
    }
    if !library_loadable(&["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]) {
        return Err(CudaError::LibraryUnavailable {
            library: "libnvrtc.so",
            hint: " (add the CUDA toolkit's lib64 or the nvidia/cu13/lib folder of the PyTorch \
                   wheel to LD_LIBRARY_PATH)",
        });
    }
    let loaded = std::panic::catch_unwind(|| -> Result<DeviceKernels, CudaError> {
        // SAFETY: plain driver API calls with out-pointers to locals; the primary context is
        // retained (never released: libtorch keeps using it for the life of the process).
        unsafe {
            check("cuInit", sys::cuInit(0))?;
            let mut device: sys::CUdevice = 0;
            check("cuDeviceGet", sys::cuDeviceGet(&mut device, ordinal as i32))?;
            let mut major = 0i32;
            let mut minor = 0i32;
            check(
                "cuDeviceGetAttribute",
                sys::cuDeviceGetAttribute(
                    &mut major,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    device,
                ),
            )?;
            check(
                "cuDeviceGetAttribute",
                sys::cuDeviceGetAttribute(
                    &mut minor,
                    sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    device,
                ),
            )?;
            if major < 8 {
                return Err(CudaError::ComputeCapability { major, minor });
            }
            let mut context: sys::CUcontext = std::ptr::null_mut();
            check(
                "cuDevicePrimaryCtxRetain",
                sys::cuDevicePrimaryCtxRetain(&mut context, device),
            )?;
            check("cuCtxSetCurrent", sys::cuCtxSetCurrent(context))?;
            let exact = compile_pair(NormalMath::Exact, major, minor)?;
            let fast = compile_pair(NormalMath::Fast, major, minor)?;
            Ok(DeviceKernels {
                context,
                exact,
                fast,
            })
        }
    });
    loaded.unwrap_or(Err(CudaError::LoaderPanicked))
}

/// Compile one variant with NVRTC and load it into the current context. The exact variant
/// forbids FMA contraction and uses IEEE division and square root, so that it reproduces the
/// CPU's f32 arithmetic bit for bit; the fast one lets NVRTC contract and approximate.
///
/// # Safety
/// A CUDA context must be current on this thread.
unsafe fn compile_pair(math: NormalMath, major: i32, minor: i32) -> Result<KernelPair, CudaError> {
    let exact = math == NormalMath::Exact;
    let options = cudarc::nvrtc::CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            format!("--fmad={}", !exact),
            "--ftz=false".into(),
            format!("--prec-div={exact}"),
            format!("--prec-sqrt={exact}"),
        ],
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(kernel_source(math, dense_shape()?), options)
        .map_err(|e| CudaError::Compile {
            math,
            log: format!("{e:?}"),
        })?;
    let ptx = CString::new(ptx.to_src()).map_err(|_| CudaError::NulByte {
        what: "PTX text".into(),
    })?;
    let mut module: sys::CUmodule = std::ptr::null_mut();
    // SAFETY (caller): a context is current; out-pointers are to locals.
    unsafe {
        check(
            "cuModuleLoadData",
            sys::cuModuleLoadData(&mut module, ptx.as_ptr() as *const c_void),
        )?;
        let function = |name: String| -> Result<sys::CUfunction, CudaError> {
            let c_name = CString::new(name.clone()).map_err(|_| CudaError::NulByte {
                what: format!("kernel name {name:?}"),
            })?;
            let mut function: sys::CUfunction = std::ptr::null_mut();
            check(
                &format!("cuModuleGetFunction({name})"),
                sys::cuModuleGetFunction(&mut function, module, c_name.as_ptr()),
            )?;
            Ok(function)
        };
        let mut pair = KernelPair {
            dense: [std::ptr::null_mut(); 4],
            masked: [std::ptr::null_mut(); 4],
            pull: [std::ptr::null_mut(); 4],
        };
        for (code, suffix) in DTYPE_SUFFIXES.iter().enumerate() {
            pair.dense[code] = function(format!("perturb_dense_{suffix}"))?;
            pair.masked[code] = function(format!("perturb_masked_{suffix}"))?;
            pair.pull[code] = function(format!("pull_{suffix}"))?;
        }
        Ok(pair)
    }
}

/// Run `f` with the kernels of device `ordinal`, loading them on first use.
fn with_kernels<T>(
    ordinal: usize,
    f: impl FnOnce(&DeviceKernels) -> Result<T, CudaError>,
) -> Result<T, CudaError> {
    let cache = KERNELS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache
        .lock()
        .map_err(|_| CudaError::CachePoisoned { cache: "kernel" })?;
    let kernels = cache
        .entry(ordinal)
        .or_insert_with(|| load_kernels(ordinal));
    match kernels {
        Ok(kernels) => f(kernels),
        Err(error) => Err(error.clone()),
    }
}

/// Whether the NVRTC kernel can be used for CUDA device 0 in this process (compiles it on the
/// first call; false on hosts without a GPU, libcuda or NVRTC).
pub fn cuda_kernel_available() -> bool {
    with_kernels(0, |_| Ok(())).is_ok()
}

fn dtype_code(kind: Kind) -> Result<usize, CudaError> {
    match kind {
        Kind::Float => Ok(0),
        Kind::Half => Ok(1),
        Kind::BFloat16 => Ok(2),
        Kind::Double => Ok(3),
        kind => Err(CudaError::UnsupportedKind { kind }),
    }
}

/// A launch's tables on the device: the segment records and, per grid block, the index of its
/// segment (u32).
struct DeviceTables {
    records: Tensor,
    block_segments: Tensor,
}

/// Device tables by (device ordinal, records). A parameter set's records (data pointers, sizes,
/// offsets) are the same at every pass, so each is uploaded once, and a pass neither copies
/// from the host nor waits for the device. The tables are a pure function of the key, so a
/// reused address cannot make an entry stale. The cache is emptied before it would exceed
/// `TABLE_CACHE_ENTRIES` entries or `TABLE_CACHE_BYTES` of device memory (a dense OPT-66B table is
/// 8M grid blocks x 4 bytes = 32 MiB; a training run uses a handful of entries).
static TABLES: OnceLock<Mutex<TableCache>> = OnceLock::new();
type TableCache = HashMap<(usize, Vec<u64>), DeviceTables>;
const TABLE_CACHE_ENTRIES: usize = 64;
const TABLE_CACHE_BYTES: u64 = 256 << 20;

/// The per-grid-block segment indices of `records` (whose word 3 is a segment's first grid
/// block, in increasing order) for a launch of `grid_blocks` blocks.
fn block_segments(records: &[u64], grid_blocks: u64) -> Vec<u32> {
    let starts: Vec<u64> = records
        .chunks_exact(RECORD_WORDS)
        .map(|record| record[3])
        .collect();
    let mut segments = Vec::with_capacity(grid_blocks as usize);
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(grid_blocks);
        segments.extend(std::iter::repeat_n(i as u32, (end - start) as usize));
    }
    segments
}

/// The last argument of a kernel: the perturbation's terms or the pull's weight.
enum LastArgument<'a> {
    Terms(&'a mut KernelTerms),
    Weight(&'a mut f64),
}

/// Launch `function` on stream 0 over the records (built with grid block starts), `grid_blocks`
/// blocks in all; its arguments are the two tables and `last`.
fn launch(
    kernels: &DeviceKernels,
    function: sys::CUfunction,
    ordinal: usize,
    records: &[u64],
    grid_blocks: u64,
    last: LastArgument<'_>,
) -> Result<(), CudaError> {
    if grid_blocks == 0 {
        return Ok(());
    }
    if grid_blocks > i32::MAX as u64 {
        return Err(CudaError::GridTooLarge { grid_blocks });
    }
    if records.len() / RECORD_WORDS > u32::MAX as usize {
        return Err(CudaError::TooManySegments {
            segments: records.len() / RECORD_WORDS,
        });
    }
    let cache = TABLES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().map_err(|_| CudaError::CachePoisoned {
        cache: "segment table",
    })?;
    let key = (ordinal, records.to_vec());
    if !cache.contains_key(&key) {
        let cached_bytes: u64 = cache
            .values()
            .map(|t| (8 * t.records.numel() + 4 * t.block_segments.numel()) as u64)
            .sum();
        let new_bytes = 8 * records.len() as u64 + 4 * grid_blocks;
        if cache.len() >= TABLE_CACHE_ENTRIES || cached_bytes + new_bytes > TABLE_CACHE_BYTES {
            // Freeing is stream-ordered (libtorch's caching allocator reuses the memory only for
            // later work on the same stream), so launches still in flight are unaffected.
            cache.clear();
        }
        let device = Device::Cuda(ordinal);
        // Same bits as i64 / i32 (libtorch has no u64 or u32 dtype).
        let words: Vec<i64> = records.iter().map(|&w| w as i64).collect();
        let segments: Vec<i32> = block_segments(records, grid_blocks)
            .into_iter()
            .map(|s| s as i32)
            .collect();
        let upload = |values: Tensor, what: &'static str| {
            values.f_to_device(device).map_err(|e| CudaError::Upload {
                what,
                message: e.to_string(),
            })
        };
        let tables = DeviceTables {
            records: upload(Tensor::from_slice(&words), "segment table")?,
            block_segments: upload(Tensor::from_slice(&segments), "block segment table")?,
        };
        cache.insert(key.clone(), tables);
    }
    let tables = &cache[&key];
    let mut table_ptr = tables.records.data_ptr() as u64;
    let mut segments_ptr = tables.block_segments.data_ptr() as u64;
    let last_ptr = match last {
        LastArgument::Terms(terms) => terms as *mut KernelTerms as *mut c_void,
        LastArgument::Weight(weight) => weight as *mut f64 as *mut c_void,
    };
    let mut params: [*mut c_void; 3] = [
        &mut table_ptr as *mut u64 as *mut c_void,
        &mut segments_ptr as *mut u64 as *mut c_void,
        last_ptr,
    ];
    // SAFETY: the context is the device's primary context; params point at live locals whose
    // types match the kernel signature (two pointers, then Terms by value for the perturbation
    // kernels or a double for the pull); the records hold data pointers of contiguous tensors
    // of the recorded dtype and length (and sources of the same, disjoint from every
    // destination, or anchors of the recorded count), and the block segment table has one
    // entry per grid block.
    unsafe {
        check("cuCtxSetCurrent", sys::cuCtxSetCurrent(kernels.context))?;
        check(
            "cuLaunchKernel",
            sys::cuLaunchKernel(
                function,
                grid_blocks as u32,
                1,
                1,
                THREADS as u32,
                1,
                1,
                0,
                std::ptr::null_mut(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
        )?;
    }
    Ok(())
}

/// Update all CUDA entries with the kernel: per device and element type present, one dense and
/// one masked launch, in-place and out-of-place entries alike.
pub(crate) fn update_entries(
    entries: &[&ParamEntry],
    terms: &[(u64, f32)],
) -> Result<(), PerturbError> {
    if terms.len() > MAX_KERNEL_TERMS {
        return Err(CudaError::TooManyTerms {
            terms: terms.len(),
            max: MAX_KERNEL_TERMS,
        }
        .into());
    }
    let mut kernel_terms = KernelTerms {
        scales: [0.0; MAX_KERNEL_TERMS],
        count: terms.len() as u32,
        _padding: 0,
        round_keys: [[0; 20]; MAX_KERNEL_TERMS],
    };
    for (k, &(seed, scale)) in terms.iter().enumerate() {
        kernel_terms.scales[k] = scale;
        kernel_terms.round_keys[k] = philox_round_keys(seed);
    }
    let mut by_device: HashMap<usize, Vec<&ParamEntry>> = HashMap::new();
    for entry in entries {
        if let Device::Cuda(ordinal) = entry.device {
            by_device.entry(ordinal).or_default().push(entry);
        }
    }
    for (ordinal, entries) in by_device {
        // Per element type: the segment records and the grid size of its dense and masked
        // launches (each launch numbers its grid blocks from 0).
        let shape = dense_shape()?;
        let chunks = shape.chunks;
        let mut dense = [(); 4].map(|_| (Vec::new(), 0u64));
        let mut masked = [(); 4].map(|_| (Vec::new(), 0u64));
        for entry in entries {
            let code = dtype_code(entry.kind)?;
            let pointer = entry.tensor.data_ptr() as u64;
            let source = entry.source.as_ref().map_or(0, |t| t.data_ptr() as u64);
            match &entry.selection {
                Selection::Dense if entry.numel > 0 => {
                    let (records, blocks) = &mut dense[code];
                    let philox_blocks = (entry.offset + entry.numel - 1) / 4 - entry.offset / 4 + 1;
                    records.extend_from_slice(&[
                        pointer,
                        entry.numel,
                        entry.offset,
                        *blocks,
                        code as u64,
                        0,
                        0,
                        source,
                    ]);
                    *blocks += philox_blocks.div_ceil(THREADS * chunks);
                }
                Selection::Masked {
                    indices,
                    indices_on_device,
                } if !indices.is_empty() => {
                    let (records, blocks) = &mut masked[code];
                    records.extend_from_slice(&[
                        pointer,
                        entry.numel,
                        entry.offset,
                        *blocks,
                        code as u64,
                        indices_on_device.data_ptr() as u64,
                        indices.len() as u64,
                        source,
                    ]);
                    *blocks += (indices.len() as u64).div_ceil(THREADS * shape.masked_per_thread);
                }
                _ => {}
            }
        }
        let math = normal_math();
        with_kernels(ordinal, |kernels| {
            let pair = kernels.pair(math);
            for code in 0..DTYPE_SUFFIXES.len() {
                let (records, blocks) = &dense[code];
                launch(
                    kernels,
                    pair.dense[code],
                    ordinal,
                    records,
                    *blocks,
                    LastArgument::Terms(&mut kernel_terms.clone()),
                )?;
                let (records, blocks) = &masked[code];
                launch(
                    kernels,
                    pair.masked[code],
                    ordinal,
                    records,
                    *blocks,
                    LastArgument::Terms(&mut kernel_terms.clone()),
                )?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Coordinates per thread of the pull kernels (the kernel's `PULL_PER_THREAD`).
const PULL_PER_THREAD: u64 = 4;

/// The proximal pull (pull.rs) of CUDA entries, each with its checked anchor: one launch per
/// device and element type.
pub(crate) fn pull_entries(pairs: &[(&ParamEntry, &Tensor)], weight: f64) -> Result<(), CudaError> {
    let mut by_device: HashMap<usize, Vec<(&ParamEntry, &Tensor)>> = HashMap::new();
    for &(entry, anchor) in pairs {
        if let Device::Cuda(ordinal) = entry.device {
            by_device.entry(ordinal).or_default().push((entry, anchor));
        }
    }
    for (ordinal, pairs) in by_device {
        let mut per_type = [(); 4].map(|_| (Vec::new(), 0u64));
        for (entry, anchor) in pairs {
            let code = dtype_code(entry.kind)?;
            let (mask, count) = match &entry.selection {
                Selection::Dense => (0, entry.numel),
                Selection::Masked {
                    indices,
                    indices_on_device,
                } => (indices_on_device.data_ptr() as u64, indices.len() as u64),
                Selection::Untouched => continue,
            };
            if count == 0 {
                continue;
            }
            let (records, blocks) = &mut per_type[code];
            records.extend_from_slice(&[
                entry.tensor.data_ptr() as u64,
                entry.numel,
                entry.offset,
                *blocks,
                code as u64,
                mask,
                count,
                anchor.data_ptr() as u64,
            ]);
            // Dense grid blocks take 4-element groups (kernel.cu: pull).
            let per_block = match mask {
                0 => THREADS * PULL_PER_THREAD * 4,
                _ => THREADS * PULL_PER_THREAD,
            };
            *blocks += count.div_ceil(per_block);
        }
        with_kernels(ordinal, |kernels| {
            // The pull does not depend on the normal math: either module's kernel will do.
            let pair = kernels.pair(NormalMath::Exact);
            for (code, (records, blocks)) in per_type.iter().enumerate() {
                launch(
                    kernels,
                    pair.pull[code],
                    ordinal,
                    records,
                    *blocks,
                    LastArgument::Weight(&mut weight.clone()),
                )?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three segments whose first grid blocks are 0, 2 and 5, in a launch of 7 blocks.
    #[test]
    fn block_segments_map_each_grid_block_to_its_segment() {
        let mut records = Vec::new();
        for start in [0u64, 2, 5] {
            records.extend_from_slice(&[0, 1, 0, start, 0, 0, 0, 0]);
        }
        assert_eq!(block_segments(&records, 7), vec![0, 0, 1, 1, 1, 2, 2]);
        assert_eq!(block_segments(&records[..8], 1), vec![0]);
    }
}
