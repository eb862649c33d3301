//! One training step of the LSTM baseline: forward, cross-entropy, backward through time,
//! global-norm clipping, AdamW with decoupled weight decay on the matrices (not the biases), as
//! the Transformer's step does; on any [`Backend`].

use super::optim::{AdamW, clip_coef};
use super::trainer::{StepStats, TaskObjective};
use crate::backend::{Backend, Cpu, DeviceBuf};
use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE;
use crate::kernels::dropout::Dropout;
use crate::kernels::reduce::sum_squares;
use crate::kernels::rng::{derive, stream};
use crate::model::lstm::{Lstm, LstmActs, lstm_layout};
use crate::tasks::Target;
use crate::tasks::head::{Item, extract_rows};

pub struct LstmTrainer<B: Backend = Cpu> {
    pub model: Lstm<B>,
    /// ∂L/∂params, in the parameters' layout.
    pub grads: B::Buf,
    pub opt: AdamW<B>,
    acts: LstmActs<B>,
    /// Data parallelism (pre-training): this process's share of the passes, gradients summed
    /// across ranks ([`crate::dist`]).
    pub dist: Option<std::sync::Arc<dyn crate::dist::Collective>>,
}

/// What a step measured.
#[derive(Clone, Copy, Debug)]
pub struct LstmStep {
    pub loss: f64,
    pub grad_norm: f32,
    pub tokens: usize,
}

impl<B: Backend> LstmTrainer<B> {
    /// For batches of `b` sequences of `t` tokens.
    pub fn new(model: Lstm<B>, b: usize, t: usize, weight_decay: f32) -> Self {
        let groups = lstm_layout(&model.config).into_iter().map(|x| (x.range(), x.decay)).collect();
        let opt = AdamW::with_groups(&model.backend, groups, weight_decay);
        let acts = model.activations(b, t);
        LstmTrainer { grads: model.zeros_like_params(), model, opt, acts, dist: None }
    }

    /// Activations for `b` sequences of `t` tokens (fine-tuning's batches vary in both; the
    /// memory is reused).
    pub fn resize(&mut self, b: usize, t: usize) {
        self.model.reshape(&mut self.acts, b, t);
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
        let be = self.model.backend.clone();
        be.fill(self.grads.w(), 0.0);
        let tokens = targets.iter().filter(|&&x| x != IGNORE).count();
        let scale = 1.0 / tokens.max(1) as f32;
        let chunk = self.acts.b * self.acts.t;
        let mut nll = 0.0f64;
        let passes = ids.len().div_ceil(chunk);
        let mine = match &self.dist {
            Some(d) => {
                assert!(passes.is_multiple_of(d.world()), "passes must split evenly over ranks");
                crate::dist::share(passes, d.rank(), d.world())
            }
            None => 0..passes,
        };
        for (i, tg) in
            ids.chunks(chunk).zip(targets.chunks(chunk)).skip(mine.start).take(mine.len())
        {
            self.model.forward(&mut self.acts, i)?;
            nll += self.model.lm_head(&mut self.acts, tg, &mut self.grads, scale);
            self.model.backward(&mut self.acts, &mut self.grads);
        }
        if let Some(d) = &self.dist {
            be.all_reduce_sum(self.grads.w(), d.as_ref());
            let mut s = [nll];
            d.all_reduce_f64(&mut s);
            nll = s[0];
        }
        let loss = nll / tokens.max(1) as f64;
        let grad_norm = clip_together(&be, &mut self.grads, &mut [], loss, clip, step)?;
        self.opt.step(&mut self.model.params, &self.grads, lr);
        Ok(LstmStep { loss, grad_norm, tokens })
    }

    /// Mean NLL of `[n, t]` windows (`t` the trainer's sequence length), no gradients.
    pub fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64 {
        let (b, t) = (self.acts.b, self.acts.t);
        let (mut total, mut count) = (0.0f64, 0usize);
        for (ic, tc) in ids.chunks(b * t).zip(targets.chunks(b * t)) {
            // The last chunk may hold fewer windows.
            self.model.reshape(&mut self.acts, ic.len() / t, t);
            if self.model.forward(&mut self.acts, ic).is_err() {
                total = f64::NAN;
                break;
            }
            let lp = self.model.logprobs(&mut self.acts, tc);
            for (&x, &tg) in lp.iter().zip(tc) {
                if tg != IGNORE {
                    total -= x as f64;
                    count += 1;
                }
            }
        }
        self.model.reshape(&mut self.acts, b, t);
        total / count.max(1) as f64
    }

    /// One fine-tuning update (the paper's objective with the LSTM as the body): the head on
    /// the extract tokens' top states (dropout from `key` as the Transformer's), task loss +
    /// λ · LM loss over `lm` (next-token targets of `ids`, `[n, len]`, one pass), the head's
    /// ∂h added to the LM's before backward through time, clipping over body and head jointly,
    /// AdamW on both. `step` names it in errors.
    #[allow(clippy::too_many_arguments)]
    pub fn step_task(
        &mut self,
        task: &mut TaskObjective,
        ids: &[u32],
        lm: &[u32],
        items: &[Item],
        lr: f32,
        clip: f32,
        key: Option<u64>,
        step: u64,
    ) -> Result<StepStats> {
        let (loss, lm_loss, task_loss, tokens) = self.gradients_task(task, ids, lm, items, key)?;
        let (_, grad) = task.head_and_grad();
        let be = self.model.backend.clone();
        let grad_norm =
            clip_together(&be, &mut self.grads, &mut [&mut grad.w, &mut grad.b], loss, clip, step)?;
        self.opt.step(&mut self.model.params, &self.grads, lr);
        task.update(lr);
        Ok(StepStats { loss, lm_loss, task_loss: Some(task_loss), grad_norm, tokens })
    }

    /// The gradients of [`LstmTrainer::step_task`]'s objective into `self.grads` and the
    /// head's gradient: `(objective, LM loss, task loss, counted LM targets)`.
    pub fn gradients_task(
        &mut self,
        task: &mut TaskObjective,
        ids: &[u32],
        lm: &[u32],
        items: &[Item],
        key: Option<u64>,
    ) -> Result<(f64, f64, f64, usize)> {
        let (b, t) = (self.acts.b, self.acts.t);
        if ids.len() != b * t {
            return Err(Error::setting("batch", "a fine-tuning batch runs in one pass"));
        }
        self.model.backend.fill(self.grads.w(), 0.0);
        self.model.forward(&mut self.acts, ids)?;
        let counted = lm.iter().filter(|&&x| x != IGNORE).count();
        let lambda = task.aux_lm;
        let nll = if lambda > 0.0 {
            let scale = lambda / counted.max(1) as f32;
            self.model.lm_head(&mut self.acts, lm, &mut self.grads, scale)
        } else {
            self.model.zero_dh(&mut self.acts);
            0.0
        };
        // The head reads the extract rows on the host and returns ∂L/∂h at them.
        let (rows, ritems) = extract_rows(items);
        let h = self.model.config.hidden_size;
        let hidden = self.model.hidden_rows(&self.acts, &rows);
        let n_items = items.iter().filter(|it| it.target != Target::None).count().max(1);
        let drop = match key {
            Some(k) if task.clf_dropout > 0.0 => {
                Dropout { p: task.clf_dropout, key: derive(k, stream::HEAD_DROPOUT) }
            }
            _ => Dropout::OFF,
        };
        let (head, grad) = task.head_and_grad();
        grad.w.fill(0.0);
        grad.b.fill(0.0);
        let mut dh_rows = vec![0.0f32; rows.len() * h];
        let task_sum =
            head.loss_backward(grad, &hidden, &ritems, drop, 1.0 / n_items as f32, &mut dh_rows);
        self.model.add_dh_rows(&mut self.acts, &rows, &dh_rows);
        self.model.backward(&mut self.acts, &mut self.grads);
        let lm_loss = nll / counted.max(1) as f64;
        let task_loss = task_sum / n_items as f64;
        Ok((task_loss + lambda as f64 * lm_loss, lm_loss, task_loss, counted))
    }
}

/// The global norm of the body's gradients and a head's (host buffers), in order; a NaN or
/// infinite loss or norm stops before any update (`Diverged`, as the Transformer's step);
/// otherwise all are clipped together to at most `clip`.
fn clip_together<B: Backend>(
    be: &B,
    body: &mut B::Buf,
    head: &mut [&mut Vec<f32>],
    loss: f64,
    clip: f32,
    step: u64,
) -> Result<f32> {
    let sq = be.sum_squares(body.r()) + head.iter().map(|p| sum_squares(p)).sum::<f64>();
    let norm = sq.sqrt() as f32;
    if !loss.is_finite() || !norm.is_finite() {
        let loss = if loss.is_finite() { norm as f64 } else { loss };
        return Err(Error::Diverged { step, loss });
    }
    if let Some(f) = clip_coef(norm, clip) {
        be.scale(body.w(), f);
        head.iter_mut().flat_map(|p| p.iter_mut()).for_each(|g| *g *= f);
    }
    Ok(norm)
}
