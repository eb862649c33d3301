//! `gpt1 prepare`, `tokenize`, `detokenize` end to end on a small vocabulary and corpus that
//! the test writes itself.

mod common;
use common::{fails, ok, s};

use gpt1::data::TokenData;
use std::path::Path;

/// Letters a–z and '.', ',', '\'' (alone and word-final), plus merges for "th", "the</w>",
/// "he</w>".
fn write_vocab(dir: &Path) {
    common::write_letter_vocab(
        dir,
        &['.', ',', '\''],
        &[("t", "h"), ("th", "e</w>"), ("h", "e</w>")],
    );
}

/// `detokenize(tokenize(text))` through the command line.
fn round_trip(dir: &Path, text: &str) -> String {
    let ids = ok(&["tokenize", "--tokenizer", s(dir), "--text", text]);
    let mut args = vec!["detokenize", "--tokenizer", s(dir), "--ids"];
    args.extend(ids.split_whitespace());
    ok(&args).trim().to_string()
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let v = tmp.path();
    write_vocab(v);
    assert_eq!(round_trip(v, "The cat, the hat."), "the cat , the hat .");
    std::fs::write(v.join("lines.txt"), "the\r\nhe said\n\n").unwrap();
    let out = ok(&[
        "tokenize",
        "--tokenizer",
        s(v),
        "--file",
        s(&v.join("lines.txt")),
        "--json",
    ]);
    let lines: Vec<Vec<u32>> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], vec![59]);
    assert!(lines[2].is_empty());
    fails(
        &["detokenize", "--tokenizer", s(v), "--ids", "1", "x"],
        "not a token id",
    );
    fails(
        &["detokenize", "--tokenizer", s(v), "--ids", "999"],
        "outside the vocabulary",
    );
}

#[test]
fn prepare_is_deterministic_and_handles_messy_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_vocab(d);
    let corpus = d.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    // A BOM and CRLF line ends; invalid UTF-8; an empty file; a Gutenberg-style book; a non-text
    // file the directory walk skips.
    std::fs::write(
        corpus.join("a.txt"),
        b"\xEF\xBB\xBFthe cat.\r\n\r\nthe hat.\r\n",
    )
    .unwrap();
    std::fs::write(corpus.join("b.txt"), b"the \xFF bat.\n").unwrap();
    std::fs::write(corpus.join("c.txt"), b"").unwrap();
    let book = "licence text\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nthe story.\n\nhe ends.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nmore licence\n";
    std::fs::write(corpus.join("d.txt"), book).unwrap();
    for i in 0..6 {
        std::fs::write(
            corpus.join(format!("e{i}.txt")),
            "the cat sat. ".repeat(50 + i),
        )
        .unwrap();
    }
    std::fs::write(corpus.join("notes.md"), "skip me").unwrap();
    let run = |out: &str, workers: &str| {
        let js = ok(&[
            "prepare",
            "--tokenizer",
            s(d),
            "--input",
            s(&corpus),
            "--out",
            out,
            "--workers",
            workers,
            "--strip-gutenberg",
            "--val-fraction",
            "0.2",
            "--quiet",
        ]);
        serde_json::from_str::<serde_json::Value>(&js).unwrap()
    };
    let (o1, o2) = (d.join("o1"), d.join("o2"));
    let st = run(s(&o1), "1");
    run(s(&o2), "2");
    for f in ["train.bin", "val.bin"] {
        assert_eq!(
            std::fs::read(o1.join(f)).unwrap(),
            std::fs::read(o2.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(st["documents"], 10);
    assert_eq!(st["invalid_utf8"], 1);
    assert!(
        st["skipped_files"][0]
            .as_str()
            .unwrap()
            .ends_with("notes.md")
    );
    assert!(!st["val_documents"].as_array().unwrap().is_empty());
    let train = TokenData::open(&o1.join("train.bin")).unwrap();
    let val = TokenData::open(&o1.join("val.bin")).unwrap();
    assert_eq!(
        train.len() as u64 + val.len() as u64,
        st["train_tokens"].as_u64().unwrap() + st["val_tokens"].as_u64().unwrap()
    );
    assert!(!val.is_empty() && !train.is_empty());
    // The Gutenberg book contributes only "the story . he ends ." when it is in train.
    let all: Vec<u32> = (0..train.len())
        .map(|i| train.get(i))
        .chain((0..val.len()).map(|i| val.get(i)))
        .collect();
    let lic = ok(&["tokenize", "--tokenizer", s(d), "--text", "licence"]);
    let lic: Vec<u32> = lic.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(
        !all.windows(lic.len()).any(|w| w == lic.as_slice()),
        "licence text was kept"
    );
    // --strict names the file and the byte offset.
    fails(
        &[
            "prepare",
            "--tokenizer",
            s(d),
            "--input",
            s(&corpus.join("b.txt")),
            "--out",
            s(&d.join("o3")),
            "--strict",
            "--quiet",
        ],
        "invalid UTF-8 at byte 4",
    );
    // A binary file, a missing input, a directory without text, missing or malformed vocabulary.
    std::fs::write(d.join("bin.txt"), [0u8, 1, 2, 3]).unwrap();
    fails(
        &[
            "prepare",
            "--tokenizer",
            s(d),
            "--input",
            s(&d.join("bin.txt")),
            "--out",
            s(&d.join("o4")),
            "--quiet",
        ],
        "binary file",
    );
    fails(
        &[
            "prepare",
            "--tokenizer",
            s(d),
            "--input",
            s(&d.join("nope.txt")),
            "--out",
            s(&d.join("o4")),
            "--quiet",
        ],
        "no such file",
    );
    let empty = d.join("emptydir");
    std::fs::create_dir_all(&empty).unwrap();
    fails(
        &[
            "prepare",
            "--tokenizer",
            s(d),
            "--input",
            s(&empty),
            "--out",
            s(&d.join("o4")),
            "--quiet",
        ],
        "no .txt files",
    );
    fails(
        &[
            "prepare",
            "--tokenizer",
            s(&empty),
            "--input",
            s(&corpus),
            "--out",
            s(&d.join("o4")),
            "--quiet",
        ],
        "no BPE vocabulary",
    );
    let bad = d.join("badvocab");
    std::fs::create_dir_all(&bad).unwrap();
    write_vocab(&bad);
    std::fs::write(bad.join("merges.txt"), "#version: 0.2\nt h\nbroken\n").unwrap();
    fails(
        &["tokenize", "--tokenizer", s(&bad), "--text", "x"],
        "line 3",
    );
    std::fs::write(bad.join("vocab.json"), "[1, 2]").unwrap();
    fails(
        &["tokenize", "--tokenizer", s(&bad), "--text", "x"],
        "not a token → id JSON object",
    );
}

#[test]
fn tokenizer_train_learns_the_requested_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = "the theory of the thing is that there is another thing. \n".repeat(40)
        + &"she sells sea shells by the sea shore.\n".repeat(30);
    std::fs::write(d.join("a.txt"), &text).unwrap();
    let (o1, o2) = (d.join("t1"), d.join("t2"));
    let js = ok(&[
        "tokenizer",
        "train",
        "--input",
        s(&d.join("a.txt")),
        "--merges",
        "20",
        "--out",
        s(&o1),
    ]);
    let js: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert_eq!(js["merges"], 20);
    ok(&[
        "tokenizer",
        "train",
        "--input",
        s(&d.join("a.txt")),
        "--merges",
        "20",
        "--out",
        s(&o2),
    ]);
    for f in ["vocab.json", "merges.txt"] {
        assert_eq!(
            std::fs::read(o1.join(f)).unwrap(),
            std::fs::read(o2.join(f)).unwrap(),
            "{f} differs between runs"
        );
    }
    let merges = std::fs::read_to_string(o1.join("merges.txt")).unwrap();
    assert_eq!(merges.lines().count(), 21);
    assert!(
        merges.lines().nth(1).unwrap().starts_with("t h")
            || merges.lines().nth(1).unwrap().starts_with("th e")
    );
    // Frequent words become single tokens; decoding gives the normalized text back.
    let ids = ok(&[
        "tokenize",
        "--tokenizer",
        s(&o1),
        "--text",
        "The thing is there.",
    ]);
    assert!(ids.split_whitespace().count() <= 8, "{ids:?}");
    assert_eq!(
        round_trip(&o1, "The thing is there."),
        "the thing is there ."
    );
    let js = ok(&[
        "tokenizer",
        "train",
        "--input",
        s(&d.join("a.txt")),
        "--merges",
        "100000",
        "--out",
        s(&d.join("t3")),
    ]);
    let js: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert!(js["merges"].as_u64().unwrap() < 100_000);
}

#[test]
fn tokenizer_train_in_original_mode_keeps_its_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("a.txt"),
        "“Don't,” she said—it's the thing. I don't know.\n".repeat(30),
    )
    .unwrap();
    let out = d.join("t");
    ok(&[
        "tokenizer",
        "train",
        "--mode",
        "original",
        "--input",
        s(&d.join("a.txt")),
        "--merges",
        "30",
        "--out",
        s(&out),
    ]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["mode"], "original");
    // Loaded without --mode, the directory's own pipeline applies: ftfy's straight quotes and
    // spaCy's contraction split.
    assert_eq!(
        round_trip(&out, "“I don't,” she said."),
        "\" i do n't , \" she said ."
    );
}
