//! Reliability (docs/reliability.md): nothing of the user's overwritten, one run per directory,
//! refusal before allocation, a resume that continues the run as started, stale temporaries
//! cleaned, checkpoints bounded, Ctrl-C saved and resumable, and a clear error (never a panic)
//! for each bad input in [`bad_inputs`].

mod common;
use common::{fails, gpt1, ok, pretrain_args, s, strs};

use std::path::Path;

use common::SMALL_CONFIG as CONFIG;

/// A config file and train/val shards of a learnable sequence (a noisy cycle).
fn setup(dir: &Path) {
    common::write_cycle_data(dir);
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

/// The uninterrupted 8-step run's final weights (each test makes its own: tests run in
/// parallel and must not share directories).
fn straight(d: &Path) -> Vec<u8> {
    let out = d.join("straight");
    ok(&strs(&pretrain_args(d, &out, &[])));
    weights(&out.join("final"))
}

#[test]
fn a_directory_holding_other_files_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("mine");
    std::fs::create_dir_all(out.join("final")).unwrap();
    std::fs::write(out.join("metrics.jsonl"), "{\"step\": 1, \"task_loss\": 0.3}\n").unwrap();
    std::fs::write(out.join("notes.md"), "my notes").unwrap();
    fails(&strs(&pretrain_args(d, &out, &[])), "notes.md");
    assert_eq!(std::fs::read_to_string(out.join("notes.md")).unwrap(), "my notes");
    assert!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().contains("task_loss"));
}

#[test]
fn a_run_that_cannot_start_leaves_no_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("never");
    let mut a = pretrain_args(d, &out, &[]);
    a[2] = s(&d.join("missing.bin")).into();
    fails(&strs(&a), "missing.bin");
    fails(&strs(&pretrain_args(d, &out, &["--seq", "64"])), "n_positions");
    // An empty shard: refused before run.json, so the corrected command starts afresh.
    gpt1::data::shard::write_bin(&d.join("empty.bin"), &[]).unwrap();
    let mut a = pretrain_args(d, &out, &[]);
    a[2] = s(&d.join("empty.bin")).into();
    fails(&strs(&a), "fewer than one window");
    assert!(!out.exists());
}

#[test]
fn resume_alone_continues_the_run_as_started_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let want = straight(d);
    let out = d.join("split");
    ok(&strs(&pretrain_args(d, &out, &["--stop-at", "3"])));
    ok(&["pretrain", "--out", s(&out), "--resume", "--quiet"]);
    assert_eq!(weights(&out.join("final")), want);
}

#[test]
fn resume_refuses_a_changed_setting_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    ok(&strs(&pretrain_args(d, &out, &["--stop-at", "3"])));
    fails(
        &strs(&pretrain_args(d, &out, &["--resume", "--lr", "1e-3"])),
        "--lr: the run was started with",
    );
    fails(&strs(&pretrain_args(d, &out, &["--resume", "--steps", "9"])), "--steps");
    // Other tokens under the same path: the data's identity changed.
    let mut a = pretrain_args(d, &out, &["--resume"]);
    a[2] = s(&d.join("val.bin")).into();
    fails(&strs(&a), "--data");
    // Stopping before where the run already is would mislabel a checkpoint.
    fails(
        &strs(&pretrain_args(d, &out, &["--resume", "--stop-at", "2"])),
        "--stop-at 2: the run is already at step 3",
    );
    // A flag equal to the run's is fine.
    ok(&strs(&pretrain_args(d, &out, &["--resume"])));
}

#[test]
fn resume_from_an_earlier_checkpoint_gives_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let want = straight(d);
    let out = d.join("run");
    ok(&strs(&pretrain_args(
        d,
        &out,
        &["--save-every", "2", "--keep-checkpoints", "0", "--stop-at", "6"],
    )));
    assert!(out.join("checkpoint-2").exists() && out.join("checkpoint-6").exists());
    let from = out.join("checkpoint-2");
    ok(&["pretrain", "--out", s(&out), "--resume-from", s(&from), "--quiet"]);
    assert_eq!(weights(&out.join("final")), want);
}

#[test]
fn checkpoints_are_bounded_and_stale_temporaries_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    ok(&strs(&pretrain_args(
        d,
        &out,
        &["--save-every", "1", "--keep-checkpoints", "2", "--stop-at", "5"],
    )));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .filter(|n: &String| n.starts_with("checkpoint-"))
        .collect();
    names.sort();
    assert_eq!(names, ["checkpoint-4", "checkpoint-5"]);
    // What a killed run leaves: a half-written checkpoint and metrics under a dead pid.
    std::fs::create_dir_all(out.join("checkpoint-6.tmp999999")).unwrap();
    std::fs::write(out.join("metrics.jsonl.tmp999999"), "x").unwrap();
    ok(&["pretrain", "--out", s(&out), "--resume", "--quiet"]);
    assert!(!out.join("checkpoint-6.tmp999999").exists());
    assert!(!out.join("metrics.jsonl.tmp999999").exists());
    assert!(out.join("final").exists());
}

#[test]
fn a_second_run_on_the_same_directory_is_refused_while_the_first_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(strs(&pretrain_args(d, &out, &["--steps", "100000", "--warmup", "1"])))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_metrics(&out, 1);
    assert!(out.join(".lock").is_file(), "a running run holds its lock");
    let err = fails(&["pretrain", "--out", s(&out), "--resume", "--quiet"], "another gpt1 process");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(err.contains(&first.id().to_string()), "{err}");
}

/// A run that ends (finished, stopped by `--stop-at`, resumed to its end; fine-tuning too)
/// removes its `.lock`: the directory holds its results only, and still refuses a second new
/// run (its `run.json`).
#[test]
fn a_finished_run_leaves_no_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    ok(&strs(&pretrain_args(d, &out, &["--stop-at", "3"])));
    assert!(out.join("checkpoint-3").is_dir() && !out.join(".lock").exists());
    ok(&["pretrain", "--out", s(&out), "--resume", "--quiet"]);
    assert!(out.join("final").is_dir() && !out.join(".lock").exists());
    fails(&strs(&pretrain_args(d, &out, &[])), "--resume");
    let ft = tempfile::tempdir().unwrap();
    common::setup(ft.path());
    let fout = ft.path().join("ft");
    let extra = ["--max-steps", "2", "--batch", "4", "--quiet"];
    ok(&strs(&common::scratch_args(ft.path(), "sst2", &fout, &extra)));
    assert!(fout.join("best").is_dir() && !fout.join(".lock").exists());
}

/// Waits until `out/metrics.jsonl` has `n` lines (a run has taken `n` steps).
fn wait_for_metrics(out: &Path, n: usize) {
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |m| m.lines().count()) < n {
        assert!(t0.elapsed().as_secs() < 120, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("run");
    // A long run, so that the signal lands mid-run.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(strs(&pretrain_args(d, &out, &["--steps", "5000"])))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_metrics(&out, 1);
    // SAFETY: sending SIGINT to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("--resume") && !err.contains("panicked"), "{err}");
    let step: u64 = err
        .split("interrupted after step ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step in: {err}"));
    assert!(out.join(format!("checkpoint-{step}")).exists());
    assert!(!out.join(".lock").exists(), "an interrupted run releases its directory");
    // Resumed to a few steps later, against the same run stopped there without a signal.
    let at = (step + 3).to_string();
    ok(&["pretrain", "--out", s(&out), "--resume", "--stop-at", &at, "--quiet"]);
    let straight = d.join("straight");
    ok(&strs(&pretrain_args(d, &straight, &["--steps", "5000", "--stop-at", &at])));
    let ck = format!("checkpoint-{at}");
    assert_eq!(weights(&out.join(&ck)), weights(&straight.join(&ck)));
}

/// One bad input: the arguments (given the data directory of [`setup`] with a 2-step run in
/// `run/`), and what the error must say.
struct Case {
    name: &'static str,
    args: fn(&Path) -> Vec<String>,
    needle: &'static str,
}

fn p(d: &Path, f: &str) -> String {
    s(&d.join(f)).to_string()
}

fn v(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// Writes `name` in `d` and returns its path.
fn write(d: &Path, name: &str, bytes: &[u8]) -> String {
    std::fs::write(d.join(name), bytes).unwrap();
    p(d, name)
}

/// A copy of the 2-step run's final checkpoint with `file` replaced by `bytes`.
fn damaged(d: &Path, name: &str, file: &str, bytes: &[u8]) -> String {
    let ck = d.join(name);
    std::fs::create_dir_all(&ck).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(d.join("run/final").join(f), ck.join(f)).unwrap();
    }
    std::fs::write(ck.join(file), bytes).unwrap();
    s(&ck).to_string()
}

/// The bad inputs, as data: a new reader adds its cases here.
fn bad_inputs() -> Vec<Case> {
    vec![
        Case {
            name: "vocabulary beyond any machine",
            args: |d| {
                let c =
                    write(d, "huge.json", CONFIG.replace("64,", "4611686018427387904,").as_bytes());
                v(&["pretrain", "--data", &p(d, "train.bin"), "--config", &c, "--out", &p(d, "o1")])
            },
            needle: "larger than gpt1 supports",
        },
        Case {
            name: "a batch that overflows",
            args: |d| {
                let mut a = pretrain_args(d, &d.join("o2"), &[]);
                a.extend(v(&["--batch", "2305843009213693952"]));
                a
            },
            needle: "beyond any machine",
        },
        Case {
            name: "a model too large for this machine",
            args: |d| {
                let c = write(d, "big.json", br#"{"vocab_size": 64, "n_positions": 512, "n_embd": 32768, "n_layer": 48, "n_head": 32}"#);
                v(&[
                    "pretrain",
                    "--data",
                    &p(d, "train.bin"),
                    "--config",
                    &c,
                    "--out",
                    &p(d, "o3"),
                    "--batch",
                    "1",
                    "--seq",
                    "16",
                ])
            },
            needle: "are available",
        },
        Case {
            name: "threads far beyond the cores",
            args: |d| {
                v(&[
                    "--threads",
                    "100000",
                    "score",
                    "--model",
                    &p(d, "run/final"),
                    "--ids",
                    &p(d, "val.bin"),
                ])
            },
            needle: "--threads 100000",
        },
        Case {
            name: "zero validation windows",
            args: |d| {
                let mut a = pretrain_args(d, &d.join("o4"), &[]);
                a.extend(v(&["--val", &p(d, "val.bin"), "--val-windows", "0"]));
                a
            },
            needle: "--val-windows must be at least 1",
        },
        Case {
            name: "NaN clip",
            args: |d| {
                let mut a = pretrain_args(d, &d.join("o5"), &[]);
                a.extend(v(&["--clip", "NaN"]));
                a
            },
            needle: "--clip NaN must be a finite number",
        },
        Case {
            name: "NaN weight decay",
            args: |d| {
                let mut a = pretrain_args(d, &d.join("o6"), &[]);
                a.extend(v(&["--weight-decay", "NaN"]));
                a
            },
            needle: "--weight-decay NaN",
        },
        Case {
            name: "negative layer_norm_epsilon",
            args: |d| {
                let c = write(
                    d,
                    "eps.json",
                    CONFIG.replace('}', r#", "layer_norm_epsilon": -1e-5}"#).as_bytes(),
                );
                v(&["pretrain", "--data", &p(d, "train.bin"), "--config", &c, "--out", &p(d, "o7")])
            },
            needle: "layer_norm_epsilon = -0.00001 must be a small positive number",
        },
        Case {
            name: "NaN weights",
            args: |d| {
                let w = std::fs::read(d.join("run/final/model.safetensors")).unwrap();
                let mut w = w.clone();
                let n = w.len();
                w[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
                let ck = damaged(d, "nan_ck", "model.safetensors", &w);
                v(&["score", "--model", &ck, "--ids", &p(d, "val.bin")])
            },
            needle: "NaN or infinite value",
        },
        Case {
            name: "a shard longer than its header says",
            args: |d| {
                let mut b = std::fs::read(d.join("val.bin")).unwrap();
                b.extend([0u8; 6]);
                let f = write(d, "long.bin", &b);
                v(&["score", "--model", &p(d, "run/final"), "--ids", &f])
            },
            needle: "trailing bytes",
        },
        Case {
            name: "a directory as --data",
            args: |d| {
                let mut a = pretrain_args(d, &d.join("o8"), &[]);
                a[2] = p(d, "run");
                a
            },
            needle: "is a directory",
        },
        Case {
            name: "metrics with ±1e308 still plot",
            args: |d| {
                let m = write(
                    d,
                    "m.jsonl",
                    b"{\"step\": 1, \"loss\": 1e308}\n{\"step\": 2, \"loss\": -1e308}\n",
                );
                v(&["plot", &m, "--out", &p(d, "m.png")])
            },
            needle: "no metrics with a step",
        },
        Case {
            name: "a NaN regression label",
            args: |d| {
                let t = d.join("stsb");
                std::fs::create_dir_all(&t).unwrap();
                let rows =
                    "sentence1\tsentence2\tscore\na cat\ta dog\t3.2\nthe sun\tthe moon\tNaN\n";
                std::fs::write(t.join("train.tsv"), rows).unwrap();
                v(&["data", "stats", "--task", "stsb", "--data", s(&t)])
            },
            needle: "score \"NaN\" is not a finite number",
        },
        Case {
            name: "a zero-shot reference equal to chance (the plot's range would be infinite)",
            args: |d| {
                v(&["analyze", "zero-shot", "--run", &p(d, "run"), "--data", s(d)])
                    .into_iter()
                    .chain(v(&["--tasks", "sst2", "--reference", "sst2=0.5", "--out", &p(d, "zs")]))
                    .collect()
            },
            needle: "must be a finite score other than chance",
        },
        Case {
            name: "merges beyond any vocabulary (4e9 asked for 283 GB)",
            args: |d| {
                let t = write(d, "corpus.txt", b"some text and some more text\n");
                v(&["tokenizer", "train", "--input", &t, "--merges", "4000000000"])
                    .into_iter()
                    .chain(v(&["--out", &p(d, "tok")]))
                    .collect()
            },
            needle: "--merges 4000000000 must be in 1..=1000000",
        },
        Case {
            name: "a tokenizer learned from nothing",
            args: |d| {
                let t = write(d, "empty.txt", b"");
                v(&["tokenizer", "train", "--input", &t, "--merges", "10", "--out", &p(d, "tok0")])
            },
            needle: "no text to learn a vocabulary from",
        },
        Case {
            name: "an empty stop string",
            args: |d| {
                let m = p(d, "run/final");
                v(&["generate", "--model", &m, "--ids", "5,6", "--stop", "", "--tokenizer", &m])
            },
            needle: "--stop ''",
        },
        Case {
            name: "a prompt file that never ends (/dev/zero grew to 24 GB)",
            args: |d| {
                common::write_vocab(d);
                let m = p(d, "run/final");
                v(&["generate", "--model", &m, "--tokenizer", s(d), "--prompt-file", "/dev/zero"])
            },
            needle: "/dev/zero: is a device or special file, not a text file",
        },
        Case {
            name: "a device as a corpus",
            args: |d| v(&["prepare", "--input", "/dev/zero", "--out", &p(d, "shards0")]),
            needle: "/dev/zero: is a device or special file, not a text file",
        },
        Case {
            name: "a benchmark far beyond the memory (472 GB asked, then an abort)",
            args: |_| {
                v(&["bench", "train", "--config", "tiny", "--batch", "10000000", "--seq", "256"])
            },
            needle: "tokens per pass) needs about",
        },
        Case {
            name: "a device to tokenize (8 GiB, then an abort)",
            args: |_| v(&["tokenize", "--file", "/dev/zero"]),
            needle: "/dev/zero: is a device or special file, not a text file",
        },
        Case {
            name: "invalid UTF-8 to tokenize",
            args: |d| v(&["tokenize", "--file", &write(d, "bad.txt", b"fine\nbad \xff byte\n")]),
            needle: "bad.txt:2: invalid UTF-8 at byte 4 of the line",
        },
        Case {
            name: "a JSONL row whose text is a number",
            args: |d| {
                let t = d.join("own");
                std::fs::create_dir_all(&t).unwrap();
                let rows = "{\"text\": \"fine\", \"label\": 0}\n{\"text\": 5, \"label\": 1}\n";
                std::fs::write(t.join("train.jsonl"), rows).unwrap();
                v(&["data", "stats", "--task", "custom", "--type", "single", "--text-a", "text"])
                    .into_iter()
                    .chain(v(&["--label", "label", "--data", s(&t)]))
                    .collect()
            },
            needle: "train.jsonl: line 2: column \"text\" is 5, not text",
        },
        Case {
            name: "resume of a run directory that does not exist",
            args: |d| v(&["pretrain", "--out", &p(d, "never"), "--resume"]),
            needle: "--resume: no run here (the directory does not exist)",
        },
        Case {
            name: "a JSONL row whose text is null",
            args: |d| {
                let t = d.join("own-null");
                std::fs::create_dir_all(&t).unwrap();
                let rows = "{\"text\": \"fine\", \"label\": 0}\n{\"text\": null, \"label\": 1}\n";
                std::fs::write(t.join("train.jsonl"), rows).unwrap();
                v(&["data", "stats", "--task", "custom", "--type", "single", "--text-a", "text"])
                    .into_iter()
                    .chain(v(&["--label", "label", "--data", s(&t)]))
                    .collect()
            },
            needle: "train.jsonl: line 2: column \"text\" is null, not text",
        },
        Case {
            name: "fine-tuning for zero steps (ran one)",
            args: |d| {
                let t = d.join("own-ft");
                std::fs::create_dir_all(&t).unwrap();
                let rows =
                    "{\"text\": \"fine\", \"label\": 0}\n{\"text\": \"bad\", \"label\": 1}\n";
                std::fs::write(t.join("train.jsonl"), rows).unwrap();
                let task = ["--task", "custom", "--type", "single", "--text-a", "text"];
                v(&["finetune", "--from-scratch", "--config", "tiny"])
                    .into_iter()
                    .chain(v(&task))
                    .chain(v(&["--label", "label", "--data", s(&t), "--out", &p(d, "ft0")]))
                    .chain(v(&["--max-steps", "0"]))
                    .collect()
            },
            needle: "--max-steps must be at least 1",
        },
        Case {
            name: "a device as a text to score (was \"no such file\")",
            args: |d| {
                common::write_vocab(d);
                let m = p(d, "run/final");
                v(&["perplexity", "--model", &m, "--tokenizer", s(d), "--input", "/dev/zero"])
            },
            needle: "/dev/zero: is a device or special file, not a text file",
        },
        Case {
            name: "a fine-tuned checkpoint's corrupt task.json (was reported missing)",
            args: |d| {
                let ck = damaged(d, "badtask", "config.json", CONFIG.as_bytes());
                std::fs::write(Path::new(&ck).join("task.json"), b"{not json").unwrap();
                v(&["evaluate", "--model", &ck, "--data", &p(d, "nowhere")])
            },
            needle: "task.json: not JSON",
        },
        Case {
            name: "plot over the user's essay",
            args: |d| v(&["plot", &p(d, "run"), "--out", &write(d, "essay.txt", b"my essay\n")]),
            needle: "essay.txt: exists: gpt1 does not replace a file it did not write",
        },
        Case {
            name: "plot over its own input, even with --force",
            args: |d| v(&["plot", &p(d, "run"), "--out", &p(d, "run/metrics.jsonl"), "--force"]),
            needle: "is also this command's input",
        },
        Case {
            name: "zero-shot over the user's file",
            args: |d| {
                let out = write(d, "scores.jsonl", b"kept\n");
                v(&["zero-shot", "--model", &p(d, "run/final"), "--task", "sst2", "--out", &out])
                    .into_iter()
                    .chain(v(&["--data", &p(d, "nowhere")]))
                    .collect()
            },
            needle: "scores.jsonl: exists",
        },
        Case {
            name: "a tokenizer trained into a transformers tokenizer's directory",
            args: |d| {
                let hf = d.join("hf-tok");
                std::fs::create_dir_all(&hf).unwrap();
                std::fs::write(hf.join("vocab.json"), b"{\"a\": 0}").unwrap();
                std::fs::write(hf.join("tokenizer_config.json"), b"{\"model_max_length\": 512}")
                    .unwrap();
                let corpus = write(d, "corpus.txt", b"one two three four\n");
                v(&["tokenizer", "train", "--input", &corpus, "--merges", "5", "--out", s(&hf)])
            },
            needle: "holds files gpt1 did not write (tokenizer_config.json, vocab.json)",
        },
        Case {
            name: "export over a file",
            args: |d| {
                let out = write(d, "export.txt", b"kept\n");
                v(&["export", "--model", &p(d, "run/final"), "--out", &out])
            },
            needle: "export.txt: is a file: --out names a directory",
        },
        Case {
            name: "export into a directory of the user's",
            args: |d| {
                let out = d.join("notes");
                std::fs::create_dir_all(&out).unwrap();
                std::fs::write(out.join("notes.md"), b"mine\n").unwrap();
                v(&["export", "--model", &p(d, "run/final"), "--out", s(&out)])
            },
            needle: "holds files gpt1 did not write (notes.md): choose a new or empty --out",
        },
        Case {
            name: "prepare into a directory holding the user's train.bin",
            args: |d| {
                let out = d.join("mine");
                std::fs::create_dir_all(&out).unwrap();
                std::fs::write(out.join("train.bin"), b"precious").unwrap();
                let corpus = write(d, "book.txt", b"one two three four\n");
                v(&["prepare", "--input", &corpus, "--out", s(&out), "--quiet"])
            },
            needle: "holds files gpt1 did not write (train.bin)",
        },
        Case {
            name: "prepare into / (wrote train.bin, val.bin and tokenizer/ there)",
            args: |d| {
                let corpus = write(d, "root-book.txt", b"one two three four\n");
                v(&["prepare", "--input", &corpus, "--out", "/", "--quiet"])
            },
            needle: "/: holds files gpt1 did not write",
        },
        Case {
            name: "a missing file, its OS error said once",
            args: |d| v(&["score", "--model", &p(d, "run/final"), "--ids", &p(d, "nope.bin")]),
            needle: "nope.bin: No such file or directory (os error 2)",
        },
    ]
}

#[test]
fn every_bad_input_gets_a_clear_error_and_no_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&strs(&pretrain_args(d, &d.join("run"), &["--steps", "2"])));
    let cases = bad_inputs();
    assert!(cases.len() >= 37, "the table holds every case of issue 24 and its kind");
    for c in cases {
        let a = (c.args)(d);
        let before = common::snapshot(d);
        let o = gpt1(&strs(&a));
        // No byte of a file that was there before the command changed (nor was it removed).
        let after = common::snapshot(d);
        for entry in &before {
            assert!(after.contains(entry), "{}: changed {}", c.name, entry.0.display());
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{}: should fail", c.name);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", c.name);
        assert!(err.contains(c.needle), "{}: expected {:?} in:\n{err}", c.name, c.needle);
        assert!(!err.contains("panicked"), "{}: {err}", c.name);
        assert!(err.matches("os error").count() <= 1, "{}: {err}", c.name);
    }
}

#[cfg(unix)]
#[test]
fn a_path_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let bad = d.join(std::ffi::OsStr::from_bytes(b"run\xff"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(["pretrain", "--config", s(&d.join("config.json")), "--data"])
        .arg(d.join("train.bin"))
        .arg("--out")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not valid UTF-8"), "{err}");
    assert!(!bad.exists(), "a refused run left its directory");
}

#[test]
fn generating_far_beyond_the_context_stops_at_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&strs(&pretrain_args(d, &d.join("run"), &["--steps", "1"])));
    let model = d.join("run/final");
    let out = ok(&[
        "generate",
        "--model",
        s(&model),
        "--ids",
        "5,6,7",
        "--max-new",
        &u64::MAX.to_string(),
    ]);
    assert!(!out.is_empty());
}

#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_score_quietly() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&strs(&pretrain_args(d, &d.join("run"), &["--steps", "1"])));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(["score", "--model", &p(d, "run/final"), "--ids", &p(d, "train.bin"), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head -0`
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_failed_write_to_stdout_is_an_error_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: no /dev/full on this system");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&strs(&pretrain_args(d, &d.join("run"), &["--steps", "1"])));
    let (model, ids) = (p(d, "run/final"), p(d, "train.bin"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["data", "tasks"],
        vec!["tokenize", "--text", "hello"],
        vec!["score", "--model", &model, "--ids", &ids],
        vec!["generate", "--model", &model, "--ids", "5,6,7", "--max-new", "3"],
    ];
    for args in cases {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
            .args(&args)
            .stdout(full.try_clone().unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("error: writing to stdout: No space left"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_divergence_is_said_in_the_metrics_with_its_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let out = d.join("div");
    let err = fails(&strs(&pretrain_args(d, &out, &["--lr", "1e4", "--clip", "0"])), "lower --lr");
    assert!(err.contains("the loss is"), "{err}");
    let m = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(m.lines().last().unwrap()).unwrap();
    assert!(last["warning"].as_str().unwrap().contains("lower --lr"), "{last}");
}

#[test]
fn invalid_utf8_on_standard_input_is_an_error_as_in_a_file() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .arg("tokenize")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"fine\nbad \xff byte\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("-:2: invalid UTF-8 at byte 4 of the line"), "{err}");
}
