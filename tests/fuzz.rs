//! The fuzzer (docs/reliability.md): mutants of every file gpt1 reads (its own formats, task
//! files and the user's text) and every state an output path can be in (absent, the user's file,
//! a link to it, a dangling link, a directory of the user's, the command's own input, a full
//! device), each command run under a time limit: exit 0 or 1, no panic, no abort, no hang, no
//! write outside the directory it may write, and no byte of a file gpt1 did not write changed.
//! `GPT1_FUZZ_MUTANTS` (mutants per reader, default 150) makes it longer.

mod common;
use common::{env_or, fault_args, ok, s, snapshot, strs};

use gpt1::data::shard::{write_bin, write_npy_2d};
use gpt1::kernels::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        name: "text to tokenize",
        file: "text.txt",
        args: &["tokenize", "--tokenizer", "{}/tok", "--file", "{}/text.txt"],
    },
    Reader {
        name: "text to score",
        file: "text.txt",
        args: &[
            "perplexity",
            "--model",
            "{}/ck",
            "--tokenizer",
            "{}/tok",
            "--input",
            "{}/text.txt",
        ],
    },
    Reader {
        name: "prompt file",
        file: "prompt.txt",
        args: &[
            "generate",
            "--model",
            "{}/ck",
            "--tokenizer",
            "{}/tok",
            "--prompt-file",
            "{}/prompt.txt",
            "--max-new",
            "3",
            "--greedy",
        ],
    },
    Reader {
        name: "corpus to prepare",
        file: "text.txt",
        args: &[
            "prepare",
            "--tokenizer",
            "{}/tok",
            "--input",
            "{}/text.txt",
            "--out",
            "{}/out/shards",
            "--quiet",
        ],
    },
    Reader {
        name: "corpus to learn a vocabulary from",
        file: "text.txt",
        args: &[
            "tokenizer",
            "train",
            "--input",
            "{}/text.txt",
            "--merges",
            "20",
            "--out",
            "{}/out/tok",
        ],
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
    common::write_cycle_data(base);
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
    // The user's text: prose, a long line, accents, a tab and a CRLF line.
    let text = "the cat sat on the mat .\nthe dog ran , and the cat sat .\r\ncafé naïve \u{201c}quoted\u{201d}\tend\n"
        .to_string()
        + &"a cat ".repeat(200)
        + "\n";
    std::fs::write(base.join("text.txt"), text).unwrap();
    std::fs::write(base.join("prompt.txt"), "the café cat\n").unwrap();
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

/// Runs `args` in `cwd` (the test's own directory: `--out -` names a directory there, never in
/// the project) with a deadline: `Ok(stderr)` when it ended by itself with exit 0 or 1.
fn run_bounded(args: &[String], cwd: &Path, limit: Duration) -> Result<String, String> {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(args)
        .current_dir(cwd)
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
    // The runs record absolute paths (a resume checks its data is the same): the inputs are
    // made where the commands run, kept whole in `base`, and put back before each command.
    let work = tmp.path().join("work");
    fuzz_base(&work);
    let base = tmp.path().join("base");
    copy_tree(&work, &base);
    let per = env_or("GPT1_FUZZ_MUTANTS", 150);
    let mut r = Rng::new(2026);
    let mut failures = Vec::new();
    let (mut rejected, mut total) = (0, 0);
    for reader in READERS {
        let original = std::fs::read(base.join(reader.file)).unwrap();
        if work.exists() {
            std::fs::remove_dir_all(&work).unwrap();
        }
        copy_tree(&base, &work);
        let args: Vec<String> = reader.args.iter().map(|a| a.replace("{}", s(&work))).collect();
        match run_bounded(&args, tmp.path(), Duration::from_secs(20)) {
            Ok(err) if !err.contains("error:") => {}
            other => {
                panic!("{}: the valid file must be read without error: {other:?}", reader.name)
            }
        }
        for i in 0..per {
            if work.exists() {
                std::fs::remove_dir_all(&work).unwrap();
            }
            copy_tree(&base, &work);
            let mutant = mutate(&original, &mut r);
            std::fs::write(work.join(reader.file), &mutant).unwrap();
            let before = snapshot(&work);
            let args: Vec<String> = reader.args.iter().map(|a| a.replace("{}", s(&work))).collect();
            let res = run_bounded(&args, tmp.path(), Duration::from_secs(20));
            total += 1;
            match res {
                Err(e) => failures.push(format!("{} mutant {i}: {e}", reader.name)),
                Ok(err) => {
                    rejected += err.contains("error:") as usize;
                    // Writes only where the command may write: the run directory, out/.
                    let allowed = [work.join("run"), work.join("out"), work.join("ftrun")];
                    let after = snapshot(&work);
                    // Not one byte changed, and nothing added or removed, anywhere else.
                    let outside = |p: &PathBuf| !allowed.iter().any(|a| p.starts_with(a));
                    for (p, content) in &after {
                        if !before.contains(&(p.clone(), *content)) && outside(p) {
                            let what = format!("wrote {}", p.display());
                            failures.push(format!("{} mutant {i}: {what}", reader.name));
                        }
                    }
                    for (p, _) in before.iter().filter(|(p, _)| outside(p)) {
                        if !after.iter().any(|(q, _)| q == p) {
                            let what = format!("removed {}", p.display());
                            failures.push(format!("{} mutant {i}: {what}", reader.name));
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

/// A command that writes one output the user names (`OUT` in `args`): a file, or a directory.
struct Sink {
    name: &'static str,
    dir: bool,
    /// An input of the command, which no `--out` may name (for file outputs).
    input: Option<&'static str>,
    args: &'static [&'static str],
}

const SINKS: &[Sink] = &[
    Sink {
        name: "plot",
        dir: false,
        input: Some("run/metrics.jsonl"),
        args: &["plot", "{}/run", "--out", "OUT"],
    },
    Sink {
        name: "zero-shot",
        dir: false,
        input: Some("task/dev.tsv"),
        args: &[
            "zero-shot",
            "--model",
            "{}/ftrun/best",
            "--task",
            "sst2",
            "--data",
            "{}/task",
            "--out",
            "OUT",
        ],
    },
    Sink {
        name: "predict",
        dir: false,
        input: Some("task/dev.tsv"),
        args: &[
            "predict",
            "--model",
            "{}/ftrun/best",
            "--data",
            "{}/task",
            "--split",
            "dev",
            "--out",
            "OUT",
        ],
    },
    Sink {
        name: "prepare",
        dir: true,
        input: None,
        args: &[
            "prepare",
            "--tokenizer",
            "{}/tok",
            "--input",
            "{}/text.txt",
            "--out",
            "OUT",
            "--quiet",
        ],
    },
    Sink {
        name: "tokenizer train",
        dir: true,
        input: None,
        args: &["tokenizer", "train", "--input", "{}/text.txt", "--merges", "20", "--out", "OUT"],
    },
];

/// What an output path holds before the command: made in `w`, returning the `--out` value, the
/// extra flags, and whether the command must succeed (`Some(true)`), must refuse (`Some(false)`)
/// or may do either (`None`). `user` is a file of the user's that no state may change.
#[derive(Clone, Copy, Debug)]
enum State {
    Absent,
    UsersFile,
    UsersFileForced,
    LinkToUsersFile,
    DanglingLink,
    UsersDirectory,
    EmptyDirectory,
    LinkToUsersDirectory,
    OwnInput,
    OwnInputForced,
    FullDevice,
    Stdout,
    MissingParent,
    Again,
}

const STATES: [State; 14] = [
    State::Absent,
    State::UsersFile,
    State::UsersFileForced,
    State::LinkToUsersFile,
    State::DanglingLink,
    State::UsersDirectory,
    State::EmptyDirectory,
    State::LinkToUsersDirectory,
    State::OwnInput,
    State::OwnInputForced,
    State::FullDevice,
    State::Stdout,
    State::MissingParent,
    State::Again,
];

/// Makes `state` for `sink` in `w`: the `--out` value, extra flags, the expected outcome.
fn make_state(w: &Path, sink: &Sink, state: State) -> (String, Vec<&'static str>, Option<bool>) {
    use std::os::unix::fs::symlink;
    let o = w.join("o");
    let users_dir = |p: &Path| {
        std::fs::create_dir_all(p).unwrap();
        std::fs::write(p.join("notes.md"), b"mine\n").unwrap();
    };
    let (file, dir) = (!sink.dir, sink.dir);
    match state {
        State::Absent => (s(&o).into(), vec![], Some(true)),
        State::UsersFile => {
            std::fs::write(&o, b"the user's\n").unwrap();
            (s(&o).into(), vec![], Some(false))
        }
        State::UsersFileForced if file => {
            std::fs::write(&o, b"the user's\n").unwrap();
            (s(&o).into(), vec!["--force"], Some(true))
        }
        State::UsersFileForced => {
            std::fs::write(&o, b"the user's\n").unwrap();
            (s(&o).into(), vec![], Some(false))
        }
        State::LinkToUsersFile => {
            std::fs::write(w.join("target"), b"the user's\n").unwrap();
            symlink(w.join("target"), &o).unwrap();
            (s(&o).into(), vec![], Some(false))
        }
        State::DanglingLink => {
            symlink(w.join("new-target"), &o).unwrap();
            (s(&o).into(), vec![], Some(file))
        }
        State::UsersDirectory => {
            users_dir(&o);
            (s(&o).into(), vec![], Some(false))
        }
        State::EmptyDirectory => {
            std::fs::create_dir_all(&o).unwrap();
            (s(&o).into(), vec![], Some(dir))
        }
        State::LinkToUsersDirectory => {
            users_dir(&w.join("target-dir"));
            symlink(w.join("target-dir"), &o).unwrap();
            (s(&o).into(), vec![], Some(false))
        }
        State::OwnInput | State::OwnInputForced => {
            let force = matches!(state, State::OwnInputForced);
            match sink.input {
                Some(i) => (
                    s(&w.join(i)).into(),
                    if force { vec!["--force"] } else { vec![] },
                    Some(false),
                ),
                None => (s(&w.join("text.txt")).into(), vec![], Some(false)),
            }
        }
        State::FullDevice => ("/dev/full".into(), vec![], Some(false)),
        State::Stdout => ("-".into(), vec![], if file { Some(true) } else { None }),
        State::MissingParent => (s(&w.join("no/such/o")).into(), vec![], None),
        // The command's own earlier output (made by running the command first): a directory
        // is known by its files and rewritten; a lone file cannot be told from the user's.
        State::Again => (s(&o).into(), vec![], Some(dir)),
    }
}

#[cfg(unix)]
#[test]
fn every_state_of_an_output_path_keeps_the_users_files() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    fuzz_base(&work);
    let base = tmp.path().join("base");
    copy_tree(&work, &base);
    let mut failures = Vec::new();
    let mut runs = 0;
    for sink in SINKS {
        for state in STATES {
            std::fs::remove_dir_all(&work).unwrap();
            copy_tree(&base, &work);
            let (out, extra, want) = make_state(&work, sink, state);
            let args = |out: &str| -> Vec<String> {
                sink.args
                    .iter()
                    .map(|a| if *a == "OUT" { out.to_string() } else { a.replace("{}", s(&work)) })
                    .chain(extra.iter().map(|e| e.to_string()))
                    .collect()
            };
            if matches!(state, State::Again) {
                let first = run_bounded(&args(&out), tmp.path(), Duration::from_secs(20)).unwrap();
                assert!(!first.contains("error:"), "{}: {first}", sink.name);
            }
            let before = snapshot(&work);
            let res = run_bounded(&args(&out), tmp.path(), Duration::from_secs(20));
            runs += 1;
            let tag = format!("{} with --out {state:?}", sink.name);
            let err = match res {
                Err(e) => {
                    failures.push(format!("{tag}: {e}"));
                    continue;
                }
                Ok(err) => err,
            };
            let succeeded = !err.contains("error:");
            if want.is_some_and(|w| w != succeeded) {
                failures.push(format!("{tag}: expected success {want:?}, got: {err}"));
            }
            // No byte of a file gpt1 did not write changed, no link replaced; only a forced
            // file and the command's own earlier output may be rewritten.
            let may_change = |p: &Path| {
                (matches!(state, State::UsersFileForced) && !sink.dir && p == work.join("o"))
                    || (matches!(state, State::Again) && p.starts_with(work.join("o")))
            };
            let after = snapshot(&work);
            for (p, what) in &before {
                if !may_change(p) && after.iter().find(|(q, _)| q == p).map(|x| &x.1) != Some(what)
                {
                    failures.push(format!("{tag}: changed {}", p.display()));
                }
            }
        }
    }
    eprintln!("outputs: {runs} commands, {} failures", failures.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
