//! Readers for the paper's datasets in their usual public forms, producing typed examples.
//! Each error names the file and line and says what to do; `skip_bad_rows` counts instead.

use crate::error::{Error, Result};
use crate::tasks::{Example, HeadKind, Input, Target};
use std::path::{Path, PathBuf};

/// How a task is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    /// F1 of the positive class (and accuracy).
    F1,
    Matthews,
    /// Pearson and Spearman correlations.
    Correlation,
}

/// A task: its head, labels and metric, and for a user's own task the format of its files.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskDef {
    pub name: String,
    pub kind: HeadKind,
    /// Class names in index order (classification); empty otherwise.
    pub labels: Vec<String>,
    pub metric: Metric,
    /// Set for `custom` tasks: which columns hold what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Custom>,
}

impl TaskDef {
    /// Outputs of the head: the classes, or 1 (a score per candidate, or a regression value).
    pub fn n_out(&self) -> usize {
        if self.kind == HeadKind::Classify {
            self.labels.len()
        } else {
            1
        }
    }
}

/// The shape of a user's task.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// One text, a class.
    Single,
    /// Premise and hypothesis, a class.
    Ordered,
    /// Two texts in no order (both orders summed), a class.
    Unordered,
    /// A context, an optional question, candidates; the label is the right one (0-based index
    /// or its text).
    Choice,
    /// Two texts in no order, a real-valued score.
    Regression,
}

/// Columns of a user's task files (`{split}.tsv`, `.csv` with a header, or `.jsonl`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Custom {
    pub shape: Shape,
    pub text_a: String,
    pub text_b: Option<String>,
    pub choices: Vec<String>,
    pub label: String,
}

struct Builtin {
    name: &'static str,
    kind: HeadKind,
    labels: &'static [&'static str],
    metric: Metric,
}

const NLI3: &[&str] = &["entailment", "neutral", "contradiction"];
const ENT2: &[&str] = &["entailment", "not_entailment"];
const BIN: &[&str] = &["0", "1"];

const TASKS: &[Builtin] = &[
    Builtin {
        name: "cola",
        kind: HeadKind::Classify,
        labels: BIN,
        metric: Metric::Matthews,
    },
    Builtin {
        name: "sst2",
        kind: HeadKind::Classify,
        labels: BIN,
        metric: Metric::Accuracy,
    },
    Builtin {
        name: "mrpc",
        kind: HeadKind::Classify,
        labels: BIN,
        metric: Metric::F1,
    },
    Builtin {
        name: "qqp",
        kind: HeadKind::Classify,
        labels: BIN,
        metric: Metric::F1,
    },
    Builtin {
        name: "stsb",
        kind: HeadKind::Regress,
        labels: &[],
        metric: Metric::Correlation,
    },
    Builtin {
        name: "mnli",
        kind: HeadKind::Classify,
        labels: NLI3,
        metric: Metric::Accuracy,
    },
    Builtin {
        name: "qnli",
        kind: HeadKind::Classify,
        labels: ENT2,
        metric: Metric::Accuracy,
    },
    Builtin {
        name: "rte",
        kind: HeadKind::Classify,
        labels: ENT2,
        metric: Metric::Accuracy,
    },
    Builtin {
        name: "wnli",
        kind: HeadKind::Classify,
        labels: BIN,
        metric: Metric::Accuracy,
    },
    Builtin {
        name: "snli",
        kind: HeadKind::Classify,
        labels: NLI3,
        metric: Metric::Accuracy,
    },
    Builtin {
        name: "scitail",
        kind: HeadKind::Classify,
        labels: &["entails", "neutral"],
        metric: Metric::Accuracy,
    },
    Builtin {
        name: "race",
        kind: HeadKind::Choice,
        labels: &[],
        metric: Metric::Accuracy,
    },
    Builtin {
        name: "storycloze",
        kind: HeadKind::Choice,
        labels: &[],
        metric: Metric::Accuracy,
    },
];

/// The task called `name` (case and `-`/`_` ignored: `SST-2`, `sst2`, `STS_B` all work).
pub fn task(name: &str) -> Result<TaskDef> {
    let key: String = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    let b = TASKS.iter().find(|t| t.name == key).ok_or_else(|| {
        let names: Vec<&str> = TASKS.iter().map(|t| t.name).collect();
        Error::Config(format!("unknown task {name:?}; known tasks: {}, or custom (with --type and the column options)", names.join(", ")))
    })?;
    Ok(TaskDef {
        name: b.name.to_string(),
        kind: b.kind,
        labels: b.labels.iter().map(|l| l.to_string()).collect(),
        metric: b.metric,
        custom: None,
    })
}

/// A user's task: the head and metric follow the shape; class labels are the distinct values
/// of the label column in the train split, sorted.
pub fn custom_task(dir: &Path, c: Custom) -> Result<TaskDef> {
    if c.shape == Shape::Choice && c.choices.len() < 2 {
        return Err(Error::Config(
            "--type choice needs --choices with at least two columns".into(),
        ));
    }
    if matches!(
        c.shape,
        Shape::Ordered | Shape::Unordered | Shape::Regression
    ) && c.text_b.is_none()
    {
        return Err(Error::Config(
            format!("--type {:?} needs --text-b", c.shape).to_lowercase(),
        ));
    }
    let (kind, metric) = match c.shape {
        Shape::Choice => (HeadKind::Choice, Metric::Accuracy),
        Shape::Regression => (HeadKind::Regress, Metric::Correlation),
        _ => (HeadKind::Classify, Metric::Accuracy),
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
            .filter_map(|(_, r)| r.get(&c.label).map(|v| v.trim().to_string()))
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

/// The rows of a custom split file as column → value maps, with their line numbers.
fn custom_rows(dir: &Path, split: &str) -> Result<(PathBuf, Vec<(usize, Record)>)> {
    let names = [
        format!("{split}.tsv"),
        format!("{split}.csv"),
        format!("{split}.jsonl"),
    ];
    let path = split_file(dir, &names.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "jsonl") {
        let body = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        for (i, line) in body
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::invalid(&path, format!("line {}: not JSON ({e})", i + 1)))?;
            let obj = v.as_object().ok_or_else(|| {
                Error::invalid(&path, format!("line {}: not a JSON object", i + 1))
            })?;
            let rec = obj
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect();
            out.push((i + 1, rec));
        }
    } else {
        let tsv = path.extension().is_some_and(|e| e == "tsv");
        let rows = read_delimited(&path, if tsv { b'\t' } else { b',' }, !tsv, true)?;
        for (line, row) in rows.rows {
            out.push((line, rows.header.iter().cloned().zip(row).collect()));
        }
    }
    Ok((path, out))
}

fn read_custom(
    def: &TaskDef,
    c: &Custom,
    dir: &Path,
    split: &str,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    let (path, rows) = custom_rows(dir, split)?;
    let mut b = Builder {
        skip_bad,
        split: out,
    };
    for (line, r) in &rows {
        let ex = (|| {
            let get = |k: &str| {
                r.get(k)
                    .map(String::as_str)
                    .ok_or_else(|| format!("no column {k:?}"))
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
                (Some(v), Shape::Regression, _) => Target::Score(v.parse::<f32>().map_err(|_| format!("score {v:?} is not a number"))?),
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

/// Examples of one split, and how many bad rows were skipped.
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub examples: Vec<Example>,
    pub skipped: usize,
    pub files: Vec<PathBuf>,
}

struct Rows {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

fn read_delimited(path: &Path, delim: u8, quoting: bool, header: bool) -> Result<Rows> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::invalid(
            path,
            format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        )
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
    let header = if header && !rows.is_empty() {
        rows.remove(0).1
    } else {
        Vec::new()
    };
    Ok(Rows {
        path: path.to_path_buf(),
        header,
        rows,
    })
}

impl Rows {
    fn col(&self, names: &[&str]) -> Result<usize> {
        self.header
            .iter()
            .position(|h| names.contains(&h.trim()))
            .ok_or_else(|| {
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
struct Builder<'a> {
    skip_bad: bool,
    split: &'a mut Split,
}

impl Builder<'_> {
    fn push(
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

fn text(s: &str, what: &str) -> std::result::Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        Err(format!("empty {what}"))
    } else {
        Ok(t.to_string())
    }
}

fn class(def: &TaskDef, s: &str) -> std::result::Result<Target, String> {
    let s = s.trim();
    def.labels
        .iter()
        .position(|l| l == s)
        .map(Target::Class)
        .ok_or_else(|| format!("unknown label {s:?}; expected one of {:?}", def.labels))
}

fn cell(row: &[String], i: usize, ncols: usize) -> std::result::Result<&str, String> {
    row.get(i)
        .map(String::as_str)
        .ok_or_else(|| format!("{} columns, expected {ncols}", row.len()))
}

/// GLUE-style TSV (no quoting, as GLUE writes it): `cols` are the header names of the text
/// columns and of the label (`None` for unlabelled test files).
fn glue(
    def: &TaskDef,
    path: &Path,
    text_cols: &[&[&str]],
    label_col: Option<&[&str]>,
    skip_bad: bool,
    split: &mut Split,
) -> Result<()> {
    let rows = read_delimited(path, b'\t', false, true)?;
    let tc: Vec<usize> = text_cols
        .iter()
        .map(|n| rows.col(n))
        .collect::<Result<_>>()?;
    let lc = match label_col {
        Some(n) => Some(rows.col(n)?),
        None => None,
    };
    let ncols = rows.header.len();
    let mut b = Builder { skip_bad, split };
    for (line, row) in &rows.rows {
        let ex = (|| {
            if row.len() < ncols {
                return Err(format!("{} columns, expected {ncols}", row.len()));
            }
            let texts: Vec<String> = tc
                .iter()
                .map(|&i| text(cell(row, i, ncols)?, "text"))
                .collect::<std::result::Result<_, _>>()?;
            let target = match lc {
                None => Target::None,
                Some(i) if def.kind == HeadKind::Regress => {
                    let v = cell(row, i, ncols)?;
                    Target::Score(
                        v.trim()
                            .parse::<f32>()
                            .map_err(|_| format!("score {v:?} is not a number"))?,
                    )
                }
                Some(i) => class(def, cell(row, i, ncols)?)?,
            };
            let input = match (texts.len(), def.name.as_str()) {
                (1, _) => Input::Single(texts[0].clone()),
                (_, "mrpc" | "qqp" | "stsb") => Input::Unordered {
                    a: texts[0].clone(),
                    b: texts[1].clone(),
                },
                _ => Input::Ordered {
                    premise: texts[0].clone(),
                    hypothesis: texts[1].clone(),
                },
            };
            Ok(Example { input, target })
        })();
        b.push(path, *line, ex)?;
    }
    Ok(())
}

/// GLUE files with a header: the text columns and the label column of each task.
type GlueColumns = (&'static [&'static [&'static str]], &'static [&'static str]);

fn glue_columns(task: &str) -> Option<GlueColumns> {
    Some(match task {
        "cola" | "sst2" => (&[&["sentence"]], &["label"]),
        "mrpc" => (&[&["#1 String"], &["#2 String"]], &["Quality"]),
        "qqp" => (&[&["question1"], &["question2"]], &["is_duplicate"]),
        "stsb" => (&[&["sentence1"], &["sentence2"]], &["score"]),
        "mnli" => (&[&["sentence1"], &["sentence2"]], &["gold_label"]),
        "qnli" => (&[&["question"], &["sentence"]], &["label"]),
        "rte" | "wnli" => (&[&["sentence1"], &["sentence2"]], &["label"]),
        _ => return None,
    })
}

fn split_file(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .ok_or_else(|| Error::MissingSplit {
            path: dir.to_path_buf(),
            msg: format!("expected one of {names:?} here"),
        })
}

/// Reads split `split` (`train`, `dev`, `test`; MNLI also `dev_mismatched`) of task `def`
/// from `dir`. A GLUE task also reads any other labelled `{split}.tsv` in its folder (e.g.
/// SST-2's third-party `test-labeled.tsv`), in the train file's columns.
pub fn read_split(def: &TaskDef, dir: &Path, split: &str, skip_bad: bool) -> Result<Split> {
    let mut out = Split::default();
    let test = split == "test";
    let extra_glue = def.custom.is_none()
        && glue_columns(&def.name).is_some()
        && !split.is_empty()
        && split
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && dir.join(format!("{split}.tsv")).is_file();
    let name = match split {
        "train" | "dev" | "test" | "dev_mismatched" => split,
        other if extra_glue => other,
        other => {
            return Err(Error::Config(format!(
                "unknown split {other:?}: use train, dev or test (dev_mismatched for MNLI; for a \
                 GLUE task, NAME for a labelled NAME.tsv beside them)"
            )));
        }
    };
    if let Some(c) = &def.custom {
        read_custom(def, c, dir, name, skip_bad, &mut out)?;
        if out.examples.is_empty() {
            return Err(Error::invalid(
                out.files.first().map_or(dir, |p| p.as_path()),
                format!("no examples in the {split} split"),
            ));
        }
        return Ok(out);
    }
    match def.name.as_str() {
        "cola" if !test => {
            let path = split_file(dir, &[&format!("{name}.tsv")])?;
            let rows = read_delimited(&path, b'\t', false, false)?;
            let mut b = Builder {
                skip_bad,
                split: &mut out,
            };
            for (line, row) in &rows.rows {
                let ex = (|| {
                    if row.len() != 4 {
                        return Err(format!(
                            "{} columns, expected 4 (source, label, mark, sentence)",
                            row.len()
                        ));
                    }
                    Ok(Example {
                        input: Input::Single(text(&row[3], "sentence")?),
                        target: class(def, &row[1])?,
                    })
                })();
                b.push(&path, *line, ex)?;
            }
            out.files.push(path);
        }
        name_ if let Some((texts, label)) = glue_columns(name_) => {
            let file = match (name_, name) {
                ("mnli", "dev") => "dev_matched.tsv".to_string(),
                ("mnli", "test") => "test_matched.tsv".to_string(),
                (_, split) => format!("{split}.tsv"),
            };
            let path = split_file(dir, &[&file])?;
            glue(
                def,
                &path,
                texts,
                (!test).then_some(label),
                skip_bad,
                &mut out,
            )?;
            out.files.push(path);
        }
        "snli" => read_snli(def, dir, name, skip_bad, &mut out)?,
        "storycloze" => read_story_cloze(dir, name, skip_bad, &mut out)?,
        "scitail" => read_scitail(def, dir, name, skip_bad, &mut out)?,
        "race" => read_race(dir, name, skip_bad, &mut out)?,
        other => {
            return Err(Error::Config(format!(
                "task {other}: no reader yet for its files"
            )));
        }
    }
    if out.examples.is_empty() {
        return Err(Error::invalid(
            out.files.first().map_or(dir, |p| p.as_path()),
            format!("no examples in the {split} split"),
        ));
    }
    Ok(out)
}

/// SNLI: the jsonl release (`snli_1.0_{split}.jsonl`) or three parallel files `s1.{split}`,
/// `s2.{split}`, `labels.{split}`. Pairs without a gold label (`-`) are left out, as usual.
fn read_snli(
    def: &TaskDef,
    dir: &Path,
    split: &str,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    let jsonl = dir.join(format!("snli_1.0_{split}.jsonl"));
    let mut b = Builder {
        skip_bad,
        split: out,
    };
    if jsonl.exists() {
        let body = std::fs::read_to_string(&jsonl).map_err(|e| Error::io(&jsonl, e))?;
        for (i, line) in body
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let ex = (|| {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
                let g = v["gold_label"].as_str().unwrap_or("-");
                if g == "-" {
                    return Ok(None);
                }
                let s = |k: &str| text(v[k].as_str().unwrap_or(""), k);
                Ok(Some(Example {
                    input: Input::Ordered {
                        premise: s("sentence1")?,
                        hypothesis: s("sentence2")?,
                    },
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
    let paths: Vec<PathBuf> = ["s1", "s2", "labels"]
        .iter()
        .map(|p| dir.join(format!("{p}.{split}")))
        .collect();
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
    let (s1, s2, lab): (Vec<&str>, Vec<&str>, Vec<&str>) = (
        s1.lines().collect(),
        s2.lines().collect(),
        lab.lines().collect(),
    );
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

/// SciTail: the TSV release (`scitail_1.0_{split}.tsv` or `{split}.tsv`: premise, hypothesis,
/// label; no header) or the SNLI-format JSON lines (`scitail_1.0_{split}.txt` / `.jsonl`).
fn read_scitail(
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
    let mut b = Builder {
        skip_bad,
        split: out,
    };
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
    for (i, line) in body
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let ex = (|| {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
            let s = |k: &str| text(v[k].as_str().unwrap_or(""), k);
            Ok(Example {
                input: Input::Ordered {
                    premise: s("sentence1")?,
                    hypothesis: s("sentence2")?,
                },
                target: class(def, v["gold_label"].as_str().unwrap_or(""))?,
            })
        })();
        b.push(&path, i + 1, ex)?;
    }
    b.split.files.push(path);
    Ok(())
}

/// RACE: `{split}/**/*.txt` (or `.json`), each a JSON object with `article`, `questions`,
/// `options` (four per question) and `answers` (letters); one example per question.
fn read_race(dir: &Path, split: &str, skip_bad: bool, out: &mut Split) -> Result<()> {
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
    let mut b = Builder {
        skip_bad,
        split: out,
    };
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
                        a.iter()
                            .map(|o| o.as_str().unwrap_or("").trim().to_string())
                            .collect()
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

/// Story Cloze (spring 2016 csv). As the original code: train on the first 1,497 stories of the
/// validation file, validate on its other 374, test on the test file.
fn read_story_cloze(dir: &Path, split: &str, skip_bad: bool, out: &mut Split) -> Result<()> {
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
    let path = if split == "test" {
        find("test")?
    } else {
        find("val")?
    };
    let rows = read_delimited(&path, b',', true, true)?;
    let c = |n: &str| rows.col(&[n]);
    let (s, q1, q2, ans) = (
        [
            c("InputSentence1")?,
            c("InputSentence2")?,
            c("InputSentence3")?,
            c("InputSentence4")?,
        ],
        c("RandomFifthSentenceQuiz1")?,
        c("RandomFifthSentenceQuiz2")?,
        c("AnswerRightEnding")?,
    );
    let range = match split {
        "train" => 0..1497.min(rows.rows.len()),
        "dev" => 1497.min(rows.rows.len())..rows.rows.len(),
        _ => 0..rows.rows.len(),
    };
    let mut b = Builder {
        skip_bad,
        split: out,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glue_readers_and_their_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("train.tsv"), "index\tsentence1\tsentence2\tlabel\n0\tA man.\tA person.\tentailment\n1\tX\tY\tnot_entailment\n").unwrap();
        let rte = task("RTE").unwrap();
        let s = read_split(&rte, p, "train", false).unwrap();
        assert_eq!(s.examples.len(), 2);
        assert_eq!(s.examples[1].target, Target::Class(1));
        assert!(
            matches!(&s.examples[0].input, Input::Ordered { premise, .. } if premise == "A man.")
        );
        std::fs::write(p.join("dev.tsv"), "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tmaybe\n1\tA\n2\t\tB\tentailment\n3\tC\tD\tentailment\n").unwrap();
        let e = read_split(&rte, p, "dev", false).unwrap_err().to_string();
        assert!(
            e.contains("dev.tsv") && e.contains("line 2") && e.contains("unknown label \"maybe\""),
            "{e}"
        );
        let s = read_split(&rte, p, "dev", true).unwrap();
        assert_eq!((s.examples.len(), s.skipped), (1, 3));
        assert!(
            read_split(&rte, p, "test", false)
                .unwrap_err()
                .to_string()
                .contains("missing split file")
        );
        // Another labelled file beside them reads by its name; an absent one is an unknown split.
        std::fs::copy(p.join("train.tsv"), p.join("extra-1.tsv")).unwrap();
        assert_eq!(
            read_split(&rte, p, "extra-1", false)
                .unwrap()
                .examples
                .len(),
            2
        );
        for bad in ["extra-2", "../train", ""] {
            let e = read_split(&rte, p, bad, false).unwrap_err().to_string();
            assert!(e.contains("unknown split"), "{bad}: {e}");
        }
        assert!(
            task("nope")
                .unwrap_err()
                .to_string()
                .contains("known tasks")
        );
        // MRPC's header starts with a byte-order mark; it is an unordered pair.
        std::fs::write(
            p.join("train.tsv"),
            "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA \"quoted\" one.\tB\n",
        )
        .unwrap();
        let s = read_split(&task("mrpc").unwrap(), p, "train", false).unwrap();
        assert!(
            matches!(&s.examples[0].input, Input::Unordered { a, .. } if a == "A \"quoted\" one.")
        );
        // CoLA has no header.
        std::fs::write(
            p.join("train.tsv"),
            "gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tBad one.\n",
        )
        .unwrap();
        let s = read_split(&task("cola").unwrap(), p, "train", false).unwrap();
        assert_eq!(s.examples[1].target, Target::Class(0));
    }

    #[test]
    fn scitail_and_race_in_their_published_forms() {
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
        assert_eq!(
            read_split(&sci, p, "dev", false).unwrap().examples[0].target,
            Target::Class(0)
        );
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
        let e = read_split(&task("race").unwrap(), &race, "dev", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2.txt") && e.contains("only 2 options"), "{e}");
    }
}
