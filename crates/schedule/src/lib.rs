//! The DP-ZOSO stagewise schedule (docs/paper.md §1.2, transcribed from the released
//! `src/trainer.py`), as a small state machine shared by the
//! trainer and the `theory` crate (no BLAS, no libtorch).
//!
//! ```text
//! S  = num_stages, T0 = first_stage_steps, global steps t = 1..=T with T <= T0 (2^S - 1)
//! stage s covers t in (T0 (2^s - 1), T0 (2^(s+1) - 1)]      -> lengths T0, 2 T0, 4 T0, ...
//! eta_s = eta_0 / 2^s                                        (step size halves per stage)
//! mu_s  = mu_start / k^s                                     (ZO smoothing scale)
//!   MuSchedule::Geometric:    k = (mu_start / mu_end)^(1/S)   (the intended geometric decay)
//!   MuSchedule::ReleasedCode: k = (mu_end - mu_start)^(1/S)   (as released; 1 if mu_end == mu_start)
//! anchor_reset = true at the first step of every stage (stage 0 included: anchor = theta_0),
//!                i.e. theta_anchor <- theta before the step is taken.
//! ```
//!
//! With [`MuSchedule::Geometric`] the last stage (s = S - 1) uses `mu_start / k^(S-1)`; `mu_end`
//! itself would only be reached after an S-th transition, which the released code never makes
//! (its T is capped at `T0 (2^S - 1)`). The released `k` is kept as an option only to compare
//! with: it is dimensionally odd and undefined (NaN) when `mu_end < mu_start` (docs/paper.md §1.2,
//! caveat 3); that case is an error here.

use thiserror::Error;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ScheduleError>;

/// An invalid schedule parameter, reported with the offending value.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScheduleError {
    /// A parameter that must be finite and strictly positive was not.
    #[error("{name} must be finite and > 0, got {value}")]
    NotPositive {
        /// Parameter name as spelled in the API.
        name: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A count that must be at least `min` was smaller.
    #[error("{name} must be >= {min}, got {value}")]
    CountTooSmall {
        /// Parameter name as spelled in the API.
        name: &'static str,
        /// The offending value.
        value: usize,
        /// Smallest accepted value.
        min: usize,
    },
    /// A count exceeded its admissible maximum.
    #[error("{name} must be <= {max}, got {value}")]
    CountTooLarge {
        /// Parameter name as spelled in the API.
        name: &'static str,
        /// The offending value.
        value: usize,
        /// Largest accepted value.
        max: usize,
    },
    /// A parameter combination has no finite meaning.
    #[error("invalid schedule: {reason}")]
    InvalidSchedule {
        /// Human-readable reason with the offending values.
        reason: String,
    },
}

fn positive(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ScheduleError::NotPositive { name, value })
    }
}

fn at_least(name: &'static str, value: usize, min: usize) -> Result<usize> {
    if value >= min {
        Ok(value)
    } else {
        Err(ScheduleError::CountTooSmall { name, value, min })
    }
}

/// How the ZO smoothing scale `mu` changes from stage to stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuSchedule {
    /// `mu_s = mu_start / k^s` with `k = (mu_start / mu_end)^(1/S)`.
    Geometric,
    /// The released code's factor `k = (mu_end - mu_start)^(1/S)` (`k = 1` when equal).
    ReleasedCode,
}

/// Hyper-parameters of the stagewise schedule at one global step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageStep {
    /// Stage index `s`, starting at 0.
    pub stage: usize,
    /// Step size `eta_0 / 2^s`.
    pub step_size: f64,
    /// ZO smoothing scale `mu_s` (called `zo_eps` in the trainer).
    pub zo_eps: f64,
    /// True at the first step of a stage: set the proximal anchor to the current iterate
    /// before taking this step.
    pub anchor_reset: bool,
}

/// The DP-ZOSO stagewise schedule: stage lengths `T0 2^s`, step halving, `mu` rescaling and
/// proximal-anchor resets. See the module docs for the exact formulas.
///
/// # Examples
/// ```
/// use schedule::{MuSchedule, StagewiseSchedule};
/// // The logged run of docs/paper.md §3.1: T0 = 1000, S = 3, T = 6000, eta_0 = 2e-5.
/// let schedule =
///     StagewiseSchedule::new(2e-5, 1000, 3, 6000, 1e-6, 1e-6, MuSchedule::Geometric).unwrap();
/// let step = schedule.at(1001).unwrap();
/// assert_eq!(step.stage, 1);
/// assert!(step.anchor_reset);
/// approx::assert_relative_eq!(step.step_size, 1e-5, max_relative = 1e-12);
/// approx::assert_relative_eq!(schedule.at(6000).unwrap().step_size, 5e-6, max_relative = 1e-12);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StagewiseSchedule {
    initial_step_size: f64,
    first_stage_steps: usize,
    num_stages: usize,
    total_steps: usize,
    mu_start: f64,
    mu_factor: f64,
    step_halving: bool,
}

impl StagewiseSchedule {
    /// Builds a schedule.
    ///
    /// # Arguments
    /// * `initial_step_size`: `eta_0` (> 0).
    /// * `first_stage_steps`: `T0`, the length of stage 0 (>= 1).
    /// * `num_stages`: `S` (>= 1).
    /// * `total_steps`: `T`, at most `T0 (2^S - 1)` (the released code uses
    ///   `min(T0 (2^S - 1), training_steps)`; pass that minimum).
    /// * `mu_start`, `mu_end`: smoothing scales (> 0).
    /// * `mu_schedule`: which factor `k` to use.
    ///
    /// # Errors
    /// Non-positive or non-finite reals, zero counts, `total_steps > T0 (2^S - 1)`, or a
    /// released-code factor that is not a finite positive number (e.g. `mu_end < mu_start`).
    pub fn new(
        initial_step_size: f64,
        first_stage_steps: usize,
        num_stages: usize,
        total_steps: usize,
        mu_start: f64,
        mu_end: f64,
        mu_schedule: MuSchedule,
    ) -> Result<Self> {
        positive("initial_step_size", initial_step_size)?;
        at_least("first_stage_steps", first_stage_steps, 1)?;
        at_least("num_stages", num_stages, 1)?;
        at_least("total_steps", total_steps, 1)?;
        positive("mu_start", mu_start)?;
        positive("mu_end", mu_end)?;
        if num_stages >= usize::BITS as usize - 1 {
            return Err(ScheduleError::CountTooLarge {
                name: "num_stages",
                value: num_stages,
                max: usize::BITS as usize - 2,
            });
        }
        let capacity = first_stage_steps
            .checked_mul((1usize << num_stages) - 1)
            .ok_or_else(|| ScheduleError::InvalidSchedule {
                reason: format!(
                    "T0 (2^S - 1) overflows for T0={first_stage_steps}, S={num_stages}"
                ),
            })?;
        if total_steps > capacity {
            return Err(ScheduleError::CountTooLarge {
                name: "total_steps",
                value: total_steps,
                max: capacity,
            });
        }
        let exponent = 1.0 / num_stages as f64;
        let mu_factor = match mu_schedule {
            MuSchedule::Geometric => (mu_start / mu_end).powf(exponent),
            MuSchedule::ReleasedCode if mu_end == mu_start => 1.0,
            MuSchedule::ReleasedCode => (mu_end - mu_start).powf(exponent),
        };
        if !(mu_factor.is_finite() && mu_factor > 0.0) {
            return Err(ScheduleError::InvalidSchedule {
                reason: format!(
                    "mu factor k={mu_factor} for mu_start={mu_start}, mu_end={mu_end}, \
                     S={num_stages}, {mu_schedule:?}"
                ),
            });
        }
        Ok(Self {
            initial_step_size,
            first_stage_steps,
            num_stages,
            total_steps,
            mu_start,
            mu_factor,
            step_halving: true,
        })
    }

    /// The same schedule with a constant step size `eta_0` in every stage (an ablation of the
    /// halving; stages, anchor resets and the `mu` schedule are unchanged).
    pub fn without_step_halving(self) -> Self {
        Self {
            step_halving: false,
            ..self
        }
    }

    /// The sum of the step sizes over all `total_steps` steps (the total step size).
    pub fn total_step_size(&self) -> f64 {
        (1..=self.total_steps)
            .map(|t| self.at(t).map_or(0.0, |s| s.step_size))
            .sum()
    }

    /// A constant schedule (one stage, no halving, constant `mu`) for baselines, expressed in
    /// the same type so the same training loop serves both.
    ///
    /// # Errors
    /// As [`StagewiseSchedule::new`].
    pub fn constant(step_size: f64, total_steps: usize, zo_eps: f64) -> Result<Self> {
        Self::new(
            step_size,
            total_steps,
            1,
            total_steps,
            zo_eps,
            zo_eps,
            MuSchedule::Geometric,
        )
    }

    /// Total number of steps `T`.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Number of stages `S` (the last ones may be cut by `total_steps`).
    pub fn num_stages(&self) -> usize {
        self.num_stages
    }

    /// The factor `k` dividing `mu` at each stage transition.
    pub fn mu_factor(&self) -> f64 {
        self.mu_factor
    }

    /// First global step (1-based) of stage `stage`: `T0 (2^s - 1) + 1`.
    pub fn stage_start(&self, stage: usize) -> usize {
        self.first_stage_steps * ((1usize << stage) - 1) + 1
    }

    /// Schedule values at global step `global_step` (1-based, as in the released code).
    ///
    /// # Errors
    /// `global_step` is 0 or larger than `total_steps`.
    pub fn at(&self, global_step: usize) -> Result<StageStep> {
        at_least("global_step", global_step, 1)?;
        if global_step > self.total_steps {
            return Err(ScheduleError::CountTooLarge {
                name: "global_step",
                value: global_step,
                max: self.total_steps,
            });
        }
        // Stage s holds t with T0 (2^s - 1) < t <= T0 (2^(s+1) - 1).
        let mut stage = 0;
        while global_step > self.first_stage_steps * ((1usize << (stage + 1)) - 1) {
            stage += 1;
        }
        let halvings = i32::try_from(stage).unwrap_or(i32::MAX);
        Ok(StageStep {
            stage,
            step_size: if self.step_halving {
                self.initial_step_size * 0.5f64.powi(halvings)
            } else {
                self.initial_step_size
            },
            zo_eps: self.mu_start / self.mu_factor.powi(halvings),
            anchor_reset: global_step == self.stage_start(stage),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_halving_the_step_size_is_constant_and_the_rest_unchanged() {
        let halving =
            StagewiseSchedule::new(1.0, 10, 3, 70, 1.0, 0.25, MuSchedule::Geometric).unwrap();
        let flat = halving.clone().without_step_halving();
        for t in 1..=70 {
            let (a, b) = (halving.at(t).unwrap(), flat.at(t).unwrap());
            assert_eq!(b.step_size, 1.0);
            assert_eq!(
                (a.stage, a.zo_eps, a.anchor_reset),
                (b.stage, b.zo_eps, b.anchor_reset)
            );
        }
        // 10 steps at 1, 20 at 1/2, 40 at 1/4: 30 in all; without halving 70.
        assert_eq!(halving.total_step_size(), 30.0);
        assert_eq!(flat.total_step_size(), 70.0);
    }

    #[test]
    fn stage_boundaries_follow_t0_times_powers_of_two() {
        let schedule =
            StagewiseSchedule::new(1.0, 10, 3, 70, 1.0, 1.0, MuSchedule::Geometric).unwrap();
        let stages: Vec<usize> = (1..=70).map(|t| schedule.at(t).unwrap().stage).collect();
        assert_eq!(stages.iter().filter(|&&s| s == 0).count(), 10);
        assert_eq!(stages.iter().filter(|&&s| s == 1).count(), 20);
        assert_eq!(stages.iter().filter(|&&s| s == 2).count(), 40);
        let resets: Vec<usize> = (1..=70)
            .filter(|&t| schedule.at(t).unwrap().anchor_reset)
            .collect();
        assert_eq!(resets, vec![1, 11, 31]);
        assert_eq!(schedule.at(70).unwrap().step_size, 0.25);
    }

    #[test]
    fn geometric_mu_reaches_mu_end_after_s_transitions() {
        let schedule =
            StagewiseSchedule::new(1.0, 1, 2, 3, 1e-2, 1e-4, MuSchedule::Geometric).unwrap();
        assert!((schedule.mu_factor() - 10.0).abs() < 1e-12);
        assert!((schedule.at(1).unwrap().zo_eps - 1e-2).abs() < 1e-15);
        assert!((schedule.at(2).unwrap().zo_eps - 1e-3).abs() < 1e-15);
    }

    #[test]
    fn released_code_factor_is_an_error_when_mu_decreases() {
        let err = StagewiseSchedule::new(1.0, 1, 2, 3, 1e-2, 1e-4, MuSchedule::ReleasedCode);
        assert!(
            matches!(err, Err(ScheduleError::InvalidSchedule { .. })),
            "{err:?}"
        );
        // Equal scales: k = 1, mu constant (the logged run's setting).
        let same =
            StagewiseSchedule::new(1.0, 1, 2, 3, 1e-6, 1e-6, MuSchedule::ReleasedCode).unwrap();
        assert_eq!(same.mu_factor(), 1.0);
    }

    #[test]
    fn bad_inputs_name_the_value() {
        let err = StagewiseSchedule::new(-1.0, 1, 1, 1, 1.0, 1.0, MuSchedule::Geometric);
        assert_eq!(
            err.unwrap_err().to_string(),
            "initial_step_size must be finite and > 0, got -1"
        );
        let err = StagewiseSchedule::new(1.0, 1000, 3, 7001, 1.0, 1.0, MuSchedule::Geometric);
        assert_eq!(
            err.unwrap_err().to_string(),
            "total_steps must be <= 7000, got 7001"
        );
        let schedule = StagewiseSchedule::constant(0.1, 5, 1e-3).unwrap();
        assert!(schedule.at(0).is_err() && schedule.at(6).is_err());
        assert_eq!(schedule.at(5).unwrap().step_size, 0.1);
    }
}
