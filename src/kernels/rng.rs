//! Counter-based random numbers: every draw is a pure function of (key, index), so dropout masks
//! and initial weights are the same for any thread count and can be regenerated in the backward
//! pass instead of stored.

/// Every named random stream, derived from a run's seed (or a step's key) with [`derive`]: one
/// table, so no two uses share a stream by accident and a reader sees where each draw comes from.
pub mod stream {
    /// Pre-training (and `--from-scratch`) initial weights: `derive(seed, INIT)`.
    pub const INIT: u64 = 0x1417;
    /// Pre-training's window sampler: `derive(seed, DATA)`, then the step.
    pub const DATA: u64 = 0xDA7A;
    /// Pre-training's dropout: `derive(seed, DROPOUT)`, then the step (the whole batch's
    /// masks, each sequence at its index in the batch, whichever pass or rank runs it).
    pub const DROPOUT: u64 = 0xD209;
    /// Fine-tuning's dropout: `derive(seed, FINETUNE_DROPOUT)`, then the step.
    pub const FINETUNE_DROPOUT: u64 = 0xF17E;
    /// The task head's dropout, from a fine-tuning step's key.
    pub const HEAD_DROPOUT: u64 = 0xC1F;
    /// The task head's initial `W_y`.
    pub const HEAD_INIT: u64 = 0x4EAD;
    /// Generation's draws: `derive(seed, SAMPLE)`, then the sample, then the step.
    pub const SAMPLE: u64 = 0x5A39;
    /// The demo's task examples (which passages, which distractor sentences).
    pub const DEMO_TASKS: u64 = 0xDE30;
    /// The embeddings of the three special tokens added to a bare BPE vocabulary.
    pub const SPECIAL_TOKENS: u64 = 0x5BEC;
    /// Dropout sites inside one forward pass, from the pass's key: the embeddings, and per
    /// block `l` the attention probabilities and the two residual branches.
    pub const EMBD_DROPOUT: u64 = u64::MAX;
    pub const fn attn_dropout(l: usize) -> u64 {
        4 * l as u64
    }
    pub const fn resid1_dropout(l: usize) -> u64 {
        4 * l as u64 + 1
    }
    pub const fn resid2_dropout(l: usize) -> u64 {
        4 * l as u64 + 2
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A key derived from a parent key and a label (layer, site, step, ...).
#[inline]
pub fn derive(key: u64, label: u64) -> u64 {
    mix64(key ^ mix64(label.wrapping_add(GOLDEN)))
}

/// 64 random bits for element `idx` of the stream `key`.
#[inline(always)]
pub fn bits(key: u64, idx: u64) -> u64 {
    mix64(key.wrapping_add(idx.wrapping_mul(GOLDEN)))
}

/// 32 random bits for element `idx` of stream `key`: 32-bit arithmetic only, so loops over
/// `idx` vectorize (dropout masks). Each step is a bijection of `idx`, so distinct indices below
/// 2^32 never share a draw within a stream.
#[inline(always)]
pub fn bits32(key: u64, idx: u64) -> u32 {
    let mut h = (idx as u32 ^ key as u32).wrapping_mul(0x9E37_79B1);
    h ^= (key >> 32) as u32 ^ (idx >> 32) as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// A standard normal draw for element `idx` of stream `key` (Box–Muller in f64).
pub fn normal(key: u64, idx: u64) -> f64 {
    let h1 = bits(key, 2 * idx);
    let h2 = bits(key, 2 * idx + 1);
    let u1 = ((h1 >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
    let u2 = (h2 >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A small sequential generator for the data sampler (seeded per step, so its state never needs
/// saving beyond the step number).
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: mix64(seed ^ GOLDEN) }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }
    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift; the bias is below 2^-32 for the
    /// sizes used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_unit_moments() {
        let n = 200_000u64;
        let (mut s, mut s2) = (0.0, 0.0);
        for i in 0..n {
            let x = normal(7, i);
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn below_is_in_range_and_spread() {
        let mut r = Rng::new(3);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }
}
