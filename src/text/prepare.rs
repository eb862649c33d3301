//! Corpus preparation: text files → `train.bin` / `val.bin` token shards.
//!
//! Streams each file in chunks of whole lines (memory bounded by the chunk size, whatever the
//! corpus size), tokenizes the chunk's paragraphs in parallel and writes them in order, so the
//! output is byte-identical for any number of workers. The validation split is whole documents,
//! chosen by a hash of their file names.

use super::tokenizer::Tokenizer;
use crate::data::shard::{MAGIC_U16, MAGIC_U32, VERSION_U16, VERSION_U32};
use crate::error::{Error, Result};
use crate::kernels::rng::mix64;
use rayon::prelude::*;
use serde::Serialize;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Lines are gathered into chunks of about this many bytes before tokenizing.
const CHUNK_BYTES: usize = 4 << 20;

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub inputs: Vec<String>,
    pub out: PathBuf,
    pub val_fraction: f64,
    pub strip_gutenberg: bool,
    /// Fail on invalid UTF-8 (with the file and byte offset) instead of replacing it.
    pub strict: bool,
    pub progress: bool,
    /// Write into a directory holding files gpt1 did not write ([`crate::io::check_out_dir`]).
    pub force: bool,
}

/// Written into `--out` last, with the statistics: marks the directory as `prepare`'s own.
pub const MARKER: &str = "prepare.json";

/// Whether `name` is a temporary file of [`ShardWriter`] (`train.bin.tmp1234`).
fn is_tmp(name: &str) -> bool {
    name.split_once(".bin.tmp")
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()))
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PrepareStats {
    pub documents: usize,
    pub val_documents: Vec<String>,
    pub bytes: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Invalid UTF-8 sequences replaced by U+FFFD.
    pub invalid_utf8: u64,
    /// Files given inside directories that were not `.txt` and were skipped.
    pub skipped_files: Vec<String>,
    /// Documents where `--strip-gutenberg` found no Project Gutenberg markers (kept whole).
    pub gutenberg_markers_missing: Vec<String>,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub tokens_per_s: f64,
}

/// Expands files, directories (their `.txt` files, recursively, sorted) and glob patterns.
pub fn expand_inputs(inputs: &[String], skipped: &mut Vec<String>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for spec in inputs {
        let p = Path::new(spec);
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found, skipped)?;
            found.sort();
            if found.is_empty() {
                return Err(Error::invalid(p, "no .txt files in this directory"));
            }
            out.extend(found);
        } else if p.is_file() {
            out.push(p.to_path_buf());
        } else if spec.contains(['*', '?', '[']) {
            let paths = glob::glob(spec)
                .map_err(|e| Error::setting("input", format!("{spec}: bad pattern ({e})")))?;
            let mut found: Vec<PathBuf> =
                paths.filter_map(|r| r.ok()).filter(|p| p.is_file()).collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::setting(
                    "input",
                    format!("{spec}: the pattern matches no file"),
                ));
            }
            out.extend(found);
        } else if p.exists() {
            return Err(Error::invalid(p, "is a device or special file, not a text file"));
        } else {
            return Err(Error::invalid(p, "no such file or directory"));
        }
    }
    // The same file named twice (or through a link) is read once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())));
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut Vec<String>) -> Result<()> {
    walk_once(dir, out, skipped, &mut std::collections::HashSet::new())
}

/// [`walk`], entering each directory once however many links lead to it (a link to a parent
/// would otherwise read the same books again and again).
fn walk_once(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<String>,
    seen: &mut std::collections::HashSet<PathBuf>,
) -> Result<()> {
    if !seen.insert(dir.canonicalize().map_err(|e| Error::io(dir, e))?) {
        return Ok(());
    }
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            walk_once(&p, out, skipped, seen)?;
        } else if p.extension().is_some_and(|x| x == "txt") {
            out.push(p);
        } else {
            skipped.push(p.display().to_string());
        }
    }
    Ok(())
}

/// Line range (0-based, end exclusive) between Project Gutenberg's START and END markers.
fn gutenberg_bounds(path: &Path) -> Result<Option<(usize, usize)>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::new(f);
    let (mut start, mut end) = (None, None);
    let mut buf = Vec::new();
    let mut i = 0;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).map_err(|e| Error::io(path, e))? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let l = line.trim_start_matches('\u{feff}').trim();
        let upper = l.to_uppercase();
        // Today's "*** START OF ... ***" and the older "*END*THE SMALL PRINT! ...*END*".
        let starts = (l.starts_with("***") && upper.contains("START OF"))
            || (l.starts_with("*END") && upper.contains("THE SMALL PRINT"));
        // "*** END OF ... ***" and the older "End of (the) Project Gutenberg ...".
        let ends = (l.starts_with("***") && upper.contains("END OF"))
            || upper.starts_with("END OF THE PROJECT GUTENBERG")
            || upper.starts_with("END OF PROJECT GUTENBERG");
        if start.is_none() && starts {
            start = Some(i + 1);
        } else if start.is_some() && end.is_none() && ends {
            end = Some(i);
        }
        i += 1;
    }
    Ok(match (start, end) {
        (Some(s), Some(e)) if e >= s => Some((s, e)),
        (Some(s), None) => Some((s, i)),
        _ => None,
    })
}

/// Tokenizes one document's text in chunks; `emit` receives the ids in order.
fn tokenize_document(
    tok: &Tokenizer,
    path: &Path,
    opts: &PrepareOptions,
    stats: &mut PrepareStats,
    bar: &indicatif::ProgressBar,
    emit: &mut dyn FnMut(&[u32]) -> Result<()>,
) -> Result<()> {
    let bounds = if opts.strip_gutenberg {
        let b = gutenberg_bounds(path)?;
        if b.is_none() {
            stats.gutenberg_markers_missing.push(path.display().to_string());
        }
        b
    } else {
        None
    };
    let mut head = [0u8; 8192];
    let n = File::open(path).and_then(|mut f| f.read(&mut head)).map_err(|e| Error::io(path, e))?;
    if head[..n].contains(&0) {
        return Err(Error::invalid(
            path,
            "a NUL byte in the first 8 KiB: this looks like a binary file; remove it from --input",
        ));
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut line_no = 0usize;
    let mut offset = 0u64;
    let mut chunk = String::new();
    let mut buf = Vec::new();
    let mut chunk_push_newline = false;
    let mut flush = |chunk: &mut String| -> Result<()> {
        let paras: Vec<&str> = chunk.split("\n\n").collect();
        let ids: Vec<Vec<u32>> = paras.par_iter().map(|p| tok.encode(p)).collect::<Result<_>>()?;
        for v in &ids {
            emit(v)?;
        }
        chunk.clear();
        Ok(())
    };
    loop {
        buf.clear();
        let got = r.read_until(b'\n', &mut buf).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        let keep = bounds.is_none_or(|(s, e)| line_no >= s && line_no < e);
        line_no += 1;
        let this_offset = offset;
        offset += got as u64;
        stats.bytes += got as u64;
        bar.inc(got as u64);
        if !keep {
            continue;
        }
        let mut bytes: &[u8] = &buf;
        if this_offset == 0 && bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes = &bytes[3..];
        }
        // CRLF → LF: the normalizers treat both as whitespace, and paragraphs split on "\n\n".
        if bytes.ends_with(b"\r\n") {
            bytes = &bytes[..bytes.len() - 2];
            chunk_push_newline = true;
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => chunk.push_str(s),
            Err(e) => {
                if opts.strict {
                    return Err(Error::invalid(
                        path,
                        format!(
                            "invalid UTF-8 at byte {} (line {line_no}); drop --strict to replace it",
                            this_offset as usize + e.valid_up_to()
                        ),
                    ));
                }
                stats.invalid_utf8 +=
                    bytes.utf8_chunks().filter(|c| !c.invalid().is_empty()).count() as u64;
                chunk.push_str(&String::from_utf8_lossy(bytes));
            }
        }
        if chunk_push_newline {
            chunk.push('\n');
            chunk_push_newline = false;
        }
        if chunk.len() >= CHUNK_BYTES && chunk.ends_with("\n\n") || chunk.len() >= 4 * CHUNK_BYTES {
            flush(&mut chunk)?;
        }
    }
    flush(&mut chunk)
}

/// A shard written incrementally: a zeroed header, the tokens, then the header with the count;
/// under a temporary name until complete.
struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    w: std::io::BufWriter<File>,
    wide: bool,
    count: u64,
    /// Removes the temporary file unless the shard was finished (a failure, a full disk).
    _guard: TmpGuard,
}

/// Removes the file when dropped: after a failure, the partial shard; after `finish`, nothing
/// (it was renamed into place).
struct TmpGuard(PathBuf);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ShardWriter {
    fn create(path: PathBuf, wide: bool) -> Result<Self> {
        let tmp = path.with_extension(format!("bin.tmp{}", std::process::id()));
        let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let guard = TmpGuard(tmp.clone());
        w.write_all(&[0u8; 1024]).map_err(|e| Error::io(&tmp, e))?;
        Ok(ShardWriter { path, tmp, w, wide, count: 0, _guard: guard })
    }

    fn push(&mut self, ids: &[u32]) -> Result<()> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &t in ids {
            if self.wide {
                bytes.extend_from_slice(&t.to_le_bytes());
            } else {
                bytes.extend_from_slice(&(t as u16).to_le_bytes());
            }
        }
        self.count += ids.len() as u64;
        self.w.write_all(&bytes).map_err(|e| Error::io(&self.tmp, e))
    }

    fn finish(self) -> Result<u64> {
        let (tmp, path, count, wide) = (self.tmp.clone(), self.path.clone(), self.count, self.wide);
        let mut f = self.w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
        if count > i32::MAX as u64 {
            return Err(Error::invalid(
                &path,
                format!("{count} tokens exceed one shard's limit of 2^31 - 1"),
            ));
        }
        let (magic, version) =
            if wide { (MAGIC_U32, VERSION_U32) } else { (MAGIC_U16, VERSION_U16) };
        let mut header = Vec::with_capacity(12);
        for v in [magic, version, count as i32] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&header))
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(count)
    }
}

/// Which documents go to validation: sorted by a hash of the file name, taken from the front
/// until `fraction` of the bytes (at least one document when `fraction > 0` and there are two
/// or more).
fn choose_val(docs: &[PathBuf], fraction: f64) -> Result<Vec<bool>> {
    let mut val = vec![false; docs.len()];
    if fraction <= 0.0 || docs.len() < 2 {
        return Ok(val);
    }
    let sizes: Vec<u64> = docs
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).map_err(|e| Error::io(p, e)))
        .collect::<Result<_>>()?;
    let total: u64 = sizes.iter().sum();
    let mut order: Vec<usize> = (0..docs.len()).collect();
    let key = |i: usize| {
        let name =
            docs[i].file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.bytes().fold(0u64, |h, b| mix64(h ^ b as u64))
    };
    order.sort_by_key(|&i| (key(i), i));
    let mut acc = 0u64;
    for &i in &order {
        if acc as f64 >= fraction * total as f64 {
            break;
        }
        val[i] = true;
        acc += sizes[i];
    }
    if val.iter().all(|&v| v) {
        val[order[order.len() - 1]] = false;
    }
    Ok(val)
}

/// The folder beside the shards where `prepare` saves the tokenizer it used (pre-training
/// saves it with each checkpoint from there).
pub const TOKENIZER_DIR: &str = "tokenizer";

/// Runs the preparation; writes `OUT/train.bin` and `OUT/val.bin`.
pub fn prepare(tok: &Tokenizer, opts: &PrepareOptions) -> Result<PrepareStats> {
    let t0 = std::time::Instant::now();
    let mut stats = PrepareStats::default();
    let docs = expand_inputs(&opts.inputs, &mut stats.skipped_files)?;
    if !(0.0..1.0).contains(&opts.val_fraction) {
        return Err(Error::setting(
            "val_fraction",
            format!("{} must be in [0, 1)", opts.val_fraction),
        ));
    }
    let val = choose_val(&docs, opts.val_fraction)?;
    // An earlier prepare's directory (its marker, written last) is rewritten whatever it holds.
    let earlier = opts.out.join(MARKER).is_file();
    crate::io::check_out_dir(&opts.out, |n| earlier || is_tmp(n), Some(opts.force))?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    // Temporary shards a killed run left behind.
    for e in std::fs::read_dir(&opts.out).map_err(|e| Error::io(&opts.out, e))?.flatten() {
        if is_tmp(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let td = opts.out.join(TOKENIZER_DIR);
    std::fs::create_dir_all(&td).map_err(|e| Error::io(&td, e))?;
    tok.save(&td)?;
    let wide = tok.vocab_size() > u16::MAX as usize + 1;
    let mut train = ShardWriter::create(opts.out.join("train.bin"), wide)?;
    let mut valw = ShardWriter::create(opts.out.join("val.bin"), wide)?;
    let total_bytes: u64 =
        docs.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = if opts.progress {
        indicatif::ProgressBar::new(total_bytes)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    for (doc, is_val) in docs.iter().zip(&val) {
        let w = if *is_val { &mut valw } else { &mut train };
        tokenize_document(tok, doc, opts, &mut stats, &bar, &mut |ids| w.push(ids))?;
        bar.set_message(format!("{} tokens", train.count + valw.count));
        if *is_val {
            stats.val_documents.push(doc.display().to_string());
        }
    }
    bar.finish();
    stats.documents = docs.len();
    stats.train_tokens = train.finish()?;
    stats.val_tokens = valw.finish()?;
    stats.seconds = t0.elapsed().as_secs_f64();
    stats.mb_per_s = stats.bytes as f64 / 1e6 / stats.seconds;
    stats.tokens_per_s = (stats.train_tokens + stats.val_tokens) as f64 / stats.seconds;
    let marker = serde_json::to_string_pretty(&stats).expect("plain data");
    crate::io::write_atomic(&opts.out.join(MARKER), marker.as_bytes())?;
    Ok(stats)
}
