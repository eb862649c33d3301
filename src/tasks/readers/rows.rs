//! What every reader shares: delimited files with line numbers, the row-by-row builder that
//! reports or skips bad rows, and the cell checks.

use super::{Split, TaskDef};
use crate::error::{Error, Result};
use crate::tasks::{Example, Target};
use std::path::{Path, PathBuf};

/// The rows of a delimited file, each with its line number, and the header if asked for.
pub(super) struct Rows {
    pub path: PathBuf,
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

/// Reads a UTF-8 file (a leading byte-order mark dropped) split at `delim`; `quoting` turns on
/// CSV quotes, `header` takes the first row as the header.
pub(super) fn read_delimited(path: &Path, delim: u8, quoting: bool, header: bool) -> Result<Rows> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::invalid(path, format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delim)
        .quoting(quoting)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| Error::invalid(path, format!("line {}: {e}", i + 1)))?;
        rows.push((
            rec.position().map_or(i + 1, |p| p.line() as usize),
            rec.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ));
    }
    let header = if header && !rows.is_empty() { rows.remove(0).1 } else { Vec::new() };
    Ok(Rows { path: path.to_path_buf(), header, rows })
}

impl Rows {
    /// The index of the first header column named one of `names`.
    pub fn col(&self, names: &[&str]) -> Result<usize> {
        self.header.iter().position(|h| names.contains(&h.trim())).ok_or_else(|| {
            Error::invalid(
                &self.path,
                format!(
                    "line 1: no column named {} in the header {:?}",
                    names.join(" or "),
                    self.header
                ),
            )
        })
    }
}

/// Collects examples row by row; a bad row is an error, or skipped and counted.
pub(super) struct Builder<'a> {
    pub skip_bad: bool,
    pub split: &'a mut Split,
}

impl Builder<'_> {
    pub fn push(
        &mut self,
        path: &Path,
        line: usize,
        r: std::result::Result<Example, String>,
    ) -> Result<()> {
        match r {
            Ok(e) => self.split.examples.push(e),
            Err(m) if self.skip_bad => {
                let _ = (path, line, m);
                self.split.skipped += 1;
            }
            Err(m) => {
                return Err(Error::invalid(
                    path,
                    format!("line {line}: {m} (--skip-bad-rows skips such rows)"),
                ));
            }
        }
        Ok(())
    }
}

/// The trimmed text, or an error naming `what` when it is empty.
pub(super) fn text(s: &str, what: &str) -> std::result::Result<String, String> {
    let t = s.trim();
    if t.is_empty() { Err(format!("empty {what}")) } else { Ok(t.to_string()) }
}

/// The class whose label is `s` (trimmed).
pub(super) fn class(def: &TaskDef, s: &str) -> std::result::Result<Target, String> {
    let s = s.trim();
    def.labels
        .iter()
        .position(|l| l == s)
        .map(Target::Class)
        .ok_or_else(|| format!("unknown label {s:?}; expected one of {:?}", def.labels))
}

/// Cell `i` of a row that should have `ncols` cells.
pub(super) fn cell(row: &[String], i: usize, ncols: usize) -> std::result::Result<&str, String> {
    row.get(i).map(String::as_str).ok_or_else(|| format!("{} columns, expected {ncols}", row.len()))
}

/// The first of `names` that exists in `dir`; none is a missing split.
pub(super) fn split_file(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists()).ok_or_else(|| Error::MissingSplit {
        path: dir.to_path_buf(),
        msg: format!("expected one of {names:?} here"),
    })
}

/// A regression label: a finite number (`NaN` and `inf` parse as floats but cannot be trained
/// on; refused here rather than as a NaN loss many steps later).
pub fn score(v: &str) -> std::result::Result<f32, String> {
    match v.trim().parse::<f32>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(format!("score {v:?} is not a finite number")),
        Err(_) => Err(format!("score {v:?} is not a number")),
    }
}
