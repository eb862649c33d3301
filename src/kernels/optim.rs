//! The optimizer's element-wise kernels: AdamW's update and gradient scaling (clipping).

use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// One AdamW update's constants (the bias corrections folded in), shared by every group.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
    /// `1 - lr · weight_decay` for decayed tensors, 1 otherwise.
    pub shrink: f32,
}

/// One AdamW update of a parameter group: moments `m`, `v` and parameters `p` updated in
/// place from the gradients `g` (decoupled weight decay through `h.shrink`).
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: AdamStep) {
    let AdamStep { beta1: b1, beta2: b2, eps, step_size, bc2_sqrt, shrink } = h;
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let gi = g[i];
                m[i] += (gi - m[i]) * (1.0 - b1);
                v[i] = v[i] * b2 + (1.0 - b2) * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] = p[i] * shrink - step_size * (m[i] / denom);
            }
        });
}

/// `x *= f`.
pub fn scale(x: &mut [f32], f: f32) {
    x.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|g| *g *= f));
}
