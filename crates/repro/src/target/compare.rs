//! Ours against the paper, cell by cell, and the paper's claims checked one by one: `comparison.md`.

use super::spec::{Meta, Preset};
use super::summary::SummaryRow;
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

/// A verdict on one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Reproduced,
    NotReproduced,
    NotTestable,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::NotTestable => "not testable at this preset",
        }
    }
}

/// A claim with its paper value, ours, the verdict and why.
#[derive(Debug, Clone)]
pub struct Claim {
    pub text: String,
    pub paper: String,
    pub ours: String,
    pub verdict: Verdict,
    pub reason: String,
}

struct Ctx<'a> {
    meta: &'a Meta,
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
    match r.sd {
        Some(sd) => format!("{:.1} ± {:.1} (n={})", r.mean, sd, r.n_seeds),
        None => format!("{:.1} (n=1)", r.mean),
    }
}

/// Evaluate the target's claims on our summary against the paper's numbers.
pub fn claims(meta: &Meta, paper_rows: &[PaperRow], ours: &[SummaryRow]) -> Vec<Claim> {
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
                    && r.epsilon == Some(e)
            })
            .map(|r| r.value)
    };
    let ctx = Ctx { meta, paper, ours };
    let mut out = Vec::new();
    let mut tasks: Vec<&str> = ours.iter().map(|r| r.task.as_str()).collect();
    tasks.dedup();
    let mut eps: Vec<f64> = ours.iter().filter_map(|r| r.epsilon).collect();
    eps.sort_by(f64::total_cmp);
    eps.dedup();

    // 1. DP-ZOPO − DPZero per task and epsilon (the abstract's headline deltas).
    for &e in &eps {
        for &task in &tasks {
            let p = ctx
                .paper_value(task, "dp-zopo", Some(e))
                .zip(ctx.paper_value(task, "dpzero", Some(e)))
                .map(|(a, b)| a - b)
                .or_else(|| published_delta(task, e));
            let o = ctx
                .ours(task, "dp-zopo", Some(e))
                .zip(ctx.ours(task, "dpzero", Some(e)))
                .map(|(a, b)| a.mean - b.mean);
            let tol = ctx.meta.tolerance_points;
            let (verdict, reason) = match (p, o) {
                (_, None) => (
                    Verdict::NotTestable,
                    "DP-ZOPO or DPZero not run".to_string(),
                ),
                (None, Some(_)) => (Verdict::NotTestable, "no paper value".to_string()),
                (Some(p), Some(o)) => {
                    // Same direction, or both within the tolerance of zero.
                    let agree = (p.abs() <= tol && o.abs() <= tol)
                        || (p > tol && o > 0.0)
                        || (p < -tol && o < 0.0);
                    if agree {
                        (
                            Verdict::Reproduced,
                            format!("same sign (tolerance {tol} points)"),
                        )
                    } else {
                        (
                            Verdict::NotReproduced,
                            format!("sign differs (tolerance {tol} points)"),
                        )
                    }
                }
            };
            out.push(Claim {
                text: format!("DP-ZOPO − DPZero at ε = {e}, {task}"),
                paper: p.map(|v| format!("{v:+.1}")).unwrap_or_else(|| "–".into()),
                ours: o.map(|v| format!("{v:+.1}")).unwrap_or_else(|| "–".into()),
                verdict,
                reason,
            });
        }
    }

    // 2. Accuracy rises with epsilon, per DP method (mean over tasks).
    let mut dp_methods: Vec<&str> = ours
        .iter()
        .filter(|r| r.epsilon.is_some())
        .map(|r| r.method.as_str())
        .collect();
    dp_methods.sort();
    dp_methods.dedup();
    for m in &dp_methods {
        let mean_at = |src: &dyn Fn(&str, f64) -> Option<f64>, e: f64| -> Option<f64> {
            let v: Option<Vec<f64>> = tasks.iter().map(|t| src(t, e)).collect();
            v.map(|v| v.iter().sum::<f64>() / v.len() as f64)
        };
        let ours_at = |t: &str, e: f64| ctx.ours(t, m, Some(e)).map(|r| r.mean);
        let paper_at = |t: &str, e: f64| ctx.paper_value(t, m, Some(e));
        let (Some(lo), Some(hi)) = (eps.first().copied(), eps.last().copied()) else {
            continue;
        };
        let o = mean_at(&ours_at, lo).zip(mean_at(&ours_at, hi));
        let p = mean_at(&paper_at, lo).zip(mean_at(&paper_at, hi));
        let (verdict, reason) = match o {
            None => (Verdict::NotTestable, "missing cells".to_string()),
            Some(_) if lo == hi => (Verdict::NotTestable, "one epsilon only".to_string()),
            Some((a, b)) if b >= a => (
                Verdict::Reproduced,
                format!("mean over tasks, ε = {lo} → {hi}"),
            ),
            Some(_) => (
                Verdict::NotReproduced,
                format!("mean over tasks falls from ε = {lo} to {hi}"),
            ),
        };
        out.push(Claim {
            text: format!("{m}: accuracy rises with ε"),
            paper: p
                .map(|(a, b)| format!("{a:.1} → {b:.1}"))
                .unwrap_or_else(|| "–".into()),
            ours: o
                .map(|(a, b)| format!("{a:.1} → {b:.1}"))
                .unwrap_or_else(|| "–".into()),
            verdict,
            reason,
        });
    }

    // 3. DP-ZOPO ≥ DPZero on average over every (task, ε) both ran.
    let pairs: Vec<(f64, Option<f64>)> = tasks
        .iter()
        .flat_map(|t| eps.iter().map(move |e| (*t, *e)))
        .filter_map(|(t, e)| {
            let o = ctx.ours(t, "dp-zopo", Some(e))?.mean - ctx.ours(t, "dpzero", Some(e))?.mean;
            let p =
                ctx.paper_value(t, "dp-zopo", Some(e))
                    .zip(ctx.paper_value(t, "dpzero", Some(e)));
            Some((o, p.map(|(a, b)| a - b)))
        })
        .collect();
    if pairs.is_empty() {
        out.push(Claim {
            text: "DP-ZOPO ≥ DPZero (mean over tasks and ε)".into(),
            paper: "–".into(),
            ours: "–".into(),
            verdict: Verdict::NotTestable,
            reason: "DP-ZOPO or DPZero not run".into(),
        });
    } else {
        let o = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.len() as f64;
        let pv: Vec<f64> = pairs.iter().filter_map(|p| p.1).collect();
        let p = (!pv.is_empty()).then(|| pv.iter().sum::<f64>() / pv.len() as f64);
        out.push(Claim {
            text: "DP-ZOPO ≥ DPZero (mean over tasks and ε)".into(),
            paper: p.map(|v| format!("{v:+.1}")).unwrap_or_else(|| "–".into()),
            ours: format!("{o:+.1} over {} cells", pairs.len()),
            verdict: if o >= 0.0 {
                Verdict::Reproduced
            } else {
                Verdict::NotReproduced
            },
            reason: "sign of the mean difference".into(),
        });
    }

    // 4. Every DP method beats zero-shot (mean over tasks and ε).
    for m in &dp_methods {
        let diffs: Vec<f64> = tasks
            .iter()
            .filter_map(|t| {
                let z = ctx.ours(t, "zero-shot", None)?.mean;
                let v: Vec<f64> = eps
                    .iter()
                    .filter_map(|e| ctx.ours(t, m, Some(*e)).map(|r| r.mean))
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64 - z)
            })
            .collect();
        // A gain inside the cell tolerance is not evidence of beating zero-shot.
        let tol = ctx.meta.tolerance_points;
        let (verdict, ours_s) = if diffs.is_empty() {
            (Verdict::NotTestable, "–".to_string())
        } else {
            let d = diffs.iter().sum::<f64>() / diffs.len() as f64;
            (
                if d > tol {
                    Verdict::Reproduced
                } else {
                    Verdict::NotReproduced
                },
                format!("{d:+.1}"),
            )
        };
        out.push(Claim {
            text: format!("{m} beats zero-shot (mean gain over tasks)"),
            paper: "yes".into(),
            ours: ours_s,
            verdict,
            reason: format!(
                "mean over tasks of (method averaged over ε) − zero-shot, must exceed {tol} points"
            ),
        });
    }

    // 5. Memory: not measured by accuracy targets.
    out.push(Claim {
        text: "DP-ZOSO/ZOPO memory = inference memory".into(),
        paper: "yes (OPT-1.3B/2.7B, memory figure)".into(),
        ours: "see results/perf/ and `repro memory`".into(),
        verdict: Verdict::NotTestable,
        reason: "an accuracy target does not measure memory".into(),
    });
    out
}

/// Render `comparison.md`.
pub fn render(
    meta: &Meta,
    preset_name: &str,
    preset: &Preset,
    model_run: &str,
    paper_rows: &[PaperRow],
    ours: &[SummaryRow],
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
        "Paper numbers: `{}`, rows whose source starts with `{}` (model `{}`). Secondary anchors (DPZero, MeZO) are shown where they exist. Ours: mean ± sample s.d. over seeds of the final-iterate test accuracy (%), model `{model_run}`.\n",
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
    let _ = writeln!(s, "| claim | paper | ours | verdict | why |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for c in claims(meta, paper_rows, ours) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            c.text,
            c.paper,
            c.ours,
            c.verdict.label(),
            c.reason
        );
    }
    s
}
