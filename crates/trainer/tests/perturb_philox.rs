//! Philox4x32-10 known answers and the distribution of the z it drives.

use trainer::perturb::{box_muller, normal_at, philox4x32_10, z_values};

/// Random123 1.09 `examples/kat_vectors`, lines `philox4x32 10 <counter x4> <key x2> <out x4>`
/// (Salmon et al., SC 2011).
#[test]
fn philox_matches_random123_known_answers() {
    let vectors: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
        ),
        (
            [0xffff_ffff; 4],
            [0xffff_ffff; 2],
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
        ),
        (
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0],
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
        ),
    ];
    for (counter, key, expected) in vectors {
        let got = philox4x32_10(counter, key);
        assert_eq!(
            got, expected,
            "counter {counter:08x?} key {key:08x?}: got {got:08x?}, expected {expected:08x?}"
        );
    }
}

/// Box-Muller in portable f32 against the same formula in f64 with libm. The f32 path has a few
/// roundings in ln, sqrt and the polynomials; 4e-6 absolute (|z| <= 5.8) bounds them with margin.
#[test]
fn box_muller_matches_f64_formula() {
    let mut worst = 0.0f64;
    let mut worst_words = (0u32, 0u32);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_word = || {
        // splitmix64 (Steele, Lea, Flood 2014) just to spread test inputs.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = state;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (x ^ (x >> 31)) as u32
    };
    let mut check = |radius_word: u32, angle_word: u32| {
        let u = f64::from((radius_word >> 8) + 1) / 16_777_216.0;
        let v = f64::from(angle_word >> 8) / 16_777_216.0;
        let r = (-2.0 * u.ln()).sqrt();
        let reference = (
            r * (std::f64::consts::TAU * v).cos(),
            r * (std::f64::consts::TAU * v).sin(),
        );
        let got = box_muller(radius_word, angle_word);
        let error = (f64::from(got.0) - reference.0)
            .abs()
            .max((f64::from(got.1) - reference.1).abs());
        if error > worst {
            worst = error;
            worst_words = (radius_word, angle_word);
        }
    };
    // Edges: u = 2^-24 (largest radius), u = 1 (radius 0), every quadrant boundary.
    for radius_word in [0u32, 0xff, 0x100, 0x7fff_ffff, 0xffff_feff, 0xffff_ffff] {
        for quarter in 0..8u32 {
            check(radius_word, quarter << 29);
            check(radius_word, (quarter << 29) | 0xff);
            check(radius_word, (quarter << 29).wrapping_sub(0x100));
        }
    }
    for _ in 0..200_000 {
        let (a, b) = (next_word(), next_word());
        check(a, b);
    }
    assert!(
        worst <= 4e-6,
        "max |z_f32 - z_f64| = {worst:e} at words {worst_words:08x?}, bound 4e-6"
    );
}

/// Standard normal CDF via Abramowitz and Stegun 7.1.26 (|erf error| <= 1.5e-7, far below the
/// KS bound used here).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf_abs = 1.0 - poly * (-(x * x) / 2.0).exp();
    0.5 * (1.0 + erf_abs.copysign(x))
}

/// Mean, variance, lag-1 correlation, cross-seed correlation and the KS distance of z.
/// Each check is at about 5.3 sigma or alpha = 1e-6 (asymptotic Kolmogorov critical value
/// sqrt(ln(2 / alpha) / (2 n))), so the whole test fails by chance with probability < 1e-5.
#[test]
fn z_is_standard_normal() {
    let n = 400_000usize;
    let seed = 20_250_101u64;
    let z = z_values(seed, 12_345, n);
    let other = z_values(seed + 1, 12_345, n);
    let nf = n as f64;
    let mean = z.iter().map(|&v| f64::from(v)).sum::<f64>() / nf;
    let variance = z
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / (nf - 1.0);
    let sigma_bound = 5.3 / nf.sqrt();
    assert!(
        mean.abs() <= sigma_bound,
        "mean {mean:e}, bound {sigma_bound:e}, n {n}, seed {seed}"
    );
    // Var of the sample variance of N(0,1) is 2/(n-1).
    let variance_bound = 5.3 * (2.0 / (nf - 1.0)).sqrt();
    assert!(
        (variance - 1.0).abs() <= variance_bound,
        "variance {variance}, bound 1 +- {variance_bound:e}, n {n}, seed {seed}"
    );
    let lag1 = z
        .windows(2)
        .map(|w| f64::from(w[0]) * f64::from(w[1]))
        .sum::<f64>()
        / (nf - 1.0);
    assert!(
        lag1.abs() <= 5.3 / (nf - 1.0).sqrt(),
        "lag-1 correlation {lag1:e}, n {n}, seed {seed}"
    );
    let cross = z
        .iter()
        .zip(&other)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum::<f64>()
        / nf;
    assert!(
        cross.abs() <= sigma_bound,
        "seed {seed} vs {} correlation {cross:e}",
        seed + 1
    );
    let mut sorted: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
    sorted.sort_by(f64::total_cmp);
    let ks = sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let cdf = normal_cdf(x);
            (cdf - i as f64 / nf)
                .abs()
                .max(((i + 1) as f64 / nf - cdf).abs())
        })
        .fold(0.0f64, f64::max);
    let ks_bound = ((2.0f64 / 1e-6).ln() / (2.0 * nf)).sqrt();
    assert!(
        ks <= ks_bound,
        "KS distance {ks:e}, bound {ks_bound:e} (alpha 1e-6), n {n}, seed {seed}"
    );
}

/// normal_at (one pair), normal_block (whole block) and z_values agree, and distinct seeds and
/// distinct high key words give distinct streams.
#[test]
fn z_is_a_function_of_seed_and_index_only() {
    let z = z_values(7, 0, 64);
    for (i, &value) in z.iter().enumerate() {
        assert_eq!(
            value.to_bits(),
            normal_at(7, i as u64).to_bits(),
            "index {i}"
        );
    }
    let shifted = z_values(7, 5, 10);
    assert_eq!(&shifted[..], &z[5..15]);
    let high_key = z_values(7 | (1 << 32), 0, 64);
    assert_ne!(
        high_key, z,
        "the seed's high 32 bits must change the stream"
    );
    let high_counter = z_values(7, 4 << 32, 4);
    assert_ne!(
        &high_counter[..],
        &z[..4],
        "the counter's high word must change the block"
    );
}
