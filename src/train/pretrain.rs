//! The pre-training driver: sampling, schedule, evaluation, metrics, checkpoints, resume.

use super::checkpoint::{self, TrainerState};
use super::lm::{load_checkpoint, trainer};
use super::rundir::{self, FileId};
use super::schedule::Schedule;
use super::spec::PretrainSpec;
use super::trainer::StepKey;
use crate::backend::{Device, Precision};
use crate::data::{Sampler, Sampling, TokenData};
use crate::error::{Error, Result};
use crate::kernels::rng::{derive, stream};
use crate::model::Config;
use crate::model::lstm::LstmConfig;
use crate::model::params::num_params;
use crate::model::{ArchConfig, Net};
use crate::progress::{Progress, human};
use crate::sys::mem_available;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the model comes from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// Random initialisation from a configuration.
    Config(Config),
    /// Start from the weights of a checkpoint directory (either architecture).
    Init(PathBuf),
    /// Random initialisation of the paper's LSTM baseline.
    Lstm(LstmConfig),
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
    /// Resume from this checkpoint instead of the run's newest.
    pub resume_from: Option<PathBuf>,
    /// `checkpoint-N/` directories kept (the newest; 0 keeps all); `final/` is always kept.
    pub keep_checkpoints: usize,
    /// Stop (with a checkpoint) after this many updates, keeping the schedule of `steps`.
    pub stop_at: Option<u64>,
    /// Windows of the validation data evaluated each time.
    pub val_windows: usize,
    pub progress: bool,
    /// The precision of the matrix products (fp32 master weights and state either way).
    pub precision: Precision,
    /// Where the model runs (checkpoints are the same files either way).
    pub device: Device,
    /// The tokenizer the data was made with, saved with every checkpoint (HF file names, so
    /// `finetune` and transformers find it); default: the `tokenizer/` folder `gpt1 prepare`
    /// writes beside the shards, when there is one.
    pub tokenizer: Option<PathBuf>,
    /// Data parallelism: this process is one rank of `comm` (`mpirun -np N`); rank 0 alone
    /// writes the run directory, every rank takes its share of each step ([`crate::dist`]).
    pub comm: Option<std::sync::Arc<dyn crate::dist::Collective>>,
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
    pub keep_checkpoints: usize,
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
    keep_checkpoints: 3,
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
            resume_from: None,
            keep_checkpoints: p.keep_checkpoints,
            stop_at: None,
            val_windows: p.val_windows,
            progress: true,
            precision: Precision::Fp32,
            device: Device::Cpu,
            tokenizer: None,
            comm: None,
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
use super::rundir::RESUME_HINT;

fn val_windows(val: &TokenData, seq: usize, max: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let s = Sampler::new(val, seq, Sampling::Sequential)?;
    let n = s.windows().min(max);
    let starts = s.starts(0, 0, n);
    let (mut ids, mut tg) = (vec![0; n * seq], vec![0; n * seq]);
    s.fill(&starts, &mut ids, &mut tg);
    Ok((ids, tg))
}

/// The run's initial model: a configuration's random initialisation (refused before
/// allocating when it cannot fit) or a checkpoint's weights.
fn fresh_model(opts: &PretrainOptions, micro: usize) -> Result<Net> {
    let c = match &opts.model {
        ModelSource::Init(dir) => return Net::load(dir),
        ModelSource::Config(c) => ArchConfig::Transformer(c.clone()),
        ModelSource::Lstm(c) => ArchConfig::Lstm(c.clone()),
    };
    c.validate().map_err(Error::ModelConfig)?;
    check_memory(&c, opts, micro)?;
    Ok(Net::init(&c, derive(opts.seed, stream::INIT)))
}

/// Removes the run's checkpoints after `step` and its `final/` (a resume from an earlier
/// checkpoint writes them again, bitwise the same), keeping `keep` itself.
fn discard_after(run: &Path, step: u64, keep: &Path) -> Result<()> {
    let rd = std::fs::read_dir(run).map_err(|e| Error::io(run, e))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let later = name == "final" || rundir::checkpoint_step(&name).is_some_and(|n| n > step);
        let p = e.path();
        let same = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
        if later && !same(&p, keep) {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// The data against the model: the context and the vocabulary.
fn check_inputs(
    c: &ArchConfig,
    opts: &PretrainOptions,
    data: &TokenData,
    val: Option<&TokenData>,
) -> Result<()> {
    if opts.seq > c.n_positions() {
        return Err(Error::setting(
            "seq",
            format!("{} exceeds the model's n_positions {}; lower it", opts.seq, c.n_positions()),
        ));
    }
    data.check_vocab(c.vocab_size())?;
    if let Some(v) = val {
        v.check_vocab(c.vocab_size())?;
    }
    Ok(())
}

/// Bytes the run needs (weights, gradients and Adam moments; activations of one pass), or an
/// error naming them when they exceed the memory available now.
fn check_memory(c: &ArchConfig, opts: &PretrainOptions, micro: usize) -> Result<(u64, u64)> {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let state_bytes = 16 * c.params() as u64; // weights, gradients, 2 Adam moments
    let act_bytes = c.activation_bytes(micro, opts.seq.min(c.n_positions())) as u64;
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

/// Settings that cannot work, refused before anything is read or written.
fn check_settings(opts: &PretrainOptions, micro: usize) -> Result<()> {
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
    // Keeps every size computed from them far inside 64 bits.
    if opts.batch.checked_mul(opts.seq).is_none_or(|n| n > 1 << 32) {
        return Err(Error::setting(
            "batch",
            format!("{} × --seq {} tokens per step is beyond any machine", opts.batch, opts.seq),
        ));
    }
    finite_nonneg(&[("lr", opts.lr), ("weight_decay", opts.weight_decay), ("clip", opts.clip)])?;
    if let Some(p) = opts.dropout
        && !(0.0..1.0).contains(&p)
    {
        return Err(Error::setting("dropout", format!("{p} must be in [0, 1)")));
    }
    if opts.val.is_some() && opts.val_windows == 0 {
        return Err(Error::setting("val_windows", "must be at least 1 when --val is given"));
    }
    Ok(())
}

/// An error naming the first of `settings` that is not a finite number ≥ 0 (NaN would end a run
/// as a divergence, a negative learning rate or clip silently change what it does).
pub(crate) fn finite_nonneg(settings: &[(&'static str, f32)]) -> Result<()> {
    match settings.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
        Some((name, v)) => Err(Error::setting(name, format!("{v} must be a finite number ≥ 0"))),
        None => Ok(()),
    }
}

/// Runs (or resumes) pre-training as `opts` says. Everything is checked before the run
/// directory is touched: a run that cannot start leaves nothing behind.
pub fn pretrain(opts: &PretrainOptions) -> Result<Summary> {
    let comm = opts.comm.as_deref();
    let (rank, world) = comm.map_or((0, 1), |c| (c.rank(), c.world()));
    // Rank 0 leads: it alone writes the run directory, metrics and checkpoints.
    let lead = rank == 0;
    if let Some(c) = comm {
        // Every rank must run the same command; a rank that never gets here stops the job.
        let timeout = crate::dist::startup_timeout()?;
        crate::dist::within(timeout, rank, || {
            crate::dist::check_same(c, "settings", &format!("{opts:?}"))
        })?;
        if !opts.batch.is_multiple_of(world) {
            return Err(Error::setting(
                "batch",
                format!("{}: must split evenly over the {world} ranks", opts.batch),
            ));
        }
    }
    let micro = opts.micro_batch.unwrap_or(opts.batch / world);
    check_settings(opts, micro)?;
    // A GPU that is not there is said before anything is claimed or written.
    if let Device::Cuda(_) = opts.device {
        opts.device.cuda(opts.precision)?;
    }
    if world > 1 && !(opts.batch / micro).is_multiple_of(world) {
        return Err(Error::setting(
            "micro_batch",
            format!(
                "{micro}: the {} passes of a step must split evenly over the {world} ranks \
                 (give a --micro-batch that divides --batch / {world})",
                opts.batch / micro
            ),
        ));
    }
    let sync = || {
        if let Some(c) = comm {
            crate::dist::barrier(c);
        }
    };
    let data = TokenData::open(&opts.data)?;
    let val_data = match &opts.val {
        Some(p) => Some(TokenData::open(p)?),
        None => None,
    };
    let tok_dir = opts.tokenizer.clone().or_else(|| {
        let d = opts.data.parent()?.join(crate::text::prepare::TOKENIZER_DIR);
        d.is_dir().then_some(d)
    });
    let tok = match &tok_dir {
        Some(d) => Some(crate::text::Tokenizer::load(d, None)?),
        None => None,
    };
    let identity = |c: &ArchConfig| -> Result<PretrainSpec> {
        Ok(PretrainSpec {
            data: FileId::of(&opts.data)?,
            val: opts.val.as_deref().map(FileId::of).transpose()?,
            config: c.clone(),
            init: match &opts.model {
                ModelSource::Init(d) => Some(d.clone()),
                ModelSource::Config(_) | ModelSource::Lstm(_) => None,
            },
            batch: opts.batch,
            seq: opts.seq,
            micro_batch: micro,
            steps: opts.steps,
            lr: opts.lr,
            warmup: opts.warmup,
            schedule: opts.schedule,
            weight_decay: opts.weight_decay,
            clip: opts.clip,
            seed: opts.seed,
            sampling: opts.sampling,
            precision: opts.precision,
            val_windows: opts.val_windows,
            tokenizer: tok_dir.clone(),
        })
    };
    // The model as the run trains it (a dropout override applied), checked against the data
    // and the memory: before claiming a new directory, after loading a resumed run's weights.
    let ready = |model: &mut Net| -> Result<(u64, u64)> {
        if let Some(p) = opts.dropout {
            model.set_dropout(p)?;
        }
        check_inputs(&model.config(), opts, &data, val_data.as_ref())?;
        check_memory(&model.config(), opts, micro)
    };
    let (_lock, model, opt, start, (state_bytes, act_bytes)) = if opts.resume {
        let lock = if lead { Some(rundir::claim_existing(&opts.out)?) } else { None };
        // The leader has cleaned up after a killed run before the others look.
        sync();
        let spec = rundir::load_spec::<PretrainSpec>(&opts.out)?;
        if let Some(spec) = &spec {
            let mut asked = identity(&spec.config)?;
            match &opts.model {
                ModelSource::Config(c) => asked.config = ArchConfig::Transformer(c.clone()),
                ModelSource::Lstm(c) => asked.config = ArchConfig::Lstm(c.clone()),
                ModelSource::Init(_) => {}
            }
            if let Some(p) = opts.dropout {
                asked.config = asked.config.with_dropout(p)?;
            }
            if let Some((flag, have, want)) = spec.differs(&asked) {
                return Err(Error::invalid(
                    &opts.out,
                    format!(
                        "--{flag}: the run was started with {have}, this command asks for \
                         {want}; an exact resume needs the same (without the flag, `gpt1 \
                         pretrain --out {} --resume` continues the run as it was started)",
                        opts.out.display()
                    ),
                ));
            }
        }
        let found = match &opts.resume_from {
            Some(d) => Some(d.clone()),
            None => checkpoint::latest(&opts.out)?.map(|(_, d)| d),
        };

        match (found, &spec) {
            (Some(dir), _) => {
                let (mut model, opt, state) = load_checkpoint(&dir, opts.weight_decay)?;
                if opts.resume_from.is_some() && lead {
                    // What the run wrote after that checkpoint is written again as it goes on.
                    discard_after(&opts.out, state.step, &dir)?;
                }
                if spec.is_none() {
                    // A run from before run.json: its trainer state holds what it recorded.
                    let want =
                        (opts.seed, opts.batch, opts.seq, micro, opts.sampling, opts.precision);
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
                }
                if state.step > opts.steps {
                    return Err(Error::setting(
                        "steps",
                        format!(
                            "{}: {} is already at step {}",
                            opts.steps,
                            dir.display(),
                            state.step
                        ),
                    ));
                }
                let bytes = ready(&mut model)?;
                (lock, model, Some(opt), state.step, bytes)
            }
            // Stopped before its first checkpoint: the run starts again from its first step,
            // with the recorded configuration (a dropout override of --init's included).
            (None, Some(spec)) => {
                let mut m = fresh_model(opts, micro)?;
                if let (Net::Transformer(g), ArchConfig::Transformer(c)) = (&mut m, &spec.config) {
                    // Only the recorded dropout may differ: weights of another shape (--init
                    // replaced since) cannot take the recorded configuration.
                    if num_params(c) != g.params.len() {
                        return Err(Error::invalid(
                            &opts.out,
                            format!(
                                "--resume: the run recorded a model of {} parameters and the \
                                 model given now has {}; restore the original --init or start \
                                 a new --out",
                                num_params(c),
                                g.params.len()
                            ),
                        ));
                    }
                    g.config = c.clone();
                }
                let bytes = ready(&mut m)?;
                (lock, m, None, 0, bytes)
            }
            (None, None) => {
                return Err(Error::invalid(
                    &opts.out,
                    "--resume: no run here (no run.json, no checkpoint); start without --resume",
                ));
            }
        }
    } else {
        if lead {
            rundir::check_new(&opts.out, RESUME_HINT)?;
        }
        let mut model = fresh_model(opts, micro)?;
        let bytes = ready(&mut model)?;
        let lock = if lead {
            let lock = rundir::claim_new(&opts.out, RESUME_HINT)?;
            rundir::save_spec(&opts.out, &identity(&model.config())?)?;
            Some(lock)
        } else {
            None
        };
        sync();
        (lock, model, None, 0, bytes)
    };
    let c = model.config();
    let mut trainer =
        trainer(model, micro, opts.seq, opts.weight_decay, opts.precision, opts.device, opt)?;
    let sampler = Sampler::new(&data, opts.seq, opts.sampling)?;
    let val = match &val_data {
        Some(v) => Some(val_windows(v, opts.seq, opts.val_windows)?),
        None => None,
    };
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let progress_on = opts.progress && lead;
    if progress_on {
        let ranks = if world > 1 { format!("; {world} ranks") } else { String::new() };
        eprintln!(
            "model: {:.1} M parameters; {} tokens per step ({} × {}, {} per pass{ranks}); memory ≈ {:.2} GiB; {}",
            c.params() as f64 / 1e6,
            opts.batch * opts.seq,
            opts.batch,
            opts.seq,
            micro,
            gib(state_bytes + act_bytes),
            trainer.describe()
        );
    }
    let mut metrics =
        rundir::MetricsLog::open(opts.out.join(METRICS), lead, opts.resume.then_some(start))?;

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
    let mut progress = Progress::new(end, progress_on);
    progress.bar.set_position(start);
    let data_seed = derive(opts.seed, stream::DATA);
    let drop_seed = derive(opts.seed, stream::DROPOUT);
    let (mut ids, mut targets) =
        (vec![0u32; opts.batch * opts.seq], vec![0u32; opts.batch * opts.seq]);
    let (mut last_loss, mut last_val) = (None, None);
    // Every rank holds the same weights at the same step (the same summed gradients, the same
    // update): checked at the start (another --init, another checkpoint found on resume) and at
    // each checkpoint, so a silent divergence cannot be saved.
    let agree = |trainer: &dyn crate::train::lm::LmTrainer, step: u64| -> Result<()> {
        match comm {
            Some(c) => {
                let p = trainer.host_params();
                let desc = format!("step: {step}, weights: {}", rundir::weights_hash(&p));
                crate::dist::check_same(c, "weights", &desc)
            }
            None => Ok(()),
        }
    };
    agree(trainer.as_ref(), start)?;
    for step in start..end {
        let t0 = Instant::now();
        let starts = sampler.starts(data_seed, step, opts.batch);
        sampler.fill(&starts, &mut ids, &mut targets);
        let lr = opts.schedule.lr(opts.lr, step, opts.warmup, opts.steps);
        let key = StepKey::PerMicroBatch(derive(drop_seed, step));
        let (loss, grad_norm, tokens) =
            trainer.train_step(&ids, &targets, opts.seq, lr, opts.clip, key, step + 1)?;
        let secs = t0.elapsed().as_secs_f64();
        let tps = tokens as f64 / secs;
        let done = step + 1;
        let mut rec = serde_json::json!({
            "step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "tokens_per_s": tps, "step_s": secs,
        });
        if let Some((vi, vt)) = &val
            && lead
            && ((opts.eval_every > 0 && done.is_multiple_of(opts.eval_every)) || done == end)
        {
            let vl = trainer.eval_loss(vi, vt);
            rec["val_loss"] = vl.into();
            rec["val_ppl"] = vl.exp().into();
            last_val = Some(vl);
        }
        let val_now = rec.get("val_loss").and_then(|v| v.as_f64());
        metrics.write(rec)?;
        last_loss = Some(loss);
        if done == start + 1 && progress_on && end > done {
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
        progress.step(done, format!("loss {loss:.4} lr {lr:.2e} {tps:.0} tok/s"));
        let stop = match comm {
            Some(c) => crate::dist::any(c, crate::interrupt::requested()),
            None => crate::interrupt::requested(),
        };
        if (opts.save_every > 0 && done % opts.save_every == 0 || stop) && done != end {
            let dir = opts.out.join(format!("checkpoint-{done}"));
            agree(trainer.as_ref(), done)?;
            if lead {
                trainer.save(&dir, &state_at(done), tok.as_ref())?;
                rundir::prune_checkpoints(&opts.out, opts.keep_checkpoints)?;
            }
            if stop {
                progress.bar.abandon();
                metrics.sync()?;
                sync();
                return Err(Error::Interrupted { step: done, dir });
            }
        }
    }
    progress.bar.finish();
    if metrics.sync()? {
        crate::plot::curves_or_warn(metrics.path(), &opts.out.join("curves.png"), "pre-training");
    }
    let final_dir = if end < opts.steps {
        opts.out.join(format!("checkpoint-{end}"))
    } else {
        opts.out.join("final")
    };
    // Whether to write final/ is the leader's call (the others may see another filesystem).
    let mut write_final = end > start || !final_dir.exists();
    if let Some(c) = comm {
        write_final = crate::dist::any(c, lead && write_final);
    }
    if write_final {
        agree(trainer.as_ref(), end)?;
        if lead {
            trainer.save(&final_dir, &state_at(end), tok.as_ref())?;
            rundir::prune_checkpoints(&opts.out, opts.keep_checkpoints)?;
        }
    }
    // The others return once the leader has written everything.
    sync();
    Ok(Summary { step: end, loss: last_loss, val_loss: last_val, final_dir })
}
