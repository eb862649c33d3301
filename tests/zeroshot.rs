//! Zero-shot heuristics: the scoring primitive against direct `logprobs`, CoLA's threshold,
//! SST-2's two words, partial scoring, the DPR and WSC readers, the command's outputs; and the
//! real data when it is there (`GPT1_DATA`, default `../shared/data`).

mod common;

use common::{fails, ok, s, write_letter_vocab};
use gpt1::model::checkpoint::save_model;
use gpt1::model::{Config, Gpt};
use gpt1::tasks::metrics::matthews;
use gpt1::text::Tokenizer;
use gpt1::zeroshot::winograd::{read_dpr, read_wsc};
use gpt1::zeroshot::{Pair, ZeroShotTask, cola_threshold, continuation_logprobs, zero_shot};
use std::path::{Path, PathBuf};

const PUNCT: &[char] = &['.', ',', '\''];

/// A tiny random model with the letter vocabulary (and `PUNCT`) in `dir`.
fn letter_model(dir: &Path, n_positions: usize) -> Gpt {
    write_letter_vocab(dir, PUNCT, &[]);
    let mut c = Config::named("tiny").unwrap();
    c.vocab_size = 2 * (26 + PUNCT.len()) + 3;
    c.n_positions = n_positions;
    c.n_embd = 16;
    c.n_layer = 2;
    c.n_head = 2;
    c.initializer_range = 0.3;
    let m = Gpt::init(c, 7);
    save_model(dir, &m).unwrap();
    m
}

/// log p(row[j + 1] | row[..=j]) for every j, from one unbatched `logprobs` pass.
fn direct(m: &Gpt, row: &[u32]) -> Vec<f32> {
    let t = row.len() - 1;
    let mut acts = m.activations(1, t, false);
    let mut out = vec![0.0; t];
    m.logprobs(&mut acts, &row[..t], &row[1..], &mut out);
    out
}

fn mean(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-4 * (1.0 + b.abs())
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn the_scoring_primitive_equals_direct_logprobs_and_cuts_long_contexts_from_the_left() {
    let d = tempfile::tempdir().unwrap();
    let m = letter_model(d.path(), 16);
    let ids = |n: usize, seed: u32| (0..n as u32).map(|i| (i * 7 + seed) % 55).collect::<Vec<_>>();
    let pairs = vec![
        Pair { context: ids(3, 1), continuation: ids(4, 2) },
        Pair { context: ids(1, 3), continuation: ids(1, 4) },
        Pair { context: ids(9, 5), continuation: ids(2, 6) },
        Pair { context: ids(30, 7), continuation: ids(5, 8) }, // cut to 12 context tokens
        Pair { context: ids(2, 9), continuation: ids(20, 1) }, // continuation over the context
    ];
    for batch in [1, 2, 8] {
        let got = continuation_logprobs(&m, &pairs, batch, None, |_| {}).unwrap();
        for (p, g) in pairs.iter().zip(&got) {
            let cont = &p.continuation[..p.continuation.len().min(16)];
            let keep = p.context.len().min(17 - cont.len());
            let row: Vec<u32> =
                p.context[p.context.len() - keep..].iter().chain(cont).copied().collect();
            let want = direct(&m, &row);
            let want = &want[keep - 1..];
            assert_eq!(g.logprobs.len(), cont.len());
            for (a, b) in g.logprobs.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "batch {batch}: {a} vs {b}");
            }
            assert_eq!(g.truncated, keep < p.context.len());
            assert_eq!(g.cut, p.continuation.len() > 16);
            assert!(close(g.mean(), mean(want)));
        }
    }
    assert!(
        continuation_logprobs(
            &m,
            &[Pair { context: vec![], continuation: vec![1] }],
            2,
            None,
            |_| {}
        )
        .is_err()
    );
    assert!(continuation_logprobs(&m, &pairs, 0, None, |_| {}).is_err());
}

#[test]
fn cola_threshold_maximizes_matthews_over_the_midpoints_of_train_scores() {
    let scores = [-3.0, -1.0, -2.5, -0.5, -1.1, -1.5, -2.0, -0.2, -4.0, -1.2];
    let labels = [0, 1, 0, 1, 1, 0, 0, 1, 0, 1];
    let t = cola_threshold(&scores, &labels);
    let mcc = |t: f64| {
        let p: Vec<usize> = scores.iter().map(|&s| usize::from(s > t)).collect();
        matthews(&p, &labels, 1)
    };
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let mids: Vec<f64> = sorted.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    assert!(mids.contains(&t), "{t} is not a midpoint");
    let best = mids.iter().map(|&m| mcc(m)).fold(f64::MIN, f64::max);
    assert_eq!(mcc(t), best);
    // -1.35 (between -1.5 and -1.2) separates them perfectly.
    assert_eq!(t, -1.35);
    assert_eq!(mcc(t), 1.0);
    // No midpoint: the largest score, everything unacceptable.
    assert_eq!(cola_threshold(&[-1.0, -1.0], &[0, 1]), -1.0);
}

/// SST-2 and CoLA files in `dir`: SST-2 with a header, CoLA headerless.
fn write_glue(dir: &Path) -> (PathBuf, PathBuf) {
    let sst = dir.join("sst2");
    std::fs::create_dir_all(&sst).unwrap();
    let rows =
        "sentence\tlabel\nit is a charming film .\t1\na dull , tired mess\t0\nvery good\t1\n";
    std::fs::write(sst.join("dev.tsv"), rows).unwrap();
    let cola = dir.join("cola");
    std::fs::create_dir_all(&cola).unwrap();
    let train = "a\t1\t\tthe cat sat.\nb\t0\t*\tcat the sat the.\nc\t1\t\tthe dog ran.\n\
                 d\t0\t*\tran dog the.\ne\t1\t\tshe left.\nf\t0\t*\tx\n";
    std::fs::write(cola.join("train.tsv"), train).unwrap();
    std::fs::write(cola.join("dev.tsv"), "a\t1\t\tthe man sat.\nb\t0\t*\tsat man the the.\n")
        .unwrap();
    (sst, cola)
}

#[test]
fn sst2_compares_the_next_word_negative_and_positive_after_very() {
    let d = tempfile::tempdir().unwrap();
    let m = letter_model(d.path(), 64);
    let tok = Tokenizer::load(d.path(), None).unwrap();
    let (sst, _) = write_glue(d.path());
    let r = zero_shot(&m, &tok, ZeroShotTask::Sst2, &sst, "dev", 4).unwrap();
    assert_eq!((r.n, r.metric.as_str(), r.examples.len()), (3, "accuracy", 3));
    // Letters only: each word is several tokens, scored by the chain rule (counted).
    assert_eq!(r.fallbacks, 3);
    for (e, text) in
        r.examples.iter().zip(["it is a charming film .", "a dull , tired mess", "very good"])
    {
        let ctx = tok.encode(&format!("{text} very")).unwrap();
        let want: Vec<f64> = ["negative", "positive"]
            .iter()
            .map(|w| {
                let cont = tok.encode(w).unwrap();
                let row: Vec<u32> = ctx.iter().chain(&cont).copied().collect();
                direct(&m, &row)[ctx.len() - 1..].iter().map(|&x| x as f64).sum()
            })
            .collect();
        assert_eq!(e.scores.len(), 2);
        assert!(close(e.scores[0], want[0]) && close(e.scores[1], want[1]), "{e:?} vs {want:?}");
        assert_eq!(e.prediction, usize::from(e.scores[1] > e.scores[0]));
    }
}

#[test]
fn cola_reports_its_train_threshold_and_one_score_per_sentence() {
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path(), 64);
    let (_, cola) = write_glue(d.path());
    let out = d.path().join("preds.jsonl");
    let js = ok(&[
        "zero-shot",
        "--model",
        s(d.path()),
        "--task",
        "CoLA",
        "--data",
        s(&cola),
        "--out",
        s(&out),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(js.trim()).unwrap();
    assert_eq!(
        (v["task"].as_str(), v["split"].as_str(), v["n"].as_u64()),
        (Some("cola"), Some("dev"), Some(2))
    );
    assert_eq!(v["metric"], "matthews");
    assert!(v["threshold"].is_f64() && v["metrics"]["accuracy"].is_f64());
    assert_eq!(v["score"], v["metrics"]["matthews"]);
    let t = v["threshold"].as_f64().unwrap();
    let lines = json_lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(lines.len(), 2);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"].as_u64(), Some(i as u64));
        let sc = l["scores"].as_array().unwrap();
        assert_eq!(sc.len(), 1);
        assert_eq!(l["prediction"].as_u64(), Some(u64::from(sc[0].as_f64().unwrap() > t)));
    }
    // On train itself: the one-letter sentence "x" has nothing to score (a counted fallback).
    let js = ok(&[
        "zero-shot",
        "--model",
        s(d.path()),
        "--task",
        "cola",
        "--data",
        s(&cola),
        "--split",
        "train",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(js.trim()).unwrap();
    assert_eq!((v["n"].as_u64(), v["fallbacks"].as_u64()), (Some(6), Some(1)));
}

const DPR: &str = "The sniper shot the terrorist because he was a bad guy.
he
The sniper,the terrorist
the terrorist

He said the cat was tired.
he
the man,the cat
THE MAN

The bee landed on the flower because it had pollen.
it
The bee,the flower
the flower
";

#[test]
fn dpr_blocks_are_read_with_the_pronoun_the_candidates_and_the_answer() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("test.c.txt");
    std::fs::write(&f, DPR).unwrap();
    let v = read_dpr(&f).unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!((v[0].line, v[1].line, v[2].line), (1, 6, 11));
    assert_eq!(v[0].prefix, "The sniper shot the terrorist because ");
    assert_eq!((v[0].pronoun.as_str(), v[0].suffix.as_str()), ("he", " was a bad guy."));
    assert_eq!(v[0].candidates, ["The sniper", "the terrorist"]);
    assert_eq!((v[0].answer, v[1].answer, v[2].answer), (1, 0, 1));
    // At the start of the sentence: found case-insensitively, the candidate capitalized.
    assert_eq!((v[1].prefix.as_str(), v[1].pronoun.as_str()), ("", "He"));
    assert_eq!(v[1].substituted(0), ("The man".to_string(), " said the cat was tired."));
    assert_eq!(v[0].sentence(), "The sniper shot the terrorist because he was a bad guy.");
}

#[test]
fn bad_dpr_blocks_name_the_file_the_block_and_the_line() {
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path(), 64);
    let cases = [
        ("The cat sat.\nshe\nthe cat,the mat\nthe cat\n", "block 4, line 17: the pronoun \"she\""),
        ("A b.\nb\na,\na\n", "candidate 2 is empty"),
        ("A b.\nb\na\na\n", "expected two candidates"),
        ("A b c.\nb\na,c\nd\n", "line 19: the answer \"d\" is none of the candidates"),
        ("A b c.\nb\na,c\n", "3 lines"),
    ];
    for (body, needle) in cases {
        let text = format!("{DPR}\n{body}");
        let f = d.path().join("test.c.txt");
        std::fs::write(&f, &text).unwrap();
        let err = fails(
            &["zero-shot", "--model", s(d.path()), "--task", "dprd", "--data", s(d.path())],
            needle,
        );
        assert!(err.contains("test.c.txt") && err.contains("block 4"), "{err}");
    }
}

#[test]
fn dpr_partial_scoring_json_and_out_lines() {
    let d = tempfile::tempdir().unwrap();
    let m = letter_model(d.path(), 64);
    let tok = Tokenizer::load(d.path(), None).unwrap();
    // The pronoun last: nothing after it, the whole sentence scored instead (counted).
    let text = format!("{DPR}\nthe cat saw the dog and chased it\nit\nthe cat,the dog\nthe dog\n");
    std::fs::write(d.path().join("test.c.txt"), &text).unwrap();
    let r = zero_shot(&m, &tok, ZeroShotTask::Dprd, d.path(), "test", 3).unwrap();
    assert_eq!((r.n, r.fallbacks, r.truncated), (4, 1, 0));
    let schemas = read_dpr(&d.path().join("test.c.txt")).unwrap();
    for (e, sc) in r.examples.iter().zip(&schemas) {
        assert_eq!(e.scores.len(), 2);
        for k in 0..2 {
            let (prefix, rest) = sc.substituted(k);
            let (ctx, cont) = (tok.encode(&prefix).unwrap(), tok.encode(rest).unwrap());
            let want = if cont.is_empty() {
                let all = tok.encode(&format!("{prefix}{rest}")).unwrap();
                mean(&direct(&m, &all))
            } else {
                let row: Vec<u32> = ctx.iter().chain(&cont).copied().collect();
                mean(&direct(&m, &row)[ctx.len() - 1..])
            };
            assert!(close(e.scores[k], want), "{} {k}: {} vs {want}", e.index, e.scores[k]);
        }
        assert_eq!(e.prediction, usize::from(e.scores[1] > e.scores[0]));
    }
    // The command: --json as evaluate's plus the counts; --out one line per example.
    let out = d.path().join("dpr.jsonl");
    let js = ok(&[
        "zero-shot",
        "--model",
        s(d.path()),
        "--task",
        "DPR",
        "--data",
        s(d.path()),
        "--out",
        s(&out),
        "--json",
        "--batch",
        "3",
    ]);
    let v: serde_json::Value = serde_json::from_str(js.trim()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["fallbacks", "metric", "metrics", "n", "score", "split", "task", "truncated"]
    );
    assert_eq!(
        (v["task"].as_str(), v["split"].as_str(), v["n"].as_u64()),
        (Some("dprd"), Some("test"), Some(4))
    );
    assert_eq!(v["metric"], "accuracy");
    assert!((v["score"].as_f64().unwrap() - r.score).abs() < 1e-12);
    let lines = json_lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(lines.len(), 4);
    for (l, e) in lines.iter().zip(&r.examples) {
        assert_eq!(l["index"].as_u64(), Some(e.index as u64));
        assert_eq!(l["prediction"].as_u64(), Some(e.prediction as u64));
        let sc: Vec<f64> =
            l["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!(sc.iter().zip(&e.scores).all(|(a, b)| close(*a, *b)));
    }
    // Text mode: one line.
    let txt = ok(&["zero-shot", "--model", s(d.path()), "--task", "dprd", "--data", s(d.path())]);
    assert!(
        txt.starts_with("dprd test: 4 examples, accuracy ")
            && txt.contains("1 scored by a fallback"),
        "{txt}"
    );
    fails(
        &[
            "zero-shot",
            "--model",
            s(d.path()),
            "--task",
            "dprd",
            "--data",
            s(d.path()),
            "--batch",
            "0",
        ],
        "--batch must be at least 1",
    );
    fails(
        &["zero-shot", "--model", s(d.path()), "--task", "mnli", "--data", s(d.path())],
        "unknown zero-shot task",
    );
}

const WSC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<collection>
<schema>
<text>
<txt1>The city councilmen refused
  the demonstrators a permit because</txt1>
<pron> they </pron>
<txt2>feared
violence.</txt2>
</text>
<quote>
<quote1></quote1>
<pron>they</pron>
<quote2>feared violence</quote2>
</quote>
<answers>
<answer>
The city councilmen</answer>
<answer>The demonstrators </answer>
</answers>
<correctAnswer> A </correctAnswer>
<source>(Winograd 1972)</source>
</schema>

<schema>
<text><txt1></txt1><pron>It</pron><txt2>was too big, so the trophy did not fit in the suitcase.</txt2></text>
<quote><quote1></quote1><pron>It</pron><quote2>was too big</quote2></quote>
<answers><answer>the trophy</answer><answer>the suitcase</answer></answers>
<correctAnswer>B. </correctAnswer>
<source>Levesque</source>
</schema>
</collection>
"#;

#[test]
fn wsc_xml_is_read_with_whitespace_normalized_and_letter_answers() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("WSCollection.xml");
    std::fs::write(&f, WSC).unwrap();
    let v = read_wsc(&f).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].prefix, "The city councilmen refused the demonstrators a permit because ");
    assert_eq!((v[0].pronoun.as_str(), v[0].suffix.as_str()), ("they", " feared violence."));
    assert_eq!(v[0].candidates, ["The city councilmen", "The demonstrators"]);
    assert_eq!((v[0].answer, v[1].answer), (0, 1));
    assert_eq!((v[0].line, v[1].line), (3, 25));
    assert_eq!(v[1].substituted(1).0, "The suitcase");
    // Through the command, by the folder and by the file.
    letter_model(d.path(), 64);
    for data in [d.path().to_path_buf(), f.clone()] {
        let js = ok(&[
            "zero-shot",
            "--model",
            s(d.path()),
            "--task",
            "wsc",
            "--data",
            s(&data),
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(js.trim()).unwrap();
        assert_eq!((v["n"].as_u64(), v["split"].as_str()), (Some(2), Some("test")));
    }
    let bad = WSC.replace("<correctAnswer>B. </correctAnswer>", "<correctAnswer>C</correctAnswer>");
    std::fs::write(&f, bad).unwrap();
    let err = read_wsc(&f).unwrap_err().to_string();
    assert!(err.contains("WSCollection.xml") && err.contains("schema 2, line 25"), "{err}");
}

#[test]
fn race_scores_each_option_after_article_and_question_cut_from_the_left() {
    let d = tempfile::tempdir().unwrap();
    let m = letter_model(d.path(), 24);
    let tok = Tokenizer::load(d.path(), None).unwrap();
    let race = d.path().join("race");
    std::fs::create_dir_all(race.join("dev/high")).unwrap();
    let art = serde_json::json!({
        "article": "the cat sat on the mat all day long and then it slept",
        "questions": ["where did the cat sit"],
        "options": [["on the mat", "in a box", "on a dog", "under it"]],
        "answers": ["A"],
    });
    std::fs::write(race.join("dev/high/1.txt"), art.to_string()).unwrap();
    let r = zero_shot(&m, &tok, ZeroShotTask::Race, &race, "dev", 2).unwrap();
    assert_eq!((r.n, r.examples[0].scores.len(), r.truncated), (1, 4, 1));
    let ctx = tok
        .encode("the cat sat on the mat all day long and then it slept where did the cat sit")
        .unwrap();
    for (k, o) in ["on the mat", "in a box", "on a dog", "under it"].iter().enumerate() {
        let cont = tok.encode(o).unwrap();
        let keep = 25 - cont.len();
        let row: Vec<u32> = ctx[ctx.len() - keep..].iter().chain(&cont).copied().collect();
        assert!(close(r.examples[0].scores[k], mean(&direct(&m, &row)[keep - 1..])));
    }
}

/// The shared data folder, or None (with a message) when it is not on this machine.
fn real_data() -> Option<PathBuf> {
    let d = std::env::var_os("GPT1_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if d.join("winograd/dpr/test.c.txt").is_file() {
        Some(d)
    } else {
        eprintln!("skipping: no real data at {} (set GPT1_DATA)", d.display());
        None
    }
}

#[test]
fn real_data_dpr_cola_sst2_and_story_cloze_go_through() {
    let Some(data) = real_data() else { return };
    let d = tempfile::tempdir().unwrap();
    letter_model(d.path(), 128);
    let run = |task: &str, sub: &str, extra: &[&str]| -> serde_json::Value {
        let dir = data.join(sub);
        let mut args = vec![
            "zero-shot",
            "--model",
            s(d.path()),
            "--task",
            task,
            "--data",
            s(&dir),
            "--json",
            "--batch",
            "32",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(ok(&args).trim()).unwrap()
    };
    for (task, sub, n) in [
        ("dprd", "winograd/dpr", 564),
        ("cola", "glue/CoLA", 1043),
        ("sst2", "glue/SST-2", 872),
        ("storycloze", "storycloze", 374),
    ] {
        let v = run(task, sub, &[]);
        assert_eq!(v["n"].as_u64(), Some(n), "{task}: {v}");
        let acc = v["metrics"]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{task}: {v}");
        eprintln!("{task}: {v}");
    }
}
