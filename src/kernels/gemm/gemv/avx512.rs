//! The AVX-512 versions of [`super`]'s loops, register-blocked so that each weight read from
//! memory feeds several rows of `a` without a packed copy: the dot products (`b` transposed, up
//! to 8 rows per block: the LSTM's recurrence, `--num` rows of decoding, a short batch's input
//! gradients) and the partial sums of 1–4 rows (`b` row-major: decoding's one or `--num` rows).
//! Every output element gets the portable loop's sum in the portable loop's order, so the bits
//! do not depend on which version ran (tested against it).

use std::arch::x86_64::*;

/// This CPU runs these kernels (checked once; `std` caches the answer).
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Rows of `a` per register block of the dot products: `RT × 2` accumulators.
const RT: usize = 8;

/// The lanes `< len` of a 16-lane vector.
fn mask(len: usize) -> __mmask16 {
    if len >= 16 { !0 } else { (1u16 << len) - 1 }
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
/// 16 lanes (element `kk` into lane `kk % 16`, in order), the lanes then added pairwise as the
/// portable `dot` adds them.
///
/// # Safety
/// AVX-512F; `xs` holds `m × k`; `b` is valid at `j * bcs + kk` for `j < j1`, `kk < k`.
#[target_feature(enable = "avx512f")]
pub unsafe fn dots<F: Fn(usize, usize, f32)>(
    put: &F,
    xs: &[f32],
    k: usize,
    b: *const f32,
    bcs: usize,
    (j0, j1): (usize, usize),
    m: usize,
) {
    debug_assert!(xs.len() >= m * k);
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
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const C: usize>(&self, j: usize, r0: usize, rows: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            match rows {
                1 => self.tile::<1, C>(j, r0),
                2 => self.tile::<2, C>(j, r0),
                3 => self.tile::<3, C>(j, r0),
                4 => self.tile::<4, C>(j, r0),
                5 => self.tile::<5, C>(j, r0),
                6 => self.tile::<6, C>(j, r0),
                7 => self.tile::<7, C>(j, r0),
                _ => self.tile::<RT, C>(j, r0),
            }
        }
    }

    /// `R` rows of `a` from `r0` against `C` stored rows of `b` from `j`: `R × C` sums in
    /// registers.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const C: usize>(&self, j: usize, r0: usize) {
        let (k, b, bcs) = (self.k, self.b, self.bcs);
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let x = self.xs[r0 * k..(r0 + R) * k].as_ptr();
        let full = k / 16 * 16;
        for kk in (0..full).step_by(16) {
            // SAFETY: `kk + 16 <= k`: inside every row of `xs` and every stored row of `b`.
            unsafe {
                let bv: [__m512; C] =
                    std::array::from_fn(|c| _mm512_loadu_ps(b.add((j + c) * bcs + kk)));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xv = _mm512_loadu_ps(x.add(r * k + kk));
                    for c in 0..C {
                        acc_r[c] = _mm512_fmadd_ps(xv, bv[c], acc_r[c]);
                    }
                }
            }
        }
        if full < k {
            // The last `k - full` elements into lanes `0..k - full`; a masked fused add leaves
            // the other lanes' sums as they are, as the portable tail does.
            let mk = mask(k - full);
            // SAFETY: the mask keeps every access below `k`.
            unsafe {
                let bv: [__m512; C] =
                    std::array::from_fn(|c| _mm512_maskz_loadu_ps(mk, b.add((j + c) * bcs + full)));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xv = _mm512_maskz_loadu_ps(mk, x.add(r * k + full));
                    for c in 0..C {
                        acc_r[c] = _mm512_mask3_fmadd_ps(xv, bv[c], acc_r[c], mk);
                    }
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (c, &v) in acc_r.iter().enumerate() {
                (self.put)(r0 + r, j + c, reduce(v));
            }
        }
    }
}

/// Lanes added as the portable `dot` adds them: `l += l + 8`, then `+ 4`, `+ 2`, `+ 1`.
#[target_feature(enable = "avx512f")]
fn reduce(v: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let s8 = _mm256_add_ps(lo, hi);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2));
    _mm_cvtss_f32(s1)
}

/// [`super::rows_block`] for `M` rows of `a` (`1 ≤ M ≤ 4`): for each 16
/// columns, four of `b`'s rows loaded once feed every row's partial sums, held in registers through
/// the four fused steps. Each element's steps are the portable loop's, in its order (from `+0.0` at
/// the block's first row, then `kk` ascending), so the bits are the same.
///
/// # Safety
/// AVX-512F; `p` holds `M × n`, `xs` holds `M × k`; `b` is valid at `kk * brs + j` for `kk` in
/// `rows`, `j < n`.
#[target_feature(enable = "avx512f")]
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
    let mut kk = rows.0;
    while kk + 4 <= rows.1 {
        let first = kk == rows.0;
        let x: [[__m512; 4]; M] =
            std::array::from_fn(|r| std::array::from_fn(|q| _mm512_set1_ps(xs[r * k + kk + q])));
        let w = |q: usize| b.wrapping_add((kk + q) * brs);
        let mut j = 0;
        while j < n {
            let mk = mask(n - j);
            // SAFETY: the caller's contract; lanes past the row are masked.
            unsafe {
                let w0 = _mm512_maskz_loadu_ps(mk, w(0).add(j));
                let w1 = _mm512_maskz_loadu_ps(mk, w(1).add(j));
                let w2 = _mm512_maskz_loadu_ps(mk, w(2).add(j));
                let w3 = _mm512_maskz_loadu_ps(mk, w(3).add(j));
                for (r, xr) in x.iter().enumerate() {
                    let o = pp.add(r * n + j);
                    let s = if first { _mm512_setzero_ps() } else { _mm512_maskz_loadu_ps(mk, o) };
                    let s = _mm512_fmadd_ps(xr[0], w0, s);
                    let s = _mm512_fmadd_ps(xr[1], w1, s);
                    let s = _mm512_fmadd_ps(xr[2], w2, s);
                    let s = _mm512_fmadd_ps(xr[3], w3, s);
                    _mm512_mask_storeu_ps(o, mk, s);
                }
            }
            j += 16;
        }
        kk += 4;
    }
    // The last 1–3 rows of the block, one at a time.
    for kk in kk..rows.1 {
        let first = kk == rows.0;
        let x: [__m512; M] = std::array::from_fn(|r| _mm512_set1_ps(xs[r * k + kk]));
        let w = b.wrapping_add(kk * brs);
        let mut j = 0;
        while j < n {
            let mk = mask(n - j);
            // SAFETY: as above.
            unsafe {
                let wv = _mm512_maskz_loadu_ps(mk, w.add(j));
                for (r, xr) in x.iter().enumerate() {
                    let o = pp.add(r * n + j);
                    let s = if first { _mm512_setzero_ps() } else { _mm512_maskz_loadu_ps(mk, o) };
                    _mm512_mask_storeu_ps(o, mk, _mm512_fmadd_ps(*xr, wv, s));
                }
            }
            j += 16;
        }
    }
}
