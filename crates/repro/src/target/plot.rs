//! Privacy–utility figure (SVG): one panel per task, in a grid of up to four columns; in each, the
//! private methods' final test accuracy per ε (one slot per method in each ε group) as dots with
//! 95% CI bars over seeds (a hollow dot: one seed, no CI), the paper's values as hollow triangles,
//! and the non-private methods (zero-shot, MeZO, …) as horizontal lines across the panel, ours
//! solid (with a faint band for the CI) and the paper's dashed, and the constant answer (the test
//! set's most frequent label, answered throughout) dotted. Private methods are coloured from
//! `COLORS`, non-private lines from `LINE_COLORS`, which share no ink. Each panel's y range fits
//! its data; only a CI reaching past 0 or 100 is cut, and then ends in an arrow. The legend has
//! its own block below the panels, so it never covers data.

use super::compare::PaperRow;
use super::summary::SummaryRow;
use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
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
/// How many of `COLORS` the private methods cycle through (the others are close to
/// `LINE_COLORS`).
const PRIVATE_COLORS: usize = 7;
/// The non-private lines' inks: grey, olive, cyan, black (none among the private methods', and
/// black apart from the legend's keys, which are drawn in `DARK`).
const LINE_COLORS: [RGBColor; 4] = [
    RGBColor(150, 150, 150),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
];

/// The ink of the figures' text and axes, and of their notes.
pub(super) const DARK: RGBColor = RGBColor(30, 30, 30);
pub(super) const GREY: RGBColor = RGBColor(110, 110, 110);

/// Text at pixel size `px` (the SVG backend writes the size divided by 1.24), anchored at
/// (`h`, vertical centre).
pub(super) fn text_style(px: f64, color: RGBColor, h: HPos) -> TextStyle<'static> {
    TextStyle {
        font: ("sans-serif", px * 1.24).into_font(),
        color: color.to_backend_color(),
        pos: Pos::new(h, VPos::Center),
    }
}

/// A rough width of `s` in pixels at size `px` (sans-serif averages about 0.6 em a character).
/// An accuracy axis's tick label: whole points as integers, half points (the ticks of a narrow
/// range, e.g. one level of 62.5 padded to [61, 64]) with their decimal, so no two ticks read
/// alike.
pub(super) fn accuracy_tick(y: &f64) -> String {
    if (y - y.round()).abs() < 1e-9 {
        format!("{y:.0}")
    } else {
        format!("{y:.1}")
    }
}

pub(super) fn text_width(s: &str, px: f64) -> i32 {
    (s.chars().count() as f64 * px * 0.6).ceil() as i32
}

/// A white SVG canvas of `width` x `height` drawing into `svg`, with `title` centred on top.
pub(super) fn titled_canvas<'a>(
    svg: &'a mut String,
    width: i32,
    height: i32,
    title: &str,
) -> Result<DrawingArea<SVGBackend<'a>, Shift>> {
    let root = SVGBackend::with_string(svg, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(
        title.to_string(),
        (width / 2, 18),
        text_style(15.0, DARK, HPos::Center),
    ))?;
    Ok(root)
}

// Layout of the privacy-utility figure, in pixels.
/// Text size of the labels and the legend.
const TEXT: f64 = 12.0;
const MARGIN: i32 = 16;
/// Height of the title strip.
const TITLE_H: i32 = 40;
const PANEL_H: i32 = 300;
/// Horizontal room of one private method within an ε group.
const SLOT_W: i32 = 18;
/// Left of each plot: the axis title and the tick labels; below it: the ε labels.
const Y_AREA: i32 = 52;
const X_AREA: i32 = 26;
const LEGEND_ROW_H: i32 = 20;

/// A paper value: (task, method, ε, accuracy).
pub type PaperPoint = (String, String, Option<f64>, f64);

/// What the figure shows and says about itself.
pub struct Figure<'a> {
    pub rows: &'a [SummaryRow],
    pub paper: &'a [PaperPoint],
    /// The grid's tasks and methods, in the order of the panels and of the slots and legend
    /// (those of `rows` not named here come after, as first seen).
    pub tasks: &'a [String],
    pub methods: &'a [String],
    /// Per task, the test accuracy of answering its most frequent gold label throughout
    /// ([`super::labels::constant_answer`]), drawn as a dotted line; tasks without one have none.
    pub constant_answer: &'a [(String, f64)],
    /// The model our rows ran (named in the title).
    pub model_run: &'a str,
    /// The paper's model (named beside its markers).
    pub paper_model: &'a str,
    pub title: String,
}

/// Where things landed, for the tests: the canvas, each panel's plot rectangle (x and y pixel
/// ranges) and y range, and the legend's block.
#[cfg_attr(not(test), allow(dead_code))]
struct Layout {
    width: i32,
    height: i32,
    plots: Vec<(Range<i32>, Range<i32>)>,
    y_ranges: Vec<(f64, f64)>,
    legend: (Range<i32>, Range<i32>),
}

/// The distinct values of `seen` in the order of `order` (those not in it last, as first seen).
fn in_order<'b>(seen: impl IntoIterator<Item = &'b str>, order: &[String]) -> Vec<&'b str> {
    let mut out: Vec<&str> = Vec::new();
    for s in seen {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out.sort_by_key(|s| order.iter().position(|o| o == s).unwrap_or(usize::MAX));
    out
}

/// Columns of the panel grid for `n` panels: one row up to three, then two, three or four
/// columns, so that neither side grows unwieldy.
fn grid_columns(n: usize) -> usize {
    match n {
        0..=3 => n.max(1),
        4 => 2,
        5 | 6 | 9 => 3,
        _ => 4,
    }
}

/// Horizontal place of method `mi` of `n` within the ε group at `g`.
fn x_of(g: usize, mi: usize, n: usize) -> f64 {
    let width = 0.8 / n.max(1) as f64;
    g as f64 + (mi as f64 - (n as f64 - 1.0) / 2.0) * width
}

/// A panel's y range: every value in `values` (cut to [0, 100]) with a margin, in whole points.
fn y_range(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 100.0);
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = (lo.clamp(0.0, 100.0), hi.clamp(0.0, 100.0));
    let pad = ((hi - lo) * 0.06).max(1.5);
    ((lo - pad).max(0.0).floor(), (hi + pad).min(100.0).ceil())
}

/// The marks of the figure, drawn alike in the panels and the legend.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    /// Our mean with a 95% CI.
    Dot,
    /// Our mean of one seed (no CI).
    Hollow,
    /// A paper value of a private method.
    Triangle,
    /// Our non-private level.
    Line,
    /// The paper's non-private level.
    Dashed,
    /// The constant answer's level.
    Dotted,
    /// A CI cut at the edge.
    Arrow,
}

/// The pattern of a broken horizontal line: the paper's non-private levels are dashed, the
/// constant answer dotted.
#[derive(Clone, Copy)]
enum Broken {
    /// Dashes of 8 px, gaps of 5.
    Dashes,
    /// Dots of 2 px, gaps of 3.
    Dots,
}

/// A broken horizontal line from `x0` to `x1` at `y`, in `pattern`.
fn broken(
    pattern: Broken,
    x0: i32,
    x1: i32,
    y: i32,
    color: RGBColor,
) -> Vec<PathElement<(i32, i32)>> {
    let (on, period) = match pattern {
        Broken::Dashes => (8, 13),
        Broken::Dots => (2, 5),
    };
    (x0..x1)
        .step_by(period)
        .map(|x| PathElement::new(vec![(x, y), (x1.min(x + on), y)], color.stroke_width(2)))
        .collect()
}

/// A filled arrowhead with its tip at (`x`, `y`), pointing up (`dir` −1) or down (`dir` 1).
fn arrow_head(x: i32, y: i32, dir: i32, color: RGBColor) -> Polygon<(i32, i32)> {
    Polygon::new(
        vec![(x, y), (x - 5, y - 7 * dir), (x + 5, y - 7 * dir)],
        color.filled(),
    )
}

/// Draws `mark` in `color` centred on (`x`, `y`) (a line mark 22 px long).
fn draw_mark<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    mark: Mark,
    color: RGBColor,
    (x, y): (i32, i32),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    match mark {
        Mark::Dot => area.draw(&Circle::new((x, y), 4, color.filled()))?,
        Mark::Hollow => {
            area.draw(&Circle::new((x, y), 4, WHITE.filled()))?;
            area.draw(&Circle::new((x, y), 4, color.stroke_width(2)))?;
        }
        Mark::Triangle => area.draw(&PathElement::new(
            vec![(x, y - 6), (x + 6, y + 4), (x - 6, y + 4), (x, y - 6)],
            color.stroke_width(2),
        ))?,
        Mark::Line => area.draw(&PathElement::new(
            vec![(x - 11, y), (x + 11, y)],
            color.stroke_width(2),
        ))?,
        Mark::Dashed | Mark::Dotted => {
            let pattern = if mark == Mark::Dashed {
                Broken::Dashes
            } else {
                Broken::Dots
            };
            for d in broken(pattern, x - 11, x + 11, y, color) {
                area.draw(&d)?;
            }
        }
        Mark::Arrow => {
            area.draw(&PathElement::new(
                vec![(x, y + 8), (x, y - 2)],
                color.stroke_width(2),
            ))?;
            area.draw(&arrow_head(x, y - 8, -1, color))?;
        }
    }
    Ok(())
}

/// One legend entry: a mark in its colour and its words.
struct Entry {
    mark: Mark,
    color: RGBColor,
    label: String,
}

/// The column width (px) of a legend block of `entries` and how many columns fit in `width`.
fn legend_columns(entries: &[Entry], width: i32) -> (i32, usize) {
    let col_w = entries
        .iter()
        .map(|e| 34 + text_width(&e.label, TEXT) + 18)
        .max()
        .unwrap_or(0);
    let fit = ((width - 2 * MARGIN) / col_w.max(1)).max(1) as usize;
    (col_w, fit.min(entries.len().max(1)))
}

/// Renders `fig` to `path` (written atomically).
pub fn privacy_utility(fig: &Figure, path: &Path) -> Result<()> {
    let (svg, _) = render(fig)?;
    // Rendered in memory, then written in one atomic rename.
    atomic_file::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The figure of `fig` as SVG text, and where its parts landed.
fn render(fig: &Figure) -> Result<(String, Layout)> {
    let rows = fig.rows;
    let tasks = in_order(rows.iter().map(|r| r.task.as_str()), fig.tasks);
    if tasks.is_empty() {
        return Err(anyhow!("plot: nothing to plot"));
    }
    let private = in_order(
        rows.iter()
            .filter(|r| r.epsilon.is_some())
            .map(|r| r.method.as_str()),
        fig.methods,
    );
    let nonprivate = in_order(
        rows.iter()
            .filter(|r| r.epsilon.is_none())
            .map(|r| r.method.as_str()),
        fig.methods,
    );
    let color = |m: &str| match private.iter().position(|x| *x == m) {
        Some(i) => COLORS[i % PRIVATE_COLORS],
        None => {
            let i = nonprivate.iter().position(|x| *x == m).unwrap_or(0);
            LINE_COLORS[i % LINE_COLORS.len()]
        }
    };
    let mut eps: Vec<f64> = rows.iter().filter_map(|r| r.epsilon).collect();
    eps.sort_by(f64::total_cmp);
    eps.dedup();
    let groups = eps.len().max(1);
    // The paper's values that have a place: a private method's at one of our ε, a non-private
    // method's level.
    let paper: Vec<&PaperPoint> = fig
        .paper
        .iter()
        .filter(|p| match p.2 {
            Some(e) => private.contains(&p.1.as_str()) && eps.contains(&e),
            None => nonprivate.contains(&p.1.as_str()),
        })
        .filter(|p| tasks.contains(&p.0.as_str()))
        .collect();

    let constant = |task: &str| {
        fig.constant_answer
            .iter()
            .find(|(t, _)| t == task)
            .map(|(_, level)| *level)
    };
    // Each panel's y range, and whether a CI had to be cut (past 0 or 100).
    let panel_values = |task: &str| -> Vec<f64> {
        let mut values: Vec<f64> = paper.iter().filter(|p| p.0 == task).map(|p| p.3).collect();
        values.extend(constant(task));
        for r in rows.iter().filter(|r| r.task == task) {
            values.push(r.mean);
            if let Some((lo, hi)) = r.ci95 {
                values.extend([lo, hi]);
            }
        }
        values
    };
    let y_ranges: Vec<(f64, f64)> = tasks.iter().map(|t| y_range(&panel_values(t))).collect();
    let any_cut = rows
        .iter()
        .filter(|r| r.epsilon.is_some())
        .filter_map(|r| r.ci95)
        .any(|(lo, hi)| lo < 0.0 || hi > 100.0);

    // The legend: the private methods' colours, the non-private ones', then what the marks mean.
    let private_legend: Vec<Entry> = private
        .iter()
        .map(|m| Entry {
            mark: Mark::Dot,
            color: color(m),
            label: m.to_string(),
        })
        .collect();
    let nonprivate_legend: Vec<Entry> = nonprivate
        .iter()
        .map(|m| Entry {
            mark: Mark::Line,
            color: color(m),
            label: format!("{m} (non-private)"),
        })
        .collect();
    let other_model = if fig.paper_model == fig.model_run {
        ""
    } else {
        "; another model: levels not comparable"
    };
    let has_private_paper = paper.iter().any(|p| p.2.is_some());
    let keys: Vec<Entry> = [
        (!private.is_empty()).then(|| {
            (
                Mark::Dot,
                format!("ours ({}): mean over seeds, bar: its 95% CI", fig.model_run),
            )
        }),
        rows.iter()
            .any(|r| r.epsilon.is_some() && r.ci95.is_none())
            .then(|| (Mark::Hollow, "ours, one seed: no CI".to_string())),
        (!nonprivate.is_empty()).then(|| {
            (
                Mark::Line,
                "ours, non-private: one level for all ε (band: its 95% CI)".to_string(),
            )
        }),
        has_private_paper.then(|| {
            (
                Mark::Triangle,
                format!("paper ({}{other_model})", fig.paper_model),
            )
        }),
        paper.iter().any(|p| p.2.is_none()).then(|| {
            let note = if has_private_paper { "" } else { other_model };
            (
                Mark::Dashed,
                format!("paper ({}{note}), non-private", fig.paper_model),
            )
        }),
        tasks.iter().any(|t| constant(t).is_some()).then(|| {
            (
                Mark::Dotted,
                "answering the most frequent test label throughout".to_string(),
            )
        }),
        any_cut.then(|| {
            (
                Mark::Arrow,
                "a CI reaching past 0 or 100 is cut there, with an arrow".to_string(),
            )
        }),
    ]
    .into_iter()
    .flatten()
    .map(|(mark, label)| Entry {
        mark,
        color: DARK,
        label,
    })
    .collect();

    // Sizes: panels wide enough for every slot, the figure wide enough for its text.
    let cols = grid_columns(tasks.len());
    let panel_rows = tasks.len().div_ceil(cols);
    let plot_w = (SLOT_W * (private.len().max(1) * groups) as i32 + 10 * groups as i32).max(180);
    let panel_w = Y_AREA + plot_w + 24;
    let blocks = [&private_legend, &nonprivate_legend, &keys];
    let width = blocks
        .iter()
        .map(|b| legend_columns(b, 0).0 + 2 * MARGIN)
        .chain([
            panel_w * cols as i32,
            text_width(&fig.title, 15.0) + 2 * MARGIN,
        ])
        .max()
        .unwrap_or(0);
    let legend_top = TITLE_H + PANEL_H * panel_rows as i32 + 8;
    let legend_lines: i32 = blocks
        .iter()
        .map(|b| b.len().div_ceil(legend_columns(b, width).1) as i32)
        .sum();
    let legend_h = LEGEND_ROW_H * legend_lines + 10 * (blocks.len() as i32 - 1);
    let height = legend_top + legend_h + MARGIN;

    let mut plots = Vec::new();
    let mut svg = String::new();
    {
        let canvas = titled_canvas(&mut svg, width, height, &fig.title)?;
        let (_, below_title) = canvas.split_vertically(TITLE_H);
        let (panels_area, _) = below_title.split_vertically(PANEL_H * panel_rows as i32);
        let panels = panels_area.split_evenly((panel_rows, cols));
        for (i, (panel, task)) in panels.iter().zip(&tasks).enumerate() {
            let (y0, y1) = y_ranges[i];
            let mut chart = ChartBuilder::on(panel)
                .caption(*task, ("sans-serif", 14.0 * 1.24))
                .margin(8)
                .margin_right(16)
                .x_label_area_size(X_AREA)
                .y_label_area_size(Y_AREA)
                .build_cartesian_2d(-0.5f64..(groups as f64 - 0.5), y0..y1)?;
            let mut mesh = chart.configure_mesh();
            mesh.disable_x_mesh()
                .x_labels(0)
                .y_labels(8)
                .y_label_formatter(&accuracy_tick)
                .label_style(("sans-serif", 11.0 * 1.24))
                .axis_desc_style(("sans-serif", 11.0 * 1.24))
                .light_line_style(WHITE);
            // The axis title on the grid's first column only.
            if i % cols == 0 {
                mesh.y_desc("test accuracy (%)");
            }
            mesh.draw()?;
            let at = |x: f64, y: f64| chart.backend_coord(&(x, y));
            let (xs, ys) = chart.plotting_area().get_pixel_range();
            // ε groups: a label under each, a faint rule between neighbours.
            for (g, e) in eps.iter().enumerate() {
                let (x, _) = at(g as f64, y0);
                canvas.draw(&Text::new(
                    format!("ε = {e}"),
                    (x, ys.end + 12),
                    text_style(TEXT, DARK, HPos::Center),
                ))?;
                if g > 0 {
                    let (x, _) = at(g as f64 - 0.5, y0);
                    canvas.draw(&PathElement::new(
                        vec![(x, ys.start), (x, ys.end)],
                        RGBColor(215, 215, 215).stroke_width(1),
                    ))?;
                }
            }
            // Non-private levels across the plot: ours solid over a faint CI band, the paper's
            // dashed. A level within 3 px of a later one is drawn 3 px wider per such line, so
            // coinciding levels nest instead of hiding each other.
            let ours_levels: Vec<(&str, &SummaryRow)> = nonprivate
                .iter()
                .filter_map(|m| {
                    let r = rows.iter().find(|r| r.task == *task && r.method == *m)?;
                    Some((*m, r))
                })
                .collect();
            for (m, r) in &ours_levels {
                if let Some((lo, hi)) = r.ci95.filter(|(lo, hi)| hi > lo) {
                    let (_, top) = at(0.0, hi.min(y1));
                    let (_, bottom) = at(0.0, lo.max(y0));
                    canvas.draw(&Rectangle::new(
                        [(xs.start, top), (xs.end, bottom)],
                        color(m).mix(0.15).filled(),
                    ))?;
                }
            }
            for (k, (m, r)) in ours_levels.iter().enumerate() {
                let (_, y) = at(0.0, r.mean);
                let covering = ours_levels[k + 1..]
                    .iter()
                    .filter(|(_, later)| (at(0.0, later.mean).1 - y).abs() <= 3)
                    .count() as u32;
                canvas.draw(&PathElement::new(
                    vec![(xs.start, y), (xs.end, y)],
                    color(m).stroke_width(2 + 3 * covering),
                ))?;
            }
            for m in &nonprivate {
                if let Some(p) = paper
                    .iter()
                    .find(|p| p.0 == *task && p.1 == *m && p.2.is_none())
                {
                    let (_, y) = at(0.0, p.3);
                    for d in broken(Broken::Dashes, xs.start, xs.end, y, color(m)) {
                        canvas.draw(&d)?;
                    }
                }
            }
            if let Some(level) = constant(task) {
                let (_, y) = at(0.0, level);
                for d in broken(Broken::Dots, xs.start, xs.end, y, DARK) {
                    canvas.draw(&d)?;
                }
            }
            // Private methods: ours with the CI bar, the paper's value at the same place.
            for (mi, m) in private.iter().enumerate() {
                let c = color(m);
                for (g, e) in eps.iter().enumerate() {
                    let x = x_of(g, mi, private.len());
                    let cell = rows
                        .iter()
                        .find(|r| r.task == *task && r.method == *m && r.epsilon == Some(*e));
                    if let Some(r) = cell {
                        if let Some((lo, hi)) = r.ci95 {
                            let (px, top) = at(x, hi.min(y1));
                            let (_, bottom) = at(x, lo.max(y0));
                            canvas.draw(&PathElement::new(
                                vec![(px, top), (px, bottom)],
                                c.stroke_width(2),
                            ))?;
                            for (cut, y, dir) in [(hi > y1, top, -1), (lo < y0, bottom, 1)] {
                                if cut {
                                    canvas.draw(&arrow_head(px, y, dir, c))?;
                                } else {
                                    canvas.draw(&PathElement::new(
                                        vec![(px - 4, y), (px + 4, y)],
                                        c.stroke_width(1),
                                    ))?;
                                }
                            }
                        }
                        let mark = if r.ci95.is_some() {
                            Mark::Dot
                        } else {
                            Mark::Hollow
                        };
                        draw_mark(&canvas, mark, c, at(x, r.mean))?;
                    }
                    if let Some(p) = paper
                        .iter()
                        .find(|p| p.0 == *task && p.1 == *m && p.2 == Some(*e))
                    {
                        draw_mark(&canvas, Mark::Triangle, c, at(x, p.3))?;
                    }
                }
            }
            plots.push((xs, ys));
        }
        // The legend block: each part in columns, filled down then across.
        let mut top = legend_top;
        for block in blocks.iter().filter(|b| !b.is_empty()) {
            let (col_w, n_cols) = legend_columns(block, width);
            let lines = block.len().div_ceil(n_cols);
            for (k, e) in block.iter().enumerate() {
                let x = MARGIN + col_w * (k / lines) as i32;
                let y = top + LEGEND_ROW_H * (k % lines) as i32 + LEGEND_ROW_H / 2;
                draw_mark(&canvas, e.mark, e.color, (x + 14, y))?;
                canvas.draw(&Text::new(
                    e.label.clone(),
                    (x + 34, y),
                    text_style(TEXT, DARK, HPos::Left),
                ))?;
            }
            top += LEGEND_ROW_H * lines as i32 + 10;
        }
        canvas.present()?;
    }
    let layout = Layout {
        width,
        height,
        plots,
        y_ranges,
        legend: (MARGIN..width - MARGIN, legend_top..legend_top + legend_h),
    };
    Ok((svg, layout))
}

/// The paper's `metric` values as (task, method, epsilon, value), for the markers.
pub fn paper_points(rows: &[PaperRow], model: &str, source: &str, metric: &str) -> Vec<PaperPoint> {
    rows.iter()
        .filter(|r| r.model == model && r.source.starts_with(source) && r.metric == metric)
        .map(|r| (r.task.clone(), r.method.clone(), r.epsilon, r.value))
        .collect()
}

/// Test support: the hollow circles (`fill="none"`) of an SVG, the one-seed markers.
#[cfg(test)]
pub(crate) fn hollow_circles(svg: &str) -> usize {
    svg.split("<circle")
        .skip(1)
        .filter_map(|c| c.split('>').next())
        .filter(|c| c.contains("fill=\"none\""))
        .count()
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
            constant_answer: &[],
            tasks: &[],
            methods: &[],
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

    /// The constant answer is drawn only where given: a dotted dark line across its panel at its
    /// level (dots 2 px long, 5 px apart) and one legend key.
    #[test]
    fn the_constant_answer_is_a_dotted_line_where_given() {
        let rows = vec![
            row("SST-2", "dpzero", Some(4.0), 80.0),
            row("TREC", "dpzero", Some(4.0), 60.0),
        ];
        let key = "answering the most frequent test label throughout";
        let figure = |constant: &[(String, f64)]| -> String {
            let fig = Figure {
                rows: &rows,
                paper: &[],
                constant_answer: constant,
                tasks: &[],
                methods: &[],
                model_run: "m",
                paper_model: "p",
                title: "t".into(),
            };
            render(&fig).unwrap().0
        };
        let dark_dots = |svg: &str| {
            let ink = format!(
                "stroke=\"#{:02X}{:02X}{:02X}\" stroke-width=\"2\"",
                DARK.0, DARK.1, DARK.2
            );
            svg.matches(&ink).count()
        };
        let without = figure(&[]);
        assert!(!without.contains(key));
        let with = figure(&[("SST-2".to_string(), 50.9)]);
        assert!(with.contains(key));
        // One panel's plot width in dots, plus the legend key's 5.
        let dots = dark_dots(&with) - dark_dots(&without);
        assert!((30..80).contains(&dots), "{dots} dots");
    }

    /// A panel of one level (one seed, no CI) spans a few points, ticked every half point: no
    /// two tick labels read alike (they did when every tick was rounded to a whole point).
    #[test]
    fn a_narrow_panels_ticks_read_apart() {
        let one_seed = |method: &str, eps: Option<f64>| SummaryRow {
            sd: None,
            n_seeds: 1,
            ci95: None,
            seeds: vec![13],
            accuracies: vec![62.5],
            outcomes: vec![None],
            ..row("WSC", method, eps, 62.5)
        };
        let rows = vec![one_seed("dp-zopo", Some(4.0)), one_seed("zero-shot", None)];
        let fig = Figure {
            rows: &rows,
            paper: &[],
            constant_answer: &[],
            tasks: &[],
            methods: &[],
            model_run: "m",
            paper_model: "p",
            title: "t".into(),
        };
        let (svg, _) = render(&fig).unwrap();
        let ticks: Vec<&str> = svg
            .split("</text>")
            .filter_map(|t| t.rsplit('>').next())
            .map(str::trim)
            .filter(|t| t.parse::<f64>().is_ok())
            .collect();
        assert!(ticks.len() >= 4, "{ticks:?}");
        let mut distinct = ticks.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), ticks.len(), "{ticks:?}");
        assert_eq!(
            (accuracy_tick(&62.0), accuracy_tick(&61.5)),
            ("62".into(), "61.5".into())
        );
    }

    /// Two non-private levels at one value (as on stand-in data): the earlier drawn wider, so
    /// both show.
    #[test]
    fn coinciding_non_private_levels_both_show() {
        let rows = vec![
            row("SST-2", "dpzero", Some(2.0), 62.5),
            row("SST-2", "zero-shot", None, 62.5),
            row("SST-2", "mezo", None, 62.5),
        ];
        let methods: Vec<String> = ["zero-shot", "mezo", "dpzero"]
            .iter()
            .map(|m| m.to_string())
            .collect();
        let fig = Figure {
            rows: &rows,
            paper: &[],
            constant_answer: &[],
            tasks: &[],
            methods: &methods,
            model_run: "m",
            paper_model: "p",
            title: "t".into(),
        };
        let (svg, _) = render(&fig).unwrap();
        let line = |c: RGBColor, w: u32| {
            let ink = format!(
                "stroke=\"#{:02X}{:02X}{:02X}\" stroke-width=\"{w}\"",
                c.0, c.1, c.2
            );
            svg.contains(&ink)
        };
        assert!(line(LINE_COLORS[0], 5), "{svg}");
        assert!(line(LINE_COLORS[1], 2), "{svg}");
    }

    #[test]
    fn the_paper_markers_are_the_figures_metric_only() {
        let paper_row = |metric: &str, value: f64| PaperRow {
            target: "table3".into(),
            model: "opt-2.7b".into(),
            task: "CB".into(),
            method: "dp-zopo".into(),
            epsilon: Some(4.0),
            metric: metric.into(),
            value,
            std: None,
            source: "liu2025:table".into(),
        };
        let rows = [
            paper_row("delta_vs_dpzero", 9.2),
            paper_row("accuracy", 70.0),
        ];
        let points = paper_points(&rows, "opt-2.7b", "liu2025", "accuracy");
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].3, 70.0);
    }

    /// One text element of an SVG: its words and estimated box (0.6 em a character).
    #[derive(Debug)]
    struct SvgText {
        text: String,
        x: Range<f64>,
        y: Range<f64>,
    }

    /// The SVG's (width, height) and its text elements, as the SVG backend writes them: one
    /// `<text …>` tag with x, y, dy, text-anchor, font-size and, when turned, `rotate(…)`.
    fn svg_texts(svg: &str) -> ((f64, f64), Vec<SvgText>) {
        let attr = |tag: &str, name: &str| -> Option<String> {
            let key = format!(" {name}=\"");
            Some(tag.split(&key).nth(1)?.split('"').next()?.to_string())
        };
        let num = |tag: &str, name: &str| attr(tag, name).unwrap().parse::<f64>().unwrap();
        let head = svg.split('>').next().unwrap();
        let size = (num(head, "width"), num(head, "height"));
        let texts = svg
            .split("<text")
            .skip(1)
            .map(|el| {
                let (tag, rest) = el.split_once('>').unwrap();
                let text = rest.split_once("</text>").unwrap().0.trim().to_string();
                let (x, y, em) = (num(tag, "x"), num(tag, "y"), num(tag, "font-size"));
                let along = text.chars().count() as f64 * 0.6 * em;
                let (start, end) = match attr(tag, "text-anchor").as_deref() {
                    Some("start") => (0.0, along),
                    Some("end") => (-along, 0.0),
                    _ => (-along / 2.0, along / 2.0),
                };
                let (top, bottom) = match attr(tag, "dy").as_deref() {
                    Some("0.76em") => (0.0, em),
                    Some("0.5ex") => (-em / 2.0, em / 2.0),
                    _ => (-em, 0.0),
                };
                let turned = attr(tag, "transform").is_some_and(|t| t.starts_with("rotate"));
                let (x, y) = if turned {
                    (x + top..x + bottom, y - end..y - start)
                } else {
                    (x + start..x + end, y + top..y + bottom)
                };
                SvgText { text, x, y }
            })
            .collect();
        (size, texts)
    }

    fn overlap(a: &Range<f64>, b: &Range<f64>) -> bool {
        a.start < b.end && b.start < a.end
    }

    /// A summary row of `n` seeds (no CI with one) with its CI half-width.
    fn cell(
        task: &str,
        method: &str,
        eps: Option<f64>,
        mean: f64,
        half: f64,
        n: usize,
    ) -> SummaryRow {
        let mut r = row(task, method, eps, mean);
        r.n_seeds = n;
        r.seeds.truncate(n);
        r.accuracies.truncate(n);
        r.outcomes.truncate(n);
        r.ci95 = (n > 1).then_some((mean - half, mean + half));
        r.sd = (n > 1).then_some(half / 2.0);
        r
    }

    /// A deterministic spread in [0, 1) from the indices of a cell.
    fn jitter(a: usize, b: usize, c: usize) -> f64 {
        ((a * 7 + b * 13 + c * 5 + a * b * 3) % 11) as f64 / 11.0
    }

    /// A realistic full grid: per task a level, ε adding a little, methods apart; CI half-widths
    /// from 0.3 to 6 points; `missing` cells left out; `one_seed` cells of one seed; the paper's
    /// private values for the tasks of `paper_tasks`, and its non-private levels for
    /// `paper_lines`.
    struct Grid<'a> {
        tasks: &'a [(&'a str, f64)],
        private: &'a [&'a str],
        nonprivate: &'a [(&'a str, f64)],
        missing: &'a [(&'a str, &'a str, Option<f64>)],
        one_seed: &'a [(&'a str, &'a str, f64)],
        paper_tasks: &'a [&'a str],
        paper_lines: &'a [(&'a str, f64)],
        /// A cell of two seeds whose CI reaches past 100 (as `t` makes it with n = 2).
        cut: Option<(&'a str, &'a str, f64)>,
    }

    const EPS: [f64; 3] = [2.0, 4.0, 8.0];

    fn synthetic(grid: &Grid) -> (Vec<SummaryRow>, Vec<PaperPoint>) {
        let (mut rows, mut paper) = (Vec::new(), Vec::new());
        for (ti, (task, level)) in grid.tasks.iter().enumerate() {
            for (mi, m) in grid.private.iter().enumerate() {
                for (g, e) in EPS.iter().enumerate() {
                    let gone = grid
                        .missing
                        .iter()
                        .any(|(t, mm, ee)| t == task && mm == m && ee.is_none_or(|ee| ee == *e));
                    let mean = level + 1.5 * g as f64 - 2.0 * mi as f64 + 3.0 * jitter(ti, mi, g);
                    if !gone {
                        let n = if grid.one_seed.contains(&(*task, *m, *e)) {
                            1
                        } else {
                            3
                        };
                        let half = 0.3 + 5.7 * jitter(mi, g, ti);
                        let mut r = cell(task, m, Some(*e), mean, half, n);
                        if grid.cut == Some((*task, *m, *e)) {
                            r.mean = 100.0 - 16.0;
                            r.ci95 = Some((r.mean - 19.7, r.mean + 19.7));
                        }
                        rows.push(r);
                    }
                    if grid.paper_tasks.contains(task) {
                        let v = (level + 12.0 + g as f64 - mi as f64).min(97.0);
                        paper.push((task.to_string(), m.to_string(), Some(*e), v));
                    }
                }
            }
            for (m, offset) in grid.nonprivate {
                let half = if m.starts_with("zero-shot") { 0.0 } else { 1.2 };
                rows.push(cell(task, m, None, level + offset, half, 3));
            }
            if grid.paper_tasks.contains(task) {
                for (m, offset) in grid.paper_lines {
                    paper.push((task.to_string(), m.to_string(), None, level + offset));
                }
            }
        }
        (rows, paper)
    }

    /// Renders `grid` to `<tmp>/<name>.svg` (left there for a look) and checks what can go wrong
    /// as the grid fills: captions, ε labels and legend entries once each, no text outside the
    /// canvas or over other text, the legend clear of every plot, every value inside its
    /// panel's y range unless a cut CI (past 0 or 100) says so with an arrow, a bounded size.
    /// table2's grid methods in order: three non-private, then the private ones.
    const TABLE2_METHODS: [&str; 9] = [
        "zero-shot",
        "zero-shot-calibrated",
        "mezo",
        "dpzero",
        "dp-zoso",
        "dp-zopo",
        "dp-ft",
        "dp-lora",
        "dp-prefix",
    ];

    fn check_full_grid(name: &str, grid: &Grid, methods: &[&str], paper_model: &str) {
        let (rows, paper) = synthetic(grid);
        let tasks: Vec<String> = grid.tasks.iter().map(|t| t.0.to_string()).collect();
        let methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        // Every task's constant answer, below its level.
        let constant: Vec<(String, f64)> = grid
            .tasks
            .iter()
            .map(|(t, level)| (t.to_string(), level - 20.0))
            .collect();
        let fig = Figure {
            rows: &rows,
            paper: &paper,
            constant_answer: &constant,
            tasks: &tasks,
            methods: &methods,
            model_run: "smollm2-135m",
            paper_model,
            title: format!("{name} (mini preset): smollm2-135m, final test accuracy"),
        };
        let (svg, layout) = render(&fig).unwrap();
        let path = std::env::temp_dir().join(format!("{name}.svg"));
        std::fs::write(&path, &svg).unwrap();

        let ((width, height), texts) = svg_texts(&svg);
        assert_eq!((width as i32, height as i32), (layout.width, layout.height));
        assert!(width <= 1600.0 && height <= 1200.0, "{width} x {height}");
        let count = |s: &str| texts.iter().filter(|t| t.text == s).count();
        assert_eq!(count(&fig.title), 1);
        for task in &tasks {
            assert_eq!(count(task), 1, "caption {task}");
        }
        for e in EPS {
            assert_eq!(count(&format!("ε = {e}")), tasks.len(), "ε = {e}");
        }
        for m in grid.private {
            assert_eq!(count(m), 1, "legend {m}");
        }
        for (m, _) in grid.nonprivate {
            assert_eq!(count(&format!("{m} (non-private)")), 1, "legend {m}");
        }
        assert_eq!(count("ours, one seed: no CI"), 1);
        assert_eq!(
            texts
                .iter()
                .filter(|t| t.text.starts_with(&format!("paper ({paper_model}")))
                .count(),
            1 + usize::from(!grid.paper_lines.is_empty()),
        );
        // Hollow dots: one per one-seed cell, one in the legend.
        let hollow = hollow_circles(&svg);
        assert_eq!(hollow, grid.one_seed.len() + 1);
        for t in &texts {
            assert!(
                t.x.start >= 0.0 && t.x.end <= width && t.y.start >= 0.0 && t.y.end <= height,
                "{t:?} outside {width} x {height}"
            );
        }
        for (i, a) in texts.iter().enumerate() {
            for b in &texts[i + 1..] {
                assert!(
                    !(overlap(&a.x, &b.x) && overlap(&a.y, &b.y)),
                    "{a:?} over {b:?}"
                );
            }
        }
        let (lx, ly) = &layout.legend;
        assert!(lx.end <= layout.width && ly.end <= layout.height);
        assert_eq!(layout.plots.len(), tasks.len());
        for (px, py) in &layout.plots {
            assert!(px.end <= layout.width && py.end <= layout.height);
            assert!(
                !(px.start < lx.end && lx.start < px.end && py.start < ly.end && ly.start < py.end),
                "legend {lx:?} x {ly:?} over plot {px:?} x {py:?}"
            );
        }
        let mut cut = false;
        for (task, (y0, y1)) in tasks.iter().zip(&layout.y_ranges) {
            let inside = |v: f64| *y0 <= v && v <= *y1;
            for r in rows.iter().filter(|r| &r.task == task) {
                assert!(inside(r.mean), "{task} {} {}", r.method, r.mean);
                if let Some((lo, hi)) = r.ci95 {
                    for v in [lo, hi] {
                        assert!(
                            inside(v) || !(0.0..=100.0).contains(&v),
                            "{task}: CI end {v}"
                        );
                        cut |= !inside(v);
                    }
                }
            }
            for p in paper.iter().filter(|p| &p.0 == task) {
                assert!(inside(p.3), "{task}: paper {p:?}");
            }
            for (_, level) in constant.iter().filter(|c| &c.0 == task) {
                assert!(inside(*level), "{task}: constant answer {level}");
            }
        }
        assert_eq!(
            count("answering the most frequent test label throughout"),
            1
        );
        assert_eq!(
            cut,
            count("a CI reaching past 0 or 100 is cut there, with an arrow") == 1
        );
    }

    /// table2 mini when full: 6 tasks x 3 ε x 6 private methods, 3 non-private lines, one CI
    /// past 100, the paper for five tasks (`<tmp>/dpzo-full-table2.svg`).
    #[test]
    fn the_full_table2_grid_reads_well() {
        let grid = Grid {
            tasks: &[
                ("SST-2", 84.0),
                ("SST-5", 38.0),
                ("SNLI", 62.0),
                ("MNLI", 52.0),
                ("TREC", 72.0),
                ("RTE", 57.0),
            ],
            private: &TABLE2_METHODS[3..],
            nonprivate: &[
                ("zero-shot", -30.0),
                ("zero-shot-calibrated", -14.0),
                ("mezo", 4.0),
            ],
            missing: &[("MNLI", "dp-ft", Some(2.0)), ("RTE", "dp-zopo", None)],
            one_seed: &[("TREC", "dp-prefix", 8.0), ("RTE", "dp-lora", 4.0)],
            paper_tasks: &["SST-2", "SST-5", "SNLI", "MNLI", "TREC"],
            paper_lines: &[("zero-shot", -5.0), ("mezo", 9.0)],
            cut: Some(("SST-2", "dp-prefix", 2.0)),
        };
        check_full_grid("dpzo-full-table2", &grid, &TABLE2_METHODS, "roberta-large");
    }

    /// table3 mini when full: 8 SuperGLUE tasks x 3 ε x 3 methods, zero-shot lines, the paper
    /// for two tasks (`<tmp>/dpzo-full-table3.svg`).
    #[test]
    fn the_full_table3_grid_reads_well() {
        let grid = Grid {
            tasks: &[
                ("SST-2", 86.0),
                ("RTE-sg", 56.0),
                ("CB", 66.0),
                ("BoolQ", 62.0),
                ("WSC", 58.0),
                ("WiC", 54.0),
                ("MultiRC", 57.0),
                ("COPA", 70.0),
            ],
            private: &["dpzero", "dp-zoso", "dp-zopo"],
            nonprivate: &[("zero-shot", -12.0), ("zero-shot-calibrated", -6.0)],
            missing: &[("WSC", "dp-zopo", Some(8.0))],
            one_seed: &[("COPA", "dpzero", 2.0)],
            paper_tasks: &["SST-2", "BoolQ"],
            paper_lines: &[("zero-shot", -25.0)],
            cut: None,
        };
        check_full_grid(
            "dpzo-full-table3",
            &grid,
            &[
                "zero-shot",
                "zero-shot-calibrated",
                "dpzero",
                "dp-zoso",
                "dp-zopo",
            ],
            "opt-2.7b",
        );
    }
}
