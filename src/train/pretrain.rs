//! The pre-training driver: sampling, schedule, evaluation, metrics, checkpoints, resume.

use super::checkpoint::{self, TrainerState};
use super::schedule::Schedule;
use super::trainer::{StepKey, Trainer};
use crate::backend::{Cpu, Precision};
use crate::data::{Sampler, Sampling, TokenData};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::kernels::rng::{derive, stream};
use crate::model::activation_bytes;
use crate::model::params::num_params;
use crate::model::{Config, Gpt, checkpoint::load_model};
use crate::progress::{Progress, human, mem_available};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the model comes from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// Random initialisation from a configuration.
    Config(Config),
    /// Start from the weights of a checkpoint directory.
    Init(PathBuf),
}

#[derive(Clone, Debug)]
pub struct PretrainOptions {
    pub data: PathBuf,
    pub val: Option<PathBuf>,
    pub model: ModelSource,
    pub out: PathBuf,
    pub batch: usize,
    pub seq: usize,
    pub micro_batch: Option<usize>,
    pub steps: u64,
    pub lr: f32,
    pub warmup: u64,
    pub schedule: Schedule,
    pub weight_decay: f32,
    pub clip: f32,
    /// Overrides the configuration's three dropout probabilities.
    pub dropout: Option<f32>,
    pub seed: u64,
    pub sampling: Sampling,
    pub eval_every: u64,
    pub save_every: u64,
    pub resume: bool,
    /// Stop (with a checkpoint) after this many updates, keeping the schedule of `steps`.
    pub stop_at: Option<u64>,
    /// Windows of the validation data evaluated each time.
    pub val_windows: usize,
    pub progress: bool,
    /// The precision of the matrix products (fp32 master weights and state either way).
    pub precision: Precision,
    /// The tokenizer the data was made with, saved with every checkpoint (HF file names, so
    /// `finetune` and transformers find it); default: the `tokenizer/` folder `gpt1 prepare`
    /// writes beside the shards, when there is one.
    pub tokenizer: Option<PathBuf>,
}

/// The paper's pre-training settings (section 4.1): the one source of the defaults of
/// [`PretrainOptions::new`] and of `gpt1 pretrain`'s flags.
#[derive(Clone, Copy, Debug)]
pub struct PretrainDefaults {
    pub batch: usize,
    pub seq: usize,
    pub steps: u64,
    pub lr: f32,
    pub warmup: u64,
    pub schedule: Schedule,
    pub weight_decay: f32,
    pub clip: f32,
    pub seed: u64,
    pub sampling: Sampling,
    pub eval_every: u64,
    pub save_every: u64,
    pub val_windows: usize,
}

pub const PRETRAIN: PretrainDefaults = PretrainDefaults {
    batch: 64,
    seq: 512,
    steps: 100_000,
    lr: 2.5e-4,
    warmup: 2000,
    schedule: Schedule::WarmupCosine,
    weight_decay: 0.01,
    clip: 1.0,
    seed: 0,
    sampling: Sampling::Random,
    eval_every: 0,
    save_every: 0,
    val_windows: 64,
};

impl PretrainOptions {
    /// The paper's settings ([`PRETRAIN`]) for the given data, model and output.
    pub fn new(data: PathBuf, model: ModelSource, out: PathBuf) -> Self {
        let p = PRETRAIN;
        PretrainOptions {
            data,
            val: None,
            model,
            out,
            batch: p.batch,
            seq: p.seq,
            micro_batch: None,
            steps: p.steps,
            lr: p.lr,
            warmup: p.warmup,
            schedule: p.schedule,
            weight_decay: p.weight_decay,
            clip: p.clip,
            dropout: None,
            seed: p.seed,
            sampling: p.sampling,
            eval_every: p.eval_every,
            save_every: p.save_every,
            resume: false,
            stop_at: None,
            val_windows: p.val_windows,
            progress: true,
            precision: Precision::Fp32,
            tokenizer: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub step: u64,
    pub loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub final_dir: PathBuf,
}

const METRICS: &str = "metrics.jsonl";

/// Keeps only the metric lines of steps `<= step` (after a resume).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}

fn val_windows(val: &TokenData, seq: usize, max: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let s = Sampler::new(val, seq, Sampling::Sequential)?;
    let n = s.windows().min(max);
    let starts = s.starts(0, 0, n);
    let (mut ids, mut tg) = (vec![0; n * seq], vec![0; n * seq]);
    s.fill(&starts, &mut ids, &mut tg);
    Ok((ids, tg))
}

/// Bytes the run needs (weights, gradients and Adam moments; activations of one pass), or an
/// error naming them when they exceed the memory available now.
fn check_memory(c: &Config, opts: &PretrainOptions, micro: usize) -> Result<(u64, u64)> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let state_bytes = 16 * num_params(c) as u64; // weights, gradients, 2 Adam moments
    let act_bytes = activation_bytes(c, micro, opts.seq.min(c.n_positions), true) as u64;
    if let Some(avail) = mem_available()
        && state_bytes + act_bytes > avail
    {
        return Err(Error::setting(
            "batch",
            format!(
                "{}: the run needs about {:.1} GiB (weights, gradients and Adam moments {:.1} GiB; \
                 activations of {micro} × {} tokens {:.1} GiB) and {:.1} GiB are available: lower \
                 the micro-batch or the sequence length, or choose a smaller model",
                opts.batch,
                gib(state_bytes + act_bytes),
                gib(state_bytes),
                opts.seq,
                gib(act_bytes),
                gib(avail)
            ),
        ));
    }
    Ok((state_bytes, act_bytes))
}

/// Runs (or resumes) pre-training as `opts` says.
pub fn pretrain(opts: &PretrainOptions) -> Result<Summary> {
    let micro = opts.micro_batch.unwrap_or(opts.batch);
    if opts.batch == 0 || micro == 0 || !opts.batch.is_multiple_of(micro) {
        return Err(Error::setting(
            "batch",
            format!("{} must be a positive multiple of the micro-batch size {micro}", opts.batch),
        ));
    }
    if opts.seq == 0 || opts.steps == 0 {
        let setting = if opts.seq == 0 { "seq" } else { "steps" };
        return Err(Error::setting(setting, "must be positive"));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let latest = checkpoint::latest(&opts.out)?;
    let (mut model, opt, start) = if opts.resume {
        let Some((_, dir)) = latest else {
            return Err(Error::invalid(
                &opts.out,
                "--resume: no checkpoint with a trainer state here; start without --resume",
            ));
        };
        let (model, opt, state) = checkpoint::load(&dir, opts.weight_decay)?;
        let want = (opts.seed, opts.batch, opts.seq, micro, opts.sampling, opts.precision);
        let have = (
            state.seed,
            state.batch,
            state.seq,
            state.micro_batch,
            state.sampling,
            state.precision,
        );
        if want != have {
            return Err(Error::invalid(
                &dir,
                format!(
                    "the run was started with (seed, batch, seq, micro-batch, sampling, precision) = {have:?}, this command asks for {want:?}; an exact resume needs the same"
                ),
            ));
        }
        (model, Some(opt), state.step)
    } else {
        if let Some((step, dir)) = latest {
            return Err(Error::invalid(
                &dir,
                format!(
                    "{} already holds a run (at step {step}); pass --resume to continue it, or choose another --out",
                    opts.out.display()
                ),
            ));
        }
        let model = match &opts.model {
            ModelSource::Config(c) => {
                c.validate().map_err(Error::ModelConfig)?;
                // Refuse before allocating a model that cannot train here.
                check_memory(c, opts, micro)?;
                Gpt::init(c.clone(), derive(opts.seed, stream::INIT))
            }
            ModelSource::Init(dir) => load_model(dir)?,
        };
        (model, None, 0)
    };
    if let Some(p) = opts.dropout {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::setting("dropout", format!("{p} must be in [0, 1)")));
        }
        model.config = model.config.clone().with_dropout(p);
    }
    let c = model.config.clone();
    if opts.seq > c.n_positions {
        return Err(Error::setting(
            "seq",
            format!("{} exceeds the model's n_positions {}; lower it", opts.seq, c.n_positions),
        ));
    }
    let data = TokenData::open(&opts.data)?;
    let tok_dir = opts.tokenizer.clone().or_else(|| {
        let d = opts.data.parent()?.join(crate::text::prepare::TOKENIZER_DIR);
        d.is_dir().then_some(d)
    });
    let tok = match &tok_dir {
        Some(d) => Some(crate::text::Tokenizer::load(d, None)?),
        None => None,
    };
    data.check_vocab(c.vocab_size)?;
    let sampler = Sampler::new(&data, opts.seq, opts.sampling)?;
    let val = match &opts.val {
        Some(p) => {
            let v = TokenData::open(p)?;
            v.check_vocab(c.vocab_size)?;
            Some(val_windows(&v, opts.seq, opts.val_windows)?)
        }
        None => None,
    };
    // What the run needs, checked again with the final configuration (a dropout override
    // does not change it) before anything large is written.
    let (state_bytes, act_bytes) = check_memory(&model.config, opts, micro)?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if opts.progress {
        eprintln!(
            "model: {:.1} M parameters; {} tokens per step ({} × {}, {} per pass); memory ≈ {:.2} GiB; {}",
            num_params(&model.config) as f64 / 1e6,
            opts.batch * opts.seq,
            opts.batch,
            opts.seq,
            micro,
            gib(state_bytes + act_bytes),
            <Cpu as crate::backend::Backend>::describe(&Cpu::new(opts.precision))
        );
    }
    let metrics_path = opts.out.join(METRICS);
    if opts.resume {
        truncate_metrics(&metrics_path, start)?;
    } else if metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    }
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;

    model.backend = Cpu::new(opts.precision);
    let mut trainer = Trainer::new(model, micro, opts.seq, opts.weight_decay);
    if let Some(o) = opt {
        trainer.opt = o;
    }
    let end = opts.stop_at.unwrap_or(opts.steps).min(opts.steps);
    let state_at = |step: u64| TrainerState {
        step,
        seed: opts.seed,
        batch: opts.batch,
        seq: opts.seq,
        micro_batch: micro,
        sampling: opts.sampling,
        data: opts.data.clone(),
        precision: opts.precision,
    };
    let mut progress = Progress::new(end, opts.progress);
    progress.bar.set_position(start);
    let data_seed = derive(opts.seed, stream::DATA);
    let drop_seed = derive(opts.seed, stream::DROPOUT);
    let (mut ids, mut targets) =
        (vec![0u32; opts.batch * opts.seq], vec![0u32; opts.batch * opts.seq]);
    let (mut last_loss, mut last_val) = (None, None);
    let write_metric = |m: &mut std::fs::File, v: serde_json::Value| -> Result<()> {
        writeln!(m, "{v}").map_err(|e| Error::io(&metrics_path, e))
    };
    for step in start..end {
        let t0 = Instant::now();
        let starts = sampler.starts(data_seed, step, opts.batch);
        sampler.fill(&starts, &mut ids, &mut targets);
        let lr = opts.schedule.lr(opts.lr, step, opts.warmup, opts.steps);
        let key = StepKey::PerMicroBatch(derive(drop_seed, step));
        let stats = trainer.step(&ids, &targets, opts.seq, &[], lr, opts.clip, key, step + 1)?;
        let secs = t0.elapsed().as_secs_f64();
        let tps = stats.tokens as f64 / secs;
        let done = step + 1;
        let mut rec = serde_json::json!({
            "step": done, "loss": stats.loss, "lr": lr, "grad_norm": stats.grad_norm,
            "tokens_per_s": tps, "step_s": secs,
        });
        if let Some((vi, vt)) = &val
            && ((opts.eval_every > 0 && done.is_multiple_of(opts.eval_every)) || done == end)
        {
            let vl = trainer.eval_loss(vi, vt);
            rec["val_loss"] = vl.into();
            rec["val_ppl"] = vl.exp().into();
            last_val = Some(vl);
        }
        let val_now = rec.get("val_loss").and_then(|v| v.as_f64());
        write_metric(&mut metrics, rec)?;
        last_loss = Some(stats.loss);
        if done == start + 1 && opts.progress && end > done {
            let left = secs * (end - done) as f64;
            let days = if left > 86_400.0 {
                " — days: consider a smaller model or --precision bf16"
            } else {
                ""
            };
            progress.println(format!(
                "first step {:.2} s: about {} for the {} steps left{days}",
                secs,
                human(left),
                end - done
            ));
        }
        if let Some(v) = val_now {
            progress.println(format!("step {done}: val_loss {v:.4} (ppl {:.2})", v.exp()));
        }
        progress.step(done, format!("loss {:.4} lr {lr:.2e} {:.0} tok/s", stats.loss, tps));
        if opts.save_every > 0 && done % opts.save_every == 0 && done != end {
            checkpoint::save(
                &opts.out.join(format!("checkpoint-{done}")),
                &trainer.model,
                &trainer.opt,
                &state_at(done),
                tok.as_ref(),
            )?;
        }
    }
    progress.bar.finish();
    metrics.sync_all().map_err(|e| Error::io(&metrics_path, e))?;
    crate::plot::curves_or_warn(&metrics_path, &opts.out.join("curves.png"), "pre-training");
    let final_dir = if end < opts.steps {
        opts.out.join(format!("checkpoint-{end}"))
    } else {
        opts.out.join("final")
    };
    if end > start || !final_dir.exists() {
        checkpoint::save(&final_dir, &trainer.model, &trainer.opt, &state_at(end), tok.as_ref())?;
    }
    Ok(Summary { step: end, loss: last_loss, val_loss: last_val, final_dir })
}
