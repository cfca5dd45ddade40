//! Checkpoint/resume and the run's safety stops: a child process is killed with SIGKILL mid-run
//! and the resumed run ends bit for bit where an uninterrupted one does (CPU); a non-finite loss
//! stops the run keeping the last good state; a run whose planned epsilon exceeds its target
//! refuses to start, before step 1 and on resume.

mod optim_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use optim_support::{bits, SyntheticTask, TinyModel};
use tch::Kind;
use trainer::optim::mask::MaskStrategy;
use trainer::train::checkpoint;
use trainer::train::{run_training, Method, RunOptions, RunRecord, TrainConfig, TrainError};

const CHILD_ENV: &str = "DPZO_TRAIN_RESUME_CHILD_DIR";
const TOTAL_STEPS: u64 = 120;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dpzo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// DP-ZOPO with a dynamic mask and the intended proximal term: the checkpoint must carry the
/// weights, the anchor, the mask, metrics and ledger. Stages: steps 1-20, 21-60, 61-120.
fn resumable_config(dir: &Path) -> TrainConfig {
    let mut config = TrainConfig {
        method: Method::DpZopo,
        learning_rate: 0.05,
        steps: TOTAL_STEPS,
        batch_size: 16,
        zo_eps: 1e-3,
        zo_eps_end: Some(2e-4),
        clip_norm: 5.0,
        epsilon: Some(4.0),
        eval_every: 10,
        checkpoint_every: 7,
        checkpoint_dir: Some(dir.to_path_buf()),
        seed: 99,
        proximal_weight: 0.5,
        ..TrainConfig::default()
    };
    config.stage.first_stage_steps = 20;
    config.stage.num_stages = 3;
    config.mask.strategy = MaskStrategy::Dynamic;
    config.mask.score.ratio = 0.1;
    config
}

fn train(config: &TrainConfig, sleep_ms: u64, resume: bool) -> (RunRecord, TinyModel) {
    let mut model = TinyModel::new(3, Kind::Float);
    let mut source = SyntheticTask::new(256, 17);
    source.sleep_ms = sleep_ms;
    let dev = SyntheticTask::new(64, 18).batches(32);
    let test = SyntheticTask::new(64, 19).batches(32);
    let options = RunOptions {
        resume,
        provenance: None,
        ..RunOptions::default()
    };
    let record = run_training(&mut model, config, &mut source, &dev, &test, &options).unwrap();
    (record, model)
}

/// A run expected to be refused before training: its error.
fn refused_run(model: &mut TinyModel, config: &TrainConfig, resume: bool) -> TrainError {
    let options = RunOptions {
        resume,
        provenance: None,
        ..RunOptions::default()
    };
    run_training(
        model,
        config,
        &mut SyntheticTask::new(256, 17),
        &[],
        &[] as &[trainer::batch::Batch],
        &options,
    )
    .unwrap_err()
}

#[test]
fn kill_9_mid_run_then_resume_matches_an_uninterrupted_run_bit_for_bit() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        // Child role: train slowly, checkpointing, until the parent kills us.
        train(&resumable_config(Path::new(&dir)), 15, false);
        return;
    }
    let dir = scratch_dir("kill9");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_mid_run_then_resume_matches_an_uninterrupted_run_bit_for_bit",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let killed_after = loop {
        if let Ok(Some((_, state))) = checkpoint::latest(&dir) {
            if state.step >= 40 {
                child.kill().unwrap(); // SIGKILL on Unix
                break state.step;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "child never reached step 40"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "child exited before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.wait().unwrap();
    let (_, at_kill) = checkpoint::latest(&dir)
        .unwrap()
        .expect("a checkpoint survives the kill");
    assert!(
        at_kill.step < TOTAL_STEPS,
        "killed after the run ended (step {})",
        at_kill.step
    );
    assert!(at_kill.step >= killed_after);

    let (resumed, resumed_model) = train(&resumable_config(&dir), 0, true);
    assert_eq!(resumed.resumed_from, Some(at_kill.step));
    let reference_dir = scratch_dir("kill9-reference");
    let (reference, reference_model) = train(&resumable_config(&reference_dir), 0, false);

    assert_eq!(resumed.steps, reference.steps);
    assert_eq!(resumed.dev, reference.dev);
    assert_eq!(resumed.final_dev, reference.final_dev);
    assert_eq!(resumed.test, reference.test);
    assert_eq!(resumed.ledger, reference.ledger);
    assert_eq!(bits(&resumed_model), bits(&reference_model));
    assert_eq!(reference.steps.len() as u64, TOTAL_STEPS);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&reference_dir);
}

/// Checkpoints are written in the background; when the run returns, its last one is on disk,
/// complete, at the final step, and holds the final weights, whether the final step is a
/// multiple of `checkpoint_every` (saved in the loop) or not (saved after it).
#[test]
fn the_last_checkpoint_is_complete_when_the_run_returns_and_holds_the_final_weights() {
    for every in [7, 10] {
        assert_eq!(TOTAL_STEPS % 10, 0);
        assert_ne!(TOTAL_STEPS % 7, 0);
        let dir = scratch_dir(&format!("last-checkpoint-{every}"));
        let mut config = resumable_config(&dir);
        config.checkpoint_every = every;
        let (record, model) = train(&config, 0, false);
        let seconds = record.seconds.expect("a new record times its phases");
        assert!(
            seconds.checkpoints > 0.0 && seconds.steps > 0.0,
            "{seconds:?}"
        );
        let (_, state) = checkpoint::latest(&dir)
            .unwrap()
            .expect("a checkpoint at the end");
        assert_eq!(state.step, TOTAL_STEPS, "checkpoint_every {every}");
        // The pointer alone gives the same step (for planning: the steps a cell has left).
        assert_eq!(checkpoint::latest_step(&dir), Some(TOTAL_STEPS));
        assert_eq!(checkpoint::latest_step(&dir.join("absent")), None);
        let (resumed, resumed_model) = train(&config, 0, true);
        assert_eq!(resumed.resumed_from, Some(TOTAL_STEPS));
        assert_eq!(
            bits(&resumed_model),
            bits(&model),
            "checkpoint_every {every}"
        );
        assert_eq!(resumed.test, record.test);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn non_finite_loss_stops_the_run_and_keeps_the_last_good_state() {
    let dir = scratch_dir("nan");
    let mut config = resumable_config(&dir);
    config.method = Method::Dpzero;
    config.checkpoint_every = 5;
    let mut model = TinyModel::new(3, Kind::Float);
    // Two forwards per step: poisoning after 2 * 12 calls makes step 13 non-finite.
    model.poison_after = Some(24);
    let mut source = SyntheticTask::new(256, 17);
    let error = run_training(
        &mut model,
        &config,
        &mut source,
        &[],
        &[] as &[trainer::batch::Batch],
        &RunOptions::default(),
    )
    .unwrap_err();
    let message = error.to_string();
    match error {
        TrainError::NonFiniteLoss {
            step,
            last_good_step,
            checkpoint: Some(path),
            ..
        } => {
            assert_eq!((step, last_good_step), (13, 12), "{message}");
            assert!(path.ends_with("step-0000000012"), "{message}");
        }
        other => panic!("expected NonFiniteLoss, got {other}"),
    }
    assert!(
        message.contains("non-finite loss NaN at step 13"),
        "{message}"
    );
    let weights = optim_support::snapshot(&model);
    assert!(weights.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_above_its_epsilon_target_refuses_to_start() {
    let mut config = resumable_config(&scratch_dir("budget-unused"));
    config.checkpoint_dir = None;
    config.noise_multiplier = Some(0.3);
    config.epsilon = Some(1.0);
    let mut model = TinyModel::new(3, Kind::Float);
    let before = bits(&model);
    let error = refused_run(&mut model, &config, false);
    let message = error.to_string();
    assert!(
        matches!(error, TrainError::BudgetExceeded { .. }),
        "{message}"
    );
    assert!(message.contains("above the target 1"), "{message}");
    assert_eq!(bits(&model), before, "a refused run must not train");
}

#[test]
fn resuming_with_more_steps_than_the_budget_allows_is_refused() {
    let dir = scratch_dir("budget-resume");
    let mut config = resumable_config(&dir);
    config.method = Method::Dpzero;
    config.steps = 20;
    config.checkpoint_every = 10;
    train(&config, 0, false);
    // Same noise multiplier, four times the steps: planned epsilon now exceeds the target.
    config.steps = 80;
    let mut model = TinyModel::new(3, Kind::Float);
    let error = refused_run(&mut model, &config, true);
    assert!(
        matches!(error, TrainError::BudgetExceeded { steps: 80, .. }),
        "{error}"
    );
    // And a fresh run over an existing checkpoint is refused rather than overwriting it.
    config.steps = 20;
    let error = refused_run(&mut model, &config, false);
    assert!(
        matches!(error, TrainError::CheckpointExists { step: 20, .. }),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An edited step or zeroed weights used to resume with exit 0 and wrong results; now the
/// checksums written with the checkpoint refuse them, naming the file and how to recover.
#[test]
fn edited_or_damaged_checkpoints_are_refused_on_resume() {
    let dir = scratch_dir("tamper");
    let mut config = resumable_config(&dir);
    config.steps = 16;
    config.checkpoint_every = 7;
    train(&config, 0, false);
    let (latest, state) = checkpoint::latest(&dir).unwrap().expect("a checkpoint");
    let state_path = latest.join("state.json");
    let weights_path = latest.join("weights.safetensors");
    let original_state = std::fs::read_to_string(&state_path).unwrap();
    let original_weights = std::fs::read(&weights_path).unwrap();
    // The step edited.
    let edited = original_state.replacen(
        &format!("\"step\": {}", state.step),
        &format!("\"step\": {}", state.step - 1),
        1,
    );
    assert_ne!(edited, original_state);
    std::fs::write(&state_path, edited).unwrap();
    let message = refused_run(&mut TinyModel::new(3, Kind::Float), &config, true).to_string();
    assert!(
        message.contains("state.json does not match its checksum") && message.contains("--restart"),
        "{message}"
    );
    std::fs::write(&state_path, &original_state).unwrap();
    // The last quarter of the weights zeroed (the tiny model's 1 MB).
    let mut damaged = original_weights.clone();
    let start = damaged.len() * 3 / 4;
    damaged[start..].fill(0);
    std::fs::write(&weights_path, damaged).unwrap();
    let message = refused_run(&mut TinyModel::new(3, Kind::Float), &config, true).to_string();
    assert!(
        message.contains("weights.safetensors does not match its checksum"),
        "{message}"
    );
    std::fs::write(&weights_path, &original_weights).unwrap();
    assert!(checkpoint::latest(&dir).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Floats survive the JSON of checkpoints and records bit for bit (serde_json's
/// `float_roundtrip`; without it 59 297 of these 199 885 values came back one ulp off).
#[test]
fn json_floats_round_trip_bit_exactly() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut off = 0;
    for _ in 0..200_000 {
        // xorshift64*, mapped to finite doubles across the whole exponent range.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let value = f64::from_bits(bits);
        if !value.is_finite() {
            continue;
        }
        let text = serde_json::to_string(&value).unwrap();
        let back: f64 = serde_json::from_str(&text).unwrap();
        if back.to_bits() != value.to_bits() {
            off += 1;
        }
    }
    assert_eq!(off, 0, "{off} values changed in a JSON round trip");
}
