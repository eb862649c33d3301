//! One training step of the LSTM baseline: forward, cross-entropy, backward through time,
//! global-norm clipping, AdamW with decoupled weight decay on the matrices (not the biases), as
//! the Transformer's step does.

use super::optim::{AdamW, clip_grad_norm};
use crate::backend::Cpu;
use crate::error::{Error, Result};
use crate::model::lstm::{Lstm, LstmActs, lstm_layout};

pub struct LstmTrainer {
    pub model: Lstm,
    /// ∂L/∂params, in the parameters' layout.
    pub grads: Vec<f32>,
    pub opt: AdamW,
    acts: LstmActs,
}

/// What a step measured.
#[derive(Clone, Copy, Debug)]
pub struct LstmStep {
    pub loss: f64,
    pub grad_norm: f32,
    pub tokens: usize,
}

impl LstmTrainer {
    /// For batches of `b` sequences of `t` tokens.
    pub fn new(model: Lstm, b: usize, t: usize, weight_decay: f32) -> Self {
        let groups = lstm_layout(&model.config).into_iter().map(|x| (x.range(), x.decay)).collect();
        let opt = AdamW::with_groups(&Cpu::FP32, groups, weight_decay);
        let acts = model.activations(b, t);
        LstmTrainer { grads: vec![0.0; model.params.len()], model, opt, acts }
    }

    /// One update on `ids`/`targets` (`[n, t]`, in passes of the trainer's micro-batch, the
    /// gradients summed, the loss the mean over all counted targets) at learning rate `lr`;
    /// `step` names it in errors.
    pub fn step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        lr: f32,
        clip: f32,
        step: u64,
    ) -> Result<LstmStep> {
        self.grads.fill(0.0);
        let tokens = targets.iter().filter(|&&x| x != crate::kernels::crossentropy::IGNORE).count();
        let scale = 1.0 / tokens.max(1) as f32;
        let chunk = self.acts.b * self.acts.t;
        let mut nll = 0.0f64;
        for (i, tg) in ids.chunks(chunk).zip(targets.chunks(chunk)) {
            self.model.forward(&mut self.acts, i)?;
            let (sum, dh) = self.model.lm_head(&mut self.acts, tg, &mut self.grads, scale);
            self.model.backward(&self.acts, i, dh, &mut self.grads);
            nll += sum;
        }
        let loss = nll / tokens.max(1) as f64;
        if !loss.is_finite() {
            return Err(Error::Diverged { step, loss });
        }
        let grad_norm = clip_grad_norm(&Cpu::FP32, &mut self.grads, clip);
        self.opt.step(&mut self.model.params, &self.grads, lr);
        Ok(LstmStep { loss, grad_norm, tokens })
    }

    /// Mean NLL of `[n, t]` windows (`t` the trainer's sequence length), no gradients.
    pub fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64 {
        let (b, t) = (self.acts.b, self.acts.t);
        let (mut total, mut count) = (0.0f64, 0usize);
        for (ic, tc) in ids.chunks(b * t).zip(targets.chunks(b * t)) {
            let rows = ic.len() / t;
            let mut small;
            let acts = if rows == b {
                &mut self.acts
            } else {
                small = self.model.activations(rows, t);
                &mut small
            };
            if self.model.forward(acts, ic).is_err() {
                return f64::NAN;
            }
            let lp = self.model.logprobs(acts, tc);
            for (&x, &tg) in lp.iter().zip(tc) {
                if tg != crate::kernels::crossentropy::IGNORE {
                    total -= x as f64;
                    count += 1;
                }
            }
        }
        total / count.max(1) as f64
    }
}
