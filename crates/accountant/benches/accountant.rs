//! Criterion benchmarks: ε on dp-accounting's 156 orders for T = 1e4, σ calibration, PRV.

use accountant::{calibrate_noise_multiplier, poisson_gaussian_epsilon, PrvAccountant, RdpMethod};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64, method: RdpMethod) -> f64 {
    poisson_gaussian_epsilon(q, sigma, steps, delta, method)
        .expect("valid event and delta")
        .value
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("accountant");
    group.sample_size(10);
    group.bench_function("rdp_epsilon_T1e4_156_orders", |b| {
        b.iter(|| epsilon(black_box(0.01), 1.0, 10_000, 1e-5, RdpMethod::Exact))
    });
    group.bench_function("rdp_compat_epsilon_T1e4_156_orders", |b| {
        b.iter(|| {
            epsilon(
                black_box(0.01),
                1.0,
                10_000,
                1e-5,
                RdpMethod::DpAccountingCompat,
            )
        })
    });
    group.bench_function("rdp_sigma_calibration", |b| {
        b.iter(|| {
            calibrate_noise_multiplier(black_box(2.0), 1e-9, |s| {
                Ok(epsilon(0.01, s, 10_000, 1e-5, RdpMethod::Exact))
            })
        })
    });
    group.bench_function("prv_epsilon_upper_T6000", |b| {
        b.iter(|| {
            PrvAccountant::poisson_subsampled_gaussian(
                black_box(0.0625),
                1.0,
                6000,
                0.1,
                1.0 / 1024e3,
            )
            .and_then(|p| p.epsilon(1.0 / 1024.0, 6000))
        })
    });
    group.finish();
}

criterion_group!(accountant_benches, benches);
criterion_main!(accountant_benches);
