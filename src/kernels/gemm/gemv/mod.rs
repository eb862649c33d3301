//! Products of a few rows against a large matrix, `c[m, n] (+)= a[m, k] · b[k, n]`:
//! decoding's products, where every weight is read once per token and the memory, not the
//! arithmetic, is the limit, and the LSTM's recurrence (`[B, H] × W_hhᵀ` every step). The
//! `gemm` crate's small-`m` path streamed a gpt1 token's 464 MB at about half the read
//! bandwidth, and with a transposed `b` it packs all of `b` at every call (16 MB per LSTM step
//! at H = 1,024: 6.8 ms for an 8-row product that takes 0.2–0.6 ms here). Each task reads one
//! contiguous block of `b` exactly once, for all `m` rows of `a` together:
//! - `b` row-major (`x · W`, `m ≤ MAX_ROWS`): a block of `b`'s rows, one contiguous stretch,
//!   into partial sums of every column, added in block order at the end;
//! - `b` transposed (`x · Wteᵀ`, the tied LM head, `m ≤ MAX_ROWS_T`): a block of `b`'s stored
//!   rows, each output a dot product of two contiguous vectors in 16 lanes.
//!
//! Where the CPU has AVX-512F (`avx512.rs`), or else AVX2 and FMA (`avx2.rs`), the dot products
//! of 5 rows or more run register-blocked (8 rows × 2 stored rows of `b` per block of
//! registers; 3 × 2 with AVX2's 16 registers), and so do the partial sums of 1–4 rows (four of
//! `b`'s rows loaded once for every row's sums, held in registers through four fused steps),
//! with the same sums in the same order as the portable loops here. Each output element is one
//! fixed-order sum over `k` (lanes added in a fixed order), so results do not depend on the
//! thread count, on the blocks' widths, on the CPU's vector width, or on how many other rows
//! share the product. [`transpose`] makes the copy that turns a repeated `x · W` into dot
//! products (the LSTM's backward).

use super::{Mat, Par};
use crate::kernels::parallel;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// The register-blocked dot products this CPU runs, if any (AVX-512F first, else AVX2 + FMA).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dots {
    Avx512,
    Avx2,
}

/// `GPT1_GEMV=portable`: the portable loops run even where a register-blocked version would
/// (the same bits; to time the versions against each other).
fn portable() -> bool {
    static PORTABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PORTABLE.get_or_init(|| std::env::var("GPT1_GEMV").is_ok_and(|v| v == "portable"))
}

/// The version the few-row products run, for reports (`gpt1 bench kernels`).
pub fn version_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    match dots_version() {
        Some(Dots::Avx512) => return "AVX-512 register blocks",
        Some(Dots::Avx2) => return "AVX2 register blocks",
        None => {}
    }
    "portable"
}

#[cfg(target_arch = "x86_64")]
fn dots_version() -> Option<Dots> {
    if portable() {
        None
    } else if avx512::available() {
        Some(Dots::Avx512)
    } else if avx2::available() {
        Some(Dots::Avx2)
    } else {
        None
    }
}

/// The most rows of `a` a product with a row-major `b` may have to take this path: decoding's.
/// Beyond, the partial sums (`m × n` per block of `ROWS_K` rows) cost about what the `gemm`
/// crate's packing does (8 rows of `[m, 4096] × [4096, 1024]`: 0.6–1.2 ms either way, the
/// LSTM's backward as fast) and hold 2 MB per thread (docs/decoding.md).
pub const MAX_ROWS: usize = 4;
const _: () = assert!(MAX_ROWS <= 4, "avx512::rows_block takes at most 4 rows");

/// The most rows of `a` a product with a transposed `b` may have to take this path: up to 64,
/// reading `b` in place beats the `gemm` crate, which packs all of it (1.6–30x faster at
/// `[m, 1024] × [1024, 4096]ᵀ`).
pub const MAX_ROWS_T: usize = 64;

/// `GPT1_GEMV=off`: every product goes to the `gemm` crate (for comparisons).
fn off() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("GPT1_GEMV").is_ok_and(|v| v == "off"))
}

/// Whether the weight products (row-major `b`, the linear layers, or transposed, the LM head)
/// of `m` rows run here.
pub(super) fn serves(m: usize) -> bool {
    !off() && m <= MAX_ROWS
}

/// Whether `c[m, n] = a[m, k] · b[k, n]` goes through [`gemv`]: few rows, enough weights to be
/// worth threads, and `b` contiguous along one of its axes; `GPT1_GEMV=off` sends every
/// product to the `gemm` crate instead (to compare, or to rule this path out).
pub(super) fn applies(m: usize, n: usize, k: usize, b: Mat) -> bool {
    let off = off();
    let rows_ok = if b.cs == 1 { m <= MAX_ROWS } else { b.rs == 1 && m <= MAX_ROWS_T };
    // From 5 rows on, only weight-sized operands: attention's score blocks (64 queries against
    // up to 512 keys of 64) stay with the `gemm` crate, as fast there and with their old bits.
    let big = n * k >= if m > PORTABLE_ROWS { 1 << 16 } else { 1 << 14 };
    !off && big && rows_ok
}

/// Whether `c[m, n] = a[m, k] · bᵀ`, `b` stored `[n, k]`, goes through [`gemv`]'s dot products.
pub(super) fn takes_transposed(m: usize, n: usize, k: usize) -> bool {
    applies(m, n, k, Mat { data: &[], rs: 1, cs: k })
}

/// `t[cols, rows] = wᵀ`, `w` row-major `[rows, cols]`: for products of a few rows that run
/// faster against the transposed layout ([`super::Gemm::transposed_copy_serves`]). Tiles of
/// 32 × 32, so that both sides move whole cache lines; threads take bands of `t`'s rows.
pub fn transpose(t: &mut [f32], w: &[f32], rows: usize, cols: usize) {
    assert!(
        w.len() == rows * cols && t.len() == rows * cols,
        "transpose: w and t are not [{rows}, {cols}]"
    );
    const TILE: usize = 32;
    let band = |(bi, out): (usize, &mut [f32])| {
        // out: t's rows bi·TILE.., i.e. w's columns.
        let c0 = bi * TILE;
        let cn = out.len() / rows;
        for r0 in (0..rows).step_by(TILE) {
            for c in 0..cn {
                let dst = &mut out[c * rows + r0..c * rows + (r0 + TILE).min(rows)];
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = w[(r0 + i) * cols + c0 + c];
                }
            }
        }
    };
    if rows * cols >= 1 << 16 {
        parallel::for_each_chunk_mut(t, TILE * rows, |bi, out| band((bi, out)));
    } else {
        t.chunks_mut(TILE * rows).enumerate().for_each(band);
    }
}

/// The most rows the portable dot products take even where AVX-512 runs. Up to 4 rows the
/// weights come from memory (decoding) and the portable loop streams them faster: it walks one
/// stored row of `Wte` at a time, where the register block reads two at once (4 rows of
/// `x · Wteᵀ`: 5.2 against 7.6 ms). From 5 rows on, the arithmetic counts and the register
/// blocks win (8 rows: 1.3–2.6x, from memory or cache). Both give the same bits.
const PORTABLE_ROWS: usize = 4;

/// Rows of a row-major `b` per block: one contiguous stretch of memory per task.
const ROWS_K: usize = 64;
/// Stored rows of a transposed `b` per task.
const ROWS_T: usize = 64;

/// Elements of the partial sums added up at a time (a stretch of `[m, n]`, in registers).
const REDUCE_COLS: usize = 512;

thread_local! {
    /// The calling thread's partial sums, `[blocks][m, n]` (taken for the call, then put back).
    static PARTIAL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// The calling thread's gathered rows of a strided `a`, `[m, k]` (taken, then put back).
    static GATHERED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A raw output pointer that tasks writing disjoint elements share.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes a disjoint set of elements (its own columns).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the whole `Out`, not its field).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// `c[m, n] = (accumulate ? c : 0) + a[m, k] · b[k, n]`, `c` row-major with row stride `ldc`.
///
/// # Safety
/// As [`super::matmul_ptr`]: `c` valid for writes at `r * ldc + j` (`r < m`, `j < n`) and
/// touched by no one else during the call; `a`, `b` in bounds for their shapes;
/// [`applies`] holds.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemv(
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    par: Par,
) {
    let out = Out(c);
    let threads = if par == Par::Pool { rayon::current_num_threads() } else { 1 };
    let put = move |r: usize, j: usize, v: f32| {
        // SAFETY: r < m, j < n, this task's own column (the caller's contract).
        unsafe {
            let p = out.at(r * ldc + j);
            *p = if accumulate { *p + v } else { v };
        }
    };
    // a's rows `[m, k]`, contiguous, shared by every task: a itself where it is laid out so,
    // else gathered once into this thread's buffer.
    let mut gathered = GATHERED.with(|c| c.take());
    let xs: &[f32] = if a.cs == 1 && (m == 1 || a.rs == k) {
        &a.data[..m * k]
    } else {
        gathered.clear();
        gathered.extend((0..m).flat_map(|r| (0..k).map(move |kk| a.data[r * a.rs + kk * a.cs])));
        &gathered
    };
    if b.cs == 1 {
        // Fixed blocks of ROWS_K of b's rows, each read as one contiguous stretch into its own
        // partial sums of every column; the partials are then added in block order. The blocks
        // do not depend on the thread count, so neither do the sums.
        let blocks = k.div_ceil(ROWS_K);
        // This thread's buffer (grown only; every element is assigned by its block's first
        // row, so it needs no zeroing): no page faults and no memset per token.
        let mut partial = PARTIAL.with(|c| c.take());
        if partial.len() < blocks * m * n {
            partial = vec![0.0f32; blocks * m * n];
        }
        let partial_all = &mut partial[..blocks * m * n];
        #[cfg(target_arch = "x86_64")]
        let simd = dots_version();
        let block = |(bi, p): (usize, &mut [f32])| {
            let rows = (bi * ROWS_K, ((bi + 1) * ROWS_K).min(k));
            #[cfg(target_arch = "x86_64")]
            // One row runs the register blocks too: the portable loop's load and store of
            // every partial sum per row of `b` held one row's decoding to 0.65–0.83 of the
            // read bandwidth on AVX2 (AMD Zen 3) and made a gpt1 fp32 decode step 38 % longer
            // on an AMX Xeon's AVX-512 (29.5 against 21.4 ms; docs/decoding.md).
            if let Some(version) = simd {
                let bp = b.data.as_ptr();
                // SAFETY: the version's features checked; `p` is `[m, n]`, `xs` `[m, k]`, and
                // b's rows `rows` hold `n` elements each (the caller's contract); m ≤ MAX_ROWS.
                unsafe {
                    match (version, m) {
                        (Dots::Avx512, 1) => avx512::rows_block::<1>(p, xs, k, bp, b.rs, rows, n),
                        (Dots::Avx512, 2) => avx512::rows_block::<2>(p, xs, k, bp, b.rs, rows, n),
                        (Dots::Avx512, 3) => avx512::rows_block::<3>(p, xs, k, bp, b.rs, rows, n),
                        (Dots::Avx512, _) => avx512::rows_block::<4>(p, xs, k, bp, b.rs, rows, n),
                        (Dots::Avx2, 1) => avx2::rows_block::<1>(p, xs, k, bp, b.rs, rows, n),
                        (Dots::Avx2, 2) => avx2::rows_block::<2>(p, xs, k, bp, b.rs, rows, n),
                        (Dots::Avx2, 3) => avx2::rows_block::<3>(p, xs, k, bp, b.rs, rows, n),
                        (Dots::Avx2, _) => avx2::rows_block::<4>(p, xs, k, bp, b.rs, rows, n),
                    }
                }
                return;
            }
            rows_block(p, xs, k, b, rows, m, n);
        };
        if threads > 1 {
            parallel::for_each_chunk_mut(partial_all, m * n, |bi, p| block((bi, p)));
        } else {
            partial_all.chunks_mut(m * n).enumerate().for_each(block);
        }
        // The partials added in block order, a stretch of columns at a time (each element's
        // sum in the same order as one pass would add them).
        let partial_all = &*partial_all;
        let reduce = |c0: usize| {
            let c1 = (c0 + REDUCE_COLS).min(m * n);
            let mut acc = [0.0f32; REDUCE_COLS];
            let acc = &mut acc[..c1 - c0];
            acc.copy_from_slice(&partial_all[c0..c1]);
            for bi in 1..blocks {
                let o = bi * m * n;
                for (v, &p) in acc.iter_mut().zip(&partial_all[o + c0..o + c1]) {
                    *v += p;
                }
            }
            for (i, &v) in acc.iter().enumerate() {
                put((c0 + i) / n, (c0 + i) % n, v);
            }
        };
        // On the calling thread: ~36 K additions per product at gpt1 size, less than a
        // fork-join costs.
        (0..m * n).step_by(REDUCE_COLS).for_each(reduce);
        PARTIAL.with(|c| c.set(partial));
    } else {
        // b transposed: column j of the operand is `b.data[j * b.cs ..][..k]`, contiguous.
        #[cfg(target_arch = "x86_64")]
        let simd = if m > PORTABLE_ROWS { dots_version() } else { None };
        let block = |t: usize| {
            let cols = (t * ROWS_T, ((t + 1) * ROWS_T).min(n));
            #[cfg(target_arch = "x86_64")]
            if let Some(version) = simd {
                let bp = b.data.as_ptr();
                // SAFETY: the version's features checked; `xs` is `[m, k]`, and b's stored rows
                // `cols` hold `k` elements each (the caller's contract).
                unsafe {
                    match version {
                        Dots::Avx512 => avx512::dots(&put, xs, k, bp, b.cs, cols, m),
                        Dots::Avx2 => avx2::dots(&put, xs, k, bp, b.cs, cols, m),
                    }
                }
                return;
            }
            for j in cols.0..cols.1 {
                let col = &b.data[j * b.cs..j * b.cs + k];
                for r in 0..m {
                    put(r, j, dot(&xs[r * k..(r + 1) * k], col));
                }
            }
        };
        let tasks = n.div_ceil(ROWS_T);
        if threads > 1 { parallel::for_each(tasks, block) } else { (0..tasks).for_each(block) }
    }
    GATHERED.with(|c| c.set(gathered));
}

/// `p[r * n + j] = Σ_{kk in rows} xs[r * k + kk] · b(kk, j)`, a running fused sum from `+0.0`
/// in `kk` order.
fn rows_block(
    p: &mut [f32],
    xs: &[f32],
    k: usize,
    b: Mat,
    rows: (usize, usize),
    m: usize,
    n: usize,
) {
    for kk in rows.0..rows.1 {
        let row = &b.data[kk * b.rs..kk * b.rs + n];
        let first = kk == rows.0;
        for r in 0..m {
            let xr = xs[r * k + kk];
            let pr = &mut p[r * n..(r + 1) * n];
            if first {
                // mul_add with 0.0: the bits the zeroed buffer's first step gave.
                for (s, &bw) in pr.iter_mut().zip(row) {
                    *s = xr.mul_add(bw, 0.0);
                }
            } else {
                for (s, &bw) in pr.iter_mut().zip(row) {
                    *s = xr.mul_add(bw, *s);
                }
            }
        }
    }
}

/// `Σ x[i]·y[i]` in 16 lanes (element `i` into lane `i % 16`, in order), the lanes then added
/// pairwise in a fixed order: the same bits wherever it runs.
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..16 {
            lanes[l] = a[l].mul_add(b[l], lanes[l]);
        }
    }
    for (l, (a, b)) in xt.iter().zip(yt).enumerate() {
        lanes[l] = a.mul_add(*b, lanes[l]);
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            lanes[l] += lanes[l + w];
        }
    }
    lanes[0]
}

#[cfg(test)]
mod tests;
