//! Scoring token sequences: per-token log-probabilities and perplexity.

use crate::backend::Backend;
use crate::data::TokenData;
use crate::error::{Error, Result};
use crate::model::Gpt;
use serde::Serialize;

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

/// Scores every row (rows of equal length are batched `batch` at a time).
pub fn score<B: Backend>(model: &Gpt<B>, rows: &[Vec<u32>], batch: usize) -> Result<Score> {
    let v = model.config.vocab_size;
    for (i, r) in rows.iter().enumerate() {
        if let Some(bad) = r.iter().find(|&&t| t as usize >= v) {
            return Err(Error::Vocab(format!(
                "row {i}: token id {bad} is not below vocab_size {v}"
            )));
        }
    }
    let mut out: Vec<Option<RowScore>> = vec![None; rows.len()];
    let mut i = 0;
    while i < rows.len() {
        let l = rows[i].len();
        let mut j = i;
        while j < rows.len() && j - i < batch.max(1) && rows[j].len() == l {
            j += 1;
        }
        let (b, t) = (j - i, l - 1);
        let mut acts = model.activations(b, t, false);
        let ids: Vec<u32> = rows[i..j].iter().flat_map(|r| r[..t].iter().copied()).collect();
        let tg: Vec<u32> = rows[i..j].iter().flat_map(|r| r[1..].iter().copied()).collect();
        let mut lp = vec![0.0f32; b * t];
        model.logprobs(&mut acts, &ids, &tg, &mut lp);
        for (k, c) in lp.chunks(t).enumerate() {
            let mean_nll = -c.iter().map(|&x| x as f64).sum::<f64>() / t as f64;
            out[i + k] = Some(RowScore { mean_nll, token_logprobs: c.to_vec() });
        }
        i = j;
    }
    let rows: Vec<RowScore> = out.into_iter().map(|r| r.expect("every row scored")).collect();
    let tokens: usize = rows.iter().map(|r| r.token_logprobs.len()).sum();
    let total: f64 = rows.iter().flat_map(|r| r.token_logprobs.iter()).map(|&x| -(x as f64)).sum();
    let mean_nll = total / tokens.max(1) as f64;
    Ok(Score { mean_nll, perplexity: mean_nll.exp(), tokens, rows })
}
