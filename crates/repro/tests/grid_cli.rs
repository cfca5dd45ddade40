//! Concurrent and sharded grid execution through the CLI, on a four-cell fixture grid
//! (`tests/fixtures/grid/table2.toml`, SmolLM2-135M on the CPU, a few steps).
#![cfg(feature = "torch")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const STEMS: [&str; 4] = [
    "SST-2__zero-shot__nonprivate__seed13",
    "SST-2__zero-shot__nonprivate__seed21",
    "SST-2__dpzero__eps8__seed13",
    "SST-2__dpzero__eps8__seed21",
];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grid")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dpzo-grid-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `repro table2 --preset tiny` on the fixture grid into `out`, plus `extra` arguments.
fn grid_command(out: &Path, extra: &[&str]) -> Command {
    preset_command("tiny", out, extra)
}

/// `repro table2 --preset PRESET` on the fixture grid into `out`, plus `extra` arguments.
fn preset_command(preset: &str, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repro"));
    // The workspace root, where the fixture's `paper_table` path resolves.
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(["table2", "--preset", preset, "--experiments"])
        .arg(fixture_dir())
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs [`preset_command`] to its end.
fn run_preset(preset: &str, out: &Path, extra: &[&str]) -> Output {
    preset_command(preset, out, extra).output().unwrap()
}

/// The record of cell `stem` of table2 preset `preset` under the results folder `out`.
fn record(out: &Path, preset: &str, stem: &str) -> serde_json::Value {
    let path = out.join(format!("table2/{preset}/runs/{stem}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The tuning note of preset `tiny-tune`'s final record of DPZero on `task` and `seed`.
fn tiny_tune_note(out: &Path, task: &str, seed: u64) -> serde_json::Value {
    record(
        out,
        "tiny-tune",
        &format!("{task}__dpzero__eps8__seed{seed}"),
    )["tuning"]
        .clone()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs the tiny grid into `out` once more, sequentially, checks that it succeeds and skips
/// `recorded` of its 4 cells as recorded, and returns its output.
fn run_again_skipping(out: &Path, recorded: usize) -> String {
    let again = grid_command(out, &["--device", "cpu"]).output().unwrap();
    let log = text(&again);
    assert!(again.status.success(), "{log}");
    assert!(
        log.contains(&format!("{recorded} of 4 runs skipped: already recorded")),
        "{log}"
    );
    log
}

#[test]
fn two_workers_on_one_grid_write_one_record_per_cell_and_run_each_cell_once() {
    let out = scratch("two-workers");
    // One invocation with two CPU worker processes and one plain sequential invocation, all three
    // on the same grid at once.
    let parallel = grid_command(&out, &["--device", "cpu", "--jobs-per-gpu", "2"])
        .spawn()
        .unwrap();
    let sequential = grid_command(&out, &["--device", "cpu"]).spawn().unwrap();
    let outputs = [
        parallel.wait_with_output().unwrap(),
        sequential.wait_with_output().unwrap(),
    ];
    let mut log = String::new();
    for o in &outputs {
        assert!(o.status.success(), "a worker failed:\n{}", text(o));
        log.push_str(&text(o));
    }
    // Each cell ran exactly once over all workers: one result line per cell.
    for stem in STEMS {
        let runs = log
            .lines()
            .filter(|l| l.contains(&format!("{stem}: test accuracy")))
            .count();
        assert_eq!(runs, 1, "{stem} ran {runs} times:\n{log}");
    }
    // Exactly one whole record per cell, nothing half-written left behind.
    let runs_dir = out.join("table2/tiny/runs");
    let mut names: Vec<String> = std::fs::read_dir(&runs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // Trained cells keep their per-step record in a sidecar beside the record; zero-shot cells
    // have no steps, hence no sidecar.
    let mut expected: Vec<String> = STEMS.iter().map(|s| format!("{s}.json")).collect();
    expected.extend(
        STEMS
            .iter()
            .filter(|s| !s.contains("zero-shot"))
            .map(|s| format!("{s}.steps.jsonl.gz")),
    );
    expected.sort();
    assert_eq!(names, expected);
    let mut hashes = BTreeMap::new();
    for name in names.iter().filter(|n| n.ends_with(".json")) {
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(runs_dir.join(name)).unwrap())
                .unwrap_or_else(|e| panic!("{name} is torn: {e}"));
        let hash = record["spec_hash"].as_str().unwrap().to_string();
        assert_eq!(hash.len(), 64, "{name}");
        hashes.insert(hash, name.clone());
    }
    assert_eq!(hashes.len(), 4, "distinct cells have distinct spec hashes");
    // A third invocation finds everything recorded and runs nothing.
    let again_text = run_again_skipping(&out, 4);
    assert!(!again_text.contains("test accuracy"), "{again_text}");
    let _ = std::fs::remove_dir_all(&out);
}

/// Cells run one after another in one process (each a duplicate of the checkpoint read once)
/// equal the same cells run each in a process of its own: the same per-step log, test loss and
/// per-example outcomes. A model left trained by the first cell would change the second's.
#[test]
fn cells_run_in_one_process_equal_cells_run_alone() {
    let together = scratch("together");
    let output = grid_command(&together, &["--device", "cpu", "--methods", "dpzero"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let alone = scratch("alone");
    for seed in ["13", "21"] {
        let output = grid_command(
            &alone,
            &["--device", "cpu", "--methods", "dpzero", "--seeds", seed],
        )
        .output()
        .unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }
    let read = |dir: &Path, stem: &str| record(dir, "tiny", stem);
    for stem in STEMS.iter().filter(|s| s.contains("dpzero")) {
        let (a, b) = (read(&together, stem), read(&alone, stem));
        for field in [
            "/trainer/steps_sidecar/sha256",
            "/trainer/test/loss",
            "/trainer/test/correct",
            "/trainer/test/predicted",
            "/dev_accuracy",
        ] {
            let value = a.pointer(field);
            assert!(value.is_some(), "{stem}: no {field}");
            assert_eq!(value, b.pointer(field), "{stem}: {field}");
        }
    }
    // The per-cell tables read these records: label shares and the calibrated evaluation.
    let table = |name: &str| std::fs::read_to_string(together.join("table2/tiny").join(name));
    let labels = table("labels.csv").unwrap();
    assert!(labels.contains("SST-2,dpzero,8,2,0,"), "{labels}");
    assert!(labels.contains("SST-2,dpzero,8,2,1,"), "{labels}");
    let calibrated = table("calibrated.csv").unwrap();
    assert!(calibrated.contains("SST-2,dpzero,8,2,"), "{calibrated}");
    assert!(table("precision.csv").unwrap().starts_with("claim,"));
    let _ = std::fs::remove_dir_all(&together);
    let _ = std::fs::remove_dir_all(&alone);
}

/// The stems a `--dry-run` lists.
fn dry_run(extra: &[&str]) -> Vec<String> {
    let out = scratch("dry");
    let mut args = vec!["--device", "cpu", "--dry-run"];
    args.extend_from_slice(extra);
    let output = grid_command(&out, &args).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let _ = std::fs::remove_dir_all(&out);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("  SST-2__").map(|s| s.to_string()))
        .collect()
}

#[test]
fn shards_of_the_cli_partition_the_grid() {
    let all = dry_run(&[]);
    assert_eq!(all.len(), 4);
    let mut union = Vec::new();
    for i in 0..3 {
        let shard = format!("{i}/3");
        let cells = dry_run(&["--shard", &shard]);
        assert!(!cells.is_empty() && cells.len() <= 2, "{shard}: {cells:?}");
        union.extend(cells);
    }
    union.sort();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(union, sorted);
}

#[test]
fn grid_flags_name_their_bad_values() {
    let out = scratch("bad");
    for (args, needle) in [
        (vec!["--device", "cpu", "--gpus", "0"], "--gpus 0"),
        (vec!["--device", "cpu", "--shard", "3/3"], "--shard \"3/3\""),
        (
            vec!["--device", "cpu", "--jobs-per-gpu", "0"],
            "--jobs-per-gpu 0",
        ),
        (
            vec!["--device", "cpu", "--deadline", "0"],
            "\"0\" is not a positive",
        ),
        (
            vec!["--device", "cpu", "--deadline", "NaN"],
            "\"NaN\" is not a positive",
        ),
    ] {
        let output = grid_command(&out, &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// `--deadline` with two CPU workers: the trained cells, which `timing.csv` says take longer than
/// the time left, are not started, and the call still ends well, naming them; the zero-shot
/// cells (no steps) run. Without the deadline the next call runs the rest.
#[test]
fn a_deadline_leaves_the_cells_that_cannot_finish_for_a_later_call() {
    let out = scratch("deadline");
    let dir = out.join("table2/tiny");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("timing.csv"),
        // timing.csv's columns that --deadline reads: a 4-step DPZero cell at 30 s a step.
        "task,method,device,steps,wall_s,wall_s_per_step\nSST-2,dpzero,cpu,4,120,30\n",
    )
    .unwrap();
    let cut = grid_command(
        &out,
        &["--device", "cpu", "--jobs-per-gpu", "2", "--deadline", "60"],
    )
    .output()
    .unwrap();
    let log = text(&cut);
    assert!(cut.status.success(), "{log}");
    for stem in &STEMS[2..] {
        assert!(
            log.contains(&format!("{stem}: not started: about")),
            "{stem}:\n{log}"
        );
        assert!(!dir.join(format!("runs/{stem}.json")).exists(), "{stem}");
    }
    for stem in &STEMS[..2] {
        assert!(dir.join(format!("runs/{stem}.json")).exists(), "{stem}");
    }
    assert!(
        log.contains("2 of 4 cells recorded; 2 left for a later call by --deadline"),
        "{log}"
    );
    run_again_skipping(&out, 2);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn emit_slurm_writes_an_array_and_a_merge_job() {
    let out = scratch("slurm");
    let script = out.join("submit.sh");
    let output = grid_command(
        &out,
        &[
            "--device",
            "cpu",
            "--emit-slurm",
            script.to_str().unwrap(),
            "--slurm-tasks",
            "2",
            "--slurm-arg=--time=00:10:00",
        ],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let body = std::fs::read_to_string(&script).unwrap();
    for needle in [
        "--array=0-1",
        "--shard \"$SLURM_ARRAY_TASK_ID/2\"",
        "#SBATCH --time=00:10:00",
        "--dependency=afterok:$array",
        " check table2 --preset tiny",
        "--device cpu",
    ] {
        assert!(body.contains(needle), "{needle:?} missing:\n{body}");
    }
    let exec = body.lines().find(|l| l.starts_with("exec ")).unwrap();
    assert!(!exec.contains("--emit-slurm"), "{exec}");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_killed_workers_cell_is_resumed_from_its_checkpoint_by_the_next_worker() {
    let out = scratch("crash");
    let ckpt_root = out.join("table2/tiny-ckpt/checkpoints");
    let mut first = preset_command("tiny-ckpt", &out, &["--device", "cpu"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the worker (SIGKILL: no clean-up) as soon as its first checkpoint is complete.
    let start = std::time::Instant::now();
    let latest = loop {
        let found = std::fs::read_dir(&ckpt_root).ok().and_then(|dirs| {
            dirs.flatten()
                .map(|d| d.path().join("latest"))
                .find(|p| p.exists())
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the worker ended before checkpointing"
        );
        assert!(start.elapsed().as_secs() < 300, "no checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    first.kill().unwrap();
    first.wait().unwrap();
    let record = out.join("table2/tiny-ckpt/runs/SST-2__dpzero__eps8__seed13.json");
    assert!(!record.exists(), "the worker finished before it was killed");
    assert!(latest.exists());
    // The next worker takes the cell (the dead worker's lock is gone) and resumes it.
    let second = preset_command("tiny-ckpt", &out, &["--device", "cpu"])
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", text(&second));
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(
        value["trainer"]["resumed_from"].as_u64(),
        Some(1),
        "the cell did not resume from the killed worker's step-1 checkpoint"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// `--joint-cells 2`: two DPZero cells of eight steps run at once on two threads of one
/// process, their paired forwards joined into one. Their records equal those of the same cells
/// run one after another with the paired forward, to the rounding of products of another shape,
/// and say that the forwards were joined; joint forwards served more than one cell each on
/// average. Without the paired forward the flag is refused.
///
/// The cells run in f64 (the fixture's `tiny-joint`): each ZO difference divides the loss's
/// rounding by 2 mu = 2e-3. In f64 the loss's rounding is ~1e-16 relative, and after that
/// amplification ~1e-12: a tolerance of 1e-9 leaves a margin of 1e3 and still fails for any
/// real difference between the two paths. (It caught one, which depended on which steps of the
/// two cells happened to meet in a forward: a cell without padding joined with a padded one
/// left the padding unmasked; `optim_paired.rs` now tests that case directly.)
#[test]
fn cells_run_jointly_equal_cells_run_one_at_a_time() {
    let refused = scratch("joint-refused");
    let output = run_preset(
        "tiny-joint",
        &refused,
        &["--device", "cpu", "--joint-cells", "2"],
    );
    assert!(!output.status.success());
    assert!(
        text(&output)
            .contains("--joint-cells 2: joins paired ZO forwards; add --zo-forward paired"),
        "{}",
        text(&output)
    );
    let paired = ["--device", "cpu", "--zo-forward", "paired"];
    let joint = scratch("joint");
    let output = run_preset(
        "tiny-joint",
        &joint,
        &[&paired[..], &["--joint-cells", "2"]].concat(),
    );
    let joint_log = text(&output);
    assert!(output.status.success(), "{joint_log}");
    let per_forward: f64 = joint_log
        .lines()
        .find_map(|l| l.strip_prefix("joint forwards: "))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no joint forwards line:\n{joint_log}"));
    assert!(per_forward > 1.0, "{joint_log}");
    let alone = scratch("joint-alone");
    let output = run_preset("tiny-joint", &alone, &paired);
    assert!(output.status.success(), "{}", text(&output));
    let read = |dir: &Path, stem: &str| record(dir, "tiny-joint", stem);
    for stem in STEMS.iter().filter(|s| s.contains("dpzero")) {
        let (a, b) = (read(&joint, stem), read(&alone, stem));
        assert_eq!(a["spec_hash"], b["spec_hash"], "{stem}");
        assert_eq!(
            a.pointer("/trainer/provenance/forward_group"),
            Some(&2.into())
        );
        assert_eq!(b.pointer("/trainer/provenance/forward_group"), None);
        for field in ["/trainer/test/predicted", "/dev_accuracy"] {
            assert_eq!(a.pointer(field), b.pointer(field), "{stem}: {field}");
        }
        let loss = |r: &serde_json::Value| r.pointer("/trainer/test/loss").unwrap().as_f64();
        let (la, lb) = (loss(&a).unwrap(), loss(&b).unwrap());
        assert!(
            (la - lb).abs() <= 1e-9 * lb.abs().max(1.0),
            "{stem}: {la} against {lb}"
        );
    }
    for dir in [refused, joint, alone] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A `--tune` worker process writes each task's ledger itself (the parent that starts workers
/// writes it only at the call's end, which a time limit may cut off): one worker run alone, as
/// a parent would start it, leaves every final record with its tuning note and `tuning.csv`
/// with both tasks' candidates.
#[test]
fn a_tuning_worker_writes_each_tasks_ledger_itself() {
    let out = scratch("tune-worker-ledger");
    let output = run_preset(
        "tiny-tune",
        &out,
        &["--tune", "--device", "cpu", "--worker"],
    );
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    for task in ["SST-2", "TREC"] {
        for seed in [13, 21] {
            let note = tiny_tune_note(&out, task, seed);
            assert!(
                note["epsilon_procedure"].as_f64().is_some_and(|e| e > 8.0),
                "{task} seed {seed}: no procedure ε in {note}"
            );
        }
    }
    let csv = std::fs::read_to_string(out.join("table2/tiny-tune/tuning.csv")).unwrap();
    for task in ["SST-2", "TREC"] {
        let rows = csv
            .lines()
            .filter(|l| l.starts_with(&format!("{task},dpzero,8,")))
            .count();
        assert_eq!(rows, 2, "{task}'s two candidates in:\n{csv}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// `--tune` with two worker processes over two tasks: every candidate and final is run once and
/// recorded, and the workers tune task by task, so SST-2's final on seed 21 is recorded before
/// any TREC candidate finishes (a call cut short keeps whole tasks).
#[test]
fn tuning_workers_finish_one_tasks_finals_before_the_next_tasks_candidates() {
    let out = scratch("tune-workers");
    let output = run_preset(
        "tiny-tune",
        &out,
        &["--tune", "--device", "cpu", "--jobs-per-gpu", "2"],
    );
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let line_of = |needle: &str| -> Vec<usize> {
        log.lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .map(|(i, _)| i)
            .collect()
    };
    for task in ["SST-2", "TREC"] {
        let candidates = line_of(&format!("{task}__dpzero__eps8__seed13: dev accuracy"));
        assert_eq!(
            candidates.len(),
            2,
            "{task}: two candidates, each run once:\n{log}"
        );
        let finals = line_of(&format!("{task}__dpzero__eps8__seed21: test accuracy"));
        assert_eq!(
            finals.len(),
            1,
            "{task}: one final run (seed 13 adopted):\n{log}"
        );
        for seed in [13, 21] {
            let note = tiny_tune_note(&out, task, seed);
            assert!(note["selected_settings"].is_object(), "{note}");
        }
    }
    let sst2_final = line_of("SST-2__dpzero__eps8__seed21: test accuracy")[0];
    let first_trec = line_of("TREC__dpzero__eps8__seed13: dev accuracy")[0];
    assert!(
        sst2_final < first_trec,
        "SST-2's final after TREC's candidates:\n{log}"
    );
}
