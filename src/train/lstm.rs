//! One training step of the LSTM baseline: forward, cross-entropy, backward through time,
//! global-norm clipping, AdamW with decoupled weight decay on the matrices (not the biases), as
//! the Transformer's step does; on any [`Backend`].

use super::optim::{AdamW, clip_checked};
use super::trainer::{StepStats, TaskObjective, labelled, sum_task_step, task_share};
use crate::backend::{Backend, Cpu, DeviceBuf};
use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE;
use crate::model::lstm::{Lstm, LstmActs, lstm_layout};
use crate::tasks::Item;

pub struct LstmTrainer<B: Backend = Cpu> {
    pub model: Lstm<B>,
    /// ∂L/∂params, in the parameters' layout.
    pub grads: B::Buf,
    pub opt: AdamW<B>,
    acts: LstmActs<B>,
    /// Data parallelism: this process's share of the passes (pre-training) or of the items
    /// (fine-tuning), gradients summed across ranks ([`crate::dist`]).
    pub dist: Option<std::sync::Arc<dyn crate::dist::Collective>>,
    /// Set for fine-tuning (as [`crate::train::Trainer`]'s): [`crate::train::lm::LmTrainer`]'s
    /// step then is [`LstmTrainer::step_task`] with it.
    pub task: Option<TaskObjective>,
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
        LstmTrainer { grads: model.zeros_like_params(), model, opt, acts, dist: None, task: None }
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
        let mine = crate::dist::passes_of(self.dist.as_deref(), ids.len().div_ceil(chunk));
        for (i, tg) in
            ids.chunks(chunk).zip(targets.chunks(chunk)).skip(mine.start).take(mine.len())
        {
            self.model.forward(&mut self.acts, i)?;
            nll += self.model.lm_head(&mut self.acts, tg, &mut self.grads, scale);
            self.model.backward(&mut self.acts, &mut self.grads);
        }
        crate::train::trainer::sum_step(&be, self.dist.as_deref(), self.grads.w(), &mut nll);
        let loss = nll / tokens.max(1) as f64;
        let grad_norm = clip_checked(&be, &mut self.grads, &mut [], clip, loss, step)?;
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
        let be = &self.model.backend;
        let grad_norm =
            clip_checked(be, &mut self.grads, &mut task.grad_parts(), clip, loss, step)?;
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
        // Alone: the whole batch; under `dist`: this rank's share of its items (the head's
        // dropout at the batch's positions, the batch's divisors), the sums then summed.
        let comm = self.dist.clone();
        let comm = comm.as_deref();
        let counted = lm.iter().filter(|&&x| x != IGNORE).count();
        let lambda = task.aux_lm;
        let n_items = labelled(items);
        let (ir, sr, mine) = task_share(items, t, b, comm);
        self.model.backend.fill(self.grads.w(), 0.0);
        let (mut nll, mut task_sum) = (0.0f64, 0.0f64);
        if sr.is_empty() {
            task.zero_grad();
        } else {
            let (i, tg) = (&ids[sr.start * t..sr.end * t], &lm[sr.start * t..sr.end * t]);
            if sr.len() != b {
                self.resize(sr.len(), t);
            }
            self.model.forward(&mut self.acts, i)?;
            nll = if lambda > 0.0 {
                let scale = lambda / counted.max(1) as f32;
                self.model.lm_head(&mut self.acts, tg, &mut self.grads, scale)
            } else {
                self.model.zero_dh(&mut self.acts);
                0.0
            };
            // The head reads the extract rows on the host and returns ∂L/∂h at them.
            let h = self.model.config.hidden_size;
            let (model, acts) = (&self.model, &self.acts);
            let (sum, rows, dh_rows) = task
                .backward(&mine, key, h, ir.start, n_items, |rows| model.hidden_rows(acts, rows));
            task_sum = sum;
            self.model.add_dh_rows(&mut self.acts, &rows, &dh_rows);
            self.model.backward(&mut self.acts, &mut self.grads);
        }
        let be = &self.model.backend;
        let (nll, task_sum) = sum_task_step(be, comm, &mut self.grads, task, nll, task_sum);
        let lm_loss = nll / counted.max(1) as f64;
        let task_loss = task_sum / n_items as f64;
        Ok((task_loss + lambda as f64 * lm_loss, lm_loss, task_loss, counted))
    }
}
