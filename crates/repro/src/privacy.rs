//! `repro privacy …`: the accountant's command-line contract (JSON on the last stdout line).

use accountant::rdp::poisson_subsampled_gaussian_rdp;
use accountant::{
    analytic_gaussian, calibrate_noise_multiplier, AccountantError, DpEvent, NeighboringRelation,
    Orders, PrvAccountant, RdpAccountant, RdpMethod, Zcdp,
};
use anyhow::{bail, Context};
use clap::ValueEnum;
use serde_json::json;
use std::path::PathBuf;

/// Relative tolerance of every noise calibration.
const CALIBRATION_TOLERANCE: f64 = 1e-9;
/// PRV's δ error budget as a fraction of δ (Opacus' and prv-accountant's choice).
const PRV_DELTA_ERROR_FRACTION: f64 = 1e-3;

/// `repro privacy`: epsilon, delta, sigma, per-step RDP and the paper's sigma table.
#[derive(clap::Args)]
pub struct PrivacyArgs {
    #[command(subcommand)]
    command: PrivacyCommand,
}

#[derive(clap::Subcommand)]
enum PrivacyCommand {
    /// ε after T steps at a given δ.
    Epsilon(EpsilonArgs),
    /// δ after T steps at a given ε.
    Delta(DeltaArgs),
    /// The smallest noise multiplier meeting (ε, δ) after T steps.
    Sigma(SigmaArgs),
    /// Exact one-step RDP of the Poisson-subsampled Gaussian at one order.
    Rdp(RdpArgs),
    /// The noise multipliers the paper's settings need, for each accountant, as CSV.
    Table(TableArgs),
}

/// Which accountant answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AccountantKind {
    /// Exact RDP on dp-accounting's 156 orders.
    Rdp,
    /// dp-accounting 0.6.0-compatible RDP (its loose fractional orders, its +∞).
    RdpCompat,
    /// PRV accountant (Gopi et al. 2021), reporting the upper bound.
    Prv,
    /// zCDP with the tight CKS20 conversion (q = 1 only).
    Zcdp,
    /// Analytic Gaussian (Balle & Wang 2018; q = 1 only).
    Analytic,
}

impl AccountantKind {
    fn name(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::RdpCompat => "rdp-compat",
            AccountantKind::Prv => "prv",
            AccountantKind::Zcdp => "zcdp",
            AccountantKind::Analytic => "analytic",
        }
    }
}

/// How batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Sampling {
    /// Poisson subsampling with rate q (add/remove-one adjacency).
    Poisson,
    /// Fixed-size batches of q·N without replacement (replace-one adjacency).
    Fixed,
}

#[derive(clap::Args, Clone)]
struct Mechanism {
    /// Sampling rate q in [0, 1] (batch size / dataset size).
    #[arg(long)]
    sampling_rate: f64,
    /// Number of steps T.
    #[arg(long)]
    steps: u64,
    /// Accountant.
    #[arg(long, value_enum, default_value = "rdp")]
    accountant: AccountantKind,
    /// Sampling scheme.
    #[arg(long, value_enum, default_value = "poisson")]
    sampling: Sampling,
    /// Dataset size N (needed with `--sampling fixed`; batch size = q·N).
    #[arg(long)]
    dataset_size: Option<u64>,
    /// PRV accountant's ε error budget.
    #[arg(long, default_value_t = 0.1)]
    eps_error: f64,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
// Negative values must reach the accountant, which names them in its error.
#[command(allow_negative_numbers = true)]
struct EpsilonArgs {
    #[command(flatten)]
    mechanism: Mechanism,
    /// Noise multiplier σ.
    #[arg(long)]
    noise_multiplier: f64,
    /// Target δ in (0, 1).
    #[arg(long)]
    delta: f64,
}

#[derive(clap::Args)]
// Negative values must reach the accountant, which names them in its error.
#[command(allow_negative_numbers = true)]
struct DeltaArgs {
    #[command(flatten)]
    mechanism: Mechanism,
    /// Noise multiplier σ.
    #[arg(long)]
    noise_multiplier: f64,
    /// Target ε >= 0.
    #[arg(long)]
    epsilon: f64,
}

#[derive(clap::Args)]
// Negative values must reach the accountant, which names them in its error.
#[command(allow_negative_numbers = true)]
struct SigmaArgs {
    #[command(flatten)]
    mechanism: Mechanism,
    /// Target ε > 0.
    #[arg(long)]
    epsilon: f64,
    /// Target δ in (0, 1).
    #[arg(long)]
    delta: f64,
}

#[derive(clap::Args)]
// Negative values must reach the accountant, which names them in its error.
#[command(allow_negative_numbers = true)]
struct RdpArgs {
    /// Sampling rate q in [0, 1].
    #[arg(long)]
    sampling_rate: f64,
    /// Noise multiplier σ.
    #[arg(long)]
    noise_multiplier: f64,
    /// Renyi order α > 1 (integer or fractional).
    #[arg(long)]
    order: f64,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct TableArgs {
    /// Output folder for sigma.csv.
    #[arg(long, default_value = "results/privacy")]
    out: PathBuf,
    /// PRV accountant's ε error budget (the paper uses 0.1).
    #[arg(long, default_value_t = 0.1)]
    eps_error: f64,
}

/// Runs `repro privacy …`.
pub fn run(args: PrivacyArgs) -> anyhow::Result<()> {
    match args.command {
        PrivacyCommand::Epsilon(a) => epsilon_command(a),
        PrivacyCommand::Delta(a) => delta_command(a),
        PrivacyCommand::Sigma(a) => sigma_command(a),
        PrivacyCommand::Rdp(a) => rdp_command(a),
        PrivacyCommand::Table(a) => table_command(a),
    }
}

/// The per-step event and its neighbouring relation.
fn step_event(
    m: &Mechanism,
    noise_multiplier: f64,
) -> anyhow::Result<(DpEvent, NeighboringRelation)> {
    match m.sampling {
        Sampling::Poisson => Ok((
            DpEvent::PoissonSampledGaussian {
                sampling_rate: m.sampling_rate,
                noise_multiplier,
            },
            NeighboringRelation::AddOrRemoveOne,
        )),
        Sampling::Fixed => {
            let dataset_size = m
                .dataset_size
                .context("--sampling fixed needs --dataset-size N")?;
            if !(m.sampling_rate > 0.0 && m.sampling_rate <= 1.0) {
                return Err(AccountantError::InvalidSamplingRate(m.sampling_rate).into());
            }
            let batch = m.sampling_rate * dataset_size as f64;
            let batch_size = batch.round();
            if (batch - batch_size).abs() > 1e-6 * batch.max(1.0) {
                bail!(
                    "sampling rate {} times dataset size {dataset_size} = {batch} is not an integer batch size",
                    m.sampling_rate
                );
            }
            Ok((
                DpEvent::FixedBatchGaussian {
                    dataset_size,
                    batch_size: batch_size as u64,
                    noise_multiplier,
                },
                NeighboringRelation::ReplaceOne,
            ))
        }
    }
}

fn rdp_accountant(m: &Mechanism, noise_multiplier: f64) -> anyhow::Result<RdpAccountant> {
    let (event, relation) = step_event(m, noise_multiplier)?;
    let method = match m.accountant {
        AccountantKind::RdpCompat => RdpMethod::DpAccountingCompat,
        _ => RdpMethod::Exact,
    };
    let mut accountant = RdpAccountant::new(Orders::dp_accounting_default(), relation, method);
    accountant.compose(&event, m.steps)?;
    Ok(accountant)
}

/// zcdp and analytic cover only full-batch steps; prv only Poisson sampling.
fn check_scope(m: &Mechanism) -> anyhow::Result<()> {
    if m.steps == 0 {
        return Err(AccountantError::InvalidSteps(0).into());
    }
    match m.accountant {
        AccountantKind::Zcdp | AccountantKind::Analytic if m.sampling_rate != 1.0 => bail!(
            "accountant {} covers full-batch steps only (sampling rate 1), got sampling rate {}",
            m.accountant.name(),
            m.sampling_rate
        ),
        AccountantKind::Prv if m.sampling == Sampling::Fixed => {
            bail!("accountant prv covers Poisson sampling only; use rdp for --sampling fixed")
        }
        _ => Ok(()),
    }
}

fn prv_accountant(
    m: &Mechanism,
    noise_multiplier: f64,
    delta: f64,
) -> anyhow::Result<PrvAccountant> {
    Ok(PrvAccountant::poisson_subsampled_gaussian(
        m.sampling_rate,
        noise_multiplier,
        m.steps,
        m.eps_error,
        delta * PRV_DELTA_ERROR_FRACTION,
    )?)
}

/// ε and (for RDP) the optimal order.
fn epsilon_of(
    m: &Mechanism,
    noise_multiplier: f64,
    delta: f64,
) -> anyhow::Result<(f64, Option<f64>)> {
    check_scope(m)?;
    match m.accountant {
        AccountantKind::Rdp | AccountantKind::RdpCompat => {
            let conversion = rdp_accountant(m, noise_multiplier)?.epsilon(delta)?;
            Ok((conversion.value, Some(conversion.order)))
        }
        AccountantKind::Prv => {
            accountant::validate_delta(delta)?;
            let bounds = prv_accountant(m, noise_multiplier, delta)?.epsilon(delta, m.steps)?;
            Ok((bounds.upper, None))
        }
        AccountantKind::Zcdp => {
            let zcdp = Zcdp::from_gaussian(noise_multiplier)?.compose_times(m.steps);
            Ok((zcdp.epsilon(delta)?, None))
        }
        AccountantKind::Analytic => {
            let effective = noise_multiplier / (m.steps as f64).sqrt();
            Ok((analytic_gaussian::epsilon(effective, delta)?, None))
        }
    }
}

fn delta_of(m: &Mechanism, noise_multiplier: f64, epsilon: f64) -> anyhow::Result<f64> {
    check_scope(m)?;
    match m.accountant {
        AccountantKind::Rdp | AccountantKind::RdpCompat => {
            Ok(rdp_accountant(m, noise_multiplier)?.delta(epsilon)?.value)
        }
        AccountantKind::Prv => {
            // δ_error must be fixed before δ is known: use 1e-3 of a first RDP estimate.
            let rdp_delta = {
                let mut rdp = m.clone();
                rdp.accountant = AccountantKind::Rdp;
                rdp_accountant(&rdp, noise_multiplier)?
                    .delta(epsilon)?
                    .value
            };
            let delta_error = (rdp_delta * PRV_DELTA_ERROR_FRACTION).clamp(1e-15, 1e-3);
            let prv = PrvAccountant::poisson_subsampled_gaussian(
                m.sampling_rate,
                noise_multiplier,
                m.steps,
                m.eps_error,
                delta_error,
            )?;
            Ok(prv.delta(epsilon, m.steps)?.upper)
        }
        AccountantKind::Zcdp => Ok(Zcdp::from_gaussian(noise_multiplier)?
            .compose_times(m.steps)
            .delta(epsilon)?),
        AccountantKind::Analytic => {
            let effective = noise_multiplier / (m.steps as f64).sqrt();
            Ok(analytic_gaussian::delta(effective, epsilon)?)
        }
    }
}

fn sigma_of(m: &Mechanism, epsilon: f64, delta: f64) -> anyhow::Result<f64> {
    check_scope(m)?;
    accountant::validate_delta(delta)?;
    let mut failure: Option<anyhow::Error> = None;
    let result =
        calibrate_noise_multiplier(epsilon, CALIBRATION_TOLERANCE, |sigma| {
            match epsilon_of(m, sigma, delta) {
                Ok((value, _)) => Ok(value),
                Err(err) => {
                    let message = format!("{err:#}");
                    failure = Some(err);
                    Err(AccountantError::Calibration(message))
                }
            }
        });
    match (result, failure) {
        (Ok(sigma), _) => Ok(sigma),
        (Err(_), Some(err)) => Err(err.context("noise calibration failed")),
        (Err(err), None) => Err(err.into()),
    }
}

fn print(json_mode: bool, value: serde_json::Value, sentence: String) {
    if json_mode {
        println!("{value}");
    } else {
        println!("{sentence}");
    }
}

fn epsilon_command(a: EpsilonArgs) -> anyhow::Result<()> {
    let m = &a.mechanism;
    let (epsilon, order) = epsilon_of(m, a.noise_multiplier, a.delta)?;
    let order_text = order.map(|o| format!(" at order {o}")).unwrap_or_default();
    print(
        m.json,
        json!({"epsilon": epsilon, "order": order, "accountant": m.accountant.name()}),
        format!(
            "epsilon = {epsilon:.6}{order_text} ({} accountant; q = {}, sigma = {}, T = {}, delta = {})",
            m.accountant.name(),
            m.sampling_rate,
            a.noise_multiplier,
            m.steps,
            a.delta
        ),
    );
    Ok(())
}

fn delta_command(a: DeltaArgs) -> anyhow::Result<()> {
    let m = &a.mechanism;
    let delta = delta_of(m, a.noise_multiplier, a.epsilon)?;
    print(
        m.json,
        json!({"delta": delta}),
        format!(
            "delta = {delta:e} ({} accountant; q = {}, sigma = {}, T = {}, epsilon = {})",
            m.accountant.name(),
            m.sampling_rate,
            a.noise_multiplier,
            m.steps,
            a.epsilon
        ),
    );
    Ok(())
}

fn sigma_command(a: SigmaArgs) -> anyhow::Result<()> {
    let m = &a.mechanism;
    let sigma = sigma_of(m, a.epsilon, a.delta)?;
    print(
        m.json,
        json!({"noise_multiplier": sigma}),
        format!(
            "noise multiplier = {sigma:.6} ({} accountant; epsilon = {}, delta = {}, q = {}, T = {})",
            m.accountant.name(),
            a.epsilon,
            a.delta,
            m.sampling_rate,
            m.steps
        ),
    );
    Ok(())
}

fn rdp_command(a: RdpArgs) -> anyhow::Result<()> {
    let rdp = poisson_subsampled_gaussian_rdp(a.sampling_rate, a.noise_multiplier, a.order)?;
    print(
        a.json,
        json!({"rdp": rdp}),
        format!(
            "RDP({}) = {rdp:e} for one step with q = {}, sigma = {}",
            a.order, a.sampling_rate, a.noise_multiplier
        ),
    );
    Ok(())
}

/// The paper's settings (docs/paper.md §2): B = 64, T = 6000, δ = 1/n.
const PAPER_TASKS: [(&str, u64); 6] = [
    ("SST-2", 1024),
    ("SNLI", 1536),
    ("MNLI", 1536),
    ("SST-5", 2560),
    ("TREC", 3072),
    ("RTE", 1024),
];
const PAPER_BATCH: u64 = 64;
const PAPER_STEPS: u64 = 6000;
const PAPER_EPSILONS: [f64; 3] = [2.0, 4.0, 8.0];

fn table_command(a: TableArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join("sigma.csv");
    let mut writer =
        csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    writer.write_record([
        "task",
        "dataset_size",
        "batch_size",
        "steps",
        "sampling_rate",
        "delta",
        "epsilon",
        "accountant",
        "noise_multiplier",
    ])?;
    for (task, n) in PAPER_TASKS {
        let q = PAPER_BATCH as f64 / n as f64;
        let delta = 1.0 / n as f64;
        for epsilon in PAPER_EPSILONS {
            for kind in [
                AccountantKind::Rdp,
                AccountantKind::RdpCompat,
                AccountantKind::Prv,
            ] {
                let m = Mechanism {
                    sampling_rate: q,
                    steps: PAPER_STEPS,
                    accountant: kind,
                    sampling: Sampling::Poisson,
                    dataset_size: None,
                    eps_error: a.eps_error,
                    json: false,
                };
                let sigma = sigma_of(&m, epsilon, delta)
                    .with_context(|| format!("{task}, epsilon {epsilon}, {}", kind.name()))?;
                eprintln!("{task:6} eps {epsilon} {:10} sigma {sigma:.6}", kind.name());
                writer.write_record([
                    task.to_string(),
                    n.to_string(),
                    PAPER_BATCH.to_string(),
                    PAPER_STEPS.to_string(),
                    format!("{q}"),
                    format!("{delta}"),
                    format!("{epsilon}"),
                    kind.name().to_string(),
                    format!("{sigma:.9}"),
                ])?;
            }
        }
    }
    writer.flush()?;
    println!("{}", json!({"written": path.display().to_string()}));
    Ok(())
}
