//! The bf16 product on AVX-512 BF16 (`vdpbf16ps`): a 12 × 32 micro-kernel over packed,
//! VNNI-interleaved panels, every k block of `b` packed before one fork-join over the output.
//! Its packing (`pub(super)`) also feeds the AMX version, and its `b` panels are the ones
//! pinned weights keep.

use super::pack::pack;
use super::pin::pinned_panels;
use super::{Blocking, Mat, Par};
use crate::kernels::parallel::{self, SendPtr};
use std::arch::x86_64::*;

thread_local! {
    static PANELS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Packed rows of `a` (a task's, or a product's whole `a` for column runs), grown only:
    /// a decode step's 49 products each zeroed a fresh one, 1.5 % of a bf16 decode step.
    static A_PANELS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// This thread's [`A_PANELS`] buffer with at least `len` values. The packing writes every pair
/// a kernel reads, so what a longer product left beyond is never read.
fn a_panels(len: usize) -> Vec<u32> {
    let mut buf = A_PANELS.take();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    buf
}

/// Gives [`a_panels`]' buffer back to this thread, unless it grew past 8 MiB (a whole `a`
/// packed for column runs, e.g. the LM head's weight gradient if the tuner chose those: 41 MB).
fn put_a_panels(buf: Vec<u32>) {
    if buf.len() * 4 <= 8 << 20 {
        A_PANELS.set(buf);
    }
}

/// Rows and columns of the micro-kernel's tile: 12 × 32 fp32 accumulators (24 zmm).
const MR: usize = 12;
pub(super) const NR: usize = 32;
/// k (in pairs) per packed block, and the rows of the output one task owns.
pub(super) const KP: usize = 128;
const MC: usize = 4 * MR;

/// The accumulators `Σ_p a_p ⊗ b_p` over `kp` packed pairs for the first `R` rows of an
/// `MR`-row packed `a` (fewer rows than a tile, a decode step's, issue fewer products; each
/// row's sums are the same whatever `R`).
#[inline(always)]
unsafe fn dots<const R: usize>(ap: &[u32], bp: &[u32], kp: usize) -> [__m512; 2 * MR] {
    unsafe {
        let mut c = [_mm512_setzero_ps(); 2 * MR];
        for p in 0..kp {
            let bptr = bp.as_ptr().add(p * NR);
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
unsafe fn kernel(ap: &[u32], bp: &[u32], kp: usize, rows: usize, tile: &mut [f32; MR * NR]) {
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

/// # Safety
/// The CPU must have AVX-512F and AVX-512 BF16.
///
/// The micro-kernel's own rate on one thread, FLOP/s: `reps` runs over one `a` and one `b`
/// panel of `KP` pairs that stay in L1 (no packing, no memory traffic, no edges).
pub unsafe fn kernel_rate(reps: usize) -> f64 {
    let (ap, bp) = (vec![0x3F80_3F80u32; MR * KP], vec![0x3C00_3C00u32; NR * KP]);
    let mut tile = [0.0f32; MR * NR];
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        // SAFETY: the caller guarantees the CPU features.
        unsafe { kernel_into(&ap, &bp, KP, tile.as_mut_ptr(), NR, false) };
    }
    std::hint::black_box(&tile);
    (2 * MR * NR * 2 * KP * reps) as f64 / t0.elapsed().as_secs_f64()
}

/// One MR × NR tile of `c` (row stride `ldc`, `n` columns) at rows r0.. (`rows` of them) and
/// panel `jb`, from packed `ak` and `bk` (`kp` pairs; `first`: assign, else add): whole tiles
/// straight into c, edge tiles through `tile`.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 BF16; the tile's rows and columns of `c` are valid for
/// writes, and no other task writes them during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn write_tile(
    cp: SendPtr,
    ldc: usize,
    n: usize,
    ak: &[u32],
    bk: &[u32],
    kp: usize,
    first: bool,
    r0: usize,
    rows: usize,
    jb: usize,
    tile: &mut [f32; MR * NR],
) {
    let (j0, nr) = (jb * NR, (n - jb * NR).min(NR));
    if nr == NR && rows >= MR {
        // SAFETY: the caller guarantees the CPU features; the tile lies inside c, in
        // rows and columns no other task writes.
        unsafe { kernel_into(ak, bk, kp, cp.get().add(r0 * ldc + j0), ldc, first) };
        return;
    }
    // SAFETY: the caller guarantees the CPU features.
    unsafe { kernel(ak, bk, kp, rows.min(MR), tile) };
    for r in 0..rows.min(MR) {
        let row = (r0 + r) * ldc + j0;
        for (j, &t) in tile[r * NR..r * NR + nr].iter().enumerate() {
            // SAFETY: as above.
            unsafe {
                let o = cp.get().add(row + j);
                *o = if first { t } else { *o + t };
            }
        }
    }
}

/// The blocking used where the tuner chose none: row blocks of `MC` rows, or, for few rows
/// against many column panels (a decode step, the LM head's logits) on the pool, `a` packed once
/// and runs of column panels to the tasks.
pub(super) fn rule(m: usize, n: usize, par: Par) -> Blocking {
    let panels = n.div_ceil(NR);
    if par == Par::Pool && panels > 1 && (m <= MC || panels >= 4 * m.div_ceil(MC)) {
        Blocking::Columns
    } else {
        Blocking::Rows(MC)
    }
}

/// The blockings the tuner times: row blocks of 2, 4 (the rule's) and 8 tiles, and column runs.
pub(super) const CANDIDATES: [Blocking; 4] =
    [Blocking::Rows(2 * MR), Blocking::Rows(MC), Blocking::Rows(8 * MR), Blocking::Columns];

/// # Safety
/// The CPU must have AVX-512F and AVX-512 BF16; `c`, `a` and `b` as in
/// [`super::matmul_bf16_ptr`].
///
/// `b`'s panels for every k block first (kept ones when `b` is pinned, else packed once for the
/// product in one parallel loop), then one fork-join over the output (`blocking`, else
/// [`rule`]'s): row blocks (`MC` rows unless the tuner chose others), each
/// task packing its rows of `a` per k block and running every column panel, its block of `c`
/// staying in cache through the k blocks; or, for few rows against many columns (a decode
/// step, the LM head's logits), `a` packed once and runs of column panels to the tasks, so `b`
/// streams once. Every tile adds its k blocks in order, so each element sums the same terms in
/// the same order whatever the split and the threads (before 2026-12-06 the k blocks were the
/// outer loop: two fork-joins per k block, and `c` left the cache between them).
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul(
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    acc: bool,
    par: Par,
    blocking: Option<Blocking>,
) {
    let kpairs = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    let pool = par == Par::Pool;
    let (columns, mc) = match blocking.unwrap_or_else(|| rule(m, n, par)) {
        Blocking::Columns => (pool && panels > 1, MC),
        Blocking::Rows(r) => (false, r.next_multiple_of(MR).max(MR)),
    };
    let stride = panels * NR * KP;
    let blocks = kpairs.div_ceil(KP).max(1);
    let kp_of = |blk: usize| kpairs.saturating_sub(blk * KP).min(KP);
    // SAFETY: the caller guarantees the CPU features.
    let (cached, owned) = unsafe { b_panels(b, k, n, pool) };
    let allb: &[u32] = cached.as_deref().map_or(&owned[..], |v| &v[..]);
    let cp = SendPtr(c);
    // Tile (r0.., jb) of k block `blk`: the first block assigns (unless accumulating).
    let run_tile = |ak: &[u32], blk: usize, r0, rows, jb, tile: &mut _| {
        let bk = &allb[blk * stride + jb * NR * KP..];
        let first = blk == 0 && !acc;
        // SAFETY: the caller guarantees the CPU features; each task's tiles lie inside c, in
        // rows and columns no other task writes.
        unsafe { write_tile(cp, ldc, n, ak, bk, kp_of(blk), first, r0, rows, jb, tile) }
    };
    if columns {
        let tiles = m.div_ceil(MR);
        let a_blk = tiles * MR * KP;
        let mut apk = a_panels(blocks * a_blk);
        let apk_all = blocks * a_blk;
        // SAFETY (the closure): the caller guarantees the CPU features.
        let pack_a = |(x, dst): (usize, &mut [u32])| unsafe {
            let (blk, ib) = (x / tiles, x % tiles);
            pack::<MR>(dst, a, ib * MR, (m - ib * MR).min(MR), blk * KP, kp_of(blk), k)
        };
        if m > MC {
            parallel::for_each_chunk_mut(&mut apk[..apk_all], MR * KP, |x, dst| pack_a((x, dst)));
        } else {
            apk[..apk_all].chunks_mut(MR * KP).enumerate().for_each(pack_a);
        }
        let per = panels.div_ceil(rayon::current_num_threads() * 4).max(1);
        parallel::for_each(panels.div_ceil(per), |task| {
            let (j, mut tile) = (task * per, [0.0f32; MR * NR]);
            let run = j..(j + per).min(panels);
            if m <= MC {
                // A decode step's rows: the task's panels of one k block lie side by side, so
                // `b` streams in long runs; its few rows of `c` stay in cache anyway.
                for blk in 0..blocks {
                    for jb in run.clone() {
                        for ib in 0..tiles {
                            let ak = &apk[blk * a_blk + ib * MR * KP..];
                            run_tile(ak, blk, ib * MR, m - ib * MR, jb, &mut tile);
                        }
                    }
                }
                return;
            }
            // Many rows (the LM head's logits): each tile of `c` through every k block while
            // it is in cache.
            for jb in run {
                for ib in 0..tiles {
                    for blk in 0..blocks {
                        let ak = &apk[blk * a_blk + ib * MR * KP..];
                        run_tile(ak, blk, ib * MR, m - ib * MR, jb, &mut tile);
                    }
                }
            }
        });
        put_a_panels(apk);
    } else {
        let block = |i0: usize| {
            let mc = (m - i0).min(mc);
            let mut apk = a_panels(mc.div_ceil(MR) * MR * KP);
            let mut tile = [0.0f32; MR * NR];
            for blk in 0..blocks {
                for (ib, ir) in (0..mc).step_by(MR).enumerate() {
                    let (dst, live) = (&mut apk[ib * MR * KP..], (mc - ir).min(MR));
                    // SAFETY: the caller guarantees the CPU features.
                    unsafe { pack::<MR>(dst, a, i0 + ir, live, blk * KP, kp_of(blk), k) };
                }
                for jb in 0..panels {
                    for (ib, ir) in (0..mc).step_by(MR).enumerate() {
                        run_tile(&apk[ib * MR * KP..], blk, i0 + ir, mc - ir, jb, &mut tile);
                    }
                }
            }
            put_a_panels(apk);
        };
        if pool {
            parallel::for_each(m.div_ceil(mc), |i| block(i * mc));
        } else {
            (0..m).step_by(mc).for_each(block);
        }
    }
    put_panels(owned);
}

/// `b`'s packed panels for a product (`[k, n]`, `NR`-column panels of `KP` pairs per k
/// block, every block's): kept ones when `b` lies in pinned weights (packed at the first call;
/// only products on the pool are looked up: those on the calling thread are attention's
/// per-head products, whose operands are activations, never weights); else `None` and this
/// thread's buffer, packed for this product in one loop over every block's panels and given
/// back with [`put_panels`]. The buffer is grown only (a shorter product after the LM head's
/// neither frees nor re-zeroes it; a kernel reads only what the packing wrote).
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and AVX-512 BF16.
pub(super) unsafe fn b_panels(
    b: Mat,
    k: usize,
    n: usize,
    pool: bool,
) -> (Option<std::sync::Arc<Vec<u32>>>, Vec<u32>) {
    // SAFETY: the caller guarantees the CPU features.
    let cached = unsafe { kept_b_panels(b, k, n, pool) };
    if cached.is_some() {
        return (cached, Vec::new());
    }
    let (kpairs, panels) = (k.div_ceil(2), n.div_ceil(NR));
    let all = kpairs.div_ceil(KP).max(1) * panels * NR * KP;
    let mut buf = PANELS.take();
    if buf.len() < all {
        buf.resize(all, 0);
    }
    let bt = Mat { data: b.data, rs: b.cs, cs: b.rs };
    // SAFETY (the closure): the caller guarantees the CPU features.
    let pack = |(x, dst): (usize, &mut [u32])| unsafe {
        let (blk, jb) = (x / panels, x % panels);
        pack_panel(dst, bt, n, jb, blk * KP, kpairs.saturating_sub(blk * KP).min(KP), k)
    };
    if pool {
        parallel::for_each_chunk_mut(&mut buf[..all], NR * KP, |x, dst| pack((x, dst)));
    } else {
        buf[..all].chunks_mut(NR * KP).enumerate().for_each(pack);
    }
    (None, buf)
}

/// [`b_panels`]' kept panels alone: every k block's, when `b` lies in pinned weights and the
/// product runs on the pool (packed at the first call); else None.
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and AVX-512 BF16.
pub(super) unsafe fn kept_b_panels(
    b: Mat,
    k: usize,
    n: usize,
    pool: bool,
) -> Option<std::sync::Arc<Vec<u32>>> {
    let (kpairs, stride) = (k.div_ceil(2), n.div_ceil(NR) * NR * KP);
    // b packs as the rows of its transpose.
    let bt = Mat { data: b.data, rs: b.cs, cs: b.rs };
    if !pool {
        return None;
    }
    pinned_panels(b, k, n, || {
        let mut all = vec![0u32; kpairs.div_ceil(KP).max(1) * stride];
        for (blk, dst) in all.chunks_mut(stride).enumerate() {
            // SAFETY: the caller guarantees the CPU features.
            unsafe { pack_b(dst, bt, n, blk * KP, (kpairs - blk * KP).min(KP), k, pool) };
        }
        all
    })
}

/// Gives [`b_panels`]'s buffer back to this thread (an empty one, from kept panels, is not
/// kept).
pub(super) fn put_panels(buf: Vec<u32>) {
    // Kept for the next product up to the size of gpt1's largest weight in bf16 (the tied
    // embedding, 62 MB); a larger one (a long batch's weight gradient, whose `b` is the
    // activations) is freed.
    if !buf.is_empty() && buf.len() * 4 <= KEEP_B_BYTES {
        PANELS.set(buf);
    }
}

/// The largest `b` packing a thread keeps between products.
pub(super) const KEEP_B_BYTES: usize = 64 << 20;

/// Column panel `jb` of pairs `p0..p0 + kp` of `bt` (`b`'s transpose, `n` rows) into `dst`
/// `[KP][NR]`; the pairs after `kp` up to the next multiple of 16 are zero (AMX's tiles read 16
/// pairs at a time).
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and AVX-512 BF16.
#[inline]
unsafe fn pack_panel(
    dst: &mut [u32],
    bt: Mat,
    n: usize,
    jb: usize,
    p0: usize,
    kp: usize,
    k: usize,
) {
    // SAFETY: the caller guarantees the CPU features.
    unsafe { pack::<NR>(dst, bt, jb * NR, (n - jb * NR).min(NR), p0, kp, k) };
    dst[kp * NR..kp.next_multiple_of(16).min(KP) * NR].fill(0);
}

/// Packs pairs `p0..p0 + kp` of `bt` (`b`'s transpose, `n` rows) into `NR`-column panels,
/// `dst` `[panels][KP][NR]`; the pairs after `kp` up to the next multiple of 16 are zero
/// (AMX's tiles read 16 pairs at a time).
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
pub(super) unsafe fn pack_b(
    dst: &mut [u32],
    bt: Mat,
    n: usize,
    p0: usize,
    kp: usize,
    k: usize,
    pool: bool,
) {
    // SAFETY (the closure): the caller guarantees the CPU features.
    let pack_panel =
        |(jb, dst): (usize, &mut [u32])| unsafe { pack_panel(dst, bt, n, jb, p0, kp, k) };
    let dst = &mut dst[..n.div_ceil(NR) * NR * KP];
    if pool {
        parallel::for_each_chunk_mut(dst, NR * KP, |x, d| pack_panel((x, d)));
    } else {
        dst.chunks_mut(NR * KP).enumerate().for_each(pack_panel);
    }
}
