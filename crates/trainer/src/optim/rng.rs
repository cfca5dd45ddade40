//! Per-run, per-step random streams (rand_chacha, never the process-global tch generator).
//!
//! Every random draw of step t comes from a ChaCha8 generator keyed by (run seed, t, purpose),
//! so a resumed run draws exactly what an uninterrupted one would, with no RNG state to save.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; each purpose gets an independent key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// Seeds of the ZO directions z.
    Directions = 1,
    /// The DP noise draws (scalar for ZO, per-coordinate seed for DP-SGD).
    Noise = 2,
    /// The data-free mask score's directions.
    MaskScore = 3,
    /// Batch sampling (for samplers that want one).
    Batches = 4,
    /// Adapter initialisation (LoRA `A`, prefix tokens or values), drawn once at step 0.
    AdapterInit = 5,
}

/// The generator of `purpose` at global step `step` of the run seeded `run_seed`.
pub fn stream(run_seed: u64, step: u64, purpose: Purpose) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&run_seed.to_le_bytes());
    key[8..16].copy_from_slice(&step.to_le_bytes());
    key[16..24].copy_from_slice(&(purpose as u64).to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// One N(0, 1) draw (Box-Muller on two uniforms from `rng`).
pub fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
