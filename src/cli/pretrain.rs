use anyhow::Result;
use gpt1::data::WindowOrder;
use gpt1::train::pretrain::PRETRAIN;
use gpt1::train::{ModelSource, PretrainOptions, PretrainSpec, Schedule, pretrain};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training tokens: an llm.c `.bin` shard or a `.npy` array (1-D stream or 2-D rows).
    #[arg(long, required_unless_present_any = ["resume", "resume_from"])]
    data: Option<PathBuf>,
    /// Validation tokens, evaluated every --eval-every steps and at the end.
    #[arg(long)]
    val: Option<PathBuf>,
    /// A preset (tiny, small, gpt1-mini, gpt1-small, gpt1) or a config.json, for a randomly
    /// initialised model; `gpt1*` have GPT-1's vocabulary.
    #[arg(long, conflicts_with = "init", required_unless_present_any = ["init", "resume", "resume_from"])]
    config: Option<String>,
    /// Start from the weights of a checkpoint directory.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Run directory: metrics.jsonl, checkpoint-STEP/, final/.
    #[arg(long)]
    out: PathBuf,
    /// Sequences per optimizer step [default: 64; on --resume, the run's].
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (at most the model's n_positions) [default: 512; on --resume, the run's].
    #[arg(long)]
    seq: Option<usize>,
    /// Sequences per forward/backward pass (gradients accumulate to --batch).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Total optimizer steps of the run [default: 100000; on --resume, the run's].
    #[arg(long)]
    steps: Option<u64>,
    /// Peak learning rate [default: 2.5e-4; on --resume, the run's].
    #[arg(long)]
    lr: Option<f32>,
    /// Linear warm-up steps [default: 2000; on --resume, the run's].
    #[arg(long)]
    warmup: Option<u64>,
    /// Learning-rate schedule after the warm-up [default: warmup-cosine; on --resume, the run's].
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Decoupled weight decay on matrices and embeddings (scaled by the learning rate) [default: 0.01; on --resume, the run's].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Global gradient-norm clipping (0 disables) [default: 1.0; on --resume, the run's].
    #[arg(long)]
    clip: Option<f32>,
    /// Overrides the config's embedding, attention and residual dropout.
    #[arg(long)]
    dropout: Option<f32>,
    /// Seed of the initial weights, the data order and the dropout masks [default: 0; on --resume, the run's].
    #[arg(long)]
    seed: Option<u64>,
    /// Random windows (the paper) or windows in order [default: random; on --resume, the run's].
    #[arg(long, value_enum)]
    sampling: Option<WindowOrder>,
    /// Evaluate on --val every K steps (0: only at the end).
    #[arg(long, default_value_t = PRETRAIN.eval_every)]
    eval_every: u64,
    /// Save RUN_DIR/checkpoint-STEP every K steps (0: only final/).
    #[arg(long, default_value_t = PRETRAIN.save_every)]
    save_every: u64,
    /// Continue the run in --out from its newest checkpoint, with the settings it was started
    /// with (run.json); a flag given here must repeat them.
    #[arg(long)]
    resume: bool,
    /// Continue from this checkpoint directory instead (implies --resume).
    #[arg(long)]
    resume_from: Option<PathBuf>,
    /// Keep the newest K checkpoint-STEP/ directories (0: all); final/ is always kept.
    #[arg(long, default_value_t = PRETRAIN.keep_checkpoints)]
    keep_checkpoints: usize,
    /// Stop after this many steps (saving checkpoint-N) while keeping the schedule of --steps.
    #[arg(long)]
    stop_at: Option<u64>,
    /// When the validation loss stays at the data's unigram entropy past warm-up (the model
    /// predicts token frequencies only): warn in the log and metrics.jsonl, or stop.
    #[arg(long, value_enum, default_value = "warn")]
    on_collapse: gpt1::train::collapse::OnCollapse,
    /// Validation windows evaluated each time [default: 64; on --resume, the run's].
    #[arg(long)]
    val_windows: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
    #[command(flatten)]
    sizes: super::SizeArgs,
    #[command(flatten)]
    lstm: super::LstmArgs,
    /// The tokenizer of the data, saved with every checkpoint (default: the `tokenizer/` folder
    /// `gpt1 prepare` wrote beside the shards, if any).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    // Under mpirun/srun: this process is one rank of a data-parallel run.
    let comm = gpt1::dist::connect()?;
    let resume = a.resume || a.resume_from.is_some();
    // On --resume the run's own settings are the defaults, so that `--out RUN --resume` alone
    // continues it; flags given anyway are compared with them by the library.
    let spec = if resume { gpt1::train::rundir::load_spec::<PretrainSpec>(&a.out)? } else { None };
    // Without run.json the data must be named (a run from before it); say which is missing.
    if resume && spec.is_none() && a.data.is_none() {
        anyhow::ensure!(
            a.out.is_dir(),
            "{}: --resume: no run here (the directory does not exist)",
            a.out.display()
        );
        anyhow::bail!(
            "{}: --resume: no run.json here; give --data (and the run's other settings) for a run \
             from before run.json, or start a new run without --resume",
            a.out.display()
        );
    }
    let model = match (&a.config, &a.init) {
        (Some(c), _) if a.lstm.arch == super::Arch::Lstm => {
            ModelSource::Lstm(a.lstm.config(&a.sizes.config(c)?)?)
        }
        (Some(c), _) => ModelSource::Config(a.sizes.config(c)?),
        (None, Some(dir)) => ModelSource::Init(dir.clone()),
        // --resume alone: the model comes from the checkpoint (or the recorded spec).
        (None, None) => match &spec {
            Some(s) => s.options(a.out.clone()).model,
            None => ModelSource::Init(a.out.join("final")),
        },
    };
    let mut o = match &spec {
        Some(s) => s.options(a.out.clone()),
        None => PretrainOptions::new(PathBuf::new(), model.clone(), a.out.clone()),
    };
    o.model = model;
    if let Some(d) = a.data {
        o.data = d;
    }
    if a.val.is_some() {
        o.val = a.val;
    }
    o.batch = a.batch.unwrap_or(o.batch);
    o.seq = a.seq.unwrap_or(o.seq);
    if a.micro_batch.is_some() {
        o.micro_batch = a.micro_batch;
    }
    o.steps = a.steps.unwrap_or(o.steps);
    o.lr = a.lr.unwrap_or(o.lr);
    o.warmup = a.warmup.unwrap_or(o.warmup);
    o.schedule = a.schedule.unwrap_or(o.schedule);
    o.weight_decay = a.weight_decay.unwrap_or(o.weight_decay);
    o.clip = a.clip.unwrap_or(o.clip);
    o.dropout = a.dropout;
    o.seed = a.seed.unwrap_or(o.seed);
    o.sampling = a.sampling.unwrap_or(o.sampling);
    o.val_windows = a.val_windows.unwrap_or(o.val_windows);
    o.eval_every = a.eval_every;
    o.save_every = a.save_every;
    o.keep_checkpoints = a.keep_checkpoints;
    o.resume = resume;
    o.resume_from = a.resume_from;
    o.stop_at = a.stop_at;
    o.on_collapse = a.on_collapse;
    o.progress = !a.quiet;
    if a.tokenizer.is_some() {
        o.tokenizer = a.tokenizer;
    }
    // The run's summary line says what runs the products.
    if let Some(p) = a.precision.precision {
        o.precision = p;
    }
    o.device = a.device.device;
    super::on_interrupt();
    o.comm = comm.clone();
    let res = pretrain(&o);
    if super::follower_done(&res, comm.as_deref(), "pre-training") {
        res?;
        return Ok(());
    }
    let s = res.map_err(|e| {
        let hint = match &e {
            gpt1::Error::Interrupted { .. } => {
                format!("stopped; continue with `gpt1 pretrain --out {} --resume`", o.out.display())
            }
            _ => "pre-training failed".to_string(),
        };
        anyhow::Error::new(e).context(hint)
    })?;
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
