//! Argument parsing and dispatch; one file per subcommand.

mod analyze;
mod bench;
mod demo;
mod finetune;
mod generate;
mod plot;
mod pretrain;
mod score;
mod serve;
mod text;
mod zeroshot;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "gpt1",
    version,
    about = "GPT-1 pre-training and fine-tuning on the CPU",
    args_override_self = true
)]
pub struct Cli {
    /// Worker threads (default: all cores; at most 8 per core). Results are bitwise the same
    /// for any value.
    #[arg(long, global = true, alias = "workers")]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The paper's claim in a few minutes: pre-train on built-in books, fine-tune two tasks
    /// with and without pre-training, print the table and samples.
    Demo(demo::Args),
    /// Pre-train a language model on token shards.
    Pretrain(pretrain::Args),
    /// Continue a prompt (KV cache; greedy or sampled), streaming the text.
    Generate(generate::Args),
    /// Perplexity of text files with sliding windows of the context.
    Perplexity(score::PerplexityArgs),
    /// Per-token log-probabilities and perplexity of token sequences.
    Score(score::Args),
    /// Fine-tune a pre-trained model on a task.
    Finetune(finetune::FinetuneArgs),
    /// Evaluate a fine-tuned model on a split of its task.
    Evaluate(finetune::EvaluateArgs),
    /// Write a fine-tuned model's predictions for a split.
    Predict(finetune::PredictArgs),
    /// Export a fine-tuned checkpoint with its trained head for transformers
    /// (OpenAIGPTDoubleHeadsModel).
    Export(finetune::ExportArgs),
    /// Zero-shot task heuristics of the pre-trained language model alone (paper, section 5).
    ZeroShot(zeroshot::Args),
    /// Task data: statistics per split, and the built-in tasks.
    #[command(subcommand)]
    Data(finetune::DataCommand),
    /// Tokenizer training.
    #[command(subcommand)]
    Tokenizer(text::TokenizerCommand),
    /// Token ids of a text (or of each line of a file).
    Tokenize(text::TokenizeArgs),
    /// Text of token ids.
    Detokenize(text::DetokenizeArgs),
    /// Tokenize a corpus into train.bin / val.bin shards.
    Prepare(text::PrepareArgs),
    /// Training curves (loss, dev score, learning rate) of a run as PNG.
    Plot(plot::Args),
    /// The paper's analyses (section 5): CSV, Markdown table and PNG figure.
    #[command(subcommand)]
    Analyze(analyze::Command),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::Command),
    /// An OpenAI-compatible HTTP server: completions with log-probabilities, streaming, the
    /// tokenizer, and a fine-tuned model's classifier (docs/serving.md).
    Serve(serve::Args),
}

/// `--model`: a directory, or a hub id (`ORG/NAME[@REVISION]`) whose snapshot is in the local
/// Hugging Face cache (`gpt1::hub`).
pub fn model_dir(s: &str) -> std::result::Result<std::path::PathBuf, String> {
    gpt1::hub::resolve(std::path::Path::new(s)).map_err(|e| e.to_string())
}

/// The tokenizer of a command: `--tokenizer DIR` when given; else the model directory's
/// vocabulary files; else GPT-1's built-in BPE when the model's vocabulary is GPT-1's (or there
/// is no model).
pub fn tokenizer(
    explicit: Option<&std::path::Path>,
    model_dir: Option<&std::path::Path>,
    vocab: Option<usize>,
    mode: Option<gpt1::text::Mode>,
) -> Result<gpt1::text::Tokenizer> {
    use gpt1::text::Tokenizer;
    match explicit {
        Some(d) => Tokenizer::load(d, mode)
            .with_context(|| format!("loading the tokenizer from {}", d.display())),
        None => Ok(Tokenizer::load_or_gpt1(model_dir, vocab, mode)?),
    }
}

/// A checkpoint on the CPU at `--precision`, and its tokenizer (see [`tokenizer`]; an error
/// the caller may tolerate, as `generate --ids` does).
pub fn model_and_tokenizer(
    model: &std::path::Path,
    tokenizer_dir: Option<&std::path::Path>,
    precision: &PrecisionArg,
    mode: Option<gpt1::text::Mode>,
) -> Result<(gpt1::model::Gpt, Result<gpt1::text::Tokenizer>)> {
    let mut m = gpt1::model::checkpoint::load_model(model)
        .with_context(|| format!("loading {}", model.display()))?;
    m.backend = precision.backend();
    let tok = tokenizer(tokenizer_dir, Some(model), Some(m.config.vocab_size), mode);
    Ok((m, tok))
}

/// nanoGPT-style overrides of a preset's or config.json's sizes.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct SizeArgs {
    /// Override the number of blocks.
    #[arg(long)]
    pub n_layer: Option<usize>,
    /// Override the model width.
    #[arg(long)]
    pub n_embd: Option<usize>,
    /// Override the number of attention heads.
    #[arg(long)]
    pub n_head: Option<usize>,
    /// Override the context length.
    #[arg(long)]
    pub n_positions: Option<usize>,
    /// Override the vocabulary size.
    #[arg(long)]
    pub vocab_size: Option<usize>,
}

impl SizeArgs {
    /// `spec` (a preset or a config.json) with the overrides applied.
    pub fn config(&self, spec: &str) -> Result<gpt1::model::Config> {
        let mut c = gpt1::model::Config::from_name_or_file(spec)?;
        for (dst, v) in [
            (&mut c.n_layer, self.n_layer),
            (&mut c.n_embd, self.n_embd),
            (&mut c.n_head, self.n_head),
            (&mut c.n_positions, self.n_positions),
            (&mut c.vocab_size, self.vocab_size),
        ] {
            if let Some(v) = v {
                *dst = v;
            }
        }
        c.validate().map_err(|m| anyhow::anyhow!("--config {spec} with the overrides: {m}"))?;
        Ok(c)
    }
}

/// The architecture: GPT-1's Transformer, or the paper's LSTM baseline (Table 5).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Transformer,
    Lstm,
}

/// `--arch` and the LSTM's sizes.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct LstmArgs {
    /// The model: GPT-1's Transformer, or the paper's LSTM baseline (its vocabulary and
    /// embedding width from --config and the size flags).
    #[arg(long, value_enum, default_value_t = Arch::Transformer)]
    pub arch: Arch,
    /// Hidden units of each LSTM layer (the paper: 2048).
    #[arg(long, default_value_t = 2048)]
    pub lstm_hidden: usize,
    /// LSTM layers (the paper: 1).
    #[arg(long, default_value_t = 1)]
    pub lstm_layers: usize,
}

impl LstmArgs {
    /// The LSTM with the vocabulary, embedding width and context of `c`.
    pub fn config(&self, c: &gpt1::model::Config) -> Result<gpt1::model::lstm::LstmConfig> {
        let mut l = gpt1::model::lstm::LstmConfig::new(
            c.vocab_size,
            c.n_embd,
            self.lstm_hidden,
            self.lstm_layers,
        );
        l.n_positions = c.n_positions;
        l.validate().map_err(|m| anyhow::anyhow!("--arch lstm: {m}"))?;
        Ok(l)
    }
}

/// `$body` with `$m` bound to `&$model` on `$device`: the CPU model as loaded, or a copy
/// uploaded to the GPU at the model's precision (the body is compiled for each backend).
/// `$need` bytes (weights, activations, scratch) must fit the GPU's free memory first, or on
/// the CPU what they add to the loaded weights the host's available memory.
#[macro_export]
macro_rules! on_device {
    ($model:expr, $device:expr, need = $need:expr, |$m:ident| $body:expr) => {
        match $device {
            gpt1::backend::Device::Cpu => {
                // The weights are already in memory; the rest is allocated by the body.
                let rest = ($need as u64).saturating_sub(4 * $model.params.len() as u64);
                gpt1::backend::check_host(rest, "one batch's activations")?;
                let $m = &$model;
                $body
            }
            dev => {
                let gpu = dev.cuda($model.backend.precision())?;
                let (need, free) =
                    ($need as u64, gpt1::backend::Backend::free_memory(&gpu).unwrap_or(u64::MAX));
                anyhow::ensure!(
                    need < free,
                    "the model's weights and one batch's activations ({} MiB) do not fit the {} \
                     MiB free on {dev}: lower --batch",
                    need >> 20,
                    free >> 20
                );
                let g = $model.to_backend(gpu);
                let $m = &g;
                $body
            }
        }
    };
}

/// Under a launcher, after a data-parallel run: a rank that failed ends the job (the others
/// wait for it in a collective; an interrupt is every rank's and is saved, so not that); true
/// for ranks other than 0, which print nothing and return the result as it is.
pub fn follower_done<T>(
    res: &gpt1::Result<T>,
    comm: Option<&dyn gpt1::dist::Collective>,
    what: &str,
) -> bool {
    let Some(c) = comm else { return false };
    if let Err(e) = res
        && !matches!(e, gpt1::Error::Interrupted { .. })
    {
        eprintln!("error: rank {} of {}: {what} failed: {e}", c.rank(), c.world());
        c.abort(1);
    }
    c.rank() > 0
}

/// `--device`, on the commands that run on a GPU.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DeviceArg {
    /// Where to run: cpu, cuda (the launcher's local rank, else GPU 0) or cuda:N. The CUDA
    /// driver, NVRTC and cuBLAS are loaded at run time.
    #[arg(long, default_value = "cpu")]
    pub device: gpt1::backend::Device,
}

/// `--precision`, on every command that runs the model.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct PrecisionArg {
    /// Matrix products in fp32 (the default), or in bf16 with fp32 accumulation; the weights,
    /// LayerNorm, softmax and the loss stay fp32 (docs/precision.md). [default: fp32; a resumed
    /// run keeps its own]
    #[arg(long, value_enum)]
    pub precision: Option<gpt1::backend::Precision>,
}

impl PrecisionArg {
    /// The precision asked for, fp32 when not given.
    pub fn value(&self) -> gpt1::backend::Precision {
        self.precision.unwrap_or(gpt1::backend::Precision::Fp32)
    }

    /// The CPU backend at this precision; says on stderr what runs the products when not fp32.
    pub fn backend(&self) -> gpt1::backend::Cpu {
        use gpt1::backend::Backend;
        let c = gpt1::backend::Cpu::new(self.value());
        if self.value() != gpt1::backend::Precision::Fp32 {
            eprintln!("precision: {}", c.describe());
        }
        c
    }

    /// The precision, said on stderr as [`PrecisionArg::backend`] says it.
    pub fn get(&self) -> gpt1::backend::Precision {
        self.backend();
        self.value()
    }
}

/// Ctrl-C or SIGTERM: the first asks training to stop after its step (it saves a checkpoint and
/// says how to resume); a second stops at once (the last checkpoint on disk is whole: every
/// checkpoint is written to a temporary name and renamed). A process has one handler: the
/// first call installs it and later calls (a command that trains several runs, as `analyze
/// ablations` does) keep it.
pub fn on_interrupt() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(install_interrupt_handler);
}

fn install_interrupt_handler() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let r = ctrlc::set_handler(|| {
        use std::io::Write;
        // The request first: stderr may be a pipe that the same Ctrl-C closed (`| tee`).
        if COUNT.fetch_add(1, Ordering::SeqCst) == 0 {
            gpt1::interrupt::request();
            let msg = "\nstopping after this step (press Ctrl-C again to stop now)";
            let _ = writeln!(std::io::stderr(), "{msg}");
        } else {
            let _ = writeln!(std::io::stderr(), "\nstopped; the last checkpoint on disk is intact");
            std::process::exit(130);
        }
    });
    if let Err(e) = r {
        eprintln!("warning: Ctrl-C will stop at once (no handler: {e})");
    }
}

pub fn run(cli: Cli) -> Result<()> {
    // Paths are recorded as text in run.json, checkpoints and reports.
    if let Some(a) = std::env::args_os().find(|a| a.to_str().is_none()) {
        anyhow::bail!(
            "argument {a:?} is not valid UTF-8: gpt1 records paths in its JSON files as text; \
             rename the file or folder"
        );
    }
    if let Some(n) = cli.threads {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        anyhow::ensure!(
            (1..=8 * cores).contains(&n),
            "--threads {n}: give 1 to {} (8 per core on this machine's {cores}); more threads \
             than that only add overhead",
            8 * cores
        );
    }
    // The command's own thread is a worker of the pool (below), so it gets the main thread's
    // stack size rather than the 2 MiB that pool threads get by default.
    let mut pool = rayon::ThreadPoolBuilder::new().stack_size(8 << 20);
    if let Some(n) = cli.threads {
        pool = pool.num_threads(n);
    }
    pool.build_global().context("starting the thread pool")?;
    let world = gpt1::dist::launched_world();
    let parallel = matches!(
        cli.cmd,
        Command::Pretrain(_)
            | Command::Finetune(_)
            | Command::Evaluate(_)
            | Command::Predict(_)
            | Command::Score(_)
            | Command::Perplexity(_)
            | Command::ZeroShot(_)
    );
    if world > 1 && !parallel {
        // N copies of the same command would each do the whole work (and race for --out).
        anyhow::bail!(
            "this process is one of {world} started by a launcher (mpirun, srun): only `gpt1 \
             pretrain`, `finetune`, `evaluate`, `predict`, `score`, `perplexity` and `zero-shot` \
             run data-parallel; run this command as one process"
        );
    }
    // A compute command runs on one of the pool's workers: each kernel's parallel loop is then
    // forked and joined inside the pool, where a loop started from outside it wakes a worker
    // and puts the calling thread to sleep and back, per op (prefill at gpt1 size 46 -> 38 ms,
    // fine-tuning 4 % faster, 2 threads). Commands that park a thread while others compute
    // (the server's listener and clients) stay outside: a parked worker would leave their
    // kernels one thread short, and none with `--threads 1`.
    let parks = matches!(cli.cmd, Command::Serve(_) | Command::Bench(bench::Command::Serve(_)));
    if parks { dispatch(cli.cmd) } else { gpt1::kernels::on_pool(move || dispatch(cli.cmd)) }
}

fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Pretrain(a) => pretrain::run(a),
        Command::Score(a) => score::run(a),
        Command::Perplexity(a) => score::perplexity(a),
        Command::Generate(a) => generate::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Tokenize(a) => text::tokenize(a),
        Command::Finetune(a) => finetune::run_finetune(a),
        Command::Evaluate(a) => finetune::run_evaluate(a),
        Command::Predict(a) => finetune::run_predict(a),
        Command::Export(a) => finetune::run_export(a),
        Command::ZeroShot(a) => zeroshot::run(a),
        Command::Data(c) => finetune::run_data(c),
        Command::Tokenizer(c) => text::tokenizer(c),
        Command::Detokenize(a) => text::detokenize(a),
        Command::Prepare(a) => text::prepare_cmd(a),
        Command::Plot(a) => plot::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Analyze(c) => analyze::run(c),
        Command::Serve(a) => serve::run(a),
    }
}
