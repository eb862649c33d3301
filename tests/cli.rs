//! The command line end to end on tiny data the tests make themselves: pre-training, resume,
//! determinism across threads, scoring, and bad input.

mod common;
use common::{fails, ok, s};

use gpt1::data::shard::{write_bin, write_npy_2d};
use gpt1::kernels::rng::Rng;
use std::path::Path;

const CONFIG: &str =
    r#"{"vocab_size": 64, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}"#;

/// A config file and train/val shards of a learnable sequence (a noisy cycle).
fn setup(dir: &Path) {
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let mut r = Rng::new(1);
    let toks: Vec<u32> = (0..4000)
        .map(|i| {
            if r.below(10) == 0 {
                r.below(64) as u32
            } else {
                (i % 17) as u32
            }
        })
        .collect();
    write_bin(&dir.join("train.bin"), &toks[..3500]).unwrap();
    write_bin(&dir.join("val.bin"), &toks[3500..]).unwrap();
}

fn train_args<'a>(dir: &'a Path, out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "pretrain".into(),
        "--data".into(),
        s(&dir.join("train.bin")).into(),
    ];
    if !extra.contains(&"--init") {
        v.extend(["--config".into(), s(&dir.join("config.json")).to_string()]);
    }
    v.extend(
        [
            "--out",
            out,
            "--batch",
            "4",
            "--micro-batch",
            "2",
            "--seq",
            "16",
            "--steps",
            "8",
            "--warmup",
            "2",
            "--lr",
            "3e-3",
            "--quiet",
        ]
        .iter()
        .map(|x| x.to_string()),
    );
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

fn run_train(dir: &Path, out: &Path, extra: &[&str]) {
    let args = train_args(dir, s(out), extra);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn pretrain_writes_metrics_and_hf_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    run_train(
        d,
        &out,
        &[
            "--val",
            s(&d.join("val.bin")),
            "--eval-every",
            "4",
            "--save-every",
            "4",
        ],
    );
    assert!(
        std::fs::read(out.join("curves.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
        for k in ["loss", "lr", "grad_norm", "tokens_per_s"] {
            assert!(l[k].as_f64().unwrap().is_finite(), "{k} in {l}");
        }
    }
    assert!(
        lines[3]["val_loss"].is_number()
            && lines[7]["val_loss"].is_number()
            && lines[0]["val_loss"].is_null()
    );
    let first = lines[0]["loss"].as_f64().unwrap();
    let last = lines[7]["loss"].as_f64().unwrap();
    assert!(last < first, "loss should fall: {first} -> {last}");
    for dir in ["checkpoint-4", "final"] {
        for f in [
            "config.json",
            "model.safetensors",
            "trainer_state.json",
            "optimizer.safetensors",
        ] {
            assert!(out.join(dir).join(f).exists(), "{dir}/{f}");
        }
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("final/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["model_type"], "openai-gpt");
    assert_eq!(cfg["n_embd"], 32);
    // The final model continues as --init of a new run.
    run_train(
        d,
        &d.join("run2"),
        &["--init", s(&out.join("final")), "--steps", "1"],
    );
}

#[test]
fn resume_is_bitwise_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let straight = d.join("straight");
    run_train(d, &straight, &[]);
    let split = d.join("split");
    run_train(d, &split, &["--stop-at", "3"]);
    assert!(split.join("checkpoint-3").exists());
    run_train(d, &split, &["--resume"]);
    assert_eq!(
        weights(&straight.join("final")),
        weights(&split.join("final"))
    );
    let m1 = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    let m2 = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    let losses = |m: &str| {
        m.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&m1), losses(&m2));
}

#[test]
fn same_seed_same_weights_for_one_or_two_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let (a, b) = (d.join("t1"), d.join("t2"));
    let mut args = train_args(d, s(&a), &["--steps", "3"]);
    args.insert(0, "1".into());
    args.insert(0, "--threads".into());
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut args = train_args(d, s(&b), &["--steps", "3"]);
    args.insert(0, "2".into());
    args.insert(0, "--threads".into());
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(weights(&a.join("final")), weights(&b.join("final")));
}

#[test]
fn score_prints_per_row_logprobs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    run_train(d, &out, &["--steps", "2"]);
    let rows: Vec<u32> = (0..30).map(|i| (i * 5 % 64) as u32).collect();
    write_npy_2d(&d.join("rows.npy"), &rows, 10).unwrap();
    let js: serde_json::Value = serde_json::from_str(&ok(&[
        "score",
        "--model",
        s(&out.join("final")),
        "--ids",
        s(&d.join("rows.npy")),
        "--json",
    ]))
    .unwrap();
    let r = js["rows"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(js["tokens"], 27);
    let mut total = 0.0;
    for row in r {
        let lp: Vec<f64> = row["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(lp.len(), 9);
        assert!(lp.iter().all(|&x| x < 0.0));
        let mean = -lp.iter().sum::<f64>() / 9.0;
        assert!((mean - row["mean_nll"].as_f64().unwrap()).abs() < 1e-5);
        total += mean * 9.0;
    }
    assert!((js["mean_nll"].as_f64().unwrap() - total / 27.0).abs() < 1e-5);
    assert!((js["perplexity"].as_f64().unwrap() - (total / 27.0).exp()).abs() < 1e-3);
}

#[test]
fn bad_input_fails_clearly_and_keeps_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    let o = s(&out);
    // Corrupt and missing shards.
    std::fs::write(d.join("junk.bin"), vec![1u8; 4096]).unwrap();
    fails(
        &[
            "pretrain",
            "--data",
            s(&d.join("junk.bin")),
            "--config",
            "tiny",
            "--seq",
            "16",
            "--out",
            o,
        ],
        "bad magic",
    );
    fails(
        &[
            "pretrain",
            "--data",
            s(&d.join("nope.bin")),
            "--config",
            "tiny",
            "--seq",
            "16",
            "--out",
            o,
        ],
        "nope.bin",
    );
    // Token ids beyond the vocabulary.
    write_bin(&d.join("big.bin"), &[1, 2, 3, 99, 5, 6, 7, 8]).unwrap();
    fails(
        &[
            "pretrain",
            "--data",
            s(&d.join("big.bin")),
            "--config",
            s(&d.join("config.json")),
            "--out",
            o,
            "--seq",
            "4",
            "--batch",
            "1",
        ],
        "token 3 is id 99",
    );
    // --seq beyond the context.
    fails(
        &[
            "pretrain",
            "--data",
            s(&d.join("train.bin")),
            "--config",
            s(&d.join("config.json")),
            "--out",
            o,
            "--seq",
            "64",
        ],
        "n_positions",
    );
    fails(
        &[
            "pretrain",
            "--data",
            s(&d.join("train.bin")),
            "--config",
            "huge",
            "--out",
            o,
        ],
        "neither a preset",
    );
    // A finished run is not overwritten without --resume.
    run_train(d, &out, &["--steps", "2"]);
    let before = weights(&out.join("final"));
    let args = train_args(d, o, &[]);
    fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "--resume",
    );
    assert_eq!(before, weights(&out.join("final")));
    // Truncated weights, missing tensors, a config that disagrees with the weights.
    let ck = d.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::copy(out.join("final/config.json"), ck.join("config.json")).unwrap();
    std::fs::write(ck.join("model.safetensors"), &before[..before.len() / 2]).unwrap();
    let rows = d.join("rows.npy");
    write_npy_2d(&rows, &[1, 2, 3, 4], 4).unwrap();
    fails(
        &["score", "--model", s(&ck), "--ids", s(&rows)],
        "truncated or corrupt",
    );
    std::fs::write(
        ck.join("config.json"),
        CONFIG.replace("\"n_layer\": 2", "\"n_layer\": 3"),
    )
    .unwrap();
    std::fs::write(ck.join("model.safetensors"), &before).unwrap();
    fails(
        &["score", "--model", s(&ck), "--ids", s(&rows)],
        "h.2.attn.c_attn.weight is missing",
    );
    std::fs::write(
        ck.join("config.json"),
        CONFIG.replace("\"n_embd\": 32", "\"n_embd\": 16"),
    )
    .unwrap();
    fails(
        &["score", "--model", s(&ck), "--ids", s(&rows)],
        "config and weights disagree",
    );
    std::fs::write(ck.join("config.json"), "{ not json").unwrap();
    fails(
        &["score", "--model", s(&ck), "--ids", s(&rows)],
        "config.json",
    );
    fails(
        &["score", "--model", s(&d.join("missing")), "--ids", s(&rows)],
        "not a checkpoint directory",
    );
    // Resume with nothing to resume; resume with different settings.
    fails(
        &[
            "pretrain",
            "--data",
            s(&d.join("train.bin")),
            "--out",
            s(&d.join("empty")),
            "--resume",
        ],
        "no checkpoint",
    );
    let args = train_args(d, o, &["--resume", "--seed", "5"]);
    fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "exact resume needs the same",
    );
}

#[test]
fn diverging_run_stops_with_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let args = train_args(
        d,
        s(&d.join("run")),
        &[
            "--lr",
            "1e30",
            "--clip",
            "0",
            "--warmup",
            "0",
            "--schedule",
            "constant",
        ],
    );
    fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "the loss is",
    );
}
