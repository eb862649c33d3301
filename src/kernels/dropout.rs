//! Inverted dropout with masks regenerated from a counter-based key (never stored).

use super::rng::bits32;
use rayon::prelude::*;

/// One dropout site: probability `p` of zeroing, and the key its mask is drawn from. Element
/// `i` of the buffer draws `bits32(key, offset + i)`: `offset` places a pass over part of a
/// batch (one rank's sequences) at its position in the whole batch's masks.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    pub p: f32,
    pub key: u64,
    pub offset: u64,
}

const CHUNK: usize = 4096;

impl Dropout {
    /// No dropout (evaluation, or p = 0).
    pub const OFF: Dropout = Dropout { p: 0.0, key: 0, offset: 0 };

    /// Probability `p`, masks from `key`, from the batch's first element.
    pub const fn new(p: f32, key: u64) -> Self {
        Dropout { p, key, offset: 0 }
    }

    /// The same masks, for a buffer whose first element is element `offset` of the batch.
    pub const fn at(self, offset: u64) -> Self {
        Dropout { offset, ..self }
    }

    pub fn active(&self) -> bool {
        self.p > 0.0
    }

    /// 24-bit threshold: element `idx` is kept when its draw is at least this.
    #[inline(always)]
    pub fn threshold(&self) -> u32 {
        (self.p as f64 * (1u64 << 24) as f64).round() as u32
    }

    /// The multiplier for element `idx`: 0, or 1/(1-p) when kept.
    #[inline(always)]
    pub fn factor(&self, idx: u64, threshold: u32, scale: f32) -> f32 {
        if (bits32(self.key, self.offset.wrapping_add(idx)) >> 8) < threshold { 0.0 } else { scale }
    }

    pub fn scale(&self) -> f32 {
        1.0 / (1.0 - self.p)
    }

    /// `x[i] *= mask[i] / (1 - p)`, where element i draws mask `self.offset + offset + i`. The
    /// same call is the forward and the backward of dropout.
    pub fn apply(&self, x: &mut [f32], offset: u64) {
        if !self.active() {
            return;
        }
        let (th, sc) = (self.threshold(), self.scale());
        x.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let base = offset + (c * CHUNK) as u64;
            for (i, v) in chunk.iter_mut().enumerate() {
                *v *= self.factor(base + i as u64, th, sc);
            }
        });
    }

    /// `out = x + dropout(a)`: the residual connection of a block.
    pub fn residual(&self, out: &mut [f32], x: &[f32], a: &[f32]) {
        let (th, sc) = (self.threshold(), self.scale());
        let active = self.active();
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(a.par_chunks(CHUNK)))
            .enumerate()
            .for_each(|(c, (o, (x, a)))| {
                let base = (c * CHUNK) as u64;
                for i in 0..o.len() {
                    let f = if active { self.factor(base + i as u64, th, sc) } else { 1.0 };
                    o[i] = x[i] + a[i] * f;
                }
            });
    }

    /// `out = dropout'(g)`: the gradient reaching the dropped branch of a residual.
    pub fn backward_into(&self, out: &mut [f32], g: &[f32]) {
        out.copy_from_slice(g);
        self.apply(out, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_expected_fraction_and_scales() {
        let d = Dropout::new(0.1, 42);
        let mut x = vec![1.0f32; 100_000];
        d.apply(&mut x, 0);
        let zeros = x.iter().filter(|&&v| v == 0.0).count();
        assert!((9_000..11_000).contains(&zeros), "{zeros}");
        let mean: f32 = x.iter().sum::<f32>() / x.len() as f32;
        assert!((mean - 1.0).abs() < 0.01);
        assert!(x.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
    }

    #[test]
    fn residual_matches_apply() {
        let d = Dropout::new(0.3, 9);
        let x: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let a: Vec<f32> = (0..10_000).map(|i| (i % 7) as f32).collect();
        let mut out = vec![0.0; x.len()];
        d.residual(&mut out, &x, &a);
        let mut am = a.clone();
        d.apply(&mut am, 0);
        for i in 0..x.len() {
            assert_eq!(out[i], x[i] + am[i]);
        }
    }
}
