//! Fine-tuning (section 3.2): the pre-trained body, a linear head on the extract states, and
//! the objective L2 + λ·L1 with the auxiliary language-model loss on the same sequences.
//!
//! - `options.rs`: what a run is asked ([`FinetuneOptions`], the paper's defaults
//!   [`FINETUNE`]), what `run.json` records ([`FinetuneSpec`]), what it answers;
//! - `start.rs`: the checks made before the run directory is touched, the task's data read
//!   and prepared, the run claimed or resumed;
//! - `learner.rs`: the body and head being fine-tuned, either architecture ([`Learner`], over
//!   [`crate::train::lm::LmTrainer`]);
//! - `run.rs`: the loop (epochs, steps, dev evaluation, the best checkpoint);
//! - `checkpoint.rs`: resumable checkpoints (moments and the loop's position).
//!
//! Batching, evaluation and fine-tuned checkpoints live in [`crate::tasks`]; the step is
//! [`crate::train::lm::LmTrainer::train_step`] ([`crate::train::Trainer::step`] for GPT-1).

mod checkpoint;
mod learner;
mod options;
mod run;
mod start;

pub use learner::Learner;
pub use options::{
    FINETUNE, FinetuneDefaults, FinetuneOptions, FinetuneSpec, FinetuneSummary, data_hash,
};

use crate::backend::{Backend, Cpu, Device};
use crate::error::Result;
use crate::model::{Gpt, Net};
use crate::tasks::readers::TaskDef;
use crate::text::Tokenizer;

/// The model a fine-tuning run starts from: the weights of `checkpoint`, or a fresh one of
/// `scratch` (its vocabulary already the tokenizer's), initialised from `seed` as every run
/// is; with `transfer_layers`, the Transformer's first k blocks kept and the rest made anew
/// (section 5's layers-transferred analysis). One place for the command line and Python.
pub fn starting_model(
    checkpoint: Option<&std::path::Path>,
    scratch: Option<&crate::model::ArchConfig>,
    seed: u64,
    transfer_layers: Option<usize>,
) -> Result<Net> {
    use crate::kernels::rng::{derive, stream};
    let mut model = match (scratch, checkpoint) {
        (Some(c), _) => Net::init(c, derive(seed, stream::INIT)),
        (None, Some(dir)) => Net::load(dir)?,
        (None, None) => {
            return Err(crate::Error::setting("model", "give a checkpoint, or start from scratch"));
        }
    };
    if let Some(k) = transfer_layers {
        let Net::Transformer(m) = &mut model else {
            return Err(crate::Error::setting("transfer_layers", "applies to the Transformer"));
        };
        if k > m.config.n_layer {
            let n = m.config.n_layer;
            return Err(crate::Error::setting(
                "transfer_layers",
                format!("{k} exceeds the model's {n} layers"),
            ));
        }
        m.keep_layers(k, derive(seed, stream::INIT));
    }
    Ok(model)
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

/// Checks everything, claims (or resumes) the run directory, then runs the loop on `backend`.
fn finetune_on<B: Backend>(
    model: Net,
    tok: &Tokenizer,
    def: &TaskDef,
    opts: &FinetuneOptions,
    backend: B,
) -> Result<FinetuneSummary> {
    start::check_settings(opts)?;
    let model = start::with_vocab(model, tok, opts.seed)?;
    let inputs = start::read_inputs(&model, tok, def, opts)?;
    start::check_memory(&model, &inputs, opts, &backend)?;
    let _lock = start::claim(opts, &inputs.spec)?;
    run::run(model, tok, def, opts, inputs, backend)
}
