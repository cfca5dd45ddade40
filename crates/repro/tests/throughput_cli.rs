//! `repro throughput padding`: the padded and real tokens of the batch pool that `throughput
//! steps` times, one CSV row per task, on the fixture data (CPU).
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Held by each test that times SmolLM2 steps: on a 2-core CI machine two of them at once
/// (four computing processes or threads) slow each step past what the timing window allows.
static TIMED_STEPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timed_steps_alone() -> std::sync::MutexGuard<'static, ()> {
    TIMED_STEPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `repro throughput padding` for table2's smoke preset (SST-2) with `data_args` and
/// returns the CSV's rows.
fn padding_rows(data_args: &[&str]) -> Vec<csv::StringRecord> {
    let out = std::env::temp_dir().join(format!(
        "dpzo-throughput-{}-{}/padding.csv",
        data_args.len(),
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_repro"))
        .current_dir(workspace())
        .env_remove("DPZO_DATA_DIR")
        .args([
            "throughput",
            "padding",
            "--device",
            "cpu",
            "--preset",
            "smoke",
        ])
        .args(["--target", "table2", "--tasks", "SST-2"])
        .args(data_args)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the repro binary runs");
    common::assert_success(&output);
    let mut reader = csv::Reader::from_path(&out).expect("padding.csv");
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "task",
            "batch",
            "batches",
            "max_length",
            "padded_tokens_per_batch",
            "real_tokens_per_batch",
            "padding_fraction",
            "data"
        ]
    );
    let rows = reader.records().map(|r| r.expect("a CSV row")).collect();
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
    rows
}

/// One row per task: 32 batches of the preset's batch size, at most batch · max_length padded
/// tokens per batch, real tokens at most the padded ones, the fraction their ratio, and the data
/// named (real fixture files, or the stand-in without --data-dir).
#[test]
fn padding_rows_are_consistent() {
    for (data_args, data) in [
        (
            &["--data-dir", "crates/trainer/tests/data-fixtures"][..],
            "real",
        ),
        (&[][..], "stand-in"),
    ] {
        let rows = padding_rows(data_args);
        assert_eq!(rows.len(), 1, "one row per task");
        let row = &rows[0];
        let num = |i: usize| row[i].parse::<f64>().unwrap();
        assert_eq!(&row[0], "SST-2");
        let batch = 8.0; // the smoke preset's DPZero batch size
        assert_eq!(num(1), batch);
        assert_eq!(num(2), 32.0);
        let (longest, padded, real, fraction) = (num(3), num(4), num(5), num(6));
        assert!(real > 0.0 && real <= padded, "real {real}, padded {padded}");
        assert!(padded <= batch * longest, "{padded} > {batch} x {longest}");
        assert!((fraction - (1.0 - real / padded)).abs() < 1e-4);
        assert!(
            row[7].starts_with(data),
            "data {:?}, expected {data}",
            &row[7]
        );
    }
}

/// `repro throughput steps` on the CPU over the fixture grid's `tiny` preset (SmolLM2 on the
/// stand-in SST-2), one thread, timing a window of `seconds`.
fn steps_command(seconds: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repro"));
    cmd.current_dir(workspace())
        .env_remove("DPZO_DATA_DIR")
        .env("OMP_NUM_THREADS", "1")
        .args(["throughput", "steps", "--device", "cpu", "--preset", "tiny"])
        .arg("--experiments")
        .arg(workspace().join("crates/repro/tests/fixtures/grid"))
        .args([
            "--target",
            "table2",
            "--task",
            "SST-2",
            "--seconds",
            seconds,
        ]);
    cmd
}

/// Two concurrent `throughput steps` processes meet in one folder and time the same window: both
/// print a result that started on time, from the same batch pool. A SmolLM2 step takes
/// seconds on a CI core, hence the long window. The second times the paired forward, which its
/// result states; `throughput total` refuses to add results of different forwards.
#[test]
fn concurrent_steps_processes_share_one_window() {
    let _alone = timed_steps_alone();
    let meet = std::env::temp_dir().join(format!("dpzo-meet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&meet);
    let spawn = |forward: &str| {
        steps_command("20")
            .arg("--rendezvous")
            .arg(&meet)
            .args(["--parties", "2", "--zo-forward", forward])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the repro binary runs")
    };
    let (a, b) = (spawn("sequential"), spawn("paired"));
    let results: Vec<serde_json::Value> = [a, b]
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            common::assert_success(&output);
            let stdout = String::from_utf8_lossy(&output.stdout);
            serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
        })
        .collect();
    for r in &results {
        assert_eq!(r["started_late"], false, "{r}");
        assert!(r["steps"].as_u64().unwrap() > 0, "{r}");
        assert!(r["seconds"].as_f64().unwrap() >= 19.0, "{r}");
    }
    // The same pool of batches (each averages its tokens over the steps it timed).
    assert_eq!(results[0]["batch"], results[1]["batch"]);
    assert_eq!(results[0]["data"], results[1]["data"]);
    assert_eq!(results[0]["zo_forward"], "sequential");
    assert_eq!(results[1]["zo_forward"], "paired");
    let files: Vec<PathBuf> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = meet.join(format!("result-{i}.json"));
            std::fs::write(&f, r.to_string()).unwrap();
            f
        })
        .collect();
    let total = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["throughput", "total", "--out"])
        .arg(meet.join("total.csv"))
        .args(&files)
        .output()
        .unwrap();
    assert!(!total.status.success());
    let stderr = String::from_utf8_lossy(&total.stderr);
    assert!(
        stderr.contains("results mix settings") && stderr.contains("forward paired"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&meet);
}

/// `--cells 2`: two cells as threads of one process, their paired forwards joined. The JSON line
/// covers both (their steps summed), says so, and reports that joint forwards served more than one
/// cell on average. Without the paired forward the option is refused.
#[test]
fn cells_of_one_process_join_their_forwards() {
    let _alone = timed_steps_alone();
    let run = |forward: &str| {
        steps_command("20")
            .args(["--cells", "2", "--zo-forward", forward])
            .output()
            .expect("the repro binary runs")
    };
    let stderr = common::refused(&run("sequential"));
    assert!(
        stderr.contains("--cells 2") && stderr.contains("--zo-forward paired"),
        "{stderr}"
    );
    let output = run("paired");
    common::assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let r: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    assert_eq!(r["cells"], 2, "{r}");
    assert_eq!(r["zo_forward"], "paired", "{r}");
    assert_eq!(r["started_late"], false, "{r}");
    assert!(r["steps"].as_u64().unwrap() >= 2, "{r}");
    let per_forward = r["cells_per_forward"].as_f64().unwrap();
    assert!(per_forward > 1.0 && per_forward <= 2.0, "{r}");
}
