//! The compute seam: one model description, several places to run it.
//!
//! A [`Backend`] owns memory (parameters, gradients, optimizer moments, activations: all
//! [`Backend::Buf`]) and runs the model's kernels on it. [`crate::model::Gpt`],
//! [`crate::model::Activations`], [`crate::train::optim::AdamW`] and [`crate::train::Trainer`]
//! are generic over it; only checkpoint I/O, metrics and the task head's few extract rows cross
//! to the host ([`Backend::download`], [`Backend::gather_rows`], [`Backend::scatter_add_rows`]).
//!
//! Two backends: [`Cpu`] (the kernels of [`crate::kernels`], fp32 or bf16 products) and
//! [`Cuda`] (GPU memory, CUDA C kernels, cuBLAS). Each implements the same trait: its own
//! buffer type and views, and one method per
//! kernel; `Gpt::forward`/`backward` do not change. The gradient convention of every kernel is
//! written once, in [`crate::kernels`].
//!
//! Views: a buffer is read through [`Backend::Ref`] and written through [`Backend::Mut`] (for
//! the CPU, `&[f32]` and `&mut [f32]`); parameter and gradient views are cut from one flat
//! buffer with [`Backend::split`] / [`Backend::split_mut`] ([`crate::model::params::views`]).

mod cpu;
pub mod cuda;

pub use cpu::Cpu;
pub use cuda::Cuda;

/// The precision of the matrix products (`--precision`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32 (the default; bitwise the reference engine).
    #[default]
    Fp32,
    /// Mixed precision: bf16 inputs, fp32 accumulation, fp32 master weights and state.
    Bf16,
}

/// Where the model runs (`--device`): the CPU, or a CUDA GPU by ordinal (`cuda` alone: the
/// process's local rank under `mpirun`/`srun`, else 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(Option<usize>),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| Device::Cuda(Some(n)))
                .ok_or_else(|| format!("{s:?}: expected cpu, cuda or cuda:N (N a GPU's ordinal)")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(None) => write!(f, "cuda"),
            Device::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl Device {
    /// The GPU ordinal this process uses: the one named, else the launcher's local rank.
    pub fn ordinal(&self) -> usize {
        self.ordinal_from().0
    }

    /// [`Device::ordinal`] and where it came from (the flag, or the launcher's variable), for
    /// errors.
    fn ordinal_from(&self) -> (usize, String) {
        if let Device::Cuda(Some(n)) = self {
            return (*n, format!("--device cuda:{n}"));
        }
        ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"]
            .iter()
            .find_map(|v| {
                let n = std::env::var(v).ok()?.parse().ok()?;
                Some((n, format!("--device cuda (GPU {n}, from {v})")))
            })
            .unwrap_or((0, "--device cuda (GPU 0)".into()))
    }

    /// The GPU at `precision` (an error on the CPU device or a machine without one, naming
    /// where the GPU's number came from).
    pub fn cuda(&self, precision: Precision) -> crate::Result<Cuda> {
        let (ordinal, from) = self.ordinal_from();
        Cuda::new(ordinal, precision).map_err(|e| match e {
            crate::Error::Device(m) => crate::Error::Device(format!("{from}: {m}")),
            e => e,
        })
    }
}

/// An error when `bytes` (what `what` needs) exceed the device memory `backend` has free; Ok
/// on the CPU (the callers check the host's).
pub fn check_fits<B: Backend>(backend: &B, bytes: u64, what: &str) -> crate::Result<()> {
    match backend.free_memory() {
        Some(free) if bytes > free => Err(crate::Error::Device(format!(
            "{what} needs about {} MiB of device memory and {} MiB are free on {}",
            bytes >> 20,
            free >> 20,
            backend.describe()
        ))),
        _ => Ok(()),
    }
}

/// An error when `bytes` of new host buffers (what `what` allocates beyond what is already
/// there) exceed the memory the host has available: a clear `--batch` error instead of a failed
/// allocation or the out-of-memory killer. Ok where the host does not say (not Linux).
pub fn check_host(bytes: u64, what: &str) -> crate::Result<()> {
    match crate::sys::mem_available() {
        Some(avail) if bytes > avail => Err(crate::Error::setting(
            "batch",
            format!(
                "{what} needs about {:.1} GiB of memory and {:.1} GiB are available: lower --batch",
                bytes as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            ),
        )),
        _ => Ok(()),
    }
}

use crate::kernels::attention::{Dims, KvLayout};
use crate::kernels::dropout::Dropout;
use crate::kernels::optim::AdamStep;
use std::borrow::Cow;

/// What a backend keeps, derived from weights, while they are pinned ([`Backend::pin`]): in
/// bf16, the CPU's packed panels of the weights, the GPU's bf16 copies. It borrows the weights,
/// so they cannot change while it lives; dropping it frees what was kept.
pub struct Pinned<'a>(#[allow(dead_code)] Option<Box<dyn Send + 'a>>);

impl<'a> Pinned<'a> {
    /// Nothing kept (fp32, or a backend that derives nothing from its weights).
    pub fn none() -> Self {
        Pinned(None)
    }

    /// Keeps `guard` (whose drop ends the pin) until this drops.
    pub(crate) fn new(guard: impl Send + 'a) -> Self {
        Pinned(Some(Box::new(guard)))
    }
}

/// An owned buffer of f32 values in a backend's memory.
pub trait DeviceBuf<B: Backend>: Send + Sync {
    /// The whole buffer, read-only.
    fn r(&self) -> B::Ref<'_>;
    /// The whole buffer, writable.
    fn w(&mut self) -> B::Mut<'_>;
    fn len(&self) -> usize;
    /// The first `n` values, read-only (a block run on `n` rows of buffers sized for more).
    fn part(&self, n: usize) -> B::Ref<'_> {
        B::split(self.r(), n).0
    }
    /// The first `n` values, writable.
    fn part_mut(&mut self, n: usize) -> B::Mut<'_> {
        B::split_mut(self.w(), n).0
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A device and precision the model runs on. Shapes in the kernel docs: `B` sequences of `T`
/// positions, `d` model width, `V` vocabulary, `rows` = B·T flattened positions.
#[allow(clippy::too_many_arguments)]
pub trait Backend: Clone + Send + Sync + 'static {
    type Buf: DeviceBuf<Self>;
    type Ref<'a>: Copy + Send + Sync;
    type Mut<'a>: Send;

    /// What runs the kernels, for logs (e.g. `cpu fp32 (gemm, AVX-512)`).
    fn describe(&self) -> String;

    /// Bytes of device memory free now, where the backend's memory is not the host's (the
    /// host's is checked by the callers).
    fn free_memory(&self) -> Option<u64> {
        None
    }

    /// Pins `weights` for inference: until the guard drops, products reading them may keep
    /// what they derive from them (the CPU's bf16 packing) instead of deriving it at every call.
    /// Generation, scoring and evaluation pin their model; training, whose weights change at
    /// every step, pins only within a pass: the LSTM's `W_hh` for its T - 1 recurrent products.
    /// Results are bitwise those of unpinned products.
    fn pin<'a>(&self, weights: Self::Ref<'a>) -> Pinned<'a> {
        let _ = weights;
        Pinned::none()
    }

    /// Where this backend's products of `m` rows read a row-major `w` (`[k, n]`) faster stored
    /// transposed and the caller repeats them with the same `w` (the LSTM's backward
    /// `dG_t · W_hh`, once per step): writes that copy (`[n, k]`) into `copy` (sized here, its
    /// memory kept from call to call) and returns true; the caller then computes `x · w` as
    /// `x · copyᵀ`, a different fixed order of the same sums. False (the default, `copy`
    /// untouched) where the layout makes no difference: cuBLAS reads either, and the CPU's
    /// bf16 products keep pinned panels.
    fn transposed_for_rows(
        &self,
        copy: &mut Self::Buf,
        w: Self::Ref<'_>,
        m: usize,
        k: usize,
        n: usize,
    ) -> bool {
        let _ = (copy, w, m, k, n);
        false
    }

    /// Runs `step`, a decode step of `rows` rows (a few rows through every layer: dozens of
    /// small ops). A backend may keep its threads ready between the ops for its duration (the
    /// CPU's spinning team, `kernels::parallel`); results are the same either way.
    fn decode_step(&self, rows: usize, step: &mut dyn FnMut()) {
        let _ = rows;
        step()
    }

    // ---- memory ----
    fn zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, host: &[f32]) -> Self::Buf;
    /// The values on the host (borrowed where the backend's memory is the host's).
    fn download<'a>(&self, x: Self::Ref<'a>) -> Cow<'a, [f32]>;
    /// Sets the buffer's length to `n` (within what it was made for: no reallocation once
    /// sized, so batches of varying shape share one set of activations).
    fn resize(&self, x: &mut Self::Buf, n: usize);
    fn len(x: Self::Ref<'_>) -> usize;
    fn split<'a>(x: Self::Ref<'a>, at: usize) -> (Self::Ref<'a>, Self::Ref<'a>);
    fn split_mut<'a>(x: Self::Mut<'a>, at: usize) -> (Self::Mut<'a>, Self::Mut<'a>);
    /// Elements `start..start + n` of a view.
    fn sub<'a>(x: Self::Ref<'a>, start: usize, n: usize) -> Self::Ref<'a> {
        Self::split(Self::split(x, start).1, n).0
    }
    /// Elements `start..start + n` of a writable view.
    fn sub_mut<'a>(x: Self::Mut<'a>, start: usize, n: usize) -> Self::Mut<'a> {
        Self::split_mut(Self::split_mut(x, start).1, n).0
    }
    /// A shorter-lived writable view of the same elements.
    fn reborrow<'s>(x: &'s mut Self::Mut<'_>) -> Self::Mut<'s>;
    fn fill(&self, x: Self::Mut<'_>, v: f32);

    // ---- host crossings of the task head: its few extract rows ----
    /// Rows `rows` of `x` `[_, d]`, on the host, `[rows.len(), d]`.
    fn gather_rows(&self, x: Self::Ref<'_>, rows: &[usize], d: usize) -> Vec<f32>;
    /// `x[rows[i]] += src[i]` for host rows `src` `[rows.len(), d]` (distinct rows).
    fn scatter_add_rows(&self, x: Self::Mut<'_>, rows: &[usize], src: &[f32], d: usize);
    /// `dst[i] = src[rows[i]]`, `[rows.len(), d]`, on the device.
    fn copy_rows(&self, dst: Self::Mut<'_>, src: Self::Ref<'_>, rows: &[usize], d: usize);
    /// The keys and values of the flat positions `rows` of `[B, T]`, from their own q/k/v
    /// projection `fresh` `[rows.len(), 3d]`, into the cache `kv` laid out as `layout`.
    fn place_kv(
        &self,
        kv: Self::Mut<'_>,
        layout: KvLayout,
        fresh: Self::Ref<'_>,
        s: Dims,
        rows: &[usize],
    );

    // ---- the model's kernels, each forward beside its backward ----
    /// `out[r] = wte[ids[r]] + wpe[r % t]`, `out` `[rows, d]`.
    fn encoder_forward(
        &self,
        out: Self::Mut<'_>,
        ids: &[u32],
        wte: Self::Ref<'_>,
        wpe: Self::Ref<'_>,
        t: usize,
        d: usize,
    );
    /// `out[i] = wte[ids[i]] + wpe[rows[i] % t]`, `out` `[rows.len(), d]`: the embeddings of
    /// some positions only (a decode step).
    fn encoder_rows(
        &self,
        out: Self::Mut<'_>,
        ids: &[u32],
        rows: &[usize],
        wte: Self::Ref<'_>,
        wpe: Self::Ref<'_>,
        t: usize,
        d: usize,
    );
    fn encoder_backward(
        &self,
        dwte: Self::Mut<'_>,
        dwpe: Self::Mut<'_>,
        dout: Self::Ref<'_>,
        ids: &[u32],
        t: usize,
        d: usize,
    );
    /// `x *= mask / (1 - p)` (forward and backward alike).
    fn dropout(&self, x: Self::Mut<'_>, drop: Dropout);
    /// `out = x + dropout(a)`, the residual connection.
    fn residual_forward(
        &self,
        out: Self::Mut<'_>,
        x: Self::Ref<'_>,
        a: Self::Ref<'_>,
        drop: Dropout,
    );
    /// `out = dropout'(g)`: the gradient reaching a residual's dropped branch.
    fn residual_backward(&self, out: Self::Mut<'_>, g: Self::Ref<'_>, drop: Dropout);
    /// `c[m, n] (+)= op(a) · op(b)`, row-major operands, `op` the transpose where asked.
    fn matmul(
        &self,
        c: Self::Mut<'_>,
        a: Self::Ref<'_>,
        a_t: bool,
        b: Self::Ref<'_>,
        b_t: bool,
        m: usize,
        n: usize,
        k: usize,
        acc: bool,
    );
    /// `out[rows, n] = x[rows, k] · w[k, n] + bias`.
    fn matmul_forward(
        &self,
        out: Self::Mut<'_>,
        x: Self::Ref<'_>,
        w: Self::Ref<'_>,
        bias: Self::Ref<'_>,
        rows: usize,
        k: usize,
        n: usize,
    );
    /// `dx` (assigned, or accumulated when `acc`), `dw` and `dbias` accumulated.
    fn matmul_backward(
        &self,
        dx: Self::Mut<'_>,
        acc: bool,
        dw: Self::Mut<'_>,
        dbias: Self::Mut<'_>,
        dout: Self::Ref<'_>,
        x: Self::Ref<'_>,
        w: Self::Ref<'_>,
        rows: usize,
        k: usize,
        n: usize,
    );
    /// `out = (x - mean) · rstd · g + b` per row of `d`; saves `mean`, `rstd` `[rows]`.
    fn layernorm_forward(
        &self,
        out: Self::Mut<'_>,
        mean: Self::Mut<'_>,
        rstd: Self::Mut<'_>,
        x: Self::Ref<'_>,
        g: Self::Ref<'_>,
        b: Self::Ref<'_>,
        d: usize,
        eps: f32,
    );
    fn layernorm_backward(
        &self,
        dx: Self::Mut<'_>,
        dg: Self::Mut<'_>,
        db: Self::Mut<'_>,
        dout: Self::Ref<'_>,
        x: Self::Ref<'_>,
        mean: Self::Ref<'_>,
        rstd: Self::Ref<'_>,
        g: Self::Ref<'_>,
        d: usize,
    );
    fn gelu_forward(&self, out: Self::Mut<'_>, x: Self::Ref<'_>);
    /// `dx *= gelu'(x)` in place, and `out = gelu(x)` (bitwise `gelu_forward`'s): the
    /// backward pass recomputes the GELU its weight gradient reads from the same tanh.
    fn gelu_backward(&self, dx: Self::Mut<'_>, out: Self::Mut<'_>, x: Self::Ref<'_>);
    /// Whether [`Backend::attention_forward`] keeps each block's `[B, H, T, T]` probabilities for
    /// the backward pass (and uses a `[B, H, T, T]` scratch). The CPU does not: it recomputes
    /// each head's probabilities in the backward pass, so both buffers are empty there.
    fn keeps_attention_probs(&self) -> bool;
    /// Causal attention over the fused `qkv` `[B, T, 3d]` for every position: `y` `[B, T, d]`,
    /// `att` `[B, H, T, T]` the probabilities before dropout, `scratch` (same size) the dropped
    /// ones when dropout is active; both empty where the backend does not
    /// [keep them](Backend::keeps_attention_probs).
    fn attention_forward(
        &self,
        y: Self::Mut<'_>,
        att: Self::Mut<'_>,
        scratch: Self::Mut<'_>,
        qkv: Self::Ref<'_>,
        s: Dims,
        drop: Dropout,
    );
    /// The outputs `[rows.len(), d]` at the flat positions `rows` of `[B, T]` only, each
    /// against its own sequence's keys and values up to itself (the cache), without dropout.
    /// `q`: the rows' own `[rows.len(), 3d]` q/k/v projection (the queries are read); `kv`: the
    /// cache, laid out as `layout` says (decoding's [`KvLayout::heads`], or the forward pass's
    /// `[B, T, 3d]` projection from its keys on, [`KvLayout::rows`] with `ld` = 3d).
    fn attention_rows(
        &self,
        y: Self::Mut<'_>,
        q: Self::Ref<'_>,
        kv: Self::Ref<'_>,
        layout: KvLayout,
        s: Dims,
        rows: &[usize],
    );
    /// `dqkv` (assigned) from `dy`; `scratch` `[B, H, T, T]` workspace and `att` the forward
    /// pass's probabilities, both empty where the backend does not
    /// [keep them](Backend::keeps_attention_probs).
    fn attention_backward(
        &self,
        dqkv: Self::Mut<'_>,
        scratch: Self::Mut<'_>,
        dy: Self::Ref<'_>,
        qkv: Self::Ref<'_>,
        att: Self::Ref<'_>,
        s: Dims,
        drop: Dropout,
    );
    /// The tied LM head and softmax cross-entropy of `scale · Σ −log p(targets | h)`, fused in
    /// row chunks (`logits` is `[min(rows, CHUNK), V]` workspace): `dh` assigned, `dwte`
    /// accumulated; returns the unscaled NLL sum of the counted targets. `bias`: an output
    /// layer with a bias (`nn.Linear`, the LSTM's), `(b, ∂b)` with `∂b` accumulated.
    fn crossentropy_forward_backward(
        &self,
        dh: Self::Mut<'_>,
        dwte: Self::Mut<'_>,
        bias: Option<(Self::Ref<'_>, Self::Mut<'_>)>,
        logits: Self::Mut<'_>,
        h: Self::Ref<'_>,
        wte: Self::Ref<'_>,
        targets: &[u32],
        d: usize,
        scale: f32,
    ) -> f64;
    /// `out[r]` = log p(targets[r] | h[r]) on the host (0 for ignored targets); `bias` as in
    /// [`Backend::crossentropy_forward_backward`].
    fn logprobs(
        &self,
        out: &mut [f32],
        logits: Self::Mut<'_>,
        h: Self::Ref<'_>,
        wte: Self::Ref<'_>,
        bias: Option<Self::Ref<'_>>,
        targets: &[u32],
        d: usize,
    );

    // ---- the LSTM baseline's kernels (time-major rows, `row = step·B + seq`) ----
    /// `out[i] = table[ids[i]]`, `out` `[ids.len(), d]` (an embedding without positions).
    fn embedding_forward(&self, out: Self::Mut<'_>, table: Self::Ref<'_>, ids: &[u32], d: usize);
    /// `dtable[ids[i]] += dout[i]`.
    fn embedding_backward(&self, dtable: Self::Mut<'_>, dout: Self::Ref<'_>, ids: &[u32], d: usize);
    /// `x[r] += b1 + b2` for every row of `x` `[rows, b1.len()]`.
    fn add_biases(&self, x: Self::Mut<'_>, b1: Self::Ref<'_>, b2: Self::Ref<'_>);
    /// `dbias[c] += Σ_r dout[r, c]` over `rows` rows: a bias's gradient.
    fn bias_backward(&self, dbias: Self::Mut<'_>, dout: Self::Ref<'_>, rows: usize);
    /// Step `step` of the recurrence for its `b` rows of the `[T·B, ·]` buffers: `gates`
    /// `[T·B, 4H]` pre-activations (i, f, g, o) in, activations out; cells `c` and outputs `h`
    /// `[T·B, H]` assigned from the previous step's cells (zero at step 0).
    fn lstm_cell_forward(
        &self,
        gates: Self::Mut<'_>,
        c: Self::Mut<'_>,
        h: Self::Mut<'_>,
        step: usize,
        b: usize,
        hid: usize,
    );
    /// Step `step` backward: `dgates` rows of the step assigned (pre-activation gradients) from
    /// `dh` `[T·B, H]` (the outputs' whole gradient, step + 1's `dG · W_hh` included);
    /// `dc_next` `[B, H]` is ∂L/∂c from step + 1 in (zero at the last step), ∂L/∂c_{step-1} out.
    fn lstm_cell_backward(
        &self,
        dgates: Self::Mut<'_>,
        dc_next: Self::Mut<'_>,
        dh: Self::Ref<'_>,
        gates: Self::Ref<'_>,
        c: Self::Ref<'_>,
        step: usize,
        b: usize,
        hid: usize,
    );

    // ---- data parallelism ----
    /// Sums `x` over the ranks of `comm` in place: the CPU hands its buffer to the communicator,
    /// the GPU sums on the devices with NCCL (through the host when a rank lacks NCCL).
    fn all_reduce_sum(&self, x: Self::Mut<'_>, comm: &dyn crate::dist::Collective);

    // ---- optimizer ----
    /// Σ x² in f64, in an order that does not depend on the thread count.
    fn sum_squares(&self, x: Self::Ref<'_>) -> f64;
    fn scale(&self, x: Self::Mut<'_>, f: f32);
    /// One AdamW update of a parameter group.
    fn adamw(
        &self,
        p: Self::Mut<'_>,
        g: Self::Ref<'_>,
        m: Self::Mut<'_>,
        v: Self::Mut<'_>,
        h: AdamStep,
    );
}
