//! The GPT-1 body and tied LM head: forward and backward over the flat parameter buffer, on any
//! [`Backend`]. `forward` and `backward` read one line per op, as llm.c's `gpt2_forward` /
//! `gpt2_backward`; [`Gpt::block`] is the one block forward, on every position (training) or
//! on a subset of rows against the key/value cache (evaluation, generation).

use super::activations::Activations;
use super::config::Config;
use super::params::{self, Layer, Views, num_params};
use crate::backend::{Backend, Cpu, DeviceBuf};
use crate::kernels::attention::{Dims, KvLayout};
use crate::kernels::dropout::Dropout;
use crate::kernels::rng::{self, stream};
use rayon::prelude::*;
use std::borrow::Cow;

/// A model: its configuration, the backend it runs on, and its parameters in one buffer.
pub struct Gpt<B: Backend = Cpu> {
    pub config: Config,
    pub backend: B,
    /// Every tensor of [`params::layout`], in order.
    pub params: B::Buf,
}

impl Clone for Gpt<Cpu> {
    fn clone(&self) -> Self {
        Gpt { config: self.config.clone(), backend: self.backend, params: self.params.clone() }
    }
}

/// Which rows a block runs on.
#[derive(Clone, Copy, Debug)]
pub enum Query<'a> {
    /// Every position of `[B, T]`: the activations are kept for the backward pass.
    All,
    /// The flat positions `rows` of `[B, T]` only, their inputs `[rows.len(), d]` in
    /// `Activations::x_rows`, attending over the block's key/value cache, which must hold every
    /// earlier position of each row's sequence; no dropout. Outputs land in the first
    /// `rows.len()` rows of the block's buffers.
    Rows(&'a [usize]),
}

/// Dropout keys for one forward/backward pass, derived from one key so that the backward pass
/// regenerates the forward pass's masks.
#[derive(Clone, Copy)]
pub(crate) struct Drops {
    key: u64,
    embd: f32,
    attn: f32,
    resid: f32,
    /// Where this pass's `[B, T, d]` buffers and `[B, H, T, T]` attention probabilities start
    /// in the whole batch's masks (a micro-batch, or a rank's share of a batch; 0 for a whole
    /// batch).
    off_x: u64,
    off_att: u64,
}

impl Drops {
    fn site(&self, p: f32, label: u64) -> Dropout {
        if p > 0.0 { Dropout::new(p, rng::derive(self.key, label)) } else { Dropout::OFF }
    }
    fn embd(&self) -> Dropout {
        self.site(self.embd, stream::EMBD_DROPOUT).at(self.off_x)
    }
    fn attn(&self, l: usize) -> Dropout {
        self.site(self.attn, stream::attn_dropout(l)).at(self.off_att)
    }
    fn res1(&self, l: usize) -> Dropout {
        self.site(self.resid, stream::resid1_dropout(l)).at(self.off_x)
    }
    fn res2(&self, l: usize) -> Dropout {
        self.site(self.resid, stream::resid2_dropout(l)).at(self.off_x)
    }
}

impl Gpt<Cpu> {
    /// A freshly initialised model on the CPU: weights and embeddings N(0, initializer_range),
    /// biases 0, LayerNorm gains 1; a pure function of the seed (tensor `i` draws from the
    /// stream `derive(seed, i)`).
    pub fn init(config: Config, seed: u64) -> Self {
        let mut p = vec![0.0f32; num_params(&config)];
        let std = config.initializer_range as f64;
        for (ti, t) in params::layout(&config).iter().enumerate() {
            let key = rng::derive(seed, ti as u64);
            let dst = &mut p[t.range()];
            if t.decay {
                dst.par_chunks_mut(4096).enumerate().for_each(|(c, ch)| {
                    for (i, v) in ch.iter_mut().enumerate() {
                        *v = (rng::normal(key, (c * 4096 + i) as u64) * std) as f32;
                    }
                });
            } else if t.name.ends_with("ln_1.weight") || t.name.ends_with("ln_2.weight") {
                dst.fill(1.0);
            }
        }
        Gpt { config, backend: Cpu::FP32, params: p }
    }

    /// Keeps the embeddings and the first `k` blocks and re-initialises the others as
    /// [`Gpt::init`] would (the paper's "layers transferred" analysis, Figure 2 left).
    pub fn keep_layers(&mut self, k: usize, seed: u64) {
        let fresh = Gpt::init(self.config.clone(), seed);
        for t in params::layout(&self.config) {
            let layer = t
                .name
                .strip_prefix("h.")
                .and_then(|r| r.split('.').next())
                .and_then(|l| l.parse::<usize>().ok());
            if layer.is_some_and(|l| l >= k) {
                let r = t.range();
                self.params[r.clone()].copy_from_slice(&fresh.params[r]);
            }
        }
    }

    /// The same model on another backend (its weights uploaded; no host copy).
    pub fn to_backend<C: Backend>(&self, backend: C) -> Gpt<C> {
        let params = backend.upload(&self.params);
        Gpt { config: self.config.clone(), backend, params }
    }
}

impl<B: Backend> Gpt<B> {
    /// The parameters on the host (checkpoints).
    pub fn host_params(&self) -> Cow<'_, [f32]> {
        self.backend.download(self.params.r())
    }

    /// Pins the weights for inference ([`Backend::pin`]): bf16 products keep their packing
    /// until the guard drops.
    pub fn pin(&self) -> crate::backend::Pinned<'_> {
        self.backend.pin(self.params.r())
    }

    /// Activations for this model's backend.
    pub fn activations(&self, b: usize, t: usize, training: bool) -> Activations<B> {
        Activations::new_on(&self.backend, &self.config, b, t, training)
    }

    /// Activations for generation (no attention probabilities kept).
    pub fn decode_activations(&self, b: usize, t: usize) -> Activations<B> {
        Activations::decoding_on(&self.backend, &self.config, b, t)
    }

    /// A zeroed buffer in the parameters' layout (gradients, moments).
    pub fn zeros_like_params(&self) -> B::Buf {
        self.backend.zeros(num_params(&self.config))
    }

    fn dims(&self, b: usize, t: usize) -> Dims {
        Dims { b, t, h: self.config.n_head, dh: self.config.head_dim() }
    }

    /// The pass's dropout sites: none without a key; `first_seq`, the index of the pass's first
    /// sequence in the batch the masks are drawn for, with `t` positions per sequence.
    fn drops(&self, key: Option<u64>, first_seq: usize, t: usize) -> Drops {
        let c = &self.config;
        let (s, t) = (first_seq as u64, t as u64);
        let (off_x, off_att) = (s * t * c.n_embd as u64, s * c.n_head as u64 * t * t);
        match key {
            Some(key) => Drops {
                key,
                embd: c.embd_pdrop,
                attn: c.attn_pdrop,
                resid: c.resid_pdrop,
                off_x,
                off_att,
            },
            None => Drops { key: 0, embd: 0.0, attn: 0.0, resid: 0.0, off_x: 0, off_att: 0 },
        }
    }

    fn views(&self) -> Views<B::Ref<'_>> {
        params::views::<B>(self.params.r(), &self.config)
    }

    /// The body's forward pass over `ids` (`[B, T]`, every id < vocab_size, T <= n_positions).
    /// `dropout_key`: `Some` in training (masks drawn from it), `None` for evaluation.
    pub fn forward(&self, acts: &mut Activations<B>, ids: &[u32], dropout_key: Option<u64>) {
        self.forward_blocks(acts, ids, dropout_key, 0, self.config.n_layer);
    }

    /// [`Gpt::forward`] of sequences `first_seq..` of a larger batch, with that batch's
    /// dropout masks (a micro-batch, or a rank's share of a data-parallel batch), so the masks
    /// do not depend on how the batch is split.
    pub fn forward_at(
        &self,
        acts: &mut Activations<B>,
        ids: &[u32],
        dropout_key: Option<u64>,
        first_seq: usize,
    ) {
        self.forward_blocks(acts, ids, dropout_key, first_seq, self.config.n_layer);
    }

    /// Embeddings and the first `n_blocks` blocks on every position.
    fn forward_blocks(
        &self,
        acts: &mut Activations<B>,
        ids: &[u32],
        key: Option<u64>,
        first_seq: usize,
        n_blocks: usize,
    ) {
        let (b, t, d) = (acts.b, acts.t, self.config.n_embd);
        assert_eq!(ids.len(), b * t, "ids must be [B, T]");
        assert!(t <= self.config.n_positions);
        assert!(!acts.decode_only, "a full forward pass needs Activations::new, not decoding's");
        let (be, w, drops) = (&self.backend, self.views(), self.drops(key, first_seq, t));
        be.encoder_forward(acts.encoded.w(), ids, w.wte, w.wpe, t, d);
        be.dropout(acts.encoded.w(), drops.embd());
        for l in 0..n_blocks {
            self.block(acts, &w.layers[l], l, Query::All, &drops);
        }
    }

    /// Block `l` (parameters `p`) on the rows `q` names; its input is the previous block's
    /// output (or the embeddings) for [`Query::All`], `acts.x_rows` for [`Query::Rows`].
    // One line per op, as llm.c reads: rustfmt would break the kernel calls apart.
    #[rustfmt::skip]
    pub(crate) fn block(&self, acts: &mut Activations<B>, p: &Layer<B::Ref<'_>>, l: usize, q: Query, drops: &Drops) {
        let (be, c) = (&self.backend, &self.config);
        let (d, eps, dims) = (c.n_embd, c.layer_norm_epsilon, self.dims(acts.b, acts.t));
        let n = match q {
            Query::All => acts.b * acts.t,
            Query::Rows(rows) => rows.len(),
        };
        let nd = n * d;
        let (prev, rest) = acts.layers.split_at_mut(l);
        let a = &mut rest[0];
        let x = match q {
            Query::Rows(_) => acts.x_rows.part(nd),
            Query::All if l == 0 => acts.encoded.r(),
            Query::All => prev[l - 1].ln2.r(),
        };
        match q {
            Query::All => {
                be.matmul_forward(a.qkv.w(), x, p.attn_w, p.attn_b, n, d, 3 * d);
                be.attention_forward(a.atty.w(), a.att.w(), acts.att_scratch.w(), a.qkv.r(), dims, drops.attn(l));
            }
            Query::Rows(rows) => {
                // The rows' own q/k/v (through fch as scratch): their keys and values join the
                // cache, then their queries attend to it. Decoding's cache is `[B, H, 2, T, dh]`
                // (a third less memory than the projection, each head's keys and values in
                // one stretch); evaluation's last block reads the forward pass's `[B, T, 3d]`
                // projection.
                be.matmul_forward(a.fch.w(), x, p.attn_w, p.attn_b, n, d, 3 * d);
                let (layout, at) = if acts.decode_only { (KvLayout::heads(dims), 0) } else { (KvLayout::rows(dims, 3 * d), d) };
                let kv_len = a.qkv.len() - at;
                be.place_kv(B::sub_mut(a.qkv.w(), at, kv_len), layout, a.fch.part(n * 3 * d), dims, rows);
                let kv = B::sub(a.qkv.r(), at, kv_len);
                be.attention_rows(a.atty.w(), a.fch.part(n * 3 * d), kv, layout, dims, rows);
            }
        }
        be.matmul_forward(acts.tmp.w(), a.atty.part(nd), p.proj_w, p.proj_b, n, d, d);
        be.residual_forward(a.r1.part_mut(nd), x, acts.tmp.part(nd), drops.res1(l));
        be.layernorm_forward(a.ln1.part_mut(nd), a.ln1_mean.part_mut(n), a.ln1_rstd.part_mut(n), a.r1.part(nd), p.ln1_g, p.ln1_b, d, eps);
        be.matmul_forward(a.fch.w(), a.ln1.part(nd), p.fc_w, p.fc_b, n, d, 4 * d);
        be.gelu_forward(acts.gelu.part_mut(4 * nd), a.fch.part(4 * nd));
        be.matmul_forward(acts.tmp.w(), acts.gelu.part(4 * nd), p.mproj_w, p.mproj_b, n, 4 * d, d);
        be.residual_forward(a.r2.part_mut(nd), a.ln1.part(nd), acts.tmp.part(nd), drops.res2(l));
        be.layernorm_forward(a.ln2.part_mut(nd), a.ln2_mean.part_mut(n), a.ln2_rstd.part_mut(n), a.r2.part(nd), p.ln2_g, p.ln2_b, d, eps);
    }

    /// The last block's output at the flat positions `rows` of `[B, T]` only, `[rows.len(), d]`
    /// on the host, without dropout. A task head reads one extract state per sequence, so the
    /// last block runs its keys and values on every position (the cache) and everything else
    /// on `rows` alone (evaluation does 1/n_layer · 3/4 fewer products). Equal to
    /// [`Gpt::forward`]'s rows up to rounding.
    pub fn forward_rows(&self, acts: &mut Activations<B>, ids: &[u32], rows: &[usize]) -> Vec<f32> {
        let (c, be) = (&self.config, &self.backend);
        let (bt, d, last) = (acts.b * acts.t, c.n_embd, c.n_layer - 1);
        assert!(rows.iter().all(|&r| r < bt), "rows must lie in [B, T]");
        self.forward_blocks(acts, ids, None, 0, last);
        let (w, drops) = (self.views(), self.drops(None, 0, 0));
        let p = &w.layers[last];
        let (prev, rest) = acts.layers.split_at_mut(last);
        let x = if last == 0 { acts.encoded.r() } else { prev[last - 1].ln2.r() };
        be.matmul_forward(rest[0].qkv.w(), x, p.attn_w, p.attn_b, bt, d, 3 * d);
        be.copy_rows(acts.x_rows.w(), x, rows, d);
        self.block(acts, p, last, Query::Rows(rows), &drops);
        let out = acts.layers[last].ln2.part(rows.len() * d);
        be.download(out).into_owned()
    }

    /// The decode step of KV-cache generation: the embeddings and every block on the flat
    /// positions `rows` of `[B, T]` only (`ids` their tokens), each row attending over its
    /// sequence's earlier positions in the blocks' key/value caches, which earlier decode steps
    /// (or, in activations from `Activations::new`, a forward pass) filled; the rows' own keys
    /// and values join the caches. Returns the
    /// last block's output at `rows`, `[rows.len(), d]`, on the host; no dropout. One position per
    /// token costs one row through the blocks, not the whole prefix.
    pub fn forward_cached(
        &self,
        acts: &mut Activations<B>,
        ids: &[u32],
        rows: &[usize],
    ) -> Vec<f32> {
        let mut out = Vec::new();
        self.backend.decode_step(rows.len(), &mut || {
            self.decode_rows(acts, ids, rows);
            let last = &acts.layers[self.config.n_layer - 1];
            out =
                self.backend.download(last.ln2.part(rows.len() * self.config.n_embd)).into_owned();
        });
        out
    }

    /// [`Gpt::forward_cached`], then the next-token logits at the `pick`-th of those rows
    /// (indices into `rows`): `[pick.len(), V]` on the host. A prefill passes every prompt
    /// position as `rows` and picks the last of each sequence.
    pub fn cached_logits(
        &self,
        acts: &mut Activations<B>,
        ids: &[u32],
        rows: &[usize],
        pick: &[usize],
    ) -> Vec<f32> {
        let (be, d, v) = (&self.backend, self.config.n_embd, self.config.vocab_size);
        assert!(pick.len() <= crate::kernels::crossentropy::CHUNK.min(acts.b * acts.t));
        let (mut out, n, last) = (Vec::new(), pick.len(), self.config.n_layer - 1);
        be.decode_step(rows.len(), &mut || {
            self.decode_rows(acts, ids, rows);
            be.copy_rows(acts.tmp.w(), acts.layers[last].ln2.part(rows.len() * d), pick, d);
            let (logits, x, wte) =
                (acts.logits.part_mut(n * v), acts.tmp.part(n * d), self.views().wte);
            be.matmul(logits, x, false, wte, true, n, v, d, false);
            out = be.download(acts.logits.part(n * v)).into_owned();
        });
        out
    }

    /// The embeddings and every block on `rows` against the caches; the last block's output
    /// stays in the first `rows.len()` rows of its `ln2`.
    fn decode_rows(&self, acts: &mut Activations<B>, ids: &[u32], rows: &[usize]) {
        let (c, be) = (&self.config, &self.backend);
        let (n, d, t) = (rows.len(), c.n_embd, acts.t);
        assert!(ids.len() == n && rows.iter().all(|&r| r < acts.b * t), "rows must lie in [B, T]");
        let (w, drops) = (self.views(), self.drops(None, 0, 0));
        be.encoder_rows(acts.x_rows.w(), ids, rows, w.wte, w.wpe, t, d);
        let same: Vec<usize> = (0..n).collect();
        for l in 0..c.n_layer {
            if l > 0 {
                be.copy_rows(acts.x_rows.w(), acts.layers[l - 1].ln2.part(n * d), &same, d);
            }
            self.block(acts, &w.layers[l], l, Query::Rows(rows), &drops);
        }
    }

    /// log p(targets[r] | ids[..=r]) for every position (0 where the target is
    /// [`crate::kernels::crossentropy::IGNORE`]), without dropout.
    pub fn logprobs(
        &self,
        acts: &mut Activations<B>,
        ids: &[u32],
        targets: &[u32],
        out: &mut [f32],
    ) {
        self.forward(acts, ids, None);
        let wte = self.views().wte;
        let hidden = acts.layers.last().expect("n_layer > 0").ln2.r();
        self.backend.logprobs(out, acts.logits.w(), hidden, wte, None, targets, self.config.n_embd);
    }

    /// Next-token logits `[B, T, V]` on the host (no dropout): the hidden states times the
    /// tied embedding.
    pub fn logits(&self, acts: &mut Activations<B>, ids: &[u32]) -> Vec<f32> {
        self.forward(acts, ids, None);
        let (v, d, rows) = (self.config.vocab_size, self.config.n_embd, ids.len());
        let mut out = self.backend.zeros(rows * v);
        self.backend.matmul(
            out.w(),
            acts.hidden(),
            false,
            self.views().wte,
            true,
            rows,
            v,
            d,
            false,
        );
        self.backend.download(out.r()).into_owned()
    }

    /// Next-token logits of every position of `ids` `[B, T]` (no dropout), handed to
    /// `f(first_row, logits [n, V])` at most [`crate::kernels::crossentropy::CHUNK`] rows at a
    /// time: whole distributions (a server's top-k alternatives) without holding `[B, T, V]`.
    pub fn logits_chunks(
        &self,
        acts: &mut Activations<B>,
        ids: &[u32],
        mut f: impl FnMut(usize, &[f32]),
    ) {
        self.forward(acts, ids, None);
        let (v, d, bt) = (self.config.vocab_size, self.config.n_embd, ids.len());
        let (wte, be) = (self.views().wte, &self.backend);
        let chunk = crate::kernels::crossentropy::CHUNK.min(bt);
        let hidden = acts.layers.last().expect("n_layer > 0").ln2.r();
        let mut r0 = 0;
        while r0 < bt {
            let n = chunk.min(bt - r0);
            let (_, rest) = B::split(hidden, r0 * d);
            let (h, _) = B::split(rest, n * d);
            be.matmul(acts.logits.part_mut(n * v), h, false, wte, true, n, v, d, false);
            f(r0, &be.download(acts.logits.part(n * v)));
            r0 += n;
        }
    }

    /// Forward and backward of `loss_scale · Σ −log p(targets | ids)`: gradients are accumulated
    /// into `grads` (same layout as the parameters). Returns the unscaled sum of the negative
    /// log-likelihoods of the counted targets. `dropout_key` as in [`Gpt::forward`].
    pub fn forward_backward(
        &self,
        acts: &mut Activations<B>,
        grads: &mut B::Buf,
        ids: &[u32],
        targets: &[u32],
        dropout_key: Option<u64>,
        loss_scale: f32,
    ) -> f64 {
        self.forward(acts, ids, dropout_key);
        self.backward(acts, grads, ids, targets, dropout_key, loss_scale, None, 0)
    }

    /// The backward pass after [`Gpt::forward`] with the same `ids` and `dropout_key`: the LM
    /// loss `loss_scale · Σ −log p(targets | ids)` (skipped when `loss_scale` is 0), plus
    /// `extra`, a task head's gradient on the last block's output at some rows (`(rows, ∂h)`,
    /// `∂h` `[rows.len(), d]` on the host). Returns the unscaled LM negative log-likelihood sum
    /// (0 when skipped). Parameter gradients are accumulated into `grads`. `first_seq` as in
    /// [`Gpt::forward_at`] (0 for a whole batch).
    #[allow(clippy::too_many_arguments)]
    // One line per op, as llm.c reads: rustfmt would break the kernel calls apart.
    #[rustfmt::skip]
    pub fn backward(
        &self,
        acts: &mut Activations<B>,
        grads: &mut B::Buf,
        ids: &[u32],
        targets: &[u32],
        dropout_key: Option<u64>,
        loss_scale: f32,
        extra: Option<(&[usize], &[f32])>,
        first_seq: usize,
    ) -> f64 {
        let (c, be) = (&self.config, &self.backend);
        let (b, t, d) = (acts.b, acts.t, c.n_embd);
        let bt = b * t;
        let (drops, dims, w) = (self.drops(dropout_key, first_seq, t), self.dims(b, t), self.views());
        let mut gw = params::views_mut::<B>(grads.w(), c);
        let g = acts.grads.as_mut().expect("Activations::new(.., training = true) for backward");
        let last = acts.layers.last().expect("n_layer > 0");
        let nll = if loss_scale != 0.0 {
            be.crossentropy_forward_backward(g.g_x.w(), B::reborrow(&mut gw.wte), None, acts.logits.w(), last.ln2.r(), w.wte, targets, d, loss_scale)
        } else {
            be.fill(g.g_x.w(), 0.0);
            0.0
        };
        if let Some((rows, dh)) = extra {
            be.scatter_add_rows(g.g_x.w(), rows, dh, d);
        }
        for (l, gl) in gw.layers.into_iter().enumerate().rev() {
            let x = if l == 0 { acts.encoded.r() } else { acts.layers[l - 1].ln2.r() };
            let (a, p) = (&acts.layers[l], &w.layers[l]);
            // ln_2, then the MLP branch of r2 = ln1 + dropout(mlp(ln1)).
            be.layernorm_backward(g.g_r.w(), gl.ln2_g, gl.ln2_b, g.g_x.r(), a.r2.r(), a.ln2_mean.r(), a.ln2_rstd.r(), p.ln2_g, d);
            be.residual_backward(g.g_tmp.w(), g.g_r.r(), drops.res2(l));
            // mproj's input gradient, then GELU's (which recomputes gelu(fch) into the shared
            // buffer: no block keeps its own), then mproj's weight and bias gradients.
            be.matmul(g.g_4d.w(), g.g_tmp.r(), false, p.mproj_w, true, bt, 4 * d, d, false);
            be.gelu_backward(g.g_4d.w(), acts.gelu.w(), a.fch.r());
            be.matmul(gl.mproj_w, acts.gelu.r(), true, g.g_tmp.r(), false, 4 * d, d, bt, true);
            be.bias_backward(gl.mproj_b, g.g_tmp.r(), bt);
            be.matmul_backward(g.g_r.w(), true, gl.fc_w, gl.fc_b, g.g_4d.r(), a.ln1.r(), p.fc_w, bt, d, 4 * d);
            // ln_1, then the attention branch of r1 = x + dropout(attn(x)).
            be.layernorm_backward(g.g_x.w(), gl.ln1_g, gl.ln1_b, g.g_r.r(), a.r1.r(), a.ln1_mean.r(), a.ln1_rstd.r(), p.ln1_g, d);
            be.residual_backward(g.g_tmp.w(), g.g_x.r(), drops.res1(l));
            be.matmul_backward(g.g_r.w(), false, gl.proj_w, gl.proj_b, g.g_tmp.r(), a.atty.r(), p.proj_w, bt, d, d);
            be.attention_backward(g.g_qkv.w(), acts.att_scratch.w(), g.g_r.r(), a.qkv.r(), a.att.r(), dims, drops.attn(l));
            be.matmul_backward(g.g_x.w(), true, gl.attn_w, gl.attn_b, g.g_qkv.r(), x, p.attn_w, bt, d, 3 * d);
        }
        be.dropout(g.g_x.w(), drops.embd());
        be.encoder_backward(gw.wte, gw.wpe, g.g_x.r(), ids, t, d);
        nll
    }
}

impl<B: Backend> super::language_model::LanguageModel<B> for Gpt<B> {
    type Scratch = Activations<B>;
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn n_positions(&self) -> usize {
        self.config.n_positions
    }
    fn scratch(&self) -> Activations<B> {
        self.activations(0, 0, false)
    }
    fn fit(&self, s: &mut Activations<B>, b: usize, t: usize) {
        if !s.fits(b, t) {
            *s = self.activations(b, t, false);
        }
        s.reshape(b, t);
    }
    fn next_logprobs(
        &self,
        s: &mut Activations<B>,
        ids: &[u32],
        targets: &[u32],
        out: &mut [f32],
    ) -> crate::Result<()> {
        self.logprobs(s, ids, targets, out);
        Ok(())
    }
    fn states_at(
        &self,
        s: &mut Activations<B>,
        ids: &[u32],
        rows: &[usize],
    ) -> crate::Result<Vec<f32>> {
        Ok(self.forward_rows(s, ids, rows))
    }
    fn pin_weights(&self) -> crate::backend::Pinned<'_> {
        self.pin()
    }
}
