//! The flat parameter layout: every tensor of the model at a fixed offset in one f32 buffer
//! (gradients and Adam moments use buffers of the same layout).

use super::config::Config;
use crate::backend::Backend;

/// One named tensor of the layout, with HF's (unprefixed) name and shape.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    /// Weight decay applies (rank >= 2: matrices and embeddings, not biases or LayerNorm).
    pub decay: bool,
}

impl TensorInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The layer tensors in buffer order: (HF suffix, shape). The one declaration of a block's
/// tensors: [`layout`], [`num_params`] and the views all follow it.
fn layer_tensors(d: usize) -> [(&'static str, Vec<usize>); 12] {
    [
        ("attn.c_attn.weight", vec![d, 3 * d]),
        ("attn.c_attn.bias", vec![3 * d]),
        ("attn.c_proj.weight", vec![d, d]),
        ("attn.c_proj.bias", vec![d]),
        ("ln_1.weight", vec![d]),
        ("ln_1.bias", vec![d]),
        ("mlp.c_fc.weight", vec![d, 4 * d]),
        ("mlp.c_fc.bias", vec![4 * d]),
        ("mlp.c_proj.weight", vec![4 * d, d]),
        ("mlp.c_proj.bias", vec![d]),
        ("ln_2.weight", vec![d]),
        ("ln_2.bias", vec![d]),
    ]
}

/// Every tensor of a model, in buffer order.
pub fn layout(c: &Config) -> Vec<TensorInfo> {
    let d = c.n_embd;
    let mut out = Vec::new();
    let mut off = 0;
    let mut push = |name: String, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        out.push(TensorInfo { decay: shape.len() >= 2, name, shape, offset: off });
        off += n;
    };
    push("tokens_embed.weight".into(), vec![c.vocab_size, d]);
    push("positions_embed.weight".into(), vec![c.n_positions, d]);
    for l in 0..c.n_layer {
        for (suffix, shape) in layer_tensors(d) {
            push(format!("h.{l}.{suffix}"), shape);
        }
    }
    out
}

pub fn num_params(c: &Config) -> usize {
    (c.vocab_size + c.n_positions) * c.n_embd + c.n_layer * layer_size(c.n_embd)
}

/// Parameters of one block.
pub fn layer_size(d: usize) -> usize {
    layer_tensors(d).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

/// One block's tensors as views of a buffer (parameters or gradients); `d` = n_embd, weights
/// `[in, out]` as HF's Conv1D stores them.
pub struct Layer<T> {
    /// `[d, 3d]`, `[3d]`: the fused q/k/v projection.
    pub attn_w: T,
    pub attn_b: T,
    /// `[d, d]`, `[d]`: the attention output projection.
    pub proj_w: T,
    pub proj_b: T,
    /// `[d]`, `[d]`: LayerNorm after the attention residual.
    pub ln1_g: T,
    pub ln1_b: T,
    /// `[d, 4d]`, `[4d]`: the feed-forward's first layer.
    pub fc_w: T,
    pub fc_b: T,
    /// `[4d, d]`, `[d]`: the feed-forward's second layer.
    pub mproj_w: T,
    pub mproj_b: T,
    /// `[d]`, `[d]`: LayerNorm after the feed-forward residual.
    pub ln2_g: T,
    pub ln2_b: T,
}

/// The whole buffer split into named views.
pub struct Views<T> {
    /// `[V, d]` token embeddings, tied with the LM head.
    pub wte: T,
    /// `[n_positions, d]` learned position embeddings.
    pub wpe: T,
    pub layers: Vec<Layer<T>>,
}

impl<T> Layer<T> {
    /// The twelve tensors in [`layer_tensors`]' order.
    fn from_parts(parts: impl IntoIterator<Item = T>) -> Self {
        let mut it = parts.into_iter();
        let mut next = || it.next().expect("twelve tensors per block");
        Layer {
            attn_w: next(),
            attn_b: next(),
            proj_w: next(),
            proj_b: next(),
            ln1_g: next(),
            ln1_b: next(),
            fc_w: next(),
            fc_b: next(),
            mproj_w: next(),
            mproj_b: next(),
            ln2_g: next(),
            ln2_b: next(),
        }
    }
}

/// Cuts a buffer into its named views, in [`layout`]'s order and sizes (the one declaration of
/// the tensors), with `split(x, n)` = (the first `n` values, the rest).
fn split_views<T>(buf: T, c: &Config, split: impl Fn(T, usize) -> (T, T)) -> Views<T> {
    // Sizes from the one declaration, computed once per call (views are cut every pass).
    let block: [usize; 12] = layer_tensors(c.n_embd).map(|(_, s)| s.iter().product());
    let mut rest = Some(buf);
    let mut take = |n: usize| {
        let (a, b) = split(rest.take().expect("buffer"), n);
        rest = Some(b);
        a
    };
    let (wte, wpe) = (take(c.vocab_size * c.n_embd), take(c.n_positions * c.n_embd));
    let layers = (0..c.n_layer).map(|_| Layer::from_parts(block.map(&mut take))).collect();
    Views { wte, wpe, layers }
}

/// The parameters (or gradients) of a model as named read-only views.
pub fn views<'a, B: Backend>(buf: B::Ref<'a>, c: &Config) -> Views<B::Ref<'a>> {
    assert_eq!(B::len(buf), num_params(c));
    split_views(buf, c, B::split)
}

/// The parameters (or gradients) of a model as named writable views.
pub fn views_mut<'a, B: Backend>(buf: B::Mut<'a>, c: &Config) -> Views<B::Mut<'a>> {
    split_views(buf, c, B::split_mut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_views_and_count() {
        let c = Config::named("tiny").unwrap();
        let l = layout(&c);
        let total: usize = l.iter().map(|t| t.len()).sum();
        assert_eq!(total, num_params(&c));
        let last = l.last().unwrap();
        assert_eq!(last.offset + last.len(), total);
        let buf: Vec<f32> = (0..total).map(|i| i as f32).collect();
        let v = views::<crate::backend::Cpu>(&buf, &c);
        let fc = l.iter().find(|t| t.name == "h.2.mlp.c_fc.weight").unwrap();
        assert_eq!(v.layers[2].fc_w[0], fc.offset as f32);
        assert_eq!(l.iter().filter(|t| t.decay).count(), 2 + 4 * c.n_layer);
    }

    #[test]
    fn gpt1_has_the_papers_size() {
        let c = Config::named("gpt1").unwrap();
        // 116.5M: the figure usually quoted for GPT-1 with its 40,478-token vocabulary, plus the
        // three special-token rows.
        assert_eq!(num_params(&c), 116_534_784 + 3 * 768);
    }
}
