//! `gpt1 finetune` / `evaluate` end to end on a small task and vocabulary the test writes.

mod common;
use common::{fails, ok, s};
use std::path::Path;

/// Letters (alone and word-final) and merges for "good" and "bad".
fn write_vocab(dir: &Path) {
    common::write_letter_vocab(
        dir,
        &['.', ','],
        &[
            ("g", "o"),
            ("go", "o"),
            ("goo", "d</w>"),
            ("b", "a"),
            ("ba", "d</w>"),
        ],
    );
}

fn write_task(dir: &Path) {
    let subjects = [
        "the cat",
        "a dog",
        "this film",
        "the food",
        "my day",
        "that song",
        "the plan",
        "his work",
    ];
    let mut train = String::from("sentence\tlabel\n");
    let mut dev = String::from("sentence\tlabel\n");
    for (i, s) in subjects.iter().enumerate() {
        for (word, label) in [("good", 1), ("bad", 0)] {
            let line = format!("{s} was {word} .\t{label}\n");
            if i < 6 {
                train.push_str(&line)
            } else {
                dev.push_str(&line)
            }
            train.push_str(&format!("{s} is {word}\t{label}\n"));
        }
    }
    std::fs::write(dir.join("train.tsv"), train).unwrap();
    std::fs::write(dir.join("dev.tsv"), dev).unwrap();
}

/// The vocabulary, the task files and a 2-block config in `d`.
fn setup(d: &Path) {
    write_vocab(d);
    write_task(d);
    std::fs::write(
        d.join("cfg.json"),
        r#"{"vocab_size": 1, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}"#,
    )
    .unwrap();
}

/// `gpt1 finetune --from-scratch` arguments for the task in `d` (config and tokenizer from `d`)
/// into `out`, plus `extra`.
fn scratch_args(d: &Path, task: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let cfg = d.join("cfg.json");
    let base = [
        "finetune",
        "--from-scratch",
        "--config",
        s(&cfg),
        "--tokenizer",
        s(d),
        "--task",
        task,
        "--data",
        s(d),
        "--out",
        s(out),
    ];
    base.iter().chain(extra).map(|a| a.to_string()).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs [`scratch_args`]; its standard output.
fn from_scratch(d: &Path, task: &str, out: &Path, extra: &[&str]) -> String {
    ok(&strs(&scratch_args(d, task, out, extra)))
}

#[test]
fn finetune_learns_a_small_task_and_evaluate_reloads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    let best = out.join("best");
    // `CMD --model RUN/best --data DIR` plus `extra`.
    let (best_s, data_s) = (s(&best), s(d));
    let on_best = move |cmd: &'static str, extra: &[&'static str]| {
        let mut v = vec![cmd, "--model", best_s, "--data", data_s];
        v.extend_from_slice(extra);
        v
    };
    let eval_args = move |extra: &[&'static str]| on_best("evaluate", extra);
    let js = from_scratch(
        d,
        "SST-2",
        &out,
        &[
            "--epochs", "15", "--batch", "8", "--lr", "2e-3", "--aux-lm", "0", "--quiet",
        ],
    );
    let js: serde_json::Value = serde_json::from_str(&js).unwrap();
    let acc = js["best_dev"]["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "dev accuracy {acc}: {js}");
    for f in [
        "config.json",
        "model.safetensors",
        "head.safetensors",
        "task.json",
        "vocab.json",
        "merges.txt",
    ] {
        assert!(out.join("best").join(f).exists(), "{f}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("dev_score")));
    // Fifteen epochs, fifteen dev evaluations; the curves are drawn at the end, and on demand.
    assert_eq!(metrics.matches("dev_score").count(), 15);
    assert!(
        std::fs::read(out.join("curves.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    ok(&["plot", s(&out), "--out", s(&d.join("c.png"))]);
    assert!(
        std::fs::read(d.join("c.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    std::fs::write(d.join("bad.jsonl"), "{\"step\": 1, \"loss\": 2}\n{oops\n").unwrap();
    fails(&["plot", s(&d.join("bad.jsonl"))], "line 2");
    // With the auxiliary LM objective (λ = 0.5 by default) its loss is trained and logged too.
    let out2 = d.join("run2");
    from_scratch(
        d,
        "sst2",
        &out2,
        &["--max-steps", "3", "--batch", "8", "--quiet"],
    );
    let m2 = std::fs::read_to_string(out2.join("metrics.jsonl")).unwrap();
    // --max-steps inside the first epoch: one dev evaluation, not one per remaining epoch.
    assert_eq!(m2.matches("dev_score").count(), 1, "{m2}");
    // --eval-every 2 over 5 updates (4 batches an epoch): dev at 2, 4 (also the epoch's end), 5.
    let out3 = d.join("run3");
    let js3: serde_json::Value = serde_json::from_str(&from_scratch(
        d,
        "sst2",
        &out3,
        &[
            "--max-steps",
            "5",
            "--batch",
            "8",
            "--eval-every",
            "2",
            "--quiet",
        ],
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
    assert!(
        [2, 4, 5].contains(&js3["best_step"].as_u64().unwrap()),
        "{js3}"
    );
    let first: serde_json::Value = serde_json::from_str(m2.lines().next().unwrap()).unwrap();
    assert!(first["lm_loss"].as_f64().unwrap() > 1.0, "{first}");
    let ev: serde_json::Value =
        serde_json::from_str(&ok(&eval_args(&["--task", "sst2", "--json"]))).unwrap();
    assert_eq!(ev["task"], "sst2");
    assert_eq!(ev["split"], "dev");
    assert_eq!(ev["n"], 4);
    assert_eq!(ev["metrics"]["accuracy"].as_f64().unwrap(), acc);
    assert_eq!(ev["score"].as_f64().unwrap(), acc);
    assert!(ev["metrics"].get("pearson").is_none(), "{ev}");
    fails(&eval_args(&["--task", "cola"]), "was fine-tuned on sst2");
    // predict writes label names per example; data stats counts labels and lengths.
    let pred = d.join("pred.tsv");
    let pred_s = s(&pred);
    let mut args = on_best("predict", &["--split", "dev", "--out"]);
    args.push(pred_s);
    ok(&args);
    let p = std::fs::read_to_string(&pred).unwrap();
    assert_eq!(p.lines().count(), 5);
    assert!(
        p.lines()
            .skip(1)
            .all(|l| l.ends_with("\t0") || l.ends_with("\t1")),
        "{p}"
    );
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
    // Bad input: a zero batch, an unknown task, a missing split, an unknown label.
    fails(&eval_args(&["--batch", "0"]), "--batch must be at least 1");
    fails(&strs(&scratch_args(d, "nope", &out, &[])), "unknown task");
    fails(&eval_args(&["--split", "test"]), "missing split file");
    // GLUE's test files carry no labels: evaluate says so, predict writes one row per example.
    std::fs::write(
        d.join("test.tsv"),
        "index\tsentence\n0\tthe cat was good .\n1\ta dog was bad .\n2\tmy day is good\n",
    )
    .unwrap();
    fails(&eval_args(&["--split", "test"]), "has no labels");
    let mut args = on_best("predict", &["--out"]);
    args.push(pred_s);
    ok(&args);
    let p = std::fs::read_to_string(&pred).unwrap();
    assert_eq!(p.lines().count(), 4, "{p}");
    assert!(p.starts_with("index\tprediction\n0\t"), "{p}");
    std::fs::write(
        d.join("dev.tsv"),
        "sentence\tlabel\nthe cat was good .\tmaybe\n",
    )
    .unwrap();
    fails(&eval_args(&[]), "line 2: unknown label");
    // A broken dev file stops fine-tuning too (it is not taken for a missing one) ...
    let out4 = d.join("run4");
    fails(
        &strs(&scratch_args(d, "sst2", &out4, &["--max-steps", "1"])),
        "dev.tsv: line 2: unknown label",
    );
    // ... while no dev file at all trains and keeps the last weights.
    std::fs::remove_file(d.join("dev.tsv")).unwrap();
    let js4: serde_json::Value =
        serde_json::from_str(&from_scratch(d, "sst2", &out4, &["--max-steps", "1"])).unwrap();
    assert!(js4["best_dev"].is_null(), "{js4}");
    assert!(out4.join("best/model.safetensors").exists());
    // An earlier run's directory is never overwritten.
    let before = std::fs::read(out.join("metrics.jsonl")).unwrap();
    fails(
        &strs(&scratch_args(d, "sst2", &out, &["--max-steps", "1"])),
        "an earlier fine-tuning run is here",
    );
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), before);
}

/// The multiple-choice task's columns in the custom-task test.
const MC_COLUMNS: [&str; 8] = [
    "--type",
    "choice",
    "--text-a",
    "story",
    "--choices",
    "a,b",
    "--label",
    "answer",
];

#[test]
fn custom_tasks_from_csv_and_jsonl() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_vocab(d);
    std::fs::write(
        d.join("cfg.json"),
        r#"{"vocab_size": 1, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}"#,
    )
    .unwrap();
    // Classification from a CSV with quoted fields; labels are the sorted distinct values.
    let csv = d.join("csv");
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::write(
        csv.join("train.csv"),
        "review,stars\n\"good, good\",pos\nbad,neg\ngood,pos\n",
    )
    .unwrap();
    std::fs::write(csv.join("dev.csv"), "review,stars\ngood,pos\nbad,neg\n").unwrap();
    let out = d.join("run_csv");
    let cfg = d.join("cfg.json");
    let base = [
        "finetune",
        "--from-scratch",
        "--config",
        s(&cfg),
        "--tokenizer",
        s(d),
        "--task",
        "custom",
    ];
    let mut args: Vec<&str> = base.to_vec();
    args.extend([
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
    ]);
    ok(&args);
    let task: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("best/task.json")).unwrap())
            .unwrap();
    assert_eq!(task["task"]["labels"], serde_json::json!(["neg", "pos"]));
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
    // Multiple choice from JSON lines; the label is a candidate index or the candidate's text.
    let mc = d.join("mc");
    std::fs::create_dir_all(&mc).unwrap();
    let rows = [
        r#"{"story": "the cat sat", "q": "then", "a": "it was good", "b": "it was bad", "answer": 0}"#,
        r#"{"story": "a dog ran", "q": "then", "a": "bad", "b": "good", "answer": "good"}"#,
    ];
    std::fs::write(mc.join("train.jsonl"), rows.join("\n")).unwrap();
    std::fs::write(mc.join("dev.jsonl"), rows.join("\n")).unwrap();
    let out = d.join("run_mc");
    let mut args: Vec<&str> = base.to_vec();
    args.extend([
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
    ]);
    let js: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(js["train_examples"], 2);
    let mut args = vec!["data", "stats", "--task", "custom"];
    args.extend(MC_COLUMNS);
    args.extend(["--data", s(&mc), "--json"]);
    let st: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(st["splits"]["train"]["labels"]["candidate 2"], 1);
    // Missing options and bad labels are explained.
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--data", s(&mc), "--out", s(&out)]);
    fails(&args, "--task custom needs --type");
    std::fs::write(
        mc.join("train.jsonl"),
        r#"{"story": "x", "q": "y", "a": "p", "b": "q", "answer": "zzz"}"#,
    )
    .unwrap();
    let mut args: Vec<&str> = base.to_vec();
    args.extend(MC_COLUMNS);
    args.extend(["--data", s(&mc), "--out", s(&out), "--max-steps", "1"]);
    fails(&args, "train.jsonl: line 1: label \"zzz\" is neither");
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
        (
            read("metrics.jsonl"),
            read("best/model.safetensors"),
            read("best/head.safetensors"),
        )
    };
    let one = run("1");
    let three = run("3");
    assert!(one.0 == three.0, "metrics differ");
    assert!(one.1 == three.1, "model weights differ");
    assert!(one.2 == three.2, "head weights differ");
}
