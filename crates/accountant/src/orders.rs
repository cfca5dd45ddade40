//! Grids of Renyi orders on which RDP curves are evaluated.

use crate::error::{AccountantError, Result};
use serde::{Deserialize, Serialize};

/// A validated, strictly increasing grid of Renyi orders, each > 1 and finite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Orders(Vec<f64>);

impl Orders {
    /// dp-accounting 0.6.0 `DEFAULT_RDP_ORDERS`: 1.1, 1.2, …, 10.9; 11, …, 63; 128, 256, 512,
    /// 1024 (156 orders).
    pub fn dp_accounting_default() -> Self {
        let mut orders: Vec<f64> = (11..110).map(|i| i as f64 / 10.0).collect();
        orders.extend((11..64).map(|i| i as f64));
        orders.extend([128.0, 256.0, 512.0, 1024.0]);
        Orders(orders)
    }

    /// Opacus / prv-accountant's RDP grid: 1.1, …, 10.9; 12, …, 63 (151 orders).
    pub fn opacus() -> Self {
        let mut orders: Vec<f64> = (1..100).map(|i| 1.0 + i as f64 / 10.0).collect();
        orders.extend((12..64).map(|i| i as f64));
        Orders(orders)
    }

    /// A custom grid; sorted and de-duplicated, refused if empty or holding an order that is
    /// not finite and > 1.
    pub fn custom(mut orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() {
            return Err(AccountantError::InvalidOrders("the grid is empty".into()));
        }
        if let Some(bad) = orders.iter().find(|a| !(a.is_finite() && **a > 1.0)) {
            return Err(AccountantError::InvalidOrders(format!(
                "order {bad} is not finite and > 1"
            )));
        }
        orders.sort_by(f64::total_cmp);
        orders.dedup();
        Ok(Orders(orders))
    }

    /// The orders as a slice.
    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }

    /// Number of orders.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty grid (never, for a validated grid).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grids_have_the_documented_sizes_and_ends() {
        let d = Orders::dp_accounting_default();
        assert_eq!(d.len(), 156);
        assert_eq!(d.as_slice()[0], 1.1);
        assert_eq!(d.as_slice()[98], 10.9);
        assert_eq!(d.as_slice()[99], 11.0);
        assert_eq!(*d.as_slice().last().unwrap(), 1024.0);
        let o = Orders::opacus();
        assert_eq!(o.len(), 151);
        assert_eq!(*o.as_slice().last().unwrap(), 63.0);
    }

    #[test]
    fn custom_grid_is_validated() {
        assert!(Orders::custom(vec![]).is_err());
        assert!(Orders::custom(vec![2.0, 1.0]).is_err());
        assert!(Orders::custom(vec![2.0, f64::NAN]).is_err());
        assert_eq!(
            Orders::custom(vec![3.0, 2.0, 3.0]).unwrap().as_slice(),
            &[2.0, 3.0]
        );
    }
}
