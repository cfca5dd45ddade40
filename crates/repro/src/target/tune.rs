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
//!
//! Privacy: tuning on the private training set is itself a release. For each final run the
//! procedure's guarantee composes every distinct run it depended on (all candidates of its group
//! and the final run itself) through the accountant that the runs used (plain composition).
//! Beside it, `epsilon_procedure_random_k` gives Papernot & Steinke's RDP bound for the
//! randomized counterpart of the search (a geometric number of random candidates with the same
//! expected count; [`TuningNote`]). Dev
//! accuracy is used without privatisation, as DPZero and MeZO do: the dev split is treated as
//! public, which a deployment on private dev data would have to account for separately.

use super::grid::{self, Cell, Policy};
use super::record::CellRecord;
use super::spec::{overlaid, RunSpec, Spec};
use super::{CellRunner, TargetArgs};
use accountant::{AccountantKind, Ledger};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

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

/// One candidate run of phase 1.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub index: usize,
    /// The settings it overrides (`learning_rate`, `clip_norm`, …).
    pub overrides: toml::Table,
    pub cell: Cell,
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
}

/// The groups' candidates: one per point of the method's space, on the tuning seed. Methods
/// without a space are not tuned (zero-shot, or a method the spec leaves fixed).
pub fn candidates(
    spec: &Spec,
    preset_name: &str,
    runs: &[RunSpec],
    dir: &Path,
    model: &str,
) -> Result<(u64, Vec<Group>)> {
    let preset = spec.preset(preset_name)?;
    let tuning_seed = preset
        .seeds
        .as_ref()
        .unwrap_or(&spec.grid.seeds)
        .first()
        .copied()
        .context("the preset has no seed to tune on")?;
    let mut groups: Vec<(GroupKey, Vec<Candidate>)> = Vec::new();
    for run in runs {
        let key = group_of(run);
        if groups.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let Some(space) = spec.tune_space(preset, &run.method)? else {
            continue;
        };
        // Settings do not depend on the seed: the group's run (with any --compute override)
        // moved to the tuning seed.
        let base = RunSpec {
            seed: tuning_seed,
            ..run.clone()
        };
        let mut list = Vec::new();
        for (index, overrides) in space.candidates(&base.settings)?.into_iter().enumerate() {
            let run = RunSpec {
                settings: overlaid(&base.settings, &overrides),
                ..base.clone()
            };
            let cell_dir = dir
                .join("tuning")
                .join(candidate_folder(&run.method, &overrides));
            let cell = grid::plan(std::slice::from_ref(&run), &cell_dir, model)?
                .pop()
                .context("plan returns one cell per run")?;
            let runs_dir = cell_dir.join("runs");
            std::fs::create_dir_all(&runs_dir)
                .with_context(|| format!("cannot create {}", runs_dir.display()))?;
            list.push(Candidate {
                index,
                overrides,
                cell,
            });
        }
        groups.push((key, list));
    }
    Ok((tuning_seed, groups))
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

/// The selected candidate of each group (highest dev accuracy, earliest on ties).
pub fn select(groups: &[Group]) -> Result<BTreeMap<GroupKey, &Candidate>> {
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
pub fn final_runs(runs: &[RunSpec], winners: &BTreeMap<GroupKey, &Candidate>) -> Vec<RunSpec> {
    runs.iter()
        .map(|r| match winners.get(&group_of(r)) {
            Some(w) => RunSpec {
                settings: overlaid(&r.settings, &w.overrides),
                ..r.clone()
            },
            None => r.clone(),
        })
        .collect()
}

/// A final cell that is the winning candidate's very run (same spec hash) takes its record.
fn adopt_winner_records(finals: &[Cell], winners: &BTreeMap<GroupKey, &Candidate>) -> Result<()> {
    for cell in finals {
        let Some(w) = winners.get(&group_of(&cell.run)) else {
            continue;
        };
        if w.cell.hash == cell.hash && !cell.is_recorded() && w.cell.is_recorded() {
            if cell.record.exists() {
                grid::set_aside(&cell.record)?;
            }
            let record = CellRecord::read(&w.cell.record)?;
            record.write(&cell.record)?;
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
        let mut acc = kind.build(first.relation, trainer::optim::privacy::PRV_EPSILON_ERROR);
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
fn note_for(
    final_record: &CellRecord,
    final_hash: &str,
    tuning_seed: u64,
    list: &[Candidate],
    winner: &Candidate,
) -> Result<TuningNote> {
    let candidates: Vec<CellRecord> = list
        .iter()
        .filter(|c| c.cell.is_recorded())
        .map(|c| CellRecord::read(&c.cell.record))
        .collect::<Result<_>>()?;
    let mut composed: Vec<&CellRecord> = candidates.iter().collect();
    if !list.iter().any(|c| c.cell.hash == final_hash) {
        composed.push(final_record);
    }
    let procedure = composed_epsilon(&composed)?;
    let candidate_records: Vec<&CellRecord> = candidates.iter().collect();
    let final_distinct = !list.iter().any(|c| c.cell.hash == final_hash);
    let random_k = match (&procedure, candidate_records.is_empty()) {
        (Some((_, _, delta)), false) => random_k_epsilon(
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
    })
}

/// Writes `tuning.csv`: every candidate with its dev accuracy and the selection (no test
/// accuracy), and each group's per-run and procedure ε on the tuning seed.
fn write_tuning_csv(
    dir: &Path,
    groups: &[(GroupKey, Vec<Candidate>)],
    winners: &BTreeMap<GroupKey, &Candidate>,
    notes: &BTreeMap<GroupKey, TuningNote>,
) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
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
    ])?;
    let fmt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.4}"));
    for (key, list) in groups {
        let note = notes.get(key);
        for c in list {
            let settings: Vec<String> = c
                .overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            w.write_record([
                key.0.clone(),
                key.1.clone(),
                key.2
                    .map_or(String::new(), |e| f64::from_bits(e).to_string()),
                c.index.to_string(),
                settings.join(" "),
                dev_accuracy(c).map_or("failed".into(), |a| format!("{a:.2}")),
                (winners.get(key).map(|w| w.index) == Some(c.index)).to_string(),
                fmt(note.and_then(|n| n.epsilon_run)),
                fmt(note.and_then(|n| n.epsilon_procedure)),
                note.map_or(String::new(), |n| n.runs_composed.to_string()),
                fmt(note.and_then(|n| n.epsilon_procedure_random_k)),
            ])?;
        }
    }
    let bytes = w.into_inner().context("tuning.csv buffer")?;
    let path = dir.join("tuning.csv");
    atomic_file::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
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
    let outcome = grid::execute(cells, runner, policy)?;
    Ok(outcome
        .failed
        .into_iter()
        .map(|(stem, msg)| format!("{stem}: {msg}"))
        .collect())
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
    if args.dry_run {
        for (key, list) in &groups {
            for c in list {
                println!(
                    "  candidate {}/{} of {} {}: {}",
                    c.index + 1,
                    list.len(),
                    key.0,
                    key.1,
                    c.overrides
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
        return Ok(false);
    }
    let policy = Policy::from_flags(args.rerun, args.restart);
    let parallel = !g.worker && (g.gpus.is_some() || g.jobs_per_gpu > 1);
    let candidates_policy = Policy {
        report_dev: true,
        ..policy
    };
    let mut failures = execute(args, &phase1, runner, candidates_policy)?;
    let winners = select(&groups)?;
    let finals = grid::plan(&final_runs(runs, &winners), dir, &model)?;
    adopt_winner_records(&finals, &winners)?;
    if !parallel {
        // With workers, each worker has run phase 2 itself.
        failures.extend(execute(args, &finals, runner, policy)?);
    }
    if g.worker {
        return Ok(false);
    }
    let mut notes = BTreeMap::new();
    for cell in &finals {
        let key = group_of(&cell.run);
        let (Some(winner), Some((_, list))) =
            (winners.get(&key), groups.iter().find(|(k, _)| *k == key))
        else {
            continue;
        };
        if !cell.is_recorded() {
            continue;
        }
        let mut record = CellRecord::read(&cell.record)?;
        let note = note_for(&record, &cell.hash, tuning_seed, list, winner)?;
        if cell.run.seed == tuning_seed {
            notes.insert(key.clone(), note.clone());
        }
        if record.tuning.as_ref() != Some(&note) {
            record.tuning = Some(note);
            record.write(&cell.record)?;
        }
    }
    write_tuning_csv(dir, &groups, &winners, &notes)?;
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
            failures.join("; ")
        );
    }
    for f in &failures {
        eprintln!("warning: tuning candidate failed (not selectable): {f}");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::{candidate_folder, random_k_epsilon_of};
    use accountant::{DpEvent, Ledger, NeighboringRelation};

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
