use anyhow::{Context, Result};
use gpt1::data::TokenData;
use gpt1::eval::{rows_of, score};
use gpt1::model::checkpoint::load_model;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + model.safetensors).
    #[arg(long)]
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
}

pub fn run(a: Args) -> Result<()> {
    let model = load_model(&a.model).context("loading the model")?;
    let data = TokenData::open(&a.ids)?;
    let rows = rows_of(&data, model.config.n_positions)?;
    let s =
        score(&model, &rows, a.batch).with_context(|| format!("scoring {}", a.ids.display()))?;
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
