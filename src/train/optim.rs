//! AdamW with decoupled, learning-rate-scaled weight decay on rank >= 2 tensors, and global
//! gradient-norm clipping: the update of `torch.optim.AdamW` with the paper's grouping.

use crate::kernels::reduce::sum_squares;
use crate::model::{Config, params::layout};
use rayon::prelude::*;
use std::ops::Range;

#[derive(Clone, Debug)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// First and second moments, in the parameters' layout.
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Updates taken so far (the bias corrections' exponent).
    pub t: u64,
    groups: Vec<(Range<usize>, bool)>,
}

const CHUNK: usize = 1 << 14;

impl AdamW {
    pub fn new(config: &Config, weight_decay: f32) -> Self {
        let groups: Vec<(Range<usize>, bool)> = layout(config)
            .into_iter()
            .map(|t| (t.range(), t.decay))
            .collect();
        let n = groups.last().map_or(0, |g| g.0.end);
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            groups,
        }
    }

    /// For a flat buffer of `n` values that all do (or all do not) take weight decay (a task
    /// head's matrix or bias).
    pub fn flat(n: usize, decay: bool, weight_decay: f32) -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            groups: vec![(0..n, decay)],
        }
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        self.t += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let bc1 = 1.0 - (b1 as f64).powi(self.t as i32);
        let bc2_sqrt = (1.0 - (b2 as f64).powi(self.t as i32)).sqrt() as f32;
        let step_size = (lr as f64 / bc1) as f32;
        for (r, decay) in &self.groups {
            let shrink = if *decay {
                1.0 - lr * self.weight_decay
            } else {
                1.0
            };
            params[r.clone()]
                .par_chunks_mut(CHUNK)
                .zip(grads[r.clone()].par_chunks(CHUNK))
                .zip(
                    self.m[r.clone()]
                        .par_chunks_mut(CHUNK)
                        .zip(self.v[r.clone()].par_chunks_mut(CHUNK)),
                )
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
    }
}

/// The global L2 norm of `grads` (before clipping); scales them to at most `max_norm` when
/// `max_norm > 0`, as `torch.nn.utils.clip_grad_norm_` does.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = sum_squares(grads).sqrt() as f32;
    if max_norm > 0.0 {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            grads
                .par_chunks_mut(CHUNK)
                .for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
        }
    }
    norm
}
