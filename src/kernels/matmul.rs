//! Matrix products: the one place that calls the `gemm` crate.
//!
//! `gemm` 0.19 with its `x86-v4` feature (AVX-512) measured 280–320 GFLOP/s on this CPU's two
//! cores, ahead of OpenBLAS (235–285) and `matrixmultiply` (210–250; docs/benchmarks.md). Its threads
//! split the output, never the reduction, so results do not depend on the thread count (checked
//! by `matmul_is_thread_count_independent`).

use gemm::Parallelism;

/// A row-major matrix operand: `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat { data, rs: cols, cs: 1 }
    }
    /// The transpose of a dense row-major matrix stored as `[cols_of_t, rows_of_t]`:
    /// element `(r, c)` of the operand is `data[c * stored_cols + r]`.
    pub fn t(data: &'a [f32], stored_cols: usize) -> Self {
        Mat { data, rs: 1, cs: stored_cols }
    }
    /// A strided view (rows `rs` apart, columns `cs` apart).
    pub fn strided(data: &'a [f32], rs: usize, cs: usize) -> Self {
        Mat { data, rs, cs }
    }
}

/// Whether a product may use the rayon pool (large products) or must stay on the calling thread
/// (products already inside a parallel loop, such as per-head attention).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Par {
    Pool,
    Single,
}

/// One past the last element a `[rows, cols]` operand with strides `rs`, `cs` touches.
pub(crate) fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 }
}

/// Panics unless `c` (row stride `ldc`), `a` and `b` hold `[m, n]`, `[m, k]` and `[k, n]`:
/// the bound every product's unchecked inner loops rely on.
pub(crate) fn check_operands(
    what: &str,
    c: &[f32],
    ldc: usize,
    a: Mat,
    b: Mat,
    (m, n, k): (usize, usize, usize),
) {
    assert!(ldc >= n && c.len() >= last_index(m, n, ldc, 1), "{what}: c too short");
    assert!(a.data.len() >= last_index(m, k, a.rs, a.cs), "{what}: a too short");
    assert!(b.data.len() >= last_index(k, n, b.rs, b.cs), "{what}: b too short");
}

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
    let parallelism = match par {
        Par::Pool if rayon::current_num_threads() > 1 && m * n * k >= 1 << 15 => {
            Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => Parallelism::None,
    };
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
            b.data.as_ptr(),
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
}

/// Which product a kernel uses: fp32, or bf16 inputs with fp32 accumulation (a version of
/// [`super::bf16`]). Kernels that multiply large matrices (the LM head) take one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gemm {
    Fp32,
    Bf16(super::bf16::Version),
}

impl Gemm {
    /// Dense `c[m, n] (+)= a · b` on the shared pool.
    #[allow(clippy::too_many_arguments)]
    pub fn mm(self, c: &mut [f32], a: Mat, b: Mat, m: usize, n: usize, k: usize, accumulate: bool) {
        match self {
            Gemm::Fp32 => matmul(c, a, b, m, n, k, accumulate),
            Gemm::Bf16(v) => {
                super::bf16::matmul_bf16(v, c, n, a, b, m, n, k, accumulate, Par::Pool)
            }
        }
    }

    /// `c[m, n] = a · b` (row stride `ldc`) on the calling thread, through a raw pointer: the
    /// per-head products of attention, each task writing its own column block.
    ///
    /// # Safety
    /// As [`matmul_ptr`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mm_single(
        self,
        c: *mut f32,
        ldc: usize,
        a: Mat,
        b: Mat,
        m: usize,
        n: usize,
        k: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                Gemm::Fp32 => matmul_ptr(c, ldc, a, b, m, n, k, false, Par::Single),
                Gemm::Bf16(v) => {
                    super::bf16::matmul_bf16_ptr(v, c, ldc, a, b, m, n, k, false, Par::Single)
                }
            }
        }
    }
}
