//! `repro mask-anatomy`: where DP-ZOPO's data-free mask falls in the model, and how much of it
//! the task's training data gives a gradient at all.
//!
//! For one run of a grid (default: table2 mini's DP-ZOPO on SST-2, seed and score settings as
//! that run has them), the mask is computed as the trainer computes it at the first stage
//! (`trainer::optim::mask`: `data_free_scores`, then `select_mask`) under four selections: the
//! released smallest |Hg · |θ||, the largest, the smallest |θ| alone, and a uniformly random
//! subset. Per selection and parameter group (embedding, attention, MLP, norm, head, other), the
//! CSV counts the masked coordinates. It also counts how many of them are *live*: a coordinate
//! of the input embedding is live only in the row of a token that occurs in the training inputs
//! or is a label word (the other rows get no gradient from this task, whatever the step); a row
//! of an untied head only for a label word; every other coordinate is counted live. No training
//! example enters the mask, so none of this costs privacy; the live count reads the training
//! inputs' token ids, and the CSV publishes only counts. `--exposure` adds, per test example, how
//! many of its tokens are in rows that no training input reaches and the mask does (the test
//! inputs are public; the counts still tell which training tokens a test example lacks).

use super::throughput::{setup, RunChoice};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tch::Kind;
use trainer::optim::mask::{
    data_free_scores, is_token_embedding, select_mask, MaskScore, MaskScoreSettings, MaskSelection,
};
use trainer::optim::params::TrainableParams;

#[derive(clap::Args, Debug)]
pub struct MaskAnatomyArgs {
    #[command(flatten)]
    pub run: RunChoice,
    /// The run whose mask settings (ratio, the score's μ and queries) and seed are used.
    #[arg(long, default_value = "dp-zopo")]
    pub method: String,
    /// CSV to write (one row per selection and parameter group).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write, per example of the run's test split (in the order its record lists them),
    /// how many of its distinct tokens no training input uses, and under each selection how
    /// many of those tokens' embedding rows the mask reaches and with how many coordinates.
    #[arg(long)]
    pub exposure: Option<PathBuf>,
    /// Also compute the released (smallest-score) mask at each of these seeds and report the
    /// share of the run seed's mask that each also selects (the score's random direction is
    /// drawn from the run's seed): is the mask the same across a grid's seeds? Two independent
    /// random masks of ratio r share r of their coordinates. Needs `--overlap`.
    #[arg(long, value_delimiter = ',', requires = "overlap")]
    pub overlap_seeds: Vec<u64>,
    /// CSV for `--overlap-seeds`: one row per seed and parameter group.
    #[arg(long, requires = "overlap_seeds")]
    pub overlap: Option<PathBuf>,
}

/// The selections compared: the released one first.
const SELECTIONS: [(&str, MaskScore, MaskSelection); 4] = [
    (
        "smallest-score",
        MaskScore::HessianGradient,
        MaskSelection::Smallest,
    ),
    (
        "largest-score",
        MaskScore::HessianGradient,
        MaskSelection::Largest,
    ),
    ("magnitude", MaskScore::Magnitude, MaskSelection::Smallest),
    ("random", MaskScore::Random, MaskSelection::Smallest),
];

/// Parameter groups, by tensor name across the three model families; `Group as usize` indexes
/// [`GROUPS`], their names in the CSV.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Group {
    Embedding,
    Attention,
    Mlp,
    Norm,
    Head,
    Other,
}

const GROUPS: [&str; 6] = ["embedding", "attention", "mlp", "norm", "head", "other"];

/// The group of tensor `name` (Llama, OPT and RoBERTa names).
fn group_of(name: &str) -> Group {
    let has = |parts: &[&str]| parts.iter().any(|p| name.contains(p));
    if has(&["lm_head"]) {
        Group::Head
    } else if has(&["embed", "embeddings"]) {
        Group::Embedding
    } else if has(&["norm", "LayerNorm"]) {
        Group::Norm
    } else if has(&["attn", "attention"]) {
        Group::Attention
    } else if has(&["mlp", "intermediate", "fc1", "fc2", "output.dense"]) {
        Group::Mlp
    } else {
        Group::Other
    }
}

/// Per group: (parameters, masked, masked and live).
type Counts = [(u64, u64, u64); GROUPS.len()];

/// Counts of `mask` (flat indices per tensor) over `params` (name, shape). `input_rows` are the
/// token rows the training inputs reach, `label_rows` the label words' rows.
fn count(
    params: &[(String, Vec<i64>)],
    mask: &[(String, Vec<i64>)],
    input_rows: &BTreeSet<i64>,
    label_rows: &BTreeSet<i64>,
) -> Result<Counts> {
    let mut counts: Counts = [(0, 0, 0); GROUPS.len()];
    for (name, shape) in params {
        counts[group_of(name) as usize].0 += shape.iter().product::<i64>() as u64;
    }
    for (name, indices) in mask {
        let shape = params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_slice())
            .with_context(|| format!("the mask names {name}, which is not a trainable tensor"))?;
        let width = if shape.len() == 2 { shape[1] } else { 1 };
        let live_rows: Option<BTreeSet<i64>> = if is_token_embedding(name) {
            Some(input_rows.union(label_rows).copied().collect())
        } else if group_of(name) == Group::Head {
            Some(label_rows.clone())
        } else {
            None
        };
        let live = match &live_rows {
            Some(rows) => indices
                .iter()
                .filter(|&&i| rows.contains(&(i / width)))
                .count(),
            None => indices.len(),
        };
        let c = &mut counts[group_of(name) as usize];
        c.1 += indices.len() as u64;
        c.2 += live as u64;
    }
    Ok(counts)
}

pub fn run(args: MaskAnatomyArgs) -> Result<()> {
    let s = setup(&args.run, &args.method)?;
    let task = s.cells.encoded_train(&s.run)?;
    let model = s.cells.model(Kind::Float)?;
    let params = TrainableParams::from_model(&model)?;
    let shapes: Vec<(String, Vec<i64>)> = params
        .named()
        .iter()
        .map(|(n, t)| (n.clone(), t.size()))
        .collect();
    let input_rows: BTreeSet<i64> = task
        .examples
        .iter()
        .flat_map(|e| e.input_ids.iter().copied())
        .collect();
    let first = task.batch(&[0], s.device)?;
    let label_rows: BTreeSet<i64> =
        Vec::<i64>::try_from(&first.label_word_ids.to_device(tch::Device::Cpu))?
            .into_iter()
            .collect();
    let base = s.config.mask.score;
    println!(
        "{} {} seed {}: ratio {}, score μ {}, {} queries; {} training examples reach {} token rows, {} label words",
        s.run.task,
        args.method,
        s.config.seed,
        base.ratio,
        base.zo_eps,
        base.queries,
        task.examples.len(),
        input_rows.len(),
        label_rows.len()
    );
    let embedding = shapes
        .iter()
        .find(|(n, _)| is_token_embedding(n))
        .map(|(n, shape)| (n.clone(), shape.get(1).copied().unwrap_or(1)));
    if let Some((name, _)) = &embedding {
        let table = &params
            .named()
            .iter()
            .find(|(n, _)| n == name)
            .context("an embedding")?
            .1;
        println!(
            "token embedding {name}: RMS of its entries {:.4}",
            table.square().mean(Kind::Double).sqrt().double_value(&[])
        );
    }
    // Per selection: masked coordinates per token-embedding row.
    let mut masked_rows: Vec<std::collections::BTreeMap<i64, u64>> = Vec::new();
    // The released selection's mask (the first of SELECTIONS), for `--overlap-seeds`.
    let mut released: Option<Vec<(String, Vec<i64>)>> = None;
    let mut rows = Vec::new();
    for (label, kind, selection) in SELECTIONS {
        let settings = MaskScoreSettings {
            kind,
            selection,
            ..base
        };
        let mask = mask_indices(
            &model,
            &params,
            &first.label_word_ids,
            &settings,
            s.config.seed,
        )?;
        let mut per_row = std::collections::BTreeMap::new();
        if let Some((name, width)) = &embedding {
            for (_, indices) in mask.iter().filter(|(n, _)| n == name) {
                for i in indices {
                    *per_row.entry(i / width).or_insert(0u64) += 1;
                }
            }
        }
        masked_rows.push(per_row);
        let counts = count(&shapes, &mask, &input_rows, &label_rows)?;
        if released.is_none() {
            released = Some(mask);
        }
        let total: u64 = counts.iter().map(|c| c.1).sum();
        let live: u64 = counts.iter().map(|c| c.2).sum();
        println!(
            "{label}: {total} coordinates, {:.1}% in the embedding, {:.1}% live",
            100.0 * counts[0].1 as f64 / total as f64,
            100.0 * live as f64 / total as f64
        );
        for (group, (size, masked, live)) in GROUPS.iter().zip(counts) {
            if size == 0 {
                continue;
            }
            rows.push(vec![
                label.to_string(),
                group.to_string(),
                size.to_string(),
                masked.to_string(),
                live.to_string(),
                format!("{:.2}", 100.0 * masked as f64 / total as f64),
                format!("{:.3}", 100.0 * masked as f64 / size as f64),
            ]);
        }
    }
    let header = [
        "selection",
        "group",
        "parameters",
        "masked",
        "masked_live",
        "share_of_mask",
        "percent_of_group",
    ];
    crate::target::summary::write_table(&args.out, &header, rows)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    if let Some(path) = &args.overlap {
        // The released selection, the first of SELECTIONS, as `released` holds at the run's seed.
        let (_, kind, selection) = SELECTIONS[0];
        let settings = MaskScoreSettings {
            kind,
            selection,
            ..base
        };
        let label_words = &first.label_word_ids;
        let own = released
            .as_deref()
            .context("the released selection's mask")?;
        let mut rows = Vec::new();
        for &seed in &args.overlap_seeds {
            let other = mask_indices(&model, &params, label_words, &settings, seed)?;
            let per_group = overlap(own, &other);
            let (shared, total) = per_group
                .iter()
                .fold((0, 0), |(s, t), g| (s + g.1, t + g.2));
            println!(
                "smallest-score mask of seed {seed}: {shared} of seed {}'s {total} coordinates ({:.1}%; two independent random masks share {:.1}%)",
                s.config.seed,
                100.0 * shared as f64 / total.max(1) as f64,
                100.0 * base.ratio
            );
            for (group, shared, total) in per_group {
                rows.push(vec![
                    s.config.seed.to_string(),
                    seed.to_string(),
                    group.to_string(),
                    total.to_string(),
                    shared.to_string(),
                    format!("{:.2}", 100.0 * shared as f64 / total.max(1) as f64),
                ]);
            }
        }
        let header = [
            "seed",
            "other_seed",
            "group",
            "masked",
            "also_masked_by_other_seed",
            "percent_shared",
        ];
        crate::target::summary::write_table(path, &header, rows)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.exposure {
        let test = s.cells.encoded(&s.run, crate::target::cell::Split::Test)?;
        let seen: BTreeSet<i64> = input_rows.union(&label_rows).copied().collect();
        let tokens: Vec<BTreeSet<i64>> = test
            .examples
            .iter()
            .map(|e| e.input_ids.iter().copied().collect())
            .collect();
        let rows = exposure_rows(&tokens, &seen, &masked_rows);
        let exposed = rows.iter().filter(|r| r[3] != "0").count();
        let unseen = rows.iter().filter(|r| r[2] != "0").count();
        let mut header = vec![
            "example".to_string(),
            "tokens".into(),
            "unseen_tokens".into(),
        ];
        for (label, _, _) in SELECTIONS {
            header.push(format!("exposed_rows_{label}"));
            header.push(format!("exposed_coordinates_{label}"));
        }
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        crate::target::summary::write_table(path, &header, rows)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "test: {} examples, {unseen} with a token no training input uses, {exposed} of them \
             in a row the released mask reaches; wrote {}",
            test.examples.len(),
            path.display()
        );
    }
    Ok(())
}

/// The mask `settings` select at `seed` (first stage), as flat indices per tensor, in the
/// order `select_mask` gives them.
fn mask_indices(
    model: &dyn trainer::model::LabelWordModel,
    params: &TrainableParams,
    label_word_ids: &tch::Tensor,
    settings: &MaskScoreSettings,
    seed: u64,
) -> Result<Vec<(String, Vec<i64>)>> {
    let scores = data_free_scores(model, params, label_word_ids, settings, seed, 0)?;
    select_mask(&scores, settings.ratio, settings.selection, None)?
        .into_iter()
        .map(|(n, t)| Ok((n, Vec::<i64>::try_from(&t)?)))
        .collect()
}

/// Per parameter group with a coordinate in `mask` (its name in [`GROUPS`]): coordinates of
/// `mask` that `other` also selects, and coordinates of `mask`.
fn overlap(
    mask: &[(String, Vec<i64>)],
    other: &[(String, Vec<i64>)],
) -> Vec<(&'static str, u64, u64)> {
    let mut per_group: [(u64, u64); GROUPS.len()] = [(0, 0); GROUPS.len()];
    for (name, indices) in mask {
        let theirs: BTreeSet<i64> = other
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, i)| i.iter().copied())
            .collect();
        let g = &mut per_group[group_of(name) as usize];
        g.0 += indices.iter().filter(|i| theirs.contains(i)).count() as u64;
        g.1 += indices.len() as u64;
    }
    GROUPS
        .into_iter()
        .zip(per_group)
        .filter(|(_, (_, total))| *total > 0)
        .map(|(g, (shared, total))| (g, shared, total))
        .collect()
}

/// The exposure CSV's rows (`--exposure`): per example (its distinct tokens), the number of
/// tokens outside `seen`, then per selection (masked coordinates per embedding row) the unseen
/// tokens whose row the mask reaches and the masked coordinates in those rows.
fn exposure_rows(
    examples: &[BTreeSet<i64>],
    seen: &BTreeSet<i64>,
    masked_rows: &[std::collections::BTreeMap<i64, u64>],
) -> Vec<Vec<String>> {
    examples
        .iter()
        .enumerate()
        .map(|(i, tokens)| {
            let unseen: Vec<i64> = tokens.difference(seen).copied().collect();
            let mut row = vec![
                i.to_string(),
                tokens.len().to_string(),
                unseen.len().to_string(),
            ];
            for per_row in masked_rows {
                let hits: Vec<u64> = unseen
                    .iter()
                    .filter_map(|t| per_row.get(t))
                    .copied()
                    .collect();
                row.push(hits.len().to_string());
                row.push(hits.iter().sum::<u64>().to_string());
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_three_families_names() {
        for (name, group) in [
            ("embed_tokens.weight", "embedding"),
            ("embeddings.word_embeddings.weight", "embedding"),
            ("layers.3.self_attn.q_proj.weight", "attention"),
            ("layers.3.mlp.down_proj.weight", "mlp"),
            ("layers.3.input_layernorm.weight", "norm"),
            ("decoder.layers.0.fc1.weight", "mlp"),
            ("lm_head.weight", "head"),
        ] {
            assert_eq!(GROUPS[group_of(name) as usize], group, "{name}");
        }
    }

    /// Example {1, 2, 5}: with 1 seen, tokens 2 and 5 are unseen; a mask reaching rows 2 (three
    /// coordinates) and 7 exposes one of them with three coordinates.
    #[test]
    fn exposure_counts_unseen_tokens_in_masked_rows() {
        let examples = vec![BTreeSet::from([1, 2, 5]), BTreeSet::from([1])];
        let seen = BTreeSet::from([1]);
        let masked = vec![std::collections::BTreeMap::from([(2, 3), (7, 1)])];
        assert_eq!(
            exposure_rows(&examples, &seen, &masked),
            vec![vec!["0", "3", "2", "1", "3"], vec!["1", "1", "0", "0", "0"]]
        );
    }

    /// Two masks over an embedding and an attention matrix: the first's embedding coordinates
    /// {0, 3, 5} meet the second's {3, 5, 8} in two, its attention {1} misses {2}; a tensor
    /// only the second masks adds nothing to the first's counts.
    #[test]
    fn overlap_counts_the_first_masks_coordinates_the_second_also_selects() {
        let mask = vec![
            ("embed_tokens.weight".to_string(), vec![0, 3, 5]),
            ("layers.0.self_attn.q_proj.weight".to_string(), vec![1]),
        ];
        let other = vec![
            ("embed_tokens.weight".to_string(), vec![3, 5, 8]),
            ("layers.0.self_attn.q_proj.weight".to_string(), vec![2]),
            ("layers.0.mlp.up_proj.weight".to_string(), vec![4]),
        ];
        assert_eq!(
            overlap(&mask, &other),
            vec![("embedding", 2, 3), ("attention", 0, 1)]
        );
        assert_eq!(
            overlap(&mask, &mask),
            vec![("embedding", 3, 3), ("attention", 1, 1)]
        );
    }

    /// A 4 x 3 embedding with rows 1 (an input token) and 3 (a label word) live, and a 2 x 2
    /// attention matrix: masked embedding coordinates count live only in those rows.
    #[test]
    fn embedding_coordinates_are_live_only_in_reached_rows() {
        let params = vec![
            ("embed_tokens.weight".to_string(), vec![4, 3]),
            ("layers.0.self_attn.q_proj.weight".to_string(), vec![2, 2]),
        ];
        let mask = vec![
            // rows 0, 1, 1, 2, 3
            ("embed_tokens.weight".to_string(), vec![0, 3, 5, 6, 9]),
            ("layers.0.self_attn.q_proj.weight".to_string(), vec![1, 2]),
        ];
        let inputs = BTreeSet::from([1]);
        let labels = BTreeSet::from([3]);
        let c = count(&params, &mask, &inputs, &labels).unwrap();
        assert_eq!(c[0], (12, 5, 3));
        assert_eq!(c[1], (4, 2, 2));
        assert_eq!(c[2], (0, 0, 0));
    }
}
