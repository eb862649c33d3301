//! Text generation with a key/value cache: the prompt goes through the blocks once (prefill),
//! then each new token costs one row through every block ([`Gpt::cached_logits`]). Samples of a
//! batch decode together; each stops on its own (new-token limit, a stop string, the context).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::kernels::rng::{self, derive, stream};
use crate::model::{Config, Gpt};
use std::time::Instant;

/// How the next token is chosen from the logits (transformers' order: repetition penalty, then
/// temperature, top-k, top-p).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (argmax, the first of equal maxima as `torch.argmax`).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = all).
    pub top_p: f32,
    /// transformers' `repetition_penalty`: a logit of a token already in the sequence is divided
    /// by it when positive, multiplied when negative (1 = off).
    pub repetition_penalty: f32,
}

impl Sampling {
    pub const GREEDY: Sampling =
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };

    fn check(&self) -> Result<()> {
        let bad = |s: &'static str, m: &str| Err(Error::setting(s, m.to_string()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", "must be a finite number >= 0 (0: greedy)");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "must be in (0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty", "must be a finite number > 0 (1: off)");
        }
        Ok(())
    }

    /// The next token from one row of logits, given the sequence so far; `u` is a uniform draw
    /// in [0, 1) (unused when greedy).
    pub fn pick(&self, logits: &mut [f32], seen: &[u32], u: f64) -> u32 {
        if self.repetition_penalty != 1.0 {
            // Once per distinct token of the sequence (at most the context, not the vocabulary).
            let mut ids = seen.to_vec();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / self.repetition_penalty
                    } else {
                        *l * self.repetition_penalty
                    };
                }
            }
        }
        if self.temperature == 0.0 {
            return argmax(logits) as u32;
        }
        // In f64: a small temperature must not overflow the scaled logits to infinity.
        let mut cand: Vec<(usize, f64)> =
            logits.iter().map(|&l| l as f64 / self.temperature as f64).enumerate().collect();
        // Most likely first; ties by id, so the order (and the draw) is deterministic.
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.top_k > 0 && self.top_k < cand.len() {
            // As transformers: every token scoring at least the k-th stays (ties included).
            let kth = cand[self.top_k - 1].1;
            let keep = cand.iter().take_while(|c| c.1 >= kth).count();
            cand.truncate(keep);
        }
        let mx = cand[0].1;
        let mut p: Vec<f64> = cand.iter().map(|&(_, l)| (l - mx).exp()).collect();
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
        if self.top_p < 1.0 {
            let (mut cum, mut keep) = (0.0, 0);
            while keep < p.len() && (keep == 0 || cum < self.top_p as f64) {
                cum += p[keep];
                keep += 1;
            }
            p.truncate(keep);
            cand.truncate(keep);
            let total: f64 = p.iter().sum();
            p.iter_mut().for_each(|x| *x /= total);
        }
        let mut acc = 0.0;
        for (i, &pi) in p.iter().enumerate() {
            acc += pi;
            if u < acc {
                return cand[i].0 as u32;
            }
        }
        cand[cand.len() - 1].0 as u32
    }
}

/// The uniform draw in [0, 1) of sample `i`'s step `step` under `seed`: a function of the three
/// alone, so a sample is the same whatever else is decoded beside it.
pub fn draw(seed: u64, i: usize, step: usize) -> f64 {
    let bits = rng::bits(derive(derive(seed, stream::SAMPLE), i as u64), step as u64);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The log-softmax of one row of logits as the fused LM head computes it (the maximum, then
/// e^(x − max) summed in f64 lanes), so a log-prob read here equals `gpt1 score`'s.
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax {
    max: f32,
    ln_sum: f64,
}

impl LogSoftmax {
    pub fn of(row: &[f32]) -> Self {
        let max = crate::kernels::fastmath::max(row);
        Self { max, ln_sum: crate::kernels::fastmath::exp_sum_wide(row, max).ln() }
    }
    /// log p of a token whose logit is `x`.
    pub fn at(&self, x: f32) -> f32 {
        ((x - self.max) as f64 - self.ln_sum) as f32
    }
}

/// The log-softmax of one row of logits ([`LogSoftmax`]).
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let l = LogSoftmax::of(row);
    row.iter().map(|&x| l.at(x)).collect()
}

/// The `k` largest entries of `row` as `(id, value)`, largest first, ties by id: one pass with
/// a sorted list of k (k is small: a server's alternatives).
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(row.len());
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &x) in row.iter().enumerate() {
        // Not above the k-th (or NaN): skip.
        if best.len() == k && x.partial_cmp(&best[k - 1].1) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        // After the equal values already kept: those have smaller ids.
        let at = best.partition_point(|&(_, y)| y >= x);
        best.insert(at, (i as u32, x));
        best.truncate(k);
    }
    best
}

/// `text` cut before the first of `stops` it contains, and whether one was found.
pub fn cut_at_stop(text: &str, stops: &[String]) -> (String, bool) {
    match stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        Some(i) => (text[..i].to_string(), true),
        None => (text.to_string(), false),
    }
}

/// The length of the longest tail of `text` that begins one of `stops`: text a stream must
/// hold back, since a stop string may still complete there.
pub fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).filter(|&l| s.is_char_boundary(l) && text.ends_with(&s[..l])))
        .max()
        .unwrap_or(0)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0
}

/// Why a sample stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_new` tokens were generated.
    MaxNew,
    /// The continuation's text contains a stop string (the callback said so).
    StopString,
    /// The model's context (n_positions) is full.
    Context,
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new: usize,
    pub sampling: Sampling,
    pub seed: u64,
    /// Samples decoded together from the same prompt.
    pub num: usize,
    /// Also report each new token's log-probability and the `k` most likely alternatives
    /// (`Some(0)`: the token's alone), under the model's distribution before sampling's changes.
    pub logprobs: Option<usize>,
}

impl GenerateOptions {
    /// Every check [`generate`] makes of these options and `prompt` against `config`, so a
    /// caller can refuse a bad command before it prints or allocates anything.
    pub fn check(&self, config: &Config, prompt: &[u32]) -> Result<()> {
        self.sampling.check()?;
        if prompt.is_empty() {
            return Err(Error::setting("prompt", "is empty: give at least one token"));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= config.vocab_size) {
            return Err(Error::Vocab(format!(
                "prompt token {bad} is not below vocab_size {}",
                config.vocab_size
            )));
        }
        if prompt.len() >= config.n_positions {
            return Err(Error::setting(
                "prompt",
                format!(
                    "has {} tokens; the model's context is {}: shorten it",
                    prompt.len(),
                    config.n_positions
                ),
            ));
        }
        if self.num == 0 || self.num > crate::kernels::crossentropy::CHUNK {
            return Err(Error::setting("num", "must be between 1 and 512"));
        }
        Ok(())
    }
}

/// One sample: the generated ids (prompt excluded) and why it stopped.
#[derive(Clone, Debug)]
pub struct Generated {
    pub ids: Vec<u32>,
    pub stop: StopReason,
    /// With [`GenerateOptions::logprobs`]: log p(ids[i] | everything before), one per id.
    pub logprobs: Vec<f32>,
    /// With [`GenerateOptions::logprobs`] `Some(k)`: the k most likely tokens at each step.
    pub top: Vec<Vec<(u32, f32)>>,
}

/// Timings of a [`generate`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// The prompt through every block, and the first token's logits.
    pub prefill_s: f64,
    /// Every later decode step together.
    pub decode_s: f64,
    /// Decode steps taken (one new token per unfinished sample each).
    pub decode_steps: usize,
}

/// Continues `prompt` `opts.num` times. After each new token of sample `i`, `on_token(i, ids)`
/// sees that sample's generated ids so far and returns `true` to stop it (a stop string).
/// Sample `i`'s draws are a function of (seed, i, step) only, so it is the same for any `num`.
pub fn generate<B: Backend>(
    model: &Gpt<B>,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, &[u32]) -> bool,
) -> Result<(Vec<Generated>, Timing)> {
    let c = &model.config;
    opts.check(c, prompt)?;
    let (n, p) = (opts.num, prompt.len());
    let t = p.saturating_add(opts.max_new).min(c.n_positions);
    let mut acts = model.decode_activations(n, t);
    let _pinned = model.pin();
    let draw = |i: usize, step: usize| draw(opts.seed, i, step);
    let mut out: Vec<Generated> = (0..n)
        .map(|_| Generated {
            ids: Vec::new(),
            stop: StopReason::MaxNew,
            logprobs: Vec::new(),
            top: Vec::new(),
        })
        .collect();
    let mut seen: Vec<Vec<u32>> = vec![prompt.to_vec(); n];
    let mut timing = Timing::default();
    if opts.max_new == 0 {
        return Ok((out, timing));
    }
    // Prefill: every prompt position of every sample, the last one's logits.
    let t0 = Instant::now();
    let rows: Vec<usize> = (0..n).flat_map(|s| (0..p).map(move |j| s * t + j)).collect();
    let ids: Vec<u32> = (0..n).flat_map(|_| prompt.iter().copied()).collect();
    let pick: Vec<usize> = (0..n).map(|s| s * p + p - 1).collect();
    let mut logits = model.cached_logits(&mut acts, &ids, &rows, &pick);
    timing.prefill_s = t0.elapsed().as_secs_f64();
    let v = c.vocab_size;
    let mut live: Vec<usize> = (0..n).collect();
    let t1 = Instant::now();
    for step in 0.. {
        let mut next_live = Vec::with_capacity(live.len());
        for (k, &s) in live.iter().enumerate() {
            let row = &mut logits[k * v..(k + 1) * v];
            // Before `pick` changes the row (the repetition penalty does).
            let dist = opts.logprobs.map(|k| {
                let l = LogSoftmax::of(row);
                let top: Vec<(u32, f32)> =
                    top_k(row, k).into_iter().map(|(i, x)| (i, l.at(x))).collect();
                let raw = (opts.sampling.repetition_penalty != 1.0).then(|| row.to_vec());
                (l, top, raw)
            });
            let tok = opts.sampling.pick(row, &seen[s], draw(s, step));
            if let Some((l, top, raw)) = dist {
                let x = raw.as_ref().map_or(row[tok as usize], |r| r[tok as usize]);
                out[s].logprobs.push(l.at(x));
                out[s].top.push(top);
            }
            seen[s].push(tok);
            out[s].ids.push(tok);
            if on_token(s, &out[s].ids) {
                out[s].stop = StopReason::StopString;
            } else if out[s].ids.len() >= opts.max_new {
                out[s].stop = StopReason::MaxNew;
            } else if p + out[s].ids.len() >= c.n_positions {
                out[s].stop = StopReason::Context;
            } else {
                next_live.push(s);
            }
        }
        live = next_live;
        if live.is_empty() {
            break;
        }
        // One row per unfinished sample: its newest token at its position.
        let rows: Vec<usize> = live.iter().map(|&s| s * t + p + out[s].ids.len() - 1).collect();
        let ids: Vec<u32> = live.iter().map(|&s| *out[s].ids.last().expect("a token")).collect();
        let pick: Vec<usize> = (0..live.len()).collect();
        logits = model.cached_logits(&mut acts, &ids, &rows, &pick);
        timing.decode_steps += 1;
    }
    timing.decode_s = t1.elapsed().as_secs_f64();
    Ok((out, timing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_ties_at_the_kth_score_and_greedy_takes_the_first_maximum() {
        let s = Sampling { temperature: 1.0, top_k: 2, top_p: 1.0, repetition_penalty: 1.0 };
        // Scores 3, 2, 2, 1: top-2 keeps both 2s (transformers' rule), never the 1.
        let mut seen = [0u32; 4];
        for i in 0..400 {
            let mut l = [2.0f32, 3.0, 2.0, 1.0];
            seen[s.pick(&mut l, &[], (i as f64 + 0.5) / 400.0) as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0 && seen[2] > 0 && seen[3] == 0, "{seen:?}");
        let mut l = [1.0f32, 5.0, 5.0];
        assert_eq!(Sampling::GREEDY.pick(&mut l, &[], 0.0), 1);
        // The repetition penalty divides a positive logit of a seen token.
        let r = Sampling { repetition_penalty: 10.0, ..Sampling::GREEDY };
        let mut l = [1.0f32, 5.0, 4.0];
        assert_eq!(r.pick(&mut l, &[1], 0.0), 2);
    }
}
