//! `demo`: the paper's claim in a few minutes on the built-in corpus.

use anyhow::{Context, Result};
use gpt1::demo::{DemoOptions, demo, markdown};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where everything goes: data, pre-training run, fine-tuning runs, report.md.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Seed of the model, the data order, dropout, the tasks' examples and the samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pre-training updates (16 × 128 tokens each).
    #[arg(long, default_value_t = DemoOptions::new(PathBuf::new()).pretrain_steps, value_parser = clap::value_parser!(u64).range(1..))]
    pretrain_steps: u64,
    /// Fine-tuning updates per task and variant.
    #[arg(long, default_value_t = DemoOptions::new(PathBuf::new()).finetune_steps, value_parser = clap::value_parser!(u64).range(1..))]
    finetune_steps: u64,
    /// Examples per fine-tuning update.
    #[arg(long, default_value_t = DemoOptions::new(PathBuf::new()).finetune_batch, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    finetune_batch: usize,
    /// Peak fine-tuning learning rate.
    #[arg(long, default_value_t = DemoOptions::new(PathBuf::new()).finetune_lr)]
    finetune_lr: f32,
    /// Train examples per book and task (dev: a third as many).
    #[arg(long, default_value_t = DemoOptions::new(PathBuf::new()).examples, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    examples: usize,
    /// Print one JSON line (tasks, samples, wall_s) instead of the report.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut o = DemoOptions::new(a.out.clone());
    (o.seed, o.pretrain_steps, o.finetune_steps, o.finetune_batch, o.examples) =
        (a.seed, a.pretrain_steps, a.finetune_steps, a.finetune_batch, a.examples);
    o.finetune_lr = a.finetune_lr;
    o.progress = !a.json;
    let r = demo(&o).context("the demo failed")?;
    if a.json {
        let js = serde_json::json!({"tasks": r.tasks, "samples": r.samples, "wall_s": r.wall_s});
        println!("{js}");
    } else {
        println!("{}", markdown(&r, &o));
        eprintln!("wrote {}/report.md", a.out.display());
    }
    Ok(())
}
