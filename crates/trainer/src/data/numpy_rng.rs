//! numpy's legacy `RandomState` (MT19937) as far as LM-BFF / MeZO use it: `np.random.seed(int)`,
//! `np.random.shuffle`, `np.random.permutation(n)`, and through them pandas'
//! `DataFrame.sample(n, random_state=seed)` (which is `permutation(len)[:n]`).
//!
//! The k-shot splits of LM-BFF (`tools/generate_k_shot_data.py`) and the SuperGLUE subsets of
//! MeZO (`large_models/tasks.py::sample_subset`) are defined by these calls, so reproducing them
//! bit for bit lets `original/` files be resampled exactly as published. Written from the
//! algorithm descriptions (Matsumoto & Nishimura 1998, MT19937 `init_genrand`; numpy
//! `random_interval`: bit-mask rejection sampling; Fisher-Yates from the last element down).

const STATE_LEN: usize = 624;
const MIDDLE: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// numpy's legacy global generator after `np.random.seed(seed)`.
#[derive(Clone)]
pub struct NumpyRandomState {
    state: [u32; STATE_LEN],
    position: usize,
}

impl std::fmt::Debug for NumpyRandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumpyRandomState")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl NumpyRandomState {
    /// The state after `np.random.seed(seed)` (MT19937 `init_genrand`; numpy accepts seeds in
    /// `0..2^32`, hence `u32`).
    pub fn seed(seed: u32) -> Self {
        let mut state = [0u32; STATE_LEN];
        state[0] = seed;
        for i in 1..STATE_LEN {
            let previous = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(previous ^ (previous >> 30))
                .wrapping_add(i as u32);
        }
        Self {
            state,
            position: STATE_LEN,
        }
    }

    fn regenerate(&mut self) {
        for i in 0..STATE_LEN {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % STATE_LEN] & LOWER_MASK);
            let mut next = self.state[(i + MIDDLE) % STATE_LEN] ^ (y >> 1);
            if y & 1 == 1 {
                next ^= MATRIX_A;
            }
            self.state[i] = next;
        }
        self.position = 0;
    }

    /// The next 32-bit output (tempered).
    pub fn next_u32(&mut self) -> u32 {
        if self.position >= STATE_LEN {
            self.regenerate();
        }
        let mut y = self.state[self.position];
        self.position += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A uniform integer in `0..=max` (numpy `random_interval`: draw 32 bits, mask to the
    /// smallest `2^b - 1 >= max`, reject values above `max`).
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let value = self.next_u32() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// `np.random.shuffle(items)` (legacy, 1-D): swaps `items[i]` with `items[j]`,
    /// `j = interval(i)`, for `i` from `len - 1` down to 1.
    ///
    /// # Panics
    /// If `items` has more than `u32::MAX` elements (numpy would switch to 64-bit draws).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        assert!(
            items.len() <= u32::MAX as usize,
            "shuffle of more than 2^32 items is not supported"
        );
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u32) as usize;
            items.swap(i, j);
        }
    }

    /// `np.random.permutation(n)`: a shuffled `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut indices: Vec<usize> = (0..n).collect();
        self.shuffle(&mut indices);
        indices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: the MT19937 reference implementation (mt19937ar.c) seeded with
    /// `init_genrand(5489)` outputs 3499211612, 581869302, 3890346734 first; 5489 is the
    /// standard default seed, and these values are the ones in the C++ standard
    /// ([rand.predef]: the 10000th output of mt19937 is 4123659995).
    #[test]
    fn matches_reference_mt19937_outputs() {
        let mut rng = NumpyRandomState::seed(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        assert_eq!(rng.next_u32(), 581_869_302);
        assert_eq!(rng.next_u32(), 3_890_346_734);
        let mut rng = NumpyRandomState::seed(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rng.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn interval_stays_in_range() {
        let mut rng = NumpyRandomState::seed(42);
        for max in [0u32, 1, 2, 5, 1000, u32::MAX] {
            for _ in 0..100 {
                assert!(rng.interval(max) <= max);
            }
        }
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut rng = NumpyRandomState::seed(13);
        let mut p = rng.permutation(1000);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
