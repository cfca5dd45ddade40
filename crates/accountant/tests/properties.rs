//! Property tests (docs/accountant.md §6.2), each tied to an identity or bound of the theory.
//! Case counts are modest so the crate's tests stay well under two minutes.

use accountant::rdp::{
    delta_from_rdp, epsilon_from_rdp, epsilon_from_rdp_classical, gaussian_rdp,
    poisson_subsampled_gaussian_rdp, poisson_subsampled_gaussian_rdp_compat,
};
use accountant::{
    analytic_gaussian, calibrate_noise_multiplier, AccountantError, DpEvent, Ledger,
    NeighboringRelation, Orders, RdpAccountant, RdpMethod, Zcdp,
};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn poisson(q: f64, sigma: f64) -> DpEvent {
    DpEvent::PoissonSampledGaussian {
        sampling_rate: q,
        noise_multiplier: sigma,
    }
}

fn accountant_with(event: &DpEvent, count: u64) -> RdpAccountant {
    let mut a = RdpAccountant::new(
        Orders::dp_accounting_default(),
        NeighboringRelation::AddOrRemoveOne,
        RdpMethod::Exact,
    );
    a.compose(event, count).unwrap();
    a
}

fn poisson_epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    accountant_with(&poisson(q, sigma), steps)
        .epsilon_and_order(delta)
        .unwrap()
        .value
}

fn orders_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![1.01f64..12.0, (2u32..300).prop_map(f64::from)]
}

// 1. Closed forms (Mironov 2017 Prop. 7; MTZ19 special cases; BS16 Prop. 1.6).
proptest! {
    #![proptest_config(config(64))]
    #[test]
    fn closed_forms(sigma in 0.2f64..50.0, alpha in orders_strategy()) {
        let full = poisson_subsampled_gaussian_rdp(1.0, sigma, alpha).unwrap();
        prop_assert_eq!(full, alpha / (2.0 * sigma * sigma));
        prop_assert_eq!(poisson_subsampled_gaussian_rdp(0.0, sigma, alpha).unwrap(), 0.0);
        prop_assert_eq!(poisson_subsampled_gaussian_rdp(0.3, 0.0, alpha).unwrap(), f64::INFINITY);
        let rho = Zcdp::from_gaussian(sigma).unwrap().rho();
        let zcdp = accountant_with(&DpEvent::Zcdp { rho }, 1);
        let gaussian = accountant_with(&DpEvent::Gaussian { noise_multiplier: sigma }, 1);
        for (a, b) in zcdp.rdp().iter().zip(gaussian.rdp()) {
            prop_assert!((a - b).abs() <= 1e-12 * b, "{} vs {}", a, b);
        }
    }
}

// 2. Composition identities (dp-accounting's composition tests).
proptest! {
    #![proptest_config(config(12))]
    #[test]
    fn composition_identities(q in 0.001f64..0.5, sigma in 0.5f64..10.0, t1 in 1u64..500, t2 in 1u64..500) {
        let event = poisson(q, sigma);
        let whole = accountant_with(&event, t1 + t2);
        let mut split = accountant_with(&event, t1);
        split.compose(&event, t2).unwrap();
        let nested = accountant_with(
            &DpEvent::SelfComposed { event: Box::new(event.clone()), count: t1 + t2 }, 1);
        for ((a, b), c) in whole.rdp().iter().zip(split.rdp()).zip(nested.rdp()) {
            prop_assert!((a - b).abs() <= 1e-12 * a.abs().max(1e-300));
            prop_assert!((a - c).abs() <= 1e-12 * a.abs().max(1e-300));
        }
        // Heterogeneous composition adds order-wise.
        let other = DpEvent::Gaussian { noise_multiplier: sigma * 3.0 };
        let mut mixed = accountant_with(&event, t1);
        mixed.compose(&other, t2).unwrap();
        let composed = accountant_with(
            &DpEvent::Composed { events: vec![
                DpEvent::SelfComposed { event: Box::new(event.clone()), count: t1 },
                DpEvent::SelfComposed { event: Box::new(other), count: t2 },
            ] }, 1);
        for (a, b) in mixed.rdp().iter().zip(composed.rdp()) {
            prop_assert!((a - b).abs() <= 1e-12 * a.abs().max(1e-300));
        }
        // The ledger round-trips through JSON and recomputes the same curve.
        let json = mixed.ledger().to_json().unwrap();
        let restored = RdpAccountant::from_ledger(
            &Ledger::from_json(&json).unwrap(), Orders::dp_accounting_default(), RdpMethod::Exact).unwrap();
        // serde_json parses floats to within 1 ulp (no `float_roundtrip` feature).
        for (a, b) in restored.rdp().iter().zip(mixed.rdp()) {
            prop_assert!((a - b).abs() <= 1e-13 * b.abs());
        }
    }

    #[test]
    fn effective_sigma_of_composed_gaussians(s1 in 0.3f64..20.0, s2 in 0.3f64..20.0) {
        // Σ α/(2σ_i²) = α/(2σ_eff²) with σ_eff = (Σσ_i^-2)^(-1/2).
        let effective = (s1.powi(-2) + s2.powi(-2)).powf(-0.5);
        for alpha in [1.5, 2.0, 32.0, 1024.0] {
            let sum = gaussian_rdp(s1, alpha).unwrap() + gaussian_rdp(s2, alpha).unwrap();
            let one = gaussian_rdp(effective, alpha).unwrap();
            prop_assert!((sum - one).abs() <= 1e-12 * one);
        }
    }
}

// 3. Monotonicity and convexity (MTZ19; RDP is non-decreasing in α, (α-1)RDP convex).
proptest! {
    #![proptest_config(config(24))]
    #[test]
    fn rdp_monotone_and_cgf_convex(q in 0.001f64..0.99, sigma in 0.4f64..20.0, alpha in 1.2f64..40.0) {
        let h = 0.05;
        let r = |a: f64| poisson_subsampled_gaussian_rdp(q, sigma, a).unwrap();
        let (lo, mid, hi) = (r(alpha - h), r(alpha), r(alpha + h));
        prop_assert!(lo <= mid * (1.0 + 1e-9) && mid <= hi * (1.0 + 1e-9), "{} {} {}", lo, mid, hi);
        let cgf = |a: f64, v: f64| (a - 1.0) * v;
        let second = cgf(alpha - h, lo) + cgf(alpha + h, hi) - 2.0 * cgf(alpha, mid);
        prop_assert!(second >= -1e-9 * cgf(alpha, mid).abs(), "second difference {}", second);
        // Non-increasing in σ, non-decreasing in q; bounded by the full-batch Gaussian.
        prop_assert!(poisson_subsampled_gaussian_rdp(q, sigma * 1.1, alpha).unwrap() <= mid * (1.0 + 1e-9));
        prop_assert!(poisson_subsampled_gaussian_rdp((q * 1.1).min(1.0), sigma, alpha).unwrap() >= mid * (1.0 - 1e-9));
        prop_assert!(mid >= 0.0 && mid <= alpha / (2.0 * sigma * sigma) * (1.0 + 1e-12));
    }

    #[test]
    fn small_q_leading_term(sigma in 0.8f64..20.0, alpha in 1.5f64..8.0) {
        // A - 1 = C(α,2) q² (e^{1/σ²} - 1) + O(q³) (MTZ19), so RDP ≈ α q² (e^{1/σ²}-1)/2.
        let q = 1e-6;
        let got = poisson_subsampled_gaussian_rdp(q, sigma, alpha).unwrap();
        let lead = alpha * q * q * (1.0 / (sigma * sigma)).exp_m1() / 2.0;
        prop_assert!((got - lead).abs() <= 1e-3 * lead, "{} vs {}", got, lead);
    }

    #[test]
    fn exact_never_exceeds_dp_accounting(q in 0.001f64..0.9, sigma in 0.5f64..50.0, alpha in orders_strategy()) {
        let exact = poisson_subsampled_gaussian_rdp(q, sigma, alpha).unwrap();
        let compat = poisson_subsampled_gaussian_rdp_compat(q, sigma, alpha).unwrap();
        // The compat series is an upper bound in exact arithmetic; numerically it carries the
        // 1e-7 relative error of statrs' ln_gamma against scipy's (tests/reference.rs).
        prop_assert!(exact <= compat * (1.0 + 1e-7), "{} > {}", exact, compat);
    }
}

proptest! {
    #![proptest_config(config(8))]
    #[test]
    fn epsilon_monotone_in_steps_q_sigma_delta(q in 0.005f64..0.2, sigma in 0.7f64..5.0, steps in 10u64..2000) {
        let delta = 1e-5;
        let base = poisson_epsilon(q, sigma, steps, delta);
        prop_assert!(poisson_epsilon(q, sigma, steps * 2, delta) >= base);
        prop_assert!(poisson_epsilon((q * 1.5).min(1.0), sigma, steps, delta) >= base);
        prop_assert!(poisson_epsilon(q, sigma * 1.2, steps, delta) <= base);
        prop_assert!(poisson_epsilon(q, sigma, steps, delta * 10.0) <= base);
    }
}

// 5. Conversions: ε↔δ round trip (dp-accounting's grid), improved <= classical, soundness
// against the exact Gaussian (Balle & Wang 2018), zCDP orderings.
#[test]
fn epsilon_delta_round_trip_on_dp_accountings_grid() {
    for q in [0.0, 0.01, 0.1, 0.8, 1.0] {
        for sigma in [0.0, 0.1, 1.0, 10.0, 100.0] {
            let accountant = accountant_with(&poisson(q, sigma), 1);
            for delta in [0.99, 0.9, 0.5, 0.1, 1e-2, 1e-3, 1e-5, 1e-8, 1e-12] {
                let eps = accountant.epsilon_and_order(delta).unwrap();
                if !eps.value.is_finite() {
                    continue;
                }
                let back = accountant.delta_and_order(eps.value).unwrap().value;
                if eps.value > 0.0 {
                    assert!(
                        (back - delta).abs() <= 1e-9 * delta,
                        "q={q} sigma={sigma} delta={delta}: eps {eps:?} back {back}"
                    );
                } else {
                    assert!(
                        back <= delta * (1.0 + 1e-12),
                        "q={q} sigma={sigma}: {back} > {delta}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(32))]
    #[test]
    fn conversions_are_sound_and_ordered(sigma in 0.3f64..30.0, steps in 1u64..1000, delta_exp in -12.0f64..-2.0) {
        let delta = 10f64.powf(delta_exp);
        let gaussian = accountant_with(&DpEvent::Gaussian { noise_multiplier: sigma }, steps);
        let orders = Orders::dp_accounting_default();
        let improved = epsilon_from_rdp(orders.as_slice(), gaussian.rdp(), delta).unwrap().value;
        let classical = epsilon_from_rdp_classical(orders.as_slice(), gaussian.rdp(), delta).unwrap().value;
        prop_assert!(improved <= classical);
        let effective = sigma / (steps as f64).sqrt();
        let exact = analytic_gaussian::epsilon(effective, delta).unwrap();
        let zcdp = Zcdp::from_gaussian(sigma).unwrap().compose_times(steps);
        let cks = zcdp.epsilon(delta).unwrap();
        let bs = zcdp.epsilon_bun_steinke(delta).unwrap();
        prop_assert!(exact <= cks * (1.0 + 1e-12), "exact {} cks {}", exact, cks);
        prop_assert!(cks <= bs * (1.0 + 1e-12), "cks {} bs {}", cks, bs);
        prop_assert!(cks <= improved * (1.0 + 1e-12), "continuous {} grid {}", cks, improved);
        // Soundness: the RDP δ(ε) is never below the exact Gaussian δ(ε).
        for eps in [0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 49.0] {
            let rdp_delta = delta_from_rdp(orders.as_slice(), gaussian.rdp(), eps).unwrap().value;
            let exact_delta = analytic_gaussian::delta(effective, eps).unwrap();
            prop_assert!(rdp_delta >= exact_delta * (1.0 - 1e-9), "eps {}: {} < {}", eps, rdp_delta, exact_delta);
        }
    }
}

// 7. Calibration: feasible, minimal, monotone.
proptest! {
    #![proptest_config(config(4))]
    #[test]
    fn calibration_feasible_minimal_monotone(q in 0.005f64..0.1, steps in 50u64..3000, eps in 0.5f64..8.0) {
        let delta = 1e-5;
        let tolerance = 1e-9;
        let sigma_for = |e: f64, q: f64, t: u64| calibrate_noise_multiplier(e, tolerance, |s| {
            Ok(poisson_epsilon(q, s, t, delta))
        }).unwrap();
        let sigma = sigma_for(eps, q, steps);
        prop_assert!(poisson_epsilon(q, sigma, steps, delta) <= eps);
        prop_assert!(poisson_epsilon(q, sigma * (1.0 - 2.0 * tolerance), steps, delta) > eps);
        prop_assert!(sigma_for(eps * 1.5, q, steps) <= sigma);
        prop_assert!(sigma_for(eps, q, steps * 2) >= sigma);
        prop_assert!(sigma_for(eps, (q * 1.5).min(1.0), steps) >= sigma);
    }
}

// 8. Input validation: typed errors naming the value, never a panic or NaN.
#[test]
fn invalid_inputs_give_typed_errors() {
    assert_eq!(
        poisson_subsampled_gaussian_rdp(1.5, 1.0, 2.0),
        Err(AccountantError::InvalidSamplingRate(1.5))
    );
    assert_eq!(
        poisson_subsampled_gaussian_rdp(0.1, -1.0, 2.0),
        Err(AccountantError::InvalidNoiseMultiplier(-1.0))
    );
    assert_eq!(
        poisson_subsampled_gaussian_rdp(0.1, 1.0, 0.5),
        Err(AccountantError::InvalidOrder(0.5))
    );
    let accountant = accountant_with(&poisson(0.1, 1.0), 10);
    assert_eq!(
        accountant.epsilon_and_order(0.0),
        Err(AccountantError::InvalidDelta(0.0))
    );
    assert_eq!(
        accountant.epsilon_and_order(1.0),
        Err(AccountantError::InvalidDelta(1.0))
    );
    assert!(
        matches!(accountant.epsilon_and_order(f64::NAN), Err(AccountantError::InvalidDelta(d)) if d.is_nan())
    );
    let message = AccountantError::InvalidSamplingRate(1.5).to_string();
    assert!(message.contains("1.5"), "{message}");
}

#[test]
fn unsupported_event_relation_pairs_are_refused() {
    let mut add_remove = RdpAccountant::new(
        Orders::dp_accounting_default(),
        NeighboringRelation::AddOrRemoveOne,
        RdpMethod::Exact,
    );
    let fixed = DpEvent::FixedBatchGaussian {
        dataset_size: 100,
        batch_size: 10,
        noise_multiplier: 1.0,
    };
    assert!(matches!(
        add_remove.compose(&fixed, 1),
        Err(AccountantError::UnsupportedEvent { .. })
    ));
    assert!(add_remove.ledger().entries.is_empty());
    let mut replace = RdpAccountant::new(
        Orders::dp_accounting_default(),
        NeighboringRelation::ReplaceOne,
        RdpMethod::Exact,
    );
    assert!(matches!(
        replace.compose(&poisson(0.1, 1.0), 1),
        Err(AccountantError::UnsupportedEvent { .. })
    ));
    replace.compose(&fixed, 5).unwrap();
    assert!(replace.epsilon_and_order(1e-5).unwrap().value > 0.0);
}

// Fuzz: arbitrary f64 inputs never panic and never produce NaN.
proptest! {
    #![proptest_config(config(200))]
    #[test]
    fn arbitrary_inputs_never_panic_or_nan(q in any::<f64>(), sigma in any::<f64>(), alpha in any::<f64>(),
                                           delta in any::<f64>(), eps in any::<f64>()) {
        let alpha = if alpha.abs() > 2000.0 { alpha.signum() * 2000.0 } else { alpha };
        if let Ok(v) = poisson_subsampled_gaussian_rdp(q, sigma, alpha) { prop_assert!(!v.is_nan()); }
        if let Ok(v) = poisson_subsampled_gaussian_rdp_compat(q, sigma, alpha) { prop_assert!(!v.is_nan()); }
        if let Ok(v) = Zcdp::new(q.abs()).and_then(|z| z.epsilon(delta)) { prop_assert!(!v.is_nan()); }
        if let Ok(v) = Zcdp::new(q.abs()).and_then(|z| z.delta(eps)) { prop_assert!(!v.is_nan()); }
        if let Ok(v) = analytic_gaussian::epsilon(sigma, delta) { prop_assert!(!v.is_nan()); }
        if let Ok(v) = analytic_gaussian::delta(sigma, eps) { prop_assert!(!v.is_nan()); }
        let mut accountant = RdpAccountant::new(
            Orders::custom(vec![1.5, 2.0, 16.0]).unwrap(), NeighboringRelation::AddOrRemoveOne, RdpMethod::Exact);
        if accountant.compose(&poisson(q, sigma), 10).is_ok() {
            if let Ok(v) = accountant.epsilon_and_order(delta) { prop_assert!(!v.value.is_nan()); }
            if let Ok(v) = accountant.delta_and_order(eps) { prop_assert!(!v.value.is_nan()); }
        }
    }
}

#[test]
fn overflow_free_at_extreme_orders_and_small_noise() {
    for (q, sigma, alpha) in [
        (0.5, 0.3, 1024.0),
        (0.999, 0.3, 1024.0),
        (0.01, 0.3, 1000.5),
        (0.1, 0.05, 64.0),
    ] {
        let v = poisson_subsampled_gaussian_rdp(q, sigma, alpha).unwrap();
        assert!(
            v.is_finite() && v > 0.0,
            "q={q} sigma={sigma} alpha={alpha}: {v}"
        );
        assert!(v <= alpha / (2.0 * sigma * sigma));
    }
}
