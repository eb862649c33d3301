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
//! Where the CPU has AVX-512F, the dot products of 5 rows or more run register-blocked
//! (`avx512.rs`: 8 rows × 2 stored rows of `b` per block of registers), and so do the partial
//! sums of 2–4 rows (four of `b`'s rows loaded once for every row's sums, held in registers
//! through four fused steps), with the same sums in the same order as the portable loops here. Each output element is one fixed-order sum over
//! `k` (lanes added in a fixed order), so results do not depend on the thread count, on the
//! blocks' widths, on the CPU's vector width, or on how many other rows share the product.

use super::{Mat, Par};
use crate::kernels::parallel;

#[cfg(target_arch = "x86_64")]
mod avx512;

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
        let simd = avx512::available();
        let block = |(bi, p): (usize, &mut [f32])| {
            let rows = (bi * ROWS_K, ((bi + 1) * ROWS_K).min(k));
            #[cfg(target_arch = "x86_64")]
            if simd && m > 1 {
                let bp = b.data.as_ptr();
                // SAFETY: AVX-512F checked; `p` is `[m, n]`, `xs` `[m, k]`, and b's rows `rows`
                // hold `n` elements each (the caller's contract); m ≤ MAX_ROWS = 4.
                unsafe {
                    match m {
                        2 => avx512::rows_block::<2>(p, xs, k, bp, b.rs, rows, n),
                        3 => avx512::rows_block::<3>(p, xs, k, bp, b.rs, rows, n),
                        4 => avx512::rows_block::<4>(p, xs, k, bp, b.rs, rows, n),
                        _ => unreachable!("applies() keeps a row-major b to MAX_ROWS = 4 rows"),
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
        let simd = m > PORTABLE_ROWS && avx512::available();
        let block = |t: usize| {
            let cols = (t * ROWS_T, ((t + 1) * ROWS_T).min(n));
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: AVX-512F checked; `xs` is `[m, k]`, and b's stored rows `cols` hold
                // `k` elements each (the caller's contract).
                unsafe { avx512::dots(&put, xs, k, b.data.as_ptr(), b.cs, cols, m) };
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
        let shapes = [(1, 4099, 37), (3, 1000, 300), (4, 33, 2049), (2, 4096, 768), (8, 129, 1030)];
        for &(m, n, k) in shapes.iter().chain(&[(13, 170, 395), (64, 300, 230)]) {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.01).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 13 % 31) as f32 - 15.0) * 0.01).collect();
            // Beyond MAX_ROWS only a transposed b takes this path.
            for t in [false, true].into_iter().filter(|&t| t || m <= MAX_ROWS) {
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

    /// Each row of `a` gets the same bits whatever other rows share the product (decoding's
    /// `--num` rows, the LSTM's batch): a product of `m` rows, row by row, against products of
    /// one row, both layouts, on the pool.
    #[test]
    fn a_row_gets_the_same_bits_alone_or_among_others() {
        let (n, k) = (301, 517);
        for m in [2, 5, 8, 17] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 11 % 29) as f32 - 14.0) * 0.013).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 37) as f32 - 18.0) * 0.007).collect();
            for t in [false, true].into_iter().filter(|&t| t || m <= MAX_ROWS) {
                let bm = if t { Mat::t(&w, k) } else { Mat::rows(&w, n) };
                let mut all = vec![0.0f32; m * n];
                // SAFETY: dense buffers of the shapes given.
                unsafe {
                    gemv(all.as_mut_ptr(), n, Mat::rows(&a, k), bm, m, n, k, false, Par::Pool)
                };
                for r in 0..m {
                    let mut one = vec![0.0f32; n];
                    let ar = Mat::rows(&a[r * k..(r + 1) * k], k);
                    // SAFETY: as above.
                    unsafe { gemv(one.as_mut_ptr(), n, ar, bm, 1, n, k, false, Par::Pool) };
                    let same =
                        one.iter().zip(&all[r * n..]).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "m {m} t {t} row {r}");
                }
            }
        }
    }

    /// The AVX-512 dot products give the portable loop's bits, element for element, on shapes
    /// with every kind of edge (rows past a register block, an odd last stored row, `k` past
    /// 16), and a row of `-0.0`.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_dots_give_the_portable_bits() {
        if !avx512::available() {
            eprintln!("skipped: this CPU has no AVX-512F (the portable loops run)");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 17, 15),
            (2, 5, 31),
            (3, 64, 33),
            (4, 9, 16),
            (5, 65, 64),
            (6, 7, 40),
            (7, 12, 17),
            (8, 130, 47),
            (9, 3, 100),
            (10, 5, 70),
            (12, 8, 33),
        ] {
            let mut xs: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 19) as f32 - 9.0) * 0.03).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 3 % 23) as f32 - 11.0) * 0.05).collect();
            xs[..k].iter_mut().for_each(|x| *x = -0.0);
            // Transposed: w read as n stored rows of k.
            let want: Vec<f32> =
                (0..m * n).map(|i| dot(&xs[i / n * k..][..k], &w[i % n * k..][..k])).collect();
            let got = std::sync::Mutex::new(vec![2.0f32; m * n]);
            let put = |r: usize, j: usize, v: f32| got.lock().unwrap()[r * n + j] = v;
            // SAFETY: as above.
            unsafe { avx512::dots(&put, &xs, k, w.as_ptr(), k, (0, n), m) };
            let got = got.into_inner().unwrap();
            assert!(
                want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()),
                "dots {m}x{n}x{k}"
            );
        }
    }

    /// The AVX-512 partial sums of a row-major `b` (2–4 rows) against the portable loop's,
    /// bitwise: a block's first rows and later ones, whole steps of four rows and the 1–3 left,
    /// columns past the last 16.
    #[test]
    fn the_avx512_partial_sums_give_the_portable_bits() {
        if !avx512::available() {
            eprintln!("skipped: this CPU has no AVX-512F (the portable loops run)");
            return;
        }
        let (n, k) = (37, 140);
        let xs: Vec<f32> = (0..4 * k).map(|i| ((i * 7 % 19) as f32 - 9.0) * 0.03).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 3 % 23) as f32 - 11.0) * 0.05).collect();
        let b = Mat::rows(&w, n);
        for m in 2..=MAX_ROWS {
            for rows in [(0, 64), (64, 128), (128, 131), (130, 140), (5, 6)] {
                let mut want = vec![3.0f32; m * n];
                rows_block(&mut want, &xs, k, b, rows, m, n);
                let mut got = vec![3.0f32; m * n];
                // SAFETY: AVX-512F checked; the buffers hold the shapes.
                unsafe {
                    match m {
                        2 => avx512::rows_block::<2>(&mut got, &xs, k, w.as_ptr(), n, rows, n),
                        3 => avx512::rows_block::<3>(&mut got, &xs, k, w.as_ptr(), n, rows, n),
                        _ => avx512::rows_block::<4>(&mut got, &xs, k, w.as_ptr(), n, rows, n),
                    }
                }
                let same = want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m} rows, b's rows {rows:?}");
            }
        }
    }

    /// Which products take this path: few rows, weights big enough, `b` contiguous along one
    /// axis; row-major `b` only up to [`MAX_ROWS`] rows, and from 5 rows on only weight-sized
    /// operands (attention's score blocks stay with the `gemm` crate).
    #[test]
    fn applies_takes_few_rows_against_weights_only() {
        let w = vec![0.0f32; 1 << 20];
        let (rm, t) = (|n| Mat::rows(&w, n), |k| Mat::t(&w, k));
        assert!(applies(4, 1024, 1024, rm(1024)) && !applies(5, 1024, 1024, rm(1024)));
        assert!(applies(64, 1024, 1024, t(1024)) && !applies(65, 1024, 1024, t(1024)));
        // A causal score block: 64 queries against 512 keys of 64, K read in place.
        assert!(!applies(64, 512, 64, Mat::strided(&w, 1, 2304)));
        assert!(applies(4, 512, 64, Mat::strided(&w, 1, 2304)));
        assert!(!applies(1, 100, 100, rm(100)), "too small to be worth threads");
        assert!(!applies(2, 64, 64, Mat::strided(&w, 128, 2)), "no contiguous axis");
    }

    /// A strided `a` (gathered into the thread's buffer) and a single row with a row stride
    /// (read in place) give the bits of the same values laid out densely.
    #[test]
    fn a_strided_a_gives_the_dense_bits() {
        let (n, k) = (300, 400);
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 3 % 29) as f32 - 14.0) * 0.01).collect();
        for m in [1, 3, 6] {
            let dense: Vec<f32> = (0..m * k).map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.02).collect();
            // The same values as a's transpose stored (column-major a), and with a row stride.
            let cm: Vec<f32> = (0..k * m).map(|i| dense[(i % m) * k + i / m]).collect();
            let mut wide = vec![9.0f32; m * (k + 7)];
            for r in 0..m {
                wide[r * (k + 7)..r * (k + 7) + k].copy_from_slice(&dense[r * k..(r + 1) * k]);
            }
            for bm in [Mat::rows(&w, n), Mat::t(&w, k)] {
                if bm.cs == 1 && m > MAX_ROWS {
                    continue;
                }
                let run = |a: Mat| {
                    let mut c = vec![0.0f32; m * n];
                    // SAFETY: dense buffers of the shapes given.
                    unsafe { gemv(c.as_mut_ptr(), n, a, bm, m, n, k, false, Par::Pool) };
                    c
                };
                let want = run(Mat::rows(&dense, k));
                for a in [Mat::t(&cm, m), Mat::strided(&wide, k + 7, 1)] {
                    let got = run(a);
                    assert!(
                        want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "m {m}"
                    );
                }
            }
        }
    }
}
