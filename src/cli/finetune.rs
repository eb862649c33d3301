//! `finetune` and `evaluate`.

use anyhow::{Context, Result, bail};
use gpt1::model::Config;
use gpt1::tasks::checkpoint::{Finetuned, load_finetuned};
use gpt1::tasks::evaluate::{evaluate, predict_to_file};
use gpt1::tasks::readers::{self, Custom, Shape, TaskDef, custom_task, task};
use gpt1::tasks::stats::split_stats;
use gpt1::train::finetune::{FINETUNE, FinetuneOptions, finetune_net};
use std::path::PathBuf;

/// The columns of a user's own task (`--task custom`).
#[derive(clap::Args, Debug)]
pub struct CustomArgs {
    /// The task's shape.
    #[arg(long = "type", value_enum)]
    shape: Option<Shape>,
    /// Column of the (first) text; for multiple choice the context.
    #[arg(long)]
    text_a: Option<String>,
    /// Column of the second text; for multiple choice the question.
    #[arg(long)]
    text_b: Option<String>,
    /// Columns of the candidates (multiple choice), comma-separated.
    #[arg(long, value_delimiter = ',')]
    choices: Vec<String>,
    /// Column of the label (class, score, or right candidate).
    #[arg(long, default_value = "label")]
    label: String,
}

/// A task and its data, as `finetune` and `data stats` take them: a known task by name, or
/// `custom` from the column options.
#[derive(clap::Args, Debug)]
pub struct TaskArgs {
    #[arg(long, help = readers::help(), long_help = readers::long_help())]
    pub task: String,
    #[command(flatten)]
    custom: CustomArgs,
    /// The task's data directory (e.g. RTE's folder of train.tsv, dev.tsv, test.tsv).
    #[arg(long)]
    pub data: PathBuf,
}

impl TaskArgs {
    pub fn resolve(&self) -> Result<TaskDef> {
        resolve_task(&self.task, &self.data, &self.custom)
    }
}

fn resolve_task(name: &str, data: &std::path::Path, c: &CustomArgs) -> Result<TaskDef> {
    if name != "custom" {
        return Ok(task(name)?);
    }
    let (Some(shape), Some(text_a)) = (c.shape, c.text_a.clone()) else {
        bail!(
            "--task custom needs --type and --text-a (and --text-b, --choices, --label as the type requires)"
        );
    };
    Ok(custom_task(
        data,
        Custom {
            shape,
            text_a,
            text_b: c.text_b.clone(),
            choices: c.choices.clone(),
            label: c.label.clone(),
        },
    )?)
}

#[derive(clap::Args, Debug)]
pub struct FinetuneArgs {
    /// Pre-trained checkpoint directory (HF layout).
    #[arg(long, required_unless_present = "from_scratch", value_parser = super::model_dir)]
    model: Option<PathBuf>,
    #[command(flatten)]
    task: TaskArgs,
    /// Run directory: metrics.jsonl, curves.png, best/ (the best dev checkpoint).
    #[arg(long)]
    out: PathBuf,
    /// Tokenizer directory (default: the model directory's own vocabulary files).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    train: TrainFlags,
    /// Train the same architecture from random initialisation (the "no pre-training" ablation).
    #[arg(long, requires = "config")]
    from_scratch: bool,
    /// With --from-scratch: a preset (tiny, small, gpt1-mini, gpt1-small, gpt1) or a config.json.
    #[arg(long)]
    config: Option<String>,
    /// Keep the embeddings and the first K pre-trained blocks, re-initialise the rest.
    #[arg(long)]
    transfer_layers: Option<usize>,
    /// With --from-scratch, the architecture (an LSTM checkpoint given to --model is found by
    /// its config.json).
    #[command(flatten)]
    lstm: super::LstmArgs,
}

/// The fine-tuning settings, shared by `finetune` and the analyses that fine-tune.
#[derive(clap::Args, Debug)]
pub struct TrainFlags {
    /// Passes over the training split.
    #[arg(long, default_value_t = FINETUNE.epochs)]
    epochs: usize,
    /// Examples per update (dev evaluations go this many at a time too).
    #[arg(long, default_value_t = FINETUNE.batch)]
    pub batch: usize,
    /// Peak learning rate (linear warm-up over 0.2 % of the updates, then linear decay).
    #[arg(long, default_value_t = FINETUNE.lr)]
    lr: f32,
    /// λ of the auxiliary language-model loss (0 disables it).
    #[arg(long, default_value_t = FINETUNE.aux_lm)]
    aux_lm: f32,
    /// Context length for the task's inputs (default: the model's).
    #[arg(long)]
    max_len: Option<usize>,
    /// Seed of the head, the batch order and the dropout masks.
    #[arg(long, default_value_t = FINETUNE.seed)]
    pub seed: u64,
    /// Stop after this many updates (a dev evaluation at the end).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Also evaluate dev every N updates (keeping the best checkpoint); default: each epoch's end.
    #[arg(long, default_value_t = FINETUNE.eval_every)]
    eval_every: u64,
    /// Skip (and count) malformed rows of the task files instead of stopping.
    #[arg(long)]
    skip_bad_rows: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Save RUN_DIR/checkpoint-STEP every K updates, for --resume (0: only on Ctrl-C).
    #[arg(long, default_value_t = 0)]
    save_every: u64,
    /// Keep the newest K checkpoint-STEP/ directories (0: all).
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// Continue the run in --out from its newest checkpoint: the same command, plus --resume
    /// (a changed setting is refused, naming it).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    pub precision: super::PrecisionArg,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// A fine-tuned checkpoint: a finetune run directory (its best/) or the checkpoint itself.
    #[arg(long, value_parser = super::model_dir)]
    model: PathBuf,
    /// The task (optional: the checkpoint records it; given, it must match).
    #[arg(long)]
    task: Option<String>,
    /// The task's data directory (the one it was fine-tuned on, or another with the same files).
    #[arg(long)]
    data: PathBuf,
    /// The split to evaluate (train, dev, test; MNLI also dev_mismatched; for a GLUE task the
    /// NAME of a labelled NAME.tsv beside them).
    #[arg(long, default_value = "dev")]
    split: String,
    /// Examples per evaluation pass.
    #[arg(long, default_value_t = FINETUNE.batch)]
    pub batch: usize,
    /// Skip (and count) malformed rows of the task files instead of stopping.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A fine-tuned checkpoint: a finetune run directory (its best/) or the checkpoint itself.
    #[arg(long, value_parser = super::model_dir)]
    model: PathBuf,
    /// The task (optional: the checkpoint records it; given, it must match).
    #[arg(long)]
    task: Option<String>,
    /// The task's data directory (the one it was fine-tuned on, or another with the same files).
    #[arg(long)]
    data: PathBuf,
    /// The split to predict (test by default: labels are not needed).
    #[arg(long, default_value = "test")]
    split: String,
    /// Examples per evaluation pass.
    #[arg(long, default_value_t = FINETUNE.batch)]
    pub batch: usize,
    /// Output TSV (index, prediction); `-` for standard output. An existing file is refused
    /// unless --force.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing --out file (never one of the command's inputs).
    #[arg(long)]
    force: bool,
    /// Add one column per class (or candidate) with its probability (the head's softmax).
    #[arg(long)]
    probabilities: bool,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A fine-tuned checkpoint: a finetune run directory (its best/) or the checkpoint itself.
    #[arg(long, value_parser = super::model_dir)]
    model: PathBuf,
    /// The directory to write: new, empty, or an earlier export (replaced whole); a directory
    /// holding other files is refused.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Examples, labels, input lengths and truncation per split of a task.
    Stats(StatsArgs),
    /// The built-in tasks as a Markdown table: shape, head, labels, metric, files.
    Tasks,
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Tokenizer directory, for token lengths (default: GPT-1's built-in BPE).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The context inputs must fit.
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Skip (and count) malformed rows of the task files instead of stopping.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Loads a fine-tuned checkpoint (a run directory means its `best/`), checking `--task`
/// against the task it was trained on.
fn load_checked(dir: &std::path::Path, task: Option<&str>) -> Result<Finetuned> {
    let best = dir.join("best");
    let dir = if !dir.join("task.json").exists() && best.join("task.json").exists() {
        best.as_path()
    } else {
        dir
    };
    let ft = load_finetuned(dir).with_context(|| format!("loading {}", dir.display()))?;
    if let Some(t) = task {
        anyhow::ensure!(
            t.eq_ignore_ascii_case(&ft.task.name),
            "--task {t}: {} was fine-tuned on {}; drop --task or pick the matching checkpoint",
            dir.display(),
            ft.task.name
        );
    }
    Ok(ft)
}

pub fn run_predict(a: PredictArgs) -> Result<()> {
    // Refused before any work: an existing file (without --force), a directory.
    let out = gpt1::io::Output::new(&a.out, a.force)?;
    let mut ft = load_checked(&a.model, a.task.as_deref())?;
    ft.model.set_backend(a.precision.backend());
    ft.device = a.device.device;
    // Under mpirun/srun the ranks share the batches; rank 0 writes the file.
    ft.comm = gpt1::dist::connect()?;
    let comm = ft.comm.clone();
    let res = predict_to_file(&ft, &a.data, &a.split, a.batch, &out, a.probabilities);
    if super::follower_done(&res, comm.as_deref(), "prediction") {
        res?;
        return Ok(());
    }
    let n = res?;
    eprintln!("wrote {n} predictions to {}", out.display());
    Ok(())
}

pub fn run_export(a: ExportArgs) -> Result<()> {
    let out = gpt1::tasks::export::check_export_dir(&a.out)?;
    let ft = load_checked(&a.model, None)?;
    gpt1::tasks::export::export_double_heads(&ft, &out)
        .with_context(|| format!("exporting to {}", a.out.display()))?;
    let n = gpt1::tasks::export::summed_sequences(&ft);
    eprintln!(
        "wrote {} (OpenAIGPTDoubleHeadsModel{}); gpt1_task.json says how to read the logits",
        a.out.display(),
        if n > 1 { ", the two orders' logits summed" } else { "" }
    );
    Ok(())
}

pub fn run_data(c: DataCommand) -> Result<()> {
    let a = match c {
        DataCommand::Stats(a) => a,
        DataCommand::Tasks => {
            print!("{}", readers::markdown_table());
            return Ok(());
        }
    };
    let def = a.task.resolve()?;
    let tok = super::tokenizer(a.tokenizer.as_deref(), None, None, None)?;
    let js = split_stats(&def, &a.task.data, Some(&tok), a.max_len, a.skip_bad_rows)?;
    if a.json {
        println!("{js}");
    } else {
        print!("{}", gpt1::tasks::stats::text(&js));
    }
    Ok(())
}

pub fn run_finetune(a: FinetuneArgs) -> Result<()> {
    let def = a.task.resolve()?;
    let vocab = match (&a.model, a.from_scratch) {
        (Some(m), false) => Some(gpt1::model::ArchConfig::load(m)?.vocab_size()),
        _ => None,
    };
    let tok = super::tokenizer(a.tokenizer.as_deref(), a.model.as_deref(), vocab, None)?;
    let scratch = if a.from_scratch {
        let mut c = Config::from_name_or_file(a.config.as_deref().unwrap_or("gpt1"))?;
        c.vocab_size = tok.vocab_size();
        Some(match a.lstm.arch {
            super::Arch::Lstm => gpt1::model::ArchConfig::Lstm(a.lstm.config(&c)?),
            super::Arch::Transformer => gpt1::model::ArchConfig::Transformer(c),
        })
    } else {
        let dir = a.model.as_ref().context("--model CKPT_DIR is needed unless --from-scratch")?;
        anyhow::ensure!(
            a.lstm.arch != super::Arch::Lstm || gpt1::model::lstm::is_lstm(dir),
            "--arch lstm: {} is a Transformer checkpoint (an LSTM one is found by its \
             config.json; --arch applies to --from-scratch)",
            dir.display()
        );
        None
    };
    let checkpoint = if a.from_scratch { None } else { a.model.as_deref() };
    let model = gpt1::train::finetune::starting_model(
        checkpoint,
        scratch.as_ref(),
        a.train.seed,
        a.transfer_layers,
    )
    .with_context(|| match checkpoint {
        Some(d) => format!("loading {}", d.display()),
        None => "making the model".to_string(),
    })?;
    // Under mpirun/srun: this process is one rank of a data-parallel run.
    let comm = gpt1::dist::connect()?;
    let mut o = a.train.options(a.task.data, a.out);
    o.model_dir = if a.from_scratch { None } else { a.model.clone() };
    o.comm = comm.clone();
    super::on_interrupt();
    let res = finetune_net(model, &tok, &def, &o);
    if super::follower_done(&res, comm.as_deref(), "fine-tuning") {
        res?;
        return Ok(());
    }
    let s = res.map_err(|e| {
        let hint = match &e {
            gpt1::Error::Interrupted { .. } => {
                "stopped; continue with the same command and --resume".to_string()
            }
            _ => "fine-tuning failed".to_string(),
        };
        anyhow::Error::new(e).context(hint)
    })?;
    println!("{}", serde_json::to_string(&s)?);
    Ok(())
}

impl TrainFlags {
    /// The library's options for a run on `data` into `out`.
    pub fn options(&self, data: PathBuf, out: PathBuf) -> FinetuneOptions {
        let mut o = FinetuneOptions::new(data, out);
        o.epochs = self.epochs;
        o.batch = self.batch;
        o.lr = self.lr;
        o.aux_lm = self.aux_lm;
        o.max_len = self.max_len;
        o.seed = self.seed;
        o.max_steps = self.max_steps;
        o.eval_every = self.eval_every;
        o.skip_bad_rows = self.skip_bad_rows;
        o.progress = !self.quiet;
        o.precision = self.precision.get();
        o.save_every = self.save_every;
        o.keep_checkpoints = self.keep_checkpoints;
        o.resume = self.resume;
        o.device = self.device.device;
        o
    }
}

pub fn run_evaluate(a: EvaluateArgs) -> Result<()> {
    let mut ft = load_checked(&a.model, a.task.as_deref())?;
    ft.model.set_backend(a.precision.backend());
    ft.device = a.device.device;
    // Under mpirun/srun the ranks share the batches; rank 0 prints.
    ft.comm = gpt1::dist::connect()?;
    let comm = ft.comm.clone();
    let res = evaluate(&ft, &a.data, &a.split, a.batch, a.skip_bad_rows);
    if super::follower_done(&res, comm.as_deref(), "evaluation") {
        res?;
        return Ok(());
    }
    let ev = res?;
    if a.json {
        let js = serde_json::json!({
            "task": ft.task.name,
            "split": a.split,
            "n": ev.examples,
            "metric": ev.metric,
            "score": ev.score,
            "metrics": ev.metrics(),
        });
        println!("{js}");
    } else {
        let all: Vec<String> = ev.metrics().iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("{} {}: {} examples, {}", ft.task.name, a.split, ev.examples, all.join(", "));
    }
    Ok(())
}
