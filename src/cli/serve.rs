//! `serve`: the OpenAI-compatible HTTP server (docs/serving.md).

use anyhow::{Context, Result};
use gpt1::serve::{ServeOptions, serve};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory: pre-trained (config.json + model.safetensors) or fine-tuned (a
    /// `gpt1 finetune` run's best/, which also answers /v1/classify).
    #[arg(long, value_parser = super::model_dir)]
    model: PathBuf,
    /// Tokenizer directory (default: the model directory's vocabulary files, else GPT-1's BPE).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The model's id in the API (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Rows of one scoring pass at most: log-likelihood requests waiting together share a pass.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Requests waiting for the model at most; more are answered 503.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Choices per prompt (`n`) at most.
    #[arg(long, default_value_t = 16)]
    max_n: usize,
    /// Request bodies above this many MiB are answered 413.
    #[arg(long, default_value_t = 16)]
    max_request_mb: usize,
    /// Requests must carry `Authorization: Bearer KEY` (default: no key; also $GPT1_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
}

pub fn run(a: Args) -> Result<()> {
    let o = ServeOptions {
        model: a.model.clone(),
        tokenizer: a.tokenizer,
        name: a.name,
        host: a.host,
        port: a.port,
        precision: a.precision.value(),
        device: a.device.device,
        max_batch: a.max_batch,
        max_queue: a.max_queue,
        max_n: a.max_n,
        max_body: a.max_request_mb.saturating_mul(1 << 20),
        log_requests: true,
        api_key: a.api_key.or_else(|| std::env::var("GPT1_API_KEY").ok()).filter(|k| !k.is_empty()),
    };
    serve(o, |addr| {
        // On stdout, flushed: scripts and tests read the port from this line.
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })
    .with_context(|| format!("serving {}", a.model.display()))
}
