//! Throughput of one seed-replayed perturbation pass (`perturb::axpy_z`).
//!
//! `cargo bench -p trainer --bench perturb_pass`: criterion groups on a 4M-element parameter
//! set on the best device (CUDA if present), reported as bytes/s (read + write of every touched
//! element). With `PERF_CSV=<file>` it instead times model-shaped parameter sets (RoBERTa-large
//! f32, OPT-1.3B f16, OPT-2.7B f16) and appends CSV rows; `scripts/perf/run_gpu.sh` does that on
//! the H200 host. Target there: a dense pass within 1.5x of 2 x weight bytes / 4.3 TB/s.

use criterion::{Criterion, Throughput};
use std::io::Write;
use std::time::{Duration, Instant};
use tch::{Device, Kind};
use trainer::device::{select, DeviceRequest};
use trainer::perturb::bench::{
    bandwidth_floor_ms, median_ms, random_masks, random_tensors, synchronize, PerfRow,
    TransformerShape, H200_COPY_BANDWIDTH, OPT_1_3B, OPT_2_7B, ROBERTA_LARGE,
};
use trainer::perturb::{
    axpy_z_using, cuda_kernel_available, normal_math, pull_towards_using, set_normal_math,
    NormalMath, ParamSet, PerturbPath, Selection,
};

fn share(named: &[(String, tch::Tensor)]) -> Vec<(String, tch::Tensor)> {
    named
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect()
}

fn criterion_benches(device: Device) {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    let shapes = vec![
        ("a.weight".to_string(), vec![1024, 2048]),
        ("b.weight".to_string(), vec![2048, 1024]),
        ("c.bias".to_string(), vec![1027]),
    ];
    let paths: Vec<(&str, PerturbPath)> = match device {
        Device::Cpu => vec![("cpu", PerturbPath::Auto), ("aten", PerturbPath::Aten)],
        _ => vec![
            ("nvrtc", PerturbPath::NvrtcKernel),
            ("aten", PerturbPath::Aten),
        ],
    };
    for kind in [Kind::Float, Kind::BFloat16] {
        let tensors = random_tensors(&shapes, kind, device);
        let dense = ParamSet::new(share(&tensors)).expect("valid parameter set");
        let masked = ParamSet::new(share(&tensors))
            .and_then(|s| s.with_masks(random_masks(&tensors, 0.01)))
            .expect("valid masks");
        for (label, set, terms) in [
            ("dense_1term", &dense, vec![(1u64, 1e-3f64)]),
            (
                "dense_2terms",
                &dense,
                vec![(1u64, 1e-3f64), (2u64, -1e-3f64)],
            ),
            ("masked1pct_1term", &masked, vec![(1u64, 1e-3f64)]),
        ] {
            let mut group = criterion.benchmark_group(format!("perturb_pass/{kind:?}/{label}"));
            group.throughput(Throughput::Bytes(set.pass_bytes()));
            for &(name, path) in &paths {
                if path == PerturbPath::NvrtcKernel && !cuda_kernel_available() {
                    continue;
                }
                group.bench_function(name, |b| {
                    b.iter_custom(|iterations| {
                        synchronize(device);
                        let start = Instant::now();
                        for _ in 0..iterations {
                            axpy_z_using(set, &terms, path).expect("perturbation pass");
                        }
                        synchronize(device);
                        start.elapsed()
                    })
                });
            }
            group.finish();
        }
    }
    criterion.final_summary();
}

/// Model-shaped timings appended to `csv_path` (header written if the file is new).
fn csv_report(device: Device, csv_path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let new_file = !std::path::Path::new(csv_path).exists();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(csv_path)?;
    if new_file {
        writeln!(out, "{}", PerfRow::HEADER)?;
    }
    let kernel = device != Device::Cpu && cuda_kernel_available();
    let models: [(TransformerShape, Kind, &str); 3] = [
        (ROBERTA_LARGE, Kind::Float, "f32"),
        (OPT_1_3B, Kind::Half, "f16"),
        (OPT_2_7B, Kind::Half, "f16"),
    ];
    for (shape, kind, dtype) in models {
        let tensors = random_tensors(&shape.parameter_shapes(), kind, device);
        let dense = ParamSet::new(share(&tensors))?;
        let masked = ParamSet::new(share(&tensors))?.with_masks(random_masks(&tensors, 0.01))?;
        let floor = bandwidth_floor_ms(&dense, H200_COPY_BANDWIDTH);
        // The ATen fallback (host-generated z) takes seconds per pass: timed on RoBERTa only
        // (and not at all with PERF_SKIP_ATEN set, for tuning runs of the kernel).
        let mut paths = Vec::new();
        if kernel {
            paths.push(("ours-nvrtc", PerturbPath::NvrtcKernel, NormalMath::Exact));
            paths.push((
                "ours-nvrtc-fast",
                PerturbPath::NvrtcKernel,
                NormalMath::Fast,
            ));
        }
        if device == Device::Cpu {
            paths.push(("ours-cpu", PerturbPath::Auto, NormalMath::Exact));
        } else if shape.name == ROBERTA_LARGE.name && std::env::var_os("PERF_SKIP_ATEN").is_none() {
            paths.push(("ours-aten", PerturbPath::Aten, NormalMath::Exact));
        }
        let default_math = normal_math();
        for (implementation, path, math) in paths {
            set_normal_math(math);
            // The ATen fallback generates z on the host: time it once per model, 1 repetition.
            let repetitions = if path == PerturbPath::Aten { 1 } else { 11 };
            for (method, set, terms) in [
                ("perturb", &dense, vec![(7u64, 1e-3f64)]),
                (
                    "perturb-2terms",
                    &dense,
                    vec![(7u64, 1e-3f64), (8u64, -1e-3f64)],
                ),
                ("perturb-mask1pct", &masked, vec![(7u64, 1e-3f64)]),
                (
                    "perturb-mask1pct-2terms",
                    &masked,
                    vec![(7u64, 1e-3f64), (8u64, -1e-3f64)],
                ),
            ] {
                let ms = median_ms(device, 1, repetitions, || axpy_z_using(set, &terms, path))?;
                write_row(&mut out, shape.name, dtype, method, implementation, ms)?;
                eprintln!(
                    "{} {dtype} {method} {implementation}: {ms:.3} ms, floor {floor:.3} ms \
                     (2 x {:.2} GB / 4.3 TB/s), ratio {:.2}",
                    shape.name,
                    dense.pass_bytes() as f64 / 2e9,
                    ms / floor
                );
            }
        }
        set_normal_math(default_math);
        // The DP-ZOSO / DP-ZOPO proximal pull towards an anchor: one kernel launch against
        // ATen's per-tensor lerp (take / lerp / put for masked tensors).
        if kernel {
            for (method, set) in [("pull", &dense), ("pull-mask1pct", &masked)] {
                let anchors = set
                    .entries()
                    .iter()
                    .filter_map(|entry| {
                        let flat = entry.tensor.view(-1);
                        let values = match &entry.selection {
                            Selection::Dense => flat.copy(),
                            Selection::Masked {
                                indices_on_device, ..
                            } => flat.take(indices_on_device),
                            Selection::Untouched => return None,
                        };
                        Some((entry.name.clone(), values * 0.5))
                    })
                    .collect::<Vec<_>>();
                for (implementation, path) in [
                    ("ours-nvrtc", PerturbPath::NvrtcKernel),
                    ("ours-aten", PerturbPath::Aten),
                ] {
                    let ms = median_ms(device, 1, 11, || {
                        pull_towards_using(set, &anchors, 1e-7, path)
                    })?;
                    write_row(&mut out, shape.name, dtype, method, implementation, ms)?;
                    eprintln!(
                        "{} {dtype} {method} {implementation}: {ms:.3} ms",
                        shape.name
                    );
                }
            }
        }
        drop(tensors);
    }
    Ok(())
}

/// Append one CSV line of a pass timing (no batch or sequence; peak memory is not measured from
/// Rust, tch exposes no allocator statistics).
fn write_row(
    out: &mut impl Write,
    model: &str,
    dtype: &str,
    method: &str,
    implementation: &str,
    ms: f64,
) -> std::io::Result<()> {
    let row = PerfRow {
        model: model.to_string(),
        dtype: dtype.to_string(),
        batch: 0,
        seq: 0,
        method: method.to_string(),
        implementation: implementation.to_string(),
        ms_median: ms,
        peak_bytes: -1,
    };
    writeln!(out, "{}", row.csv_line())
}

fn main() {
    let device = select(DeviceRequest::Auto).unwrap_or(Device::Cpu);
    eprintln!(
        "perturb_pass on {device:?}, NVRTC kernel: {}",
        device != Device::Cpu && cuda_kernel_available()
    );
    match std::env::var("PERF_CSV") {
        Ok(path) => {
            if let Err(error) = csv_report(device, &path) {
                eprintln!("perturb_pass: {error}");
                std::process::exit(1);
            }
        }
        Err(_) => criterion_benches(device),
    }
}
