//! The settings the ablations vary: DPZero's clipping without noise (sigma = 0), DP-ZOSO without
//! step halving, and DP-ZOPO's alternative scores (magnitude only, random), on the tiny
//! synthetic task.

mod optim_support;

use std::collections::BTreeSet;

use optim_support::{bits, SyntheticTask, TinyModel, LABEL_WORDS};
use tch::{Kind, Tensor};
use trainer::optim::mask::MaskSelection;
use trainer::optim::mask::{data_free_scores, select_mask, MaskScore, MaskScoreSettings};
use trainer::optim::params::TrainableParams;
use trainer::train::{run_training, Method, RunOptions, RunRecord, Sampling, TrainConfig};

fn config(method: Method) -> TrainConfig {
    let mut config = TrainConfig {
        method,
        learning_rate: 0.05,
        steps: 30,
        batch_size: 16,
        zo_eps: 1e-3,
        clip_norm: 5.0,
        epsilon: None,
        eval_every: 0,
        seed: 77,
        sampling: Sampling::FixedSize,
        ..TrainConfig::default()
    };
    config.stage.first_stage_steps = 10;
    config.stage.num_stages = 2;
    config
}

fn run(config: &TrainConfig) -> (RunRecord, TinyModel) {
    let mut model = TinyModel::new(5, Kind::Float);
    let dev = SyntheticTask::new(64, 18).batches(64);
    let record = run_training(
        &mut model,
        config,
        &mut SyntheticTask::new(256, 17),
        &dev,
        &[],
        &RunOptions::default(),
    )
    .unwrap();
    (record, model)
}

fn losses(r: &RunRecord) -> Vec<f64> {
    r.steps.iter().map(|s| s.loss.unwrap()).collect()
}

#[test]
fn clipping_without_noise_is_mezo_under_a_loose_clip_and_differs_under_a_tight_one() {
    let (mezo, mezo_model) = run(&config(Method::Mezo));
    let mut loose = config(Method::ZoClipOnly);
    loose.clip_norm = 1e9;
    let (clip_only, clip_model) = run(&loose);
    assert!(clip_only.ledger.epsilon_spent.is_none() && clip_only.ledger.accounting.is_none());
    // Fixed-size batches: both divide the sum by |B|; a clip above every |difference| and
    // zero noise leave MeZO's step.
    for (a, b) in losses(&mezo).iter().zip(losses(&clip_only)) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let drift = |x: &[(String, Vec<u64>)], y: &[(String, Vec<u64>)]| -> usize {
        x.iter()
            .zip(y)
            .map(|((_, p), (_, q))| p.iter().zip(q).filter(|(u, v)| u != v).count())
            .sum()
    };
    let same = drift(&bits(&mezo_model), &bits(&clip_model));
    let mut tight = config(Method::ZoClipOnly);
    // Below the typical |difference| (about 2 mu |grad . z|): clipping binds.
    tight.clip_norm = 1e-5;
    let (_, tight_model) = run(&tight);
    let changed = drift(&bits(&mezo_model), &bits(&tight_model));
    assert!(changed > same, "tight clip moved {changed}, loose {same}");
    let final_loss = |r: &RunRecord| r.final_dev.as_ref().unwrap().loss;
    assert!((final_loss(&mezo) - final_loss(&clip_only)).abs() < 1e-5);
}

#[test]
fn without_halving_the_step_size_stays_eta0_and_mu_follows_the_same_schedule() {
    let mut halving = config(Method::DpZoso);
    halving.epsilon = Some(8.0);
    halving.sampling = Sampling::Poisson;
    halving.zo_eps_end = Some(2.5e-4);
    let mut flat = halving.clone();
    flat.stage.step_halving = false;
    let (a, _) = run(&halving);
    let (b, _) = run(&flat);
    let rates = |r: &RunRecord| -> BTreeSet<u64> {
        r.steps.iter().map(|s| s.learning_rate.to_bits()).collect()
    };
    assert_eq!(
        rates(&a).len(),
        2,
        "stages of 10 and 20 steps at eta and eta/2"
    );
    assert_eq!(
        rates(&b),
        BTreeSet::from([0.05f64.to_bits()]),
        "constant eta without halving"
    );
    let mus = |r: &RunRecord| -> Vec<f64> { r.steps.iter().map(|s| s.zo_eps).collect() };
    assert_eq!(mus(&a), mus(&b));
    assert!(mus(&a)[29] < mus(&a)[0], "mu shrinks between stages");
}

fn mask(model: &TinyModel, kind: MaskScore, seed: u64, ratio: f64) -> BTreeSet<(String, i64)> {
    let params = TrainableParams::from_model(model).unwrap();
    let settings = MaskScoreSettings {
        kind,
        ratio,
        ..MaskScoreSettings::default()
    };
    let scores = data_free_scores(
        model,
        &params,
        &Tensor::from_slice(&LABEL_WORDS),
        &settings,
        seed,
        0,
    )
    .unwrap();
    let masks = select_mask(&scores, ratio, MaskSelection::Smallest, None).unwrap();
    masks
        .iter()
        .flat_map(|(name, idx)| {
            Vec::<i64>::try_from(idx)
                .unwrap()
                .into_iter()
                .map(move |i| (name.clone(), i))
        })
        .collect()
}

#[test]
fn magnitude_score_selects_the_smallest_weights_and_random_ignores_the_weights() {
    let model = TinyModel::new(5, Kind::Float);
    let ratio = 0.1;
    let chosen = mask(&model, MaskScore::Magnitude, 1, ratio);
    // By hand: every coordinate's |theta|, the ceil(r d) smallest.
    let params = TrainableParams::from_model(&model).unwrap();
    let mut all: Vec<(f64, String, i64)> = Vec::new();
    for (name, t) in params.named() {
        let values = Vec::<f64>::try_from(t.abs().to_kind(Kind::Double).view([-1])).unwrap();
        for (i, v) in values.into_iter().enumerate() {
            all.push((v, name.clone(), i as i64));
        }
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = (ratio * all.len() as f64).ceil() as usize;
    let want: BTreeSet<(String, i64)> = all[..count]
        .iter()
        .map(|(_, n, i)| (n.clone(), *i))
        .collect();
    assert_eq!(chosen, want);

    // Random: ceil(r d) coordinates that depend on the seed only, not on the weights.
    let a = mask(&model, MaskScore::Random, 1, ratio);
    let other_weights = TinyModel::new(6, Kind::Float);
    assert_eq!(a, mask(&other_weights, MaskScore::Random, 1, ratio));
    assert_eq!(a.len(), count);
    assert_ne!(a, mask(&model, MaskScore::Random, 2, ratio));
    assert_ne!(a, chosen);
    // The paper's score depends on the weights.
    let hg = mask(&model, MaskScore::HessianGradient, 1, ratio);
    assert_ne!(
        hg,
        mask(&other_weights, MaskScore::HessianGradient, 1, ratio)
    );
}
