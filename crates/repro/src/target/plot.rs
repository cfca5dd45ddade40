//! Privacy–utility figure (SVG): one panel per task; in each, the private methods' final test
//! accuracy per ε as points with 95% CI bars (over seeds), the paper's values as hollow markers, and
//! the non-private methods (zero-shot, …) as horizontal lines. The legend has its own strip below
//! the panels, so it never covers data.

use super::compare::PaperRow;
use super::summary::SummaryRow;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;

pub(super) const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const PANEL_W: u32 = 420;
const PANEL_H: u32 = 320;
const LEGEND_ROW_H: u32 = 22;

/// A paper value: (task, method, ε, accuracy).
pub type PaperPoint = (String, String, Option<f64>, f64);

/// What the figure shows and says about itself.
pub struct Figure<'a> {
    pub rows: &'a [SummaryRow],
    pub paper: &'a [PaperPoint],
    /// The model our rows ran (named in the title).
    pub model_run: &'a str,
    /// The paper's model (named beside its markers).
    pub paper_model: &'a str,
    pub title: String,
}

/// Horizontal place of method `mi` of `n` within the ε group at `g`.
fn x_of(g: usize, mi: usize, n: usize) -> f64 {
    let width = 0.7 / n.max(1) as f64;
    g as f64 + (mi as f64 - (n as f64 - 1.0) / 2.0) * width
}

/// Renders `fig` to `path` (written atomically).
pub fn privacy_utility(fig: &Figure, path: &Path) -> Result<()> {
    let rows = fig.rows;
    let mut tasks: Vec<&str> = Vec::new();
    for r in rows {
        if !tasks.contains(&r.task.as_str()) {
            tasks.push(&r.task);
        }
    }
    if tasks.is_empty() {
        return Err(anyhow!("plot: nothing to plot"));
    }
    let mut private: Vec<&str> = Vec::new();
    let mut nonprivate: Vec<&str> = Vec::new();
    for r in rows {
        let list = if r.epsilon.is_some() {
            &mut private
        } else {
            &mut nonprivate
        };
        if !list.contains(&r.method.as_str()) {
            list.push(&r.method);
        }
    }
    private.sort();
    nonprivate.sort();
    let methods: Vec<&str> = private.iter().chain(&nonprivate).copied().collect();
    let color = |m: &str| COLORS[methods.iter().position(|x| *x == m).unwrap_or(0) % COLORS.len()];
    let mut eps: Vec<f64> = rows.iter().filter_map(|r| r.epsilon).collect();
    eps.sort_by(f64::total_cmp);
    eps.dedup();
    let groups = eps.len().max(1);

    let cols = tasks.len().min(3);
    let panel_rows = tasks.len().div_ceil(cols);
    let legend_label = |m: &str| {
        if nonprivate.contains(&m) {
            format!("{m} (non-private)")
        } else {
            m.to_string()
        }
    };
    let width = (PANEL_W * cols as u32).max(640);
    // As many legend columns (up to 4) as the longest label lets fit: about 7 px a character at
    // 13 px, plus the swatch.
    let longest = methods
        .iter()
        .map(|m| legend_label(m).chars().count())
        .max();
    let legend_cols = (width as usize / (longest.unwrap_or(0) * 7 + 30)).clamp(1, 4);
    let legend_rows = methods.len().div_ceil(legend_cols) + 2;
    let size = (
        width,
        40 + PANEL_H * panel_rows as u32 + LEGEND_ROW_H * legend_rows as u32 + 10,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&fig.title, ("sans-serif", 17))?;
        let (panels_area, legend_area) = root.split_vertically(PANEL_H * panel_rows as u32);
        let panels = panels_area.split_evenly((panel_rows, cols));
        for (panel, task) in panels.iter().zip(&tasks) {
            let ours: Vec<&SummaryRow> = rows.iter().filter(|r| r.task == *task).collect();
            let theirs: Vec<&PaperPoint> = fig
                .paper
                .iter()
                .filter(|p| p.0 == *task && methods.contains(&p.1.as_str()))
                .filter(|p| p.2.is_none() || eps.iter().any(|e| Some(*e) == p.2))
                .collect();
            // The y range covers every mean, CI end and paper value of the panel.
            let mut values: Vec<f64> = theirs.iter().map(|p| p.3).collect();
            for r in &ours {
                values.push(r.mean);
                if let Some((lo, hi)) = r.ci95 {
                    values.extend([lo, hi]);
                }
            }
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let (y0, y1) = ((lo - 3.0).floor().max(0.0), (hi + 3.0).ceil().min(100.0));
            let mut chart = ChartBuilder::on(panel)
                .caption(*task, ("sans-serif", 15))
                .margin(10)
                .x_label_area_size(28)
                .y_label_area_size(44)
                .build_cartesian_2d(-0.5f64..(groups as f64 - 0.5), y0..y1.max(y0 + 1.0))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(groups)
                .x_label_formatter(&|x| {
                    let g = x.round();
                    match eps.get(g as usize) {
                        Some(e) if (x - g).abs() < 1e-9 && g >= 0.0 => format!("ε = {e}"),
                        _ => String::new(),
                    }
                })
                .y_label_formatter(&|y| format!("{y:.0}"))
                .light_line_style(WHITE)
                .y_desc("test accuracy (%)")
                .draw()?;
            // Non-private methods: ours solid, the paper's dotted, across the panel.
            for m in &nonprivate {
                let c = color(m);
                if let Some(r) = ours.iter().find(|r| r.method == *m) {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(-0.5, r.mean), (groups as f64 - 0.5, r.mean)],
                        c.stroke_width(2),
                    )))?;
                }
                if let Some(p) = theirs.iter().find(|p| p.1 == *m && p.2.is_none()) {
                    // Dashed: 20 dashes per ε group.
                    let dash = 1.0 / 40.0;
                    let dashes = (0..20 * groups).map(|i| {
                        let x = i as f64 * 2.0 * dash - 0.5;
                        PathElement::new(vec![(x, p.3), (x + dash, p.3)], c.stroke_width(2))
                    });
                    chart.draw_series(dashes)?;
                }
            }
            // Private methods: points with 95% CI bars; the paper's values hollow diamonds.
            for (mi, m) in private.iter().enumerate() {
                let c = color(m);
                for (g, e) in eps.iter().enumerate() {
                    let x = x_of(g, mi, private.len());
                    if let Some(r) = ours
                        .iter()
                        .find(|r| r.method == *m && r.epsilon == Some(*e))
                    {
                        if let Some((lo, hi)) = r.ci95 {
                            let cap = 0.025;
                            chart.draw_series([
                                PathElement::new(vec![(x, lo), (x, hi)], c.stroke_width(2)),
                                PathElement::new(
                                    vec![(x - cap, lo), (x + cap, lo)],
                                    c.stroke_width(1),
                                ),
                                PathElement::new(
                                    vec![(x - cap, hi), (x + cap, hi)],
                                    c.stroke_width(1),
                                ),
                            ])?;
                        }
                        chart.draw_series(std::iter::once(Circle::new(
                            (x, r.mean),
                            4,
                            c.filled(),
                        )))?;
                    }
                    if let Some(p) = theirs.iter().find(|p| p.1 == *m && p.2 == Some(*e)) {
                        chart.draw_series(std::iter::once(TriangleMarker::new(
                            (x, p.3),
                            6,
                            c.stroke_width(2),
                        )))?;
                    }
                }
            }
        }
        // The legend strip: one swatch per method, then what the marks mean.
        let font = ("sans-serif", 13).into_font();
        let col_w = size.0 as i32 / legend_cols as i32;
        for (i, m) in methods.iter().enumerate() {
            let (x, y) = (
                10 + col_w * (i % legend_cols) as i32,
                8 + LEGEND_ROW_H as i32 * (i / legend_cols) as i32,
            );
            let c = color(m);
            if nonprivate.contains(m) {
                legend_area.draw(&PathElement::new(
                    vec![(x - 4, y + 7), (x + 12, y + 7)],
                    c.stroke_width(2),
                ))?;
            } else {
                legend_area.draw(&Circle::new((x + 4, y + 7), 4, c.filled()))?;
            }
            legend_area.draw(&Text::new(legend_label(m), (x + 18, y), font.clone()))?;
        }
        let y = 8 + LEGEND_ROW_H as i32 * methods.len().div_ceil(legend_cols) as i32;
        let notes = [
            format!(
                "● ours ({}): mean and 95% CI over seeds; non-private methods: solid lines",
                fig.model_run
            ),
            format!(
                "△ paper ({}), for reference; its non-private values: dashed lines{}",
                fig.paper_model,
                if fig.paper_model == fig.model_run {
                    ""
                } else {
                    " (another model: levels not comparable)"
                }
            ),
        ];
        for (i, note) in notes.into_iter().enumerate() {
            legend_area.draw(&Text::new(
                note,
                (10, y + LEGEND_ROW_H as i32 * i as i32),
                font.clone(),
            ))?;
        }
        root.present()?;
    }
    // Rendered in memory, then written in one atomic rename.
    atomic_file::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The paper's values as (task, method, epsilon, value), for the markers.
pub fn paper_points(rows: &[PaperRow], model: &str, source: &str) -> Vec<PaperPoint> {
    rows.iter()
        .filter(|r| r.model == model && r.source.starts_with(source))
        .map(|r| (r.task.clone(), r.method.clone(), r.epsilon, r.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: &str, method: &str, eps: Option<f64>, mean: f64) -> SummaryRow {
        SummaryRow {
            model: "smollm2-135m".into(),
            task: task.into(),
            method: method.into(),
            epsilon: eps,
            mean,
            sd: Some(1.0),
            n_seeds: 3,
            ci95: Some((mean - 2.0, mean + 2.0)),
            seeds: vec![13, 21, 42],
            accuracies: vec![mean; 3],
            outcomes: vec![None; 3],
            data: "real".into(),
        }
    }

    #[test]
    fn the_figure_names_the_model_run_and_labels_every_budget() {
        let rows = vec![
            row("SST-2", "dpzero", Some(2.0), 80.0),
            row("SST-2", "dpzero", Some(8.0), 83.0),
            row("SST-2", "dp-zopo", Some(2.0), 78.0),
            row("SST-2", "zero-shot", None, 51.6),
            row("MNLI", "dpzero", Some(2.0), 40.0),
        ];
        let paper = vec![("SST-2".to_string(), "dpzero".to_string(), Some(2.0), 92.0)];
        let dir = std::env::temp_dir().join(format!("dpzo-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        let fig = Figure {
            rows: &rows,
            paper: &paper,
            model_run: "smollm2-135m",
            paper_model: "roberta-large",
            title: "table2 mini: smollm2-135m".into(),
        };
        privacy_utility(&fig, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "smollm2-135m",
            "ε = 2",
            "ε = 8",
            "MNLI",
            "SST-2",
            "roberta-large",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(!svg.contains("RoBERTa-large"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
