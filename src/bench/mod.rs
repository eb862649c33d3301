//! The benchmarks behind `gpt1 bench`: training steps of the real trainer on random tokens,
//! timed one by one (here), fine-tuning and generation, and the kernel lab ([`kernels`]).

pub mod kernels;
mod serve;
pub use serve::{ServeBench, serve};

use crate::backend::{Backend, Cpu, Precision};
use crate::error::Result;
use crate::kernels::rng::{Rng, derive};
use crate::model::{ArchConfig, Net};
use crate::model::{Config, Gpt, params::num_params};
use crate::train::Trainer;
use crate::train::trainer::StepKey;
use serde::Serialize;
use std::time::Instant;

/// The matrix-product rate this machine reaches through the CPU backend's product kernel at
/// `precision` (GFLOP/s, the fastest of 10 products of 1024 × 1024 × 1024 on the current thread
/// pool, after one untimed): the denominator of MFU unless the caller gives one. A bf16 run's
/// MFU is against the bf16 product it runs: against fp32's it went above 100 %. The fastest,
/// not the median: on a shared machine another tenant only ever slows a product down, and
/// the median of 5 (before 2026-12-07) once came out at half the rate, so MFU read 190 %.
pub fn measure_peak_gflops(precision: Precision) -> f64 {
    let n = 1024;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut c = vec![0.0f32; n * n];
    let cpu = Cpu::new(precision);
    let best = (0..11)
        .map(|_| {
            let t0 = Instant::now();
            cpu.matmul(&mut c, &a, false, &a, false, n, n, n, false);
            t0.elapsed().as_secs_f64()
        })
        .skip(1)
        .fold(f64::INFINITY, f64::min);
    2.0 * (n * n * n) as f64 / best / 1e9
}

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
    /// What ran the kernels.
    pub device: String,
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
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Runs `warmup` untimed and `steps` timed training steps of either architecture (dropout as
/// configured, AdamW, clipping 1.0) on uniformly random tokens: the step `gpt1 pretrain`
/// takes. MFU is relative to `peak_gflops` (default: what [`measure_peak_gflops`] measures now).
#[allow(clippy::too_many_arguments)]
pub fn train(
    name: &str,
    config: ArchConfig,
    batch: usize,
    seq: usize,
    steps: usize,
    warmup: usize,
    peak_gflops: Option<f64>,
    precision: Precision,
    device: crate::backend::Device,
) -> Result<TrainBench> {
    let threads = rayon::current_num_threads();
    // On a GPU the CPU's measured peak means nothing: MFU only against a given peak.
    let peak = match device {
        crate::backend::Device::Cpu => {
            peak_gflops.unwrap_or_else(|| measure_peak_gflops(precision))
        }
        crate::backend::Device::Cuda(_) => peak_gflops.unwrap_or(0.0),
    };
    let (label, flops_tok, formula) = match &config {
        ArchConfig::Transformer(c) => (
            name.to_string(),
            train_flops_per_token(c, seq),
            "6*N + 12*L*T*d per token, N = 12*L*d^2 + V*d",
        ),
        ArchConfig::Lstm(c) => (
            format!("lstm {}x{} (E {}, V {})", c.num_layers, c.hidden_size, c.n_embd, c.vocab_size),
            lstm_flops_per_token(c),
            "6*(sum_l 4H*(in_l + H) + V*H) per token",
        ),
    };
    let mut tr = crate::train::lm::trainer(
        Net::init(&config, 1),
        batch,
        seq,
        0.01,
        precision,
        device,
        None,
    )?;
    let mut rng = Rng::new(7);
    let v = config.vocab_size() as u64;
    let (mut ids, mut tg) = (vec![0u32; batch * seq], vec![0u32; batch * seq]);
    let mut times = Vec::new();
    for s in 0..warmup + steps {
        ids.iter_mut().for_each(|x| *x = rng.below(v) as u32);
        tg.iter_mut().for_each(|x| *x = rng.below(v) as u32);
        let t0 = Instant::now();
        let key = StepKey::Whole(derive(3, s as u64));
        tr.train_step(&ids, &tg, seq, &[], 1e-4, 1.0, key, s as u64)?;
        if s >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let step_ms = StepMs::of(&mut times);
    let med = step_ms.median / 1e3;
    let tokens = (batch * seq) as f64;
    let gflops = flops_tok * tokens / med / 1e9;
    Ok(TrainBench {
        config: label,
        batch,
        seq,
        threads,
        params: config.params(),
        tokens_per_s: tokens / med,
        step_ms,
        gflops,
        mfu: if peak > 0.0 { gflops / peak } else { 0.0 },
        device: tr.describe(),
        peak_rss_mib: peak_rss_mib(),
        flops_formula: formula,
        peak_gflops: peak,
    })
}

/// Training FLOPs per token of the LSTM: 6 × the weights in products, `Σ_l 4H·(in_l + H) + V·H`.
pub fn lstm_flops_per_token(c: &crate::model::lstm::LstmConfig) -> f64 {
    let (e, h, v) = (c.n_embd as f64, c.hidden_size as f64, c.vocab_size as f64);
    let layers: f64 = (0..c.num_layers).map(|l| 4.0 * h * (if l == 0 { e } else { h } + h)).sum();
    6.0 * (layers + v * h)
}

#[derive(Clone, Debug, Serialize)]
pub struct FinetuneBench {
    pub config: String,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    /// Fine-tuning examples per second (median step): [`Trainer::step`] with a two-class head,
    /// λ = 0.5 LM loss, joint clipping, AdamW: the step `gpt1 finetune` takes.
    pub train_examples_per_s: f64,
    pub train_step_ms: StepMs,
    /// Evaluation examples per second (median): forward on the extract rows and head.
    pub eval_examples_per_s: f64,
    pub peak_rss_mib: f64,
}

/// The fine-tuning step of `gpt1 finetune` on random sequences of `seq` tokens (extract token
/// last), `batch` examples per step.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    name: &str,
    config: Config,
    batch: usize,
    seq: usize,
    steps: usize,
    warmup: usize,
    precision: Precision,
    device: crate::backend::Device,
) -> Result<FinetuneBench> {
    match device {
        crate::backend::Device::Cpu => {
            finetune_on(name, config, batch, seq, steps, warmup, Cpu::new(precision))
        }
        dev => {
            let gpu = dev.cuda(precision)?;
            let bf16 = crate::model::bf16_bytes(&config, precision, batch, seq, true);
            let need = 16 * crate::model::params::num_params(&config) as u64
                + (crate::model::activation_bytes(&config, batch, seq, true, true) + bf16) as u64;
            crate::backend::check_fits(&gpu, need, "bench finetune (lower --batch or --seq)")?;
            finetune_on(name, config, batch, seq, steps, warmup, gpu)
        }
    }
}

fn finetune_on<B: crate::backend::Backend>(
    name: &str,
    config: Config,
    batch: usize,
    seq: usize,
    steps: usize,
    warmup: usize,
    backend: B,
) -> Result<FinetuneBench> {
    use crate::tasks::batch::next_token_targets;
    use crate::tasks::head::extract_rows;
    use crate::tasks::{Head, HeadKind, Item, Target};
    use crate::train::trainer::TaskObjective;
    let threads = rayon::current_num_threads();
    let head = Head::new(HeadKind::Classify, config.n_embd, 2, 1);
    let task = TaskObjective::new(head, 0.5, 0.1, 0.01);
    let model = Gpt::init(config.clone(), 1).to_backend(backend);
    let mut tr = Trainer::on(model, batch, seq, 0.01).with_task(task);
    let mut rng = Rng::new(11);
    let v = config.vocab_size as u64;
    let items: Vec<Item> = (0..batch)
        .map(|i| Item { features: vec![vec![i * seq + seq - 1]], target: Target::Class(i % 2) })
        .collect();
    let mut times = Vec::new();
    for s in 0..warmup + steps {
        let ids: Vec<u32> = (0..batch * seq).map(|_| rng.below(v) as u32).collect();
        let lm = next_token_targets(&ids, &vec![seq; batch], seq);
        let t0 = Instant::now();
        let key = StepKey::Whole(derive(5, s as u64));
        tr.step(&ids, &lm, seq, &items, 6.25e-5, 1.0, key, s as u64)?;
        if s >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let step_ms = StepMs::of(&mut times);
    let med = step_ms.median / 1e3;
    let mut eval_times = Vec::new();
    let (model, head, _) = tr.parts();
    let head = head.expect("head");
    let mut eacts = model.activations(batch, seq, false);
    let _pinned = model.pin();
    for _ in 0..warmup + steps {
        let ids: Vec<u32> = (0..batch * seq).map(|_| rng.below(v) as u32).collect();
        let t0 = Instant::now();
        let (rows, ritems) = extract_rows(&items);
        let hidden = model.forward_rows(&mut eacts, &ids, &rows);
        std::hint::black_box(head.forward(&hidden, &ritems));
        eval_times.push(t0.elapsed().as_secs_f64());
    }
    let eval_med = median(&mut eval_times[warmup..].to_vec());
    Ok(FinetuneBench {
        config: name.to_string(),
        batch,
        seq,
        threads,
        train_examples_per_s: batch as f64 / med,
        train_step_ms: step_ms,
        eval_examples_per_s: batch as f64 / eval_med,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The read bandwidth of this machine's pool, GB/s: 512 MB summed by every thread, four
/// streams of 32 independent lanes each ([`sum_lanes`]: the loads, not the adds' latency, are
/// the limit); the median of `runs` after one untimed pass. `bench kernels` reports it.
pub fn measure_read_gbs(runs: usize) -> f64 {
    let big: Vec<f32> = (0..128usize << 20).map(|i| (i & 0xff) as f32).collect();
    let mut sink = sum_lanes(&big);
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t0 = Instant::now();
            sink += sum_lanes(&big);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    std::hint::black_box(sink);
    (big.len() * 4) as f64 / median(&mut times) / 1e9
}

/// `x` summed by the pool's threads in chunks of 256 KB, each read as four streams of 32
/// independent lanes in lockstep: a read of every byte at the memory's pace (the kernel lab's
/// probes read with it too). One stream per core read an AMX Xeon's memory at 15–20 GB/s on 2
/// cores, four at 24–29; the decode kernels, which stream four rows of weights at once, had
/// outrun the one-stream read (a `bandwidth_fraction` of 1.2–1.4).
pub fn sum_lanes(x: &[f32]) -> f32 {
    use rayon::prelude::*;
    x.par_chunks(1 << 16)
        .map(|c| {
            let q = c.len() / 4 / 32 * 32;
            let mut acc = [[0.0f32; 32]; 4];
            for i in (0..q).step_by(32) {
                for (s, lanes) in acc.iter_mut().enumerate() {
                    for (l, x) in lanes.iter_mut().zip(&c[s * q + i..s * q + i + 32]) {
                        *l += x;
                    }
                }
            }
            acc.iter().flatten().sum::<f32>() + c[4 * q..].iter().sum::<f32>()
        })
        .sum::<f32>()
}

/// The read rate of `x`, GB/s, as [`measure_read_gbs`] reads: one untimed pass of
/// [`sum_lanes`], then passes timed together to at least 512 MB (a model smaller than that is
/// read from wherever its decoding reads it, caches included).
fn read_gbs_of(x: &[f32]) -> f64 {
    let passes = (512usize << 20).div_ceil(std::mem::size_of_val(x).max(1));
    let mut sink = sum_lanes(x);
    let t0 = Instant::now();
    for _ in 0..passes {
        sink += sum_lanes(x);
    }
    std::hint::black_box(sink);
    (passes * std::mem::size_of_val(x)) as f64 / t0.elapsed().as_secs_f64() / 1e9
}

#[derive(Clone, Debug, Serialize)]
pub struct GenerateBench {
    pub config: String,
    pub prompt_len: usize,
    pub new: usize,
    /// Samples decoded together (`generate --num`): each decode step reads the weights once
    /// for all of them.
    pub num: usize,
    pub threads: usize,
    /// New tokens of every sample over the whole call's wall time, prefill included (median of
    /// the rounds).
    pub tokens_per_s: f64,
    pub prefill_ms: f64,
    /// One decode step: a new token for each of the `num` samples.
    pub decode_ms_per_token: f64,
    /// Weight bytes read per decode step: every parameter once, 4 bytes each, or 2 where bf16
    /// decoding reads the weights' kept bf16 packing.
    pub weight_bytes_per_token: f64,
    /// The pool's read bandwidth: the model's fp32 weights read by the pool's threads right
    /// after each timed round, four streams of 32 lanes per chunk (the median of the rounds); from the caches
    /// where the model fits in them, as its decoding reads it.
    pub bandwidth_gbs: f64,
    /// weight_bytes_per_token × decode tokens/s ÷ the read bandwidth measured right after the
    /// same round (the median of the rounds): how close decoding is to the memory-bandwidth
    /// limit. Each round against its own read, as the bandwidth of a shared machine moves from
    /// minute to minute.
    pub bandwidth_fraction: f64,
    /// Whether the timed decode steps ran on a spinning team of the pool's threads (the CPU's
    /// `kernels::parallel::with_team`; docs/decoding.md), not rayon's sleeping workers.
    pub decode_team: bool,
    pub peak_rss_mib: f64,
}

/// Greedy generation of `new` tokens after a random prompt of `prompt_len` (batch 1, random
/// weights, no stop): one untimed round, then `rounds` timed ones.
pub fn generate(
    name: &str,
    config: Config,
    shape: GenerateShape,
    precision: Precision,
    device: crate::backend::Device,
) -> Result<GenerateBench> {
    let model = Gpt::init(config.clone(), 1);
    Ok(match device {
        crate::backend::Device::Cpu => {
            let mut model = model;
            model.backend = Cpu::new(precision);
            // bf16 decoding reads the matrices' kept bf16 packing (pinned weights): 2 bytes each,
            // where a bf16 product keeps one (not the emulation's).
            let kept = precision == Precision::Bf16
                && crate::kernels::gemm::best_version() != crate::kernels::gemm::Version::Emulated;
            let bytes_per_weight = if kept { 2.0 } else { 4.0 };
            generate_on(name, &model, shape, Some((bytes_per_weight, &model.params[..])))?
        }
        dev => {
            let gpu = dev.cuda(precision)?;
            let t = shape.prompt_len.saturating_add(shape.new);
            let need = crate::model::decoding_bytes(&config, precision, shape.num, t);
            crate::backend::check_fits(&gpu, need, "bench generate")?;
            generate_on(name, &model.to_backend(gpu), shape, None)?
        }
    })
}

/// What [`generate`] measures: a random prompt of `prompt_len` tokens, `new` tokens greedily
/// for each of `num` samples, `rounds` timed rounds after one untimed.
#[derive(Clone, Copy, Debug)]
pub struct GenerateShape {
    pub prompt_len: usize,
    pub new: usize,
    pub num: usize,
    pub rounds: usize,
}

/// [`generate`] on `model`'s backend; `host`: the bytes a decode step reads per weight from
/// the host's memory (the CPU) and the model's weights there, whose read rate after each round
/// relates decoding to the memory's bandwidth; `None` reports 0.
fn generate_on<B: crate::backend::Backend>(
    name: &str,
    model: &Gpt<B>,
    shape: GenerateShape,
    host: Option<(f64, &[f32])>,
) -> Result<GenerateBench> {
    let GenerateShape { prompt_len, new, num, rounds } = shape;
    use crate::generate::{GenerateOptions, Sampling};
    let threads = rayon::current_num_threads();
    let config = model.config.clone();
    let mut rng = Rng::new(17);
    let prompt: Vec<u32> =
        (0..prompt_len).map(|_| rng.below(config.vocab_size as u64) as u32).collect();
    let opts =
        GenerateOptions { max_new: new, sampling: Sampling::GREEDY, seed: 0, num, logprobs: None };
    let (mut total, mut prefill, mut decode) = (Vec::new(), Vec::new(), Vec::new());
    let bytes = host.map_or(4.0, |h| h.0) * num_params(&config) as f64;
    let (mut bws, mut fractions) = (Vec::new(), Vec::new());
    // Pinned across the rounds, as a served model is: the untimed first round makes what the
    // backend keeps of the weights (the bf16 packing), the timed ones reuse it.
    let _pinned = model.pin();
    let mut teams = 0;
    for r in 0..rounds + 1 {
        if r == 1 {
            teams = crate::kernels::teams_started();
        }
        let t0 = Instant::now();
        let (g, t) = crate::generate::generate(model, &prompt, &opts, |_, _| false)?;
        let secs = t0.elapsed().as_secs_f64();
        if r > 0 {
            total.push(g.iter().map(|s| s.ids.len()).sum::<usize>() as f64 / secs);
            prefill.push(t.prefill_s * 1e3);
            let ms = t.decode_s * 1e3 / t.decode_steps.max(1) as f64;
            decode.push(ms);
            if let Some((_, weights)) = host {
                let bw = read_gbs_of(weights);
                bws.push(bw);
                fractions.push(bytes * (1e3 / ms) / (bw * 1e9));
            }
        }
    }
    let decode_team = crate::kernels::teams_started() > teams;
    let decode_ms = median(&mut decode);
    let peak_rss_mib = peak_rss_mib();
    let (bw, fraction) =
        if host.is_some() { (median(&mut bws), median(&mut fractions)) } else { (0.0, 0.0) };
    Ok(GenerateBench {
        config: name.to_string(),
        prompt_len,
        new,
        num,
        threads,
        tokens_per_s: median(&mut total),
        prefill_ms: median(&mut prefill),
        decode_ms_per_token: decode_ms,
        weight_bytes_per_token: bytes,
        bandwidth_gbs: bw,
        bandwidth_fraction: fraction,
        decode_team,
        peak_rss_mib,
    })
}
