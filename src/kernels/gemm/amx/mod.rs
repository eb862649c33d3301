//! The bf16 product on Intel AMX (`tdpbf16ps`), a version of [`super`]'s kernel lab.
//!
//! One tile instruction multiplies a 16 × 32 bf16 tile of `a` by a 32 × 16 tile of `b` into a
//! 16 × 16 fp32 tile: 8,192 multiply-adds. The micro-kernel keeps a 32 × 32 block of `c` in
//! four tile registers (tmm0–3) through the whole of k, loads two tiles of `a` (tmm4–5, 32 rows ×
//! 16 pairs) and two of `b` (tmm6–7, 16 pairs × 32 columns) per step of 16 pairs, and issues four
//! `tdpbf16ps`.
//! `b` is packed as for AVX-512 BF16 (`[panels][KP][32]` pairs, VNNI: a tile of `b` is 16 rows
//! of 64 bytes, 128 bytes apart, so pinned panels serve both versions); `a` is packed per block of
//! 32 rows as `[32][KP]` pairs (a tile's row is 16 consecutive pairs): straight from its rows
//! where they are contiguous (32 floats converted are a tile row), else by the AVX-512 packing
//! of 16 × 16 blocks and a transpose. Every packed operand lies on cache lines (`panels.rs`).
//!
//! The instructions are issued by inline assembly (stable Rust has no AMX intrinsics) after the
//! OS grants the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`). Whether AMX
//! is used is decided once per process ([`status`]): the CPU must report AMX-BF16 and AMX-TILE,
//! the OS must grant the permission, and a self-check product must match the definition;
//! otherwise the AVX-512 BF16 version runs, with the reason in the precision line of the log.
//!
//! Everything but the assembly is also run by [`EmulatedTiles`], which executes the same four tile
//! operations in scalar code on the same packed memory: the tests check packing, scheduling,
//! edges and accumulation on any CPU with AVX-512 BF16; the assembly itself is checked by
//! [`status`]'s self-check where AMX exists.

use super::avx512::Bf16Dot;
use super::driver::{KP, NR, b_panels, put_panels};
use super::pack::{pack, transpose16};
use super::panels::{Blocks, Panels, no_blocks, no_panels};
use super::{Blocking, Mat, Par, last_index, reference};
use crate::kernels::parallel::{self, SendPtr};
use std::arch::x86_64::*;

mod hardware;
pub(super) use hardware::{Hardware, kernel_rate};
pub use hardware::{has_amx, status};

/// Rows of `c` one micro-kernel call computes (two tiles of 16).
pub(super) const MA: usize = 32;

/// One 32 × 32 block of `c` for [`TileOps::run`]: its rows of `a` for every k block
/// (`[32][KP]` pairs per block, `MA·KP` pairs apart), its column panel of `b` for the first k
/// block (the others `Steps::b_blk_bytes` apart), where the block lies in `c` (row stride
/// `ldc_bytes`) and whether it starts from `c` (`load` 1) or from zero (0). Laid out for the
/// assembly, which reads the fields at offsets 0, 8, 16, 24 and 32.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Job {
    pub a: *const u32,
    pub b: *const u32,
    pub c: *mut f32,
    pub ldc_bytes: usize,
    pub load: usize,
}

/// The k blocks every job of a [`TileOps::run`] goes through: `whole` blocks of `KP / 16` steps
/// of 16 pairs, then one of `last` steps; `b`'s blocks `b_blk_bytes` apart. Read by the
/// assembly at offsets 0, 8 and 16.
#[repr(C)]
pub(super) struct Steps {
    pub whole: usize,
    pub b_blk_bytes: usize,
    pub last: usize,
}

/// The tile operations of 32 × 32 blocks of `c` through the whole of k.
pub(super) trait TileOps: Sync {
    /// For each job in order: `c[32][32]` = (`load` ? `c` : 0) + Σ over the k blocks of their
    /// steps of 16 pairs of `a` times `b`, the accumulators held in the tiles from the first
    /// step to the last. The tiles are configured once for all the jobs (issue 23: the first
    /// version configured them per block of `c` and per k block).
    ///
    /// # Safety
    /// Each job's operands valid for those steps as laid out in [`Job`]; its `c` valid for 32
    /// rows of 32 and written by no one else during the call.
    unsafe fn run(&self, jobs: &[Job], steps: &Steps);
}

/// The tile operations in scalar code, after the SDM's definition of `tdpbf16ps`: for each
/// element and each instruction (16 pairs), the even and the odd products are summed separately
/// from zero in fp32 (fused multiply-adds; bf16 products are exact in fp32), then their sum is
/// added to the element; denormal inputs and results are flushed to zero. Only the tests run it
/// (on CPUs without AMX).
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct EmulatedTiles;

impl TileOps for EmulatedTiles {
    unsafe fn run(&self, jobs: &[Job], steps: &Steps) {
        let ftz = |v: f32| if v.is_subnormal() { 0.0f32.copysign(v) } else { v };
        let f = |h: u32| ftz(f32::from_bits(h << 16));
        let (blocks, b_blk) = (steps.whole + 1, steps.b_blk_bytes / 4);
        for job in jobs {
            // The hardware would load them ~3x slower across cache lines ([`Panels`]): every
            // test of the driver checks where its packed operands lie.
            let lines = |p: *const u32| {
                (p as usize).is_multiple_of(64) && steps.b_blk_bytes.is_multiple_of(64)
            };
            assert!(lines(job.a) && lines(job.b), "a tile operand off a cache line");
            let ldc = job.ldc_bytes / 4;
            for i in 0..MA {
                for j in 0..NR {
                    // SAFETY: the caller's contract.
                    unsafe {
                        let o = job.c.add(i * ldc + j);
                        let mut acc = if job.load != 0 { ftz(*o) } else { 0.0 };
                        for blk in 0..blocks {
                            let (a, b) = (job.a.add(blk * MA * KP), job.b.add(blk * b_blk));
                            let n = if blk + 1 == blocks { steps.last } else { KP / 16 };
                            for st in 0..n {
                                let (mut even, mut odd) = (0.0f32, 0.0f32);
                                for q in 16 * st..16 * st + 16 {
                                    let (x, y) = (*a.add(i * KP + q), *b.add(q * NR + j));
                                    even = ftz(f(x & 0xFFFF).mul_add(f(y & 0xFFFF), even));
                                    odd = ftz(f(x >> 16).mul_add(f(y >> 16), odd));
                                }
                                acc = ftz(acc + (even + odd));
                            }
                        }
                        *o = acc;
                    }
                }
            }
        }
    }
}

/// The AMX driver with `ops` against the definition on shapes with edges in every direction,
/// a partial last step, two k blocks and accumulation.
pub(super) fn self_check(ops: &impl TileOps) -> Result<(), String> {
    for &(m, n, k, acc) in &[(37, 45, 301, false), (64, 64, 256, true), (1, 33, 40, false)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 201) as f32 - 100.0) / 97.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729 % 199) as f32 - 99.0) / 89.0).collect();
        let c0: Vec<f32> = (0..m * n).map(|i| (i % 13) as f32 / 7.0).collect();
        let (am, bm) = (Mat::rows(&a, k), Mat::rows(&b, n));
        let (mut got, mut want) = (c0.clone(), c0);
        // SAFETY: the checks passed so far (AVX-512 BF16; for the hardware, AMX and the
        // permission); the buffers hold the shapes.
        unsafe { matmul(ops, got.as_mut_ptr(), n, am, bm, m, n, k, acc, Par::Single, None) };
        reference(&mut want, n, am, bm, m, n, k, acc);
        let tol = 1e-4 * (k as f32).sqrt();
        let bad = |g: f32, w: f32| (g - w).abs().is_nan() || (g - w).abs() > tol;
        if let Some((i, (g, w))) =
            got.iter().zip(&want).enumerate().find(|(_, (g, w))| bad(**g, **w))
        {
            return Err(format!(
                "the AMX self-check failed ({m}×{n}×{k}, element {i}: {g} against {w})"
            ));
        }
    }
    Ok(())
}

/// Packs rows `i0..i0 + live` (zeros beyond, up to [`MA`]) and pairs `p0..p0 + kp` of `a` as
/// `[MA][KP]` pairs, zeros after `kp` up to the next multiple of 16.
///
/// # Safety
/// The CPU has AVX-512F, AVX-512BW and AVX-512 BF16; `a` holds the rows and pairs read.
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn pack_a(dst: &mut [u32], a: Mat, i0: usize, live: usize, p0: usize, kp: usize, k: usize) {
    if a.cs == 1 {
        // A row's floats are contiguous, and 32 of them converted by one `vcvtne2ps2bf16` are
        // already 16 pairs in a tile row's order: no transpose (12 % of a bf16 training step
        // went to the transposing path below, which packs 16 rows into columns and back).
        for r in 0..MA {
            for q0 in (0..kp).step_by(16) {
                let k0 = 2 * (p0 + q0);
                let n = if r < live { (k - k0).min(2 * (kp - q0)).min(32) } else { 0 };
                let m0 = if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
                let m1 = if n >= 32 { 0xFFFF } else { (1u16 << n.saturating_sub(16)) - 1 };
                let x = a.data.as_ptr().wrapping_add((i0 + r) * a.rs + k0);
                // SAFETY: the features as above; the masks load only the floats of live rows
                // and valid pairs, which the caller's contract puts inside `a`; the row of
                // `dst` holds KP >= q0 + 16 pairs.
                unsafe {
                    let lo = _mm512_maskz_loadu_ps(m0, x);
                    let hi = _mm512_maskz_loadu_ps(m1, x.wrapping_add(16));
                    let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_storeu_si512(dst[r * KP + q0..][..16].as_mut_ptr() as *mut _, v);
                }
            }
        }
        return;
    }
    let mut blk = [0u32; 256];
    for g in 0..MA / 16 {
        let rows = live.saturating_sub(16 * g).min(16);
        for q0 in (0..kp).step_by(16) {
            let nq = (kp - q0).min(16);
            blk.fill(0);
            if rows > 0 {
                // `[nq][16]`: pair q of rows 16g.. (zeros for the rows after `rows`).
                // SAFETY: the caller's contract.
                unsafe { pack::<16>(&mut blk, a, i0 + 16 * g, rows, p0 + q0, nq, k) };
            }
            // SAFETY: the features as above; `blk` holds 16 rows of 16.
            unsafe {
                let mut r = [_mm512_setzero_si512(); 16];
                for (q, rq) in r.iter_mut().enumerate() {
                    *rq = _mm512_loadu_si512(blk[16 * q..].as_ptr() as *const _);
                }
                transpose16(&mut r);
                for (i, ri) in r.iter().enumerate() {
                    let row = &mut dst[(16 * g + i) * KP + q0..][..16];
                    _mm512_storeu_si512(row.as_mut_ptr() as *mut _, *ri);
                }
            }
        }
    }
}

thread_local! {
    /// One task's rows of `a`, every k block (grown only, per worker thread).
    static TASK_A: std::cell::Cell<Option<Panels>> = const { std::cell::Cell::new(None) };
    /// One run's edge blocks of `c`, [`JOBS`] slots of 32 × 32 (per worker thread).
    static TASK_EDGES: std::cell::Cell<Option<Blocks>> = const { std::cell::Cell::new(None) };
}

/// Blocks of `c` per [`TileOps::run`]: the tiles are configured once per run.
const JOBS: usize = 64;

/// Blocks of 32 rows per task where the tuner chose none.
const RULE_TILES: usize = 2;

/// The blocking used where the tuner chose none.
pub(super) const RULE: Blocking = Blocking::Rows(RULE_TILES * MA);

/// The blockings the tuner times: 32, 64 (the rule's) and 128 rows per task.
pub(super) const CANDIDATES: [Blocking; 3] = [Blocking::Rows(MA), RULE, Blocking::Rows(4 * MA)];

/// `c[m, n] (+)= bf16(a) · bf16(b)` through `ops`, `c` with row stride `ldc`.
///
/// Designed from the AMX chapter of Intel's optimization manual and oneDNN's brgemm: `b`'s
/// panels for every k block (kept ones when `b` is pinned, else packed once for the product),
/// then tasks over 64 rows (or the tuner's `blocking`) × a run of column panels. A task packs
/// its rows of `a` for every k block, then hands its 32 × 32 blocks of `c` to `ops` [`JOBS`] at
/// a time: the tiles are configured once per run, and each block starts its accumulators
/// (loaded or zeroed), runs every k block's steps with them held in the tiles, and stores them
/// once. Tasks split the output, never the reduction: the same result for any thread count,
/// and the same as one block per k block would give (a stored and reloaded fp32 value is
/// unchanged).
///
/// # Safety
/// The CPU has AVX-512 BF16 (and AMX for [`Hardware`]); `c`, `a` and `b` as in
/// [`super::matmul_bf16_ptr`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    ops: &impl TileOps,
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
    debug_assert!(b.data.len() >= last_index(k, n, b.rs, b.cs));
    let kpairs = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    let tiles = m.div_ceil(MA);
    let pool = par == Par::Pool;
    let stride = panels * NR * KP;
    let blocks = kpairs.div_ceil(KP).max(1);
    let kp_of = |blk: usize| kpairs.saturating_sub(blk * KP).min(KP);
    // SAFETY: the caller guarantees the CPU features.
    let (cached, owned) = unsafe { b_panels::<Bf16Dot>(b, k, n, pool) };
    let allb: &[u32] = cached.as_deref().map_or(&owned[..], |v| &v[..]);
    let cp = SendPtr(c);
    // Tasks: `gt` blocks of 32 rows (two unless the tuner chose otherwise) × `per` column
    // panels, at least 4 tasks per thread.
    let gt = match blocking {
        Some(Blocking::Rows(r)) => r.div_ceil(MA).max(1),
        _ => RULE_TILES,
    };
    let groups = tiles.div_ceil(gt);
    let want = if pool { 4 * rayon::current_num_threads() } else { 1 };
    let per = panels.div_ceil(want.div_ceil(groups)).max(1);
    let chunks = panels.div_ceil(per);
    let task = |x: usize| {
        let (g, ch) = (x / chunks, x % chunks);
        let rows_of = |t: usize| (m - t * MA).min(MA);
        let ts = gt * g..(gt * g + gt).min(tiles);
        let mut ak = TASK_A.take().unwrap_or_else(no_panels);
        if ak.len() < gt * blocks * MA * KP {
            ak.resize(gt * blocks * MA * KP, 0);
        }
        for t in ts.clone() {
            for blk in 0..blocks {
                let dst = &mut ak[((t - gt * g) * blocks + blk) * MA * KP..][..MA * KP];
                // SAFETY: the caller guarantees the CPU features.
                unsafe { pack_a(dst, a, t * MA, rows_of(t), blk * KP, kp_of(blk), k) };
            }
        }
        // The task's blocks of `c` go to `ops` `JOBS` at a time, each run configuring the tiles
        // once; edge blocks (fewer rows or columns) through a 32 × 32 slot of `edges` each,
        // copied back after the run.
        let steps = Steps {
            whole: blocks - 1,
            b_blk_bytes: 4 * stride,
            last: kp_of(blocks - 1).div_ceil(16),
        };
        let mut edges = TASK_EDGES.take().unwrap_or_else(no_blocks);
        if edges.len() < JOBS * MA * NR {
            edges.resize(JOBS * MA * NR, 0.0);
        }
        let eb = edges.as_mut_ptr();
        let mut jobs: Vec<Job> = Vec::with_capacity(JOBS);
        // (slot, the block's first element in c, rows, columns) of each edge job in `jobs`.
        let mut backs: Vec<(usize, usize, usize, usize)> = Vec::new();
        let flush = |jobs: &mut Vec<Job>, backs: &mut Vec<(usize, usize, usize, usize)>| {
            // SAFETY: each job's block of c (or its slot of `edges`) is this task's alone and
            // holds 32 × 32; the packed operands hold every k block.
            unsafe { ops.run(jobs, &steps) };
            for &(slot, at, rows, cols) in backs.iter() {
                for r in 0..rows {
                    // SAFETY: the slot holds 32 × 32; the edge block's rows and columns lie
                    // inside c and are this task's alone.
                    unsafe {
                        let src = std::slice::from_raw_parts(eb.add(slot * MA * NR + r * NR), cols);
                        std::slice::from_raw_parts_mut(cp.get().add(at + r * ldc), cols)
                            .copy_from_slice(src);
                    }
                }
            }
            jobs.clear();
            backs.clear();
        };
        for jb in ch * per..((ch + 1) * per).min(panels) {
            let (j0, cols) = (jb * NR, (n - jb * NR).min(NR));
            for t in ts.clone() {
                let (r0, rows) = (t * MA, rows_of(t));
                let a = ak[(t - gt * g) * blocks * MA * KP..].as_ptr();
                let b = allb[jb * NR * KP..].as_ptr();
                let (at, load) = (r0 * ldc + j0, usize::from(acc));
                if rows == MA && cols == NR {
                    // SAFETY: a whole block lies inside c.
                    let c = unsafe { cp.get().add(at) };
                    jobs.push(Job { a, b, c, ldc_bytes: 4 * ldc, load });
                } else {
                    let slot = backs.len();
                    // SAFETY: slot < JOBS (the jobs are run at JOBS), so it lies in `edges`;
                    // the edge block's rows and columns lie inside c.
                    let c = unsafe {
                        let e = std::slice::from_raw_parts_mut(eb.add(slot * MA * NR), MA * NR);
                        e.fill(0.0);
                        if acc {
                            for r in 0..rows {
                                let src =
                                    std::slice::from_raw_parts(cp.get().add(at + r * ldc), cols);
                                e[r * NR..r * NR + cols].copy_from_slice(src);
                            }
                        }
                        e.as_mut_ptr()
                    };
                    jobs.push(Job { a, b, c, ldc_bytes: 4 * NR, load });
                    backs.push((slot, at, rows, cols));
                }
                if jobs.len() == JOBS {
                    flush(&mut jobs, &mut backs);
                }
            }
        }
        if !jobs.is_empty() {
            flush(&mut jobs, &mut backs);
        }
        TASK_EDGES.set(Some(edges));
        TASK_A.set(Some(ak));
    };
    if pool {
        parallel::for_each(groups * chunks, task);
    } else {
        (0..groups * chunks).for_each(task);
    }
    put_panels(owned);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::rand_vec;

    /// The AMX driver (packing, tasks, edges, partial steps, k blocks, accumulation) with the
    /// tile operations emulated, against the definition: runs on any CPU with AVX-512 BF16.
    #[test]
    fn the_amx_driver_matches_the_definition_with_emulated_tiles() {
        if !crate::kernels::gemm::avx512_bf16() {
            eprintln!("skipped: no AVX-512 BF16 (the AMX packing uses it)");
            return;
        }
        assert_eq!(self_check(&EmulatedTiles), Ok(()));
        for &(m, n, k) in &[(1, 1, 1), (13, 33, 5), (97, 257, 258), (61, 300, 259), (40, 64, 600)] {
            for (ta, tb, acc) in [(false, false, false), (true, false, true), (false, true, false)]
            {
                let (a, b) = (rand_vec(m * k, 1), rand_vec(k * n, 2));
                let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
                let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
                let c0 = rand_vec(m * n, 3);
                let (mut got, mut want) = (c0.clone(), c0);
                // SAFETY: AVX-512 BF16 checked; the buffers hold the shapes.
                unsafe {
                    matmul(
                        &EmulatedTiles,
                        got.as_mut_ptr(),
                        n,
                        am,
                        bm,
                        m,
                        n,
                        k,
                        acc,
                        Par::Pool,
                        None,
                    )
                };
                reference(&mut want, n, am, bm, m, n, k, acc);
                let tol = 1e-4 * (k as f32).sqrt();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() < tol, "{m}x{n}x{k} {ta} {tb} [{i}] {g} vs {w}");
                }
            }
        }
    }

    /// A task with more blocks of `c` than one run of the tiles takes (`JOBS`), edge blocks in
    /// every run (40 rows: the second block of 32 is an edge) and a column edge in the last: the
    /// definition, and the bits of the same product split into small tasks.
    #[test]
    fn the_amx_driver_runs_many_blocks_per_configuration() {
        if !crate::kernels::gemm::avx512_bf16() {
            return;
        }
        let (m, n, k) = (40, 70 * NR + 5, 40);
        assert!(2 * n.div_ceil(NR) > 2 * JOBS);
        let (a, b) = (rand_vec(m * k, 21), rand_vec(k * n, 22));
        let (am, bm) = (Mat::rows(&a, k), Mat::rows(&b, n));
        let c0 = rand_vec(m * n, 23);
        for acc in [false, true] {
            let run = |par| {
                let mut c = c0.clone();
                // SAFETY: AVX-512 BF16 checked; the buffers hold the shapes.
                unsafe {
                    matmul(&EmulatedTiles, c.as_mut_ptr(), n, am, bm, m, n, k, acc, par, None)
                };
                c
            };
            let (one, split) = (run(Par::Single), run(Par::Pool));
            let mut want = c0.clone();
            reference(&mut want, n, am, bm, m, n, k, acc);
            for (i, (g, w)) in one.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-4 * (k as f32).sqrt(), "acc {acc} [{i}] {g} vs {w}");
            }
            assert!(one.iter().zip(&split).all(|(x, y)| x.to_bits() == y.to_bits()), "acc {acc}");
        }
    }

    /// The tiles' order of sums written plainly over the whole of k: per element, the start
    /// value (c or 0), then per step of 16 pairs the even and the odd products summed apart
    /// from zero and their sum added (flushing denormals), the steps in order across k blocks.
    /// The driver with emulated tiles gives these bits exactly, whatever its blocking.
    #[test]
    fn the_amx_driver_sums_in_the_tiles_order() {
        if !crate::kernels::gemm::avx512_bf16() {
            return;
        }
        let ftz = |v: f32| if v.is_subnormal() { 0.0f32.copysign(v) } else { v };
        let bf = |x: f32| ftz(f32::from_bits((crate::kernels::gemm::to_bf16(x) as u32) << 16));
        for &(m, n, k, acc) in &[(70, 90, 520, false), (33, 40, 301, true), (5, 64, 1030, true)] {
            let (a, b) = (rand_vec(m * k, 11), rand_vec(k * n, 12));
            let c0 = rand_vec(m * n, 13);
            let mut got = c0.clone();
            let (am, bm) = (Mat::rows(&a, k), Mat::rows(&b, n));
            // SAFETY: AVX-512 BF16 checked; the buffers hold the shapes.
            unsafe {
                matmul(&EmulatedTiles, got.as_mut_ptr(), n, am, bm, m, n, k, acc, Par::Pool, None)
            };
            let x = |i: usize, p: usize| if p < k { bf(a[i * k + p]) } else { 0.0 };
            let y = |p: usize, j: usize| if p < k { bf(b[p * n + j]) } else { 0.0 };
            for i in 0..m {
                for j in 0..n {
                    let mut s = if acc { ftz(c0[i * n + j]) } else { 0.0 };
                    for st in 0..k.div_ceil(2).div_ceil(16) {
                        let (mut even, mut odd) = (0.0f32, 0.0f32);
                        for q in 16 * st..16 * st + 16 {
                            even = ftz(x(i, 2 * q).mul_add(y(2 * q, j), even));
                            odd = ftz(x(i, 2 * q + 1).mul_add(y(2 * q + 1, j), odd));
                        }
                        s = ftz(s + (even + odd));
                    }
                    let g = got[i * n + j];
                    assert_eq!(g.to_bits(), s.to_bits(), "{m}x{n}x{k} ({i}, {j}): {g} vs {s}");
                }
            }
        }
    }

    /// Pinned weights' kept panels and the decode path (few rows, one fork-join per product)
    /// give the unpinned results bitwise.
    #[test]
    fn the_amx_decode_path_with_pinned_panels_gives_the_same_bits() {
        if !crate::kernels::gemm::avx512_bf16() {
            return;
        }
        let (k, n) = (300, 97);
        let w = rand_vec(k * n, 8);
        for m in [1, 5, 32, 40] {
            let a = rand_vec(m * k, 9);
            let c0 = rand_vec(m * n, 10);
            let run = || {
                let mut c = c0.clone();
                let (am, bm) = (Mat::rows(&a, k), Mat::rows(&w, n));
                // SAFETY: AVX-512 BF16 checked; the buffers hold the shapes.
                unsafe {
                    matmul(
                        &EmulatedTiles,
                        c.as_mut_ptr(),
                        n,
                        am,
                        bm,
                        m,
                        n,
                        k,
                        true,
                        Par::Pool,
                        None,
                    )
                };
                c
            };
            let plain = run();
            let _pinned = crate::kernels::gemm::pin(&w);
            for got in [run(), run()] {
                assert!(plain.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()), "m {m}");
            }
        }
    }

    /// Any thread count and any blocking the tuner may choose: the same bits.
    #[test]
    fn the_amx_driver_does_not_depend_on_the_thread_count_or_the_blocking() {
        if !crate::kernels::gemm::avx512_bf16() {
            return;
        }
        let (m, n, k) = (150, 200, 300);
        let (a, b) = (rand_vec(m * k, 4), rand_vec(k * n, 5));
        let run = |threads, blocking| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut c = vec![0.0; m * n];
                let (am, bm) = (Mat::rows(&a, k), Mat::rows(&b, n));
                // SAFETY: AVX-512 BF16 checked; the buffers hold the shapes.
                unsafe {
                    let ops = &EmulatedTiles;
                    matmul(ops, c.as_mut_ptr(), n, am, bm, m, n, k, false, Par::Pool, blocking)
                };
                c
            })
        };
        let one = run(1, None);
        for t in [2, 3] {
            for blocking in std::iter::once(None).chain(CANDIDATES.map(Some)) {
                let got = run(t, blocking);
                let same = one.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{t} threads, {blocking:?}");
            }
        }
    }

    /// Where AMX exists, the hardware tiles give the emulated tiles' results: the SDM's order of
    /// sums, so equal but for the order inside the hardware's adders (counted and printed).
    #[test]
    fn amx_hardware_matches_the_emulated_tiles() {
        if status().is_err() {
            eprintln!("skipped: AMX not used here ({})", status().as_ref().unwrap_err());
            return;
        }
        let (m, n, k) = (70, 90, 520);
        let (a, b) = (rand_vec(m * k, 6), rand_vec(k * n, 7));
        let (am, bm) = (Mat::rows(&a, k), Mat::rows(&b, n));
        let (mut hw, mut em) = (vec![0.0; m * n], vec![0.0; m * n]);
        // SAFETY: AMX checked by `status`; the buffers hold the shapes.
        unsafe {
            matmul(&Hardware, hw.as_mut_ptr(), n, am, bm, m, n, k, false, Par::Pool, None);
            matmul(&EmulatedTiles, em.as_mut_ptr(), n, am, bm, m, n, k, false, Par::Pool, None);
        }
        for (i, (h, e)) in hw.iter().zip(&em).enumerate() {
            assert!((h - e).abs() <= 1e-5 * (k as f32).sqrt(), "[{i}] {h} vs {e}");
        }
        let differ = hw.iter().zip(&em).filter(|(h, e)| h.to_bits() != e.to_bits()).count();
        eprintln!("AMX against the emulated tiles: {differ} of {} elements differ in bits", m * n);
    }
}
