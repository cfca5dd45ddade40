//! One interface over every accountant, as dp_accounting's `PrivacyAccountant`: compose events,
//! ask whether an event is supported, read ε for a δ or δ for an ε. [`AccountantKind`] names the
//! accountants and builds them, so callers (the trainer, the `repro privacy` command) choose one
//! by name and never map events themselves.

use crate::error::{check_delta, check_epsilon, AccountantError, Result};
use crate::event::{DpEvent, Ledger, LedgerEntry, NeighboringRelation};
use crate::orders::Orders;
use crate::prv::PrvAccountant;
use crate::rdp::{RdpAccountant, RdpMethod};
use crate::zcdp::Zcdp;
use serde::{Deserialize, Serialize};

/// A privacy accountant: a running composition of [`DpEvent`]s under one neighbouring relation.
pub trait Accountant {
    /// The accountant's name ([`AccountantKind::name`]).
    fn name(&self) -> &'static str;

    /// `Ok(())` when this accountant can compose `event` (after what it already holds), else
    /// [`AccountantError::Unsupported`] (or the event's own validation error) saying why.
    fn check_supported(&self, event: &DpEvent) -> Result<()>;

    /// Whether `event` can be composed (dp_accounting's `supports`).
    fn supports(&self, event: &DpEvent) -> bool {
        self.check_supported(event).is_ok()
    }

    /// Composes `event` `count` times; an unsupported or invalid event leaves the accountant
    /// unchanged.
    fn compose(&mut self, event: &DpEvent, count: u64) -> Result<()>;

    /// The smallest ε (an upper bound for numerical accountants) such that the composition is
    /// (ε, δ)-DP; +∞ when no finite ε is certified.
    fn epsilon(&self, delta: f64) -> Result<f64>;

    /// The δ (an upper bound for numerical accountants) at which the composition is (ε, δ)-DP.
    fn delta(&self, epsilon: f64) -> Result<f64>;

    /// Everything composed so far.
    fn ledger(&self) -> &Ledger;

    /// The Rényi order at which [`Accountant::epsilon`] is attained, for RDP accountants.
    fn optimal_order(&self, _delta: f64) -> Result<Option<f64>> {
        Ok(None)
    }
}

/// The accountants, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountantKind {
    /// Exact RDP on dp-accounting's 156 orders ([`RdpAccountant`], [`RdpMethod::Exact`]).
    Rdp,
    /// dp-accounting 0.6.0-compatible RDP (its loose fractional orders, its +∞).
    RdpCompat,
    /// The PRV accountant (Gopi et al. 2021), reporting its upper bound.
    Prv,
    /// zCDP with the tight CKS20 conversion (Gaussian and zCDP events only).
    Zcdp,
    /// The analytic Gaussian (Balle & Wang 2018; Gaussian events only).
    Analytic,
}

/// The PRV accountant's ε error budget unless the caller sets one (the paper's 0.1).
pub const DEFAULT_PRV_EPSILON_ERROR: f64 = 0.1;
/// PRV's δ error budget as a fraction of δ (Opacus' and prv-accountant's choice).
pub const PRV_DELTA_ERROR_FRACTION: f64 = 1e-3;

impl AccountantKind {
    /// Every accountant.
    pub const ALL: [AccountantKind; 5] = [
        AccountantKind::Rdp,
        AccountantKind::RdpCompat,
        AccountantKind::Prv,
        AccountantKind::Zcdp,
        AccountantKind::Analytic,
    ];

    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::RdpCompat => "rdp-compat",
            AccountantKind::Prv => "prv",
            AccountantKind::Zcdp => "zcdp",
            AccountantKind::Analytic => "analytic",
        }
    }

    /// What answers, for records (PRV at the default ε error budget).
    pub fn description(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "accountant::RdpAccountant, dp-accounting default orders",
            AccountantKind::RdpCompat => {
                "accountant::RdpAccountant, dp-accounting default orders, dp-accounting 0.6.0 evaluation"
            }
            AccountantKind::Prv => {
                "accountant::PrvAccountant, upper bound, eps_error 0.1, delta_error delta/1000"
            }
            AccountantKind::Zcdp => "accountant::ZcdpAccountant, CKS20 conversion",
            AccountantKind::Analytic => "accountant::AnalyticGaussianAccountant, Balle & Wang 2018",
        }
    }

    /// An empty accountant of this kind under `relation`. `epsilon_error` is the PRV
    /// accountant's ε error budget (ignored by the others).
    pub fn build(self, relation: NeighboringRelation, epsilon_error: f64) -> Box<dyn Accountant> {
        match self {
            AccountantKind::Rdp | AccountantKind::RdpCompat => Box::new(RdpAccountant::new(
                Orders::dp_accounting_default(),
                relation,
                if self == AccountantKind::Rdp {
                    RdpMethod::Exact
                } else {
                    RdpMethod::DpAccountingCompat
                },
            )),
            AccountantKind::Prv => Box::new(PrvComposition::new(relation, epsilon_error)),
            AccountantKind::Zcdp => Box::new(ZcdpAccountant::new(relation)),
            AccountantKind::Analytic => Box::new(AnalyticGaussianAccountant::new(relation)),
        }
    }
}

impl std::fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AccountantKind {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
        AccountantKind::ALL
            .into_iter()
            .find(|k| k.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = AccountantKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown accountant {text:?}; valid: {}", names.join(", "))
            })
    }
}

fn unsupported(
    accountant: &'static str,
    event: &DpEvent,
    reason: impl Into<String>,
) -> AccountantError {
    AccountantError::Unsupported {
        accountant,
        event: format!("{event:?}"),
        reason: reason.into(),
    }
}

/// The base events of `event` with their multiplicities (SelfComposed / Composed flattened).
fn flatten(event: &DpEvent, count: u64, out: &mut Vec<(DpEvent, u64)>) {
    match event {
        DpEvent::SelfComposed {
            event,
            count: inner,
        } => flatten(event, count.saturating_mul(*inner), out),
        DpEvent::Composed { events } => events.iter().for_each(|e| flatten(e, count, out)),
        base => out.push((base.clone(), count)),
    }
}

impl Accountant for RdpAccountant {
    fn name(&self) -> &'static str {
        match self.method() {
            RdpMethod::Exact => AccountantKind::Rdp.name(),
            RdpMethod::DpAccountingCompat => AccountantKind::RdpCompat.name(),
        }
    }

    fn check_supported(&self, event: &DpEvent) -> Result<()> {
        event.validate()?;
        event.check_relation(self.ledger().relation)
    }

    fn compose(&mut self, event: &DpEvent, count: u64) -> Result<()> {
        RdpAccountant::compose(self, event, count)
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        Ok(self.epsilon_and_order(delta)?.value)
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        Ok(self.delta_and_order(epsilon)?.value)
    }

    fn ledger(&self) -> &Ledger {
        RdpAccountant::ledger(self)
    }

    fn optimal_order(&self, delta: f64) -> Result<Option<f64>> {
        Ok(Some(self.epsilon_and_order(delta)?.order))
    }
}

/// The PRV accountant behind [`Accountant`]: T compositions of one Poisson-subsampled Gaussian
/// (a full-batch Gaussian is the case q = 1), discretised on demand ([`PrvAccountant`]).
#[derive(Clone, Debug)]
pub struct PrvComposition {
    epsilon_error: f64,
    /// (q, σ) of the composed event, once one is.
    event: Option<(f64, f64)>,
    count: u64,
    ledger: Ledger,
}

impl PrvComposition {
    /// An empty composition with ε error budget `epsilon_error`.
    pub fn new(relation: NeighboringRelation, epsilon_error: f64) -> Self {
        PrvComposition {
            epsilon_error,
            event: None,
            count: 0,
            ledger: Ledger::new(relation),
        }
    }

    /// (q, σ, total count) of what was composed.
    fn parts(&self, event: &DpEvent, count: u64) -> Result<(Option<(f64, f64)>, u64)> {
        event.validate()?;
        let mut base = Vec::new();
        flatten(event, count, &mut base);
        let mut current = self.event;
        let mut total = self.count;
        for (e, n) in base {
            if n == 0 {
                continue;
            }
            let qs = match e {
                DpEvent::PoissonSampledGaussian {
                    sampling_rate,
                    noise_multiplier,
                } => {
                    if self.ledger.relation != NeighboringRelation::AddOrRemoveOne {
                        return Err(unsupported(
                            "prv",
                            event,
                            "the Poisson-subsampled Gaussian is analysed under add-or-remove-one",
                        ));
                    }
                    (sampling_rate, noise_multiplier)
                }
                DpEvent::Gaussian { noise_multiplier } => (1.0, noise_multiplier),
                _ => {
                    return Err(unsupported(
                        "prv",
                        event,
                        "this PRV accountant covers Poisson-subsampled and full-batch Gaussian steps only",
                    ))
                }
            };
            match current {
                Some(existing) if existing != qs => {
                    return Err(unsupported(
                        "prv",
                        event,
                        format!(
                            "it composes one repeated mechanism; (q, sigma) = {existing:?} is already composed"
                        ),
                    ))
                }
                _ => current = Some(qs),
            }
            total = total
                .checked_add(n)
                .ok_or(AccountantError::InvalidSteps(u64::MAX))?;
        }
        Ok((current, total))
    }

    fn discretise(&self, delta_error: f64) -> Result<Option<PrvAccountant>> {
        match self.event {
            Some((q, sigma)) if self.count > 0 => {
                Ok(Some(PrvAccountant::poisson_subsampled_gaussian(
                    q,
                    sigma,
                    self.count,
                    self.epsilon_error,
                    delta_error,
                )?))
            }
            _ => Ok(None),
        }
    }
}

impl Accountant for PrvComposition {
    fn name(&self) -> &'static str {
        AccountantKind::Prv.name()
    }

    fn check_supported(&self, event: &DpEvent) -> Result<()> {
        self.parts(event, 1).map(|_| ())
    }

    fn compose(&mut self, event: &DpEvent, count: u64) -> Result<()> {
        let (current, total) = self.parts(event, count)?;
        self.event = current;
        self.count = total;
        self.ledger.entries.push(LedgerEntry {
            event: event.clone(),
            count,
        });
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        check_delta(delta)?;
        match self.discretise(delta * PRV_DELTA_ERROR_FRACTION)? {
            Some(prv) => Ok(prv.epsilon(delta, self.count)?.upper),
            None => Ok(0.0),
        }
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        check_epsilon(epsilon)?;
        let Some((q, sigma)) = self.event.filter(|_| self.count > 0) else {
            return Ok(0.0);
        };
        // δ_error must be fixed before δ is known: 1e-3 of the RDP estimate (an upper bound).
        let mut rdp = RdpAccountant::new(
            Orders::dp_accounting_default(),
            NeighboringRelation::AddOrRemoveOne,
            RdpMethod::Exact,
        );
        let event = if q == 1.0 {
            DpEvent::Gaussian {
                noise_multiplier: sigma,
            }
        } else {
            DpEvent::PoissonSampledGaussian {
                sampling_rate: q,
                noise_multiplier: sigma,
            }
        };
        rdp.compose(&event, self.count)?;
        let rdp_delta = rdp.delta_and_order(epsilon)?.value;
        let delta_error = (rdp_delta * PRV_DELTA_ERROR_FRACTION).clamp(1e-15, 1e-3);
        match self.discretise(delta_error)? {
            Some(prv) => Ok(prv.delta(epsilon, self.count)?.upper),
            None => Ok(0.0),
        }
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// zCDP composition (Bun & Steinke 2016): a Gaussian with noise multiplier σ is 1/(2σ²)-zCDP,
/// and ρ adds up. Subsampled events are refused (zCDP has no amplification by subsampling).
#[derive(Clone, Debug)]
pub struct ZcdpAccountant {
    rho: f64,
    ledger: Ledger,
}

impl ZcdpAccountant {
    /// An empty accountant.
    pub fn new(relation: NeighboringRelation) -> Self {
        ZcdpAccountant {
            rho: 0.0,
            ledger: Ledger::new(relation),
        }
    }

    fn rho_of(&self, event: &DpEvent, count: u64) -> Result<f64> {
        event.validate()?;
        let mut base = Vec::new();
        flatten(event, count, &mut base);
        let mut rho = 0.0;
        for (e, n) in base {
            if n == 0 {
                continue;
            }
            let one =
                match e {
                    DpEvent::Gaussian { noise_multiplier } => {
                        Zcdp::from_gaussian(noise_multiplier)?.rho()
                    }
                    DpEvent::Zcdp { rho } => rho,
                    _ => return Err(unsupported(
                        "zcdp",
                        event,
                        "zCDP covers full-batch Gaussian and zCDP events only (sampling rate 1)",
                    )),
                };
            rho += Zcdp::new(one)?.compose_times(n).rho();
        }
        Ok(rho)
    }
}

impl Accountant for ZcdpAccountant {
    fn name(&self) -> &'static str {
        AccountantKind::Zcdp.name()
    }

    fn check_supported(&self, event: &DpEvent) -> Result<()> {
        self.rho_of(event, 1).map(|_| ())
    }

    fn compose(&mut self, event: &DpEvent, count: u64) -> Result<()> {
        self.rho += self.rho_of(event, count)?;
        self.ledger.entries.push(LedgerEntry {
            event: event.clone(),
            count,
        });
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        Zcdp::new(self.rho)?.epsilon(delta)
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        Zcdp::new(self.rho)?.delta(epsilon)
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// Exact composition of Gaussian mechanisms: k releases with noise multipliers σ_i are one
/// Gaussian with σ = (Σ σ_i^-2)^(-1/2), evaluated by the analytic Gaussian (Balle & Wang 2018).
#[derive(Clone, Debug)]
pub struct AnalyticGaussianAccountant {
    /// Σ 1/σ_i².
    precision: f64,
    ledger: Ledger,
}

impl AnalyticGaussianAccountant {
    /// An empty accountant.
    pub fn new(relation: NeighboringRelation) -> Self {
        AnalyticGaussianAccountant {
            precision: 0.0,
            ledger: Ledger::new(relation),
        }
    }

    fn precision_of(&self, event: &DpEvent, count: u64) -> Result<f64> {
        event.validate()?;
        let mut base = Vec::new();
        flatten(event, count, &mut base);
        let mut precision = 0.0;
        for (e, n) in base {
            if n == 0 {
                continue;
            }
            match e {
                DpEvent::Gaussian { noise_multiplier } => {
                    precision += n as f64 / (noise_multiplier * noise_multiplier)
                }
                _ => {
                    return Err(unsupported(
                        "analytic",
                        event,
                        "the analytic Gaussian covers full-batch Gaussian events only (sampling rate 1)",
                    ))
                }
            }
        }
        Ok(precision)
    }

    fn noise_multiplier(&self) -> f64 {
        // 1/sqrt(0) = ∞: nothing composed, no privacy loss.
        1.0 / self.precision.sqrt()
    }
}

impl Accountant for AnalyticGaussianAccountant {
    fn name(&self) -> &'static str {
        AccountantKind::Analytic.name()
    }

    fn check_supported(&self, event: &DpEvent) -> Result<()> {
        self.precision_of(event, 1).map(|_| ())
    }

    fn compose(&mut self, event: &DpEvent, count: u64) -> Result<()> {
        self.precision += self.precision_of(event, count)?;
        self.ledger.entries.push(LedgerEntry {
            event: event.clone(),
            count,
        });
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64> {
        crate::analytic_gaussian::epsilon(self.noise_multiplier(), delta)
    }

    fn delta(&self, epsilon: f64) -> Result<f64> {
        crate::analytic_gaussian::delta(self.noise_multiplier(), epsilon)
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}
