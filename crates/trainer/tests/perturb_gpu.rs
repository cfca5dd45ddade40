//! GPU agreement of the perturbation paths.
//! GPU: run with --ignored on a CUDA host (see scripts/perf/run_gpu.sh).
//!
//! The kernel uses the same IEEE f32 operations as the CPU code (NVRTC, --fmad=false, no fast
//! math), so the expected difference is zero; the assertions are bitwise.

use tch::{Device, Kind, Tensor};
use trainer::perturb::{axpy_z_using, cuda_kernel_available, z_values, ParamSet, PerturbPath};

fn cuda() -> Device {
    trainer::device::select(trainer::device::DeviceRequest::Cuda)
        .unwrap_or_else(|e| panic!("this test needs a CUDA device: {e}"))
}

fn tensors(device: Device) -> Vec<(String, Tensor)> {
    // Odd sizes and a misaligned offset exercise the scalar edges and the vector fast path.
    [
        (Kind::Float, 1_000_003i64),
        (Kind::Half, 65_537),
        (Kind::BFloat16, 4_099),
        (Kind::Double, 1_031),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(kind, numel))| {
        let values = (Tensor::arange(numel, (Kind::Double, Device::Cpu)) * 0.61).sin();
        (format!("t{i}"), values.to_kind(kind).to_device(device))
    })
    .collect()
}

fn f64_bits(t: &Tensor) -> Vec<u64> {
    Vec::<f64>::try_from(
        &t.to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .flatten(0, -1),
    )
    .unwrap()
    .iter()
    .map(|v| v.to_bits())
    .collect()
}

#[test]
#[ignore = "GPU: run with --ignored on a CUDA host"]
fn cuda_z_equals_cpu_z_bitwise() {
    let device = cuda();
    assert!(cuda_kernel_available(), "NVRTC kernel could not be loaded");
    let numel = 3_000_001i64;
    let zeros = Tensor::zeros([numel], (Kind::Float, device));
    let set = ParamSet::new(vec![("w".into(), zeros.shallow_clone())]).unwrap();
    axpy_z_using(&set, &[(0xDEAD_BEEF_0123, 1.0)], PerturbPath::NvrtcKernel).unwrap();
    let gpu = Vec::<f32>::try_from(&zeros.to_device(Device::Cpu)).unwrap();
    let cpu = z_values(0xDEAD_BEEF_0123, 0, numel as usize);
    let mismatches = gpu
        .iter()
        .zip(&cpu)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let max_ulp = gpu
        .iter()
        .zip(&cpu)
        .map(|(a, b)| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs())
        .max()
        .unwrap_or(0);
    assert_eq!(
        mismatches, 0,
        "{mismatches} of {numel} z values differ; max {max_ulp} ulp"
    );
}

#[test]
#[ignore = "GPU: run with --ignored on a CUDA host"]
fn kernel_aten_and_cpu_agree_dense_and_masked() {
    let device = cuda();
    let terms = [(1u64, 1e-3f64), (2u64, -2e-3f64), (3u64, 5e-4f64)];
    for masked in [false, true] {
        let mut results = Vec::new();
        for (path, dev) in [
            (PerturbPath::NvrtcKernel, device),
            (PerturbPath::Aten, device),
            (PerturbPath::Auto, Device::Cpu),
        ] {
            let named = tensors(dev);
            let handles: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
            let mut set = ParamSet::new(named).unwrap();
            if masked {
                let index = |n: i64| Tensor::arange_start_step(3, n, 97, (Kind::Int64, dev));
                set = set
                    .with_masks(vec![
                        ("t0".into(), index(1_000_003)),
                        ("t2".into(), index(4_099)),
                    ])
                    .unwrap();
            }
            axpy_z_using(&set, &terms, path).unwrap();
            results.push(handles.iter().map(f64_bits).collect::<Vec<_>>());
        }
        assert!(results[0] == results[2], "kernel != CPU (masked: {masked})");
        assert!(
            results[1] == results[2],
            "ATen on CUDA != CPU (masked: {masked})"
        );
    }
}
