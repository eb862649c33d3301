//! gpt1's own fp32 micro-kernel for CPUs with AVX2 and FMA but not AVX-512 (AMD's Zen 2 and 3,
//! Intel's desktop cores), run by the bf16 kernels' driver (`../driver.rs`).
//!
//! Not the default (`GPT1_FP32=avx2` runs it, `../fp32/mod.rs`): the `gemm` crate's AVX2
//! products ran at 80–119 GFLOP/s on 2 cores of an AMD Zen 3 whose FMA units peak at 172–182,
//! and this kernel was written to close that gap. It is the classic 6 × 16 register tile (12
//! accumulators, two loads of `b` and six broadcasts of `a` per value of k), run twice per
//! 32-column panel, on k blocks of 128 (a panel of 16 KB, so that it and four tiles' rows of
//! `a` fit a 32 KB L1). Alone, on panels in L1, it runs at about 80 % of the FMA peak; in
//! products, with [`Blocking::KOuter`], level with the crate, and a gpt1 training step was 6 %
//! slower (docs/benchmarks.md), so the crate stays.
//!
//! Each element of `c` adds `a[i, q] · b[q, j]` for q in order, one FMA each, through a k block,
//! then the block's sum into `c`: the same terms in the same order whatever the blocking and
//! the thread count.

use super::super::driver::{self, MAX_MR, Micro, NR, Tile};
use super::super::{Blocking, Mat, Par};
use std::arch::x86_64::*;

/// Rows of the tile: 6 rows × 16 columns (12 ymm accumulators), twice per panel.
const MR: usize = 6;
const _: () = assert!(MR <= MAX_MR);

/// The fp32 kernel on AVX2 and FMA.
pub(in crate::kernels::gemm) struct Avx2;

/// The panels' packing for pinned weights (never kept: [`Micro::KEEP`] is false).
const F32_PACKING: u8 = 2;

impl Micro for Avx2 {
    const MR: usize = MR;
    const AW: usize = 2;
    const B_PACKING: u8 = F32_PACKING;
    const BW: usize = 2;
    const KEEP: bool = false;
    const KP: usize = 64;

    unsafe fn pack_a(
        d: &mut [u32],
        a: Mat,
        i0: usize,
        live: usize,
        p0: usize,
        kp: usize,
        k: usize,
    ) {
        pack_a(d, a, i0, live, p0, kp, k);
    }
    unsafe fn pack_b(
        d: &mut [u32],
        bt: Mat,
        j0: usize,
        live: usize,
        p0: usize,
        kp: usize,
        k: usize,
    ) {
        pack_b(d, bt, j0, live, p0, kp, k);
    }
    unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut Tile) {
        assert!(ap.len() >= kp * MR * 2 && bp.len() >= kp * 2 * NR);
        // SAFETY: the caller guarantees AVX2 and FMA; the asserts bound the reads.
        unsafe { kernel(ap, bp, kp, rows, tile) }
    }
    unsafe fn kernel_into(ap: &[u32], bp: &[u32], kp: usize, c: *mut f32, ldc: usize, first: bool) {
        assert!(ap.len() >= kp * MR * 2 && bp.len() >= kp * 2 * NR);
        // SAFETY: the caller guarantees AVX2 and FMA and a whole tile of `c`.
        unsafe { kernel_into(ap, bp, kp, c, ldc, first) }
    }
}

/// `c[m, n] (+)= a · b` on this kernel: k blocks outermost with tasks of four tiles on the
/// pool (the blocking that ran fastest on an AMD Zen 3), the driver's rule on one thread.
///
/// # Safety
/// The CPU has AVX2 and FMA; `c`, `a` and `b` as in [`super::matmul_ptr`].
pub(super) unsafe fn matmul(
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    (m, n, k): (usize, usize, usize),
    acc: bool,
    par: Par,
) {
    let blocking = (par == Par::Pool).then_some(Blocking::KOuter(4 * MR));
    // SAFETY: the caller's contract.
    unsafe { driver::matmul::<Avx2>(c, ldc, a, b, m, n, k, acc, par, blocking) }
}

/// Rows `i0..i0 + live` of `a`, values `2 p0..2 (p0 + kp)` (zeros beyond `k` and `live`):
/// `d[(p · MR + r) · 2 + h]` is row r's value `2 (p0 + p) + h`, an f32's bits.
fn pack_a(d: &mut [u32], a: Mat, i0: usize, live: usize, p0: usize, kp: usize, k: usize) {
    let d = &mut d[..kp * MR * 2];
    let k0 = 2 * p0;
    let cols = k.saturating_sub(k0).min(2 * kp);
    if live < MR || cols < 2 * kp {
        d.fill(0);
    }
    if a.cs == 1 {
        // Whole pairs of every row side by side (each pair one 8-byte move), then an odd
        // last value.
        let whole = cols / 2;
        for r in 0..live {
            let src = &a.data[(i0 + r) * a.rs + k0..][..cols];
            for (p, pair) in src[..2 * whole].chunks_exact(2).enumerate() {
                let o = (p * MR + r) * 2;
                d[o] = pair[0].to_bits();
                d[o + 1] = pair[1].to_bits();
            }
            if cols % 2 == 1 {
                d[(whole * MR + r) * 2] = src[cols - 1].to_bits();
            }
        }
    } else {
        // Columns contiguous (`a` a transposed activation): a value's rows side by side.
        for q in 0..cols {
            let src = &a.data[(k0 + q) * a.cs + i0 * a.rs..];
            let o = (q / 2) * MR * 2 + (q & 1);
            for r in 0..live {
                d[o + 2 * r] = src[r * a.rs].to_bits();
            }
        }
    }
}

/// Rows `j0..j0 + live` of `bt` (`b`'s transpose), values `2 p0..2 (p0 + kp)` (zeros beyond
/// `k` and `live`): `d[(2 p + h) · NR + j]` is `b[2 (p0 + p) + h, j0 + j]`'s bits.
fn pack_b(d: &mut [u32], bt: Mat, j0: usize, live: usize, p0: usize, kp: usize, k: usize) {
    let d = &mut d[..kp * 2 * NR];
    let k0 = 2 * p0;
    let cols = k.saturating_sub(k0).min(2 * kp);
    if live < NR || cols < 2 * kp {
        d.fill(0);
    }
    if bt.rs == 1 {
        // `b` row-major: each of its rows is contiguous over the panel's columns.
        for q in 0..cols {
            let src = &bt.data[(k0 + q) * bt.cs + j0..][..live];
            for (o, v) in d[q * NR..][..live].iter_mut().zip(src) {
                *o = v.to_bits();
            }
        }
    } else {
        // `b`'s columns contiguous (a weight used transposed): blocks of 8 columns, each read
        // along k, so that both sides stay in a few cache lines.
        for j8 in (0..live).step_by(8) {
            for q in 0..cols {
                for j in j8..(j8 + 8).min(live) {
                    d[q * NR + j] = bt.data[(j0 + j) * bt.rs + (k0 + q) * bt.cs].to_bits();
                }
            }
        }
    }
}

/// The accumulators of the first `R` rows for columns `16 · half ..` of the panel, over `kp`
/// pairs: per value of k, `b`'s 16 columns in two registers, each row's `a` broadcast into
/// two FMAs.
#[inline(always)]
unsafe fn dots<const R: usize>(ap: &[u32], bp: &[u32], kp: usize, half: usize) -> [__m256; 2 * MR] {
    unsafe {
        let mut c = [_mm256_setzero_ps(); 2 * MR];
        let (a, b) = (ap.as_ptr() as *const f32, (bp.as_ptr() as *const f32).add(16 * half));
        for p in 0..kp {
            for h in 0..2 {
                let bq = b.add((2 * p + h) * NR);
                let (b0, b1) = (_mm256_loadu_ps(bq), _mm256_loadu_ps(bq.add(8)));
                let aq = a.add(p * MR * 2 + h);
                for r in 0..R {
                    let x = _mm256_broadcast_ss(&*aq.add(2 * r));
                    c[2 * r] = _mm256_fmadd_ps(x, b0, c[2 * r]);
                    c[2 * r + 1] = _mm256_fmadd_ps(x, b1, c[2 * r + 1]);
                }
            }
        }
        c
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut Tile) {
    unsafe {
        for half in 0..2 {
            let c = match rows {
                1 => dots::<1>(ap, bp, kp, half),
                2 => dots::<2>(ap, bp, kp, half),
                3 => dots::<3>(ap, bp, kp, half),
                4 => dots::<4>(ap, bp, kp, half),
                5 => dots::<5>(ap, bp, kp, half),
                _ => dots::<MR>(ap, bp, kp, half),
            };
            for r in 0..rows.min(MR) {
                let o = tile.as_mut_ptr().add(r * NR + 16 * half);
                _mm256_storeu_ps(o, c[2 * r]);
                _mm256_storeu_ps(o.add(8), c[2 * r + 1]);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_into(ap: &[u32], bp: &[u32], kp: usize, c: *mut f32, ldc: usize, first: bool) {
    unsafe {
        for half in 0..2 {
            let acc = dots::<MR>(ap, bp, kp, half);
            for r in 0..MR {
                for h in 0..2 {
                    let o = c.add(r * ldc + 16 * half + 8 * h);
                    let v = acc[2 * r + h];
                    let v = if first { v } else { _mm256_add_ps(_mm256_loadu_ps(o), v) };
                    _mm256_storeu_ps(o, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{naive_matmul, rand_vec};

    /// The product on this kernel with `blocking` (None: the driver's rule) on `threads`.
    #[allow(clippy::too_many_arguments)]
    fn product(
        a: Mat,
        b: Mat,
        c0: &[f32],
        (m, n, k): (usize, usize, usize),
        acc: bool,
        threads: usize,
        blocking: Option<Blocking>,
    ) -> Vec<f32> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut c = c0.to_vec();
            let cp = c.as_mut_ptr();
            // SAFETY: checked AVX2 and FMA; the buffers hold the shapes.
            unsafe { driver::matmul::<Avx2>(cp, n, a, b, m, n, k, acc, Par::Pool, blocking) };
            c
        })
    }

    /// Every layout, odd shapes (edge tiles, odd k, k over several blocks, more than one block
    /// of panels): the definition, to fp32 rounding; and the same bits for every blocking the
    /// driver has and any thread count.
    #[test]
    fn the_fp32_kernel_matches_the_definition_with_the_same_bits_for_any_blocking() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let blockings = [
            None,
            Some(Blocking::Rows(6)),
            Some(Blocking::Rows(48)),
            Some(Blocking::Columns),
            Some(Blocking::KOuter(6)),
            Some(Blocking::KOuter(24)),
        ];
        for &(m, n, k, ta, tb, acc) in &[
            (1, 33, 7, false, false, false),
            (7, 65, 129, true, false, true),
            (37, 1100, 301, false, true, false),
            (61, 70, 513, true, true, true),
            (130, 97, 260, false, false, true),
        ] {
            let (a, b, c0) = (rand_vec(m * k, 11), rand_vec(k * n, 12), rand_vec(m * n, 13));
            let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
            let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
            let want = naive_matmul(am, bm, m, n, k);
            let first = product(am, bm, &c0, (m, n, k), acc, 1, None);
            for i in 0..m * n {
                let exact = want[i] + if acc { c0[i] } else { 0.0 };
                let tol = 1e-5 * (1.0 + exact.abs()) * (k as f32).sqrt();
                assert!((first[i] - exact).abs() <= tol, "{m}x{n}x{k} at {i}");
            }
            for threads in [1, 2, 3] {
                for blocking in blockings {
                    let got = product(am, bm, &c0, (m, n, k), acc, threads, blocking);
                    let same = first.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{m}x{n}x{k} ta {ta} tb {tb}, {threads} threads, {blocking:?}");
                }
            }
        }
    }
}
