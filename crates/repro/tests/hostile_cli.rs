//! Hostile inputs through the `repro privacy` command line: 520 seeded random command lines
//! (valid, extreme and malformed values of every flag) run through the built binary. Every call
//! must end within 10 s, never panic, and either succeed with ε >= 0 / δ in [0, 1] / σ > 0
//! (never NaN, never negative; an unbounded value is the string "inf") or fail with exit code
//! 1 (2 for clap's usage errors) and one `error:` line. Two workers keep the whole run near a
//! minute on the 2-core CI machine; the slowest call is printed.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CASES: usize = 520;
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// SplitMix64: a seeded, dependency-free generator (reproducible cases).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[(self.next() % options.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// 10^u for u uniform in [low, high).
    fn log_uniform(&mut self, low: f64, high: f64) -> String {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        format!("{:e}", 10f64.powf(low + u * (high - low)))
    }
}

fn probability(rng: &mut Rng) -> String {
    if rng.chance(15) {
        rng.pick(&[
            "0",
            "1",
            "0.5",
            "0.999999",
            "1e-300",
            "-0.1",
            "1.0000001",
            "NaN",
            "inf",
            "-inf",
            "abc",
            "",
        ])
        .to_string()
    } else {
        rng.log_uniform(-12.0, 0.0)
    }
}

fn positive(rng: &mut Rng, low: f64, high: f64) -> String {
    if rng.chance(12) {
        rng.pick(&[
            "0", "-1", "1e-300", "1e300", "NaN", "inf", "-inf", "1e-6", "x", "5e-324",
        ])
        .to_string()
    } else {
        rng.log_uniform(low, high)
    }
}

fn steps(rng: &mut Rng) -> String {
    if rng.chance(10) {
        rng.pick(&[
            "0",
            "-5",
            "1",
            "18446744073709551615",
            "18446744073709551616",
            "1.5",
            "1e3",
        ])
        .to_string()
    } else {
        format!("{}", 1 + rng.next() % 100_000)
    }
}

/// One random `repro privacy …` argument list.
fn case(rng: &mut Rng) -> Vec<String> {
    let command = rng.pick(&[
        "epsilon", "epsilon", "delta", "delta", "sigma", "rdp", "bogus",
    ]);
    let mut args: Vec<String> = vec![command.into()];
    let flag = |args: &mut Vec<String>, name: &str, value: String| {
        args.push(format!("--{name}"));
        if !value.is_empty() {
            args.push(value);
        }
    };
    if command == "rdp" {
        flag(&mut args, "sampling-rate", probability(rng));
        flag(&mut args, "noise-multiplier", positive(rng, -8.0, 8.0));
        let order = if rng.chance(40) {
            rng.pick(&[
                "1",
                "1.0000001",
                "2",
                "1e12",
                "1e300",
                "inf",
                "NaN",
                "0.5",
                "20000",
                "20001.5",
            ])
            .to_string()
        } else {
            rng.log_uniform(0.0, 20.0)
        };
        flag(&mut args, "order", order);
    } else {
        flag(&mut args, "sampling-rate", probability(rng));
        flag(&mut args, "steps", steps(rng));
        match command {
            "epsilon" => {
                flag(&mut args, "noise-multiplier", positive(rng, -7.0, 7.0));
                flag(&mut args, "delta", probability(rng));
            }
            "delta" => {
                flag(&mut args, "noise-multiplier", positive(rng, -7.0, 7.0));
                flag(&mut args, "epsilon", positive(rng, -3.0, 3.0));
            }
            "sigma" => {
                flag(&mut args, "epsilon", positive(rng, -3.0, 3.0));
                flag(&mut args, "delta", probability(rng));
            }
            _ => {}
        }
        if rng.chance(60) {
            let accountant = rng.pick(&[
                "rdp",
                "rdp-compat",
                "prv",
                "prv",
                "zcdp",
                "analytic",
                "PRV",
                "nope",
            ]);
            flag(&mut args, "accountant", accountant.into());
        }
        if rng.chance(25) {
            let sampling = rng.pick(&["poisson", "fixed-size", "shuffled", "fixed", "random"]);
            flag(&mut args, "sampling", sampling.into());
            if rng.chance(70) {
                let n = rng.pick(&["1", "100", "1024", "0", "60000", "-3"]);
                flag(&mut args, "dataset-size", n.into());
            }
        }
        if rng.chance(20) {
            let error = rng.pick(&["0.1", "0.01", "1e-4", "0", "-1", "NaN", "inf", "5"]);
            flag(&mut args, "eps-error", error.into());
        }
    }
    if rng.chance(80) {
        args.push("--json".into());
    }
    args
}

/// Checks one finished call; returns a description of a violation, if any.
fn violation(args: &[String], output: &std::process::Output, took: Duration) -> Option<String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = args.join(" ");
    if took >= CALL_LIMIT {
        return Some(format!("{line}: took {took:?}"));
    }
    if stderr.contains("panicked") || stdout.contains("NaN") {
        return Some(format!("{line}: stdout {stdout} stderr {stderr}"));
    }
    match output.status.code() {
        Some(0) => {
            if !args.iter().any(|a| a == "--json") {
                return None;
            }
            let value: serde_json::Value = match stdout.lines().last().map(serde_json::from_str) {
                Some(Ok(v)) => v,
                _ => return Some(format!("{line}: no JSON line: {stdout}")),
            };
            for (key, upper) in [
                ("epsilon", f64::INFINITY),
                ("delta", 1.0),
                ("noise_multiplier", f64::INFINITY),
                ("rdp", f64::INFINITY),
            ] {
                match value.get(key) {
                    None => {}
                    Some(serde_json::Value::String(s)) if s == "inf" && upper.is_infinite() => {}
                    Some(serde_json::Value::Number(n)) => {
                        let v = n.as_f64().unwrap();
                        if !(v >= 0.0 && v <= upper) || (key == "noise_multiplier" && v == 0.0) {
                            return Some(format!("{line}: {key} = {v}"));
                        }
                    }
                    Some(other) => return Some(format!("{line}: {key} = {other}")),
                }
            }
            None
        }
        // 1: our errors, one line; 2: clap's usage errors (their own format).
        Some(1) => {
            let lines = stderr.trim().lines().count();
            (lines != 1 || !stderr.starts_with("error:"))
                .then(|| format!("{line}: exit 1 with {stderr:?}"))
        }
        Some(2) => {
            (!stderr.starts_with("error:")).then(|| format!("{line}: exit 2 with {stderr:?}"))
        }
        other => Some(format!("{line}: exit {other:?}, stderr {stderr}")),
    }
}

#[test]
fn hostile_privacy_command_lines_never_panic_hang_or_print_a_bad_probability() {
    let mut rng = Rng(20_261_204);
    let cases: Vec<Vec<String>> = (0..CASES).map(|_| case(&mut rng)).collect();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<(Vec<String>, Option<String>, Duration, i32)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(args) = cases.get(i) else { break };
                        let start = Instant::now();
                        let output = Command::new(env!("CARGO_BIN_EXE_repro"))
                            .arg("privacy")
                            .args(args)
                            .output()
                            .expect("the repro binary runs");
                        let took = start.elapsed();
                        let problem = violation(args, &output, took);
                        done.push((
                            args.clone(),
                            problem,
                            took,
                            output.status.code().unwrap_or(-1),
                        ));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let answered = results.iter().filter(|r| r.3 == 0).count();
    let slowest = results.iter().max_by_key(|r| r.2).unwrap();
    println!(
        "{} cases in {:.0?}: {answered} answered, {} refused; slowest {:.2?}: privacy {}",
        results.len(),
        started.elapsed(),
        results.len() - answered,
        slowest.2,
        slowest.0.join(" ")
    );
    let problems: Vec<&String> = results.iter().filter_map(|r| r.1.as_ref()).collect();
    assert!(
        problems.is_empty(),
        "{} violations:\n{}",
        problems.len(),
        problems
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(results.len(), CASES);
    // The time budget: about a minute on an idle 2-core machine (0.15 s of start-up a call).
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "{:?} for {CASES} cases",
        started.elapsed()
    );
    // Enough of the cases must reach an answer for the test to mean something.
    assert!(answered >= CASES / 5, "only {answered} answered");
}
