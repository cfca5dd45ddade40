//! Device selection for one binary that runs on CPU-only hosts and on CUDA hosts.
//!
//! A normal link drops `libtorch_cuda.so` (nothing references it), so the binary would never see
//! CUDA. At start-up we `dlopen` it with `RTLD_GLOBAL`; if that fails we stay on the CPU.

use std::ffi::CString;
use std::sync::OnceLock;

use cudarc::driver::sys;

/// What the user asked for on the command line (`--device auto|cpu|cuda`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

/// dlopen check, so that a missing library is an `Err` rather than a panic inside cudarc.
pub(crate) fn library_loadable(names: &[&str]) -> bool {
    names.iter().any(|name| {
        let Ok(c_name) = CString::new(*name) else {
            return false;
        };
        // SAFETY: a valid C string; the handle is intentionally kept (the library stays loaded).
        !unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) }.is_null()
    })
}

fn driver_check(what: &str, code: sys::CUresult) -> Result<(), String> {
    if code == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what} failed with {code:?}"))
    }
}

/// Device memory in use on CUDA device `ordinal` (`total - free` from `cuMemGetInfo`), in bytes:
/// every process's allocations plus contexts. Differences of two readings in one process
/// measure what its caching allocator reserved in between (it never returns memory unless
/// asked to), which is how `repro memory` reports peaks.
///
/// Reads through the device's primary context, the one libtorch uses; the context is retained
/// and released around the reading, so the call leaves its reference count as it found it.
pub fn device_memory_used(ordinal: usize) -> Result<u64, String> {
    if !library_loadable(&["libcuda.so.1", "libcuda.so"]) {
        return Err("libcuda.so cannot be loaded".into());
    }
    let ordinal_i32 =
        i32::try_from(ordinal).map_err(|_| format!("CUDA device ordinal {ordinal} too large"))?;
    // SAFETY: plain driver API calls with out-pointers to locals; the retained primary context
    // is made current only for the reading and released afterwards.
    unsafe {
        driver_check("cuInit", sys::cuInit(0))?;
        let mut device: sys::CUdevice = 0;
        driver_check("cuDeviceGet", sys::cuDeviceGet(&mut device, ordinal_i32))?;
        let mut context: sys::CUcontext = std::ptr::null_mut();
        driver_check(
            "cuDevicePrimaryCtxRetain",
            sys::cuDevicePrimaryCtxRetain(&mut context, device),
        )?;
        let (mut free, mut total) = (0usize, 0usize);
        let reading =
            driver_check("cuCtxSetCurrent", sys::cuCtxSetCurrent(context)).and_then(|()| {
                driver_check("cuMemGetInfo", sys::cuMemGetInfo_v2(&mut free, &mut total))
            });
        driver_check(
            "cuDevicePrimaryCtxRelease",
            sys::cuDevicePrimaryCtxRelease_v2(device),
        )?;
        reading?;
        Ok((total - free) as u64)
    }
}
