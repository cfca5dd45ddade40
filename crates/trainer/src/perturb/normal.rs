//! Standard normals from Philox words by the Box-Muller transform, in portable f32 arithmetic.
//!
//! Every operation here is an IEEE-754 f32 add, multiply, divide or square root (each correctly
//! rounded), integer arithmetic, or an exact bit manipulation. No `fma`, no libm call. The CUDA
//! kernel's exact variant (`kernel.cu` without `DPZO_FAST_NORMAL`, compiled by NVRTC with
//! `--fmad=false`, no fast math; `NormalMath::Exact`) performs the same operations in the same
//! order with the same constants, so CPU and GPU produce bit-identical z. The kernel's default
//! fast variant approximates these z (bound in `tests/perturb_gpu.rs`).
//!
//! Box-Muller (Box and Muller 1958): for u in (0, 1] and v in [0, 1),
//! `r = sqrt(-2 ln u)`, `z0 = r cos(2 pi v)`, `z1 = r sin(2 pi v)` are independent N(0, 1).
//! u and v use the top 24 bits of a Philox word, so |z| <= sqrt(48 ln 2) ~= 5.77 (the normal
//! tail beyond that has probability 8e-9; documented truncation).

use super::philox::philox_block;

/// ln 2 split so that `k * LN2_HIGH` is exact for |k| <= 2^10 (Cody and Waite reduction).
pub const LN2_HIGH: f32 = f32::from_bits(0x3F31_7200); // 0.693145751953125
/// ln 2 - LN2_HIGH.
pub const LN2_LOW: f32 = f32::from_bits(0x35BF_BE8E); // 1.4286068e-6
/// sqrt(2): mantissas above it are halved so that ln's argument lies in [sqrt(1/2), sqrt(2)].
pub const SQRT_2: f32 = std::f32::consts::SQRT_2;
/// 2 pi / 2^24: the angle of one step of the 24-bit angle index.
pub const TWO_PI_OVER_2_24: f32 = std::f32::consts::TAU / 16_777_216.0;
/// 1/3, 1/5, 1/7, 1/9, 1/11: the atanh series ln m = 2 s (1 + s^2/3 + s^4/5 + ...).
pub const ATANH_COEFFICIENTS: [f32; 5] = [1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0, 1.0 / 11.0];
/// Taylor coefficients of sin x / x - 1 in x^2: -1/3!, 1/5!, -1/7!, 1/9!.
pub const SIN_COEFFICIENTS: [f32; 4] = [-1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362_880.0];
/// Taylor coefficients of cos x - 1 in x^2: -1/2!, 1/4!, -1/6!, 1/8!, -1/10!.
pub const COS_COEFFICIENTS: [f32; 5] = [
    -0.5,
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40_320.0,
    -1.0 / 3_628_800.0,
];

/// ln(n / 2^24) for an integer n in 1..=2^24, to within a few ulp.
///
/// n = 2^e m with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <=
/// 0.172, the series truncated after s^11 (error < 1e-9 relative).
#[inline(always)]
pub fn ln_of_24_bit_fraction(n: u32) -> f32 {
    let bits = (n as f32).to_bits();
    let mut exponent = ((bits >> 23) as i32) - 127;
    let mut mantissa = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    if mantissa > SQRT_2 {
        mantissa *= 0.5;
        exponent += 1;
    }
    let k = (exponent - 24) as f32;
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s2 = s * s;
    let [c3, c5, c7, c9, c11] = ATANH_COEFFICIENTS;
    let series = s2 * (c3 + s2 * (c5 + s2 * (c7 + s2 * (c9 + s2 * c11))));
    let two_s = s + s;
    let ln_mantissa = two_s + two_s * series;
    k * LN2_HIGH + (k * LN2_LOW + ln_mantissa)
}

/// (sin, cos) of 2 pi a / 2^24 for a 24-bit angle index a.
///
/// Exact integer reduction to the nearest quarter turn q and a remainder r in [-2^21, 2^21),
/// x = r * 2 pi / 2^24 in [-pi/4, pi/4), Taylor polynomials (truncation < 3e-9), then the
/// quadrant rotation.
#[inline(always)]
pub fn sin_cos_of_24_bit_angle(angle_index: u32) -> (f32, f32) {
    let quadrant = (angle_index + (1 << 21)) >> 22;
    let remainder = angle_index as i32 - (quadrant << 22) as i32;
    let x = remainder as f32 * TWO_PI_OVER_2_24;
    let x2 = x * x;
    let [s3, s5, s7, s9] = SIN_COEFFICIENTS;
    let [c2, c4, c6, c8, c10] = COS_COEFFICIENTS;
    let sin_x = x + x * (x2 * (s3 + x2 * (s5 + x2 * (s7 + x2 * s9))));
    let cos_x = 1.0 + x2 * (c2 + x2 * (c4 + x2 * (c6 + x2 * (c8 + x2 * c10))));
    match quadrant & 3 {
        0 => (sin_x, cos_x),
        1 => (cos_x, -sin_x),
        2 => (-sin_x, -cos_x),
        _ => (-cos_x, sin_x),
    }
}

/// Box-Muller on two Philox words: (r cos, r sin).
#[inline(always)]
pub fn box_muller(radius_word: u32, angle_word: u32) -> (f32, f32) {
    let ln_u = ln_of_24_bit_fraction((radius_word >> 8) + 1);
    let radius = (-2.0 * ln_u).sqrt();
    let (sin_v, cos_v) = sin_cos_of_24_bit_angle(angle_word >> 8);
    (radius * cos_v, radius * sin_v)
}

/// The four normals `z[4b]`, ..., `z[4b + 3]` of Philox block b = `block_index` for `seed`.
#[inline]
pub fn normal_block(seed: u64, block_index: u64) -> [f32; 4] {
    let words = philox_block(seed, block_index);
    let (z0, z1) = box_muller(words[0], words[1]);
    let (z2, z3) = box_muller(words[2], words[3]);
    [z0, z1, z2, z3]
}

/// z(seed, element_index), computing only the Box-Muller pair the element needs.
#[inline]
pub fn normal_at(seed: u64, element_index: u64) -> f32 {
    let words = philox_block(seed, element_index / 4);
    let lane = (element_index % 4) as usize;
    let pair = if lane < 2 {
        box_muller(words[0], words[1])
    } else {
        box_muller(words[2], words[3])
    };
    if lane.is_multiple_of(2) {
        pair.0
    } else {
        pair.1
    }
}
