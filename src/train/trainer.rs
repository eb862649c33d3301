//! One optimizer step: micro-batched forward/backward with gradient accumulation, clipping,
//! AdamW. Shared by pre-training and the benchmark.

use super::optim::{AdamW, clip_grad_norm};
use crate::error::{Error, Result};
use crate::kernels::{crossentropy::IGNORE, rng::derive};
use crate::model::{Activations, Gpt};

pub struct Trainer {
    pub model: Gpt,
    pub grads: Vec<f32>,
    pub opt: AdamW,
    acts: Activations,
    /// Sequences per forward/backward pass.
    pub micro: usize,
    pub t: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean negative log-likelihood over the batch's predicted tokens, before the update.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    pub tokens: usize,
}

impl Trainer {
    pub fn new(model: Gpt, micro: usize, t: usize, weight_decay: f32) -> Self {
        let acts = Activations::new(&model.config, micro, t, true);
        let opt = AdamW::new(&model.config, weight_decay);
        let grads = vec![0.0; model.params.len()];
        Trainer {
            model,
            grads,
            opt,
            acts,
            micro,
            t,
        }
    }

    /// Activations for evaluation share the training buffers.
    pub fn acts(&mut self) -> &mut Activations {
        &mut self.acts
    }

    /// Mean NLL of `[n, t]` windows without dropout or gradients (n a multiple of `micro`, or
    /// the remainder evaluated in a smaller pass).
    pub fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64 {
        let chunk = self.micro * self.t;
        let mut lp = vec![0.0f32; chunk];
        let (mut sum, mut count) = (0.0f64, 0usize);
        for (i, tg) in ids.chunks(chunk).zip(targets.chunks(chunk)) {
            if i.len() != chunk {
                let mut small =
                    Activations::new(&self.model.config, i.len() / self.t, self.t, false);
                self.model.logprobs(&mut small, i, tg, &mut lp[..i.len()]);
            } else {
                self.model.logprobs(&mut self.acts, i, tg, &mut lp);
            }
            for (l, &t) in lp[..i.len()].iter().zip(tg) {
                if t != IGNORE {
                    sum -= *l as f64;
                    count += 1;
                }
            }
        }
        sum / count.max(1) as f64
    }

    /// One optimizer step over a batch `[B, t]` (B a multiple of `micro`). `step` only labels
    /// errors; `dropout_key` is `None` to train without dropout.
    pub fn step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        lr: f32,
        clip: f32,
        dropout_key: Option<u64>,
        step: u64,
    ) -> Result<StepStats> {
        let chunk = self.micro * self.t;
        assert_eq!(
            ids.len() % chunk,
            0,
            "batch must be a multiple of the micro-batch"
        );
        let counted = targets.iter().filter(|&&t| t != IGNORE).count();
        let scale = 1.0 / counted.max(1) as f32;
        self.grads.iter_mut().for_each(|g| *g = 0.0);
        let mut nll = 0.0f64;
        for (k, (i, tg)) in ids.chunks(chunk).zip(targets.chunks(chunk)).enumerate() {
            let key = dropout_key.map(|key| derive(key, k as u64));
            nll += self
                .model
                .forward_backward(&mut self.acts, &mut self.grads, i, tg, key, scale);
        }
        let loss = nll / counted.max(1) as f64;
        let grad_norm = clip_grad_norm(&mut self.grads, clip);
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(Error::Diverged {
                step,
                loss: if loss.is_finite() {
                    grad_norm as f64
                } else {
                    loss
                },
            });
        }
        self.opt.step(&mut self.model.params, &self.grads, lr);
        Ok(StepStats {
            loss,
            grad_norm,
            tokens: counted,
        })
    }
}
