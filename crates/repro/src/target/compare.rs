//! Ours against the paper, cell by cell, and the paper's claims checked one by one: `comparison.md`.

use super::spec::{Meta, Preset};
use super::summary::{t_interval95, SummaryRow};
use anyhow::{Context, Result};
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::Path;

/// One row of `paper-tables/<target>.csv`.
#[derive(Debug, Clone, Deserialize)]
pub struct PaperRow {
    #[allow(dead_code)] // part of the file's key; read by humans and other tools
    pub target: String,
    pub model: String,
    pub task: String,
    pub method: String,
    pub epsilon: Option<f64>,
    pub metric: String,
    pub value: f64,
    #[allow(dead_code)] // the paper's spread where it gives one; shown by other tools
    pub std: Option<f64>,
    pub source: String,
}

/// Read a paper table; a malformed row is an error naming file and line.
pub fn read_paper_table(path: &Path) -> Result<Vec<PaperRow>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("cannot read paper table {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize().enumerate() {
        let row: PaperRow =
            row.with_context(|| format!("{}:{}: malformed row", path.display(), i + 2))?;
        rows.push(row);
    }
    Ok(rows)
}

fn same_eps(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => false,
    }
}

/// A verdict on one claim, by the rule in [`verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Reproduced,
    Contradicted,
    Inconclusive,
    NotTestable,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Contradicted => "contradicted",
            Verdict::Inconclusive => "inconclusive",
            Verdict::NotTestable => "not testable",
        }
    }
}

/// The verdict rule. `p` is the paper's difference, `[lo, hi]` our 95% CI of the same difference,
/// `tol` the target's tolerance in points.
/// - |p| > tol (the paper claims an effect): reproduced when the CI excludes 0 on the paper's side;
///   contradicted when the CI lies below p and reaches 0 or beyond (mirrored for p < 0);
///   inconclusive otherwise (the CI covers both 0 and p).
/// - |p| ≤ tol (the paper claims no effect): reproduced when the CI meets [−tol, tol], else
///   contradicted.
pub fn verdict(p: f64, lo: f64, hi: f64, tol: f64) -> Verdict {
    if p.abs() > tol {
        // Mirror a negative claim onto the positive side.
        let (p, lo, hi) = if p > 0.0 { (p, lo, hi) } else { (-p, -hi, -lo) };
        if lo > 0.0 {
            Verdict::Reproduced
        } else if hi < p {
            Verdict::Contradicted
        } else {
            Verdict::Inconclusive
        }
    } else if lo <= tol && hi >= -tol {
        Verdict::Reproduced
    } else {
        Verdict::Contradicted
    }
}

/// How the confidence intervals of the claims are computed.
pub const CI_METHOD: &str = "95% paired t-interval over seeds";

/// One row of `claims.csv`: a difference the paper reports, ours with its 95% CI, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// `dp-zopo - dpzero`, `dp-zoso - dpzero`, or `<method>: eps8 - eps2`.
    pub claim: String,
    pub task: String,
    /// The ε of the compared cells (`8 vs 2` for the ε claim).
    pub epsilon: String,
    pub paper_delta: Option<f64>,
    /// Mean over paired seeds of our difference.
    pub ours_delta: Option<f64>,
    pub ci: Option<(f64, f64)>,
    /// Seeds present on both sides.
    pub n_seeds: usize,
    pub verdict: Verdict,
    /// The verdict in words.
    pub why: String,
    /// The sides whose dev search is open ([`OpenGroup`]), e.g. `dpzero: winner at
    /// learning_rate=bottom`; empty when none. The verdict follows the rule all the same, but it
    /// is provisional until the search is closed.
    pub open_tuning: String,
    /// Our paired per-seed differences (and per-example outcomes), from which the CI comes and
    /// `precision.csv` projects other numbers of seeds.
    pub sample: Option<super::stats::SeedSample>,
}

/// Per-seed differences `a − b` over the seeds both rows ran.
fn paired_differences(a: &SummaryRow, b: &SummaryRow) -> Vec<f64> {
    a.seeds
        .iter()
        .zip(&a.accuracies)
        .filter_map(|(seed, x)| {
            let j = b.seeds.iter().position(|s| s == seed)?;
            Some(x - b.accuracies[j])
        })
        .collect()
}

/// Test one paper difference against ours (`a − b`, paired by seed).
pub(super) fn test_claim(
    claim: String,
    task: &str,
    epsilon: String,
    paper_delta: Option<f64>,
    sides: (Option<&SummaryRow>, Option<&SummaryRow>),
    names: (&str, &str),
    tol: f64,
) -> Claim {
    let mut c = Claim {
        claim,
        task: task.to_string(),
        epsilon,
        paper_delta,
        ours_delta: None,
        ci: None,
        n_seeds: 0,
        verdict: Verdict::NotTestable,
        why: String::new(),
        open_tuning: String::new(),
        sample: None,
    };
    let (a, b) = match sides {
        (Some(a), Some(b)) => (a, b),
        (a, b) => {
            let missing: Vec<&str> = [(a.is_none(), names.0), (b.is_none(), names.1)]
                .iter()
                .filter(|m| m.0)
                .map(|m| m.1)
                .collect();
            c.why = format!("{} not run", missing.join(" and "));
            return c;
        }
    };
    let d = paired_differences(a, b);
    c.n_seeds = d.len();
    if !d.is_empty() {
        c.ours_delta = Some(d.iter().sum::<f64>() / d.len() as f64);
    }
    // Per-example differences (−1/0/1) paired by seed and test example, when every record of
    // both sides carries its outcomes; otherwise the seed-only t-interval.
    let examples: Option<Vec<Vec<i8>>> = a
        .seeds
        .iter()
        .zip(&a.outcomes)
        .filter_map(|(seed, oa)| {
            let j = b.seeds.iter().position(|s| s == seed)?;
            Some(match (oa, &b.outcomes[j]) {
                (Some(x), Some(y)) if x.len() == y.len() => {
                    Some(x.iter().zip(y).map(|(p, q)| p - q).collect())
                }
                _ => None,
            })
        })
        .collect();
    let sample = super::stats::SeedSample {
        values: d.clone(),
        examples,
    };
    let interval = super::stats::interval(&sample);
    c.sample = Some(sample);
    match interval {
        Ok(Some(iv)) => {
            c.ci = Some((iv.low, iv.high));
            c.why = iv.method.describe();
        }
        Ok(None) => c.ci = None,
        Err(e) => {
            c.why = format!("per-example outcomes unusable ({e:#}), seed-only t-interval");
            c.ci = t_interval95(&d);
        }
    }
    let Some((lo, hi)) = c.ci else {
        c.why = format!(
            "{} paired seed(s); a confidence interval needs at least 2",
            d.len()
        );
        return c;
    };
    let Some(p) = paper_delta else {
        c.why = format!("no paper value for this difference; CI: {}", c.why);
        return c;
    };
    c.verdict = verdict(p, lo, hi, tol);
    let ci_method = std::mem::take(&mut c.why);
    let ours = format!(
        "ours {:+.1} {} over {} seeds",
        c.ours_delta.unwrap_or(0.0),
        signed_ci((lo, hi)),
        c.n_seeds
    );
    c.why = if p.abs() > tol {
        let side = if p > 0.0 { "above" } else { "below" };
        match c.verdict {
            Verdict::Reproduced => format!("paper {p:+.1}; {ours}: the CI lies {side} 0, as the paper's"),
            Verdict::Contradicted => format!("paper {p:+.1}; {ours}: the CI excludes the paper's value and reaches 0 or the opposite side"),
            _ => format!("paper {p:+.1}; {ours}: the CI covers both 0 and the paper's value"),
        }
    } else {
        match c.verdict {
            // The rule only asks the CI to meet the band; say so when it also excludes 0, so a
            // "reproduced" small effect is not read as "no difference".
            Verdict::Reproduced if lo > 0.0 || hi < 0.0 => format!(
                "paper {p:+.1} (no effect beyond ±{tol}); {ours}: the CI meets [−{tol}, +{tol}], but it also excludes 0: reproduced by this rule, yet a difference {} 0 is detected",
                if lo > 0.0 { "above" } else { "below" }
            ),
            Verdict::Reproduced => format!("paper {p:+.1} (no effect beyond ±{tol}); {ours}: the CI meets [−{tol}, +{tol}]"),
            _ => format!("paper {p:+.1} (no effect beyond ±{tol}); {ours}: the CI lies outside [−{tol}, +{tol}]"),
        }
    };
    c.why = format!("{}; CI: {ci_method}", c.why);
    c
}

struct Ctx<'a> {
    paper: Vec<&'a PaperRow>,
    ours: &'a [SummaryRow],
}

impl Ctx<'_> {
    fn paper_value(&self, task: &str, method: &str, eps: Option<f64>) -> Option<f64> {
        self.paper
            .iter()
            .find(|r| r.task == task && r.method == method && same_eps(r.epsilon, eps))
            .map(|r| r.value)
    }
    fn ours(&self, task: &str, method: &str, eps: Option<f64>) -> Option<&SummaryRow> {
        self.ours
            .iter()
            .find(|r| r.task == task && r.method == method && same_eps(r.epsilon, eps))
    }
}

fn fmt_ours(r: &SummaryRow) -> String {
    match (r.sd, r.ci95) {
        (Some(sd), Some((lo, hi))) => format!(
            "{:.1} ± {:.1} [{lo:.1}, {hi:.1}] (n={})",
            r.mean, sd, r.n_seeds
        ),
        _ => format!("{:.1} (n={})", r.mean, r.n_seeds),
    }
}

/// A tuned (task, method) whose search is open: a candidate not run yet, or a winner on an edge
/// of its space (`tune::open_groups` reads them from `tuning.csv`).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenGroup {
    pub task: String,
    pub method: String,
    /// Why, in a few words: `winner at learning_rate=bottom`, `1 of 7 candidates not run`.
    pub why: String,
}

/// Marks each claim one of whose `methods` (the methods behind its two sides) has an open group
/// on its task: `open_tuning` names them and `why` says the verdict is provisional. A method
/// whose search is open may still change its winner, so a claim that it lost (or won) is not
/// settled until the search is closed.
/// A claim without a verdict (not testable) is left unmarked: there is nothing to qualify.
fn mark_open(c: &mut Claim, methods: &[&str], open: &[OpenGroup]) {
    if c.verdict != Verdict::NotTestable {
        mark_open_search(c, methods, open);
    }
}

/// Names in `c.open_tuning` the open groups of `methods` on the claim's task, and adds to `why`
/// that the comparison is provisional; nothing when none is open. [`mark_open`] applies it to
/// claims with a verdict, `ablation::comparisons` to every variant-against-reference row.
pub(super) fn mark_open_search(c: &mut Claim, methods: &[&str], open: &[OpenGroup]) {
    let groups: Vec<&OpenGroup> = open
        .iter()
        .filter(|g| g.task == c.task && methods.contains(&g.method.as_str()))
        .collect();
    if groups.is_empty() {
        return;
    }
    c.open_tuning = groups
        .iter()
        .map(|g| format!("{}: {}", g.method, g.why))
        .collect::<Vec<_>>()
        .join("; ");
    c.why = format!(
        "{}; provisional: the dev search is open ({}; tuning.csv)",
        c.why, c.open_tuning
    );
}

/// The paper's claims as paired differences, tested against ours (`claims.csv`); `open` marks
/// those whose tuning is not settled ([`OpenGroup`]).
pub fn claims(
    meta: &Meta,
    paper_rows: &[PaperRow],
    ours: &[SummaryRow],
    open: &[OpenGroup],
) -> Vec<Claim> {
    // Only rows of the paper's own source (secondary anchors are other papers' numbers).
    let paper: Vec<&PaperRow> = paper_rows
        .iter()
        .filter(|r| {
            r.model == meta.paper_model
                && r.source.starts_with(&meta.paper_source)
                && r.metric == meta.metric
        })
        .collect();
    // Published differences (table3: the abstract's DP-ZOPO − DPZero deltas, no accuracies).
    let published_delta = |task: &str, e: f64| {
        paper_rows
            .iter()
            .find(|r| {
                r.model == meta.paper_model
                    && r.source.starts_with(&meta.paper_source)
                    && r.metric == "delta_vs_dpzero"
                    && r.method == "dp-zopo"
                    && r.task.eq_ignore_ascii_case(task)
                    && same_eps(r.epsilon, Some(e))
            })
            .map(|r| r.value)
    };
    let ctx = Ctx { paper, ours };
    let tol = meta.tolerance_points;
    let mut tasks: Vec<&str> = ours.iter().map(|r| r.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    let mut eps: Vec<f64> = ours.iter().filter_map(|r| r.epsilon).collect();
    eps.sort_by(f64::total_cmp);
    eps.dedup();
    let mut out = Vec::new();

    // The paper's methods against DPZero, per task and ε.
    for &task in &tasks {
        for &e in &eps {
            for m in ["dp-zopo", "dp-zoso"] {
                let p = ctx
                    .paper_value(task, m, Some(e))
                    .zip(ctx.paper_value(task, "dpzero", Some(e)))
                    .map(|(a, b)| a - b)
                    .or_else(|| (m == "dp-zopo").then(|| published_delta(task, e)).flatten());
                let a = ctx.ours(task, m, Some(e));
                let b = ctx.ours(task, "dpzero", Some(e));
                // A (task, ε) this preset ran neither side of is not part of its grid.
                if a.is_none() && b.is_none() {
                    continue;
                }
                let mut c = test_claim(
                    format!("{m} - dpzero"),
                    task,
                    e.to_string(),
                    p,
                    (a, b),
                    (m, "dpzero"),
                    tol,
                );
                mark_open(&mut c, &[m, "dpzero"], open);
                out.push(c);
            }
        }
    }

    // Accuracy rises with ε: ε = 8 against ε = 2, per DP method and task.
    let (lo_eps, hi_eps) = (2.0, 8.0);
    let mut dp_methods: Vec<&str> = ours
        .iter()
        .filter(|r| r.epsilon.is_some())
        .map(|r| r.method.as_str())
        .collect();
    dp_methods.sort();
    dp_methods.dedup();
    for m in dp_methods {
        for &task in &tasks {
            let p = ctx
                .paper_value(task, m, Some(hi_eps))
                .zip(ctx.paper_value(task, m, Some(lo_eps)))
                .map(|(a, b)| a - b);
            let mut c = test_claim(
                format!("{m}: eps8 - eps2"),
                task,
                "8 vs 2".into(),
                p,
                (
                    ctx.ours(task, m, Some(hi_eps)),
                    ctx.ours(task, m, Some(lo_eps)),
                ),
                ("ε = 8", "ε = 2"),
                tol,
            );
            mark_open(&mut c, &[m], open);
            out.push(c);
        }
    }
    out
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_default()
}

/// Write `claims.csv`.
pub fn write_claims_csv(
    meta: &Meta,
    paper_rows: &[PaperRow],
    ours: &[SummaryRow],
    open: &[OpenGroup],
    path: &Path,
) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "claim",
        "task",
        "epsilon",
        "paper_delta",
        "ours_delta",
        "ci_low",
        "ci_high",
        "n_seeds",
        "verdict",
        "open_tuning",
    ])?;
    for c in claims(meta, paper_rows, ours, open) {
        w.write_record([
            c.claim.clone(),
            c.task.clone(),
            c.epsilon.clone(),
            fmt_opt(c.paper_delta),
            fmt_opt(c.ours_delta),
            fmt_opt(c.ci.map(|c| c.0)),
            fmt_opt(c.ci.map(|c| c.1)),
            c.n_seeds.to_string(),
            c.verdict.label().to_string(),
            c.open_tuning.clone(),
        ])?;
    }
    atomic_file::write(path, w.into_inner()?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Point-estimate checks without a CI (shown, never given a verdict).
fn descriptive(meta: &Meta, ours: &[SummaryRow]) -> Vec<(String, String)> {
    let ctx = Ctx {
        paper: Vec::new(),
        ours,
    };
    let mut tasks: Vec<&str> = ours.iter().map(|r| r.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    let mut dp_methods: Vec<&str> = ours
        .iter()
        .filter(|r| r.epsilon.is_some())
        .map(|r| r.method.as_str())
        .collect();
    dp_methods.sort();
    dp_methods.dedup();
    let mut out = Vec::new();
    for m in dp_methods {
        let diffs: Vec<f64> = tasks
            .iter()
            .filter_map(|t| {
                let z = ctx.ours(t, "zero-shot", None)?.mean;
                let v: Vec<f64> = ours
                    .iter()
                    .filter(|r| r.task == *t && r.method == m)
                    .map(|r| r.mean)
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64 - z)
            })
            .collect();
        let text = if diffs.is_empty() {
            "zero-shot or the method not run".to_string()
        } else {
            format!(
                "{:+.1} points (mean over {} tasks of the method averaged over ε, minus zero-shot; the paper: a gain; cell tolerance ±{})",
                diffs.iter().sum::<f64>() / diffs.len() as f64,
                diffs.len(),
                meta.tolerance_points
            )
        };
        out.push((format!("{m} beats zero-shot"), text));
    }
    out.push((
        "DP-ZOSO/ZOPO memory = inference memory".into(),
        "an accuracy target does not measure memory: see results/perf/ and `repro memory`".into(),
    ));
    out
}

/// A difference in points, signed to one decimal (`+1.2`), or `–` when there is none.
pub(super) fn signed_points(d: Option<f64>) -> String {
    d.map_or_else(|| "–".into(), |d| format!("{d:+.1}"))
}

/// A difference's 95% CI in points, signed to one decimal: `[-1.2, +3.4]`.
pub(super) fn signed_ci((lo, hi): (f64, f64)) -> String {
    format!("[{lo:+.1}, {hi:+.1}]")
}

/// A claim's leading cells in a comparison.md table row: claim, task, ε, paper Δ, ours Δ with
/// its CI, n and verdict (`| … | verdict |`).
fn claim_cells(c: &Claim) -> String {
    let ours = match (c.ours_delta, c.ci) {
        (Some(d), Some(ci)) => format!("{d:+.1} {}", signed_ci(ci)),
        (d, _) => signed_points(d),
    };
    let paper = signed_points(c.paper_delta);
    let verdict = if c.open_tuning.is_empty() {
        c.verdict.label().to_string()
    } else {
        format!("{} (provisional: {})", c.verdict.label(), c.open_tuning)
    };
    format!(
        "| {} | {} | {} | {paper} | {ours} | {} | {verdict} |",
        c.claim, c.task, c.epsilon, c.n_seeds
    )
}

/// The claims again on `base_seeds` only (the preset's own), as a section of `comparison.md`,
/// when some cells also ran other seeds (`[[preset.<p>.extra_seeds]]`): the verdicts as they
/// stood before the extra seeds, since seeds added after an interim look change what a CI
/// means. `None` when no cell ran another seed.
pub fn render_base_seeds(
    meta: &Meta,
    paper_rows: &[PaperRow],
    ours: &[SummaryRow],
    open: &[OpenGroup],
    base_seeds: &[u64],
) -> Option<String> {
    if ours
        .iter()
        .all(|r| r.seeds.iter().all(|s| base_seeds.contains(s)))
    {
        return None;
    }
    let seeds: Vec<String> = base_seeds.iter().map(u64::to_string).collect();
    let restricted = restricted(ours, |s| base_seeds.contains(&s));
    Some(render_claims_section(
        meta,
        paper_rows,
        &restricted,
        open,
        &format!("The claims on the preset's own seeds ({})", seeds.join(", ")),
        "Some cells also ran other seeds (the deviations say which and why). The same claims on the preset's seeds alone, by the same rule, so the verdicts with and without the added seeds can be compared.",
    ))
}

/// Every row over its seeds other than `tuning_seed`: the finals whose test accuracy no dev
/// selection touched. Under `--tune` a method's final on the tuning seed is the very candidate
/// run that won on dev ([`super::tune`]); its dev and test accuracies share that run's luck, so
/// its test accuracy may sit high (the winner's curse), by more for a method with more
/// candidates. `None` when no row ran the tuning seed or no other seed.
pub fn without_tuning_seed(ours: &[SummaryRow], tuning_seed: u64) -> Option<Vec<SummaryRow>> {
    if !ours.iter().any(|r| r.seeds.contains(&tuning_seed)) {
        return None;
    }
    let rows = restricted(ours, |s| s != tuning_seed);
    (!rows.is_empty()).then_some(rows)
}

/// The claims over [`without_tuning_seed`]'s rows, as a section of `comparison.md`.
pub fn render_without_tuning_seed(
    meta: &Meta,
    paper_rows: &[PaperRow],
    rows: &[SummaryRow],
    open: &[OpenGroup],
    tuning_seed: u64,
) -> String {
    render_claims_section(
        meta,
        paper_rows,
        rows,
        open,
        &format!("The claims without the tuning seed ({tuning_seed})"),
        &format!(
            "Each tuned method's final on seed {tuning_seed} is the candidate run that won its dev selection, so its test accuracy shares that run's luck and may sit high (the winner's curse). The same claims over the other seeds only, by the same rule: a verdict that holds here does not rest on the selected runs. The same rows are in `claims_without_tuning_seed.csv`."
        ),
    )
}

/// `ours` with each row kept to the seeds that `keep` accepts (rows left with none dropped).
fn restricted(ours: &[SummaryRow], keep: impl Fn(u64) -> bool) -> Vec<SummaryRow> {
    ours.iter()
        .filter_map(|r| {
            let seeds: Vec<u64> = r.seeds.iter().copied().filter(|&s| keep(s)).collect();
            r.restricted_to(&seeds)
        })
        .collect()
}

/// A section of `comparison.md`: `heading`, `why`, and the testable claims over `rows`.
fn render_claims_section(
    meta: &Meta,
    paper_rows: &[PaperRow],
    rows: &[SummaryRow],
    open: &[OpenGroup],
    heading: &str,
    why: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## {heading}\n");
    let _ = writeln!(s, "{why}\n");
    let _ = writeln!(
        s,
        "| claim | task | ε | paper Δ | ours Δ [95% CI] | n | verdict |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for c in claims(meta, paper_rows, rows, open)
        .iter()
        .filter(|c| c.verdict != Verdict::NotTestable)
    {
        let _ = writeln!(s, "{}", claim_cells(c));
    }
    s
}

/// Render `comparison.md`.
pub fn render(
    meta: &Meta,
    preset_name: &str,
    preset: &Preset,
    model_run: &str,
    paper_rows: &[PaperRow],
    ours: &[SummaryRow],
    open: &[OpenGroup],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {}: ours against the paper ({preset_name} preset)\n",
        meta.title
    );
    let _ = writeln!(s, "{}\n", preset.description);
    let _ = writeln!(
        s,
        "Paper numbers: `{}`, rows whose source starts with `{}` (model `{}`). Secondary anchors (DPZero, MeZO) are shown where they exist. Ours: mean ± sample s.d. [95% t-interval of the mean] over seeds of the final-iterate test accuracy (%), model `{model_run}`.\n",
        meta.paper_table, meta.paper_source, meta.paper_model
    );
    let comparable = model_run == meta.paper_model;
    if !comparable {
        let _ = writeln!(
            s,
            "**This preset runs `{model_run}`, not `{}`: absolute accuracies are not comparable with the paper's; Δ is shown for orientation only. The claims below compare orderings and differences.**\n",
            meta.paper_model
        );
    }
    let _ = writeln!(s, "## Deviations from the paper's protocol\n");
    for d in &preset.deviations {
        let _ = writeln!(s, "- {d}");
    }
    let _ = writeln!(s, "\n## Cell by cell\n");
    let _ = writeln!(
        s,
        "| task | method | ε | ours | paper | Δ | secondary anchors | status |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for r in ours {
        let matching = |row: &&PaperRow| {
            row.task == r.task
                && row.method == r.method
                && same_eps(row.epsilon, r.epsilon)
                && row.metric == meta.metric
        };
        let paper = paper_rows.iter().filter(matching).find(|row| {
            row.model == meta.paper_model && row.source.starts_with(&meta.paper_source)
        });
        let secondary: Vec<String> = paper_rows
            .iter()
            .filter(matching)
            .filter(|row| !row.source.starts_with(&meta.paper_source))
            .map(|row| {
                format!(
                    "{:.1} ({})",
                    row.value,
                    row.source.split(' ').next().unwrap_or("")
                )
            })
            .collect();
        let (pv, delta, status) = match paper {
            None => (
                "–".to_string(),
                "–".to_string(),
                "no paper value".to_string(),
            ),
            Some(p) => {
                let d = r.mean - p.value;
                let status = if !comparable {
                    "model differs".to_string()
                } else if d.abs() <= meta.tolerance_points {
                    "match".to_string()
                } else if d > 0.0 {
                    "above paper".to_string()
                } else {
                    "below paper".to_string()
                };
                (format!("{:.1}", p.value), format!("{d:+.1}"), status)
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {pv} | {delta} | {} | {status} |",
            r.task,
            r.method,
            r.epsilon
                .map(|e| e.to_string())
                .unwrap_or_else(|| "–".into()),
            fmt_ours(r),
            if secondary.is_empty() {
                "–".into()
            } else {
                secondary.join("; ")
            },
        );
    }
    let _ = writeln!(
        s,
        "\nTolerance for \"match\": ±{} points ({}).\n",
        meta.tolerance_points, meta.tolerance_reason
    );
    let _ = writeln!(s, "## The paper's claims\n");
    let _ = writeln!(
        s,
        "Each claim is a difference of final test accuracies (points): DP-ZOPO and DP-ZOSO against DPZero at the same task and ε, and each DP method at ε = 8 against ε = 2. The paper's difference comes from its own rows. Ours is paired by seed (only seeds run on both sides) and by test example, with a 95% CI that counts seed variance and test-set sampling (seeds × test examples as crossed random factors, Satterthwaite t; `target/stats.rs`); records without per-example outcomes fall back to a {CI_METHOD}, and each claim says which. Verdict (tolerance {tol} points): when the paper's |Δ| > {tol}, *reproduced* if our CI excludes 0 on the paper's side, *contradicted* if it lies below the paper's value and reaches 0 or beyond, *inconclusive* otherwise; when |Δ| ≤ {tol}, *reproduced* if our CI meets [−{tol}, +{tol}], else *contradicted*. *Not testable*: fewer than 2 paired seeds, a side not run, or no paper value. The same rows are in `claims.csv`.\n",
        tol = meta.tolerance_points
    );
    let _ = writeln!(
        s,
        "| claim | task | ε | paper Δ | ours Δ [95% CI] | n | verdict | in words |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for c in claims(meta, paper_rows, ours, open) {
        let _ = writeln!(s, "{} {} |", claim_cells(&c), c.why);
    }
    let _ = writeln!(s, "\n## Descriptive checks (point estimates, no verdict)\n");
    for (what, text) in descriptive(meta, ours) {
        let _ = writeln!(s, "- {what}: {text}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, accs: &[(u64, f64)]) -> SummaryRow {
        let xs: Vec<f64> = accs.iter().map(|a| a.1).collect();
        SummaryRow {
            model: "m".into(),
            task: "SST-2".into(),
            method: method.into(),
            epsilon: Some(2.0),
            mean: xs.iter().sum::<f64>() / xs.len() as f64,
            sd: None,
            n_seeds: xs.len(),
            ci95: t_interval95(&xs),
            seeds: accs.iter().map(|a| a.0).collect(),
            outcomes: vec![None; xs.len()],
            accuracies: xs,
            data: "real".into(),
        }
    }

    /// A target's metadata with a 2-point tolerance, the paper's rows keyed `liu`, model `m`.
    fn fixture_meta() -> Meta {
        toml::from_str(
            r#"
            target = "table2"
            title = "x"
            paper_table = "p.csv"
            paper_source = "liu"
            metric = "accuracy"
            paper_model = "m"
            tolerance_points = 2.0
            tolerance_reason = "r"
            "#,
        )
        .unwrap()
    }

    /// The paper's accuracy for `method` on SST-2 at ε = 2 under [`fixture_meta`].
    fn paper_row(method: &str, value: f64) -> PaperRow {
        PaperRow {
            target: "table2".into(),
            model: "m".into(),
            task: "SST-2".into(),
            method: method.into(),
            epsilon: Some(2.0),
            metric: "accuracy".into(),
            value,
            std: None,
            source: "liu".into(),
        }
    }

    /// Extra seeds on both sides of a claim: the base-seed section tests it on the preset's
    /// seeds alone (n = 2, its own paired CI), the main claims on all four; a grid without
    /// extra seeds has no such section.
    #[test]
    fn base_seed_claims_leave_the_extra_seeds_out() {
        let meta = fixture_meta();
        let paper = paper_row;
        let papers = [paper("dp-zopo", 90.0), paper("dpzero", 85.0)];
        let ours = [
            row("dp-zopo", &[(1, 80.0), (2, 84.0), (3, 70.0), (4, 71.0)]),
            row("dpzero", &[(1, 75.0), (2, 78.0), (3, 72.0), (4, 73.0)]),
        ];
        let all = claims(&meta, &papers, &ours, &[]);
        assert_eq!(all[0].n_seeds, 4);
        let section = render_base_seeds(&meta, &papers, &ours, &[], &[1, 2]).unwrap();
        let base: Vec<SummaryRow> = ours
            .iter()
            .filter_map(|r| r.restricted_to(&[1, 2]))
            .collect();
        let on_base = claims(&meta, &papers, &base, &[]);
        assert_eq!(on_base[0].n_seeds, 2);
        assert!((on_base[0].ours_delta.unwrap() - 5.5).abs() < 1e-12);
        assert!(section.contains(&claim_cells(&on_base[0])), "{section}");
        assert!(section.contains("(1, 2)"), "{section}");
        assert!(render_base_seeds(&meta, &papers, &ours, &[], &[1, 2, 3, 4]).is_none());

        // Without the tuning seed 1: seeds 2, 3, 4, differences 6, -2, -2 (mean 2/3).
        let untouched = without_tuning_seed(&ours, 1).unwrap();
        assert!(untouched.iter().all(|r| r.seeds == [2, 3, 4]));
        let c = &claims(&meta, &papers, &untouched, &[])[0];
        assert_eq!(c.n_seeds, 3);
        assert!((c.ours_delta.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        let section = render_without_tuning_seed(&meta, &papers, &untouched, &[], 1);
        assert!(section.contains(&claim_cells(c)), "{section}");
        assert!(section.contains("without the tuning seed (1)"), "{section}");
        // A grid that never ran the tuning seed has nothing to leave out.
        assert!(without_tuning_seed(&ours, 13).is_none());
    }

    /// A group whose winner sits on an edge of its space marks the claims over its method on
    /// its task as provisional, in `claims.csv`'s `open_tuning` and in comparison.md's verdict
    /// cell, and leaves the verdict as the rule gives it; the claims of other methods or tasks
    /// stay unmarked. (BoolQ, 2026-12-07: DPZero's winner on the bottom edge made DP-ZOPO −
    /// DPZero read *reproduced* with nothing to say it was not settled.)
    #[test]
    fn an_edge_winner_makes_the_claims_over_it_provisional() {
        let meta = fixture_meta();
        let paper = paper_row;
        let papers = [
            paper("dp-zopo", 90.0),
            paper("dp-zoso", 86.0),
            paper("dpzero", 85.0),
        ];
        let ours = [
            row("dp-zopo", &[(1, 80.0), (2, 83.0), (3, 77.5)]),
            row("dp-zoso", &[(1, 76.0), (2, 79.0), (3, 73.0)]),
            row("dpzero", &[(1, 75.0), (2, 78.0), (3, 72.0)]),
        ];
        let edge = |task: &str, method: &str| OpenGroup {
            task: task.into(),
            method: method.into(),
            why: "winner at learning_rate=bottom".into(),
        };
        let settled = claims(&meta, &papers, &ours, &[edge("CB", "dpzero")]);
        let open = claims(&meta, &papers, &ours, &[edge("SST-2", "dp-zopo")]);
        let find = |cs: &[Claim], name: &str| cs.iter().find(|c| c.claim == name).unwrap().clone();
        let (zopo, zopo_open) = (
            find(&settled, "dp-zopo - dpzero"),
            find(&open, "dp-zopo - dpzero"),
        );
        assert_eq!(zopo.verdict, Verdict::Reproduced, "{}", zopo.why);
        assert_eq!(zopo.open_tuning, "");
        assert_eq!(zopo_open.verdict, zopo.verdict);
        assert_eq!(
            zopo_open.open_tuning,
            "dp-zopo: winner at learning_rate=bottom"
        );
        assert!(zopo_open.why.contains("provisional"), "{}", zopo_open.why);
        assert!(claim_cells(&zopo_open)
            .ends_with("| reproduced (provisional: dp-zopo: winner at learning_rate=bottom) |"));
        // DP-ZOSO − DPZero does not involve DP-ZOPO.
        assert_eq!(find(&open, "dp-zoso - dpzero").open_tuning, "");
        // DPZero is a side of both claims; the ε claims, not testable here, stay unmarked.
        let both = claims(&meta, &papers, &ours, &[edge("SST-2", "dpzero")]);
        assert!(both
            .iter()
            .filter(|c| c.claim.ends_with("- dpzero"))
            .all(|c| c.open_tuning == "dpzero: winner at learning_rate=bottom"));
        assert!(both
            .iter()
            .filter(|c| c.verdict == Verdict::NotTestable)
            .all(|c| c.open_tuning.is_empty()));
        let path =
            std::env::temp_dir().join(format!("dpzo-open-claims-{}.csv", std::process::id()));
        write_claims_csv(&meta, &papers, &ours, &[edge("SST-2", "dp-zopo")], &path).unwrap();
        let csv = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(csv
            .lines()
            .next()
            .unwrap()
            .ends_with(",verdict,open_tuning"));
        assert!(
            csv.contains(",reproduced,dp-zopo: winner at learning_rate=bottom\n"),
            "{csv}"
        );
    }

    fn run(p: Option<f64>, a: &SummaryRow, b: &SummaryRow) -> Claim {
        test_claim(
            "dp-zopo - dpzero".into(),
            "SST-2",
            "2".into(),
            p,
            (Some(a), Some(b)),
            ("dp-zopo", "dpzero"),
            1.0,
        )
    }

    #[test]
    fn clear_positive_effect_is_reproduced() {
        // Differences 4, 5, 6: mean 5, s.d. 1, CI 5 ± 4.30·1/√3 = [2.52, 7.48], above 0.
        let a = row("dp-zopo", &[(1, 84.0), (2, 85.0), (3, 86.0)]);
        let b = row("dpzero", &[(1, 80.0), (2, 80.0), (3, 80.0)]);
        let c = run(Some(3.0), &a, &b);
        assert_eq!(c.n_seeds, 3);
        assert!((c.ours_delta.unwrap() - 5.0).abs() < 1e-12);
        let (lo, hi) = c.ci.unwrap();
        assert!(
            (lo - 2.5159).abs() < 1e-3 && (hi - 7.4841).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(c.verdict, Verdict::Reproduced);
        // Mirrored: the paper claims a drop, ours is a clear drop.
        assert_eq!(run(Some(-3.0), &b, &a).verdict, Verdict::Reproduced);
    }

    #[test]
    fn null_effect_with_wide_spread_is_inconclusive() {
        // Differences −6, 0, +6: mean 0, CI ±14.9 covers both 0 and the paper's +3.
        let a = row("dp-zopo", &[(1, 74.0), (2, 80.0), (3, 86.0)]);
        let b = row("dpzero", &[(1, 80.0), (2, 80.0), (3, 80.0)]);
        assert_eq!(run(Some(3.0), &a, &b).verdict, Verdict::Inconclusive);
        assert_eq!(run(Some(-3.0), &a, &b).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn opposite_effect_is_contradicted() {
        // Differences −4, −5, −6: the CI [−7.5, −2.5] lies below the paper's +3 and below 0.
        let a = row("dp-zopo", &[(1, 76.0), (2, 75.0), (3, 74.0)]);
        let b = row("dpzero", &[(1, 80.0), (2, 80.0), (3, 80.0)]);
        assert_eq!(run(Some(3.0), &a, &b).verdict, Verdict::Contradicted);
        assert_eq!(run(Some(-3.0), &b, &a).verdict, Verdict::Contradicted);
    }

    #[test]
    fn paper_no_effect_branch_both_ways() {
        // Paper +0.3 (inside ±1). Ours: differences 2.0, 2.2, 2.4 → CI [1.70, 2.70], outside ±1.
        let b = row("dpzero", &[(1, 80.0), (2, 80.0), (3, 80.0)]);
        let far = row("dp-zopo", &[(1, 82.0), (2, 82.2), (3, 82.4)]);
        let c = run(Some(0.3), &far, &b);
        assert_eq!(c.verdict, Verdict::Contradicted);
        // Same sign as the paper: never called a sign difference.
        assert!(!c.why.contains("sign"), "{}", c.why);
        // Differences 0.4, 0.5, 0.6 → CI [0.25, 0.75], inside ±1.
        let near = row("dp-zopo", &[(1, 80.4), (2, 80.5), (3, 80.6)]);
        let c = run(Some(0.3), &near, &b);
        assert_eq!(c.verdict, Verdict::Reproduced);
        // Its CI [0.25, 0.75] also excludes 0: the words say so.
        assert!(
            c.why.contains("excludes 0") && c.why.contains("above 0"),
            "{}",
            c.why
        );
        // Differences −0.2, 0, +0.2 → a CI around 0: no such remark.
        let null = row("dp-zopo", &[(1, 79.8), (2, 80.0), (3, 80.2)]);
        let c = run(Some(0.3), &null, &b);
        assert_eq!(c.verdict, Verdict::Reproduced);
        assert!(!c.why.contains("excludes 0"), "{}", c.why);
    }

    #[test]
    fn too_few_paired_seeds_or_a_missing_side_is_not_testable() {
        // Seeds 1, 2 vs 2, 3: only seed 2 is paired.
        let a = row("dp-zopo", &[(1, 90.0), (2, 85.0)]);
        let b = row("dpzero", &[(2, 80.0), (3, 70.0)]);
        let c = run(Some(3.0), &a, &b);
        assert_eq!((c.n_seeds, c.verdict), (1, Verdict::NotTestable));
        assert_eq!(c.ours_delta, Some(5.0));
        assert!(c.ci.is_none() && c.why.contains("at least 2"), "{}", c.why);
        let c = test_claim(
            "dp-zopo - dpzero".into(),
            "SST-2",
            "2".into(),
            Some(3.0),
            (Some(&a), None),
            ("dp-zopo", "dpzero"),
            1.0,
        );
        assert_eq!(c.verdict, Verdict::NotTestable);
        assert_eq!(c.why, "dpzero not run");
        // Enough seeds but no paper value.
        let full = row("dpzero", &[(1, 80.0), (2, 80.0)]);
        let c = run(None, &a, &full);
        assert_eq!((c.n_seeds, c.verdict), (2, Verdict::NotTestable));
    }

    #[test]
    fn verdict_rule_edges() {
        // |p| > tol, CI touching 0 from above is not yet reproduced.
        assert_eq!(verdict(3.0, 0.0, 5.0, 1.0), Verdict::Inconclusive);
        assert_eq!(verdict(3.0, 0.0, 2.9, 1.0), Verdict::Contradicted);
        assert_eq!(verdict(3.0, 0.1, 2.9, 1.0), Verdict::Reproduced);
        // |p| ≤ tol: a CI touching −tol meets the band.
        assert_eq!(verdict(0.5, -3.0, -1.0, 1.0), Verdict::Reproduced);
        assert_eq!(verdict(0.5, -3.0, -1.01, 1.0), Verdict::Contradicted);
    }
}
