//! The command line end to end on tiny data the tests make themselves: pre-training, resume,
//! determinism across threads, scoring, and bad input.

mod common;
use common::{fails, ok, pretrain_args, s, strs};

use gpt1::data::shard::{write_bin, write_npy_2d};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::SMALL_CONFIG as CONFIG;

/// A config file and train/val shards of a learnable sequence (a noisy cycle).
fn setup(dir: &Path) {
    common::write_cycle_data(dir);
}

fn run_train(dir: &Path, out: &Path, extra: &[&str]) {
    ok(&strs(&pretrain_args(dir, out, extra)));
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

/// Run `d` (`setup`'s files, built once per test binary) pre-trained for 8 steps with
/// validation and checkpoints every 4 into `d/run`: the run the `pretrain` output tests read.
fn eight_steps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = common::fixture_dir("cli-eight-steps");
        setup(&d);
        run_train(
            &d,
            &d.join("run"),
            &["--val", s(&d.join("val.bin")), "--eval-every", "4", "--save-every", "4"],
        );
        d
    })
}

/// The 8-step run's `metrics.jsonl`, one value per line.
fn eight_step_metrics() -> Vec<serde_json::Value> {
    let metrics = std::fs::read_to_string(eight_steps().join("run/metrics.jsonl")).unwrap();
    metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn pretrain_draws_the_curves() {
    assert!(std::fs::read(eight_steps().join("run/curves.png")).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn pretrain_logs_finite_metrics_for_every_step() {
    let lines = eight_step_metrics();
    assert_eq!(lines.len(), 8);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
        for k in ["loss", "lr", "grad_norm", "tokens_per_s"] {
            assert!(l[k].as_f64().unwrap().is_finite(), "{k} in {l}");
        }
    }
}

#[test]
fn pretrain_logs_the_validation_loss_on_evaluation_steps_only() {
    let lines = eight_step_metrics();
    assert!(
        lines[3]["val_loss"].is_number()
            && lines[7]["val_loss"].is_number()
            && lines[0]["val_loss"].is_null()
    );
    // With each validation, how far apart the final hidden states lie across positions.
    let spread = lines[7]["hidden_spread"].as_f64().unwrap();
    assert!(spread > 0.0 && spread <= 1.0, "{spread}");
}

#[test]
fn pretrain_loss_falls_on_a_learnable_sequence() {
    let lines = eight_step_metrics();
    let first = lines[0]["loss"].as_f64().unwrap();
    let last = lines[7]["loss"].as_f64().unwrap();
    assert!(last < first, "loss should fall: {first} -> {last}");
}

#[test]
fn pretrain_writes_periodic_and_final_checkpoints_with_trainer_state() {
    let out = eight_steps().join("run");
    for dir in ["checkpoint-4", "final"] {
        for f in ["config.json", "model.safetensors", "trainer_state.json", "optimizer.safetensors"]
        {
            assert!(out.join(dir).join(f).exists(), "{dir}/{f}");
        }
    }
}

#[test]
fn pretrain_checkpoint_config_is_hugging_faces() {
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(eight_steps().join("run/final/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["model_type"], "openai-gpt");
    assert_eq!(cfg["n_embd"], 32);
}

#[test]
fn a_final_checkpoint_initializes_a_new_run() {
    let d = eight_steps();
    let tmp = tempfile::tempdir().unwrap();
    let d2 = tmp.path();
    setup(d2);
    run_train(d2, &d2.join("run2"), &["--init", s(&d.join("run/final")), "--steps", "1"]);
}

/// A run stopped before its first checkpoint resumes from `--init` again; if `--init` now holds
/// a model of another size, `--resume` says so instead of failing inside the model.
#[test]
fn resume_refuses_an_init_of_another_size() {
    let d = eight_steps();
    let tmp = tempfile::tempdir().unwrap();
    let d2 = tmp.path();
    setup(d2);
    let init = d2.join("init");
    copy_dir(&d.join("run/final"), &init);
    run_train(d2, &d2.join("done"), &["--init", s(&init), "--steps", "1"]);
    // A run directory with its run.json and no checkpoint yet.
    let stopped = d2.join("stopped");
    std::fs::create_dir(&stopped).unwrap();
    std::fs::copy(d2.join("done/run.json"), stopped.join("run.json")).unwrap();
    // --init replaced by a model half as wide.
    run_train(d2, &d2.join("narrow"), &["--n-embd", "16", "--steps", "1"]);
    std::fs::remove_dir_all(&init).unwrap();
    copy_dir(&d2.join("narrow/final"), &init);
    let args = pretrain_args(d2, &stopped, &["--init", s(&init), "--steps", "1", "--resume"]);
    fails(&strs(&args), "restore the original --init");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
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
    assert_eq!(weights(&straight.join("final")), weights(&split.join("final")));
    let m1 = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    let m2 = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    let losses = |m: &str| {
        m.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()
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
    let mut args = pretrain_args(d, &a, &["--steps", "3"]);
    args.insert(0, "1".into());
    args.insert(0, "--threads".into());
    ok(&strs(&args));
    let mut args = pretrain_args(d, &b, &["--steps", "3"]);
    args.insert(0, "2".into());
    args.insert(0, "--threads".into());
    ok(&strs(&args));
    assert_eq!(weights(&a.join("final")), weights(&b.join("final")));
}

/// Run `d` (`setup`'s files, built once per test binary) pre-trained for 2 steps into `d/run`:
/// the checkpoint that `score` and the damaged-checkpoint tests read. No test writes into it.
fn two_steps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = common::fixture_dir("cli-two-steps");
        setup(&d);
        run_train(&d, &d.join("run"), &["--steps", "2"]);
        d
    })
}

#[test]
fn score_prints_per_row_logprobs() {
    let out = two_steps().join("run");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
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
        let lp: Vec<f64> =
            row["token_logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(lp.len(), 9);
        assert!(lp.iter().all(|&x| x < 0.0));
        let mean = -lp.iter().sum::<f64>() / 9.0;
        assert!((mean - row["mean_nll"].as_f64().unwrap()).abs() < 1e-5);
        total += mean * 9.0;
    }
    assert!((js["mean_nll"].as_f64().unwrap() - total / 27.0).abs() < 1e-5);
    assert!((js["perplexity"].as_f64().unwrap() - (total / 27.0).exp()).abs() < 1e-3);
}

/// `pretrain --data DATA --config CONFIG --out DIR/run` plus `extra` must fail with `needle`.
fn pretrain_fails(d: &Path, data: &str, config: &str, extra: &[&str], needle: &str) {
    let out = d.join("run");
    let mut args = vec!["pretrain", "--data", data, "--config", config, "--out", s(&out)];
    args.extend(extra);
    fails(&args, needle);
}

#[test]
fn a_corrupt_shard_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    std::fs::write(d.join("junk.bin"), vec![1u8; 4096]).unwrap();
    pretrain_fails(d, s(&d.join("junk.bin")), "tiny", &["--seq", "16"], "bad magic");
}

#[test]
fn a_missing_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    pretrain_fails(d, s(&d.join("nope.bin")), "tiny", &["--seq", "16"], "nope.bin");
}

#[test]
fn a_token_id_beyond_the_vocabulary_is_named_with_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    write_bin(&d.join("big.bin"), &[1, 2, 3, 99, 5, 6, 7, 8]).unwrap();
    pretrain_fails(
        d,
        s(&d.join("big.bin")),
        s(&d.join("config.json")),
        &["--seq", "4", "--batch", "1"],
        "token 3 is id 99",
    );
}

#[test]
fn a_seq_beyond_the_context_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    pretrain_fails(
        d,
        s(&d.join("train.bin")),
        s(&d.join("config.json")),
        &["--seq", "64"],
        "n_positions",
    );
}

#[test]
fn a_config_that_is_neither_a_preset_nor_a_file_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    pretrain_fails(d, s(&d.join("train.bin")), "huge", &[], "neither a preset");
}

#[test]
fn a_finished_run_is_not_overwritten_without_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    run_train(d, &out, &["--steps", "2"]);
    let before = weights(&out.join("final"));
    let args = pretrain_args(d, &out, &[]);
    fails(&strs(&args), "--resume");
    assert_eq!(before, weights(&out.join("final")));
}

/// A copy of the 2-step run's final checkpoint in a directory of the test's own (`ck`), with
/// `config` as its `config.json` (the run's own when `None`) and `damage` of the run's weights as
/// its `model.safetensors`; `score` of it on 4 tokens must fail with `needle`.
fn score_of_damaged_checkpoint_fails(
    config: Option<&str>,
    damage: impl FnOnce(&[u8]) -> Vec<u8>,
    needle: &str,
) {
    let run = two_steps().join("run/final");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ck = d.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    match config {
        None => {
            std::fs::copy(run.join("config.json"), ck.join("config.json")).unwrap();
        }
        Some(c) => std::fs::write(ck.join("config.json"), c).unwrap(),
    }
    std::fs::write(ck.join("model.safetensors"), damage(&weights(&run))).unwrap();
    let rows = d.join("rows.npy");
    write_npy_2d(&rows, &[1, 2, 3, 4], 4).unwrap();
    fails(&["score", "--model", s(&ck), "--ids", s(&rows)], needle);
}

#[test]
fn truncated_weights_are_reported() {
    score_of_damaged_checkpoint_fails(None, |w| w[..w.len() / 2].to_vec(), "truncated or corrupt");
}

#[test]
fn a_tensor_the_config_needs_but_the_weights_lack_is_named() {
    score_of_damaged_checkpoint_fails(
        Some(&CONFIG.replace("\"n_layer\": 2", "\"n_layer\": 3")),
        <[u8]>::to_vec,
        "h.2.attn.c_attn.weight is missing",
    );
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_reported() {
    score_of_damaged_checkpoint_fails(
        Some(&CONFIG.replace("\"n_embd\": 32", "\"n_embd\": 16")),
        <[u8]>::to_vec,
        "config and weights disagree",
    );
}

#[test]
fn a_malformed_config_is_named() {
    score_of_damaged_checkpoint_fails(Some("{ not json"), <[u8]>::to_vec, "config.json");
}

#[test]
fn score_of_a_directory_that_is_no_checkpoint_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let rows = d.join("rows.npy");
    write_npy_2d(&rows, &[1, 2, 3, 4], 4).unwrap();
    fails(
        &["score", "--model", s(&d.join("missing")), "--ids", s(&rows)],
        "not a checkpoint directory",
    );
}

#[test]
fn resume_with_nothing_to_resume_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    fails(
        &["pretrain", "--data", s(&d.join("train.bin")), "--out", s(&d.join("empty")), "--resume"],
        "no run here",
    );
}

#[test]
fn resume_with_different_settings_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    run_train(d, &out, &["--steps", "2"]);
    let args = pretrain_args(d, &out, &["--resume", "--seed", "5"]);
    fails(&strs(&args), "exact resume needs the same");
}

#[test]
fn diverging_run_stops_with_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let args = pretrain_args(
        d,
        &d.join("run"),
        &["--lr", "1e30", "--clip", "0", "--warmup", "0", "--schedule", "constant"],
    );
    fails(&strs(&args), "the loss is");
}

/// Counts that must be positive are refused by the flag that gives them, before anything runs.
#[test]
fn zero_counts_name_their_own_flag() {
    for flag in ["--examples", "--finetune-batch", "--pretrain-steps", "--finetune-steps"] {
        fails(&["demo", flag, "0"], &format!("invalid value '0' for '{flag}"));
    }
}

#[test]
fn bench_kernels_reports_every_figure_as_json() {
    let out = ok(&["bench", "kernels", "--runs", "1", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["cpu"].as_str().is_some_and(|s| !s.is_empty()));
    let few = r["few_rows_version"].as_str().unwrap();
    assert!(
        ["AVX-512 register blocks", "AVX2 register blocks", "portable"].contains(&few),
        "{few}"
    );
    // 4 KB ahead on Intel CPUs, none elsewhere (docs/decoding.md).
    let intel = std::fs::read_to_string("/proc/cpuinfo").unwrap().contains("GenuineIntel");
    let ahead = r["bf16_few_rows_prefetch_bytes"].as_u64().unwrap();
    assert_eq!(ahead, if intel { 4096 } else { 0 });
    // gpt1's seven products of a training step, then the LSTM's two of a time step.
    assert_eq!(r["products"].as_array().unwrap().len(), 9);
    for p in r["products"].as_array().unwrap() {
        let rates = p["rates"].as_array().unwrap();
        assert_eq!(rates[0]["version"], "fp32");
        assert!(rates.iter().all(|x| x["gflops"].as_f64().is_some_and(|g| g > 0.0)), "{p}");
    }
    assert!(r["memory"]["read_gb_s"].as_f64().unwrap() > 0.0);
    let decode = r["decode"].as_array().unwrap();
    assert_eq!(decode[0]["version"], "fp32");
    // gpt1's 116 M weights of 4 bytes each, read once per token.
    let mb = decode[0]["weight_mb_per_token"].as_f64().unwrap();
    assert!((mb - 464.5).abs() < 1.0, "{mb}");
}

/// `bench generate --num` decodes that many samples together: every sample's tokens are
/// counted, each decode step is one token for all of them, and `--num 0` is refused.
#[test]
fn bench_generate_decodes_num_samples_together() {
    let run = |num: &str| {
        let args = ["bench", "generate", "--config", "tiny", "--prompt-len", "4", "--new", "6"];
        let out = ok(&[&args[..], &["--num", num, "--rounds", "1", "--json"]].concat());
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    for num in ["1", "3"] {
        let r = run(num);
        assert_eq!(r["num"].as_u64().unwrap().to_string(), num);
        assert!(r["tokens_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        assert!(r["decode_ms_per_token"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        // The read of the model's weights after each round, and decoding against it.
        assert!(r["bandwidth_gbs"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        assert!(r["bandwidth_fraction"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        // A few fp32 rows: the decode steps run on a spinning team wherever there are cores
        // for one (docs/decoding.md).
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        assert_eq!(r["decode_team"].as_bool(), Some(cores >= 2), "{r}");
    }
    fails(&["bench", "generate", "--config", "tiny", "--num", "0"], "--num");
    fails(&["bench", "generate", "--config", "tiny", "--num", "513"], "between 1 and 512");
}

#[test]
fn a_hub_id_names_its_snapshot_in_the_local_hugging_face_cache() {
    // The layout transformers and huggingface-cli leave: models--ORG--NAME/{refs/main,snapshots/H}.
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--someone--tiny-gpt");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(Path::new("tests/fixtures/hf_gen").join(f), snap.join(f)).unwrap();
    }
    let run = |model: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
            .args([
                "generate",
                "--model",
                model,
                "--ids",
                "54 43 49 39",
                "--max-new",
                "3",
                "--greedy",
                "--json",
            ])
            .env("HF_HUB_CACHE", cache.path())
            .output()
            .unwrap()
    };
    let by_id = run("someone/tiny-gpt");
    assert!(by_id.status.success(), "{}", String::from_utf8_lossy(&by_id.stderr));
    let by_path = run("tests/fixtures/hf_gen");
    let ids = |o: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["ids"].clone()
    };
    assert_eq!(ids(&by_id), ids(&by_path));
    let missing = run("someone/other-gpt");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("huggingface-cli download someone/other-gpt"),
        "{err}"
    );
}
