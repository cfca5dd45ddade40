//! Hostile inputs through the accountant's public API: over the whole valid input space every
//! accountant answers with ε >= 0 and δ in [0, 1] (never NaN, never negative) or a clear error,
//! and every call returns within seconds. 10 400 property cases in all (3 × 3200 + 800 PRV),
//! each composing and querying up to four accountants, plus the regression
//! cases that once gave negative probabilities or ran for minutes.

use accountant::rdp::{
    fixed_batch_gaussian_rdp, poisson_subsampled_gaussian_rdp,
    poisson_subsampled_gaussian_rdp_compat,
};
use accountant::{
    AccountantError, AccountantKind, DpEvent, NeighboringRelation, PrvAccountant, SampledGaussian,
    Sampling,
};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// The slowest call allowed (the acceptance bound; calls take milliseconds here).
const CALL_LIMIT: Duration = Duration::from_secs(10);

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `f`, failing if it took longer than [`CALL_LIMIT`].
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let value = f();
    let took = start.elapsed();
    assert!(took < CALL_LIMIT, "{what} took {took:?}");
    value
}

/// A probability-like result must be a number in range; an error is fine.
fn check_epsilon(what: &str, value: Result<f64, AccountantError>) -> Result<(), TestCaseError> {
    if let Ok(epsilon) = value {
        prop_assert!(epsilon >= 0.0, "{what}: epsilon = {epsilon}");
    }
    Ok(())
}

fn check_delta(what: &str, value: Result<f64, AccountantError>) -> Result<(), TestCaseError> {
    if let Ok(delta) = value {
        prop_assert!((0.0..=1.0).contains(&delta), "{what}: delta = {delta}");
    }
    Ok(())
}

/// Sampling rates across [0, 1], with the ends and the extremes.
fn sampling_rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        0.0..=1.0f64,
        (-300.0..0.0f64).prop_map(|e| 10f64.powf(e)),
        (1e-12..1e-3f64).prop_map(|d| 1.0 - d),
    ]
}

/// Noise multipliers from 0 to +∞, log-spread over f64's range.
fn noise_multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(f64::INFINITY),
        (-300.0..300.0f64).prop_map(|e| 10f64.powf(e)),
        0.3..30.0f64,
    ]
}

fn delta() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-300.0..-1e-9f64).prop_map(|e| 10f64.powf(e)),
        1e-9..(1.0 - 1e-12),
    ]
}

fn epsilon() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        (-300.0..300.0f64).prop_map(|e| 10f64.powf(e)),
        0.0..20.0f64,
    ]
}

fn steps() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..100,
        (0.0..18.0f64).prop_map(|e| 10f64.powf(e) as u64 + 1)
    ]
}

fn order() -> impl Strategy<Value = f64> {
    prop_oneof![
        1.0001..64.0f64,
        (0.0..300.0f64).prop_map(|e| 1.0 + 10f64.powf(e)),
        (1u64..100_000).prop_map(|a| a as f64 + 1.0),
        Just(f64::INFINITY),
    ]
}

proptest! {
    #![proptest_config(config(3200))]

    /// RDP (exact and dp-accounting-compatible), zCDP and the analytic Gaussian over any valid
    /// Poisson-sampled or full-batch Gaussian composition.
    #[test]
    fn rdp_zcdp_analytic_give_valid_epsilon_and_delta(
        q in sampling_rate(),
        sigma in noise_multiplier(),
        count in steps(),
        delta in delta(),
        eps in epsilon(),
    ) {
        let event = if q == 1.0 {
            DpEvent::Gaussian { noise_multiplier: sigma }
        } else {
            DpEvent::PoissonSampledGaussian { sampling_rate: q, noise_multiplier: sigma }
        };
        for kind in [AccountantKind::Rdp, AccountantKind::RdpCompat, AccountantKind::Zcdp, AccountantKind::Analytic] {
            let what = format!("{kind} q={q} sigma={sigma} T={count} delta={delta} eps={eps}");
            let mut accountant = kind.build(NeighboringRelation::AddOrRemoveOne, 0.1);
            if timed(&what, || accountant.compose(&event, count)).is_err() {
                continue;
            }
            check_epsilon(&what, timed(&what, || accountant.epsilon(delta)))?;
            check_delta(&what, timed(&what, || accountant.delta(eps)))?;
        }
    }

    /// One-step RDP at any order, including huge and fractional ones.
    #[test]
    fn one_step_rdp_is_non_negative_at_any_order(
        q in sampling_rate(),
        sigma in noise_multiplier(),
        alpha in order(),
    ) {
        let what = format!("q={q} sigma={sigma} alpha={alpha}");
        check_epsilon(&what, timed(&what, || poisson_subsampled_gaussian_rdp(q, sigma, alpha)))?;
        check_epsilon(&what, timed(&what, || poisson_subsampled_gaussian_rdp_compat(q, sigma, alpha)))?;
        check_epsilon(&what, timed(&what, || fixed_batch_gaussian_rdp(q, sigma, alpha)))?;
    }

    /// The three sampling schemes through `SampledGaussian` (the trainer's and the CLI's path).
    #[test]
    fn sampled_gaussian_epsilon_is_valid_for_every_sampling(
        n in 1u64..100_000,
        batch_fraction in 0.0..=1.0f64,
        sigma in noise_multiplier(),
        count in steps(),
        delta in delta(),
        releases in 1u64..4,
    ) {
        let batch_size = ((batch_fraction * n as f64).ceil() as u64).clamp(1, n);
        for sampling in Sampling::ALL {
            let mechanism = SampledGaussian { sampling, dataset_size: n, batch_size, noise_multiplier: sigma };
            let what = format!("{mechanism:?} T={count} delta={delta}");
            check_epsilon(&what, timed(&what, || mechanism.epsilon(AccountantKind::Rdp, 0.1, count, releases, delta)))?;
        }
    }
}

proptest! {
    #![proptest_config(config(800))]

    /// The PRV accountant over its whole input space at its default error budget; grids beyond
    /// its limit are refused up front (a cheap error), never built.
    #[test]
    fn prv_gives_valid_epsilon_and_delta(
        q in sampling_rate(),
        sigma in noise_multiplier(),
        count in prop_oneof![1u64..2000, (0.0..12.0f64).prop_map(|e| 10f64.powf(e) as u64 + 1)],
        delta in delta(),
        eps in epsilon(),
        eps_error in prop_oneof![Just(0.1), 0.01..1.0f64],
    ) {
        let what = format!("prv q={q} sigma={sigma} T={count} delta={delta} eps={eps} eps_error={eps_error}");
        let mut accountant = AccountantKind::Prv.build(NeighboringRelation::AddOrRemoveOne, eps_error);
        let event = DpEvent::PoissonSampledGaussian { sampling_rate: q, noise_multiplier: sigma };
        if timed(&what, || accountant.compose(&event, count)).is_ok() {
            check_epsilon(&what, timed(&what, || accountant.epsilon(delta)))?;
            check_delta(&what, timed(&what, || accountant.delta(eps)))?;
        }
    }
}

/// PRV ε at a large δ, where the true ε is 0: it was -0.584 at δ = 0.5.
#[test]
fn prv_epsilon_is_zero_not_negative_at_large_delta() {
    for delta in [0.3, 0.5, 0.9] {
        let prv =
            PrvAccountant::poisson_subsampled_gaussian(0.01, 1.0, 1000, 0.1, delta * 1e-3).unwrap();
        let bounds = prv.epsilon(delta, 1000).unwrap();
        assert!(
            bounds.lower >= 0.0 && bounds.estimate >= 0.0 && bounds.upper >= 0.0,
            "delta {delta}: {bounds:?}"
        );
        // δ(0) is the total variation distance of the composition; the RDP accountant (a
        // looser, independent bound) certifies that ε = 0 suffices at these δ too.
        let mut rdp = AccountantKind::Rdp.build(NeighboringRelation::AddOrRemoveOne, 0.1);
        rdp.compose(
            &DpEvent::PoissonSampledGaussian {
                sampling_rate: 0.01,
                noise_multiplier: 1.0,
            },
            1000,
        )
        .unwrap();
        if rdp.epsilon(delta).unwrap() == 0.0 {
            assert_eq!(bounds.upper, 0.0, "delta {delta}");
        }
    }
}

/// PRV δ at a huge σ: it was -9.6e-16 (FFT roundoff below zero).
#[test]
fn prv_delta_is_non_negative_under_fft_roundoff() {
    let mut prv = AccountantKind::Prv.build(NeighboringRelation::AddOrRemoveOne, 0.1);
    prv.compose(
        &DpEvent::PoissonSampledGaussian {
            sampling_rate: 0.01,
            noise_multiplier: 1e6,
        },
        1000,
    )
    .unwrap();
    let delta = prv.delta(1.0).unwrap();
    // The upper bound carries the FFT noise floor on every grid point above ε: ~1e-10.
    assert!((0.0..=1e-9).contains(&delta), "{delta}");
    let bounds = PrvAccountant::poisson_subsampled_gaussian(0.01, 1e6, 1000, 0.1, 1e-15)
        .unwrap()
        .delta(1.0, 1000)
        .unwrap();
    assert!(
        0.0 <= bounds.lower && bounds.lower <= bounds.estimate && bounds.estimate <= bounds.upper,
        "{bounds:?}"
    );
}

/// Huge orders: 1e12 took 26 s and 1e300 ran past 400 s. Both now take the closed form, which
/// for integer α brackets the exact value between ℓ/(α-1) and (ℓ + x)/(α-1).
#[test]
fn huge_orders_answer_within_seconds() {
    let (q, sigma) = (0.0625, 1.0);
    for alpha in [1e12, 1e15, 1e100, 1e300] {
        let value = timed("huge order", || {
            poisson_subsampled_gaussian_rdp(q, sigma, alpha).unwrap()
        });
        let lower = alpha / (2.0 * sigma * sigma) + alpha / (alpha - 1.0) * q.ln();
        let upper = alpha / (2.0 * sigma * sigma);
        assert!(
            lower <= value && value <= upper && (value - lower) <= 1e-12 * lower,
            "alpha {alpha}: {value} not in [{lower}, {upper}]"
        );
    }
    // The closed form agrees with the finite sum where both apply.
    let summed = poisson_subsampled_gaussian_rdp(0.3, 0.2, 20_000.0).unwrap();
    let lower = 20_000.0 / 0.08 + 20_000.0 / 19_999.0 * 0.3f64.ln();
    assert!(
        (summed - lower).abs() <= 1e-12 * lower,
        "{summed} vs {lower}"
    );
}

/// A huge order the closed form cannot bracket is refused with the limit, never computed.
#[test]
fn huge_order_without_closed_form_is_refused_with_the_limit() {
    let err = timed("refusal", || {
        poisson_subsampled_gaussian_rdp(0.01, 1e200, 1e300).unwrap_err()
    });
    let text = err.to_string();
    assert!(
        matches!(err, AccountantError::TooExpensive { .. }) && text.contains("1e15"),
        "{text}"
    );
}

/// A tiny σ gave "quadrature did not converge"; ε is huge (finite or +∞), and says so.
#[test]
fn tiny_noise_gives_a_huge_epsilon_not_an_error() {
    for kind in [AccountantKind::Rdp, AccountantKind::RdpCompat] {
        let mut accountant = kind.build(NeighboringRelation::AddOrRemoveOne, 0.1);
        accountant
            .compose(
                &DpEvent::PoissonSampledGaussian {
                    sampling_rate: 0.01,
                    noise_multiplier: 1e-6,
                },
                1000,
            )
            .unwrap();
        let epsilon = timed("tiny sigma", || accountant.epsilon(1e-5)).unwrap();
        assert!(epsilon > 1e9, "{kind}: {epsilon}");
    }
}

/// The PRV grid for a tiny ε error is refused before it is built, naming points and cost
/// (`privacy table --eps-error 6.6e-4` ran for 379 s).
#[test]
fn prv_refuses_an_oversized_grid_with_its_cost() {
    let err = timed("oversized grid", || {
        PrvAccountant::poisson_subsampled_gaussian(0.0625, 1.0, 6000, 1e-5, 1e-8).unwrap_err()
    });
    let text = err.to_string();
    assert!(text.contains("points") && text.contains(" s "), "{text}");
}

/// Calibrating for ε = 0 is refused for the right reason (it said "must be finite and >= 0").
#[test]
fn calibration_to_zero_epsilon_says_why() {
    let mechanism = SampledGaussian {
        sampling: Sampling::Poisson,
        dataset_size: 1000,
        batch_size: 10,
        noise_multiplier: 1.0,
    };
    let err = mechanism
        .calibrate(AccountantKind::Rdp, 0.1, 100, 1, 0.0, 1e-5, 1e-6)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("epsilon > 0") && !err.contains("finite and >= 0"),
        "{err}"
    );
}

/// Shuffled disjoint batches: each epoch is one full Gaussian release per noisy value, so T
/// steps of ⌈n/B⌉ per epoch cost exactly what ⌈T / ⌈n/B⌉⌉ unsampled Gaussian releases cost
/// (the analytic Gaussian with σ/√epochs is the independent reference).
#[test]
fn shuffled_batches_are_accounted_per_epoch() {
    let mechanism = SampledGaussian {
        sampling: Sampling::Shuffled,
        dataset_size: 1000,
        batch_size: 64,
        noise_multiplier: 4.0,
    };
    // 16 steps per epoch; 100 steps touch 7 epochs; 2 releases per step.
    let entry = mechanism.composition(100, 2).unwrap();
    assert_eq!(entry.count, 14);
    assert_eq!(
        entry.event,
        DpEvent::Gaussian {
            noise_multiplier: 4.0
        }
    );
    let analytic = mechanism
        .epsilon(AccountantKind::Analytic, 0.1, 100, 2, 1e-5)
        .unwrap();
    let reference = accountant::analytic_gaussian::epsilon(4.0 / 14f64.sqrt(), 1e-5).unwrap();
    assert_eq!(analytic, reference);
    // RDP and PRV answer the same composition, each within its slack above the exact value.
    let rdp = mechanism
        .epsilon(AccountantKind::Rdp, 0.1, 100, 2, 1e-5)
        .unwrap();
    let prv = mechanism
        .epsilon(AccountantKind::Prv, 0.1, 100, 2, 1e-5)
        .unwrap();
    assert!(
        rdp >= reference && rdp < 1.2 * reference,
        "{rdp} vs {reference}"
    );
    assert!(
        prv >= reference && prv < reference + 0.21,
        "{prv} vs {reference}"
    );
    // Shuffling is never cheaper than the per-step fixed-size bound it used to be booked as.
    let fixed = SampledGaussian {
        sampling: Sampling::FixedSize,
        ..mechanism
    };
    assert!(
        rdp > fixed
            .epsilon(AccountantKind::Rdp, 0.1, 100, 2, 1e-5)
            .unwrap()
    );
}

/// Each accountant refuses what it does not cover instead of answering for something else.
#[test]
fn accountants_refuse_unsupported_events() {
    let poisson = DpEvent::PoissonSampledGaussian {
        sampling_rate: 0.1,
        noise_multiplier: 1.0,
    };
    let fixed = DpEvent::FixedBatchGaussian {
        dataset_size: 100,
        batch_size: 10,
        noise_multiplier: 1.0,
    };
    let zcdp = AccountantKind::Zcdp.build(NeighboringRelation::AddOrRemoveOne, 0.1);
    assert!(!zcdp.supports(&poisson));
    let analytic = AccountantKind::Analytic.build(NeighboringRelation::AddOrRemoveOne, 0.1);
    assert!(!analytic.supports(&poisson));
    let prv = AccountantKind::Prv.build(NeighboringRelation::ReplaceOne, 0.1);
    assert!(!prv.supports(&fixed));
    assert!(!prv.supports(&poisson));
    let rdp = AccountantKind::Rdp.build(NeighboringRelation::ReplaceOne, 0.1);
    assert!(rdp.supports(&fixed) && !rdp.supports(&poisson));
    // The same names parse back, case-insensitively; unknown names list the valid ones.
    for kind in AccountantKind::ALL {
        assert_eq!(
            kind.name().to_uppercase().parse::<AccountantKind>(),
            Ok(kind)
        );
    }
    let err = "rdpx".parse::<AccountantKind>().unwrap_err();
    assert!(err.contains("rdpx") && err.contains("rdp-compat"), "{err}");
}
