//! Whole-model checks: finite differences through every block with dropout on, determinism
//! across thread counts, and memorising a short text.

use gpt1::kernels::rng::{Rng, derive};
use gpt1::model::{Activations, Config, Gpt};
use gpt1::train::Trainer;
use gpt1::train::trainer::StepKey;

fn small_config(p: f32) -> Config {
    let mut c = Config::named("tiny").unwrap().with_dropout(p);
    c.vocab_size = 50;
    c.n_positions = 16;
    c.n_embd = 16;
    c.n_layer = 2;
    c.n_head = 2;
    c
}

fn tokens(n: usize, v: u32, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(v as u64) as u32).collect()
}

#[test]
fn model_gradients_match_finite_differences_with_dropout() {
    let c = small_config(0.1);
    let mut model = Gpt::init(c.clone(), 3);
    // Non-trivial LayerNorm parameters so their gradients are tested in general position.
    for (i, p) in model.params.iter_mut().enumerate() {
        *p += 0.05 * ((i * 7919 % 101) as f32 / 101.0 - 0.5);
    }
    let (b, t) = (2, 9);
    let ids = tokens(b * t, 50, 1);
    let tg = tokens(b * t, 50, 2);
    let key = Some(42);
    let mut acts = Activations::new(&c, b, t, true);
    let mut grads = vec![0.0f32; model.params.len()];
    let scale = 1.0 / (b * t) as f32;
    model.forward_backward(&mut acts, &mut grads, &ids, &tg, key, scale);
    let n = model.params.len();
    let mut worst = 0.0f64;
    let mut loss_at = |m: &Gpt| {
        let mut g = vec![0.0f32; n];
        m.forward_backward(&mut acts, &mut g, &ids, &tg, key, scale) * scale as f64
    };
    let eps = 1e-2f32;
    let mut checked = 0;
    for i in (0..n).step_by(n / 150) {
        let orig = model.params[i];
        model.params[i] = orig + eps;
        let lp = loss_at(&model);
        model.params[i] = orig - eps;
        let lm = loss_at(&model);
        model.params[i] = orig;
        let num = (lp - lm) / (2.0 * eps as f64);
        let a = grads[i] as f64;
        let err = (num - a).abs() / num.abs().max(a.abs()).max(1e-3);
        worst = worst.max(err);
        assert!(err < 5e-2, "param {i}: numeric {num} analytic {a}");
        checked += 1;
    }
    assert!(checked >= 150, "{checked}");
    eprintln!("worst relative error {worst:.2e} over {checked} parameters");
}

fn train_steps(threads: usize) -> Vec<f32> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let c = small_config(0.1);
        let mut tr = Trainer::new(Gpt::init(c, 5), 2, 16, 0.01);
        for s in 0..3u64 {
            let ids = tokens(4 * 16, 50, 10 + s);
            let tg = tokens(4 * 16, 50, 20 + s);
            tr.step(&ids, &tg, 16, &[], 1e-3, 1.0, StepKey::Whole(derive(9, s)), s).unwrap();
        }
        tr.model.params
    })
}

#[test]
fn training_is_bitwise_identical_for_any_thread_count() {
    let one = train_steps(1);
    for t in [2, 3] {
        let other = train_steps(t);
        assert!(
            one.iter().zip(&other).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{t} threads differ"
        );
    }
}

#[test]
fn memorises_a_short_text() {
    let text = b"the quick brown fox jumps over the lazy dog. ";
    let mut c = small_config(0.0);
    c.vocab_size = 128;
    c.n_positions = 32;
    c.n_embd = 32;
    let stream: Vec<u32> = text.iter().cycle().take(400).map(|&b| b as u32).collect();
    let t = 24;
    let mut tr = Trainer::new(Gpt::init(c, 1), 8, t, 0.0);
    let mut r = Rng::new(4);
    let mut last = f64::MAX;
    for s in 0..250u64 {
        let (mut ids, mut tg) = (Vec::new(), Vec::new());
        for _ in 0..8 {
            let st = r.below((stream.len() - t - 1) as u64) as usize;
            ids.extend_from_slice(&stream[st..st + t]);
            tg.extend_from_slice(&stream[st + 1..st + t + 1]);
        }
        last = tr.step(&ids, &tg, t, &[], 3e-3, 1.0, StepKey::Off, s).unwrap().loss;
    }
    // The first tokens of a window cannot be predicted from so little context only for the
    // first position or two; everything else is memorised.
    eprintln!("loss after 250 steps: {last}");
    assert!(last < 0.25, "loss after 250 steps: {last}");
}

/// The fine-tuning objective L2 + λ·L1 ([`Trainer::gradients`]: the head's gradient on the
/// extract states added to the body's LM backward), with dropout in the body and the head,
/// checked against finite differences of the same objective.
#[test]
fn head_plus_aux_lm_gradients_match_finite_differences() {
    use gpt1::kernels::crossentropy::IGNORE;
    use gpt1::tasks::{Head, HeadKind, Item, Target};
    use gpt1::train::trainer::TaskObjective;
    let c = small_config(0.1);
    let (b, t, d) = (2, 7, c.n_embd);
    let ids = tokens(b * t, 50, 3);
    // Right padding on the second row: the LM loss ignores it, the extract token is before it.
    let mut tg = tokens(b * t, 50, 4);
    for x in tg[t + 4..].iter_mut() {
        *x = IGNORE;
    }
    let items = vec![
        Item { features: vec![vec![t - 1]], target: Target::Class(1) },
        Item { features: vec![vec![t + 4]], target: Target::Class(0) },
    ];
    let task = TaskObjective::new(Head::new(HeadKind::Classify, d, 3, 1), 0.5, 0.1, 0.01);
    let mut tr = Trainer::new(Gpt::init(c.clone(), 8), b, t, 0.01).with_task(task);
    let key = StepKey::Whole(5);
    tr.gradients(&ids, &tg, t, &items, key);
    let grads = tr.grads.clone();
    let n = grads.len();
    let eps = 1e-2f32;
    for i in (0..n).step_by(n / 60) {
        let orig = tr.model.params[i];
        tr.model.params[i] = orig + eps;
        let lp = tr.gradients(&ids, &tg, t, &items, key).loss;
        tr.model.params[i] = orig - eps;
        let lm = tr.gradients(&ids, &tg, t, &items, key).loss;
        tr.model.params[i] = orig;
        let num = (lp - lm) / (2.0 * eps as f64);
        let a = grads[i] as f64;
        let err = (num - a).abs() / num.abs().max(a.abs()).max(1e-3);
        assert!(err < 5e-2, "param {i}: numeric {num} analytic {a}");
    }
}

#[test]
fn keep_layers_reinitialises_only_the_later_blocks() {
    use gpt1::model::params::layout;
    let c = small_config(0.0);
    let trained = Gpt::init(c.clone(), 1);
    let mut m = trained.clone();
    m.keep_layers(1, 2);
    let fresh = Gpt::init(c.clone(), 2);
    for t in layout(&c) {
        let r = t.range();
        if t.name.starts_with("h.1.") {
            assert_eq!(m.params[r.clone()], fresh.params[r], "{}", t.name);
        } else {
            assert_eq!(m.params[r.clone()], trained.params[r], "{}", t.name);
        }
    }
}

/// Evaluation's shortcut (the last block on the extract rows only) gives the full forward
/// pass's hidden states at those rows, for one and several blocks, and the same bits for any
/// thread count.
#[test]
fn forward_rows_matches_the_full_forward_pass() {
    for n_layer in [1, 3] {
        let mut c = small_config(0.1);
        c.n_layer = n_layer;
        c.n_positions = 64;
        let model = Gpt::init(c.clone(), 9);
        let (b, t, d) = (3, 37, c.n_embd);
        let ids = tokens(b * t, c.vocab_size as u32, 4);
        let mut acts = Activations::new(&c, b, t, false);
        model.forward(&mut acts, &ids, None);
        let full = acts.hidden().to_vec();
        let rows = [0, t - 1, t + 5, 2 * t + 36, 2 * t + 36, 40];
        let got = model.forward_rows(&mut acts, &ids, &rows);
        assert_eq!(got.len(), rows.len() * d);
        for (i, &r) in rows.iter().enumerate() {
            for k in 0..d {
                let (a, e) = (got[i * d + k], full[r * d + k]);
                assert!((a - e).abs() < 2e-5, "layers {n_layer} row {r} dim {k}: {a} vs {e}");
            }
        }
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| model.forward_rows(&mut acts, &ids, &rows));
        assert_eq!(one, got);
    }
}

/// The KV-cache decode step: with the caches filled by a forward pass over a prefix, running the
/// next position alone through every block (`forward_cached`) gives the full forward pass's
/// states at that position, for one and several blocks and several sequences at once.
#[test]
fn a_cached_decode_step_matches_the_full_forward_pass() {
    for n_layer in [1, 3] {
        let mut c = small_config(0.1);
        c.n_layer = n_layer;
        let model = Gpt::init(c.clone(), 11);
        let (b, t, d) = (2, 12, c.n_embd);
        let ids = tokens(b * t, c.vocab_size as u32, 6);
        // The full pass over every position, with new last tokens.
        let mut ids2 = ids.clone();
        let last = [t - 1, 2 * t - 1];
        for (k, &r) in last.iter().enumerate() {
            ids2[r] = (ids[r] + 7 + k as u32) % c.vocab_size as u32;
        }
        let mut full = Activations::new(&c, b, t, false);
        model.forward(&mut full, &ids2, None);
        let want: Vec<f32> =
            last.iter().flat_map(|&r| full.hidden()[r * d..(r + 1) * d].to_vec()).collect();
        // The caches from the old tokens: positions before the last are the same; the decode step
        // replaces the last position's keys and values.
        let mut acts = Activations::new(&c, b, t, false);
        model.forward(&mut acts, &ids, None);
        let new_ids: Vec<u32> = last.iter().map(|&r| ids2[r]).collect();
        let got = model.forward_cached(&mut acts, &new_ids, &last);
        assert_eq!(got.len(), want.len());
        for (i, (a, e)) in got.iter().zip(&want).enumerate() {
            assert!((a - e).abs() < 2e-5, "layers {n_layer} value {i}: {a} vs {e}");
        }
    }
}

/// Greedy generation with the key/value cache picks, at every step, the argmax of the full
/// forward pass over the prompt and everything generated so far (full recompute), for prompts
/// of several lengths and two samples at once.
#[test]
fn cached_greedy_generation_equals_full_recompute() {
    use gpt1::generate::{GenerateOptions, Sampling, StopReason, generate};
    let mut c = small_config(0.1);
    c.n_layer = 2;
    c.n_positions = 24;
    let model = Gpt::init(c.clone(), 13);
    let v = c.vocab_size;
    for p in [1, 5, 9] {
        let prompt = tokens(p, v as u32, 20 + p as u64);
        let opts = GenerateOptions {
            max_new: 10,
            sampling: Sampling::GREEDY,
            seed: 0,
            num: 2,
            logprobs: None,
        };
        let (got, timing) = generate(&model, &prompt, &opts, |_, _| false).unwrap();
        assert_eq!(timing.decode_steps, 9);
        let mut seq = prompt.clone();
        for _ in 0..10 {
            let mut acts = Activations::new(&c, 1, seq.len(), false);
            let logits = model.logits(&mut acts, &seq);
            let last = &logits[(seq.len() - 1) * v..];
            let best = last
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
                .0;
            seq.push(best as u32);
        }
        for g in &got {
            assert_eq!(g.ids, seq[p..], "prompt length {p}");
            assert_eq!(g.stop, StopReason::MaxNew);
        }
    }
}

/// Sampling is reproducible from the seed, sample i is the same whatever the number of samples,
/// and generation stops at a stop callback or at the context limit.
#[test]
fn sampling_is_reproducible_and_stops_where_it_should() {
    use gpt1::generate::{GenerateOptions, Sampling, StopReason, generate};
    let mut c = small_config(0.1);
    c.n_positions = 16;
    let model = Gpt::init(c.clone(), 14);
    let prompt = tokens(4, c.vocab_size as u32, 3);
    let s = Sampling { temperature: 0.9, top_k: 20, top_p: 0.95, repetition_penalty: 1.2 };
    let run = |num, seed| {
        let opts = GenerateOptions { max_new: 8, sampling: s, seed, num, logprobs: None };
        generate(&model, &prompt, &opts, |_, _| false).unwrap().0
    };
    let (three, one, again, other) = (run(3, 7), run(1, 7), run(3, 7), run(3, 8));
    assert_eq!(three[0].ids, one[0].ids);
    assert_eq!(
        three.iter().map(|g| g.ids.clone()).collect::<Vec<_>>(),
        again.iter().map(|g| g.ids.clone()).collect::<Vec<_>>()
    );
    assert_ne!(three[1].ids, three[2].ids, "samples differ");
    assert_ne!(three[0].ids, other[0].ids, "seeds differ");
    // A stop callback ends sample 1 after its third token only.
    let opts = GenerateOptions { max_new: 8, sampling: s, seed: 7, num: 3, logprobs: None };
    let (g, _) = generate(&model, &prompt, &opts, |i, ids| i == 1 && ids.len() == 3).unwrap();
    assert_eq!((g[1].ids.len(), g[1].stop), (3, StopReason::StopString));
    assert_eq!(g[1].ids, three[1].ids[..3]);
    assert_eq!((g[0].ids.len(), g[0].stop), (8, StopReason::MaxNew));
    // The context: 16 positions hold the 4 prompt tokens and 12 new ones.
    let opts = GenerateOptions { max_new: 100, sampling: s, seed: 7, num: 1, logprobs: None };
    let (g, _) = generate(&model, &prompt, &opts, |_, _| false).unwrap();
    assert_eq!((g[0].ids.len(), g[0].stop), (12, StopReason::Context));
    // Bad settings are errors, not panics.
    let bad = GenerateOptions {
        max_new: 4,
        sampling: Sampling { top_p: 0.0, ..s },
        seed: 0,
        num: 1,
        logprobs: None,
    };
    assert!(generate(&model, &prompt, &bad, |_, _| false).is_err());
    assert!(generate(&model, &[], &opts, |_, _| false).is_err());
    assert!(generate(&model, &[c.vocab_size as u32], &opts, |_, _| false).is_err());
}

/// The memory estimate the drivers check before allocating is what the activations take; the
/// CPU keeps no attention probabilities, a backend that keeps them `B·H·T²` floats per block
/// (and, training, a scratch of that size) more.
#[test]
fn activation_bytes_is_what_activations_allocate() {
    use gpt1::model::activation_bytes;
    for (b, t, training) in [(2, 16, true), (3, 7, false), (1, 16, true)] {
        let c = small_config(0.1);
        let a = Activations::new(&c, b, t, training);
        assert_eq!(
            activation_bytes(&c, b, t, training, false),
            4 * a.len(),
            "b {b} t {t} training {training}"
        );
        let probs = 4 * b * c.n_head * t * t * (c.n_layer + usize::from(training));
        assert_eq!(activation_bytes(&c, b, t, training, true), 4 * a.len() + probs);
    }
    // Decoding's estimate is the weights and what `decoding_on` allocates (fp32: no copies).
    use gpt1::backend::{Cpu, Precision};
    let c = small_config(0.1);
    let (b, t) = (3, 16);
    let a = Activations::decoding_on(&Cpu::FP32, &c, b, t);
    let weights = 4 * gpt1::model::params::num_params(&c) as u64;
    assert_eq!(
        gpt1::model::decoding_bytes(&c, Precision::Fp32, b, t),
        weights + 4 * a.len() as u64
    );
    assert!(
        gpt1::model::decoding_bytes(&c, Precision::Fp32, b, t)
            < gpt1::model::inference_bytes(&c, Precision::Fp32, b, t, false)
    );
}
