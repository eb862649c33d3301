//! The paper's LSTM baseline (Table 5): token embeddings (E) → `num_layers` LSTM layers
//! (hidden H, PyTorch's `nn.LSTM`: gates i, f, g, o; both biases) → a linear output layer with
//! bias (`[V, H]`, `[V]`) → softmax. One flat parameter buffer under PyTorch's names, so a user
//! rebuilds it in a few lines (docs/lstm.md).
//!
//! Forward per layer: the input projection of every step in one product (`Gx = X · W_ihᵀ +
//! b_ih + b_hh`, `[T·B, 4H]`), then the recurrence in a tight loop, one `[B, H] × [H, 4H]`
//! product per step. Backward through time: the loop runs the steps backwards with one
//! `[B, 4H] × [4H, H]` product each; the weight gradients are then single products over all
//! steps. Activations are time-major (`row = t·B + b`) so each step's rows are contiguous.

use crate::backend::{Backend, Cpu, DeviceBuf};
use crate::error::{Error, Result};
use crate::kernels::crossentropy::{CHUNK, IGNORE};
use crate::kernels::rng;
use crate::model::params::TensorInfo;
use serde::{Deserialize, Serialize};
use std::ops::Range;

mod checkpoint;
pub use checkpoint::{is_lstm, load_lstm, load_lstm_config, save_lstm};

/// `config.json` of an LSTM checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LstmConfig {
    /// Always `"lstm"`.
    pub model_type: String,
    pub vocab_size: usize,
    /// Embedding size E.
    pub n_embd: usize,
    /// Hidden size H.
    pub hidden_size: usize,
    pub num_layers: usize,
    /// The longest sequence trained on (the LSTM itself has no limit).
    pub n_positions: usize,
}

impl LstmConfig {
    pub fn new(vocab_size: usize, n_embd: usize, hidden_size: usize, num_layers: usize) -> Self {
        LstmConfig {
            model_type: "lstm".into(),
            vocab_size,
            n_embd,
            hidden_size,
            num_layers,
            n_positions: 512,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.model_type != "lstm" {
            return Err(format!("model_type {:?} is not \"lstm\"", self.model_type));
        }
        for (k, v, max) in [
            ("vocab_size", self.vocab_size, 1usize << 24),
            ("n_embd", self.n_embd, 1 << 16),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("num_layers", self.num_layers, 64),
            ("n_positions", self.n_positions, 1 << 20),
        ] {
            if v == 0 || v > max {
                return Err(format!("{k} = {v} must be in 1..={max}"));
            }
        }
        Ok(())
    }

    /// Input width of layer `l`.
    fn input(&self, l: usize) -> usize {
        if l == 0 { self.n_embd } else { self.hidden_size }
    }
}

/// The layout, in PyTorch's `state_dict` order.
pub fn lstm_layout(c: &LstmConfig) -> Vec<TensorInfo> {
    let (v, e, h) = (c.vocab_size, c.n_embd, c.hidden_size);
    let mut spec: Vec<(String, Vec<usize>, bool)> =
        vec![("embedding.weight".into(), vec![v, e], true)];
    for l in 0..c.num_layers {
        spec.push((format!("lstm.weight_ih_l{l}"), vec![4 * h, c.input(l)], true));
        spec.push((format!("lstm.weight_hh_l{l}"), vec![4 * h, h], true));
        spec.push((format!("lstm.bias_ih_l{l}"), vec![4 * h], false));
        spec.push((format!("lstm.bias_hh_l{l}"), vec![4 * h], false));
    }
    spec.push(("decoder.weight".into(), vec![v, h], true));
    spec.push(("decoder.bias".into(), vec![v], false));
    let mut offset = 0;
    spec.into_iter()
        .map(|(name, shape, decay)| {
            let t = TensorInfo { name, offset, decay, shape };
            offset = t.range().end;
            t
        })
        .collect()
}

/// Where the tensor `name` lives in a layout.
fn range_of(layout: &[TensorInfo], name: &str) -> Range<usize> {
    layout.iter().find(|t| t.name == name).expect("a tensor of the layout").range()
}

/// PyTorch's draw for LSTM and `nn.Linear` weights: U(−k, k), k = 1/√H.
fn uniform(key: u64, i: usize, hidden: usize) -> f32 {
    let u = (rng::bits(key, i as u64) >> 11) as f64 / (1u64 << 53) as f64;
    ((2.0 * u - 1.0) / (hidden as f64).sqrt()) as f32
}

pub fn lstm_params(c: &LstmConfig) -> usize {
    lstm_layout(c).last().map_or(0, |t| t.range().end)
}

/// The model: its configuration, the backend it runs on, and one flat parameter buffer.
pub struct Lstm<B: Backend = Cpu> {
    pub config: LstmConfig,
    pub backend: B,
    /// Every tensor of [`lstm_layout`], in order.
    pub params: B::Buf,
}

impl Clone for Lstm<Cpu> {
    fn clone(&self) -> Self {
        Lstm { config: self.config.clone(), backend: self.backend, params: self.params.clone() }
    }
}

impl std::fmt::Debug for Lstm<Cpu> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lstm").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Buffers of one pass over `b` sequences of `t` tokens (time-major rows, `row = step·b + seq`),
/// sized once.
pub struct LstmActs<B: Backend = Cpu> {
    pub b: usize,
    pub t: usize,
    /// `[T·B]` the time-major token ids (the host's copy: the embedding's indices).
    ids: Vec<u32>,
    /// `[T·B]` the time-major targets.
    targets: Vec<u32>,
    /// `[T·B, E]` the embedded tokens.
    x: B::Buf,
    /// Per layer `[T·B, 4H]`: the gates after their nonlinearities (i, f, g, o).
    gates: Vec<B::Buf>,
    /// Per layer `[T·B, H]`: the cell states.
    c: Vec<B::Buf>,
    /// Per layer `[T·B, H]`: the outputs h (layer l's is layer l+1's input).
    h: Vec<B::Buf>,
    /// `[min(T·B, CHUNK), V]` logits workspace.
    logits: B::Buf,
    /// `[T·B, 4H]` backward: one layer's gate gradients.
    dg: B::Buf,
    /// `[T·B, max(E, H)]` backward: ∂L/∂(a layer's output); the top's is set by
    /// [`Lstm::lm_head`] (or zeroed) and a task head adds to it; backward through time adds
    /// each step's `dG_t · W_hh` to the previous step's rows.
    dh: B::Buf,
    /// `[T·B, max(E, H)]` backward: ∂L/∂(a layer's input), then swapped into `dh`.
    dx: B::Buf,
    /// `[B, H]` backward through time: ∂L/∂c_t from the next step.
    dc_next: B::Buf,
    /// `[H, 4H]` backward through time: a layer's `W_hh` stored transposed, where the backend
    /// multiplies few rows faster so ([`Backend::transposed_for_rows`]; else empty).
    whh_t: B::Buf,
}

impl<B: Backend> LstmActs<B> {
    /// The time-major row of batch-major row `r` (`r = seq·T + step`).
    pub fn time_major(&self, r: usize) -> usize {
        (r % self.t) * self.b + r / self.t
    }

    /// `dst[time-major row] = src[batch-major row]` for `[B, T]` values.
    fn to_time_major<T: Copy>(&self, dst: &mut [T], src: &[T]) {
        for (r, &x) in src.iter().enumerate() {
            dst[self.time_major(r)] = x;
        }
    }
}

/// The bytes of [`LstmActs`] for `b` sequences of `t` tokens, as [`Lstm::reshape`] sizes them:
/// x; per layer the gates (4H), c and h; the backward's dG, dh and dx, the cell carry; the
/// logits chunk; and `W_hh` transposed, which the CPU makes in fp32 (counted everywhere).
pub fn activation_bytes(c: &LstmConfig, b: usize, t: usize) -> usize {
    let (n, h, wide) = (b * t, c.hidden_size, c.n_embd.max(c.hidden_size));
    4 * (n * c.n_embd
        + c.num_layers * n * 6 * h
        + n * (4 * h + 2 * wide)
        + b * h
        + n.min(CHUNK) * c.vocab_size
        + 4 * h * h)
}

/// Where every tensor of a configuration's layout lives, looked up once per pass.
struct Index {
    emb: Range<usize>,
    /// Per layer: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`.
    layers: Vec<[Range<usize>; 4]>,
    dec_w: Range<usize>,
    dec_b: Range<usize>,
}

impl Index {
    fn of(c: &LstmConfig) -> Index {
        let layout = lstm_layout(c);
        let r = |name: &str| range_of(&layout, name);
        Index {
            emb: r("embedding.weight"),
            layers: (0..c.num_layers)
                .map(|l| {
                    ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
                        .map(|t| r(&format!("lstm.{t}_l{l}")))
                })
                .collect(),
            dec_w: r("decoder.weight"),
            dec_b: r("decoder.bias"),
        }
    }
}

/// Elements `r` of a view.
fn at<'a, B: Backend>(x: B::Ref<'a>, r: &Range<usize>) -> B::Ref<'a> {
    B::sub(x, r.start, r.len())
}

/// Elements `r` of a writable view.
fn at_mut<'a, B: Backend>(x: B::Mut<'a>, r: &Range<usize>) -> B::Mut<'a> {
    B::sub_mut(x, r.start, r.len())
}

impl Lstm<Cpu> {
    /// PyTorch's initialisation: every LSTM weight and bias U(−1/√H, 1/√H); the embedding
    /// N(0, 0.02) (GPT-1's, so the two models start alike); the decoder as `nn.Linear`,
    /// U(−1/√H, 1/√H).
    pub fn init(config: LstmConfig, seed: u64) -> Self {
        let mut params = vec![0.0f32; lstm_params(&config)];
        for (ti, t) in lstm_layout(&config).iter().enumerate() {
            let key = rng::derive(seed, ti as u64);
            for (i, p) in params[t.range()].iter_mut().enumerate() {
                *p = if t.name == "embedding.weight" {
                    (rng::normal(key, i as u64) * 0.02) as f32
                } else {
                    uniform(key, i, config.hidden_size)
                };
            }
        }
        Lstm { config, backend: Cpu::FP32, params }
    }

    /// The same model on another backend.
    pub fn to_backend<C: Backend>(&self, backend: C) -> Lstm<C> {
        let params = backend.upload(&self.params);
        Lstm { config: self.config.clone(), backend, params }
    }

    /// `extra` more tokens (fine-tuning's three special ones): new embedding rows N(0, 0.02),
    /// new output rows as the initialisation draws them, bias 0; the rest unchanged.
    pub fn grow_vocab(&mut self, extra: usize, seed: u64) {
        let old = lstm_layout(&self.config);
        let mut c = self.config.clone();
        c.vocab_size += extra;
        let new = lstm_layout(&c);
        let mut params = vec![0.0f32; lstm_params(&c)];
        for (o, n) in old.iter().zip(&new) {
            let (src, dst) = (&self.params[o.range()], &mut params[n.range()]);
            dst[..src.len()].copy_from_slice(src);
            let key = rng::derive(seed, n.offset as u64);
            for (i, x) in dst[src.len()..].iter_mut().enumerate() {
                *x = match n.name.as_str() {
                    "embedding.weight" => (rng::normal(key, i as u64) * 0.02) as f32,
                    "decoder.weight" => uniform(key, i, c.hidden_size),
                    _ => 0.0,
                };
            }
        }
        (self.config, self.params) = (c, params);
    }
}

impl<B: Backend> Lstm<B> {
    /// The parameters on the host (checkpoints).
    pub fn host_params(&self) -> std::borrow::Cow<'_, [f32]> {
        self.backend.download(self.params.r())
    }

    /// A zeroed buffer in the parameters' layout (gradients).
    pub fn zeros_like_params(&self) -> B::Buf {
        self.backend.zeros(lstm_params(&self.config))
    }

    /// The top layer's states at batch-major rows (`row = seq·T + step`), `[rows, H]`, on the
    /// host.
    pub fn hidden_rows(&self, a: &LstmActs<B>, rows: &[usize]) -> Vec<f32> {
        let tm: Vec<usize> = rows.iter().map(|&r| a.time_major(r)).collect();
        self.backend.gather_rows(a.h[self.config.num_layers - 1].r(), &tm, self.config.hidden_size)
    }

    pub fn activations(&self, b: usize, t: usize) -> LstmActs<B> {
        let (c, be) = (&self.config, &self.backend);
        let per_layer = || (0..c.num_layers).map(|_| be.zeros(0)).collect();
        let mut a = LstmActs {
            b: 0,
            t: 0,
            ids: vec![],
            targets: vec![],
            x: be.zeros(0),
            gates: per_layer(),
            c: per_layer(),
            h: per_layer(),
            logits: be.zeros(0),
            dg: be.zeros(0),
            dh: be.zeros(0),
            dx: be.zeros(0),
            dc_next: be.zeros(0),
            whh_t: be.zeros(0),
        };
        self.reshape(&mut a, b, t);
        a
    }

    /// Sizes `a` for `b` sequences of `t` tokens ([`activation_bytes`] in all), reusing its memory (fine-tuning's batches
    /// vary in both; no reallocation once sized for the largest).
    pub fn reshape(&self, a: &mut LstmActs<B>, b: usize, t: usize) {
        let (c, be, n) = (&self.config, &self.backend, b * t);
        let (h, wide) = (c.hidden_size, c.n_embd.max(c.hidden_size));
        (a.b, a.t) = (b, t);
        a.ids.resize(n, 0);
        a.targets.resize(n, IGNORE);
        be.resize(&mut a.x, n * c.n_embd);
        for l in 0..c.num_layers {
            be.resize(&mut a.gates[l], n * 4 * h);
            be.resize(&mut a.c[l], n * h);
            be.resize(&mut a.h[l], n * h);
        }
        be.resize(&mut a.logits, n.min(CHUNK) * c.vocab_size);
        be.resize(&mut a.dg, n * 4 * h);
        be.resize(&mut a.dh, n * wide);
        be.resize(&mut a.dx, n * wide);
        be.resize(&mut a.dc_next, b * h);
    }

    /// The forward pass of `ids` (`[B, T]`, batch-major as given) up to the top layer's states.
    pub fn forward(&self, a: &mut LstmActs<B>, ids: &[u32]) -> Result<()> {
        let (c, be, b, t) = (&self.config, &self.backend, a.b, a.t);
        let (e, h, n) = (c.n_embd, c.hidden_size, a.b * a.t);
        if ids.len() != n {
            return Err(Error::Vocab(format!(
                "{} token ids for a pass of {b} × {t} (the LSTM's activations)",
                ids.len()
            )));
        }
        if let Some(id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::Vocab(format!(
                "token id {id} is not below the LSTM's vocab_size {}",
                c.vocab_size
            )));
        }
        let mut tm = std::mem::take(&mut a.ids);
        a.to_time_major(&mut tm, ids);
        a.ids = tm;
        let (ix, p) = (Index::of(c), self.params.r());
        be.embedding_forward(a.x.w(), at::<B>(p, &ix.emb), &a.ids, e);
        for (l, [wih, whh, bih, bhh]) in ix.layers.iter().enumerate() {
            let (below, above) = a.h.split_at_mut(l);
            let (inp, k) = if l == 0 { (a.x.r(), e) } else { (below[l - 1].r(), h) };
            let (wih, whh) = (at::<B>(p, wih), at::<B>(p, whh));
            let (g, cs, hs) = (&mut a.gates[l], &mut a.c[l], &mut above[0]);
            // Gx = X · W_ihᵀ + b_ih + b_hh for every step at once          [T·B, 4H]
            be.matmul(g.w(), inp, false, wih, true, n, 4 * h, k, false);
            be.add_biases(g.w(), at::<B>(p, bih), at::<B>(p, bhh));
            // W_hh's bf16 panels made once for the T - 1 products below, not at each step.
            let _pinned = be.pin(whh);
            for step in 0..t {
                if step > 0 {
                    // G_t += h_{t-1} · W_hhᵀ                                     [B, 4H]
                    let hp = B::sub(hs.r(), (step - 1) * b * h, b * h);
                    let gt = at_mut::<B>(g.w(), &(step * b * 4 * h..(step + 1) * b * 4 * h));
                    be.matmul(gt, hp, false, whh, true, b, 4 * h, h, true);
                }
                be.lstm_cell_forward(g.w(), cs.w(), hs.w(), step, b, h);
            }
        }
        Ok(())
    }

    /// Mean cross-entropy of `targets` (`[B, T]`, [`IGNORE`] not counted) after [`forward`],
    /// every gradient accumulated into `grads` (the parameters' layout). Returns `(mean loss,
    /// counted targets)`.
    pub fn loss_backward(
        &self,
        a: &mut LstmActs<B>,
        targets: &[u32],
        grads: &mut B::Buf,
    ) -> (f64, usize) {
        let count = targets.iter().filter(|&&x| x != IGNORE).count();
        let nll = self.lm_head(a, targets, grads, 1.0 / count.max(1) as f32);
        self.backward(a, grads);
        (nll / count.max(1) as f64, count)
    }

    /// Lays `targets` (`[B, T]`, batch-major) out time-major.
    fn set_targets(a: &mut LstmActs<B>, targets: &[u32]) {
        assert_eq!(targets.len(), a.b * a.t, "targets for the pass's [B, T]");
        let mut tm = std::mem::take(&mut a.targets);
        a.to_time_major(&mut tm, targets);
        a.targets = tm;
    }

    /// The output layer and cross-entropy of `targets` (`[B, T]`) scaled by `scale`: the
    /// decoder's gradients accumulated into `grads`, ∂L/∂h of the top layer assigned to the
    /// activations' `dh` (a task head then adds to it: [`Lstm::add_dh_rows`]). Returns the
    /// unscaled NLL sum.
    pub fn lm_head(
        &self,
        a: &mut LstmActs<B>,
        targets: &[u32],
        grads: &mut B::Buf,
        scale: f32,
    ) -> f64 {
        let (c, be) = (&self.config, &self.backend);
        let (h, n) = (c.hidden_size, a.b * a.t);
        Self::set_targets(a, targets);
        let (ix, p) = (Index::of(c), self.params.r());
        let (w, bias) = (at::<B>(p, &ix.dec_w), at::<B>(p, &ix.dec_b));
        // decoder.weight is followed by decoder.bias: one split gives both gradients.
        let (dw, db) =
            B::split_mut(at_mut::<B>(grads.w(), &(ix.dec_w.start..ix.dec_b.end)), ix.dec_w.len());
        let top = a.h[c.num_layers - 1].r();
        let dh = B::split_mut(a.dh.w(), n * h).0;
        be.crossentropy_forward_backward(
            dh,
            dw,
            Some((bias, db)),
            a.logits.w(),
            top,
            w,
            &a.targets,
            h,
            scale,
        )
    }

    /// Zeroes ∂L/∂h of the top layer (fine-tuning without the auxiliary LM loss).
    pub fn zero_dh(&self, a: &mut LstmActs<B>) {
        self.backend.fill(a.dh.w(), 0.0);
    }

    /// Adds `src` (`[rows.len(), H]`, a task head's ∂L/∂h at batch-major rows) to ∂L/∂h.
    pub fn add_dh_rows(&self, a: &mut LstmActs<B>, rows: &[usize], src: &[f32]) {
        let tm: Vec<usize> = rows.iter().map(|&r| a.time_major(r)).collect();
        self.backend.scatter_add_rows(a.dh.w(), &tm, src, self.config.hidden_size);
    }

    /// Backward through time from the activations' ∂L/∂h of the top layer (time-major
    /// `[T·B, H]`), every LSTM and embedding gradient accumulated into `grads`.
    pub fn backward(&self, a: &mut LstmActs<B>, grads: &mut B::Buf) {
        let (c, be, b, t) = (&self.config, &self.backend, a.b, a.t);
        let (e, h, n) = (c.n_embd, c.hidden_size, a.b * a.t);
        let (ix, p) = (Index::of(c), self.params.r());
        // Top layer first; each layer's input gradient (dx) becomes the next one's dh.
        for (l, [rih, rhh, rbi, rbh]) in ix.layers.iter().enumerate().rev() {
            let k = if l == 0 { e } else { h };
            let (wih, whh) = (at::<B>(p, rih), at::<B>(p, rhh));
            let (g, cs, hs) = (a.gates[l].r(), a.c[l].r(), a.h[l].r());
            be.fill(a.dc_next.w(), 0.0);
            // As in the forward pass: W_hh's panels (this orientation's) made once; or, where
            // the backend's few-row products read it faster so (the CPU in fp32), W_hh stored
            // transposed once                                                       [H, 4H]
            let pinned = be.pin(whh);
            let transposed = t > 1 && be.transposed_for_rows(&mut a.whh_t, whh, b, 4 * h, h);
            for step in (0..t).rev() {
                // dG_t from ∂L/∂h_t (its own and the next step's) and ∂L/∂c_t       [B, 4H]
                be.lstm_cell_backward(a.dg.w(), a.dc_next.w(), a.dh.r(), g, cs, step, b, h);
                if step > 0 {
                    // ∂L/∂h_{t-1} += dG_t · W_hh                                     [B, H]
                    let dgt = B::sub(a.dg.r(), step * b * 4 * h, b * 4 * h);
                    let prev = at_mut::<B>(a.dh.w(), &((step - 1) * b * h..step * b * h));
                    if transposed {
                        be.matmul(prev, dgt, false, a.whh_t.r(), true, b, h, 4 * h, true);
                    } else {
                        be.matmul(prev, dgt, false, whh, false, b, h, 4 * h, true);
                    }
                }
            }
            drop(pinned);
            // Weight gradients over all steps at once.
            if t > 1 {
                // dW_hh += dG[1..]ᵀ · H[..T-1]                                       [4H, H]
                let dg1 = B::sub(a.dg.r(), b * 4 * h, (n - b) * 4 * h);
                let h0 = B::sub(hs, 0, (n - b) * h);
                be.matmul(at_mut::<B>(grads.w(), rhh), dg1, true, h0, false, 4 * h, h, n - b, true);
            }
            // dW_ih += dGᵀ · X                                                      [4H, k]
            let inp = if l == 0 { a.x.r() } else { a.h[l - 1].r() };
            be.matmul(at_mut::<B>(grads.w(), rih), a.dg.r(), true, inp, false, 4 * h, k, n, true);
            // Both biases are added to every step's gates: the same gradient, the column sums.
            for r in [rbi, rbh] {
                be.bias_backward(at_mut::<B>(grads.w(), r), a.dg.r(), n);
            }
            // dX = dG · W_ih                                                        [T·B, k]
            let dx = B::split_mut(a.dx.w(), n * k).0;
            be.matmul(dx, a.dg.r(), false, wih, false, n, k, 4 * h, false);
            std::mem::swap(&mut a.dh, &mut a.dx);
        }
        // The embedding rows, in time-major row order.
        let demb = at_mut::<B>(grads.w(), &ix.emb);
        be.embedding_backward(demb, B::split(a.dh.r(), n * e).0, &a.ids, e);
    }

    /// log p(targets) (`[B, T]`, batch-major; 0 for [`IGNORE`]) after [`Lstm::forward`]: the
    /// output layer in row chunks (the `[T·B, V]` logits never exist whole).
    pub fn logprobs(&self, a: &mut LstmActs<B>, targets: &[u32]) -> Vec<f32> {
        let (c, n) = (&self.config, a.b * a.t);
        Self::set_targets(a, targets);
        let (ix, p) = (Index::of(c), self.params.r());
        let (w, bias) = (at::<B>(p, &ix.dec_w), at::<B>(p, &ix.dec_b));
        let mut tm = vec![0.0f32; n];
        let top = a.h[c.num_layers - 1].r();
        self.backend.logprobs(&mut tm, a.logits.w(), top, w, Some(bias), &a.targets, c.hidden_size);
        (0..n).map(|r| tm[a.time_major(r)]).collect()
    }

    /// The output layer's logits after [`Lstm::forward`], batch-major `[B, T, V]`, on the host.
    /// For tests and small inputs: it makes the whole `[T·B, V]` matrix.
    pub fn logits(&self, a: &LstmActs<B>) -> Vec<f32> {
        let (c, be, n) = (&self.config, &self.backend, a.b * a.t);
        let (h, v) = (c.hidden_size, c.vocab_size);
        let (ix, p) = (Index::of(c), self.params.r());
        let bias = be.download(at::<B>(p, &ix.dec_b)).into_owned();
        let mut buf = be.zeros(n * v);
        let top = a.h[c.num_layers - 1].r();
        be.matmul(buf.w(), top, false, at::<B>(p, &ix.dec_w), true, n, v, h, false);
        let tm = be.download(buf.r());
        let mut out = vec![0.0f32; n * v];
        for (r, row) in out.chunks_mut(v).enumerate() {
            let src = &tm[a.time_major(r) * v..][..v];
            row.iter_mut().zip(src.iter().zip(&bias)).for_each(|(o, (x, b))| *o = x + b);
        }
        out
    }
}

impl<B: Backend> super::language_model::LanguageModel<B> for Lstm<B> {
    type Scratch = LstmActs<B>;
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn n_positions(&self) -> usize {
        self.config.n_positions
    }
    fn scratch(&self) -> LstmActs<B> {
        self.activations(0, 0)
    }
    fn fit(&self, s: &mut LstmActs<B>, b: usize, t: usize) {
        self.reshape(s, b, t);
    }
    fn next_logprobs(
        &self,
        s: &mut LstmActs<B>,
        ids: &[u32],
        targets: &[u32],
        out: &mut [f32],
    ) -> Result<()> {
        self.forward(s, ids)?;
        out.copy_from_slice(&self.logprobs(s, targets));
        Ok(())
    }
    fn states_at(&self, s: &mut LstmActs<B>, ids: &[u32], rows: &[usize]) -> Result<Vec<f32>> {
        self.forward(s, ids)?;
        Ok(self.hidden_rows(s, rows))
    }
    fn pin_weights(&self) -> crate::backend::Pinned<'_> {
        self.backend.pin(self.params.r())
    }
}
