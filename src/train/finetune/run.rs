//! The fine-tuning loop of a started run: epochs of bucketed batches, one step per update, dev
//! evaluation keeping the best checkpoint, resumable checkpoints (at `--save-every`, on Ctrl-C).

use super::checkpoint::{self as state, LoopState};
use super::learner::Learner;
use super::options::{FinetuneOptions, FinetuneSummary};
use super::start::{Inputs, leads, sync};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::kernels::rng::{derive, stream};
use crate::model::Net;
use crate::tasks::Head;
use crate::tasks::batch::{Prepared, batch, bucketed_batches};
use crate::tasks::evaluate::Evaluation;
use crate::tasks::readers::TaskDef;
use crate::text::Tokenizer;
use crate::train::rundir;
use crate::train::schedule::Schedule;
use crate::train::trainer::TaskObjective;
use std::path::Path;

/// The best dev result so far: its epoch, its update, its score and evaluation.
#[derive(Default)]
struct Best {
    epoch: usize,
    step: u64,
    score: Option<f64>,
    eval: Option<Evaluation>,
}

/// What a run reads and writes as it goes: the task, its tokenizer, the options and inputs.
struct Run<'a> {
    tok: &'a Tokenizer,
    def: &'a TaskDef,
    opts: &'a FinetuneOptions,
    inp: &'a Inputs,
    lead: bool,
}

/// Trains the body of `model` and a new head on the task from its first update (or the one a
/// resumed checkpoint reached) to the last, keeping the best dev checkpoint in `OUT/best/`.
pub(super) fn run<B: Backend>(
    model: Net,
    tok: &Tokenizer,
    def: &TaskDef,
    opts: &FinetuneOptions,
    inp: Inputs,
    backend: B,
) -> Result<FinetuneSummary> {
    let r = Run { tok, def, opts, inp: &inp, lead: leads(opts) };
    let params = model.config().params();
    let head = Head::new(def.kind, model.config().width(), def.n_out(), opts.seed);
    let task = TaskObjective::new(head, opts.aux_lm, opts.clf_dropout, opts.weight_decay);
    let mut trainer = Learner::on(model, task, inp.seqs, inp.t_max, opts.weight_decay, backend);
    if let Some(c) = &opts.comm {
        trainer.set_dist(c.clone());
    }
    let (mut step, mut best) = r.resume(&mut trainer)?;
    let start = step;
    let mut metrics = rundir::MetricsLog::open(
        opts.out.join("metrics.jsonl"),
        r.lead,
        opts.resume.then_some(start),
    )?;
    let steps_per_epoch = inp.train.len().div_ceil(opts.batch) as u64;
    let total =
        (steps_per_epoch * opts.epochs as u64).min(opts.max_steps.unwrap_or(u64::MAX)).max(1);
    let warmup = ((total as f64 * opts.warmup).ceil() as u64).max(1);
    let mut progress = crate::progress::Progress::new(total, opts.progress && r.lead);
    if opts.progress && r.lead {
        progress.println(summary_line(def, opts, &inp, params, total, &trainer.describe()));
    }
    progress.bar.set_position(start);
    let best_dir = opts.out.join("best");
    let (started, mut seen) = (std::time::Instant::now(), 0usize);
    let mut k = 0u64; // the position in the data order, to skip what a resume already did
    let drop_seed = derive(opts.seed, stream::FINETUNE_DROPOUT);
    for epoch in 0..opts.epochs {
        let batches = bucketed_batches(&inp.train, opts.batch, derive(opts.seed, epoch as u64));
        for (bi, chunk) in batches.iter().enumerate() {
            if step >= total {
                break;
            }
            k += 1;
            if k <= start {
                continue;
            }
            let refs: Vec<&Prepared> = chunk.iter().map(|&i| &inp.train[i]).collect();
            let b = batch(&refs);
            let lr = Schedule::WarmupLinear.lr(opts.lr, step, warmup, total);
            let t0 = std::time::Instant::now();
            let s = trainer.step(&b, lr, opts.clip, derive(drop_seed, step), step + 1);
            metrics.note_divergence(step + 1, lr, &s)?;
            let s = s?;
            step += 1;
            if step == start + 1 && step < total && opts.progress && r.lead {
                let secs = t0.elapsed().as_secs_f64();
                progress.println(crate::progress::first_step_line(secs, total - step));
            }
            let task_loss = s.task_loss.unwrap_or(0.0);
            let rec = serde_json::json!({"step": step, "epoch": epoch, "loss": s.loss, "task_loss": task_loss, "lm_loss": s.lm_loss, "lr": lr, "grad_norm": s.grad_norm});
            metrics.write(rec)?;
            seen += chunk.len();
            let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.step(
                step,
                format!("epoch {epoch} task {task_loss:.4} lm {:.3} {rate:.1} ex/s", s.lm_loss),
            );
            // Dev evaluation at the end of each epoch (or of the run), and every --eval-every.
            let end = bi + 1 == batches.len() || step >= total;
            let due = opts.eval_every > 0 && step % opts.eval_every == 0;
            if let (Some(dp), true) = (&inp.dev, end || due) {
                let ev = trainer.evaluate(def, dp, opts.batch)?;
                metrics.write(
                    serde_json::json!({"step": step, "epoch": epoch, "dev_score": ev.score, "dev_metric": ev.metric}),
                )?;
                progress.println(format!(
                    "step {step} (epoch {epoch}): dev {:?} {:.4}",
                    ev.metric, ev.score
                ));
                if let Some(msg) = one_class_dev(def, dp, &ev) {
                    progress.println(format!("warning: step {step}: {msg}"));
                    metrics.write(serde_json::json!({"step": step, "warning": msg}))?;
                }
                r.keep_if_best(&mut trainer, &mut best, ev, epoch, step, &best_dir)?;
            }
            // Every rank stops after the same step (a Ctrl-C reaches some ranks only).
            let stop = match opts.comm.as_deref() {
                Some(c) => crate::dist::any(c, crate::interrupt::requested()),
                None => crate::interrupt::requested(),
            };
            if (opts.save_every > 0 && step % opts.save_every == 0 || stop) && step < total {
                let dir = opts.out.join(format!("checkpoint-{step}"));
                r.save(&mut trainer, &best, step, &dir)?;
                if stop {
                    progress.bar.abandon();
                    return Err(Error::Interrupted { step, dir });
                }
            }
        }
        if step >= total {
            break;
        }
    }
    progress.bar.finish();
    r.finish(&mut trainer, &mut best, &best_dir)?;
    if metrics.sync()? {
        crate::plot::curves_or_warn(metrics.path(), &opts.out.join("curves.png"), &def.name);
    }
    // The others return once the leader has written everything.
    sync(opts);
    Ok(FinetuneSummary {
        steps: step,
        best_epoch: best.epoch,
        best_step: best.step,
        best_dev: best.eval,
        train_examples: inp.train.len(),
        train_truncated: inp.train_truncated,
        skipped_rows: inp.skipped,
        best_dir,
    })
}

impl Run<'_> {
    /// The update and best result of the newest checkpoint of a resumed run (every rank's the
    /// same, checked), else the start.
    fn resume(&self, trainer: &mut Learner) -> Result<(u64, Best)> {
        let (opts, def) = (self.opts, self.def);
        let (mut step, mut best) = (0u64, Best::default());
        if opts.resume
            && let Some((_, dir)) = state::latest(&opts.out)
        {
            let st = trainer.load_state(&dir, def)?;
            (step, best.epoch, best.step, best.score) =
                (st.step, st.best_epoch, st.best_step, st.best_score);
        }
        if let Some(c) = opts.comm.as_deref()
            && opts.resume
        {
            // Every rank resumed the same checkpoint (a filesystem that is not shared, or stale
            // on one node, would give ranks other steps or weights).
            let (body, head) = trainer.host_weights();
            let desc = format!(
                "step {step}, best {:?} at {}, weights {}, head {}",
                best.score,
                best.step,
                rundir::weights_hash(&body),
                rundir::weights_hash(&head.w)
            );
            crate::dist::check_same(c, "resumed state", &desc)?;
        }
        Ok((step, best))
    }

    /// Keeps the weights as `OUT/best/` when `ev` beats the best so far.
    fn keep_if_best(
        &self,
        trainer: &mut Learner,
        best: &mut Best,
        ev: Evaluation,
        epoch: usize,
        step: u64,
        best_dir: &Path,
    ) -> Result<()> {
        if best.score.is_none_or(|b| ev.score > b) {
            if self.lead {
                trainer.save_best(best_dir, self.def, self.tok, self.inp.max_len)?;
            }
            (best.epoch, best.step, best.score) = (epoch, step, Some(ev.score));
            best.eval = Some(Evaluation { predictions: Vec::new(), scores: Vec::new(), ..ev });
        }
        Ok(())
    }

    /// Writes the resumable checkpoint of update `step` into `dir` (the leader), prunes the
    /// older ones, and waits for every rank.
    fn save(&self, trainer: &mut Learner, best: &Best, step: u64, dir: &Path) -> Result<()> {
        let state = LoopState {
            step,
            best_score: best.score,
            best_epoch: best.epoch,
            best_step: best.step,
            adam_t: [0; 3],
        };
        if self.lead {
            trainer.save_state(dir, self.def, self.tok, self.inp.max_len, state)?;
            rundir::prune_checkpoints(&self.opts.out, self.opts.keep_checkpoints)?;
        }
        sync(self.opts);
        Ok(())
    }

    /// After the last update: the best's evaluation again when it was kept before a resume
    /// (deterministic), or the last weights as `best/` when there was no dev split.
    fn finish(&self, trainer: &mut Learner, best: &mut Best, best_dir: &Path) -> Result<()> {
        if best.eval.is_none() && best.score.is_some() && self.lead {
            let dp = self.inp.dev.as_deref().unwrap_or(&[]);
            let ev = trainer.evaluate_saved(best_dir, self.def, dp, self.opts.batch)?;
            best.eval = Some(Evaluation { predictions: Vec::new(), scores: Vec::new(), ..ev });
        }
        if best.score.is_none() && self.lead {
            trainer.save_best(best_dir, self.def, self.tok, self.inp.max_len)?;
        }
        Ok(())
    }
}

/// What a fine-tuning run is about to do, before its first step (as pre-training says it):
/// the examples (and how many `--max-len` cut), the steps, the model, what runs it.
fn summary_line(
    def: &TaskDef,
    opts: &FinetuneOptions,
    inp: &Inputs,
    params: usize,
    total: u64,
    backend: &str,
) -> String {
    let cut = match inp.train_truncated {
        0 => String::new(),
        n => format!(", {n} cut to --max-len {}", inp.max_len),
    };
    let skipped = match inp.skipped {
        0 => String::new(),
        n => format!(", {n} bad rows skipped"),
    };
    let dev = inp.dev.as_ref().map_or("no dev split".to_string(), |d| format!("{} dev", d.len()));
    format!(
        "task {}: {} training examples{cut}{skipped}, {dev}; {total} steps of {} examples; \
         model: {:.1} M parameters; {backend}",
        def.name,
        inp.train.len(),
        opts.batch,
        params as f64 / 1e6
    )
}

/// A classifier's dev evaluation that chose one class for every example, named.
fn one_class_dev(def: &TaskDef, dev: &[Prepared], ev: &Evaluation) -> Option<String> {
    use crate::tasks::evaluate::Prediction;
    if def.kind != crate::tasks::HeadKind::Classify {
        return None;
    }
    let preds: Vec<usize> = ev
        .predictions
        .iter()
        .filter_map(|p| match p {
            Prediction::Class(c) => Some(*c),
            Prediction::Score(_) => None,
        })
        .collect();
    let targets: Vec<Option<usize>> = dev
        .iter()
        .map(|e| match e.target {
            crate::tasks::Target::Class(c) => Some(c),
            _ => None,
        })
        .collect();
    crate::train::collapse::one_class(&preds, &targets, &def.labels)
}
