use anyhow::{Context, Result};
use gpt1::backend::Backend;
use gpt1::data::TokenData;
use gpt1::eval::{rows_of, score};
use gpt1::model::{LanguageModel, ModelTask, Net, inference_bytes};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + model.safetensors), or a hub id (ORG/NAME) in the local
    /// Hugging Face cache.
    #[arg(long, value_parser = super::model_dir)]
    model: PathBuf,
    /// Token ids: `.npy` (1-D stream or 2-D rows scored independently) or `.bin`.
    #[arg(long)]
    ids: PathBuf,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Print JSON with every row's token log-probabilities.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
}

/// `gpt1 score`'s work, for either architecture on either device.
struct Scoring<'a> {
    rows: &'a [Vec<u32>],
    batch: usize,
    comm: Option<&'a dyn gpt1::dist::Collective>,
}

impl ModelTask for Scoring<'_> {
    type Out = gpt1::eval::Score;
    fn run<B: Backend, M: LanguageModel<B>>(self, m: &M) -> gpt1::Result<Self::Out> {
        score(m, self.rows, self.batch, self.comm)
    }
}

pub fn run(a: Args) -> Result<()> {
    let data = TokenData::open(&a.ids)?;
    // Under mpirun/srun the ranks share the batches; rank 0 prints.
    let comm = gpt1::dist::connect()?;
    let c = comm.as_deref();
    // An LSTM checkpoint (config.json's model_type "lstm", PyTorch's or gpt1's) or GPT-1.
    let mut model = Net::load(&a.model).context("loading the model")?;
    model.set_backend(a.precision.backend());
    let rows = rows_of(&data, model.config().n_positions())?;
    let t = rows.iter().map(Vec::len).max().unwrap_or(1);
    let pass = (a.batch.min(rows.len()), t);
    let s = model.run_on(
        a.device.device,
        pass,
        "one batch's activations",
        Scoring { rows: &rows, batch: a.batch, comm: c },
    );
    if super::follower_done(&s, c, "scoring") {
        s?;
        return Ok(());
    }
    let s = s.with_context(|| format!("scoring {}", a.ids.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "rows {}  tokens {}  mean_nll {:.5}  perplexity {:.3}",
            s.rows.len(),
            s.tokens,
            s.mean_nll,
            s.perplexity
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// Checkpoint directory (config.json + model.safetensors), or a hub id (ORG/NAME) in the local
    /// Hugging Face cache.
    #[arg(long, value_parser = super::model_dir)]
    model: PathBuf,
    /// Text files, directories (their .txt files) or glob patterns.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<String>,
    /// Tokenizer directory (default: the model directory's vocabulary files).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Tokens the window moves by (default: half the context); each token after the first
    /// window is scored with at least context − stride tokens of history.
    #[arg(long)]
    stride: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Print one JSON object (per file and overall) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    precision: super::PrecisionArg,
    #[command(flatten)]
    device: super::DeviceArg,
}

pub fn perplexity(a: PerplexityArgs) -> Result<()> {
    use gpt1::eval::{perplexity, windows};
    let (model, tok) =
        super::model_and_tokenizer(&a.model, a.tokenizer.as_deref(), &a.precision, None)?;
    let tok = tok?;
    let ctx = model.config.n_positions;
    let stride = a.stride.unwrap_or(ctx.div_ceil(2));
    let files = gpt1::text::prepare::expand_inputs(&a.input, &mut Vec::new())?;
    let mut docs = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        docs.push(
            tok.encode_document(&text).with_context(|| format!("tokenizing {}", f.display()))?,
        );
    }
    // Under mpirun/srun the ranks share each file's windows; rank 0 prints (and shows the
    // progress of its own share).
    let comm = gpt1::dist::connect()?;
    let c = comm.as_deref();
    let lead = c.is_none_or(|c| c.rank() == 0);
    let total: usize = docs.iter().map(|d| windows(d.len(), ctx, stride.clamp(1, ctx)).len()).sum();
    let world = c.map_or(1, |c| c.world());
    let bar = gpt1::progress::bar(total.div_ceil(world) as u64, !a.json && lead);
    let (mut all_nll, mut all_n) = (0.0, 0usize);
    let mut per_file = Vec::new();
    for (f, ids) in files.iter().zip(&docs) {
        anyhow::ensure!(
            ids.len() >= 2,
            "{}: {} token(s); perplexity needs at least 2",
            f.display(),
            ids.len()
        );
    }
    // The model goes to the device once, for every file.
    let gpu = matches!(a.device.device, gpt1::backend::Device::Cuda(_));
    let need = inference_bytes(&model.config, model.backend.precision(), a.batch, ctx, gpu);
    crate::on_device!(model, a.device.device, need = need, |m| {
        for (f, ids) in files.iter().zip(&docs) {
            let (nll, n) = perplexity(m, ids, stride, a.batch, c, |w| bar.inc(w as u64))
                .with_context(|| format!("scoring {}", f.display()))?;
            all_nll += nll;
            all_n += n;
            let mean = nll / n.max(1) as f64;
            per_file.push(serde_json::json!({"file": f.display().to_string(), "tokens": n, "mean_nll": mean, "perplexity": mean.exp()}));
        }
    });
    bar.finish_and_clear();
    if !lead {
        return Ok(());
    }
    let mean = all_nll / all_n.max(1) as f64;
    if a.json {
        let js = serde_json::json!({"files": per_file, "tokens": all_n, "mean_nll": mean, "perplexity": mean.exp(), "context": ctx, "stride": stride});
        println!("{js}");
    } else {
        for f in &per_file {
            println!(
                "{}  tokens {}  perplexity {:.3}",
                f["file"].as_str().unwrap_or(""),
                f["tokens"],
                f["perplexity"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "all  tokens {all_n}  mean_nll {mean:.5}  perplexity {:.3}  (context {ctx}, stride {stride})",
            mean.exp()
        );
    }
    Ok(())
}
