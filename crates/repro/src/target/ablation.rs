//! `repro ablations`: every variant of `experiments/ablations.toml` against the grid method it is
//! compared with ([`super::spec::Variant::compare_to`], default its base), paired by seed and by
//! test example with the 95% CI of [`super::stats`] (the interval the paper claims get). Written
//! beside `summary.csv`: `ablations.csv`, `ablations.md` and `ablations.svg` (accuracy with CI
//! error bars per method, one panel per task); with horizon variants (`steps_scale`) also
//! `horizon.csv` and `horizon.svg` (test and dev accuracy against T, 95% CIs over seeds).

use super::compare::{test_claim, Claim};
use super::record::CellRecord;
use super::spec::Spec;
use super::summary::SummaryRow;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
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

/// Mean and 95% t-interval (over seeds) of one accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    /// `None` with one seed.
    pub ci95: Option<(f64, f64)>,
}

fn estimate(xs: &[f64]) -> Option<Estimate> {
    if xs.is_empty() {
        return None;
    }
    Some(Estimate {
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
        ci95: super::summary::t_interval95(xs),
    })
}

/// One point of a horizon curve: a method family (the base of its horizon variants) at one T.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonPoint {
    pub task: String,
    pub epsilon: Option<f64>,
    /// The base method (`dpzero`, `dp-zoso`, `dp-ft`).
    pub family: String,
    /// The grid method at this T (the base or one of its horizon variants).
    pub method: String,
    pub steps: i64,
    pub n_seeds: usize,
    pub test: Estimate,
    /// `None` when the records have no dev accuracy.
    pub dev: Option<Estimate>,
}

/// The horizon curves of `methods`: every variant with `steps_scale` and its base, per (task, ε),
/// with T read from each record's configuration, the final test and dev accuracy averaged over
/// seeds with 95% t-intervals. Empty when the grid has no horizon variant.
pub fn horizon(spec: &Spec, methods: &[String], records: &[CellRecord]) -> Vec<HorizonPoint> {
    let family = |m: &str| -> Option<String> {
        if let Some(v) = spec.variant.get(m) {
            return v.steps_scale.map(|_| v.base.clone());
        }
        methods
            .iter()
            .filter_map(|n| spec.variant.get(n))
            .any(|v| v.steps_scale.is_some() && v.base == m)
            .then(|| m.to_string())
    };
    let mut groups: BTreeMap<(String, Option<u64>, String), Vec<&CellRecord>> = BTreeMap::new();
    for r in records {
        if methods.contains(&r.method) && family(&r.method).is_some() {
            groups
                .entry((
                    r.task.clone(),
                    r.epsilon.map(f64::to_bits),
                    r.method.clone(),
                ))
                .or_default()
                .push(r);
        }
    }
    let mut out = Vec::new();
    for ((task, eps, method), rs) in groups {
        let steps: Vec<i64> = rs
            .iter()
            .filter_map(|r| r.config.get("steps").and_then(serde_json::Value::as_i64))
            .collect();
        let (Some(&t), Some(family)) = (steps.first(), family(&method)) else {
            continue;
        };
        if steps.len() != rs.len() || steps.iter().any(|&s| s != t) {
            continue;
        }
        let test: Vec<f64> = rs.iter().map(|r| r.test_accuracy).collect();
        let dev: Vec<f64> = rs.iter().filter_map(|r| r.dev_accuracy).collect();
        out.push(HorizonPoint {
            task,
            epsilon: eps.map(f64::from_bits),
            family,
            method,
            steps: t,
            n_seeds: rs.len(),
            test: estimate(&test).expect("a group has a record"),
            dev: (dev.len() == rs.len()).then(|| estimate(&dev)).flatten(),
        });
    }
    out.sort_by(|a, b| {
        (&a.task, a.epsilon.map(f64::to_bits), &a.family, a.steps).cmp(&(
            &b.task,
            b.epsilon.map(f64::to_bits),
            &b.family,
            b.steps,
        ))
    });
    out
}

/// `horizon.csv`: one row per (task, ε, family, T).
pub fn write_horizon_csv(points: &[HorizonPoint], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "task",
        "epsilon",
        "family",
        "method",
        "steps",
        "n_seeds",
        "test_mean",
        "test_ci_low",
        "test_ci_high",
        "dev_mean",
        "dev_ci_low",
        "dev_ci_high",
    ])?;
    for p in points {
        w.write_record([
            p.task.clone(),
            eps_label(p.epsilon),
            p.family.clone(),
            p.method.clone(),
            p.steps.to_string(),
            p.n_seeds.to_string(),
            fmt(Some(p.test.mean)),
            fmt(p.test.ci95.map(|c| c.0)),
            fmt(p.test.ci95.map(|c| c.1)),
            fmt(p.dev.map(|d| d.mean)),
            fmt(p.dev.and_then(|d| d.ci95).map(|c| c.0)),
            fmt(p.dev.and_then(|d| d.ci95).map(|c| c.1)),
        ])?;
    }
    atomic_file::write(path, w.into_inner()?).with_context(|| format!("writing {}", path.display()))
}

/// `horizon.svg`: per (task, ε) a panel with T on a log2 axis; per family the test accuracy
/// (filled markers, solid line) and the dev accuracy (hollow markers, thin line), each with its
/// 95% CI over seeds as a bar.
pub fn plot_horizon(points: &[HorizonPoint], title: &str, path: &Path) -> Result<()> {
    let mut panels: Vec<(String, Option<f64>)> = Vec::new();
    for p in points {
        if !panels
            .iter()
            .any(|(t, e)| *t == p.task && same_eps(*e, p.epsilon))
        {
            panels.push((p.task.clone(), p.epsilon));
        }
    }
    if panels.is_empty() {
        return Err(anyhow!("no horizon point to plot"));
    }
    let mut families: Vec<&str> = points.iter().map(|p| p.family.as_str()).collect();
    families.sort();
    families.dedup();
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
    ];
    let log2 = |t: i64| (t.max(1) as f64).log2();
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(log2(p.steps)), b.max(log2(p.steps)))
        });
    let (lo, hi) = (lo - 0.5, hi + 0.5);
    let mut svg = String::new();
    {
        let height = 340 * panels.len() as u32 + 60;
        let root = SVGBackend::with_string(&mut svg, (640, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 16))?;
        for (area, (task, eps)) in root.split_evenly((panels.len(), 1)).iter().zip(&panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{task}, ε = {}", eps_label(*eps)),
                    ("sans-serif", 14),
                )
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(45)
                .build_cartesian_2d(lo..hi, 0f64..100f64)?;
            chart
                .configure_mesh()
                .x_desc("T (steps, log scale)")
                .y_desc("accuracy (%)")
                .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
                .draw()?;
            for (i, family) in families.iter().enumerate() {
                let color = colors[i % colors.len()];
                let mine: Vec<&HorizonPoint> = points
                    .iter()
                    .filter(|p| p.task == *task && same_eps(p.epsilon, *eps) && p.family == *family)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let series = |pick: &dyn Fn(&HorizonPoint) -> Option<Estimate>| {
                    mine.iter()
                        .filter_map(|p| pick(p).map(|e| (log2(p.steps), e)))
                        .collect::<Vec<_>>()
                };
                for (dev, values) in [
                    (false, series(&|p| Some(p.test))),
                    (true, series(&|p| p.dev)),
                ] {
                    let width = if dev { 1 } else { 2 };
                    let label = format!("{family} {}", if dev { "dev" } else { "test" });
                    chart
                        .draw_series(LineSeries::new(
                            values.iter().map(|(x, e)| (*x, e.mean)),
                            color.stroke_width(width),
                        ))?
                        .label(label)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width))
                        });
                    for (x, e) in &values {
                        if let Some((l, h)) = e.ci95 {
                            chart.draw_series(std::iter::once(PathElement::new(
                                vec![(*x, l.max(0.0)), (*x, h.min(100.0))],
                                color.stroke_width(1),
                            )))?;
                        }
                        let style = if dev {
                            color.stroke_width(1)
                        } else {
                            color.filled()
                        };
                        chart.draw_series(std::iter::once(Circle::new((*x, e.mean), 4, style)))?;
                    }
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()?;
        }
        root.present()?;
    }
    atomic_file::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(method: &str, seed: u64, steps: i64, test: f64, dev: Option<f64>) -> CellRecord {
        serde_json::from_value(serde_json::json!({
            "target": "ablations", "preset": "mini-horizon", "task": "SST-2", "method": method,
            "epsilon": 4.0, "seed": seed, "model": "m", "spec_hash": "h",
            "config": { "steps": steps },
            "provenance": { "git_commit": null, "git_dirty": null, "device": "cpu",
                            "libtorch": null, "date": null, "host": null, "repro_version": null },
            "test_accuracy": test, "dev_accuracy": dev, "data": "real", "wall_secs": 0.0,
            "trainer": {}
        }))
        .unwrap()
    }

    /// The horizon curves group the committed mini-horizon variants with their bases by T, with
    /// the t-interval of the mean (t(0.975, 2) = 4.302652729911275, a table value); methods
    /// without horizon variants are left out, and dev is absent where a record lacks it.
    #[test]
    fn horizon_points_are_the_bases_and_their_variants_by_t() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let spec = Spec::load(&root.join("experiments/ablations.toml")).unwrap();
        let methods = methods_of(&spec, "mini-horizon").unwrap();
        let mut records = Vec::new();
        for (seed, test, dev) in [(13, 80.0, 70.0), (21, 82.0, 72.0), (42, 84.0, 77.0)] {
            records.push(record("dpzero", seed, 1200, test, Some(dev)));
            records.push(record("dpzero-t600", seed, 600, test - 5.0, Some(dev)));
        }
        records.push(record("dpft-t150", 13, 150, 60.0, None));
        records.push(record("dp-zopo", 13, 1200, 90.0, Some(90.0)));
        let points = horizon(&spec, methods, &records);
        let got: Vec<(&str, &str, i64)> = points
            .iter()
            .map(|p| (p.family.as_str(), p.method.as_str(), p.steps))
            .collect();
        assert_eq!(
            got,
            [
                ("dp-ft", "dpft-t150", 150),
                ("dpzero", "dpzero-t600", 600),
                ("dpzero", "dpzero", 1200)
            ]
        );
        let base = &points[2];
        assert_eq!(base.n_seeds, 3);
        assert!((base.test.mean - 82.0).abs() < 1e-12);
        let half = 4.302652729911275 * 2.0 / 3f64.sqrt();
        let (lo, hi) = base.test.ci95.unwrap();
        assert!((lo - (82.0 - half)).abs() < 1e-9 && (hi - (82.0 + half)).abs() < 1e-9);
        let dev = base.dev.unwrap();
        assert!((dev.mean - 73.0).abs() < 1e-12);
        // One seed: no interval; no dev accuracy: no dev point.
        assert_eq!(points[0].test.ci95, None);
        assert_eq!(points[0].dev, None);
        let dir = std::env::temp_dir().join(format!("dpzo-horizon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_horizon_csv(&points, &dir.join("horizon.csv")).unwrap();
        let csv = std::fs::read_to_string(dir.join("horizon.csv")).unwrap();
        assert!(csv.contains("SST-2,4,dpzero,dpzero,1200,3,82.00,"), "{csv}");
        plot_horizon(&points, "t", &dir.join("horizon.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("horizon.svg")).unwrap();
        assert!(svg.contains("T (steps, log scale)") && svg.contains("dpzero dev"));
        let _ = std::fs::remove_dir_all(&dir);
        // The smoke and mini grids have no horizon variant: nothing to draw.
        let mini = methods_of(&spec, "mini").unwrap();
        assert!(horizon(&spec, mini, &records).is_empty());
    }
}
