//! `gpt1 prepare`, `tokenize`, `detokenize` end to end on a small vocabulary and corpus that
//! the test writes itself.

mod common;
use common::{fails, ok, s};

use gpt1::data::TokenData;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    let out = ok(&["tokenize", "--tokenizer", s(v), "--file", s(&v.join("lines.txt")), "--json"]);
    let lines: Vec<Vec<u32>> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], vec![59]);
    assert!(lines[2].is_empty());
    fails(&["detokenize", "--tokenizer", s(v), "--ids", "1", "x"], "not a token id");
    fails(&["detokenize", "--tokenizer", s(v), "--ids", "999"], "outside the vocabulary");
}

/// A vocabulary and a messy corpus in `dir`, prepared into `o1` with one worker and `o2` with
/// two; built once per test binary, and no test writes into it.
struct Prepared {
    dir: PathBuf,
    corpus: PathBuf,
    o1: PathBuf,
    o2: PathBuf,
    /// The one-worker run's JSON summary.
    stats: serde_json::Value,
}

fn prepared() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| {
        let d = common::fixture_dir("prepare-messy-corpus");
        write_vocab(&d);
        let corpus = write_messy_corpus(&d);
        let run = |out: &str, workers: &str| {
            let js = ok(&[
                "prepare",
                "--tokenizer",
                s(&d),
                "--input",
                s(&corpus),
                "--out",
                out,
                "--threads",
                workers,
                "--strip-gutenberg",
                "--val-fraction",
                "0.2",
                "--quiet",
            ]);
            serde_json::from_str::<serde_json::Value>(&js).unwrap()
        };
        let (o1, o2) = (d.join("o1"), d.join("o2"));
        let stats = run(s(&o1), "1");
        run(s(&o2), "2");
        Prepared { dir: d, corpus, o1, o2, stats }
    })
}

/// `d/corpus`: a BOM and CRLF line ends; invalid UTF-8; an empty file; a Gutenberg-style book;
/// six plain files; a non-text file the directory walk skips.
fn write_messy_corpus(d: &Path) -> PathBuf {
    let corpus = d.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("a.txt"), b"\xEF\xBB\xBFthe cat.\r\n\r\nthe hat.\r\n").unwrap();
    std::fs::write(corpus.join("b.txt"), b"the \xFF bat.\n").unwrap();
    std::fs::write(corpus.join("c.txt"), b"").unwrap();
    let book = "licence text\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nthe story.\n\nhe ends.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nmore licence\n";
    std::fs::write(corpus.join("d.txt"), book).unwrap();
    for i in 0..6 {
        std::fs::write(corpus.join(format!("e{i}.txt")), "the cat sat. ".repeat(50 + i)).unwrap();
    }
    std::fs::write(corpus.join("notes.md"), "skip me").unwrap();
    corpus
}

#[test]
fn prepare_writes_the_same_shards_for_one_or_two_workers() {
    let p = prepared();
    for f in ["train.bin", "val.bin"] {
        assert_eq!(
            std::fs::read(p.o1.join(f)).unwrap(),
            std::fs::read(p.o2.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn prepare_counts_documents_and_invalid_utf8_and_skips_non_text_files() {
    let st = &prepared().stats;
    assert_eq!(st["documents"], 10);
    assert_eq!(st["invalid_utf8"], 1);
    assert!(st["skipped_files"][0].as_str().unwrap().ends_with("notes.md"));
}

#[test]
fn prepare_holds_out_validation_documents_and_counts_the_tokens_it_wrote() {
    let p = prepared();
    let st = &p.stats;
    assert!(!st["val_documents"].as_array().unwrap().is_empty());
    let train = TokenData::open(&p.o1.join("train.bin")).unwrap();
    let val = TokenData::open(&p.o1.join("val.bin")).unwrap();
    assert_eq!(
        train.len() as u64 + val.len() as u64,
        st["train_tokens"].as_u64().unwrap() + st["val_tokens"].as_u64().unwrap()
    );
    assert!(!val.is_empty() && !train.is_empty());
}

#[test]
fn prepare_strips_the_gutenberg_licence() {
    // The Gutenberg book contributes only "the story . he ends ." when it is in train.
    let p = prepared();
    let train = TokenData::open(&p.o1.join("train.bin")).unwrap();
    let val = TokenData::open(&p.o1.join("val.bin")).unwrap();
    let all: Vec<u32> =
        (0..train.len()).map(|i| train.get(i)).chain((0..val.len()).map(|i| val.get(i))).collect();
    let lic = ok(&["tokenize", "--tokenizer", s(&p.dir), "--text", "licence"]);
    let lic: Vec<u32> = lic.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(!all.windows(lic.len()).any(|w| w == lic.as_slice()), "licence text was kept");
}

/// `prepare --tokenizer TOKENIZER --input INPUT --out (a fresh directory) --quiet` plus `extra`
/// must fail with `needle`.
fn prepare_fails(tokenizer: &Path, input: &Path, extra: &[&str], needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut args = vec![
        "prepare",
        "--tokenizer",
        s(tokenizer),
        "--input",
        s(input),
        "--out",
        s(&out),
        "--quiet",
    ];
    args.extend(extra);
    fails(&args, needle);
}

#[test]
fn strict_prepare_names_the_file_and_byte_offset_of_invalid_utf8() {
    let p = prepared();
    prepare_fails(&p.dir, &p.corpus.join("b.txt"), &["--strict"], "invalid UTF-8 at byte 4");
}

#[test]
fn prepare_rejects_a_binary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_vocab(d);
    std::fs::write(d.join("bin.txt"), [0u8, 1, 2, 3]).unwrap();
    prepare_fails(d, &d.join("bin.txt"), &[], "binary file");
}

#[test]
fn prepare_names_a_missing_input() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_vocab(d);
    prepare_fails(d, &d.join("nope.txt"), &[], "no such file");
}

#[test]
fn prepare_rejects_a_directory_without_text_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_vocab(d);
    let empty = d.join("emptydir");
    std::fs::create_dir_all(&empty).unwrap();
    prepare_fails(d, &empty, &[], "no .txt files");
}

#[test]
fn prepare_needs_a_bpe_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("emptydir");
    std::fs::create_dir_all(&empty).unwrap();
    prepare_fails(&empty, &prepared().corpus, &[], "no BPE vocabulary");
}

/// A copy of the test vocabulary in a directory of the test's own, its `merges.txt` with a
/// malformed line 3.
fn vocab_with_broken_merges() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path();
    write_vocab(bad);
    std::fs::write(bad.join("merges.txt"), "#version: 0.2\nt h\nbroken\n").unwrap();
    tmp
}

#[test]
fn a_malformed_merges_line_is_named() {
    let tmp = vocab_with_broken_merges();
    fails(&["tokenize", "--tokenizer", s(tmp.path()), "--text", "x"], "line 3");
}

#[test]
fn a_vocabulary_that_is_no_json_object_is_named() {
    let tmp = vocab_with_broken_merges();
    std::fs::write(tmp.path().join("vocab.json"), "[1, 2]").unwrap();
    fails(
        &["tokenize", "--tokenizer", s(tmp.path()), "--text", "x"],
        "not a token → id JSON object",
    );
}

/// A small English text in `dir/a.txt` with a few very frequent words; its path.
fn write_training_text(dir: &Path) -> PathBuf {
    let text = "the theory of the thing is that there is another thing. \n".repeat(40)
        + &"she sells sea shells by the sea shore.\n".repeat(30);
    let a = dir.join("a.txt");
    std::fs::write(&a, &text).unwrap();
    a
}

/// `tokenizer train --input TEXT --merges MERGES --out OUT`'s JSON summary.
fn train_tokenizer(text: &Path, merges: &str, out: &Path) -> serde_json::Value {
    let js = ok(&["tokenizer", "train", "--input", s(text), "--merges", merges, "--out", s(out)]);
    serde_json::from_str(&js).unwrap()
}

/// A tokenizer trained with 20 merges on [`write_training_text`]'s text: its directory and
/// `tokenizer train`'s summary; built once per test binary.
fn twenty_merges() -> &'static (PathBuf, serde_json::Value) {
    static RUN: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    RUN.get_or_init(|| {
        let d = common::fixture_dir("prepare-twenty-merges");
        let text = write_training_text(&d);
        let out = d.join("t1");
        let js = train_tokenizer(&text, "20", &out);
        (out, js)
    })
}

#[test]
fn tokenizer_train_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = write_training_text(d);
    let o2 = d.join("t2");
    train_tokenizer(&text, "20", &o2);
    let (o1, _) = twenty_merges();
    for f in ["vocab.json", "merges.txt"] {
        assert_eq!(
            std::fs::read(o1.join(f)).unwrap(),
            std::fs::read(o2.join(f)).unwrap(),
            "{f} differs between runs"
        );
    }
}

#[test]
fn tokenizer_train_learns_the_requested_merges_most_frequent_first() {
    let (o1, js) = twenty_merges();
    assert_eq!(js["merges"], 20);
    let merges = std::fs::read_to_string(o1.join("merges.txt")).unwrap();
    assert_eq!(merges.lines().count(), 21);
    assert!(
        merges.lines().nth(1).unwrap().starts_with("t h")
            || merges.lines().nth(1).unwrap().starts_with("th e")
    );
}

#[test]
fn a_trained_tokenizer_makes_frequent_words_single_tokens_and_decodes_them() {
    let (o1, _) = twenty_merges();
    let ids = ok(&["tokenize", "--tokenizer", s(o1), "--text", "The thing is there."]);
    assert!(ids.split_whitespace().count() <= 8, "{ids:?}");
    // Decoding gives the normalized text back.
    assert_eq!(round_trip(o1, "The thing is there."), "the thing is there .");
}

#[test]
fn tokenizer_train_stops_when_no_pair_is_left_to_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = write_training_text(d);
    let js = train_tokenizer(&text, "100000", &d.join("t3"));
    assert!(js["merges"].as_u64().unwrap() < 100_000);
}

#[test]
fn tokenizer_train_in_original_mode_keeps_its_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("a.txt"), "“Don't,” she said—it's the thing. I don't know.\n".repeat(30))
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
    assert_eq!(round_trip(&out, "“I don't,” she said."), "\" i do n't , \" she said .");
}

/// `tokenizer train --mode original` on a file with a line that is not UTF-8 stops naming the
/// file and the line, instead of training on the text before it.
#[test]
fn tokenizer_train_names_a_line_that_is_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bad = d.join("bad.txt");
    std::fs::write(&bad, b"the first line is fine\nthe second \xff is not\n").unwrap();
    let out = d.join("t");
    let err = common::fails(
        &[
            "tokenizer",
            "train",
            "--mode",
            "original",
            "--input",
            s(&bad),
            "--merges",
            "5",
            "--out",
            s(&out),
        ],
        "line 2",
    );
    assert!(err.contains("bad.txt"), "{err}");
    assert!(!out.exists());
}

#[test]
fn prepare_refuses_a_directory_of_other_files_and_reruns_into_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = d.join("book.txt");
    std::fs::write(&text, "A short book. It has two sentences.\n").unwrap();
    let out = d.join("shards");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("train.bin"), "the user's own").unwrap();
    let args = ["prepare", "--input", s(&text), "--out", s(&out), "--val-fraction", "0", "--quiet"];
    let err = common::fails(&args, "did not write (train.bin)");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("train.bin")).unwrap(), "the user's own");
    // A stale temporary of a killed run does not count, and is removed.
    let fresh = d.join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("train.bin.tmp99999"), "partial").unwrap();
    let args2 =
        ["prepare", "--input", s(&text), "--out", s(&fresh), "--val-fraction", "0", "--quiet"];
    ok(&args2);
    assert!(!fresh.join("train.bin.tmp99999").exists());
    assert!(fresh.join("prepare.json").exists());
    // Its own earlier output is rewritten without --force; --force writes beside other files.
    ok(&args2);
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&forced);
    assert_ne!(std::fs::read(out.join("train.bin")).unwrap(), b"the user's own");
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_loop_reads_each_book_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let books = d.join("books");
    std::fs::create_dir(&books).unwrap();
    std::fs::write(books.join("one.txt"), "A short book. It has two sentences.\n").unwrap();
    std::fs::write(books.join("two.txt"), "Another book, with one sentence.\n").unwrap();
    // books/again -> books: a walk that follows it would read the books again and again.
    std::os::unix::fs::symlink(&books, books.join("again")).unwrap();
    let out = d.join("shards");
    let js =
        ok(&["prepare", "--input", s(&books), "--out", s(&out), "--val-fraction", "0", "--quiet"]);
    let stats: serde_json::Value = serde_json::from_str(&js).unwrap();
    assert_eq!(stats["documents"], 2, "{js}");
}
