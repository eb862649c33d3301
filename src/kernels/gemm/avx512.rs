//! The bf16 product on AVX-512 BF16 (`vdpbf16ps`): a 12 × 32 micro-kernel over packed,
//! VNNI-interleaved panels ([`Bf16Dot`], run by `driver.rs`). Its packing (`pack.rs`) also feeds
//! the AMX version, and its `b` panels are the ones pinned weights keep.

use super::driver::{MAX_MR, Micro, NR, Tile};
use super::pack::pack;
use super::{FEW_ROWS, Mat};
use std::arch::x86_64::*;

/// The AVX-512 BF16 micro-kernel: `a` and `b` packed as bf16 pairs, one `vdpbf16ps` per row
/// and 16 columns per pair.
pub(super) struct Bf16Dot;

impl Micro for Bf16Dot {
    const MR: usize = MR;
    const AW: usize = 1;
    const B_PACKING: u8 = 0;

    unsafe fn pack_a(
        dst: &mut [u32],
        a: Mat,
        i0: usize,
        live: usize,
        p0: usize,
        kp: usize,
        k: usize,
    ) {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { pack::<MR>(dst, a, i0, live, p0, kp, k) }
    }
    unsafe fn pack_b(
        dst: &mut [u32],
        bt: Mat,
        j0: usize,
        live: usize,
        p0: usize,
        kp: usize,
        k: usize,
    ) {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { pack::<NR>(dst, bt, j0, live, p0, kp, k) }
    }
    unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut Tile) {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { kernel(ap, bp, kp, rows, tile) }
    }
    unsafe fn kernel_into(ap: &[u32], bp: &[u32], kp: usize, c: *mut f32, ldc: usize, first: bool) {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { kernel_into(ap, bp, kp, c, ldc, first) }
    }
}

/// Rows of the micro-kernel's tile: 12 × 32 fp32 accumulators (24 zmm).
const MR: usize = 12;
/// Pair rows of `b` (128 bytes each) between the one a few-row product reads and the one it
/// asks to be fetched: 32 (4 KB) and 64 read a decoded token's bf16 panels 10–18 % faster
/// than none on an AMX Xeon, 8–16 less so, 160 less again (`examples/decode_probe.rs`).
const PREFETCH: usize = 32;

/// [`PREFETCH`] on Intel CPUs, 0 (no requests) elsewhere: on an AMD EPYC with AVX-512 BF16
/// the hardware prefetchers already keep the stream going, and the requests slowed a decoded
/// token's layers by 7 % (8 pair rows ahead as much as 32) and left the LM head level. Only
/// the speed depends on it, never a result.
pub(super) fn prefetch_ahead() -> usize {
    static AHEAD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AHEAD.get_or_init(|| if intel() { PREFETCH } else { 0 })
}

/// Whether the CPU's vendor string (cpuid leaf 0) is `GenuineIntel`.
fn intel() -> bool {
    let r = __cpuid(0);
    [r.ebx, r.edx, r.ecx].map(u32::to_le_bytes).concat() == b"GenuineIntel"
}
const _: () = assert!(MR <= MAX_MR);

/// The accumulators `Σ_p a_p ⊗ b_p` over `kp` packed pairs for the first `R` rows of an
/// `MR`-row packed `a` (fewer rows than a tile, a decode step's, issue fewer products; each
/// row's sums are the same whatever `R`).
#[inline(always)]
unsafe fn dots<const R: usize>(ap: &[u32], bp: &[u32], kp: usize) -> [__m512; 2 * MR] {
    unsafe {
        let mut c = [_mm512_setzero_ps(); 2 * MR];
        let ahead = if R <= FEW_ROWS { prefetch_ahead() } else { 0 };
        for p in 0..kp {
            let bptr = bp.as_ptr().add(p * NR);
            if ahead > 0 {
                // A decode step streams `b` from memory: one stream per core reads at 2/3 of
                // the memory's pace on an AMX Xeon; both lines of the pair row `ahead`
                // ahead asked for now keep more reads in flight (docs/decoding.md).
                let f = bptr.wrapping_add(ahead * NR) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(f);
                _mm_prefetch::<_MM_HINT_T0>(f.wrapping_add(64));
            }
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bptr as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bptr.add(16) as *const _));
            let arow = ap.as_ptr().add(p * MR);
            for r in 0..R {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*arow.add(r) as i32));
                c[2 * r] = _mm512_dpbf16_ps(c[2 * r], av, b0);
                c[2 * r + 1] = _mm512_dpbf16_ps(c[2 * r + 1], av, b1);
            }
        }
        c
    }
}

/// `tile[r][NR] = Σ_p a_p ⊗ b_p` over `kp` packed pairs for the first `rows` rows (edge
/// tiles).
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut Tile) {
    unsafe {
        let c = match rows {
            1 => dots::<1>(ap, bp, kp),
            2 => dots::<2>(ap, bp, kp),
            3 => dots::<3>(ap, bp, kp),
            4 => dots::<4>(ap, bp, kp),
            5 => dots::<5>(ap, bp, kp),
            6 => dots::<6>(ap, bp, kp),
            7 => dots::<7>(ap, bp, kp),
            8 => dots::<8>(ap, bp, kp),
            9 => dots::<9>(ap, bp, kp),
            10 => dots::<10>(ap, bp, kp),
            11 => dots::<11>(ap, bp, kp),
            _ => dots::<MR>(ap, bp, kp),
        };
        for r in 0..rows.min(MR) {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), c[2 * r]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), c[2 * r + 1]);
        }
    }
}

/// A whole `MR × NR` tile straight into `c` (row stride `ldc`): assigned when `first`,
/// else added (`c + t`, the edge path's sum); no scalar pass over a temporary tile.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel_into(ap: &[u32], bp: &[u32], kp: usize, c: *mut f32, ldc: usize, first: bool) {
    unsafe {
        let acc = dots::<MR>(ap, bp, kp);
        for r in 0..MR {
            let row = c.add(r * ldc);
            for h in 0..2 {
                let o = row.add(16 * h);
                let v = acc[2 * r + h];
                let v = if first { v } else { _mm512_add_ps(_mm512_loadu_ps(o), v) };
                _mm512_storeu_ps(o, v);
            }
        }
    }
}
