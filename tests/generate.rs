//! `gpt1 generate` (ids and text, JSON lines, stop strings, streaming, bad input) and `gpt1
//! perplexity` (sliding windows over text files).

mod common;

use common::{fails, letter_model, ok, s};
use std::path::Path;

/// `gpt1 generate --model DIR` with `args`; its standard output.
fn generate_out(dir: &Path, args: &[&str]) -> String {
    let mut a = vec!["generate", "--model", s(dir)];
    a.extend_from_slice(args);
    ok(&a)
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn ids_in_json_out_are_transformers_greedy_continuation() {
    let out = ok(&[
        "generate",
        "--model",
        "tests/fixtures/hf_gen",
        "--ids",
        "54 43 49 39",
        "--max-new",
        "20",
        "--greedy",
        "--json",
    ]);
    let v = &json_lines(&out)[0];
    let want = [39u64, 39, 39, 39, 39, 39, 39, 39, 39, 39, 39, 39, 39, 52, 52, 52, 52, 52, 52, 52];
    let ids: Vec<u64> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ids, want);
    assert_eq!(v["stop_reason"], "max_new");
    assert!(v["text"].is_null() && v["tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn several_samples_give_one_json_line_each_with_their_text() {
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path());
    let out = generate_out(
        d.path(),
        &["--prompt", "ab cd", "--max-new", "6", "--num", "3", "--seed", "4", "--json"],
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    for v in &lines {
        let n = v["ids"].as_array().unwrap().len();
        assert_eq!((n, v["stop_reason"].as_str().unwrap()), (6, "max_new"));
        assert!(!v["text"].as_str().unwrap().is_empty());
    }
}

#[test]
fn a_stop_string_ends_the_text_before_it() {
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path());
    let base =
        generate_out(d.path(), &["--prompt", "ab", "--max-new", "12", "--seed", "2", "--json"]);
    let text = json_lines(&base)[0]["text"].as_str().unwrap().to_string();
    // Stop at the second character of what came out the first time.
    let stop: String = text.chars().skip(1).take(1).collect();
    let out = generate_out(
        d.path(),
        &["--prompt", "ab", "--max-new", "12", "--seed", "2", "--stop", &stop, "--json"],
    );
    let v = &json_lines(&out)[0];
    assert_eq!(v["stop_reason"], "stop");
    let got = v["text"].as_str().unwrap();
    assert!(!got.contains(&stop) && text.starts_with(got), "{got:?} of {text:?}");
}

#[test]
fn text_mode_streams_the_prompt_then_the_continuation() {
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path());
    let json = generate_out(d.path(), &["--prompt", "ab", "--max-new", "8", "--greedy", "--json"]);
    let text = json_lines(&json)[0]["text"].as_str().unwrap().to_string();
    let out = generate_out(d.path(), &["--prompt", "ab", "--max-new", "8", "--greedy"]);
    assert_eq!(out.trim_end(), format!("ab {text}"));
}

#[test]
fn the_context_limit_is_a_stop_reason() {
    let out = ok(&[
        "generate",
        "--model",
        "tests/fixtures/hf_gen",
        "--ids",
        "1,2,3",
        "--max-new",
        "100",
        "--greedy",
        "--json",
    ]);
    let v = &json_lines(&out)[0];
    assert_eq!(
        (v["ids"].as_array().unwrap().len(), v["stop_reason"].as_str().unwrap()),
        (29, "context")
    );
}

#[test]
fn bad_settings_and_prompts_are_refused_clearly() {
    let m = "tests/fixtures/hf_gen";
    fails(&["generate", "--model", m, "--ids", "1 2", "--temperature=-1"], "--temperature");
    fails(&["generate", "--model", m, "--ids", "1 2", "--top-p", "0"], "--top-p");
    fails(&["generate", "--model", m, "--ids", "1 x"], "not a token id");
    fails(&["generate", "--model", m, "--ids", "1 999"], "not below vocab_size");
    let long: Vec<String> = (0..40).map(|i| (i % 60).to_string()).collect();
    fails(&["generate", "--model", m, "--ids", &long.join(" ")], "--prompt has 40 tokens");
    fails(&["generate", "--model", m, "--prompt", "hello"], "--tokenizer");
    fails(&["generate", "--model", m, "--ids", "1", "--num", "0"], "--num");
}

/// A streamed text prompt is printed only once every check has passed: a bad sampling setting,
/// a prompt longer than the context or a device that is not there leaves stdout empty.
#[test]
fn a_refused_generation_prints_nothing() {
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path());
    let long = "ab ".repeat(30);
    for (extra, needle) in [
        (vec!["--prompt", "ab cd", "--top-p", "0"], "--top-p"),
        (vec!["--prompt", "ab cd", "--repetition-penalty", "0"], "--repetition-penalty"),
        (vec!["--prompt", "ab cd", "--num", "0"], "--num"),
        (vec!["--prompt", &long], "--prompt has"),
        (vec!["--prompt", "ab cd", "--device", "cuda:7"], "cuda"),
    ] {
        let mut a = vec!["generate", "--model", s(d.path())];
        a.extend(extra);
        fails(&a, needle);
        let out = common::gpt1(&a);
        assert!(out.stdout.is_empty(), "{a:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

/// `gpt1 perplexity` on a text that fits one window gives exp of the mean negative
/// log-likelihood the model assigns its tokens after the first (computed here directly), and a
/// stride shorter than the context still scores every token after the first exactly once.
#[test]
fn perplexity_of_text_files_scores_each_token_once() {
    use gpt1::model::Activations;
    use gpt1::model::checkpoint::load_model;
    use gpt1::text::Tokenizer;
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path());
    let short = d.path().join("short.txt");
    std::fs::write(&short, "ab cd ef\n\ngh").unwrap();
    let out = ok(&["perplexity", "--model", s(d.path()), "--input", s(&short), "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let tok = Tokenizer::load(d.path(), None).unwrap();
    let ids = tok.encode_document("ab cd ef\n\ngh").unwrap();
    let model = load_model(d.path()).unwrap();
    let t = ids.len() - 1;
    let mut acts = Activations::new(&model.config, 1, t, false);
    let mut lp = vec![0.0f32; t];
    model.logprobs(&mut acts, &ids[..t], &ids[1..], &mut lp);
    let mean = -lp.iter().map(|&x| x as f64).sum::<f64>() / t as f64;
    assert_eq!(v["tokens"].as_u64().unwrap() as usize, t);
    let got = v["perplexity"].as_f64().unwrap();
    assert!((got - mean.exp()).abs() < 1e-4 * mean.exp(), "{got} vs {}", mean.exp());
    // A text longer than the 24-token context, stride 5: every token after the first, once.
    let long = d.path().join("long.txt");
    let text = "ab cd ef gh ij kl mn op qr st uv wx yz ".repeat(4);
    std::fs::write(&long, &text).unwrap();
    let n = tok.encode_document(&text).unwrap().len();
    let out =
        ok(&["perplexity", "--model", s(d.path()), "--input", s(&long), "--stride", "5", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["tokens"].as_u64().unwrap() as usize, n - 1);
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
    fails(
        &["perplexity", "--model", s(d.path()), "--input", s(&long), "--stride", "0"],
        "--stride",
    );
}

/// Streaming never prints the start of a stop string that the final text cuts: the streamed
/// output equals the prompt and the JSON text.
#[test]
fn streaming_holds_back_a_stop_string_spanning_words() {
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path());
    let json =
        generate_out(d.path(), &["--prompt", "ab", "--max-new", "12", "--seed", "2", "--json"]);
    let text = json_lines(&json)[0]["text"].as_str().unwrap().to_string();
    // A stop string made of the first two words the model wrote (or of its first word twice).
    let words: Vec<&str> = text.split(' ').collect();
    let stop = format!("{} {}", words[0], words.get(1).copied().unwrap_or(words[0]));
    let streamed = generate_out(
        d.path(),
        &["--prompt", "ab", "--max-new", "12", "--seed", "2", "--stop", &stop],
    );
    let js = generate_out(
        d.path(),
        &["--prompt", "ab", "--max-new", "12", "--seed", "2", "--stop", &stop, "--json"],
    );
    let cut = json_lines(&js)[0]["text"].as_str().unwrap().to_string();
    assert_eq!(streamed.trim_end(), format!("ab {cut}").trim_end(), "stop {stop:?}");
}
