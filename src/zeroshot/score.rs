//! The one scoring primitive of the zero-shot heuristics: the log-probabilities of a
//! continuation's tokens given a context, for many (context, continuation) pairs, batched.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE;
use crate::model::LanguageModel;

/// Token ids of a context and of the continuation to score after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// One pair's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// `logprobs[j]` = log p(continuation[j] | context, continuation[..j]) (full softmax).
    pub logprobs: Vec<f32>,
    /// The context was cut from the left to fit the model's context.
    pub truncated: bool,
    /// The continuation alone was longer than the model's context: only its first
    /// `n_positions` tokens were scored (after the context's last token).
    pub cut: bool,
}

impl Scored {
    /// The sum of the continuation's token log-probabilities (the chain rule).
    pub fn sum(&self) -> f64 {
        self.logprobs.iter().map(|&x| x as f64).sum()
    }
    /// Their mean.
    pub fn mean(&self) -> f64 {
        self.sum() / self.logprobs.len().max(1) as f64
    }
}

/// The log-probabilities of each pair's continuation tokens given its context.
///
/// A pair becomes one row `context ++ continuation` of `L` tokens; the model reads
/// `row[..L - 1]` and the targets are `row[1..]`, [`IGNORE`] outside the continuation. The model
/// reads at most `n_positions` tokens, so a longer context is cut from the **left** (the
/// continuation is never cut, unless it alone exceeds the context: then its first `n_positions`
/// tokens are scored after the context's last token, `cut`). Rows are sorted by length
/// (longest first) and go `batch` at a time, right-padded to the longest of their batch.
/// `on_done(k)` is called after each forward pass with the `k` pairs it scored. With `comm`,
/// its ranks share the batches (`on_done` sees this rank's) and every rank returns every pair's
/// log-probs, those of one process.
///
/// Fails on an empty context or continuation (the first continuation token needs a token
/// before it), a token id outside the vocabulary, or `batch` 0.
pub fn continuation_logprobs<B: Backend, M: LanguageModel<B>>(
    model: &M,
    pairs: &[Pair],
    batch: usize,
    comm: Option<&dyn crate::dist::Collective>,
    mut on_done: impl FnMut(usize),
) -> Result<Vec<Scored>> {
    if batch == 0 {
        return Err(Error::setting("batch", "must be at least 1"));
    }
    let (ctx, v) = (model.n_positions(), model.vocab_size());
    // (row, index in the row of the first continuation token, truncated, cut)
    let mut rows: Vec<(Vec<u32>, usize, bool, bool)> = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        if p.context.is_empty() || p.continuation.is_empty() {
            return Err(Error::setting(
                "pairs",
                format!("pair {i}: the context and the continuation need at least one token each"),
            ));
        }
        if let Some(bad) = p.context.iter().chain(&p.continuation).find(|&&t| t as usize >= v) {
            return Err(Error::Vocab(format!(
                "pair {i}: token id {bad} is not below vocab_size {v}"
            )));
        }
        let cut = p.continuation.len() > ctx;
        let cont = &p.continuation[..p.continuation.len().min(ctx)];
        let keep = p.context.len().min(ctx + 1 - cont.len());
        let truncated = keep < p.context.len();
        let mut row = p.context[p.context.len() - keep..].to_vec();
        row.extend_from_slice(cont);
        rows.push((row, keep, truncated, cut));
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(rows[i].0.len()));
    // Every pair's continuation log-probs, laid end to end (pair i's at `start[i]`).
    let mut start = vec![0usize; rows.len() + 1];
    for (i, (row, first, _, _)) in rows.iter().enumerate() {
        start[i + 1] = start[i] + row.len() - first;
    }
    let mut all = vec![0.0f32; start[rows.len()]];
    let Some(&longest) = order.first() else { return Ok(Vec::new()) };
    // Fitted to the first (longest) batch, then reshaped for the shorter ones.
    let mut s = model.scratch();
    model.fit(&mut s, batch.min(rows.len()), rows[longest].0.len() - 1);
    let _pinned = model.pin_weights();
    let chunks: Vec<&[usize]> = order.chunks(batch).collect();
    crate::dist::shared_batches(chunks.len(), comm, &mut all, |n, all| {
        let chunk = chunks[n];
        let (b, t) = (chunk.len(), rows[chunk[0]].0.len() - 1);
        model.fit(&mut s, b, t);
        let mut ids = vec![0u32; b * t];
        let mut tg = vec![IGNORE; b * t];
        for (k, &i) in chunk.iter().enumerate() {
            let (row, first, _, _) = &rows[i];
            let l = row.len();
            ids[k * t..k * t + l - 1].copy_from_slice(&row[..l - 1]);
            // Input position p predicts row[p + 1]; the continuation starts at row[first].
            tg[k * t + first - 1..k * t + l - 1].copy_from_slice(&row[*first..]);
        }
        let mut lp = vec![0.0f32; b * t];
        model.next_logprobs(&mut s, &ids, &tg, &mut lp)?;
        for (k, &i) in chunk.iter().enumerate() {
            let (row, first, _, _) = &rows[i];
            all[start[i]..start[i + 1]]
                .copy_from_slice(&lp[k * t + first - 1..k * t + row.len() - 1]);
        }
        on_done(b);
        Ok(())
    })?;
    let scored = rows.iter().enumerate().map(|(i, (_, _, truncated, cut))| Scored {
        logprobs: all[start[i]..start[i + 1]].to_vec(),
        truncated: *truncated,
        cut: *cut,
    });
    Ok(scored.collect())
}
