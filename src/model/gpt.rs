//! The GPT-1 body and tied LM head: forward and backward over the flat buffer, activations
//! allocated once per (batch, length).

use super::config::Config;
use super::params::{self, Layer, num_params};
use crate::kernels::attention::{self, Shape};
use crate::kernels::dropout::Dropout;
use crate::kernels::matmul::{Mat, matmul};
use crate::kernels::reduce::col_sum;
use crate::kernels::{crossentropy, embedding, gelu, layernorm, rng};
use rayon::prelude::*;

/// A model: its configuration and its parameters in one buffer.
#[derive(Clone)]
pub struct Gpt {
    pub config: Config,
    pub params: Vec<f32>,
}

/// What one block keeps for its backward pass.
struct LayerActs {
    qkv: Vec<f32>,
    att: Vec<f32>,
    atty: Vec<f32>,
    r1: Vec<f32>,
    ln1: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    fch: Vec<f32>,
    fch_gelu: Vec<f32>,
    r2: Vec<f32>,
    ln2: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
}

/// Gradient workspaces, shared by all blocks (allocated only for training).
struct GradBufs {
    g_x: Vec<f32>,
    g_r: Vec<f32>,
    g_tmp: Vec<f32>,
    g_4d: Vec<f32>,
    g_qkv: Vec<f32>,
}

/// Preallocated activations for batches of `b` sequences of length `t`.
pub struct Activations {
    pub b: usize,
    pub t: usize,
    /// The (B, T) the buffers were made for.
    max: (usize, usize),
    /// (n_embd, n_head, vocab_size).
    dims: (usize, usize, usize),
    training: bool,
    encoded: Vec<f32>,
    layers: Vec<LayerActs>,
    tmp: Vec<f32>,
    att_scratch: Vec<f32>,
    logits: Vec<f32>,
    grads: Option<GradBufs>,
}

impl Activations {
    /// `training` adds the gradient workspaces and the attention dropout scratch.
    pub fn new(c: &Config, b: usize, t: usize, training: bool) -> Self {
        let empty = || LayerActs {
            qkv: Vec::new(),
            att: Vec::new(),
            atty: Vec::new(),
            r1: Vec::new(),
            ln1: Vec::new(),
            ln1_mean: Vec::new(),
            ln1_rstd: Vec::new(),
            fch: Vec::new(),
            fch_gelu: Vec::new(),
            r2: Vec::new(),
            ln2: Vec::new(),
            ln2_mean: Vec::new(),
            ln2_rstd: Vec::new(),
        };
        let mut a = Activations {
            b,
            t,
            max: (b, t),
            dims: (c.n_embd, c.n_head, c.vocab_size),
            training,
            encoded: Vec::new(),
            layers: (0..c.n_layer).map(|_| empty()).collect(),
            tmp: Vec::new(),
            att_scratch: Vec::new(),
            logits: Vec::new(),
            grads: training.then(|| GradBufs {
                g_x: Vec::new(),
                g_r: Vec::new(),
                g_tmp: Vec::new(),
                g_4d: Vec::new(),
                g_qkv: Vec::new(),
            }),
        };
        a.size_buffers(b, t);
        a
    }

    /// Reuses the buffers for `b` sequences of length `t` (each at most what they were made
    /// for): no allocation, so batches of varying length share one set.
    pub fn reshape(&mut self, b: usize, t: usize) {
        assert!(
            b * t <= self.max.0 * self.max.1 && b <= self.max.0 && t <= self.max.1,
            "reshape beyond the allocated size"
        );
        self.b = b;
        self.t = t;
        self.size_buffers(b, t);
    }

    fn size_buffers(&mut self, b: usize, t: usize) {
        let (d, h, v) = self.dims;
        let bt = b * t;
        let set = |x: &mut Vec<f32>, n: usize| x.resize(n, 0.0);
        for a in &mut self.layers {
            set(&mut a.qkv, bt * 3 * d);
            set(&mut a.att, b * h * t * t);
            for x in [&mut a.atty, &mut a.r1, &mut a.ln1, &mut a.r2, &mut a.ln2] {
                set(x, bt * d);
            }
            for x in [
                &mut a.ln1_mean,
                &mut a.ln1_rstd,
                &mut a.ln2_mean,
                &mut a.ln2_rstd,
            ] {
                set(x, bt);
            }
            set(&mut a.fch, bt * 4 * d);
            set(&mut a.fch_gelu, bt * 4 * d);
        }
        set(&mut self.encoded, bt * d);
        set(&mut self.tmp, bt * d);
        if self.training {
            set(&mut self.att_scratch, b * h * t * t);
        }
        set(&mut self.logits, bt.min(crossentropy::CHUNK) * v);
        if let Some(g) = &mut self.grads {
            for x in [&mut g.g_x, &mut g.g_r, &mut g.g_tmp] {
                set(x, bt * d);
            }
            set(&mut g.g_4d, bt * 4 * d);
            set(&mut g.g_qkv, bt * 3 * d);
        }
    }

    /// The last block's output, `[B, T, d]`, after a forward pass.
    pub fn hidden(&self) -> &[f32] {
        &self.layers.last().expect("n_layer > 0").ln2
    }
}

/// Dropout keys for one forward/backward pass, derived from one key so that the backward pass
/// regenerates the forward pass's masks.
#[derive(Clone, Copy)]
struct Drops {
    key: u64,
    embd: f32,
    attn: f32,
    resid: f32,
}

impl Drops {
    fn site(&self, p: f32, label: u64) -> Dropout {
        if p > 0.0 {
            Dropout {
                p,
                key: rng::derive(self.key, label),
            }
        } else {
            Dropout::OFF
        }
    }
    fn embd(&self) -> Dropout {
        self.site(self.embd, u64::MAX)
    }
    fn attn(&self, l: usize) -> Dropout {
        self.site(self.attn, 4 * l as u64)
    }
    fn res1(&self, l: usize) -> Dropout {
        self.site(self.resid, 4 * l as u64 + 1)
    }
    fn res2(&self, l: usize) -> Dropout {
        self.site(self.resid, 4 * l as u64 + 2)
    }
}

/// `out[rows, n] = x[rows, k] · w[k, n] + b`.
fn linear(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], rows: usize, k: usize, n: usize) {
    out.par_chunks_mut(n).for_each(|r| r.copy_from_slice(b));
    matmul(out, Mat::rows(x, k), Mat::rows(w, n), rows, n, k, true);
}

/// Backward of [`linear`]: `dx` (assigned, or accumulated when `acc`), `dw` and `db`
/// accumulated.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    dx: &mut [f32],
    acc: bool,
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    k: usize,
    n: usize,
) {
    matmul(dx, Mat::rows(dout, n), Mat::t(w, n), rows, k, n, acc);
    matmul(dw, Mat::t(x, k), Mat::rows(dout, n), k, n, rows, true);
    col_sum(db, dout, rows);
}

impl Gpt {
    /// A freshly initialised model: weights and embeddings N(0, initializer_range), biases 0,
    /// LayerNorm gains 1; a pure function of the seed.
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
        Gpt { config, params: p }
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

    fn shape(&self, b: usize, t: usize) -> Shape {
        Shape {
            b,
            t,
            h: self.config.n_head,
            dh: self.config.head_dim(),
        }
    }

    fn drops(&self, key: Option<u64>) -> Drops {
        match key {
            Some(key) => Drops {
                key,
                embd: self.config.embd_pdrop,
                attn: self.config.attn_pdrop,
                resid: self.config.resid_pdrop,
            },
            None => Drops {
                key: 0,
                embd: 0.0,
                attn: 0.0,
                resid: 0.0,
            },
        }
    }

    /// The body's forward pass over `ids` (`[B, T]`, every id < vocab_size, T <= n_positions).
    /// `dropout_key`: `Some` in training (masks drawn from it), `None` for evaluation.
    pub fn forward(&self, acts: &mut Activations, ids: &[u32], dropout_key: Option<u64>) {
        self.forward_blocks(acts, ids, dropout_key, self.config.n_layer);
    }

    /// The last block's output at the flat positions `rows` of `[B, T]` only, `[rows.len(), d]`,
    /// without dropout. A task head reads one extract state per sequence, so in the last block
    /// only the keys and values cover every position: its queries, projections, feed-forward and
    /// norms run on `rows` alone (evaluation does 1/n_layer · 3/4 fewer products). Equal to
    /// [`Gpt::forward`]'s rows up to rounding.
    pub fn forward_rows(&self, acts: &mut Activations, ids: &[u32], rows: &[usize]) -> Vec<f32> {
        let c = &self.config;
        let (b, t, d) = (acts.b, acts.t, c.n_embd);
        let n_layer = c.n_layer;
        assert!(rows.iter().all(|&r| r < b * t), "rows must lie in [B, T]");
        self.forward_blocks(acts, ids, None, n_layer - 1);
        let w = params::views(&self.params, c);
        let p = &w.layers[n_layer - 1];
        let (prev, rest) = acts.layers.split_at_mut(n_layer - 1);
        let x: &[f32] = if n_layer == 1 {
            &acts.encoded
        } else {
            &prev[n_layer - 2].ln2
        };
        let a = &mut rest[0];
        linear(&mut a.qkv, x, p.attn_w, p.attn_b, b * t, d, 3 * d);
        let n = rows.len();
        let mut y = vec![0.0f32; n * d];
        attention::forward_rows(&mut y, &a.qkv, self.shape(b, t), rows);
        let mut tmp = vec![0.0f32; n * d];
        linear(&mut tmp, &y, p.proj_w, p.proj_b, n, d, d);
        let mut r = vec![0.0f32; n * d];
        for (i, &row) in rows.iter().enumerate() {
            let (o, xr, tr) = (
                &mut r[i * d..(i + 1) * d],
                &x[row * d..(row + 1) * d],
                &tmp[i * d..(i + 1) * d],
            );
            o.iter_mut()
                .zip(xr.iter().zip(tr))
                .for_each(|(o, (x, t))| *o = x + t);
        }
        let (mut mean, mut rstd) = (vec![0.0f32; n], vec![0.0f32; n]);
        let eps = c.layer_norm_epsilon;
        let mut ln1 = vec![0.0f32; n * d];
        layernorm::forward(&mut ln1, &mut mean, &mut rstd, &r, p.ln1_g, p.ln1_b, d, eps);
        let mut fch = vec![0.0f32; n * 4 * d];
        linear(&mut fch, &ln1, p.fc_w, p.fc_b, n, d, 4 * d);
        let mut fch_gelu = vec![0.0f32; n * 4 * d];
        gelu::forward(&mut fch_gelu, &fch);
        linear(&mut tmp, &fch_gelu, p.mproj_w, p.mproj_b, n, 4 * d, d);
        r.iter_mut()
            .zip(ln1.iter().zip(&tmp))
            .for_each(|(o, (x, t))| *o = x + t);
        let mut out = vec![0.0f32; n * d];
        layernorm::forward(&mut out, &mut mean, &mut rstd, &r, p.ln2_g, p.ln2_b, d, eps);
        out
    }

    /// Embeddings and the first `n_blocks` blocks.
    fn forward_blocks(
        &self,
        acts: &mut Activations,
        ids: &[u32],
        dropout_key: Option<u64>,
        n_blocks: usize,
    ) {
        let c = &self.config;
        let (b, t, d) = (acts.b, acts.t, c.n_embd);
        let bt = b * t;
        assert_eq!(ids.len(), bt, "ids must be [B, T]");
        assert!(t <= c.n_positions);
        let drops = self.drops(dropout_key);
        let w = params::views(&self.params, c);
        embedding::forward(&mut acts.encoded, ids, w.wte, w.wpe, t, d);
        drops.embd().apply(&mut acts.encoded, 0);
        let shape = self.shape(b, t);
        for l in 0..n_blocks {
            let (prev, rest) = acts.layers.split_at_mut(l);
            let x: &[f32] = if l == 0 {
                &acts.encoded
            } else {
                &prev[l - 1].ln2
            };
            let a = &mut rest[0];
            let p = &w.layers[l];
            linear(&mut a.qkv, x, p.attn_w, p.attn_b, bt, d, 3 * d);
            attention::forward(
                &mut a.atty,
                &mut a.att,
                &mut acts.att_scratch,
                &a.qkv,
                shape,
                drops.attn(l),
            );
            linear(&mut acts.tmp, &a.atty, p.proj_w, p.proj_b, bt, d, d);
            drops.res1(l).residual(&mut a.r1, x, &acts.tmp);
            layernorm::forward(
                &mut a.ln1,
                &mut a.ln1_mean,
                &mut a.ln1_rstd,
                &a.r1,
                p.ln1_g,
                p.ln1_b,
                d,
                c.layer_norm_epsilon,
            );
            linear(&mut a.fch, &a.ln1, p.fc_w, p.fc_b, bt, d, 4 * d);
            gelu::forward(&mut a.fch_gelu, &a.fch);
            linear(
                &mut acts.tmp,
                &a.fch_gelu,
                p.mproj_w,
                p.mproj_b,
                bt,
                4 * d,
                d,
            );
            drops.res2(l).residual(&mut a.r2, &a.ln1, &acts.tmp);
            layernorm::forward(
                &mut a.ln2,
                &mut a.ln2_mean,
                &mut a.ln2_rstd,
                &a.r2,
                p.ln2_g,
                p.ln2_b,
                d,
                c.layer_norm_epsilon,
            );
        }
    }

    /// log p(targets[r] | ids[..=r]) for every position (0 where the target is
    /// [`crossentropy::IGNORE`]), without dropout.
    pub fn logprobs(&self, acts: &mut Activations, ids: &[u32], targets: &[u32], out: &mut [f32]) {
        self.forward(acts, ids, None);
        let last = acts.layers.last().expect("n_layer > 0");
        crossentropy::logprobs(
            out,
            &mut acts.logits,
            &last.ln2,
            params::views(&self.params, &self.config).wte,
            targets,
            self.config.n_embd,
        );
    }

    /// Next-token logits `[B, T, V]` (no dropout): the hidden states times the tied embedding.
    pub fn logits(&self, acts: &mut Activations, ids: &[u32]) -> Vec<f32> {
        self.forward(acts, ids, None);
        let (v, d) = (self.config.vocab_size, self.config.n_embd);
        let rows = ids.len();
        let mut out = vec![0.0f32; rows * v];
        let wte = params::views(&self.params, &self.config).wte;
        matmul(
            &mut out,
            Mat::rows(acts.hidden(), d),
            Mat::t(wte, d),
            rows,
            v,
            d,
            false,
        );
        out
    }

    /// Forward and backward of `loss_scale · Σ −log p(targets | ids)`: gradients are accumulated
    /// into `grads` (same layout as the parameters). Returns the unscaled sum of the negative
    /// log-likelihoods of the counted targets. `dropout_key` as in [`Gpt::forward`].
    pub fn forward_backward(
        &self,
        acts: &mut Activations,
        grads: &mut [f32],
        ids: &[u32],
        targets: &[u32],
        dropout_key: Option<u64>,
        loss_scale: f32,
    ) -> f64 {
        self.forward(acts, ids, dropout_key);
        self.backward(acts, grads, ids, targets, dropout_key, loss_scale, None)
    }

    /// The backward pass after [`Gpt::forward`] with the same `ids` and `dropout_key`: the LM
    /// loss `loss_scale · Σ −log p(targets | ids)` (skipped when `loss_scale` is 0), plus
    /// `extra_dh`, a gradient on the last block's output `[B, T, d]` from a task head. Returns
    /// the unscaled LM negative log-likelihood sum (0 when skipped).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        acts: &mut Activations,
        grads: &mut [f32],
        ids: &[u32],
        targets: &[u32],
        dropout_key: Option<u64>,
        loss_scale: f32,
        extra_dh: Option<&[f32]>,
    ) -> f64 {
        let c = &self.config;
        let (b, t, d) = (acts.b, acts.t, c.n_embd);
        let bt = b * t;
        let drops = self.drops(dropout_key);
        let shape = self.shape(b, t);
        let w = params::views(&self.params, c);
        let mut gw = params::views_mut(grads, c);
        let gb = acts
            .grads
            .as_mut()
            .expect("Activations::new(.., training = true) for backward");
        let last = acts.layers.last().expect("n_layer > 0");
        let nll = if loss_scale != 0.0 {
            crossentropy::forward_backward(
                &mut gb.g_x,
                gw.wte,
                &mut acts.logits,
                &last.ln2,
                w.wte,
                targets,
                d,
                loss_scale,
            )
        } else {
            gb.g_x.fill(0.0);
            0.0
        };
        if let Some(extra) = extra_dh {
            gb.g_x.iter_mut().zip(extra).for_each(|(g, e)| *g += e);
        }
        for l in (0..c.n_layer).rev() {
            let x: &[f32] = if l == 0 {
                &acts.encoded
            } else {
                &acts.layers[l - 1].ln2
            };
            let a = &acts.layers[l];
            let p = &w.layers[l];
            let g: &mut Layer<&mut [f32]> = &mut gw.layers[l];
            // ln_2, then the MLP branch of r2 = ln1 + dropout(mlp(ln1)).
            layernorm::backward(
                &mut gb.g_r,
                g.ln2_g,
                g.ln2_b,
                &gb.g_x,
                &a.r2,
                &a.ln2_mean,
                &a.ln2_rstd,
                p.ln2_g,
                d,
            );
            drops.res2(l).backward_into(&mut gb.g_tmp, &gb.g_r);
            linear_backward(
                &mut gb.g_4d,
                false,
                g.mproj_w,
                g.mproj_b,
                &gb.g_tmp,
                &a.fch_gelu,
                p.mproj_w,
                bt,
                4 * d,
                d,
            );
            gelu::backward_inplace(&mut gb.g_4d, &a.fch);
            linear_backward(
                &mut gb.g_r,
                true,
                g.fc_w,
                g.fc_b,
                &gb.g_4d,
                &a.ln1,
                p.fc_w,
                bt,
                d,
                4 * d,
            );
            // ln_1, then the attention branch of r1 = x + dropout(attn(x)).
            layernorm::backward(
                &mut gb.g_x,
                g.ln1_g,
                g.ln1_b,
                &gb.g_r,
                &a.r1,
                &a.ln1_mean,
                &a.ln1_rstd,
                p.ln1_g,
                d,
            );
            drops.res1(l).backward_into(&mut gb.g_tmp, &gb.g_x);
            linear_backward(
                &mut gb.g_r,
                false,
                g.proj_w,
                g.proj_b,
                &gb.g_tmp,
                &a.atty,
                p.proj_w,
                bt,
                d,
                d,
            );
            attention::backward(
                &mut gb.g_qkv,
                &mut acts.att_scratch,
                &gb.g_r,
                &a.qkv,
                &a.att,
                shape,
                drops.attn(l),
            );
            linear_backward(
                &mut gb.g_x,
                true,
                g.attn_w,
                g.attn_b,
                &gb.g_qkv,
                x,
                p.attn_w,
                bt,
                d,
                3 * d,
            );
        }
        drops.embd().apply(&mut gb.g_x, 0);
        embedding::backward(gw.wte, gw.wpe, &gb.g_x, ids, t, d);
        nll
    }
}
