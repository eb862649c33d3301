use anyhow::{Context, Result};
use gpt1::data::Sampling;
use gpt1::train::pretrain::PRETRAIN;
use gpt1::train::{ModelSource, PretrainOptions, Schedule, pretrain};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training tokens: an llm.c `.bin` shard or a `.npy` array (1-D stream or 2-D rows).
    #[arg(long)]
    data: PathBuf,
    /// Validation tokens, evaluated every --eval-every steps and at the end.
    #[arg(long)]
    val: Option<PathBuf>,
    /// A preset (tiny, small, gpt1-mini, gpt1-small, gpt1) or a config.json, for a randomly
    /// initialised model; `gpt1*` have GPT-1's vocabulary.
    #[arg(long, conflicts_with = "init", required_unless_present_any = ["init", "resume"])]
    config: Option<String>,
    /// Start from the weights of a checkpoint directory.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Run directory: metrics.jsonl, checkpoint-STEP/, final/.
    #[arg(long)]
    out: PathBuf,
    /// Sequences per optimizer step.
    #[arg(long, default_value_t = PRETRAIN.batch)]
    batch: usize,
    /// Tokens per sequence (at most the model's n_positions).
    #[arg(long, default_value_t = PRETRAIN.seq)]
    seq: usize,
    /// Sequences per forward/backward pass (gradients accumulate to --batch).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Total optimizer steps of the run.
    #[arg(long, default_value_t = PRETRAIN.steps)]
    steps: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = PRETRAIN.lr)]
    lr: f32,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = PRETRAIN.warmup)]
    warmup: u64,
    /// Learning-rate schedule after the warm-up.
    #[arg(long, value_enum, default_value_t = PRETRAIN.schedule)]
    schedule: Schedule,
    /// Decoupled weight decay on matrices and embeddings (scaled by the learning rate).
    #[arg(long, default_value_t = PRETRAIN.weight_decay)]
    weight_decay: f32,
    /// Global gradient-norm clipping (0 disables).
    #[arg(long, default_value_t = PRETRAIN.clip)]
    clip: f32,
    /// Overrides the config's embedding, attention and residual dropout.
    #[arg(long)]
    dropout: Option<f32>,
    /// Seed of the initial weights, the data order and the dropout masks.
    #[arg(long, default_value_t = PRETRAIN.seed)]
    seed: u64,
    /// Random windows (the paper) or windows in order.
    #[arg(long, value_enum, default_value_t = PRETRAIN.sampling)]
    sampling: Sampling,
    /// Evaluate on --val every K steps (0: only at the end).
    #[arg(long, default_value_t = PRETRAIN.eval_every)]
    eval_every: u64,
    /// Save RUN_DIR/checkpoint-STEP every K steps (0: only final/).
    #[arg(long, default_value_t = PRETRAIN.save_every)]
    save_every: u64,
    /// Continue from the latest checkpoint in --out up to --steps.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps (saving checkpoint-N) while keeping the schedule of --steps.
    #[arg(long)]
    stop_at: Option<u64>,
    /// Validation windows evaluated each time.
    #[arg(long, default_value_t = PRETRAIN.val_windows)]
    val_windows: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    sizes: super::SizeArgs,
    /// The tokenizer of the data, saved with every checkpoint (default: the `tokenizer/` folder
    /// `gpt1 prepare` wrote beside the shards, if any).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let model = match (&a.config, &a.init) {
        (Some(c), _) => ModelSource::Config(a.sizes.config(c)?),
        (None, Some(dir)) => ModelSource::Init(dir.clone()),
        // --resume alone: the model comes from the checkpoint.
        (None, None) => ModelSource::Init(a.out.join("final")),
    };
    let mut o = PretrainOptions::new(a.data, model, a.out);
    o.val = a.val;
    o.batch = a.batch;
    o.seq = a.seq;
    o.micro_batch = a.micro_batch;
    o.steps = a.steps;
    o.lr = a.lr;
    o.warmup = a.warmup;
    o.schedule = a.schedule;
    o.weight_decay = a.weight_decay;
    o.clip = a.clip;
    o.dropout = a.dropout;
    o.seed = a.seed;
    o.sampling = a.sampling;
    o.eval_every = a.eval_every;
    o.save_every = a.save_every;
    o.resume = a.resume;
    o.stop_at = a.stop_at;
    o.val_windows = a.val_windows;
    o.progress = !a.quiet;
    o.tokenizer = a.tokenizer;
    // The run's summary line says what runs the products.
    o.precision = a.precision.precision;
    let s = pretrain(&o).context("pre-training failed")?;
    let mut line = format!("step {}", s.step);
    if let Some(l) = s.loss {
        line += &format!("  loss {l:.4}");
    }
    if let Some(v) = s.val_loss {
        line += &format!("  val_loss {v:.4} (ppl {:.2})", v.exp());
    }
    eprintln!("{line}\nsaved {}", s.final_dir.display());
    Ok(())
}
