//! Chained ZO steps (`zo_step` with `carry_out`): the update merged with the next step's first
//! perturbation ends where plain steps do up to the f32 rounding of the merged delta, takes two
//! passes per step instead of three, leaves exactly the next step's `+mu z` on theta, and leaves
//! theta plain on every error; the training loop carries only between steps that follow
//! directly.

mod optim_support;

use optim_support::{snapshot, SyntheticTask, TinyModel};
use tch::{Kind, Tensor};
use trainer::optim::params::{Anchor, TrainableParams};
use trainer::optim::zo::{
    first_direction_seed, settle, zo_step, Carried, ZoPrivacy, ZoStepSettings,
};
use trainer::optim::OptimError;
use trainer::perturb::passes_on_this_thread;
use trainer::train::{run_training, Method, RunOptions, TrainConfig};

const RUN_SEED: u64 = 0xCA_EE1D;
const STEPS: u64 = 12;
/// |z| <= sqrt(48 ln 2) (24-bit Box-Muller fractions, perturb::normal docs).
const Z_MAX: f64 = 5.77;

struct Case {
    name: &'static str,
    directions: usize,
    private: bool,
    proximal: bool,
    masked: bool,
}

const CASES: [Case; 4] = [
    Case {
        name: "MeZO",
        directions: 1,
        private: false,
        proximal: false,
        masked: false,
    },
    Case {
        name: "DPZero q=3",
        directions: 3,
        private: true,
        proximal: false,
        masked: false,
    },
    Case {
        name: "DP-ZOSO",
        directions: 1,
        private: true,
        proximal: true,
        masked: false,
    },
    Case {
        name: "DP-ZOPO",
        directions: 2,
        private: true,
        proximal: true,
        masked: true,
    },
];

/// Every third coordinate of each tensor.
fn every_third(params: &TrainableParams) -> Vec<(String, Tensor)> {
    params
        .named()
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                Tensor::arange_start_step(0, t.numel() as i64, 3, (Kind::Int64, tch::Device::Cpu)),
            )
        })
        .collect()
}

fn params_of(model: &TinyModel, masked: bool) -> TrainableParams {
    let mut params = TrainableParams::from_model(model).unwrap();
    if masked {
        let masks = every_third(&params);
        params.set_masks(Some(masks)).unwrap();
    }
    params
}

fn settings<'a>(case: &Case, anchor: Option<&'a Anchor>) -> ZoStepSettings<'a> {
    ZoStepSettings {
        zo_eps: 1e-3,
        step_size: 0.05,
        num_directions: case.directions,
        privacy: case.private.then_some(ZoPrivacy {
            clip_norm: 2.0,
            noise_std: 0.5,
        }),
        normaliser: None,
        proximal: anchor.map(|a| (a, 0.5)),
        forward: Default::default(),
    }
}

fn max_abs_difference(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn carried_steps_end_where_plain_steps_do_in_two_passes_per_step() {
    let task = SyntheticTask::new(64, 3);
    for case in &CASES {
        let plain_model = TinyModel::new(7, Kind::Double);
        let carried_model = TinyModel::new(7, Kind::Double);
        let plain = params_of(&plain_model, case.masked);
        let chained = params_of(&carried_model, case.masked);
        let plain_anchor = case.proximal.then(|| plain.snapshot_anchor().unwrap());
        let chained_anchor = case.proximal.then(|| chained.snapshot_anchor().unwrap());
        let plain_settings = settings(case, plain_anchor.as_ref());
        let chained_settings = settings(case, chained_anchor.as_ref());

        let mut carried: Option<Carried> = None;
        // Bound on |theta_chained - theta_plain|: each merged pass rounds its f32 delta once more
        // than the plain passes, by at most 2^-24 of the sum of |scale z| over its terms.
        let mut bound = 0.0;
        let (mut plain_passes, mut chained_passes) = (0, 0);
        for step in 1..=STEPS {
            let batch = task.batch_of(
                &(0..16)
                    .map(|i| (i + 5 * step as usize) % 64)
                    .collect::<Vec<_>>(),
            );
            let before = passes_on_this_thread();
            let (reference, _) = zo_step(
                &plain_model,
                &plain,
                &batch,
                &plain_settings,
                RUN_SEED,
                step,
                None,
                None,
            )
            .unwrap();
            plain_passes += passes_on_this_thread() - before;
            let before = passes_on_this_thread();
            let carry_out = (step < STEPS).then_some(1e-3);
            let (report, next) = zo_step(
                &carried_model,
                &chained,
                &batch,
                &chained_settings,
                RUN_SEED,
                step,
                carried.take(),
                carry_out,
            )
            .unwrap();
            chained_passes += passes_on_this_thread() - before;
            assert_eq!(report.seeds, reference.seeds, "{}: step {step}", case.name);
            assert_eq!(report.noise, reference.noise, "{}: step {step}", case.name);
            for (a, b) in report
                .projected_grads
                .iter()
                .zip(&reference.projected_grads)
            {
                assert!(
                    (a - b).abs() <= 1e-6 + 1e-4 * b.abs(),
                    "{}: step {step}: projected gradient {a} vs plain {b}",
                    case.name
                );
            }
            let largest_scale = reference
                .projected_grads
                .iter()
                .map(|a| 0.05 * a.abs())
                .fold(1e-3, f64::max);
            bound += 2f64.powi(-24) * Z_MAX * (largest_scale * case.directions as f64 + 2e-3);
            match next {
                Some(c) => {
                    assert_eq!(c.seed, first_direction_seed(RUN_SEED, step + 1));
                    assert_eq!(c.scale, 1e-3);
                    carried = Some(c);
                }
                None => assert_eq!(step, STEPS, "{}: nothing carried at step {step}", case.name),
            }
        }
        let q = case.directions as u64;
        assert_eq!(plain_passes, STEPS * (2 * q + 1), "{}", case.name);
        assert_eq!(chained_passes, STEPS * 2 * q + 1, "{}", case.name);
        let difference = max_abs_difference(&snapshot(&carried_model), &snapshot(&plain_model));
        assert!(
            difference <= bound,
            "{}: theta differs by {difference} (bound {bound:.3e})",
            case.name
        );
    }
}

/// The case's model after one carrying step, the carried perturbation, the plain theta it sits
/// on (the same step without carrying, on a second model), and the bound on their difference
/// after settling: the merged pass and the settle each round an f32 delta of at most
/// Z_MAX (|update scale| + carried scale) once more, by 2^-24 of it.
struct OneStep {
    model: TinyModel,
    params: TrainableParams,
    carried: Carried,
    plain: Vec<(String, Vec<f64>)>,
    bound: f64,
}

fn one_carrying_step(masked: bool) -> OneStep {
    let task = SyntheticTask::new(64, 3);
    let batch = task.batch_of(&(0..16).collect::<Vec<_>>());
    let case = &CASES[0];
    let step_settings = settings(case, None);
    let plain_model = TinyModel::new(9, Kind::Double);
    let plain = params_of(&plain_model, masked);
    let (report, _) = zo_step(
        &plain_model,
        &plain,
        &batch,
        &step_settings,
        RUN_SEED,
        1,
        None,
        None,
    )
    .unwrap();
    let model = TinyModel::new(9, Kind::Double);
    let params = params_of(&model, masked);
    let next_mu = 2e-3;
    let (_, carried) = zo_step(
        &model,
        &params,
        &batch,
        &step_settings,
        RUN_SEED,
        1,
        None,
        Some(next_mu),
    )
    .unwrap();
    let update_scale =
        (step_settings.zo_eps - step_settings.step_size * report.projected_grads[0]).abs();
    OneStep {
        model,
        params,
        carried: carried.unwrap(),
        plain: snapshot(&plain_model),
        bound: 2.0 * 2f64.powi(-24) * Z_MAX * (update_scale + next_mu),
    }
}

/// Theta of `model` is the plain step's up to `bound`.
fn assert_plain(model: &TinyModel, plain: &[(String, Vec<f64>)], bound: f64, what: &str) {
    let difference = max_abs_difference(&snapshot(model), plain);
    assert!(
        difference <= bound,
        "{what}: theta differs from the plain step by {difference} (bound {bound:.3e})"
    );
}

#[test]
fn theta_carries_exactly_the_next_steps_first_perturbation() {
    for masked in [false, true] {
        let OneStep {
            model,
            params,
            carried,
            plain,
            bound,
        } = one_carrying_step(masked);
        assert_eq!(carried.seed, first_direction_seed(RUN_SEED, 2));
        assert_eq!(carried.scale, 2e-3);
        let perturbed = snapshot(&model);
        let moved = max_abs_difference(&perturbed, &plain);
        assert!(
            moved > 1e-3,
            "masked {masked}: theta carries nothing ({moved})"
        );
        settle(&params, Some(carried)).unwrap();
        assert_plain(&model, &plain, bound, &format!("masked {masked}, settled"));
    }
}

#[test]
fn errors_leave_theta_plain() {
    let task = SyntheticTask::new(64, 3);
    let batch = task.batch_of(&(0..16).collect::<Vec<_>>());
    let empty = task.batch_of(&[]);
    let case = &CASES[0];
    let bad_eps = ZoStepSettings {
        zo_eps: 0.0,
        ..settings(case, None)
    };
    // (name, batch, settings, next step's mu, poison the model's next forward)
    type Failing<'a> = (
        &'static str,
        &'a trainer::batch::Batch,
        ZoStepSettings<'a>,
        Option<f64>,
        bool,
    );
    let failures: [Failing; 4] = [
        ("invalid zo_eps", &batch, bad_eps, None, false),
        (
            "invalid next zo_eps",
            &batch,
            settings(case, None),
            Some(f64::NAN),
            false,
        ),
        (
            "empty batch without DP",
            &empty,
            settings(case, None),
            Some(1e-3),
            false,
        ),
        (
            "non-finite loss",
            &batch,
            settings(case, None),
            Some(1e-3),
            true,
        ),
    ];
    for (name, batch, step_settings, carry_out, poison) in failures {
        let OneStep {
            mut model,
            params,
            carried,
            plain,
            bound,
        } = one_carrying_step(false);
        if poison {
            model.poison_after = Some(model.calls.get());
        }
        let err = zo_step(
            &model,
            &params,
            batch,
            &step_settings,
            RUN_SEED,
            2,
            Some(carried),
            carry_out,
        )
        .unwrap_err();
        let expected = if poison {
            matches!(err, OptimError::NonFiniteLoss { .. })
        } else {
            matches!(
                err,
                OptimError::InvalidHyperparameter { .. } | OptimError::EmptyBatch { .. }
            )
        };
        assert!(expected, "{name}: {err}");
        assert_plain(&model, &plain, bound, name);
    }
}

#[test]
fn training_carries_only_between_steps_that_follow_directly() {
    let steps = 40;
    let config = TrainConfig {
        method: Method::Mezo,
        learning_rate: 0.05,
        steps,
        batch_size: 16,
        zo_eps: 1e-3,
        eval_every: 7,
        seed: 5,
        dtype: trainer::train::DType::F64,
        ..TrainConfig::default()
    };
    let dev = SyntheticTask::new(64, 18).batches(32);
    let train = |no_carry: bool| {
        let mut model = TinyModel::new(3, Kind::Double);
        let options = RunOptions {
            no_carry,
            ..RunOptions::default()
        };
        let before = passes_on_this_thread();
        let record = run_training(
            &mut model,
            &config,
            &mut SyntheticTask::new(256, 17),
            &dev,
            &[],
            &options,
        )
        .unwrap();
        (record, passes_on_this_thread() - before, snapshot(&model))
    };
    let (plain, plain_passes, plain_theta) = train(true);
    let (chained, chained_passes, chained_theta) = train(false);
    // Steps 7, 14, ... evaluate, and the last step has no successor: those do not carry.
    let carrying_steps = (1..steps).filter(|s| s % 7 != 0).count() as u64;
    assert_eq!(plain_passes, 3 * steps);
    assert_eq!(chained_passes, 3 * steps - carrying_steps);
    // Evaluations read plain theta: the dev metrics agree up to the merged passes' rounding.
    assert_eq!(plain.dev.len(), chained.dev.len());
    for (a, b) in plain.dev.iter().zip(&chained.dev) {
        assert!(
            (a.loss - b.loss).abs() < 1e-9,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    // Rounding of the merged f32 deltas only (8e-9 over these 40 steps); a wrong carry moves
    // theta by about mu |z| >= 1e-3 |z|.
    let difference = max_abs_difference(&plain_theta, &chained_theta);
    assert!(difference < 1e-6, "theta differs by {difference}");
}
