//! Known values from independent sources, read from tests/data/*.csv. Every file is written by
//! scripts/accountant/gen_reference.py (dp-accounting 0.6.0, prv-accountant 0.2.0, OpenDP 0.16.0,
//! mpmath 40-digit oracle); its header records the versions.

use accountant::rdp::{
    fixed_batch_gaussian_rdp, poisson_subsampled_gaussian_rdp,
    poisson_subsampled_gaussian_rdp_compat,
};
use accountant::{
    analytic_gaussian, calibrate_noise_multiplier, DpEvent, NeighboringRelation, Orders,
    PrvAccountant, RdpAccountant, RdpMethod, Zcdp,
};
use std::collections::HashMap;

fn read_rows(name: &str) -> Vec<HashMap<String, String>> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .from_path(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<_> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .map(String::from)
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "{path} has no rows");
    rows
}

fn num(row: &HashMap<String, String>, key: &str) -> f64 {
    let text = &row[key];
    match text.as_str() {
        "inf" => f64::INFINITY,
        _ => text
            .parse()
            .unwrap_or_else(|e| panic!("{key} = {text}: {e}")),
    }
}

fn relative_error(got: f64, want: f64) -> f64 {
    if got == want {
        0.0
    } else {
        ((got - want) / want).abs()
    }
}

#[test]
fn exact_rdp_matches_the_40_digit_oracle() {
    let mut worst_integer: f64 = 0.0;
    let mut worst_fractional: f64 = 0.0;
    for row in read_rows("rdp_oracle.csv") {
        let (q, sigma, alpha) = (
            num(&row, "sampling_rate"),
            num(&row, "noise_multiplier"),
            num(&row, "order"),
        );
        let want = num(&row, "rdp");
        let got = poisson_subsampled_gaussian_rdp(q, sigma, alpha).unwrap();
        let err = relative_error(got, want);
        let integer = alpha.fract() == 0.0;
        let bound = if integer { 1e-10 } else { 1e-9 };
        assert!(
            err <= bound,
            "q={q} sigma={sigma} alpha={alpha}: {got} vs {want} (rel {err:e})"
        );
        if integer {
            worst_integer = worst_integer.max(err);
        } else {
            worst_fractional = worst_fractional.max(err);
        }
    }
    println!("worst relative error: integer {worst_integer:e}, fractional {worst_fractional:e}");
}

#[test]
fn compat_rdp_reproduces_dp_accounting_including_its_infinities() {
    for row in read_rows("dp_accounting_rdp.csv") {
        let (q, sigma, alpha) = (
            num(&row, "sampling_rate"),
            num(&row, "noise_multiplier"),
            num(&row, "order"),
        );
        let want = num(&row, "rdp");
        let got = poisson_subsampled_gaussian_rdp_compat(q, sigma, alpha).unwrap();
        let err = relative_error(got, want);
        // Same algorithm; statrs' ln Γ vs scipy's gammaln differ in the last digits, which the
        // long log-sums of the compat series amplify to a few 1e-9.
        // Tiny values: both sides carry ~1e-16 absolute rounding in log A.
        assert!(
            err <= 1e-7 || (got - want).abs() <= 1e-13,
            "q={q} sigma={sigma} alpha={alpha}: {got} vs {want}"
        );
        // The exact value never exceeds dp-accounting's upper bound (beyond rounding).
        let exact = poisson_subsampled_gaussian_rdp(q, sigma, alpha).unwrap();
        // At integer orders both are the same sum; dp-accounting carries ~1e-9 rounding there.
        assert!(
            exact <= want * (1.0 + 1e-8),
            "exact {exact} > dp-accounting {want}"
        );
    }
}

#[test]
fn fixed_batch_rdp_reproduces_dp_accounting() {
    for row in read_rows("dp_accounting_wor.csv") {
        let n = num(&row, "dataset_size");
        let m = num(&row, "batch_size");
        let (sigma, alpha) = (num(&row, "noise_multiplier"), num(&row, "order"));
        let want = num(&row, "rdp");
        let got = fixed_batch_gaussian_rdp(m / n, sigma, alpha).unwrap();
        assert!(
            relative_error(got, want) <= 1e-9,
            "n={n} m={m} sigma={sigma} alpha={alpha}: {got} vs {want}"
        );
    }
}

fn poisson_accountant(q: f64, sigma: f64, steps: u64, method: RdpMethod) -> RdpAccountant {
    let mut accountant = RdpAccountant::new(
        Orders::dp_accounting_default(),
        NeighboringRelation::AddOrRemoveOne,
        method,
    );
    let event = DpEvent::PoissonSampledGaussian {
        sampling_rate: q,
        noise_multiplier: sigma,
    };
    accountant.compose(&event, steps).unwrap();
    accountant
}

#[test]
fn epsilon_on_the_default_grid_matches_dp_accounting() {
    for row in read_rows("dp_accounting_epsilon.csv") {
        let (q, sigma) = (num(&row, "sampling_rate"), num(&row, "noise_multiplier"));
        let (steps, delta) = (num(&row, "steps") as u64, num(&row, "delta"));
        let (want, want_order) = (num(&row, "epsilon"), num(&row, "order"));
        let compat = poisson_accountant(q, sigma, steps, RdpMethod::DpAccountingCompat)
            .epsilon_and_order(delta)
            .unwrap();
        assert!(
            relative_error(compat.value, want) <= 1e-6 && compat.order == want_order,
            "compat q={q} sigma={sigma} T={steps} delta={delta}: {compat:?} vs {want} @ {want_order}"
        );
        let exact = poisson_accountant(q, sigma, steps, RdpMethod::Exact)
            .epsilon_and_order(delta)
            .unwrap();
        assert!(
            exact.value <= want * (1.0 + 1e-6),
            "exact {} > dp-accounting {want} (q={q} sigma={sigma} T={steps})",
            exact.value
        );
    }
}

#[test]
fn delta_on_the_default_grid_matches_dp_accounting() {
    for row in read_rows("dp_accounting_delta.csv") {
        let (q, sigma) = (num(&row, "sampling_rate"), num(&row, "noise_multiplier"));
        let (steps, epsilon) = (num(&row, "steps") as u64, num(&row, "epsilon"));
        let (want, want_order) = (num(&row, "delta"), num(&row, "order"));
        let got = poisson_accountant(q, sigma, steps, RdpMethod::DpAccountingCompat)
            .delta_and_order(epsilon)
            .unwrap();
        assert!(
            relative_error(got.value, want) <= 1e-6 && got.order == want_order,
            "q={q} sigma={sigma} T={steps} eps={epsilon}: {got:?} vs {want} @ {want_order}"
        );
    }
}

#[test]
fn analytic_gaussian_matches_dp_accounting() {
    for row in read_rows("analytic_gaussian.csv") {
        let (sigma, delta, want) = (
            num(&row, "noise_multiplier"),
            num(&row, "delta"),
            num(&row, "epsilon"),
        );
        let got = analytic_gaussian::epsilon(sigma, delta).unwrap();
        assert!(
            relative_error(got, want) <= 1e-8,
            "sigma={sigma} delta={delta}: {got} vs {want}"
        );
    }
}

#[test]
fn zcdp_conversions_match_opendp() {
    for row in read_rows("opendp_zcdp.csv") {
        let zcdp = Zcdp::new(num(&row, "rho")).unwrap();
        let (input, want) = (num(&row, "input"), num(&row, "output"));
        let got = match row["query"].as_str() {
            "epsilon" => zcdp.epsilon(input).unwrap(),
            "delta" => zcdp.delta(input).unwrap(),
            other => panic!("unknown query {other}"),
        };
        // Values below 1e-300 (OpenDP returns the subnormal 5e-324 where we return 0) are equal.
        let close =
            relative_error(got, want) <= 1e-9 || (got.abs() < 1e-300 && want.abs() < 1e-300);
        assert!(close, "{row:?}: {got} vs {want}");
    }
}

#[test]
fn calibration_matches_dp_accounting() {
    for row in read_rows("dp_accounting_calibration.csv") {
        let (epsilon, delta) = (num(&row, "epsilon"), num(&row, "delta"));
        let (q, steps) = (num(&row, "sampling_rate"), num(&row, "steps") as u64);
        let want = num(&row, "noise_multiplier");
        let got = calibrate_noise_multiplier(epsilon, 1e-10, |sigma| {
            Ok(
                poisson_accountant(q, sigma, steps, RdpMethod::DpAccountingCompat)
                    .epsilon_and_order(delta)?
                    .value,
            )
        })
        .unwrap();
        assert!(
            relative_error(got, want) <= 1e-6,
            "{row:?}: {got} vs {want}"
        );
    }
}

#[test]
fn prv_upper_bound_lies_in_prv_accountants_error_band() {
    for row in read_rows("prv_accountant.csv") {
        let (q, sigma) = (num(&row, "sampling_rate"), num(&row, "noise_multiplier"));
        let (steps, delta) = (num(&row, "steps") as u64, num(&row, "delta"));
        let (eps_error, delta_error) = (num(&row, "eps_error"), num(&row, "delta_error"));
        let prv =
            PrvAccountant::poisson_subsampled_gaussian(q, sigma, steps, eps_error, delta_error)
                .unwrap();
        let got = prv.epsilon(delta, steps).unwrap();
        let (lower, upper) = (num(&row, "epsilon_lower"), num(&row, "epsilon_upper"));
        // Inside the band up to float noise of the two FFT pipelines (1e-9 relative).
        assert!(
            lower <= got.upper && got.upper <= upper * (1.0 + 1e-9),
            "q={q} sigma={sigma} T={steps}: our upper {} not in [{lower}, {upper}] ({got:?})",
            got.upper
        );
        let estimate = num(&row, "epsilon_estimate");
        assert!(
            (got.estimate - estimate).abs() <= eps_error,
            "{got:?} vs {estimate}"
        );
    }
}
