//! What a pre-training run says before and while it runs: the summary, a refusal before
//! allocating what cannot fit, and log lines when stderr is not a terminal.

mod common;
use common::{fails, gpt1, s};

#[test]
fn a_run_that_cannot_fit_in_memory_is_refused_before_it_allocates() {
    let d = tempfile::tempdir().unwrap();
    // gpt1-mini with 4,096 × 128 tokens per pass needs about 50 GiB of activations.
    let r = d.path().join("r");
    let err = fails(
        &[
            "pretrain",
            "--data",
            "tests/fixtures/traj_tokens.bin",
            "--config",
            "gpt1-mini",
            "--out",
            s(&r),
            "--batch",
            "4096",
            "--seq",
            "128",
        ],
        "GiB are available",
    );
    assert!(err.contains("--batch 4096") && err.contains("the run needs about"), "{err}");
    assert!(!r.join("metrics.jsonl").exists(), "nothing written");
}

#[test]
fn redirected_runs_log_the_summary_evaluations_and_the_last_step() {
    let d = tempfile::tempdir().unwrap();
    let out = gpt1(&[
        "pretrain",
        "--data",
        "tests/fixtures/traj_tokens.bin",
        "--val",
        "tests/fixtures/traj_tokens.bin",
        "--config",
        "tests/fixtures/hf_tiny/config.json",
        "--out",
        s(&d.path().join("r")),
        "--batch",
        "3",
        "--seq",
        "12",
        "--steps",
        "6",
        "--warmup",
        "1",
        "--eval-every",
        "3",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model: 0.0 M parameters; 36 tokens per step (3 × 12, 3 per pass)"),
        "{err}"
    );
    assert!(err.contains("first step") && err.contains("for the 5 steps left"), "{err}");
    assert!(err.contains("step 3: val_loss") && err.contains("step 6: val_loss"), "{err}");
    assert!(err.contains("step 6/6  loss"), "{err}");
}

/// `prepare` saves its tokenizer beside the shards and pre-training saves it with every
/// checkpoint, so a checkpoint carries its vocabulary (HF file names).
#[test]
fn checkpoints_carry_the_tokenizer_of_their_data() {
    use gpt1::text::Tokenizer;
    let d = tempfile::tempdir().unwrap();
    let (tok, corpus, data, run) = (
        d.path().join("tok"),
        d.path().join("corpus.txt"),
        d.path().join("data"),
        d.path().join("run"),
    );
    std::fs::create_dir_all(&tok).unwrap();
    common::write_letter_vocab(&tok, &['.'], &[]);
    std::fs::write(&corpus, "the cat sat on the mat. ".repeat(40)).unwrap();
    common::ok(&[
        "prepare",
        "--tokenizer",
        s(&tok),
        "--input",
        s(&corpus),
        "--out",
        s(&data),
        "--val-fraction",
        "0",
        "--quiet",
    ]);
    assert!(
        data.join("tokenizer/vocab.json").exists() && data.join("tokenizer/merges.txt").exists()
    );
    let cfg = d.path().join("cfg.json");
    std::fs::write(
        &cfg,
        r#"{"vocab_size": 60, "n_positions": 16, "n_embd": 16, "n_layer": 1, "n_head": 2}"#,
    )
    .unwrap();
    common::ok(&[
        "pretrain",
        "--data",
        s(&data.join("train.bin")),
        "--config",
        s(&cfg),
        "--out",
        s(&run),
        "--batch",
        "2",
        "--seq",
        "8",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--quiet",
    ]);
    let (a, b) =
        (Tokenizer::load(&tok, None).unwrap(), Tokenizer::load(&run.join("final"), None).unwrap());
    assert_eq!(a.encode("the cat.").unwrap(), b.encode("the cat.").unwrap());
    assert_eq!(a.vocab_size(), b.vocab_size());
}
