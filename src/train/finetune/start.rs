//! Starting a fine-tuning run: the settings, the model's vocabulary, the task's data, the
//! memory and the ranks checked before the run directory is touched, then the run claimed anew
//! or resumed (refused when this command asks for another run).

use super::options::{FinetuneOptions, FinetuneSpec, data_hash};
use crate::backend::{Backend, Device};
use crate::error::{Error, Result};
use crate::kernels::rng::{derive, stream};
use crate::model::Net;
use crate::tasks::batch::{Prepared, longest, prepare};
use crate::tasks::checkpoint::with_special_tokens;
use crate::tasks::readers::{TaskDef, read_split};
use crate::text::Tokenizer;
use crate::train::rundir::{self, weights_hash};

/// The task's examples as the run trains on them, what `run.json` records, and the sizes of a
/// batch.
pub(super) struct Inputs {
    pub train: Vec<Prepared>,
    /// Training examples `--max-len` cut, and rows `--skip-bad-rows` skipped.
    pub train_truncated: usize,
    pub skipped: usize,
    pub dev: Option<Vec<Prepared>>,
    pub spec: FinetuneSpec,
    pub max_len: usize,
    /// Sequences of a batch (examples × sequences per example) and its longest sequence.
    pub seqs: usize,
    pub t_max: usize,
}

/// Settings that cannot work, refused before anything is read.
pub(super) fn check_settings(opts: &FinetuneOptions) -> Result<()> {
    if opts.batch == 0 || opts.epochs == 0 || opts.max_steps == Some(0) {
        let setting = match () {
            _ if opts.batch == 0 => "batch",
            _ if opts.epochs == 0 => "epochs",
            _ => "max_steps",
        };
        return Err(Error::setting(setting, "must be at least 1"));
    }
    crate::train::pretrain::finite_nonneg(&[
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
    Ok(())
}

/// `model` with the tokenizer's special tokens (`_start_`, `_delimiter_`, `_classify_`) in its
/// vocabulary: added (drawn from `seed`) to a model that has only the BPE's.
pub(super) fn with_vocab(model: Net, tok: &Tokenizer, seed: u64) -> Result<Net> {
    Ok(match model {
        Net::Transformer(m) => Net::Transformer(with_special_tokens(m, tok, seed)?),
        Net::Lstm(mut m) => {
            if m.config.vocab_size == tok.bpe_vocab_size() {
                m.grow_vocab(
                    tok.vocab_size() - m.config.vocab_size,
                    derive(seed, stream::SPECIAL_TOKENS),
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
    })
}

/// Reads and prepares the task's splits for `model`, and the run's specification.
pub(super) fn read_inputs(
    model: &Net,
    tok: &Tokenizer,
    def: &TaskDef,
    opts: &FinetuneOptions,
) -> Result<Inputs> {
    let n_pos = model.config().n_positions();
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
        model_hash: weights_hash(model.params()),
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
    Ok(Inputs {
        train: train_p,
        train_truncated,
        skipped: train.skipped,
        dev: dev_p,
        spec,
        max_len,
        seqs: opts.batch.saturating_mul(per_example),
        t_max,
    })
}

/// The run against the device's free memory (on the CPU, the host's available memory).
pub(super) fn check_memory<B: Backend>(
    model: &Net,
    inp: &Inputs,
    opts: &FinetuneOptions,
    backend: &B,
) -> Result<()> {
    let c = model.config();
    if let Some(free) = backend.free_memory().or_else(crate::sys::mem_available) {
        // Weights, gradients, Adam moments and one pass's activations, and on a GPU in bf16 the
        // products' bf16 scratch and the dev evaluations' pinned copies.
        let need = 16 * model.params().len() as u64
            + c.activation_bytes(inp.seqs, inp.t_max, backend.keeps_attention_probs()) as u64
            + c.bf16_bytes(opts.precision, inp.seqs, inp.t_max, inp.dev.is_some()) as u64;
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
    Ok(())
}

/// Waits for every rank (nothing alone).
pub(super) fn sync(opts: &FinetuneOptions) {
    if let Some(c) = opts.comm.as_deref() {
        crate::dist::barrier(c);
    }
}

/// Rank 0 leads: it alone writes the run directory; the others wait for it where they read.
pub(super) fn leads(opts: &FinetuneOptions) -> bool {
    opts.comm.as_deref().is_none_or(|c| c.rank() == 0)
}

/// Checks that every rank read the same data and model with the same settings, then claims the
/// run directory: never one holding an earlier run or the user's files; one run at a time.
pub(super) fn claim(
    opts: &FinetuneOptions,
    spec: &FinetuneSpec,
) -> Result<Option<rundir::RunLock>> {
    if let Some(c) = opts.comm.as_deref() {
        let timeout = crate::dist::startup_timeout()?;
        crate::dist::within(timeout, c.rank(), || {
            // The device's kind too (not its ordinal: each rank has its own GPU).
            let kind = if opts.device == Device::Cpu { "cpu" } else { "cuda" };
            crate::dist::check_same(c, "settings", &format!("{spec:?}, device {kind}"))
        })?;
    }
    let lead = leads(opts);
    if opts.resume {
        let lock = if lead { Some(rundir::claim_existing(&opts.out)?) } else { None };
        // The leader has cleaned up after a killed run before the others look.
        sync(opts);
        match rundir::load_spec::<FinetuneSpec>(&opts.out)? {
            None => return Err(Error::invalid(&opts.out, "--resume: no fine-tuning run here")),
            Some(run) => {
                if let Some((flag, have, want)) = run.differs(spec) {
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
        Ok(lock)
    } else {
        let lock = if lead {
            let lock = rundir::claim_new(&opts.out, rundir::RESUME_HINT)?;
            rundir::save_spec(&opts.out, spec)?;
            Some(lock)
        } else {
            None
        };
        sync(opts);
        Ok(lock)
    }
}
