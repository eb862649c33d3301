//! The paper's analyses (section 5) as commands whose outputs go straight into a paper: each
//! writes a CSV, a Markdown table and a PNG figure in the paper's axes.

pub mod ablations;
pub mod layers;
pub mod zeroshot;

use crate::error::{Error, Result};
use crate::io::write_atomic;
use std::path::Path;

/// A table written as CSV (`name.csv`) and Markdown (`name.md`) into `dir`.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn csv(&self) -> String {
        let esc = |c: &String| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        };
        let mut s = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            s.push_str(&r.iter().map(esc).collect::<Vec<_>>().join(","));
            s.push('\n');
        }
        s
    }

    pub fn markdown(&self) -> String {
        let line = |r: &Vec<String>| format!("| {} |\n", r.join(" | "));
        let mut s = line(&self.header);
        s.push_str(&format!("|{}\n", " --- |".repeat(self.header.len())));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }

    /// Writes `dir/name.csv` and `dir/name.md` atomically.
    pub fn write(&self, dir: &Path, name: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(&dir.join(format!("{name}.csv")), self.csv().as_bytes())?;
        write_atomic(&dir.join(format!("{name}.md")), self.markdown().as_bytes())
    }
}

/// A finished run of an analysis read back from `run/file`; `None` when there is none. An
/// unfinished run that recorded its `run.json` is resumed by the caller (its checkpoints kept);
/// one stopped before that holds nothing worth keeping and is removed.
pub fn finished<T: serde::de::DeserializeOwned>(run: &Path, file: &str) -> Result<Option<T>> {
    let f = run.join(file);
    if let Ok(text) = std::fs::read_to_string(&f) {
        return serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::invalid(&f, format!("unreadable ({e}); remove {} to redo it", run.display()))
        });
    }
    if run.exists() && !run.join(crate::train::rundir::SPEC_FILE).exists() {
        std::fs::remove_dir_all(run).map_err(|e| Error::io(run, e))?;
    }
    Ok(None)
}

/// Takes `out` for an analysis (created if new): it may be new, empty, or an earlier run of the
/// same analysis (names for which `own` is true; the analysis resumes from them); a directory
/// holding other files is refused naming them (docs/reliability.md), so an analysis never reads
/// or replaces a user's file of the same name.
pub fn claim_out(out: &Path, own: impl Fn(&str) -> bool) -> Result<()> {
    let own = |n: &str| own(n) || n.contains(".tmp") || n.contains(".old");
    crate::io::check_out_dir(out, own, None)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))
}

/// A score as the tables print it.
pub fn fmt_score(x: f64) -> String {
    format!("{x:.4}")
}
