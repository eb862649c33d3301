use anyhow::{Context, Result, ensure};
use gpt1::model::ArchConfig;
use gpt1::model::Config;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Training throughput (tokens/s), step time, MFU and peak memory.
    Train(TrainArgs),
    /// Fine-tuning and evaluation throughput (examples/s).
    Finetune(TrainArgs),
    /// Generation speed with the KV cache (greedy; one sample, or `--num` together): tokens/s,
    /// prefill, per-step decode.
    Generate(GenerateArgs),
    /// The kernel lab: the CPU and its flags, each product of a gpt1 step (and an LSTM time
    /// step) in fp32 and every bf16 version this CPU runs (GFLOP/s), micro-kernel peaks, memory
    /// bandwidth, decode rate.
    Kernels(KernelArgs),
    /// Log-likelihood requests through `gpt1 serve` (loopback HTTP) at several concurrencies,
    /// beside the same scoring in-process: requests/s, tokens/s and their ratio.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A preset (tiny, small, gpt1-mini, gpt1-small, gpt1) or a config.json; random weights,
    /// GPT-1's vocabulary.
    #[arg(long, default_value = "small")]
    config: String,
    /// Requests per measurement, each one prompt.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Concurrent clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// The server's --max-batch, and the in-process scoring's batch.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    #[command(flatten)]
    precision: super::PrecisionArg,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    /// Timed runs per figure (the median is reported), after one untimed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// A preset (tiny, small, gpt1-mini, gpt1-small, gpt1) or a config.json.
    #[arg(long)]
    config: String,
    /// Prompt tokens.
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    /// New tokens.
    #[arg(long, default_value_t = 128)]
    new: usize,
    /// Samples decoded together from the prompt (`generate --num`): each step's products then
    /// have that many rows.
    #[arg(long, default_value_t = 1)]
    num: usize,
    /// Timed rounds (the median is reported), after one untimed.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A preset (tiny, small, gpt1-mini, gpt1-small, gpt1) or a config.json.
    #[arg(long)]
    config: String,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    seq: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// The matrix-product peak MFU divides by, in GFLOP/s (default: measured at start with
    /// this library's product at the run's precision on the same threads).
    #[arg(long)]
    peak_gflops: Option<f64>,
    #[command(flatten)]
    sizes: super::SizeArgs,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
    #[command(flatten)]
    lstm: super::LstmArgs,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// The configuration of a benchmark, with its sizes checked.
fn checked(a: &TrainArgs) -> Result<Config> {
    let config = a.sizes.config(&a.config)?;
    ensure!(
        a.seq <= config.n_positions,
        "--seq {} exceeds n_positions {}",
        a.seq,
        config.n_positions
    );
    ensure!(a.steps > 0 && a.batch > 0 && a.seq > 0, "--steps, --batch and --seq must be positive");
    Ok(config)
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Kernels(a) => {
            ensure!(a.runs >= 1, "--runs must be at least 1");
            let r = gpt1::bench::kernels::kernels(a.runs);
            if a.json {
                println!("{}", serde_json::to_string(&r).context("the report as JSON")?);
            } else {
                print!("{}", gpt1::bench::kernels::text(&r));
            }
            Ok(())
        }
        Command::Generate(a) => {
            let config = Config::from_name_or_file(&a.config)?;
            ensure!(
                a.prompt_len > 0 && a.new > 0 && a.num > 0 && a.rounds > 0,
                "--prompt-len, --new, --num and --rounds must be positive"
            );
            ensure!(
                a.prompt_len.saturating_add(a.new) <= config.n_positions,
                "--prompt-len {} + --new {} exceed n_positions {}",
                a.prompt_len,
                a.new,
                config.n_positions
            );
            let shape = gpt1::bench::GenerateShape {
                prompt_len: a.prompt_len,
                new: a.new,
                num: a.num,
                rounds: a.rounds,
            };
            let r =
                gpt1::bench::generate(&a.config, config, shape, a.precision.get(), a.device.device)
                    .with_context(|| format!("bench generate on {}", a.device.device))?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} prompt {} + {} new × {} on {} threads: {:.1} tokens/s, prefill {:.0} ms, decode {:.1} ms/step{}, {:.0} % of the read bandwidth (median of the rounds, the read {:.1} GB/s)",
                    r.config,
                    r.prompt_len,
                    r.new,
                    r.num,
                    r.threads,
                    r.tokens_per_s,
                    r.prefill_ms,
                    r.decode_ms_per_token,
                    if r.decode_team { " (spinning team)" } else { "" },
                    100.0 * r.bandwidth_fraction,
                    r.bandwidth_gbs
                );
            }
            Ok(())
        }
        Command::Serve(a) => serve(a),
        Command::Train(a) => {
            let config = checked(&a)?;
            let arch = match a.lstm.arch {
                super::Arch::Transformer => ArchConfig::Transformer(config),
                super::Arch::Lstm => ArchConfig::Lstm(a.lstm.config(&config)?),
            };
            let (p, peak) = (a.precision.get(), a.peak_gflops);
            let dev = a.device.device;
            let r = gpt1::bench::train(
                &a.config, arch, a.batch, a.seq, a.steps, a.warmup, peak, p, dev,
            )
            .with_context(|| format!("bench train on {dev}"))?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let on = match dev {
                    gpt1::backend::Device::Cpu => format!("{} threads", r.threads),
                    _ => r.device.clone(),
                };
                println!(
                    "{} {}x{} on {on}: {:.0} tokens/s, step {:.0} ms (min {:.0}, max {:.0}), {:.1} GFLOP/s, MFU {:.1}%, peak RSS {:.0} MiB",
                    r.config,
                    r.batch,
                    r.seq,
                    r.tokens_per_s,
                    r.step_ms.median,
                    r.step_ms.min,
                    r.step_ms.max,
                    r.gflops,
                    100.0 * r.mfu,
                    r.peak_rss_mib
                );
            }
            Ok(())
        }
        Command::Finetune(a) => {
            let config = checked(&a)?;
            ensure!(
                a.lstm.arch == super::Arch::Transformer,
                "bench finetune measures the Transformer's fine-tuning step only"
            );
            let r = gpt1::bench::finetune(
                &a.config,
                config,
                a.batch,
                a.seq,
                a.steps,
                a.warmup,
                a.precision.get(),
                a.device.device,
            )
            .with_context(|| format!("bench finetune on {}", a.device.device))?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} {}x{} on {} threads: fine-tuning {:.1} examples/s (step {:.0} ms), evaluation {:.1} examples/s, peak RSS {:.0} MiB",
                    r.config,
                    r.batch,
                    r.seq,
                    r.threads,
                    r.train_examples_per_s,
                    r.train_step_ms.median,
                    r.eval_examples_per_s,
                    r.peak_rss_mib
                );
            }
            Ok(())
        }
    }
}

/// `bench serve`: the server's throughput beside in-process scoring.
fn serve(a: ServeArgs) -> Result<()> {
    let config = gpt1::model::Config::from_name_or_file(&a.config)?;
    let r = gpt1::bench::serve(
        &a.config,
        config,
        a.requests,
        a.prompt_len,
        &a.concurrency,
        a.max_batch,
        a.precision.value(),
    )
    .context("bench serve")?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{} on {} threads, {} requests of {} tokens, passes of {}: in-process {:.2} requests/s ({:.0} tokens/s)",
        r.config,
        r.threads,
        r.requests,
        r.prompt_len,
        r.max_batch,
        r.in_process.requests_per_s,
        r.in_process.tokens_per_s
    );
    for run in &r.runs {
        println!(
            "  {:8} concurrency {:3}: {:.2} requests/s, {:.0} tokens/s, {:.2}x in-process",
            run.style,
            run.concurrency,
            run.rate.requests_per_s,
            run.rate.tokens_per_s,
            run.vs_in_process
        );
    }
    Ok(())
}
