//! cuBLAS's products of row-major operands: one (`gemm`, fp32, or bf16 inputs with fp32
//! accumulation for the linear layers and the LM head) or a strided batch (attention's heads).

use super::Cuda;
use super::device::Slot;
use super::failure::fail;
use crate::backend::Precision;
use cudarc::cublas::sys as blas;
use cudarc::driver::sys::CUdeviceptr;

/// cuBLAS's operation for a row-major operand stored transposed (`t`) or not.
fn op_of(t: bool) -> blas::cublasOperation_t {
    if t { blas::cublasOperation_t::CUBLAS_OP_T } else { blas::cublasOperation_t::CUBLAS_OP_N }
}

/// The leading dimension of a row-major `[rows, cols]` operand (`[cols, rows]` when stored
/// transposed), as cuBLAS's column-major view of it.
fn lead(t: bool, rows: usize, cols: usize) -> i32 {
    if t { rows as i32 } else { cols as i32 }
}

impl Cuda {
    /// `c[m, n] = op(a) · op(b) + beta · c`, row-major operands (cuBLAS sees the transposed,
    /// column-major problem `cᵀ = op(b)ᵀ · op(a)ᵀ`), at the backend's precision when
    /// `mixed`, else fp32.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm(
        &self,
        c: CUdeviceptr,
        a: CUdeviceptr,
        a_t: bool,
        b: CUdeviceptr,
        b_t: bool,
        (m, n, k): (usize, usize, usize),
        beta: f32,
        mixed: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if beta == 0.0 {
                self.fill_ptr(c, m * n, 0.0);
            }
            return;
        }
        let (op, lda, ldb) = (op_of, lead(a_t, m, k), lead(b_t, k, n));
        let (alpha, h) = (1.0f32, *self.inner.blas.handle());
        self.bind();
        let r = if mixed && self.inner.precision == Precision::Bf16 {
            let a16 = self.bf16_copy(a, m * k, Slot::Bf16A);
            let b16 = self.bf16_copy(b, k * n, Slot::Bf16B);
            // SAFETY: the operands hold m·k and k·n bf16 values, c holds m·n floats.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    h,
                    op(b_t),
                    op(a_t),
                    n as i32,
                    m as i32,
                    k as i32,
                    (&alpha as *const f32).cast(),
                    b16 as *const _,
                    blas::cudaDataType::CUDA_R_16BF,
                    ldb,
                    a16 as *const _,
                    blas::cudaDataType::CUDA_R_16BF,
                    lda,
                    (&beta as *const f32).cast(),
                    c as *mut _,
                    blas::cudaDataType::CUDA_R_32F,
                    n as i32,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
        } else {
            // SAFETY: a holds m·k, b k·n and c m·n floats.
            unsafe {
                cudarc::cublas::result::sgemm(
                    h,
                    op(b_t),
                    op(a_t),
                    n as i32,
                    m as i32,
                    k as i32,
                    &alpha,
                    b as *const f32,
                    ldb,
                    a as *const f32,
                    lda,
                    &beta,
                    c as *mut f32,
                    n as i32,
                )
            }
        };
        r.unwrap_or_else(|e| fail("cuBLAS product", e));
    }

    /// `batch` products of row-major operands `strides` apart (attention's heads), in fp32, or
    /// with bf16 inputs and fp32 accumulation at bf16 precision.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_batched(
        &self,
        c: CUdeviceptr,
        a: CUdeviceptr,
        a_t: bool,
        b: CUdeviceptr,
        b_t: bool,
        (m, n, k): (usize, usize, usize),
        batch: usize,
    ) {
        if m == 0 || n == 0 || k == 0 || batch == 0 {
            return;
        }
        let (op, lda, ldb) = (op_of, lead(a_t, m, k), lead(b_t, k, n));
        let (alpha, beta) = (1.0f32, 0.0f32);
        self.bind();
        if self.inner.precision == Precision::Bf16 {
            // As on the CPU: attention's products take bf16 inputs, fp32 accumulation.
            let a16 = self.bf16_copy(a, batch * m * k, Slot::Bf16A);
            let b16 = self.bf16_copy(b, batch * k * n, Slot::Bf16B);
            let bf16 = blas::cudaDataType::CUDA_R_16BF;
            // SAFETY: `batch` operands of m·k and k·n bf16 values and m·n floats, contiguous.
            unsafe {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    *self.inner.blas.handle(),
                    op(b_t),
                    op(a_t),
                    n as i32,
                    m as i32,
                    k as i32,
                    (&alpha as *const f32).cast(),
                    b16 as *const _,
                    bf16,
                    ldb,
                    (k * n) as i64,
                    a16 as *const _,
                    bf16,
                    lda,
                    (m * k) as i64,
                    (&beta as *const f32).cast(),
                    c as *mut _,
                    blas::cudaDataType::CUDA_R_32F,
                    n as i32,
                    (m * n) as i64,
                    batch as i32,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .unwrap_or_else(|e| fail("cuBLAS batched bf16 product", e));
            return;
        }
        // SAFETY: `batch` operands of m·k, k·n and m·n floats, contiguous.
        unsafe {
            cudarc::cublas::result::sgemm_strided_batched(
                *self.inner.blas.handle(),
                op(b_t),
                op(a_t),
                n as i32,
                m as i32,
                k as i32,
                &alpha,
                b as *const f32,
                ldb,
                (k * n) as i64,
                a as *const f32,
                lda,
                (m * k) as i64,
                &beta,
                c as *mut f32,
                n as i32,
                (m * n) as i64,
                batch as i32,
            )
        }
        .unwrap_or_else(|e| fail("cuBLAS batched product", e));
    }
}
