//! The README's walkthrough, run: every `gpt1` line of its first `sh` block after
//! "## Walkthrough", in order, in one directory, on small inputs (a few paragraphs of text for
//! `$BOOKS`, a tiny SST-2 for `$GLUE/SST-2`) and with the sizes shrunk, so that the README
//! cannot rot. The demo and test commands at its top are run by tests/demo.rs and CI.

use std::path::Path;

/// Long runs made short; everything else is run as written.
const SHRINK: &[(&str, &str)] = &[
    ("--steps 2000", "--steps 3"),
    ("--batch 16 --seq 128", "--batch 2 --seq 32"),
    ("--eval-every 200", "--eval-every 1"),
    ("--save-every 500", "--save-every 2"),
    ("--max-len 128", "--max-len 64 --max-steps 2 --batch 4"),
    ("--max-new 40", "--max-new 4"),
];

/// The walkthrough's command lines.
fn walkthrough() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let after = readme.split("## Walkthrough").nth(1).expect("a Walkthrough section");
    let block = after.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("sh block");
    block.lines().filter(|l| l.starts_with("gpt1 ")).map(str::to_string).collect()
}

/// Splits a command line on spaces, keeping "double-quoted" words whole.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn write_inputs(d: &Path) {
    let books = d.join("books");
    std::fs::create_dir_all(&books).unwrap();
    let para = "It was a bright cold day in April, and the clocks were striking thirteen. \
                She said that she did not know where the old man had gone, and he laughed. ";
    for i in 0..4 {
        let text: String = (0..30).map(|k| format!("{para}Chapter {i}, part {k}.\n\n")).collect();
        std::fs::write(books.join(format!("book{i}.txt")), text).unwrap();
    }
    let sst = d.join("glue/SST-2");
    std::fs::create_dir_all(&sst).unwrap();
    let mut tsv = String::from("sentence\tlabel\n");
    for (t, l) in [
        ("a good film", 1),
        ("a bad film", 0),
        ("it was great fun", 1),
        ("dull and slow", 0),
        ("i loved it", 1),
        ("a waste of time", 0),
    ] {
        tsv.push_str(&format!("{t}\t{l}\n"));
    }
    std::fs::write(sst.join("train.tsv"), &tsv).unwrap();
    std::fs::write(sst.join("dev.tsv"), &tsv).unwrap();
}

#[test]
fn the_readme_walkthrough_runs() {
    let lines = walkthrough();
    assert!(lines.len() >= 6, "the walkthrough lost its commands: {lines:?}");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_inputs(d);
    for line in lines {
        let mut l = line.replace("$BOOKS", "books").replace("$GLUE", "glue");
        for (from, to) in SHRINK {
            l = l.replace(from, to);
        }
        let args = words(&l);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
            .args(&args[1..])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "README line `{line}` (run as `{l}`) failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(d.join("sst2-dev.tsv").exists());
}

/// The README renders as intended under CommonMark: every `##` line is a heading (none swallowed
/// by a code block that a stray fence left open), and every fenced block is closed.
#[test]
fn the_readme_renders_its_headings_outside_code_blocks() {
    use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut in_code = false;
    let (mut headings, mut in_heading, mut code_lines) = (Vec::new(), false, Vec::new());
    for ev in Parser::new(&readme) {
        match ev {
            Event::Start(Tag::CodeBlock(_)) => in_code = true,
            Event::End(TagEnd::CodeBlock) => in_code = false,
            Event::Start(Tag::Heading { level: HeadingLevel::H2, .. }) => {
                in_heading = true;
                headings.push(String::new());
            }
            Event::End(TagEnd::Heading(_)) => in_heading = false,
            Event::Text(t) if in_heading => headings.last_mut().unwrap().push_str(&t),
            Event::Text(t) if in_code => code_lines.extend(t.lines().map(str::to_string)),
            _ => {}
        }
    }
    let written: Vec<&str> =
        readme.lines().filter_map(|l| l.strip_prefix("## ")).filter(|l| !l.is_empty()).collect();
    assert_eq!(headings.len(), written.len(), "rendered {headings:?}, written {written:?}");
    assert!(headings.iter().any(|h| h.starts_with("Walkthrough")), "{headings:?}");
    assert!(!code_lines.iter().any(|l| l.starts_with("## ")), "a heading inside a code block");
    // Each fence opens and closes on its own line: no text after a closing fence.
    for (i, l) in readme.lines().enumerate() {
        if let Some(rest) = l.strip_prefix("```") {
            assert!(
                rest.is_empty() || rest.chars().all(|c| c.is_ascii_alphanumeric()),
                "README.md:{}: text after a fence: {l:?}",
                i + 1
            );
        }
    }
}
