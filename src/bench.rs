//! The training benchmark: steps of the real trainer on random tokens, timed one by one.

use crate::kernels::rng::{Rng, derive};
use crate::model::{Config, Gpt, params::num_params};
use crate::train::Trainer;
use serde::Serialize;
use std::time::Instant;

/// fp32 matrix-product peak of this machine per thread (GFLOP/s), measured with PyTorch/MKL
/// (see `../shared/BENCHMARKS.md`): MFU divides by `threads × PEAK_GFLOPS_PER_THREAD`.
pub const PEAK_GFLOPS_PER_THREAD: f64 = 160.0;

#[derive(Clone, Debug, Serialize)]
pub struct StepMs {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl StepMs {
    /// Minimum, median and maximum of step times given in seconds.
    fn of(times: &mut [f64]) -> Self {
        let med = median(times);
        StepMs {
            min: times.first().map_or(0.0, |t| t * 1e3),
            median: med * 1e3,
            max: times.last().map_or(0.0, |t| t * 1e3),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainBench {
    pub config: String,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub params: usize,
    pub tokens_per_s: f64,
    pub step_ms: StepMs,
    pub gflops: f64,
    pub mfu: f64,
    pub peak_rss_mib: f64,
    pub flops_formula: &'static str,
    pub peak_gflops: f64,
}

/// Training FLOPs per token: 6·N + 12·L·T·d with N = 12·L·d² + V·d (the weights in products).
pub fn train_flops_per_token(c: &Config, t: usize) -> f64 {
    let (l, d, v) = (c.n_layer as f64, c.n_embd as f64, c.vocab_size as f64);
    let n = 12.0 * l * d * d + v * d;
    6.0 * n + 12.0 * l * t as f64 * d
}

/// Peak resident set size of this process (VmHWM), in MiB; 0 where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Runs `warmup` untimed and `steps` timed training steps (dropout as configured, AdamW,
/// clipping 1.0) on uniformly random tokens.
pub fn train(
    name: &str,
    config: Config,
    batch: usize,
    seq: usize,
    steps: usize,
    warmup: usize,
) -> TrainBench {
    let threads = rayon::current_num_threads();
    let flops_tok = train_flops_per_token(&config, seq);
    let model = Gpt::init(config.clone(), 1);
    let mut tr = Trainer::new(model, batch, seq, 0.01);
    let mut rng = Rng::new(7);
    let v = config.vocab_size as u64;
    let mut ids = vec![0u32; batch * seq];
    let mut tg = vec![0u32; batch * seq];
    let mut times = Vec::new();
    for s in 0..warmup + steps {
        ids.iter_mut().for_each(|x| *x = rng.below(v) as u32);
        tg.iter_mut().for_each(|x| *x = rng.below(v) as u32);
        let t0 = Instant::now();
        tr.step(&ids, &tg, 1e-4, 1.0, Some(derive(3, s as u64)), s as u64)
            .expect("random tokens train finitely");
        if s >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let step_ms = StepMs::of(&mut times);
    let med = step_ms.median / 1e3;
    let tokens = (batch * seq) as f64;
    let gflops = flops_tok * tokens / med / 1e9;
    let peak = PEAK_GFLOPS_PER_THREAD * threads as f64;
    TrainBench {
        config: name.to_string(),
        batch,
        seq,
        threads,
        params: num_params(&config),
        tokens_per_s: tokens / med,
        step_ms,
        gflops,
        mfu: gflops / peak,
        peak_rss_mib: peak_rss_mib(),
        flops_formula: "6*N + 12*L*T*d per token, N = 12*L*d^2 + V*d",
        peak_gflops: peak,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FinetuneBench {
    pub config: String,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    /// Fine-tuning examples per second (median step): body forward/backward, λ = 0.5 LM loss,
    /// a two-class head, clipping, AdamW.
    pub train_examples_per_s: f64,
    pub train_step_ms: StepMs,
    /// Evaluation examples per second (median): forward and head, no dropout.
    pub eval_examples_per_s: f64,
    pub peak_rss_mib: f64,
}

/// The fine-tuning step of `train::finetune` on random sequences of `seq` tokens (extract
/// token last), `batch` examples per step.
pub fn finetune(
    name: &str,
    config: Config,
    batch: usize,
    seq: usize,
    steps: usize,
    warmup: usize,
) -> FinetuneBench {
    use crate::kernels::crossentropy::IGNORE;
    use crate::kernels::dropout::Dropout;
    use crate::model::Activations;
    use crate::tasks::{Head, HeadKind, Item, Target};
    use crate::train::optim::AdamW;
    let threads = rayon::current_num_threads();
    let d = config.n_embd;
    let mut model = Gpt::init(config.clone(), 1);
    let mut head = Head::new(HeadKind::Classify, d, 2, 1);
    let mut acts = Activations::new(&config, batch, seq, true);
    let mut grads = vec![0.0f32; model.params.len()];
    let mut opt = AdamW::new(&config, 0.01);
    let (mut ow, mut ob) = (
        AdamW::flat(head.w.len(), true, 0.01),
        AdamW::flat(head.b.len(), false, 0.01),
    );
    let mut rng = Rng::new(11);
    let v = config.vocab_size as u64;
    let items: Vec<Item> = (0..batch)
        .map(|i| Item {
            features: vec![vec![i * seq + seq - 1]],
            target: Target::Class(i % 2),
        })
        .collect();
    let mut times = Vec::new();
    let mut dh = vec![0.0f32; batch * seq * d];
    for s in 0..warmup + steps {
        let ids: Vec<u32> = (0..batch * seq).map(|_| rng.below(v) as u32).collect();
        let mut lm: Vec<u32> = ids[1..].to_vec();
        lm.push(IGNORE);
        for i in 1..batch {
            lm[i * seq - 1] = IGNORE;
        }
        let t0 = Instant::now();
        let key = derive(5, s as u64);
        grads.iter_mut().for_each(|g| *g = 0.0);
        let mut hg = head.zeros_like();
        model.forward(&mut acts, &ids, Some(key));
        dh.fill(0.0);
        head.loss_backward(
            &mut hg,
            acts.hidden(),
            &items,
            Dropout { p: 0.1, key },
            1.0 / batch as f32,
            &mut dh,
        );
        let counted = lm.iter().filter(|&&t| t != IGNORE).count() as f32;
        model.backward(
            &mut acts,
            &mut grads,
            &ids,
            &lm,
            Some(key),
            0.5 / counted,
            Some(&dh),
        );
        crate::train::optim::clip_grad_norm(&mut grads, 1.0);
        opt.step(&mut model.params, &grads, 6.25e-5);
        ow.step(&mut head.w, &hg.w, 6.25e-5);
        ob.step(&mut head.b, &hg.b, 6.25e-5);
        if s >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let step_ms = StepMs::of(&mut times);
    let med = step_ms.median / 1e3;
    let mut eval_times = Vec::new();
    let mut eacts = Activations::new(&config, batch, seq, false);
    for _ in 0..warmup + steps {
        let ids: Vec<u32> = (0..batch * seq).map(|_| rng.below(v) as u32).collect();
        let t0 = Instant::now();
        let (rows, ritems) = crate::train::finetune::extract_rows(&items);
        let hidden = model.forward_rows(&mut eacts, &ids, &rows);
        std::hint::black_box(head.forward(&hidden, &ritems));
        eval_times.push(t0.elapsed().as_secs_f64());
    }
    let eval_med = median(&mut eval_times[warmup..].to_vec());
    FinetuneBench {
        config: name.to_string(),
        batch,
        seq,
        threads,
        train_examples_per_s: batch as f64 / med,
        train_step_ms: step_ms,
        eval_examples_per_s: batch as f64 / eval_med,
        peak_rss_mib: peak_rss_mib(),
    }
}
