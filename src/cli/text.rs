//! `tokenize`, `detokenize`, `prepare`.

use anyhow::{Context, Result, bail};
use gpt1::text::prepare::{PrepareOptions, prepare};
use gpt1::text::{Mode, Tokenizer};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// Directory with vocab.json + merges.txt (or encoder_bpe_40000.json + vocab_40000.bpe);
    /// default: GPT-1's built-in BPE.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// original (ftfy, text_standardize, spaCy rules) or hf (transformers' tokenizer); default:
    /// original for GPT-1's own vocabulary, hf for others.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// The text to tokenize (without --text or --file: each line of standard input).
    #[arg(long, conflicts_with = "file")]
    text: Option<String>,
    /// A file: each line is one text (`-`: standard input).
    #[arg(long)]
    file: Option<PathBuf>,
    /// One JSON array of ids per text (default: ids separated by spaces).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DetokenizeArgs {
    /// Tokenizer directory (default: GPT-1's built-in BPE).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Token ids (separated by spaces or commas; a JSON array works too).
    #[arg(long, num_args = 1.., required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// Tokenizer directory (default: GPT-1's built-in BPE).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// original or hf; default: original for GPT-1's own vocabulary, hf for others.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Text files, directories (their .txt files) or glob patterns.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<String>,
    /// Output directory for train.bin, val.bin, tokenizer/ and prepare.json: new, empty, or an
    /// earlier prepare's (a directory holding other files is refused unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Write into a directory that holds files gpt1 did not write.
    #[arg(long)]
    force: bool,
    /// Share of the bytes (whole documents) that go to val.bin.
    #[arg(long, default_value_t = 0.005)]
    val_fraction: f64,
    /// Drop Project Gutenberg's licence header and footer.
    #[arg(long)]
    strip_gutenberg: bool,
    /// Fail on invalid UTF-8 instead of replacing it.
    #[arg(long)]
    strict: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Learn a BPE vocabulary from a corpus and write vocab.json + merges.txt.
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Text files, directories (their .txt files) or glob patterns.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<String>,
    /// Merge rules to learn (GPT-1: 40,000).
    #[arg(long, default_value_t = 40_000)]
    merges: usize,
    /// Normalization and pre-tokenization to learn with (saved in tokenizer_config.json).
    #[arg(long, value_enum, default_value = "hf")]
    mode: Mode,
    /// Output directory for vocab.json, merges.txt and tokenizer_config.json: new, empty, or
    /// an earlier `tokenizer train`'s (a directory holding other files is refused unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Write into a directory that holds files gpt1 did not write (same names are replaced).
    #[arg(long)]
    force: bool,
}

pub fn tokenizer(c: TokenizerCommand) -> Result<()> {
    match c {
        TokenizerCommand::Train(a) => {
            Tokenizer::check_save_dir(&a.out, a.force)?;
            let mut skipped = Vec::new();
            let files = gpt1::text::prepare::expand_inputs(&a.input, &mut skipped)?;
            for s in &skipped {
                eprintln!("skipped (not .txt): {s}");
            }
            let tok =
                Tokenizer::train(&files, a.merges, a.mode).context("training the tokenizer")?;
            let written = tok.save(&a.out)?;
            if tok.num_merges() < a.merges {
                eprintln!(
                    "the corpus yields only {} merges (pairs seen at least twice), not {}",
                    tok.num_merges(),
                    a.merges
                );
            }
            println!(
                "{}",
                serde_json::json!({"merges": tok.num_merges(), "vocab_size": tok.bpe_vocab_size(), "files": written})
            );
            Ok(())
        }
    }
}

fn print_ids(out: &mut impl Write, ids: &[u32], json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(ids)?)?;
    } else {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", s.join(" "))?;
    }
    Ok(())
}

/// The longest line `tokenize` reads.
const MAX_LINE: usize = 64 << 20;

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let tok = super::tokenizer(a.tokenizer.as_deref(), None, None, a.mode)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Some(t) = &a.text {
        print_ids(&mut out, &tok.encode(t)?, a.json)?;
    } else {
        let p = a.file.clone().unwrap_or_else(|| PathBuf::from("-"));
        let input: Box<dyn std::io::Read> = if p.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            let md = std::fs::metadata(&p).with_context(|| format!("opening {}", p.display()))?;
            // A FIFO streams lines; a device (/dev/zero) would be read forever.
            #[cfg(unix)]
            let stream = std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type());
            #[cfg(not(unix))]
            let stream = false;
            anyhow::ensure!(
                md.is_file() || stream,
                "{}: is a device or special file, not a text file",
                p.display()
            );
            Box::new(std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?)
        };
        let mut reader = std::io::BufReader::new(input);
        for i in 0.. {
            // One line at a time, none longer than MAX_LINE (a stream without newlines would
            // otherwise fill the memory).
            let mut line = Vec::new();
            let n = std::io::Read::take(&mut reader, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {}", p.display()))?;
            if n == 0 {
                break;
            }
            anyhow::ensure!(
                line.len() <= MAX_LINE || line.ends_with(b"\n"),
                "{}:{}: a line over {} MiB; split the text into lines",
                p.display(),
                i + 1,
                MAX_LINE >> 20
            );
            if line.ends_with(b"\n") {
                line.pop();
            }
            // Invalid UTF-8 is an error on stdin as in a file, never replaced silently.
            let text = String::from_utf8(line).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{}: invalid UTF-8 at byte {} of the line",
                    p.display(),
                    i + 1,
                    e.utf8_error().valid_up_to()
                )
            })?;
            let text = text.strip_suffix('\r').unwrap_or(&text);
            let ids = tok.encode(text).with_context(|| format!("{}:{}", p.display(), i + 1))?;
            print_ids(&mut out, &ids, a.json)?;
        }
    }
    // A write that fails in the buffer's last flush is an error too, not a silent exit 0.
    out.flush().context("writing to stdout")?;
    Ok(())
}

pub fn detokenize(a: DetokenizeArgs) -> Result<()> {
    let tok = super::tokenizer(a.tokenizer.as_deref(), None, None, Some(Mode::Hf))?;
    let mut ids = Vec::new();
    for part in a
        .ids
        .iter()
        .flat_map(|s| s.split([' ', ',', '[', ']', '\n']))
        .filter(|s| !s.trim().is_empty())
    {
        match part.trim().parse::<u32>() {
            Ok(v) => ids.push(v),
            Err(_) => bail!("--ids: {part:?} is not a token id (expected non-negative integers)"),
        }
    }
    println!("{}", tok.decode(&ids)?);
    Ok(())
}

pub fn prepare_cmd(a: PrepareArgs) -> Result<()> {
    let tok = super::tokenizer(a.tokenizer.as_deref(), None, None, a.mode)?;
    let opts = PrepareOptions {
        inputs: a.input,
        out: a.out,
        val_fraction: a.val_fraction,
        strip_gutenberg: a.strip_gutenberg,
        strict: a.strict,
        progress: !a.quiet,
        force: a.force,
    };
    let stats = prepare(&tok, &opts)?;
    // Whole documents go to validation: with few of them the share can be far from the one
    // asked for; say so rather than train on less than expected.
    let tokens = (stats.train_tokens + stats.val_tokens).max(1) as f64;
    let share = stats.val_tokens as f64 / tokens;
    if a.val_fraction > 0.0 && share > 2.0 * a.val_fraction {
        eprintln!(
            "warning: validation holds {:.1} % of the tokens, not the {:.1} % asked: whole \
             documents go to validation ({} of {}); give more documents, or --val-fraction 0 and \
             a validation file of your own",
            100.0 * share,
            100.0 * a.val_fraction,
            stats.val_documents.len(),
            stats.documents
        );
    }
    for s in &stats.skipped_files {
        eprintln!("skipped (not .txt): {s}");
    }
    if stats.invalid_utf8 > 0 {
        eprintln!(
            "replaced {} invalid UTF-8 sequences (use --strict to fail instead)",
            stats.invalid_utf8
        );
    }
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}
