//! The paper's task-aware input transformations (section 3.3): token sequences with start,
//! delimiter and extract tokens, and where the classifier reads each one.

use super::example::Input;

/// The three special token ids (appended after the BPE vocabulary).
#[derive(Clone, Copy, Debug)]
pub struct Specials {
    pub start: u32,
    pub delim: u32,
    pub extract: u32,
}

/// Token ids of one example's segments (already tokenized).
pub type Tokens = Input<Vec<u32>>;

/// One model input: the ids and the position of its extract token.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequence {
    pub ids: Vec<u32>,
    pub extract: usize,
}

/// An example as model inputs: `features[k]` lists the sequences whose extract states are
/// summed into feature k (one per candidate for multiple choice; two orders for similarity).
#[derive(Clone, Debug, PartialEq)]
pub struct Transformed {
    pub features: Vec<Vec<Sequence>>,
    /// Tokens removed to fit the context.
    pub truncated: usize,
}

/// Trims the longest of `segs` one token at a time (from its end) until their total is at most
/// `budget`; returns how many tokens went.
fn trim_longest(segs: &mut [&mut Vec<u32>], budget: usize) -> usize {
    let mut removed = 0;
    while segs.iter().map(|s| s.len()).sum::<usize>() > budget {
        let Some(longest) = segs.iter_mut().max_by_key(|s| s.len()) else {
            break;
        };
        if longest.pop().is_none() {
            break;
        }
        removed += 1;
    }
    removed
}

fn seq(sp: Specials, parts: &[&[u32]]) -> Sequence {
    let mut ids = vec![sp.start];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            ids.push(sp.delim);
        }
        ids.extend_from_slice(p);
    }
    ids.push(sp.extract);
    Sequence { extract: ids.len() - 1, ids }
}

/// Builds the model inputs of an example for a context of `max_len` tokens: the longest
/// segment is trimmed first, the special tokens always kept; for multiple choice the context is
/// trimmed, never the question or the answer (unless they alone exceed the context).
pub fn transform(tokens: &Tokens, sp: Specials, max_len: usize) -> Transformed {
    match tokens.clone() {
        Input::Single(mut x) => {
            let truncated = trim_longest(&mut [&mut x], max_len.saturating_sub(2));
            Transformed { features: vec![vec![seq(sp, &[&x])]], truncated }
        }
        Input::Ordered { premise: mut p, hypothesis: mut h } => {
            let truncated = trim_longest(&mut [&mut p, &mut h], max_len.saturating_sub(3));
            Transformed { features: vec![vec![seq(sp, &[&p, &h])]], truncated }
        }
        Input::Unordered { mut a, mut b } => {
            let truncated = trim_longest(&mut [&mut a, &mut b], max_len.saturating_sub(3));
            Transformed { features: vec![vec![seq(sp, &[&a, &b]), seq(sp, &[&b, &a])]], truncated }
        }
        Input::Choice { context, question, candidates } => {
            let mut truncated = 0;
            let features = candidates
                .iter()
                .map(|cand| {
                    // [s; context question; $; candidate; e]: 3 special tokens.
                    let budget = max_len.saturating_sub(3);
                    let mut ctx = context.clone();
                    let (mut q, mut a) = (question.clone(), cand.clone());
                    let fixed = q.len() + a.len();
                    let keep_ctx = budget.saturating_sub(fixed);
                    if ctx.len() > keep_ctx {
                        truncated += ctx.len() - keep_ctx;
                        ctx.truncate(keep_ctx);
                    }
                    truncated += trim_longest(&mut [&mut q, &mut a], budget - ctx.len());
                    let mut first = ctx;
                    first.extend_from_slice(&q);
                    vec![seq(sp, &[&first, &a])]
                })
                .collect();
            Transformed { features, truncated }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: Specials = Specials { start: 100, delim: 101, extract: 102 };

    #[test]
    fn the_four_shapes() {
        let t = transform(&Input::Single(vec![1, 2, 3]), SP, 10);
        assert_eq!(t.features, vec![vec![Sequence { ids: vec![100, 1, 2, 3, 102], extract: 4 }]]);
        let t = transform(&Input::Ordered { premise: vec![1, 2], hypothesis: vec![3] }, SP, 10);
        assert_eq!(t.features[0][0].ids, vec![100, 1, 2, 101, 3, 102]);
        let t = transform(&Input::Unordered { a: vec![1], b: vec![2, 3] }, SP, 10);
        assert_eq!(t.features[0].len(), 2);
        assert_eq!(t.features[0][0].ids, vec![100, 1, 101, 2, 3, 102]);
        assert_eq!(t.features[0][1].ids, vec![100, 2, 3, 101, 1, 102]);
        let t = transform(
            &Input::Choice {
                context: vec![1, 2],
                question: vec![3],
                candidates: vec![vec![4], vec![5, 6]],
            },
            SP,
            10,
        );
        assert_eq!(t.features.len(), 2);
        assert_eq!(t.features[1][0].ids, vec![100, 1, 2, 3, 101, 5, 6, 102]);
        assert_eq!(t.features[1][0].extract, 7);
    }

    #[test]
    fn truncation_trims_the_longest_segment_and_keeps_specials() {
        let t = transform(
            &Input::Ordered { premise: (0..20).collect(), hypothesis: vec![50, 51] },
            SP,
            10,
        );
        let s = &t.features[0][0];
        assert_eq!(s.ids.len(), 10);
        assert_eq!(s.ids, vec![100, 0, 1, 2, 3, 4, 101, 50, 51, 102]);
        assert_eq!(t.truncated, 15);
        // Multiple choice trims the context, never the answer.
        let t = transform(
            &Input::Choice {
                context: (0..20).collect(),
                question: vec![60],
                candidates: vec![vec![70, 71, 72]],
            },
            SP,
            10,
        );
        assert_eq!(t.features[0][0].ids, vec![100, 0, 1, 2, 60, 101, 70, 71, 72, 102]);
        assert_eq!(t.truncated, 17);
    }
}
