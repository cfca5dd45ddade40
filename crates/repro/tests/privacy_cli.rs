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
        "fixed-size",
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
        "epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 --sampling fixed-size --json",
        "epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 --sampling fixed-size --dataset-size 100 --accountant prv --json",
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
    // clap refuses an unknown name, naming it and the valid ones.
    let out = repro_line(
        "epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 --accountant rdpx",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rdpx") && stderr.contains("rdp-compat"),
        "{stderr}"
    );
    let out = repro_line(cases[0].trim_end_matches(" --json"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1.5"));
}

/// Runs `repro privacy LINE`, failing if it takes 5 s or more.
fn timed_line(line: &str) -> Output {
    let start = std::time::Instant::now();
    let out = repro_line(line);
    let took = start.elapsed();
    assert!(took.as_secs_f64() < 5.0, "{line}: {took:?}");
    out
}

#[test]
fn prv_never_prints_a_negative_probability() {
    // ε was -0.584 at δ = 0.5 (the exact ε is 0 there); δ was -9.6e-16 at σ = 1e6.
    for delta in ["0.3", "0.5", "0.9"] {
        let v = last_json(&timed_line(&format!(
            "epsilon --sampling-rate 0.01 --steps 1000 --noise-multiplier 1 --delta {delta} --accountant prv --json"
        )));
        assert_eq!(v["epsilon"].as_f64(), Some(0.0), "delta {delta}: {v}");
    }
    let v = last_json(&timed_line(
        "delta --sampling-rate 0.01 --steps 1000 --noise-multiplier 1e6 --epsilon 1 --accountant prv --json",
    ));
    let delta = v["delta"].as_f64().unwrap();
    assert!((0.0..1e-9).contains(&delta), "{v}");
}

#[test]
fn huge_orders_answer_in_seconds() {
    // 1e12 took 26 s; 1e300 ran past 400 s. RDP(α) -> α/(2σ²) + ln q as α grows.
    for order in ["1e12", "1e300"] {
        let v = last_json(&timed_line(&format!(
            "rdp --sampling-rate 0.0625 --noise-multiplier 1 --order {order} --json"
        )));
        let alpha: f64 = order.parse().unwrap();
        let rdp = v["rdp"].as_f64().unwrap();
        assert!(
            rdp <= alpha / 2.0 && rdp >= alpha / 2.0 + 0.0625f64.ln() * 1.000001,
            "{order}: {v}"
        );
    }
}

#[test]
fn unbounded_results_print_inf_not_null() {
    let out = timed_line(
        "epsilon --sampling-rate 0.01 --steps 1000 --noise-multiplier 0 --delta 1e-5 --json",
    );
    assert!(out.status.success());
    assert_eq!(last_json(&out)["epsilon"], "inf");
    let out =
        timed_line("epsilon --sampling-rate 0.01 --steps 1000 --noise-multiplier 0 --delta 1e-5");
    assert!(String::from_utf8_lossy(&out.stdout).contains("epsilon = inf"));
}

#[test]
fn tiny_noise_gives_a_huge_epsilon() {
    // It said "quadrature did not converge".
    let out = timed_line(
        "epsilon --sampling-rate 0.01 --steps 1000 --noise-multiplier 1e-6 --delta 1e-5 --json",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(last_json(&out)["epsilon"].as_f64().unwrap() > 1e12);
}

#[test]
fn calibrating_to_zero_epsilon_says_why() {
    let out = timed_line("sigma --sampling-rate 0.01 --steps 1000 --epsilon 0 --delta 1e-5");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("epsilon > 0") && !stderr.contains("finite and >= 0"),
        "{stderr}"
    );
}

#[test]
fn a_failing_or_too_costly_table_leaves_the_old_file_intact() {
    let dir = std::env::temp_dir().join(format!("dpzo-privacy-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sigma.csv");
    std::fs::write(&path, "a good table\n").unwrap();
    let out = dir.to_str().unwrap();
    for eps_error in ["0", "6.6e-4", "nan"] {
        let result = timed_line(&format!("table --out {out} --eps-error {eps_error}"));
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{eps_error}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a good table\n");
    }
    let stderr = String::from_utf8_lossy(
        &timed_line(&format!("table --out {out} --eps-error 6.6e-4")).stderr,
    )
    .into_owned();
    assert!(
        stderr.contains(" s") && stderr.contains("limit"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
