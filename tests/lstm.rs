//! The LSTM baseline against `torch.nn.LSTM` (fixture: `tools/make_lstm_fixtures.py`): logits,
//! loss and every gradient of a 2-layer model; finite differences of the loss; the same
//! gradients for any thread count.

mod common;
use common::{tensor_f32, tensor_i64};
use gpt1::kernels::crossentropy::IGNORE;
use gpt1::model::lstm::{Lstm, LstmConfig, load_lstm, lstm_layout};
use safetensors::SafeTensors;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let den: f32 = b.iter().map(|x| x.abs()).fold(1e-6, f32::max);
    num / den
}

#[test]
fn logits_loss_and_gradients_match_torch_nn_lstm() {
    let m = load_lstm(&fixtures().join("lstm_tiny")).unwrap();
    let bytes = std::fs::read(fixtures().join("lstm_tiny_ref.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| tensor_f32(&st, n);
    let i64s = |n: &str| tensor_i64(&st, n);
    let (b, t) = (3, 6);
    let ids: Vec<u32> = i64s("ids").iter().map(|&x| x as u32).collect();
    let targets: Vec<u32> =
        i64s("targets").iter().map(|&x| if x < 0 { IGNORE } else { x as u32 }).collect();
    let mut a = m.activations(b, t);
    m.forward(&mut a, &ids).unwrap();
    let e = rel_err(&m.logits(&a), &f32s("logits"));
    assert!(e < 1e-5, "logits: rel err {e}");
    let mut grads = vec![0.0f32; m.params.len()];
    let (loss, count) = m.loss_backward(&mut a, &targets, &mut grads);
    assert_eq!(count, b * t - 2);
    assert!((loss - f32s("loss")[0] as f64).abs() < 1e-5, "loss {loss}");
    for tn in lstm_layout(&m.config) {
        let e = rel_err(&grads[tn.range()], &f32s(&format!("grad.{}", tn.name)));
        assert!(e < 1e-4, "gradient of {}: rel err {e}", tn.name);
    }
}

#[test]
fn gradients_match_finite_differences() {
    // Two layers with E < H; three with E > H (an odd number of the backward's dh/dx swaps,
    // the embedding's gradient wider than the hidden state).
    for c in [LstmConfig::new(11, 5, 7, 2), LstmConfig::new(11, 9, 6, 3)] {
        finite_differences(c);
    }
}

fn finite_differences(c: LstmConfig) {
    let m0 = Lstm::init(c, 3);
    let (b, t) = (2, 5);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 11) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| ((i * 5 + 3) % 11) as u32).collect();
    let loss = |m: &Lstm| -> f64 {
        let mut a = m.activations(b, t);
        m.forward(&mut a, &ids).unwrap();
        let mut g = vec![0.0f32; m.params.len()];
        m.loss_backward(&mut a, &targets, &mut g).0
    };
    let mut a = m0.activations(b, t);
    m0.forward(&mut a, &ids).unwrap();
    let mut grads = vec![0.0f32; m0.params.len()];
    m0.loss_backward(&mut a, &targets, &mut grads);
    let eps = 1e-2f32;
    for tn in lstm_layout(&m0.config) {
        // A few entries of every tensor, the embedding rows of used tokens included.
        for i in tn.range().step_by((tn.range().len() / 5).max(1)).take(5) {
            let (mut p, mut q) = (m0.clone(), m0.clone());
            p.params[i] += eps;
            q.params[i] -= eps;
            let fd = (loss(&p) - loss(&q)) / (2.0 * eps as f64);
            let an = grads[i] as f64;
            assert!(
                (fd - an).abs() <= 2e-3 + 2e-2 * an.abs().max(fd.abs()),
                "{} [{i}]: finite difference {fd}, analytic {an}",
                tn.name
            );
        }
    }
}

/// At a batch of 8 and H = 128 the CPU's fp32 backward multiplies `dG_t` by `W_hh` stored
/// transposed (a copy made once per pass, for the register-blocked dot products); at 4 it
/// multiplies `W_hh` itself. The batch's gradients are the mean of its two halves' (weights
/// scaled up so that the recurrence carries weight), and bitwise the same on one thread and on
/// two.
#[test]
fn the_transposed_recurrence_gives_the_gradients() {
    use gpt1::backend::{Backend, Cpu, Precision};
    let c = LstmConfig::new(11, 9, 128, 1);
    let (b, h) = (8, c.hidden_size);
    let w = vec![0.0f32; 4 * h * h];
    let mut copy = Vec::new();
    assert!(Cpu::FP32.transposed_for_rows(&mut copy, &w, b, 4 * h, h), "the path is not taken");
    assert!(!Cpu::new(Precision::Bf16).transposed_for_rows(&mut copy, &w, b, 4 * h, h));
    let mut m = Lstm::init(c.clone(), 5);
    m.params.iter_mut().for_each(|p| *p *= 3.0);
    let t = 6;
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 11) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| ((i * 5 + 3) % 11) as u32).collect();
    let grads = |rows: std::ops::Range<usize>| {
        let mut a = m.activations(rows.len(), t);
        let span = rows.start * t..rows.end * t;
        m.forward(&mut a, &ids[span.clone()]).unwrap();
        let mut g = vec![0.0f32; m.params.len()];
        m.loss_backward(&mut a, &targets[span], &mut g);
        g
    };
    let (whole, first, second) = (grads(0..b), grads(0..b / 2), grads(b / 2..b));
    let halves: Vec<f32> = first.iter().zip(&second).map(|(x, y)| (x + y) / 2.0).collect();
    for tn in lstm_layout(&m.config) {
        let e = rel_err(&whole[tn.range()], &halves[tn.range()]);
        assert!(e < 1e-5, "gradient of {}: rel err {e}", tn.name);
    }
    same_for_one_or_two_threads(c, b, t);
}

#[test]
fn gradients_are_the_same_for_one_or_two_threads() {
    same_for_one_or_two_threads(LstmConfig::new(50, 16, 32, 1), 4, 20);
}

fn same_for_one_or_two_threads(c: LstmConfig, b: usize, t: usize) {
    let v = c.vocab_size;
    let m = Lstm::init(c, 9);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 13 % v) as u32).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut a = m.activations(b, t);
            m.forward(&mut a, &ids).unwrap();
            let mut g = vec![0.0f32; m.params.len()];
            let (l, _) = m.loss_backward(&mut a, &ids, &mut g);
            (l, g)
        })
    };
    let (l1, g1) = run(1);
    let (l2, g2) = run(2);
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert!(g1.iter().zip(&g2).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// `gpt1 score` reads the LSTM checkpoint PyTorch saved (`model_type` "lstm") and gives each
/// token the log-probability of torch's logits.
#[test]
fn score_reads_a_checkpoint_pytorch_saved() {
    let bytes = std::fs::read(fixtures().join("lstm_tiny_ref.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids: Vec<u32> = st
        .tensor("ids")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let logits: Vec<f32> = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (b, t, v) = (3, 6, 37);
    let tmp = tempfile::tempdir().unwrap();
    let rows = tmp.path().join("rows.npy");
    gpt1::data::shard::write_npy_2d(&rows, &ids, t).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(["score", "--model", fixtures().join("lstm_tiny").to_str().unwrap()])
        .args(["--ids", rows.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in 0..b {
        for step in 0..t - 1 {
            let row = &logits[(s * t + step) * v..(s * t + step + 1) * v];
            let mx = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let z: f64 = row.iter().map(|&x| (x as f64 - mx).exp()).sum();
            let want = row[ids[s * t + step + 1] as usize] as f64 - mx - z.ln();
            let got = js["rows"][s]["token_logprobs"][step].as_f64().unwrap();
            assert!((got - want).abs() < 1e-4, "row {s} token {step}: {got} vs {want}");
        }
    }
}

/// A learnable token stream and a config of its vocabulary.
fn lstm_data(d: &std::path::Path) {
    common::write_cycle_data(d);
}

fn pretrain_lstm(out: &std::path::Path, extra: &[&str]) {
    let d = out.parent().unwrap();
    let (data, config) = (d.join("train.bin"), d.join("config.json"));
    let mut args: Vec<&str> = vec![
        "pretrain",
        "--data",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--arch",
        "lstm",
        "--lstm-hidden",
        "32",
        "--out",
        out.to_str().unwrap(),
        "--batch",
        "4",
        "--seq",
        "16",
        "--steps",
        "40",
        "--warmup",
        "2",
        "--lr",
        "1e-2",
        "--quiet",
    ];
    args.extend(extra);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1")).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `pretrain --arch lstm` learns, writes PyTorch-named checkpoints, and resumes (from
/// `--resume` alone) to bitwise the uninterrupted run's weights, for one or two threads.
#[test]
fn lstm_pretraining_learns_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    lstm_data(tmp.path());
    let straight = tmp.path().join("straight");
    pretrain_lstm(&straight, &[]);
    let m = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = m
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect();
    let head: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let tail: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(tail < head - 0.5, "the loss did not fall: {head} → {tail}");
    let model = load_lstm(&straight.join("final")).unwrap();
    assert_eq!(model.config.hidden_size, 32);
    let split = tmp.path().join("split");
    pretrain_lstm(&split, &["--stop-at", "15"]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args([
            "--threads",
            "1",
            "pretrain",
            "--out",
            split.to_str().unwrap(),
            "--resume",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let w = |d: &std::path::Path| std::fs::read(d.join("final/model.safetensors")).unwrap();
    assert!(w(&split) == w(&straight), "resumed weights differ");
}

/// `--micro-batch` splits each LSTM update into passes whose gradients add up to the whole
/// batch's: the same losses as one pass (to rounding).
#[test]
fn lstm_micro_batches_add_up_to_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    lstm_data(tmp.path());
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    pretrain_lstm(&one, &["--steps", "5"]);
    pretrain_lstm(&two, &["--steps", "5", "--micro-batch", "2"]);
    let losses = |d: &std::path::Path| -> Vec<f64> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()
            })
            .collect()
    };
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 5);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
    }
}

/// The fine-tuning objective with the LSTM as the body against PyTorch (fixture:
/// `tools/make_lstm_fixtures.py`): a linear head with bias on the extract token's top state of
/// right-padded sequences, task cross-entropy + 0.5 × LM loss; the losses, every LSTM gradient
/// and the head's.
#[test]
fn the_finetuning_objective_matches_pytorch() {
    use gpt1::tasks::{Head, HeadKind, Item, Target};
    use gpt1::train::lstm::LstmTrainer;
    use gpt1::train::trainer::TaskObjective;
    let m = load_lstm(&fixtures().join("lstm_tiny")).unwrap();
    let bytes = std::fs::read(fixtures().join("lstm_ft_ref.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| tensor_f32(&st, n);
    let i64s = |n: &str| tensor_i64(&st, n);
    let (b, t, h, c) = (3usize, 6usize, 16usize, 3usize);
    let ids: Vec<u32> = i64s("ids").iter().map(|&x| x as u32).collect();
    let lm: Vec<u32> = i64s("lm").iter().map(|&x| if x < 0 { IGNORE } else { x as u32 }).collect();
    let (lengths, labels) = (i64s("lengths"), i64s("labels"));
    // nn.Linear's weight is [C, H]; the head keeps [H, C].
    let (wt, bias) = (f32s("head.weight"), f32s("head.bias"));
    let mut head = Head::new(HeadKind::Classify, h, c, 0);
    for j in 0..h {
        for o in 0..c {
            head.w[j * c + o] = wt[o * h + j];
        }
    }
    head.b = bias;
    let mut task = TaskObjective::new(head, 0.5, 0.0, 0.01);
    let items: Vec<Item> = (0..b)
        .map(|s| Item {
            features: vec![vec![s * t + lengths[s] as usize - 1]],
            target: Target::Class(labels[s] as usize),
        })
        .collect();
    let mut tr = LstmTrainer::new(m, b, t, 0.01);
    let (_, lm_loss, task_loss, _) = tr.gradients_task(&mut task, &ids, &lm, &items, None).unwrap();
    assert!((task_loss - f32s("task_loss")[0] as f64).abs() < 1e-5, "task {task_loss}");
    assert!((lm_loss - f32s("lm_loss")[0] as f64).abs() < 1e-5, "lm {lm_loss}");
    for tn in lstm_layout(&tr.model.config) {
        let e = rel_err(&tr.grads[tn.range()], &f32s(&format!("grad.{}", tn.name)));
        assert!(e < 1e-4, "gradient of {}: rel err {e}", tn.name);
    }
    let g = task.grad();
    let gw = f32s("grad.head.weight");
    let ours: Vec<f32> =
        (0..c).flat_map(|o| (0..h).map(move |j| (o, j))).map(|(o, j)| g.w[j * c + o]).collect();
    assert!(rel_err(&ours, &gw) < 1e-4);
    assert!(rel_err(&g.b, &f32s("grad.head.bias")) < 1e-4);
}

/// Fine-tuning's three special tokens: new rows in the embedding and the output layer, the
/// rest of the weights unchanged.
#[test]
fn growing_the_vocabulary_keeps_every_old_weight() {
    let m0 = Lstm::init(LstmConfig::new(11, 5, 7, 1), 3);
    let mut m = m0.clone();
    m.grow_vocab(3, 9);
    assert_eq!(m.config.vocab_size, 14);
    let (old, new) = (lstm_layout(&m0.config), lstm_layout(&m.config));
    for (o, n) in old.iter().zip(&new) {
        let (a, b) = (&m0.params[o.range()], &m.params[n.range()]);
        assert_eq!(&b[..a.len()], a, "{}", o.name);
    }
    let ids: Vec<u32> = vec![1, 12, 13, 2];
    let mut a = m.activations(1, 4);
    m.forward(&mut a, &ids).unwrap();
}

/// The LSTM on the bf16 backend (products' inputs rounded to bf16, fp32 accumulation) against
/// the fp32 path: the same loss and gradients within bf16's precision, and a training step.
#[test]
fn bf16_products_agree_with_fp32() {
    use gpt1::backend::{Cpu, Precision};
    let m32 = Lstm::init(LstmConfig::new(40, 16, 24, 2), 5);
    let mut m16 = m32.clone();
    m16.backend = Cpu::new(Precision::Bf16);
    let (b, t) = (3, 7);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 11 % 40) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| ((i * 3 + 1) % 40) as u32).collect();
    let run = |m: &Lstm| {
        let mut a = m.activations(b, t);
        m.forward(&mut a, &ids).unwrap();
        let mut g = vec![0.0f32; m.params.len()];
        let (l, _) = m.loss_backward(&mut a, &targets, &mut g);
        (l, g)
    };
    let ((l32, g32), (l16, g16)) = (run(&m32), run(&m16));
    assert!((l32 - l16).abs() < 1e-2 * l32.abs(), "loss fp32 {l32} bf16 {l16}");
    assert_ne!(g32, g16, "the bf16 backend ran fp32 products");
    for tn in lstm_layout(&m32.config) {
        let e = rel_err(&g16[tn.range()], &g32[tn.range()]);
        assert!(e < 3e-2, "gradient of {}: bf16 vs fp32 rel err {e}", tn.name);
    }
    let mut tr = gpt1::train::lstm::LstmTrainer::new(m16, b, t, 0.01);
    let first = tr.step(&ids, &targets, 1e-2, 1.0, 1).unwrap().loss;
    for s in 2..20 {
        tr.step(&ids, &targets, 1e-2, 1.0, s).unwrap();
    }
    let last = tr.step(&ids, &targets, 1e-2, 1.0, 20).unwrap().loss;
    assert!(last < first - 0.5, "bf16 training did not learn: {first} -> {last}");
}
