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
//!
//! The files, by concern (a child imports only from `mod.rs` and from files above it here):
//! - `mod.rs`: the [`Cuda`] type and its shared state, [`Cuda::new`] (driver, kernels, cuBLAS)
//!   and [`KERNEL_NAMES`].
//! - [`libs`] finds the CUDA libraries; [`compile`] runs NVRTC and keeps the compiled kernels on
//!   disk. The kernels' source, [`KERNELS`], is one program made of `kernels/`: the shared
//!   definitions (`common.cuh`) first, then one file per family.
//! - [`nccl`]: NCCL's all-reduce for data parallelism.
//! - `failure.rs`: CUDA's errors as [`Error::Device`] (setup) or as a panic (the kernel methods,
//!   which cannot return an error), with the fix for an exhausted GPU memory.
//! - `device.rs`: views and buffers, scratch slots, host-device copies, the bf16 copies of
//!   pinned weights, kernel launches and their arguments, column sums.
//! - `blas.rs`: cuBLAS's products, single and batched, fp32 or bf16 inputs.
//! - `attention.rs`, `head.rs` (the LM head and its loss), `embed.rs`: the larger operations'
//!   bodies, by family, so that `ops.rs` stays a table of short methods.
//! - `ops.rs`: `impl Backend for Cuda` (one block, as Rust requires).

pub mod compile;
pub mod libs;
pub mod nccl;

mod attention;
mod blas;
mod device;
mod embed;
mod failure;
mod head;
mod ops;

pub use compile::{KERNELS, compile_ptx, compile_source};
pub use device::{CMut, CRef, CudaBuf};
pub use failure::FAILURE_PREFIX;

use super::Precision;
use crate::error::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream};
use device::{DevicePin, Slot};
use failure::{dev, fail};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Every kernel of [`KERNELS`], loaded by name.
pub const KERNEL_NAMES: &[&str] = &[
    "fill_f32",
    "to_bf16",
    "copy_rows",
    "place_kv",
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

struct Inner {
    /// The run communicator (its address) NCCL was decided for, and its NCCL communicator
    /// (None: the ranks go through the host). First, so that it is destroyed before the
    /// context and stream (fields drop in order).
    nccl: Mutex<Option<(usize, Option<nccl::NcclComm>)>>,
    /// Pinned weights ([`Backend::pin`](super::Backend::pin)) and the bf16 copies the products made of them (before
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

impl Cuda {
    /// The GPU `ordinal` at `precision`: loads the driver, NVRTC and cuBLAS, compiles (or
    /// reads from the cache) the kernels for its architecture. Errors, never panics, when any
    /// of it is missing.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Self> {
        libs::require("cuda", "the NVIDIA driver")?;
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
}
