//! `repro ablations`: every variant of `experiments/ablations.toml` against the grid method it is
//! compared with ([`super::spec::Variant::compare_to`], default its base), paired by seed and by
//! test example with the 95% CI of [`super::stats`] (the interval the paper claims get). Written
//! beside `summary.csv`: `ablations.csv`, `ablations.md` and `ablations.svg` (accuracy with CI
//! error bars per method, one panel per task).

use super::compare::{test_claim, Claim};
use super::spec::Spec;
use super::summary::SummaryRow;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;

/// One variant's difference from its reference in one (task, ε) cell.
#[derive(Debug, Clone)]
pub struct AblationRow {
    pub variant: String,
    pub reference: String,
    pub description: String,
    pub claim: Claim,
}

fn same_eps(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        (None, None) => true,
        _ => false,
    }
}

fn eps_label(e: Option<f64>) -> String {
    e.map_or("non-private".into(), |e| e.to_string())
}

/// The methods of `preset_name`'s grid, in order (the preset's list, else the spec's).
pub fn methods_of<'a>(spec: &'a Spec, preset_name: &str) -> Result<&'a [String]> {
    let preset = spec.preset(preset_name)?;
    Ok(preset.methods.as_ref().unwrap_or(&spec.grid.methods))
}

/// The comparisons, in the order of `methods` (the preset's grid). A non-private variant (MeZO,
/// sigma = 0) against a private reference is compared at each of the reference's ε; a private
/// variant against a non-private reference at its own ε.
pub fn comparisons(spec: &Spec, methods: &[String], rows: &[SummaryRow]) -> Vec<AblationRow> {
    let mut tasks: Vec<&str> = rows.iter().map(|r| r.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    let mut out = Vec::new();
    for name in methods {
        let Some(variant) = spec.variant.get(name) else {
            continue;
        };
        let reference = variant.compare_to.as_deref().unwrap_or(&variant.base);
        for &task in &tasks {
            let ours: Vec<&SummaryRow> = rows
                .iter()
                .filter(|r| r.task == task && &r.method == name)
                .collect();
            let theirs: Vec<&SummaryRow> = rows
                .iter()
                .filter(|r| r.task == task && r.method == reference)
                .collect();
            let mut pairs: Vec<(Option<&SummaryRow>, Option<&SummaryRow>, Option<f64>)> =
                Vec::new();
            for a in &ours {
                let exact: Vec<&SummaryRow> = theirs
                    .iter()
                    .copied()
                    .filter(|b| same_eps(a.epsilon, b.epsilon))
                    .collect();
                let matched: Vec<&SummaryRow> = match (exact.is_empty(), a.epsilon) {
                    (false, _) => exact,
                    // Non-private variant: against each ε of the reference.
                    (true, None) => theirs.clone(),
                    // Private variant: against a non-private reference.
                    (true, Some(_)) => theirs
                        .iter()
                        .copied()
                        .filter(|b| b.epsilon.is_none())
                        .collect(),
                };
                if matched.is_empty() {
                    pairs.push((Some(a), None, a.epsilon));
                }
                for b in matched {
                    pairs.push((Some(a), Some(b), b.epsilon.or(a.epsilon)));
                }
            }
            if ours.is_empty() && !theirs.is_empty() {
                pairs.push((None, Some(theirs[0]), theirs[0].epsilon));
            }
            for (a, b, e) in pairs {
                let mut claim = test_claim(
                    format!("{name} - {reference}"),
                    task,
                    eps_label(e),
                    None,
                    (a, b),
                    (name, reference),
                    spec.meta.tolerance_points,
                );
                // Ablations have no paper value by design: keep only the CI's description.
                if let Some(rest) = claim
                    .why
                    .strip_prefix("no paper value for this difference; ")
                {
                    claim.why = rest.to_string();
                }
                out.push(AblationRow {
                    variant: name.clone(),
                    reference: reference.to_string(),
                    description: variant.description.clone(),
                    claim,
                });
            }
        }
    }
    out
}

fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_default()
}

/// `ablations.csv`.
pub fn write_csv(rows: &[AblationRow], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "variant",
        "reference",
        "task",
        "epsilon",
        "delta",
        "ci_low",
        "ci_high",
        "n_seeds",
        "note",
        "description",
    ])?;
    for r in rows {
        let c = &r.claim;
        w.write_record([
            r.variant.clone(),
            r.reference.clone(),
            c.task.clone(),
            c.epsilon.clone(),
            fmt(c.ours_delta),
            fmt(c.ci.map(|x| x.0)),
            fmt(c.ci.map(|x| x.1)),
            c.n_seeds.to_string(),
            c.why.clone(),
            r.description.clone(),
        ])?;
    }
    atomic_file::write(path, w.into_inner()?)?;
    Ok(())
}

/// `ablations.md`: the same rows in words.
pub fn render_markdown(spec: &Spec, preset_name: &str, rows: &[AblationRow]) -> String {
    let mut md = format!("# {} — preset {preset_name}\n\n", spec.meta.title);
    md.push_str(
        "Each row: the variant's final test accuracy minus its reference's (points), paired by \
         seed and test example, with a 95% CI over seeds and test examples (`target/stats.rs`). \
         A CI that excludes 0 is an effect of the ablated ingredient at this size; one that \
         covers 0 is no evidence either way.\n\n",
    );
    md.push_str("| variant | reference | task | ε | Δ (points) | 95% CI | n | what it isolates |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let c = &r.claim;
        let ci =
            c.ci.map(|(lo, hi)| format!("[{lo:+.1}, {hi:+.1}]"))
                .unwrap_or_else(|| c.why.clone());
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {ci} | {} | {} |\n",
            r.variant,
            r.reference,
            c.task,
            c.epsilon,
            c.ours_delta
                .map(|d| format!("{d:+.1}"))
                .unwrap_or_else(|| "—".into()),
            c.n_seeds,
            r.description.replace('|', "\\|")
        ));
    }
    md
}

/// `ablations.svg`: per task, the mean test accuracy of every method and variant in the order of
/// `methods` (private cells at each ε, labelled), with its 95% CI (summary.csv's t-interval) as
/// an error bar.
pub fn plot(
    spec: &Spec,
    methods: &[String],
    rows: &[SummaryRow],
    title: &str,
    path: &Path,
) -> Result<()> {
    let mut tasks: Vec<&str> = rows.iter().map(|r| r.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    if tasks.is_empty() {
        return Err(anyhow!("nothing to plot"));
    }
    // Columns: grid methods in order, each at its ε values.
    let mut columns: Vec<(String, Option<f64>)> = Vec::new();
    for m in methods {
        let mut eps: Vec<Option<f64>> = rows
            .iter()
            .filter(|r| &r.method == m)
            .map(|r| r.epsilon)
            .collect();
        eps.sort_by(|a, b| a.unwrap_or(0.0).total_cmp(&b.unwrap_or(0.0)));
        eps.dedup_by(|a, b| same_eps(*a, *b));
        columns.extend(eps.into_iter().map(|e| (m.clone(), e)));
    }
    let label = |(m, e): &(String, Option<f64>)| match e {
        Some(e) => format!("{m} ε={e}"),
        None => m.clone(),
    };
    let width = (34 * columns.len() as u32 + 120).max(480);
    let height = 300 * tasks.len() as u32 + 160;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 18))?;
        let panels = root.split_evenly((tasks.len(), 1));
        let n = columns.len();
        for (panel, task) in panels.iter().zip(&tasks) {
            let mut chart = ChartBuilder::on(panel)
                .caption(*task, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(150)
                .y_label_area_size(45)
                .build_cartesian_2d((0..n).into_segmented(), 0f64..100f64)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_style(
                    ("sans-serif", 11)
                        .into_font()
                        .transform(FontTransform::Rotate90),
                )
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) => columns.get(*i).map(label).unwrap_or_default(),
                    _ => String::new(),
                })
                .y_desc("test accuracy (%)")
                .draw()?;
            for (i, (m, e)) in columns.iter().enumerate() {
                let Some(r) = rows
                    .iter()
                    .find(|r| r.task == *task && &r.method == m && same_eps(r.epsilon, *e))
                else {
                    continue;
                };
                let color = if spec.variant.contains_key(m) {
                    RGBColor(214, 39, 40)
                } else {
                    RGBColor(31, 119, 180)
                };
                let x = SegmentValue::CenterOf(i);
                if let Some((lo, hi)) = r.ci95 {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x.clone(), lo.max(0.0)), (x.clone(), hi.min(100.0))],
                        color.stroke_width(2),
                    )))?;
                }
                chart.draw_series(std::iter::once(Circle::new((x, r.mean), 4, color.filled())))?;
            }
        }
        root.present()?;
    }
    atomic_file::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
