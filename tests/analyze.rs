//! `gpt1 analyze`: the layers-transferred analysis end to end on a small task, its outputs,
//! resuming, and bad input.

mod common;
use common::{fails, ok, s};
use gpt1::model::checkpoint::save_model;
use gpt1::model::{Config, Gpt};
use std::path::Path;

/// A 2-block "pre-trained" model (random) over a letter vocabulary with its tokenizer in `m`,
/// and an SST-2-style task in `d`.
fn setup(m: &Path, d: &Path) {
    common::write_letter_vocab(
        m,
        &['.'],
        &[("g", "o"), ("go", "o"), ("goo", "d</w>"), ("b", "a"), ("ba", "d</w>")],
    );
    let mut c = Config::named("tiny").unwrap();
    c.vocab_size = 26 * 2 + 2 + 5;
    c.n_positions = 24;
    c.n_embd = 16;
    c.n_layer = 2;
    c.n_head = 2;
    save_model(m, &Gpt::init(c, 3)).unwrap();
    let (mut train, mut dev) =
        (String::from("sentence\tlabel\n"), String::from("sentence\tlabel\n"));
    for (i, subj) in
        ["the cat", "a dog", "this film", "the food", "my day", "that song"].iter().enumerate()
    {
        for (word, label) in [("good", 1), ("bad", 0)] {
            let line = format!("{subj} was {word} .\t{label}\n");
            if i < 4 { train.push_str(&line) } else { dev.push_str(&line) }
        }
    }
    std::fs::write(d.join("train.tsv"), train).unwrap();
    std::fs::write(d.join("dev.tsv"), dev).unwrap();
}

#[test]
fn layers_writes_a_table_and_figure_and_resumes() {
    let (m, d, out) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    setup(m.path(), d.path());
    let a = out.path().join("a");
    let args = [
        "analyze",
        "layers",
        "--model",
        s(m.path()),
        "--task",
        "sst2",
        "--data",
        s(d.path()),
        "--out",
        s(&a),
        "--layers",
        "0,2",
        "--epochs",
        "2",
        "--batch",
        "4",
        "--quiet",
    ];
    let lines = ok(&args);
    let points: Vec<serde_json::Value> =
        lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(points.len(), 2);
    for (p, k) in points.iter().zip([0, 2]) {
        assert_eq!(p["layers"], k);
        let (dev, train) = (p["dev"].as_f64().unwrap(), p["train"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&dev) && (0.0..=1.0).contains(&train));
        assert_eq!(p["train_examples"], 8);
        assert_eq!(p["steps"], 4);
    }
    let csv = std::fs::read_to_string(a.join("layers.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with("layers transferred,dev,train"));
    assert!(std::fs::read_to_string(a.join("layers.md")).unwrap().contains("| 2 |"));
    assert_eq!(&std::fs::read(a.join("layers.png")).unwrap()[1..4], b"PNG");
    // Run again with one more K: the done runs are read back, not redone.
    let before = std::fs::metadata(a.join("transfer-0/point.json")).unwrap().modified().unwrap();
    let mut more = args.to_vec();
    more[11] = "0,1,2";
    let lines = ok(&more);
    assert_eq!(lines.lines().count(), 3);
    assert_eq!(
        std::fs::metadata(a.join("transfer-0/point.json")).unwrap().modified().unwrap(),
        before
    );
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first, points[0]);
    assert!(a.join("transfer-1/best/head.safetensors").exists());
}

#[test]
fn layers_beyond_the_model_are_refused() {
    let (m, d, out) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    setup(m.path(), d.path());
    let a = out.path().join("a");
    fails(
        &[
            "analyze",
            "layers",
            "--model",
            s(m.path()),
            "--task",
            "sst2",
            "--data",
            s(d.path()),
            "--out",
            s(&a),
            "--layers",
            "3",
        ],
        "--layers 3 exceeds the model's 2 blocks",
    );
}

/// `analyze zero-shot`: every checkpoint of a pre-training run on two zero-shot tasks, points
/// normalised between chance and the reference, the table and figure, and a second run that
/// recomputes nothing.
#[test]
fn zero_shot_along_pretraining_scores_every_checkpoint_once() {
    let (d, run_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (tok, data, run, a) = (
        d.path().join("tok"),
        d.path().join("data"),
        run_root.path().join("run"),
        d.path().join("a"),
    );
    std::fs::create_dir_all(&tok).unwrap();
    common::write_letter_vocab(&tok, &['.'], &[]);
    // A 67-token model (the fixture config) pre-trained 4 steps, a checkpoint every 2.
    ok(&[
        "pretrain",
        "--data",
        "tests/fixtures/traj_tokens.bin",
        "--config",
        "tests/fixtures/hf_tiny/config.json",
        "--out",
        s(&run),
        "--batch",
        "2",
        "--seq",
        "8",
        "--steps",
        "4",
        "--warmup",
        "1",
        "--save-every",
        "2",
        "--quiet",
    ]);
    let sst = data.join("glue/SST-2");
    std::fs::create_dir_all(&sst).unwrap();
    std::fs::write(
        sst.join("dev.tsv"),
        "sentence\tlabel\nit was good .\t1\nit was bad .\t0\nok .\t1\n",
    )
    .unwrap();
    let dpr = data.join("winograd/dpr");
    std::fs::create_dir_all(&dpr).unwrap();
    std::fs::write(dpr.join("test.c.txt"), "a cat hit a dog as it ran.\nit\na cat,a dog\na cat\n\nab saw cd so he ran.\nhe\nab,cd\ncd\n").unwrap();
    let args = [
        "analyze",
        "zero-shot",
        "--run",
        s(&run),
        "--tasks",
        "sst2,dprd",
        "--data",
        s(&data),
        "--tokenizer",
        s(&tok),
        "--reference",
        "sst2=0.9",
        "--out",
        s(&a),
    ];
    let out = ok(&args);
    let points: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(points.len(), 4);
    for p in &points {
        let (score, norm) = (p["score"].as_f64().unwrap(), p["normalized"].as_f64().unwrap());
        let reference = if p["task"] == "sst2" { 0.9 } else { 1.0 };
        assert!((norm - (score - 0.5) / (reference - 0.5)).abs() < 1e-9, "{p}");
        assert!([2, 4].contains(&p["step"].as_u64().unwrap()));
        assert_eq!(p["tokens"].as_u64().unwrap(), p["step"].as_u64().unwrap() * 16);
    }
    let csv = std::fs::read_to_string(a.join("zero-shot.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.starts_with("checkpoint,updates,tokens,dprd,dprd (normalized),sst2,sst2 (normalized)"),
        "{csv}"
    );
    assert_eq!(&std::fs::read(a.join("zero-shot.png")).unwrap()[1..4], b"PNG");
    let log = std::fs::read_to_string(a.join("zero-shot.jsonl")).unwrap();
    ok(&args);
    assert_eq!(
        std::fs::read_to_string(a.join("zero-shot.jsonl")).unwrap(),
        log,
        "nothing recomputed"
    );
    fails(
        &[
            "analyze",
            "zero-shot",
            "--run",
            s(&data),
            "--tasks",
            "sst2",
            "--data",
            s(&data),
            "--tokenizer",
            s(&tok),
            "--out",
            s(&a),
        ],
        "no checkpoints",
    );
}

/// Table 5's shape: every variant × task (SST-2 and RTE-shaped small tasks), the LSTM row
/// included, CSV/Markdown/PNG, λ = 0 for the no-aux-LM row, a second run reading the cells
/// back.
#[test]
fn ablations_write_table_5_and_resume() {
    let (m, d, out) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sst = d.path().join("glue/SST-2");
    std::fs::create_dir_all(&sst).unwrap();
    setup(m.path(), &sst);
    let rte = d.path().join("glue/RTE");
    std::fs::create_dir_all(&rte).unwrap();
    let pairs = "sentence1\tsentence2\tlabel\nthe cat was good .\tthe cat was good .\tentailment\na dog was bad .\tthe cat was good .\tnot_entailment\nmy day was good .\tmy day was good .\tentailment\nthat song was bad .\tthe food was good .\tnot_entailment\n";
    std::fs::write(rte.join("train.tsv"), pairs).unwrap();
    std::fs::write(rte.join("dev.tsv"), pairs).unwrap();
    let a = out.path().join("a");
    // A small pre-trained LSTM of the same vocabulary for the LSTM row.
    let l = out.path().join("lstm");
    let lc = gpt1::model::lstm::LstmConfig::new(26 * 2 + 2 + 5, 8, 16, 1);
    gpt1::model::lstm::save_lstm(&l, &gpt1::model::lstm::Lstm::init(lc, 4)).unwrap();
    let args = [
        "analyze",
        "ablations",
        "--transformer",
        s(m.path()),
        "--lstm",
        s(&l),
        "--tasks",
        "sst2,rte",
        "--data",
        s(d.path()),
        "--out",
        s(&a),
        "--epochs",
        "1",
        "--batch",
        "4",
        "--quiet",
    ];
    let lines = ok(&args);
    let cells: Vec<serde_json::Value> =
        lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(cells.len(), 8);
    for c in &cells {
        assert!((0.0..=1.0).contains(&c["dev"].as_f64().unwrap()), "{c}");
    }
    // λ = 0 in the no-aux-LM runs: their metrics log an LM loss of 0.
    let m0 = std::fs::read_to_string(a.join("no-aux-lm-sst2/metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(m0.lines().next().unwrap()).unwrap();
    assert_eq!(first["lm_loss"], 0.0);
    let md = std::fs::read_to_string(a.join("ablations.md")).unwrap();
    assert!(md.contains("Transformer w/o pre-training") && md.contains("LSTM w/ aux LM"), "{md}");
    assert_eq!(std::fs::read_to_string(a.join("ablations.csv")).unwrap().lines().count(), 5);
    assert!(std::fs::read_to_string(a.join("lstm-rte/best/config.json")).unwrap().contains("lstm"));
    assert_eq!(&std::fs::read(a.join("ablations.png")).unwrap()[1..4], b"PNG");
    // Again: every cell is read back (no run directory is touched).
    let before = std::fs::metadata(a.join("full-sst2/metrics.jsonl")).unwrap().modified().unwrap();
    assert_eq!(ok(&args), lines);
    let after = std::fs::metadata(a.join("full-sst2/metrics.jsonl")).unwrap().modified().unwrap();
    assert_eq!(before, after);
    // A cell stopped midway (its run.json written, no cell.json) is resumed in place, to the
    // same score.
    std::fs::remove_file(a.join("lstm-rte/cell.json")).unwrap();
    assert_eq!(ok(&args), lines);
}

/// The SST-2 task of [`setup`] and the arguments of `analyze ablations` over it into `out`,
/// with `extra`.
fn ablation_args(m: &Path, d: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let sst = d.join("glue/SST-2");
    std::fs::create_dir_all(&sst).unwrap();
    setup(m, &sst);
    let base = ["analyze", "ablations", "--tasks", "sst2", "--data", s(d), "--out", s(out)];
    let tail = ["--batch", "4", "--quiet"];
    base.iter().chain(extra).chain(&tail).map(|x| x.to_string()).collect()
}

/// Pre-training the Transformer and then the LSTM in one process installs one Ctrl-C handler
/// (a second install would fail and leave the second run and the cells without one).
#[test]
fn ablations_that_pretrain_twice_keep_their_ctrl_c_handler() {
    let (m, d, out) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut c = Config::named("tiny").unwrap();
    (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) = (26 * 2 + 2 + 5, 128, 16, 1, 2);
    let cfg = d.path().join("cfg.json");
    std::fs::write(&cfg, serde_json::to_string(&c).unwrap()).unwrap();
    let toks: Vec<u32> = (0..600).map(|i| (i % 50) as u32).collect();
    let data = d.path().join("tokens.bin");
    gpt1::data::shard::write_bin(&data, &toks).unwrap();
    let a = out.path().join("a");
    let extra = [
        "--pretrain-data",
        s(&data),
        "--config",
        s(&cfg),
        "--pretrain-steps",
        "2",
        "--with-lstm",
        "--lstm-hidden",
        "8",
        "--tokenizer",
        s(m.path()),
        "--epochs",
        "1",
    ];
    let args = ablation_args(m.path(), d.path(), &a, &extra);
    let o = common::gpt1(&common::strs(&args));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(a.join("pretrain-lstm/final").is_dir());
    assert!(!err.contains("Ctrl-C will stop at once"), "{err}");
}

/// Ctrl-C during an ablation cell's fine-tuning stops it after its step with a checkpoint and
/// exit status 130, as `finetune` does.
#[cfg(unix)]
#[test]
fn ctrl_c_during_an_ablation_cell_checkpoints_it() {
    let (m, d, out) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = out.path().join("a");
    let extra = ["--transformer", s(m.path()), "--epochs", "100000"];
    let args = ablation_args(m.path(), d.path(), &a, &extra);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = a.join("full-sst2/metrics.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 1 {
        assert!(t0.elapsed().as_secs() < 120, "the first cell did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: sending SIGINT to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let saved = std::fs::read_dir(a.join("full-sst2"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"));
    assert!(saved, "no checkpoint: {err}");
}
