//! RACE: one JSON file per article, with its questions and four options each.

use super::rows::{Builder, text};
use super::{Split, TaskDef};
use crate::error::{Error, Result};
use crate::tasks::{Example, Input, Target};
use std::path::{Path, PathBuf};

/// RACE: `{split}/**/*.txt` (or `.json`), each a JSON object with `article`, `questions`,
/// `options` (four per question) and `answers` (letters); one example per question.
pub(super) fn read(
    _def: &TaskDef,
    dir: &Path,
    split: &str,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    fn walk(d: &Path, acc: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(d).map_err(|e| Error::io(d, e))? {
            let p = e.map_err(|e| Error::io(d, e))?.path();
            if p.is_dir() {
                walk(&p, acc)?;
            } else if p.extension().is_some_and(|x| x == "txt" || x == "json") {
                acc.push(p);
            }
        }
        Ok(())
    }
    let root = dir.join(split);
    if !root.is_dir() {
        return Err(Error::MissingSplit {
            path: dir.to_path_buf(),
            msg: format!("expected a {split}/ directory of RACE json files"),
        });
    }
    let mut files = Vec::new();
    walk(&root, &mut files)?;
    files.sort();
    let mut b = Builder { skip_bad, split: out };
    for path in files {
        let body = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: serde_json::Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                b.push(&path, 1, Err(format!("not a RACE json object ({e})")))?;
                continue;
            }
        };
        let article = v["article"].as_str().unwrap_or("");
        let qs = v["questions"].as_array().cloned().unwrap_or_default();
        let opts = v["options"].as_array().cloned().unwrap_or_default();
        let answers = v["answers"].as_array().cloned().unwrap_or_default();
        if qs.is_empty() || qs.len() != opts.len() || qs.len() != answers.len() {
            b.push(
                &path,
                1,
                Err(format!(
                    "{} questions, {} option lists, {} answers: they must be equal and non-zero",
                    qs.len(),
                    opts.len(),
                    answers.len()
                )),
            )?;
            continue;
        }
        for k in 0..qs.len() {
            let ex = (|| {
                let cands: Vec<String> = opts[k]
                    .as_array()
                    .map(|a| {
                        a.iter().map(|o| o.as_str().unwrap_or("").trim().to_string()).collect()
                    })
                    .unwrap_or_default();
                if cands.len() < 2 {
                    return Err(format!("question {k}: fewer than two options"));
                }
                let letter = answers[k].as_str().unwrap_or("");
                let idx = match letter.trim().as_bytes() {
                    [c @ b'A'..=b'Z'] => (c - b'A') as usize,
                    _ => return Err(format!("question {k}: answer {letter:?} is not a letter")),
                };
                if idx >= cands.len() {
                    return Err(format!(
                        "question {k}: answer {letter} but only {} options",
                        cands.len()
                    ));
                }
                Ok(Example {
                    input: Input::Choice {
                        context: text(article, "article")?,
                        question: qs[k].as_str().unwrap_or("").trim().to_string(),
                        candidates: cands,
                    },
                    target: Target::Class(idx),
                })
            })();
            b.push(&path, 1, ex)?;
        }
        b.split.files.push(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{read_split, task};
    use crate::tasks::{Input, Target};

    #[test]
    fn race_in_its_published_form() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let race = p.join("race");
        std::fs::create_dir_all(race.join("dev/high")).unwrap();
        let doc = serde_json::json!({"article": "Tom has a cat.", "questions": ["What does Tom have?", "Who has a cat?"],
            "options": [["a dog", "a cat", "a bird", "a fish"], ["Tom", "Ann", "Bob", "Sue"]], "answers": ["B", "A"], "id": "1.txt"});
        std::fs::write(race.join("dev/high/1.txt"), doc.to_string()).unwrap();
        let s = read_split(&task("race").unwrap(), &race, "dev", false).unwrap();
        assert_eq!(s.examples.len(), 2);
        assert_eq!(s.examples[0].target, Target::Class(1));
        assert!(
            matches!(&s.examples[1].input, Input::Choice { candidates, .. } if candidates.len() == 4)
        );
        std::fs::write(
            race.join("dev/high/2.txt"),
            r#"{"article": "x", "questions": ["q"], "options": [["a", "b"]], "answers": ["E"]}"#,
        )
        .unwrap();
        let e = read_split(&task("race").unwrap(), &race, "dev", false).unwrap_err().to_string();
        assert!(e.contains("2.txt") && e.contains("only 2 options"), "{e}");
    }
}
