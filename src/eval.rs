//! Scoring token sequences: per-token log-probabilities and perplexity.

use crate::backend::Backend;
use crate::data::TokenData;
use crate::dist::Collective;
use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE;
use crate::model::LanguageModel;
use serde::Serialize;
use std::ops::Range;

#[derive(Clone, Debug, Serialize)]
pub struct RowScore {
    pub mean_nll: f64,
    /// `token_logprobs[j]` = log p(row[j + 1] | row[..=j]).
    pub token_logprobs: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Score {
    pub mean_nll: f64,
    pub perplexity: f64,
    pub tokens: usize,
    pub rows: Vec<RowScore>,
}

/// The rows of a token file: each row of a 2-D array; a 1-D stream as one row, or as
/// consecutive windows of `n_positions + 1` tokens (overlapping by one) when longer.
pub fn rows_of(data: &TokenData, n_positions: usize) -> Result<Vec<Vec<u32>>> {
    let all: Vec<u32> = (0..data.len()).map(|i| data.get(i)).collect();
    let rows: Vec<Vec<u32>> = match data.rows {
        Some((_, l)) => {
            if l < 2 {
                return Err(Error::invalid(&data.path, "rows need at least 2 tokens to score"));
            }
            if l - 1 > n_positions {
                return Err(Error::invalid(
                    &data.path,
                    format!(
                        "rows of {l} tokens exceed the model's context of {n_positions} + 1; split them"
                    ),
                ));
            }
            all.chunks(l).map(|c| c.to_vec()).collect()
        }
        None => {
            if all.len() < 2 {
                return Err(Error::invalid(&data.path, "need at least 2 tokens to score"));
            }
            let mut rows = Vec::new();
            let mut s = 0;
            while s + 1 < all.len() {
                let e = (s + n_positions + 1).min(all.len());
                rows.push(all[s..e].to_vec());
                s = e - 1;
            }
            rows
        }
    };
    Ok(rows)
}

/// Scores every row (rows of equal length are batched `batch` at a time), with a model of
/// either architecture. With `comm`, its ranks share the batches (rank `r` scores batches
/// `r, r + N, …`) and every rank returns every row's scores, those of one process.
pub fn score<B: Backend, M: LanguageModel<B>>(
    model: &M,
    rows: &[Vec<u32>],
    batch: usize,
    comm: Option<&dyn Collective>,
) -> Result<Score> {
    let _pinned = model.pin_weights();
    // One set of buffers, fitted to each batch (made anew only for a batch that does not fit):
    // no allocation per batch (on a GPU a device allocation, on the CPU fresh pages).
    let mut s = model.scratch();
    score_with(rows, batch, model.vocab_size(), comm, |ids, tg, b, t, lp| {
        model.fit(&mut s, b, t);
        model.next_logprobs(&mut s, ids, tg, lp)
    })
}

/// Scores `rows` in batches of equal length with `run(ids, targets, b, t, logprobs)`; with
/// `comm`, rank `r` runs batches `r, r + N, …` and the log-probs are summed across ranks (each
/// row is scored by one rank, the others add zeros: exact).
fn score_with(
    rows: &[Vec<u32>],
    batch: usize,
    v: usize,
    comm: Option<&dyn Collective>,
    mut run: impl FnMut(&[u32], &[u32], usize, usize, &mut [f32]) -> Result<()>,
) -> Result<Score> {
    for (i, r) in rows.iter().enumerate() {
        if let Some(bad) = r.iter().find(|&&t| t as usize >= v) {
            return Err(Error::Vocab(format!(
                "row {i}: token id {bad} is not below vocab_size {v}"
            )));
        }
    }
    // Every row's log-probs, laid end to end (row i's `len - 1` values at `start[i]`).
    let mut start = vec![0usize; rows.len() + 1];
    for (i, r) in rows.iter().enumerate() {
        start[i + 1] = start[i] + r.len().saturating_sub(1);
    }
    let mut all = vec![0.0f32; start[rows.len()]];
    let batches = equal_runs(rows.len(), batch, |i| rows[i].len());
    crate::dist::shared_batches(batches.len(), comm, &mut all, |k, all| {
        let (i, j) = (batches[k].start, batches[k].end);
        let (b, t) = (j - i, rows[i].len() - 1);
        let ids: Vec<u32> = rows[i..j].iter().flat_map(|r| r[..t].iter().copied()).collect();
        let tg: Vec<u32> = rows[i..j].iter().flat_map(|r| r[1..].iter().copied()).collect();
        // Rows i..j are contiguous in `all`, each t values long.
        run(&ids, &tg, b, t, &mut all[start[i]..start[j]])
    })?;
    let rows: Vec<RowScore> = (0..rows.len())
        .map(|i| {
            let c = &all[start[i]..start[i + 1]];
            let mean_nll = -c.iter().map(|&x| x as f64).sum::<f64>() / c.len() as f64;
            RowScore { mean_nll, token_logprobs: c.to_vec() }
        })
        .collect();
    let tokens: usize = rows.iter().map(|r| r.token_logprobs.len()).sum();
    let total: f64 = rows.iter().flat_map(|r| r.token_logprobs.iter()).map(|&x| -(x as f64)).sum();
    let mean_nll = total / tokens.max(1) as f64;
    Ok(Score { mean_nll, perplexity: mean_nll.exp(), tokens, rows })
}

/// The batches of `n` items in order: runs of up to `batch` consecutive items of equal
/// `len(i)` (a batch is one forward pass of one length).
fn equal_runs(n: usize, batch: usize, len: impl Fn(usize) -> usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && j - i < batch.max(1) && len(j) == len(i) {
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// The windows of a stream of `n` tokens for [`perplexity`], each `(start, len, first)`: the
/// window `ids[start..start + len]` (at most `context + 1` tokens) scores its tokens from index
/// `first` (≥ 1) on, each token of the stream after the first exactly once.
pub fn windows(n: usize, context: usize, stride: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let (mut begin, mut prev_end) = (0usize, 0usize);
    // A window of `len` tokens predicts `len - 1` targets: tokens begin+1 ..= begin+len-1.
    while prev_end + 1 < n {
        let len = (n - begin).min(context + 1);
        let end = begin + len - 1; // the last token it scores
        // Tokens after prev_end (token 0 is never scored: it has no history); begin <= prev_end
        // since stride <= context.
        out.push((begin, len, prev_end + 1 - begin));
        prev_end = end;
        if begin + len >= n {
            break;
        }
        begin += stride;
    }
    out
}

/// Negative log-likelihood sum and count of every token of `ids` after the first, each scored
/// once with sliding windows of the model's context moved by `stride` (so every token after the
/// first window has at least `n_positions - stride` tokens of history); windows of equal length
/// go `batch` at a time. `on_window` is called after each batch with the windows done. With
/// `comm`, its ranks share the batches (`on_window` sees this rank's); each batch's sums are
/// gathered and added in order, so every rank returns one process's result, bitwise.
pub fn perplexity<B: Backend, M: LanguageModel<B>>(
    model: &M,
    ids: &[u32],
    stride: usize,
    batch: usize,
    comm: Option<&dyn Collective>,
    mut on_window: impl FnMut(usize),
) -> Result<(f64, usize)> {
    let (ctx, v) = (model.n_positions(), model.vocab_size());
    if stride == 0 || stride > ctx {
        return Err(Error::setting(
            "stride",
            format!("{stride} must be in 1..={ctx} (the context)"),
        ));
    }
    if let Some((i, bad)) = ids.iter().enumerate().find(|&(_, &t)| t as usize >= v) {
        return Err(Error::Vocab(format!("token {i}: id {bad} is not below vocab_size {v}")));
    }
    let wins = windows(ids.len(), ctx, stride);
    let _pinned = model.pin_weights();
    let mut s = model.scratch();
    let batches = equal_runs(wins.len(), batch, |i| wins[i].1);
    // Per batch of windows: the negative log-likelihood sum and the count of scored tokens.
    let mut sums = vec![0.0f64; 2 * batches.len()];
    crate::dist::shared_batches(batches.len(), comm, &mut sums, |k, sums| {
        let (i, j) = (batches[k].start, batches[k].end);
        let len = wins[i].1;
        let (b, t) = (j - i, len - 1);
        let mut inp = Vec::with_capacity(b * t);
        let mut tg = vec![IGNORE; b * t];
        for (w, &(start, _, first)) in wins[i..j].iter().enumerate() {
            inp.extend_from_slice(&ids[start..start + t]);
            for p in first..len {
                tg[w * t + p - 1] = ids[start + p];
            }
        }
        model.fit(&mut s, b, t);
        let mut lp = vec![0.0f32; b * t];
        model.next_logprobs(&mut s, &inp, &tg, &mut lp)?;
        for (l, &g) in lp.iter().zip(&tg) {
            if g != IGNORE {
                sums[2 * k] -= *l as f64;
                sums[2 * k + 1] += 1.0;
            }
        }
        on_window(j - i);
        Ok(())
    })?;
    let nll = sums.iter().step_by(2).sum();
    let count = sums.iter().skip(1).step_by(2).sum::<f64>() as usize;
    Ok((nll, count))
}

#[cfg(test)]
mod tests {
    use super::windows;

    /// One set of activations, reshaped for every batch: each row's log-probs are bitwise those
    /// of scoring it alone in freshly made activations; perplexity's batched windows (of two
    /// lengths) sum to the windows scored one at a time.
    #[test]
    fn reshaped_activations_score_as_fresh_ones() {
        use crate::model::{Activations, Config, Gpt};
        let mut c = Config::named("tiny").unwrap();
        (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) = (50, 16, 32, 2, 2);
        let m = Gpt::init(c.clone(), 3);
        let mut r = crate::kernels::rng::Rng::new(4);
        let rows: Vec<Vec<u32>> = [9, 9, 17, 5, 9, 17]
            .iter()
            .map(|&l| (0..l).map(|_| r.below(50) as u32).collect())
            .collect();
        let got = super::score(&m, &rows, 2, None).unwrap();
        for (row, s) in rows.iter().zip(&got.rows) {
            let t = row.len() - 1;
            let mut lp = vec![0.0f32; t];
            m.logprobs(&mut Activations::new(&c, 1, t, false), &row[..t], &row[1..], &mut lp);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&lp), bits(&s.token_logprobs));
        }
        let ids: Vec<u32> = (0..53).map(|_| r.below(50) as u32).collect();
        let (batched, n) = super::perplexity(&m, &ids, 5, 4, None, |_| {}).unwrap();
        let (alone, n1) = super::perplexity(&m, &ids, 5, 1, None, |_| {}).unwrap();
        assert_eq!(n, n1);
        assert!((batched - alone).abs() < 1e-9 * alone.abs(), "{batched} vs {alone}");
    }

    #[test]
    fn windows_score_every_token_once_with_enough_history() {
        for (n, ctx, stride) in
            [(1, 8, 4), (2, 8, 4), (9, 8, 4), (10, 8, 4), (37, 8, 3), (37, 8, 8), (100, 16, 1)]
        {
            let mut scored = vec![0; n];
            for (s, len, first) in windows(n, ctx, stride) {
                assert!(len <= ctx + 1 && first >= 1);
                for (p, c) in scored.iter_mut().enumerate().skip(s + first).take(len - first) {
                    *c += 1;
                    // The first window's tokens have what history there is; later ones >= ctx - stride.
                    if s > 0 {
                        assert!(p - s >= ctx - stride, "n {n} ctx {ctx} stride {stride} token {p}");
                    }
                }
            }
            let want: Vec<i32> = (0..n).map(|i| i32::from(i > 0)).collect();
            assert_eq!(scored, want, "n {n} ctx {ctx} stride {stride}");
        }
    }
}
