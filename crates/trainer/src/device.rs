//! Device selection for one binary that runs on CPU-only hosts and on CUDA hosts.
//!
//! A normal link drops `libtorch_cuda.so` (nothing references it), so the binary would never see
//! CUDA. At start-up we `dlopen` it with `RTLD_GLOBAL`; if that fails we stay on the CPU.

use std::sync::OnceLock;

/// What the user asked for on the command line (`--device auto|cpu|cuda`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device {other:?}: expected auto, cpu or cuda"
            )),
        }
    }
}

static CUDA_LOADED: OnceLock<Result<(), String>> = OnceLock::new();

/// Load libtorch's CUDA half once per process. `Err` carries the loader's message.
pub fn load_cuda_runtime() -> Result<(), String> {
    CUDA_LOADED
        .get_or_init(|| {
            // libc10_cuda.so is a dependency of libtorch_cuda.so; loading the latter is enough.
            // SAFETY: a NUL-terminated literal; dlopen has no other preconditions.
            let handle = unsafe {
                libc::dlopen(
                    c"libtorch_cuda.so".as_ptr(),
                    libc::RTLD_NOW | libc::RTLD_GLOBAL,
                )
            };
            if !handle.is_null() {
                return Ok(());
            }
            // SAFETY: dlerror returns a thread-local C string or null.
            let msg = unsafe { libc::dlerror() };
            Err(if msg.is_null() {
                "dlopen libtorch_cuda.so failed".to_string()
            } else {
                // SAFETY: a non-null dlerror result is a valid C string.
                unsafe { std::ffi::CStr::from_ptr(msg) }
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .clone()
}

/// Resolve a request to a tch device. `cuda` without a usable GPU is an error, never a silent CPU run.
pub fn select(request: DeviceRequest) -> Result<tch::Device, String> {
    match request {
        DeviceRequest::Cpu => Ok(tch::Device::Cpu),
        DeviceRequest::Auto => {
            if load_cuda_runtime().is_ok() && tch::Cuda::is_available() {
                Ok(tch::Device::Cuda(0))
            } else {
                Ok(tch::Device::Cpu)
            }
        }
        DeviceRequest::Cuda => {
            load_cuda_runtime()
                .map_err(|e| format!("--device cuda: cannot load libtorch_cuda.so ({e})"))?;
            if tch::Cuda::is_available() {
                Ok(tch::Device::Cuda(0))
            } else {
                Err("--device cuda: libtorch_cuda.so loaded but no CUDA device is visible".into())
            }
        }
    }
}

/// A short name for logs and run records: `cpu` or `cuda`.
pub fn name(device: tch::Device) -> &'static str {
    match device {
        tch::Device::Cpu => "cpu",
        _ => "cuda",
    }
}
