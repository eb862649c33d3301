//! The CUDA backend (`--device cuda[:N]`): the model's buffers in GPU memory, its kernels in
//! CUDA C ([`KERNELS`], compiled by NVRTC at first use for the GPU's architecture and cached on
//! disk), its matrix products in cuBLAS.
//!
//! - Everything is loaded at run time (`cudarc` with dynamic loading, API pinned to CUDA 13):
//!   the ordinary build needs no CUDA toolkit, and a machine without a driver or GPU gets a
//!   clear [`Error::Device`] from [`Cuda::new`] ([`libs`] finds the libraries first).
//! - Precision as on the CPU ([`Precision`]): fp32 runs cuBLAS's fp32 products (no TF32);
//!   bf16 converts both operands of the linear layers' and the LM head's products to bf16
//!   (round to nearest even, a kernel) and multiplies them with fp32 accumulation
//!   (`cublasGemmEx`, `CUBLAS_COMPUTE_32F`). Master weights, gradients, AdamW state,
//!   LayerNorm, softmax, attention and the loss stay fp32.
//! - Deterministic for a given GPU: no atomics; reductions run in a fixed order (see the
//!   kernels' header), the embedding gradient groups positions by token on the host.
//! - One stream; host crossings (`download`, `gather_rows`, the loss) synchronise it.
//! - Data parallelism sums the gradients on the GPUs with NCCL ([`nccl`]), its unique id sent
//!   over the run's [`crate::dist::Collective`] (MPI); through the host when NCCL is missing.
//!
//! Views are raw device addresses with a length and a lifetime, as the CPU's are slices.

pub mod compile;
pub mod libs;
pub mod nccl;

pub use compile::{KERNELS, compile_ptx, compile_source};

use super::{Backend, DeviceBuf, Pinned, Precision};
use crate::error::{Error, Result};
use crate::kernels::attention::Dims;
use crate::kernels::dropout::Dropout;
use crate::kernels::optim::AdamStep;
use cudarc::cublas::{CudaBlas, sys as blas};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
    result as drv,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

/// Every kernel of [`KERNELS`], loaded by name.
pub const KERNEL_NAMES: &[&str] = &[
    "fill_f32",
    "to_bf16",
    "copy_rows",
    "place_rows",
    "add_rows",
    "encoder_forward",
    "encoder_rows",
    "gather",
    "scatter_add_sorted",
    "positions_backward",
    "dropout_copy",
    "residual_forward",
    "bias_broadcast",
    "add_biases",
    "col_sum_partial",
    "col_sum_finish",
    "layernorm_forward",
    "layernorm_backward_dx",
    "layernorm_dg_partial",
    "gelu_forward",
    "gelu_backward",
    "permute_qkv",
    "unpermute_qkv",
    "heads_merge",
    "softmax_causal",
    "softmax_causal_backward",
    "attention_rows",
    "crossentropy_rows",
    "lstm_cell_forward",
    "lstm_cell_backward",
    "sum_squares_partial",
    "scale_f32",
    "adamw",
];

/// Compiles (or reads from the cache) and loads the kernels for compute capability `cc`.
fn load_kernels(ctx: &Arc<CudaContext>, cc: i32) -> Result<Arc<cudarc::driver::CudaModule>> {
    let mut driver = 0;
    // SAFETY: an out-parameter; the driver is loaded (a context exists).
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) }
        .result()
        .map_err(|e| dev("the driver's version", e))?;
    let (cc_used, code) = compile::target(cc, compile::Code::from_env()?)?;
    let (image, cached) = compile::cached(cc_used, code, driver)?;
    let module = match code {
        compile::Code::Cubin => ctx.load_module(cudarc::nvrtc::Ptx::from_binary(image)),
        compile::Code::Ptx => {
            ctx.load_module(cudarc::nvrtc::Ptx::from_src(String::from_utf8_lossy(&image)))
        }
    };
    module.map_err(|e| {
        let nvrtc = compile::nvrtc_version().map(|(a, b)| format!("{a}.{b}")).unwrap_or_default();
        let what = format!(
            "loading the kernels ({code:?} for sm_{cc_used}, NVRTC {nvrtc}, driver {}.{}{})",
            driver / 1000,
            driver % 1000 / 10,
            match &cached {
                Some(f) => format!(", cached in {}: delete it to recompile", f.display()),
                None => String::new(),
            }
        );
        let hint = if code == compile::Code::Ptx {
            "; PTX from an NVRTC newer than the driver cannot be loaded: use GPT1_CUDA_CODE=cubin, \
             an NVRTC no newer than the driver, or a newer driver"
        } else {
            ""
        };
        Error::Device(format!("CUDA: {what}: {e}{hint}"))
    })
}

/// Growable device scratch buffers, one per use, kept between calls.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Slot {
    Idx0,
    Idx1,
    Idx2,
    Rows,
    Host,
    Partial,
    Qkv,
    Dqkv,
    Heads,
    Nll,
    Bf16A,
    Bf16B,
    Probs,
}

struct Inner {
    /// The run communicator (its address) NCCL was decided for, and its NCCL communicator
    /// (None: the ranks go through the host). First, so that it is destroyed before the
    /// context and stream (fields drop in order).
    nccl: Mutex<Option<(usize, Option<nccl::NcclComm>)>>,
    /// Pinned weights ([`Backend::pin`]) and the bf16 copies the products made of them (before
    /// the context, so that they are freed first).
    pins: Mutex<Vec<DevicePin>>,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    blas: CudaBlas,
    precision: Precision,
    name: String,
    ordinal: usize,
    arch: String,
    scratch: Mutex<HashMap<Slot, CudaSlice<u8>>>,
}

/// Weights pinned on the device: their address range, and the bf16 copy of each operand read
/// from it (its address and length), made by the first bf16 product that reads it.
struct DevicePin {
    id: u64,
    range: std::ops::Range<CUdeviceptr>,
    copies: Vec<(CUdeviceptr, usize, CudaSlice<u16>)>,
}

/// Ends a pin: its bf16 copies are freed.
struct PinGuard<'a> {
    inner: Arc<Inner>,
    id: u64,
    _weights: PhantomData<&'a f32>,
}

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        self.inner.pins.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p.id != self.id);
    }
}

/// A GPU at a precision. Cheap to clone (one shared context, stream, module and cuBLAS handle).
#[derive(Clone)]
pub struct Cuda {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cuda(cuda:{}, {:?})", self.inner.ordinal, self.inner.precision)
    }
}

/// A read-only view: a device address and a length.
#[derive(Clone, Copy, Debug)]
pub struct CRef<'a> {
    ptr: CUdeviceptr,
    len: usize,
    _p: PhantomData<&'a f32>,
}

/// A writable view.
#[derive(Debug)]
pub struct CMut<'a> {
    ptr: CUdeviceptr,
    len: usize,
    _p: PhantomData<&'a mut f32>,
}

/// An owned buffer: `cap` floats allocated, the first `len` in use.
pub struct CudaBuf {
    data: Option<CudaSlice<f32>>,
    ptr: CUdeviceptr,
    len: usize,
}

impl DeviceBuf<Cuda> for CudaBuf {
    fn r(&self) -> CRef<'_> {
        CRef { ptr: self.ptr, len: self.len, _p: PhantomData }
    }
    fn w(&mut self) -> CMut<'_> {
        CMut { ptr: self.ptr, len: self.len, _p: PhantomData }
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl CudaBuf {
    fn cap(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.len())
    }
}

/// A kernel argument, as the kernel declares it.
#[derive(Clone, Copy)]
enum A {
    /// A device pointer (`float*`, `const u32*`, ...).
    P(CUdeviceptr),
    /// `i64` (`long long`).
    L(i64),
    I(i32),
    U(u32),
    K(u64),
    F(f32),
}

const F4: u64 = 4;

fn blocks(n: usize, per: usize) -> u32 {
    n.div_ceil(per).clamp(1, 1 << 20) as u32
}

fn cfg(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// cuBLAS's operation for a row-major operand stored transposed (`t`) or not.
fn op_of(t: bool) -> blas::cublasOperation_t {
    if t { blas::cublasOperation_t::CUBLAS_OP_T } else { blas::cublasOperation_t::CUBLAS_OP_N }
}

/// The leading dimension of a row-major `[rows, cols]` operand (`[cols, rows]` when stored
/// transposed), as cuBLAS's column-major view of it.
fn lead(t: bool, rows: usize, cols: usize) -> i32 {
    if t { rows as i32 } else { cols as i32 }
}

/// Where the LM head's gradients go (device addresses) and the loss's scale.
struct HeadGrads {
    dh: CUdeviceptr,
    dwte: CUdeviceptr,
    dbias: Option<CUdeviceptr>,
    scale: f32,
}

/// Attention's dimensions as kernel arguments: B, T, H, dh.
fn dims_args(s: Dims) -> [A; 4] {
    [A::I(s.b as i32), A::I(s.t as i32), A::I(s.h as i32), A::I(s.dh as i32)]
}

/// Dropout as kernel arguments: key, offset, threshold, scale, active.
fn drop_args(d: Dropout) -> [A; 5] {
    [A::K(d.key), A::K(d.offset), A::U(d.threshold()), A::F(d.scale()), A::I(d.active() as i32)]
}

/// Groups for column sums: enough blocks to fill the GPU, few enough partial rows to add.
const GROUPS: usize = 64;

impl Cuda {
    /// The GPU `ordinal` at `precision`: loads the driver, NVRTC and cuBLAS, compiles (or
    /// reads from the cache) the kernels for its architecture. Errors, never panics, when any
    /// of it is missing.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Self> {
        libs::require("cuda", "the NVIDIA driver (--device cuda)")?;
        let count = std::panic::catch_unwind(CudaContext::device_count)
            .map_err(|_| Error::Device("the NVIDIA driver failed to load".into()))?
            .map_err(|e| Error::Device(format!("the NVIDIA driver: {e} (is a GPU present?)")))?;
        if count <= 0 {
            return Err(Error::Device("no CUDA GPU on this machine (the driver sees none)".into()));
        }
        if ordinal >= count as usize {
            return Err(Error::Device(format!(
                "GPU {ordinal} does not exist: this machine has {count} GPU(s), cuda:0..cuda:{}",
                count - 1
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| dev("creating a context", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| dev("compute capability", e))?;
        let arch = format!("sm_{major}{minor}");
        if precision == Precision::Bf16 && major < 8 {
            return Err(Error::Device(format!(
                "--precision bf16 on cuda:{ordinal} ({arch}): bf16 products need compute \
                 capability 8.0 (Ampere) or newer; use --precision fp32"
            )));
        }
        let name = ctx.name().unwrap_or_else(|_| "GPU".into());
        let module = load_kernels(&ctx, major * 10 + minor)?;
        let mut funcs = HashMap::new();
        for &n in KERNEL_NAMES {
            funcs.insert(n, module.load_function(n).map_err(|e| dev(n, e))?);
        }
        let stream = ctx.default_stream();
        libs::require("cublasLt", "cuBLAS")?;
        libs::require("cublas", "cuBLAS")?;
        let blas = std::panic::catch_unwind(|| CudaBlas::new(stream.clone()))
            .map_err(|_| Error::Device("cuBLAS failed to load".into()))?
            .map_err(|e| Error::Device(format!("cuBLAS: {e}")))?;
        Ok(Cuda {
            inner: Arc::new(Inner {
                ctx,
                stream,
                funcs,
                blas,
                precision,
                name,
                ordinal,
                arch,
                scratch: Mutex::new(HashMap::new()),
                pins: Mutex::new(Vec::new()),
                nccl: Mutex::new(None),
            }),
        })
    }

    pub fn precision(&self) -> Precision {
        self.inner.precision
    }

    /// (free, total) bytes of GPU memory.
    pub fn memory(&self) -> (usize, usize) {
        self.bind();
        self.inner.ctx.mem_get_info().unwrap_or((0, 0))
    }

    /// This GPU's identity across a job: host name and PCI address, hashed.
    fn gpu_identity(&self) -> u64 {
        use cudarc::driver::sys::CUdevice_attribute as At;
        let at = |a| self.inner.ctx.attribute(a).unwrap_or(-1);
        let pci = (
            at(At::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
            at(At::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
            at(At::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
        );
        let mut host = [0u8; 256];
        // SAFETY: gethostname writes at most host.len() bytes.
        unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
        let id = format!("{}:{pci:?}", String::from_utf8_lossy(&host).trim_end_matches('\0'));
        let h = crate::sys::fnv1a(id.bytes());
        u64::from_str_radix(&h, 16).unwrap_or(0)
    }

    /// Waits for the queued work (timings).
    pub fn synchronize(&self) {
        self.inner.stream.synchronize().unwrap_or_else(|e| fail("synchronize", e));
    }

    fn bind(&self) {
        self.inner.ctx.bind_to_thread().unwrap_or_else(|e| fail("binding the context", e));
    }

    fn launch(&self, name: &str, c: LaunchConfig, args: &[A]) {
        let f = &self.inner.funcs[name];
        let mut b = self.inner.stream.launch_builder(f);
        for a in args {
            match a {
                A::P(v) | A::K(v) => b.arg(v),
                A::L(v) => b.arg(v),
                A::I(v) => b.arg(v),
                A::U(v) => b.arg(v),
                A::F(v) => b.arg(v),
            };
        }
        // SAFETY: each kernel's parameter list is the `args` its caller passes (types and
        // order), and every pointer is a live device buffer of the sizes the kernel reads.
        unsafe { b.launch(c) }.unwrap_or_else(|e| fail(name, e));
    }

    /// An elementwise kernel over `n` items (grid-stride loops).
    fn launch_n(&self, name: &str, n: usize, args: &[A]) {
        if n > 0 {
            self.launch(name, cfg(blocks(n, 256), 256), args);
        }
    }

    /// A scratch buffer of at least `bytes`, grown as needed (freed in stream order).
    fn scratch(&self, slot: Slot, bytes: usize) -> CUdeviceptr {
        let mut s = self.inner.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let grow = s.get(&slot).is_none_or(|b| b.len() < bytes);
        if grow {
            let b = self
                .inner
                .stream
                .alloc_zeros::<u8>(bytes.max(256))
                .unwrap_or_else(|e| fail("allocating scratch memory", e));
            s.insert(slot, b);
        }
        let (p, _) = s[&slot].device_ptr(&self.inner.stream);
        p
    }

    /// `n` values at `x` rounded to bf16: the kept copy when `x` lies inside pinned weights
    /// (made at the first call), else a conversion into the scratch slot `slot`.
    fn bf16_copy(&self, x: CUdeviceptr, n: usize, slot: Slot) -> CUdeviceptr {
        let convert = |to: CUdeviceptr| {
            self.launch_n("to_bf16", n, &[A::P(to), A::P(x), A::L(n as i64)]);
            to
        };
        let mut pins = self.inner.pins.lock().unwrap_or_else(|e| e.into_inner());
        let end = x + 4 * n as CUdeviceptr;
        let Some(pin) = pins.iter_mut().find(|p| p.range.start <= x && end <= p.range.end) else {
            drop(pins);
            return convert(self.scratch(slot, n * 2));
        };
        if let Some((_, _, copy)) = pin.copies.iter().find(|(p, len, _)| *p == x && *len == n) {
            let (p, _) = copy.device_ptr(&self.inner.stream);
            return p;
        }
        let copy = self
            .inner
            .stream
            .alloc_zeros::<u16>(n.max(1))
            .unwrap_or_else(|e| fail("allocating a pinned weight's bf16 copy", e));
        let (p, _) = copy.device_ptr(&self.inner.stream);
        convert(p);
        pin.copies.push((x, n, copy));
        p
    }

    /// Host values in a scratch slot.
    fn put<T: Copy>(&self, slot: Slot, host: &[T]) -> CUdeviceptr {
        let p = self.scratch(slot, std::mem::size_of_val(host));
        if !host.is_empty() {
            self.bind();
            // SAFETY: `p` holds at least `host`'s bytes; the copy from pageable memory is
            // staged before this returns, so `host` may go.
            unsafe { drv::memcpy_htod_async(p, host, self.inner.stream.cu_stream()) }
                .unwrap_or_else(|e| fail("copying to the GPU", e));
        }
        p
    }

    fn put_u32(&self, slot: Slot, host: impl IntoIterator<Item = u32>) -> CUdeviceptr {
        let v: Vec<u32> = host.into_iter().collect();
        self.put(slot, &v)
    }

    /// `n` values at `ptr`, on the host (synchronises).
    fn get<T: Copy + Default>(&self, ptr: CUdeviceptr, n: usize) -> Vec<T> {
        let mut out = vec![T::default(); n];
        if n > 0 {
            self.bind();
            // SAFETY: `ptr` holds at least `n` values of `T` (the callers' views).
            unsafe { drv::memcpy_dtoh_async(&mut out, ptr, self.inner.stream.cu_stream()) }
                .unwrap_or_else(|e| fail("copying from the GPU", e));
            self.synchronize();
        }
        out
    }

    /// `c[m, n] = op(a) · op(b) + beta · c`, row-major operands (cuBLAS sees the transposed,
    /// column-major problem `cᵀ = op(b)ᵀ · op(a)ᵀ`), at the backend's precision when
    /// `mixed`, else fp32.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
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
    fn gemm_batched(
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

    fn fill_ptr(&self, p: CUdeviceptr, n: usize, v: f32) {
        self.launch_n("fill_f32", n, &[A::P(p), A::L(n as i64), A::F(v)]);
    }

    /// `dst[c] += Σ_r src[r, c]` over `rows` rows of `cols`, in a fixed order.
    fn col_sum(&self, dst: CUdeviceptr, src: CUdeviceptr, rows: usize, cols: usize) {
        self.col_sums("col_sum_partial", &[A::P(src)], dst, rows, cols);
    }

    /// `dst[c] += Σ_r f(r, c)` over `rows` rows of `cols`: the `partial` kernel (arguments:
    /// the partials, `inputs`, rows, cols) sums fixed groups of rows, then the groups are
    /// added in order.
    fn col_sums(&self, partial: &str, inputs: &[A], dst: CUdeviceptr, rows: usize, cols: usize) {
        if cols == 0 || rows == 0 {
            return;
        }
        let groups = GROUPS.min(rows);
        let part = self.scratch(Slot::Partial, groups * cols * 4);
        let grid = (cols.div_ceil(256) as u32, groups as u32, 1);
        let c = LaunchConfig { grid_dim: grid, block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut args = vec![A::P(part)];
        args.extend_from_slice(inputs);
        args.extend([A::L(rows as i64), A::I(cols as i32)]);
        self.launch(partial, c, &args);
        self.launch(
            "col_sum_finish",
            cfg(blocks(cols, 256), 256),
            &[A::P(dst), A::P(part), A::I(cols as i32), A::I(groups as i32)],
        );
    }

    /// The tied LM head over `targets.len()` rows of `h`, in chunks of the `logits` workspace:
    /// logits, then per row either the loss and `scale · (softmax − one-hot)` in place and the
    /// gradient products (`grads`), or log p(target). Returns the rows' NLL (with `grads`) or
    /// log-probabilities, on the host.
    #[allow(clippy::too_many_arguments)]
    fn lm_head(
        &self,
        logits: CMut<'_>,
        h: CRef<'_>,
        wte: CRef<'_>,
        bias: Option<CUdeviceptr>,
        targets: &[u32],
        d: usize,
        grads: Option<HeadGrads>,
    ) -> Vec<f32> {
        let v = wte.len / d;
        let rows = targets.len();
        check_targets(targets, v, logits.len);
        let chunk = (logits.len / v).min(rows).max(1);
        let tg = self.put(Slot::Idx1, targets);
        let per_row = self.scratch(Slot::Nll, rows * 4);
        let scale = grads.as_ref().map_or(1.0, |g| g.scale);
        for r0 in (0..rows).step_by(chunk) {
            let n = chunk.min(rows - r0);
            let hc = h.ptr + (r0 * d) as u64 * F4;
            self.gemm(logits.ptr, hc, false, wte.ptr, true, (n, v, d), 0.0, true);
            let args = [
                A::P(logits.ptr),
                A::P(bias.unwrap_or(0)),
                A::P(tg + r0 as u64 * 4),
                A::P(per_row + r0 as u64 * F4),
                A::I(v as i32),
                A::F(scale),
                A::I(grads.is_some() as i32),
            ];
            self.launch("crossentropy_rows", cfg(n as u32, 1024), &args);
            if let Some(g) = &grads {
                if let Some(db) = g.dbias {
                    self.col_sum(db, logits.ptr, n, v);
                }
                let dh = g.dh + (r0 * d) as u64 * F4;
                self.gemm(dh, logits.ptr, false, wte.ptr, false, (n, d, v), 0.0, true);
                self.gemm(g.dwte, logits.ptr, true, hc, false, (v, d, n), 1.0, true);
            }
        }
        self.get::<f32>(per_row, rows)
    }

    /// q, k, v of the fused `qkv` `[B, T, 3d]`, permuted to `[B, H, T, dh]` in scratch.
    fn heads_of(&self, qkv: CRef<'_>, s: Dims) -> [CUdeviceptr; 3] {
        let n = s.b * s.h * s.t * s.dh;
        let q = self.scratch(Slot::Qkv, 3 * n * 4);
        let (k, v) = (q + n as u64 * F4, q + 2 * n as u64 * F4);
        let [d0, d1, d2, d3] = dims_args(s);
        let args = [A::P(q), A::P(k), A::P(v), A::P(qkv.ptr), d0, d1, d2, d3];
        self.launch_n("permute_qkv", n, &args);
        [q, k, v]
    }

    /// `y` `[B, T, d]` from per-head `[B, H, T, dh]` rows, or back when `to_heads`.
    fn merge_heads(&self, y: CUdeviceptr, heads: CUdeviceptr, s: Dims, to_heads: bool) {
        let [d0, d1, d2, d3] = dims_args(s);
        let args = [A::P(y), A::P(heads), d0, d1, d2, d3, A::I(to_heads as i32)];
        self.launch_n("heads_merge", s.b * s.h * s.t * s.dh, &args);
    }

    /// The attention probabilities `att` (`n` of them) after dropout: copied into `scratch`
    /// with their masks when `drop` is active, else `att` itself.
    fn dropped(
        &self,
        scratch: CUdeviceptr,
        att: CUdeviceptr,
        n: usize,
        drop: Dropout,
    ) -> CUdeviceptr {
        if !drop.active() {
            return att;
        }
        let [kk, o, th, sc, _] = drop_args(drop);
        self.launch_n(
            "dropout_copy",
            n,
            &[A::P(scratch), A::P(att), A::L(n as i64), kk, o, th, sc],
        );
        scratch
    }

    /// One warp per row of `rows`.
    fn warp_rows(rows: usize) -> LaunchConfig {
        cfg(rows.div_ceil(8).max(1) as u32, 256)
    }
}

fn dev(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("CUDA: {what}: {e}"))
}

/// The start of the message of the panic that stops a run when CUDA fails inside a kernel
/// method (the trait's methods cannot return an error: the device is unusable, out of memory or
/// faulted). The `gpt1` command's panic hook turns such a panic into an `error:` line and exit
/// status 1; what was already written stays whole (files are written to a temporary name, then
/// renamed). Tests and other library users see the message as any panic's.
pub const FAILURE_PREFIX: &str = "CUDA error in ";

fn failure(what: &str, e: impl std::fmt::Display) -> String {
    let e = e.to_string();
    let fix = if e.contains("OUT_OF_MEMORY") || e.contains("ALLOC_FAILED") {
        ": the GPU's memory is exhausted; lower --batch (or split it with --micro-batch), --seq \
         or --num, or free the GPU of other processes (nvidia-smi)"
    } else {
        ""
    };
    format!("{FAILURE_PREFIX}{what}: {e}{fix}")
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("{}", failure(what, e))
}

fn check_ids(ids: &[u32], rows_of: usize, what: &str) {
    assert!(ids.iter().all(|&i| (i as usize) < rows_of), "{what}: id out of range {rows_of}");
}

/// Targets inside the vocabulary (or ignored) and room for one row of logits: the kernels
/// index with them unchecked (the CPU's slices would panic).
fn check_targets(targets: &[u32], v: usize, logits: usize) {
    assert!(logits >= v, "logits workspace of {logits} floats is less than one row of {v}");
    assert!(targets.iter().all(|&t| t == u32::MAX || (t as usize) < v), "target out of range {v}");
}

/// Positions grouped by id (ascending ids, positions in order): (ids, offsets, positions).
fn group_by_id(ids: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    order.sort_by_key(|&i| ids[i as usize]);
    let (mut uniq, mut offsets) = (Vec::new(), Vec::new());
    for (k, &i) in order.iter().enumerate() {
        if uniq.last() != Some(&ids[i as usize]) {
            uniq.push(ids[i as usize]);
            offsets.push(k as u32);
        }
    }
    offsets.push(order.len() as u32);
    (uniq, offsets, order)
}

#[allow(clippy::too_many_arguments)]
impl Backend for Cuda {
    type Buf = CudaBuf;
    type Ref<'a> = CRef<'a>;
    type Mut<'a> = CMut<'a>;

    fn pin<'a>(&self, weights: Self::Ref<'a>) -> Pinned<'a> {
        if self.inner.precision != Precision::Bf16 {
            return Pinned::none();
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let range = weights.ptr..weights.ptr + 4 * weights.len as CUdeviceptr;
        let pin = DevicePin { id, range, copies: Vec::new() };
        self.inner.pins.lock().unwrap_or_else(|e| e.into_inner()).push(pin);
        Pinned::new(PinGuard { inner: self.inner.clone(), id, _weights: PhantomData })
    }

    fn describe(&self) -> String {
        let i = &self.inner;
        match i.precision {
            Precision::Fp32 => {
                format!("cuda:{} {} ({}), fp32 cuBLAS products", i.ordinal, i.name, i.arch)
            }
            Precision::Bf16 => format!(
                "cuda:{} {} ({}), bf16 cuBLAS products, fp32 accumulation",
                i.ordinal, i.name, i.arch
            ),
        }
    }

    fn free_memory(&self) -> Option<u64> {
        Some(self.memory().0 as u64)
    }

    fn zeros(&self, n: usize) -> CudaBuf {
        if n == 0 {
            return CudaBuf { data: None, ptr: 0, len: 0 };
        }
        self.bind();
        let data = self.inner.stream.alloc_zeros::<f32>(n).unwrap_or_else(|e| {
            let (free, total) = self.memory();
            fail(
                &format!(
                    "allocating {} MiB (free {} of {} MiB)",
                    (n * 4) >> 20,
                    free >> 20,
                    total >> 20
                ),
                e,
            )
        });
        let (ptr, _) = data.device_ptr(&self.inner.stream);
        CudaBuf { data: Some(data), ptr, len: n }
    }
    fn upload(&self, host: &[f32]) -> CudaBuf {
        let b = self.zeros(host.len());
        if !host.is_empty() {
            self.bind();
            // SAFETY: `b` holds host.len() floats.
            unsafe { drv::memcpy_htod_async(b.ptr, host, self.inner.stream.cu_stream()) }
                .unwrap_or_else(|e| fail("copying to the GPU", e));
        }
        b
    }
    fn download<'a>(&self, x: Self::Ref<'a>) -> Cow<'a, [f32]> {
        Cow::Owned(self.get(x.ptr, x.len))
    }
    fn resize(&self, x: &mut CudaBuf, n: usize) {
        if n <= x.cap() {
            if n > x.len {
                self.fill_ptr(x.ptr + x.len as u64 * F4, n - x.len, 0.0);
            }
            x.len = n;
            return;
        }
        let fresh = self.zeros(n);
        if x.len > 0 {
            self.bind();
            // SAFETY: both hold at least x.len floats.
            unsafe {
                drv::memcpy_dtod_async(fresh.ptr, x.ptr, x.len * 4, self.inner.stream.cu_stream())
            }
            .unwrap_or_else(|e| fail("copying on the GPU", e));
        }
        *x = fresh;
    }
    fn len(x: CRef<'_>) -> usize {
        x.len
    }
    fn split<'a>(x: Self::Ref<'a>, at: usize) -> (Self::Ref<'a>, Self::Ref<'a>) {
        assert!(at <= x.len, "split at {at} of {}", x.len);
        (
            CRef { ptr: x.ptr, len: at, _p: PhantomData },
            CRef { ptr: x.ptr + at as u64 * F4, len: x.len - at, _p: PhantomData },
        )
    }
    fn split_mut<'a>(x: Self::Mut<'a>, at: usize) -> (Self::Mut<'a>, Self::Mut<'a>) {
        assert!(at <= x.len, "split at {at} of {}", x.len);
        (
            CMut { ptr: x.ptr, len: at, _p: PhantomData },
            CMut { ptr: x.ptr + at as u64 * F4, len: x.len - at, _p: PhantomData },
        )
    }
    fn reborrow<'s>(x: &'s mut CMut<'_>) -> CMut<'s> {
        CMut { ptr: x.ptr, len: x.len, _p: PhantomData }
    }
    fn fill(&self, x: CMut<'_>, v: f32) {
        self.fill_ptr(x.ptr, x.len, v);
    }

    fn gather_rows(&self, x: CRef<'_>, rows: &[usize], d: usize) -> Vec<f32> {
        let n = rows.len();
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        let out = self.scratch(Slot::Host, n * d * 4);
        self.launch_n(
            "copy_rows",
            n * d,
            &[A::P(out), A::P(x.ptr), A::P(r), A::I(n as i32), A::I(d as i32)],
        );
        self.get(out, n * d)
    }
    fn scatter_add_rows(&self, x: CMut<'_>, rows: &[usize], src: &[f32], d: usize) {
        let n = rows.len();
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        let s = self.put(Slot::Host, &src[..n * d]);
        self.launch_n(
            "add_rows",
            n * d,
            &[A::P(x.ptr), A::P(s), A::P(r), A::I(n as i32), A::I(d as i32)],
        );
    }
    fn copy_rows(&self, dst: CMut<'_>, src: CRef<'_>, rows: &[usize], d: usize) {
        let n = rows.len();
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        self.launch_n(
            "copy_rows",
            n * d,
            &[A::P(dst.ptr), A::P(src.ptr), A::P(r), A::I(n as i32), A::I(d as i32)],
        );
    }
    fn place_rows(&self, dst: CMut<'_>, src: CRef<'_>, rows: &[usize], d: usize) {
        let n = rows.len();
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        self.launch_n(
            "place_rows",
            n * d,
            &[A::P(dst.ptr), A::P(src.ptr), A::P(r), A::I(n as i32), A::I(d as i32)],
        );
    }

    fn encoder_forward(
        &self,
        out: CMut<'_>,
        ids: &[u32],
        wte: CRef<'_>,
        wpe: CRef<'_>,
        t: usize,
        d: usize,
    ) {
        check_ids(ids, wte.len / d, "encoder_forward");
        let i = self.put(Slot::Idx0, ids);
        let rows = ids.len();
        self.launch_n(
            "encoder_forward",
            rows * d,
            &[
                A::P(out.ptr),
                A::P(i),
                A::P(wte.ptr),
                A::P(wpe.ptr),
                A::L(rows as i64),
                A::I(t as i32),
                A::I(d as i32),
            ],
        );
    }
    fn encoder_rows(
        &self,
        out: CMut<'_>,
        ids: &[u32],
        rows: &[usize],
        wte: CRef<'_>,
        wpe: CRef<'_>,
        t: usize,
        d: usize,
    ) {
        check_ids(ids, wte.len / d, "encoder_rows");
        let n = ids.len().min(rows.len());
        let i = self.put(Slot::Idx0, &ids[..n]);
        let p = self.put_u32(Slot::Rows, rows[..n].iter().map(|&r| r as u32));
        self.launch_n(
            "encoder_rows",
            n * d,
            &[
                A::P(out.ptr),
                A::P(i),
                A::P(p),
                A::P(wte.ptr),
                A::P(wpe.ptr),
                A::I(n as i32),
                A::I(t as i32),
                A::I(d as i32),
            ],
        );
    }
    fn encoder_backward(
        &self,
        dwte: CMut<'_>,
        dwpe: CMut<'_>,
        dout: CRef<'_>,
        ids: &[u32],
        t: usize,
        d: usize,
    ) {
        self.embedding_backward(
            CMut { ptr: dwte.ptr, len: dwte.len, _p: PhantomData },
            dout,
            ids,
            d,
        );
        self.launch_n(
            "positions_backward",
            t * d,
            &[
                A::P(dwpe.ptr),
                A::P(dout.ptr),
                A::L(ids.len() as i64),
                A::I(t as i32),
                A::I(d as i32),
            ],
        );
    }
    fn dropout(&self, x: CMut<'_>, drop: Dropout) {
        if drop.active() {
            let [k, o, th, sc, _] = drop_args(drop);
            self.launch_n(
                "dropout_copy",
                x.len,
                &[A::P(x.ptr), A::P(x.ptr), A::L(x.len as i64), k, o, th, sc],
            );
        }
    }
    fn residual_forward(&self, out: CMut<'_>, x: CRef<'_>, a: CRef<'_>, drop: Dropout) {
        let [k, o, th, sc, act] = drop_args(drop);
        self.launch_n(
            "residual_forward",
            out.len,
            &[A::P(out.ptr), A::P(x.ptr), A::P(a.ptr), A::L(out.len as i64), k, o, th, sc, act],
        );
    }
    fn residual_backward(&self, out: CMut<'_>, g: CRef<'_>, drop: Dropout) {
        let drop = if drop.active() { drop } else { Dropout::OFF };
        let [k, o, th, sc, _] = drop_args(drop);
        // Inactive: threshold 0 keeps every element, scale 1/(1-0) = 1: a copy.
        self.launch_n(
            "dropout_copy",
            out.len,
            &[A::P(out.ptr), A::P(g.ptr), A::L(out.len as i64), k, o, th, sc],
        );
    }
    fn matmul(
        &self,
        c: CMut<'_>,
        a: CRef<'_>,
        a_t: bool,
        b: CRef<'_>,
        b_t: bool,
        m: usize,
        n: usize,
        k: usize,
        acc: bool,
    ) {
        self.gemm(c.ptr, a.ptr, a_t, b.ptr, b_t, (m, n, k), if acc { 1.0 } else { 0.0 }, true);
    }
    fn matmul_forward(
        &self,
        out: CMut<'_>,
        x: CRef<'_>,
        w: CRef<'_>,
        bias: CRef<'_>,
        rows: usize,
        k: usize,
        n: usize,
    ) {
        self.launch_n(
            "bias_broadcast",
            rows * n,
            &[A::P(out.ptr), A::P(bias.ptr), A::L(rows as i64), A::I(n as i32)],
        );
        self.gemm(out.ptr, x.ptr, false, w.ptr, false, (rows, n, k), 1.0, true);
    }
    fn matmul_backward(
        &self,
        dx: CMut<'_>,
        acc: bool,
        dw: CMut<'_>,
        dbias: CMut<'_>,
        dout: CRef<'_>,
        x: CRef<'_>,
        w: CRef<'_>,
        rows: usize,
        k: usize,
        n: usize,
    ) {
        self.gemm(
            dx.ptr,
            dout.ptr,
            false,
            w.ptr,
            true,
            (rows, k, n),
            if acc { 1.0 } else { 0.0 },
            true,
        );
        self.gemm(dw.ptr, x.ptr, true, dout.ptr, false, (k, n, rows), 1.0, true);
        self.col_sum(dbias.ptr, dout.ptr, rows, n);
    }
    fn layernorm_forward(
        &self,
        out: CMut<'_>,
        mean: CMut<'_>,
        rstd: CMut<'_>,
        x: CRef<'_>,
        g: CRef<'_>,
        b: CRef<'_>,
        d: usize,
        eps: f32,
    ) {
        let rows = mean.len;
        if rows > 0 {
            self.launch(
                "layernorm_forward",
                Self::warp_rows(rows),
                &[
                    A::P(out.ptr),
                    A::P(mean.ptr),
                    A::P(rstd.ptr),
                    A::P(x.ptr),
                    A::P(g.ptr),
                    A::P(b.ptr),
                    A::L(rows as i64),
                    A::I(d as i32),
                    A::F(eps),
                ],
            );
        }
    }
    fn layernorm_backward(
        &self,
        dx: CMut<'_>,
        dg: CMut<'_>,
        db: CMut<'_>,
        dout: CRef<'_>,
        x: CRef<'_>,
        mean: CRef<'_>,
        rstd: CRef<'_>,
        g: CRef<'_>,
        d: usize,
    ) {
        let rows = mean.len;
        if rows == 0 {
            return;
        }
        self.launch(
            "layernorm_backward_dx",
            Self::warp_rows(rows),
            &[
                A::P(dx.ptr),
                A::P(dout.ptr),
                A::P(x.ptr),
                A::P(mean.ptr),
                A::P(rstd.ptr),
                A::P(g.ptr),
                A::L(rows as i64),
                A::I(d as i32),
            ],
        );
        let inputs = [A::P(dout.ptr), A::P(x.ptr), A::P(mean.ptr), A::P(rstd.ptr)];
        self.col_sums("layernorm_dg_partial", &inputs, dg.ptr, rows, d);
        self.col_sum(db.ptr, dout.ptr, rows, d);
    }
    fn gelu_forward(&self, out: CMut<'_>, x: CRef<'_>) {
        self.launch_n("gelu_forward", out.len, &[A::P(out.ptr), A::P(x.ptr), A::L(out.len as i64)]);
    }
    fn gelu_backward(&self, dx: CMut<'_>, out: CMut<'_>, x: CRef<'_>) {
        assert!(out.len == dx.len && x.len == dx.len, "gelu backward: lengths differ");
        let args = [A::P(dx.ptr), A::P(out.ptr), A::P(x.ptr), A::L(dx.len as i64)];
        self.launch_n("gelu_backward", dx.len, &args);
    }
    fn attention_forward(
        &self,
        y: CMut<'_>,
        att: CMut<'_>,
        scratch: CMut<'_>,
        qkv: CRef<'_>,
        s: Dims,
        drop: Dropout,
    ) {
        let (b, t, h, dh) = (s.b, s.t, s.h, s.dh);
        let n = b * h * t * dh;
        let tt = b * h * t * t;
        assert!(att.len >= tt && y.len >= b * t * h * dh && qkv.len >= 3 * n, "attention shapes");
        assert!(!drop.active() || scratch.len >= tt, "attention dropout needs its scratch");
        if n == 0 {
            return;
        }
        let [q, k, v] = self.heads_of(qkv, s);
        let heads = self.scratch(Slot::Heads, n * 4);
        self.gemm_batched(att.ptr, q, false, k, true, (t, t, dh), b * h);
        let scale = 1.0 / (dh as f32).sqrt();
        let rows = b * h * t;
        self.launch(
            "softmax_causal",
            Self::warp_rows(rows),
            &[A::P(att.ptr), A::L(rows as i64), A::I(t as i32), A::F(scale)],
        );
        let probs = self.dropped(scratch.ptr, att.ptr, rows * t, drop);
        self.gemm_batched(heads, probs, false, v, false, (t, dh, t), b * h);
        self.merge_heads(y.ptr, heads, s, false);
    }
    fn attention_rows(&self, y: CMut<'_>, qkv: CRef<'_>, s: Dims, rows: &[usize]) {
        if rows.is_empty() {
            return;
        }
        let r = self.put_u32(Slot::Rows, rows.iter().map(|&r| r as u32));
        let probs = self.scratch(Slot::Probs, rows.len() * s.h * s.t * 4);
        let c = cfg((rows.len() * s.h) as u32, 128);
        let scale = 1.0 / (s.dh as f32).sqrt();
        self.launch(
            "attention_rows",
            c,
            &[
                A::P(y.ptr),
                A::P(qkv.ptr),
                A::P(r),
                A::P(probs),
                A::I(s.t as i32),
                A::I(s.h as i32),
                A::I(s.dh as i32),
                A::F(scale),
            ],
        );
    }
    fn attention_backward(
        &self,
        dqkv: CMut<'_>,
        scratch: CMut<'_>,
        dy: CRef<'_>,
        qkv: CRef<'_>,
        att: CRef<'_>,
        s: Dims,
        drop: Dropout,
    ) {
        let (b, t, h, dh) = (s.b, s.t, s.h, s.dh);
        let n = b * h * t * dh;
        assert!(scratch.len >= b * h * t * t && dqkv.len >= 3 * n, "attention shapes");
        if n == 0 {
            return;
        }
        let bh = b * h;
        // The forward's q, k, v again (permuting is cheaper than keeping them).
        let [q, k, v] = self.heads_of(qkv, s);
        let dq = self.scratch(Slot::Dqkv, 3 * n * 4);
        let (dk, dv) = (dq + n as u64 * F4, dq + 2 * n as u64 * F4);
        let dheads = self.scratch(Slot::Heads, n * 4);
        self.merge_heads(dy.ptr, dheads, s, true);
        let rows = bh * t;
        // ∂v = probs_droppedᵀ · ∂heads.
        let probs = self.dropped(scratch.ptr, att.ptr, rows * t, drop);
        self.gemm_batched(dv, probs, true, dheads, false, (t, dh, t), bh);
        // ∂probs_dropped = ∂heads · vᵀ, then through the dropout and the softmax.
        self.gemm_batched(scratch.ptr, dheads, false, v, true, (t, t, dh), bh);
        let [kk, o, th, sc, act] = drop_args(drop);
        let scale = 1.0 / (dh as f32).sqrt();
        self.launch(
            "softmax_causal_backward",
            Self::warp_rows(rows),
            &[
                A::P(scratch.ptr),
                A::P(att.ptr),
                A::L(rows as i64),
                A::I(t as i32),
                A::F(scale),
                kk,
                o,
                th,
                sc,
                act,
            ],
        );
        self.gemm_batched(dq, scratch.ptr, false, k, false, (t, dh, t), bh);
        self.gemm_batched(dk, scratch.ptr, true, q, false, (t, dh, t), bh);
        let [d0, d1, d2, d3] = dims_args(s);
        self.launch_n(
            "unpermute_qkv",
            n,
            &[A::P(dqkv.ptr), A::P(dq), A::P(dk), A::P(dv), d0, d1, d2, d3],
        );
    }
    fn crossentropy_forward_backward(
        &self,
        dh: CMut<'_>,
        dwte: CMut<'_>,
        bias: Option<(CRef<'_>, CMut<'_>)>,
        logits: CMut<'_>,
        h: CRef<'_>,
        wte: CRef<'_>,
        targets: &[u32],
        d: usize,
        scale: f32,
    ) -> f64 {
        let b = bias.as_ref().map(|(b, db)| (b.ptr, db.ptr));
        let grads = Some(HeadGrads { dh: dh.ptr, dwte: dwte.ptr, dbias: b.map(|x| x.1), scale });
        let nll = self.lm_head(logits, h, wte, b.map(|x| x.0), targets, d, grads);
        nll.iter().map(|&x| x as f64).sum()
    }
    fn logprobs(
        &self,
        out: &mut [f32],
        logits: CMut<'_>,
        h: CRef<'_>,
        wte: CRef<'_>,
        bias: Option<CRef<'_>>,
        targets: &[u32],
        d: usize,
    ) {
        let lp = self.lm_head(logits, h, wte, bias.map(|b| b.ptr), targets, d, None);
        out[..targets.len()].copy_from_slice(&lp);
    }

    fn embedding_forward(&self, out: CMut<'_>, table: CRef<'_>, ids: &[u32], d: usize) {
        check_ids(ids, table.len / d, "embedding_forward");
        let i = self.put(Slot::Idx0, ids);
        self.launch_n(
            "gather",
            ids.len() * d,
            &[A::P(out.ptr), A::P(table.ptr), A::P(i), A::L(ids.len() as i64), A::I(d as i32)],
        );
    }
    fn embedding_backward(&self, dtable: CMut<'_>, dout: CRef<'_>, ids: &[u32], d: usize) {
        check_ids(ids, dtable.len / d, "embedding_backward");
        if ids.is_empty() {
            return;
        }
        let (uniq, offsets, order) = group_by_id(ids);
        let u = self.put(Slot::Idx0, &uniq);
        let o = self.put(Slot::Idx1, &offsets);
        let p = self.put(Slot::Idx2, &order);
        self.launch(
            "scatter_add_sorted",
            cfg(uniq.len() as u32, 256),
            &[A::P(dtable.ptr), A::P(dout.ptr), A::P(u), A::P(o), A::P(p), A::I(d as i32)],
        );
    }
    fn add_biases(&self, x: CMut<'_>, b1: CRef<'_>, b2: CRef<'_>) {
        let n = b1.len;
        if let Some(rows) = x.len.checked_div(n) {
            self.launch_n(
                "add_biases",
                rows * n,
                &[A::P(x.ptr), A::P(b1.ptr), A::P(b2.ptr), A::L(rows as i64), A::I(n as i32)],
            );
        }
    }
    fn bias_backward(&self, dbias: CMut<'_>, dout: CRef<'_>, rows: usize) {
        self.col_sum(dbias.ptr, dout.ptr, rows, dbias.len);
    }
    fn lstm_cell_forward(
        &self,
        gates: CMut<'_>,
        c: CMut<'_>,
        h: CMut<'_>,
        step: usize,
        b: usize,
        hid: usize,
    ) {
        let r0 = step * b;
        let at = |p: CUdeviceptr, row: usize, w: usize| p + (row * w) as u64 * F4;
        let c_prev = if step > 0 { at(c.ptr, r0 - b, hid) } else { 0 };
        self.launch_n(
            "lstm_cell_forward",
            b * hid,
            &[
                A::P(at(gates.ptr, r0, 4 * hid)),
                A::P(at(c.ptr, r0, hid)),
                A::P(at(h.ptr, r0, hid)),
                A::P(c_prev),
                A::I(b as i32),
                A::I(hid as i32),
            ],
        );
    }
    fn lstm_cell_backward(
        &self,
        dgates: CMut<'_>,
        dc_next: CMut<'_>,
        dh: CRef<'_>,
        gates: CRef<'_>,
        c: CRef<'_>,
        step: usize,
        b: usize,
        hid: usize,
    ) {
        let r0 = step * b;
        let at = |p: CUdeviceptr, row: usize, w: usize| p + (row * w) as u64 * F4;
        let c_prev = if step > 0 { at(c.ptr, r0 - b, hid) } else { 0 };
        self.launch_n(
            "lstm_cell_backward",
            b * hid,
            &[
                A::P(at(dgates.ptr, r0, 4 * hid)),
                A::P(dc_next.ptr),
                A::P(at(dh.ptr, r0, hid)),
                A::P(at(gates.ptr, r0, 4 * hid)),
                A::P(at(c.ptr, r0, hid)),
                A::P(c_prev),
                A::I(b as i32),
                A::I(hid as i32),
            ],
        );
    }

    fn all_reduce_sum(&self, x: CMut<'_>, comm: &dyn crate::dist::Collective) {
        if comm.world() == 1 {
            return;
        }
        // NCCL on the device when every rank has it (decided once per run communicator).
        let key = comm as *const dyn crate::dist::Collective as *const () as usize;
        let mut st = self.inner.nccl.lock().unwrap_or_else(|e| e.into_inner());
        if st.as_ref().is_none_or(|(k, _)| *k != key) {
            self.bind();
            let c = if nccl::agreed(comm, self.gpu_identity()) {
                let c = nccl::connect(comm).map_err(|e| eprintln!("warning: {e}")).ok();
                // All on NCCL, or all through the host.
                if crate::dist::any(comm, c.is_none()) { None } else { c }
            } else {
                None
            };
            if c.is_none() && comm.rank() == 0 {
                eprintln!(
                    "gradient sums through the host (NCCL unavailable on some rank, GPUs shared, or GPT1_NCCL=0)"
                );
            }
            *st = Some((key, c));
        }
        if let Some((_, Some(c))) = &*st {
            self.bind();
            c.all_reduce_sum(x.ptr, x.len, &self.inner.stream)
                .unwrap_or_else(|e| fail("NCCL all-reduce", e));
            return;
        }
        drop(st);
        let mut host = self.get::<f32>(x.ptr, x.len);
        comm.all_reduce_f32(&mut host);
        self.bind();
        // SAFETY: `x` holds host.len() floats.
        unsafe { drv::memcpy_htod_async(x.ptr, &host, self.inner.stream.cu_stream()) }
            .unwrap_or_else(|e| fail("copying to the GPU", e));
    }

    fn sum_squares(&self, x: CRef<'_>) -> f64 {
        const CHUNK: usize = 1 << 16;
        if x.len == 0 {
            return 0.0;
        }
        let nb = x.len.div_ceil(CHUNK);
        let part = self.scratch(Slot::Partial, nb * 8);
        self.launch(
            "sum_squares_partial",
            cfg(nb as u32, 1024),
            &[A::P(part), A::P(x.ptr), A::L(x.len as i64), A::L(CHUNK as i64)],
        );
        self.get::<f64>(part, nb).iter().sum()
    }
    fn scale(&self, x: CMut<'_>, f: f32) {
        self.launch_n("scale_f32", x.len, &[A::P(x.ptr), A::L(x.len as i64), A::F(f)]);
    }
    fn adamw(&self, p: CMut<'_>, g: CRef<'_>, m: CMut<'_>, v: CMut<'_>, h: AdamStep) {
        self.launch_n(
            "adamw",
            p.len,
            &[
                A::P(p.ptr),
                A::P(g.ptr),
                A::P(m.ptr),
                A::P(v.ptr),
                A::L(p.len as i64),
                A::F(h.beta1),
                A::F(h.beta2),
                A::F(h.eps),
                A::F(h.step_size),
                A::F(h.bc2_sqrt),
                A::F(h.shrink),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_memory_failure_names_the_fix() {
        let caught = std::panic::catch_unwind(|| {
            fail("allocating scratch memory", "CUDA_ERROR_OUT_OF_MEMORY")
        });
        let payload = caught.expect_err("fail panics");
        let f = payload.downcast_ref::<String>().expect("a message");
        assert!(f.starts_with("CUDA error in allocating scratch memory: CUDA_ERROR_OUT_OF_MEMORY"));
        assert!(f.contains("lower --batch"), "{f}");
        assert!(failure("a product", "CUBLAS_STATUS_ALLOC_FAILED").contains("--batch"));
        assert!(!failure("a cuBLAS product", "CUBLAS_STATUS_EXECUTION_FAILED").contains("--batch"));
    }

    #[test]
    fn positions_are_grouped_by_id_in_order() {
        let (u, o, p) = group_by_id(&[5, 2, 5, 0, 2, 5]);
        assert_eq!(u, vec![0, 2, 5]);
        assert_eq!(o, vec![0, 1, 3, 6]);
        assert_eq!(p, vec![3, 1, 4, 0, 2, 5]);
        let (u, o, p) = group_by_id(&[]);
        assert!(u.is_empty() && p.is_empty());
        assert_eq!(o, vec![0]);
    }
}
