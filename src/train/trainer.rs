//! One optimizer step, for pre-training and fine-tuning alike: the objective (task loss +
//! λ·LM loss), micro-batched forward/backward with gradient accumulation, one global clipping
//! over body and head, the divergence check, AdamW. The drivers, the benchmarks and the tests
//! all call [`Trainer::step`].

use super::optim::{AdamW, clip_checked};
use crate::backend::{Backend, Cpu, DeviceBuf};
use crate::dist::Collective;
use crate::error::Result;
use crate::kernels::crossentropy::IGNORE;
use crate::kernels::dropout::Dropout;
use crate::kernels::rng::{derive, stream};
use crate::model::{Activations, Gpt};
use crate::tasks::head::extract_rows;
use crate::tasks::{Head, Item, Target};

/// The fine-tuning part of the objective: the task head `W_y`, its gradient and optimizer, λ.
pub struct TaskObjective {
    pub head: Head,
    grad: Head,
    opt_w: AdamW,
    opt_b: AdamW,
    /// λ, the weight of the auxiliary LM loss (0: none).
    pub aux_lm: f32,
    /// Dropout on the head's input.
    pub clf_dropout: f32,
}

impl TaskObjective {
    pub fn new(head: Head, aux_lm: f32, clf_dropout: f32, weight_decay: f32) -> Self {
        let (opt_w, opt_b) = (
            AdamW::flat(head.w.len(), true, weight_decay),
            AdamW::flat(head.b.len(), false, weight_decay),
        );
        TaskObjective { grad: head.zeros_like(), head, opt_w, opt_b, aux_lm, clf_dropout }
    }

    /// The head's gradient after a step's backward pass.
    pub fn grad(&self) -> &Head {
        &self.grad
    }

    /// The head's objective on the body's top states at the extract tokens of `items`
    /// (`hidden(rows)` gathers them, `[rows.len(), d]`), the head's dropout drawn from the
    /// pass's `key` (none without one): the head's gradient assigned; returns the task loss
    /// sum and the rows with ∂L/∂states at them. `items` are a batch's items `first_item..`
    /// (0 for a whole batch; a rank's share otherwise): their head dropout is the batch's,
    /// their loss scaled as the mean over the batch's `n_items` labelled items.
    pub fn backward(
        &mut self,
        items: &[Item],
        key: Option<u64>,
        d: usize,
        first_item: usize,
        n_items: usize,
        hidden: impl FnOnce(&[usize]) -> Vec<f32>,
    ) -> (f64, Vec<usize>, Vec<f32>) {
        let (rows, ritems) = extract_rows(items);
        let hidden = hidden(&rows);
        let drop = match key {
            Some(key) if self.clf_dropout > 0.0 => {
                Dropout::new(self.clf_dropout, derive(key, stream::HEAD_DROPOUT))
                    .at((first_item * d) as u64)
            }
            _ => Dropout::OFF,
        };
        self.grad.w.fill(0.0);
        self.grad.b.fill(0.0);
        let mut dh = vec![0.0f32; rows.len() * d];
        let scale = 1.0 / n_items as f32;
        let sum = self.head.loss_backward(&mut self.grad, &hidden, &ritems, drop, scale, &mut dh);
        (sum, rows, dh)
    }

    /// A zero gradient (a rank with no items in a shared batch).
    pub fn zero_grad(&mut self) {
        self.grad.w.fill(0.0);
        self.grad.b.fill(0.0);
    }

    /// Sums the head's gradient over the ranks of `comm`.
    pub fn all_reduce_grad(&mut self, comm: &dyn crate::dist::Collective) {
        comm.all_reduce_f32(&mut self.grad.w);
        comm.all_reduce_f32(&mut self.grad.b);
    }

    /// The head's gradient buffers (matrix, bias), for joint clipping.
    pub(crate) fn grad_parts(&mut self) -> [&mut Vec<f32>; 2] {
        [&mut self.grad.w, &mut self.grad.b]
    }

    /// AdamW on the head with its (clipped) gradient.
    pub fn update(&mut self, lr: f32) {
        self.opt_w.step(&mut self.head.w, &self.grad.w, lr);
        self.opt_b.step(&mut self.head.b, &self.grad.b, lr);
    }

    /// The head's two optimizers (matrix, bias), for checkpoints.
    pub fn optimizers(&self) -> [&AdamW; 2] {
        [&self.opt_w, &self.opt_b]
    }

    /// The same, to restore a checkpoint.
    pub fn optimizers_mut(&mut self) -> [&mut AdamW; 2] {
        [&mut self.opt_w, &mut self.opt_b]
    }
}

/// The labelled items of a batch (at least 1: the mean's divisor).
pub(crate) fn labelled(items: &[Item]) -> usize {
    items.iter().filter(|it| it.target != Target::None).count().max(1)
}

/// Rank `rank`'s share of a fine-tuning batch of `items` over `[n_seq, len]` sequences (which
/// the shares must tile, in order: asserted): a
/// contiguous run of items (as even as can be), the sequences they read (an example's
/// sequences are contiguous and in item order: [`crate::tasks::batch::batch`]), and the items
/// renumbered to those sequences.
fn item_share(
    items: &[Item],
    len: usize,
    n_seq: usize,
    rank: usize,
    world: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>, Vec<Item>) {
    // The shares' sequences must tile the batch in order (a batch built by
    // `tasks::batch::batch` does): else LM terms would be counted twice or not at all.
    let mut next = 0;
    for r in 0..world {
        let s = share_seqs(items, len, r, world);
        assert!(s.is_empty() || s.start == next, "items must read their sequences in order");
        next = if s.is_empty() { next } else { s.end };
    }
    assert_eq!(next, n_seq, "every sequence must belong to an item");
    let n = items.len();
    let ir = rank * n / world..(rank + 1) * n / world;
    let mine = &items[ir.clone()];
    let sr = share_seqs(items, len, rank, world);
    let local = mine
        .iter()
        .map(|it| Item {
            features: it
                .features
                .iter()
                .map(|f| f.iter().map(|&r| r - sr.start * len).collect())
                .collect(),
            target: it.target.clone(),
        })
        .collect();
    (ir, sr, local)
}

/// This process's share of a fine-tuning batch: the whole batch alone, else
/// [`item_share`] of `comm`'s rank.
pub(crate) fn task_share<'a>(
    items: &'a [Item],
    len: usize,
    n_seq: usize,
    comm: Option<&dyn crate::dist::Collective>,
) -> (std::ops::Range<usize>, std::ops::Range<usize>, std::borrow::Cow<'a, [Item]>) {
    match comm {
        None => (0..items.len(), 0..n_seq, std::borrow::Cow::Borrowed(items)),
        Some(c) => {
            let (ir, sr, mine) = item_share(items, len, n_seq, c.rank(), c.world());
            (ir, sr, std::borrow::Cow::Owned(mine))
        }
    }
}

/// Under `comm`, sums a fine-tuning step over the ranks: the body's gradients, the head's, and
/// the (LM, task) loss sums it returns.
pub(crate) fn sum_task_step<B: Backend>(
    be: &B,
    comm: Option<&dyn crate::dist::Collective>,
    grads: &mut B::Buf,
    task: &mut TaskObjective,
    nll: f64,
    task_sum: f64,
) -> (f64, f64) {
    let Some(c) = comm else { return (nll, task_sum) };
    be.all_reduce_sum(grads.w(), c);
    task.all_reduce_grad(c);
    let mut s = [nll, task_sum];
    c.all_reduce_f64(&mut s);
    (s[0], s[1])
}

/// The sequences rank `rank`'s items read (`[n_seq, len]` rows), empty when it has none.
fn share_seqs(items: &[Item], len: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let n = items.len();
    let mine = &items[rank * n / world..(rank + 1) * n / world];
    let seqs = mine.iter().flat_map(|it| it.features.iter().flatten()).map(|&r| r / len);
    let (lo, hi) = seqs.fold((usize::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s + 1)));
    if lo == usize::MAX { 0..0 } else { lo..hi }
}

/// Where a step's dropout masks come from. Sequence `s` of a step's batch draws its masks at
/// its place in the whole batch's, so a step's weights do not depend on how its sequences are
/// split into passes (`--micro-batch`) or among ranks: only the order of the sums does.
#[derive(Clone, Copy, Debug)]
pub enum StepKey {
    /// No dropout.
    Off,
    /// The whole batch's masks, drawn from this key (pre-training and fine-tuning).
    Whole(u64),
}

impl StepKey {
    /// The key the masks are drawn from, if any.
    pub fn key(self) -> Option<u64> {
        match self {
            StepKey::Off => None,
            StepKey::Whole(key) => Some(key),
        }
    }
}

pub struct Trainer<B: Backend = Cpu> {
    pub model: Gpt<B>,
    /// ∂L/∂params, in the parameters' layout.
    pub grads: B::Buf,
    pub opt: AdamW<B>,
    /// Set for fine-tuning; pre-training minimises the LM loss alone.
    pub task: Option<TaskObjective>,
    acts: Activations<B>,
    /// Sequences per forward/backward pass (at most; a smaller batch runs in one pass).
    pub micro: usize,
    /// Longest sequence.
    pub t: usize,
    /// Data parallelism: this process runs its share of each step's passes and the gradients
    /// are summed across the ranks ([`crate::dist`]).
    pub dist: Option<std::sync::Arc<dyn crate::dist::Collective>>,
}

/// A validation pass's results.
#[derive(Clone, Copy, Debug)]
pub struct Validation {
    /// Mean NLL per counted token.
    pub loss: f64,
    /// The spread of one window's final hidden states across its positions (None where the
    /// model does not measure it).
    pub spread: Option<f64>,
}

/// The objective of one batch, before the update.
#[derive(Clone, Copy, Debug)]
pub struct Losses {
    /// The mean LM negative log-likelihood (pre-training), or task loss + λ · LM loss
    /// (fine-tuning).
    pub loss: f64,
    /// Mean negative log-likelihood of the counted next-token targets (0 when λ is 0).
    pub lm_loss: f64,
    /// Mean task loss over the labelled items (fine-tuning).
    pub task_loss: Option<f64>,
    /// Counted next-token targets.
    pub tokens: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// The objective before the update: the mean LM negative log-likelihood (pre-training), or
    /// task loss + λ · LM loss (fine-tuning).
    pub loss: f64,
    /// Mean negative log-likelihood of the counted next-token targets (0 when λ is 0).
    pub lm_loss: f64,
    /// Mean task loss over the labelled items (fine-tuning).
    pub task_loss: Option<f64>,
    /// Global gradient norm (body and head) before clipping.
    pub grad_norm: f32,
    /// Counted next-token targets.
    pub tokens: usize,
}

impl Trainer<Cpu> {
    pub fn new(model: Gpt, micro: usize, t: usize, weight_decay: f32) -> Self {
        Self::on(model, micro, t, weight_decay)
    }
}

impl<B: Backend> Trainer<B> {
    /// A trainer for batches of up to `micro` sequences of up to `t` tokens per pass.
    pub fn on(model: Gpt<B>, micro: usize, t: usize, weight_decay: f32) -> Self {
        let acts = model.activations(micro, t, true);
        let opt = AdamW::new_on(&model.backend, &model.config, weight_decay);
        let grads = model.zeros_like_params();
        Trainer { model, grads, opt, task: None, acts, micro, t, dist: None }
    }

    /// Adds a task head to the objective (fine-tuning).
    pub fn with_task(mut self, task: TaskObjective) -> Self {
        self.task = Some(task);
        self
    }

    /// The model, the head (if any) and the activations, for evaluation between steps.
    pub fn parts(&mut self) -> (&Gpt<B>, Option<&Head>, &mut Activations<B>) {
        (&self.model, self.task.as_ref().map(|t| &t.head), &mut self.acts)
    }

    /// Mean NLL of `[n, t]` windows without dropout or gradients (n a multiple of `micro`, or
    /// the remainder evaluated in a smaller pass).
    pub fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64 {
        self.validate(ids, targets).loss
    }

    /// [`Trainer::eval_loss`], and how far apart the first window's final hidden states lie
    /// ([`crate::train::collapse::position_spread`], read from the pass the loss already ran).
    pub fn validate(&mut self, ids: &[u32], targets: &[u32]) -> Validation {
        self.acts.reshape(self.micro, self.t);
        let chunk = self.micro * self.t;
        let mut lp = vec![0.0f32; chunk];
        let (mut sum, mut count, mut spread) = (0.0f64, 0usize, None);
        for (i, tg) in ids.chunks(chunk).zip(targets.chunks(chunk)) {
            if i.len() != chunk {
                let mut small = self.model.activations(i.len() / self.t, self.t, false);
                self.model.logprobs(&mut small, i, tg, &mut lp[..i.len()]);
            } else {
                self.model.logprobs(&mut self.acts, i, tg, &mut lp);
                if spread.is_none() {
                    let d = self.model.config.n_embd;
                    let h = self.model.backend.download(self.acts.hidden_part(self.t * d));
                    spread = Some(crate::train::collapse::position_spread(&h, d));
                }
            }
            for (l, &t) in lp[..i.len()].iter().zip(tg) {
                if t != IGNORE {
                    sum -= *l as f64;
                    count += 1;
                }
            }
        }
        Validation { loss: sum / count.max(1) as f64, spread }
    }

    /// The objective and its gradients over `ids` and their next-token `targets`
    /// (`[n_seq, len]`, [`IGNORE`] where nothing is predicted), and for fine-tuning the head's
    /// `items`, whose rows index `[n_seq, len]`: `self.grads` (and the head's gradient) hold
    /// ∂objective/∂parameters afterwards. Sequences go through in passes of `micro` (n_seq a
    /// multiple of it; with items, one pass).
    pub fn gradients(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        len: usize,
        items: &[Item],
        key: StepKey,
    ) -> Losses {
        if self.task.is_some() {
            let comm = self.dist.clone();
            return self.task_gradients(ids, targets, len, items, key, comm.as_deref());
        }
        let n_seq = ids.len() / len;
        let per_pass = self.micro.min(n_seq);
        assert!(n_seq.is_multiple_of(per_pass), "batch must be a multiple of the micro-batch");
        self.acts.reshape(per_pass, len);
        let be = &self.model.backend;
        let counted = targets.iter().filter(|&&t| t != IGNORE).count();
        let lm_scale = 1.0 / counted.max(1) as f32;
        be.fill(self.grads.w(), 0.0);
        let mut nll = 0.0f64;
        let mine = crate::dist::passes_of(self.dist.as_deref(), n_seq / per_pass);
        // Several passes read the same weights: their bf16 panels are packed once for the step.
        let _pinned = (mine.len() > 1).then(|| self.model.pin());
        for (k, (i, tg)) in
            ids.chunks(per_pass * len).zip(targets.chunks(per_pass * len)).enumerate()
        {
            if !mine.contains(&k) {
                continue;
            }
            // Pass k holds sequences k·per_pass.. of the batch: their masks are the batch's.
            let (key, first) = (key.key(), k * per_pass);
            self.model.forward_at(&mut self.acts, i, key, first);
            let g = &mut self.grads;
            nll += self.model.backward(&mut self.acts, g, i, tg, key, lm_scale, None, first);
        }
        sum_step(be, self.dist.as_deref(), self.grads.w(), &mut nll);
        let lm_loss = nll / counted.max(1) as f64;
        Losses { loss: lm_loss, lm_loss, task_loss: None, tokens: counted }
    }

    /// [`Trainer::gradients`] with a task head: the batch in one pass, or under `comm` each
    /// rank the items of [`item_share`] and their sequences, with the whole batch's dropout
    /// masks and divisors, body and head gradients and the loss sums then summed.
    fn task_gradients(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        len: usize,
        items: &[Item],
        key: StepKey,
        comm: Option<&dyn crate::dist::Collective>,
    ) -> Losses {
        let be = &self.model.backend;
        be.fill(self.grads.w(), 0.0);
        let counted = targets.iter().filter(|&&t| t != IGNORE).count();
        let task = self.task.as_mut().expect("called with a task head");
        let lm_weight = task.aux_lm;
        let lm_scale = lm_weight / counted.max(1) as f32;
        let n_items = labelled(items);
        let n_seq = ids.len() / len;
        assert!(n_seq <= self.micro, "a task head's batch runs in one pass");
        let (ir, sr, mine) = task_share(items, len, n_seq, comm);
        let key = key.key();
        let (mut nll, mut task_sum) = (0.0f64, 0.0f64);
        if sr.is_empty() {
            task.zero_grad();
        } else {
            let (i, tg) =
                (&ids[sr.start * len..sr.end * len], &targets[sr.start * len..sr.end * len]);
            self.acts.reshape(sr.len(), len);
            self.model.forward_at(&mut self.acts, i, key, sr.start);
            // The head reads the extract rows on the host and returns ∂L/∂h at them.
            let d = self.model.config.n_embd;
            let acts = &self.acts;
            let (sum, rows, dh) = task.backward(&mine, key, d, ir.start, n_items, |rows| {
                be.gather_rows(acts.hidden(), rows, d)
            });
            task_sum = sum;
            let extra = Some((rows.as_slice(), dh.as_slice()));
            nll = self.model.backward(
                &mut self.acts,
                &mut self.grads,
                i,
                tg,
                key,
                lm_scale,
                extra,
                sr.start,
            );
        }
        let (nll, task_sum) = sum_task_step(be, comm, &mut self.grads, task, nll, task_sum);
        let lm_loss = nll / counted.max(1) as f64;
        let task_loss = task_sum / n_items as f64;
        let loss = task_loss + lm_weight as f64 * lm_loss;
        Losses { loss, lm_loss, task_loss: Some(task_loss), tokens: counted }
    }

    /// The head's gradient after [`Trainer::gradients`] (fine-tuning).
    pub fn head_grad(&self) -> Option<&Head> {
        self.task.as_ref().map(|t| &t.grad)
    }

    /// One optimizer step: [`Trainer::gradients`], clipping, the divergence check (a NaN or
    /// infinite loss or norm stops before the update), AdamW on body and head. `step` only
    /// labels errors.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        len: usize,
        items: &[Item],
        lr: f32,
        clip: f32,
        key: StepKey,
        step: u64,
    ) -> Result<StepStats> {
        let Losses { loss, lm_loss, task_loss, tokens } =
            self.gradients(ids, targets, len, items, key);
        let mut head = self.task.as_mut().map(|t| t.grad_parts());
        let head = head.as_mut().map_or(&mut [][..], |h| &mut h[..]);
        let grad_norm = clip_checked(&self.model.backend, &mut self.grads, head, clip, loss, step)?;
        self.opt.step(&mut self.model.params, &self.grads, lr);
        if let Some(t) = &mut self.task {
            t.update(lr);
        }
        Ok(StepStats { loss, lm_loss, task_loss, grad_norm, tokens })
    }
}

/// Sums a step's gradients and loss sum over the ranks of `comm` (nothing alone).
pub fn sum_step<B: Backend>(
    be: &B,
    comm: Option<&dyn Collective>,
    grads: B::Mut<'_>,
    nll: &mut f64,
) {
    if let Some(c) = comm {
        be.all_reduce_sum(grads, c);
        let mut s = [*nll];
        c.all_reduce_f64(&mut s);
        *nll = s[0];
    }
}
