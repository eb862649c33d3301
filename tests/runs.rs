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
