//! `gpt1 plot`: training curves of a run as PNG.

use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory (its metrics.jsonl) or a metrics JSONL file.
    run: PathBuf,
    /// Output PNG (default: RUN_DIR/curves.png, or FILE with .png, which gpt1 replaces); an
    /// existing file named here is refused unless --force.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing --out file (never the metrics it reads).
    #[arg(long)]
    force: bool,
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
    // The default is gpt1's own file (training writes it); a file the user names follows the
    // output rule (gpt1::io::Output).
    let out = match &a.out {
        Some(o) => gpt1::io::Output::new(o, a.force)?,
        None => gpt1::io::Output::File(default_out),
    };
    out.check_not_input(&[&metrics])?;
    let title = a.title.unwrap_or_else(|| {
        let dir = if a.run.is_dir() { a.run.as_path() } else { a.run.parent().unwrap_or(&a.run) };
        dir.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned())
    });
    gpt1::plot::curves_to(&metrics, &out, &title)
        .with_context(|| format!("plotting {}", metrics.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
