//! A user's own task: `--task custom` with the shape and the columns of its files.

use super::rows::{Builder, class, read_delimited, split_file, text};
use super::{Metric, Shape, Split, TaskDef};
use crate::error::{Error, Result};
use crate::tasks::{Example, HeadKind, Input, Target};
use std::path::{Path, PathBuf};

/// Columns of a user's task files (`{split}.tsv`, `.csv` with a header, or `.jsonl`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Custom {
    pub shape: Shape,
    pub text_a: String,
    pub text_b: Option<String>,
    pub choices: Vec<String>,
    pub label: String,
}

/// A user's task: the head and metric follow the shape; class labels are the distinct values
/// of the label column in the train split, sorted.
pub fn custom_task(dir: &Path, c: Custom) -> Result<TaskDef> {
    if c.shape == Shape::Choice && c.choices.len() < 2 {
        return Err(Error::setting("choices", "needs at least two columns for a choice task"));
    }
    if matches!(c.shape, Shape::Ordered | Shape::Unordered | Shape::Regression)
        && c.text_b.is_none()
    {
        let shape = format!("{:?}", c.shape).to_lowercase();
        return Err(Error::setting("text_b", format!("is needed by a {shape} task")));
    }
    let kind = c.shape.head();
    let metric = match c.shape {
        Shape::Regression => Metric::Correlation,
        _ => Metric::Accuracy,
    };
    let mut def = TaskDef {
        name: "custom".into(),
        kind,
        labels: Vec::new(),
        metric,
        custom: Some(c.clone()),
    };
    if kind == HeadKind::Classify {
        let (path, rows) = custom_rows(dir, "train")?;
        let mut labels: Vec<String> = rows
            .iter()
            .filter_map(|(_, r, _)| r.get(&c.label).map(|v| v.trim().to_string()))
            .filter(|v| !v.is_empty())
            .collect();
        labels.sort();
        labels.dedup();
        if labels.len() < 2 {
            return Err(Error::invalid(
                &path,
                format!(
                    "column {:?} has {} distinct labels; a classification task needs two or more",
                    c.label,
                    labels.len()
                ),
            ));
        }
        def.labels = labels;
    }
    Ok(def)
}

type Record = std::collections::HashMap<String, String>;

/// The columns of a JSON line whose values are not strings (`null`, numbers, objects), with
/// the value as written: fine for a label, refused as text.
type NotText = std::collections::HashMap<String, String>;

/// The rows of a custom split file as column → value maps, with their line numbers.
#[allow(clippy::type_complexity)]
fn custom_rows(dir: &Path, split: &str) -> Result<(PathBuf, Vec<(usize, Record, NotText)>)> {
    let names = [format!("{split}.tsv"), format!("{split}.csv"), format!("{split}.jsonl")];
    let path = split_file(dir, &names.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "jsonl") {
        let body = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        for (i, line) in body.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::invalid(&path, format!("line {}: not JSON ({e})", i + 1)))?;
            let obj = v.as_object().ok_or_else(|| {
                Error::invalid(&path, format!("line {}: not a JSON object", i + 1))
            })?;
            // A null is no value (an unlabelled row); other non-strings keep their JSON text.
            let rec = obj
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                })
                .collect();
            let not_text =
                obj.iter().filter(|(_, v)| !v.is_string()).map(|(k, v)| (k.clone(), v.to_string()));
            out.push((i + 1, rec, not_text.collect()));
        }
    } else {
        let tsv = path.extension().is_some_and(|e| e == "tsv");
        let rows = read_delimited(&path, if tsv { b'\t' } else { b',' }, !tsv, true)?;
        for (line, row) in rows.rows {
            out.push((line, rows.header.iter().cloned().zip(row).collect(), NotText::new()));
        }
    }
    Ok((path, out))
}

/// Reads split `split` of a user's task from `{split}.tsv`, `.csv` or `.jsonl` in `dir`.
pub(super) fn read_custom(
    def: &TaskDef,
    c: &Custom,
    dir: &Path,
    split: &str,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    let (path, rows) = custom_rows(dir, split)?;
    let mut b = Builder { skip_bad, split: out };
    for (line, r, not_text) in &rows {
        let ex = (|| {
            let get = |k: &str| match not_text.get(k) {
                Some(v) => Err(format!("column {k:?} is {v}, not text")),
                None => r.get(k).map(String::as_str).ok_or_else(|| format!("no column {k:?}")),
            };
            let a = text(get(&c.text_a)?, &c.text_a)?;
            let label = r.get(&c.label).map(|s| s.trim()).filter(|s| !s.is_empty());
            let input = match c.shape {
                Shape::Single => Input::Single(a),
                Shape::Ordered => Input::Ordered {
                    premise: a,
                    hypothesis: text(get(c.text_b.as_deref().unwrap_or(""))?, "text_b")?,
                },
                Shape::Unordered | Shape::Regression => Input::Unordered {
                    a,
                    b: text(get(c.text_b.as_deref().unwrap_or(""))?, "text_b")?,
                },
                Shape::Choice => Input::Choice {
                    context: a,
                    question: match &c.text_b {
                        Some(q) => get(q)?.trim().to_string(),
                        None => String::new(),
                    },
                    candidates: c
                        .choices
                        .iter()
                        .map(|k| text(get(k)?, k))
                        .collect::<std::result::Result<_, _>>()?,
                },
            };
            let target = match (label, c.shape, &input) {
                (None, _, _) => Target::None,
                (Some(v), Shape::Regression, _) => Target::Score(super::rows::score(v)?),
                (Some(v), Shape::Choice, Input::Choice { candidates, .. }) => match v.parse::<usize>() {
                    Ok(i) if i < candidates.len() => Target::Class(i),
                    _ => Target::Class(candidates.iter().position(|x| x == v).ok_or_else(|| format!("label {v:?} is neither a 0-based candidate index nor a candidate's text"))?),
                },
                (Some(v), _, _) => class(def, v)?,
            };
            Ok(Example { input, target })
        })();
        b.push(&path, *line, ex)?;
    }
    b.split.files.push(path);
    Ok(())
}
