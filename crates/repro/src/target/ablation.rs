//! `repro ablations`: every variant of `experiments/ablations.toml` against the grid method it is
//! compared with ([`super::spec::Variant::compare_to`], default its base), paired by seed and by
//! test example with the 95% CI of [`super::stats`] (the interval the paper claims get). Written
//! beside `summary.csv`: `ablations.csv`, `ablations.md` and `ablations.svg` (the differences as
//! a forest plot, one panel per task, rows under their variant's group); with horizon variants (`steps_scale`) also
//! `horizon.csv` and `horizon.svg` (test and dev accuracy against T, 95% CIs over seeds) and
//! `plateau.csv` (each step up in T judged by the plateau rule of [`super::plateau`]).

use super::compare::{mark_open_search, test_claim, Claim, OpenGroup};
use super::plot::{accuracy_tick, text_style, text_width, titled_canvas, DARK, GREY};
use super::record::CellRecord;
use super::spec::Spec;
use super::summary::SummaryRow;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::HPos;
use std::collections::BTreeMap;
use std::path::Path;

/// One variant's difference from its reference in one (task, ε) cell.
#[derive(Debug, Clone)]
pub struct AblationRow {
    pub variant: String,
    pub reference: String,
    /// What it isolates, shared with the variants that isolate the same thing
    /// ([`super::spec::Variant::group_label`]).
    pub group: String,
    /// The reference's mean test accuracy in this cell (%), `None` when it did not run.
    pub reference_accuracy: Option<f64>,
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

pub(super) fn eps_label(e: Option<f64>) -> String {
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
pub fn comparisons(
    spec: &Spec,
    methods: &[String],
    rows: &[SummaryRow],
    open: &[OpenGroup],
) -> Vec<AblationRow> {
    comparisons_with(spec, methods, rows, open, |_, variant| {
        Some(variant.compare_to.as_deref().unwrap_or(&variant.base))
    })
}

/// The comparisons of `[preset.<p>] also_compare_to`: every variant of `methods` against each
/// method listed, in the list's order, except against itself or the reference it names (that
/// comparison is [`comparisons`]'s).
pub fn also_comparisons(
    spec: &Spec,
    preset_name: &str,
    methods: &[String],
    rows: &[SummaryRow],
    open: &[OpenGroup],
) -> Result<Vec<AblationRow>> {
    let preset = spec.preset(preset_name)?;
    Ok(preset
        .also_compare_to
        .iter()
        .flat_map(|other| {
            comparisons_with(spec, methods, rows, open, |name, variant| {
                let named = variant.compare_to.as_deref().unwrap_or(&variant.base);
                (name != other && named != other).then_some(other.as_str())
            })
        })
        .collect())
}

/// Each variant of `methods` against the method `reference_of(name, variant)` gives (none: no
/// comparison), per task and ε as [`comparisons`] describes. A row one of whose two methods has
/// an open dev search on its task (`open`, from this preset's `tuning.csv`) is marked
/// provisional, as a claim is (`compare::mark_open_search`).
fn comparisons_with<'s>(
    spec: &'s Spec,
    methods: &'s [String],
    rows: &[SummaryRow],
    open: &[OpenGroup],
    reference_of: impl Fn(&str, &'s super::spec::Variant) -> Option<&'s str>,
) -> Vec<AblationRow> {
    let mut tasks: Vec<&str> = rows.iter().map(|r| r.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    let mut out = Vec::new();
    for name in methods {
        let Some(variant) = spec.variant.get(name) else {
            continue;
        };
        let Some(reference) = reference_of(name, variant) else {
            continue;
        };
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
                mark_open_search(&mut claim, &[name.as_str(), reference], open);
                out.push(AblationRow {
                    variant: name.clone(),
                    reference: reference.to_string(),
                    group: variant.group_label().to_string(),
                    reference_accuracy: b.map(|b| b.mean),
                    description: variant.description.clone(),
                    claim,
                });
            }
        }
    }
    out
}

pub(super) fn fmt(v: Option<f64>) -> String {
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
        "reference_accuracy",
        "group",
        "note",
        "description",
        "open_tuning",
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
            fmt(r.reference_accuracy),
            r.group.clone(),
            c.why.clone(),
            r.description.clone(),
            c.open_tuning.clone(),
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
        md.push_str(&format!(
            "{} {} |\n",
            table_row(r),
            r.description.replace('|', "\\|")
        ));
    }
    md
}

/// The first seven cells of an `ablations.md` row (variant to n), open at the end.
fn table_row(r: &AblationRow) -> String {
    let c = &r.claim;
    let mut ci =
        c.ci.map(super::compare::signed_ci)
            .unwrap_or_else(|| c.why.clone());
    if c.ci.is_some() && !c.open_tuning.is_empty() {
        ci = format!("{ci} (provisional: {})", c.open_tuning);
    }
    let delta = super::compare::signed_points(c.ours_delta);
    format!(
        "| {} | {} | {} | {} | {delta} | {ci} | {} |",
        r.variant, r.reference, c.task, c.epsilon, c.n_seeds
    )
}

/// The section of `ablations.md` with `rows` ([`comparisons`] over every seed but the tuning
/// seed `seed`). A reference taken over from `--tune` has, on that seed, the candidate run that
/// won its dev selection, whose test accuracy may sit high (the winner's curse), while the
/// variant's run on it is a new one: a comparison that includes the seed leans against the
/// variant.
pub fn render_without_tuning_seed(rows: &[AblationRow], seed: u64) -> String {
    let mut md = format!(
        "## The comparisons without the tuning seed ({seed})\n\nWhere a reference's runs come \
         from `--tune` (its own or table2's), its run on seed {seed} is the candidate that won \
         its dev selection, and its test accuracy may sit high (the winner's curse). A \
         variant's run on that seed is a new one, so a comparison that includes the seed leans \
         against the variant. The same comparisons over the other seeds, fewer of them (with 2 \
         seeds t(0.975, 1) = 12.7, and an interval of zero width means the two seeds agreed, \
         not certainty):\n\n\
         | variant | reference | task | ε | Δ (points) | 95% CI | n |\n|---|---|---|---|---|---|---|\n"
    );
    for r in rows.iter().filter(|r| r.claim.ours_delta.is_some()) {
        md.push_str(&format!("{}\n", table_row(r)));
    }
    md
}

/// The section of `ablations.md` with the comparisons of `also_compare_to` (`rows`,
/// [`also_comparisons`]): Δ, its 95% CI and the simultaneous CI over this family alone.
pub fn render_also(rows: &[AblationRow], tol: f64) -> Result<String> {
    let claims: Vec<super::compare::Claim> = rows.iter().map(|r| r.claim.clone()).collect();
    let precision = super::precision::precision(&claims, tol)?;
    let k = precision.first().map_or(0, |p| p.family_size);
    let mut md = format!(
        "## Also against {}\n\nEach variant against the methods of the preset's \
         `also_compare_to` too, paired by seed and test example as above. These comparisons are \
         a family of their own: the simultaneous CI (Bonferroni, K = {k}) holds for them \
         together, and they widen none of the intervals above. The same rows are in \
         `ablations_also.csv`.\n\n\
         | variant | reference | task | ε | Δ (points) | 95% CI | n | simultaneous CI (K = {k}) |\n\
         |---|---|---|---|---|---|---|---|\n",
        {
            let mut names: Vec<&str> = rows.iter().map(|r| r.reference.as_str()).collect();
            names.dedup();
            names.join(", ")
        }
    );
    for (i, r) in rows.iter().enumerate() {
        let simultaneous = precision
            .iter()
            .find(|p| std::ptr::eq(p.claim, &claims[i]))
            .and_then(|p| {
                let d = p.claim.ours_delta?;
                // As the precision section writes its simultaneous CIs.
                Some(format!(
                    "[{:+.1}, {:+.1}]",
                    d - p.family_half_width,
                    d + p.family_half_width
                ))
            })
            .unwrap_or_else(|| "–".into());
        md.push_str(&format!("{} {simultaneous} |\n", table_row(r)));
    }
    Ok(md)
}

/// The Δ axis of the forest plot: `[lo, hi]` with tick values, shared by every panel.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaAxis {
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
}

/// A round tick step giving about six ticks over `span`: 1, 2, 2.5 or 5 times a power of ten.
fn tick_step(span: f64) -> f64 {
    let raw = span / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw * 0.999)
        .unwrap_or(10.0 * magnitude)
}

/// The Δ axis for `rows`: it holds 0, every Δ and every CI, with a margin; each side reaches at
/// least a third of the other, so 0 sits near the middle. A CI reaching more than three times the
/// median reach of the rows with a CI (and beyond every Δ), or beyond ±100, is cut at the edge
/// (the plot marks the cut with an arrow and prints the bounds beside the row).
pub fn delta_axis(rows: &[&AblationRow]) -> DeltaAxis {
    let deltas: Vec<f64> = rows.iter().filter_map(|r| r.claim.ours_delta).collect();
    let cis: Vec<(f64, f64)> = rows.iter().filter_map(|r| r.claim.ci).collect();
    let mut reaches: Vec<f64> = cis.iter().map(|(l, h)| l.abs().max(h.abs())).collect();
    reaches.sort_by(f64::total_cmp);
    let max_delta = deltas.iter().fold(0f64, |m, d| m.max(d.abs()));
    let median = reaches.get(reaches.len() / 2).copied().unwrap_or(0.0);
    let cap = if median > 0.0 {
        (3.0 * median).max(max_delta).min(100.0)
    } else {
        100.0
    };
    let values = deltas
        .iter()
        .copied()
        .chain(cis.iter().flat_map(|&(l, h)| [l.max(-cap), h.min(cap)]));
    let (mut neg, mut pos) = values.fold((0f64, 0f64), |(n, p), v| (n.max(-v), p.max(v)));
    (neg, pos) = (neg.max(pos / 3.0) * 1.05, pos.max(neg / 3.0) * 1.05);
    if neg == 0.0 && pos == 0.0 {
        (neg, pos) = (1.0, 1.0);
    }
    let step = tick_step(neg + pos);
    let (lo, hi) = (-(neg / step).ceil() * step, (pos / step).ceil() * step);
    let n = ((hi - lo) / step).round() as i64;
    let ticks = (0..=n).map(|i| lo + i as f64 * step).collect();
    DeltaAxis { lo, hi, ticks }
}

/// `v` in points with its sign, a true minus and no `-0.0`.
fn signed(v: f64) -> String {
    if v.abs() < 0.05 {
        "0.0".into()
    } else {
        format!("{v:+.1}").replace('-', "−")
    }
}

/// A tick of the Δ axis: signed, without decimals where it is whole.
fn tick_label(t: f64) -> String {
    if t.abs() < 1e-9 {
        "0".into()
    } else if (t - t.round()).abs() < 1e-9 {
        format!("{t:+.0}").replace('-', "−")
    } else {
        format!("{t:+.1}").replace('-', "−")
    }
}

/// The label of a row: the comparison, its ε and the reference's accuracy (the level).
fn row_label(r: &AblationRow) -> String {
    let eps = match r.claim.epsilon.parse::<f64>() {
        Ok(_) => format!("ε {}", r.claim.epsilon),
        Err(_) => r.claim.epsilon.clone(),
    };
    let level = r
        .reference_accuracy
        .map_or("not run".into(), |a| format!("{a:.1}%"));
    format!("{} − {}, {eps} (ref {level})", r.variant, r.reference)
}

/// The numbers beside a row: Δ, its CI and the paired seeds.
fn row_numbers(r: &AblationRow) -> String {
    let c = &r.claim;
    match (c.ours_delta, c.ci) {
        (Some(d), Some((lo, hi))) => format!(
            "{} [{}, {}], n {}",
            signed(d),
            signed(lo),
            signed(hi),
            c.n_seeds
        ),
        (Some(d), None) => format!("{}, n {}: no CI", signed(d), c.n_seeds),
        (None, _) => c.why.clone(),
    }
}

/// Bold text at pixel size `px`, anchored at (left, vertical centre).
fn bold_style(px: f64, color: RGBColor) -> TextStyle<'static> {
    let plain = text_style(px, color, HPos::Left);
    TextStyle {
        font: plain.font.style(FontStyle::Bold),
        ..plain
    }
}

/// The message of a row without a CI, in the legend.
pub const NO_CI_LEGEND: &str = "one paired seed: no 95% CI";

/// `ablations.svg`: a forest plot of `rows` (one panel per task, in the order of `rows`): per
/// variant and ε a row labelled with the comparison and the reference's accuracy, the paired Δ
/// (points) as a dot with its 95% CI as a bar (a hollow dot without CI), a line at 0, and the
/// numbers beside it; rows under their group's label, groups and rows in the order of `rows`
/// (the grid's), each group in its colour. One Δ axis for every panel ([`delta_axis`]).
pub fn plot(rows: &[AblationRow], title: &str, path: &Path) -> Result<()> {
    let mut tasks: Vec<&str> = Vec::new();
    let mut groups: Vec<&str> = Vec::new();
    for r in rows {
        if !tasks.contains(&r.claim.task.as_str()) {
            tasks.push(&r.claim.task);
        }
        if !groups.contains(&r.group.as_str()) {
            groups.push(&r.group);
        }
    }
    if tasks.is_empty() {
        return Err(anyhow!("no comparison to plot"));
    }
    let all: Vec<&AblationRow> = rows.iter().collect();
    let axis = delta_axis(&all);
    let clipped = |r: &AblationRow| {
        r.claim
            .ci
            .map_or((false, false), |(l, h)| (l < axis.lo, h > axis.hi))
    };
    let any_clipped = rows.iter().any(|r| {
        let (l, h) = clipped(r);
        l || h
    });
    let color_of = |g: &str| {
        let i = groups.iter().position(|x| *x == g).unwrap_or(0);
        super::plot::COLORS[i % super::plot::COLORS.len()]
    };
    // Layout (pixels): label column | plot | numbers column.
    const TEXT: f64 = 12.0;
    const ROW_H: i32 = 20;
    const MARGIN: i32 = 16;
    const INDENT: i32 = 12;
    const PLOT_W: i32 = 440;
    let label_w = rows
        .iter()
        .map(|r| INDENT + text_width(&row_label(r), TEXT))
        // Bold runs about a tenth wider.
        .chain(groups.iter().map(|g| text_width(g, TEXT * 1.1)))
        .max()
        .unwrap_or(0);
    let numbers_header = "Δ [95% CI], paired seeds";
    let numbers_w = rows
        .iter()
        .map(|r| text_width(&row_numbers(r), TEXT))
        .chain([text_width(numbers_header, TEXT)])
        .max()
        .unwrap_or(0);
    let x0 = MARGIN + label_w + MARGIN;
    let x1 = x0 + PLOT_W;
    let xn = x1 + MARGIN;
    let px = |v: f64| x0 + ((v - axis.lo) / (axis.hi - axis.lo) * PLOT_W as f64).round() as i32;
    let legend_lines: Vec<&str> = [
        Some("Δ = variant − reference, test accuracy in points, mean over paired seeds; bar: 95% CI paired by seed and test example"),
        Some("each group's rows in its colour, under its label; ref = the reference's mean test accuracy"),
        any_clipped.then_some("a CI beyond the axis ends in an arrow at the edge; its bounds are in the right column"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let width = legend_lines
        .iter()
        .map(|l| text_width(l, TEXT))
        .chain([text_width(title, 15.0), xn + numbers_w - MARGIN])
        .max()
        .unwrap_or(0)
        + 2 * MARGIN;
    let head_h = 36 + 22 * (legend_lines.len() as i32 + 1);
    let panel_h = |task: &str| {
        let mine: Vec<&AblationRow> = rows.iter().filter(|r| r.claim.task == task).collect();
        let n_groups = groups
            .iter()
            .filter(|g| mine.iter().any(|r| r.group == **g))
            .count() as i32;
        30 + ROW_H * (mine.len() as i32 + n_groups) + 6 * n_groups + 48
    };
    let height = head_h + tasks.iter().map(|t| panel_h(t) + MARGIN).sum::<i32>();
    let mut svg = String::new();
    {
        let root = titled_canvas(&mut svg, width, height, title)?;
        let (dark, grey) = (DARK, GREY);
        // Legend: the two markers, then the lines in words.
        let mut y = 48;
        let lx = MARGIN + 8;
        root.draw(&PathElement::new(
            vec![(lx - 8, y), (lx + 8, y)],
            dark.stroke_width(2),
        ))?;
        root.draw(&Circle::new((lx, y), 4, dark.filled()))?;
        root.draw(&Text::new(
            "paired Δ with its 95% CI",
            (lx + 16, y),
            text_style(TEXT, dark, HPos::Left),
        ))?;
        let hx = lx + 24 + text_width("paired Δ with its 95% CI", TEXT) + 24;
        root.draw(&Circle::new((hx, y), 4, WHITE.filled()))?;
        root.draw(&Circle::new((hx, y), 4, dark.stroke_width(2)))?;
        root.draw(&Text::new(
            NO_CI_LEGEND,
            (hx + 12, y),
            text_style(TEXT, dark, HPos::Left),
        ))?;
        for line in &legend_lines {
            y += 22;
            root.draw(&Text::new(
                line.to_string(),
                (MARGIN, y),
                text_style(TEXT, grey, HPos::Left),
            ))?;
        }
        let mut top = head_h;
        for task in &tasks {
            let mine: Vec<&AblationRow> = rows.iter().filter(|r| r.claim.task == *task).collect();
            let bottom = top + panel_h(task);
            root.draw(&Text::new(
                format!("{task}: each variant minus its reference"),
                (MARGIN, top + 12),
                bold_style(13.0, dark),
            ))?;
            root.draw(&Text::new(
                numbers_header,
                (xn, top + 12),
                text_style(TEXT, grey, HPos::Left),
            ))?;
            let rows_top = top + 30;
            let axis_y = bottom - 48;
            // Grid lines at the ticks, the zero line over them.
            for t in &axis.ticks {
                let color = if t.abs() < 1e-12 {
                    dark
                } else {
                    RGBColor(225, 225, 225)
                };
                let w = if t.abs() < 1e-12 { 2 } else { 1 };
                root.draw(&PathElement::new(
                    vec![(px(*t), rows_top - 4), (px(*t), axis_y)],
                    color.stroke_width(w),
                ))?;
            }
            let mut y = rows_top;
            for group in &groups {
                let members: Vec<&&AblationRow> =
                    mine.iter().filter(|r| r.group == *group).collect();
                if members.is_empty() {
                    continue;
                }
                let color = color_of(group);
                root.draw(&Text::new(
                    group.to_string(),
                    (MARGIN, y + ROW_H / 2),
                    bold_style(TEXT, color),
                ))?;
                y += ROW_H;
                for r in members {
                    let cy = y + ROW_H / 2;
                    root.draw(&Text::new(
                        row_label(r),
                        (MARGIN + INDENT, cy),
                        text_style(TEXT, dark, HPos::Left),
                    ))?;
                    root.draw(&Text::new(
                        row_numbers(r),
                        (xn, cy),
                        text_style(TEXT, dark, HPos::Left),
                    ))?;
                    if let Some((lo, hi)) = r.claim.ci {
                        let (cut_lo, cut_hi) = clipped(r);
                        let (a, b) = (px(lo.max(axis.lo)), px(hi.min(axis.hi)));
                        root.draw(&PathElement::new(
                            vec![(a, cy), (b, cy)],
                            color.stroke_width(2),
                        ))?;
                        for (cut, x, dir) in [(cut_lo, a, -1), (cut_hi, b, 1)] {
                            if cut {
                                root.draw(&Polygon::new(
                                    vec![(x + 7 * dir, cy), (x, cy - 5), (x, cy + 5)],
                                    color.filled(),
                                ))?;
                            } else {
                                root.draw(&PathElement::new(
                                    vec![(x, cy - 4), (x, cy + 4)],
                                    color.stroke_width(2),
                                ))?;
                            }
                        }
                    }
                    if let Some(d) = r.claim.ours_delta {
                        if r.claim.ci.is_some() {
                            root.draw(&Circle::new((px(d), cy), 5, color.filled()))?;
                        } else {
                            root.draw(&Circle::new((px(d), cy), 5, WHITE.filled()))?;
                            root.draw(&Circle::new((px(d), cy), 5, color.stroke_width(2)))?;
                        }
                    }
                    y += ROW_H;
                }
                y += 6;
            }
            // The Δ axis.
            root.draw(&PathElement::new(
                vec![(x0, axis_y), (x1, axis_y)],
                dark.stroke_width(1),
            ))?;
            for t in &axis.ticks {
                root.draw(&PathElement::new(
                    vec![(px(*t), axis_y), (px(*t), axis_y + 5)],
                    dark.stroke_width(1),
                ))?;
                root.draw(&Text::new(
                    tick_label(*t),
                    (px(*t), axis_y + 14),
                    text_style(11.0, dark, HPos::Center),
                ))?;
            }
            root.draw(&Text::new(
                "Δ test accuracy, variant − reference (points)",
                ((x0 + x1) / 2, axis_y + 34),
                text_style(TEXT, dark, HPos::Center),
            ))?;
            top = bottom + MARGIN;
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

impl Estimate {
    /// The mean, then the CI's low and high ends (`None` with one seed), in the order of a
    /// table's three columns.
    pub fn with_ci(&self) -> [Option<f64>; 3] {
        [
            Some(self.mean),
            self.ci95.map(|c| c.0),
            self.ci95.map(|c| c.1),
        ]
    }
}

/// An estimate as three CSV cells (mean, CI low, CI high), empty where there is none.
pub(super) fn estimate_cells(e: Option<Estimate>) -> [String; 3] {
    e.map_or([None; 3], |e| e.with_ci()).map(fmt)
}

pub(super) fn estimate(xs: &[f64]) -> Option<Estimate> {
    if xs.is_empty() {
        return None;
    }
    Some(Estimate {
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
        ci95: super::summary::t_interval95(xs),
    })
}

/// The horizon family of grid method `m` among `methods`: the base of a horizon variant
/// (`steps_scale`), for the variant and for the base itself; `None` for any other method.
pub fn horizon_family(spec: &Spec, methods: &[String], m: &str) -> Option<String> {
    if let Some(v) = spec.variant.get(m) {
        return v.steps_scale.map(|_| v.base.clone());
    }
    methods
        .iter()
        .filter_map(|n| spec.variant.get(n))
        .any(|v| v.steps_scale.is_some() && v.base == m)
        .then(|| m.to_string())
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
    /// Over the seeds other than the tuning seed, as the plateau rule pairs them
    /// ([`super::plateau`]); `None` when those records have no dev accuracy.
    pub dev: Option<Estimate>,
    /// The seeds behind `dev`.
    pub n_dev_seeds: usize,
}

/// The horizon curves of `methods`: every variant with `steps_scale` and its base, per (task, ε),
/// with T read from each record's configuration, the final test and dev accuracy averaged over
/// seeds with 95% t-intervals (dev without the tuning seed, whose base run's dev accuracy is a
/// selected maximum). Empty when the grid has no horizon variant.
pub fn horizon(spec: &Spec, methods: &[String], records: &[CellRecord]) -> Vec<HorizonPoint> {
    let family = |m: &str| horizon_family(spec, methods, m);
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
        let unselected: Vec<&&CellRecord> =
            rs.iter().filter(|r| !r.seed_chose_settings()).collect();
        let dev: Vec<f64> = unselected.iter().filter_map(|r| r.dev_accuracy).collect();
        out.push(HorizonPoint {
            task,
            epsilon: eps.map(f64::from_bits),
            family,
            method,
            steps: t,
            n_seeds: rs.len(),
            test: estimate(&test).expect("a group has a record"),
            dev: (dev.len() == unselected.len())
                .then(|| estimate(&dev))
                .flatten(),
            n_dev_seeds: dev.len(),
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

/// `horizon.csv`: one row per (task, ε, family, T) (no file when there is none).
pub fn write_horizon_csv(points: &[HorizonPoint], path: &Path) -> Result<bool> {
    let rows = points
        .iter()
        .map(|p| {
            let mut row = vec![
                p.task.clone(),
                eps_label(p.epsilon),
                p.family.clone(),
                p.method.clone(),
                p.steps.to_string(),
                p.n_seeds.to_string(),
            ];
            row.extend(estimate_cells(Some(p.test)));
            row.push(p.n_dev_seeds.to_string());
            row.extend(estimate_cells(p.dev));
            row
        })
        .collect();
    super::summary::write_table(
        path,
        &[
            "task",
            "epsilon",
            "family",
            "method",
            "steps",
            "n_seeds",
            "test_mean",
            "test_ci_low",
            "test_ci_high",
            "n_dev_seeds",
            "dev_mean",
            "dev_ci_low",
            "dev_ci_high",
        ],
        rows,
    )
}

/// `horizon.svg`: per (task, ε) a row of two panels, test and dev accuracy (dev without the
/// tuning seed, as [`horizon`] gives it) against T (log2 axis, ticked at the T that ran); per
/// family a line through the means in its colour, each mean with
/// its 95% CI over seeds as a bar, a hollow marker where one seed left no CI. The families sit
/// slightly apart at a shared T so their bars never cover each other; the legend has its own
/// column at the right, so it covers no data.
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
    let color_of = |i: usize| super::plot::COLORS[i % super::plot::COLORS.len()];
    let log2 = |t: i64| (t.max(1) as f64).log2();
    let mut ts: Vec<i64> = points.iter().map(|p| p.steps).collect();
    ts.sort();
    ts.dedup();
    let (lo, hi) = (log2(ts[0]) - 0.4, log2(ts[ts.len() - 1]) + 0.4);
    // Family i of n sits this far (log2 units) from its T.
    let dodge = |i: usize| (i as f64 - (families.len() as f64 - 1.0) / 2.0) * 0.06;
    const TEXT: f64 = 12.0;
    const CHART_W: i32 = 380;
    const LEGEND_W: i32 = 230;
    const ROW_H: i32 = 330;
    let width = 2 * CHART_W + LEGEND_W;
    let height = 40 + ROW_H * panels.len() as i32;
    let mut svg = String::new();
    {
        let root = titled_canvas(&mut svg, width, height, title)?;
        let (dark, grey) = (DARK, GREY);
        for (row, (task, eps)) in panels.iter().enumerate() {
            let mine: Vec<&HorizonPoint> = points
                .iter()
                .filter(|p| p.task == *task && same_eps(p.epsilon, *eps))
                .collect();
            // One accuracy range for the row's two panels: every mean and CI, with a margin.
            let values = mine.iter().flat_map(|p| {
                [Some(p.test), p.dev]
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e.with_ci())
                    .flatten()
            });
            let (ymin, ymax) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
            let pad = ((ymax - ymin) * 0.1).max(1.0);
            let (ylo, yhi) = ((ymin - pad).max(0.0), (ymax + pad).min(100.0));
            let top = 40 + row as i32 * ROW_H;
            let area = root.clone().shrink((0, top), (width as u32, ROW_H as u32));
            let (charts, legend) = area.split_horizontally(2 * CHART_W);
            for (chart_area, which) in charts.split_evenly((1, 2)).iter().zip(["test", "dev"]) {
                let mut chart = ChartBuilder::on(chart_area)
                    .caption(
                        format!("{task}, ε = {}: {which} accuracy", eps_label(*eps)),
                        ("sans-serif", 13.0 * 1.24),
                    )
                    .margin(10)
                    .x_label_area_size(40)
                    .y_label_area_size(48)
                    .build_cartesian_2d(lo..hi, ylo..yhi)?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_labels(0)
                    .light_line_style(WHITE)
                    .bold_line_style(RGBColor(225, 225, 225))
                    .x_desc("T: steps, each method at its own batch size (log scale)")
                    .y_desc(format!("{which} accuracy (%)"))
                    .y_label_formatter(&accuracy_tick)
                    .label_style(("sans-serif", 11.0 * 1.24))
                    .axis_desc_style(("sans-serif", TEXT * 1.24))
                    .draw()?;
                // The T axis ticked at the T that ran.
                for &t in &ts {
                    let x = log2(t);
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, ylo), (x, yhi)],
                        RGBColor(225, 225, 225).stroke_width(1),
                    )))?;
                    let (px, py) = chart.backend_coord(&(x, ylo));
                    root.draw(&PathElement::new(
                        vec![(px, py), (px, py + 5)],
                        dark.stroke_width(1),
                    ))?;
                    root.draw(&Text::new(
                        t.to_string(),
                        (px, py + 14),
                        text_style(11.0, dark, HPos::Center),
                    ))?;
                }
                for (i, family) in families.iter().enumerate() {
                    let color = color_of(i);
                    let series: Vec<(f64, Estimate)> = mine
                        .iter()
                        .filter(|p| p.family == *family)
                        .filter_map(|p| {
                            let e = if which == "test" { Some(p.test) } else { p.dev };
                            e.map(|e| (log2(p.steps) + dodge(i), e))
                        })
                        .collect();
                    chart.draw_series(LineSeries::new(
                        series.iter().map(|(x, e)| (*x, e.mean)),
                        color.stroke_width(2),
                    ))?;
                    for (x, e) in &series {
                        if let Some((l, h)) = e.ci95 {
                            chart.draw_series(std::iter::once(PathElement::new(
                                vec![(*x, l.max(ylo)), (*x, h.min(yhi))],
                                color.stroke_width(2),
                            )))?;
                        }
                        let style = if e.ci95.is_some() {
                            color.filled()
                        } else {
                            WHITE.filled()
                        };
                        chart.draw_series(std::iter::once(Circle::new((*x, e.mean), 5, style)))?;
                        if e.ci95.is_none() {
                            chart.draw_series(std::iter::once(Circle::new(
                                (*x, e.mean),
                                5,
                                color.stroke_width(2),
                            )))?;
                        }
                    }
                }
            }
            // The legend column: each family's line and marker, then the markers in words.
            let mut y = 48;
            for (i, family) in families.iter().enumerate() {
                let color = color_of(i);
                legend.draw(&PathElement::new(
                    vec![(8, y), (32, y)],
                    color.stroke_width(2),
                ))?;
                legend.draw(&Circle::new((20, y), 5, color.filled()))?;
                legend.draw(&Text::new(
                    family.to_string(),
                    (40, y),
                    text_style(TEXT, dark, HPos::Left),
                ))?;
                y += 22;
            }
            // The markers in words, grey, each after its marker (if any).
            let note = |text: &str, x: i32, y: i32| {
                legend.draw(&Text::new(
                    text.to_string(),
                    (x, y),
                    text_style(TEXT, grey, HPos::Left),
                ))
            };
            y += 10;
            legend.draw(&PathElement::new(
                vec![(20, y - 8), (20, y + 8)],
                dark.stroke_width(2),
            ))?;
            note("bar: 95% CI over seeds", 40, y)?;
            y += 22;
            legend.draw(&Circle::new((20, y), 5, dark.stroke_width(2)))?;
            note("one seed: no CI", 40, y)?;
            y += 22;
            note("families set apart slightly at a T", 8, y)?;
            y += 22;
            note("dev: without the tuning seed", 8, y)?;
        }
        root.present()?;
    }
    atomic_file::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::target::compare::Verdict;

    /// A comparison row as `comparisons` writes it.
    fn row(
        variant: &str,
        reference: &str,
        group: &str,
        task: &str,
        delta: Option<f64>,
        ci: Option<(f64, f64)>,
    ) -> AblationRow {
        AblationRow {
            variant: variant.into(),
            reference: reference.into(),
            group: group.into(),
            reference_accuracy: delta.map(|_| 70.0 + variant.len() as f64),
            description: "d".into(),
            claim: Claim {
                claim: format!("{variant} - {reference}"),
                task: task.into(),
                epsilon: if variant.starts_with("calibrated") {
                    "non-private".into()
                } else {
                    "4".into()
                },
                paper_delta: None,
                ours_delta: delta,
                ci,
                n_seeds: match (delta, ci) {
                    (None, _) => 0,
                    (Some(_), None) => 1,
                    _ => 3,
                },
                verdict: Verdict::NotTestable,
                why: if delta.is_none() {
                    format!("{variant} not run")
                } else {
                    String::new()
                },
                open_tuning: String::new(),
                sample: None,
            },
        }
    }

    /// Two tasks of the committed groups with varied Δ and CIs: effects on both sides of 0, one
    /// seed without CI, one CI far wider than the others (cut at the edge), one variant not run.
    fn synthetic_rows() -> Vec<AblationRow> {
        let sel = "DP-ZOPO mask selection, against the smallest score";
        let ratio = "DP-ZOPO mask ratio, against 1%";
        let zoso = "DP-ZOSO ingredients, against DP-ZOSO (halving, λ = 5e-4)";
        let privacy = "cost of privacy, against DPZero";
        let bias = "label bias, against the zero-shot prompt";
        let mut rows = Vec::new();
        for (task, shift) in [("SST-2", 0.0), ("TREC", 1.5)] {
            rows.extend([
                row(
                    "zopo-largest",
                    "dp-zopo",
                    sel,
                    task,
                    Some(-6.2 + shift),
                    Some((-9.0 + shift, -3.4 + shift)),
                ),
                row(
                    "zopo-random",
                    "dp-zopo",
                    sel,
                    task,
                    Some(-1.1),
                    Some((-3.5, 1.3)),
                ),
                row(
                    "zopo-magnitude",
                    "dp-zopo",
                    sel,
                    task,
                    Some(0.4 - shift),
                    None,
                ),
                row(
                    "zopo-ratio-0.1pct",
                    "dp-zopo",
                    ratio,
                    task,
                    Some(-2.0),
                    Some((-4.1, 0.1)),
                ),
                row(
                    "zopo-ratio-10pct",
                    "dp-zopo",
                    ratio,
                    task,
                    Some(1.2 + shift),
                    Some((-0.9, 3.3 + shift)),
                ),
                row(
                    "zoso-no-halving",
                    "dp-zoso",
                    zoso,
                    task,
                    Some(-0.6),
                    Some((-2.2, 1.0)),
                ),
                row("zoso-prox", "dp-zoso", zoso, task, None, None),
                row(
                    "mezo-eps-inf",
                    "dpzero",
                    privacy,
                    task,
                    Some(4.8),
                    Some((2.9, 6.7 + shift)),
                ),
                row(
                    "calibrated",
                    "zero-shot",
                    bias,
                    task,
                    Some(3.0),
                    Some((-2.0, 38.0)),
                ),
            ]);
        }
        rows
    }

    fn summary(method: &str, epsilon: Option<f64>, accuracies: [f64; 2]) -> SummaryRow {
        SummaryRow {
            model: "m".into(),
            task: "SST-2".into(),
            method: method.into(),
            epsilon,
            mean: (accuracies[0] + accuracies[1]) / 2.0,
            sd: None,
            n_seeds: 2,
            ci95: None,
            seeds: vec![13, 21],
            accuracies: accuracies.to_vec(),
            outcomes: vec![None, None],
            data: "real".into(),
        }
    }

    /// The committed `experiments/ablations.toml`.
    fn committed_spec() -> Spec {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Spec::load(&root.join("experiments/ablations.toml")).unwrap()
    }

    /// Summary rows at ε 4 of DPZero, DP-ZOPO, the random mask and the 10% mask, two seeds each
    /// with these accuracies.
    fn mask_rows(accuracies: [[f64; 2]; 4]) -> Vec<SummaryRow> {
        ["dpzero", "dp-zopo", "zopo-random", "zopo-ratio-10pct"]
            .into_iter()
            .zip(accuracies)
            .map(|(method, a)| summary(method, Some(4.0), a))
            .collect()
    }

    /// Each comparison carries its variant's group from the committed spec and the reference's
    /// mean accuracy, in the grid's order (the order the figure draws); the csv writes both.
    #[test]
    fn comparisons_carry_the_group_and_the_reference_level() {
        let spec = committed_spec();
        let methods = methods_of(&spec, "mini-sst2-mask").unwrap();
        let rows = mask_rows([[80.0, 82.0], [76.0, 79.0], [77.0, 81.0], [75.0, 76.0]]);
        let got = comparisons(&spec, methods, &rows, &[]);
        let run: Vec<(&str, &str, Option<f64>)> = got
            .iter()
            .filter(|r| r.claim.ours_delta.is_some())
            .map(|r| (r.variant.as_str(), r.group.as_str(), r.reference_accuracy))
            .collect();
        assert_eq!(
            run,
            [
                (
                    "zopo-random",
                    "DP-ZOPO mask selection, against the smallest score",
                    Some(77.5)
                ),
                (
                    "zopo-ratio-10pct",
                    "DP-ZOPO mask ratio, against 1%",
                    Some(77.5)
                ),
            ]
        );
        assert!((got[0].claim.ours_delta.unwrap() - 1.5).abs() < 1e-12);
        let path = std::env::temp_dir().join(format!("dpzo-ablations-{}.csv", std::process::id()));
        write_csv(&got, &path).unwrap();
        let csv = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            csv.contains(",2,77.50,\"DP-ZOPO mask selection, against the smallest score\","),
            "{csv}"
        );
        // Without the tuning seed 13 (seed 21 alone: no CI): the rows that have a Δ, named.
        let untouched = crate::target::compare::without_tuning_seed(&rows, 13).unwrap();
        let again = comparisons(&spec, methods, &untouched, &[]);
        let md = render_without_tuning_seed(&again, 13);
        assert!(md.contains("without the tuning seed (13)"), "{md}");
        assert!(
            md.contains("| zopo-random | dp-zopo | SST-2 | 4 | +2.0 |"),
            "{md}"
        );
        assert!(
            md.contains("| zopo-ratio-10pct | dp-zopo | SST-2 | 4 | -3.0 |"),
            "{md}"
        );
        assert!(
            !md.contains("zopo-largest"),
            "a variant not run has no row: {md}"
        );
    }

    /// A row one of whose methods has an open dev search on its task is provisional: its
    /// `open_tuning` names the group, ablations.csv's last column and the markdown's CI cell say
    /// so. Rows of other methods, and the same method on another task, are left unmarked.
    #[test]
    fn a_comparison_over_an_open_search_is_marked_provisional() {
        let spec = committed_spec();
        let methods = methods_of(&spec, "mini-sst2-mask").unwrap();
        let rows = mask_rows([[80.0, 82.0], [76.0, 79.0], [77.0, 81.0], [75.0, 76.0]]);
        let open = [
            OpenGroup {
                task: "SST-2".into(),
                method: "zopo-ratio-10pct".into(),
                why: "winner at learning_rate=top".into(),
            },
            OpenGroup {
                task: "TREC".into(),
                method: "zopo-random".into(),
                why: "1 of 5 candidates not run".into(),
            },
        ];
        let got = comparisons(&spec, methods, &rows, &open);
        let find = |v: &str| got.iter().find(|r| r.variant == v).unwrap();
        assert_eq!(
            find("zopo-ratio-10pct").claim.open_tuning,
            "zopo-ratio-10pct: winner at learning_rate=top"
        );
        assert!(find("zopo-ratio-10pct").claim.why.contains("provisional"));
        assert_eq!(find("zopo-random").claim.open_tuning, "");
        let md = render_markdown(&spec, "mini-sst2-mask", &got);
        let line = md
            .lines()
            .find(|l| l.starts_with("| zopo-ratio-10pct |"))
            .unwrap();
        assert!(
            line.contains("(provisional: zopo-ratio-10pct: winner at learning_rate=top)"),
            "{line}"
        );
        let path =
            std::env::temp_dir().join(format!("dpzo-ablations-open-{}.csv", std::process::id()));
        write_csv(&got, &path).unwrap();
        let csv = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            csv.lines().next().unwrap().ends_with(",open_tuning"),
            "{csv}"
        );
        assert!(
            csv.lines().any(|l| l.starts_with("zopo-ratio-10pct,")
                && l.ends_with(",zopo-ratio-10pct: winner at learning_rate=top")),
            "{csv}"
        );
    }

    /// `also_compare_to` (mini-snli-mask: DPZero): every variant against DPZero too, never a
    /// base method, nor a variant against the reference it names; the section counts its own
    /// family (K: the rows with a CI) and marks a variant not run. A preset without the list
    /// has no such rows.
    #[test]
    fn also_compare_to_adds_each_variant_against_the_listed_method_as_a_family_of_its_own() {
        let spec = committed_spec();
        let methods = methods_of(&spec, "mini-snli-mask").unwrap();
        let rows = mask_rows([[35.0, 37.0], [38.0, 41.0], [36.0, 39.0], [35.0, 36.0]]);
        let also = also_comparisons(&spec, "mini-snli-mask", methods, &rows, &[]).unwrap();
        let pairs: Vec<(&str, &str, Option<f64>)> = also
            .iter()
            .map(|r| (r.variant.as_str(), r.reference.as_str(), r.claim.ours_delta))
            .collect();
        assert_eq!(
            pairs,
            [
                ("zopo-random", "dpzero", Some(1.5)),
                ("zopo-ratio-0.1pct", "dpzero", None),
                ("zopo-ratio-10pct", "dpzero", Some(-0.5)),
            ]
        );
        let md = render_also(&also, 2.0).unwrap();
        assert!(md.starts_with("## Also against dpzero"), "{md}");
        assert!(md.contains("simultaneous CI (K = 2)"), "{md}");
        assert!(
            md.contains("| zopo-random | dpzero | SST-2 | 4 | +1.5 |"),
            "{md}"
        );
        let not_run = md
            .lines()
            .find(|l| l.contains("zopo-ratio-0.1pct"))
            .unwrap();
        assert!(not_run.ends_with("| – |"), "{not_run}");
        let sst2 = methods_of(&spec, "mini-sst2-mask").unwrap();
        assert!(also_comparisons(&spec, "mini-sst2-mask", sst2, &rows, &[])
            .unwrap()
            .is_empty());
    }

    /// The Δ axis holds 0 and every Δ, puts 0 near the middle, and cuts only the CI that reaches
    /// far beyond the others; with every Δ and CI at 0 (the smoke run) it is ±1.
    #[test]
    fn the_delta_axis_holds_every_delta_and_cuts_only_the_outlying_ci() {
        let rows = synthetic_rows();
        let all: Vec<&AblationRow> = rows.iter().collect();
        let axis = delta_axis(&all);
        assert!(
            axis.lo < -9.0 && axis.hi > 8.2 && axis.ticks.contains(&0.0),
            "{axis:?}"
        );
        assert!(
            axis.hi < 38.0,
            "the outlying CI stretches the axis: {axis:?}"
        );
        assert!(axis.lo >= -axis.hi && axis.hi <= -3.0 * axis.lo, "{axis:?}");
        let cut: Vec<&str> = rows
            .iter()
            .filter(|r| r.claim.ci.is_some_and(|(l, h)| l < axis.lo || h > axis.hi))
            .map(|r| r.variant.as_str())
            .collect();
        assert_eq!(cut, ["calibrated", "calibrated"]);
        let zero = row(
            "zopo-random",
            "dp-zopo",
            "g",
            "SST-2",
            Some(0.0),
            Some((0.0, 0.0)),
        );
        assert_eq!(
            delta_axis(&[&zero]),
            DeltaAxis {
                lo: -1.0,
                hi: 1.0,
                ticks: vec![-1.0, -0.5, 0.0, 0.5, 1.0]
            }
        );
    }

    /// The forest plot writes each comparison's label once per task, a zero line at the "0"
    /// tick, a hollow marker (and its legend) for the row without CI, each group's label, and the
    /// arrow note for the cut CI. The figure is left at `<tmp>/dpzo-ablation-forest.svg` for a
    /// look (`rsvg-convert -w 1200 ... -o x.png`).
    #[test]
    fn the_forest_plot_labels_every_row_and_marks_the_rows_without_ci() {
        let rows = synthetic_rows();
        let path = std::env::temp_dir().join("dpzo-ablation-forest.svg");
        plot(&rows, "Ablations — synthetic, model m", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        // The text elements, one line each between their tags.
        let texts: Vec<String> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim()))
            .map(|t| t.replace("&apos;", "'"))
            .collect();
        let count = |s: &str| texts.iter().filter(|t| *t == s).count();
        for r in rows.iter().filter(|r| r.claim.task == "SST-2") {
            assert_eq!(count(&row_label(r)), 2, "{}: {texts:?}", row_label(r));
        }
        assert_eq!(count("zopo-random − dp-zopo, ε 4 (ref 81.0%)"), 2);
        assert_eq!(count("calibrated − zero-shot, non-private (ref 80.0%)"), 2);
        assert_eq!(count("zoso-prox − dp-zoso, ε 4 (ref not run)"), 2);
        assert_eq!(count("zoso-prox not run"), 2);
        assert_eq!(count("+3.0 [−2.0, +38.0], n 3"), 2);
        assert_eq!(count("+0.4, n 1: no CI"), 1);
        assert_eq!(count(NO_CI_LEGEND), 1);
        assert!(texts
            .iter()
            .any(|t| t.contains("ends in an arrow at the edge")));
        for g in ["DP-ZOPO mask selection", "DP-ZOPO mask ratio", "label bias"] {
            let n = texts.iter().filter(|t| t.starts_with(g)).count();
            assert_eq!(n, 2, "{g}");
        }
        assert_eq!(count("SST-2: each variant minus its reference"), 1);
        // Hollow markers: one per task for zopo-magnitude, one in the legend.
        let hollow = crate::target::plot::hollow_circles(&svg);
        assert_eq!(hollow, 3, "{svg}");
        // The zero line: a vertical line at the x of each panel's "0" tick.
        let zero_x: Vec<&str> = svg
            .split("<text")
            .filter(|t| {
                t.split_once('>')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with("0\n"))
            })
            .filter_map(|t| t.split("x=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(zero_x.len(), 2, "{svg}");
        let vertical = |x: &str| {
            svg.split("points=\"")
                .skip(1)
                .filter_map(|p| p.split('"').next())
                .any(|p| {
                    let xs: Vec<&str> = p
                        .split_whitespace()
                        .filter_map(|q| q.split(',').next())
                        .collect();
                    xs.len() == 2 && xs.iter().all(|v| *v == x)
                })
        };
        assert!(zero_x.iter().all(|x| vertical(x)), "{zero_x:?}");
        // Nothing outside the figure: each text's extent (at 0.6 em a character, as laid out)
        // within the width, each y within the height.
        let attr = |el: &str, name: &str| -> f64 {
            let key = format!(" {name}=\"");
            el.split(&key)
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let head = svg.split('>').next().unwrap();
        let (width, height) = (attr(head, "width"), attr(head, "height"));
        for el in svg.split("<text").skip(1) {
            let (tag, rest) = el.split_once('>').unwrap();
            let text = rest.split_once("</text>").unwrap().0.trim();
            let (x, y, size) = (attr(tag, "x"), attr(tag, "y"), attr(tag, "font-size"));
            let w = text.chars().count() as f64 * 0.6 * size;
            let (left, right) = match tag.split("text-anchor=\"").nth(1).unwrap() {
                a if a.starts_with("start") => (x, x + w),
                a if a.starts_with("end") => (x - w, x),
                _ => (x - w / 2.0, x + w / 2.0),
            };
            assert!(
                left >= 0.0 && right <= width,
                "{text}: {left}..{right} of {width}"
            );
            assert!(y > 0.0 && y < height, "{text}: y {y} of {height}");
        }
    }

    /// mini-horizon's shape: three families at three T each, test and dev with CIs, one point of
    /// one seed (no CI) and one without dev.
    fn synthetic_horizon() -> Vec<HorizonPoint> {
        let est = |mean: f64, half: Option<f64>| Estimate {
            mean,
            ci95: half.map(|h| (mean - h, mean + h)),
        };
        let mut out = Vec::new();
        for (family, steps, test, dev) in [
            (
                "dp-ft",
                [150, 300, 600],
                [78.0, 84.0, 86.5],
                [76.0, 82.0, 85.0],
            ),
            (
                "dpzero",
                [600, 1200, 2400],
                [80.0, 83.5, 84.0],
                [79.0, 82.5, 83.0],
            ),
            (
                "dp-zoso",
                [600, 1200, 2400],
                [81.0, 84.5, 85.5],
                [80.5, 83.0, 84.5],
            ),
        ] {
            for i in 0..3 {
                let one_seed = family == "dp-ft" && i == 0;
                out.push(HorizonPoint {
                    task: "SST-2".into(),
                    epsilon: Some(4.0),
                    family: family.into(),
                    method: format!("{family}-{}", steps[i]),
                    steps: steps[i],
                    n_seeds: if one_seed { 1 } else { 3 },
                    test: est(test[i], (!one_seed).then_some(1.5 + i as f64)),
                    dev: (family != "dpzero" || i != 2).then(|| est(dev[i], Some(2.0))),
                    n_dev_seeds: if family != "dpzero" || i != 2 { 3 } else { 0 },
                });
            }
        }
        out
    }

    /// The horizon figure, left at `<tmp>/dpzo-ablation-horizon.svg` for a look: every family
    /// named in the legend for test and dev, the one-seed point said so.
    #[test]
    fn the_horizon_plot_names_every_series() {
        let points = synthetic_horizon();
        let path = std::env::temp_dir().join("dpzo-ablation-horizon.svg");
        plot_horizon(&points, "Horizon — synthetic, model m", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim()))
            .collect();
        for label in [
            "dp-ft",
            "dpzero",
            "dp-zoso",
            "SST-2, ε = 4: test accuracy",
            "SST-2, ε = 4: dev accuracy",
            "one seed: no CI",
        ] {
            assert_eq!(
                texts.iter().filter(|t| **t == label).count(),
                1,
                "{label}: {texts:?}"
            );
        }
        // Ticks at the T that ran, not at powers of two between them.
        for t in ["150", "300", "600", "1200", "2400"] {
            assert!(texts.contains(&t), "{t}: {texts:?}");
        }
        assert!(!texts.contains(&"181"), "{texts:?}");
    }

    /// A mini-horizon SST-2 record at ε 4 of `method`, `seed` and T = `steps`.
    pub(in crate::target) fn record(
        method: &str,
        seed: u64,
        steps: i64,
        test: f64,
        dev: Option<f64>,
    ) -> CellRecord {
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
        let spec = committed_spec();
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
        assert!(write_horizon_csv(&points, &dir.join("horizon.csv")).unwrap());
        let csv = std::fs::read_to_string(dir.join("horizon.csv")).unwrap();
        assert!(csv.contains("SST-2,4,dpzero,dpzero,1200,3,82.00,"), "{csv}");
        plot_horizon(&points, "t", &dir.join("horizon.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.join("horizon.svg")).unwrap();
        assert!(
            svg.contains("T: steps, each method at its own batch size (log scale)")
                && svg.contains("SST-2, ε = 4: dev accuracy")
        );
        let _ = std::fs::remove_dir_all(&dir);
        // The smoke and mini grids have no horizon variant: nothing to draw.
        let mini = methods_of(&spec, "mini").unwrap();
        assert!(horizon(&spec, mini, &records).is_empty());

        // Records tuned on seed 13: dev leaves that seed out (72 and 77), test keeps it.
        let note: super::super::tune::TuningNote = serde_json::from_value(serde_json::json!({
            "tuning_seed": 13, "candidates": 5, "selected": 3,
            "selected_settings": {}, "selected_dev_accuracy": 70.0,
            "epsilon_run": 4.0, "epsilon_procedure": 8.0, "runs_composed": 6,
            "accountant": "prv", "delta": 1e-3
        }))
        .unwrap();
        for r in &mut records {
            r.tuning = Some(note.clone());
        }
        let base = horizon(&spec, methods, &records).remove(2);
        assert_eq!((base.n_seeds, base.n_dev_seeds), (3, 2));
        assert!((base.test.mean - 82.0).abs() < 1e-12);
        assert!((base.dev.unwrap().mean - 74.5).abs() < 1e-12);
    }
}
