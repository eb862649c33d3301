//! Products of a few rows against a large matrix, `c[m, n] (+)= a[m, k] · b[k, n]` with
//! `m ≤ MAX_ROWS`: decoding's products, where every weight is read once per token and the
//! memory, not the arithmetic, is the limit. The `gemm` crate's small-`m` path streamed a gpt1
//! token's 464 MB at about half the read bandwidth (`gpt1 bench kernels`); here each task reads
//! one contiguous block of `b` exactly once, for all `m` rows of `a` together:
//! - `b` row-major (`x · W`): a block of `b`'s rows, one contiguous stretch, into partial sums
//!   of every column, added in block order at the end;
//! - `b` transposed (`x · Wteᵀ`, the tied LM head): a block of `b`'s stored rows, each output a
//!   dot product of two contiguous vectors in 16 lanes.
//!
//! Each output element is one fixed-order sum over `k` (lanes added in a fixed order), so
//! results do not depend on the thread count or on the blocks' widths.

use super::{Mat, Par};
use rayon::prelude::*;

/// The most rows of `a` a product may have to take this path.
pub const MAX_ROWS: usize = 4;

/// Whether `c[m, n] = a[m, k] · b[k, n]` goes through [`gemv`]: few rows, enough weights to be
/// worth threads, and `b` contiguous along one of its axes; `GPT1_GEMV=off` sends every
/// product to the `gemm` crate instead (to compare, or to rule this path out).
pub(super) fn applies(m: usize, n: usize, k: usize, b: Mat) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("GPT1_GEMV").is_ok_and(|v| v == "off"));
    !off && m <= MAX_ROWS && n * k >= 1 << 14 && (b.cs == 1 || b.rs == 1)
}

/// Rows of a row-major `b` per block: one contiguous stretch of memory per task.
const ROWS_K: usize = 64;
/// Stored rows of a transposed `b` per task.
const ROWS_T: usize = 64;

/// Elements of the partial sums added up at a time (a stretch of `[m, n]`, in registers).
const REDUCE_COLS: usize = 512;

thread_local! {
    /// The calling thread's partial sums, `[blocks][m, n]` (taken for the call, then put back).
    static PARTIAL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
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
    let x = |r: usize, kk: usize| a.data[r * a.rs + kk * a.cs];
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
        let block = |(bi, p): (usize, &mut [f32])| {
            for kk in bi * ROWS_K..((bi + 1) * ROWS_K).min(k) {
                let row = &b.data[kk * b.rs..kk * b.rs + n];
                let first = kk == bi * ROWS_K;
                for r in 0..m {
                    let xr = x(r, kk);
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
        };
        if threads > 1 {
            partial_all.par_chunks_mut(m * n).enumerate().for_each(block);
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
        // a's rows gathered once (contiguous for the dot products), shared by every task.
        let xs: Vec<f32> =
            (0..m).flat_map(|r| (0..k).map(move |kk| (r, kk))).map(|(r, kk)| x(r, kk)).collect();
        let block = |t: usize| {
            for j in t * ROWS_T..((t + 1) * ROWS_T).min(n) {
                let col = &b.data[j * b.cs..j * b.cs + k];
                for r in 0..m {
                    put(r, j, dot(&xs[r * k..(r + 1) * k], col));
                }
            }
        };
        let tasks = n.div_ceil(ROWS_T);
        if threads > 1 {
            (0..tasks).into_par_iter().for_each(block)
        } else {
            (0..tasks).for_each(block)
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
mod tests {
    use super::super::{Mat, Par};
    use super::*;

    /// The definition in f64.
    fn reference(a: Mat, b: Mat, m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| {
                        a.data[r * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64
                    })
                    .sum();
                c[r * n + j] = s as f32;
            }
        }
        c
    }

    /// The row-major path's defined order, written plainly: per block of ROWS_K rows a
    /// running fused sum from 0, then the blocks added in order.
    fn in_block_order(a: Mat, b: Mat, m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                let mut total = 0.0f32;
                for (bi, k0) in (0..k).step_by(ROWS_K).enumerate() {
                    let mut s = 0.0f32;
                    for p in k0..(k0 + ROWS_K).min(k) {
                        s = a.data[r * a.rs + p * a.cs].mul_add(b.data[p * b.rs + j * b.cs], s);
                    }
                    total = if bi == 0 { s } else { total + s };
                }
                c[r * n + j] = total;
            }
        }
        c
    }

    /// Against the definition (f64 sums) on odd shapes, both layouts of `b`, accumulating or
    /// not, and bitwise the same on one thread and on the pool.
    #[test]
    fn gemv_matches_the_definition_and_any_thread_count() {
        for &(m, n, k) in &[(1, 4099, 37), (3, 1000, 300), (4, 33, 2049), (2, 4096, 768)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.01).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 13 % 31) as f32 - 15.0) * 0.01).collect();
            for t in [false, true] {
                // The same operand values either way: b(kk, j) = w[kk * n + j].
                let stored: Vec<f32> = if t {
                    (0..n * k).map(|i| w[(i % k) * n + i / k]).collect()
                } else {
                    w.clone()
                };
                let bm = if t { Mat::t(&stored, k) } else { Mat::rows(&stored, n) };
                assert!(applies(m, n, k, bm));
                let am = Mat::rows(&a, k);
                let want = reference(am, bm, m, n, k);
                for acc in [false, true] {
                    let mut one = vec![0.5f32; m * n];
                    let mut pool = vec![0.5f32; m * n];
                    // SAFETY: dense buffers of the shapes given.
                    unsafe {
                        gemv(one.as_mut_ptr(), n, am, bm, m, n, k, acc, Par::Single);
                        gemv(pool.as_mut_ptr(), n, am, bm, m, n, k, acc, Par::Pool);
                    }
                    assert!(one.iter().zip(&pool).all(|(x, y)| x.to_bits() == y.to_bits()));
                    if !t && !acc {
                        let order = in_block_order(am, bm, m, n, k);
                        assert!(one.iter().zip(&order).all(|(x, y)| x.to_bits() == y.to_bits()));
                    }
                    for (i, (&g, &r)) in one.iter().zip(&want).enumerate() {
                        let r = r + if acc { 0.5 } else { 0.0 };
                        assert!((g - r).abs() <= 1e-4 * (1.0 + r.abs()), "{m}x{n}x{k} t={t} {i}");
                    }
                }
            }
        }
    }
}
