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

    /// `out[i] = src[i] · factor(base + i)` (AVX-512: 16 masks at a time, the same bits).
    pub fn mul_into(&self, out: &mut [f32], src: &[f32], base: u64) {
        assert!(src.len() >= out.len());
        // SAFETY: `src` holds at least `out.len()` values; distinct slices do not overlap.
        unsafe { self.mul_raw(out.as_mut_ptr(), src.as_ptr(), out.len(), base) }
    }

    /// `x[i] *= factor(base + i)`.
    pub fn mul_in_place(&self, x: &mut [f32], base: u64) {
        let p = x.as_mut_ptr();
        // SAFETY: reads and writes the same `x.len()` values, each before the next.
        unsafe { self.mul_raw(p, p, x.len(), base) }
    }

    /// # Safety
    /// `src` and `out` hold `n` values (they may be the same).
    unsafe fn mul_raw(&self, out: *mut f32, src: *const f32, n: usize, base: u64) {
        let (th, sc) = (self.threshold(), self.scale());
        let mut i = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            while i + 16 <= n {
                let idx = self.offset.wrapping_add(base + i as u64);
                // Sixteen draws share the index's high word unless its low word wraps.
                if (idx as u32).checked_add(15).is_some() {
                    // SAFETY: the feature is present; i + 16 <= n.
                    unsafe { simd::mul16(out.add(i), src.add(i), self.key, idx, th, sc) };
                } else {
                    for j in i..i + 16 {
                        // SAFETY: j < n.
                        unsafe { *out.add(j) = *src.add(j) * self.factor(base + j as u64, th, sc) };
                    }
                }
                i += 16;
            }
        }
        for j in i..n {
            // SAFETY: j < n.
            unsafe { *out.add(j) = *src.add(j) * self.factor(base + j as u64, th, sc) };
        }
    }

    /// `x[i] *= mask[i] / (1 - p)`, where element i draws mask `self.offset + offset + i`. The
    /// same call is the forward and the backward of dropout.
    pub fn apply(&self, x: &mut [f32], offset: u64) {
        if !self.active() {
            return;
        }
        x.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            self.mul_in_place(chunk, offset + (c * CHUNK) as u64);
        });
    }

    /// `out = x + dropout(a)`: the residual connection of a block.
    pub fn residual(&self, out: &mut [f32], x: &[f32], a: &[f32]) {
        let active = self.active();
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(a.par_chunks(CHUNK)))
            .enumerate()
            .for_each(|(c, (o, (x, a)))| {
                // o = x + a · f, as a · f first (the same two roundings as one expression).
                if active {
                    self.mul_into(o, a, (c * CHUNK) as u64);
                } else {
                    o.copy_from_slice(&a[..o.len()]);
                }
                o.iter_mut().zip(x).for_each(|(o, x)| *o += x);
            });
    }

    /// `out = dropout'(g)`: the gradient reaching the dropped branch of a residual.
    pub fn backward_into(&self, out: &mut [f32], g: &[f32]) {
        out.copy_from_slice(g);
        self.apply(out, 0);
    }
}

/// The AVX-512 masks: `rng::bits32` on sixteen lanes.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// `out[l] = src[l] · factor(idx + l)` for l < 16, where `idx`'s low word does not wrap.
    ///
    /// # Safety
    /// AVX-512F; `out` and `src` hold 16 values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn mul16(out: *mut f32, src: *const f32, key: u64, idx: u64, th: u32, sc: f32) {
        let c = |v: u32| _mm512_set1_epi32(v as i32);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let lo = _mm512_add_epi32(c(idx as u32), lanes);
        let mut h = _mm512_mullo_epi32(_mm512_xor_si512(lo, c(key as u32)), c(0x9E37_79B1));
        h = _mm512_xor_si512(h, c((key >> 32) as u32 ^ (idx >> 32) as u32));
        h = _mm512_xor_si512(h, _mm512_srli_epi32::<16>(h));
        h = _mm512_mullo_epi32(h, c(0x85EB_CA6B));
        h = _mm512_xor_si512(h, _mm512_srli_epi32::<13>(h));
        h = _mm512_mullo_epi32(h, c(0xC2B2_AE35));
        h = _mm512_xor_si512(h, _mm512_srli_epi32::<16>(h));
        let keep = _mm512_cmpge_epu32_mask(_mm512_srli_epi32::<8>(h), c(th));
        let f = _mm512_maskz_mov_ps(keep, _mm512_set1_ps(sc));
        // SAFETY: the caller's.
        unsafe { _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_loadu_ps(src), f)) };
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

    /// The 16-lane masks are the scalar ones bit for bit, across a wrap of the index's low
    /// word and for lengths that are not multiples of 16.
    #[test]
    fn vector_masks_equal_scalar_masks() {
        for (key, offset, base, n) in [
            (42u64, 0u64, 0u64, 1000usize),
            (0xDEAD_BEEF_1234_5678, 7, 3, 37),
            (9, (1 << 32) - 21, 0, 70),
        ] {
            let d = Dropout::new(0.3, key).at(offset);
            let src: Vec<f32> = (0..n).map(|i| i as f32 - 11.5).collect();
            let mut got = vec![0.0; n];
            d.mul_into(&mut got, &src, base);
            let (th, sc) = (d.threshold(), d.scale());
            for i in 0..n {
                let want = src[i] * d.factor(base + i as u64, th, sc);
                assert_eq!(got[i].to_bits(), want.to_bits(), "key {key} offset {offset} i {i}");
            }
            let mut x = src.clone();
            d.mul_in_place(&mut x, base);
            assert_eq!(x, got);
        }
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
