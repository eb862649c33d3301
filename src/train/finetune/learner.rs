//! The body being fine-tuned, either architecture, with its head and optimizers: what the
//! fine-tuning loop needs of it (a step, a dev evaluation, the kept checkpoint, a resumable
//! checkpoint), so `finetune` has one loop for GPT-1 and the LSTM baseline.

use super::checkpoint::{self as state, LoopState};
use crate::backend::{Backend, Cpu, Precision};
use crate::error::Result;
use crate::model::LanguageModel;
use crate::model::Net;
use crate::tasks::Head;
use crate::tasks::batch::{Batch, Prepared};
use crate::tasks::checkpoint::{load_head, save_finetuned, save_finetuned_with};
use crate::tasks::evaluate::{Evaluation, evaluate_prepared, evaluate_shared};
use crate::tasks::readers::TaskDef;
use crate::text::Tokenizer;
use crate::train::lstm::LstmTrainer;
use crate::train::trainer::{StepKey, StepStats, TaskObjective, Trainer};
use std::path::Path;

// One lives per fine-tuning run; boxing either variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Learner<B: Backend = Cpu> {
    Transformer(Trainer<B>),
    Lstm(LstmTrainer<B>, TaskObjective),
}

impl Learner<Cpu> {
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
}

impl<B: Backend> Learner<B> {
    /// The trainer of `model` with `task` on `backend`.
    pub fn on(model: Net, task: TaskObjective, seqs: usize, t: usize, wd: f32, backend: B) -> Self {
        match model {
            Net::Transformer(m) => Learner::Transformer(
                Trainer::on(m.to_backend(backend), seqs, t, wd).with_task(task),
            ),
            Net::Lstm(m) => {
                Learner::Lstm(LstmTrainer::new(m.to_backend(backend), seqs, t, wd), task)
            }
        }
    }

    /// The body's and the head's weights on the host (the ranks' agreement after a resume).
    pub fn host_weights(&self) -> (std::borrow::Cow<'_, [f32]>, &Head) {
        match self {
            Learner::Transformer(t) => (t.model.host_params(), self.head()),
            Learner::Lstm(t, task) => (t.model.host_params(), &task.head),
        }
    }

    /// What runs the kernels.
    pub fn backend(&self) -> &B {
        match self {
            Learner::Transformer(t) => &t.model.backend,
            Learner::Lstm(t, _) => &t.model.backend,
        }
    }

    pub fn step(
        &mut self,
        b: &Batch,
        lr: f32,
        clip: f32,
        key: u64,
        step: u64,
    ) -> Result<StepStats> {
        match self {
            Learner::Transformer(t) => {
                t.step(&b.ids, &b.lm, b.len, &b.items, lr, clip, StepKey::Whole(key), step)
            }
            Learner::Lstm(t, task) => {
                t.resize(b.n_seq, b.len);
                t.step_task(task, &b.ids, &b.lm, &b.items, lr, clip, Some(key), step)
            }
        }
    }

    fn head(&self) -> &Head {
        match self {
            Learner::Transformer(t) => {
                &t.task.as_ref().expect("a fine-tuning trainer has a task").head
            }
            Learner::Lstm(_, task) => &task.head,
        }
    }

    fn task(&self) -> &TaskObjective {
        match self {
            Learner::Transformer(t) => t.task.as_ref().expect("a fine-tuning trainer has a task"),
            Learner::Lstm(_, task) => task,
        }
    }

    /// The dev evaluation (no dropout) of the current weights.
    pub fn evaluate(&mut self, def: &TaskDef, dp: &[Prepared], batch: usize) -> Result<Evaluation> {
        match self {
            // Shared by the ranks of a data-parallel run: each scores every N-th batch.
            Learner::Transformer(t) => {
                let comm = t.dist.clone();
                let (model, head, acts) = t.parts();
                let head = head.expect("a fine-tuning trainer has a head");
                evaluate_shared(def, model, head, acts, dp, batch, comm.as_deref())
            }
            Learner::Lstm(t, task) => {
                let mut s = t.model.scratch();
                evaluate_shared(def, &t.model, &task.head, &mut s, dp, batch, t.dist.as_deref())
            }
        }
    }

    /// The dev evaluation of a checkpoint this run kept (`best/`), at the run's precision.
    pub fn evaluate_saved(
        &mut self,
        dir: &Path,
        def: &TaskDef,
        dp: &[Prepared],
        batch: usize,
    ) -> Result<Evaluation> {
        let head = load_head(dir, def, self.head().d)?;
        // On the run's device at its precision.
        let be = self.backend().clone();
        match (Net::load(dir)?, &mut *self) {
            (Net::Transformer(m), Learner::Transformer(t)) => {
                let m = m.to_backend(be);
                let (_, _, acts) = t.parts();
                evaluate_prepared(def, &m, &head, acts, dp, batch)
            }
            (Net::Lstm(m), Learner::Lstm(..)) => {
                let m = m.to_backend(be);
                let mut s = m.scratch();
                evaluate_prepared(def, &m, &head, &mut s, dp, batch)
            }
            _ => Err(crate::error::Error::invalid(
                dir,
                "holds the other architecture than this run's",
            )),
        }
    }

    /// Writes the fine-tuned checkpoint (model, head, task, tokenizer) to `dir`.
    pub fn save_best(
        &self,
        dir: &Path,
        def: &TaskDef,
        tok: &Tokenizer,
        max_len: usize,
    ) -> Result<()> {
        match self {
            Learner::Transformer(t) => {
                save_finetuned(dir, &t.model, self.head(), def, tok, max_len)
            }
            Learner::Lstm(t, task) => {
                save_finetuned_with(dir, &task.head, def, tok, max_len, |tmp| {
                    crate::model::lstm::save_lstm(tmp, &t.model)
                })
            }
        }
    }

    /// Writes a resumable checkpoint: the kept checkpoint's files plus the moments and `state`.
    #[allow(clippy::too_many_arguments)]
    pub fn save_state(
        &self,
        dir: &Path,
        def: &TaskDef,
        tok: &Tokenizer,
        max_len: usize,
        mut state: LoopState,
    ) -> Result<()> {
        let [w, b] = self.task().optimizers();
        match self {
            Learner::Transformer(t) => {
                state.adam_t = [t.opt.t, w.t, b.t];
                let write = |tmp: &Path| crate::model::checkpoint::save_model(tmp, &t.model);
                state::save(dir, write, &t.opt, self.task(), def, tok, max_len, &state)
            }
            Learner::Lstm(t, task) => {
                state.adam_t = [t.opt.t, w.t, b.t];
                let write = |tmp: &Path| crate::model::lstm::save_lstm(tmp, &t.model);
                state::save(dir, write, &t.opt, task, def, tok, max_len, &state)
            }
        }
    }

    /// Restores a resumable checkpoint; its loop state.
    pub fn load_state(&mut self, dir: &Path, def: &TaskDef) -> Result<LoopState> {
        match self {
            Learner::Transformer(t) => {
                let task = t.task.as_mut().expect("a task");
                state::load(dir, &mut t.model.params, &mut t.opt, task, def)
            }
            Learner::Lstm(t, task) => state::load(dir, &mut t.model.params, &mut t.opt, task, def),
        }
    }
}
