//! GELU, tanh approximation (HF's `gelu_new`, the `afn: "gelu"` of OpenAIGPT).

use rayon::prelude::*;

const S: f32 = 0.797_884_6; // sqrt(2 / pi)
const C: f32 = 0.044_715;
const CHUNK: usize = 4096;

/// tanh of GELU's inner argument: one function for the forward pass and the backward pass's
/// recomputation, so both round alike (bitwise the same GELU).
#[inline(always)]
fn inner_tanh(x: f32) -> f32 {
    super::fastmath::tanh(S * (x + C * x * x * x))
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + inner_tanh(x))
}

pub fn forward(out: &mut [f32], x: &[f32]) {
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = gelu(x);
        }
    });
}

/// `dx *= gelu'(x)` in place (`dx` holds ∂L/∂out on entry), and `out = gelu(x)`: the backward
/// pass recomputes the GELU that the next weight gradient reads (the blocks share one buffer for
/// it), from the tanh it needs anyway. `out` is bitwise [`forward`]'s.
pub fn backward(dx: &mut [f32], out: &mut [f32], x: &[f32]) {
    assert!(out.len() == dx.len() && x.len() == dx.len(), "gelu backward: lengths differ");
    dx.par_chunks_mut(CHUNK).zip(out.par_chunks_mut(CHUNK)).zip(x.par_chunks(CHUNK)).for_each(
        |((d, o), x)| {
            for ((d, o), &x) in d.iter_mut().zip(o).zip(x) {
                let t = inner_tanh(x);
                *o = 0.5 * x * (1.0 + t);
                *d *= 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * S * (1.0 + 3.0 * C * x * x);
            }
        },
    );
}
