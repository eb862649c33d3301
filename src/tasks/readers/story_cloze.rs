//! Story Cloze: the spring 2016 csv files.

use super::rows::{Builder, cell, read_delimited, text};
use super::{Split, TaskDef};
use crate::error::{Error, Result};
use crate::tasks::{Example, Input, Target};
use std::path::{Path, PathBuf};

/// Story Cloze (spring 2016 csv). As OpenAI's original fine-tuning code: train on the first 1,497 stories of the
/// validation file, validate on its other 374, test on the test file.
pub(super) fn read(
    _def: &TaskDef,
    dir: &Path,
    split: &str,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    let find = |part: &str| -> Result<PathBuf> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut found: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy().contains(part) && n.to_string_lossy().ends_with(".csv")
                })
            })
            .collect();
        found.sort();
        found.into_iter().next().ok_or_else(|| Error::MissingSplit {
            path: dir.to_path_buf(),
            msg: format!("no *{part}*.csv (the spring 2016 Story Cloze files)"),
        })
    };
    let path = if split == "test" { find("test")? } else { find("val")? };
    let rows = read_delimited(&path, b',', true, true)?;
    let c = |n: &str| rows.col(&[n]);
    let (s, q1, q2, ans) = (
        [c("InputSentence1")?, c("InputSentence2")?, c("InputSentence3")?, c("InputSentence4")?],
        c("RandomFifthSentenceQuiz1")?,
        c("RandomFifthSentenceQuiz2")?,
        c("AnswerRightEnding")?,
    );
    let range = match split {
        "train" => 0..1497.min(rows.rows.len()),
        "dev" => 1497.min(rows.rows.len())..rows.rows.len(),
        _ => 0..rows.rows.len(),
    };
    let mut b = Builder { skip_bad, split: out };
    for (line, row) in &rows.rows[range] {
        let ncols = rows.header.len();
        let ex = (|| {
            let ctx: Vec<String> = s
                .iter()
                .map(|&i| text(cell(row, i, ncols)?, "sentence"))
                .collect::<std::result::Result<_, _>>()?;
            let a = cell(row, ans, ncols)?.trim();
            let target = match a {
                "1" => Target::Class(0),
                "2" => Target::Class(1),
                other => return Err(format!("AnswerRightEnding {other:?} is not 1 or 2")),
            };
            Ok(Example {
                input: Input::Choice {
                    context: ctx.join(" "),
                    question: String::new(),
                    candidates: vec![
                        text(cell(row, q1, ncols)?, "ending")?,
                        text(cell(row, q2, ncols)?, "ending")?,
                    ],
                },
                target,
            })
        })();
        b.push(&path, *line, ex)?;
    }
    b.split.files.push(path);
    Ok(())
}
