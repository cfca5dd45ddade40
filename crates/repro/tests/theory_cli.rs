//! `repro theory variance` contract: JSON keys, agreement with the closed form, bad input.

mod common;

use std::process::Command;

fn repro() -> Command {
    Command::new(env!("CARGO_BIN_EXE_repro"))
}

#[test]
fn variance_json_matches_closed_form() {
    let output = repro()
        .args([
            "theory",
            "variance",
            "--dim",
            "10",
            "--directions",
            "2",
            "--samples",
            "20000",
        ])
        .args(["--seed", "11", "--noise-std", "0.5", "--json"])
        .output()
        .expect("run repro");
    common::assert_success(&output);
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    let empirical = value["empirical"].as_f64().expect("empirical");
    let theory = value["theory"].as_f64().expect("theory");
    let grad_norm_sq = value["grad_norm_sq"].as_f64().expect("grad_norm_sq");
    // Closed form (d + n + 1)/n ||grad||^2 + d s^2 / n with d = 10, n = 2, s = 0.5.
    let expected = 13.0 / 2.0 * grad_norm_sq + 10.0 * 0.25 / 2.0;
    assert!(
        (theory - expected).abs() <= 1e-9 * expected,
        "theory {theory} vs {expected}"
    );
    // ||g||^2 has relative standard deviation below 2 here, so the standard error of the mean
    // over 20000 draws is below 1.5%; 10% is more than 6 standard errors (seeded, deterministic).
    let relative = (empirical - theory).abs() / theory;
    assert!(
        relative < 0.10,
        "empirical {empirical} vs theory {theory}: relative {relative}"
    );
}

#[test]
fn variance_rejects_zero_directions_with_the_value() {
    common::assert_fails_naming(
        "theory variance --dim 10 --directions 0 --samples 10 --seed 1 --json",
        "directions must be >= 1, got 0",
    );
}
