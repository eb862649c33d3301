//! The paper's datasets in their usual public forms, read into typed examples, and a user's
//! own task. Every built-in task is one row of [`TASKS`]: its name, shape, labels, metric,
//! split names, reader and a description for the help and the docs. Adding a task is one row,
//! plus a reader file when its files are of a new kind. Each error names the file and line and
//! says what to do; `skip_bad_rows` counts bad rows instead.

mod custom;
mod glue;
mod race;
mod rows;
mod scitail;
mod snli;
mod story_cloze;

pub use custom::{Custom, custom_task};
pub use glue::{Glue, Headerless};

use crate::error::{Error, Result};
use crate::tasks::{Example, HeadKind};
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
        if self.kind == HeadKind::Classify { self.labels.len() } else { 1 }
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

impl TaskDef {
    /// The split names of the task, in the order `data stats` reports them.
    pub fn splits(&self) -> &'static [&'static str] {
        match builtin(&self.name) {
            Some(b) if self.custom.is_none() => b.splits,
            _ => SPLITS,
        }
    }
}

impl Shape {
    /// The head a task of this shape trains.
    pub fn head(self) -> HeadKind {
        match self {
            Shape::Choice => HeadKind::Choice,
            Shape::Regression => HeadKind::Regress,
            Shape::Single | Shape::Ordered | Shape::Unordered => HeadKind::Classify,
        }
    }

    /// The shape in words, as the docs name it.
    pub fn describe(self) -> &'static str {
        match self {
            Shape::Single => "single",
            Shape::Ordered => "ordered pair",
            Shape::Unordered => "unordered pair",
            Shape::Choice => "multiple choice",
            Shape::Regression => "regression",
        }
    }
}

impl Metric {
    /// The metric in words: the main figure, and what else is reported.
    pub fn describe(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::F1 => "F1 (and accuracy)",
            Metric::Matthews => "Matthews",
            Metric::Correlation => "Pearson (and Spearman)",
        }
    }
}

/// Examples of one split, and how many bad rows were skipped.
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub examples: Vec<Example>,
    pub skipped: usize,
    pub files: Vec<PathBuf>,
}

/// Reads split `split` of task `def` (already checked to be one of its kind) from `dir`,
/// appending to `out`.
pub type ReadFn =
    fn(def: &TaskDef, dir: &Path, split: &str, skip_bad: bool, out: &mut Split) -> Result<()>;

/// How a task's files are read.
#[derive(Clone, Copy, Debug)]
pub enum Reader {
    /// GLUE's TSV files, by the columns and file names given. Such a task also reads any other
    /// labelled `NAME.tsv` in its folder as split `NAME`.
    Glue(Glue),
    /// Files of the task's own layout, by its own reader.
    Own(ReadFn),
}

/// One built-in task: a row of [`TASKS`].
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    /// What `--task` takes (lowercase letters and digits; `task` ignores case, `-` and `_`).
    pub name: &'static str,
    /// The name as its authors write it.
    pub title: &'static str,
    /// The inputs; the shape also fixes the head ([`Shape::head`]).
    pub shape: Shape,
    /// Class names in index order (classification); empty otherwise.
    pub labels: &'static [&'static str],
    pub metric: Metric,
    /// The split names, in the order `data stats` reports them.
    pub splits: &'static [&'static str],
    pub reader: Reader,
    /// One line: the task's full name and what it asks (the `--task` long help).
    pub about: &'static str,
    /// The files it reads, for the docs.
    pub files: &'static str,
}

impl Builtin {
    /// The head the task trains.
    pub fn kind(&self) -> HeadKind {
        self.shape.head()
    }
}

/// The split names of every task but MNLI, and of a user's task.
pub const SPLITS: &[&str] = &["train", "dev", "test"];

const NLI3: &[&str] = &["entailment", "neutral", "contradiction"];
const ENT2: &[&str] = &["entailment", "not_entailment"];
const BIN: &[&str] = &["0", "1"];

/// A GLUE task whose files are all `{split}.tsv` with a header.
const fn glue_tsv(
    texts: &'static [&'static [&'static str]],
    label: &'static [&'static str],
) -> Reader {
    Reader::Glue(Glue { texts, label, files: &[], headerless: None })
}

/// The built-in tasks.
pub const TASKS: &[Builtin] = &[
    Builtin {
        name: "cola",
        title: "CoLA",
        shape: Shape::Single,
        labels: BIN,
        metric: Metric::Matthews,
        splits: SPLITS,
        reader: Reader::Glue(Glue {
            texts: &[&["sentence"]],
            label: &["label"],
            files: &[],
            headerless: Some(Headerless {
                columns: &["source", "label", "mark", "sentence"],
                text: 3,
                label: 1,
            }),
        }),
        about: "CoLA, the Corpus of Linguistic Acceptability: is the sentence grammatical (1) or not (0)",
        files: "`train.tsv`, `dev.tsv` (no header: source, label, mark, sentence), `test.tsv` (header: `index`, `sentence`)",
    },
    Builtin {
        name: "sst2",
        title: "SST-2",
        shape: Shape::Single,
        labels: BIN,
        metric: Metric::Accuracy,
        splits: SPLITS,
        reader: glue_tsv(&[&["sentence"]], &["label"]),
        about: "SST-2, the Stanford Sentiment Treebank: is the sentence negative (0) or positive (1)",
        files: "`train.tsv`, `dev.tsv`, `test.tsv` (GLUE TSV: `sentence`, `label`)",
    },
    Builtin {
        name: "mrpc",
        title: "MRPC",
        shape: Shape::Unordered,
        labels: BIN,
        metric: Metric::F1,
        splits: SPLITS,
        reader: glue_tsv(&[&["#1 String"], &["#2 String"]], &["Quality"]),
        about: "MRPC, the Microsoft Research Paraphrase Corpus: are the two sentences paraphrases (1)",
        files: "`train.tsv`, `dev.tsv`, `test.tsv` (GLUE TSV: `#1 String`, `#2 String`, `Quality`; the header starts with a byte-order mark)",
    },
    Builtin {
        name: "qqp",
        title: "QQP",
        shape: Shape::Unordered,
        labels: BIN,
        metric: Metric::F1,
        splits: SPLITS,
        reader: glue_tsv(&[&["question1"], &["question2"]], &["is_duplicate"]),
        about: "QQP, Quora Question Pairs: do the two questions ask the same (1)",
        files: "`train.tsv`, `dev.tsv`, `test.tsv` (GLUE TSV: `question1`, `question2`, `is_duplicate`)",
    },
    Builtin {
        name: "stsb",
        title: "STS-B",
        shape: Shape::Regression,
        labels: &[],
        metric: Metric::Correlation,
        splits: SPLITS,
        reader: glue_tsv(&[&["sentence1"], &["sentence2"]], &["score"]),
        about: "STS-B, the Semantic Textual Similarity Benchmark: how alike the two sentences are, 0 to 5",
        files: "`train.tsv`, `dev.tsv`, `test.tsv` (GLUE TSV: `sentence1`, `sentence2`, `score`)",
    },
    Builtin {
        name: "mnli",
        title: "MNLI",
        shape: Shape::Ordered,
        labels: NLI3,
        metric: Metric::Accuracy,
        splits: &["train", "dev", "dev_mismatched", "test"],
        reader: Reader::Glue(Glue {
            texts: &[&["sentence1"], &["sentence2"]],
            label: &["gold_label"],
            files: &[("dev", "dev_matched.tsv"), ("test", "test_matched.tsv")],
            headerless: None,
        }),
        about: "MNLI, Multi-Genre NLI: does the premise entail the hypothesis, contradict it, or neither",
        files: "`train.tsv`, `dev_matched.tsv` (dev), `dev_mismatched.tsv`, `test_matched.tsv` (test) (GLUE TSV: `sentence1`, `sentence2`, `gold_label`)",
    },
    Builtin {
        name: "qnli",
        title: "QNLI",
        shape: Shape::Ordered,
        labels: ENT2,
        metric: Metric::Accuracy,
        splits: SPLITS,
        reader: glue_tsv(&[&["question"], &["sentence"]], &["label"]),
        about: "QNLI, Question NLI: does the sentence hold the answer to the question",
        files: "`train.tsv`, `dev.tsv`, `test.tsv` (GLUE TSV: `question`, `sentence`, `label`)",
    },
    Builtin {
        name: "rte",
        title: "RTE",
        shape: Shape::Ordered,
        labels: ENT2,
        metric: Metric::Accuracy,
        splits: SPLITS,
        reader: glue_tsv(&[&["sentence1"], &["sentence2"]], &["label"]),
        about: "RTE, Recognizing Textual Entailment: does the first sentence entail the second",
        files: "`train.tsv`, `dev.tsv`, `test.tsv` (GLUE TSV: `sentence1`, `sentence2`, `label`)",
    },
    Builtin {
        name: "wnli",
        title: "WNLI",
        shape: Shape::Ordered,
        labels: BIN,
        metric: Metric::Accuracy,
        splits: SPLITS,
        reader: glue_tsv(&[&["sentence1"], &["sentence2"]], &["label"]),
        about: "WNLI, Winograd NLI: does the sentence with the pronoun replaced follow (1)",
        files: "`train.tsv`, `dev.tsv`, `test.tsv` (GLUE TSV: `sentence1`, `sentence2`, `label`)",
    },
    Builtin {
        name: "snli",
        title: "SNLI",
        shape: Shape::Ordered,
        labels: NLI3,
        metric: Metric::Accuracy,
        splits: SPLITS,
        reader: Reader::Own(snli::read),
        about: "SNLI, the Stanford NLI corpus: entailment, neutral or contradiction (pairs without a gold label left out)",
        files: "`snli_1.0_{train,dev,test}.jsonl`, or the parallel `s1.*`/`s2.*`/`labels.*` files",
    },
    Builtin {
        name: "scitail",
        title: "SciTail",
        shape: Shape::Ordered,
        labels: &["entails", "neutral"],
        metric: Metric::Accuracy,
        splits: SPLITS,
        reader: Reader::Own(scitail::read),
        about: "SciTail, entailment from science questions: does the premise entail the hypothesis",
        files: "`scitail_1.0_{train,dev,test}.tsv` (premise, hypothesis, label; no header) or `.txt` (jsonl)",
    },
    Builtin {
        name: "race",
        title: "RACE",
        shape: Shape::Choice,
        labels: &[],
        metric: Metric::Accuracy,
        splits: SPLITS,
        reader: Reader::Own(race::read),
        about: "RACE, reading comprehension from English exams: the right one of four answers",
        files: "`train/`, `dev/`, `test/` folders of json files (article, questions, options, answers)",
    },
    Builtin {
        name: "storycloze",
        title: "Story Cloze",
        shape: Shape::Choice,
        labels: &[],
        metric: Metric::Accuracy,
        splits: SPLITS,
        reader: Reader::Own(story_cloze::read),
        about: "Story Cloze Test: the right ending of a four-sentence story, of two",
        files: "the spring 2016 val csv (train on its first 1,497 stories, validate on the other 374) and test csv",
    },
];

/// The row of the built-in task called exactly `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    TASKS.iter().find(|t| t.name == name)
}

/// The task called `name` (case and `-`/`_` ignored: `SST-2`, `sst2`, `STS_B` all work).
pub fn task(name: &str) -> Result<TaskDef> {
    let key: String =
        name.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
    let b = builtin(&key).ok_or_else(|| {
        Error::Unknown(format!(
            "unknown task {name:?}; known tasks: {}, or custom (with --type and the column options)",
            names()
        ))
    })?;
    Ok(TaskDef {
        name: b.name.to_string(),
        kind: b.kind(),
        labels: b.labels.iter().map(|l| l.to_string()).collect(),
        metric: b.metric,
        custom: None,
    })
}

/// The names of the built-in tasks, comma-separated.
fn names() -> String {
    TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// Reads split `split` (`train`, `dev`, `test`; MNLI also `dev_mismatched`) of task `def`
/// from `dir`. A GLUE task also reads any other labelled `{split}.tsv` in its folder (e.g.
/// SST-2's third-party `test-labeled.tsv`), in the train file's columns.
pub fn read_split(def: &TaskDef, dir: &Path, split: &str, skip_bad: bool) -> Result<Split> {
    let mut out = Split::default();
    let row = builtin(&def.name).filter(|_| def.custom.is_none());
    let known = TASKS.iter().any(|t| t.splits.contains(&split));
    let extra_glue = matches!(row, Some(Builtin { reader: Reader::Glue(_), .. }))
        && !split.is_empty()
        && split.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && dir.join(format!("{split}.tsv")).is_file();
    if !known && !extra_glue {
        return Err(Error::Unknown(format!(
            "unknown split {split:?}: use train, dev or test (dev_mismatched for MNLI; for a \
             GLUE task, NAME for a labelled NAME.tsv beside them)"
        )));
    }
    match (&def.custom, row) {
        (Some(c), _) => custom::read_custom(def, c, dir, split, skip_bad, &mut out)?,
        (None, Some(b)) => match &b.reader {
            Reader::Glue(g) => glue::read(def, g, b.shape, dir, split, skip_bad, &mut out)?,
            Reader::Own(read) => read(def, dir, split, skip_bad, &mut out)?,
        },
        (None, None) => {
            return Err(Error::Unknown(format!("task {}: no reader yet for its files", def.name)));
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

/// The `--task` help: the names, and `custom`.
pub fn help() -> String {
    format!(
        "The task: {}, or custom (with --type and the column options); `gpt1 data tasks` \
         lists them",
        names()
    )
}

/// The `--task` long help: [`help`], then a line per task.
pub fn long_help() -> String {
    let mut s = help();
    s.push_str(".\n");
    for t in TASKS {
        s.push_str(&format!("\n  {:<11} {}", t.name, t.about));
    }
    s.push_str(&format!("\n  {:<11} your own files, with --type and the column options", "custom"));
    s
}

/// The registry as a Markdown table (the one in docs/finetune.md).
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| task | `--task` | shape (head) | labels | metric | files |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for t in TASKS {
        let labels = match t.kind() {
            HeadKind::Classify => {
                t.labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ")
            }
            HeadKind::Regress => "a score".into(),
            HeadKind::Choice => "the right candidate".into(),
        };
        let head = match t.kind() {
            HeadKind::Classify => "classify",
            HeadKind::Regress => "regress",
            HeadKind::Choice => "choice",
        };
        s.push_str(&format!(
            "| {} | `{}` | {} ({head}) | {labels} | {} | {} |\n",
            t.title,
            t.name,
            t.shape.describe(),
            t.metric.describe(),
            t.files
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_rows_agree_with_themselves() {
        for t in TASKS {
            assert_eq!(task(t.name).unwrap().name, t.name);
            assert!(t.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
            assert_eq!(t.labels.is_empty(), t.kind() != HeadKind::Classify, "{}", t.name);
            assert!(t.splits.starts_with(&["train", "dev"]), "{}", t.name);
            assert!(!t.about.contains('|') && !t.files.contains('|'), "{}", t.name);
            if let Reader::Glue(g) = &t.reader {
                let n = if t.shape == Shape::Single { 1 } else { 2 };
                assert_eq!(g.texts.len(), n, "{}", t.name);
                for s in t.splits {
                    let f = g.file(s);
                    assert!(t.files.contains(&format!("`{f}`")), "{}: {f}", t.name);
                }
            }
        }
        assert_eq!(task("STS_B").unwrap().name, "stsb");
        assert_eq!(task("mnli").unwrap().splits().len(), 4);
        assert_eq!(task("rte").unwrap().splits(), SPLITS);
    }
}
