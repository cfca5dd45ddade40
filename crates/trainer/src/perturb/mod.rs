//! Seed-replayed Gaussian perturbation of model weights (MeZO / DPZero / DP-ZOSO / DP-ZOPO).
//!
//! The ZO methods never store z: it is regenerated from a seed on every use. Here z is a pure
//! function of (seed, global element index):
//!
//! ```text
//! block b = index / 4,  lane = index % 4
//! (w0, w1, w2, w3) = Philox4x32-10(counter = (b_lo, b_hi, 0, 0), key = (seed_lo, seed_hi))
//! (z[4b], z[4b+1])   = BoxMuller(w0, w1)      (z[4b+2], z[4b+3]) = BoxMuller(w2, w3)
//! ```
//!
//! so any device, any tensor order of evaluation, and any coordinate subset (DP-ZOPO masks)
//! reproduce the same values. The global element index runs over the tensors of a [`ParamSet`]
//! sorted by name, each in its flat storage order.
//!
//! [`axpy_z`] applies `theta += sum_k scale_k z(seed_k)` in place, in one pass over the weights.
//! Callers merge passes: MeZO's "restore theta + eps z, then update theta - lr g z" is the single
//! call `axpy_z(p, &[(seed, eps), (seed, -lr * g)])`, and "restore, then perturb with the next
//! seed" is `axpy_z(p, &[(seed, eps), (next_seed, eps)])`. The delta is accumulated in f32 in
//! term order starting from 0, added to theta in f32 (f64 for f64 tensors) and rounded once to
//! the tensor's dtype (round to nearest even).
//!
//! Out of place: [`ParamSet::writing_to`] pairs each tensor (the source) with a destination, and
//! `axpy_z` on that set writes `source + sum_k scale_k z(seed_k)` into the destinations at the
//! touched coordinates, in the same single pass, without writing the source or the untouched
//! coordinates (for the paired forward's theta +- mu z replicas). The result is bit-identical to
//! copying the source and perturbing the copy in place, on every path.
//!
//! Devices: CPU tensors are updated by plain loops (`cpu.rs`); CUDA tensors by one NVRTC-compiled
//! kernel launch per element type (all tensors of that type at once) when NVRTC and the driver
//! can be loaded (`cuda`), otherwise by an ATen fallback that copies host-generated z
//! (`aten.rs`). With [`NormalMath::Exact`] all three produce bit-identical results: the
//! arithmetic is IEEE f32 add/mul/div/sqrt only (see `normal.rs`). The kernel's default,
//! [`NormalMath::Fast`], trades that for speed (z within a few ulp but for the smallest radii,
//! bounded in the GPU tests).
//!
//! [`pull_towards`] applies the DP-ZOSO / DP-ZOPO proximal pull `theta <- lerp(theta, anchor, w)`
//! over the same touched coordinates, with one kernel launch per element type on CUDA.
//!
//! The writes bypass autograd (no version-counter bump): do not perturb tensors that a live
//! autograd graph has saved.

mod aten;
pub mod bench;
mod cpu;
mod cuda;
mod error;
mod normal;
mod param_set;
mod philox;
mod pull;

pub use cuda::cuda_kernel_available;
pub use error::{CudaError, PerturbError};
pub use normal::{box_muller, normal_at, normal_block};
pub use param_set::{ParamEntry, ParamSet, Selection};
pub use philox::{philox4x32_10, philox_block};
pub use pull::{pull_towards, pull_towards_using};

use std::sync::atomic::{AtomicU8, Ordering};
use tch::Device;

/// How the CUDA kernel turns Philox words into normals.
///
/// * `Fast` (the default): the same Philox words and 24-bit fractions, but -2 ln u from the
///   GPU's base-2 logarithm (`lg2.approx`), its approximate square root and hardware
///   sine/cosine, and FMA. Each z is within 2e-6 max(r, 1) + min(2.5e-7 / r, 5e-4) of the exact
///   one, r the pair's radius (bounded in the GPU tests): a few ulp except for the ~1e-4 of
///   pairs with r < 0.014, whose z are that small themselves. Not bit-identical, so CPU and CUDA
///   runs of the same seed drift apart at rounding level; the same GPU model gives the same
///   bits. About 60% fewer instructions per element than `Exact`, which makes the pass
///   bandwidth-bound on f16/bf16 weights.
/// * `Exact`: correctly rounded IEEE f32 operations only, bit-identical to the CPU and ATen
///   paths, so a run gives the same bits on any device.
///
/// CPU paths always compute the exact z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NormalMath {
    Exact,
    Fast,
}

impl NormalMath {
    /// `exact` or `fast`.
    pub fn name(self) -> &'static str {
        match self {
            NormalMath::Exact => "exact",
            NormalMath::Fast => "fast",
        }
    }
}

impl std::str::FromStr for NormalMath {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "exact" => Ok(NormalMath::Exact),
            "fast" => Ok(NormalMath::Fast),
            other => Err(format!("normal math {other:?}: expected exact or fast")),
        }
    }
}

static NORMAL_MATH: AtomicU8 = AtomicU8::new(1);

/// Selects the CUDA kernel's normal math for this process (see [`NormalMath`]).
pub fn set_normal_math(math: NormalMath) {
    NORMAL_MATH.store(
        match math {
            NormalMath::Exact => 0,
            NormalMath::Fast => 1,
        },
        Ordering::Relaxed,
    );
}

/// The CUDA kernel's normal math in effect.
pub fn normal_math() -> NormalMath {
    match NORMAL_MATH.load(Ordering::Relaxed) {
        0 => NormalMath::Exact,
        _ => NormalMath::Fast,
    }
}

thread_local! {
    static PASSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many perturbation passes ([`axpy_z`] calls with at least one term) this thread has
/// started: the pass count per step that the optimisers promise, checked in the tests.
pub fn passes_on_this_thread() -> u64 {
    PASSES.with(|passes| passes.get())
}

/// z(seed, start_index + i) for i in 0..n, as f32 (the values every path adds).
pub fn z_values(seed: u64, start_index: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| normal_at(seed, start_index + i))
        .collect()
}

/// Validate scales (finite and within f32) and convert them to the f32 the update uses.
fn validated_terms(terms: &[(u64, f64)]) -> Result<Vec<(u64, f32)>, PerturbError> {
    terms
        .iter()
        .enumerate()
        .map(|(term, &(seed, scale))| {
            if scale.is_finite() && scale.abs() <= f64::from(f32::MAX) {
                Ok((seed, scale as f32))
            } else {
                Err(PerturbError::InvalidScale { term, scale })
            }
        })
        .collect()
}

/// Check that a tensor, and its source if it has one, still has the dtype, size, device and
/// layout it had at construction, and that a source is not its destination (the raw-pointer
/// paths depend on it).
fn check_unchanged(entry: &ParamEntry) -> Result<(), PerturbError> {
    let tensor = &entry.tensor;
    if tensor.kind() != entry.kind {
        return Err(PerturbError::UnsupportedKind {
            name: entry.name.clone(),
            kind: tensor.kind(),
        });
    }
    if tensor.device() != entry.device {
        return Err(PerturbError::UnsupportedDevice {
            name: entry.name.clone(),
            device: tensor.device(),
        });
    }
    if !tensor.is_contiguous() || tensor.numel() as u64 != entry.numel {
        return Err(PerturbError::NotContiguous {
            name: entry.name.clone(),
            sizes: tensor.size(),
            strides: tensor.stride(),
        });
    }
    if let Some(source) = &entry.source {
        if let Some(reason) =
            param_set::layout_mismatch(source, entry.kind, entry.device, entry.numel)
        {
            return Err(PerturbError::SourceChanged {
                name: entry.name.clone(),
                reason,
            });
        }
        if entry.numel > 0 && source.data_ptr() == tensor.data_ptr() {
            return Err(PerturbError::DestinationAliases {
                name: entry.name.clone(),
                other: "its source".into(),
            });
        }
    }
    Ok(())
}

/// theta += sum_k scale_k * z(seed_k), in place over the touched coordinates of `params` (for a
/// set built by [`ParamSet::writing_to`]: destination = source + sum_k scale_k * z(seed_k)).
///
/// CUDA tensors use the NVRTC kernel when available (and at most 8 terms are given), else the
/// ATen fallback.
///
/// # Errors
/// A scale that is not a finite f32; a tensor (or source) whose dtype, size or layout changed
/// since the set was built; a CUDA or libtorch failure.
pub fn axpy_z(params: &ParamSet, terms: &[(u64, f64)]) -> Result<(), PerturbError> {
    axpy_z_using(params, terms, PerturbPath::Auto)
}

/// Which implementation [`axpy_z_using`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerturbPath {
    /// CPU loops for CPU tensors; for CUDA tensors the NVRTC kernel when it can be loaded, else
    /// the ATen fallback. What [`axpy_z`] uses.
    Auto,
    /// CPU loops for CPU tensors, the NVRTC kernel for CUDA tensors (an error if it cannot be
    /// loaded).
    NvrtcKernel,
    /// The ATen fallback for every tensor, CPU or CUDA (host-generated z, ATen adds).
    Aten,
}

/// [`axpy_z`] with an explicit choice of implementation (for tests and benchmarks).
pub fn axpy_z_using(
    params: &ParamSet,
    terms: &[(u64, f64)],
    path: PerturbPath,
) -> Result<(), PerturbError> {
    let terms = validated_terms(terms)?;
    if terms.is_empty() {
        return Ok(());
    }
    PASSES.with(|passes| passes.set(passes.get() + 1));
    let mut cuda_entries = Vec::new();
    for entry in &params.entries {
        check_unchanged(entry)?;
        if matches!(entry.selection, Selection::Untouched) {
            continue;
        }
        match (path, entry.device) {
            (PerturbPath::Aten, _) => aten::update_entry(entry, &terms)?,
            (_, Device::Cpu) => cpu::update_entry(entry, &terms)?,
            _ => cuda_entries.push(entry),
        }
    }
    if cuda_entries.is_empty() {
        return Ok(());
    }
    let use_kernel = path == PerturbPath::NvrtcKernel
        || (terms.len() <= cuda::MAX_KERNEL_TERMS && cuda_kernel_available());
    if use_kernel {
        cuda::update_entries(&cuda_entries, &terms)
    } else {
        for entry in cuda_entries {
            aten::update_entry(entry, &terms)?;
        }
        Ok(())
    }
}
