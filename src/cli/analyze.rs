//! `analyze`: the paper's section 5 analyses, each a CSV, a Markdown table and a PNG figure.

use super::finetune::{TaskArgs, TrainFlags};
use anyhow::{Context, Result};
use gpt1::analysis::layers::{LayersOptions, layers};
use gpt1::model::checkpoint::load_model;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Table 5: fine-tune the full model, the same without the auxiliary LM and without
    /// pre-training on each task; dev scores as CSV, Markdown and a bar chart.
    Ablations(AblationsArgs),
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
    #[command(flatten)]
    device: super::DeviceArg,
}

fn parse_reference(s: &str) -> std::result::Result<(String, f64), String> {
    let (t, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected TASK=VALUE"))?;
    let v: f64 = v.trim().parse().map_err(|_| format!("{v:?} is not a number"))?;
    let task = gpt1::zeroshot::ZeroShotTask::parse(t).map_err(|e| e.to_string())?;
    Ok((task.name().to_string(), v))
}

#[derive(clap::Args, Debug)]
pub struct AblationsArgs {
    /// The pre-trained Transformer (HF layout); or give --pretrain-data to pre-train one.
    #[arg(long, required_unless_present = "pretrain_data")]
    transformer: Option<PathBuf>,
    /// Token shard to pre-train the Transformer on first (into OUT/pretrain-transformer/, 16 ×
    /// 128 tokens per update, lr 6e-4, 100 warm-up updates; resumed if interrupted).
    #[arg(long, conflicts_with = "transformer")]
    pretrain_data: Option<PathBuf>,
    /// The preset or config.json pre-trained with --pretrain-data.
    #[arg(long, default_value = "gpt1-mini")]
    config: String,
    /// Pre-training updates with --pretrain-data.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pretrain_steps: u64,
    /// A pre-trained LSTM baseline (`pretrain --arch lstm`) for the table's LSTM row.
    #[arg(long, conflicts_with = "pretrain_data")]
    lstm: Option<PathBuf>,
    /// With --pretrain-data: also pre-train the LSTM baseline on the same tokens (into
    /// OUT/pretrain-lstm/, the same settings; the vocabulary and embedding width of --config)
    /// for the LSTM row.
    #[arg(long, requires = "pretrain_data")]
    with_lstm: bool,
    /// Hidden units of that LSTM (the paper: 2048).
    #[arg(long, default_value_t = 2048)]
    lstm_hidden: usize,
    /// Tasks, comma-separated (the paper's: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte).
    #[arg(long, value_delimiter = ',', default_value = "cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte")]
    tasks: Vec<String>,
    /// The data folder: each task under glue/<its GLUE name> (glue/CoLA, glue/SST-2, ...), or a
    /// folder named as the task.
    #[arg(long)]
    data: PathBuf,
    /// Analysis directory: VARIANT-TASK/ runs, ablations.csv, ablations.md, ablations.png.
    #[arg(long)]
    out: PathBuf,
    /// Tokenizer directory (default: the model's own vocabulary files, or GPT-1's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    train: TrainFlags,
}

/// A task's data folder under `data`: `glue/<title>`, else `<name>`, else `<title>`.
fn task_folder(data: &std::path::Path, def: &gpt1::tasks::readers::TaskDef) -> PathBuf {
    let title = gpt1::tasks::readers::builtin(&def.name).map_or(def.name.as_str(), |b| b.title);
    [data.join("glue").join(title), data.join(&def.name), data.join(title)]
        .into_iter()
        .find(|p| p.is_dir())
        .unwrap_or_else(|| data.join("glue").join(title))
}

fn run_ablations(a: AblationsArgs) -> Result<()> {
    use gpt1::analysis::ablations::ablations;
    // Every pre-training and every cell's fine-tuning stops at Ctrl-C with a checkpoint.
    super::on_interrupt();
    // The directory's rule before any pre-training writes into it.
    gpt1::analysis::claim_out(&a.out, gpt1::analysis::ablations::own_name)?;
    let tasks = a
        .tasks
        .iter()
        .map(|t| {
            let def = gpt1::tasks::readers::task(t)?;
            let dir = task_folder(&a.data, &def);
            Ok((def, dir))
        })
        .collect::<gpt1::Result<Vec<_>>>()?;
    // Pre-trains one model on --pretrain-data into OUT/NAME/ unless it is done; its final/.
    let pretrain_into = |name: &str, source: gpt1::train::ModelSource| -> Result<PathBuf> {
        let data = a.pretrain_data.clone().expect("checked by the caller");
        let run = a.out.join(name);
        let final_dir = run.join("final");
        if !final_dir.join("model.safetensors").exists() {
            let mut o = gpt1::train::PretrainOptions::new(data, source, run.clone());
            (o.batch, o.seq, o.steps, o.lr, o.seed) =
                (16, 128, a.pretrain_steps, 6e-4, a.train.seed);
            o.warmup = 100.min(a.pretrain_steps / 3).max(1);
            o.resume = run.join("run.json").exists();
            o.tokenizer = a.tokenizer.clone();
            gpt1::train::pretrain(&o).with_context(|| format!("pre-training {name}"))?;
        }
        Ok(final_dir)
    };
    let config = gpt1::model::Config::from_name_or_file(&a.config)?;
    let ckpt = match &a.transformer {
        Some(t) => t.clone(),
        None => {
            pretrain_into("pretrain-transformer", gpt1::train::ModelSource::Config(config.clone()))?
        }
    };
    let lstm_dir = match (&a.lstm, a.with_lstm) {
        (Some(l), _) => Some(l.clone()),
        (None, true) => {
            let mut l = gpt1::model::lstm::LstmConfig::new(
                config.vocab_size,
                config.n_embd,
                a.lstm_hidden,
                1,
            );
            l.n_positions = config.n_positions;
            Some(pretrain_into("pretrain-lstm", gpt1::train::ModelSource::Lstm(l))?)
        }
        (None, false) => None,
    };
    let lstm = match &lstm_dir {
        Some(d) => Some(
            gpt1::model::lstm::load_lstm(d).with_context(|| format!("loading {}", d.display()))?,
        ),
        None => None,
    };
    let model = load_model(&ckpt).with_context(|| format!("loading {}", ckpt.display()))?;
    let tok =
        super::tokenizer(a.tokenizer.as_deref(), Some(&ckpt), Some(model.config.vocab_size), None)?;
    let opts = a.train.options(a.data.clone(), a.out.clone());
    let cells =
        ablations(&model, lstm.as_ref(), &tok, &tasks, &opts).context("the ablations failed")?;
    for c in &cells {
        println!("{}", serde_json::to_string(c)?);
    }
    eprintln!("wrote {}/ablations.{{csv,md,png}}", a.out.display());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LayersArgs {
    /// The pre-trained checkpoint (HF layout).
    #[arg(long, value_parser = super::model_dir)]
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
        Command::Ablations(a) => run_ablations(a),
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
            let points = along_pretraining(
                &a.run,
                &tok,
                &tasks,
                &refs,
                a.batch,
                a.precision.get(),
                a.device.device,
                &a.out,
            )
            .context("the zero-shot analysis failed")?;
            for p in &points {
                println!("{}", serde_json::to_string(p)?);
            }
            eprintln!("wrote {}/zero-shot.{{csv,md,png}}", a.out.display());
            Ok(())
        }
        Command::Layers(a) => {
            // Each fine-tuning stops at Ctrl-C with a checkpoint, as `finetune` does.
            super::on_interrupt();
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
