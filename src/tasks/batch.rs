//! Task examples as model batches: tokenized and transformed (section 3.3), right-padded,
//! bucketed by length, with the rows the head reads.

use super::{Example, Item, Specials, Target, Transformed, transform};
use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE;
use crate::kernels::rng::Rng;
use crate::text::Tokenizer;

/// An example ready for the model.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub t: Transformed,
    pub target: Target,
}

/// The special-token ids of a tokenizer.
pub fn specials(tok: &Tokenizer) -> Specials {
    let id = |n: &str| tok.special_id(n).expect("the tokenizer appends the three special tokens");
    Specials { start: id("_start_"), delim: id("_delimiter_"), extract: id("_classify_") }
}

pub fn prepare(
    tok: &Tokenizer,
    examples: &[Example],
    max_len: usize,
) -> Result<(Vec<Prepared>, usize)> {
    let sp = specials(tok);
    let mut truncated = 0;
    let mut out = Vec::with_capacity(examples.len());
    for e in examples {
        let tokens = e.input.try_map(|s| tok.encode(s))?;
        let t = transform(&tokens, sp, max_len);
        if let Some(q) = t.features.iter().flatten().find(|q| q.ids.len() > max_len) {
            return Err(Error::setting(
                "max_len",
                format!(
                    "{max_len} cannot hold an input of this task even after trimming ({} tokens with the special tokens); raise it",
                    q.ids.len()
                ),
            ));
        }
        truncated += usize::from(t.truncated > 0);
        out.push(Prepared { t, target: e.target.clone() });
    }
    Ok((out, truncated))
}

/// A padded batch: ids and LM targets `[n_seq, len]`, and the head's items.
pub struct Batch {
    pub n_seq: usize,
    pub len: usize,
    /// `[n_seq, len]` token ids, right-padded.
    pub ids: Vec<u32>,
    /// `[n_seq, len]` next-token targets ([`crate::kernels::crossentropy::IGNORE`] on padding).
    pub lm: Vec<u32>,
    pub items: Vec<Item>,
}

/// The longest sequence among `data` (at least 1): activations are sized for it rather than for
/// the model's whole context, so short-text tasks use a fraction of the memory.
pub fn longest(data: &[Prepared]) -> usize {
    data.iter().flat_map(|e| e.t.features.iter().flatten()).map(|s| s.ids.len()).max().unwrap_or(1)
}

pub fn batch(examples: &[&Prepared]) -> Batch {
    let seqs: Vec<_> = examples.iter().flat_map(|e| e.t.features.iter().flatten()).collect();
    let len = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(1);
    let n_seq = seqs.len();
    let mut ids = vec![0u32; n_seq * len];
    for (i, s) in seqs.iter().enumerate() {
        ids[i * len..i * len + s.ids.len()].copy_from_slice(&s.ids);
    }
    let lengths: Vec<usize> = seqs.iter().map(|s| s.ids.len()).collect();
    let lm = next_token_targets(&ids, &lengths, len);
    let mut row = 0;
    let items = examples
        .iter()
        .map(|e| {
            let features =
                e.t.features
                    .iter()
                    .map(|f| {
                        f.iter()
                            .map(|s| {
                                let r = row * len + s.extract;
                                row += 1;
                                r
                            })
                            .collect()
                    })
                    .collect();
            Item { features, target: e.target.clone() }
        })
        .collect();
    Batch { n_seq, len, ids, lm, items }
}

/// Batches of one epoch, bucketed by length for speed: shuffle, sort each window of 50 batches'
/// worth of examples by length, cut into batches, shuffle the batches. A pure function of the
/// seed.
pub fn bucketed_batches(data: &[Prepared], batch: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let len =
        |i: usize| data[i].t.features.iter().flatten().map(|q| q.ids.len()).max().unwrap_or(0);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks(batch * 50) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| len(i));
        batches.extend(w.chunks(batch).map(<[usize]>::to_vec));
    }
    for i in (1..batches.len()).rev() {
        batches.swap(i, rng.below(i as u64 + 1) as usize);
    }
    batches
}

/// Next-token targets of right-padded sequences: `targets[s, j] = ids[s, j + 1]` inside each
/// sequence of `lengths[s]` tokens; padding and each sequence's last token predict nothing
/// ([`IGNORE`]). The one place fine-tuning's LM targets are built.
pub fn next_token_targets(ids: &[u32], lengths: &[usize], len: usize) -> Vec<u32> {
    let mut lm = vec![IGNORE; ids.len()];
    for (s, &n) in lengths.iter().enumerate() {
        for j in 0..n.saturating_sub(1) {
            lm[s * len + j] = ids[s * len + j + 1];
        }
    }
    lm
}
