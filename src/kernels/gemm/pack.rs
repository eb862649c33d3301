//! The bf16 packing: fp32 operands converted to bf16 pairs (round to nearest even) in the
//! layouts the kernels read, `[kp][W]` pairs per panel of `W` rows. The AVX-512 BF16 version
//! packs `a` and `b` with it; the AMX version packs `b` with it and, where `a`'s rows are not
//! contiguous, transposes `a`'s blocks with [`transpose16`].

use super::{Mat, to_bf16};
use std::arch::x86_64::*;

/// 16 bf16 pairs from two rows of 16 contiguous floats (`n` valid, zeros beyond): pair q is
/// (x0[q], x1[q]).
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn pairs_interleaved(x0: *const f32, x1: Option<*const f32>, n: usize, out: &mut [u32; 16]) {
    unsafe {
        let m = if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
        let lo = _mm512_maskz_loadu_ps(m, x0);
        let hi = match x1 {
            Some(p) => _mm512_maskz_loadu_ps(m, p),
            None => _mm512_setzero_ps(),
        };
        // [lo 0..16 | hi 0..16] as bf16, then interleaved lo0 hi0 lo1 hi1 ...
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        let idx = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        _mm512_storeu_si512(out.as_mut_ptr() as *mut _, _mm512_permutexvar_epi16(idx, v));
    }
}

/// Transposes a 16 × 16 block of u32 held as 16 rows (row i, element j → row j,
/// element i): three rounds of unpack and lane shuffles.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16(r: &mut [__m512i; 16]) {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        for h in 0..2 {
            r[4 * i + 2 * h] = _mm512_unpacklo_epi64(t[4 * i + h], t[4 * i + 2 + h]);
            r[4 * i + 2 * h + 1] = _mm512_unpackhi_epi64(t[4 * i + h], t[4 * i + 2 + h]);
        }
    }
    // Now r[4i + c] holds, per 128-bit lane L, rows 4i..4i+4 of column 4L + c.
    for i in 0..2 {
        for c in 0..4 {
            t[8 * i + c] = _mm512_shuffle_i32x4(r[8 * i + c], r[8 * i + 4 + c], 0x88);
            t[8 * i + 4 + c] = _mm512_shuffle_i32x4(r[8 * i + c], r[8 * i + 4 + c], 0xDD);
        }
    }
    // t[c] holds lanes (0, 2) of row groups 0 and 1, t[4 + c] lanes (1, 3); t[8 + c] and
    // t[12 + c] the same for groups 2 and 3.
    for c in 0..4 {
        for h in 0..2 {
            let (x, y) = (t[4 * h + c], t[8 + 4 * h + c]);
            r[c + 4 * h] = _mm512_shuffle_i32x4(x, y, 0x88);
            r[c + 4 * h + 8] = _mm512_shuffle_i32x4(x, y, 0xDD);
        }
    }
}

/// Pairs of 16 vectors of contiguous floats, transposed: `src(j)` is the start of vector
/// j's floats (`n` valid floats each, at most 32, zeros beyond; `live` vectors, zeros for
/// the others); `out[q][j]` is vector j's pair q.
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn pairs_block(
    src: impl Fn(usize) -> *const f32,
    live: usize,
    n: usize,
    out: &mut [[u32; 16]; 16],
) {
    unsafe {
        let m0 = if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
        let m1 = if n >= 32 {
            0xFFFF
        } else if n > 16 {
            (1u16 << (n - 16)) - 1
        } else {
            0
        };
        let mut r = [_mm512_setzero_si512(); 16];
        for (j, rj) in r.iter_mut().enumerate().take(live) {
            let x = src(j);
            let lo = _mm512_maskz_loadu_ps(m0, x);
            let hi = _mm512_maskz_loadu_ps(m1, x.wrapping_add(16.min(n)));
            *rj = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
        }
        transpose16(&mut r);
        for (q, rq) in r.iter().enumerate() {
            _mm512_storeu_si512(out[q].as_mut_ptr() as *mut _, *rq);
        }
    }
}

/// Packs rows `i0..i0 + live` of `x` (live <= W, zero rows beyond) and pairs
/// `p0..p0 + kp` along its columns: `[kp][W]` u32, each the bf16 pair (x[i, 2p], x[i, 2p + 1]).
/// `a` is packed as itself (W = MR); `b` as its transpose (W = NR: one zmm then holds 16
/// columns' pairs, the VNNI layout `vdpbf16ps` reads).
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
pub(super) unsafe fn pack<const W: usize>(
    dst: &mut [u32],
    x: Mat,
    i0: usize,
    live: usize,
    p0: usize,
    kp: usize,
    k: usize,
) {
    let ptr = |off: usize| x.data.as_ptr().wrapping_add(off);
    if x.cs == 1 {
        // A row's pairs are contiguous floats: 16 rows at a time, transposed in registers.
        let mut blk = [[0u32; 16]; 16];
        for r0 in (0..W).step_by(16) {
            let (rows, w) = (live.saturating_sub(r0).min(16), (W - r0).min(16));
            for q0 in (0..kp).step_by(16) {
                let nq = (kp - q0).min(16);
                let k0 = 2 * (p0 + q0);
                let n = (k - k0).min(2 * nq);
                unsafe { pairs_block(|r| ptr((i0 + r0 + r) * x.rs + k0), rows, n, &mut blk) };
                for q in 0..nq {
                    dst[(q0 + q) * W + r0..(q0 + q) * W + r0 + w].copy_from_slice(&blk[q][..w]);
                }
            }
        }
    } else if x.rs == 1 {
        // Rows are contiguous for a given column: pair two columns, 16 rows at a time.
        let mut buf = [0u32; 16];
        for p in 0..kp {
            let (k0, k1) = (2 * (p0 + p), 2 * (p0 + p) + 1);
            for r0 in (0..W).step_by(16) {
                let (rows, w) = (live.saturating_sub(r0).min(16), (W - r0).min(16));
                let x1 = (k1 < k).then(|| ptr(k1 * x.cs + i0 + r0));
                unsafe { pairs_interleaved(ptr(k0 * x.cs + i0 + r0), x1, rows, &mut buf) };
                dst[p * W + r0..p * W + r0 + w].copy_from_slice(&buf[..w]);
            }
        }
    } else {
        for p in 0..kp {
            let (k0, k1) = (2 * (p0 + p), 2 * (p0 + p) + 1);
            for r in 0..W {
                dst[p * W + r] = if r < live {
                    let row = (i0 + r) * x.rs;
                    let lo = to_bf16(x.data[row + k0 * x.cs]) as u32;
                    let hi = if k1 < k { to_bf16(x.data[row + k1 * x.cs]) as u32 } else { 0 };
                    lo | (hi << 16)
                } else {
                    0
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::rand_vec;

    /// Row `i0 + r`'s pair `p0 + p` as the definition has it (zero beyond `k` and `live`).
    fn pair(x: &[f32], rs: usize, row: usize, kk: usize, k: usize) -> u32 {
        let v = |c: usize| if c < k { to_bf16(x[row * rs + c]) as u32 } else { 0 };
        v(kk) | (v(kk + 1) << 16)
    }

    fn check<const W: usize>() {
        if !super::super::avx512_bf16() {
            return;
        }
        let (rows, k) = (W + 3, 301);
        let x = rand_vec(rows * k, 5);
        for live in 1..=W {
            for (p0, kp) in [(0, 128), (128, 23), (144, 7)] {
                let mut dst = vec![u32::MAX; kp * W];
                // SAFETY: AVX-512 BF16 checked; rows 2.. 2 + live and pairs p0.. p0 + kp lie in x.
                unsafe { pack::<W>(&mut dst, Mat::rows(&x, k), 2, live, p0, kp, k) };
                for p in 0..kp {
                    for r in 0..W {
                        let want = if r < live { pair(&x, k, 2 + r, 2 * (p0 + p), k) } else { 0 };
                        assert_eq!(dst[p * W + r], want, "W {W}, live {live}, pair {p}, row {r}");
                    }
                }
            }
        }
    }

    /// Packing contiguous rows (through 16 × 16 transposes) writes the definition's pairs for
    /// any number of live rows, zeros in the lanes beyond them, on a k whose last pair is half
    /// outside.
    #[test]
    fn packing_any_live_rows_gives_the_definitions_pairs() {
        check::<12>();
        check::<32>();
    }
}
