//! Helpers shared by the command-line tests: run the built `gpt1` binary and check its result.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn gpt1(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt1")).args(args).output().expect("run gpt1")
}

/// Runs `gpt1 args`, asserts success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = gpt1(args);
    assert!(o.status.success(), "gpt1 {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `gpt1 args`, asserts a non-zero exit without a panic and `needle` in stderr.
pub fn fails(args: &[&str], needle: &str) -> String {
    let o = gpt1(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "gpt1 {args:?} should fail");
    assert!(err.contains(needle), "gpt1 {args:?}: expected {needle:?} in:\n{err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

/// An empty directory `name` under Cargo's per-target temporary folder (`target/tmp`, cleared by
/// `cargo clean`), for a fixture that a test binary builds once and shares between its tests
/// through a `OnceLock`: a `TempDir` held in a `static` would never be removed. The directory
/// is emptied when the fixture is built, so each run starts from nothing.
pub fn fixture_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d).expect("clear the fixture directory");
    }
    std::fs::create_dir_all(&d).expect("create the fixture directory");
    d
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A small BPE vocabulary in `dir`: each letter a–z and each of `punct`, alone and word-final
/// (`x</w>`), then one token per merge (in merge order), and `merges.txt` with those merges.
pub fn write_letter_vocab(dir: &Path, punct: &[char], merges: &[(&str, &str)]) {
    let mut toks: Vec<String> = Vec::new();
    for c in ('a'..='z').chain(punct.iter().copied()) {
        toks.push(c.to_string());
        toks.push(format!("{c}</w>"));
    }
    toks.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    let vocab: serde_json::Map<String, serde_json::Value> =
        toks.iter().enumerate().map(|(i, t)| (t.clone(), i.into())).collect();
    std::fs::write(dir.join("vocab.json"), serde_json::to_string(&vocab).expect("json"))
        .expect("write vocab.json");
    let mut m = String::from("#version: 0.2\n");
    for (a, b) in merges {
        m.push_str(&format!("{a} {b}\n"));
    }
    std::fs::write(dir.join("merges.txt"), m).expect("write merges.txt");
}

/// The config of the small model the command-line tests pre-train (64 tokens, 2 × 32).
pub const SMALL_CONFIG: &str =
    r#"{"vocab_size": 64, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}"#;

/// [`SMALL_CONFIG`] as `dir/config.json`, and `train.bin` / `val.bin` of a learnable stream (a
/// cycle of 17 with 10 % noise; 3,500 and 500 tokens).
pub fn write_cycle_data(dir: &Path) {
    std::fs::write(dir.join("config.json"), SMALL_CONFIG).expect("write config.json");
    let mut r = gpt1::kernels::rng::Rng::new(1);
    let toks: Vec<u32> = (0..4000)
        .map(|i| if r.below(10) == 0 { r.below(64) as u32 } else { (i % 17) as u32 })
        .collect();
    gpt1::data::shard::write_bin(&dir.join("train.bin"), &toks[..3500]).expect("train.bin");
    gpt1::data::shard::write_bin(&dir.join("val.bin"), &toks[3500..]).expect("val.bin");
}

/// A float32 tensor of a safetensors file, flat.
pub fn tensor_f32(st: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    let v = st.tensor(name).unwrap_or_else(|_| panic!("tensor {name}"));
    v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
}

/// An int64 tensor of a safetensors file, flat.
pub fn tensor_i64(st: &safetensors::SafeTensors, name: &str) -> Vec<i64> {
    let v = st.tensor(name).unwrap_or_else(|_| panic!("tensor {name}"));
    v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
}

/// `gpt1 pretrain` of [`write_cycle_data`]'s files in `dir` into `out`: 8 steps of 4 × 16 in
/// passes of 2, warm-up 2, lr 3e-3, quiet (`--config` unless `extra` has `--init`), then
/// `extra` (a repeated flag overrides: the last one wins).
pub fn pretrain_args(dir: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        vec!["pretrain".into(), "--data".into(), s(&dir.join("train.bin")).into()];
    if !extra.contains(&"--init") {
        v.extend(["--config".into(), s(&dir.join("config.json")).to_string()]);
    }
    v.extend(["--out".into(), s(out).to_string()]);
    v.extend(
        [
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
        .chain(extra)
        .map(|x| x.to_string()),
    );
    v
}

/// Borrowed views of owned arguments.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---- a small sentiment task (SST-2 format) and its vocabulary, for `finetune` tests ----

/// Letters (alone and word-final) and merges for "good" and "bad".
pub fn write_vocab(dir: &Path) {
    write_letter_vocab(
        dir,
        &['.', ','],
        &[("g", "o"), ("go", "o"), ("goo", "d</w>"), ("b", "a"), ("ba", "d</w>")],
    );
}

pub fn write_task(dir: &Path) {
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

/// A 2-block config, `cfg.json` in `d`.
pub fn write_config(d: &Path) {
    std::fs::write(
        d.join("cfg.json"),
        r#"{"vocab_size": 1, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}"#,
    )
    .unwrap();
}

/// The vocabulary, the task files and a 2-block config in `d`.
pub fn setup(d: &Path) {
    write_vocab(d);
    write_task(d);
    write_config(d);
}

/// `gpt1 finetune --from-scratch` arguments for `task` with the config and tokenizer of `d`,
/// plus `extra`.
pub fn finetune_args(d: &Path, task: &str, extra: &[&str]) -> Vec<String> {
    let cfg = d.join("cfg.json");
    let base =
        ["finetune", "--from-scratch", "--config", s(&cfg), "--tokenizer", s(d), "--task", task];
    base.iter().chain(extra).map(|a| a.to_string()).collect()
}

/// [`finetune_args`] for the task's data in `d`, into `out`.
pub fn scratch_args(d: &Path, task: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut all = vec!["--data", s(d), "--out", s(out)];
    all.extend(extra);
    finetune_args(d, task, &all)
}

/// A random model over a letter vocabulary (52 tokens + 3 special), saved with its tokenizer.
pub fn letter_model(dir: &Path) {
    write_letter_vocab(dir, &[], &[]);
    let mut c = gpt1::model::Config::named("tiny").unwrap();
    c.vocab_size = 55;
    c.n_positions = 24;
    c.n_embd = 16;
    c.n_layer = 2;
    c.n_head = 2;
    c.initializer_range = 0.3;
    gpt1::model::checkpoint::save_model(dir, &gpt1::model::Gpt::init(c, 1)).unwrap();
}

/// A count from the environment (a harness's size), or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// [`pretrain_args`] with validation and a checkpoint after every step (so that kills land in
/// writes), for `steps` steps: the fault harness's and the fuzzer's runs.
pub fn fault_args(d: &Path, out: &Path, steps: &str) -> Vec<String> {
    let val = d.join("val.bin");
    let extra = ["--val", s(&val), "--steps", steps, "--save-every", "1", "--eval-every", "3"];
    pretrain_args(d, out, &extra)
}

/// Everything under `d`: each file with a hash of its bytes, each symbolic link (not followed)
/// with a hash of its target, each directory with 0; sorted. Two snapshots differ where a
/// command added, removed or changed anything, by a single byte.
pub fn snapshot(d: &Path) -> Vec<(PathBuf, u64)> {
    use std::hash::{Hash, Hasher};
    let hash = |x: &[u8]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        x.hash(&mut h);
        h.finish()
    };
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let (p, ft) = (e.path(), e.file_type().unwrap());
            let content = if ft.is_symlink() {
                hash(std::fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes())
            } else if ft.is_dir() {
                stack.push(p.clone());
                0
            } else {
                hash(&std::fs::read(&p).unwrap_or_default())
            };
            out.push((p, content));
        }
    }
    out.sort();
    out
}
