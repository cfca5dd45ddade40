//! Privacy–utility bars per task (SVG): ours as bars with ±s.d., the paper's value as a tick.

use super::compare::PaperRow;
use super::summary::SummaryRow;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 8] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// One panel per task; within a panel, one group of bars per epsilon, one bar per method.
pub fn privacy_utility_bars(
    rows: &[SummaryRow],
    paper: &[(String, String, Option<f64>, f64)],
    title: &str,
    path: &Path,
) -> Result<()> {
    let mut tasks: Vec<&str> = rows.iter().map(|r| r.task.as_str()).collect();
    tasks.dedup();
    let mut methods: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
    methods.sort();
    methods.dedup();
    let mut eps: Vec<Option<f64>> = rows.iter().map(|r| r.epsilon).collect();
    eps.sort_by(|a, b| a.unwrap_or(0.0).total_cmp(&b.unwrap_or(0.0)));
    eps.dedup();
    if tasks.is_empty() {
        return Err(anyhow!("nothing to plot"));
    }
    let width = 360 * tasks.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width.max(480), 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let root = root
            .titled(title, ("sans-serif", 18))
            .map_err(|e| anyhow!("{e}"))?;
        let panels = root.split_evenly((1, tasks.len()));
        let slots = eps.len() * (methods.len() + 1);
        for (pi, (panel, task)) in panels.iter().zip(&tasks).enumerate() {
            let mut chart = ChartBuilder::on(panel)
                .caption(*task, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(40)
                .build_cartesian_2d(0f64..slots as f64, 0f64..100f64)
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(eps.len())
                .x_label_formatter(&|x| {
                    let g = (*x / (methods.len() + 1) as f64).floor() as usize;
                    match eps.get(g) {
                        Some(Some(e)) => format!("ε={e}"),
                        Some(None) => "non-private".into(),
                        None => String::new(),
                    }
                })
                .y_desc("accuracy (%)")
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            for (gi, e) in eps.iter().enumerate() {
                for (mi, m) in methods.iter().enumerate() {
                    let x0 = (gi * (methods.len() + 1) + mi) as f64 + 0.1;
                    let color = COLORS[mi % COLORS.len()];
                    if let Some(r) = rows
                        .iter()
                        .find(|r| r.task == *task && r.method == *m && r.epsilon == *e)
                    {
                        chart
                            .draw_series(std::iter::once(Rectangle::new(
                                [(x0, 0.0), (x0 + 0.8, r.mean)],
                                color.filled(),
                            )))
                            .map_err(|e| anyhow!("{e}"))?
                            .label(*m)
                            .legend(move |(x, y)| {
                                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                            });
                        if let Some(sd) = r.sd {
                            let xc = x0 + 0.4;
                            chart
                                .draw_series(std::iter::once(PathElement::new(
                                    vec![(xc, r.mean - sd), (xc, r.mean + sd)],
                                    BLACK,
                                )))
                                .map_err(|e| anyhow!("{e}"))?;
                        }
                    }
                    if let Some((_, _, _, v)) = paper
                        .iter()
                        .find(|(t, pm, pe, _)| t == task && pm == m && pe == e)
                    {
                        chart
                            .draw_series(std::iter::once(PathElement::new(
                                vec![(x0 - 0.05, *v), (x0 + 0.85, *v)],
                                ShapeStyle::from(&BLACK).stroke_width(2),
                            )))
                            .map_err(|e| anyhow!("{e}"))?;
                    }
                }
            }
            if pi == 0 {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerLeft)
                    .background_style(WHITE.mix(0.8))
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    // Rendered in memory, then written in one atomic rename.
    atomic_file::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The paper's values as (task, method, epsilon, value), for the ticks.
pub fn paper_ticks(
    rows: &[PaperRow],
    model: &str,
    source: &str,
) -> Vec<(String, String, Option<f64>, f64)> {
    rows.iter()
        .filter(|r| r.model == model && r.source.starts_with(source))
        .map(|r| (r.task.clone(), r.method.clone(), r.epsilon, r.value))
        .collect()
}
