//! The two-point ZO estimator on a tiny f64 model (docs/paper.md §1.1; MeZO Algorithm 1):
//! per direction the central difference matches z^T grad l_i from autograd, and over many z the
//! scalar z^T grad L has mean 0 and second moment ||grad L||^2 (z ~ N(0, I) so z^T g ~ N(0, ||g||^2)).

mod optim_support;

use optim_support::{SyntheticTask, TinyModel};
use tch::{Kind, Tensor};
use trainer::optim::loss::per_example_losses;
use trainer::optim::params::TrainableParams;
use trainer::optim::zo::{directional_differences, materialise_direction};

/// Two-sided normal quantile for a false-failure rate of 1e-6 per check: z_{1 - 0.5e-6}.
/// Source: scipy.stats.norm.isf(0.5e-6) = 4.8916.
const Z_ALPHA_1E6: f64 = 4.8916;

/// d loss / d theta for every trainable tensor (autograd; the graph is kept for reuse).
fn gradient_of(params: &TrainableParams, loss: &Tensor) -> Vec<Tensor> {
    let tensors: Vec<Tensor> = params
        .named()
        .iter()
        .map(|(_, t)| t.shallow_clone())
        .collect();
    Tensor::run_backward(&[loss], &tensors, true, false)
        .into_iter()
        .map(|g| g.detach())
        .collect()
}

fn dot(a: &[Tensor], b: &[(String, Tensor)]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, (_, y))| (x * y).sum(Kind::Double).double_value(&[]))
        .sum()
}

#[test]
fn central_difference_matches_autograd_directional_derivative_per_example() {
    let model = TinyModel::new(7, Kind::Double);
    let params = TrainableParams::from_model(&model).unwrap();
    let task = SyntheticTask::new(8, 3);
    let batch = task.batch_of(&(0..8).collect::<Vec<_>>());
    let losses = per_example_losses(&model, &batch).unwrap();
    let per_example_grads: Vec<Vec<Tensor>> = (0..8)
        .map(|i| gradient_of(&params, &losses.get(i)))
        .collect();
    let zo_eps = 1e-5;
    for seed in 0..20u64 {
        let z = materialise_direction(&params, &[(seed, 1.0)]).unwrap();
        let differences = directional_differences(&model, &params, &batch, seed, zo_eps).unwrap();
        for (i, difference) in differences.iter().enumerate() {
            let exact = dot(&per_example_grads[i], &z);
            // Central difference error is O(mu^2 |third derivative| |z|^3) ~ 1e-10 here; f64
            // rounding adds ~1e-16/mu ~ 1e-11.
            let tolerance = 1e-6 * (1.0 + exact.abs());
            assert!(
                (difference - exact).abs() <= tolerance,
                "seed {seed} example {i}: finite difference {difference} vs autograd {exact}"
            );
        }
    }
}

#[test]
fn projected_gradient_has_mean_zero_and_second_moment_grad_norm_squared() {
    let model = TinyModel::new(11, Kind::Double);
    let params = TrainableParams::from_model(&model).unwrap();
    let task = SyntheticTask::new(16, 5);
    let batch = task.batch_of(&(0..16).collect::<Vec<_>>());
    let mean_loss = per_example_losses(&model, &batch)
        .unwrap()
        .mean(Kind::Double);
    let gradient = gradient_of(&params, &mean_loss);
    let grad_norm_sq: f64 = gradient
        .iter()
        .map(|g| (g * g).sum(Kind::Double).double_value(&[]))
        .sum();
    let n = 4000usize;
    let base_seed = 1_000_000u64;
    let samples: Vec<f64> = (0..n as u64)
        .map(|k| {
            let d = directional_differences(&model, &params, &batch, base_seed + k, 1e-5).unwrap();
            d.iter().sum::<f64>() / d.len() as f64
        })
        .collect();
    let mean = samples.iter().sum::<f64>() / n as f64;
    // z^T g ~ N(0, ||g||^2): the sample mean has std ||g|| / sqrt(n).
    let mean_bound = Z_ALPHA_1E6 * grad_norm_sq.sqrt() / (n as f64).sqrt();
    assert!(
        mean.abs() <= mean_bound,
        "mean {mean} exceeds bound {mean_bound} (n={n}, seeds {base_seed}..)"
    );
    // (z^T g)^2 / ||g||^2 ~ chi^2_1 (mean 1, variance 2): the sample mean has std sqrt(2/n).
    let second = samples.iter().map(|s| s * s).sum::<f64>() / n as f64 / grad_norm_sq;
    let second_bound = Z_ALPHA_1E6 * (2.0 / n as f64).sqrt();
    assert!(
        (second - 1.0).abs() <= second_bound,
        "second moment / ||g||^2 = {second}, |.-1| bound {second_bound} (n={n}, seeds {base_seed}..)"
    );
    // The model is restored after every pair of evaluations (up to rounding).
    let after = per_example_losses(&model, &batch)
        .unwrap()
        .mean(Kind::Double)
        .double_value(&[]);
    assert!((after - mean_loss.double_value(&[])).abs() < 1e-9);
}
