//! The fp32 products: the one place that calls the `gemm` crate.
//!
//! `gemm` 0.19 with its `x86-v4` feature (AVX-512) measured 280–320 GFLOP/s on this CPU's two
//! cores, ahead of OpenBLAS (235–285) and `matrixmultiply` (210–250; docs/benchmarks.md). Its threads
//! split the output, never the reduction, so results do not depend on the thread count (checked
//! by `matmul_is_thread_count_independent`).

use super::{Mat, Par, check_operands, last_index};
#[cfg(target_arch = "x86_64")]
mod avx2;
use crate::kernels::parallel::{self, SendPtr};
use gemm::Parallelism;

/// `c[m, n] = (accumulate ? c : 0) + a[m, k] · b[k, n]`, with `c` row-major with row stride
/// `ldc`.
///
/// Panics when a slice is too short for its shape: shapes come from the model's layout, never
/// from user input.
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided(
    c: &mut [f32],
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    par: Par,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_operands("matmul", c, ldc, a, b, (m, n, k));
    // SAFETY: the asserts above bound every index the product touches; `c` is exclusively
    // borrowed and does not alias `a` or `b` (Rust's borrow rules).
    unsafe { matmul_ptr(c.as_mut_ptr(), ldc, a, b, m, n, k, accumulate, par) }
}

/// [`matmul_strided`] writing through a raw pointer, for tasks that write disjoint column blocks
/// of one matrix (attention heads).
///
/// # Safety
/// `c` must be valid for writes at `r * ldc + j` for `r < m`, `j < n`, and no other thread may
/// touch those elements during the call; `a` and `b` must be in bounds for their shapes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_ptr(
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
    if m == 0 || n == 0 {
        return;
    }
    debug_assert!(a.data.len() >= last_index(m, k, a.rs, a.cs));
    debug_assert!(b.data.len() >= last_index(k, n, b.rs, b.cs));
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for j in 0..n {
                    // SAFETY: in bounds by the caller's contract.
                    unsafe { *c.add(r * ldc + j) = 0.0 };
                }
            }
        }
        return;
    }
    // Decoding's few rows against a large matrix: bound by memory, streamed once.
    if super::gemv::applies(m, n, k, b) {
        // SAFETY: the caller's contract, which gemv shares.
        unsafe { super::gemv::gemv(c, ldc, a, b, m, n, k, accumulate, par) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if own_kernel() {
        // SAFETY: the caller's contract; `own_kernel` checked AVX2 and FMA.
        unsafe { avx2::matmul(c, ldc, a, b, (m, n, k), accumulate, par) };
        return;
    }
    if let Some(blocks) = column_blocks(m, n, k, par) {
        // SAFETY: the caller's contract.
        unsafe { by_columns(c, ldc, a, b, m, n, k, accumulate, blocks) };
        return;
    }
    // Threads for the crate's own split (None: the calling thread).
    let parallelism = match par {
        Par::Pool if rayon::current_num_threads() > 1 && m * n * k >= 1 << 15 => {
            Some(rayon::current_num_threads())
        }
        _ => None,
    };
    // SAFETY: bounds are the caller's contract.
    unsafe { crate_product(c, ldc, a, b, 0, m, n, k, accumulate, parallelism) }
}

/// Whether fp32 products run gpt1's own AVX2 micro-kernel ([`avx2`]) instead of the `gemm`
/// crate: only where `GPT1_FP32=avx2` asks for it and the CPU has AVX2 and FMA. It is not the
/// default: on 2 cores of an AMD Zen 3 its products ran level with the crate's and a gpt1
/// training step 6 % slower (docs/benchmarks.md); it stays in the kernel lab, validated, to
/// measure on other CPUs.
#[cfg(target_arch = "x86_64")]
pub fn own_kernel() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        std::env::var("GPT1_FP32").is_ok_and(|v| v == "avx2")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
    })
}

/// [`avx2`]'s micro-kernel on every thread of the pool at once, GFLOP/s, on panels in L1 (the
/// ceiling its products are measured against); None on a CPU without AVX2 and FMA.
pub fn own_kernel_peak_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        let rates =
            rayon::broadcast(|_| unsafe { super::driver::kernel_rate::<avx2::Avx2>(20_000) });
        return Some(rates.iter().sum::<f64>() / 1e9);
    }
    None
}

/// Whether fp32 products run gpt1's own kernel: never off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn own_kernel() -> bool {
    false
}

/// The most rows for which [`by_columns`] gathers a row-major `b`'s column block first. The
/// crate packs its left operand (our `b`, as it computes `cᵀ = bᵀ · aᵀ`) only beyond 48 rows
/// of `a` (8 × its 6-column tiles); up to there its tiles read `b` in place, 64 bytes per row
/// of `b` at a stride of a whole row, a new 4 KiB page at every step of k once `b` has 1,024
/// columns. Gathered, the block's rows lie side by side (a 16-token prefill at gpt1 size on
/// AMD Zen 3: 101-115 -> 78 ms); beyond 48 rows the gathering only added a copy.
const GATHER_ROWS: usize = 48;

/// The largest block [`by_columns`] gathers, in bytes (gpt1's `[3072, 192]` blocks: 2.4 MB).
const BLOCK_CAP: usize = 8 << 20;

thread_local! {
    /// [`by_columns`]' gathered block of `b`, grown only, at most [`BLOCK_CAP`] bytes.
    static BLOCK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The narrowest column block [`by_columns`] runs: wider than the `gemm` crate's small paths.
const MIN_BLOCK: usize = 160;

/// How many column blocks [`by_columns`] splits a product of few rows (2–128) on the pool into:
/// the `gemm` crate's own threads at these shapes gained little over one (a 64-row product with
/// gpt1's `[768, 3072]` weight: 5.7–6.0 ms on 2 threads, 3.0–3.3 ms in blocks; AMD Zen 3);
/// `None` for other products, or with `GPT1_SPLIT=off` (to compare).
fn column_blocks(m: usize, n: usize, k: usize, par: Par) -> Option<usize> {
    let threads = rayon::current_num_threads();
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("GPT1_SPLIT").is_ok_and(|v| v == "off")) {
        return None;
    }
    if par != Par::Pool || threads < 2 || !(2..=128).contains(&m) || k < 64 {
        return None;
    }
    // Blocks of at least MIN_BLOCK columns keep every block on the crate's main path: its
    // small-matrix path (both sides at most 64) and its horizontal kernels (at most 256
    // outputs) sum in other orders.
    let blocks = (n / MIN_BLOCK).min(4 * threads);
    (blocks >= 2).then_some(blocks)
}

/// [`matmul_ptr`] in `blocks` column blocks on the pool, each one single-threaded `gemm` call.
///
/// # Safety
/// As [`matmul_ptr`].
#[allow(clippy::too_many_arguments)]
unsafe fn by_columns(
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    blocks: usize,
) {
    let cp = SendPtr(c);
    // Not where a block would outgrow BLOCK_CAP: a tall `b` (the LM head's `Wte`, 40,478 rows)
    // would be copied whole, into fresh buffers, at every product.
    let widest = n.div_ceil(blocks);
    let gather = b.cs == 1 && m <= GATHER_ROWS && k * widest * 4 <= BLOCK_CAP;
    parallel::for_each(blocks, |i| {
        let (j0, j1) = (i * n / blocks, (i + 1) * n / blocks);
        let w = j1 - j0;
        if !gather {
            // SAFETY: block `i` writes columns j0..j1 of c, which no other block touches; b's
            // columns j0..j1 lie inside b (the caller's contract).
            unsafe { crate_product(cp.get().add(j0), ldc, a, b, j0, m, w, k, accumulate, None) };
            return;
        }
        let mut buf = BLOCK.take();
        buf.clear();
        for p in 0..k {
            // SAFETY: row p's columns j0..j1 lie inside b (the caller's contract).
            let row = unsafe { std::slice::from_raw_parts(b.data.as_ptr().add(p * b.rs + j0), w) };
            buf.extend_from_slice(row);
        }
        let bw = Mat::rows(&buf, w);
        // SAFETY: as above for c; `bw` is the block, `k` rows of `w`.
        unsafe { crate_product(cp.get().add(j0), ldc, a, bw, 0, m, w, k, accumulate, None) };
        BLOCK.set(buf);
    });
}

/// The `gemm` crate's `c[m, n] (+)= a · b[:, j0..j0 + n]`.
///
/// # Safety
/// As [`matmul_ptr`], for `b`'s columns from `j0`.
#[allow(clippy::too_many_arguments)]
unsafe fn crate_product(
    c: *mut f32,
    ldc: usize,
    a: Mat,
    b: Mat,
    j0: usize,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    parallelism: Option<usize>,
) {
    let parallelism = parallelism.map_or(Parallelism::None, Parallelism::Rayon);
    // SAFETY: bounds are the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(j0 * b.cs),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Dense `c[m, n] (+)= a · b` on the shared pool.
#[allow(clippy::too_many_arguments)]
pub fn matmul(c: &mut [f32], a: Mat, b: Mat, m: usize, n: usize, k: usize, accumulate: bool) {
    matmul_strided(c, n, a, b, m, n, k, accumulate, Par::Pool);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{naive_matmul, rand_vec};

    #[test]
    fn matches_naive_in_all_transpose_combinations() {
        let (m, n, k) = (37, 29, 53);
        for &ta in &[false, true] {
            for &tb in &[false, true] {
                let a = rand_vec(m * k, 1);
                let b = rand_vec(k * n, 2);
                let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
                let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
                let mut c = rand_vec(m * n, 3);
                let c0 = c.clone();
                matmul(&mut c, am, bm, m, n, k, true);
                let want = naive_matmul(am, bm, m, n, k);
                for i in 0..m * n {
                    assert!((c[i] - c0[i] - want[i]).abs() < 1e-4, "ta={ta} tb={tb} i={i}");
                }
            }
        }
    }

    #[test]
    fn matmul_is_thread_count_independent() {
        let (m, n, k) = (512, 384, 768);
        let a = rand_vec(m * k, 4);
        let b = rand_vec(k * n, 5);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut c = vec![0.0; m * n];
                matmul(&mut c, Mat::t(&a, m), Mat::rows(&b, n), m, n, k, false);
                c
            })
        };
        let one = run(1);
        for t in [2, 3, 4] {
            let other = run(t);
            assert!(one.iter().zip(&other).all(|(x, y)| x.to_bits() == y.to_bits()), "{t} threads");
        }
    }

    /// Few rows in column blocks, one single-threaded `gemm` call each, give the bits of one
    /// call over the whole product: the crate's k blocking depends on `k` alone, and no block
    /// is narrow enough for its small-matrix path. Up to 48 rows with a row-major `b` the
    /// blocks are gathered first (here from 2 to 48 rows, and at k = 9,000), except past
    /// `BLOCK_CAP` (k = 20,000: read in place).
    #[test]
    fn column_blocks_give_the_whole_products_bits() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let shapes = [
            (2, 320, 64),
            (3, 333, 64),
            (5, 481, 97),
            (16, 1100, 200),
            (48, 777, 300),
            (8, 330, 9000),
            (8, 330, 20000),
            (64, 2304, 768),
            (77, 1031, 513),
            (128, 700, 1500),
        ];
        for &(m, n, k) in &shapes {
            assert!(pool.install(|| column_blocks(m, n, k, Par::Pool)).is_some(), "{m}x{n}x{k}");
            for (ta, tb, acc) in [(false, false, false), (true, false, true), (false, true, false)]
            {
                let (a, b) = (rand_vec(m * k, 6), rand_vec(k * n, 7));
                let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
                let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
                let c0 = rand_vec(m * n, 8);
                let mut split = c0.clone();
                let blocks = pool.install(|| column_blocks(m, n, k, Par::Pool)).unwrap();
                let c = SendPtr(split.as_mut_ptr());
                // SAFETY: the shapes match the buffers.
                pool.install(|| unsafe { by_columns(c.get(), n, am, bm, m, n, k, acc, blocks) });
                let mut whole = c0.clone();
                // SAFETY: the shapes match the buffers.
                let c = whole.as_mut_ptr();
                unsafe { crate_product(c, n, am, bm, 0, m, n, k, acc, None) };
                let same = split.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m}x{n}x{k} ta={ta} tb={tb} acc={acc}");
            }
        }
    }
}
