//! Preallocated activations and gradient workspaces, owned by the backend. Shapes: `B`
//! sequences of `T` positions, `d` = n_embd, `H` heads, `V` vocabulary.

use super::config::Config;
use crate::backend::{Backend, DeviceBuf, Precision};
use crate::kernels::crossentropy;

/// What one block keeps for its backward pass.
pub(crate) struct LayerActs<Buf> {
    /// `[B, T, 3d]` fused q/k/v projection; also the block's key/value cache for
    /// [`super::Gpt::block`] on a subset of rows. In decoding's activations
    /// ([`Activations::decoding_on`]) it is only that cache, `[B, H, 2, T, dh]`: each head's
    /// keys for every position, then its values (`attention::KvLayout::heads`).
    pub qkv: Buf,
    /// `[B, H, T, T]` attention probabilities before dropout (zero above the diagonal), where
    /// the backend keeps them ([`Backend::keeps_attention_probs`]); else empty.
    pub att: Buf,
    /// `[B, T, d]` attention output, heads concatenated.
    pub atty: Buf,
    /// `[B, T, d]` `x + dropout(atty · W_proj + b)`.
    pub r1: Buf,
    /// `[B, T, d]` LayerNorm of `r1`, and its `[B, T]` mean and reciprocal std.
    pub ln1: Buf,
    pub ln1_mean: Buf,
    pub ln1_rstd: Buf,
    /// `[B, T, 4d]` the feed-forward's first product (its GELU is recomputed in the backward
    /// pass: [`Activations::gelu`]).
    pub fch: Buf,
    /// `[B, T, d]` `ln1 + dropout(gelu(fch) · W_mproj + b)`.
    pub r2: Buf,
    /// `[B, T, d]` LayerNorm of `r2`: the block's output; `[B, T]` statistics.
    pub ln2: Buf,
    pub ln2_mean: Buf,
    pub ln2_rstd: Buf,
}

impl<Buf> LayerActs<Buf> {
    fn bufs(&self) -> [&Buf; 12] {
        [
            &self.qkv,
            &self.att,
            &self.atty,
            &self.r1,
            &self.ln1,
            &self.ln1_mean,
            &self.ln1_rstd,
            &self.fch,
            &self.r2,
            &self.ln2,
            &self.ln2_mean,
            &self.ln2_rstd,
        ]
    }
    fn bufs_mut(&mut self) -> [&mut Buf; 12] {
        let a = self;
        [
            &mut a.qkv,
            &mut a.att,
            &mut a.atty,
            &mut a.r1,
            &mut a.ln1,
            &mut a.ln1_mean,
            &mut a.ln1_rstd,
            &mut a.fch,
            &mut a.r2,
            &mut a.ln2,
            &mut a.ln2_mean,
            &mut a.ln2_rstd,
        ]
    }
}

/// Gradient workspaces shared by all blocks (training only).
pub(crate) struct GradBufs<Buf> {
    /// `[B, T, d]` ∂L/∂(a block's output), then ∂L/∂(its input).
    pub g_x: Buf,
    /// `[B, T, d]` ∂L/∂r (the residual sums).
    pub g_r: Buf,
    /// `[B, T, d]` ∂L/∂(a residual branch) after dropout.
    pub g_tmp: Buf,
    /// `[B, T, 4d]` ∂L/∂fch.
    pub g_4d: Buf,
    /// `[B, T, 3d]` ∂L/∂qkv.
    pub g_qkv: Buf,
}

impl<Buf> GradBufs<Buf> {
    fn bufs(&self) -> [&Buf; 5] {
        [&self.g_x, &self.g_r, &self.g_tmp, &self.g_4d, &self.g_qkv]
    }
    fn bufs_mut(&mut self) -> [&mut Buf; 5] {
        [&mut self.g_x, &mut self.g_r, &mut self.g_tmp, &mut self.g_4d, &mut self.g_qkv]
    }
}

/// Preallocated activations for batches of `b` sequences of length `t`.
pub struct Activations<B: Backend> {
    pub b: usize,
    pub t: usize,
    /// The (B, T) the buffers were made for.
    max: (usize, usize),
    /// (n_embd, n_head, vocab_size).
    dims: (usize, usize, usize),
    training: bool,
    /// Only blocks on subsets of rows run (generation): no attention probabilities are kept.
    pub(crate) decode_only: bool,
    backend: B,
    /// `[B, T, d]` token + position embeddings (after dropout).
    pub(crate) encoded: B::Buf,
    pub(crate) layers: Vec<LayerActs<B::Buf>>,
    /// `[B, T, d]` a residual branch's product before dropout.
    pub(crate) tmp: B::Buf,
    /// `[B, T, 4d]` GELU of one block's `fch`: written by its forward pass and recomputed by its
    /// backward pass (llm.c's recomputation, here from the tanh the GELU gradient computes
    /// anyway), so the blocks share one buffer instead of keeping one each (at GPT-1's size,
    /// 4 × 512: 277 MB less; the recomputation gives the same values, bitwise).
    pub(crate) gelu: B::Buf,
    /// `[B, T, d]` the inputs of the rows a subset-of-rows block runs on.
    pub(crate) x_rows: B::Buf,
    /// `[B, H, T, T]` dropped-out attention probabilities (training), ∂P in the backward pass,
    /// where the backend keeps the probabilities; else empty.
    pub(crate) att_scratch: B::Buf,
    /// `[min(B·T, CHUNK), V]` the LM head's logits, one row chunk at a time.
    pub(crate) logits: B::Buf,
    pub(crate) grads: Option<GradBufs<B::Buf>>,
}

impl<B: Backend> Activations<B> {
    /// `training` adds the gradient workspaces and the attention dropout scratch.
    pub fn new_on(backend: &B, c: &Config, b: usize, t: usize, training: bool) -> Self {
        let e = || backend.zeros(0);
        let empty = || LayerActs {
            qkv: e(),
            att: e(),
            atty: e(),
            r1: e(),
            ln1: e(),
            ln1_mean: e(),
            ln1_rstd: e(),
            fch: e(),
            r2: e(),
            ln2: e(),
            ln2_mean: e(),
            ln2_rstd: e(),
        };
        let mut a = Activations {
            b,
            t,
            max: (b, t),
            dims: (c.n_embd, c.n_head, c.vocab_size),
            training,
            decode_only: false,
            backend: backend.clone(),
            encoded: e(),
            layers: (0..c.n_layer).map(|_| empty()).collect(),
            tmp: e(),
            gelu: e(),
            x_rows: e(),
            att_scratch: e(),
            logits: e(),
            grads: training.then(|| GradBufs {
                g_x: e(),
                g_r: e(),
                g_tmp: e(),
                g_4d: e(),
                g_qkv: e(),
            }),
        };
        a.size_buffers(b, t);
        a
    }

    /// Activations for generation only ([`crate::model::Gpt::forward_cached`] and
    /// `cached_logits`): no `[B, H, T, T]` attention probabilities on any backend (blocks on
    /// subsets of rows never keep them; at GPT-1's size a GPU's would be 150 MB per sequence),
    /// and each block's `qkv` only its keys and values.
    pub fn decoding_on(backend: &B, c: &Config, b: usize, t: usize) -> Self {
        let mut a = Self::new_on(backend, c, 0, 0, false);
        a.decode_only = true;
        a.max = (b, t);
        a.reshape(b, t);
        a
    }

    /// Whether [`Activations::reshape`] can take `b` sequences of length `t`.
    pub fn fits(&self, b: usize, t: usize) -> bool {
        b * t <= self.max.0 * self.max.1 && b <= self.max.0 && t <= self.max.1
    }

    /// Reuses the buffers for `b` sequences of length `t` (each at most what they were made
    /// for): no allocation, so batches of varying length share one set.
    pub fn reshape(&mut self, b: usize, t: usize) {
        assert!(self.fits(b, t), "reshape beyond the allocated size");
        self.b = b;
        self.t = t;
        self.size_buffers(b, t);
    }

    fn size_buffers(&mut self, b: usize, t: usize) {
        let probs = !self.decode_only && self.backend.keeps_attention_probs();
        let (layer, shared, grads) = sizes(self.dims, b, t, self.training, self.decode_only, probs);
        let be = &self.backend;
        for a in &mut self.layers {
            a.bufs_mut().into_iter().zip(layer).for_each(|(x, n)| be.resize(x, n));
        }
        let all = [
            &mut self.encoded,
            &mut self.tmp,
            &mut self.gelu,
            &mut self.x_rows,
            &mut self.att_scratch,
            &mut self.logits,
        ];
        all.into_iter().zip(shared).for_each(|(x, n)| be.resize(x, n));
        if let Some(g) = &mut self.grads {
            g.bufs_mut().into_iter().zip(grads).for_each(|(x, n)| be.resize(x, n));
        }
    }

    /// Values held in every buffer.
    pub fn len(&self) -> usize {
        let layers: usize =
            self.layers.iter().map(|a| a.bufs().iter().map(|x| x.len()).sum::<usize>()).sum();
        let shared =
            [&self.encoded, &self.tmp, &self.gelu, &self.x_rows, &self.att_scratch, &self.logits];
        let grads = self.grads.as_ref().map_or(0, |g| g.bufs().iter().map(|x| x.len()).sum());
        layers + shared.iter().map(|x| x.len()).sum::<usize>() + grads
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last block's output, `[B, T, d]`, after a forward pass.
    pub fn hidden(&self) -> B::Ref<'_> {
        self.layers.last().expect("n_layer > 0").ln2.r()
    }

    /// The first `n` values of [`Activations::hidden`] (the first rows).
    pub fn hidden_part(&self, n: usize) -> B::Ref<'_> {
        self.layers.last().expect("n_layer > 0").ln2.part(n)
    }
}

/// Bytes the activations (and, for training, the gradient workspaces) of `b` sequences of `t`
/// tokens take: the sizes [`Activations::new_on`] allocates. `probs`: on a backend that keeps
/// the attention probabilities ([`Backend::keeps_attention_probs`]: a GPU's, not the CPU's),
/// `B·H·T²` floats more per block and, for training, one more set.
pub fn activation_bytes(c: &Config, b: usize, t: usize, training: bool, probs: bool) -> usize {
    let dims = (c.n_embd, c.n_head, c.vocab_size);
    let (layer, shared, grads) = sizes(dims, b, t, training, false, probs);
    let grads: usize = if training { grads.iter().sum() } else { 0 };
    4 * (c.n_layer * layer.iter().sum::<usize>() + shared.iter().sum::<usize>() + grads)
}

/// Device bytes a bf16 run needs beyond its fp32 buffers on a GPU (0 in fp32): the scratch
/// holding the bf16 copies of the largest operands of a product (`a`: attention's
/// probabilities, a weight gradient's input, or a chunk of the LM head's logits gradient; `b`:
/// the embedding or a weight gradient's output gradient) and, when `pinned` (inference,
/// fine-tuning's dev evaluations), a bf16 copy of every weight.
pub fn bf16_bytes(c: &Config, precision: Precision, b: usize, t: usize, pinned: bool) -> usize {
    bf16_parts(c, precision, b, t, pinned, true)
}

/// [`bf16_bytes`], with attention's probabilities among the operands only when `probs` (a
/// decoding step attends without them).
fn bf16_parts(c: &Config, p: Precision, b: usize, t: usize, pinned: bool, probs: bool) -> usize {
    if p != Precision::Bf16 {
        return 0;
    }
    let (bt, d, v) = (b * t, c.n_embd, c.vocab_size);
    let att = if probs { b * c.n_head * t * t } else { 0 };
    let a = att.max(4 * d * bt).max(bt.min(crossentropy::CHUNK) * v);
    let bb = (v * d).max(4 * d * bt);
    let weights = if pinned { super::params::num_params(c) } else { 0 };
    2 * (a + bb + weights)
}

/// Bytes inference over batches of up to `b × t` tokens needs: the weights, one batch's
/// activations and, in bf16, [`bf16_bytes`] with pinned weights. `probs`: on a backend that
/// keeps the attention probabilities ([`Backend::keeps_attention_probs`]: a GPU's).
pub fn inference_bytes(c: &Config, precision: Precision, b: usize, t: usize, probs: bool) -> u64 {
    let weights = 4 * super::params::num_params(c);
    let acts = activation_bytes(c, b, t, false, probs);
    (weights + acts + bf16_bytes(c, precision, b, t, true)) as u64
}

/// Bytes generating `b` sequences of up to `t` tokens needs: the weights, decoding's
/// activations ([`Activations::decoding_on`]: no attention probabilities on any backend, keys
/// and values only) and, in bf16, the products' copies without attention's probabilities.
/// [`inference_bytes`] counted a full forward pass's, about 1.2 GB too many at GPT-1's size
/// with 8 × 512 on a GPU.
pub fn decoding_bytes(c: &Config, precision: Precision, b: usize, t: usize) -> u64 {
    let weights = 4 * super::params::num_params(c);
    let (layer, shared, _) = sizes((c.n_embd, c.n_head, c.vocab_size), b, t, false, true, false);
    let acts = 4 * (c.n_layer * layer.iter().sum::<usize>() + shared.iter().sum::<usize>());
    (weights + acts + bf16_parts(c, precision, b, t, true, false)) as u64
}

/// The length of every buffer for `b` sequences of `t` tokens — one block's (in
/// [`LayerActs::bufs_mut`] order), the shared ones (encoded, tmp, gelu, x_rows, att_scratch,
/// logits)
/// and the gradient workspaces ([`GradBufs::bufs_mut`] order): the one place sizes are written.
/// `probs`: the attention probabilities are kept ([`Backend::keeps_attention_probs`]).
fn sizes(
    (d, h, v): (usize, usize, usize),
    b: usize,
    t: usize,
    training: bool,
    decode_only: bool,
    probs: bool,
) -> ([usize; 12], [usize; 6], [usize; 5]) {
    let bt = b * t;
    let att = if probs { b * h * t * t } else { 0 };
    // Decoding keeps only the keys and values (`LayerActs::qkv`).
    let qkv = if decode_only { 2 * bt * d } else { 3 * bt * d };
    let layer = [qkv, att, bt * d, bt * d, bt * d, bt, bt, 4 * bt * d, bt * d, bt * d, bt, bt];
    let scratch = if training && probs { b * h * t * t } else { 0 };
    let shared = [bt * d, bt * d, 4 * bt * d, bt * d, scratch, bt.min(crossentropy::CHUNK) * v];
    (layer, shared, [bt * d, bt * d, bt * d, 4 * bt * d, 3 * bt * d])
}

impl Activations<crate::backend::Cpu> {
    /// Activations on the CPU.
    pub fn new(c: &Config, b: usize, t: usize, training: bool) -> Self {
        Self::new_on(&crate::backend::Cpu::FP32, c, b, t, training)
    }
}
