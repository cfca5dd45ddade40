//! Compute precision of the matrix products: `f32`, `tf32` or `bf16`.
//!
//! Master weights, perturbations and updates keep the parameter dtype (f32): ZO differences at
//! mu = 1e-3 do not survive bf16 weights. Only the products change precision:
//! - `tf32`: cuBLAS may use TF32 tensor cores for f32 GEMMs (ATen's `allowTF32CuBLAS` flag,
//!   process-wide); on the CPU there is no TF32 and products stay f32;
//! - `bf16`: ATen autocast (thread-local) with bf16 as its dtype, on the model's device type:
//!   the ops on autocast's lower-precision list (linear, matmul, bmm, ...) cast their inputs to
//!   bf16, while reductions such as softmax and the losses stay f32 (the losses are cast to f32 in
//!   `optim::loss`).
//!
//! tch 0.24 exposes neither switch with a dtype (its `autocast` uses the CUDA default, f16), so the
//! few ATen functions needed are declared here by their C++ symbols (`ATen/Context.h`,
//! `ATen/autocast_mode.h` of libtorch 2.11). None of them throws for the CPU and CUDA device
//! types used here.

use serde::{Deserialize, Serialize};
use std::ffi::c_void;

/// The dtype of reductions, norms and losses over tensors of `kind`: f32 for f32 and the lower
/// precisions, f64 for f64 (reference runs in tests, whose rounding must stay f64 throughout).
pub fn accumulation_kind(kind: tch::Kind) -> tch::Kind {
    if kind == tch::Kind::Double {
        tch::Kind::Double
    } else {
        tch::Kind::Float
    }
}

/// Precision of the matrix products (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// IEEE f32 products (TF32 explicitly off).
    #[default]
    F32,
    /// TF32 tensor-core products for f32 GEMMs on CUDA.
    Tf32,
    /// bf16 autocast of the products; weights stay f32.
    Bf16,
}

impl Compute {
    /// The setting's name as written in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Compute::F32 => "f32",
            Compute::Tf32 => "tf32",
            Compute::Bf16 => "bf16",
        }
    }

    /// What the products actually run in on `device` (TF32 exists only on CUDA).
    pub fn effective(self, device: tch::Device) -> &'static str {
        match (self, device) {
            (Compute::Tf32, tch::Device::Cpu) => "f32 (tf32 asked; no TF32 on the CPU)",
            (c, _) => c.name(),
        }
    }
}

impl std::str::FromStr for Compute {
    type Err = String;

    fn from_str(s: &str) -> Result<Compute, String> {
        match s {
            "f32" => Ok(Compute::F32),
            "tf32" => Ok(Compute::Tf32),
            "bf16" => Ok(Compute::Bf16),
            other => Err(format!("compute {other:?} is not one of f32, tf32, bf16")),
        }
    }
}

impl std::fmt::Display for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// c10::DeviceType and c10::ScalarType are `enum class : int8_t`.
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
const SCALAR_BFLOAT16: i8 = 15;

extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context18setAllowTF32CuBLASEb"]
    fn at_context_set_allow_tf32_cublas(context: *mut c_void, allow: bool);
    #[link_name = "_ZNK2at7Context15allowTF32CuBLASEv"]
    fn at_context_allow_tf32_cublas(context: *const c_void) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device: i8) -> i8;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast25is_autocast_cache_enabledEv"]
    fn at_is_autocast_cache_enabled() -> bool;
    #[link_name = "_ZN2at8autocast26set_autocast_cache_enabledEb"]
    fn at_set_autocast_cache_enabled(enabled: bool);
}

/// Whether cuBLAS may use TF32 for f32 GEMMs (process-wide).
pub fn tf32_cublas() -> bool {
    // SAFETY: the global context lives for the whole process; the getter only reads a flag.
    unsafe { at_context_allow_tf32_cublas(at_global_context()) }
}

/// Allow or forbid TF32 for cuBLAS f32 GEMMs (process-wide; read by ATen at each GEMM).
pub fn set_tf32_cublas(allow: bool) {
    // SAFETY: as above; the setter stores a flag.
    unsafe { at_context_set_allow_tf32_cublas(at_global_context(), allow) }
}

fn device_type(device: tch::Device) -> i8 {
    match device {
        tch::Device::Cpu => DEVICE_CPU,
        _ => DEVICE_CUDA,
    }
}

/// Whether autocast is on for `device`'s type in this thread.
pub fn autocast_enabled(device: tch::Device) -> bool {
    // SAFETY: reads a thread-local flag of a device type autocast supports (CPU or CUDA).
    unsafe { at_is_autocast_enabled(device_type(device)) }
}

/// Sets this thread's compute precision for `device` until the guard is dropped.
#[must_use = "the setting lasts only as long as the guard"]
pub struct ComputeGuard {
    device: i8,
    tf32_before: bool,
    /// Autocast's enabled flag, dtype and cache flag before.
    autocast_before: Option<(bool, i8, bool)>,
}

/// Activate `compute` for products on `device`. `F32` also turns TF32 off, so that a record saying
/// f32 means IEEE f32 whatever `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE` says.
pub fn activate(compute: Compute, device: tch::Device) -> ComputeGuard {
    let dev = device_type(device);
    let tf32_before = tf32_cublas();
    set_tf32_cublas(compute == Compute::Tf32);
    let autocast_before = (compute == Compute::Bf16).then(|| {
        // SAFETY: thread-local autocast state of CPU or CUDA; the nesting counter makes ATen keep
        // its cast cache until the outermost region ends (what `tch::autocast` does too).
        unsafe {
            let before = (
                at_is_autocast_enabled(dev),
                at_get_autocast_dtype(dev),
                at_is_autocast_cache_enabled(),
            );
            at_set_autocast_dtype(dev, SCALAR_BFLOAT16);
            at_set_autocast_enabled(dev, true);
            // Autocast caches the bf16 copy of a leaf weight that requires grad for the whole
            // region; ZO steps change the weights in place between forwards, so a cached copy
            // would be stale. Every product recasts its weights instead.
            at_set_autocast_cache_enabled(false);
            torch_sys::at_autocast_increment_nesting();
            before
        }
    });
    ComputeGuard {
        device: dev,
        tf32_before,
        autocast_before,
    }
}

impl Drop for ComputeGuard {
    fn drop(&mut self) {
        if let Some((enabled, dtype, cache)) = self.autocast_before {
            // SAFETY: undoes `activate` on the same thread-local state.
            unsafe {
                if torch_sys::at_autocast_decrement_nesting() == 0 {
                    torch_sys::at_autocast_clear_cache();
                }
                at_set_autocast_enabled(self.device, enabled);
                at_set_autocast_dtype(self.device, dtype);
                at_set_autocast_cache_enabled(cache);
            }
        }
        set_tf32_cublas(self.tf32_before);
    }
}

/// Holds the process-wide TF32 flag at `compute`'s value until dropped.
#[must_use = "the flag is held only as long as the guard"]
pub struct Tf32Hold {
    before: bool,
}

/// For cells run as threads of one process: sets the process-wide TF32 flag for `compute` until
/// the guard drops. Each cell's [`activate`] then finds the flag at its own value and restores that
/// value, so one thread's end never turns TF32 off (or on) under another still running; without
/// the hold, the first cell to finish restores the flag as it was before any began. All threads
/// must share `compute` (the flag is one per process).
pub fn hold_tf32(compute: Compute) -> Tf32Hold {
    let before = tf32_cublas();
    set_tf32_cublas(compute == Compute::Tf32);
    Tf32Hold { before }
}

impl Drop for Tf32Hold {
    fn drop(&mut self) {
        set_tf32_cublas(self.before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn names_round_trip_and_bad_names_are_named() {
        for c in [Compute::F32, Compute::Tf32, Compute::Bf16] {
            assert_eq!(c.name().parse::<Compute>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
        }
        assert!("fp16".parse::<Compute>().unwrap_err().contains("\"fp16\""));
    }

    #[test]
    fn tf32_flag_is_set_and_restored() {
        let before = tf32_cublas();
        {
            let _g = activate(Compute::Tf32, Device::Cpu);
            assert!(tf32_cublas());
            {
                let _f = activate(Compute::F32, Device::Cpu);
                assert!(!tf32_cublas());
            }
            assert!(tf32_cublas());
        }
        assert_eq!(tf32_cublas(), before);
    }

    #[test]
    fn bf16_runs_products_in_bf16_and_leaves_other_ops_and_weights_f32() {
        let a = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([16, 4], (Kind::Float, Device::Cpu));
        let exact = a.matmul(&b);
        assert!(!autocast_enabled(Device::Cpu));
        let (product, sum) = {
            let _g = activate(Compute::Bf16, Device::Cpu);
            assert!(autocast_enabled(Device::Cpu));
            (a.matmul(&b), a.sum(Kind::Float))
        };
        assert!(!autocast_enabled(Device::Cpu));
        assert_eq!(product.kind(), Kind::BFloat16);
        assert_eq!(sum.kind(), Kind::Float);
        assert_eq!(a.kind(), Kind::Float);
        // The bf16 product is the f32 one up to bf16 rounding of inputs and output (8-bit
        // mantissa: relative error ~ 2^-8 per factor), and not bit-identical to it.
        let diff = (product.to_kind(Kind::Float) - &exact)
            .abs()
            .max()
            .double_value(&[]);
        let scale = exact.abs().max().double_value(&[]);
        assert!(diff > 0.0 && diff < 0.05 * scale, "{diff} vs {scale}");
        // After the guard, products are f32 again.
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }

    /// On a CUDA host (`--ignored`): TF32 and bf16 change what a large f32 GEMM computes, f32
    /// gives the same bits as before, and the switches are undone afterwards.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn cuda_tf32_and_bf16_change_the_products() {
        let device = Device::Cuda(0);
        let a = Tensor::randn([512, 512], (Kind::Float, device));
        let b = Tensor::randn([512, 512], (Kind::Float, device));
        let product = |c: Compute| {
            let _g = activate(c, device);
            a.matmul(&b).to_kind(Kind::Float)
        };
        let exact = product(Compute::F32);
        let relative = |x: &Tensor| {
            ((x - &exact).abs().max().double_value(&[])) / exact.abs().max().double_value(&[])
        };
        let tf32 = product(Compute::Tf32);
        let bf16 = product(Compute::Bf16);
        // TF32 keeps 10 mantissa bits, bf16 7: both differ from f32, bf16 more.
        let (e_tf32, e_bf16) = (relative(&tf32), relative(&bf16));
        println!("relative max error: tf32 {e_tf32:.3e}, bf16 {e_bf16:.3e}");
        assert!(e_tf32 > 1e-6 && e_tf32 < 1e-2, "tf32 {e_tf32}");
        assert!(e_bf16 > e_tf32 && e_bf16 < 5e-2, "bf16 {e_bf16}");
        assert!(!autocast_enabled(device));
        assert!(product(Compute::F32).equal(&exact));
    }

    #[test]
    fn bf16_products_see_weights_changed_in_place() {
        // A weight as models hold it: a leaf that requires grad, changed in place (as the ZO
        // perturbation does) between two products in one bf16 region.
        let w = Tensor::ones([16, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let x = Tensor::ones([4, 16], (Kind::Float, Device::Cpu));
        let _g = activate(Compute::Bf16, Device::Cpu);
        let before = tch::no_grad(|| x.matmul(&w.transpose(0, 1)).linear::<Tensor>(&w, None));
        tch::no_grad(|| {
            let _ = w.shallow_clone().g_add_scalar_(1.0);
        });
        let after = tch::no_grad(|| x.matmul(&w.transpose(0, 1)).linear::<Tensor>(&w, None));
        let ratio = after
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
            / before
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
        // (2·16)·2·16 / (16·16) = 4: both products used the updated weight.
        assert!(
            (ratio - 4.0).abs() < 1e-2,
            "ratio {ratio}: a stale bf16 copy was used"
        );
    }
}
