//! `analyze`: the paper's section 5 analyses, each a CSV, a Markdown table and a PNG figure.

use super::finetune::{TaskArgs, TrainFlags};
use anyhow::{Context, Result};
use gpt1::analysis::layers::{LayersOptions, layers};
use gpt1::model::checkpoint::load_model;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Figure 2 (left): fine-tune with K transferred blocks for each K; dev and train metric.
    Layers(LayersArgs),
    /// Figure 2 (right): every checkpoint of a pre-training run on the zero-shot heuristics,
    /// normalised between chance (0) and a reference (1).
    ZeroShot(ZeroShotArgs),
}

#[derive(clap::Args, Debug)]
pub struct ZeroShotArgs {
    /// A `gpt1 pretrain` run directory (its checkpoint-N/ and final/).
    #[arg(long)]
    run: PathBuf,
    /// Tasks, comma-separated: cola, sst2, race, storycloze, dprd, wsc.
    #[arg(long, value_delimiter = ',', default_value = "cola,sst2,dprd,storycloze")]
    tasks: Vec<String>,
    /// The data folder: each task's files under its usual subfolder (glue/CoLA, glue/SST-2, race,
    /// storycloze, winograd/dpr, winograd/wsc).
    #[arg(long)]
    data: PathBuf,
    /// Tokenizer directory (default: the run's final/ vocabulary files).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A task's reference score, TASK=VALUE (repeatable; default: GPT-1's fine-tuned result in
    /// the paper, 1.0 for the Winograd sets).
    #[arg(long = "reference", value_parser = parse_reference)]
    references: Vec<(String, f64)>,
    /// Rows per forward pass.
    #[arg(long, default_value_t = gpt1::zeroshot::DEFAULT_BATCH)]
    batch: usize,
    /// Analysis directory: zero-shot.jsonl, zero-shot.csv, zero-shot.md, zero-shot.png.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    precision: super::PrecisionArg,
}

fn parse_reference(s: &str) -> std::result::Result<(String, f64), String> {
    let (t, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected TASK=VALUE"))?;
    let v: f64 = v.trim().parse().map_err(|_| format!("{v:?} is not a number"))?;
    let task = gpt1::zeroshot::ZeroShotTask::parse(t).map_err(|e| e.to_string())?;
    Ok((task.name().to_string(), v))
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
        Command::ZeroShot(a) => {
            use gpt1::analysis::zeroshot::{along_pretraining, layout};
            use gpt1::zeroshot::ZeroShotTask;
            let tasks = a
                .tasks
                .iter()
                .map(|t| ZeroShotTask::parse(t).map(|t| (t, a.data.join(layout(t).0))))
                .collect::<gpt1::Result<Vec<_>>>()?;
            let tok =
                super::tokenizer(a.tokenizer.as_deref(), Some(&a.run.join("final")), None, None)?;
            let refs = a.references.iter().cloned().collect();
            let points =
                along_pretraining(&a.run, &tok, &tasks, &refs, a.batch, a.precision.get(), &a.out)
                    .context("the zero-shot analysis failed")?;
            for p in &points {
                println!("{}", serde_json::to_string(p)?);
            }
            eprintln!("wrote {}/zero-shot.{{csv,md,png}}", a.out.display());
            Ok(())
        }
        Command::Layers(a) => {
            let def = a.task.resolve()?;
            let model =
                load_model(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
            let tok = super::tokenizer(
                a.tokenizer.as_deref(),
                Some(&a.model),
                Some(model.config.vocab_size),
                None,
            )?;
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
