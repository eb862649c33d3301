//! Fine-tuning (section 3.2): the pre-trained body, a linear head on the extract states, and
//! the objective L2 + λ·L1 with the auxiliary language-model loss on the same sequences. The
//! loop only: batching, evaluation and checkpoints live in [`crate::tasks`]; the step is
//! [`Trainer::step`].

use super::finetune_state::{self, FinetuneSpec, LoopState, data_hash};
use super::rundir;
use super::rundir::weights_hash;
use super::schedule::Schedule;
use super::trainer::TaskObjective;
use super::tuner::Tuner;
use crate::backend::{Backend, Cpu, Device, Precision};
use crate::error::{Error, Result};
use crate::kernels::rng::{derive, stream};
use crate::model::Gpt;
use crate::model::Net;
use crate::tasks::Head;
use crate::tasks::batch::{Prepared, batch, bucketed_batches, longest, prepare};
use crate::tasks::checkpoint::with_special_tokens;
use crate::tasks::evaluate::Evaluation;
use crate::tasks::readers::{TaskDef, read_split};
use crate::text::Tokenizer;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// λ of the auxiliary LM loss (0 disables it).
    pub aux_lm: f32,
    /// Context length for the task (default: the model's n_positions).
    pub max_len: Option<usize>,
    pub seed: u64,
    /// Stop after this many updates (for quick runs).
    pub max_steps: Option<u64>,
    /// Also evaluate dev (and keep the best checkpoint) every this many updates; 0: only at the
    /// end of each epoch.
    pub eval_every: u64,
    /// Warm-up as a fraction of all updates.
    pub warmup: f64,
    pub clf_dropout: f32,
    pub weight_decay: f32,
    pub clip: f32,
    pub skip_bad_rows: bool,
    pub progress: bool,
    /// The precision of the matrix products (fp32 master weights and state either way).
    pub precision: Precision,
    /// The checkpoint directory the model came from (`None`: from scratch), for `run.json`.
    pub model_dir: Option<PathBuf>,
    /// Save `OUT/checkpoint-N/` every this many updates (0: only on Ctrl-C).
    pub save_every: u64,
    /// `checkpoint-N/` directories kept (the newest; 0 keeps all).
    pub keep_checkpoints: usize,
    /// Continue the run in `out` from its newest checkpoint.
    pub resume: bool,
    /// Data parallelism: this process is one rank of `comm` (`mpirun -np N gpt1 finetune`);
    /// the ranks share each batch's examples, rank 0 alone writes the run directory.
    pub comm: Option<std::sync::Arc<dyn crate::dist::Collective>>,
    /// Where the model runs (the task head's few values stay on the host).
    pub device: Device,
}

/// The paper's fine-tuning settings (section 4.1): the one source of the defaults of
/// [`FinetuneOptions::new`] and of `gpt1 finetune`'s (and `evaluate`'s batch) flags.
#[derive(Clone, Copy, Debug)]
pub struct FinetuneDefaults {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub aux_lm: f32,
    pub seed: u64,
    pub eval_every: u64,
    pub warmup: f64,
    pub clf_dropout: f32,
    pub weight_decay: f32,
    pub clip: f32,
}

pub const FINETUNE: FinetuneDefaults = FinetuneDefaults {
    epochs: 3,
    batch: 32,
    lr: 6.25e-5,
    aux_lm: 0.5,
    seed: 0,
    eval_every: 0,
    warmup: 0.002,
    clf_dropout: 0.1,
    weight_decay: 0.01,
    clip: 1.0,
};

impl FinetuneOptions {
    /// The paper's settings ([`FINETUNE`]).
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        let f = FINETUNE;
        FinetuneOptions {
            data,
            out,
            epochs: f.epochs,
            batch: f.batch,
            lr: f.lr,
            aux_lm: f.aux_lm,
            max_len: None,
            seed: f.seed,
            max_steps: None,
            eval_every: f.eval_every,
            warmup: f.warmup,
            clf_dropout: f.clf_dropout,
            weight_decay: f.weight_decay,
            clip: f.clip,
            skip_bad_rows: false,
            progress: true,
            precision: Precision::Fp32,
            model_dir: None,
            save_every: 0,
            keep_checkpoints: 2,
            resume: false,
            comm: None,
            device: Device::Cpu,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FinetuneSummary {
    pub steps: u64,
    pub best_epoch: usize,
    /// The update after which the kept (best) checkpoint was evaluated.
    pub best_step: u64,
    pub best_dev: Option<Evaluation>,
    pub train_examples: usize,
    pub train_truncated: usize,
    pub skipped_rows: usize,
    pub best_dir: PathBuf,
}

/// Fine-tunes `model` on task `def` as `opts` says; keeps the best dev checkpoint in
/// `OUT/best/`.
pub fn finetune(
    model: Gpt,
    tok: &Tokenizer,
    def: &TaskDef,
    opts: &FinetuneOptions,
) -> Result<FinetuneSummary> {
    finetune_net(Net::Transformer(model), tok, def, opts)
}

/// [`finetune`] of either architecture (the LSTM baseline: its top state at the extract token
/// feeds the head, as the Transformer's does).
pub fn finetune_net(
    model: Net,
    tok: &Tokenizer,
    def: &TaskDef,
    opts: &FinetuneOptions,
) -> Result<FinetuneSummary> {
    match opts.device {
        Device::Cpu => finetune_on(model, tok, def, opts, Cpu::new(opts.precision)),
        // A GPU that is not there is said before anything is claimed or written.
        Device::Cuda(_) => finetune_on(model, tok, def, opts, opts.device.cuda(opts.precision)?),
    }
}

fn finetune_on<B: Backend>(
    model: Net,
    tok: &Tokenizer,
    def: &TaskDef,
    opts: &FinetuneOptions,
    backend: B,
) -> Result<FinetuneSummary> {
    if opts.batch == 0 || opts.epochs == 0 {
        let setting = if opts.batch == 0 { "batch" } else { "epochs" };
        return Err(Error::setting(setting, "must be at least 1"));
    }
    super::pretrain::finite_nonneg(&[
        ("lr", opts.lr),
        ("aux_lm", opts.aux_lm),
        ("weight_decay", opts.weight_decay),
        ("clip", opts.clip),
    ])?;
    if !(0.0..1.0).contains(&opts.clf_dropout) {
        return Err(Error::setting(
            "clf_dropout",
            format!("{} must be in [0, 1)", opts.clf_dropout),
        ));
    }
    // Rank 0 leads: it alone writes the run directory; the others wait for it where they read.
    let comm = opts.comm.as_deref();
    let lead = comm.is_none_or(|c| c.rank() == 0);
    let sync = || {
        if let Some(c) = comm {
            crate::dist::barrier(c);
        }
    };
    let model = match model {
        Net::Transformer(m) => Net::Transformer(with_special_tokens(m, tok, opts.seed)?),
        Net::Lstm(mut m) => {
            if m.config.vocab_size == tok.bpe_vocab_size() {
                m.grow_vocab(
                    tok.vocab_size() - m.config.vocab_size,
                    derive(opts.seed, stream::SPECIAL_TOKENS),
                );
            } else if m.config.vocab_size != tok.vocab_size() {
                return Err(Error::Vocab(format!(
                    "the LSTM has {} token embeddings, the tokenizer {} (+3 special): they are not the same vocabulary",
                    m.config.vocab_size,
                    tok.bpe_vocab_size()
                )));
            }
            Net::Lstm(m)
        }
    };
    let c = model.config();
    let (n_pos, width, params) = (c.n_positions(), c.width(), model.params());
    if let Some(m) = opts.max_len.filter(|&m| m > n_pos) {
        return Err(Error::setting(
            "max_len",
            format!("{m} exceeds the model's context of {n_pos} tokens; lower it"),
        ));
    }
    let max_len = opts.max_len.unwrap_or(n_pos);
    let train = read_split(def, &opts.data, "train", opts.skip_bad_rows)?;
    // No dev split is allowed (the last weights are kept); a broken one is an error.
    let dev = match read_split(def, &opts.data, "dev", opts.skip_bad_rows) {
        Ok(d) => Some(d),
        Err(Error::MissingSplit { .. }) => None,
        Err(e) => return Err(e),
    };
    let (train_p, train_truncated) = prepare(tok, &train.examples, max_len)?;
    let dev_p = match &dev {
        Some(d) => Some(prepare(tok, &d.examples, max_len)?.0),
        None => None,
    };
    let spec = FinetuneSpec {
        task: def.clone(),
        data: opts.data.clone(),
        train_hash: data_hash(&train_p),
        dev_hash: dev_p.as_deref().map(data_hash),
        model: opts.model_dir.clone(),
        model_hash: weights_hash(params),
        epochs: opts.epochs,
        batch: opts.batch,
        lr: opts.lr,
        aux_lm: opts.aux_lm,
        max_len,
        seed: opts.seed,
        max_steps: opts.max_steps,
        eval_every: opts.eval_every,
        warmup: opts.warmup,
        clf_dropout: opts.clf_dropout,
        weight_decay: opts.weight_decay,
        clip: opts.clip,
        precision: opts.precision,
    };
    // Sized for the largest example of either split (a dev question may have more options).
    let per_example = train_p
        .iter()
        .chain(dev_p.iter().flatten())
        .map(|e| e.t.features.iter().map(Vec::len).sum::<usize>())
        .max()
        .unwrap_or(1);
    let t_max = longest(&train_p).max(dev_p.as_deref().map_or(1, longest));
    let seqs = opts.batch.saturating_mul(per_example);
    // The device's free memory, or on the CPU the host's available memory.
    if let Some(free) = backend.free_memory().or_else(crate::sys::mem_available) {
        // Weights, gradients, Adam moments and one pass's activations, and on a GPU in bf16 the
        // products' bf16 scratch and the dev evaluations' pinned copies.
        let need = 16 * params.len() as u64
            + c.activation_bytes(seqs, t_max) as u64
            + c.bf16_bytes(opts.precision, seqs, t_max, dev_p.is_some()) as u64;
        if need > free {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            return Err(Error::setting(
                "batch",
                format!(
                    "{}: fine-tuning needs about {:.1} GiB of memory and {:.1} GiB are free on \
                     {}: lower --batch or --max-len",
                    opts.batch,
                    gib(need),
                    gib(free),
                    backend.describe()
                ),
            ));
        }
    }
    if let Some(c) = comm {
        // Every rank read the same data and model, with the same settings, or none starts.
        let timeout = crate::dist::startup_timeout()?;
        crate::dist::within(timeout, c.rank(), || {
            // The device's kind too (not its ordinal: each rank has its own GPU).
            let kind = if opts.device == Device::Cpu { "cpu" } else { "cuda" };
            crate::dist::check_same(c, "settings", &format!("{spec:?}, device {kind}"))
        })?;
    }
    // Never into a directory holding an earlier run or the user's files; one run at a time.
    let _lock = if opts.resume {
        let lock = if lead { Some(rundir::claim_existing(&opts.out)?) } else { None };
        // The leader has cleaned up after a killed run before the others look.
        sync();
        match rundir::load_spec::<FinetuneSpec>(&opts.out)? {
            None => return Err(Error::invalid(&opts.out, "--resume: no fine-tuning run here")),
            Some(run) => {
                if let Some((flag, have, want)) = run.differs(&spec) {
                    return Err(Error::invalid(
                        &opts.out,
                        format!(
                            "--{flag}: the run was started with {have}, this command asks for \
                             {want}; an exact resume needs the same"
                        ),
                    ));
                }
            }
        }
        lock
    } else {
        let lock = if lead {
            let lock = rundir::claim_new(&opts.out, rundir::RESUME_HINT)?;
            rundir::save_spec(&opts.out, &spec)?;
            Some(lock)
        } else {
            None
        };
        sync();
        lock
    };

    let head = Head::new(def.kind, width, def.n_out(), opts.seed);
    let task = TaskObjective::new(head, opts.aux_lm, opts.clf_dropout, opts.weight_decay);
    let mut trainer = Tuner::on(model, task, seqs, t_max, opts.weight_decay, backend);
    if let Some(c) = &opts.comm {
        match &mut trainer {
            Tuner::Transformer(t) => t.dist = Some(c.clone()),
            Tuner::Lstm(t, _) => t.dist = Some(c.clone()),
        }
    }
    let (mut step, mut best_epoch, mut best_step, mut best_score) = (0u64, 0usize, 0u64, None);
    if opts.resume
        && let Some((_, dir)) = finetune_state::latest(&opts.out)
    {
        let st = trainer.load_state(&dir, def)?;
        (step, best_epoch, best_step, best_score) =
            (st.step, st.best_epoch, st.best_step, st.best_score);
    }
    if let Some(c) = comm
        && opts.resume
    {
        // Every rank resumed the same checkpoint (a filesystem that is not shared, or stale
        // on one node, would give ranks other steps or weights).
        let (body, head) = trainer.host_weights();
        let desc = format!(
            "step {step}, best {best_score:?} at {best_step}, weights {}, head {}",
            crate::train::rundir::weights_hash(&body),
            crate::train::rundir::weights_hash(&head.w)
        );
        crate::dist::check_same(c, "resumed state", &desc)?;
    }
    let start = step;
    let mut metrics = rundir::MetricsLog::open(
        opts.out.join("metrics.jsonl"),
        lead,
        opts.resume.then_some(start),
    )?;
    let steps_per_epoch = train_p.len().div_ceil(opts.batch) as u64;
    let total =
        (steps_per_epoch * opts.epochs as u64).min(opts.max_steps.unwrap_or(u64::MAX)).max(1);
    let warmup = ((total as f64 * opts.warmup).ceil() as u64).max(1);
    let mut progress = crate::progress::Progress::new(total, opts.progress && lead);
    progress.bar.set_position(start);
    let best_dir = opts.out.join("best");
    let (started, mut seen) = (std::time::Instant::now(), 0usize);
    let mut best: Option<Evaluation> = None;
    let mut k = 0u64; // the position in the data order, to skip what a resume already did
    let drop_seed = derive(opts.seed, stream::FINETUNE_DROPOUT);
    for epoch in 0..opts.epochs {
        let batches = bucketed_batches(&train_p, opts.batch, derive(opts.seed, epoch as u64));
        for (bi, chunk) in batches.iter().enumerate() {
            if step >= total {
                break;
            }
            k += 1;
            if k <= start {
                continue;
            }
            let refs: Vec<&Prepared> = chunk.iter().map(|&i| &train_p[i]).collect();
            let b = batch(&refs);
            let lr = Schedule::WarmupLinear.lr(opts.lr, step, warmup, total);
            let s = trainer.step(&b, lr, opts.clip, derive(drop_seed, step), step + 1)?;
            step += 1;
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
            if let (Some(dp), true) = (&dev_p, end || due) {
                let ev = trainer.evaluate(def, dp, opts.batch)?;
                metrics.write(
                    serde_json::json!({"step": step, "epoch": epoch, "dev_score": ev.score, "dev_metric": ev.metric}),
                )?;
                progress.println(format!(
                    "step {step} (epoch {epoch}): dev {:?} {:.4}",
                    ev.metric, ev.score
                ));
                if best_score.is_none_or(|b| ev.score > b) {
                    if lead {
                        trainer.save_best(&best_dir, def, tok, max_len)?;
                    }
                    (best_epoch, best_step, best_score) = (epoch, step, Some(ev.score));
                    best = Some(Evaluation { predictions: Vec::new(), scores: Vec::new(), ..ev });
                }
            }
            // Every rank stops after the same step (a Ctrl-C reaches some ranks only).
            let stop = match comm {
                Some(c) => crate::dist::any(c, crate::interrupt::requested()),
                None => crate::interrupt::requested(),
            };
            if (opts.save_every > 0 && step % opts.save_every == 0 || stop) && step < total {
                let dir = opts.out.join(format!("checkpoint-{step}"));
                let state = LoopState { step, best_score, best_epoch, best_step, adam_t: [0; 3] };
                if lead {
                    trainer.save_state(&dir, def, tok, max_len, state)?;
                    rundir::prune_checkpoints(&opts.out, opts.keep_checkpoints)?;
                }
                sync();
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
    if best.is_none() && best_score.is_some() && lead {
        // The best was kept before a resume: its evaluation, again (deterministic).
        let dp = dev_p.as_deref().unwrap_or(&[]);
        let ev = trainer.evaluate_saved(&best_dir, def, dp, opts.batch)?;
        best = Some(Evaluation { predictions: Vec::new(), scores: Vec::new(), ..ev });
    }
    if best_score.is_none() && lead {
        trainer.save_best(&best_dir, def, tok, max_len)?;
    }
    if metrics.sync()? {
        crate::plot::curves_or_warn(metrics.path(), &opts.out.join("curves.png"), &def.name);
    }
    // The others return once the leader has written everything.
    sync();
    Ok(FinetuneSummary {
        steps: step,
        best_epoch,
        best_step,
        best_dev: best,
        train_examples: train_p.len(),
        train_truncated,
        skipped_rows: train.skipped,
        best_dir,
    })
}
