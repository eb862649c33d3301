//! Data parallelism ([`gpt1::dist`]) without MPI: ranks as threads of one process
//! ([`gpt1::dist::local`]), each running its share of every step's micro-batches, must give the
//! weights and losses of one process running them all (up to the order of the final sum), for
//! the Transformer (dropout on) and the LSTM. `tests/mpi.rs` runs the same through `mpirun`.

use gpt1::dist::{Collective, local, share};
use gpt1::kernels::rng::Rng;
use gpt1::model::lstm::{Lstm, LstmConfig};
use gpt1::model::{Config, Gpt};
use gpt1::train::Trainer;
use gpt1::train::lstm::LstmTrainer;
use gpt1::train::trainer::StepKey;
use std::sync::Arc;

fn tokens(n: usize, v: u32, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(v as u64) as u32).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// `world` threads, each given its communicator, results in rank order.
fn ranks<T: Send + 'static>(
    world: usize,
    f: impl Fn(Arc<dyn Collective>) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let handles: Vec<_> = local::group(world)
        .into_iter()
        .map(|c| {
            let f = f.clone();
            std::thread::spawn(move || f(c))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("rank thread")).collect()
}

const STEPS: u64 = 4;
const BATCH: usize = 8;
const MICRO: usize = 2;
const SEQ: usize = 12;

fn transformer_run(comm: Option<Arc<dyn Collective>>) -> (Vec<f64>, Vec<f32>) {
    transformer_run_in(MICRO, comm)
}

/// [`STEPS`] pre-training steps (dropout on) in passes of `micro` sequences.
fn transformer_run_in(micro: usize, comm: Option<Arc<dyn Collective>>) -> (Vec<f64>, Vec<f32>) {
    let mut c = Config::named("tiny").unwrap();
    (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) = (50, 16, 32, 2, 4);
    let mut tr = Trainer::new(Gpt::init(c, 3), micro, SEQ, 0.01);
    tr.dist = comm;
    let losses = (0..STEPS)
        .map(|s| {
            let ids = tokens(BATCH * SEQ, 50, 10 + s);
            let tg = tokens(BATCH * SEQ, 50, 100 + s);
            let key = StepKey::Whole(7 + s);
            tr.step(&ids, &tg, SEQ, &[], 1e-3, 1.0, key, s + 1).unwrap().loss
        })
        .collect();
    (losses, tr.model.params.clone())
}

#[test]
fn transformer_ranks_equal_one_process() {
    let (l1, p1) = transformer_run(None);
    for world in [2, 4] {
        let runs = ranks(world, |c| transformer_run(Some(c)));
        for (rank, (l, p)) in runs.iter().enumerate() {
            for (a, b) in l.iter().zip(&l1) {
                assert!((a - b).abs() < 1e-6, "{world} ranks, rank {rank}: loss {a} vs {b}");
            }
            let d = max_diff(p, &p1);
            assert!(d < 1e-5, "{world} ranks, rank {rank}: weights differ by {d}");
            // Every rank holds the same weights, bit for bit.
            assert!(p.iter().zip(&runs[0].1).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        assert_ne!(runs[0].1, p1, "the ranks ran every pass themselves (no sharing)");
    }
}

/// Dropout masks belong to a sequence's place in the batch, not to the pass that runs it: any
/// micro-batch, and any number of ranks with their default micro-batch (the batch over the
/// ranks), give one process's whole-batch weights up to the order of the sums.
#[test]
fn any_split_of_a_step_gives_the_same_weights() {
    let (l1, p1) = transformer_run_in(BATCH, None);
    let mut runs = vec![];
    for micro in [1, 2, 4] {
        runs.push((format!("micro-batch {micro}"), transformer_run_in(micro, None)));
    }
    for world in [2, 4] {
        let r = ranks(world, move |c| transformer_run_in(BATCH / world, Some(c)));
        runs.push((format!("{world} ranks"), r.into_iter().next().unwrap()));
    }
    for (name, (l, p)) in &runs {
        for (a, b) in l.iter().zip(&l1) {
            assert!((a - b).abs() < 1e-6, "{name}: loss {a} vs {b}");
        }
        let d = max_diff(p, &p1);
        eprintln!("{name}: weights differ from the whole batch's by {d:.1e}");
        assert!(d < 1e-5, "{name}: weights differ from the whole batch's by {d}");
        assert_ne!(p, &p1, "{name}: the passes were split (sums in another order)");
    }
}

/// One step's gradients (dropout on) for any pass size: the same masks, so equal up to the
/// order of the sums; masks keyed by pass would differ by the size of the gradients.
#[test]
fn a_steps_gradients_do_not_depend_on_the_micro_batch() {
    let grads = |micro: usize| {
        let mut c = Config::named("tiny").unwrap();
        (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) = (50, 16, 32, 2, 4);
        assert!(c.attn_pdrop > 0.0 && c.resid_pdrop > 0.0 && c.embd_pdrop > 0.0);
        let mut tr = Trainer::new(Gpt::init(c, 3), micro, SEQ, 0.01);
        let (ids, tg) = (tokens(BATCH * SEQ, 50, 10), tokens(BATCH * SEQ, 50, 100));
        tr.gradients(&ids, &tg, SEQ, &[], StepKey::Whole(7));
        tr.grads
    };
    let whole = grads(BATCH);
    let scale = whole.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    for micro in [1, 2, 4] {
        let d = max_diff(&grads(micro), &whole);
        eprintln!("micro-batch {micro}: gradients differ by {:.1e} of their largest", d / scale);
        assert!(
            d <= 1e-5 * scale,
            "micro-batch {micro}: gradients differ by {d} (largest {scale})"
        );
    }
}

fn lstm_run(comm: Option<Arc<dyn Collective>>) -> (Vec<f64>, Vec<f32>) {
    let mut tr = LstmTrainer::new(Lstm::init(LstmConfig::new(40, 8, 16, 1), 4), MICRO, SEQ, 0.01);
    tr.dist = comm;
    let losses = (0..STEPS)
        .map(|s| {
            let ids = tokens(BATCH * SEQ, 40, 20 + s);
            let tg = tokens(BATCH * SEQ, 40, 200 + s);
            tr.step(&ids, &tg, 1e-2, 1.0, s + 1).unwrap().loss
        })
        .collect();
    (losses, tr.model.params.clone())
}

#[test]
fn lstm_ranks_equal_one_process() {
    let (l1, p1) = lstm_run(None);
    for (rank, (l, p)) in ranks(2, |c| lstm_run(Some(c))).iter().enumerate() {
        for (a, b) in l.iter().zip(&l1) {
            assert!((a - b).abs() < 1e-6, "rank {rank}: loss {a} vs {b}");
        }
        let d = max_diff(p, &p1);
        assert!(d < 1e-5, "rank {rank}: weights differ by {d}");
    }
}

#[test]
fn shares_are_contiguous_and_cover_every_pass() {
    let mut seen = vec![];
    for r in 0..4 {
        seen.extend(share(8, r, 4));
    }
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    assert_eq!(share(8, 1, 2), 4..8);
}

#[test]
fn ranks_that_disagree_all_fail_and_say_where() {
    let out = ranks(2, |c| {
        let lr = if c.rank() == 0 { "lr: 0.001" } else { "lr: 0.002" };
        gpt1::dist::check_same(c.as_ref(), "settings", &format!("Opts {{ batch: 8, {lr} }}"))
            .map_err(|e| e.to_string())
    });
    let (e0, e1) = (out[0].clone().unwrap_err(), out[1].clone().unwrap_err());
    assert!(e1.contains("lr: 0.002 } here, lr: 0.001 } on rank 0"), "{e1}");
    assert!(e0.contains("another rank has other settings"), "{e0}");
    let same = ranks(2, |c| gpt1::dist::check_same(c.as_ref(), "settings", "x").is_ok());
    assert_eq!(same, vec![true, true]);
}

#[test]
fn a_launched_process_without_mpi_is_refused() {
    // Under mpirun (its environment) a gpt1 built without the `mpi` feature must not run N
    // independent copies of the same run.
    if cfg!(feature = "mpi") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(["pretrain", "--config", "tiny", "--data", "x.bin", "--out"])
        .arg(tmp.path().join("run"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without MPI") && err.contains("--features mpi"), "{err}");
    assert!(!tmp.path().join("run").exists());
}

#[test]
fn commands_that_do_not_share_their_work_refuse_a_launcher() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpt1"))
        .args(["generate", "--model", "x", "--ids", "1"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`perplexity` and `zero-shot` run data-parallel"), "{err}");
}

/// Fine-tuning shared by ranks: each runs a contiguous share of the batch's items (here 5
/// multiple-choice questions of 3 candidates, so 2 ranks split 2 + 3 and 3 ranks 1 + 2 + 2)
/// with the whole batch's dropout masks (body and head) and divisors; body and head weights and
/// the losses match one process running the batch in one pass.
fn finetune_run(comm: Option<Arc<dyn Collective>>) -> (Vec<f64>, Vec<f32>, Vec<f32>) {
    use gpt1::tasks::{Head, HeadKind, Item, Target};
    use gpt1::train::trainer::TaskObjective;
    let mut c = Config::named("tiny").unwrap();
    (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) = (50, 16, 32, 2, 4);
    let (items_n, cands, len) = (5usize, 3usize, 10usize);
    let n_seq = items_n * cands;
    let head = Head::new(HeadKind::Choice, 32, 1, 9);
    let task = TaskObjective::new(head, 0.5, 0.1, 0.01);
    let mut tr = Trainer::new(Gpt::init(c, 3), n_seq, len, 0.01).with_task(task);
    tr.dist = comm;
    let losses = (0..STEPS)
        .map(|s| {
            let ids = tokens(n_seq * len, 50, 20 + s);
            let mut tg = tokens(n_seq * len, 50, 200 + s);
            // Padding predicts nothing: the last 3 positions of every other sequence.
            for q in (0..n_seq).step_by(2) {
                tg[q * len + len - 3..(q + 1) * len].fill(u32::MAX);
            }
            let items: Vec<Item> = (0..items_n)
                .map(|i| Item {
                    features: (0..cands).map(|k| vec![(i * cands + k) * len + len - 4]).collect(),
                    target: Target::Class((i + s as usize) % cands),
                })
                .collect();
            let key = StepKey::Whole(31 + s);
            tr.step(&ids, &tg, len, &items, 1e-3, 1.0, key, s + 1).unwrap().loss
        })
        .collect();
    let head = tr.task.as_ref().unwrap().head.w.clone();
    (losses, tr.model.params.clone(), head)
}

#[test]
fn finetuning_ranks_equal_one_process() {
    let (l1, p1, h1) = finetune_run(None);
    // 6 ranks for 5 questions: one rank has none and still joins every sum.
    for world in [2, 3, 6] {
        let runs = ranks(world, |c| finetune_run(Some(c)));
        for (rank, (l, p, h)) in runs.iter().enumerate() {
            for (a, b) in l.iter().zip(&l1) {
                assert!((a - b).abs() < 1e-6, "{world} ranks, rank {rank}: loss {a} vs {b}");
            }
            let (dp, dh) = (max_diff(p, &p1), max_diff(h, &h1));
            assert!(dp < 1e-5 && dh < 1e-5, "{world} ranks, rank {rank}: weights {dp}, head {dh}");
            assert!(p.iter().zip(&runs[0].1).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert!(h.iter().zip(&runs[0].2).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        assert_ne!(runs[0].1, p1, "the ranks shared the batch (no rank ran it whole)");
    }
}

/// The LSTM baseline's fine-tuning shared by ranks (head dropout at the batch's positions, the
/// batch's divisors): the single process's losses and weights.
fn lstm_finetune_run(comm: Option<Arc<dyn Collective>>) -> (Vec<f64>, Vec<f32>, Vec<f32>) {
    use gpt1::tasks::{Head, HeadKind, Item, Target};
    use gpt1::train::trainer::TaskObjective;
    let (items_n, len) = (5usize, 9usize);
    let mut tr = LstmTrainer::new(Lstm::init(LstmConfig::new(40, 8, 16, 1), 4), items_n, len, 0.01);
    tr.dist = comm;
    let mut task = TaskObjective::new(Head::new(HeadKind::Classify, 16, 3, 2), 0.5, 0.2, 0.01);
    let losses = (0..STEPS)
        .map(|s| {
            tr.resize(items_n, len);
            let ids = tokens(items_n * len, 40, 30 + s);
            let mut lm = tokens(items_n * len, 40, 300 + s);
            lm[len - 2..len].fill(u32::MAX);
            let items: Vec<Item> = (0..items_n)
                .map(|i| Item {
                    features: vec![vec![i * len + len - 1]],
                    target: Target::Class(i % 3),
                })
                .collect();
            tr.step_task(&mut task, &ids, &lm, &items, 1e-2, 1.0, Some(50 + s), s + 1).unwrap().loss
        })
        .collect();
    (losses, tr.model.params.clone(), task.head.w.clone())
}

#[test]
fn lstm_finetuning_ranks_equal_one_process() {
    let (l1, p1, h1) = lstm_finetune_run(None);
    for world in [2, 3] {
        let runs = ranks(world, |c| lstm_finetune_run(Some(c)));
        for (rank, (l, p, h)) in runs.iter().enumerate() {
            for (a, b) in l.iter().zip(&l1) {
                assert!((a - b).abs() < 1e-6, "{world} ranks, rank {rank}: loss {a} vs {b}");
            }
            let (dp, dh) = (max_diff(p, &p1), max_diff(h, &h1));
            assert!(dp < 1e-5 && dh < 1e-5, "{world} ranks, rank {rank}: weights {dp}, head {dh}");
        }
    }
}

/// `score`, `perplexity` and the zero-shot scorer shared by 2 and 3 ranks (batches dealt
/// round-robin): every rank returns one process's scores and sums, bitwise.
#[test]
fn scoring_shared_by_ranks_equals_one_process() {
    let mut c = Config::named("tiny").unwrap();
    (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) = (50, 16, 32, 2, 4);
    let m = Arc::new(Gpt::init(c, 9));
    let rows: Arc<Vec<Vec<u32>>> =
        Arc::new([9, 9, 17, 5, 9].iter().map(|&l| tokens(l, 50, l as u64)).collect());
    let ids = Arc::new(tokens(61, 50, 77));
    let alone = gpt1::eval::score(&*m, &rows, 2, None).unwrap();
    let ppl = gpt1::eval::perplexity(&*m, &ids, 5, 3, None, |_| {}).unwrap();
    use gpt1::zeroshot::{Pair, continuation_logprobs};
    let pairs: Arc<Vec<Pair>> = Arc::new(
        (0..7)
            .map(|i| Pair {
                context: tokens(3 + i % 4, 50, 200 + i as u64),
                continuation: tokens(1 + i % 3, 50, 300 + i as u64),
            })
            .collect(),
    );
    let cont = continuation_logprobs(&*m, &pairs, 2, None, |_| {}).unwrap();
    for world in [2, 3] {
        let (m, rows, ids, pairs) = (m.clone(), rows.clone(), ids.clone(), pairs.clone());
        let got = ranks(world, move |comm| {
            let s = gpt1::eval::score(&*m, &rows, 2, Some(&*comm)).unwrap();
            let p = gpt1::eval::perplexity(&*m, &ids, 5, 3, Some(&*comm), |_| {}).unwrap();
            let z = continuation_logprobs(&*m, &pairs, 2, Some(&*comm), |_| {}).unwrap();
            (s, p, z)
        });
        for (s, p, z) in got {
            for (a, b) in z.iter().zip(&cont) {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.logprobs), bits(&b.logprobs), "zero-shot, {world} ranks");
                assert_eq!((a.truncated, a.cut), (b.truncated, b.cut));
            }
            for (a, b) in s.rows.iter().zip(&alone.rows) {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.token_logprobs), bits(&b.token_logprobs), "{world} ranks");
            }
            assert_eq!(s.mean_nll.to_bits(), alone.mean_nll.to_bits());
            assert_eq!((p.0.to_bits(), p.1), (ppl.0.to_bits(), ppl.1), "{world} ranks");
        }
    }
}
