//! AdamW with decoupled, learning-rate-scaled weight decay on rank >= 2 tensors, and global
//! gradient-norm clipping: the update of `torch.optim.AdamW` with the paper's grouping. The
//! moments live on the backend, beside the parameters.

use crate::backend::{Backend, Cpu, DeviceBuf};
use crate::error::{Error, Result};
use crate::kernels::optim::AdamStep;
use crate::kernels::reduce::sum_squares;
use crate::model::{Config, params::layout};
use std::ops::Range;

pub struct AdamW<B: Backend = Cpu> {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// First and second moments, in the parameters' layout.
    pub m: B::Buf,
    pub v: B::Buf,
    /// Updates taken so far (the bias corrections' exponent).
    pub t: u64,
    groups: Vec<(Range<usize>, bool)>,
    backend: B,
}

impl AdamW<Cpu> {
    /// For a model's parameters, on the CPU.
    pub fn new(config: &Config, weight_decay: f32) -> Self {
        Self::new_on(&Cpu::FP32, config, weight_decay)
    }

    /// For a flat host buffer of `n` values that all do (or all do not) take weight decay (a
    /// task head's matrix or bias).
    pub fn flat(n: usize, decay: bool, weight_decay: f32) -> Self {
        Self::with_groups(&Cpu::FP32, vec![(0..n, decay)], weight_decay)
    }
}

impl AdamW<Cpu> {
    /// The same state on another backend (a resumed run moving to a GPU).
    pub fn to_backend<C: Backend>(self, backend: &C) -> AdamW<C> {
        AdamW {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            m: backend.upload(&self.m),
            v: backend.upload(&self.v),
            t: self.t,
            groups: self.groups,
            backend: backend.clone(),
        }
    }
}

impl<B: Backend> AdamW<B> {
    /// For a model's parameters: one group per tensor of the layout, decayed when its rank is 2.
    pub fn new_on(backend: &B, config: &Config, weight_decay: f32) -> Self {
        let groups = layout(config).into_iter().map(|t| (t.range(), t.decay)).collect();
        Self::with_groups(backend, groups, weight_decay)
    }

    /// The backend holding the moments.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// For a buffer cut into ranges that do (`true`) or do not take weight decay.
    pub fn with_groups(backend: &B, groups: Vec<(Range<usize>, bool)>, weight_decay: f32) -> Self {
        let n = groups.last().map_or(0, |g| g.0.end);
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            m: backend.zeros(n),
            v: backend.zeros(n),
            t: 0,
            groups,
            backend: backend.clone(),
        }
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, params: &mut B::Buf, grads: &B::Buf, lr: f32) {
        if self.t == 0 {
            // The moments are zero before the first update (the values written are the ones
            // they hold). On the CPU a fresh `vec![0.0; n]` is mapped lazily: the update's
            // first read of each page would map the kernel's shared zero page and its write
            // then copy it and interrupt every core to flush the old mapping, a page at a time
            // (15 % of a 4-step LSTM benchmark on 2 cores of an AMX Xeon; a first step 1.0 s
            // longer at 57 M parameters, 2.2 s at 117 M). Written first, each page faults in
            // once.
            self.backend.fill(self.m.w(), 0.0);
            self.backend.fill(self.v.w(), 0.0);
        }
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - (b1 as f64).powi(self.t as i32);
        let bc2_sqrt = (1.0 - (b2 as f64).powi(self.t as i32)).sqrt() as f32;
        let step_size = (lr as f64 / bc1) as f32;
        for (r, decay) in &self.groups {
            let shrink = if *decay { 1.0 - lr * self.weight_decay } else { 1.0 };
            let h = AdamStep { beta1: b1, beta2: b2, eps: self.eps, step_size, bc2_sqrt, shrink };
            let (p, m, v) = (
                B::sub_mut(params.w(), r.start, r.len()),
                B::sub_mut(self.m.w(), r.start, r.len()),
                B::sub_mut(self.v.w(), r.start, r.len()),
            );
            self.backend.adamw(p, B::sub(grads.r(), r.start, r.len()), m, v, h);
        }
    }
}

/// The end of a step's gradients: their global L2 norm over a body's buffer and a head's host
/// buffers (in that order); a NaN or infinite `loss` or norm stops the step (`Diverged`, named
/// `step`) before any update; otherwise all are scaled together to a norm of at most `max_norm`
/// (0: no clipping), as `torch.nn.utils.clip_grad_norm_` over all parameters does. Returns the
/// norm before clipping.
pub fn clip_checked<B: Backend>(
    be: &B,
    body: &mut B::Buf,
    head: &mut [&mut Vec<f32>],
    max_norm: f32,
    loss: f64,
    step: u64,
) -> Result<f32> {
    let mut sq = be.sum_squares(body.r());
    for p in head.iter() {
        sq += sum_squares(p);
    }
    let norm = sq.sqrt() as f32;
    if !loss.is_finite() || !norm.is_finite() {
        let loss = if loss.is_finite() { norm as f64 } else { loss };
        return Err(Error::Diverged { step, loss });
    }
    if let Some(coef) = clip_coef(norm, max_norm) {
        be.scale(body.w(), coef);
        head.iter_mut().flat_map(|p| p.iter_mut()).for_each(|g| *g *= coef);
    }
    Ok(norm)
}

/// The factor that brings a gradient of norm `norm` down to `max_norm` (`None`: leave it).
pub fn clip_coef(norm: f32, max_norm: f32) -> Option<f32> {
    let coef = max_norm / (norm + 1e-6);
    (max_norm > 0.0 && coef < 1.0).then_some(coef)
}
