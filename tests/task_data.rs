//! The task readers on the real files in `GPT1_DATA` (default: the `shared/data` folder beside
//! the repository): the published counts and label distributions of each split. Skips with a
//! message when absent. And the task table in docs/finetune.md is the registry's.

use gpt1::tasks::Target;
use gpt1::tasks::readers::{markdown_table, read_split, task};
use std::path::PathBuf;

fn data_dir() -> Option<PathBuf> {
    let d = std::env::var("GPT1_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if d.join("glue").exists() {
        Some(d)
    } else {
        eprintln!(
            "skipped: no task data under {} (set GPT1_DATA to the shared data folder)",
            d.display()
        );
        None
    }
}

fn count(name: &str, dir: &str, split: &str) -> (usize, Vec<usize>) {
    let d = data_dir().unwrap();
    let def = task(name).unwrap();
    let s = read_split(&def, &d.join(dir), split, false).unwrap();
    assert_eq!(s.skipped, 0);
    let mut per = vec![0; def.labels.len().max(2)];
    for e in &s.examples {
        if let Target::Class(c) = e.target {
            per[c] += 1;
        }
    }
    (s.examples.len(), per)
}

#[test]
fn shared_task_files_read_with_their_published_counts() {
    if data_dir().is_none() {
        return;
    }
    assert_eq!(count("cola", "glue/CoLA", "train"), (8551, vec![2528, 6023]));
    assert_eq!(count("cola", "glue/CoLA", "dev"), (1043, vec![322, 721]));
    assert_eq!(count("sst2", "glue/SST-2", "train"), (67349, vec![29780, 37569]));
    assert_eq!(count("sst2", "glue/SST-2", "dev"), (872, vec![428, 444]));
    assert_eq!(count("sst2", "glue/SST-2", "test").0, 1821);
    // The third-party labelled copy of the test split (CRLF line ends), by its file name.
    assert_eq!(count("sst2", "glue/SST-2", "test-labeled"), (1821, vec![917, 904]));
    assert_eq!(count("rte", "glue/RTE", "train"), (2490, vec![1249, 1241]));
    assert_eq!(count("rte", "glue/RTE", "dev"), (277, vec![146, 131]));
    assert_eq!(count("qnli", "glue/QNLI", "dev"), (5463, vec![2702, 2761]));
    assert_eq!(count("stsb", "glue/STS-B", "train").0, 5749);
    assert_eq!(count("stsb", "glue/STS-B", "dev").0, 1500);
    assert_eq!(count("snli", "nli/snli", "dev"), (9842, vec![3329, 3235, 3278]));
    assert_eq!(count("snli", "nli/snli", "test"), (9824, vec![3368, 3219, 3237]));
    assert_eq!(count("storycloze", "storycloze", "train").0, 1497);
    assert_eq!(count("storycloze", "storycloze", "dev").0, 374);
    assert_eq!(count("storycloze", "storycloze", "test"), (1871, vec![960, 911]));
}

/// docs/finetune.md's task table, between its marker comments, is `gpt1 data tasks`' output.
#[test]
fn docs_task_table_is_the_registry() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/finetune.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- tasks:begin -->\n", "<!-- tasks:end -->");
    let start = doc.find(begin).expect("no <!-- tasks:begin --> in docs/finetune.md") + begin.len();
    let len = doc[start..].find(end).expect("no <!-- tasks:end --> in docs/finetune.md");
    assert_eq!(
        &doc[start..start + len],
        markdown_table(),
        "docs/finetune.md's task table differs from the registry: replace it by `gpt1 data tasks`"
    );
}
