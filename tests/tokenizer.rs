//! The tokenizer against transformers' `OpenAIGPTTokenizer` (fixture made by
//! `tools/make_tokenizer_fixtures.py`) on hard strings and on paragraphs of the shared books.
//! Needs the GPT-1 BPE files: reads `GPT1_DATA` (default `../shared/data`), skips when absent.

use gpt1::text::{Mode, Tokenizer};
use std::path::PathBuf;

fn data_dir() -> Option<PathBuf> {
    let d = std::env::var("GPT1_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if d.join("gpt1-bpe/encoder_bpe_40000.json").exists() {
        Some(d)
    } else {
        eprintln!(
            "skipped: no GPT-1 BPE files under {} (set GPT1_DATA to the shared data folder)",
            d.display()
        );
        None
    }
}

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_hf.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn paragraphs(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn hf_mode_matches_transformers_on_hard_strings() {
    let Some(d) = data_dir() else { return };
    let tok = Tokenizer::load(&d.join("gpt1-bpe"), Mode::Hf).unwrap();
    assert_eq!(tok.vocab_size(), 40_478 + 3);
    assert_eq!(tok.special_id("_classify_"), Some(40_480));
    for case in fixture()["hard"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "text {text:?}"
        );
    }
}

#[test]
fn hf_mode_matches_transformers_on_book_paragraphs() {
    let Some(d) = data_dir() else { return };
    let tok = Tokenizer::load(&d.join("gpt1-bpe"), Mode::Hf).unwrap();
    let (mut total, mut same) = (0, 0);
    for book in fixture()["books"].as_array().unwrap() {
        let name = book["book"].as_str().unwrap();
        let text = std::fs::read_to_string(d.join("corpus/books").join(name)).unwrap();
        let paras = paragraphs(&text);
        for (p, want) in paras.iter().zip(book["ids"].as_array().unwrap()) {
            total += 1;
            if tok.encode(p).unwrap() == ids(want) {
                same += 1;
            } else {
                eprintln!("{name}: differs on {p:?}");
            }
        }
    }
    assert_eq!(total, 1200);
    assert_eq!(same, total, "{same} of {total} paragraphs identical");
}

#[test]
fn decode_inverts_encode_up_to_normalization() {
    let Some(d) = data_dir() else { return };
    let tok = Tokenizer::load(&d.join("gpt1-bpe"), Mode::Hf).unwrap();
    let text = "The Quick brown fox, it said, jumped over 12 lazy dogs.";
    let ids = tok.encode(text).unwrap();
    assert_eq!(
        tok.decode(&ids).unwrap(),
        "the quick brown fox , it said , jumped over 12 lazy dogs ."
    );
    assert!(
        tok.decode(&[1, 99_999])
            .unwrap_err()
            .to_string()
            .contains("outside the vocabulary")
    );
    // Saving under HF names and loading again gives the same ids.
    let tmp = tempfile::tempdir().unwrap();
    tok.save(tmp.path()).unwrap();
    let again = Tokenizer::load(tmp.path(), Mode::Hf).unwrap();
    assert_eq!(again.encode(text).unwrap(), ids);
}
