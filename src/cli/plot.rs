//! `gpt1 plot`: training curves of a run as PNG.

use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory (its metrics.jsonl) or a metrics JSONL file.
    run: PathBuf,
    /// Output PNG (default: RUN_DIR/curves.png, or FILE with .png).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Title of the panels (default: the run directory's name).
    #[arg(long)]
    title: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let (metrics, default_out) = if a.run.is_dir() {
        (a.run.join("metrics.jsonl"), a.run.join("curves.png"))
    } else {
        (a.run.clone(), a.run.with_extension("png"))
    };
    let out = a.out.unwrap_or(default_out);
    let title = a.title.unwrap_or_else(|| {
        let dir = if a.run.is_dir() { a.run.as_path() } else { a.run.parent().unwrap_or(&a.run) };
        dir.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned())
    });
    gpt1::plot::curves(&metrics, &out, &title)
        .with_context(|| format!("plotting {}", metrics.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
