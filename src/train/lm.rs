//! What the training loops need of a model and its optimizer ([`LmTrainer`]: a step, with a
//! task head or without, a validation loss or a dev evaluation, the model's files, the weights
//! and moments for checkpoints), for either architecture ([`Net`]), on any device. [`trainer_on`]
//! is the one place a [`Net`] becomes a trainer: pre-training and fine-tuning never match on the
//! architecture.

use super::checkpoint::{self, TrainerState};
use super::lstm::LstmTrainer;
use super::optim::AdamW;
use super::trainer::{StepKey, StepStats, TaskObjective, Trainer, Validation};
use crate::backend::{Backend, Cpu, Device, DeviceBuf, Precision};
use crate::error::{Error, Result};
use crate::model::lstm::{is_lstm, load_lstm, lstm_layout};
use crate::model::{LanguageModel, Net};
use crate::tasks::batch::Prepared;
use crate::tasks::evaluate::{Evaluation, evaluate_prepared, evaluate_shared};
use crate::tasks::readers::TaskDef;
use crate::tasks::{Head, Item};
use crate::text::Tokenizer;
use std::path::Path;

/// The trainer of `net` for micro-batches of `micro × seq` tokens on `device`, with the
/// optimizer state `opt` of a checkpoint when resuming.
pub fn trainer(
    net: Net,
    micro: usize,
    seq: usize,
    weight_decay: f32,
    precision: Precision,
    device: Device,
    opt: Option<AdamW>,
) -> Result<Box<dyn LmTrainer>> {
    match device {
        Device::Cpu => {
            // The weights exist; their gradients, two Adam moments and one pass's activations
            // are about to be allocated (`bench train --batch 100000` asked for 472 GB).
            let c = net.config();
            let rest = 12 * c.params() as u64 + c.activation_bytes(micro, seq, false) as u64;
            crate::backend::check_host(rest, &format!("{micro} (× {seq} tokens per pass)"))?;
            Ok(trainer_on(net, Cpu::new(precision), micro, seq, weight_decay, opt, None))
        }
        Device::Cuda(_) => {
            let gpu = device.cuda(precision)?;
            let c = net.config();
            let need = 16 * c.params() as u64
                + c.activation_bytes(micro, seq, true) as u64
                + c.bf16_bytes(precision, micro, seq, false) as u64;
            let (free, _) = gpu.memory();
            if need > free as u64 {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                return Err(Error::setting(
                    "micro_batch",
                    format!(
                        "{micro}: the run needs about {:.1} GiB of GPU memory and {:.1} GiB are \
                         free on {device}: lower the micro-batch or the sequence length",
                        gib(need),
                        gib(free as u64)
                    ),
                ));
            }
            Ok(trainer_on(net, gpu, micro, seq, weight_decay, opt, None))
        }
    }
}

/// The trainer of `net` on `backend` for batches of up to `micro` sequences of `seq` tokens per
/// pass, with the optimizer state `opt` of a checkpoint when resuming, and the `task` head of
/// a fine-tuning run: the one place that picks the architecture's trainer (a new
/// architecture's is added here).
pub fn trainer_on<B: Backend>(
    net: Net,
    backend: B,
    micro: usize,
    seq: usize,
    weight_decay: f32,
    opt: Option<AdamW>,
    task: Option<TaskObjective>,
) -> Box<dyn LmTrainer> {
    match net {
        Net::Transformer(m) => {
            let mut t = Trainer::on(m.to_backend(backend.clone()), micro, seq, weight_decay);
            if let Some(o) = opt {
                t.opt = o.to_backend(&backend);
            }
            t.task = task;
            Box::new(t)
        }
        Net::Lstm(m) => {
            let mut t = LstmTrainer::new(m.to_backend(backend.clone()), micro, seq, weight_decay);
            if let Some(o) = opt {
                t.opt = o.to_backend(&backend);
            }
            t.task = task;
            Box::new(t)
        }
    }
}

/// A checkpoint's model, optimizer state and trainer state, either architecture.
pub fn load_checkpoint(dir: &Path, weight_decay: f32) -> Result<(Net, AdamW, TrainerState)> {
    if is_lstm(dir) {
        let m = load_lstm(dir)?;
        let groups = lstm_layout(&m.config).into_iter().map(|t| (t.range(), t.decay)).collect();
        let mut opt = AdamW::with_groups(&Cpu::FP32, groups, weight_decay);
        let state = checkpoint::load_state(dir, &mut opt)?;
        Ok((Net::Lstm(m), opt, state))
    } else {
        let (m, opt, state) = checkpoint::load(dir, weight_decay)?;
        Ok((Net::Transformer(m), opt, state))
    }
}

/// What the training loops need of a model and its optimizer, either architecture, on any
/// device: pre-training steps, validates and checkpoints with it; fine-tuning (with a
/// [`TaskObjective`]) steps, evaluates on the dev split and keeps checkpoints with it.
pub trait LmTrainer {
    /// One update on `ids` and their next-token `targets` (`[n, seq]`): the LM loss, or with a
    /// task (fine-tuning) task loss + λ · LM loss over the head's `items` (rows of `[n, seq]`,
    /// one pass). `step` names it in errors.
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        seq: usize,
        items: &[Item],
        lr: f32,
        clip: f32,
        key: StepKey,
        step: u64,
    ) -> Result<StepStats>;
    /// Mean NLL of `[n, seq]` windows, no dropout.
    fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64;
    /// [`LmTrainer::eval_loss`] and, where the model measures it, the spread of the final
    /// hidden states across positions (a collapsed model gives every position the same state).
    fn validate(&mut self, ids: &[u32], targets: &[u32]) -> Validation {
        Validation { loss: self.eval_loss(ids, targets), spread: None }
    }
    /// The task head and its optimizers (fine-tuning; None in pre-training).
    fn task(&self) -> Option<&TaskObjective>;
    /// The same, to restore a checkpoint.
    fn task_mut(&mut self) -> Option<&mut TaskObjective>;
    /// The task's scores of `data` with the current weights and head, no dropout, `batch`
    /// examples at a time, shared by the ranks of a data-parallel run.
    fn evaluate(&mut self, def: &TaskDef, data: &[Prepared], batch: usize) -> Result<Evaluation>;
    /// [`LmTrainer::evaluate`] of the model saved in `dir` with `head` instead (a checkpoint
    /// this run kept), on this trainer's device at its precision, in one process.
    fn evaluate_saved(
        &mut self,
        dir: &Path,
        head: &Head,
        def: &TaskDef,
        data: &[Prepared],
        batch: usize,
    ) -> Result<Evaluation>;
    /// Writes the model's own files (its weights and config) into `dir`.
    fn save_model(&self, dir: &Path) -> Result<()>;
    /// Writes a resumable pre-training checkpoint (atomically, as a whole).
    fn save(&self, dir: &Path, state: &TrainerState, tok: Option<&Tokenizer>) -> Result<()>;
    /// The number of weights (and of each Adam moment).
    fn n_params(&self) -> usize;
    /// Adam's moments `[m, v]` on the host and its update count (fine-tuning's checkpoints).
    fn host_moments(&self) -> ([std::borrow::Cow<'_, [f32]>; 2], u64);
    /// Sets the weights, Adam's moments and update count from a checkpoint (each
    /// [`LmTrainer::n_params`] long).
    fn restore(&mut self, params: &[f32], moments: [&[f32]; 2], adam_t: u64);
    /// Runs this rank's share of every step, the gradients summed over `comm`'s ranks.
    fn set_dist(&mut self, comm: std::sync::Arc<dyn crate::dist::Collective>);
    /// The weights on the host (checking that the ranks agree).
    fn host_params(&self) -> std::borrow::Cow<'_, [f32]>;
    /// What runs the kernels (the backend's [`Backend::describe`]).
    fn describe(&self) -> String;
}

/// The error of a kept checkpoint that holds the other architecture than the run's.
fn other_architecture(dir: &Path) -> Error {
    Error::invalid(dir, "holds the other architecture than this run's")
}

/// The host copies of an optimizer's moments and its update count.
fn moments_of<B: Backend>(opt: &AdamW<B>) -> ([std::borrow::Cow<'_, [f32]>; 2], u64) {
    let be = opt.backend();
    ([be.download(opt.m.r()), be.download(opt.v.r())], opt.t)
}

/// Uploads a checkpoint's weights, moments and update count into `params` and `opt`.
fn restore_into<B: Backend>(
    params: &mut B::Buf,
    opt: &mut AdamW<B>,
    weights: &[f32],
    [m, v]: [&[f32]; 2],
    adam_t: u64,
) {
    assert!(weights.len() == params.len() && m.len() == opt.m.len() && v.len() == opt.v.len());
    let be = opt.backend().clone();
    *params = be.upload(weights);
    (opt.m, opt.v) = (be.upload(m), be.upload(v));
    opt.t = adam_t;
}

impl<B: Backend> LmTrainer for Trainer<B> {
    fn train_step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        seq: usize,
        items: &[Item],
        lr: f32,
        clip: f32,
        key: StepKey,
        step: u64,
    ) -> Result<StepStats> {
        self.step(ids, targets, seq, items, lr, clip, key, step)
    }
    fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64 {
        Trainer::eval_loss(self, ids, targets)
    }
    fn validate(&mut self, ids: &[u32], targets: &[u32]) -> Validation {
        Trainer::validate(self, ids, targets)
    }
    fn task(&self) -> Option<&TaskObjective> {
        self.task.as_ref()
    }
    fn task_mut(&mut self) -> Option<&mut TaskObjective> {
        self.task.as_mut()
    }
    fn evaluate(&mut self, def: &TaskDef, data: &[Prepared], batch: usize) -> Result<Evaluation> {
        let comm = self.dist.clone();
        let (model, head, acts) = self.parts();
        let head = head.expect("evaluation needs a task head");
        evaluate_shared(def, model, head, acts, data, batch, comm.as_deref())
    }
    fn evaluate_saved(
        &mut self,
        dir: &Path,
        head: &Head,
        def: &TaskDef,
        data: &[Prepared],
        batch: usize,
    ) -> Result<Evaluation> {
        let Net::Transformer(m) = Net::load(dir)? else { return Err(other_architecture(dir)) };
        let m = m.to_backend(self.model.backend.clone());
        let (_, _, acts) = self.parts();
        evaluate_prepared(def, &m, head, acts, data, batch)
    }
    fn save_model(&self, dir: &Path) -> Result<()> {
        crate::model::checkpoint::save_model(dir, &self.model)
    }
    fn save(&self, dir: &Path, state: &TrainerState, tok: Option<&Tokenizer>) -> Result<()> {
        checkpoint::save(dir, &self.model, &self.opt, state, tok)
    }
    fn n_params(&self) -> usize {
        self.model.params.len()
    }
    fn host_moments(&self) -> ([std::borrow::Cow<'_, [f32]>; 2], u64) {
        moments_of(&self.opt)
    }
    fn restore(&mut self, params: &[f32], moments: [&[f32]; 2], adam_t: u64) {
        restore_into(&mut self.model.params, &mut self.opt, params, moments, adam_t);
    }
    fn set_dist(&mut self, comm: std::sync::Arc<dyn crate::dist::Collective>) {
        self.dist = Some(comm);
    }
    fn host_params(&self) -> std::borrow::Cow<'_, [f32]> {
        self.model.host_params()
    }
    fn describe(&self) -> String {
        self.model.backend.describe()
    }
}

impl<B: Backend> LmTrainer for LstmTrainer<B> {
    /// Pre-training in passes of the trainer's `[b, t]` (`seq` is its `t`; the LSTM has no
    /// dropout, so no `key`); fine-tuning in one pass of the batch's shape.
    fn train_step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        seq: usize,
        items: &[Item],
        lr: f32,
        clip: f32,
        key: StepKey,
        step: u64,
    ) -> Result<StepStats> {
        let Some(mut task) = self.task.take() else {
            let s = self.step(ids, targets, lr, clip, step)?;
            let (loss, grad_norm, tokens) = (s.loss, s.grad_norm, s.tokens);
            return Ok(StepStats { loss, lm_loss: loss, task_loss: None, grad_norm, tokens });
        };
        self.resize(ids.len() / seq, seq);
        let r = self.step_task(&mut task, ids, targets, items, lr, clip, key.key(), step);
        self.task = Some(task);
        r
    }
    fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64 {
        LstmTrainer::eval_loss(self, ids, targets)
    }
    fn task(&self) -> Option<&TaskObjective> {
        self.task.as_ref()
    }
    fn task_mut(&mut self) -> Option<&mut TaskObjective> {
        self.task.as_mut()
    }
    fn evaluate(&mut self, def: &TaskDef, data: &[Prepared], batch: usize) -> Result<Evaluation> {
        let head = &self.task.as_ref().expect("evaluation needs a task head").head;
        let mut s = self.model.scratch();
        evaluate_shared(def, &self.model, head, &mut s, data, batch, self.dist.as_deref())
    }
    fn evaluate_saved(
        &mut self,
        dir: &Path,
        head: &Head,
        def: &TaskDef,
        data: &[Prepared],
        batch: usize,
    ) -> Result<Evaluation> {
        let Net::Lstm(m) = Net::load(dir)? else { return Err(other_architecture(dir)) };
        let m = m.to_backend(self.model.backend.clone());
        let mut s = m.scratch();
        evaluate_prepared(def, &m, head, &mut s, data, batch)
    }
    fn save_model(&self, dir: &Path) -> Result<()> {
        crate::model::lstm::save_lstm(dir, &self.model)
    }
    fn save(&self, dir: &Path, state: &TrainerState, tok: Option<&Tokenizer>) -> Result<()> {
        checkpoint::save_with(dir, &self.opt, state, tok, |tmp| self.save_model(tmp))
    }
    fn n_params(&self) -> usize {
        self.model.params.len()
    }
    fn host_moments(&self) -> ([std::borrow::Cow<'_, [f32]>; 2], u64) {
        moments_of(&self.opt)
    }
    fn restore(&mut self, params: &[f32], moments: [&[f32]; 2], adam_t: u64) {
        restore_into(&mut self.model.params, &mut self.opt, params, moments, adam_t);
    }
    fn set_dist(&mut self, comm: std::sync::Arc<dyn crate::dist::Collective>) {
        self.dist = Some(comm);
    }
    fn host_params(&self) -> std::borrow::Cow<'_, [f32]> {
        self.model.host_params()
    }
    fn describe(&self) -> String {
        self.model.backend.describe()
    }
}
