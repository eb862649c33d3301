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

use crate::error::{Error, Result};
use crate::kernels::crossentropy::{CHUNK, IGNORE, forward_backward_biased, logprobs_biased};
use crate::kernels::matmul::{Gemm, Mat};
use crate::kernels::rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

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

/// One tensor of the flat buffer: PyTorch's name, shape, and where it lives.
#[derive(Clone, Debug)]
pub struct LstmTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    /// Takes weight decay (the matrices; not biases).
    pub decay: bool,
}

impl LstmTensor {
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.shape.iter().product::<usize>()
    }
}

/// The layout, in PyTorch's `state_dict` order.
pub fn lstm_layout(c: &LstmConfig) -> Vec<LstmTensor> {
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
            let t = LstmTensor { name, offset, decay, shape };
            offset = t.range().end;
            t
        })
        .collect()
}

/// Where the tensor `name` lives in a layout.
fn range_of(layout: &[LstmTensor], name: &str) -> Range<usize> {
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

/// The model: its configuration and one flat parameter buffer.
#[derive(Clone, Debug)]
pub struct Lstm {
    pub config: LstmConfig,
    pub params: Vec<f32>,
}

/// Buffers of one pass over `b` sequences of `t` tokens (time-major rows, `row = step·b + seq`).
pub struct LstmActs {
    pub b: usize,
    pub t: usize,
    /// `[T·B, E]` the embedded tokens.
    x: Vec<f32>,
    /// Per layer `[T·B, 4H]`: the gates after their nonlinearities (i, f, g, o).
    gates: Vec<Vec<f32>>,
    /// Per layer `[T·B, H]`: the cell states.
    c: Vec<Vec<f32>>,
    /// Per layer `[T·B, H]`: the outputs h (layer l's is layer l+1's input).
    h: Vec<Vec<f32>>,
    /// `[min(T·B, CHUNK), V]` logits workspace.
    logits: Vec<f32>,
    /// `[T·B]` the time-major targets.
    targets: Vec<u32>,
}

impl LstmActs {
    /// The time-major row of batch-major row `r` (`r = seq·T + step`).
    pub fn time_major(&self, r: usize) -> usize {
        (r % self.t) * self.b + r / self.t
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Lstm {
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
        Lstm { config, params }
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

    /// The top layer's states at batch-major rows (`row = seq·T + step`), `[rows, H]`.
    pub fn hidden_rows(&self, a: &LstmActs, rows: &[usize]) -> Vec<f32> {
        let h = self.config.hidden_size;
        let top = &a.h[self.config.num_layers - 1];
        let mut out = Vec::with_capacity(rows.len() * h);
        for &r in rows {
            let tm = a.time_major(r);
            out.extend_from_slice(&top[tm * h..(tm + 1) * h]);
        }
        out
    }

    pub fn activations(&self, b: usize, t: usize) -> LstmActs {
        let (c, n) = (&self.config, b * t);
        let l = c.num_layers;
        LstmActs {
            b,
            t,
            x: vec![0.0; n * c.n_embd],
            gates: vec![vec![0.0; n * 4 * c.hidden_size]; l],
            c: vec![vec![0.0; n * c.hidden_size]; l],
            h: vec![vec![0.0; n * c.hidden_size]; l],
            logits: vec![0.0; n.min(CHUNK) * c.vocab_size],
            targets: vec![IGNORE; n],
        }
    }

    /// The forward pass of `ids` (`[B, T]`, batch-major as given) up to the top layer's states.
    pub fn forward(&self, a: &mut LstmActs, ids: &[u32]) -> Result<()> {
        let (c, b, t) = (&self.config, a.b, a.t);
        let (e, h) = (c.n_embd, c.hidden_size);
        let layout = lstm_layout(c);
        let tensor = |name: &str| &self.params[range_of(&layout, name)];
        let emb = tensor("embedding.weight");
        for s in 0..b {
            for step in 0..t {
                let id = ids[s * t + step] as usize;
                if id >= c.vocab_size {
                    return Err(Error::Vocab(format!(
                        "token id {id} is not below the LSTM's vocab_size {}",
                        c.vocab_size
                    )));
                }
                let row = step * b + s;
                a.x[row * e..(row + 1) * e].copy_from_slice(&emb[id * e..(id + 1) * e]);
            }
        }
        for l in 0..c.num_layers {
            let inp = if l == 0 { &a.x } else { &a.h[l - 1] };
            let k = c.input(l);
            let (wih, whh) =
                (tensor(&format!("lstm.weight_ih_l{l}")), tensor(&format!("lstm.weight_hh_l{l}")));
            let (bih, bhh) =
                (tensor(&format!("lstm.bias_ih_l{l}")), tensor(&format!("lstm.bias_hh_l{l}")));
            let g = &mut a.gates[l];
            // Gx = X · W_ihᵀ + b_ih + b_hh for every step at once.
            Gemm::Fp32.mm(g, Mat::rows(inp, k), Mat::t(wih, k), b * t, 4 * h, k, false);
            for row in g.chunks_mut(4 * h) {
                for ((x, p), q) in row.iter_mut().zip(bih).zip(bhh) {
                    *x += p + q;
                }
            }
            let (cs, hs) = (&mut a.c[l], &mut a.h[l]);
            for step in 0..t {
                let rows = step * b..(step + 1) * b;
                let gt = &mut g[rows.start * 4 * h..rows.end * 4 * h];
                if step > 0 {
                    let hp = &hs[(step - 1) * b * h..step * b * h];
                    Gemm::Fp32.mm(gt, Mat::rows(hp, h), Mat::t(whh, h), b, 4 * h, h, true);
                }
                for s in 0..b {
                    let gs = &mut gt[s * 4 * h..(s + 1) * 4 * h];
                    let row = step * b + s;
                    for j in 0..h {
                        let (i, f) = (sigmoid(gs[j]), sigmoid(gs[h + j]));
                        let (gg, o) = (gs[2 * h + j].tanh(), sigmoid(gs[3 * h + j]));
                        (gs[j], gs[h + j], gs[2 * h + j], gs[3 * h + j]) = (i, f, gg, o);
                        let cp = if step > 0 { cs[(row - b) * h + j] } else { 0.0 };
                        let cn = f * cp + i * gg;
                        cs[row * h + j] = cn;
                        hs[row * h + j] = o * cn.tanh();
                    }
                }
            }
        }
        Ok(())
    }

    /// Mean cross-entropy of `targets` (`[B, T]`, [`IGNORE`] not counted) after [`forward`],
    /// every gradient accumulated into `grads` (the parameters' layout). Returns `(mean loss,
    /// counted targets)`.
    pub fn loss_backward(
        &self,
        a: &mut LstmActs,
        ids: &[u32],
        targets: &[u32],
        grads: &mut [f32],
    ) -> (f64, usize) {
        let count = targets.iter().filter(|&&x| x != IGNORE).count();
        let (nll, dh) = self.lm_head(a, targets, grads, 1.0 / count.max(1) as f32);
        self.backward(a, ids, dh, grads);
        (nll / count.max(1) as f64, count)
    }

    /// The output layer and cross-entropy of `targets` (`[B, T]`) scaled by `scale`: the
    /// decoder's gradients accumulated into `grads`; returns the unscaled NLL sum and ∂L/∂h of
    /// the top layer, time-major `[T·B, H]` (for [`Lstm::backward`], after adding a task head's).
    pub fn lm_head(
        &self,
        a: &mut LstmActs,
        targets: &[u32],
        grads: &mut [f32],
        scale: f32,
    ) -> (f64, Vec<f32>) {
        let (c, b, t) = (&self.config, a.b, a.t);
        let (h, v) = (c.hidden_size, c.vocab_size);
        for s in 0..b {
            for step in 0..t {
                a.targets[step * b + s] = targets[s * t + step];
            }
        }
        let layout = lstm_layout(c);
        let range = |name: &str| range_of(&layout, name);
        let mut dh = vec![0.0f32; b * t * h];
        let (dec_w, dec_b) = (range("decoder.weight"), range("decoder.bias"));
        let (gw, rest) = grads.split_at_mut(dec_b.start);
        let nll = forward_backward_biased(
            Gemm::Fp32,
            &mut dh,
            &mut gw[dec_w.clone()],
            Some((&self.params[dec_b.clone()], &mut rest[..v])),
            &mut a.logits,
            &a.h[c.num_layers - 1],
            &self.params[dec_w],
            &a.targets,
            h,
            scale,
        );
        (nll, dh)
    }

    /// Backward through time from ∂L/∂h of the top layer (time-major `[T·B, H]`), every LSTM
    /// and embedding gradient accumulated into `grads`.
    pub fn backward(&self, a: &LstmActs, ids: &[u32], mut dh: Vec<f32>, grads: &mut [f32]) {
        let (c, b, t) = (&self.config, a.b, a.t);
        let (e, h) = (c.n_embd, c.hidden_size);
        let n = b * t;
        let layout = lstm_layout(c);
        let range = |name: &str| range_of(&layout, name);
        // Backward through time, top layer first; `dh` becomes each layer's input gradient.
        let mut dg = vec![0.0f32; n * 4 * h];
        for l in (0..c.num_layers).rev() {
            let k = c.input(l);
            let (rih, rhh) =
                (range(&format!("lstm.weight_ih_l{l}")), range(&format!("lstm.weight_hh_l{l}")));
            let (rbi, rbh) =
                (range(&format!("lstm.bias_ih_l{l}")), range(&format!("lstm.bias_hh_l{l}")));
            let whh = &self.params[rhh.clone()];
            let (g, cs) = (&a.gates[l], &a.c[l]);
            let (mut dh_next, mut dc_next) = (vec![0.0f32; b * h], vec![0.0f32; b * h]);
            for step in (0..t).rev() {
                for s in 0..b {
                    let row = step * b + s;
                    let gs = &g[row * 4 * h..(row + 1) * 4 * h];
                    let d = &mut dg[row * 4 * h..(row + 1) * 4 * h];
                    for j in 0..h {
                        let (i, f, gg, o) = (gs[j], gs[h + j], gs[2 * h + j], gs[3 * h + j]);
                        let tc = cs[row * h + j].tanh();
                        let dhj = dh[row * h + j] + dh_next[s * h + j];
                        let dc = dc_next[s * h + j] + dhj * o * (1.0 - tc * tc);
                        let cp = if step > 0 { cs[(row - b) * h + j] } else { 0.0 };
                        d[j] = dc * gg * i * (1.0 - i);
                        d[h + j] = dc * cp * f * (1.0 - f);
                        d[2 * h + j] = dc * i * (1.0 - gg * gg);
                        d[3 * h + j] = dhj * tc * o * (1.0 - o);
                        dc_next[s * h + j] = dc * f;
                    }
                }
                // dh_{t-1} = dG_t · W_hh.
                let dgt = &dg[step * b * 4 * h..(step + 1) * b * 4 * h];
                Gemm::Fp32.mm(
                    &mut dh_next,
                    Mat::rows(dgt, 4 * h),
                    Mat::rows(whh, h),
                    b,
                    h,
                    4 * h,
                    false,
                );
            }
            // Weight gradients over all steps at once.
            if t > 1 {
                let hs = &a.h[l];
                Gemm::Fp32.mm(
                    &mut grads[rhh],
                    Mat::t(&dg[b * 4 * h..], 4 * h),
                    Mat::rows(&hs[..(t - 1) * b * h], h),
                    4 * h,
                    h,
                    (t - 1) * b,
                    true,
                );
            }
            let inp = if l == 0 { &a.x } else { &a.h[l - 1] };
            Gemm::Fp32.mm(
                &mut grads[rih.clone()],
                Mat::t(&dg, 4 * h),
                Mat::rows(inp, k),
                4 * h,
                k,
                n,
                true,
            );
            // Both biases are added to every step's gates: the same gradient, the column sums.
            let db = dg.chunks(4 * h).fold(vec![0.0f32; 4 * h], |mut acc, row| {
                acc.iter_mut().zip(row).for_each(|(x, d)| *x += d);
                acc
            });
            for r in [rbi, rbh] {
                grads[r].iter_mut().zip(&db).for_each(|(x, d)| *x += d);
            }
            // The input's gradient: dX = dG · W_ih.
            let mut dx = vec![0.0f32; n * k];
            Gemm::Fp32.mm(
                &mut dx,
                Mat::rows(&dg, 4 * h),
                Mat::rows(&self.params[rih], k),
                n,
                k,
                4 * h,
                false,
            );
            dh = dx;
        }
        // Embedding rows, in row order (the same sums for any thread count).
        let re = range("embedding.weight");
        for s in 0..b {
            for step in 0..t {
                let (id, row) = (ids[s * t + step] as usize, step * b + s);
                let dst = &mut grads[re.start + id * e..re.start + (id + 1) * e];
                dst.iter_mut().zip(&dh[row * e..(row + 1) * e]).for_each(|(x, d)| *x += d);
            }
        }
    }
}

/// Writes `config.json` and `model.safetensors` (PyTorch's names) into `dir`.
pub fn save_lstm(dir: &std::path::Path, m: &Lstm) -> Result<()> {
    use crate::io::write_atomic;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cfg = serde_json::to_string_pretty(&m.config).expect("json");
    write_atomic(&dir.join("config.json"), cfg.as_bytes())?;
    let tensors: Vec<(String, Vec<usize>, &[f32])> = lstm_layout(&m.config)
        .into_iter()
        .map(|t| {
            let r = t.range();
            (t.name, t.shape, &m.params[r])
        })
        .collect();
    write_atomic(
        &dir.join("model.safetensors"),
        &crate::model::checkpoint::safetensors_bytes(&tensors)?,
    )
}

/// Whether `dir` holds an LSTM checkpoint (its `config.json` says `"model_type": "lstm"`).
pub fn is_lstm(dir: &std::path::Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["model_type"] == "lstm")
}

/// Loads what [`save_lstm`] (or PyTorch's `save_file(model.state_dict())`) wrote.
pub fn load_lstm(dir: &std::path::Path) -> Result<Lstm> {
    use crate::model::checkpoint::{copy_f32, read_safetensors};
    let cp = dir.join("config.json");
    let text = std::fs::read_to_string(&cp).map_err(|e| Error::io(&cp, e))?;
    let config: LstmConfig = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(&cp, format!("not an LSTM config ({e})")))?;
    config.validate().map_err(|m| Error::invalid(&cp, m))?;
    let wp = dir.join("model.safetensors");
    let bytes = read_safetensors(&wp)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(&wp, format!("not a valid safetensors file ({e})")))?;
    let layout = lstm_layout(&config);
    for t in &layout {
        let view = st.tensor(&t.name).map_err(|_| {
            Error::invalid(&wp, format!("tensor {} is missing (config.json: {:?})", t.name, config))
        })?;
        if view.shape() != t.shape.as_slice() {
            return Err(Error::invalid(
                &wp,
                format!(
                    "tensor {} has shape {:?}, config.json implies {:?}",
                    t.name,
                    view.shape(),
                    t.shape
                ),
            ));
        }
    }
    let mut params = vec![0.0f32; lstm_params(&config)];
    for t in &layout {
        let view = st.tensor(&t.name).expect("checked");
        copy_f32(&wp, &t.name, &view, &mut params[t.range()])?;
        if params[t.range()].iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(
                &wp,
                format!("tensor {} holds a NaN or infinite value", t.name),
            ));
        }
    }
    Ok(Lstm { config, params })
}

impl Lstm {
    /// log p(targets) (`[B, T]`, batch-major; 0 for [`IGNORE`]) after [`Lstm::forward`]: the
    /// output layer in row chunks (the `[T·B, V]` logits never exist whole).
    pub fn logprobs(&self, a: &mut LstmActs, targets: &[u32]) -> Vec<f32> {
        let (c, b, t) = (&self.config, a.b, a.t);
        for s in 0..b {
            for step in 0..t {
                a.targets[step * b + s] = targets[s * t + step];
            }
        }
        let layout = lstm_layout(c);
        let (w, bias) = (range_of(&layout, "decoder.weight"), range_of(&layout, "decoder.bias"));
        let mut tm = vec![0.0f32; b * t];
        logprobs_biased(
            Gemm::Fp32,
            &mut tm,
            &mut a.logits,
            &a.h[c.num_layers - 1],
            &self.params[w],
            Some(&self.params[bias]),
            &a.targets,
            c.hidden_size,
        );
        (0..b * t).map(|r| tm[a.time_major(r)]).collect()
    }

    /// The output layer's logits after [`Lstm::forward`], batch-major `[B, T, V]`.
    pub fn logits(&self, a: &LstmActs) -> Vec<f32> {
        let (c, b, t) = (&self.config, a.b, a.t);
        let (h, v) = (c.hidden_size, c.vocab_size);
        let layout = lstm_layout(c);
        let get = |n: &str| &self.params[range_of(&layout, n)];
        let (w, bias) = (get("decoder.weight"), get("decoder.bias"));
        let mut tm = vec![0.0f32; b * t * v];
        Gemm::Fp32.mm(
            &mut tm,
            Mat::rows(&a.h[c.num_layers - 1], h),
            Mat::t(w, h),
            b * t,
            v,
            h,
            false,
        );
        let mut out = vec![0.0f32; b * t * v];
        for s in 0..b {
            for step in 0..t {
                let (src, dst) = ((step * b + s) * v, (s * t + step) * v);
                for j in 0..v {
                    out[dst + j] = tm[src + j] + bias[j];
                }
            }
        }
        out
    }
}
