//! The body being fine-tuned, either architecture, with its head and optimizers: what the
//! fine-tuning loop needs of it (a step on a task batch, a dev evaluation, the kept
//! checkpoint, a resumable checkpoint), so `finetune` has one loop for GPT-1 and the LSTM
//! baseline. The architecture is the trainer's ([`LmTrainer`]), chosen once by
//! [`crate::train::lm::trainer_on`].

use super::checkpoint::{self as state, LoopState};
use crate::backend::{Backend, Cpu, Precision};
use crate::error::Result;
use crate::model::Net;
use crate::tasks::Head;
use crate::tasks::batch::{Batch, Prepared};
use crate::tasks::checkpoint::{load_head, save_finetuned_with};
use crate::tasks::evaluate::Evaluation;
use crate::tasks::readers::TaskDef;
use crate::text::Tokenizer;
use crate::train::lm::{LmTrainer, trainer_on};
use crate::train::trainer::{StepKey, StepStats, TaskObjective};
use std::path::Path;

pub struct Learner {
    trainer: Box<dyn LmTrainer>,
}

impl Learner {
    /// The trainer of `model` with `task` on the CPU at precision `p`, for batches of up to
    /// `seqs` sequences of `t` tokens.
    pub fn new(
        model: Net,
        task: TaskObjective,
        seqs: usize,
        t: usize,
        wd: f32,
        p: Precision,
    ) -> Self {
        Self::on(model, task, seqs, t, wd, Cpu::new(p))
    }

    /// The trainer of `model` with `task` on `backend`.
    pub fn on<B: Backend>(
        model: Net,
        task: TaskObjective,
        seqs: usize,
        t: usize,
        wd: f32,
        backend: B,
    ) -> Self {
        Learner { trainer: trainer_on(model, backend, seqs, t, wd, None, Some(task)) }
    }

    /// What runs the kernels.
    pub fn describe(&self) -> String {
        self.trainer.describe()
    }

    /// Runs this rank's share of every step and evaluation ([`crate::dist`]).
    pub fn set_dist(&mut self, comm: std::sync::Arc<dyn crate::dist::Collective>) {
        self.trainer.set_dist(comm);
    }

    fn task(&self) -> &TaskObjective {
        self.trainer.task().expect("a fine-tuning trainer has a task")
    }

    /// The body's and the head's weights on the host (the ranks' agreement after a resume).
    pub fn host_weights(&self) -> (std::borrow::Cow<'_, [f32]>, &Head) {
        (self.trainer.host_params(), &self.task().head)
    }

    /// One update on batch `b`, its dropout masks drawn from `key`; `step` names it in errors.
    pub fn step(
        &mut self,
        b: &Batch,
        lr: f32,
        clip: f32,
        key: u64,
        step: u64,
    ) -> Result<StepStats> {
        let key = StepKey::Whole(key);
        self.trainer.train_step(&b.ids, &b.lm, b.len, &b.items, lr, clip, key, step)
    }

    /// The dev evaluation (no dropout) of the current weights, shared by the ranks of a
    /// data-parallel run (each scores every N-th batch).
    pub fn evaluate(&mut self, def: &TaskDef, dp: &[Prepared], batch: usize) -> Result<Evaluation> {
        self.trainer.evaluate(def, dp, batch)
    }

    /// The dev evaluation of a checkpoint this run kept (`best/`), at the run's precision.
    pub fn evaluate_saved(
        &mut self,
        dir: &Path,
        def: &TaskDef,
        dp: &[Prepared],
        batch: usize,
    ) -> Result<Evaluation> {
        let head = load_head(dir, def, self.task().head.d)?;
        self.trainer.evaluate_saved(dir, &head, def, dp, batch)
    }

    /// Writes the fine-tuned checkpoint (model, head, task, tokenizer) to `dir`.
    pub fn save_best(
        &self,
        dir: &Path,
        def: &TaskDef,
        tok: &Tokenizer,
        max_len: usize,
    ) -> Result<()> {
        let write = |tmp: &Path| self.trainer.save_model(tmp);
        save_finetuned_with(dir, &self.task().head, def, tok, max_len, write)
    }

    /// Writes a resumable checkpoint: the kept checkpoint's files plus the moments and `state`.
    pub fn save_state(
        &self,
        dir: &Path,
        def: &TaskDef,
        tok: &Tokenizer,
        max_len: usize,
        state: LoopState,
    ) -> Result<()> {
        state::save(dir, &*self.trainer, def, tok, max_len, state)
    }

    /// Restores a resumable checkpoint; its loop state.
    pub fn load_state(&mut self, dir: &Path, def: &TaskDef) -> Result<LoopState> {
        state::load(dir, &mut *self.trainer, def)
    }
}
