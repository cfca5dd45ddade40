//! Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel Random
//! Numbers: As Easy as 1, 2, 3" (SC 2011), section 4.2 and Table 2 (multipliers and Weyl key
//! increments). Written from the paper; checked against the Random123 known-answer vectors in
//! `tests/perturb_philox.rs`. The CUDA kernel (`kernel.cu`) implements the same rounds.

/// Round multiplier for counter word 0 (paper Table 2, `PHILOX_M4x32_0`).
pub const PHILOX_MULTIPLIER_0: u32 = 0xD251_1F53;
/// Round multiplier for counter word 2 (`PHILOX_M4x32_1`).
pub const PHILOX_MULTIPLIER_1: u32 = 0xCD9E_8D57;
/// Key increment per round for key word 0 (golden ratio, `PHILOX_W32_0`).
pub const PHILOX_WEYL_0: u32 = 0x9E37_79B9;
/// Key increment per round for key word 1 (sqrt(3) - 1, `PHILOX_W32_1`).
pub const PHILOX_WEYL_1: u32 = 0xBB67_AE85;

/// One Philox S-box round: two 32x32->64 products, the high halves XORed with the other words
/// and the key, then the word permutation of the paper.
#[inline(always)]
fn philox_round(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let product_0 = u64::from(PHILOX_MULTIPLIER_0) * u64::from(counter[0]);
    let product_1 = u64::from(PHILOX_MULTIPLIER_1) * u64::from(counter[2]);
    [
        ((product_1 >> 32) as u32) ^ counter[1] ^ key[0],
        product_1 as u32,
        ((product_0 >> 32) as u32) ^ counter[3] ^ key[1],
        product_0 as u32,
    ]
}

/// Philox4x32 with 10 rounds: a bijection of the 128-bit `counter` keyed by the 64-bit `key`.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut counter = counter;
    let mut key = key;
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(PHILOX_WEYL_0);
            key[1] = key[1].wrapping_add(PHILOX_WEYL_1);
        }
        counter = philox_round(counter, key);
    }
    counter
}

/// The Philox block that feeds element indices `4 * block_index .. 4 * block_index + 4` of z:
/// counter = (block_index low word, block_index high word, 0, 0), key = (seed low, seed high).
#[inline]
pub fn philox_block(seed: u64, block_index: u64) -> [u32; 4] {
    philox4x32_10(
        [block_index as u32, (block_index >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    )
}
