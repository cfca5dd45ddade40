//! `repro privacy …`: the accountant's command-line contract (JSON on the last stdout line).

use accountant::rdp::poisson_subsampled_gaussian_rdp;
use accountant::{
    calibrate_noise_multiplier, poisson_composition, prv, Accountant, AccountantError,
    AccountantKind, LedgerEntry, SampledGaussian, Sampling,
};
use anyhow::{bail, Context};
use serde_json::json;
use std::path::PathBuf;

/// Relative tolerance of every noise calibration.
const CALIBRATION_TOLERANCE: f64 = 1e-9;
/// Most a `privacy` command may be estimated to take before it is refused (seconds).
const TIME_LIMIT_SECONDS: f64 = 8.0;
/// `privacy table` computes 54 calibrations; it may take this long.
const TABLE_TIME_LIMIT_SECONDS: f64 = 120.0;
/// Accountant evaluations of one noise calibration (bracketing then regula falsi), at most.
const CALIBRATION_EVALUATIONS: f64 = 40.0;

/// `repro privacy`: epsilon, delta, sigma, per-step RDP and the paper's sigma table.
///
/// JSON output: an unbounded value (an infinite ε or RDP: no finite value is certified) is
/// written as the string "inf", never as null.
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

fn parse_accountant(text: &str) -> Result<AccountantKind, String> {
    text.parse()
}

fn parse_sampling(text: &str) -> Result<Sampling, String> {
    text.parse()
}

#[derive(clap::Args, Clone)]
struct Mechanism {
    /// Sampling rate q in [0, 1] (batch size / dataset size).
    #[arg(long)]
    sampling_rate: f64,
    /// Number of steps T.
    #[arg(long)]
    steps: u64,
    /// Accountant: rdp, rdp-compat, prv, zcdp (q = 1 only) or analytic (q = 1 only).
    #[arg(long, default_value = "rdp", value_parser = parse_accountant)]
    accountant: AccountantKind,
    /// Sampling: poisson; fixed-size (a fresh batch of q·N each step, without replacement);
    /// shuffled (disjoint batches of a shuffle per epoch, accounted per epoch).
    #[arg(long, default_value = "poisson", value_parser = parse_sampling)]
    sampling: Sampling,
    /// Dataset size N (needed with `--sampling fixed-size` and `shuffled`; batch size = q·N).
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

/// The composition of T steps at noise multiplier σ, and its neighbouring relation.
fn composition(
    m: &Mechanism,
    noise_multiplier: f64,
) -> anyhow::Result<(LedgerEntry, accountant::NeighboringRelation)> {
    if m.steps == 0 {
        return Err(AccountantError::InvalidSteps(0).into());
    }
    if m.sampling == Sampling::Poisson && m.dataset_size.is_none() {
        let entry = poisson_composition(m.sampling_rate, noise_multiplier, m.steps, 1)?;
        return Ok((entry, Sampling::Poisson.relation()));
    }
    let dataset_size = m
        .dataset_size
        .with_context(|| format!("--sampling {} needs --dataset-size N", m.sampling))?;
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
    let mechanism = SampledGaussian {
        sampling: m.sampling,
        dataset_size,
        batch_size: batch_size as u64,
        noise_multiplier,
    };
    Ok((mechanism.composition(m.steps, 1)?, mechanism.relation()))
}

/// The accountant of kind `m.accountant` holding T steps at σ (`delta_hint` sizes nothing; the
/// PRV accountant's error budgets follow δ at query time).
fn composed(m: &Mechanism, noise_multiplier: f64) -> anyhow::Result<Box<dyn Accountant>> {
    let (entry, relation) = composition(m, noise_multiplier)?;
    let mut accountant = m.accountant.build(relation, m.eps_error);
    accountant.compose(&entry.event, entry.count)?;
    Ok(accountant)
}

/// Estimated seconds of one PRV evaluation at σ and δ (0 for other accountants), from the
/// grid size the accountant would build (`accountant::prv::grid_points`).
fn prv_seconds(m: &Mechanism, noise_multiplier: f64, delta: f64) -> anyhow::Result<f64> {
    if m.accountant != AccountantKind::Prv {
        return Ok(0.0);
    }
    let q = if m.sampling == Sampling::Poisson {
        m.sampling_rate
    } else {
        1.0
    };
    if q == 0.0 || noise_multiplier == f64::INFINITY || noise_multiplier == 0.0 {
        return Ok(0.0);
    }
    let points = prv::grid_points(
        q,
        noise_multiplier,
        m.steps.max(1),
        m.eps_error,
        delta * accountant::PRV_DELTA_ERROR_FRACTION,
    )?;
    Ok(points * prv::SECONDS_PER_POINT)
}

/// ε and (for RDP) the optimal order.
fn epsilon_of(
    m: &Mechanism,
    noise_multiplier: f64,
    delta: f64,
) -> anyhow::Result<(f64, Option<f64>)> {
    accountant::validate_delta(delta)?;
    let accountant = composed(m, noise_multiplier)?;
    Ok((accountant.epsilon(delta)?, accountant.optimal_order(delta)?))
}

fn delta_of(m: &Mechanism, noise_multiplier: f64, epsilon: f64) -> anyhow::Result<f64> {
    Ok(composed(m, noise_multiplier)?.delta(epsilon)?)
}

/// The smallest σ meeting (ε, δ); refused up front when the PRV evaluations it needs are
/// estimated to take longer than `time_limit` seconds.
fn sigma_of(m: &Mechanism, epsilon: f64, delta: f64, time_limit: f64) -> anyhow::Result<f64> {
    accountant::validate_delta(delta)?;
    // Refuse an unsupported accountant/sampling pair before the search hides it.
    let (entry, relation) = composition(m, 1.0)?;
    m.accountant
        .build(relation, m.eps_error)
        .check_supported(&entry.event)?;
    if m.accountant == AccountantKind::Prv {
        // The PRV grid is widest near the answer's σ; the RDP answer is a close upper bound.
        let rdp = Mechanism {
            accountant: AccountantKind::Rdp,
            ..m.clone()
        };
        let near = sigma_of(&rdp, epsilon, delta, time_limit)?;
        // The search never tries a σ below min(1, answer/2), where the grid is widest.
        let smallest = (near * 0.5).min(1.0);
        let seconds = CALIBRATION_EVALUATIONS * prv_seconds(m, smallest, delta)?;
        if seconds > time_limit {
            return Err(AccountantError::TooExpensive {
                what: format!(
                    "calibrating sigma with the PRV accountant at eps_error = {}",
                    m.eps_error
                ),
                cost: format!("about {seconds:.0} s ({CALIBRATION_EVALUATIONS} evaluations)"),
                limit: format!("{time_limit} s"),
                hint: "; raise --eps-error or use --accountant rdp".into(),
            }
            .into());
        }
    }
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

/// A result as JSON: a number, or the string "inf" for +∞ (JSON has no infinity; serde_json
/// would write null). NaN is never a result: it is an error.
fn number(value: f64) -> anyhow::Result<serde_json::Value> {
    if value.is_nan() {
        bail!("internal error: the accountant returned NaN");
    }
    Ok(if value == f64::INFINITY {
        json!("inf")
    } else {
        json!(value)
    })
}

/// A result in a sentence: "inf" for +∞.
fn text(value: f64, precision: usize, scientific: bool) -> String {
    if value == f64::INFINITY {
        "inf".into()
    } else if scientific {
        format!("{value:.precision$e}")
    } else {
        format!("{value:.precision$}")
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
        json!({"epsilon": number(epsilon)?, "order": order, "accountant": m.accountant.name()}),
        format!(
            "epsilon = {}{order_text} ({} accountant; q = {}, sigma = {}, T = {}, delta = {})",
            text(epsilon, 6, false),
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
        json!({"delta": number(delta)?}),
        format!(
            "delta = {} ({} accountant; q = {}, sigma = {}, T = {}, epsilon = {})",
            text(delta, 6, true),
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
    let sigma = sigma_of(m, a.epsilon, a.delta, TIME_LIMIT_SECONDS)?;
    print(
        m.json,
        json!({"noise_multiplier": number(sigma)?}),
        format!(
            "noise multiplier = {} ({} accountant; epsilon = {}, delta = {}, q = {}, T = {})",
            text(sigma, 6, false),
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
        json!({"rdp": number(rdp)?}),
        format!(
            "RDP({}) = {} for one step with q = {}, sigma = {}",
            a.order,
            text(rdp, 6, true),
            a.sampling_rate,
            a.noise_multiplier
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
    let kinds = [
        AccountantKind::Rdp,
        AccountantKind::RdpCompat,
        AccountantKind::Prv,
    ];
    let cell = |n: u64, kind: AccountantKind| Mechanism {
        sampling_rate: PAPER_BATCH as f64 / n as f64,
        steps: PAPER_STEPS,
        accountant: kind,
        sampling: Sampling::Poisson,
        dataset_size: None,
        eps_error: a.eps_error,
        json: false,
    };
    // Estimate the whole table's PRV work before computing (and writing) anything.
    let mut seconds = 0.0;
    for (_, n) in PAPER_TASKS {
        for epsilon in PAPER_EPSILONS {
            let m = cell(n, AccountantKind::Prv);
            let delta = 1.0 / n as f64;
            let rdp = sigma_of(&cell(n, AccountantKind::Rdp), epsilon, delta, f64::INFINITY)?;
            seconds += CALIBRATION_EVALUATIONS * prv_seconds(&m, (rdp * 0.5).min(1.0), delta)?;
        }
    }
    if seconds > TABLE_TIME_LIMIT_SECONDS {
        return Err(AccountantError::TooExpensive {
            what: format!("privacy table at eps_error = {}", a.eps_error),
            cost: format!("its 18 PRV calibrations would take about {seconds:.0} s"),
            limit: format!("{TABLE_TIME_LIMIT_SECONDS} s"),
            hint: "; raise --eps-error (the cost falls in proportion)".into(),
        }
        .into());
    }
    let mut rows = Vec::new();
    for (task, n) in PAPER_TASKS {
        let q = PAPER_BATCH as f64 / n as f64;
        let delta = 1.0 / n as f64;
        for epsilon in PAPER_EPSILONS {
            for kind in kinds {
                let sigma = sigma_of(&cell(n, kind), epsilon, delta, f64::INFINITY)
                    .with_context(|| format!("{task}, epsilon {epsilon}, {}", kind.name()))?;
                eprintln!("{task:6} eps {epsilon} {:10} sigma {sigma:.6}", kind.name());
                rows.push([
                    task.to_string(),
                    n.to_string(),
                    PAPER_BATCH.to_string(),
                    PAPER_STEPS.to_string(),
                    format!("{q}"),
                    format!("{delta}"),
                    format!("{epsilon}"),
                    kind.name().to_string(),
                    format!("{sigma:.9}"),
                ]);
            }
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let path = a.out.join("sigma.csv");
    // Every cell is computed before the file is touched, and it is replaced in one rename.
    atomic_file::write_with(&path, |out| -> anyhow::Result<()> {
        let mut writer = csv::Writer::from_writer(out);
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
        for row in &rows {
            writer.write_record(row)?;
        }
        writer.flush()?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    println!("{}", json!({"written": path.display().to_string()}));
    Ok(())
}
