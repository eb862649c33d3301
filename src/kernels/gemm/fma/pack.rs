//! The widening kernels' packing: `a` as its bf16-rounded values already widened to f32
//! (`[kp][W][2]`), `b` as bf16 pairs (`[kp][NR]`, the layout AVX-512 BF16's panels have), in
//! AVX2 loops with scalar tails.

use super::super::Mat;
use super::super::driver::NR;

/// `x`'s bf16 value (round to nearest even, a NaN stays a quiet NaN) as an f32's bits: the
/// bf16 in the upper half, zeros below (`super::to_bf16(x) << 16`, branch-free enough to
/// vectorize).
#[inline(always)]
pub(super) fn widened(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x7FFF_FFFF > 0x7F80_0000 {
        (b | 0x0040_0000) & 0xFFFF_0000
    } else {
        b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000
    }
}

/// Rows `i0..i0 + live` of `x` and pairs `p0..p0 + kp` (zeros beyond `k` and `live`), widened:
/// `dst[(p · W + r) · 2 + h]` is row r's value `2 (p0 + p) + h` as an f32's bits.
///
/// # Safety
/// The CPU has AVX2.
pub(super) unsafe fn pack_widened<const W: usize>(
    dst: &mut [u32],
    x: Mat,
    i0: usize,
    live: usize,
    p0: usize,
    kp: usize,
    k: usize,
) {
    let dst = &mut dst[..kp * W * 2];
    let k0 = 2 * p0;
    let cols = k.saturating_sub(k0).min(2 * kp);
    if live < W || cols < 2 * kp {
        dst.fill(0);
    }
    if cols == 0 {
        // k = 0: nothing to read (a strided `a` may then hold no rows at all).
        return;
    }
    let at = |q: usize, r: usize| ((q / 2) * W + r) * 2 + (q & 1);
    if x.cs == 1 {
        for r in 0..live {
            let src = &x.data[(i0 + r) * x.rs + k0..][..cols];
            let whole = cols / 8 * 8;
            // SAFETY: AVX2 (the caller's contract); the reads lie in `src`, the writes at
            // pairs below `whole / 2 <= kp` of row `r < W` in `dst`.
            unsafe { avx2::widen_row::<W>(dst, src, whole, r) };
            for (q, &v) in src.iter().enumerate().skip(whole) {
                dst[at(q, r)] = widened(v);
            }
        }
    } else if x.rs == 1 {
        // Columns of `x` contiguous: 8 (then 4) rows of a pair's two columns at a time,
        // interleaved.
        let rows4 = live / 4 * 4;
        for p in 0..cols.div_ceil(2) {
            let (c0, c1) = (k0 + 2 * p, k0 + 2 * p + 1);
            let e = &x.data[c0 * x.cs + i0..][..live];
            let o = (2 * p + 1 < cols).then(|| &x.data[c1 * x.cs + i0..][..live]);
            // SAFETY: AVX2; the reads lie in `e` and `o`, the writes in pair p's rows < W.
            unsafe { avx2::widen_pair_rows::<W>(dst, e, o, rows4, p) };
            for r in rows4..live {
                dst[at(2 * p, r)] = widened(e[r]);
                if let Some(o) = o {
                    dst[at(2 * p + 1, r)] = widened(o[r]);
                }
            }
        }
    } else {
        for q in 0..cols {
            let base = (k0 + q) * x.cs + i0 * x.rs;
            for r in 0..live {
                dst[at(q, r)] = widened(x.data[base + r * x.rs]);
            }
        }
    }
}

/// Rows `j0..j0 + live` of `bt` (`b`'s transpose) and pairs `p0..p0 + kp` as bf16 pairs,
/// `dst[p · NR + j]` = `(bt[j, 2p], bt[j, 2p + 1])` (zeros beyond `k` and `live`): the bits
/// `pack.rs` writes with AVX-512 BF16, but for denormals, which it flushes to zero.
///
/// # Safety
/// The CPU has AVX2.
pub(super) unsafe fn pack_pairs(
    dst: &mut [u32],
    bt: Mat,
    j0: usize,
    live: usize,
    p0: usize,
    kp: usize,
    k: usize,
) {
    let dst = &mut dst[..kp * NR];
    if live < NR {
        dst.fill(0);
    }
    let k0 = 2 * p0;
    let pair = |lo: f32, hi: Option<f32>| hi.map_or(0, widened) | widened(lo) >> 16;
    if bt.rs == 1 {
        // `b` row-major: each of its rows is contiguous over the panel's columns.
        let whole = live / 8 * 8;
        for p in 0..kp {
            let (c0, c1) = (k0 + 2 * p, k0 + 2 * p + 1);
            let lo = &bt.data[c0 * bt.cs + j0..][..live];
            let hi = (c1 < k).then(|| &bt.data[c1 * bt.cs + j0..][..live]);
            let out = &mut dst[p * NR..][..live];
            // SAFETY: AVX2; the reads lie in `lo` and `hi`, the writes in `out`.
            unsafe { avx2::pairs_across(out, lo, hi, whole) };
            for j in whole..live {
                out[j] = pair(lo[j], hi.map(|h| h[j]));
            }
        }
    } else if bt.cs == 1 {
        // `b`'s columns contiguous (a transposed weight): blocks of 8 columns × 8 pairs,
        // transposed in registers.
        let (cols8, pairs8) = (live / 8 * 8, (k - k0).min(2 * kp) / 16 * 8);
        // SAFETY: AVX2; the reads lie in rows j0.. j0 + cols8 of `bt`, pairs below pairs8
        // (whole pairs inside k), the writes in `dst`'s kp pairs of NR columns.
        unsafe { avx2::pairs_transposed(dst, bt, j0, cols8, k0, pairs8) };
        for j in 0..live {
            let row = (j0 + j) * bt.rs;
            let from = if j < cols8 { pairs8 } else { 0 };
            for p in from..kp {
                let c0 = k0 + 2 * p;
                let hi = (c0 + 1 < k).then(|| bt.data[row + c0 + 1]);
                dst[p * NR + j] = pair(bt.data[row + c0], hi);
            }
        }
    } else {
        for j in 0..live {
            let row = (j0 + j) * bt.rs;
            for p in 0..kp {
                let c0 = k0 + 2 * p;
                let hi = (c0 + 1 < k).then(|| bt.data[row + (c0 + 1) * bt.cs]);
                dst[p * NR + j] = pair(bt.data[row + c0 * bt.cs], hi);
            }
        }
    }
}

/// The packings' AVX2 loops (every CPU that runs either kernel has AVX2): 8 values rounded at
/// a time, as [`widened`] rounds one.
mod avx2 {
    use super::NR;
    use crate::kernels::gemm::Mat;
    use std::arch::x86_64::*;

    /// 8 floats' bits rounded to bf16, as f32 bits (see [`super::widened`]).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rounded(b: __m256i) -> __m256i {
        let lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
        let r = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)), lsb);
        let abs = _mm256_and_si256(b, _mm256_set1_epi32(0x7FFF_FFFF));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F80_0000));
        let quiet = _mm256_or_si256(b, _mm256_set1_epi32(0x0040_0000));
        let v = _mm256_blendv_epi8(r, quiet, nan);
        _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF_0000u32 as i32))
    }

    /// 8 floats at `x` rounded to bf16, as f32 bits.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn widen8(x: *const f32) -> __m256i {
        // SAFETY: the caller's `x` holds 8 floats.
        rounded(unsafe { _mm256_loadu_si256(x as *const __m256i) })
    }

    /// Values `0..whole` (a multiple of 8) of a row widened into row `r` of the `[kp][W][2]`
    /// packing: each 8 values are 4 pairs, 8 bytes each, `W` rows apart.
    ///
    /// # Safety
    /// AVX2; `src` holds `whole` values and `dst` `whole / 2` pairs of `W` rows, `r < W`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn widen_row<const W: usize>(
        dst: &mut [u32],
        src: &[f32],
        whole: usize,
        r: usize,
    ) {
        debug_assert!(whole <= src.len() && (whole / 2) * W * 2 <= dst.len() && r < W);
        let d = dst.as_mut_ptr();
        for q in (0..whole).step_by(8) {
            unsafe {
                let v = widen8(src.as_ptr().add(q));
                let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let at = |i: usize| d.add(((q / 2 + i) * W + r) * 2) as *mut __m128i;
                _mm_storel_epi64(at(0), lo);
                _mm_storel_epi64(at(1), _mm_unpackhi_epi64(lo, lo));
                _mm_storel_epi64(at(2), hi);
                _mm_storel_epi64(at(3), _mm_unpackhi_epi64(hi, hi));
            }
        }
    }

    /// 4 floats at `x` rounded to bf16, as f32 bits (only those 4 are read).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn widen4(x: *const f32) -> __m128i {
        let low4 = _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0);
        // SAFETY: the caller's `x` holds 4 floats; the masked lanes are not read.
        _mm256_castsi256_si128(rounded(unsafe { _mm256_maskload_epi32(x as *const i32, low4) }))
    }

    /// Rows `0..rows4` (a multiple of 4) of pair `p` from its even column `e` and odd column
    /// `o` (zeros when None), interleaved into the `[kp][W][2]` packing: 8 rows at a time,
    /// then 4.
    ///
    /// # Safety
    /// AVX2; `e` and `o` hold `rows4` values, `dst` pair `p` of `W >= rows4` rows.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn widen_pair_rows<const W: usize>(
        dst: &mut [u32],
        e: &[f32],
        o: Option<&[f32]>,
        rows4: usize,
        p: usize,
    ) {
        debug_assert!(rows4 <= e.len() && rows4 <= W && (p + 1) * W * 2 <= dst.len());
        debug_assert!(o.is_none_or(|o| rows4 <= o.len()));
        let d = dst.as_mut_ptr();
        let rows8 = rows4 / 8 * 8;
        for r in (0..rows8).step_by(8) {
            unsafe {
                let ev = widen8(e.as_ptr().add(r));
                let ov = o.map_or(_mm256_setzero_si256(), |o| widen8(o.as_ptr().add(r)));
                let (lo, hi) = (_mm256_unpacklo_epi32(ev, ov), _mm256_unpackhi_epi32(ev, ov));
                let at = d.add((p * W + r) * 2) as *mut __m256i;
                _mm256_storeu_si256(at, _mm256_permute2x128_si256::<0x20>(lo, hi));
                _mm256_storeu_si256(at.add(1), _mm256_permute2x128_si256::<0x31>(lo, hi));
            }
        }
        if rows8 < rows4 {
            let r = rows8;
            unsafe {
                let ev = widen4(e.as_ptr().add(r));
                let ov = o.map_or(_mm_setzero_si128(), |o| widen4(o.as_ptr().add(r)));
                let at = d.add((p * W + r) * 2) as *mut __m128i;
                _mm_storeu_si128(at, _mm_unpacklo_epi32(ev, ov));
                _mm_storeu_si128(at.add(1), _mm_unpackhi_epi32(ev, ov));
            }
        }
    }

    /// Columns `0..whole` (a multiple of 8) of one pair from `b`'s rows `lo` and `hi` (zeros
    /// when None): `out[j]` = `(lo[j], hi[j])`.
    ///
    /// # Safety
    /// AVX2; every slice holds `whole` values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pairs_across(
        out: &mut [u32],
        lo: &[f32],
        hi: Option<&[f32]>,
        whole: usize,
    ) {
        debug_assert!(whole <= out.len() && whole <= lo.len());
        for j in (0..whole).step_by(8) {
            unsafe {
                let l = _mm256_srli_epi32(widen8(lo.as_ptr().add(j)), 16);
                let h = hi.map_or(_mm256_setzero_si256(), |h| widen8(h.as_ptr().add(j)));
                _mm256_storeu_si256(out.as_mut_ptr().add(j) as *mut __m256i, _mm256_or_si256(h, l));
            }
        }
    }

    /// 8 pairs from 16 contiguous floats: `(x[2i], x[2i + 1])`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pairs_of16(x: *const f32) -> __m256i {
        unsafe {
            // In each 64-bit lane (even value low, odd high), the odd value's bits moved down
            // over the even one's bf16: the pair in the even 32-bit position.
            let f =
                |v: __m256i| _mm256_or_si256(_mm256_srli_epi64(v, 32), _mm256_srli_epi32(v, 16));
            let idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
            let p0 = _mm256_permutevar8x32_epi32(f(widen8(x)), idx);
            let p1 = _mm256_permutevar8x32_epi32(f(widen8(x.add(8))), idx);
            _mm256_blend_epi32::<0xF0>(p0, p1)
        }
    }

    /// Transposes 8 vectors of 8 u32.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose8(r: &mut [__m256i; 8]) {
        let t = |i: usize, lo: bool| {
            let (x, y) = (r[2 * i], r[2 * i + 1]);
            if lo { _mm256_unpacklo_epi32(x, y) } else { _mm256_unpackhi_epi32(x, y) }
        };
        let t = [
            t(0, true),
            t(0, false),
            t(1, true),
            t(1, false),
            t(2, true),
            t(2, false),
            t(3, true),
            t(3, false),
        ];
        // s[c] (c < 4): columns c and c + 4 of rows 0..4; s[4 + c] the same of rows 4..8.
        let mut s = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            let (a, b, c, d) = (t[4 * h], t[4 * h + 2], t[4 * h + 1], t[4 * h + 3]);
            s[4 * h] = _mm256_unpacklo_epi64(a, b);
            s[4 * h + 1] = _mm256_unpackhi_epi64(a, b);
            s[4 * h + 2] = _mm256_unpacklo_epi64(c, d);
            s[4 * h + 3] = _mm256_unpackhi_epi64(c, d);
        }
        for c in 0..4 {
            r[c] = _mm256_permute2x128_si256::<0x20>(s[c], s[4 + c]);
            r[c + 4] = _mm256_permute2x128_si256::<0x31>(s[c], s[4 + c]);
        }
    }

    /// Columns `j0..j0 + cols8` of `bt` (rows of `b`'s transpose, contiguous) and pairs
    /// `0..pairs8` from value `k0` (both multiples of 8) into `dst` `[kp][NR]`: 8 × 8 blocks.
    ///
    /// # Safety
    /// AVX2; `bt.cs == 1`; the values read lie in `bt`, `pairs8 <= kp`, `cols8 <= NR`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pairs_transposed(
        dst: &mut [u32],
        bt: Mat,
        j0: usize,
        cols8: usize,
        k0: usize,
        pairs8: usize,
    ) {
        debug_assert!(bt.cs == 1 && cols8 <= NR && pairs8 * NR <= dst.len());
        for j in (0..cols8).step_by(8) {
            for p in (0..pairs8).step_by(8) {
                let mut r = [_mm256_setzero_si256(); 8];
                for (i, ri) in r.iter_mut().enumerate() {
                    let at = (j0 + j + i) * bt.rs + k0 + 2 * p;
                    debug_assert!(at + 16 <= bt.data.len());
                    // SAFETY: the caller's bounds.
                    *ri = unsafe { pairs_of16(bt.data.as_ptr().add(at)) };
                }
                transpose8(&mut r);
                for (q, rq) in r.iter().enumerate() {
                    // SAFETY: pair p + q < pairs8 <= kp, columns j..j + 8 <= NR.
                    unsafe {
                        _mm256_storeu_si256(
                            dst.as_mut_ptr().add((p + q) * NR + j) as *mut __m256i,
                            *rq,
                        )
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::driver::NR;
    use crate::kernels::gemm::to_bf16;
    const MR512: usize = 12;
    const MR256: usize = 4;
    use crate::kernels::testutil::rand_vec;

    #[test]
    fn widening_rounds_as_to_bf16() {
        let mut xs = rand_vec(4096, 9);
        let specials =
            [0.0, -0.0, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, f32::MAX, f32::MIN_POSITIVE];
        xs.extend(specials);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, 1e-40, -3e-39]);
        for x in xs {
            assert_eq!(widened(x), (to_bf16(x) as u32) << 16, "{x:e}");
        }
    }

    /// Both packings against the definition of their layouts, for every live count, a k whose
    /// last pair is half outside, and each operand orientation.
    #[test]
    fn packing_writes_the_layouts_words() {
        if !crate::kernels::gemm::Version::Fma256.runs_here() {
            return;
        }
        let (rows, k) = (NR + 3, 301);
        let x = rand_vec(rows * k, 5);
        let xt: Vec<f32> = (0..k * rows).map(|i| x[(i % rows) * k + i / rows]).collect();
        for (m, what) in [(Mat::rows(&x, k), "rows"), (Mat::t(&xt, rows), "transposed")] {
            let v = |r: usize, c: usize| if c < k { m.data[r * m.rs + c * m.cs] } else { 0.0 };
            for live in [1, 3, MR256, MR512, NR] {
                for (p0, kp) in [(0, 128), (128, 23), (144, 7)] {
                    let mut d = vec![u32::MAX; kp * NR];
                    // SAFETY: the kernels' tests run where AVX2 is (checked above).
                    unsafe { pack_pairs(&mut d, m, 2, live, p0, kp, k) };
                    for p in 0..kp {
                        for j in 0..NR {
                            let (c0, live_j) = (2 * (p0 + p), j < live);
                            let want = if live_j {
                                (to_bf16(v(2 + j, c0)) as u32)
                                    | (to_bf16(v(2 + j, c0 + 1)) as u32) << 16
                            } else {
                                0
                            };
                            assert_eq!(
                                d[p * NR + j],
                                want,
                                "{what} pairs: live {live}, pair {p}, col {j}"
                            );
                        }
                    }
                    if live <= MR512 {
                        let mut d = vec![u32::MAX; kp * MR512 * 2];
                        // SAFETY: as above.
                        unsafe { pack_widened::<MR512>(&mut d, m, 2, live, p0, kp, k) };
                        for p in 0..kp {
                            for r in 0..MR512 {
                                for h in 0..2 {
                                    let c = 2 * (p0 + p) + h;
                                    let want = if r < live {
                                        (to_bf16(v(2 + r, c)) as u32) << 16
                                    } else {
                                        0
                                    };
                                    let got = d[(p * MR512 + r) * 2 + h];
                                    assert_eq!(
                                        got, want,
                                        "{what} widened: live {live}, pair {p}, row {r}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
