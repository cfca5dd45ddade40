//! Renyi-DP accountant: per-event RDP curves, composition, ledger and conversion to (ε, δ).

mod conversion;
mod dp_accounting_compat;
mod fixed_batch;
mod poisson_gaussian;
mod trapezoid;

pub use conversion::{delta_from_rdp, epsilon_from_rdp, epsilon_from_rdp_classical, Conversion};
pub use dp_accounting_compat::poisson_subsampled_gaussian_rdp_compat;
pub use fixed_batch::fixed_batch_gaussian_rdp;
pub use poisson_gaussian::{
    poisson_subsampled_gaussian_rdp, poisson_subsampled_gaussian_rdp_curve,
};

use crate::error::{check_delta, check_order, AccountantError, Result};
use crate::event::{DpEvent, Ledger, LedgerEntry, NeighboringRelation};
use crate::orders::Orders;
use serde::{Deserialize, Serialize};

/// How fractional orders of the Poisson-subsampled Gaussian are evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RdpMethod {
    /// Exact evaluation (positive-term sum / quadrature).
    Exact,
    /// dp-accounting 0.6.0's evaluation, reproducing its loose values and +∞ orders.
    DpAccountingCompat,
}

/// One-step RDP of the Gaussian mechanism: α/(2σ²) (Mironov 2017, Prop. 7).
pub fn gaussian_rdp(noise_multiplier: f64, order: f64) -> Result<f64> {
    crate::error::check_noise_multiplier(noise_multiplier)?;
    check_order(order)?;
    if noise_multiplier == f64::INFINITY {
        return Ok(0.0);
    }
    Ok(order / (2.0 * noise_multiplier * noise_multiplier))
}

/// RDP of `event` (composed as described by the event itself) at one order.
pub fn event_rdp(event: &DpEvent, order: f64, method: RdpMethod) -> Result<f64> {
    event.validate()?;
    match event {
        DpEvent::Gaussian { noise_multiplier } => gaussian_rdp(*noise_multiplier, order),
        DpEvent::PoissonSampledGaussian {
            sampling_rate,
            noise_multiplier,
        } => match method {
            RdpMethod::Exact => {
                poisson_subsampled_gaussian_rdp(*sampling_rate, *noise_multiplier, order)
            }
            RdpMethod::DpAccountingCompat => {
                poisson_subsampled_gaussian_rdp_compat(*sampling_rate, *noise_multiplier, order)
            }
        },
        DpEvent::FixedBatchGaussian {
            dataset_size,
            batch_size,
            noise_multiplier,
        } => {
            let q = *batch_size as f64 / *dataset_size as f64;
            fixed_batch_gaussian_rdp(q, *noise_multiplier, order)
        }
        // ρ-zCDP gives ε(α) = ρα (Bun & Steinke 2016, Def. 1.1).
        DpEvent::Zcdp { rho } => {
            check_order(order)?;
            Ok(rho * order)
        }
        DpEvent::SelfComposed { event, count } => {
            let one = event_rdp(event, order, method)?;
            Ok(scale(one, *count))
        }
        DpEvent::Composed { events } => {
            let mut total = 0.0;
            for e in events {
                total += event_rdp(e, order, method)?;
            }
            Ok(total)
        }
    }
}

/// [`event_rdp`] at every order. The exact Poisson-subsampled Gaussian is evaluated as one
/// curve (its fractional orders share quadrature nodes, ~1 µs an order); every other event
/// order by order. Values are identical to [`event_rdp`]'s.
pub fn event_rdp_curve(event: &DpEvent, orders: &[f64], method: RdpMethod) -> Result<Vec<f64>> {
    event.validate()?;
    match event {
        DpEvent::PoissonSampledGaussian {
            sampling_rate,
            noise_multiplier,
        } if method == RdpMethod::Exact => {
            poisson_subsampled_gaussian_rdp_curve(*sampling_rate, *noise_multiplier, orders)
        }
        DpEvent::SelfComposed { event, count } => Ok(event_rdp_curve(event, orders, method)?
            .into_iter()
            .map(|one| scale(one, *count))
            .collect()),
        DpEvent::Composed { events } => {
            let mut total = vec![0.0; orders.len()];
            for e in events {
                for (t, v) in total.iter_mut().zip(event_rdp_curve(e, orders, method)?) {
                    *t += v;
                }
            }
            Ok(total)
        }
        _ => per_order(orders, |order| event_rdp(event, order, method)),
    }
}

/// count · value with 0 · ∞ = 0 (an event composed zero times costs nothing).
fn scale(value: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        value * count as f64
    }
}

/// `f` at every order, in order. The orders are independent (the dp-accounting-compatible
/// fractional series and the adaptive quadrature cost tens of µs each), so they are shared
/// among the available cores; the values do not depend on the number of threads.
fn per_order(orders: &[f64], f: impl Fn(f64) -> Result<f64> + Sync) -> Result<Vec<f64>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(orders.len().div_ceil(16))
        .max(1);
    if threads == 1 {
        return orders.iter().map(|&order| f(order)).collect();
    }
    // Interleaved chunks balance the expensive fractional orders across threads.
    let f = &f;
    let parts: Vec<Vec<(usize, Result<f64>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..orders.len())
                        .step_by(threads)
                        .map(|i| (i, f(orders[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an RDP worker thread panicked"))
            .collect()
    });
    let mut values = vec![0.0; orders.len()];
    for (i, value) in parts.into_iter().flatten() {
        values[i] = value?;
    }
    Ok(values)
}

/// ε (with its optimal order) of `steps` Poisson-subsampled Gaussian steps under add/remove-one
/// adjacency on dp-accounting's 156 orders: the one-liner that calibration loops, benchmarks
/// and the theory claims share.
pub fn poisson_gaussian_epsilon(
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
    method: RdpMethod,
) -> Result<Conversion> {
    let mut accountant = RdpAccountant::new(
        Orders::dp_accounting_default(),
        NeighboringRelation::AddOrRemoveOne,
        method,
    );
    accountant.compose(
        &DpEvent::PoissonSampledGaussian {
            sampling_rate,
            noise_multiplier,
        },
        steps,
    )?;
    accountant.epsilon_and_order(delta)
}

/// An RDP accountant over a fixed order grid.
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    orders: Orders,
    method: RdpMethod,
    rdp: Vec<f64>,
    ledger: Ledger,
}

impl RdpAccountant {
    /// An empty accountant.
    pub fn new(orders: Orders, relation: NeighboringRelation, method: RdpMethod) -> Self {
        let rdp = vec![0.0; orders.len()];
        RdpAccountant {
            orders,
            method,
            rdp,
            ledger: Ledger::new(relation),
        }
    }

    /// Rebuilds an accountant by composing every entry of a stored ledger.
    pub fn from_ledger(ledger: &Ledger, orders: Orders, method: RdpMethod) -> Result<Self> {
        let mut accountant = RdpAccountant::new(orders, ledger.relation, method);
        for entry in &ledger.entries {
            accountant.compose(&entry.event, entry.count)?;
        }
        Ok(accountant)
    }

    /// Composes `event` `count` times. Invalid parameters and event/relation pairs outside the
    /// implemented theory are refused (the accountant is left unchanged).
    pub fn compose(&mut self, event: &DpEvent, count: u64) -> Result<()> {
        event.validate()?;
        event.check_relation(self.ledger.relation)?;
        let increments = event_rdp_curve(event, self.orders.as_slice(), self.method)?;
        for (total, inc) in self.rdp.iter_mut().zip(increments) {
            *total += scale(inc, count);
        }
        self.ledger.entries.push(LedgerEntry {
            event: event.clone(),
            count,
        });
        Ok(())
    }

    /// Adds another accountant's curve (same grid, relation and method) order-wise.
    pub fn compose_accountant(&mut self, other: &RdpAccountant) -> Result<()> {
        if other.orders != self.orders {
            return Err(AccountantError::OrderGridMismatch {
                left: self.orders.len(),
                right: other.orders.len(),
            });
        }
        if other.ledger.relation != self.ledger.relation {
            return Err(AccountantError::UnsupportedEvent {
                event: "a composed accountant".into(),
                relation: self.ledger.relation.to_string(),
                reason: format!("its events were accounted under {}", other.ledger.relation),
            });
        }
        for (total, inc) in self.rdp.iter_mut().zip(&other.rdp) {
            *total += inc;
        }
        self.ledger
            .entries
            .extend(other.ledger.entries.iter().cloned());
        Ok(())
    }

    /// The accumulated RDP value at each order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// The order grid.
    pub fn orders(&self) -> &Orders {
        &self.orders
    }

    /// The ledger of composed events.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The accumulated RDP at an arbitrary order (recomputed from the ledger).
    pub fn rdp_at(&self, order: f64) -> Result<f64> {
        let mut total = 0.0;
        for entry in &self.ledger.entries {
            total += scale(event_rdp(&entry.event, order, self.method)?, entry.count);
        }
        Ok(total)
    }

    /// The order evaluation method.
    pub fn method(&self) -> RdpMethod {
        self.method
    }

    /// Smallest ε over the grid for `delta`, with the optimal order.
    pub fn epsilon_and_order(&self, delta: f64) -> Result<Conversion> {
        epsilon_from_rdp(self.orders.as_slice(), &self.rdp, delta)
    }

    /// Smallest δ over the grid for `epsilon`, with the optimal order.
    pub fn delta_and_order(&self, epsilon: f64) -> Result<Conversion> {
        delta_from_rdp(self.orders.as_slice(), &self.rdp, epsilon)
    }

    /// ε refined over continuous α: golden-section search of the improved conversion between
    /// the grid neighbours of the grid optimum (beyond the last order: up to 4× it). Never
    /// larger than [`RdpAccountant::epsilon`].
    pub fn epsilon_continuous(&self, delta: f64) -> Result<Conversion> {
        let grid = self.epsilon_and_order(delta)?;
        if grid.value == 0.0 || !grid.value.is_finite() {
            return Ok(grid);
        }
        let orders = self.orders.as_slice();
        let index = orders.iter().position(|&a| a == grid.order).unwrap_or(0);
        let low = if index == 0 {
            (1.0 + orders[0]) / 2.0
        } else {
            orders[index - 1]
        }
        .max(1.011);
        let high = if index + 1 == orders.len() {
            4.0 * orders[index]
        } else {
            orders[index + 1]
        };
        let epsilon_at = |alpha: f64| -> Result<f64> {
            let value = self.rdp_at(alpha)?;
            Ok(value + (-1.0 / alpha).ln_1p() - (delta * alpha).ln() / (alpha - 1.0))
        };
        check_delta(delta)?;
        let ratio = 0.5 * (5.0_f64.sqrt() - 1.0);
        let (mut a, mut b) = (low, high);
        let mut c = b - ratio * (b - a);
        let mut d = a + ratio * (b - a);
        let mut fc = epsilon_at(c)?;
        let mut fd = epsilon_at(d)?;
        for _ in 0..60 {
            if (b - a) < 1e-9 * b {
                break;
            }
            if fc < fd {
                b = d;
                d = c;
                fd = fc;
                c = b - ratio * (b - a);
                fc = epsilon_at(c)?;
            } else {
                a = c;
                c = d;
                fc = fd;
                d = a + ratio * (b - a);
                fd = epsilon_at(d)?;
            }
        }
        let (order, value) = if fc < fd { (c, fc) } else { (d, fd) };
        if value < grid.value {
            Ok(Conversion {
                value: value.max(0.0),
                order,
            })
        } else {
            Ok(grid)
        }
    }
}
