//! `mpirun -np 2 gpt1 pretrain ...` on loopback (feature `mpi`, OpenMPI): the weights of the
//! single-process run, with the same `--micro-batch` (Transformer and LSTM) or each with its
//! default, fine-tuning,
//! `evaluate` and `predict` as one process, exact resume,
//! and jobs that stop with a clear message instead of hanging: ranks started with different
//! settings, a rank that dies, a rank that never joins.
#![cfg(feature = "mpi")]

mod common;
use common::{s, write_cycle_data};
use std::path::Path;
use std::process::{Command, Output};

/// `mpirun` with the given per-rank command lines (MPMD: `a : b`), bounded in time.
fn mpirun(apps: &[Vec<String>]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["120", "mpirun", "--oversubscribe"]);
    for (i, app) in apps.iter().enumerate() {
        if i > 0 {
            c.arg(":");
        }
        c.args(app);
    }
    // CI runs as root; OpenMPI refuses root without these.
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c.env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    c.output().expect("mpirun (OpenMPI: apt-get install openmpi-bin libopenmpi-dev)")
}

/// [`common::pretrain_args`] into `dir/out` with validation, 6 steps of 8 × 16 in passes of 2
/// (two passes per rank), then `extra`.
fn args(dir: &Path, out: &str, extra: &[&str]) -> Vec<String> {
    let val = dir.join("val.bin");
    let mut all = vec!["--val", s(&val), "--batch", "8", "--steps", "6"];
    all.extend(extra);
    common::pretrain_args(dir, &dir.join(out), &all)
}

/// `gpt1 --threads T ARGS` as one rank's command line.
fn rank(threads: &str, a: &[String]) -> Vec<String> {
    let mut v = vec!["-np".into(), "1".into(), env!("CARGO_BIN_EXE_gpt1").into()];
    v.extend(["--threads".into(), threads.into()]);
    v.extend(a.iter().cloned());
    v
}

fn two_ranks(a: &[String]) -> Output {
    let mut app = vec!["-np".into(), "2".into(), env!("CARGO_BIN_EXE_gpt1").into()];
    app.extend(["--threads".into(), "1".into()]);
    app.extend(a.iter().cloned());
    mpirun(&[app])
}

fn single(a: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpt1")).arg("--threads").arg("2").args(a).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn check(out: &Output) {
    assert!(
        out.status.success(),
        "mpirun failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), common::tensor_f32(&st, &n))).collect()
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

fn assert_close(a: &Path, b: &Path, tol: f32) {
    let (wa, wb) = (weights(&a.join("final")), weights(&b.join("final")));
    assert_eq!(wa.len(), wb.len());
    for ((n, x), (_, y)) in wa.iter().zip(&wb) {
        let d = x.iter().zip(y).fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(d <= tol, "{n}: {} vs {} differ by {d}", a.display(), b.display());
    }
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-6, "losses {x} vs {y}");
    }
}

#[test]
fn two_ranks_give_the_single_process_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_cycle_data(d);
    for (name, extra) in [("gpt", vec![]), ("lstm", vec!["--arch", "lstm", "--lstm-hidden", "24"])]
    {
        let (one, two) = (format!("{name}-one"), format!("{name}-two"));
        single(&args(d, &one, &extra));
        check(&two_ranks(&args(d, &two, &extra)));
        assert_close(&d.join(&one), &d.join(&two), 1e-5);
        // Rank 0 alone wrote the run directory.
        assert!(d.join(&two).join("run.json").is_file());
        assert!(losses(&d.join(&two)).len() == 6);
        // `gpt1 score` on two ranks (each scores every other batch, rank 0 prints): one
        // process's output, byte for byte.
        let final_dir = d.join(&one).join("final");
        let sc: Vec<String> = ["score", "--model", s(&final_dir), "--ids", s(&d.join("val.bin"))]
            .iter()
            .chain(&["--batch", "2", "--json"])
            .map(|x| x.to_string())
            .collect();
        let alone = Command::new(env!("CARGO_BIN_EXE_gpt1")).args(&sc).output().unwrap();
        check(&alone);
        let shared = two_ranks(&sc);
        check(&shared);
        assert_eq!(String::from_utf8_lossy(&shared.stdout), String::from_utf8_lossy(&alone.stdout));
    }
}

/// With default settings two ranks run passes of half the batch each and one process the
/// whole batch in one pass: dropout masks follow each sequence's place in the batch, so the
/// weights still agree up to the order of the sums.
#[test]
fn two_ranks_with_default_micro_batches_give_the_single_process_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_cycle_data(d);
    let defaults = |out: &str| -> Vec<String> {
        let a = args(d, out, &[]);
        let at = a.iter().position(|x| x == "--micro-batch").expect("--micro-batch");
        a[..at].iter().chain(&a[at + 2..]).cloned().collect()
    };
    single(&defaults("one"));
    check(&two_ranks(&defaults("two")));
    for (n, x) in [("one", 8), ("two", 4)] {
        let spec = std::fs::read_to_string(d.join(n).join("run.json")).unwrap();
        assert!(spec.contains(&format!("\"micro_batch\": {x}")), "{n}: {spec}");
    }
    assert_close(&d.join("one"), &d.join("two"), 1e-5);
}

#[test]
fn a_two_rank_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_cycle_data(d);
    check(&two_ranks(&args(d, "whole", &[])));
    check(&two_ranks(&args(d, "parts", &["--stop-at", "3"])));
    assert!(d.join("parts/checkpoint-3").is_dir());
    let resume = vec![
        "pretrain".into(),
        "--out".into(),
        s(&d.join("parts")).into(),
        "--resume".into(),
        "--quiet".into(),
    ];
    check(&two_ranks(&resume));
    assert_close(&d.join("whole"), &d.join("parts"), 0.0);
}

#[test]
fn ranks_with_different_settings_stop_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_cycle_data(d);
    let t0 = std::time::Instant::now();
    let out = mpirun(&[
        rank("1", &args(d, "run", &["--lr", "1e-3"])),
        rank("1", &args(d, "run", &["--lr", "2e-3"])),
    ]);
    assert!(!out.status.success());
    assert!(t0.elapsed().as_secs() < 60, "the job hung");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lr: 0.002 here, lr: 0.001 on rank 0"), "{err}");
    assert!(!d.join("run").exists(), "a job that could not start left a run directory");
}

#[test]
fn a_rank_that_dies_stops_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_cycle_data(d);
    let t0 = std::time::Instant::now();
    let long = args(d, "run", &["--steps", "1000000"]);
    let dies = ["-np", "1", "sh", "-c", "sleep 1; kill -9 $$"].map(String::from).to_vec();
    let out = mpirun(&[rank("1", &long), dies]);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(124), "the job hung until the time-out");
    assert!(t0.elapsed().as_secs() < 60);
}

#[test]
fn a_rank_that_never_joins_times_out() {
    // Rank 1 blocks before its first collective (reading its run.json, a FIFO nobody writes);
    // rank 0's watchdog ends the job after GPT1_DIST_TIMEOUT seconds.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_cycle_data(d);
    std::fs::create_dir(d.join("stuck")).unwrap();
    let fifo = d.join("stuck/run.json");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let t0 = std::time::Instant::now();
    let stuck_dir = d.join("stuck");
    let stuck = ["pretrain", "--out", s(&stuck_dir), "--resume", "--quiet"];
    let mut c = Command::new("timeout");
    c.args(["120", "mpirun", "--oversubscribe", "-x", "GPT1_DIST_TIMEOUT=3", "-np", "1"]);
    c.arg(env!("CARGO_BIN_EXE_gpt1")).args(args(d, "run", &[])).args([":", "-np", "1"]);
    c.arg(env!("CARGO_BIN_EXE_gpt1")).args(stuck);
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(124), "the job hung until the time-out");
    assert!(t0.elapsed().as_secs() < 60);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not join within 3 s"), "{err}");
}

#[test]
fn ranks_that_start_from_other_weights_stop_the_job() {
    // The same command line (a relative --init) run in two folders holding other weights, as
    // on two machines without a shared filesystem: the ranks compare their weights first.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_cycle_data(d);
    for (dir, seed) in [("a", "1"), ("b", "2")] {
        std::fs::create_dir(d.join(dir)).unwrap();
        single(&args(d, &format!("{dir}/init"), &["--steps", "1", "--seed", seed]));
    }
    let mut apps = vec![];
    for dir in ["a", "b"] {
        let mut a = args(d, "run", &["--init", "init/final"]);
        let at = a.iter().position(|x| x == "--out").unwrap();
        a[at + 1] = "run".into();
        let mut app: Vec<String> = ["-np", "1", "-wdir", s(&d.join(dir))].map(String::from).into();
        app.extend(rank("1", &a).into_iter().skip(2));
        apps.push(app);
    }
    let out = mpirun(&apps);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other weights than rank 0"), "{err}");
}

/// `mpirun -np 2 gpt1 finetune` (each rank half of every batch's examples, rank 0 writing the
/// run) gives the single process's weights, losses and dev scores; a second rank that reads
/// other data stops the job with a clear message.
#[test]
fn finetune_on_two_ranks_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::setup(d);
    let extra = ["--epochs", "2", "--batch", "8", "--lr", "2e-3", "--quiet", "--seed", "5"];
    let one = d.join("one");
    single(&common::scratch_args(d, "SST-2", &one, &extra));
    let two = d.join("two");
    check(&two_ranks(&common::scratch_args(d, "SST-2", &two, &extra)));
    // `gpt1 evaluate` and `predict` on two ranks (each scores every other batch of 3, rank 0
    // prints and writes): one process's output, byte for byte.
    let best = one.join("best");
    let eval = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["--model", s(&best), "--data", s(d), "--split", "dev", "--batch", "3"];
        v.extend(extra);
        v.into_iter().map(String::from).collect()
    };
    let mut ev = vec!["evaluate".to_string()];
    ev.extend(eval(&["--json"]));
    let alone = Command::new(env!("CARGO_BIN_EXE_gpt1")).args(&ev).output().unwrap();
    check(&alone);
    let shared = two_ranks(&ev);
    check(&shared);
    assert_eq!(String::from_utf8_lossy(&shared.stdout), String::from_utf8_lossy(&alone.stdout));
    let (p1, p2) = (d.join("p1.tsv"), d.join("p2.tsv"));
    let mut pr = vec!["predict".to_string()];
    pr.extend(eval(&["--probabilities", "--out", s(&p1)]));
    single(&pr);
    let mut pr2 = vec!["predict".to_string()];
    pr2.extend(eval(&["--probabilities", "--out", s(&p2)]));
    check(&two_ranks(&pr2));
    assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap(), "predictions");
    let (l1, l2) = (losses_of(&one), losses_of(&two));
    assert_eq!(l1.len(), l2.len());
    for (a, b) in l1.iter().zip(&l2) {
        assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
    }
    // Dev evaluations (each rank scores every other batch) give one process's scores.
    let dev = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["dev_score"].as_f64()
            })
            .collect()
    };
    let (d1, d2) = (dev(&one), dev(&two));
    assert!(!d1.is_empty());
    assert_eq!(d1, d2, "dev scores");
    for ((n, a), (_, b)) in weights(&one.join("best")).iter().zip(&weights(&two.join("best"))) {
        let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff < 1e-5, "{n}: {diff}");
    }
    // A two-rank resume from the run's last checkpoint (every rank checks it resumed the same
    // state) ends with the same best/ weights, bit for bit.
    let mut with_ckpt = extra.to_vec();
    with_ckpt.extend(["--save-every", "2", "--keep-checkpoints", "0"]);
    let three = d.join("three");
    check(&two_ranks(&common::scratch_args(d, "SST-2", &three, &with_ckpt)));
    let before = weights(&three.join("best"));
    with_ckpt.push("--resume");
    check(&two_ranks(&common::scratch_args(d, "SST-2", &three, &with_ckpt)));
    assert_eq!(weights(&three.join("best")), before, "resumed run");
    // Rank 1 reads a train split with one more example: the settings check names it.
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    common::setup(&other);
    let mut train = std::fs::read_to_string(other.join("train.tsv")).unwrap();
    train.push_str("the end was good\t1\n");
    std::fs::write(other.join("train.tsv"), train).unwrap();
    let bad = d.join("bad");
    let a0 = common::scratch_args(d, "SST-2", &bad, &extra);
    let a1 = common::scratch_args(&other, "SST-2", &bad, &extra);
    let out = mpirun(&[rank("1", &a0), rank("1", &a1)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("settings") && err.contains("train_hash"), "{err}");
}

/// The `loss` of every training step in a run's metrics (dev lines have none).
fn losses_of(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect()
}
