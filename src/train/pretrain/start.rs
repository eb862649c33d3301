//! Starting a pre-training run: every setting, input and memory need checked before the run
//! directory is touched (a run that cannot start leaves nothing behind), then the run claimed
//! anew or resumed exactly as it was started.

use super::options::{ModelSource, PretrainOptions, PretrainSpec};
use crate::backend::Device;
use crate::data::{Sampler, TokenData, WindowOrder};
use crate::dist::Collective;
use crate::error::{Error, Result};
use crate::kernels::rng::{derive, stream};
use crate::model::params::num_params;
use crate::model::{ArchConfig, Net};
use crate::sys::mem_available;
use crate::text::Tokenizer;
use crate::train::checkpoint::{self, TrainerState};
use crate::train::lm::load_checkpoint;
use crate::train::optim::AdamW;
use crate::train::rundir::{self, FileId, RESUME_HINT};
use std::path::{Path, PathBuf};

/// A run's checked settings and open inputs, the same on every rank.
pub(super) struct Ctx<'a> {
    pub opts: &'a PretrainOptions,
    pub comm: Option<&'a dyn Collective>,
    pub world: usize,
    /// Rank 0 leads: it alone writes the run directory, metrics and checkpoints.
    pub lead: bool,
    /// Sequences per pass.
    pub micro: usize,
    pub data: TokenData,
    pub val: Option<TokenData>,
    /// The tokenizer saved with every checkpoint, and its folder.
    pub tok_dir: Option<PathBuf>,
    pub tok: Option<Tokenizer>,
}

/// A started run: its lock (held by the leader), model and optimizer state (a resumed run's),
/// first step, and the bytes of its state and of one pass's activations.
pub(super) struct Started {
    pub _lock: Option<rundir::RunLock>,
    pub model: Net,
    pub opt: Option<AdamW>,
    pub start: u64,
    pub bytes: (u64, u64),
}

impl<'a> Ctx<'a> {
    /// Checks the ranks and the settings, then opens the data and the tokenizer.
    pub fn new(opts: &'a PretrainOptions) -> Result<Self> {
        let comm = opts.comm.as_deref();
        let (rank, world) = comm.map_or((0, 1), |c| (c.rank(), c.world()));
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
        let data = TokenData::open(&opts.data)?;
        let val = match &opts.val {
            Some(p) => Some(TokenData::open(p)?),
            None => None,
        };
        let tok_dir = opts.tokenizer.clone().or_else(|| {
            let d = opts.data.parent()?.join(crate::text::prepare::TOKENIZER_DIR);
            d.is_dir().then_some(d)
        });
        let tok = match &tok_dir {
            Some(d) => Some(Tokenizer::load(d, None)?),
            None => None,
        };
        // Data too short for one window (an empty shard) is refused here, before run.json is
        // written: a run that cannot take its first step leaves nothing to refuse it later.
        Sampler::new(&data, opts.seq, opts.sampling)?;
        if let Some(v) = &val {
            Sampler::new(v, opts.seq, WindowOrder::Sequential)?;
        }
        Ok(Ctx { opts, comm, world, lead: rank == 0, micro, data, val, tok_dir, tok })
    }

    /// Waits for every rank (nothing alone).
    pub fn sync(&self) {
        if let Some(c) = self.comm {
            crate::dist::barrier(c);
        }
    }

    /// What this command asks, as `run.json` records it, for a model of configuration `c`.
    fn spec(&self, c: &ArchConfig) -> Result<PretrainSpec> {
        let opts = self.opts;
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
            micro_batch: self.micro,
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
            tokenizer: self.tok_dir.clone(),
        })
    }

    /// The model as the run trains it (a dropout override applied), checked against the data
    /// and the memory: before claiming a new directory, after loading a resumed run's weights.
    fn ready(&self, model: &mut Net) -> Result<(u64, u64)> {
        if let Some(p) = self.opts.dropout {
            model.set_dropout(p)?;
        }
        check_inputs(&model.config(), self.opts, &self.data, self.val.as_ref())?;
        check_memory(&model.config(), self.opts, self.micro)
    }

    /// Claims a new run directory (the leader) and records the run in it.
    pub fn start_new(&self) -> Result<Started> {
        let opts = self.opts;
        if self.lead {
            rundir::check_new(&opts.out, RESUME_HINT)?;
        }
        let mut model = fresh_model(opts, self.micro)?;
        let bytes = self.ready(&mut model)?;
        let lock = if self.lead {
            let lock = rundir::claim_new(&opts.out, RESUME_HINT)?;
            rundir::save_spec(&opts.out, &self.spec(&model.config())?)?;
            Some(lock)
        } else {
            None
        };
        self.sync();
        Ok(Started { _lock: lock, model, opt: None, start: 0, bytes })
    }

    /// Resumes the run in `--out`: from its newest checkpoint (or `--resume-from`), or from its
    /// first step when it stopped before one; refused when this command asks for another run.
    pub fn resume(&self) -> Result<Started> {
        let opts = self.opts;
        let lock = if self.lead { Some(rundir::claim_existing(&opts.out)?) } else { None };
        // The leader has cleaned up after a killed run before the others look.
        self.sync();
        let spec = rundir::load_spec::<PretrainSpec>(&opts.out)?;
        if let Some(spec) = &spec {
            self.check_same_run(spec)?;
        }
        let found = match &opts.resume_from {
            Some(d) => Some(d.clone()),
            None => checkpoint::latest(&opts.out)?.map(|(_, d)| d),
        };
        let (model, opt, start, bytes) = match (found, &spec) {
            (Some(dir), _) => self.resume_checkpoint(&dir, spec.is_none())?,
            // Stopped before its first checkpoint: the run starts again from its first step,
            // with the recorded configuration (a dropout override of --init's included).
            (None, Some(spec)) => {
                let (m, bytes) = self.restart_recorded(spec)?;
                (m, None, 0, bytes)
            }
            (None, None) => {
                return Err(Error::invalid(
                    &opts.out,
                    "--resume: no run here (no run.json, no checkpoint); start without --resume",
                ));
            }
        };
        Ok(Started { _lock: lock, model, opt, start, bytes })
    }

    /// The run recorded in `spec` against what this command asks.
    fn check_same_run(&self, spec: &PretrainSpec) -> Result<()> {
        let opts = self.opts;
        let mut asked = self.spec(&spec.config)?;
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
        Ok(())
    }

    /// The model, optimizer and step of checkpoint `dir`; `unrecorded`: a run from before
    /// run.json, whose trainer state holds what it recorded.
    #[allow(clippy::type_complexity)]
    fn resume_checkpoint(
        &self,
        dir: &Path,
        unrecorded: bool,
    ) -> Result<(Net, Option<AdamW>, u64, (u64, u64))> {
        let opts = self.opts;
        let (mut model, opt, state) = load_checkpoint(dir, opts.weight_decay)?;
        if opts.resume_from.is_some() && self.lead {
            // What the run wrote after that checkpoint is written again as it goes on.
            discard_after(&opts.out, state.step, dir)?;
        }
        if unrecorded {
            check_state(opts, self.micro, &state, dir)?;
        }
        if state.step > opts.steps {
            return Err(Error::setting(
                "steps",
                format!("{}: {} is already at step {}", opts.steps, dir.display(), state.step),
            ));
        }
        let bytes = self.ready(&mut model)?;
        Ok((model, Some(opt), state.step, bytes))
    }

    /// The run's initial model again, with the configuration `spec` recorded.
    fn restart_recorded(&self, spec: &PretrainSpec) -> Result<(Net, (u64, u64))> {
        let opts = self.opts;
        let mut m = fresh_model(opts, self.micro)?;
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
        let bytes = self.ready(&mut m)?;
        Ok((m, bytes))
    }
}

/// A run from before run.json: the settings its trainer state recorded against this command's.
fn check_state(
    opts: &PretrainOptions,
    micro: usize,
    state: &TrainerState,
    dir: &Path,
) -> Result<()> {
    let want = (opts.seed, opts.batch, opts.seq, micro, opts.sampling, opts.precision);
    let have =
        (state.seed, state.batch, state.seq, state.micro_batch, state.sampling, state.precision);
    if want != have {
        return Err(Error::invalid(
            dir,
            format!(
                "the run was started with (seed, batch, seq, micro-batch, sampling, precision) = {have:?}, this command asks for {want:?}; an exact resume needs the same"
            ),
        ));
    }
    Ok(())
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
    // Weights, gradients, 2 Adam moments; with bf16 on the CPU and several passes per step,
    // each weight's bf16 panels too, in the two orientations its products read (the trainer
    // pins the weights for the step's passes).
    let keeps_panels = opts.precision == crate::backend::Precision::Bf16
        && opts.device == Device::Cpu
        && opts.batch > micro;
    let state_bytes = (if keeps_panels { 20 } else { 16 }) * c.params() as u64;
    let probs = matches!(opts.device, Device::Cuda(_));
    let act_bytes = c.activation_bytes(micro, opts.seq.min(c.n_positions()), probs) as u64;
    if let Some(avail) = mem_available()
        && state_bytes + act_bytes > avail
    {
        return Err(Error::setting(
            "batch",
            format!(
                "{}: the run needs about {:.1} GiB (weights, gradients and Adam moments{} {:.1} GiB; \
                 activations of {micro} × {} tokens {:.1} GiB) and {:.1} GiB are available: lower \
                 the micro-batch or the sequence length, or choose a smaller model",
                opts.batch,
                gib(state_bytes + act_bytes),
                if keeps_panels { ", bf16 panels" } else { "" },
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
