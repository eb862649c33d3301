//! Pre-training (section 4.1): a language model trained on contiguous windows of a token
//! corpus, resumable bitwise, on any device and any number of ranks.
//!
//! - `options.rs`: what a run is asked ([`PretrainOptions`], the paper's defaults
//!   [`PRETRAIN`]) and what `run.json` records of it ([`PretrainSpec`]);
//! - `start.rs`: the checks made before the run directory is touched, then a new run claimed
//!   or an existing one resumed;
//! - `run.rs`: the loop (steps, validation, metrics, checkpoints).

mod options;
mod run;
mod start;

pub use options::{
    ModelSource, PRETRAIN, PretrainDefaults, PretrainOptions, PretrainSpec, Summary,
};
pub(crate) use start::finite_nonneg;

/// Runs (or resumes) pre-training as `opts` says. Everything is checked before the run
/// directory is touched: a run that cannot start leaves nothing behind.
pub fn pretrain(opts: &PretrainOptions) -> crate::error::Result<Summary> {
    let ctx = start::Ctx::new(opts)?;
    let started = if opts.resume { ctx.resume()? } else { ctx.start_new()? };
    run::run(&ctx, started)
}
