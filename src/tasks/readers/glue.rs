//! GLUE's TSV files (no quoting, as GLUE writes them), read by the header names of the columns
//! each task's registry row gives.

use super::rows::{Builder, cell, class, read_delimited, split_file, text};
use super::{Shape, Split, TaskDef};
use crate::error::Result;
use crate::tasks::{Example, HeadKind, Input, Target};
use std::path::Path;

/// Where a GLUE task's columns and files are. Every split reads `{split}.tsv` unless `files`
/// names another file; `test` is unlabelled.
#[derive(Clone, Copy, Debug)]
pub struct Glue {
    /// The text columns by header name (one, or the pair in order), each with its spellings.
    pub texts: &'static [&'static [&'static str]],
    /// The label column by header name.
    pub label: &'static [&'static str],
    /// Splits whose file is not `{split}.tsv`: `(split, file)`.
    pub files: &'static [(&'static str, &'static str)],
    /// Set when the labelled files (every split but `test`) have no header.
    pub headerless: Option<Headerless>,
}

/// Fixed columns of a file without a header.
#[derive(Clone, Copy, Debug)]
pub struct Headerless {
    /// What each column holds, in order.
    pub columns: &'static [&'static str],
    /// The text column.
    pub text: usize,
    /// The label column.
    pub label: usize,
}

impl Glue {
    /// The file split `split` reads.
    pub fn file(&self, split: &str) -> String {
        self.files
            .iter()
            .find(|(s, _)| *s == split)
            .map_or_else(|| format!("{split}.tsv"), |(_, f)| f.to_string())
    }
}

/// Reads split `split` of GLUE task `def`, whose inputs have shape `shape`, from `dir`.
pub(super) fn read(
    def: &TaskDef,
    g: &Glue,
    shape: Shape,
    dir: &Path,
    split: &str,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    let test = split == "test";
    let path = split_file(dir, &[&g.file(split)])?;
    match g.headerless {
        Some(h) if !test => headerless(def, &h, &path, skip_bad, out)?,
        _ => with_header(def, shape, &path, g.texts, (!test).then_some(g.label), skip_bad, out)?,
    }
    out.files.push(path);
    Ok(())
}

/// A file of fixed columns, one text and a label (CoLA's train and dev).
fn headerless(
    def: &TaskDef,
    h: &Headerless,
    path: &Path,
    skip_bad: bool,
    out: &mut Split,
) -> Result<()> {
    let rows = read_delimited(path, b'\t', false, false)?;
    let mut b = Builder { skip_bad, split: out };
    for (line, row) in &rows.rows {
        let ex = (|| {
            if row.len() != h.columns.len() {
                return Err(format!(
                    "{} columns, expected {} ({})",
                    row.len(),
                    h.columns.len(),
                    h.columns.join(", ")
                ));
            }
            Ok(Example {
                input: Input::Single(text(&row[h.text], h.columns[h.text])?),
                target: class(def, &row[h.label])?,
            })
        })();
        b.push(path, *line, ex)?;
    }
    Ok(())
}

/// A file with a header: `text_cols` are the header names of the text columns and `label_col`
/// of the label (`None` for unlabelled test files).
fn with_header(
    def: &TaskDef,
    shape: Shape,
    path: &Path,
    text_cols: &[&[&str]],
    label_col: Option<&[&str]>,
    skip_bad: bool,
    split: &mut Split,
) -> Result<()> {
    let rows = read_delimited(path, b'\t', false, true)?;
    let tc: Vec<usize> = text_cols.iter().map(|n| rows.col(n)).collect::<Result<_>>()?;
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
                    Target::Score(super::rows::score(v)?)
                }
                Some(i) => class(def, cell(row, i, ncols)?)?,
            };
            let input = match (texts.len(), shape) {
                (1, _) => Input::Single(texts[0].clone()),
                (_, Shape::Unordered | Shape::Regression) => {
                    Input::Unordered { a: texts[0].clone(), b: texts[1].clone() }
                }
                _ => Input::Ordered { premise: texts[0].clone(), hypothesis: texts[1].clone() },
            };
            Ok(Example { input, target })
        })();
        b.push(path, *line, ex)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{read_split, task};
    use crate::tasks::{Input, Target};

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
        assert_eq!(read_split(&rte, p, "extra-1", false).unwrap().examples.len(), 2);
        for bad in ["extra-2", "../train", ""] {
            let e = read_split(&rte, p, bad, false).unwrap_err().to_string();
            assert!(e.contains("unknown split"), "{bad}: {e}");
        }
        assert!(task("nope").unwrap_err().to_string().contains("known tasks"));
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
}
