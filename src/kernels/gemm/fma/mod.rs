//! The bf16 product on CPUs without bf16 instructions: `b`'s panels in bf16 (the same packing
//! as AVX-512 BF16's, half the bytes of fp32), widened to fp32 in registers (a shift or a mask
//! per 16 values: a bf16 is the upper half of an f32) and multiplied on the fp32 FMA units.
//! `a` is packed as its bf16-rounded values already widened, so each row's broadcast is one load.
//!
//! Two micro-kernels run by `driver.rs`: [`Fma512`] (AVX-512F, 12 × 32 tiles: Intel's Skylake to
//! Ice Lake Xeons, which have AVX-512 but not its BF16 extension) and [`Fma256`] (AVX2 and FMA, 4 ×
//! 32 tiles run as two halves of 16 columns, a single row in one pass: AMD's Zen 2 and 3, Intel's
//! desktop cores, every CPU this crate's x86-64-v3 build runs on). Both add, for each element,
//! `a[2p]·b[2p]` then `a[2p + 1]·b[2p + 1]` with one FMA each (a product of two bf16 values is
//! exact in fp32), pair after pair through a k block, then the block's sum into `c`: the two give
//! the same bits, for any thread count and blocking.
//!
//! Why not the emulation (inputs rounded into fp32 copies, then the `gemm` crate's product):
//! that reads fp32 weights at every product (a decode step twice the bytes) and rounds whole
//! operands serially before each product; here decoding streams bf16 panels kept for pinned
//! weights, as on AVX-512 BF16.

use super::Mat;
use super::driver::{MAX_MR, Micro, NR, Tile};
use std::arch::x86_64::*;

mod pack;
use pack::{pack_pairs, pack_widened};

/// Rows of [`Fma512`]'s tile: 12 × 32 accumulators (24 zmm).
const MR512: usize = 12;
/// Rows of [`Fma256`]'s tile: 4 rows × 16 columns at a time (8 ymm), twice per panel.
const MR256: usize = 4;
const _: () = assert!(MR512 <= MAX_MR && MR256 <= MAX_MR);

/// The widening kernel on AVX-512F (no BF16 extension needed).
pub(super) struct Fma512;
/// The widening kernel on AVX2 and FMA.
pub(super) struct Fma256;

/// The bf16 panels' second B_PACKING: [`pack_pairs`] keeps denormals, which AVX-512 BF16's
/// packing flushes, so kept panels are not shared with that version.
const WIDE_PACKING: u8 = 1;

/// The two kernels' [`Micro`] impls: the same packings (`a` widened for `MR` rows), their own
/// tiles. Every CPU that runs either has AVX2, which the packing uses (`runs_here` checks it).
macro_rules! widening_micro {
    ($kernel:ident, $mr:expr, $tile:ident, $tile_into:ident) => {
        impl Micro for $kernel {
            const MR: usize = $mr;
            const AW: usize = 2;
            const B_PACKING: u8 = WIDE_PACKING;

            unsafe fn pack_a(
                d: &mut [u32],
                a: Mat,
                i0: usize,
                live: usize,
                p0: usize,
                kp: usize,
                k: usize,
            ) {
                // SAFETY: the caller guarantees the kernel's features, AVX2 among them.
                unsafe { pack_widened::<{ $mr }>(d, a, i0, live, p0, kp, k) }
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
                // SAFETY: as above.
                unsafe { pack_pairs(d, bt, j0, live, p0, kp, k) }
            }
            unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut Tile) {
                // SAFETY: the caller guarantees the kernel's features.
                unsafe { $tile(ap, bp, kp, rows, tile) }
            }
            unsafe fn kernel_into(
                ap: &[u32],
                bp: &[u32],
                kp: usize,
                c: *mut f32,
                ldc: usize,
                first: bool,
            ) {
                // SAFETY: the caller guarantees the kernel's features.
                unsafe { $tile_into(ap, bp, kp, c, ldc, first) }
            }
        }
    };
}

widening_micro!(Fma512, MR512, kernel512, kernel512_into);
widening_micro!(Fma256, MR256, kernel256, kernel256_into);

/// The accumulators of the first `R` rows over `kp` pairs: per pair, `b`'s 32 columns widened
/// (even values by a shift, odd ones by a mask), then per row the even and the odd product.
#[inline(always)]
unsafe fn dots512<const R: usize>(ap: &[u32], bp: &[u32], kp: usize) -> [__m512; 2 * MR512] {
    unsafe {
        let mut c = [_mm512_setzero_ps(); 2 * MR512];
        let upper = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        for p in 0..kp {
            let bptr = bp.as_ptr().add(p * NR);
            let w0 = _mm512_loadu_si512(bptr as *const _);
            let w1 = _mm512_loadu_si512(bptr.add(16) as *const _);
            let (e0, e1) = (_mm512_slli_epi32(w0, 16), _mm512_slli_epi32(w1, 16));
            let (e0, e1) = (_mm512_castsi512_ps(e0), _mm512_castsi512_ps(e1));
            let (o0, o1) = (_mm512_and_si512(w0, upper), _mm512_and_si512(w1, upper));
            let (o0, o1) = (_mm512_castsi512_ps(o0), _mm512_castsi512_ps(o1));
            let arow = ap.as_ptr().add(p * MR512 * 2) as *const f32;
            for r in 0..R {
                let (ae, ao) =
                    (_mm512_set1_ps(*arow.add(2 * r)), _mm512_set1_ps(*arow.add(2 * r + 1)));
                c[2 * r] = _mm512_fmadd_ps(ae, e0, c[2 * r]);
                c[2 * r + 1] = _mm512_fmadd_ps(ae, e1, c[2 * r + 1]);
                c[2 * r] = _mm512_fmadd_ps(ao, o0, c[2 * r]);
                c[2 * r + 1] = _mm512_fmadd_ps(ao, o1, c[2 * r + 1]);
            }
        }
        c
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn kernel512(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut Tile) {
    unsafe {
        let c = match rows {
            1 => dots512::<1>(ap, bp, kp),
            2 => dots512::<2>(ap, bp, kp),
            3 => dots512::<3>(ap, bp, kp),
            4 => dots512::<4>(ap, bp, kp),
            5 => dots512::<5>(ap, bp, kp),
            6 => dots512::<6>(ap, bp, kp),
            7 => dots512::<7>(ap, bp, kp),
            8 => dots512::<8>(ap, bp, kp),
            9 => dots512::<9>(ap, bp, kp),
            10 => dots512::<10>(ap, bp, kp),
            11 => dots512::<11>(ap, bp, kp),
            _ => dots512::<MR512>(ap, bp, kp),
        };
        for r in 0..rows.min(MR512) {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), c[2 * r]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), c[2 * r + 1]);
        }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn kernel512_into(ap: &[u32], bp: &[u32], kp: usize, c: *mut f32, ldc: usize, first: bool) {
    unsafe {
        let acc = dots512::<MR512>(ap, bp, kp);
        for r in 0..MR512 {
            for h in 0..2 {
                let o = c.add(r * ldc + 16 * h);
                let v = acc[2 * r + h];
                let v = if first { v } else { _mm512_add_ps(_mm512_loadu_ps(o), v) };
                _mm512_storeu_ps(o, v);
            }
        }
    }
}

/// [`dots512`] on AVX2 for columns `16 · half ..` of the panel: per pair the even values of 16
/// columns widened and multiplied into every row, then the odd ones (16 ymm registers hold 8
/// accumulators, 2 widened vectors, a mask and a broadcast).
#[inline(always)]
unsafe fn dots256<const R: usize>(
    ap: &[u32],
    bp: &[u32],
    kp: usize,
    half: usize,
) -> [__m256; 2 * MR256] {
    unsafe {
        let mut c = [_mm256_setzero_ps(); 2 * MR256];
        let upper = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        for p in 0..kp {
            let bptr = bp.as_ptr().add(p * NR + 16 * half);
            let w0 = _mm256_loadu_si256(bptr as *const _);
            let w1 = _mm256_loadu_si256(bptr.add(8) as *const _);
            let arow = ap.as_ptr().add(p * MR256 * 2) as *const f32;
            let e0 = _mm256_castsi256_ps(_mm256_slli_epi32(w0, 16));
            let e1 = _mm256_castsi256_ps(_mm256_slli_epi32(w1, 16));
            for r in 0..R {
                let ae = _mm256_set1_ps(*arow.add(2 * r));
                c[2 * r] = _mm256_fmadd_ps(ae, e0, c[2 * r]);
                c[2 * r + 1] = _mm256_fmadd_ps(ae, e1, c[2 * r + 1]);
            }
            let o0 = _mm256_castsi256_ps(_mm256_and_si256(w0, upper));
            let o1 = _mm256_castsi256_ps(_mm256_and_si256(w1, upper));
            for r in 0..R {
                let ao = _mm256_set1_ps(*arow.add(2 * r + 1));
                c[2 * r] = _mm256_fmadd_ps(ao, o0, c[2 * r]);
                c[2 * r + 1] = _mm256_fmadd_ps(ao, o1, c[2 * r + 1]);
            }
        }
        c
    }
}

/// Pairs of `b` ahead that [`row256`] asks the memory for (4 KB: 2–16 KB measured, 4 best).
const AHEAD: usize = 32;

/// One row of `a` (a decode step's) against all 32 columns of the panel in one pass: per pair
/// the four vectors of `b` widened and multiplied in (four chains of sums instead of
/// [`dots256`]'s two halves, each half a pass over the panel), and the panel's lines `AHEAD`
/// pairs on asked for. Each element's sum takes [`dots256`]'s steps in its order (even then
/// odd, pair after pair), so the bits are the same. At one row `b` streams from memory and
/// the FMAs wait on little else: the second pass, from cache, left the memory idle, and the
/// out-of-order window looks only about 1.5 KB ahead (figures in docs/decoding.md).
#[inline(always)]
unsafe fn row256(ap: &[u32], bp: &[u32], kp: usize) -> [__m256; 4] {
    unsafe {
        let mut c = [_mm256_setzero_ps(); 4];
        let upper = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        let arow = ap.as_ptr() as *const f32;
        for p in 0..kp {
            let bptr = bp.as_ptr().add(p * NR);
            // A hint only: it never faults, past the panel's end included.
            let next = bptr.wrapping_add(AHEAD * NR) as *const i8;
            _mm_prefetch(next, _MM_HINT_T0);
            _mm_prefetch(next.wrapping_add(64), _MM_HINT_T0);
            let w = [0, 8, 16, 24].map(|o| _mm256_loadu_si256(bptr.add(o) as *const _));
            let ae = _mm256_set1_ps(*arow.add(p * MR256 * 2));
            let ao = _mm256_set1_ps(*arow.add(p * MR256 * 2 + 1));
            for (ch, &wv) in c.iter_mut().zip(&w) {
                *ch = _mm256_fmadd_ps(ae, _mm256_castsi256_ps(_mm256_slli_epi32(wv, 16)), *ch);
            }
            for (ch, &wv) in c.iter_mut().zip(&w) {
                *ch = _mm256_fmadd_ps(ao, _mm256_castsi256_ps(_mm256_and_si256(wv, upper)), *ch);
            }
        }
        c
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel256(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut Tile) {
    unsafe {
        if rows == 1 {
            for (h, v) in row256(ap, bp, kp).into_iter().enumerate() {
                _mm256_storeu_ps(tile.as_mut_ptr().add(8 * h), v);
            }
            return;
        }
        for half in 0..2 {
            let c = match rows {
                2 => dots256::<2>(ap, bp, kp, half),
                3 => dots256::<3>(ap, bp, kp, half),
                _ => dots256::<MR256>(ap, bp, kp, half),
            };
            for r in 0..rows.min(MR256) {
                let o = tile.as_mut_ptr().add(r * NR + 16 * half);
                _mm256_storeu_ps(o, c[2 * r]);
                _mm256_storeu_ps(o.add(8), c[2 * r + 1]);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn kernel256_into(ap: &[u32], bp: &[u32], kp: usize, c: *mut f32, ldc: usize, first: bool) {
    unsafe {
        for half in 0..2 {
            let acc = dots256::<MR256>(ap, bp, kp, half);
            for r in 0..MR256 {
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
