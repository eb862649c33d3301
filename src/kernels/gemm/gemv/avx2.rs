//! The AVX2 version of [`super`]'s dot products (`b` transposed), for CPUs without AVX-512
//! (AMD Zen 2–3, Intel's client cores): register-blocked so that each 8 floats of `b` loaded
//! feed several rows of `a`, with enough independent sums to keep both FMA units busy. The
//! portable loop runs two chains of fused adds per dot product (its 16 lanes in two registers),
//! so it waits on the FMA latency: the LSTM's recurrence `[8, 1024] × [1024, 4096]ᵀ` ran at
//! 25 GFLOP/s on 2 cores of an AMD Zen 3. Every output element gets the portable loop's sum in
//! the portable loop's order, so the bits do not depend on which version ran (tested against
//! it).

use std::arch::x86_64::*;

/// This CPU runs these kernels (checked once; `std` caches the answer).
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Rows of `a` per register block: `RT × 2` sums of 16 lanes, two registers each (12 of the
/// 16), beside two registers of `b` and one of `a`.
const RT: usize = 3;

/// The lanes `< len` (of 8) as an AVX2 mask: all ones where the lane is kept.
#[target_feature(enable = "avx2")]
fn mask(len: usize) -> __m256i {
    let len = len.min(8) as i32;
    _mm256_cmpgt_epi32(_mm256_set1_epi32(len), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// The operands of one product's dot products: `a`'s rows `xs` (`[m, k]`), `b`'s stored rows
/// (`b + j * bcs`, `k` each), and where each sum goes.
struct Dots<'a, F> {
    put: &'a F,
    xs: &'a [f32],
    k: usize,
    b: *const f32,
    bcs: usize,
}

/// `put(r, j, Σ_kk xs[r * k + kk] · b[j * bcs + kk])` for `r < m`, `j in j0..j1`: each sum in
/// 16 lanes (element `kk` into lane `kk % 16`, in order; lanes 0–7 and 8–15 in two registers),
/// the lanes then added pairwise as the portable `dot` adds them.
///
/// # Safety
/// AVX2 and FMA; `xs` holds `m × k`; `b` is valid at `j * bcs + kk` for `j < j1`, `kk < k`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dots<F: Fn(usize, usize, f32)>(
    put: &F,
    xs: &[f32],
    k: usize,
    b: *const f32,
    bcs: usize,
    (j0, j1): (usize, usize),
    m: usize,
) {
    assert!(xs.len() >= m * k);
    let d = Dots { put, xs, k, b, bcs };
    for j in (j0..j1).step_by(2) {
        for r0 in (0..m).step_by(RT) {
            // SAFETY: the caller's contract.
            unsafe {
                if j + 1 < j1 {
                    d.rows::<2>(j, r0, m - r0);
                } else {
                    d.rows::<1>(j, r0, m - r0);
                }
            }
        }
    }
}

impl<F: Fn(usize, usize, f32)> Dots<'_, F> {
    /// [`Dots::tile`] for the `rows` (clamped to [`RT`]) rows from `r0`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const C: usize>(&self, j: usize, r0: usize, rows: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match rows {
                1 => self.tile::<1, C>(j, r0),
                2 => self.tile::<2, C>(j, r0),
                _ => self.tile::<RT, C>(j, r0),
            }
        }
    }

    /// `R` rows of `a` from `r0` against `C` stored rows of `b` from `j`: `R × C` sums of 16
    /// lanes in registers, lanes 0–7 in `[0]`, 8–15 in `[1]`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const C: usize>(&self, j: usize, r0: usize) {
        let (k, b, bcs) = (self.k, self.b, self.bcs);
        let mut acc = [[[_mm256_setzero_ps(); 2]; C]; R];
        let x = self.xs[r0 * k..(r0 + R) * k].as_ptr();
        let full = k / 16 * 16;
        for kk in (0..full).step_by(16) {
            for h in 0..2 {
                let o = kk + 8 * h;
                // SAFETY: `o + 8 <= k`: inside every row of `xs` and every stored row of `b`.
                unsafe {
                    let bv: [__m256; C] =
                        std::array::from_fn(|c| _mm256_loadu_ps(b.add((j + c) * bcs + o)));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let xv = _mm256_loadu_ps(x.add(r * k + o));
                        for c in 0..C {
                            acc_r[c][h] = _mm256_fmadd_ps(xv, bv[c], acc_r[c][h]);
                        }
                    }
                }
            }
        }
        // The last `k - full` elements into lanes `0..k - full`; the other lanes' sums stay as
        // they are (the fused add blended in only where kept), as the portable tail does.
        for h in 0..2 {
            let o = full + 8 * h;
            if o >= k {
                break;
            }
            let mk = mask(k - o);
            let keep = _mm256_castsi256_ps(mk);
            // SAFETY: the mask keeps every access below `k`.
            unsafe {
                let bv: [__m256; C] =
                    std::array::from_fn(|c| _mm256_maskload_ps(b.add((j + c) * bcs + o), mk));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xv = _mm256_maskload_ps(x.add(r * k + o), mk);
                    for c in 0..C {
                        let f = _mm256_fmadd_ps(xv, bv[c], acc_r[c][h]);
                        acc_r[c][h] = _mm256_blendv_ps(acc_r[c][h], f, keep);
                    }
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (c, v) in acc_r.iter().enumerate() {
                (self.put)(r0 + r, j + c, reduce(v[0], v[1]));
            }
        }
    }
}

/// Lanes added as the portable `dot` adds them: `l += l + 8` (the two registers), then `+ 4`,
/// `+ 2`, `+ 1`.
#[target_feature(enable = "avx2")]
fn reduce(lo: __m256, hi: __m256) -> f32 {
    let s8 = _mm256_add_ps(lo, hi);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2));
    _mm_cvtss_f32(s1)
}

/// [`super::rows_block`] for `M` rows of `a` (`1 ≤ M ≤ 4`): for each 8 columns, four of `b`'s rows
/// loaded once feed every row's partial sums, held in registers through the four fused steps (at
/// one row, a quarter of the portable loop's loads and stores of the sums). Each element's steps
/// are the portable loop's, in its order (from `+0.0` at the block's first row, then `kk`
/// ascending), so the bits are the same. The last `n % 8` columns take the same steps one element
/// at a time: AMD's Zen cores microcode the masked store (`vmaskmovps`), and a version that masked
/// every access ran 1.7x slower than the portable loop.
///
/// # Safety
/// AVX2 and FMA; `p` holds `M × n`, `xs` holds `M × k`; `b` is valid at `kk * brs + j` for `kk`
/// in `rows`, `j < n`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rows_block<const M: usize>(
    p: &mut [f32],
    xs: &[f32],
    k: usize,
    b: *const f32,
    brs: usize,
    rows: (usize, usize),
    n: usize,
) {
    assert!(p.len() >= M * n && xs.len() >= M * k);
    let pp = p.as_mut_ptr();
    let full = n / 8 * 8;
    let mut kk = rows.0;
    while kk + 4 <= rows.1 {
        let first = kk == rows.0;
        let w = |q: usize| b.wrapping_add((kk + q) * brs);
        let xv: [[f32; 4]; M] =
            std::array::from_fn(|r| std::array::from_fn(|q| xs[r * k + kk + q]));
        for j in (0..full).step_by(8) {
            // SAFETY: the caller's contract; `j + 8 <= n`.
            unsafe {
                let w0 = _mm256_loadu_ps(w(0).add(j));
                let w1 = _mm256_loadu_ps(w(1).add(j));
                let w2 = _mm256_loadu_ps(w(2).add(j));
                let w3 = _mm256_loadu_ps(w(3).add(j));
                for (r, x) in xv.iter().enumerate() {
                    let o = pp.add(r * n + j);
                    let s = if first { _mm256_setzero_ps() } else { _mm256_loadu_ps(o) };
                    let s = _mm256_fmadd_ps(_mm256_set1_ps(x[0]), w0, s);
                    let s = _mm256_fmadd_ps(_mm256_set1_ps(x[1]), w1, s);
                    let s = _mm256_fmadd_ps(_mm256_set1_ps(x[2]), w2, s);
                    let s = _mm256_fmadd_ps(_mm256_set1_ps(x[3]), w3, s);
                    _mm256_storeu_ps(o, s);
                }
            }
        }
        for j in full..n {
            for (r, x) in xv.iter().enumerate() {
                // SAFETY: as above; `j < n`.
                unsafe {
                    let o = pp.add(r * n + j);
                    let mut s = if first { 0.0 } else { *o };
                    for (q, &xq) in x.iter().enumerate() {
                        s = xq.mul_add(*w(q).add(j), s);
                    }
                    *o = s;
                }
            }
        }
        kk += 4;
    }
    // The last 1–3 rows of the block, one at a time.
    for kk in kk..rows.1 {
        let first = kk == rows.0;
        let w = b.wrapping_add(kk * brs);
        for j in (0..full).step_by(8) {
            // SAFETY: as above.
            unsafe {
                let wv = _mm256_loadu_ps(w.add(j));
                for r in 0..M {
                    let o = pp.add(r * n + j);
                    let s = if first { _mm256_setzero_ps() } else { _mm256_loadu_ps(o) };
                    _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_set1_ps(xs[r * k + kk]), wv, s));
                }
            }
        }
        for j in full..n {
            for r in 0..M {
                // SAFETY: as above.
                unsafe {
                    let o = pp.add(r * n + j);
                    let s = if first { 0.0 } else { *o };
                    *o = xs[r * k + kk].mul_add(*w.add(j), s);
                }
            }
        }
    }
}
