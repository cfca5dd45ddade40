//! Times the accountant on the side-by-side benchmark cases (scripts/accountant/bench_side_by_side.py)
//! and prints one JSON object per case: {"case", "seconds" (median), "repeats", "value"}.

use accountant::{calibrate_noise_multiplier, poisson_gaussian_epsilon, PrvAccountant, RdpMethod};
use std::time::Instant;

fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64, method: RdpMethod) -> f64 {
    poisson_gaussian_epsilon(q, sigma, steps, delta, method)
        .expect("valid event and delta")
        .value
}

fn time(case: &str, repeats: usize, mut f: impl FnMut() -> f64) {
    let mut seconds = Vec::with_capacity(repeats);
    let mut value = f64::NAN;
    for _ in 0..repeats {
        let start = Instant::now();
        value = f();
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[repeats / 2];
    println!(
        "{}",
        serde_json::json!({"case": case, "seconds": median, "repeats": repeats, "value": value})
    );
}

fn main() {
    let (q, sigma, steps, delta) = (0.01, 1.0, 10_000u64, 1e-5);
    time("rdp_epsilon_T1e4_156_orders", 21, || {
        epsilon(q, sigma, steps, delta, RdpMethod::Exact)
    });
    time("rdp_compat_epsilon_T1e4_156_orders", 21, || {
        epsilon(q, sigma, steps, delta, RdpMethod::DpAccountingCompat)
    });
    time("rdp_sigma_calibration", 3, || {
        calibrate_noise_multiplier(2.0, 1e-9, |s| {
            Ok(epsilon(q, s, steps, delta, RdpMethod::Exact))
        })
        .expect("feasible")
    });
    let (pq, psigma, psteps, pdelta) = (0.0625, 1.0, 6000u64, 1.0 / 1024.0);
    time("prv_epsilon_upper", 5, || {
        PrvAccountant::poisson_subsampled_gaussian(pq, psigma, psteps, 0.1, pdelta / 1000.0)
            .and_then(|p| p.epsilon(pdelta, psteps))
            .expect("prv")
            .upper
    });
}
