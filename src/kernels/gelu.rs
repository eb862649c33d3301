//! GELU, tanh approximation (HF's `gelu_new`, the `afn: "gelu"` of OpenAIGPT).

use rayon::prelude::*;

const S: f32 = 0.797_884_6; // sqrt(2 / pi)
const C: f32 = 0.044_715;
const CHUNK: usize = 4096;

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + super::fastmath::tanh(S * (x + C * x * x * x)))
}

#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    let t = super::fastmath::tanh(S * (x + C * x * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * S * (1.0 + 3.0 * C * x * x)
}

pub fn forward(out: &mut [f32], x: &[f32]) {
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = gelu(x);
        }
    });
}

/// `dx *= gelu'(x)` in place: `dx` holds ∂L/∂out on entry.
pub fn backward_inplace(dx: &mut [f32], x: &[f32]) {
    dx.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(d, x)| {
        for (d, &x) in d.iter_mut().zip(x) {
            *d *= gelu_grad(x);
        }
    });
}
