//! The fault harness (docs/reliability.md): kill -9 at random moments then resume, compared
//! bitwise with an uninterrupted run; a full disk; and a mutation fuzzer over every reader and
//! loader, asserting no panic, no abort, no hang and no write outside the run's directory.
//! `GPT1_FAULT_TRIALS` (kill trials, default 6) and `GPT1_FUZZ_MUTANTS` (mutants per reader,
//! default 150) make it longer.

mod common;
use common::{ok, pretrain_args, s, strs};

use gpt1::data::shard::{write_bin, write_npy_2d};
use gpt1::kernels::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A config file and train/val shards of a learnable sequence (a noisy cycle).
fn setup(dir: &Path) {
    common::write_cycle_data(dir);
}

/// [`pretrain_args`] with validation and a checkpoint after every step (so that kills land in
/// writes), for `steps` steps.
fn fault_args(d: &Path, out: &Path, steps: &str) -> Vec<String> {
    let val = d.join("val.bin");
    let extra = ["--val", s(&val), "--steps", steps, "--save-every", "1", "--eval-every", "3"];
    pretrain_args(d, out, &extra)
}

/// kill -9 at random moments (a checkpoint is written after every step, so many kills land in
/// a checkpoint write), then `--resume` until the run finishes: the final weights and the
/// metrics' losses equal the uninterrupted run's, and no temporary is left behind.
#[test]
fn kill_9_at_random_moments_then_resume_gives_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let steps = "30";
    let straight = d.join("straight");
    let t0 = Instant::now();
    ok(&strs(&fault_args(d, &straight, steps)));
    let full = t0.elapsed();
    let want = std::fs::read(straight.join("final/model.safetensors")).unwrap();
    let losses = |run: &Path| -> Vec<String> {
        let m = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        m.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {} {}", v["step"], v["loss"], v["val_loss"])
            })
            .collect()
    };
    let mut rng = Rng::new(7);
    let trials = env_or("GPT1_FAULT_TRIALS", 6);
    let mut all_kills = 0;
    for trial in 0..trials {
        let out = d.join(format!("killed-{trial}"));
        let mut first = true;
        let mut kills = 0;
        loop {
            let mut a = fault_args(d, &out, steps);
            if !first {
                a.push("--resume".into());
            }
            let mut child = Command::new(env!("CARGO_BIN_EXE_gpt1"))
                .args(strs(&a))
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            // A moment within the run's expected time (the start included).
            let at = full.mul_f64(rng.below(1000) as f64 / 1000.0);
            let t = Instant::now();
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break Some(st);
                }
                if t.elapsed() >= at && kills < 3 {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    break None;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            // Started at all: later attempts resume (a kill before run.json was written leaves
            // nothing to resume, and the next attempt starts afresh).
            first = !out.join("run.json").exists();
            if let Some(st) = status {
                let mut err = String::new();
                use std::io::Read;
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                assert!(st.success(), "trial {trial}: {err}");
                break;
            }
        }
        all_kills += kills;
        let got = std::fs::read(out.join("final/model.safetensors")).unwrap();
        assert!(got == want, "trial {trial} ({kills} kills): weights differ");
        assert_eq!(losses(&out), losses(&straight), "trial {trial}");
        let left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp") || n.contains(".old"))
            .collect();
        assert!(left.is_empty(), "trial {trial}: left {left:?}");
    }
    eprintln!("kill -9: {trials} runs, {all_kills} kills, all resumed to the same weights");
    assert!(all_kills > 0, "no run was killed: the harness tested nothing");
}

/// A full disk: a small tmpfs (where one can be mounted: root in a Linux container) that the
/// checkpoint cannot fit; the error names the file, the exit is 1, and the checkpoint written
/// before is intact.
#[test]
fn a_full_disk_is_reported_and_earlier_checkpoints_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let mnt = d.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=600k", "tmpfs", s(&mnt)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root on Linux)");
        return;
    }
    let out = mnt.join("run");
    let o = common::gpt1(&strs(&fault_args(d, &out, "30")));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let earlier: Vec<PathBuf> = std::fs::read_dir(&out)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with("checkpoint-") && !n.contains(".tmp")
                })
                .collect()
        })
        .unwrap_or_default();
    let loaded: Vec<String> = earlier
        .iter()
        .map(|p| match gpt1::model::checkpoint::load_model(p) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        })
        .filter(|e| !e.is_empty())
        .collect();
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!earlier.is_empty(), "no checkpoint before the disk filled: {err}");
    assert!(loaded.is_empty(), "damaged checkpoints: {loaded:?}");
}

/// One mutation of `b`: flipped bytes, a cut, an insertion, a duplicated slice, or (for text)
/// a number replaced by an extreme one.
fn mutate(b: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut m = b.to_vec();
    let n = m.len().max(1);
    match r.below(6) {
        0 => {
            for _ in 0..1 + r.below(8) {
                let i = r.below(n as u64) as usize;
                if i < m.len() {
                    m[i] ^= 1 << r.below(8);
                }
            }
        }
        1 => m.truncate(r.below(n as u64) as usize),
        2 => {
            let i = r.below(n as u64) as usize;
            let junk: Vec<u8> = (0..1 + r.below(64)).map(|_| r.below(256) as u8).collect();
            m.splice(i.min(m.len())..i.min(m.len()), junk);
        }
        3 => {
            let i = r.below(n as u64) as usize;
            let j = (i + r.below(256) as usize).min(m.len());
            let slice = m[i.min(m.len())..j].to_vec();
            m.splice(j..j, slice);
        }
        4 => {
            // Overwrite 4 bytes with an extreme little-endian integer (header fields, counts).
            let i = r.below(n.min(1100) as u64) as usize;
            let v = [u32::MAX, 0x7fff_ffff, 0x8000_0000, 0][r.below(4) as usize];
            for (k, byte) in v.to_le_bytes().iter().enumerate() {
                if i + k < m.len() {
                    m[i + k] = *byte;
                }
            }
        }
        _ => {
            // In text, a run of digits becomes an extreme value.
            let text = String::from_utf8_lossy(&m).into_owned();
            let digits: Vec<usize> =
                text.char_indices().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
            if let Some(&i) = digits.get(r.below(digits.len().max(1) as u64) as usize) {
                let end =
                    text[i..].find(|c: char| !c.is_ascii_digit()).map_or(text.len(), |e| i + e);
                let v = ["99999999999999999999", "-1", "1e308", "NaN", "0", "4611686018427387904"]
                    [r.below(6) as usize];
                m = format!("{}{}{}", &text[..i], v, &text[end..]).into_bytes();
            }
        }
    }
    m
}

/// Files of `dir` (recursively) with their sizes, to see what a command wrote.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push((path, e.metadata().map_or(0, |m| m.len())));
        }
    }
    out.sort();
    out
}

/// One reader under the fuzzer: the valid file it reads, where a mutant goes, and the command
/// that reads it (`{}` stands for the work directory; `out/` there may be written).
struct Reader {
    name: &'static str,
    /// The file (relative to the work directory) that mutants replace.
    file: &'static str,
    args: &'static [&'static str],
}

/// The fine-tuning run of [`fuzz_base`], resumed.
const FT_RESUME: &[&str] = &[
    "finetune",
    "--from-scratch",
    "--config",
    "{}/config.json",
    "--tokenizer",
    "{}/tok",
    "--task",
    "sst2",
    "--data",
    "{}/task",
    "--out",
    "{}/ftrun",
    "--max-steps",
    "4",
    "--batch",
    "2",
    "--save-every",
    "1",
    "--quiet",
    "--resume",
];

/// Every reader and loader, as data: a new reader adds one line.
const READERS: &[Reader] = &[
    Reader {
        name: "token shard",
        file: "ids.bin",
        args: &["score", "--model", "{}/ck", "--ids", "{}/ids.bin"],
    },
    Reader {
        name: ".npy rows",
        file: "rows.npy",
        args: &["score", "--model", "{}/ck", "--ids", "{}/rows.npy"],
    },
    Reader {
        name: "safetensors",
        file: "ck/model.safetensors",
        args: &["score", "--model", "{}/ck", "--ids", "{}/rows.npy"],
    },
    Reader {
        name: "config.json",
        file: "ck/config.json",
        args: &["score", "--model", "{}/ck", "--ids", "{}/rows.npy"],
    },
    Reader {
        name: "trainer state",
        file: "run/checkpoint-1/trainer_state.json",
        args: &["pretrain", "--out", "{}/run", "--resume", "--stop-at", "3", "--quiet"],
    },
    Reader {
        name: "optimizer state",
        file: "run/checkpoint-1/optimizer.safetensors",
        args: &["pretrain", "--out", "{}/run", "--resume", "--stop-at", "3", "--quiet"],
    },
    Reader {
        name: "run.json",
        file: "run/run.json",
        args: &["pretrain", "--out", "{}/run", "--resume", "--stop-at", "3", "--quiet"],
    },
    Reader {
        name: "LSTM config.json",
        file: "lstm/config.json",
        args: &["score", "--model", "{}/lstm", "--ids", "{}/rows.npy"],
    },
    Reader {
        name: "LSTM safetensors",
        file: "lstm/model.safetensors",
        args: &["score", "--model", "{}/lstm", "--ids", "{}/rows.npy"],
    },
    Reader {
        name: "fine-tuning state",
        file: "ftrun/checkpoint-3/trainer_state.json",
        args: FT_RESUME,
    },
    Reader {
        name: "fine-tuning moments",
        file: "ftrun/checkpoint-3/optimizer.safetensors",
        args: FT_RESUME,
    },
    Reader {
        name: "fine-tuning head",
        file: "ftrun/checkpoint-3/head.safetensors",
        args: FT_RESUME,
    },
    Reader { name: "fine-tuning run.json", file: "ftrun/run.json", args: FT_RESUME },
    Reader {
        name: "task TSV",
        file: "task/train.tsv",
        args: &["data", "stats", "--task", "sst2", "--data", "{}/task", "--tokenizer", "{}/tok"],
    },
    Reader {
        name: "task CSV",
        file: "csv/train.csv",
        args: &[
            "data",
            "stats",
            "--task",
            "custom",
            "--type",
            "single",
            "--text-a",
            "text",
            "--data",
            "{}/csv",
            "--tokenizer",
            "{}/tok",
        ],
    },
    Reader {
        name: "task JSONL",
        file: "jsonl/train.jsonl",
        args: &[
            "data",
            "stats",
            "--task",
            "custom",
            "--type",
            "single",
            "--text-a",
            "text",
            "--data",
            "{}/jsonl",
            "--tokenizer",
            "{}/tok",
        ],
    },
    Reader {
        name: "vocab.json",
        file: "tok/vocab.json",
        args: &["tokenize", "--tokenizer", "{}/tok", "--text", "the cat sat ."],
    },
    Reader {
        name: "merges.txt",
        file: "tok/merges.txt",
        args: &["tokenize", "--tokenizer", "{}/tok", "--text", "the cat sat ."],
    },
    Reader {
        name: "metrics.jsonl",
        file: "metrics.jsonl",
        args: &["plot", "{}/metrics.jsonl", "--out", "{}/out/curves.png"],
    },
];

/// The valid inputs every reader's mutants start from, in `base`.
fn fuzz_base(base: &Path) {
    std::fs::create_dir_all(base).unwrap();
    setup(base);
    let run = base.join("run");
    let mut a = fault_args(base, &run, "3");
    a.extend(["--stop-at".to_string(), "1".to_string()]);
    ok(&strs(&a));
    let ck = base.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(run.join("checkpoint-1").join(f), ck.join(f)).unwrap();
    }
    write_bin(&base.join("ids.bin"), &[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    let lstm = gpt1::model::lstm::Lstm::init(gpt1::model::lstm::LstmConfig::new(64, 8, 8, 1), 1);
    gpt1::model::lstm::save_lstm(&base.join("lstm"), &lstm).unwrap();
    write_npy_2d(&base.join("rows.npy"), &[1, 2, 3, 4, 5, 6, 7, 8], 4).unwrap();
    let tok = base.join("tok");
    std::fs::create_dir_all(&tok).unwrap();
    common::write_letter_vocab(&tok, &['.'], &[("t", "h"), ("th", "e</w>"), ("c", "a")]);
    let rows = [("the cat sat .", 1), ("a cat ran", 0), ("the dog sat", 1), ("bad cat", 0)];
    std::fs::create_dir_all(base.join("task")).unwrap();
    let tsv: String = std::iter::once("sentence\tlabel\n".to_string())
        .chain(rows.iter().map(|(t, l)| format!("{t}\t{l}\n")))
        .collect();
    std::fs::write(base.join("task/train.tsv"), &tsv).unwrap();
    std::fs::write(base.join("task/dev.tsv"), &tsv).unwrap();
    std::fs::create_dir_all(base.join("csv")).unwrap();
    let csv: String = std::iter::once("text,label\n".to_string())
        .chain(rows.iter().map(|(t, l)| format!("\"{t}\",{l}\n")))
        .collect();
    std::fs::write(base.join("csv/train.csv"), csv).unwrap();
    std::fs::create_dir_all(base.join("jsonl")).unwrap();
    let jsonl: String = rows
        .iter()
        .map(|(t, l)| format!("{}\n", serde_json::json!({"text": t, "label": l})))
        .collect();
    std::fs::write(base.join("jsonl/train.jsonl"), jsonl).unwrap();
    std::fs::copy(run.join("metrics.jsonl"), base.join("metrics.jsonl")).unwrap();
    // A fine-tuning run of 4 updates with checkpoints (the last two kept), to resume.
    let ft: Vec<String> =
        FT_RESUME[..FT_RESUME.len() - 1].iter().map(|a| a.replace("{}", s(base))).collect();
    ok(&strs(&ft));
    std::fs::create_dir_all(base.join("out")).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Runs `args` with a deadline: `Ok(stderr)` when it ended by itself with exit 0 or 1.
fn run_bounded(args: &[String], limit: Duration) -> Result<String, String> {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut e = String::new();
        let _ = err_pipe.read_to_string(&mut e);
        e
    });
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let err = reader.join().unwrap();
    match status {
        None => Err(format!("hang (killed after {limit:?}): {err}")),
        Some(st) if st.code().is_none() => Err(format!("killed by a signal ({st}): {err}")),
        Some(st) if !matches!(st.code(), Some(0 | 1)) => Err(format!("exit {st}: {err}")),
        Some(_) if err.contains("panicked") => Err(format!("panic: {err}")),
        Some(_) => Ok(err),
    }
}

#[test]
fn mutants_of_every_reader_give_errors_not_panics_aborts_hangs_or_stray_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    fuzz_base(&base);
    let per = env_or("GPT1_FUZZ_MUTANTS", 150);
    let mut r = Rng::new(2026);
    let mut failures = Vec::new();
    let (mut rejected, mut total) = (0, 0);
    for reader in READERS {
        let original = std::fs::read(base.join(reader.file)).unwrap();
        let work = tmp.path().join("work");
        for i in 0..per {
            if work.exists() {
                std::fs::remove_dir_all(&work).unwrap();
            }
            copy_tree(&base, &work);
            let mutant = mutate(&original, &mut r);
            std::fs::write(work.join(reader.file), &mutant).unwrap();
            let before = listing(&work);
            let args: Vec<String> = reader.args.iter().map(|a| a.replace("{}", s(&work))).collect();
            let res = run_bounded(&args, Duration::from_secs(20));
            total += 1;
            match res {
                Err(e) => failures.push(format!("{} mutant {i}: {e}", reader.name)),
                Ok(err) => {
                    rejected += err.contains("error:") as usize;
                    // Writes only where the command may write: the run directory, out/.
                    let allowed = [work.join("run"), work.join("out"), work.join("ftrun")];
                    let after = listing(&work);
                    for (p, size) in &after {
                        let new_or_changed = !before.contains(&(p.clone(), *size));
                        if new_or_changed && !allowed.iter().any(|a| p.starts_with(a)) {
                            failures.push(format!(
                                "{} mutant {i}: wrote {}",
                                reader.name,
                                p.display()
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "fuzz: {total} mutants, {rejected} rejected with an error, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
