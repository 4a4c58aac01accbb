//! Kiln's random stream: Philox 4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as
//! 1, 2, 3", SC 2011), a counter-based generator. Block `c` of a stream keyed by `seed` is
//! `philox4x32_10([c_lo, c_hi, 0, 0], [seed_lo, seed_hi])`, four 32-bit words, a pure function of
//! (seed, c): any element can be computed anywhere, in any order, on any device.
//!
//! A random op reads the blocks `counter..counter + ⌈n/4⌉` ([`PhiloxKey`]); element `i` is
//! derived from lane `i % 4` of block `counter + i / 4` by its [`Distribution`]. This file is the
//! definition: the CPU backend computes exactly this, and `shaders/philox.wgsl` computes the same
//! words and uniforms bit for bit on the GPU (normals within a few f32 ulps, see `normal`).

/// Philox's multipliers and Weyl increments (Random123's `PHILOX_M4x32_*`, `PHILOX_W32_*`).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox 4x32 block: ten rounds of the counter under the key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
    }
    c
}

/// Where a random op reads the stream: the generator's seed (the Philox key) and the first
/// block it uses. Ops take disjoint block ranges (see `kiln_core::rng_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhiloxKey {
    pub seed: u64,
    /// The first block; element `i` reads block `counter + i / 4` (wrapping at 2^64).
    pub counter: u64,
}

impl PhiloxKey {
    /// The four words of this op's block `q` (elements `4q..4q + 4`).
    pub fn block(self, q: u64) -> [u32; 4] {
        let c = self.counter.wrapping_add(q);
        philox4x32_10([c as u32, (c >> 32) as u32, 0, 0], [self.seed as u32, (self.seed >> 32) as u32])
    }

    /// The same stream from element `start` on (`start` a multiple of 4: pieces of one op).
    pub fn skip(self, start: usize) -> PhiloxKey {
        debug_assert!(start.is_multiple_of(4));
        PhiloxKey { seed: self.seed, counter: self.counter.wrapping_add((start / 4) as u64) }
    }

    /// `[seed_lo, seed_hi, counter_lo, counter_hi]`: how a GPU kernel receives the key.
    pub fn words(self) -> [u32; 4] {
        [self.seed as u32, (self.seed >> 32) as u32, self.counter as u32, (self.counter >> 32) as u32]
    }
}

/// 2^-24: a 24-bit integer times this is an exact f32 in [0, 1).
const INV_2_24: f64 = 1.0 / 16_777_216.0;

/// Uniform in [0, 1) from one word: its top 24 bits, `(w >> 8)·2^-24`, exact in f32.
pub fn uniform(w: u32) -> f32 {
    ((w >> 8) as f64 * INV_2_24) as f32
}

/// Uniform for f16 outputs: the top 11 bits, `(w >> 21)·2^-11`, exact in f16 and below 1 (the
/// f32 value rounded to f16 could be 1.0).
pub fn uniform_f16(w: u32) -> f32 {
    ((w >> 21) as f64 / 2048.0) as f32
}

/// Standard normal from a pair of words by Box–Muller: `r = √(−2 ln u1)` with
/// `u1 = ((w1 >> 8) + 1)·2^-24` in (0, 1], `θ = 2π·(w2 >> 8)·2^-24`; lane `even` takes
/// `r·cos θ`, the other `r·sin θ`. Computed in f64 and rounded once to f32: the GPU's f32
/// evaluation (its own log and sin/cos polynomials, shaders/philox.wgsl) agrees within ~1e-6.
pub fn normal(w1: u32, w2: u32, even: bool) -> f32 {
    let u1 = ((w1 >> 8) as f64 + 1.0) * INV_2_24;
    let theta = 2.0 * std::f64::consts::PI * ((w2 >> 8) as f64 * INV_2_24);
    let r = (-2.0 * u1.ln()).sqrt();
    (if even { r * theta.cos() } else { r * theta.sin() }) as f32
}

/// What a random op makes of its words. Every value is computed as an f32 (below), then stored
/// in the output dtype: exactly for f32 and f64, rounded for f16.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// The raw words (u32 output).
    Bits,
    /// Uniform in [0, 1), see [`uniform`] (and [`uniform_f16`] for f16 outputs).
    Uniform,
    /// Standard normal, see [`normal`]: lanes 0 and 1 share words 0 and 1, lanes 2 and 3 words
    /// 2 and 3.
    Normal,
    /// `value` where `uniform(w) < keep` (compared in f32), else 0: Bernoulli masks (`value` 1)
    /// and dropout's scaled mask (`value` = 1/keep).
    Bernoulli { keep: f64, value: f64 },
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Bits => "random_bits",
            Distribution::Uniform => "rand",
            Distribution::Normal => "randn",
            Distribution::Bernoulli { .. } => "bernoulli",
        }
    }

    /// Element `lane` of a block, as f64 (every value is an f32, or a u32, or `value`).
    pub fn sample(self, block: [u32; 4], lane: usize, f16_out: bool) -> f64 {
        let w = block[lane];
        match self {
            Distribution::Bits => w as f64,
            Distribution::Uniform if f16_out => uniform_f16(w) as f64,
            Distribution::Uniform => uniform(w) as f64,
            Distribution::Normal => {
                let pair = lane & !1;
                normal(block[pair], block[pair + 1], lane.is_multiple_of(2)) as f64
            }
            Distribution::Bernoulli { keep, value } => {
                if uniform(w) < keep as f32 {
                    value
                } else {
                    0.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's published known-answer vectors for Philox4x32-10 (its `kat_vectors`; the
    /// same three appear in TensorFlow's stateful_random_ops test, citing Random123-Boost's
    /// test_philox.cpp).
    #[test]
    fn philox_matches_the_random123_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
        assert_eq!(
            philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn key_layout_and_skip() {
        let k = PhiloxKey { seed: 0x1122_3344_5566_7788, counter: u64::MAX };
        assert_eq!(k.words(), [0x5566_7788, 0x1122_3344, u32::MAX, u32::MAX]);
        // Block 1 wraps to counter 0.
        assert_eq!(k.block(1), philox4x32_10([0; 4], [0x5566_7788, 0x1122_3344]));
        assert_eq!(k.skip(8).block(0), k.block(2));
    }

    #[test]
    fn conversions_stay_in_range() {
        assert_eq!(uniform(0), 0.0);
        assert_eq!(uniform(u32::MAX), 1.0 - 2f32.powi(-24));
        assert_eq!(uniform_f16(u32::MAX), 1.0 - 2f32.powi(-11));
        // u1 = 1 gives r = 0; the smallest u1 gives the largest radius, √(48 ln 2).
        assert_eq!(normal(u32::MAX, 0, true), 0.0);
        let big = normal(0, 0, true) as f64;
        assert!((big - (48.0 * std::f64::consts::LN_2).sqrt()).abs() < 1e-6, "{big}");
        let b = Distribution::Bernoulli { keep: 0.25, value: 4.0 };
        assert_eq!(b.sample([0, u32::MAX, 0x3fff_ffff, 0x4000_0000], 0, false), 4.0);
        assert_eq!(b.sample([0, u32::MAX, 0x3fff_ffff, 0x4000_0000], 1, false), 0.0);
        assert_eq!(b.sample([0, u32::MAX, 0x3fff_ffff, 0x4000_0000], 2, false), 4.0);
        assert_eq!(b.sample([0, u32::MAX, 0x3fff_ffff, 0x4000_0000], 3, false), 0.0);
    }
}
