//! `gpt1 finetune` / `evaluate` end to end on a small task and vocabulary the test writes.

mod common;
use common::{fails, ok, s, scratch_args, setup, strs, write_config, write_vocab};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Runs [`scratch_args`]; its standard output.
fn from_scratch(d: &Path, task: &str, out: &Path, extra: &[&str]) -> String {
    ok(&strs(&scratch_args(d, task, out, extra)))
}

/// The task of [`write_task`] fine-tuned from scratch for 15 epochs: the run that `evaluate`,
/// `predict` and `plot` are tested on. Built once per test binary; no test writes into its
/// directories (tests that change the task files use a data directory of their own).
struct Trained {
    /// The vocabulary, task files and config the run was made from.
    dir: PathBuf,
    /// The run directory.
    out: PathBuf,
    /// `finetune`'s JSON summary.
    summary: serde_json::Value,
}

impl Trained {
    fn best(&self) -> PathBuf {
        self.out.join("best")
    }

    /// The best dev accuracy that `finetune` reported.
    fn accuracy(&self) -> f64 {
        self.summary["best_dev"]["accuracy"].as_f64().unwrap()
    }
}

fn trained() -> &'static Trained {
    static RUN: OnceLock<Trained> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = common::fixture_dir("finetune-sst2");
        setup(&dir);
        let out = dir.join("run");
        let js = from_scratch(
            &dir,
            "SST-2",
            &out,
            &["--epochs", "15", "--batch", "8", "--lr", "2e-3", "--aux-lm", "0", "--quiet"],
        );
        Trained { summary: serde_json::from_str(&js).unwrap(), dir, out }
    })
}

/// `CMD --model RUN/best --data DATA` for the trained run, plus `extra`.
fn on_best(cmd: &str, data: &Path, extra: &[&str]) -> Vec<String> {
    let best = trained().best();
    let base = [cmd, "--model", s(&best), "--data", s(data)];
    base.iter().chain(extra).map(|a| a.to_string()).collect()
}

/// A data directory of the test's own holding the task, config and vocabulary of [`setup`].
fn own_setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    tmp
}

#[test]
fn finetune_learns_a_small_task() {
    let t = trained();
    let acc = t.accuracy();
    assert!(acc >= 0.9, "dev accuracy {acc}: {}", t.summary);
}

#[test]
fn finetune_saves_the_best_model_with_its_head_task_and_tokenizer() {
    let best = trained().best();
    for f in [
        "config.json",
        "model.safetensors",
        "head.safetensors",
        "task.json",
        "vocab.json",
        "merges.txt",
    ] {
        assert!(best.join(f).exists(), "{f}");
    }
}

#[test]
fn finetune_evaluates_dev_once_per_epoch() {
    let metrics = std::fs::read_to_string(trained().out.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("dev_score")));
    // Fifteen epochs, fifteen dev evaluations.
    assert_eq!(metrics.matches("dev_score").count(), 15);
}

#[test]
fn finetune_draws_the_curves_at_the_end() {
    assert!(std::fs::read(trained().out.join("curves.png")).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn plot_draws_the_curves_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("c.png");
    ok(&["plot", s(&trained().out), "--out", s(&png)]);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn plot_names_the_line_of_a_malformed_metrics_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"step\": 1, \"loss\": 2}\n{oops\n").unwrap();
    fails(&["plot", s(&bad)], "line 2");
}

/// `metrics.jsonl` of a 3-update run with the auxiliary LM objective at its default (λ = 0.5).
fn three_step_run() -> String {
    let tmp = own_setup();
    let d = tmp.path();
    let out = d.join("run2");
    from_scratch(d, "sst2", &out, &["--max-steps", "3", "--batch", "8", "--quiet"]);
    std::fs::read_to_string(out.join("metrics.jsonl")).unwrap()
}

#[test]
fn max_steps_inside_the_first_epoch_evaluates_dev_once() {
    // One dev evaluation, not one per remaining epoch.
    let m2 = three_step_run();
    assert_eq!(m2.matches("dev_score").count(), 1, "{m2}");
}

#[test]
fn the_auxiliary_lm_loss_is_trained_and_logged() {
    let m2 = three_step_run();
    let first: serde_json::Value = serde_json::from_str(m2.lines().next().unwrap()).unwrap();
    assert!(first["lm_loss"].as_f64().unwrap() > 1.0, "{first}");
}

#[test]
fn eval_every_evaluates_dev_at_its_multiples_and_the_last_step() {
    // --eval-every 2 over 5 updates (4 batches an epoch): dev at 2, 4 (also the epoch's end), 5.
    let tmp = own_setup();
    let d = tmp.path();
    let out3 = d.join("run3");
    let js3: serde_json::Value = serde_json::from_str(&from_scratch(
        d,
        "sst2",
        &out3,
        &["--max-steps", "5", "--batch", "8", "--eval-every", "2", "--quiet"],
    ))
    .unwrap();
    let m3 = std::fs::read_to_string(out3.join("metrics.jsonl")).unwrap();
    let dev_steps: Vec<u64> = m3
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("dev_score").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(dev_steps, [2, 4, 5], "{m3}");
    assert!([2, 4, 5].contains(&js3["best_step"].as_u64().unwrap()), "{js3}");
}

#[test]
fn evaluate_reloads_the_best_model_and_gives_its_dev_accuracy() {
    let t = trained();
    let acc = t.accuracy();
    let args = on_best("evaluate", &t.dir, &["--task", "sst2", "--json"]);
    let ev: serde_json::Value = serde_json::from_str(&ok(&strs(&args))).unwrap();
    assert_eq!(ev["task"], "sst2");
    assert_eq!(ev["split"], "dev");
    assert_eq!(ev["n"], 4);
    assert_eq!(ev["metrics"]["accuracy"].as_f64().unwrap(), acc);
    assert_eq!(ev["score"].as_f64().unwrap(), acc);
    assert!(ev["metrics"].get("pearson").is_none(), "{ev}");
}

#[test]
fn evaluate_refuses_a_task_the_model_was_not_finetuned_on() {
    let args = on_best("evaluate", &trained().dir, &["--task", "cola"]);
    fails(&strs(&args), "was fine-tuned on sst2");
}

#[test]
fn predict_writes_a_label_per_dev_example() {
    let tmp = tempfile::tempdir().unwrap();
    let pred = tmp.path().join("pred.tsv");
    let args = on_best("predict", &trained().dir, &["--split", "dev", "--out", s(&pred)]);
    ok(&strs(&args));
    let p = std::fs::read_to_string(&pred).unwrap();
    assert_eq!(p.lines().count(), 5);
    assert!(p.lines().skip(1).all(|l| l.ends_with("\t0") || l.ends_with("\t1")), "{p}");
}

#[test]
fn predict_writes_probabilities_that_agree_with_the_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let pred = tmp.path().join("pred.tsv");
    let extra = ["--split", "dev", "--out", s(&pred), "--probabilities"];
    ok(&strs(&on_best("predict", &trained().dir, &extra)));
    let p = std::fs::read_to_string(&pred).unwrap();
    assert!(p.starts_with("index\tprediction\tp_0\tp_1\n"), "{p}");
    for line in p.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (p0, p1): (f64, f64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        assert!((p0 + p1 - 1.0).abs() < 1e-5, "{line}");
        assert_eq!(f[1], if p1 > p0 { "1" } else { "0" }, "{line}");
    }
}

#[test]
fn export_refuses_a_classification_head_transformers_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    fails(&["export", "--model", s(&trained().out), "--out", s(&out)], "2-class classification");
    assert!(!out.exists());
}

#[test]
fn data_stats_counts_examples_labels_lengths_and_truncation() {
    let tmp = own_setup();
    let d = tmp.path();
    let st: serde_json::Value = serde_json::from_str(&ok(&[
        "data",
        "stats",
        "--task",
        "sst2",
        "--data",
        s(d),
        "--tokenizer",
        s(d),
        "--max-len",
        "12",
        "--json",
    ]))
    .unwrap();
    assert_eq!(st["splits"]["train"]["examples"], 28);
    assert_eq!(st["splits"]["dev"]["labels"]["1"], 2);
    assert!(st["splits"]["train"]["tokens"]["max"].as_u64().unwrap() > 10);
    assert!(st["splits"]["train"]["truncated"].as_u64().unwrap() > 0);
    let text = ok(&[
        "data",
        "stats",
        "--task",
        "sst2",
        "--data",
        s(d),
        "--tokenizer",
        s(d),
        "--max-len",
        "12",
    ]);
    assert!(text.contains("train: 28 examples") && text.contains("longer than 12"), "{text}");
}

#[test]
fn evaluate_rejects_a_zero_batch() {
    let args = on_best("evaluate", &trained().dir, &["--batch", "0"]);
    fails(&strs(&args), "--batch must be at least 1");
}

#[test]
fn finetune_rejects_settings_that_are_not_finite_and_non_negative() {
    let tmp = own_setup();
    let d = tmp.path();
    for (flag, v) in [("--lr", "NaN"), ("--aux-lm", "-1")] {
        let arg = format!("{flag}={v}");
        let args = scratch_args(d, "SST-2", &d.join("run"), &[&arg]);
        fails(&strs(&args), &format!("{flag} {v} must be a finite number ≥ 0"));
        assert!(!d.join("run").exists(), "{flag}: nothing written");
    }
}

#[test]
fn finetune_rejects_an_unknown_task() {
    let tmp = own_setup();
    let d = tmp.path();
    fails(&strs(&scratch_args(d, "nope", &d.join("run"), &[])), "unknown task");
}

#[test]
fn evaluate_names_a_missing_split_file() {
    let args = on_best("evaluate", &trained().dir, &["--split", "test"]);
    fails(&strs(&args), "missing split file");
}

/// A data directory of the test's own with GLUE's unlabelled `test.tsv` beside the task files.
fn with_unlabelled_test() -> tempfile::TempDir {
    let tmp = own_setup();
    std::fs::write(
        tmp.path().join("test.tsv"),
        "index\tsentence\n0\tthe cat was good .\n1\ta dog was bad .\n2\tmy day is good\n",
    )
    .unwrap();
    tmp
}

#[test]
fn evaluate_of_an_unlabelled_test_file_says_it_has_no_labels() {
    // GLUE's test files carry no labels.
    let tmp = with_unlabelled_test();
    fails(&strs(&on_best("evaluate", tmp.path(), &["--split", "test"])), "has no labels");
}

#[test]
fn predict_writes_a_row_per_unlabelled_test_example() {
    let tmp = with_unlabelled_test();
    let pred = tmp.path().join("pred.tsv");
    ok(&strs(&on_best("predict", tmp.path(), &["--out", s(&pred)])));
    let p = std::fs::read_to_string(&pred).unwrap();
    assert_eq!(p.lines().count(), 4, "{p}");
    assert!(p.starts_with("index\tprediction\n0\t"), "{p}");
}

/// A data directory of the test's own whose dev file has an unknown label on line 2.
fn with_broken_dev() -> tempfile::TempDir {
    let tmp = own_setup();
    std::fs::write(tmp.path().join("dev.tsv"), "sentence\tlabel\nthe cat was good .\tmaybe\n")
        .unwrap();
    tmp
}

#[test]
fn evaluate_names_the_line_of_an_unknown_label() {
    let tmp = with_broken_dev();
    fails(&strs(&on_best("evaluate", tmp.path(), &[])), "line 2: unknown label");
}

#[test]
fn a_broken_dev_file_stops_finetuning() {
    // A broken dev file is not taken for a missing one ...
    let tmp = with_broken_dev();
    let d = tmp.path();
    let out4 = d.join("run4");
    fails(
        &strs(&scratch_args(d, "sst2", &out4, &["--max-steps", "1"])),
        "dev.tsv: line 2: unknown label",
    );
    // ... and the failed run leaves nothing that keeps a later one out of its directory.
    std::fs::remove_file(d.join("dev.tsv")).unwrap();
    from_scratch(d, "sst2", &out4, &["--max-steps", "1"]);
}

#[test]
fn without_a_dev_file_finetuning_keeps_the_last_weights() {
    let tmp = own_setup();
    let d = tmp.path();
    std::fs::remove_file(d.join("dev.tsv")).unwrap();
    let out4 = d.join("run4");
    let js4: serde_json::Value =
        serde_json::from_str(&from_scratch(d, "sst2", &out4, &["--max-steps", "1"])).unwrap();
    assert!(js4["best_dev"].is_null(), "{js4}");
    assert!(out4.join("best/model.safetensors").exists());
}

#[test]
fn an_earlier_runs_directory_is_never_overwritten() {
    let tmp = own_setup();
    let d = tmp.path();
    let out = d.join("run");
    from_scratch(d, "sst2", &out, &["--max-steps", "1", "--quiet"]);
    let before = std::fs::read(out.join("metrics.jsonl")).unwrap();
    fails(&strs(&scratch_args(d, "sst2", &out, &["--max-steps", "1"])), "already holds a run");
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), before);
}

/// The multiple-choice task's columns in the custom-task tests.
const MC_COLUMNS: [&str; 8] =
    ["--type", "choice", "--text-a", "story", "--choices", "a,b", "--label", "answer"];

/// The vocabulary and config in a directory of the test's own (no task files).
fn custom_setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_vocab(tmp.path());
    write_config(tmp.path());
    tmp
}

/// `finetune --from-scratch` of `--task custom` with the config and vocabulary in `d`, plus
/// `extra`.
fn custom_args(d: &Path, extra: &[&str]) -> Vec<String> {
    common::finetune_args(d, "custom", extra)
}

/// A classification task from a CSV with quoted fields in `d/csv`, fine-tuned for 2 updates into
/// `d/run_csv`; the two directories.
fn csv_run(d: &Path) -> (PathBuf, PathBuf) {
    let csv = d.join("csv");
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::write(csv.join("train.csv"), "review,stars\n\"good, good\",pos\nbad,neg\ngood,pos\n")
        .unwrap();
    std::fs::write(csv.join("dev.csv"), "review,stars\ngood,pos\nbad,neg\n").unwrap();
    let out = d.join("run_csv");
    ok(&strs(&custom_args(
        d,
        &[
            "--type",
            "single",
            "--text-a",
            "review",
            "--label",
            "stars",
            "--data",
            s(&csv),
            "--out",
            s(&out),
            "--max-steps",
            "2",
            "--batch",
            "2",
            "--quiet",
        ],
    )));
    (csv, out)
}

#[test]
fn custom_csv_task_labels_are_the_sorted_distinct_values() {
    let tmp = custom_setup();
    let (_, out) = csv_run(tmp.path());
    let task: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("best/task.json")).unwrap())
            .unwrap();
    assert_eq!(task["task"]["labels"], serde_json::json!(["neg", "pos"]));
}

#[test]
fn evaluate_takes_a_custom_task_from_its_run() {
    let tmp = custom_setup();
    let (csv, out) = csv_run(tmp.path());
    let ev: serde_json::Value = serde_json::from_str(&ok(&[
        "evaluate",
        "--model",
        s(&out.join("best")),
        "--data",
        s(&csv),
        "--json",
    ]))
    .unwrap();
    assert_eq!(ev["n"], 2);
}

/// A multiple-choice task from JSON lines in `d/mc`, whose labels are a candidate index in one
/// row and the candidate's text in the other; the directory.
fn write_choice_task(d: &Path) -> PathBuf {
    let mc = d.join("mc");
    std::fs::create_dir_all(&mc).unwrap();
    let rows = [
        r#"{"story": "the cat sat", "q": "then", "a": "it was good", "b": "it was bad", "answer": 0}"#,
        r#"{"story": "a dog ran", "q": "then", "a": "bad", "b": "good", "answer": "good"}"#,
    ];
    std::fs::write(mc.join("train.jsonl"), rows.join("\n")).unwrap();
    std::fs::write(mc.join("dev.jsonl"), rows.join("\n")).unwrap();
    mc
}

#[test]
fn custom_choice_task_labels_are_a_candidate_index_or_its_text() {
    let tmp = custom_setup();
    let d = tmp.path();
    let mc = write_choice_task(d);
    let out = d.join("run_mc");
    let args = custom_args(
        d,
        &[
            "--type",
            "choice",
            "--text-a",
            "story",
            "--text-b",
            "q",
            "--choices",
            "a,b",
            "--label",
            "answer",
            "--data",
            s(&mc),
            "--out",
            s(&out),
            "--max-steps",
            "2",
            "--batch",
            "2",
            "--quiet",
        ],
    );
    let js: serde_json::Value = serde_json::from_str(&ok(&strs(&args))).unwrap();
    assert_eq!(js["train_examples"], 2);
    // A choice head is what transformers' DoubleHeads holds: exported with the trained head.
    let hf = d.join("hf");
    ok(&["export", "--model", s(&out), "--out", s(&hf)]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "OpenAIGPTDoubleHeadsModel");
    assert_eq!(cfg["num_labels"], 1);
    let read = |p: &Path, name: &str| -> (Vec<usize>, Vec<u8>) {
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let v = st.tensor(name).unwrap();
        (v.shape().to_vec(), v.data().to_vec())
    };
    let (shape, w) = read(&hf.join("model.safetensors"), "multiple_choice_head.summary.weight");
    let (_, ours) = read(&out.join("best/head.safetensors"), "weight");
    assert_eq!((shape[0], w), (1, ours));
    let (_, b) = read(&hf.join("model.safetensors"), "multiple_choice_head.summary.bias");
    assert_eq!(b, read(&out.join("best/head.safetensors"), "bias").1);
    assert!(hf.join("vocab.json").exists() && hf.join("gpt1_task.json").exists());
    // An earlier export is replaced whole; a directory holding anything else is refused.
    ok(&["export", "--model", s(&out), "--out", s(&hf)]);
    std::fs::write(hf.join("notes.md"), b"mine").unwrap();
    fails(
        &["export", "--model", s(&out), "--out", s(&hf)],
        "holds files gpt1 did not write (notes.md)",
    );
    assert_eq!(std::fs::read(hf.join("notes.md")).unwrap(), b"mine");
}

#[test]
fn data_stats_counts_custom_choice_labels_by_candidate() {
    let tmp = custom_setup();
    let mc = write_choice_task(tmp.path());
    let mut args = vec!["data", "stats", "--task", "custom"];
    args.extend(MC_COLUMNS);
    args.extend(["--data", s(&mc), "--json"]);
    let st: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(st["splits"]["train"]["labels"]["candidate 2"], 1);
}

#[test]
fn custom_task_without_its_type_is_explained() {
    let tmp = custom_setup();
    let d = tmp.path();
    let mc = write_choice_task(d);
    let out = d.join("run_mc");
    fails(
        &strs(&custom_args(d, &["--data", s(&mc), "--out", s(&out)])),
        "--task custom needs --type",
    );
}

#[test]
fn custom_choice_label_that_is_no_candidate_is_explained() {
    let tmp = custom_setup();
    let d = tmp.path();
    let mc = write_choice_task(d);
    std::fs::write(
        mc.join("train.jsonl"),
        r#"{"story": "x", "q": "y", "a": "p", "b": "q", "answer": "zzz"}"#,
    )
    .unwrap();
    let out = d.join("run_mc");
    let mut extra = MC_COLUMNS.to_vec();
    extra.extend(["--data", s(&mc), "--out", s(&out), "--max-steps", "1"]);
    fails(&strs(&custom_args(d, &extra)), "train.jsonl: line 1: label \"zzz\" is neither");
}

/// The same seed gives the same fine-tuned bytes and the same per-step losses for 1 and 3
/// threads (batches, dropout masks and every reduction are independent of the thread count).
#[test]
fn finetuning_is_bitwise_identical_for_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let run = |threads: &str| {
        let out = d.join(format!("run{threads}"));
        from_scratch(
            d,
            "sst2",
            &out,
            &[
                "--threads",
                threads,
                "--max-steps",
                "6",
                "--batch",
                "8",
                "--lr",
                "1e-3",
                "--eval-every",
                "3",
                "--quiet",
            ],
        );
        let read = |f: &str| std::fs::read(out.join(f)).unwrap();
        (read("metrics.jsonl"), read("best/model.safetensors"), read("best/head.safetensors"))
    };
    let one = run("1");
    let three = run("3");
    assert!(one.0 == three.0, "metrics differ");
    assert!(one.1 == three.1, "model weights differ");
    assert!(one.2 == three.2, "head weights differ");
}

/// Ctrl-C during fine-tuning saves `checkpoint-N/` and exits 130; the same command with
/// `--resume` finishes the run with the best checkpoint and the losses of an uninterrupted one;
/// a changed setting is refused naming it.
#[cfg(unix)]
#[test]
fn an_interrupted_finetuning_run_resumes_to_the_uninterrupted_one() {
    let tmp = own_setup();
    let d = tmp.path();
    let extra = ["--epochs", "60", "--batch", "8", "--lr", "2e-3", "--quiet"];
    let straight = d.join("straight");
    from_scratch(d, "sst2", &straight, &extra);
    let out = d.join("run");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(strs(&scratch_args(d, "sst2", &out, &extra)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |m| m.lines().count()) < 3 {
        assert!(t0.elapsed().as_secs() < 60, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: sending SIGINT to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("--resume"), "{err}");
    let mut changed = extra.to_vec();
    changed.extend(["--resume", "--lr", "1e-3"]);
    fails(&strs(&scratch_args(d, "sst2", &out, &changed)), "--lr: the run was started with");
    let mut resume = extra.to_vec();
    resume.push("--resume");
    from_scratch(d, "sst2", &out, &resume);
    let read = |p: &Path| std::fs::read(p.join("best/model.safetensors")).unwrap();
    assert_eq!(read(&out), read(&straight));
    let losses = |p: &Path| -> Vec<String> {
        let m = std::fs::read_to_string(p.join("metrics.jsonl")).unwrap();
        m.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {} {}", v["step"], v["loss"], v["dev_score"])
            })
            .collect()
    };
    assert_eq!(losses(&out), losses(&straight));
}

/// The LSTM baseline fine-tuned through the same command (`--arch lstm`, from scratch here):
/// it learns the small task, keeps an LSTM checkpoint with its head, and resumes like the
/// Transformer.
#[test]
fn the_lstm_finetunes_and_resumes() {
    let tmp = own_setup();
    let d = tmp.path();
    let extra = [
        "--arch",
        "lstm",
        "--lstm-hidden",
        "32",
        "--epochs",
        "40",
        "--batch",
        "8",
        "--lr",
        "5e-3",
        "--quiet",
    ];
    let out = d.join("lstm");
    let js: serde_json::Value =
        serde_json::from_str(&from_scratch(d, "sst2", &out, &extra)).unwrap();
    let acc = js["best_dev"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.75, "dev accuracy {acc}");
    let cfg = std::fs::read_to_string(out.join("best/config.json")).unwrap();
    assert!(cfg.contains("\"lstm\"") && out.join("best/head.safetensors").exists(), "{cfg}");
    // evaluate and predict read the LSTM checkpoint: the dev score the run kept.
    let ev: serde_json::Value =
        serde_json::from_str(&ok(&["evaluate", "--model", s(&out), "--data", s(d), "--json"]))
            .unwrap();
    assert_eq!(ev["score"].as_f64().unwrap(), acc);
    let pred = d.join("lstm-pred.tsv");
    ok(&["predict", "--model", s(&out), "--data", s(d), "--split", "dev", "--out", s(&pred)]);
    assert_eq!(std::fs::read_to_string(&pred).unwrap().lines().count(), 5);
    fails(&["export", "--model", s(&out), "--out", s(&d.join("hf"))], "an LSTM checkpoint");
    // Stopped with --save-every and resumed: the same best checkpoint.
    let part = d.join("part");
    let mut first = extra.to_vec();
    first.extend(["--save-every", "5", "--max-steps", "10"]);
    from_scratch(d, "sst2", &part, &first);
    let whole = d.join("whole");
    let mut w = extra.to_vec();
    w.extend(["--max-steps", "10"]);
    from_scratch(d, "sst2", &whole, &w);
    let read = |p: &Path| std::fs::read(p.join("best/model.safetensors")).unwrap();
    assert_eq!(read(&part), read(&whole));
    let ck = part.join("checkpoint-5");
    assert!(ck.join("optimizer.safetensors").exists());
    // Resume from checkpoint-5 (the newest kept): steps 6–10 again, the same best checkpoint.
    let mut again = first.clone();
    again.push("--resume");
    from_scratch(d, "sst2", &part, &again);
    assert_eq!(read(&part), read(&whole));
}

#[test]
fn predict_follows_the_output_rule() {
    let tmp = own_setup();
    let d = tmp.path();
    let pred = d.join("pred.tsv");
    std::fs::write(&pred, "the user's file").unwrap();
    // An existing file is refused and left as it was; --force replaces it.
    let args = on_best("predict", d, &["--split", "dev", "--out", s(&pred)]);
    let err = common::fails(&strs(&args), "exists");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&pred).unwrap(), "the user's file");
    let args = on_best("predict", d, &["--split", "dev", "--out", s(&pred), "--force"]);
    ok(&strs(&args));
    assert!(std::fs::read_to_string(&pred).unwrap().starts_with("index\tprediction\n"));
    // Its own input is refused even with --force, and stays whole.
    let dev = std::fs::read(d.join("dev.tsv")).unwrap();
    let args =
        on_best("predict", d, &["--split", "dev", "--out", s(&d.join("dev.tsv")), "--force"]);
    common::fails(&strs(&args), "input");
    assert_eq!(std::fs::read(d.join("dev.tsv")).unwrap(), dev);
    // `-` is standard output.
    let out = ok(&strs(&on_best("predict", d, &["--split", "dev", "--out", "-"])));
    assert!(out.starts_with("index\tprediction\n"), "{out}");
    // A link is followed: the target is written, the link stays a link.
    #[cfg(unix)]
    {
        let link = d.join("link.tsv");
        std::os::unix::fs::symlink("target.tsv", &link).unwrap();
        ok(&strs(&on_best("predict", d, &["--split", "dev", "--out", s(&link)])));
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(d.join("target.tsv")).unwrap().starts_with("index\t"));
    }
}

#[test]
fn zero_max_steps_is_refused_not_run_as_one() {
    let tmp = own_setup();
    let out = tmp.path().join("run0");
    let args = scratch_args(tmp.path(), "SST-2", &out, &["--max-steps", "0"]);
    common::fails(&strs(&args), "--max-steps must be at least 1");
    assert!(!out.exists(), "a refused run left its directory");
}

#[test]
fn a_damaged_task_json_is_named_as_damaged_not_missing() {
    let tmp = own_setup();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    for e in std::fs::read_dir(trained().best()).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), ck.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(ck.join("task.json"), b"\xff\xfe{").unwrap();
    let args = ["evaluate", "--model", s(&ck), "--data", s(tmp.path()), "--split", "dev"];
    let err = common::fails(&args, "task.json: not UTF-8 text");
    assert!(!err.contains("missing"), "{err}");
}
