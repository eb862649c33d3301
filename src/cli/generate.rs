//! `generate`: text from a prompt, streamed as it comes.

use anyhow::{Context, Result, bail, ensure};
use gpt1::generate::{
    GenerateOptions, Sampling, StopReason, cut_at_stop as cut, generate, held_back,
};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "prompt_file", "ids"])))]
pub struct Args {
    /// Checkpoint directory (config.json + model.safetensors), or a hub id (ORG/NAME) in the local
    /// Hugging Face cache.
    #[arg(long, value_parser = super::model_dir)]
    model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    prompt: Option<String>,
    /// A file holding the prompt text.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// The prompt as token ids (separated by spaces or commas); no tokenizer needed.
    #[arg(long)]
    ids: Option<String>,
    /// Tokenizer directory (default: the model directory's vocabulary files).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// New tokens per sample at most.
    #[arg(long, default_value_t = 128)]
    max_new: usize,
    /// Always the most likely token (same as --temperature 0).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    /// Softmax temperature of the sampling (0: greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Sample among the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the smallest set of tokens whose probability reaches P (1: all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Divide (multiply, when negative) the logit of every token already in the sequence (1: off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Stop a sample when its text contains this (repeatable); the text ends before it.
    #[arg(long)]
    stop: Vec<String>,
    /// Seed of the draws; sample i is the same for any --num.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples from the same prompt, decoded together.
    #[arg(long, default_value_t = 1)]
    num: usize,
    /// One JSON line per sample: ids (generated only), text, stop_reason, tokens_per_s.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<u32>().with_context(|| format!("--ids: {x:?} is not a token id")))
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    let (model, found) =
        super::model_and_tokenizer(&a.model, a.tokenizer.as_deref(), &a.precision, None)?;
    let tok = match (&a.ids, found) {
        (_, Ok(t)) => Some(t),
        (Some(_), Err(_)) => None,
        (None, Err(e)) => {
            return Err(e.context("no tokenizer for --prompt (pass --tokenizer DIR, or --ids)"));
        }
    };
    ensure!(
        a.stop.iter().all(|s| !s.is_empty()),
        "--stop '': an empty stop string would end every sample at its first token; give text"
    );
    ensure!(a.stop.is_empty() || tok.is_some(), "--stop needs a tokenizer to read the text");
    let prompt_text = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => Some(p.clone()),
        // A prompt longer than any context is still refused before it fills the memory.
        (None, Some(f)) => Some(gpt1::io::read_text(f, 64 << 20)?),
        (None, None) => None,
    };
    let prompt = match (&prompt_text, &a.ids, &tok) {
        (Some(text), _, Some(t)) => t.encode(text)?,
        (None, Some(ids), _) => parse_ids(ids)?,
        _ => bail!("give --prompt, --prompt-file or --ids"),
    };
    let sampling = Sampling {
        temperature: if a.greedy { 0.0 } else { a.temperature },
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
    };
    let opts =
        GenerateOptions { max_new: a.max_new, sampling, seed: a.seed, num: a.num, logprobs: None };
    // Every flag, the prompt and the device are checked before anything is printed.
    opts.check(&model.config, &prompt)?;
    let gpu = match a.device.device {
        gpt1::backend::Device::Cpu => None,
        dev => {
            let gpu = dev.cuda(a.precision.value())?;
            let c = &model.config;
            let t = prompt.len().saturating_add(a.max_new).min(c.n_positions);
            let need = gpt1::model::decoding_bytes(c, a.precision.value(), a.num, t);
            gpt1::backend::check_fits(&gpu, need, "generation (lower --num)")?;
            Some(model.to_backend(gpu))
        }
    };
    // Streaming (one sample, text mode): print each completed word as it comes.
    let stream = !a.json && a.num == 1 && tok.is_some();
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    if stream && let Some(p) = &prompt_text {
        print!("{}", p.trim_end());
        stdout.lock().flush().ok();
    }
    let t0 = std::time::Instant::now();
    let mut on_token = |_, ids: &[u32]| {
        let Some(t) = &tok else { return false };
        let Ok(text) = t.decode(ids) else { return false };
        let (shown, stopped) = cut(&text, &a.stop);
        let word_end = t.token(*ids.last().unwrap_or(&0)).is_some_and(|s| s.ends_with("</w>"));
        // Hold back a tail that may be the start of a stop string: the final text cuts it.
        let safe = if stopped { shown.len() } else { shown.len() - held_back(&shown, &a.stop) };
        if stream && (word_end || stopped) && safe > printed {
            let sep = if printed == 0 { " " } else { "" };
            print!("{sep}{}", &shown[printed..safe]);
            stdout.lock().flush().ok();
            printed = safe;
        }
        stopped
    };
    let (gens, timing) = match &gpu {
        None => generate(&model, &prompt, &opts, &mut on_token)?,
        Some(on_gpu) => generate(on_gpu, &prompt, &opts, &mut on_token)?,
    };
    let secs = t0.elapsed().as_secs_f64();
    for g in &gens {
        let text = match &tok {
            Some(t) => Some(cut(&t.decode(&g.ids)?, &a.stop).0),
            None => None,
        };
        let reason = match g.stop {
            StopReason::MaxNew => "max_new",
            StopReason::StopString => "stop",
            StopReason::Context => "context",
        };
        if a.json {
            let js = serde_json::json!({
                "ids": g.ids, "text": text, "stop_reason": reason,
                "tokens_per_s": g.ids.len() as f64 / secs,
            });
            println!("{js}");
        } else if stream {
            let rest = text.as_deref().unwrap_or("");
            if rest.len() > printed {
                print!("{}{}", if printed == 0 { " " } else { "" }, &rest[printed..]);
            }
            println!();
            eprintln!(
                "[{} tokens, stopped: {reason}, {:.1} tokens/s]",
                g.ids.len(),
                g.ids.len() as f64 / secs
            );
        } else {
            match &text {
                Some(t) => println!("{t}"),
                None => {
                    println!("{}", g.ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "))
                }
            }
            eprintln!("[{} tokens, stopped: {reason}]", g.ids.len());
        }
    }
    if !a.json {
        eprintln!(
            "[prefill {:.0} ms, {:.1} ms per decode step]",
            timing.prefill_s * 1e3,
            timing.decode_s * 1e3 / timing.decode_steps.max(1) as f64
        );
    }
    Ok(())
}
