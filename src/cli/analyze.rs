//! `analyze`: the paper's section 5 analyses, each a CSV, a Markdown table and a PNG figure.

use super::finetune::{TaskArgs, TrainFlags};
use anyhow::{Context, Result};
use gpt1::analysis::layers::{LayersOptions, layers};
use gpt1::model::checkpoint::load_model;
use gpt1::text::Tokenizer;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Figure 2 (left): fine-tune with K transferred blocks for each K; dev and train metric.
    Layers(LayersArgs),
}

#[derive(clap::Args, Debug)]
pub struct LayersArgs {
    /// The pre-trained checkpoint (HF layout).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    task: TaskArgs,
    /// Analysis directory: transfer-K/ runs, layers.csv, layers.md, layers.png.
    #[arg(long)]
    out: PathBuf,
    /// Tokenizer directory (default: the model directory's own vocabulary files).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The numbers of transferred blocks (default: 0 to the model's n_layer).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<usize>,
    /// Train examples the train metric is measured on (the first N of the split; 0: all).
    #[arg(long, default_value_t = 2000)]
    train_eval: usize,
    #[command(flatten)]
    train: TrainFlags,
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Layers(a) => {
            let def = a.task.resolve()?;
            let model =
                load_model(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
            let tok_dir = a.tokenizer.clone().unwrap_or_else(|| a.model.clone());
            let tok = Tokenizer::load(&tok_dir, None)
                .with_context(|| format!("loading the tokenizer from {}", tok_dir.display()))?;
            let ks = if a.layers.is_empty() {
                (0..=model.config.n_layer).collect()
            } else {
                a.layers.clone()
            };
            let opts = LayersOptions {
                layers: ks,
                train_eval: a.train_eval,
                finetune: a.train.options(a.task.data.clone(), a.out.clone()),
            };
            let points = layers(&model, &tok, &def, &opts).context("the layers analysis failed")?;
            for p in &points {
                println!("{}", serde_json::to_string(p)?);
            }
            eprintln!("wrote {}/layers.{{csv,md,png}}", a.out.display());
            Ok(())
        }
    }
}
