//! SNLI: the jsonl release or the three parallel text files.

use super::rows::{Builder, class, text};
use super::{Split, TaskDef};
use crate::error::{Error, Result};
use crate::tasks::{Example, Input};
use std::path::{Path, PathBuf};

/// SNLI: the jsonl release (`snli_1.0_{split}.jsonl`) or three parallel files `s1.{split}`,
/// `s2.{split}`, `labels.{split}`. Pairs without a gold label (`-`) are left out, as usual.
pub(super) fn read(
    def: &TaskDef,
    dir: &Path,
    split: &str,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    let jsonl = dir.join(format!("snli_1.0_{split}.jsonl"));
    let mut b = Builder { skip_bad, split: out };
    if jsonl.exists() {
        let body = std::fs::read_to_string(&jsonl).map_err(|e| Error::io(&jsonl, e))?;
        for (i, line) in body.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let ex = (|| {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
                let g = v["gold_label"].as_str().unwrap_or("-");
                if g == "-" {
                    return Ok(None);
                }
                let s = |k: &str| text(v[k].as_str().unwrap_or(""), k);
                Ok(Some(Example {
                    input: Input::Ordered { premise: s("sentence1")?, hypothesis: s("sentence2")? },
                    target: class(def, g)?,
                }))
            })();
            match ex {
                Ok(None) => {}
                Ok(Some(e)) => b.push(&jsonl, i + 1, Ok(e))?,
                Err(m) => b.push(&jsonl, i + 1, Err(m))?,
            }
        }
        b.split.files.push(jsonl);
        return Ok(());
    }
    let paths: Vec<PathBuf> =
        ["s1", "s2", "labels"].iter().map(|p| dir.join(format!("{p}.{split}"))).collect();
    for p in &paths {
        if !p.exists() {
            return Err(Error::MissingSplit {
                path: dir.to_path_buf(),
                msg: format!(
                    "expected snli_1.0_{split}.jsonl, or s1.{split}, s2.{split} and labels.{split}"
                ),
            });
        }
    }
    let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| Error::io(p, e));
    let (s1, s2, lab) = (read(&paths[0])?, read(&paths[1])?, read(&paths[2])?);
    let (s1, s2, lab): (Vec<&str>, Vec<&str>, Vec<&str>) =
        (s1.lines().collect(), s2.lines().collect(), lab.lines().collect());
    if s1.len() != s2.len() || s1.len() != lab.len() {
        return Err(Error::invalid(
            &paths[2],
            format!(
                "the parallel files disagree: {} premises, {} hypotheses, {} labels",
                s1.len(),
                s2.len(),
                lab.len()
            ),
        ));
    }
    for i in 0..s1.len() {
        if lab[i].trim() == "-" {
            continue;
        }
        let ex = (|| {
            Ok(Example {
                input: Input::Ordered {
                    premise: text(s1[i], "premise")?,
                    hypothesis: text(s2[i], "hypothesis")?,
                },
                target: class(def, lab[i])?,
            })
        })();
        b.push(&paths[2], i + 1, ex)?;
    }
    b.split.files.extend(paths);
    Ok(())
}
