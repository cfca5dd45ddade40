//! One test per claim of `crates/theory/README.md`. Each claim's false-failure rate is at most
//! 1e-6 (Bonferroni over its CLT comparisons, see `theory::stats`); failure messages print the
//! statistic, bound, sample count and seed of every comparison.

use theory::claims::{self, ClaimReport};

fn assert_claim(result: theory::Result<ClaimReport>) {
    let report = result.unwrap_or_else(|e| panic!("experiment could not run: {e}"));
    println!(
        "claim {}: {}\n{}",
        report.id,
        report.title,
        report.details()
    );
    assert!(
        report.passed(),
        "claim {} failed:\n{}",
        report.id,
        report.details()
    );
}

#[test]
fn claim1_two_point_estimator() {
    assert_claim(claims::claim1_two_point());
}

#[test]
fn claim2_clipping_bias() {
    assert_claim(claims::claim2_clipping());
}

#[test]
fn claim3_smoothing_bounds() {
    assert_claim(claims::claim3_smoothing());
}

#[test]
fn claim4_convergence_bound() {
    assert_claim(claims::claim4_convergence());
}

#[test]
fn claim5_effective_rank() {
    assert_claim(claims::claim5_dimension());
}

#[test]
fn claim6_stagewise_vs_constant() {
    assert_claim(claims::claim6_stagewise());
}

#[test]
fn claim7_pruned_subspace() {
    assert_claim(claims::claim7_pruned_subspace());
}

#[test]
fn claim8_privacy_utility() {
    assert_claim(claims::claim8_privacy_utility());
}
