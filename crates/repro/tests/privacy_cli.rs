//! `repro privacy` JSON contract and invalid-input exit codes (runs the built binary).

mod common;

use std::process::{Command, Output};

fn repro(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .arg("privacy")
        .args(args)
        .output()
        .expect("the repro binary runs")
}

/// `repro privacy` with a whitespace-separated command line.
fn repro_line(line: &str) -> Output {
    repro(&line.split_whitespace().collect::<Vec<_>>())
}

use common::last_json;

#[test]
fn epsilon_json_contract() {
    let out = repro_line(
        "epsilon --sampling-rate 0.01 --noise-multiplier 1.0 --steps 1000 --delta 1e-5 --json",
    );
    let v = last_json(&out);
    let epsilon = v["epsilon"].as_f64().expect("epsilon is a number");
    assert!(epsilon > 0.5 && epsilon < 5.0, "{v}");
    assert!(v["order"].as_f64().is_some(), "{v}");
    assert_eq!(v["accountant"], "rdp");
    // Full-batch accountants return a null order.
    let out = repro(&[
        "epsilon",
        "--sampling-rate",
        "1",
        "--noise-multiplier",
        "10",
        "--steps",
        "10",
        "--delta",
        "1e-5",
        "--accountant",
        "analytic",
        "--json",
    ]);
    let v = last_json(&out);
    assert!(
        v["order"].is_null() && v["epsilon"].as_f64().unwrap() > 0.0,
        "{v}"
    );
}

#[test]
fn delta_sigma_rdp_json_contracts() {
    let v = last_json(&repro(&[
        "delta",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.0",
        "--steps",
        "1000",
        "--epsilon",
        "2",
        "--json",
    ]));
    let delta = v["delta"].as_f64().unwrap();
    assert!(delta > 0.0 && delta < 1.0, "{v}");
    let v = last_json(&repro(&[
        "sigma",
        "--epsilon",
        "2",
        "--delta",
        "1e-5",
        "--sampling-rate",
        "0.01",
        "--steps",
        "1000",
        "--json",
    ]));
    let sigma = v["noise_multiplier"].as_f64().unwrap();
    // Feasible: ε at the returned σ is at most 2.
    let v = last_json(&repro(&[
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        &sigma.to_string(),
        "--steps",
        "1000",
        "--delta",
        "1e-5",
        "--json",
    ]));
    assert!(
        v["epsilon"].as_f64().unwrap() <= 2.0,
        "{v} at sigma {sigma}"
    );
    // q = 1: RDP(α) = α/(2σ²) exactly (Mironov 2017 Prop. 7).
    let v = last_json(&repro(&[
        "rdp",
        "--sampling-rate",
        "1",
        "--noise-multiplier",
        "2",
        "--order",
        "3",
        "--json",
    ]));
    assert_eq!(v["rdp"].as_f64().unwrap(), 3.0 / 8.0);
    let v = last_json(&repro(&[
        "epsilon",
        "--sampling-rate",
        "0.0625",
        "--noise-multiplier",
        "1.0",
        "--steps",
        "100",
        "--delta",
        "1e-5",
        "--sampling",
        "fixed",
        "--dataset-size",
        "1024",
        "--json",
    ]));
    assert!(v["epsilon"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn human_readable_output_without_json() {
    let out =
        repro_line("epsilon --sampling-rate 0.01 --noise-multiplier 1.0 --steps 10 --delta 1e-5");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("epsilon ="));
}

#[test]
fn invalid_inputs_exit_nonzero_with_one_line() {
    // One command line per case, split on whitespace.
    let cases = [
        "epsilon --sampling-rate 1.5 --noise-multiplier 1 --steps 10 --delta 1e-5 --json",
        "epsilon --sampling-rate 0.1 --noise-multiplier -1 --steps 10 --delta 1e-5 --json",
        "epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 10 --delta 1.5 --json",
        "epsilon --sampling-rate NaN --noise-multiplier 1 --steps 10 --delta 1e-5 --json",
        "epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 --accountant zcdp --json",
        "epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 --sampling fixed --json",
        "rdp --sampling-rate 0.1 --noise-multiplier 1 --order 0.5 --json",
    ];
    for args in cases {
        let out = repro_line(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    }
    let out = repro_line(cases[0].trim_end_matches(" --json"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1.5"));
}
