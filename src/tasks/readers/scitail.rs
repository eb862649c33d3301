//! SciTail: the TSV release or the SNLI-format JSON lines.

use super::rows::{Builder, class, read_delimited, split_file, text};
use super::{Split, TaskDef};
use crate::error::{Error, Result};
use crate::tasks::{Example, Input};
use std::path::Path;

/// SciTail: the TSV release (`scitail_1.0_{split}.tsv` or `{split}.tsv`: premise, hypothesis,
/// label; no header) or the SNLI-format JSON lines (`scitail_1.0_{split}.txt` / `.jsonl`).
pub(super) fn read(
    def: &TaskDef,
    dir: &Path,
    split: &str,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    let tsv = [format!("scitail_1.0_{split}.tsv"), format!("{split}.tsv")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists());
    let mut b = Builder { skip_bad, split: out };
    if let Some(path) = tsv {
        let rows = read_delimited(&path, b'\t', false, false)?;
        for (line, row) in &rows.rows {
            let ex = (|| {
                if row.len() != 3 {
                    return Err(format!(
                        "{} columns, expected 3 (premise, hypothesis, label)",
                        row.len()
                    ));
                }
                Ok(Example {
                    input: Input::Ordered {
                        premise: text(&row[0], "premise")?,
                        hypothesis: text(&row[1], "hypothesis")?,
                    },
                    target: class(def, &row[2])?,
                })
            })();
            b.push(&path, *line, ex)?;
        }
        b.split.files.push(path);
        return Ok(());
    }
    let names = [
        format!("scitail_1.0_{split}.txt"),
        format!("scitail_1.0_{split}.jsonl"),
        format!("{split}.jsonl"),
    ];
    let path = split_file(dir, &names.iter().map(String::as_str).collect::<Vec<_>>())?;
    let body = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    for (i, line) in body.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let ex = (|| {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
            let s = |k: &str| text(v[k].as_str().unwrap_or(""), k);
            Ok(Example {
                input: Input::Ordered { premise: s("sentence1")?, hypothesis: s("sentence2")? },
                target: class(def, v["gold_label"].as_str().unwrap_or(""))?,
            })
        })();
        b.push(&path, i + 1, ex)?;
    }
    b.split.files.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{read_split, task};
    use crate::tasks::Target;

    #[test]
    fn scitail_in_its_published_forms() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(
            p.join("scitail_1.0_train.tsv"),
            "Plants need light.\tPlants require light.\tentails\nA\tB\tneutral\n",
        )
        .unwrap();
        let sci = task("SciTail").unwrap();
        let s = read_split(&sci, p, "train", false).unwrap();
        assert_eq!(s.examples.len(), 2);
        assert_eq!(s.examples[1].target, Target::Class(1));
        std::fs::write(
            p.join("scitail_1.0_dev.txt"),
            "{\"sentence1\": \"A\", \"sentence2\": \"B\", \"gold_label\": \"entails\"}\n",
        )
        .unwrap();
        assert_eq!(read_split(&sci, p, "dev", false).unwrap().examples[0].target, Target::Class(0));
    }
}
