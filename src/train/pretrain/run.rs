//! The pre-training loop of a started run: sampled windows, the schedule, one trainer step per
//! update, validation, metrics, checkpoints (at `--save-every`, on Ctrl-C, at the end).

use super::options::Summary;
use super::start::{Ctx, Started};
use crate::data::{Sampler, TokenData, WindowOrder};
use crate::error::{Error, Result};
use crate::kernels::rng::{derive, stream};
use crate::progress::Progress;
use crate::train::checkpoint::TrainerState;
use crate::train::lm::{LmTrainer, trainer};
use crate::train::rundir;
use crate::train::trainer::{StepKey, StepStats};
use std::path::PathBuf;
use std::time::Instant;

const METRICS: &str = "metrics.jsonl";

/// Trains `s` from its first step to `--stop-at` or `--steps`, then writes `final/` (or the
/// checkpoint of the step it stopped at).
pub(super) fn run(ctx: &Ctx, s: Started) -> Result<Summary> {
    let opts = ctx.opts;
    let (start, (state_bytes, act_bytes)) = (s.start, s.bytes);
    let c = s.model.config();
    let mut trainer = trainer(
        s.model,
        ctx.micro,
        opts.seq,
        opts.weight_decay,
        opts.precision,
        opts.device,
        s.opt,
    )?;
    let sampler = Sampler::new(&ctx.data, opts.seq, opts.sampling)?;

    let val = match &ctx.val {
        Some(v) => Some(val_windows(v, opts.seq, opts.val_windows)?),
        None => None,
    };
    // With validation data: what a frequencies-only model scores on it, to name a collapse.
    let mut watch = val.as_ref().filter(|_| ctx.lead).map(|(_, vt)| {
        let h = crate::train::collapse::unigram_loss(&ctx.data, vt);
        crate::train::collapse::CollapseWatch::new(h, opts.warmup.max(opts.steps / 4))
    });
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let progress_on = opts.progress && ctx.lead;
    if progress_on {
        let world = ctx.world;
        let ranks = if world > 1 { format!("; {world} ranks") } else { String::new() };
        eprintln!(
            "model: {:.1} M parameters; {} tokens per step ({} × {}, {} per pass{ranks}); memory ≈ {:.2} GiB; {}",
            c.params() as f64 / 1e6,
            opts.batch * opts.seq,
            opts.batch,
            opts.seq,
            ctx.micro,
            gib(state_bytes + act_bytes),
            trainer.describe()
        );
    }
    let mut metrics =
        rundir::MetricsLog::open(opts.out.join(METRICS), ctx.lead, opts.resume.then_some(start))?;

    if let Some(c) = &opts.comm {
        trainer.set_dist(c.clone());
    }
    let end = opts.stop_at.unwrap_or(opts.steps).min(opts.steps);
    if end < start {
        return Err(Error::setting(
            "stop_at",
            format!("{end}: the run is already at step {start}; give a later step"),
        ));
    }
    let mut progress = Progress::new(end, progress_on);
    progress.bar.set_position(start);
    let data_seed = derive(opts.seed, stream::DATA);
    let drop_seed = derive(opts.seed, stream::DROPOUT);
    let (mut ids, mut targets) =
        (vec![0u32; opts.batch * opts.seq], vec![0u32; opts.batch * opts.seq]);
    let (mut last_loss, mut last_val) = (None, None);
    agree(ctx, trainer.as_ref(), start)?;
    for step in start..end {
        let t0 = Instant::now();
        let starts = sampler.starts(data_seed, step, opts.batch);
        sampler.fill(&starts, &mut ids, &mut targets);
        let lr = opts.schedule.lr(opts.lr, step, opts.warmup, opts.steps);
        let key = StepKey::Whole(derive(drop_seed, step));
        let stats = trainer.train_step(&ids, &targets, opts.seq, &[], lr, opts.clip, key, step + 1);
        metrics.note_divergence(step + 1, lr, &stats)?;
        let StepStats { loss, grad_norm, tokens, .. } = stats?;
        let secs = t0.elapsed().as_secs_f64();
        let tps = tokens as f64 / secs;
        let done = step + 1;
        let mut rec = serde_json::json!({
            "step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "tokens_per_s": tps, "step_s": secs,
        });
        if let Some((vi, vt)) = &val
            && ctx.lead
            && ((opts.eval_every > 0 && done.is_multiple_of(opts.eval_every)) || done == end)
        {
            let v = trainer.validate(vi, vt);
            let vl = v.loss;
            rec["val_loss"] = vl.into();
            rec["val_ppl"] = vl.exp().into();
            if let Some(s) = v.spread {
                rec["hidden_spread"] = s.into();
            }
            if let Some(msg) = watch.as_mut().and_then(|w| w.check(done, vl, v.spread)) {
                progress.println(format!("warning: {msg}"));
                rec["warning"] = msg.clone().into();
                if opts.on_collapse == crate::train::collapse::OnCollapse::Stop {
                    metrics.write(rec)?;
                    metrics.sync()?;
                    return Err(Error::Collapsed(msg));
                }
            }
            last_val = Some(vl);
        }
        let val_now = rec.get("val_loss").and_then(|v| v.as_f64());
        metrics.write(rec)?;
        last_loss = Some(loss);
        if done == start + 1 && progress_on && end > done {
            progress.println(crate::progress::first_step_line(secs, end - done));
        }
        if let Some(v) = val_now {
            progress.println(format!("step {done}: val_loss {v:.4} (ppl {:.2})", v.exp()));
        }
        progress.step(done, format!("loss {loss:.4} lr {lr:.2e} {tps:.0} tok/s"));
        let stop = match ctx.comm {
            Some(c) => crate::dist::any(c, crate::interrupt::requested()),
            None => crate::interrupt::requested(),
        };
        if (opts.save_every > 0 && done % opts.save_every == 0 || stop) && done != end {
            let dir = opts.out.join(format!("checkpoint-{done}"));
            save(ctx, trainer.as_ref(), &dir, done)?;
            if stop {
                progress.bar.abandon();
                metrics.sync()?;
                ctx.sync();
                return Err(Error::Interrupted { step: done, dir });
            }
        }
    }
    progress.bar.finish();
    if metrics.sync()? {
        crate::plot::curves_or_warn(metrics.path(), &opts.out.join("curves.png"), "pre-training");
    }
    let final_dir = save_final(ctx, trainer.as_ref(), start, end)?;
    Ok(Summary { step: end, loss: last_loss, val_loss: last_val, final_dir })
}

/// The first `max` sequential windows of the validation data: `(ids, targets)`.
fn val_windows(val: &TokenData, seq: usize, max: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let s = Sampler::new(val, seq, WindowOrder::Sequential)?;
    let n = s.windows().min(max);
    let starts = s.starts(0, 0, n);
    let (mut ids, mut tg) = (vec![0; n * seq], vec![0; n * seq]);
    s.fill(&starts, &mut ids, &mut tg);
    Ok((ids, tg))
}

/// Every rank holds the same weights at the same step (the same summed gradients, the same
/// update): checked at the start (another --init, another checkpoint found on resume) and at
/// each checkpoint, so a silent divergence cannot be saved.
fn agree(ctx: &Ctx, trainer: &dyn LmTrainer, step: u64) -> Result<()> {
    match ctx.comm {
        Some(c) => {
            let p = trainer.host_params();
            let desc = format!("step: {step}, weights: {}", rundir::weights_hash(&p));
            crate::dist::check_same(c, "weights", &desc)
        }
        None => Ok(()),
    }
}

/// The trainer state recorded with a checkpoint of step `step`.
fn state_at(ctx: &Ctx, step: u64) -> TrainerState {
    let opts = ctx.opts;
    TrainerState {
        step,
        seed: opts.seed,
        batch: opts.batch,
        seq: opts.seq,
        micro_batch: ctx.micro,
        sampling: opts.sampling,
        data: opts.data.clone(),
        precision: opts.precision,
    }
}

/// Writes the checkpoint of step `step` into `dir` (the leader, after the ranks agree) and
/// prunes the older ones.
fn save(ctx: &Ctx, trainer: &dyn LmTrainer, dir: &std::path::Path, step: u64) -> Result<()> {
    agree(ctx, trainer, step)?;
    if ctx.lead {
        trainer.save(dir, &state_at(ctx, step), ctx.tok.as_ref())?;
        rundir::prune_checkpoints(&ctx.opts.out, ctx.opts.keep_checkpoints)?;
    }
    Ok(())
}

/// Writes `final/` (or `checkpoint-END/` for a run stopped by `--stop-at`) unless a resumed run
/// that took no step already has it; every rank returns once the leader has written it.
fn save_final(ctx: &Ctx, trainer: &dyn LmTrainer, start: u64, end: u64) -> Result<PathBuf> {
    let opts = ctx.opts;
    let final_dir = if end < opts.steps {
        opts.out.join(format!("checkpoint-{end}"))
    } else {
        opts.out.join("final")
    };
    // Whether to write final/ is the leader's call (the others may see another filesystem).
    let mut write_final = end > start || !final_dir.exists();
    if let Some(c) = ctx.comm {
        write_final = crate::dist::any(c, ctx.lead && write_final);
    }
    if write_final {
        save(ctx, trainer, &final_dir, end)?;
    }
    // The others return once the leader has written everything.
    ctx.sync();
    Ok(final_dir)
}
