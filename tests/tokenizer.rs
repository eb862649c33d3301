//! The tokenizer against transformers' `OpenAIGPTTokenizer` (fixture made by
//! `tools/make_tokenizer_fixtures.py`) on hard strings and on paragraphs of the shared books.
//! GPT-1's BPE files are built in (`Tokenizer::gpt1`); the tests over book paragraphs read the
//! books from `GPT1_DATA` (default `../shared/data`) and skip when absent.

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
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
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
    let tok = Tokenizer::gpt1(Mode::Hf).unwrap();
    assert_eq!(tok.vocab_size(), 40_478 + 3);
    assert_eq!(tok.special_id("_classify_"), Some(40_480));
    for case in fixture()["hard"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["ids"]), "text {text:?}");
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
    assert!(tok.decode(&[1, 99_999]).unwrap_err().to_string().contains("outside the vocabulary"));
    // Saving under HF names and loading again gives the same ids.
    let tmp = tempfile::tempdir().unwrap();
    tok.save(tmp.path()).unwrap();
    let again = Tokenizer::load(tmp.path(), Mode::Hf).unwrap();
    assert_eq!(again.encode(text).unwrap(), ids);
}

fn original_parity(kind: &str) -> (usize, usize) {
    let tok = Tokenizer::gpt1(Mode::Original).unwrap();
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_original.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let (mut total, mut same) = (0, 0);
    if kind == "hard" {
        for case in fx["hard"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            total += 1;
            if tok.encode(text).unwrap() == ids(&case["ids"]) {
                same += 1;
            } else {
                eprintln!(
                    "differs: {text:?}\n  got  {:?}\n  want {:?}",
                    tok.encode(text).unwrap(),
                    ids(&case["ids"])
                );
            }
        }
    } else {
        let Some(d) = data_dir() else { return (0, 0) };
        for book in fx["books"].as_array().unwrap() {
            let name = book["book"].as_str().unwrap();
            let text = std::fs::read_to_string(d.join("corpus/books").join(name)).unwrap();
            for (p, want) in paragraphs(&text).iter().zip(book["ids"].as_array().unwrap()) {
                total += 1;
                let got = tok.encode(p).unwrap();
                if got == ids(want) {
                    same += 1;
                } else {
                    let w = ids(want);
                    let k = got.iter().zip(&w).take_while(|(a, b)| a == b).count();
                    let show = |v: &[u32]| {
                        v[k.saturating_sub(3)..(k + 5).min(v.len())]
                            .iter()
                            .map(|&i| tok.token(i).unwrap_or("?").to_string())
                            .collect::<Vec<_>>()
                    };
                    eprintln!("{name}: got {:?} want {:?}", show(&got), show(&w));
                }
            }
        }
    }
    eprintln!("original mode, {kind}: {same} of {total} identical");
    (same, total)
}

#[test]
fn original_mode_matches_the_python_pipeline_on_hard_strings() {
    let (same, total) = original_parity("hard");
    assert_eq!(same, total);
}

#[test]
fn original_mode_matches_the_python_pipeline_on_book_paragraphs() {
    let (same, total) = original_parity("books");
    // The bar: at least 99.9 % of paragraphs identical.
    assert!(same as f64 >= 0.999 * total as f64, "{same} of {total}");
}

fn fnv(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &i in ids {
        for b in i.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

#[test]
fn original_mode_matches_python_on_every_tenth_paragraph_of_all_books() {
    let Some(d) = data_dir() else { return };
    let tok = Tokenizer::load(&d.join("gpt1-bpe"), Mode::Original).unwrap();
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_original.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let (mut total, mut same) = (0usize, 0usize);
    for book in fx["sample"].as_array().unwrap() {
        let name = book["book"].as_str().unwrap();
        let text = std::fs::read_to_string(d.join("corpus/books").join(name)).unwrap();
        let paras = paragraphs(&text);
        for (p, want) in paras.iter().step_by(10).zip(book["hashes"].as_array().unwrap()) {
            total += 1;
            if format!("{:016x}", fnv(&tok.encode(p).unwrap())) == want.as_str().unwrap() {
                same += 1;
            } else {
                eprintln!("{name}: differs on {:?}", &p[..p.len().min(300)]);
            }
        }
    }
    eprintln!("original mode: {same} of {total} sampled paragraphs identical");
    assert!(total > 10_000, "{total}");
    assert!(same as f64 >= 0.999 * total as f64, "{same} of {total}");
}

#[test]
fn original_mode_round_trip_gives_the_normalized_tokens() {
    use gpt1::text::original::{Spacy, fix_text, text_standardize};
    let tok = Tokenizer::gpt1(None).unwrap();
    assert_eq!(tok.mode, Mode::Original, "GPT-1's vocabulary defaults to the original pipeline");
    let spacy = Spacy::english();
    for text in [
        "“Don't,” she said—quietly… It's 5 o'clock.",
        "Mr. Smith's e-mail: a@b.com (really!)\n\nNew paragraph.",
    ] {
        let clean = text_standardize(&fix_text(text));
        let want: Vec<String> = spacy.tokenize(&clean).iter().map(|t| t.to_lowercase()).collect();
        let got = tok.decode(&tok.encode(text).unwrap()).unwrap();
        assert_eq!(
            got.split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
            want.iter().map(|s| s.trim_end_matches(' ')).collect::<Vec<_>>(),
            "{text:?}"
        );
    }
}

#[test]
fn pipeline_stages_are_exposed_for_both_modes() {
    let text = "“Don't,” she said—quietly… café";
    let orig = Tokenizer::gpt1(Mode::Original).unwrap();
    assert_eq!(orig.normalize(text).unwrap(), "\" Don't , \" she said - quietly... café");
    assert_eq!(
        orig.words(text).unwrap(),
        ["\"", "do", "n't", ",", "\"", "she", "said", "-", "quietly", "...", "café"]
    );
    let hf = Tokenizer::gpt1(Mode::Hf).unwrap();
    assert_eq!(hf.normalize(text).unwrap(), "“don't,” she said—quietly… cafe");
    assert_eq!(
        hf.words(text).unwrap(),
        ["“", "don", "'", "t", ",", "”", "she", "said", "—", "quietly", "…", "cafe"]
    );
}

#[test]
fn the_built_in_gpt1_files_are_the_released_ones() {
    let tok = Tokenizer::gpt1(None).unwrap();
    assert_eq!((tok.bpe_vocab_size(), tok.num_merges()), (40_478, 40_000));
    let Some(d) = data_dir() else { return };
    let shared = Tokenizer::load(&d.join("gpt1-bpe"), None).unwrap();
    let text = "“Don't,” she said—quietly… It's 5 o'clock, Mr. Smith.";
    assert_eq!(tok.encode(text).unwrap(), shared.encode(text).unwrap());
    let builtin = |f: &str| {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/gpt1-bpe").join(f),
        )
        .unwrap()
    };
    for f in ["encoder_bpe_40000.json", "vocab_40000.bpe"] {
        assert_eq!(builtin(f), std::fs::read(d.join("gpt1-bpe").join(f)).unwrap(), "{f}");
    }
}
