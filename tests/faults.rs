//! The fault harness (docs/reliability.md): kill -9 at random moments then resume, compared
//! bitwise with an uninterrupted run, and a full disk. The mutation fuzzer is tests/fuzz.rs.
//! `GPT1_FAULT_TRIALS` (kill trials, default 6) makes it longer.

mod common;
use common::{env_or, fault_args, ok, s, strs};

use gpt1::kernels::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// kill -9 at random moments (a checkpoint is written after every step, so many kills land in
/// a checkpoint write), then `--resume` until the run finishes: the final weights and the
/// metrics' losses equal the uninterrupted run's, and no temporary is left behind.
#[test]
fn kill_9_at_random_moments_then_resume_gives_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::write_cycle_data(d);
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
    common::write_cycle_data(d);
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
