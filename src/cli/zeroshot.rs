//! `zero-shot`: the paper's zero-shot heuristics with a pre-trained language model.

use anyhow::{Context, Result};
use gpt1::text::Mode;
use gpt1::zeroshot::{DEFAULT_BATCH, ZeroShotTask, zero_shot_with};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pre-trained checkpoint directory (config.json + model.safetensors).
    #[arg(long, value_parser = super::model_dir)]
    model: PathBuf,
    /// The task: cola, sst2, race, storycloze, dprd (DPR) or wsc (WSC273).
    #[arg(long)]
    task: String,
    /// The task's data directory (dprd and wsc: also the data file itself).
    #[arg(long)]
    data: PathBuf,
    /// The split to score (default: dev; test for dprd and wsc).
    #[arg(long)]
    split: Option<String>,
    /// Tokenizer directory (default: the model directory's vocabulary files).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Tokenizer pipeline (default: the one saved with the vocabulary; else original for
    /// GPT-1's own vocabulary, hf for any other).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Write one JSON line per example: index, scores (one per candidate), prediction; `-` for
    /// standard output. An existing file is refused unless --force.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing --out file (never one of the command's inputs).
    #[arg(long)]
    force: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
}

pub fn run(a: Args) -> Result<()> {
    let task = ZeroShotTask::parse(&a.task)?;
    // Refused before any work: an existing file (without --force), a directory, the data read.
    let out = a.out.as_deref().map(|o| gpt1::io::Output::new(o, a.force)).transpose()?;
    if let Some(o) = &out {
        let inputs: Vec<PathBuf> = match std::fs::read_dir(&a.data) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => vec![a.data.clone()],
        };
        o.check_not_input(&inputs)?;
    }
    let split = a.split.clone().unwrap_or_else(|| task.default_split().to_string());
    let (model, tok) =
        super::model_and_tokenizer(&a.model, a.tokenizer.as_deref(), &a.precision, a.mode)?;
    let tok = tok?;
    // Under mpirun/srun the ranks share the batches of pairs; rank 0 prints and writes (its bar
    // counts its own share, scaled to the whole).
    let comm = gpt1::dist::connect()?;
    let c = comm.as_deref();
    let (lead, world) = c.map_or((true, 1), |c| (c.rank() == 0, c.world()));
    let bar = gpt1::progress::bar(0, !a.json && lead);
    // At most `--batch` rows of the model's context at a time.
    let (b, t) = (a.batch, model.config.n_positions);
    let gpu = matches!(a.device.device, gpt1::backend::Device::Cuda(_));
    let need = gpt1::model::inference_bytes(&model.config, model.backend.precision(), b, t, gpu);
    let r = crate::on_device!(model, a.device.device, need = need, |m| zero_shot_with(
        m,
        &tok,
        task,
        &a.data,
        &split,
        a.batch,
        c,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position((done * world).min(total) as u64);
        }
    ));
    bar.finish_and_clear();
    if super::follower_done(&r, c, "zero-shot") {
        r?;
        return Ok(());
    }
    let r = r.with_context(|| format!("zero-shot {} on {}", task.name(), a.data.display()))?;
    if let Some(out) = &out {
        let mut body = String::new();
        for e in &r.examples {
            body.push_str(&serde_json::to_string(e)?);
            body.push('\n');
        }
        out.write(body.as_bytes())?;
        if !a.json {
            eprintln!("wrote {} predictions to {}", r.examples.len(), out.display());
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let mut all: Vec<String> = r.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        if let Some(t) = r.threshold {
            all.push(format!("threshold {t:.4}"));
        }
        all.push(format!("{} scored by a fallback (docs/zeroshot.md)", r.fallbacks));
        all.push(format!("{} with a context cut to fit", r.truncated));
        println!("{} {}: {} examples, {}", r.task, r.split, r.n, all.join(", "));
    }
    Ok(())
}
