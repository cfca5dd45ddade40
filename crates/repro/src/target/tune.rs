//! `--tune`: hyper-parameters chosen on dev, never on test, for every method alike.
//!
//! - Phase 1: every candidate of a method's search space ([`super::spec::TuneSpace`]) runs on the
//!   tuning seed (the preset's first seed), each in its own directory under `tuning/`, so that no
//!   candidate's record is ever aggregated into the results.
//! - Selection: the candidate with the highest **dev** accuracy of its final iterate (ties: the
//!   earlier in the space's order); a candidate that failed (e.g. diverged) is never selected.
//!   No test accuracy of any candidate is read.
//! - Phase 2: the winner's settings on every seed. On the tuning seed that run is the winning
//!   candidate itself (same spec hash), whose record is adopted rather than run twice.
//! - Task by task: phase 1, selection and phase 2 of one task, then the next task's.
//!
//! Privacy: tuning on the private training set is itself a release. For each final run the
//! procedure's guarantee composes every distinct run it depended on (all candidates of its group
//! and the final run itself) through the accountant that the runs used (plain composition).
//! Beside it, `epsilon_procedure_random_k` gives Papernot & Steinke's RDP bound for the
//! randomized counterpart of the search (a geometric number of random candidates with the same
//! expected count; [`TuningNote`]). Dev
//! accuracy is used without privatisation, as DPZero and MeZO do: the dev split is treated as
//! public, which a deployment on private dev data would have to account for separately.
//!
//! Two ways to select fewer times, both stated in the records ([`TuningNote::source`]) and never
//! cheaper in ε than what ran: `tune_options.at_epsilon` (a preset's groups at other ε reuse the
//! winner of one ε; their procedure composes that ε's candidates with their final run), and
//! [`inherit`] (another target's winners, e.g. ablations taking table2's; each record composes
//! the source group's candidates with the run).

use super::grid::{self, Cell, Policy};
use super::record::CellRecord;
use super::spec::{is_non_private, overlaid, Preset, RunSpec, Spec, TuneSpace};
use super::{CellRunner, TargetArgs};
use accountant::{AccountantKind, Ledger};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// (task, method, epsilon bits): the runs that share one selection.
type GroupKey = (String, String, Option<u64>);

/// One selection's candidates.
pub type Group = (GroupKey, Vec<Candidate>);

fn group_of(run: &RunSpec) -> GroupKey {
    (
        run.task.clone(),
        run.method.clone(),
        run.epsilon.map(f64::to_bits),
    )
}

/// The group whose selection a run takes: its own, or with `at_epsilon`
/// ([`super::spec::TuneOptions`]) the same (task, method) at that ε (private runs only).
fn tuning_key(run: &RunSpec, at_epsilon: Option<f64>) -> GroupKey {
    let (task, method, own) = group_of(run);
    (task, method, own.and(at_epsilon.map(f64::to_bits)).or(own))
}

/// A preset's `tune_options.at_epsilon`, checked.
fn at_epsilon(preset: &Preset) -> Result<Option<f64>> {
    match preset.tune_options.at_epsilon {
        Some(e) if !(e.is_finite() && e > 0.0) => {
            bail!("tune_options.at_epsilon = {e}: must be finite and > 0")
        }
        other => Ok(other),
    }
}

/// The seed the candidates of `preset` run on: its first.
fn tuning_seed(spec: &Spec, preset: &Preset) -> Result<u64> {
    preset
        .seeds
        .as_ref()
        .unwrap_or(&spec.grid.seeds)
        .first()
        .copied()
        .context("the preset has no seed to tune on")
}

/// One candidate run of phase 1.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub index: usize,
    /// The settings it overrides (`learning_rate`, `clip_norm`, …).
    pub overrides: toml::Table,
    /// Its folder under `tuning/` ([`candidate_folder`]).
    pub folder: String,
    pub cell: Cell,
}

/// Where a run's settings were selected when not in its own (task, method, ε) group of its own
/// target: another target's tuning (`inherit_tuning`) or another ε (`tune_options.at_epsilon`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuningSource {
    /// Target and preset whose `tuning/` holds the candidates.
    pub target: String,
    pub preset: String,
    /// The group that selected the settings.
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    /// The selected candidate's folder under `<target>/<preset>/tuning/`.
    pub winner_folder: String,
}

/// What tuning decided for one group, stored in each final record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuningNote {
    /// The seed the candidates ran on.
    pub tuning_seed: u64,
    /// Candidates tried.
    pub candidates: usize,
    /// Index of the selected candidate and its settings.
    pub selected: usize,
    pub selected_settings: serde_json::Value,
    /// Dev accuracy (%) of the selected candidate.
    pub selected_dev_accuracy: f64,
    /// ε of this run alone (`None` for a non-private method).
    pub epsilon_run: Option<f64>,
    /// ε of the whole procedure behind this run: every candidate plus this run, composed.
    pub epsilon_procedure: Option<f64>,
    /// Distinct runs composed into `epsilon_procedure`.
    pub runs_composed: usize,
    /// ε, by Papernot & Steinke's RDP bound (`accountant::tuning`), of the randomized
    /// counterpart of this procedure that their theorem covers: K ~ geometric with E[K] = the
    /// number of candidates, each run a uniformly random candidate, the best by dev released,
    /// then this final run. The grid search actually run (every candidate once) is covered by
    /// `epsilon_procedure` only. `None` for a non-private method; absent in records written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_procedure_random_k: Option<f64>,
    /// Accountant and δ of the composition.
    pub accountant: Option<String>,
    pub delta: Option<f64>,
    /// Set when the settings were selected in another group ([`TuningSource`]); absent when
    /// the run's own group selected them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TuningSource>,
}

/// The groups' candidates: one per point of the method's space, on the tuning seed. Methods
/// without a space are not tuned (zero-shot, or a method the spec leaves fixed). With
/// `tune_options.at_epsilon` a private method's group is its (task, method) at that ε.
pub fn candidates(
    spec: &Spec,
    preset_name: &str,
    runs: &[RunSpec],
    dir: &Path,
    model: &str,
) -> Result<(u64, Vec<Group>)> {
    let preset = spec.preset(preset_name)?;
    let tuning_seed = tuning_seed(spec, preset)?;
    let at = at_epsilon(preset)?;
    let mut groups: Vec<(GroupKey, Vec<Candidate>)> = Vec::new();
    for run in runs {
        let key = tuning_key(run, at);
        if groups.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let Some(space) = spec.tune_space(preset, &run.method)? else {
            continue;
        };
        // Settings do not depend on the seed or ε: the group's run (with any --compute
        // override) moved to the tuning seed and the group's ε.
        let base = RunSpec {
            seed: tuning_seed,
            epsilon: key.2.map(f64::from_bits),
            ..run.clone()
        };
        groups.push((key, group_candidates(&space, &base, dir, model)?));
    }
    Ok((tuning_seed, groups))
}

/// The candidates of `space` for the group of `base` (a run on the tuning seed), each a cell
/// in its own folder under `dir/tuning/`.
fn group_candidates(
    space: &TuneSpace,
    base: &RunSpec,
    dir: &Path,
    model: &str,
) -> Result<Vec<Candidate>> {
    let mut list = Vec::new();
    for (index, overrides) in space.candidates(&base.settings)?.into_iter().enumerate() {
        let run = RunSpec {
            settings: overlaid(&base.settings, &overrides),
            ..base.clone()
        };
        let folder = candidate_folder(&run.method, &overrides);
        let cell = grid::plan(
            std::slice::from_ref(&run),
            &dir.join("tuning").join(&folder),
            model,
        )?
        .pop()
        .context("plan returns one cell per run")?;
        list.push(Candidate {
            index,
            overrides,
            folder,
            cell,
        });
    }
    Ok(list)
}

/// A candidate's folder, named by its settings (`dpzero__clip_norm=30__learning_rate=0.00005`),
/// so that extending a search space keeps every recorded candidate where it is.
fn candidate_folder(method: &str, overrides: &toml::Table) -> String {
    let mut name = method.to_string();
    for (key, value) in overrides {
        let shown = match value {
            // Six significant digits: a scaled step size (5e-6 x 100) reads 0.0005.
            toml::Value::Float(x) => format!("{x:.5e}")
                .parse::<f64>()
                .map_or_else(|_| x.to_string(), |r| r.to_string()),
            other => other.to_string().replace('"', ""),
        };
        name.push_str(&format!("__{key}={shown}"));
    }
    name
}

/// A candidate's outcome: its record's dev accuracy (`None` when it has no record: failed).
fn dev_accuracy(c: &Candidate) -> Option<f64> {
    if !c.cell.is_recorded() {
        return None;
    }
    CellRecord::read(&c.cell.record).ok()?.dev_accuracy
}

/// The mean training loss over the first and the last sixth of the run recorded at `path`
/// ([`super::train_loss::first_and_last`]): shown beside a candidate's dev accuracy so that a
/// run that diverged is seen, never used by the selection (the losses are un-noised
/// diagnostics). `None` when the record is missing, unreadable or logged no losses.
fn loss_ends(path: &Path) -> Option<(f64, f64)> {
    let record = CellRecord::read(path).ok()?;
    super::train_loss::first_and_last(&record, path.parent()?)
        .ok()
        .flatten()
}

/// A group's candidates that have neither a record nor a failure of their spec: not yet run,
/// deferred by `--deadline`, or cut short. Its selection waits for them: on 2026-12-07 a
/// `--deadline` call selected RTE's DP-SGD and DP-ZOSO among the candidates recorded so far, and
/// a candidate that finished later displaced both winners.
fn open_candidates(list: &[Candidate]) -> Vec<&Candidate> {
    list.iter()
        .filter(|c| !c.cell.is_recorded() && !c.cell.has_failed())
        .collect()
}

/// A candidate's `dev_accuracy` in `tuning.csv`: its accuracy, `failed` (its run failed), or
/// `not run`.
fn dev_label(c: &Candidate) -> String {
    match dev_accuracy(c) {
        Some(a) => format!("{a:.2}"),
        None if c.cell.has_failed() => "failed".into(),
        None if c.cell.is_recorded() => "no dev accuracy".into(),
        None => "not run".into(),
    }
}

/// The selected candidate of each group (highest dev accuracy, earliest on ties).
pub fn select<'a>(
    groups: impl IntoIterator<Item = &'a Group>,
) -> Result<BTreeMap<GroupKey, &'a Candidate>> {
    let mut out = BTreeMap::new();
    for (key, list) in groups {
        let mut best: Option<(&Candidate, f64)> = None;
        for c in list {
            if let Some(acc) = dev_accuracy(c) {
                if best.is_none_or(|(_, b)| acc > b) {
                    best = Some((c, acc));
                }
            }
        }
        let (winner, _) = best.with_context(|| {
            format!(
                "tuning {} {} eps {:?}: no candidate finished with a dev accuracy (see their \
                 errors above; a dev split is required for tuning)",
                key.0,
                key.1,
                key.2.map(f64::from_bits)
            )
        })?;
        out.insert(key.clone(), winner);
    }
    Ok(out)
}

/// The final runs: each tuned group's runs with its winner's settings.
pub fn final_runs(
    runs: &[RunSpec],
    winners: &BTreeMap<GroupKey, &Candidate>,
    at_epsilon: Option<f64>,
) -> Vec<RunSpec> {
    runs.iter()
        .map(|r| match winners.get(&tuning_key(r, at_epsilon)) {
            Some(w) => RunSpec {
                settings: overlaid(&r.settings, &w.overrides),
                ..r.clone()
            },
            None => r.clone(),
        })
        .collect()
}

/// A final cell that is the winning candidate's very run (same spec hash) takes its record.
fn adopt_winner_records(
    finals: &[Cell],
    winners: &BTreeMap<GroupKey, &Candidate>,
    at_epsilon: Option<f64>,
) -> Result<()> {
    for cell in finals {
        let Some(w) = winners.get(&tuning_key(&cell.run, at_epsilon)) else {
            continue;
        };
        if w.cell.hash == cell.hash && !cell.is_recorded() && w.cell.is_recorded() {
            grid::adopt_record(cell, &w.cell.record)?;
        }
    }
    Ok(())
}

/// The accountant ledger, accountant kind and δ of a record's trainer ledger.
fn ledger_of(record: &CellRecord) -> Option<(Ledger, AccountantKind, f64)> {
    let ledger = record.trainer.pointer("/ledger/accountant_ledger")?;
    let ledger: Ledger = serde_json::from_value(ledger.clone()).ok()?;
    let accounting = record.trainer.pointer("/ledger/accounting")?;
    let kind: AccountantKind =
        serde_json::from_value(accounting.get("accountant_requested")?.clone()).ok()?;
    let delta = accounting.get("delta")?.as_f64()?;
    Some((ledger, kind, delta))
}

/// ε of everything in `records` composed (distinct runs only) at the first record's δ, through
/// its accountant, or RDP where that accountant cannot compose them; with the accountant's name.
fn composed_epsilon(records: &[&CellRecord]) -> Result<Option<(f64, String, f64)>> {
    let ledgers: Vec<_> = records.iter().filter_map(|r| ledger_of(r)).collect();
    if ledgers.len() < records.len() {
        return Ok(None);
    }
    let Some((first, kind, delta)) = ledgers.first().cloned() else {
        return Ok(None);
    };
    let compose = |kind: AccountantKind| -> Result<f64> {
        let mut acc = kind.build(first.relation, accountant::DEFAULT_PRV_EPSILON_ERROR);
        for (ledger, _, _) in &ledgers {
            for entry in &ledger.entries {
                acc.compose(&entry.event, entry.count)?;
            }
        }
        Ok(acc.epsilon(delta)?)
    };
    match compose(kind) {
        Ok(eps) => Ok(Some((eps, kind.name().to_string(), delta))),
        Err(first_err) => {
            let eps = compose(AccountantKind::Rdp).with_context(|| {
                format!(
                    "composing the tuning procedure with {}: {first_err:#}",
                    kind.name()
                )
            })?;
            Ok(Some((
                eps,
                format!("rdp ({} cannot compose these runs)", kind.name()),
                delta,
            )))
        }
    }
}

/// Papernot & Steinke's bound for `candidates` with K ~ geometric of mean `candidates.len()`,
/// composed with `final_run` (when it is not one of them), at `delta`, over RDP orders
/// (module docs; `accountant::tuning`). `None` when a record carries no privacy ledger.
fn random_k_epsilon(
    candidates: &[&CellRecord],
    final_run: Option<&CellRecord>,
    delta: f64,
) -> Result<Option<f64>> {
    let ledger = |r: &CellRecord| ledger_of(r).map(|(l, _, _)| l);
    let Some(candidate_ledgers) = candidates
        .iter()
        .map(|r| ledger(r))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let final_ledger = match final_run {
        Some(r) => match ledger(r) {
            Some(l) => Some(l),
            None => return Ok(None),
        },
        None => None,
    };
    random_k_epsilon_of(&candidate_ledgers, final_ledger.as_ref(), delta).map(Some)
}

/// [`random_k_epsilon`] on the runs' privacy ledgers: the pointwise maximum of the candidates'
/// RDP curves (a data-independent choice of candidate is at most as private as the least
/// private one), Papernot & Steinke's Thm 2 with η = 1 and γ = 1/m, plus the final run's curve
/// (at least the worst candidate's), converted to ε at `delta`.
fn random_k_epsilon_of(
    candidates: &[Ledger],
    final_run: Option<&Ledger>,
    delta: f64,
) -> Result<f64> {
    use accountant::rdp::{epsilon_from_rdp, RdpAccountant, RdpMethod};
    let orders = accountant::Orders::dp_accounting_default();
    let curve = |ledger: &Ledger| -> Result<Vec<f64>> {
        Ok(
            RdpAccountant::from_ledger(ledger, orders.clone(), RdpMethod::Exact)?
                .rdp()
                .to_vec(),
        )
    };
    let mut worst = vec![0.0f64; orders.len()];
    for ledger in candidates {
        for (w, v) in worst.iter_mut().zip(curve(ledger)?) {
            *w = w.max(v);
        }
    }
    let count = accountant::tuning::TruncatedNegativeBinomial::geometric_with_mean(
        candidates.len() as f64,
    )?;
    let mut total = accountant::tuning::tuning_rdp(orders.as_slice(), &worst, count)?;
    if let Some(ledger) = final_run {
        // The final run's settings were chosen on the data: bound it by the worst candidate
        // too (adaptive composition needs a bound that holds for every choice).
        for ((t, v), w) in total.iter_mut().zip(curve(ledger)?).zip(&worst) {
            *t += v.max(*w);
        }
    }
    Ok(epsilon_from_rdp(orders.as_slice(), &total, delta)?.value)
}

fn run_epsilon(record: &CellRecord) -> Option<f64> {
    record.trainer.pointer("/ledger/epsilon_spent")?.as_f64()
}

/// The note of one final record, and `tuning.csv`'s rows of its group.
/// `base`: the candidates of the group of the run's base method, when the run is a variant
/// tuned in the same preset as its base (see [`base_group`]). They compose into the procedure:
/// the variant's space was set knowing their outcome. The randomized-count bound covers one
/// search, so it is left out then.
fn note_for(
    final_record: &CellRecord,
    final_hash: &str,
    tuning_seed: u64,
    list: &[Candidate],
    winner: &Candidate,
    source: Option<TuningSource>,
    base: Option<&[Candidate]>,
) -> Result<TuningNote> {
    let recorded = |list: &[Candidate]| -> Result<Vec<CellRecord>> {
        let mut records: Vec<CellRecord> = list
            .iter()
            .filter(|c| c.cell.is_recorded())
            .map(|c| CellRecord::read(&c.cell.record))
            .collect::<Result<_>>()?;
        records.extend(off_space_records(list)?);
        Ok(records)
    };
    let candidates = recorded(list)?;
    let base_records = base.map(recorded).transpose()?.unwrap_or_default();
    let mut composed: Vec<&CellRecord> = candidates.iter().chain(&base_records).collect();
    if !list.iter().any(|c| c.cell.hash == final_hash) {
        composed.push(final_record);
    }
    let procedure = composed_epsilon(&composed)?;
    let candidate_records: Vec<&CellRecord> = candidates.iter().collect();
    let final_distinct = !list.iter().any(|c| c.cell.hash == final_hash);
    let random_k = match (&procedure, candidate_records.is_empty(), base) {
        (Some((_, _, delta)), false, None) => random_k_epsilon(
            &candidate_records,
            final_distinct.then_some(final_record),
            *delta,
        )?,
        _ => None,
    };
    Ok(TuningNote {
        tuning_seed,
        candidates: list.len(),
        selected: winner.index,
        selected_settings: serde_json::to_value(&winner.overrides)?,
        selected_dev_accuracy: dev_accuracy(winner).unwrap_or(f64::NAN),
        epsilon_run: run_epsilon(final_record),
        epsilon_procedure: procedure.as_ref().map(|p| p.0),
        runs_composed: composed.len(),
        epsilon_procedure_random_k: random_k,
        accountant: procedure.as_ref().map(|p| p.1.clone()),
        delta: procedure.as_ref().map(|p| p.2),
        source,
    })
}

/// The candidates of the group of `key`'s base method at the same task and ε, when `key`'s
/// method is a variant and its base is tuned in the same run (`groups`): a variant tuned on its
/// own has its space set after its base's search, so its procedure composes that search too.
fn base_group<'a>(spec: &Spec, groups: &'a [Group], key: &GroupKey) -> Option<&'a [Candidate]> {
    let base = spec.base_method(&key.1);
    if base == key.1 {
        return None;
    }
    groups
        .iter()
        .find(|(k, _)| k.0 == key.0 && k.1 == base && k.2 == key.2)
        .map(|(_, list)| list.as_slice())
}

/// `tune_options.take_over`: copies into `dir/tuning/` the candidate records that `source` (another
/// target's tuned preset) holds for the same groups, so that identical runs are not run again.
/// A group is taken over only when at least one of its planned candidates is the source's very
/// run (same spec hash); then each of its planned candidates whose source record has its hash,
/// and every source candidate its space does not list (they ran on the same data, so they
/// compose into the procedure ε like this target's own [`off_space_records`]). A record this
/// target already holds is never replaced. Returns how many were copied.
fn take_over_candidates(source: &Path, dir: &Path, groups: &[Group]) -> Result<usize> {
    let folders = tuning_folders(&source.join("tuning"))?;
    let mut taken = 0;
    for (_, list) in groups {
        let Some(stem) = list.first().and_then(|c| c.cell.record.file_name()) else {
            continue;
        };
        let same_run = |c: &Candidate| source_holds(source, c);
        if !list.iter().any(same_run) {
            continue;
        }
        for folder in &folders {
            let from = folder.join("runs").join(stem);
            let Some(name) = folder.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let to = dir.join("tuning").join(name).join("runs").join(stem);
            if !from.is_file() || to.exists() {
                continue;
            }
            if list.iter().any(|c| c.folder == name && !same_run(c)) {
                continue;
            }
            std::fs::create_dir_all(to.parent().context("a record has a folder")?)
                .with_context(|| format!("cannot create the folder of {}", to.display()))?;
            CellRecord::copy(&from, &to)?;
            taken += 1;
        }
    }
    Ok(taken)
}

/// Whether `source`'s tuning folder holds candidate `c`'s very run (its record, same spec hash).
fn source_holds(source: &Path, c: &Candidate) -> bool {
    c.cell.record.file_name().is_some_and(|stem| {
        let from = source
            .join("tuning")
            .join(&c.folder)
            .join("runs")
            .join(stem);
        CellRecord::read(&from).is_ok_and(|r| r.spec_hash == c.cell.hash)
    })
}

/// `tune_options.take_over` for the finals: each unrecorded final whose run `source` holds
/// (`source/runs/<stem>.json` with the same spec hash) is copied in. Returns how many were.
fn take_over_finals(source: &Path, finals: &[Cell]) -> Result<usize> {
    let mut taken = 0;
    for cell in finals {
        let Some(name) = cell.record.file_name() else {
            continue;
        };
        let from = source.join("runs").join(name);
        if cell.record.exists() || !CellRecord::read(&from).is_ok_and(|r| r.spec_hash == cell.hash)
        {
            continue;
        }
        if grid::adopt_record(cell, &from)? {
            taken += 1;
        }
    }
    Ok(taken)
}

/// The group's records in `tuning/` folders that its current space does not list (a space
/// narrowed or extended since they ran): they ran on the same training data and shaped the
/// space, so the procedure composes them too, and the privacy ledger never shrinks when a space
/// changes.
fn off_space_records(list: &[Candidate]) -> Result<Vec<CellRecord>> {
    off_space_paths(list)?
        .iter()
        .map(|p| CellRecord::read(p))
        .collect()
}

/// The record paths of [`off_space_records`], in folder order.
fn off_space_paths(list: &[Candidate]) -> Result<Vec<PathBuf>> {
    let Some(first) = list.first() else {
        return Ok(Vec::new());
    };
    // <dir>/tuning/<folder>/runs/<stem>.json: every candidate of a group shares the stem.
    let (Some(stem), Some(tuning)) = (
        first.cell.record.file_name(),
        first.cell.record.ancestors().nth(3),
    ) else {
        return Ok(Vec::new());
    };
    Ok(tuning_folders(tuning)?
        .into_iter()
        .map(|folder| folder.join("runs").join(stem))
        .filter(|path| path.is_file() && !list.iter().any(|c| c.cell.record == *path))
        .collect())
}

/// A candidate folder's settings, from its name (`dpzero__clip_norm=10__learning_rate=0.0001`
/// gives `clip_norm=10 learning_rate=0.0001`).
pub(super) fn folder_settings(folder: &str) -> String {
    folder.split("__").skip(1).collect::<Vec<_>>().join(" ")
}

/// The candidate folders of a `tuning/` folder, sorted; none when it does not exist.
pub(super) fn tuning_folders(tuning: &Path) -> Result<Vec<PathBuf>> {
    if !tuning.is_dir() {
        return Ok(Vec::new());
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(tuning)
        .with_context(|| format!("reading {}", tuning.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    folders.sort();
    Ok(folders)
}

/// A candidate's settings as `tuning.csv` lists them (`clip_norm=30.0 learning_rate=0.0001`).
fn settings_label(overrides: &toml::Table) -> String {
    overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `tuning.csv`: every candidate with its dev accuracy and the selection (no test
/// accuracy), and each group's per-run and procedure ε on the tuning seed.
/// With `at_epsilon`, each group at another ε that reused a winner gets a row `reused` after
/// the candidates that chose it, with its own procedure ε.
fn write_tuning_csv(
    dir: &Path,
    groups: &[(GroupKey, Vec<Candidate>)],
    winners: &BTreeMap<GroupKey, &Candidate>,
    notes: &BTreeMap<GroupKey, TuningNote>,
    at_epsilon: Option<f64>,
) -> Result<()> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let fmt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.4}"));
    let loss = |path: &Path| {
        let ends = loss_ends(path);
        (fmt(ends.map(|e| e.0)), fmt(ends.map(|e| e.1)))
    };
    for (key, list) in groups {
        let note = notes.get(key);
        for c in list {
            let (first, last) = loss(&c.cell.record);
            rows.push(vec![
                key.0.clone(),
                key.1.clone(),
                key.2
                    .map_or(String::new(), |e| f64::from_bits(e).to_string()),
                c.index.to_string(),
                settings_label(&c.overrides),
                dev_label(c),
                (winners.get(key).map(|w| w.index) == Some(c.index)).to_string(),
                fmt(note.and_then(|n| n.epsilon_run)),
                fmt(note.and_then(|n| n.epsilon_procedure)),
                note.map_or(String::new(), |n| n.runs_composed.to_string()),
                fmt(note.and_then(|n| n.epsilon_procedure_random_k)),
                match winners.get(key) {
                    Some(w) if w.index == c.index => edge_of(list, w),
                    _ => String::new(),
                },
                first,
                last,
            ]);
        }
        // Candidates of a space since narrowed: listed (they ran and are composed), never selected.
        for path in off_space_paths(list)? {
            let folder = path
                .ancestors()
                .nth(2)
                .and_then(|f| f.file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let settings = folder_settings(&folder);
            let dev = CellRecord::read(&path)?.dev_accuracy;
            let (off_first, off_last) = loss(&path);
            rows.push(vec![
                key.0.clone(),
                key.1.clone(),
                key.2
                    .map_or(String::new(), |e| f64::from_bits(e).to_string()),
                "off-space".into(),
                settings,
                dev.map_or("failed".into(), |a| format!("{a:.2}")),
                "false".into(),
                fmt(note.and_then(|n| n.epsilon_run)),
                fmt(note.and_then(|n| n.epsilon_procedure)),
                note.map_or(String::new(), |n| n.runs_composed.to_string()),
                fmt(note.and_then(|n| n.epsilon_procedure_random_k)),
                String::new(),
                off_first,
                off_last,
            ]);
        }
        let Some(winner) = winners.get(key) else {
            continue;
        };
        for (own, note) in notes {
            let reused = own != key && {
                let (task, method, eps) = own;
                (task, method) == (&key.0, &key.1)
                    && eps.is_some()
                    && at_epsilon.map(f64::to_bits) == key.2
            };
            if !reused {
                continue;
            }
            rows.push(vec![
                own.0.clone(),
                own.1.clone(),
                own.2
                    .map_or(String::new(), |e| f64::from_bits(e).to_string()),
                "reused".into(),
                settings_label(&winner.overrides),
                String::new(),
                "true".into(),
                fmt(note.epsilon_run),
                fmt(note.epsilon_procedure),
                note.runs_composed.to_string(),
                fmt(note.epsilon_procedure_random_k),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    let path = dir.join("tuning.csv");
    // Groups outside this call (another --methods, --tasks or --epsilons) keep their rows.
    let written: Vec<(String, String, String)> = groups
        .iter()
        .map(|(k, _)| k)
        .chain(notes.keys())
        .map(|k| {
            let eps = k.2.map_or(String::new(), |e| f64::from_bits(e).to_string());
            (k.0.clone(), k.1.clone(), eps)
        })
        .collect();
    rows.extend(other_groups_rows(&path, &TUNING_CSV_COLUMNS, &written)?);
    in_group_order(&mut rows);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(TUNING_CSV_COLUMNS)?;
    for row in &rows {
        w.write_record(row)?;
    }
    let bytes = w.into_inner().context("tuning.csv buffer")?;
    atomic_file::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Orders `tuning.csv`'s rows by task, then method, whatever groups the call that wrote the
/// file tuned, so that a call on other tasks or methods does not reorder the rows it leaves
/// alone. The sort is stable: within a (task, method) the rows keep their order (candidates by
/// index, then off-space rows, then the `reused` rows of the other budgets).
fn in_group_order(rows: &mut [Vec<String>]) {
    rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));
}

/// Where the selected candidate sits on an edge of its space: `learning_rate=top` when no
/// candidate with the same other settings tried a larger step size (`bottom`: a smaller one),
/// one entry per such setting; empty when it is interior in every numeric setting. A failed
/// candidate beyond it counts as tried. A winner on an edge is a lower bound of what the search
/// would find past it.
fn edge_of(list: &[Candidate], winner: &Candidate) -> String {
    let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    let mut edges = Vec::new();
    for (key, value) in &winner.overrides {
        let Some(x) = number(value) else { continue };
        let tried: Vec<f64> = list
            .iter()
            .filter(|c| {
                c.overrides
                    .iter()
                    .all(|(k, v)| k == key || winner.overrides.get(k) == Some(v))
            })
            .filter_map(|c| c.overrides.get(key).and_then(number))
            .collect();
        if tried.len() < 2 {
            continue;
        }
        if tried.iter().all(|t| *t <= x) {
            edges.push(format!("{key}=top"));
        } else if tried.iter().all(|t| *t >= x) {
            edges.push(format!("{key}=bottom"));
        }
    }
    edges.join(" ")
}

/// The columns of `tuning.csv`.
const TUNING_CSV_COLUMNS: [&str; 14] = [
    "task",
    "method",
    "epsilon",
    "candidate",
    "settings",
    "dev_accuracy",
    "selected",
    "epsilon_run",
    "epsilon_procedure",
    "runs_composed",
    "epsilon_procedure_random_k",
    "at_edge",
    "train_loss_first",
    "train_loss_last",
];

/// The groups of `dir/tuning.csv` whose search is open, so that a claim that compares them is
/// provisional (`compare::OpenGroup`): a candidate not yet run (selection waits for it), or a
/// selected candidate on an edge of its space (`at_edge`; a lower bound of what the search
/// would find past the edge). The budgets that reuse a tuned winner
/// (`tune_options.at_epsilon`) inherit it through the (task, method) key. No file: none.
pub fn open_groups(dir: &Path) -> Result<Vec<super::compare::OpenGroup>> {
    let path = dir.join("tuning.csv");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let header = r.headers()?.clone();
    let col = |c: &str| {
        header
            .iter()
            .position(|h| h == c)
            .with_context(|| format!("{}: no column {c:?}", path.display()))
    };
    let (task, method, dev, selected, edge) = (
        col("task")?,
        col("method")?,
        col("dev_accuracy")?,
        col("selected")?,
        col("at_edge")?,
    );
    // Per (task, method): candidates listed, candidates not run, the winner's edge.
    let mut groups: BTreeMap<(String, String), (usize, usize, String)> = BTreeMap::new();
    for (line, rec) in r.records().enumerate() {
        let at = || format!("{}:{}", path.display(), line + 2);
        let rec = rec.with_context(at)?;
        let selected = match &rec[selected] {
            "true" => true,
            "false" => false,
            other => bail!("{}: selected is {other:?}, not true or false", at()),
        };
        let g = groups
            .entry((rec[task].to_string(), rec[method].to_string()))
            .or_default();
        g.0 += 1;
        if &rec[dev] == "not run" {
            g.1 += 1;
        }
        if selected && !rec[edge].is_empty() {
            g.2 = rec[edge].to_string();
        }
    }
    let mut open = Vec::new();
    for ((task, method), (listed, not_run, edge)) in groups {
        let why = if not_run > 0 {
            format!("{not_run} of {listed} candidates not run")
        } else if !edge.is_empty() {
            format!("winner at {edge}")
        } else {
            continue;
        };
        open.push(super::compare::OpenGroup { task, method, why });
    }
    Ok(open)
}

/// The rows of an existing `tuning.csv` whose (task, method, ε) group is not in `written`,
/// laid out in `columns` (a column the older file lacks is left empty). No file: no rows.
fn other_groups_rows(
    path: &Path,
    columns: &[&str],
    written: &[(String, String, String)],
) -> Result<Vec<Vec<String>>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let header = r.headers()?.clone();
    let at = |name: &str| header.iter().position(|h| h == name);
    let col = |c: &str| at(c).with_context(|| format!("{}: no column {c:?}", path.display()));
    let (task, method, eps) = (col("task")?, col("method")?, col("epsilon")?);
    let mut rows = Vec::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}:{}", path.display(), line + 2))?;
        let key = (
            rec[task].to_string(),
            rec[method].to_string(),
            rec[eps].to_string(),
        );
        if written.contains(&key) {
            continue;
        }
        rows.push(
            columns
                .iter()
                .map(|c| at(c).and_then(|i| rec.get(i)).unwrap_or("").to_string())
                .collect(),
        );
    }
    Ok(rows)
}

/// Runs `cells` as the grid flags ask: worker processes (which run this whole procedure
/// themselves) or this process. Failed cells are reported, not fatal here.
fn execute(
    args: &TargetArgs,
    cells: &[Cell],
    runner: &mut dyn CellRunner,
    policy: Policy,
) -> Result<Vec<String>> {
    let g = &args.grid;
    if !g.worker && (g.gpus.is_some() || g.jobs_per_gpu > 1) {
        let slots = super::worker_slots(g, runner)?;
        return Ok(match grid::run_workers(cells, &slots, policy) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("{e:#}")],
        });
    }
    let outcome = super::execute_here(args, cells, runner, policy)?;
    Ok(outcome
        .failed
        .into_iter()
        .map(|(stem, msg)| format!("{stem}: {msg}"))
        .collect())
}

/// How `--tune --dry-run` marks each candidate of `group`: a recorded one with its dev
/// accuracy, and the candidate the selection takes, `selected` once every candidate is recorded
/// or failed and `best so far` before; an unrecorded one that a take-over would copy (`to_take`).
fn dry_run_marks(group: &Group, to_take: impl Fn(&Candidate) -> bool) -> Vec<String> {
    let list = &group.1;
    let complete = open_candidates(list).is_empty();
    let best = select([group])
        .ok()
        .and_then(|w| w.into_values().next())
        .map(|w| w.index);
    list.iter()
        .map(|c| {
            if !c.cell.is_recorded() {
                return if to_take(c) {
                    " (to take over)".into()
                } else {
                    String::new()
                };
            }
            let dev = dev_accuracy(c).map_or("no dev accuracy".into(), |a| format!("dev {a:.1}"));
            let pick = match (best == Some(c.index), complete) {
                (true, true) => ", selected",
                (true, false) => ", best so far",
                _ => "",
            };
            let rose = match loss_ends(&c.cell.record) {
                Some((first, last)) if last > first => {
                    format!(", training loss rose {first:.2} -> {last:.2}")
                }
                _ => String::new(),
            };
            format!(" (recorded, {dev}{pick}{rose})")
        })
        .collect()
}

/// Writes what the selections decided, from the records: each recorded final's [`TuningNote`]
/// (the procedure ε behind it) and `tuning.csv`'s rows of the `written` groups (the rows of
/// other groups are kept). `groups` are all the call's groups (a variant's base is looked up
/// there). Idempotent: a record whose note is already right is not rewritten, and a worker
/// process that repeats it writes the same notes and rows. It runs after each task's finals,
/// so a call that is cut short (a time limit) leaves every finished task's ledger complete.
#[allow(clippy::too_many_arguments)]
fn record_selections(
    spec: &Spec,
    preset_name: &str,
    dir: &Path,
    groups: &[Group],
    written: &[Group],
    winners: &BTreeMap<GroupKey, &Candidate>,
    finals: &[Cell],
    tuning_seed: u64,
) -> Result<()> {
    let at = at_epsilon(spec.preset(preset_name)?)?;
    let mut notes = BTreeMap::new();
    for cell in finals {
        let own = group_of(&cell.run);
        let key = tuning_key(&cell.run, at);
        let (Some(winner), Some((_, list))) =
            (winners.get(&key), groups.iter().find(|(k, _)| *k == key))
        else {
            continue;
        };
        if !cell.is_recorded() {
            continue;
        }
        let mut record = CellRecord::read(&cell.record)?;
        let source = (own != key).then(|| TuningSource {
            target: spec.meta.target.clone(),
            preset: preset_name.to_string(),
            task: key.0.clone(),
            method: key.1.clone(),
            epsilon: key.2.map(f64::from_bits),
            winner_folder: winner.folder.clone(),
        });
        let base = base_group(spec, groups, &key);
        let note = note_for(&record, &cell.hash, tuning_seed, list, winner, source, base)?;
        if cell.run.seed == tuning_seed {
            notes.insert(own, note.clone());
        }
        if record.tuning.as_ref() != Some(&note) {
            record.tuning = Some(note);
            record.write(&cell.record)?;
        }
    }
    // A --seeds filter without the tuning seed: the group's row values come from the tuning
    // seed's final record, when it has one for the same winner.
    for cell in finals {
        let own = group_of(&cell.run);
        if notes.contains_key(&own) {
            continue;
        }
        let stem = RunSpec {
            seed: tuning_seed,
            ..cell.run.clone()
        }
        .stem();
        let path = dir.join("runs").join(format!("{stem}.json"));
        let winner = winners.get(&tuning_key(&cell.run, at));
        if let (true, Some(winner)) = (path.exists(), winner) {
            if let Some(note) = CellRecord::read(&path)?.tuning {
                if note.selected_settings == serde_json::to_value(&winner.overrides)? {
                    notes.insert(own, note);
                }
            }
        }
    }
    write_tuning_csv(dir, written, winners, &notes, at)
}

/// The stems of `records` whose method the preset tunes (it has a search space) but which
/// carry no [`TuningNote`], so no procedure ε: run untuned, or finals of a `--tune` call cut
/// short before its ledger was written.
pub fn unnoted_records(
    spec: &Spec,
    preset_name: &str,
    records: &[CellRecord],
) -> Result<Vec<String>> {
    let preset = spec.preset(preset_name)?;
    let mut out = Vec::new();
    for r in records {
        if r.tuning.is_none() && spec.tune_space(preset, &r.method)?.is_some() {
            out.push(r.stem());
        }
    }
    Ok(out)
}

/// `repro <target> --tune`: phase 1, selection, phase 2, then `tuning.csv`, the notes in the
/// final records and the rendering (module docs).
pub fn run(
    args: &TargetArgs,
    spec: &Spec,
    preset_name: &str,
    dir: &Path,
    runs: &[RunSpec],
    runner: &mut dyn CellRunner,
) -> Result<bool> {
    let g = &args.grid;
    if g.shard.is_some() || g.emit_slurm.is_some() {
        bail!(
            "--tune runs in two phases (candidates, then the winners) and cannot be sharded or \
             emitted for Slurm yet: tune on one host (--gpus / --jobs-per-gpu run its cells \
             concurrently)"
        );
    }
    let model = runner.model_name();
    let at = at_epsilon(spec.preset(preset_name)?)?;
    let (tuning_seed, groups) = candidates(spec, preset_name, runs, dir, &model)?;
    let phase1: Vec<Cell> = groups
        .iter()
        .flat_map(|(_, l)| l.iter().map(|c| c.cell.clone()))
        .collect();
    println!(
        "tuning: {} candidate runs over {} (task, method, epsilon) groups on seed {tuning_seed}, \
         selected by dev accuracy",
        phase1.len(),
        groups.len()
    );
    if let Some(at) = at {
        println!(
            "tuning: tune_options.at_epsilon = {at}: the candidates run at eps {at} only; the \
             other budgets reuse its winner, their procedure eps composing its candidates"
        );
    }
    let take_over_dir = spec
        .preset(preset_name)?
        .tune_options
        .take_over
        .as_ref()
        .map(|t| {
            let preset = t.preset.as_deref().unwrap_or(preset_name);
            super::results_dir(&args.out, &t.target, preset)
        });
    if args.dry_run {
        // What a run would take over rather than run (it copies nothing here).
        let to_take = |c: &Candidate| {
            !c.cell.is_recorded()
                && take_over_dir
                    .as_ref()
                    .is_some_and(|source| source_holds(source, c))
        };
        for group in &groups {
            let (key, list) = group;
            let marks = dry_run_marks(group, to_take);
            for (c, mark) in list.iter().zip(marks) {
                println!(
                    "  candidate {}/{} of {} {}: {}{mark}",
                    c.index + 1,
                    list.len(),
                    key.0,
                    key.1,
                    c.overrides
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
        let rates = super::timing::seconds_per_step(dir, &spec.preset(preset_name)?.device)?;
        let cells: Vec<&Cell> = groups
            .iter()
            .flat_map(|(_, l)| l.iter().filter(|c| !to_take(c)).map(|c| &c.cell))
            .collect();
        println!(
            "{}",
            super::timing::plan_line("plan, candidates", &cells, 0, &rates)
        );
        println!(
            "plan, finals: {} runs, each task's once its own candidates are selected (the \
             winner's run on seed {tuning_seed} is adopted, recorded finals are skipped)",
            runs.len()
        );
        return Ok(false);
    }
    for cell in &phase1 {
        let runs_dir = cell.record.parent().context("a record has a folder")?;
        std::fs::create_dir_all(runs_dir)
            .with_context(|| format!("cannot create {}", runs_dir.display()))?;
    }
    if let Some(source) = &take_over_dir {
        let taken = take_over_candidates(source, dir, &groups)?;
        if taken > 0 {
            println!(
                "tuning: {taken} candidate records taken over from {} (the same runs, or the \
                 earlier candidates of the same groups, which compose into their procedure ε)",
                source.display()
            );
        }
    }
    let policy = Policy::from_flags(args.rerun, args.restart, g.deadline);
    // `--deadline`: each cell's expected time, from the slowest rate of its task and method.
    let slowest = match policy.deadline {
        Some(_) => super::timing::slowest_or_source(
            dir,
            super::record_source_dir(&args.out, spec.preset(preset_name)?, preset_name).as_deref(),
            &runner.device_name(),
        )?,
        None => super::timing::SlowestRates::default(),
    };
    let parallel = !g.worker && (g.gpus.is_some() || g.jobs_per_gpu > 1);
    let candidates_policy = Policy {
        report_dev: true,
        ..policy
    };
    // Task by task: a task's finals run as soon as its own candidates are recorded, so they
    // are not held behind other tasks' candidates, and a call cut short leaves whole tasks
    // behind it. Selection never crosses tasks (a group is one task's; `at_epsilon` and a
    // variant's base stay within it). Worker processes each run these stages themselves; the
    // process that starts them starts them once.
    let stages: Vec<Option<&str>> = if parallel {
        vec![None]
    } else {
        let mut tasks: Vec<&str> = Vec::new();
        for r in runs {
            if !tasks.contains(&r.task.as_str()) {
                tasks.push(&r.task);
            }
        }
        tasks.into_iter().map(Some).collect()
    };
    let mut failures = Vec::new();
    let mut finals = Vec::new();
    let mut winners = BTreeMap::new();
    let mut unselectable = Vec::new();
    for stage in stages {
        let ours = |task: &str| stage.is_none_or(|t| t == task);
        let stage_groups = || groups.iter().filter(|(k, _)| ours(&k.0));
        let mut stage_candidates: Vec<Cell> = stage_groups()
            .flat_map(|(_, l)| l.iter().map(|c| c.cell.clone()))
            .collect();
        grid::estimate(&mut stage_candidates, &slowest);
        failures.extend(execute(args, &stage_candidates, runner, candidates_policy)?);
        // A group without a selectable candidate runs no finals; the other groups and the next
        // tasks still run, and the call fails at the end naming it.
        let mut stage_winners = BTreeMap::new();
        for group in stage_groups() {
            let open = open_candidates(&group.1);
            if !open.is_empty() {
                let (task, method, eps) = &group.0;
                println!(
                    "tuning: {task} {method} eps {:?}: {} of {} candidates not run yet \
                     (deferred or cut short): no selection and no finals in this call",
                    eps.map(f64::from_bits),
                    open.len(),
                    group.1.len()
                );
                continue;
            }
            match select([group]) {
                Ok(w) => stage_winners.extend(w),
                Err(e) => unselectable.push(format!("{e:#}")),
            }
        }
        let selectable = |r: &RunSpec| {
            let key = tuning_key(r, at);
            stage_winners.contains_key(&key) || !groups.iter().any(|(k, _)| *k == key)
        };
        let stage_runs: Vec<RunSpec> = runs
            .iter()
            .filter(|r| ours(&r.task) && selectable(r))
            .cloned()
            .collect();
        let mut stage_finals =
            grid::plan(&final_runs(&stage_runs, &stage_winners, at), dir, &model)?;
        grid::estimate(&mut stage_finals, &slowest);
        if let Some(source) = &take_over_dir {
            let taken = take_over_finals(source, &stage_finals)?;
            if taken > 0 {
                println!(
                    "tuning: {taken} final records taken over from {} (the same runs)",
                    source.display()
                );
            }
        }
        adopt_winner_records(&stage_finals, &stage_winners, at)?;
        if !parallel {
            // With workers, each worker has run phase 2 itself.
            failures.extend(execute(args, &stage_finals, runner, policy)?);
        }
        // This stage's ledger now, not at the call's end, which a time limit may not reach
        // (each worker writes its own; with workers, the parent's one stage is the whole call).
        let written: Vec<Group> = stage_groups().cloned().collect();
        record_selections(
            spec,
            preset_name,
            dir,
            &groups,
            &written,
            &stage_winners,
            &stage_finals,
            tuning_seed,
        )?;
        finals.extend(stage_finals);
        winners.extend(stage_winners);
    }
    if g.worker {
        return Ok(false);
    }
    for (key, list) in &groups {
        let Some(winner) = winners.get(key) else {
            continue;
        };
        let edge = edge_of(list, winner);
        if !edge.is_empty() {
            println!(
                "tuning: {} {} eps {:?}: the selected candidate is on the edge of its space \
                 ({edge}); its dev accuracy is a lower bound of what the search would find \
                 past it: extend the space there",
                key.0,
                key.1,
                key.2.map(f64::from_bits)
            );
        }
    }
    let missing: Vec<String> = finals
        .iter()
        .filter(|c| !c.is_recorded())
        .map(|c| c.run.stem())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} final runs have no record ({}); errors: {}",
            missing.len(),
            missing.join(", "),
            failures
                .iter()
                .chain(&unselectable)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if !unselectable.is_empty() {
        bail!(
            "{}; their finals did not run (the other groups' did)",
            unselectable.join("; ")
        );
    }
    for f in &failures {
        eprintln!("warning: tuning candidate failed (not selectable): {f}");
    }
    Ok(true)
}

/// `[preset.<p>.inherit_tuning]`: the settings that another target's `--tune` selected, taken
/// by each tuned run of this target for the same (task, method, ε), so that an ablation
/// changes one ingredient of the tuned base and holds the rest fixed.
///
/// - A run's source method is [`Spec::tune_source`] (a variant's `tune_from`, else its base).
///   It inherits when the source target tunes that method under its preset, or when this spec
///   would tune the run itself (a missing space there is then an error, never a silent default).
/// - The source group must be complete: every candidate of its current space has a record, or
///   is listed as failed in its `tuning.csv`. Its winner is selected from the records as `--tune`
///   selects it. A missing or incomplete group is an error naming it and the command that runs it.
/// - The winner's settings are laid over the base's settings; a variant then applies its own
///   settings, horizon and step-size rule ([`Spec::settings_tuned`]).
/// - Privacy: each record's [`TuningNote`] composes the source group's candidates with the run
///   itself ([`Inheritance::annotate`]), and names the group and winner ([`TuningSource`]).
pub struct Inheritance {
    source_target: String,
    source_preset: String,
    source_dir: PathBuf,
    tuning_seed: u64,
    /// Source groups: their candidates and the winner's position in the list.
    groups: BTreeMap<GroupKey, (Vec<Candidate>, usize)>,
    /// This target's (task, method, ε) -> the source group it inherits from.
    of_run: BTreeMap<GroupKey, GroupKey>,
}

/// The command that runs (or completes) the source group `key`.
fn tune_command(target: &str, preset: &str, key: &GroupKey) -> String {
    let eps = key
        .2
        .map(|e| format!(" --epsilons {}", f64::from_bits(e)))
        .unwrap_or_default();
    format!(
        "repro {target} --preset {preset} --tune --tasks {} --methods {}{eps}",
        key.0, key.1
    )
}

fn describe(key: &GroupKey) -> String {
    match key.2 {
        Some(e) => format!("({}, {}, eps {})", key.0, key.1, f64::from_bits(e)),
        None => format!("({}, {}, non-private)", key.0, key.1),
    }
}

/// Runs of `preset_name` with their inherited settings (unchanged without `inherit_tuning`),
/// and what is needed to adopt, annotate and account for them. `prepare_source` applies to the
/// source target's runs what applies to this target's (`--compute`), so that the source's
/// records are found under the spec hashes they were run with.
pub fn inherit(
    spec: &Spec,
    preset_name: &str,
    runs: Vec<RunSpec>,
    experiments: &Path,
    out: &Path,
    model: &str,
    prepare_source: &dyn Fn(&mut [RunSpec]) -> Result<()>,
) -> Result<(Vec<RunSpec>, Option<Inheritance>)> {
    let preset = spec.preset(preset_name)?;
    let Some(how) = &preset.inherit_tuning else {
        return Ok((runs, None));
    };
    let here = format!("{} preset {preset_name} [inherit_tuning]", spec.meta.target);
    let source_spec = Spec::load(&experiments.join(format!("{}.toml", how.target)))
        .with_context(|| format!("{here}: the source target {:?}", how.target))?;
    let source_preset_name = how
        .preset
        .clone()
        .unwrap_or_else(|| preset_name.to_string());
    let source_preset = source_spec
        .preset(&source_preset_name)
        .with_context(|| here.clone())?;
    let source_dir = super::results_dir(out, &how.target, &source_preset_name);
    let tuning_seed = tuning_seed(&source_spec, source_preset)?;
    let source_at = at_epsilon(source_preset)?;
    let mut source_runs = source_spec.runs(&source_preset_name)?;
    prepare_source(&mut source_runs)?;
    let non_private_epsilon = how.non_private_epsilon.or_else(|| {
        match preset.epsilons.as_ref().unwrap_or(&spec.grid.epsilons)[..] {
            [only] => Some(only),
            _ => None,
        }
    });
    let mut inheritance = Inheritance {
        source_target: how.target.clone(),
        source_preset: source_preset_name.clone(),
        source_dir: source_dir.clone(),
        tuning_seed,
        groups: BTreeMap::new(),
        of_run: BTreeMap::new(),
    };
    let mut missing: Vec<String> = Vec::new();
    let mut out_runs = Vec::with_capacity(runs.len());
    for run in runs {
        let source = spec.tune_source(&run.method).to_string();
        let explicit = spec
            .variant
            .get(&run.method)
            .is_some_and(|v| v.tune_from.is_some());
        let Some(space) = source_spec.tune_space(source_preset, &source)? else {
            if explicit || spec.tune_space(preset, &run.method)?.is_some() {
                missing.push(format!(
                    "{} needs the tuned settings of {source}, which {} does not tune under \
                     preset {source_preset_name} (no [tune.{source}] space)",
                    run.stem(),
                    how.target
                ));
            }
            out_runs.push(run);
            continue;
        };
        let epsilon = if is_non_private(source_spec.base_method(&source)) {
            None
        } else {
            match run.epsilon.or(non_private_epsilon) {
                Some(e) => Some(e),
                None => {
                    missing.push(format!(
                        "{}: a non-private run inheriting from the private {source} needs \
                         [preset.{preset_name}.inherit_tuning] non_private_epsilon (the ε whose \
                         winner it takes)",
                        run.stem()
                    ));
                    out_runs.push(run);
                    continue;
                }
            }
        };
        let same_eps = |e: Option<f64>| e.map(f64::to_bits) == epsilon.map(f64::to_bits);
        let Some(source_run) = source_runs
            .iter()
            .find(|r| r.task == run.task && r.method == source && same_eps(r.epsilon))
        else {
            missing.push(format!(
                "{}: {} preset {source_preset_name} has no cell ({}, {source}, eps {}) to \
                 inherit from",
                run.stem(),
                how.target,
                run.task,
                epsilon.map_or("non-private".into(), |e| e.to_string())
            ));
            out_runs.push(run);
            continue;
        };
        let key = tuning_key(source_run, source_at);
        if !inheritance.groups.contains_key(&key) {
            let base = RunSpec {
                seed: tuning_seed,
                epsilon: key.2.map(f64::from_bits),
                ..source_run.clone()
            };
            let list = group_candidates(&space, &base, &source_dir, model)?;
            let unrecorded: Vec<String> = open_candidates(&list)
                .iter()
                .map(|c| settings_label(&c.overrides))
                .collect();
            let command = tune_command(&how.target, &source_preset_name, &key);
            if !unrecorded.is_empty() {
                let what = if unrecorded.len() == list.len() {
                    "has not been tuned".to_string()
                } else {
                    format!(
                        "is incompletely tuned ({} of {} candidates are neither recorded nor \
                         failed: {})",
                        unrecorded.len(),
                        list.len(),
                        unrecorded.join("; ")
                    )
                };
                missing.push(format!(
                    "{} group {} under {} {what}; run `{command}`",
                    how.target,
                    describe(&key),
                    source_dir.display()
                ));
                continue;
            }
            let group = [(key.clone(), list)];
            let winner = match select(&group) {
                Ok(w) => w[&key].index,
                Err(e) => {
                    missing.push(format!("{e:#}; run `{command} --rerun`"));
                    continue;
                }
            };
            let [(_, list)] = group;
            inheritance.groups.insert(key.clone(), (list, winner));
        }
        let Some((list, winner)) = inheritance.groups.get(&key) else {
            // The group was reported missing above.
            out_runs.push(run);
            continue;
        };
        let settings = spec.settings_tuned(preset, &run.method, Some(&list[*winner].overrides))?;
        inheritance.of_run.insert(group_of(&run), key);
        out_runs.push(RunSpec { settings, ..run });
    }
    if !missing.is_empty() {
        missing.dedup();
        let listed: Vec<String> = missing
            .iter()
            .enumerate()
            .map(|(i, m)| format!("[{}] {m}", i + 1))
            .collect();
        bail!(
            "{here}: {} settings to inherit from {} preset {source_preset_name} are missing \
             (never replaced by defaults): {}",
            missing.len(),
            how.target,
            listed.join("; ")
        );
    }
    Ok((out_runs, Some(inheritance)))
}

impl Inheritance {
    /// The source group and winner of a cell, when it inherits.
    fn group_of_cell(&self, cell: &Cell) -> Option<(&GroupKey, &[Candidate], &Candidate)> {
        let key = self.of_run.get(&group_of(&cell.run))?;
        let (list, winner) = self.groups.get(key)?;
        Some((key, list, &list[*winner]))
    }

    /// The source record an unrecorded cell would take instead of running: a source run with
    /// the cell's very configuration (the winning candidate on the tuning seed, or the source's
    /// final run of the same stem). `None` for a recorded cell or one that must run.
    pub fn adoptable(&self, cell: &Cell) -> Option<PathBuf> {
        let (_, list, _) = self.group_of_cell(cell)?;
        if cell.is_recorded() {
            return None;
        }
        let source_final = self
            .source_dir
            .join("runs")
            .join(format!("{}.json", cell.run.stem()));
        list.iter()
            .map(|c| c.cell.record.clone())
            .chain(std::iter::once(source_final))
            .find(|p| CellRecord::read(p).is_ok_and(|r| r.spec_hash == cell.hash))
    }

    /// Cells that are [`Self::adoptable`] take their source run's record instead of running it
    /// again. Returns how many did.
    pub fn adopt(&self, cells: &[Cell]) -> Result<usize> {
        let mut adopted = 0;
        for cell in cells {
            let Some(from) = self.adoptable(cell) else {
                continue;
            };
            if grid::adopt_record(cell, &from)? {
                adopted += 1;
            }
        }
        Ok(adopted)
    }

    /// Writes into every recorded cell's record the tuning note of the procedure behind it: the
    /// source group's candidates composed with this run, and the group and winner it came from.
    /// A record whose data differ from the winner's (real data vs a stand-in) is an error.
    pub fn annotate(&self, cells: &[Cell]) -> Result<()> {
        for cell in cells {
            let Some((key, list, winner)) = self.group_of_cell(cell) else {
                continue;
            };
            if !cell.is_recorded() {
                continue;
            }
            let mut record = CellRecord::read(&cell.record)?;
            let chosen_on = CellRecord::read(&winner.cell.record)?;
            if chosen_on.data != record.data {
                bail!(
                    "{}: ran on data {:?} but its settings were tuned on {:?} ({}): run both on \
                     the same data (--data-dir)",
                    cell.record.display(),
                    record.data,
                    chosen_on.data,
                    winner.cell.record.display()
                );
            }
            let source = TuningSource {
                target: self.source_target.clone(),
                preset: self.source_preset.clone(),
                task: key.0.clone(),
                method: key.1.clone(),
                epsilon: key.2.map(f64::from_bits),
                winner_folder: winner.folder.clone(),
            };
            let note = note_for(
                &record,
                &cell.hash,
                self.tuning_seed,
                list,
                winner,
                Some(source),
                None,
            )?;
            if record.tuning.as_ref() != Some(&note) {
                record.tuning = Some(note);
                record.write(&cell.record)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::{candidate_folder, open_groups, random_k_epsilon_of};
    use accountant::{DpEvent, Ledger, NeighboringRelation};

    /// A small world for the tuning procedure without a model: spec files in a scratch folder and
    /// a runner that fabricates records (dev accuracy rising with the step size, a full-batch
    /// Gaussian ledger of `steps` releases at sigma = 20 / eps, accounted analytically). The grid's
    /// tests use its runner too.
    pub(in crate::target) mod world {
        use crate::target::record::CellRecord;
        use crate::target::spec::{RunSpec, Spec};
        use crate::target::{CellRunner, TargetArgs};
        use accountant::{DpEvent, Ledger, LedgerEntry, NeighboringRelation};
        use clap::Parser;
        use std::path::{Path, PathBuf};

        pub const DELTA: f64 = 1e-5;

        pub(crate) use crate::target::spec::TEST_PRESET_P as PRESET_P;

        pub fn scratch(name: &str) -> PathBuf {
            let dir = crate::target::test_scratch(&format!("tune-{name}"));
            std::fs::create_dir_all(dir.join("experiments")).unwrap();
            dir
        }

        /// Writes `experiments/<target>.toml` with the shared grid and spaces plus `extra`.
        pub fn spec(dir: &Path, target: &str, grid: &str, extra: &str) -> Spec {
            let text = crate::target::spec::test_meta(target)
                + &format!(
                    r#"
                [grid]
                {grid}
                seeds = [1, 2]
                [train]
                learning_rate = 1e-5
                steps = 12
                clip_norm = 1.0
                stage = {{ first_stage_steps = 2, num_stages = 3, mu_schedule = "geometric" }}
                mask = {{ score = {{ ratio = 0.01 }} }}
                [tune.dpzero]
                learning_rate = [1e-5, 1e-4]
                [tune.dp-zopo]
                learning_rate = [1e-5, 1e-4]
                learning_rate_scaling = "inverse-mask-ratio"
                {extra}
                "#
                );
            let path = dir.join("experiments").join(format!("{target}.toml"));
            std::fs::write(&path, text).unwrap();
            Spec::load(&path).unwrap()
        }

        /// A variant `sparse` of DPZero (a 0.1% mask) with a space of its own under preset p:
        /// DPZero's step sizes and 1e-3, scaled by 1 / 0.001.
        pub const SPARSE_TUNED_ITSELF: &str = r#"
                [preset.p.tune]
                sparse = { learning_rate = [1e-5, 1e-4, 1e-3], learning_rate_scaling = "inverse-mask-ratio" }
                [variant.sparse]
                base = "dpzero"
                settings = { mask = { score = { ratio = 0.001 } } }
                description = "d"
                "#;

        pub fn sigma(epsilon: f64) -> f64 {
            20.0 / epsilon
        }

        pub fn steps(run: &RunSpec) -> u64 {
            run.settings["steps"].as_integer().unwrap() as u64
        }

        /// The fabricated record of `run` (the grid sets its spec hash).
        pub fn record(run: &RunSpec) -> CellRecord {
            let lr = run.settings["learning_rate"].as_float().unwrap_or(0.0);
            let trainer = match run.epsilon {
                Some(e) => {
                    let mut ledger = Ledger::new(NeighboringRelation::AddOrRemoveOne);
                    ledger.entries.push(LedgerEntry {
                        event: DpEvent::Gaussian {
                            noise_multiplier: sigma(e),
                        },
                        count: steps(run),
                    });
                    let spent = accountant::analytic_gaussian::epsilon(
                        sigma(e) / (steps(run) as f64).sqrt(),
                        DELTA,
                    )
                    .unwrap();
                    serde_json::json!({ "ledger": {
                        "accountant_ledger": ledger,
                        "accounting": { "accountant_requested": "analytic", "delta": DELTA },
                        "epsilon_spent": spent,
                    }})
                }
                None => serde_json::json!({}),
            };
            CellRecord {
                target: run.target.clone(),
                preset: run.preset.clone(),
                task: run.task.clone(),
                method: run.method.clone(),
                epsilon: run.epsilon,
                seed: run.seed,
                model: "m".into(),
                spec_hash: String::new(),
                config: serde_json::to_value(&run.settings).unwrap(),
                provenance: crate::provenance::Provenance {
                    git_commit: None,
                    git_dirty: None,
                    device: "cpu".into(),
                    gpu: None,
                    driver: None,
                    libtorch: None,
                    date: None,
                    host: None,
                    repro_version: None,
                    command: None,
                    reconstructed_from: None,
                },
                test_accuracy: 50.0,
                dev_accuracy: Some(50.0 + 1e3 * lr.min(1e-2)),
                data: "real".into(),
                wall_secs: 0.0,
                setup_secs: None,
                trainer,
                tuning: None,
            }
        }

        /// Runs nothing: fabricates records, fails DP-ZOPO's smallest step size (1e-3 after the
        /// x 100 scaling), and logs each call as `method eps lr` (and its task, in `tasks`).
        #[derive(Default)]
        pub struct Runner {
            pub calls: Vec<(String, Option<f64>, f64)>,
            pub tasks: Vec<String>,
        }

        impl CellRunner for Runner {
            fn model_name(&self) -> String {
                "m".into()
            }
            fn device_name(&self) -> String {
                "cpu".into()
            }
            fn run(
                &mut self,
                spec: &RunSpec,
                _config: &serde_json::Value,
                _checkpoint_dir: &Path,
            ) -> anyhow::Result<CellRecord> {
                let lr = spec.settings["learning_rate"].as_float().unwrap_or(0.0);
                self.calls.push((spec.method.clone(), spec.epsilon, lr));
                self.tasks.push(spec.task.clone());
                if spec.method == "dp-zopo" && (lr - 1e-3).abs() < 1e-12 {
                    anyhow::bail!("diverged (fabricated failure)");
                }
                Ok(record(spec))
            }
        }

        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: TargetArgs,
        }

        pub fn args(dir: &Path, extra: &[&str]) -> TargetArgs {
            let out = dir.join("results");
            let experiments = dir.join("experiments");
            let mut argv = vec![
                "repro".to_string(),
                "--preset".into(),
                "p".into(),
                "--out".into(),
                out.display().to_string(),
                "--experiments".into(),
                experiments.display().to_string(),
            ];
            argv.extend(extra.iter().map(|s| s.to_string()));
            Cli::parse_from(argv).args
        }

        /// The ε of Gaussian releases `(sigma, count)` composed, by the analytic Gaussian of the
        /// single equivalent release (1 / sigma_eff^2 = sum count / sigma^2): no accountant
        /// composition involved.
        pub fn analytic_composition(releases: &[(f64, u64)]) -> f64 {
            let precision: f64 = releases.iter().map(|(s, c)| *c as f64 / (s * s)).sum();
            accountant::analytic_gaussian::epsilon(1.0 / precision.sqrt(), DELTA).unwrap()
        }

        /// `note`'s procedure ε equals [`analytic_composition`] of `releases` (relative 1e-6).
        pub fn assert_procedure(note: &crate::target::tune::TuningNote, releases: &[(f64, u64)]) {
            let want = analytic_composition(releases);
            let got = note.epsilon_procedure.unwrap();
            assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
        }

        /// Tasks A and B at ε 4 with DPZero.
        pub const GRID_AB_DPZERO: &str = r#"tasks = ["A", "B"]
               methods = ["dpzero"]
               epsilons = [4.0]"#;

        /// Task A at ε 4 with DPZero.
        pub const GRID_A_DPZERO: &str = r#"tasks = ["A"]
               methods = ["dpzero"]
               epsilons = [4.0]"#;

        /// Task A at ε 4 with DPZero and its variant `sparse` ([`SPARSE_TUNED_ITSELF`]).
        pub const GRID_DPZERO_SPARSE: &str = r#"tasks = ["A"]
               methods = ["dpzero", "sparse"]
               epsilons = [4.0]"#;
    }

    fn read(path: &std::path::Path) -> crate::target::record::CellRecord {
        crate::target::record::CellRecord::read(path).unwrap()
    }

    /// Runs `--tune` of `target` preset p on the fabricated world, for `tasks` only.
    fn tune_source(
        dir: &std::path::Path,
        spec: &crate::target::spec::Spec,
        tasks: &[&str],
    ) -> world::Runner {
        let args = world::args(dir, &["--tune"]);
        let runs: Vec<_> = spec
            .runs("p")
            .unwrap()
            .into_iter()
            .filter(|r| tasks.contains(&r.task.as_str()))
            .collect();
        let out = crate::target::results_dir(&args.out, &spec.meta.target, "p");
        std::fs::create_dir_all(out.join("runs")).unwrap();
        let mut runner = world::Runner::default();
        assert!(super::run(&args, spec, "p", &out, &runs, &mut runner).unwrap());
        runner
    }

    /// One process tunes task by task: every run of task A (candidates, then finals on both
    /// seeds) comes before any run of task B, so A's finals are not held behind B's candidates.
    #[test]
    fn each_tasks_finals_run_before_the_next_tasks_candidates() {
        let dir = world::scratch("task-stages");
        let spec = world::spec(&dir, "t", world::GRID_AB_DPZERO, world::PRESET_P);
        let runner = tune_source(&dir, &spec, &["A", "B"]);
        // Per task: two candidates, then the winner (1e-4) on the other seed (the tuning
        // seed's final is the adopted winning candidate).
        let order: Vec<&str> = runner.tasks.iter().map(String::as_str).collect();
        assert_eq!(order, ["A", "A", "A", "B", "B", "B"]);
        assert_eq!(runner.calls[2].2, 1e-4, "{:?}", runner.calls);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Each task's ledger is written when its finals end, before the next task's first run:
    /// when task B starts, every final record of task A carries its tuning note (the procedure
    /// ε) and `tuning.csv` lists A's candidates. A call cut short in B (a time limit) therefore
    /// leaves A's privacy accounting complete, not only once the whole call returns.
    #[test]
    fn a_tasks_ledger_is_written_before_the_next_task_starts() {
        use crate::target::record::CellRecord;
        use crate::target::spec::RunSpec;
        use crate::target::CellRunner;
        use std::path::{Path, PathBuf};
        struct Watching {
            inner: world::Runner,
            out: PathBuf,
            /// At B's first run: (A's final records, how many carry a note, tuning.csv lists A).
            at_b: Option<(usize, usize, bool)>,
        }
        impl CellRunner for Watching {
            fn model_name(&self) -> String {
                self.inner.model_name()
            }
            fn device_name(&self) -> String {
                self.inner.device_name()
            }
            fn run(
                &mut self,
                spec: &RunSpec,
                config: &serde_json::Value,
                checkpoint_dir: &Path,
            ) -> anyhow::Result<CellRecord> {
                if spec.task == "B" && self.at_b.is_none() {
                    let finals: Vec<CellRecord> = std::fs::read_dir(self.out.join("runs"))?
                        .filter_map(|e| {
                            let path = e.ok()?.path();
                            let name = path.file_name()?.to_str()?.to_string();
                            (name.starts_with("A__") && name.ends_with(".json"))
                                .then(|| CellRecord::read(&path).unwrap())
                        })
                        .collect();
                    let noted = finals.iter().filter(|r| r.tuning.is_some()).count();
                    let listed = std::fs::read_to_string(self.out.join("tuning.csv"))
                        .is_ok_and(|t| t.lines().any(|l| l.starts_with("A,dpzero,4,")));
                    self.at_b = Some((finals.len(), noted, listed));
                }
                self.inner.run(spec, config, checkpoint_dir)
            }
        }
        let dir = world::scratch("ledger-per-task");
        let spec = world::spec(&dir, "t", world::GRID_AB_DPZERO, world::PRESET_P);
        let args = world::args(&dir, &["--tune"]);
        let out = crate::target::results_dir(&args.out, "t", "p");
        std::fs::create_dir_all(out.join("runs")).unwrap();
        let mut runner = Watching {
            inner: world::Runner::default(),
            out: out.clone(),
            at_b: None,
        };
        let runs = spec.runs("p").unwrap();
        assert!(super::run(&args, &spec, "p", &out, &runs, &mut runner).unwrap());
        let (finals, noted, listed) = runner.at_b.expect("task B ran");
        assert!(finals >= 2, "A's finals on both seeds: {finals}");
        assert_eq!(
            noted, finals,
            "A's final records without a tuning note when B started"
        );
        assert!(listed, "tuning.csv had no row of A's group when B started");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A world of tasks A and B (DPZero) in `name`'s scratch folder with task A tuned: the folder,
    /// the spec and the results folder of target `t`, preset `p`.
    fn tuned_a(
        name: &str,
    ) -> (
        std::path::PathBuf,
        crate::target::spec::Spec,
        std::path::PathBuf,
    ) {
        let dir = world::scratch(name);
        let spec = world::spec(&dir, "t", world::GRID_AB_DPZERO, world::PRESET_P);
        tune_source(&dir, &spec, &["A"]);
        let out = crate::target::results_dir(&world::args(&dir, &["--tune"]).out, "t", "p");
        (dir, spec, out)
    }

    /// After `--tune`, no tuned record lacks its note; a record stripped of it is named.
    #[test]
    fn records_without_a_tuning_note_are_named() {
        let (dir, spec, out) = tuned_a("unnoted");
        let runs_dir = out.join("runs");
        let read = || {
            crate::target::record::read_all_checked(&runs_dir)
                .unwrap()
                .0
        };
        assert_eq!(
            super::unnoted_records(&spec, "p", &read()).unwrap(),
            Vec::<String>::new()
        );
        let path = runs_dir.join("A__dpzero__eps4__seed2.json");
        let mut record = crate::target::record::CellRecord::read(&path).unwrap();
        assert!(record.tuning.take().is_some());
        record.write(&path).unwrap();
        assert_eq!(
            super::unnoted_records(&spec, "p", &read()).unwrap(),
            ["A__dpzero__eps4__seed2"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A candidate whose training loss rose over its run is marked so by `--dry-run`,
    /// and `tuning.csv` gives every candidate's first- and last-sixth training loss; neither
    /// changes the selection, which stays dev accuracy's.
    #[test]
    fn a_diverged_candidate_is_shown_with_its_training_loss() {
        let (dir, spec, out) = tuned_a("diverged");
        let runs = spec.runs("p").unwrap();
        let (_, groups) = super::candidates(&spec, "p", &runs, &out, "m").unwrap();
        // The winner (1e-4, dev 50.1) logs 12 losses rising from 1.0 to 2.1: first sixth
        // (1.0 + 1.1) / 2 = 1.05, last sixth (2.0 + 2.1) / 2 = 2.05.
        let winner = &groups[0].1[1].cell.record;
        let mut record = crate::target::record::CellRecord::read(winner).unwrap();
        let steps: Vec<_> = (0..12)
            .map(|i| serde_json::json!({"step": i + 1, "loss": 1.0 + 0.1 * i as f64}))
            .collect();
        record.trainer["steps"] = serde_json::Value::Array(steps);
        record.write(winner).unwrap();
        let marks = super::dry_run_marks(&groups[0], |_| false);
        assert_eq!(
            marks,
            [
                " (recorded, dev 50.0)",
                " (recorded, dev 50.1, selected, training loss rose 1.05 -> 2.05)"
            ]
        );
        tune_source(&dir, &spec, &["A"]);
        let csv = std::fs::read_to_string(out.join("tuning.csv")).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let row: Vec<&str> = csv
            .lines()
            .find(|l| l.starts_with("A,dpzero,4,1,"))
            .unwrap()
            .split(',')
            .collect();
        let at = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(
            (
                at("selected"),
                at("train_loss_first"),
                at("train_loss_last")
            ),
            ("true", "1.0500", "2.0500"),
            "{csv}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Under `--deadline`, a group with a candidate not yet run is not selected: no final takes
    /// the best candidate so far (on 2026-12-07 RTE's DP-SGD final did, and a later candidate
    /// displaced it), and `tuning.csv` says `not run` for it, not `failed`.
    #[test]
    fn a_group_with_a_candidate_not_yet_run_is_not_selected() {
        let dir = world::scratch("deferred-candidate");
        let grid = world::GRID_A_DPZERO;
        let spec = world::spec(&dir, "t", grid, world::PRESET_P);
        tune_source(&dir, &spec, &["A"]);
        let out = dir.join("results/t/p");
        // The state of a call cut short: the winner (1e-4) and the finals unrecorded.
        let winner = out.join("tuning/dpzero__learning_rate=0.0001");
        assert!(winner.is_dir(), "{}", winner.display());
        std::fs::remove_dir_all(&winner).unwrap();
        std::fs::remove_dir_all(out.join("runs")).unwrap();
        std::fs::create_dir_all(out.join("runs")).unwrap();
        // No timing.csv: every training cell's length is unknown, so the deadline defers it.
        let args = world::args(&dir, &["--tune", "--deadline", "600"]);
        let runs = spec.runs("p").unwrap();
        let mut runner = world::Runner::default();
        let _ = super::run(&args, &spec, "p", &out, &runs, &mut runner);
        assert!(runner.calls.is_empty(), "{:?}", runner.calls);
        assert!(
            !out.join("runs/A__dpzero__eps4__seed1.json").exists(),
            "the best candidate so far became the tuning seed's final"
        );
        let csv = std::fs::read_to_string(out.join("tuning.csv")).unwrap();
        let row = |lr: &str| {
            csv.lines()
                .find(|l| l.contains(&format!("learning_rate={lr},")))
                .unwrap_or_else(|| panic!("{lr}: {csv}"))
                .to_string()
        };
        assert!(row("0.0001").contains(",not run,false,"), "{csv}");
        assert!(row("0.00001").contains(",false,"), "{csv}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A group whose every candidate failed (DP-ZOPO here) runs no finals, but the other
    /// groups' finals and the next task still run, and the call fails naming the group.
    #[test]
    fn an_unselectable_group_stops_only_its_own_finals() {
        let dir = world::scratch("unselectable");
        let extra = world::PRESET_P.to_string()
            + r#"
            [preset.p.tune]
            dp-zopo = { learning_rate = [1e-5], learning_rate_scaling = "inverse-mask-ratio" }
            "#;
        let spec = world::spec(
            &dir,
            "t",
            r#"tasks = ["A", "B"]
               methods = ["dpzero", "dp-zopo"]
               epsilons = [4.0]"#,
            &extra,
        );
        let args = world::args(&dir, &["--tune"]);
        let out = crate::target::results_dir(&args.out, "t", "p");
        std::fs::create_dir_all(out.join("runs")).unwrap();
        let mut runner = world::Runner::default();
        let runs = spec.runs("p").unwrap();
        let err = super::run(&args, &spec, "p", &out, &runs, &mut runner).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("tuning A dp-zopo") && msg.contains("tuning B dp-zopo"),
            "{msg}"
        );
        // Per task: DPZero's two candidates, its final on seed 2, DP-ZOPO's one candidate.
        let order: Vec<&str> = runner.tasks.iter().map(String::as_str).collect();
        assert_eq!(
            order,
            ["A", "A", "A", "A", "B", "B", "B", "B"],
            "{:?}",
            runner.calls
        );
        for task in ["A", "B"] {
            assert!(out
                .join(format!("runs/{task}__dpzero__eps4__seed2.json"))
                .exists());
            assert!(!out
                .join(format!("runs/{task}__dp-zopo__eps4__seed2.json"))
                .exists());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--tune --dry-run` shows each recorded candidate's dev accuracy and the pick: `best so
    /// far` while a candidate of its group is unrecorded, `selected` once all are.
    #[test]
    fn dry_run_marks_dev_accuracy_and_the_pick() {
        let dir = world::scratch("dry-marks");
        let spec = world::spec(&dir, "t", world::GRID_AB_DPZERO, world::PRESET_P);
        let runs = spec.runs("p").unwrap();
        let args = world::args(&dir, &["--tune"]);
        let out = crate::target::results_dir(&args.out, "t", "p");
        let marks = || {
            let (_, groups) = super::candidates(&spec, "p", &runs, &out, "m").unwrap();
            groups
                .iter()
                .map(|g| super::dry_run_marks(g, |_| false))
                .collect::<Vec<_>>()
        };
        assert_eq!(marks(), [["", ""], ["", ""]]);
        tune_source(&dir, &spec, &["A"]);
        // Fabricated dev accuracy: 50 + 1000 lr, so 1e-4 wins.
        let a = [" (recorded, dev 50.0)", " (recorded, dev 50.1, selected)"];
        assert_eq!(marks(), [a, ["", ""]]);
        let (_, groups) = super::candidates(&spec, "p", &runs, &out, "m").unwrap();
        std::fs::remove_file(&groups[0].1[1].cell.record).unwrap();
        assert_eq!(
            marks(),
            [[" (recorded, dev 50.0, best so far)", ""], ["", ""]]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Ablations under `inherit_tuning` take the source's winners (selected by dev, DP-ZOPO's
    /// failed candidate not selectable), apply their own rules on top, take over the source's
    /// records of identical runs, and carry the procedure's ε: the source's candidates composed
    /// with the run, checked against the analytic Gaussian of the composition.
    #[test]
    fn ablations_inherit_the_source_winners_and_account_for_their_candidates() {
        use crate::target::{grid, results_dir};
        let dir = world::scratch("inherit");
        let source = world::spec(
            &dir,
            "src",
            r#"tasks = ["A", "B"]
               methods = ["zero-shot", "dpzero", "dp-zopo"]
               epsilons = [4.0]"#,
            world::PRESET_P,
        );
        tune_source(&dir, &source, &["A"]);
        let abl_grid = r#"tasks = ["A"]
            methods = ["zero-shot", "dpzero", "dp-zopo", "sparse", "noiseless", "longer"]
            epsilons = [4.0]"#;
        let abl_extra = r#"
            [variant.sparse]
            base = "dp-zopo"
            step_size = "inverse-mask-ratio"
            settings = { mask = { score = { ratio = 0.001 } } }
            description = "d"
            [variant.noiseless]
            base = "mezo"
            tune_from = "dpzero"
            description = "d"
            [variant.longer]
            base = "dpzero"
            steps_scale = 2.0
            description = "d"
            [preset.p]
            description = "d"
            model = "m"
            device = "cpu"
            deviations = []
            [preset.p.inherit_tuning]
            target = "src"
            [preset.q]
            description = "d"
            model = "m"
            device = "cpu"
            deviations = []
            tasks = ["B"]
            methods = ["dpzero"]
            [preset.q.inherit_tuning]
            target = "src"
            preset = "p"
        "#;
        let abl = world::spec(&dir, "abl", abl_grid, abl_extra);
        let args = world::args(&dir, &[]);
        let none = |_: &mut [crate::target::spec::RunSpec]| Ok(());
        let (runs, inheritance) = super::inherit(
            &abl,
            "p",
            abl.runs("p").unwrap(),
            &args.experiments,
            &args.out,
            "m",
            &none,
        )
        .unwrap();
        let inheritance = inheritance.unwrap();
        let get = |m: &str| runs.iter().find(|r| r.method == m && r.seed == 1).unwrap();
        let lr = |m: &str| get(m).settings["learning_rate"].as_float().unwrap();
        // DPZero's dev rises with the step size: 1e-4 wins. DP-ZOPO's 1e-3 (1e-5 x 100) failed,
        // so 1e-2 wins; the sparse variant keeps eta r: 1e-2 x 10.
        assert_eq!(lr("dpzero"), 1e-4);
        assert!((lr("dp-zopo") - 1e-2).abs() < 1e-15);
        assert!((lr("sparse") - 0.1).abs() < 1e-14, "{}", lr("sparse"));
        // MeZO takes DPZero's winner at the grid's eps and stays non-private.
        assert_eq!(lr("noiseless"), 1e-4);
        assert_eq!(get("noiseless").epsilon, None);
        // The horizon variant: T and T0 doubled at the tuned step size.
        assert_eq!(lr("longer"), 1e-4);
        assert_eq!(world::steps(get("longer")), 24);
        assert_eq!(
            get("longer").settings["stage"]["first_stage_steps"].as_integer(),
            Some(4)
        );
        // Zero-shot is tuned nowhere: its settings are the spec's own.
        assert_eq!(lr("zero-shot"), 1e-5);

        // DPZero and DP-ZOPO are the source's very runs: taken over, not run again.
        let out = results_dir(&args.out, "abl", "p");
        let cells = grid::plan(&runs, &out, "m").unwrap();
        // What a dry run shows: the four cells and the source record each would take.
        let adoptable: Vec<(String, std::path::PathBuf)> = cells
            .iter()
            .filter_map(|c| Some((c.run.stem(), inheritance.adoptable(c)?)))
            .collect();
        assert_eq!(adoptable.len(), 4, "{adoptable:?}");
        for (stem, from) in &adoptable {
            assert!(stem.contains("__dpzero__") || stem.contains("__dp-zopo__"));
            assert_eq!(read(from).spec_hash, {
                let cell = cells.iter().find(|c| &c.run.stem() == stem).unwrap();
                cell.hash.clone()
            });
        }
        assert_eq!(inheritance.adopt(&cells).unwrap(), 4);
        // Once taken over, a cell is recorded: nothing is adoptable any more.
        assert!(cells.iter().all(|c| inheritance.adoptable(c).is_none()));
        let mut runner = world::Runner::default();
        grid::execute(
            &cells,
            &mut runner,
            grid::Policy::from_flags(false, false, None),
        )
        .unwrap();
        assert!(runner
            .calls
            .iter()
            .all(|c| c.0 != "dpzero" && c.0 != "dp-zopo"));
        inheritance.annotate(&cells).unwrap();
        let cell = |m: &str, seed: u64| {
            cells
                .iter()
                .find(|c| c.run.method == m && c.run.seed == seed)
                .unwrap()
        };
        let sparse = read(&cell("sparse", 2).record).tuning.unwrap();
        let source_of = sparse.source.clone().unwrap();
        assert_eq!(
            (source_of.target.as_str(), source_of.preset.as_str()),
            ("src", "p")
        );
        assert_eq!(
            (
                source_of.task.as_str(),
                source_of.method.as_str(),
                source_of.epsilon
            ),
            ("A", "dp-zopo", Some(4.0))
        );
        assert_eq!(source_of.winner_folder, "dp-zopo__learning_rate=0.01");
        // One recorded candidate (the other failed) and the variant's own run, 12 steps each.
        assert_eq!(sparse.runs_composed, 2);
        world::assert_procedure(&sparse, &[(world::sigma(4.0), 12), (world::sigma(4.0), 12)]);
        // DPZero's two candidates and the 24-step run.
        let longer = read(&cell("longer", 1).record).tuning.unwrap();
        assert_eq!(longer.runs_composed, 3);
        world::assert_procedure(
            &longer,
            &[
                (world::sigma(4.0), 12),
                (world::sigma(4.0), 12),
                (world::sigma(4.0), 24),
            ],
        );
        // The adopted winner on the tuning seed is one of the candidates: not counted twice.
        let dpzero = read(&cell("dpzero", 1).record).tuning.unwrap();
        assert_eq!(dpzero.runs_composed, 2);
        // A non-private run has no guarantee to state.
        let noiseless = read(&cell("noiseless", 1).record).tuning.unwrap();
        assert_eq!(noiseless.epsilon_procedure, None);
        assert_eq!(noiseless.source.unwrap().method, "dpzero");

        // Task B was never tuned in src: an error naming the group and the command.
        let err = super::inherit(
            &abl,
            "q",
            abl.runs("q").unwrap(),
            &args.experiments,
            &args.out,
            "m",
            &none,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("(B, dpzero, eps 4)")
                && err.contains("has not been tuned")
                && err.contains(
                    "repro src --preset p --tune --tasks B --methods dpzero --epsilons 4"
                ),
            "{err}"
        );
        // A candidate record lost: the group is incomplete, never decided on what is left.
        let lost = dir.join(
            "results/src/p/tuning/dpzero__learning_rate=0.00001/runs/A__dpzero__eps4__seed1.json",
        );
        std::fs::remove_file(&lost).unwrap();
        let err = super::inherit(
            &abl,
            "p",
            abl.runs("p").unwrap(),
            &args.experiments,
            &args.out,
            "m",
            &none,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("(A, dpzero, eps 4)")
                && err.contains("1 of 2 candidates are neither recorded nor failed"),
            "{err}"
        );
        // --tune on an inheriting preset would tune again: refused.
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `tune_options.at_epsilon = 4`: the candidates run at eps 4 only; the runs at eps 2 and 8
    /// take that winner, and their procedure eps composes the eps-4 candidates with the final
    /// run (checked against the analytic Gaussian of the composition); `tuning.csv` lists them.
    #[test]
    fn tuning_at_one_epsilon_reuses_its_winner_and_composes_its_candidates() {
        let dir = world::scratch("at-eps");
        let spec = world::spec(
            &dir,
            "src",
            r#"tasks = ["A"]
               methods = ["zero-shot", "dpzero"]
               epsilons = [2.0, 4.0, 8.0]"#,
            &format!("{}tune_options = {{ at_epsilon = 4.0 }}", world::PRESET_P),
        );
        let runner = tune_source(&dir, &spec, &["A"]);
        // Candidates: two, at eps 4 only; finals: zero-shot twice, dpzero on 2 seeds x 3 eps
        // less the winner's own run (adopted).
        let candidates: Vec<_> = runner
            .calls
            .iter()
            .filter(|c| c.0 == "dpzero" && c.2 == 1e-5)
            .collect();
        assert_eq!(candidates.len(), 1, "{:?}", runner.calls);
        assert_eq!(candidates[0].1, Some(4.0));
        assert_eq!(runner.calls.len(), 2 + 2 + 5, "{:?}", runner.calls);
        let runs = dir.join("results/src/p/runs");
        let sigma = world::sigma;
        for (eps, seed) in [(2.0, 1), (8.0, 2)] {
            let note = read(&runs.join(format!("A__dpzero__eps{eps}__seed{seed}.json")))
                .tuning
                .unwrap();
            let source = note.source.clone().unwrap();
            assert_eq!(source.epsilon, Some(4.0));
            assert_eq!(source.winner_folder, "dpzero__learning_rate=0.0001");
            assert_eq!(note.runs_composed, 3);
            let want = world::analytic_composition(&[
                (sigma(4.0), 12),
                (sigma(4.0), 12),
                (sigma(eps), 12),
            ]);
            let got = note.epsilon_procedure.unwrap();
            assert!(
                (got - want).abs() < 1e-6 * want,
                "eps {eps}: {got} vs {want}"
            );
            // Never less than the run's own eps plus what the candidates spent.
            assert!(got > note.epsilon_run.unwrap());
        }
        let own = read(&runs.join("A__dpzero__eps4__seed1.json"))
            .tuning
            .unwrap();
        assert_eq!(own.source, None);
        assert_eq!(own.runs_composed, 2);
        let csv = std::fs::read_to_string(dir.join("results/src/p/tuning.csv")).unwrap();
        let reused: Vec<&str> = csv.lines().filter(|l| l.contains(",reused,")).collect();
        assert_eq!(reused.len(), 2, "{csv}");
        assert!(
            reused[0].starts_with("A,dpzero,2,reused,learning_rate=0.0001,,true,"),
            "{csv}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A variant tuned in the same call as its base (its own space, here a 0.1% mask over the
    /// base's step sizes scaled by 1/r) composes its own candidates and its base's: its space was
    /// set knowing the base's search. Checked against the analytic Gaussian of the composition;
    /// the base itself composes only its own, and the randomized-count bound, which covers one
    /// search, is left out for the variant.
    #[test]
    fn a_variant_tuned_beside_its_base_composes_the_bases_candidates() {
        let dir = world::scratch("variant-own");
        let spec = world::spec(
            &dir,
            "abl",
            world::GRID_DPZERO_SPARSE,
            &format!("{}{}", world::PRESET_P, world::SPARSE_TUNED_ITSELF),
        );
        let runner = tune_source(&dir, &spec, &["A"]);
        // The variant's candidates ran at its own space, scaled by 1 / 0.001.
        let sparse: Vec<f64> = runner
            .calls
            .iter()
            .filter(|c| c.0 == "sparse")
            .map(|c| c.2)
            .collect();
        assert!(
            [1e-2, 1e-1, 1.0]
                .iter()
                .all(|lr| sparse.iter().any(|s| (s - lr).abs() < 1e-12 * lr)),
            "{sparse:?}"
        );
        let runs = dir.join("results/abl/p/runs");
        let sigma = world::sigma(4.0);
        // Seed 2's final is a run of its own: 3 own candidates + 2 of the base + itself.
        let note = read(&runs.join("A__sparse__eps4__seed2.json"))
            .tuning
            .unwrap();
        assert_eq!(note.runs_composed, 6);
        world::assert_procedure(&note, &[(sigma, 12 * 6)]);
        assert_eq!(note.epsilon_procedure_random_k, None);
        // The base composes its own two candidates and its run.
        let base = read(&runs.join("A__dpzero__eps4__seed2.json"))
            .tuning
            .unwrap();
        assert_eq!(base.runs_composed, 3);
        assert!(base.epsilon_procedure_random_k.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `tune_options.take_over`: a preset whose base method's runs another target has already
    /// tuned copies them in (candidates, an earlier candidate its space no longer lists, and the
    /// finals) instead of running them, and only its own variant runs. The taken-over earlier
    /// candidate composes into the procedure ε of the base and of the variant beside it.
    #[test]
    fn take_over_copies_the_same_runs_and_keeps_their_ledger() {
        let dir = world::scratch("take-over");
        let src = world::spec(
            &dir,
            "src",
            r#"tasks = ["A"]
               methods = ["dpzero"]
               epsilons = [4.0]"#,
            world::PRESET_P,
        );
        tune_source(&dir, &src, &["A"]);
        // An earlier candidate of the source's group, outside the space both now list.
        let src_tuning = dir.join("results/src/p/tuning");
        let earlier = src_tuning.join("dpzero__learning_rate=0.01/runs");
        std::fs::create_dir_all(&earlier).unwrap();
        std::fs::copy(
            src_tuning.join("dpzero__learning_rate=0.00001/runs/A__dpzero__eps4__seed1.json"),
            earlier.join("A__dpzero__eps4__seed1.json"),
        )
        .unwrap();
        let abl = world::spec(
            &dir,
            "abl",
            world::GRID_DPZERO_SPARSE,
            &format!(
                "{}[preset.p.tune_options.take_over]\ntarget = \"src\"\n{}",
                world::PRESET_P,
                world::SPARSE_TUNED_ITSELF
            ),
        );
        let runner = tune_source(&dir, &abl, &["A"]);
        assert!(
            runner.calls.iter().all(|c| c.0 == "sparse"),
            "{:?}",
            runner.calls
        );
        // Three candidates and the final on seed 2 (seed 1's is the winner's run).
        assert_eq!(runner.calls.len(), 4, "{:?}", runner.calls);
        let runs = dir.join("results/abl/p/runs");
        let sigma = world::sigma(4.0);
        let base = read(&runs.join("A__dpzero__eps4__seed2.json"))
            .tuning
            .unwrap();
        assert_eq!(
            base.runs_composed, 4,
            "two candidates, the earlier one, the run"
        );
        world::assert_procedure(&base, &[(sigma, 12 * 4)]);
        let variant = read(&runs.join("A__sparse__eps4__seed2.json"))
            .tuning
            .unwrap();
        assert_eq!(variant.runs_composed, 3 + 3 + 1);
        // A record this target holds is never replaced: a second call takes nothing over.
        let again = tune_source(&dir, &abl, &["A"]);
        assert!(again.calls.is_empty(), "{:?}", again.calls);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A `--tune` call over some groups (here task B) keeps `tuning.csv`'s rows of the groups it
    /// did not plan (task A, tuned by an earlier call), in place, and replaces its own groups'
    /// rows.
    #[test]
    fn tuning_csv_keeps_the_rows_of_groups_outside_the_call() {
        let dir = world::scratch("keep-rows");
        let spec = world::spec(&dir, "src", world::GRID_AB_DPZERO, world::PRESET_P);
        let csv = || std::fs::read_to_string(dir.join("results/src/p/tuning.csv")).unwrap();
        let rows = |text: &str, task: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{task},dpzero,4,")))
                .count()
        };
        tune_source(&dir, &spec, &["A"]);
        let after_a = csv();
        assert_eq!(
            (rows(&after_a, "A"), rows(&after_a, "B")),
            (2, 0),
            "{after_a}"
        );
        tune_source(&dir, &spec, &["B"]);
        let after_b = csv();
        assert_eq!(
            (rows(&after_b, "A"), rows(&after_b, "B")),
            (2, 2),
            "{after_b}"
        );
        // Dev accuracy rises with the step size in this world: the winner, 1e-4, is the top of
        // [1e-5, 1e-4], and only its row says so.
        let selected: Vec<&str> = after_b.lines().filter(|l| l.contains(",true,")).collect();
        assert_eq!(selected.len(), 2, "{after_b}");
        // `at_edge` is the twelfth column.
        let at_edge = |row: &str| row.split(',').nth(11).unwrap_or("missing").to_string();
        for row in &selected {
            assert_eq!(at_edge(row), "learning_rate=top", "{row}");
        }
        assert!(
            after_b
                .lines()
                .filter(|l| l.contains(",false,"))
                .all(|l| at_edge(l).is_empty()),
            "{after_b}"
        );
        // `open_groups` reads the two edge winners back, for the claims over them.
        let out = dir.join("results/src/p");
        let open = open_groups(&out).unwrap();
        let keys: Vec<(&str, &str, &str)> = open
            .iter()
            .map(|g| (g.task.as_str(), g.method.as_str(), g.why.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("A", "dpzero", "winner at learning_rate=top"),
                ("B", "dpzero", "winner at learning_rate=top")
            ]
        );
        // A candidate not run yet keeps its group open whatever the winner so far.
        let pending = world::scratch("open-groups-pending");
        std::fs::create_dir_all(&pending).unwrap();
        let first_a = after_b.lines().find(|l| l.starts_with("A,")).unwrap();
        let mut cells: Vec<&str> = first_a.split(',').collect();
        cells[5] = "not run";
        std::fs::write(
            pending.join("tuning.csv"),
            after_b.replacen(first_a, &cells.join(","), 1),
        )
        .unwrap();
        let open = open_groups(&pending).unwrap();
        assert_eq!(open[0].why, "1 of 2 candidates not run", "{open:?}");
        let _ = std::fs::remove_dir_all(&pending);
        // A malformed `selected` is named with its file and line.
        let bad = world::scratch("open-groups-bad");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(
            bad.join("tuning.csv"),
            after_b.replacen(",true,", ",yes,", 1),
        )
        .unwrap();
        let err = format!("{:#}", open_groups(&bad).unwrap_err());
        assert!(
            err.contains("tuning.csv:") && err.contains("\"yes\""),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&bad);
        // Rows are ordered by task and method whatever the order of the calls: the call over B
        // leaves A's rows first, where they were.
        let tasks: Vec<&str> = after_b
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap_or(""))
            .collect();
        assert_eq!(tasks, ["A", "A", "B", "B"], "{after_b}");
        // Task A's rows are carried over unchanged, and a second call over B does not repeat B.
        for line in after_a.lines().filter(|l| l.starts_with("A,")) {
            assert!(
                after_b.lines().any(|l| l == line),
                "{line} lost:\n{after_b}"
            );
        }
        tune_source(&dir, &spec, &["B"]);
        assert_eq!(rows(&csv(), "B"), 2, "{}", csv());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A space narrowed after its candidates ran: the candidate it no longer lists still ran on
    /// the training data, so the procedure composes it (the ledger never shrinks), checked
    /// against the analytic Gaussian of the composition.
    #[test]
    fn a_narrowed_space_still_composes_the_candidates_that_ran() {
        let dir = world::scratch("narrowed");
        let grid = world::GRID_A_DPZERO;
        let preset = world::PRESET_P;
        let spec = world::spec(&dir, "src", grid, preset);
        tune_source(&dir, &spec, &["A"]);
        let narrowed = world::spec(
            &dir,
            "src",
            grid,
            &format!("{preset}\n[preset.p.tune]\ndpzero = {{ learning_rate = [1e-4] }}"),
        );
        let runner = tune_source(&dir, &narrowed, &["A"]);
        assert!(runner.calls.is_empty(), "{:?}", runner.calls);
        let runs = dir.join("results/src/p/runs");
        let sigma = world::sigma(4.0);
        for seed in [1, 2] {
            let note = read(&runs.join(format!("A__dpzero__eps4__seed{seed}.json")))
                .tuning
                .unwrap();
            assert_eq!(note.candidates, 1);
            // Seed 1's final is the winner's own run; seed 2 adds its own.
            let releases = if seed == 1 { 2 } else { 3 };
            assert_eq!(note.runs_composed, releases, "seed {seed}");
            let want = world::analytic_composition(&vec![(sigma, 12); releases]);
            let got = note.epsilon_procedure.unwrap();
            assert!(
                (got - want).abs() < 1e-6 * want,
                "seed {seed}: {got} vs {want}"
            );
        }
        // tuning.csv still lists it, never selected.
        let csv = std::fs::read_to_string(dir.join("results/src/p/tuning.csv")).unwrap();
        let off: Vec<&str> = csv.lines().filter(|l| l.contains(",off-space,")).collect();
        assert_eq!(off.len(), 1, "{csv}");
        assert!(
            off[0].starts_with("A,dpzero,4,off-space,learning_rate=0.00001,"),
            "{csv}"
        );
        assert!(off[0].contains(",false,"), "{csv}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The committed mini records (candidates and finals) are still recorded under the cells
    /// that `--tune` plans today: their spec hashes have not moved. And no final's tuning note
    /// composes fewer candidates than its group has recorded.
    #[test]
    fn committed_table2_mini_records_still_count_as_recorded() {
        use crate::target::{grid, record::CellRecord, spec::Spec};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let spec = Spec::load(&root.join("experiments/table2.toml")).unwrap();
        let dir = root.join("results/table2/mini");
        let runs = spec.runs("mini").unwrap();
        let (_, groups) = super::candidates(&spec, "mini", &runs, &dir, "smollm2-135m").unwrap();
        let mut checked = 0;
        for folder in std::fs::read_dir(dir.join("tuning")).unwrap() {
            for record in std::fs::read_dir(folder.unwrap().path().join("runs")).unwrap() {
                let path = record.unwrap().path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue; // a steps sidecar
                }
                let Some(cell) = groups
                    .iter()
                    .flat_map(|(_, l)| l)
                    .find(|c| c.cell.record == path)
                else {
                    // A candidate of a space since narrowed: its group is still planned, and
                    // the procedure composes it (off_space_records).
                    let stem = path.file_name().unwrap();
                    assert!(
                        groups.iter().any(|(_, l)| l
                            .iter()
                            .any(|c| c.cell.record.file_name() == Some(stem))),
                        "{} belongs to no planned group",
                        path.display()
                    );
                    continue;
                };
                assert!(cell.cell.is_recorded(), "{}", path.display());
                checked += 1;
            }
        }
        let tuned: Vec<_> = groups
            .into_iter()
            .filter(|(_, l)| l.iter().any(|c| c.cell.is_recorded()))
            .collect();
        let winners = super::select(&tuned).unwrap();
        let finals = grid::plan(
            &super::final_runs(&runs, &winners, None),
            &dir,
            "smollm2-135m",
        )
        .unwrap();
        for record in std::fs::read_dir(dir.join("runs")).unwrap() {
            let path = record.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue; // a steps sidecar
            }
            let cell = finals.iter().find(|c| c.record == path).unwrap();
            assert!(cell.is_recorded(), "{}", path.display());
            checked += 1;
            // Its tuning note composes every candidate its group has recorded: a candidate
            // added to the space and run after the final was written must not leave the
            // final's procedure ε under-counted (rewrite the notes with a `--tune` call over
            // the group).
            let record = CellRecord::read(&path).unwrap();
            let Some(note) = record.tuning else { continue };
            let (_, list) = tuned
                .iter()
                .find(|(k, _)| (&k.0, &k.1) == (&record.task, &record.method))
                .unwrap_or_else(|| panic!("{}: no tuned group", path.display()));
            let recorded = list.iter().filter(|c| c.cell.is_recorded()).count();
            assert!(
                note.candidates >= recorded,
                "{}: its note composes {} candidates, its group has {recorded} recorded",
                path.display(),
                note.candidates
            );
        }
        assert!(checked >= 30, "{checked}");
    }

    fn gaussian(sigma: f64, count: u64) -> Ledger {
        let mut l = Ledger::new(NeighboringRelation::AddOrRemoveOne);
        l.entries.push(accountant::LedgerEntry {
            event: DpEvent::Gaussian {
                noise_multiplier: sigma,
            },
            count,
        });
        l
    }

    /// Full-batch Gaussian runs are rho-zCDP (RDP rho lambda, rho = count / (2 sigma^2)): the
    /// procedure's curve, written out by hand from Papernot & Steinke's Thm 2 (eta = 1,
    /// gamma = 1/m, the worst candidate's rho) plus the final run's, converted at delta.
    #[test]
    fn random_k_bound_uses_the_worst_candidate_and_adds_the_final_run() {
        let candidates = [
            gaussian(20.0, 100),
            gaussian(10.0, 100),
            gaussian(40.0, 100),
        ];
        let final_run = gaussian(10.0, 100);
        let delta = 1e-5;
        let got = random_k_epsilon_of(&candidates, Some(&final_run), delta).unwrap();
        let orders = accountant::Orders::dp_accounting_default();
        let rho = 100.0 / (2.0 * 10.0f64.powi(2));
        let m = candidates.len() as f64;
        let selection = orders
            .as_slice()
            .iter()
            .map(|&h| 2.0 * ((1.0 - 1.0 / h) * rho * h + m.ln() / h))
            .fold(f64::INFINITY, f64::min);
        let curve: Vec<f64> = orders
            .as_slice()
            .iter()
            .map(|&l| rho * l + selection + m.ln() / (l - 1.0) + rho * l)
            .collect();
        let want = accountant::rdp::epsilon_from_rdp(orders.as_slice(), &curve, delta)
            .unwrap()
            .value;
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        // Without the final run it is smaller; with a single candidate ln E[K] = 0.
        let alone = random_k_epsilon_of(&candidates, None, delta).unwrap();
        assert!(alone < got);
        let one = random_k_epsilon_of(&candidates[1..2], None, delta).unwrap();
        assert!(one < alone);
    }

    #[test]
    fn candidate_folders_are_named_by_their_settings() {
        let mut o = toml::Table::new();
        o.insert("clip_norm".into(), toml::Value::Float(30.0));
        // 5e-6 x 100, as the inverse-mask-ratio scaling computes it.
        o.insert("learning_rate".into(), toml::Value::Float(5e-6 * 100.0));
        assert_eq!(
            candidate_folder("dp-zopo", &o),
            "dp-zopo__clip_norm=30__learning_rate=0.0005"
        );
        o.insert("learning_rate".into(), toml::Value::Float(2e-5));
        assert_ne!(
            candidate_folder("dp-zopo", &o),
            "dp-zopo__clip_norm=30__learning_rate=0.0005"
        );
    }
}
