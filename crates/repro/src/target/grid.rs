//! Execution of a list of cells: in this process (sequentially), as worker processes pinned to
//! GPUs (`--gpus`, `--jobs-per-gpu`), as one shard of a grid (`--shard i/n`), or as a Slurm job
//! array (`--emit-slurm`).
//!
//! Safety between concurrent workers (other processes, other hosts on a shared file system):
//! - a cell is claimed by an exclusive lock on `<results>/locks/<stem>.lock` (`flock`, released
//!   by the kernel when its holder exits or dies, so a crashed worker never leaves a stale claim);
//! - a worker re-reads the record after taking the lock, so a cell finished meanwhile is not run
//!   again;
//! - records are written to a temporary file and renamed (see `record::CellRecord::write`);
//! - a cell whose holder died is picked up by the next worker that waits for its lock, and resumes
//!   from the dead worker's checkpoint (checkpoints are keyed by the spec hash).

use super::record::CellRecord;
use super::spec::RunSpec;
use super::{resolved_config, spec_hash, CellRunner};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Grid execution options shared by every paper target.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GridArgs {
    /// Run cells concurrently on these GPUs (comma-separated indices, or `all`), one worker
    /// process per (GPU, job) slot, each pinned with CUDA_VISIBLE_DEVICES. CUDA only.
    #[arg(long)]
    pub gpus: Option<String>,
    /// Worker processes per GPU (with --gpus), or CPU worker processes (with --device cpu).
    #[arg(long, default_value_t = 1)]
    pub jobs_per_gpu: usize,
    /// Run only shard i of n (0-based, `i/n`): cells i, i + n, i + 2n, … of the grid's order.
    #[arg(long)]
    pub shard: Option<String>,
    /// Write a Slurm submission script (a job array over shards, then `repro check`) to FILE and
    /// run nothing. Submit it with `bash FILE`.
    #[arg(long)]
    pub emit_slurm: Option<PathBuf>,
    /// Array tasks of the Slurm script (default: one per cell).
    #[arg(long)]
    pub slurm_tasks: Option<usize>,
    /// Extra `#SBATCH` option for the array tasks (repeatable), e.g. `--slurm-arg=--time=04:00:00`.
    #[arg(long)]
    pub slurm_arg: Vec<String>,
    /// Cells each process (or worker) runs at once, as threads with a model copy each, their
    /// paired ZO forwards joined into one forward (`trainer::optim::paired::ForwardGroup`;
    /// needs `--zo-forward paired`). Results equal one-at-a-time runs' to rounding.
    #[arg(long, default_value_t = 1)]
    pub joint_cells: usize,
    /// Start no cell expected to end more than SECONDS after this command began. A cell's
    /// expected time is the slowest wall seconds per step of its task and method in the
    /// results' `timing.csv` on this device (or of the slowest method there that steps as it
    /// does), times the steps it has left after its checkpoint; a zero-shot cell's is the slowest
    /// such cell's wall seconds. A training cell with no such row does not start; a zero-shot one
    /// does. For a call under a time limit: the time left goes to cells that can finish instead of
    /// to cells cut off at the limit.
    #[arg(long, value_name = "SECONDS", value_parser = parse_deadline)]
    pub deadline: Option<f64>,
    /// Set by a grid parent on the workers it starts: run cells, leave rendering to the parent.
    #[arg(long, hide = true)]
    pub worker: bool,
}

fn parse_deadline(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of seconds from the command's start"
        )),
    }
}

/// Flags of [`GridArgs`] that take a value and that a worker must not inherit.
const PARENT_ONLY_FLAGS: [&str; 6] = [
    "--gpus",
    "--deadline",
    "--jobs-per-gpu",
    "--emit-slurm",
    "--slurm-tasks",
    "--slurm-arg",
];

/// One shard of a deterministic partition of a grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("--shard {s:?}: expected i/n with 0 <= i < n (e.g. 0/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The cells of this shard: positions `index`, `index + count`, … of `runs` (round robin,
    /// so shards differ in size by at most one and their union is `runs`).
    pub fn select<T: Clone>(&self, runs: &[T]) -> Vec<T> {
        runs.iter()
            .skip(self.index)
            .step_by(self.count)
            .cloned()
            .collect()
    }
}

/// A cell ready to run: its spec, resolved configuration, hash and files.
#[derive(Debug, Clone)]
pub struct Cell {
    pub run: RunSpec,
    pub config: serde_json::Value,
    pub hash: String,
    pub record: PathBuf,
    pub lock: PathBuf,
    pub checkpoint: PathBuf,
    /// What `--deadline` knows of the cell's length ([`estimate`]).
    pub length: Length,
}

/// What `--deadline` knows of a cell's length ([`estimate`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Length {
    /// No timing for its task and a method that steps as it does: under a deadline it does not
    /// start, since a cell cut off by the call's end loses its steps with the host.
    #[default]
    Unknown,
    /// No training steps (zero-shot) and no timing of an evaluation-only cell on its task: an
    /// evaluation of seconds on a GPU, started whatever the deadline.
    EvaluationOnly,
    /// Wall seconds from its start, at the slowest rate in `timing.csv` of `basis` on its task:
    /// its own method, or else the slowest method of its [`StepKind`] (an evaluation-only cell:
    /// the whole cell's seconds).
    Expected { seconds: f64, basis: String },
}

/// How a grid method steps, for borrowing a rate between methods of one task: a zeroth-order
/// step is two forwards, a first-order one a forward and a backward (full, LoRA or prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKind {
    Evaluation,
    ZerothOrder,
    FirstOrder,
}

/// The [`StepKind`] of the grid method `method` (a run's method, or an ablation variant's
/// base), `None` for a name the trainer does not know (a variant's own label).
fn step_kind(method: &str) -> Option<StepKind> {
    let m = super::cell::trainer_method_of(method)?;
    Some(if m.is_evaluation_only() {
        StepKind::Evaluation
    } else if m.is_zeroth_order() {
        StepKind::ZerothOrder
    } else {
        StepKind::FirstOrder
    })
}

/// Resolve `runs` into cells under the results directory `dir` of a target and preset.
pub fn plan(runs: &[RunSpec], dir: &Path, model: &str) -> Result<Vec<Cell>> {
    runs.iter()
        .map(|r| {
            let config = resolved_config(r, model)?;
            let hash = spec_hash(&config);
            Ok(Cell {
                record: dir.join("runs").join(format!("{}.json", r.stem())),
                lock: dir.join("locks").join(format!("{}.lock", r.stem())),
                checkpoint: dir.join("checkpoints").join(&hash[..16]),
                length: Length::Unknown,
                run: r.clone(),
                config,
                hash,
            })
        })
        .collect()
}

impl Cell {
    /// Whether a record with this cell's spec hash exists (a torn, tampered or foreign file is
    /// not one).
    pub fn is_recorded(&self) -> bool {
        CellRecord::read(&self.record).is_ok_and(|r| r.spec_hash == self.hash)
    }

    /// Where a run of the cell that failed leaves its error (`<stem>.failed` beside the record),
    /// so that a later selection tells a failed tuning candidate from one not yet run.
    pub fn failure_note(&self) -> PathBuf {
        self.record.with_extension("failed")
    }

    /// Whether the cell's last run of this spec failed (its note names this spec hash) and no
    /// record has been written since.
    pub fn has_failed(&self) -> bool {
        !self.is_recorded()
            && std::fs::read_to_string(self.failure_note())
                .is_ok_and(|note| note.lines().next() == Some(&format!("spec_hash {}", self.hash)))
    }

    /// Whether the cell is done: recorded, and with `since` (a `--rerun`) recorded at or after it.
    fn is_done(&self, since: Option<SystemTime>) -> bool {
        self.is_recorded()
            && since.is_none_or(|t| {
                std::fs::metadata(&self.record)
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m >= t)
            })
    }
}

impl Cell {
    /// The method that runs: an ablation variant's base, else the cell's own.
    fn base_method(&self) -> &str {
        self.config
            .get(super::spec::BASE_METHOD_KEY)
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&self.run.method)
    }

    /// Whether the cell takes training steps (zero-shot cells only evaluate).
    pub fn trains(&self) -> bool {
        step_kind(self.base_method()) != Some(StepKind::Evaluation)
    }
}

/// Sets each cell's [`Cell::length`] from `slowest` ([`super::timing::slowest`]): a cell that
/// trains takes the wall seconds per step of its own method on its task, or, with no row for
/// that, the slowest rate on its task of the methods that step as it does, times its steps; an
/// evaluation-only cell takes the wall seconds of its own method's cells on its task, or else the
/// slowest evaluation-only method's there. A cell with neither is [`Length::Unknown`] if it
/// trains and [`Length::EvaluationOnly`] if it does not.
pub fn estimate(cells: &mut [Cell], slowest: &super::timing::SlowestRates) {
    for c in cells {
        let kind = step_kind(c.base_method());
        let steps = c.config.get("steps").and_then(serde_json::Value::as_u64);
        let rates = match kind {
            Some(StepKind::Evaluation) => &slowest.evaluation,
            _ => &slowest.per_step,
        };
        let own = rates
            .get(&(c.run.task.clone(), c.run.method.clone()))
            .map(|&rate| (rate, c.run.method.clone()));
        let sibling = || {
            rates
                .iter()
                .filter(|((task, method), _)| {
                    *task == c.run.task && kind.is_some() && step_kind(method) == kind
                })
                .map(|((_, method), &rate)| (rate, method.clone()))
                .max_by(|a, b| a.0.total_cmp(&b.0))
        };
        c.length = match (kind, own.or_else(sibling), steps) {
            (Some(StepKind::Evaluation), Some((seconds, basis)), _) => {
                Length::Expected { seconds, basis }
            }
            (Some(StepKind::Evaluation), None, _) => Length::EvaluationOnly,
            (_, Some((rate, basis)), Some(steps)) => Length::Expected {
                seconds: rate * steps as f64,
                basis,
            },
            _ => Length::Unknown,
        };
    }
}

/// How [`execute`] treats cells that have a record or a checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Run recorded cells again: only a record written at or after this time counts as done (the
    /// start of the command; a grid parent hands its own to its workers).
    pub rerun_since: Option<SystemTime>,
    /// Discard a cell's checkpoint before running it.
    pub restart: bool,
    /// Report a finished cell by its dev accuracy, not its test accuracy: tuning candidates are
    /// judged on dev only, and their test accuracy is not shown anywhere.
    pub report_dev: bool,
    /// `--deadline`: no cell starts whose [`Cell::length`], for the steps it has left after its
    /// checkpoint, ends after it, nor one whose length is unknown.
    pub deadline: Option<SystemTime>,
}

/// Environment variable in which a grid parent hands `--rerun`'s start time (Unix seconds) to
/// its workers.
pub const RERUN_SINCE_ENV: &str = "DPZO_GRID_RERUN_SINCE";

/// Environment variable in which a grid parent hands `--deadline`'s end (Unix seconds) to its
/// workers, which start later than it did.
pub const DEADLINE_ENV: &str = "DPZO_GRID_DEADLINE";

/// A time as the Unix seconds of [`RERUN_SINCE_ENV`] and [`DEADLINE_ENV`].
fn unix_seconds(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    format!("{secs:.6}")
}

fn inherited_time(var: &str) -> Option<SystemTime> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|secs| UNIX_EPOCH + std::time::Duration::from_secs_f64(secs))
}

impl Policy {
    /// The policy of this process for `--rerun`, `--restart` and `--deadline` (seconds from
    /// now, or the parent's end for a worker).
    pub fn from_flags(rerun: bool, restart: bool, deadline: Option<f64>) -> Policy {
        let now = SystemTime::now();
        Policy {
            rerun_since: rerun.then(|| inherited_time(RERUN_SINCE_ENV).unwrap_or(now)),
            restart,
            report_dev: false,
            deadline: inherited_time(DEADLINE_ENV)
                .or_else(|| deadline.map(|s| now + std::time::Duration::from_secs_f64(s))),
        }
    }
}

/// What a call of [`execute`] did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Cells this process ran to a record.
    pub ran: Vec<String>,
    /// Cells found already recorded (by this or another worker).
    pub already_recorded: usize,
    /// Cells that failed, with their error.
    pub failed: Vec<(String, String)>,
    /// Cells not started because they would end after `--deadline`.
    pub deferred: Vec<String>,
}

/// A claim on one cell: an exclusive lock held until dropped.
struct Claim {
    _file: File,
}

enum Wait {
    /// Return at once when another worker holds the cell.
    No,
    /// Block until the holder finishes or dies.
    Yes,
}

fn claim(cell: &Cell, wait: Wait) -> Result<Option<Claim>> {
    let dir = cell.lock.parent().context("lock path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&cell.lock)
        .with_context(|| format!("cannot open lock {}", cell.lock.display()))?;
    match wait {
        Wait::Yes => file
            .lock()
            .with_context(|| format!("cannot lock {}", cell.lock.display()))?,
        Wait::No => match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", cell.lock.display()))
            }
        },
    }
    // Who holds it, for a person looking at a busy cell (the lock, not this text, is the claim).
    file.set_len(0)?;
    writeln!(
        file,
        "pid {} host {}",
        std::process::id(),
        crate::provenance::host_name()
    )?;
    Ok(Some(Claim { _file: file }))
}

/// Prints a line above the progress bar, on stdout whether or not a terminal shows the bar
/// (`ProgressBar::println` drops lines when the bar is hidden, as in a redirected log).
fn say(bar: &indicatif::ProgressBar, line: String) {
    bar.suspend(|| println!("{line}"));
}

/// Run every cell of `cells` that has no record yet, in this process, one after another.
///
/// Cells held by another worker are skipped at first and waited for at the end: when that worker
/// finishes, the record is there; when it died, this process resumes the cell from its
/// checkpoint. A failing cell does not stop the others; failures are returned in the outcome.
pub fn execute(cells: &[Cell], runner: &mut dyn CellRunner, policy: Policy) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let pending = pending_longest_first(cells, policy);
    outcome.already_recorded = cells.len() - pending.len();
    if outcome.already_recorded > 0 {
        println!(
            "{} of {} runs skipped: already recorded in {} (rerun them with --rerun, or use a \
             fresh --out)",
            outcome.already_recorded,
            cells.len(),
            cells[0]
                .record
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    let bar = indicatif::ProgressBar::new(pending.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("grid [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("static template"),
    );
    let shown = Shown {
        bar: &bar,
        counts: true,
    };
    run_pending(
        pending,
        runner,
        policy,
        shown,
        &Attempted::default(),
        &mut outcome,
    )?;
    bar.finish_and_clear();
    Ok(outcome)
}

/// The cells of `cells` without a record, the longest first: every worker claims in this order,
/// so a grid of unequal cells (e.g. a learning curve at T = 1200, 2400 and 4800) starts its long
/// cells first instead of last, and ends sooner on several workers (longest-processing-time-first
/// list scheduling, Graham 1969: within 4/3 of the shortest schedule). A cell's length is its
/// examples, `steps` x `batch_size` of its resolved configuration; ties keep the grid's order.
fn pending_longest_first(cells: &[Cell], policy: Policy) -> Vec<&Cell> {
    let examples = |c: &Cell| {
        let get = |k: &str| c.config.get(k).and_then(serde_json::Value::as_u64);
        get("steps").unwrap_or(0) * get("batch_size").unwrap_or(1)
    };
    let mut pending: Vec<&Cell> = cells
        .iter()
        .filter(|c| !c.is_done(policy.rerun_since))
        .collect();
    pending.sort_by_key(|c| std::cmp::Reverse(examples(c)));
    pending
}

/// Where a runner's lines go: above `bar`, which counts the cells it passes when `counts` (one
/// runner's own bar), or not (a bar of the cells recorded, shared by threads).
#[derive(Clone, Copy)]
struct Shown<'a> {
    bar: &'a indicatif::ProgressBar,
    counts: bool,
}

/// The records of the cells a runner of this process has started (a record path names one cell;
/// a stem does not: tuning candidates share their final's). A cell that failed on one thread is
/// not run again by a sibling that waited for its lock: it would fail again, and count twice.
type Attempted = std::sync::Mutex<std::collections::HashSet<PathBuf>>;

/// Runs `pending` one after another (cells held by others last, see [`execute`]).
fn run_pending(
    pending: Vec<&Cell>,
    runner: &mut dyn CellRunner,
    policy: Policy,
    shown: Shown<'_>,
    attempted: &Attempted,
    outcome: &mut Outcome,
) -> Result<()> {
    let mut busy = Vec::new();
    for cell in pending {
        if let Some(why) = after_deadline(cell, policy) {
            // Once per process: a sibling thread that started it, or deferred it, owns it.
            if !cell.is_done(policy.rerun_since)
                && attempted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(cell.record.clone())
            {
                say(shown.bar, format!("{}: {why}", cell.run.stem()));
                outcome.deferred.push(cell.run.stem());
            }
            continue;
        }
        match claim(cell, Wait::No)? {
            Some(c) => run_claimed(cell, c, runner, policy, shown, attempted, outcome)?,
            None => {
                say(
                    shown.bar,
                    format!("{}: claimed by another worker, later", cell.run.stem()),
                );
                busy.push(cell);
            }
        }
    }
    for cell in busy {
        let c = claim(cell, Wait::Yes)?.context("a blocking lock always returns a claim")?;
        run_claimed(cell, c, runner, policy, shown, attempted, outcome)?;
    }
    Ok(())
}

/// Why `cell` is not started under `policy`'s deadline, if it is not: its expected time, for
/// the steps it has left after its checkpoint, ends after the deadline, or its length is
/// unknown. An evaluation-only cell with no timed evaluation on its task
/// ([`Length::EvaluationOnly`]) starts.
fn after_deadline(cell: &Cell, policy: Policy) -> Option<String> {
    let deadline = policy.deadline?;
    let (whole, basis) = match &cell.length {
        Length::EvaluationOnly => return None,
        Length::Unknown => {
            return Some(
                "not started: timing.csv has no rate on its task for its method or one that \
                 steps as it does, so its length is unknown, and a cell cut off by --deadline \
                 loses its steps"
                    .into(),
            )
        }
        Length::Expected { seconds, basis } => (*seconds, basis),
    };
    let steps = cell.config.get("steps").and_then(serde_json::Value::as_u64);
    let done = trainer::train::checkpoint::latest_step(&cell.checkpoint);
    let (expected, what) = match (steps, done) {
        (Some(steps), Some(done)) if steps > 0 => (
            whole * steps.saturating_sub(done) as f64 / steps as f64,
            format!(
                " for the {} steps after its checkpoint",
                steps.saturating_sub(done)
            ),
        ),
        _ => (whole, String::new()),
    };
    let left = deadline
        .duration_since(SystemTime::now())
        .map_or(0.0, |d| d.as_secs_f64());
    let rate = if *basis == cell.run.method {
        "its method".to_string()
    } else {
        format!("{basis}, the slowest of its kind (none of its own method)")
    };
    (expected > left).then(|| {
        format!(
            "not started: about {expected:.0} s{what} at the slowest rate of {rate} on its \
             task in timing.csv, {left:.0} s left before --deadline"
        )
    })
}

/// Announces a grid of `cells` with `pending` to run on `workers`, and returns its one progress
/// bar, of the cells recorded.
fn recorded_bar(cells: &[Cell], pending: usize, workers: &str) -> indicatif::ProgressBar {
    println!("{} cells, {pending} to run, on {workers}", cells.len());
    let bar = indicatif::ProgressBar::new(cells.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("grid [{bar:30}] {pos}/{len} recorded (eta {eta})")
            .expect("static template"),
    );
    bar
}

/// [`execute`] on one thread per runner of `runners`, all over `cells` (each cell claimed by
/// one of them), under one progress bar of the cells recorded; their outcomes as one.
pub fn execute_threads(
    cells: &[Cell],
    runners: Vec<Box<dyn CellRunner + Send>>,
    policy: Policy,
) -> Result<Outcome> {
    let pending = pending_longest_first(cells, policy);
    let bar = recorded_bar(
        cells,
        pending.len(),
        &format!("{} threads of this process", runners.len()),
    );
    let recorded = || {
        cells
            .iter()
            .filter(|c| c.is_done(policy.rerun_since))
            .count() as u64
    };
    let attempted = Attempted::default();
    let outcomes: Vec<Result<Outcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runners
            .into_iter()
            .map(|mut runner| {
                let (pending, bar, attempted) = (pending.clone(), &bar, &attempted);
                scope.spawn(move || -> Result<Outcome> {
                    let mut outcome = Outcome::default();
                    let shown = Shown { bar, counts: false };
                    run_pending(
                        pending,
                        runner.as_mut(),
                        policy,
                        shown,
                        attempted,
                        &mut outcome,
                    )?;
                    Ok(outcome)
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            bar.set_position(recorded());
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a cell thread panicked")))
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut all = Outcome::default();
    for outcome in outcomes {
        let outcome = outcome?;
        all.ran.extend(outcome.ran);
        all.failed.extend(outcome.failed);
        all.deferred.extend(outcome.deferred);
    }
    // Each cell was started or deferred at most once in this process (`Attempted`), so it
    // counts once.
    all.already_recorded = cells.len() - all.ran.len() - all.failed.len() - all.deferred.len();
    Ok(all)
}

fn run_claimed(
    cell: &Cell,
    claim: Claim,
    runner: &mut dyn CellRunner,
    policy: Policy,
    shown: Shown<'_>,
    attempted: &Attempted,
    outcome: &mut Outcome,
) -> Result<()> {
    let stem = cell.run.stem();
    let bar = shown.bar;
    let pass = || {
        if shown.counts {
            bar.inc(1);
        }
    };
    // Another worker may have finished it between our first look and the lock.
    if cell.is_done(policy.rerun_since) {
        outcome.already_recorded += 1;
        pass();
        return Ok(());
    }
    // A sibling thread ran it and it failed: reported once, by that thread.
    let first = attempted
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(cell.record.clone());
    if !first {
        pass();
        return Ok(());
    }
    if policy.restart && cell.checkpoint.exists() {
        std::fs::remove_dir_all(&cell.checkpoint)
            .with_context(|| format!("cannot remove {}", cell.checkpoint.display()))?;
    }
    if cell.record.exists() && !cell.is_recorded() {
        let kept = set_aside(&cell.record)?;
        say(
            bar,
            format!(
                "{stem}: its record is of another spec or fails its checksum: kept as {}, rerunning",
                kept.display()
            ),
        );
    }
    bar.set_message(stem.clone());
    match runner.run(&cell.run, &cell.config, &cell.checkpoint) {
        Ok(rec) => {
            let rec = CellRecord {
                spec_hash: cell.hash.clone(),
                ..rec
            };
            rec.write(&cell.record)?;
            let line = if policy.report_dev {
                let dev = rec
                    .dev_accuracy
                    .map_or("none (no dev split)".to_string(), |a| format!("{a:.1}%"));
                format!("{stem}: dev accuracy {dev} in {:.0} s", rec.wall_secs)
            } else {
                format!(
                    "{stem}: test accuracy {:.1}% in {:.0} s",
                    rec.test_accuracy, rec.wall_secs
                )
            };
            let line = match rec.time_breakdown() {
                Some(phases) => format!("{line} ({phases})"),
                None => line,
            };
            say(bar, line);
            let _ = std::fs::remove_dir_all(&cell.checkpoint);
            // An earlier failure of the cell no longer stands (absent, as a rule).
            let _ = std::fs::remove_file(cell.failure_note());
            outcome.ran.push(stem);
        }
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            bar.suspend(|| eprintln!("{stem}: FAILED: {msg}"));
            let note = format!("spec_hash {}\n{msg}\n", cell.hash);
            let written = cell
                .record
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| atomic_file::write(cell.failure_note(), note));
            if let Err(write) = written {
                // Without its note the cell reads as not yet run: a tuning group waits for it.
                say(
                    bar,
                    format!(
                        "{stem}: cannot write {}: {write}",
                        cell.failure_note().display()
                    ),
                );
            }
            outcome.failed.push((stem, msg));
        }
    }
    drop(claim);
    pass();
    Ok(())
}

/// Moves a record that no longer answers its cell (another spec: e.g. other settings or
/// `--compute`; or a failed checksum) into `runs/superseded/`, named with the time, so that the
/// new run never overwrites it; its steps sidecar goes with it (first: the set-aside record
/// never lacks it). Returns where the record went.
pub(super) fn set_aside(record: &Path) -> Result<PathBuf> {
    let dir = record
        .parent()
        .context("a record path has a parent")?
        .join("superseded");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stem = record
        .file_stem()
        .and_then(|s| s.to_str())
        .context("a record file has a name")?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let to = dir.join(format!("{stem}__{stamp}.json"));
    let (steps_from, steps_to) = (
        super::record::steps_path(record),
        super::record::steps_path(&to),
    );
    if steps_from.exists() {
        std::fs::rename(&steps_from, &steps_to).with_context(|| {
            format!(
                "cannot move {} to {}",
                steps_from.display(),
                steps_to.display()
            )
        })?;
    }
    std::fs::rename(record, &to)
        .with_context(|| format!("cannot move {} to {}", record.display(), to.display()))?;
    Ok(to)
}

/// Gives `cell` a copy of the record at `from` (a run of the cell's very spec: a tuning winner,
/// or a source grid's final) instead of running it. It does so under the cell's claim, so
/// workers that adopt the same cell at once never both set aside what was there: on 2026-12-07
/// two workers adopting RTE's DP-SGD winner raced, and the second failed moving a sidecar the
/// first had moved. A cell another worker holds, or one already recorded, is left as it is. A
/// record of another spec already there is set aside first. Returns whether this call adopted.
pub(super) fn adopt_record(cell: &Cell, from: &Path) -> Result<bool> {
    let Some(_claim) = claim(cell, Wait::No)? else {
        return Ok(false);
    };
    if cell.is_recorded() {
        return Ok(false);
    }
    if cell.record.exists() {
        set_aside(&cell.record)?;
    }
    let dir = cell.record.parent().context("a record path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    CellRecord::copy(from, &cell.record)?;
    Ok(true)
}

/// One worker process's place: the CUDA_VISIBLE_DEVICES it gets (`None` on the CPU) and its
/// job number on that device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub gpu: Option<String>,
    pub job: usize,
}

impl Slot {
    fn label(&self) -> String {
        match &self.gpu {
            Some(g) => format!("gpu{g}.{}", self.job),
            None => format!("cpu.{}", self.job),
        }
    }
}

/// The worker slots of `--gpus LIST|all --jobs-per-gpu N`. `visible` is this process's
/// CUDA_VISIBLE_DEVICES (indices in LIST refer to its entries), `count` the CUDA devices seen.
pub fn slots(
    gpus: Option<&str>,
    jobs_per_gpu: usize,
    visible: Option<&str>,
    count: usize,
    on_cuda: bool,
) -> Result<Vec<Slot>> {
    if jobs_per_gpu == 0 {
        bail!("--jobs-per-gpu 0: must be >= 1");
    }
    let Some(gpus) = gpus else {
        if on_cuda {
            // `--jobs-per-gpu N` alone on a CUDA host: N workers on this process's first GPU.
            return slots(Some("0"), jobs_per_gpu, visible, count, on_cuda);
        }
        return Ok((0..jobs_per_gpu)
            .map(|job| Slot { gpu: None, job })
            .collect());
    };
    if !on_cuda || count == 0 {
        bail!(
            "--gpus {gpus}: this run has no CUDA device (on the CPU, --jobs-per-gpu N alone starts \
             N worker processes)"
        );
    }
    let indices: Vec<usize> = if gpus.trim() == "all" {
        (0..count).collect()
    } else {
        gpus.split(',')
            .map(|g| {
                let i: usize = g.trim().parse().map_err(|_| {
                    anyhow::anyhow!("--gpus {gpus}: {g:?} is not a GPU index (or use `all`)")
                })?;
                if i >= count {
                    bail!(
                        "--gpus {gpus}: GPU {i} does not exist ({count} visible: 0..{})",
                        count - 1
                    );
                }
                Ok(i)
            })
            .collect::<Result<_>>()?
    };
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = indices.iter().find(|i| !seen.insert(**i)) {
        bail!("--gpus {gpus}: GPU {dup} is listed twice (use --jobs-per-gpu for more workers)");
    }
    let visible: Option<Vec<&str>> = visible
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(str::trim).collect());
    Ok(indices
        .iter()
        .flat_map(|&i| {
            let physical = match &visible {
                Some(v) if i < v.len() => v[i].to_string(),
                _ => i.to_string(),
            };
            (0..jobs_per_gpu).map(move |job| Slot {
                gpu: Some(physical.clone()),
                job,
            })
        })
        .collect())
}

/// `argv` without the parent-only grid flags and without `--device`, so that a worker can be
/// started with its own device.
pub fn worker_args(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in argv {
        if skip_value {
            skip_value = false;
            continue;
        }
        let flag = a.split('=').next().unwrap_or(a);
        if PARENT_ONLY_FLAGS.contains(&flag) || flag == "--device" {
            skip_value = !a.contains('=');
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// Start one worker process per slot, each running this same command on its own device, show one
/// progress display over `cells`, forward each worker's lines to this process's output with its
/// slot as prefix, and wait for all of them.
pub fn run_workers(cells: &[Cell], slots: &[Slot], policy: Policy) -> Result<()> {
    let exe = std::env::current_exe().context("cannot locate the repro binary")?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let base = worker_args(&argv);
    let pending = cells
        .iter()
        .filter(|c| !c.is_done(policy.rerun_since))
        .count();
    let bar = recorded_bar(cells, pending, &format!("{} worker processes", slots.len()));
    let mut children = Vec::new();
    let mut forwarders = Vec::new();
    for slot in slots {
        let mut cmd = Command::new(&exe);
        cmd.args(&base).arg("--worker");
        if let Some(since) = policy.rerun_since {
            cmd.env(RERUN_SINCE_ENV, unix_seconds(since));
        }
        if let Some(end) = policy.deadline {
            cmd.env(DEADLINE_ENV, unix_seconds(end));
        }
        match &slot.gpu {
            Some(g) => cmd
                .env("CUDA_VISIBLE_DEVICES", g)
                .args(["--device", "cuda"]),
            None => cmd.args(["--device", "cpu"]),
        };
        // Workers share the host's cores instead of oversubscribing them (the user's setting
        // wins), on a GPU host too. Four H200 workers with libtorch's default of a thread per
        // core each spent about 60 s setting up their first cell, against under 1 s alone
        // (results/table2/mini/calls-2026-12-05.log); four throughput processes took as long
        // to load without a share and about 10 s with one
        // (results/perf/h200-2026-12-05-packed-tokens/), so the share is the likely cure.
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cmd.env("OMP_NUM_THREADS", (cores / slots.len()).max(1).to_string());
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start worker {}", slot.label()))?;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let bar = bar.clone();
            let label = slot.label();
            forwarders.push(std::thread::spawn(move || {
                for chunk in std::io::BufReader::new(stream).split(b'\n') {
                    let Ok(chunk) = chunk else { break };
                    // Progress redraws ('\r') of a worker are not worth a log line.
                    let text = String::from_utf8_lossy(&chunk);
                    let line = text.rsplit('\r').next().unwrap_or_default().trim_end();
                    if !line.trim().is_empty() {
                        say(&bar, format!("[{label}] {line}"));
                    }
                }
            }));
        }
        children.push((slot.clone(), child));
    }
    let mut failures = Vec::new();
    for (slot, mut child) in children {
        loop {
            bar.set_position(
                cells
                    .iter()
                    .filter(|c| c.is_done(policy.rerun_since))
                    .count() as u64,
            );
            match child.try_wait()? {
                Some(status) => {
                    if !status.success() {
                        failures.push(format!("{} ({status})", slot.label()));
                    }
                    break;
                }
                None => std::thread::sleep(std::time::Duration::from_millis(500)),
            }
        }
    }
    for f in forwarders {
        let _ = f.join();
    }
    bar.finish_and_clear();
    let missing: Vec<String> = cells
        .iter()
        .filter(|c| !c.is_done(policy.rerun_since))
        .map(|c| c.run.stem())
        .collect();
    if failures.is_empty() && !missing.is_empty() && policy.deadline.is_some() {
        // Every worker ended well: what is missing was not started before --deadline.
        println!(
            "{} of {} cells recorded; {} left for a later call by --deadline: {}",
            cells.len() - missing.len(),
            cells.len(),
            missing.len(),
            missing.join(", ")
        );
        return Ok(());
    }
    if !failures.is_empty() || !missing.is_empty() {
        bail!(
            "workers failed: [{}]; cells without a record: [{}] (rerun the same command to \
             resume them)",
            failures.join(", "),
            missing.join(", ")
        );
    }
    println!("all {} cells recorded", cells.len());
    Ok(())
}

/// Quote one shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What the Slurm script runs.
pub struct SlurmJob<'a> {
    pub target: &'a str,
    pub preset: &'a str,
    /// This command's arguments after the subcommand (grid-parent flags are dropped).
    pub args: &'a [String],
    pub out: &'a Path,
    pub experiments: &'a Path,
    pub tasks: usize,
    pub gpu: bool,
    pub sbatch_args: &'a [String],
}

/// A bash script that submits a job array of `tasks` shards (each a resumable `repro` call into
/// the shared results tree, one log per task) and a job, after all of them, that runs
/// `repro check` to merge the records into the summary, comparison and plot.
pub fn slurm_script(job: &SlurmJob, script: &Path, exe: &Path, workdir: &Path) -> String {
    let name = format!("dpzo-{}-{}", job.target, job.preset);
    let logs = job.out.join("slurm");
    let mut args: Vec<String> = worker_args(job.args)
        .into_iter()
        .filter(|a| !a.starts_with("--shard"))
        .collect();
    args.extend([
        "--device".into(),
        if job.gpu { "cuda" } else { "cpu" }.into(),
    ]);
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let mut extra = String::new();
    if job.gpu {
        extra.push_str("#SBATCH --gres=gpu:1\n");
    }
    for a in job.sbatch_args {
        extra.push_str(&format!("#SBATCH {}\n", shell_quote(a)));
    }
    let exe = shell_quote(&exe.display().to_string());
    let check = format!(
        "{exe} check {} --preset {} --out {} --experiments {}",
        job.target,
        shell_quote(job.preset),
        shell_quote(&job.out.display().to_string()),
        shell_quote(&job.experiments.display().to_string()),
    );
    format!(
        r#"#!/usr/bin/env bash
# Submit with: bash {script}
# {tasks} array tasks, each a resumable shard of `repro {target} --preset {preset}` writing into
# {out}; then `repro check` merges the records. Written by `repro {target} --emit-slurm`.
set -euo pipefail
cd {workdir}
mkdir -p {logs}
array=$(sbatch --parsable --job-name={name} --array=0-{last} \
  --output={logs}/{name}-%A_%a.log <<'EOF'
#!/usr/bin/env bash
#SBATCH --ntasks=1
{extra}set -euo pipefail
cd {workdir}
exec {exe} {target} {args} --shard "$SLURM_ARRAY_TASK_ID/{tasks}"
EOF
)
array=${{array%%;*}}
merge=$(sbatch --parsable --job-name={name}-check --dependency=afterok:$array \
  --output={logs}/{name}-check-%j.log <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
cd {workdir}
exec {check}
EOF
)
echo "submitted array job $array ({tasks} tasks) and merge job ${{merge%%;*}}; logs in {logs}"
"#,
        script = shell_quote(&script.display().to_string()),
        tasks = job.tasks,
        last = job.tasks.saturating_sub(1),
        target = job.target,
        preset = job.preset,
        out = job.out.display(),
        workdir = shell_quote(&workdir.display().to_string()),
        logs = shell_quote(&logs.display().to_string()),
        args = args.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record set aside takes its steps sidecar with it, under its new name, and both read
    /// there as they did before.
    #[test]
    fn set_aside_moves_the_record_and_its_sidecar() {
        use super::super::record::steps_path;
        let dir = std::env::temp_dir().join(format!("dpzo-set-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/legacy-records/runs/SST-2__dp-ft__eps8__seed13.json");
        let record = runs.join("SST-2__dp-ft__eps8__seed13.json");
        CellRecord::read(&fixture).unwrap().write(&record).unwrap();
        let steps = CellRecord::read(&record).unwrap().steps(&record).unwrap();
        assert!(steps_path(&record).is_file() && !steps.is_empty());
        let to = set_aside(&record).unwrap();
        assert_eq!(to.parent(), Some(runs.join("superseded").as_path()));
        assert!(!record.exists() && !steps_path(&record).exists());
        assert!(steps_path(&to).is_file());
        let moved = CellRecord::read(&to).unwrap();
        assert_eq!(moved.steps(&to).unwrap(), steps);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Adoption goes through the cell's claim: under another worker's claim it leaves the cell
    /// alone, and of eight threads adopting at once exactly one sets the stale record aside and
    /// copies, and none fails (before, two workers raced on the stale record's sidecar).
    #[test]
    fn concurrent_adopters_set_the_stale_record_aside_once() {
        use super::super::record::steps_path;
        let dir = std::env::temp_dir().join(format!("dpzo-adopt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cell = test_cell(&dir, 13, 300, 32);
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/legacy-records/runs/SST-2__dp-ft__eps8__seed13.json");
        let mut winner = CellRecord::read(&fixture).unwrap();
        winner.spec_hash = cell.hash.clone();
        let from = dir.join("tuning/runs/t__m__eps4__seed13.json");
        std::fs::create_dir_all(dir.join("tuning/runs")).unwrap();
        std::fs::create_dir_all(dir.join("runs")).unwrap();
        winner.write(&from).unwrap();
        let mut stale = CellRecord::read(&fixture).unwrap();
        stale.spec_hash = "another spec".into();
        stale.write(&cell.record).unwrap();
        assert!(steps_path(&cell.record).is_file() && !cell.is_recorded());

        let held = claim(&cell, Wait::No).unwrap().expect("the lock is free");
        assert!(
            !adopt_record(&cell, &from).unwrap(),
            "a claimed cell is left alone"
        );
        assert!(!cell.is_recorded() && cell.record.exists());
        drop(held);

        let adopted: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| adopt_record(&cell, &from).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(adopted.iter().filter(|a| **a).count(), 1, "{adopted:?}");
        assert!(cell.is_recorded());
        let superseded = dir.join("runs/superseded");
        let kept: Vec<_> = std::fs::read_dir(&superseded)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept.len(), 2, "one record and its sidecar: {kept:?}");
        let aside = kept.iter().find(|k| !k.contains(".steps.")).unwrap();
        assert_eq!(
            CellRecord::read(&superseded.join(aside)).unwrap().spec_hash,
            "another spec"
        );
        assert!(
            !adopt_record(&cell, &from).unwrap(),
            "a recorded cell is left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shards_partition_the_grid() {
        let grid: Vec<usize> = (0..23).collect();
        for n in 1..=7 {
            let mut union: Vec<usize> = (0..n)
                .flat_map(|i| Shard { index: i, count: n }.select(&grid))
                .collect();
            let sizes: Vec<usize> = (0..n)
                .map(|i| Shard { index: i, count: n }.select(&grid).len())
                .collect();
            union.sort();
            assert_eq!(
                union, grid,
                "n = {n}: the union of the shards is the grid, once each"
            );
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn a_superseded_record_is_kept_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("dpzo-aside-{}", std::process::id()));
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        let record = runs.join("SST-2__dpzero__eps4__seed13.json");
        std::fs::write(&record, b"{\"old\": true}").unwrap();
        let kept = set_aside(&record).unwrap();
        assert!(!record.exists());
        assert_eq!(kept.parent().unwrap(), runs.join("superseded"));
        assert_eq!(std::fs::read(&kept).unwrap(), b"{\"old\": true}");
        // The summary reads runs/*.json only: the kept record is not aggregated.
        let (good, failed) = super::super::record::read_all_checked(&runs).unwrap();
        assert!(good.is_empty() && failed.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A cell of `seed` with `steps` x `batch` under `base` (its record in `base/runs`).
    fn test_cell(base: &Path, seed: u64, steps: u64, batch: u64) -> Cell {
        let stem = format!("t__m__eps4__seed{seed}");
        Cell {
            run: RunSpec {
                target: "t".into(),
                preset: "p".into(),
                task: "t".into(),
                method: "m".into(),
                epsilon: Some(4.0),
                seed,
                settings: toml::Table::new(),
            },
            config: serde_json::json!({ "steps": steps, "batch_size": batch }),
            hash: format!("{seed:016}"),
            record: base.join("runs").join(format!("{stem}.json")),
            lock: base.join("locks").join(format!("{stem}.lock")),
            checkpoint: base.join("checkpoints").join(stem),
            length: Length::Unknown,
        }
    }

    /// Workers claim the longest cells first (steps x batch), ties in the grid's order, and a
    /// recorded cell is not pending at all.
    #[test]
    fn pending_cells_come_longest_first() {
        let dir = std::env::temp_dir().join(format!("dpzo-lpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cell = |seed: u64, steps: u64, batch: u64| test_cell(&dir, seed, steps, batch);
        // A learning curve in the grid's order (T = 1200, 2400, 4800 at B 64), a first-order
        // cell (300 x 32) and one without steps (zero-shot).
        let cells = vec![
            cell(1, 1200, 64),
            cell(2, 2400, 64),
            cell(3, 4800, 64),
            cell(4, 300, 32),
            cell(5, 1200, 64),
            cell(6, 0, 64),
            cell(7, 4800, 64),
        ];
        let order = |cells: &[Cell]| -> Vec<u64> {
            pending_longest_first(cells, Policy::default())
                .iter()
                .map(|c| c.run.seed)
                .collect()
        };
        assert_eq!(order(&cells), vec![3, 7, 2, 1, 5, 4, 6]);
        // Once cell 3 has its record, it is no longer pending.
        let mut rec = CellRecord::read(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/legacy-records/runs/SST-2__dp-ft__eps8__seed13.json"),
        )
        .unwrap();
        rec.spec_hash = cells[2].hash.clone();
        std::fs::create_dir_all(dir.join("runs")).unwrap();
        rec.write(&cells[2].record).unwrap();
        assert_eq!(order(&cells), vec![7, 2, 1, 5, 4, 6]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Threads of one process (`--joint-cells`): a failing cell is run once, by the thread that
    /// claimed it first, and reported once; the sibling that waited for its lock does not run it
    /// again, and the outcome counts every cell exactly once. A cell of the same stem elsewhere
    /// (a tuning candidate beside its final) is another cell, and runs too.
    #[test]
    fn a_cell_failing_on_one_thread_is_not_rerun_by_its_sibling() {
        let dir = std::env::temp_dir().join(format!("dpzo-fail-twice-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The tuning tests' runner fails DP-ZOPO at a step size of 1e-3, whatever the timing:
        // without the fix each thread ran every cell: six failures for three cells.
        use super::super::tune::tests::world::Runner;
        let cells: Vec<Cell> = [(13, "."), (21, "."), (13, "candidates/1")]
            .into_iter()
            .map(|(seed, under)| {
                let mut cell = test_cell(&dir.join(under), seed, 8, 4);
                cell.run.method = "dp-zopo".into();
                cell.run
                    .settings
                    .insert("learning_rate".into(), 1e-3.into());
                cell
            })
            .collect();
        let runners: Vec<Box<dyn super::super::CellRunner + Send>> = (0..2)
            .map(|_| Box::new(Runner::default()) as Box<_>)
            .collect();
        let outcome = execute_threads(&cells, runners, Policy::default()).unwrap();
        let mut failed: Vec<&str> = outcome.failed.iter().map(|(s, _)| s.as_str()).collect();
        failed.sort();
        assert_eq!(
            failed,
            [
                "t__dp-zopo__eps4__seed13",
                "t__dp-zopo__eps4__seed13",
                "t__dp-zopo__eps4__seed21"
            ]
        );
        assert!(outcome.ran.is_empty());
        assert_eq!(outcome.already_recorded, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--deadline`: a cell whose estimate ends after the deadline is not started, and is
    /// counted once as deferred though both threads reach it; a checkpointed cell is judged by
    /// the steps it has left. A cell without its own method's rate takes the slowest rate on its
    /// task of a method that steps as it does; one with neither does not start. An
    /// evaluation-only cell is judged by the slowest evaluation-only cell timed on its task, and
    /// starts where none is. Without a deadline every cell runs.
    #[test]
    fn a_deadline_defers_the_cells_that_would_not_finish_and_only_those() {
        use super::super::tune::tests::world::Runner;
        let dir = std::env::temp_dir().join(format!("dpzo-deadline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = |t: &str, m: &str| (t.to_string(), m.to_string());
        let slowest = super::super::timing::SlowestRates {
            per_step: std::collections::BTreeMap::from([
                (key("t", "dpzero"), 10.0),
                (key("t", "dp-zoso"), 9.0),
                (key("t", "dp-ft"), 0.01),
                (key("t", "dp-lora"), 0.001),
            ]),
            // A zero-shot cell timed on t (half an hour, as MultiRC's on two CPU cores).
            evaluation: std::collections::BTreeMap::from([(
                key("t", "zero-shot-dev-bias"),
                1800.0,
            )]),
        };
        let cells = |dir: &Path| -> Vec<Cell> {
            // Seed 1: 100 steps x 10 s; 2: 100 x 0.01 s; 3 and 5: as 1, with a checkpoint at
            // step 97 (30 s left) and at step 50 (500 s left); 4: DP-ZOPO has no rate on t, so
            // DPZero's, the slowest zeroth-order one, gives 1000 s; 6: DP-prefix takes DP-FT's
            // 0.01 s, 1 s; 7: task u has no rates at all; 8: zero-shot on u, where no evaluation is
            // timed; 9: zero-shot on t takes the dev-bias zero-shot's 1800 s there.
            let specs = [
                (1, "t", "dpzero"),
                (2, "t", "dp-ft"),
                (3, "t", "dpzero"),
                (4, "t", "dp-zopo"),
                (5, "t", "dpzero"),
                (6, "t", "dp-prefix"),
                (7, "u", "dpzero"),
                (8, "u", "zero-shot"),
                (9, "t", "zero-shot"),
            ];
            let mut cells: Vec<Cell> = specs
                .into_iter()
                .map(|(seed, task, method)| {
                    let mut cell = test_cell(dir, seed, 100, 4);
                    cell.run.task = task.into();
                    cell.run.method = method.into();
                    // The tuning tests' runner fabricates its record from these.
                    cell.run
                        .settings
                        .insert("learning_rate".into(), 1e-5.into());
                    cell.run.settings.insert("steps".into(), 100.into());
                    cell
                })
                .collect();
            estimate(&mut cells, &slowest);
            std::fs::create_dir_all(dir.join("runs")).unwrap();
            for (i, step) in [(2, 97), (4, 50)] {
                std::fs::create_dir_all(&cells[i].checkpoint).unwrap();
                // The trainer's pointer to its newest checkpoint (`checkpoint::save`).
                std::fs::write(
                    cells[i].checkpoint.join("latest"),
                    format!("step-{step:010}"),
                )
                .unwrap();
            }
            cells
        };
        let runners = || -> Vec<Box<dyn super::super::CellRunner + Send>> {
            (0..2)
                .map(|_| Box::new(Runner::default()) as Box<_>)
                .collect()
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let expected = |seconds: f64, basis: &str| Length::Expected {
            seconds,
            basis: basis.into(),
        };
        let mut policy = Policy::from_flags(false, false, Some(60.0));
        let with = cells(&dir.join("with"));
        let lengths: Vec<Length> = with.iter().map(|c| c.length.clone()).collect();
        assert_eq!(
            lengths,
            [
                expected(1000.0, "dpzero"),
                expected(1.0, "dp-ft"),
                expected(1000.0, "dpzero"),
                expected(1000.0, "dpzero"),
                expected(1000.0, "dpzero"),
                expected(1.0, "dp-ft"),
                Length::Unknown,
                Length::EvaluationOnly,
                expected(1800.0, "zero-shot-dev-bias"),
            ]
        );
        let outcome = execute_threads(&with, runners(), policy).unwrap();
        assert_eq!(
            sorted(outcome.ran),
            [
                "t__dp-ft__eps4__seed2",
                "t__dp-prefix__eps4__seed6",
                "t__dpzero__eps4__seed3",
                "u__zero-shot__eps4__seed8"
            ]
        );
        assert_eq!(
            sorted(outcome.deferred),
            [
                "t__dp-zopo__eps4__seed4",
                "t__dpzero__eps4__seed1",
                "t__dpzero__eps4__seed5",
                "t__zero-shot__eps4__seed9",
                "u__dpzero__eps4__seed7"
            ]
        );
        assert!(outcome.failed.is_empty());
        assert_eq!(outcome.already_recorded, 0);
        assert!(!with[0].record.exists() && with[1].record.exists());
        // A deadline already passed defers every cell that trains or has a timed evaluation;
        // none is deferred without a deadline.
        policy.deadline = Some(SystemTime::now() - std::time::Duration::from_secs(1));
        let passed = cells(&dir.join("passed"));
        let outcome = execute_threads(&passed, runners(), policy).unwrap();
        assert_eq!(
            (outcome.ran, outcome.deferred.len()),
            (vec!["u__zero-shot__eps4__seed8".to_string()], 8)
        );
        let outcome =
            execute_threads(&cells(&dir.join("none")), runners(), Policy::default()).unwrap();
        assert_eq!((outcome.ran.len(), outcome.deferred.len()), (9, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The deferral lines say which rate they used, or that the length is unknown.
    #[test]
    fn a_deferral_names_the_rate_it_borrowed() {
        let dir = std::env::temp_dir().join(format!("dpzo-deadline-why-{}", std::process::id()));
        let policy = Policy::from_flags(false, false, Some(60.0));
        let mut cell = test_cell(&dir, 1, 100, 4);
        cell.run.method = "dp-zopo".into();
        cell.length = Length::Expected {
            seconds: 1000.0,
            basis: "dpzero".into(),
        };
        let why = after_deadline(&cell, policy).unwrap();
        assert!(
            why.contains("about 1000 s at the slowest rate of dpzero, the slowest of its kind"),
            "{why}"
        );
        cell.length = Length::Unknown;
        assert!(after_deadline(&cell, policy)
            .unwrap()
            .contains("its length is unknown"));
        cell.length = Length::EvaluationOnly;
        assert_eq!(after_deadline(&cell, policy), None);
        assert_eq!(after_deadline(&cell, Policy::default()), None);
    }

    #[test]
    fn shard_parsing_names_bad_values() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn slots_pin_workers_to_gpus() {
        let s = slots(Some("0,2"), 2, None, 4, true).unwrap();
        let gpus: Vec<_> = s.iter().map(|s| s.gpu.clone().unwrap()).collect();
        assert_eq!(gpus, ["0", "0", "2", "2"]);
        // Indices refer to this process's CUDA_VISIBLE_DEVICES.
        let s = slots(Some("all"), 1, Some("5,7"), 2, true).unwrap();
        let gpus: Vec<_> = s.iter().map(|s| s.gpu.clone().unwrap()).collect();
        assert_eq!(gpus, ["5", "7"]);
        assert!(slots(Some("3"), 1, None, 2, true)
            .unwrap_err()
            .to_string()
            .contains("GPU 3"));
        assert!(slots(Some("0,0"), 1, None, 2, true).is_err());
        assert!(slots(Some("0"), 1, None, 0, false)
            .unwrap_err()
            .to_string()
            .contains("no CUDA"));
        assert_eq!(slots(None, 3, None, 0, false).unwrap().len(), 3);
        // Without --gpus on a CUDA host, the workers share this process's first visible GPU.
        let s = slots(None, 2, Some("3,1"), 2, true).unwrap();
        let gpus: Vec<_> = s.iter().map(|s| s.gpu.clone().unwrap()).collect();
        assert_eq!(gpus, ["3", "3"]);
        assert!(slots(None, 0, None, 0, false).is_err());
    }

    #[test]
    fn worker_args_drop_parent_flags() {
        let argv: Vec<String> = [
            "table2",
            "--gpus",
            "0,1",
            "--jobs-per-gpu=4",
            "--device",
            "cuda",
            "--preset",
            "mini",
            "--slurm-arg",
            "--time=1:00:00",
            "--tasks",
            "SST-2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            worker_args(&argv),
            ["table2", "--preset", "mini", "--tasks", "SST-2"]
        );
    }

    #[test]
    fn locks_exclude_a_second_claim_until_released() {
        let dir = std::env::temp_dir().join(format!("dpzo-grid-lock-{}", std::process::id()));
        let cell = Cell {
            run: RunSpec {
                target: "t".into(),
                preset: "p".into(),
                task: "A".into(),
                method: "m".into(),
                epsilon: None,
                seed: 1,
                settings: toml::Table::new(),
            },
            config: serde_json::Value::Null,
            hash: "0".repeat(64),
            record: dir.join("runs/a.json"),
            lock: dir.join("locks/a.lock"),
            checkpoint: dir.join("checkpoints/a"),
            length: Length::Unknown,
        };
        let first = claim(&cell, Wait::No).unwrap();
        assert!(first.is_some());
        assert!(claim(&cell, Wait::No).unwrap().is_none());
        let holder = std::fs::read_to_string(&cell.lock).unwrap();
        assert!(holder.starts_with(&format!("pid {} host ", std::process::id())));
        drop(first);
        assert!(claim(&cell, Wait::No).unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dead_holders_lock_is_free_again() {
        // util-linux `flock` holds the lock in another process, which we then kill -9: the kernel
        // releases the lock, so no stale claim survives a crashed worker.
        let dir = std::env::temp_dir().join(format!("dpzo-grid-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("a.lock");
        let ready = dir.join("ready");
        // `-o`: the lock belongs to the `flock` process alone, not to the command it starts.
        let mut holder = Command::new("flock")
            .arg("-o")
            .arg(&lock)
            .args(["sh", "-c"])
            .arg(format!("touch {}; sleep 60", ready.display()))
            .spawn()
            .expect("util-linux flock runs");
        let start = std::time::Instant::now();
        while !ready.exists() {
            assert!(start.elapsed().as_secs() < 30, "flock never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let file = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
        assert!(matches!(
            file.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        holder.kill().unwrap();
        holder.wait().unwrap();
        file.try_lock()
            .expect("the lock is free once its holder is dead");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
