//! `gpt1 demo` end to end on its built-in corpus, at a few updates: the report's shape, what it
//! writes, and the same numbers and samples for the same seed.

mod common;
use common::{fails, ok, s};

fn run(out: &std::path::Path) -> serde_json::Value {
    let line = ok(&[
        "demo",
        "--out",
        s(out),
        "--pretrain-steps",
        "4",
        "--finetune-steps",
        "2",
        "--examples",
        "8",
        "--json",
    ]);
    serde_json::from_str(line.trim()).unwrap()
}

#[test]
fn the_demo_pretrains_finetunes_both_variants_and_reports() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let r = run(&a);
    let tasks = r["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        for k in ["pretrained", "scratch"] {
            let v = t[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{t}");
        }
    }
    let samples = r["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    assert!(
        samples.iter().all(|x| !x["before"].as_str().unwrap().is_empty()
            && !x["after"].as_str().unwrap().is_empty())
    );
    assert!(r["wall_s"].as_f64().unwrap() > 0.0);
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(report.contains("| gain from pre-training |"), "{report}");
    assert!(a.join("pretrain/final/vocab.json").exists() && a.join("pretrain/curves.png").exists());
    assert!(a.join("tasks/authorship/train.jsonl").exists());
    // Deterministic for a seed.
    let r2 = run(&b);
    assert_eq!(r["tasks"], r2["tasks"]);
    assert_eq!(r["samples"], r2["samples"]);
    // An earlier demo's folder is never overwritten.
    fails(&["demo", "--out", s(&a), "--pretrain-steps", "1", "--json"], "an earlier demo is here");
}
