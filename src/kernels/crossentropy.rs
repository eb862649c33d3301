//! The tied language-model head fused with softmax cross-entropy, in row chunks so the
//! `[rows, V]` logits never exist whole: for each chunk, logits = h · Wteᵀ, loss and
//! ∂L/∂logits in place, then ∂L/∂h = ∂logits · Wte and ∂Wte += ∂logitsᵀ · h.

use super::fastmath;
use super::gemm::{Gemm, Mat};
use super::reduce::col_sum;
use rayon::prelude::*;

/// Rows per chunk: large enough for efficient products, small enough to bound memory
/// (`CHUNK × V` floats).
pub const CHUNK: usize = 512;

/// Targets equal to this are not predicted (padding).
pub const IGNORE: u32 = u32::MAX;

/// Softmax of one logits row in place; returns log p(target) (or 0 for [`IGNORE`]).
fn softmax_row(row: &mut [f32], target: u32) -> f32 {
    // SAFETY: `wide` says the CPU has AVX-512F.
    if fastmath::wide() {
        unsafe { softmax_row512(row, target) }
    } else {
        softmax_row_at(row, target)
    }
}

/// [`softmax_row_at`] built for 16 lanes: the same operations on each element and the same
/// fixed-lane sums, so the same bits (tested).
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row512(row: &mut [f32], target: u32) -> f32 {
    softmax_row_at(row, target)
}

#[inline(always)]
fn softmax_row_at(row: &mut [f32], target: u32) -> f32 {
    let mx = fastmath::max(row);
    let logit = if target == IGNORE { 0.0 } else { row[target as usize] };
    let sum = fastmath::exp_shifted_wide(row, mx);
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|v| *v *= inv);
    if target == IGNORE { 0.0 } else { ((logit - mx) as f64 - sum.ln()) as f32 }
}

/// Forward and backward of `scale · Σ_r −log p(targets[r] | h[r])`.
///
/// `dh` is assigned, `dwte` accumulated; `logits` is workspace of at least
/// `min(rows, CHUNK) × V`. Returns the unscaled sum of negative log-likelihoods (f64) of the
/// counted rows.
#[allow(clippy::too_many_arguments)]
pub fn forward_backward(
    gemm: Gemm,
    dh: &mut [f32],
    dwte: &mut [f32],
    logits: &mut [f32],
    h: &[f32],
    wte: &[f32],
    targets: &[u32],
    d: usize,
    scale: f32,
) -> f64 {
    forward_backward_biased(gemm, dh, dwte, None, logits, h, wte, targets, d, scale)
}

/// [`forward_backward`] of an output layer with a bias (`logits = h · Wᵀ + b`, as
/// `nn.Linear`): `bias` is `(b, ∂b)`, the gradient accumulated (rows in order, so the sum does
/// not depend on the thread count).
#[allow(clippy::too_many_arguments)]
pub fn forward_backward_biased(
    gemm: Gemm,
    dh: &mut [f32],
    dwte: &mut [f32],
    mut bias: Option<(&[f32], &mut [f32])>,
    logits: &mut [f32],
    h: &[f32],
    wte: &[f32],
    targets: &[u32],
    d: usize,
    scale: f32,
) -> f64 {
    let v = wte.len() / d;
    let rows = targets.len();
    let mut total = 0.0f64;
    for r0 in (0..rows).step_by(CHUNK) {
        let r1 = (r0 + CHUNK).min(rows);
        let n = r1 - r0;
        let hc = &h[r0 * d..r1 * d];
        let lg = &mut logits[..n * v];
        gemm.mm(lg, Mat::rows(hc, d), Mat::t(wte, d), n, v, d, false);
        let b = bias.as_ref().map(|(b, _)| *b);
        let nll: Vec<f32> = lg
            .par_chunks_mut(v)
            .zip(targets[r0..r1].par_iter())
            .map(|(row, &tg)| {
                if tg == IGNORE {
                    row.fill(0.0);
                    return 0.0;
                }
                add_bias(row, b);
                let lp = softmax_row(row, tg);
                row.iter_mut().for_each(|x| *x *= scale);
                row[tg as usize] -= scale;
                -lp
            })
            .collect();
        total += nll.iter().map(|&x| x as f64).sum::<f64>();
        if let Some((_, db)) = &mut bias {
            col_sum(&mut db[..v], lg, n);
        }
        gemm.mm(&mut dh[r0 * d..r1 * d], Mat::rows(lg, v), Mat::rows(wte, d), n, d, v, false);
        gemm.mm(dwte, Mat::t(lg, v), Mat::rows(hc, d), v, d, n, true);
    }
    total
}

/// `row += bias` (an output layer with a bias), in the pass over the row that uses it.
fn add_bias(row: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
    }
}

/// log p(targets[r] | h[r]) for every row (0 for [`IGNORE`]), no gradients.
pub fn logprobs(
    gemm: Gemm,
    out: &mut [f32],
    logits: &mut [f32],
    h: &[f32],
    wte: &[f32],
    targets: &[u32],
    d: usize,
) {
    logprobs_biased(gemm, out, logits, h, wte, None, targets, d)
}

/// [`logprobs`] of an output layer with a bias (`nn.Linear`).
#[allow(clippy::too_many_arguments)]
pub fn logprobs_biased(
    gemm: Gemm,
    out: &mut [f32],
    logits: &mut [f32],
    h: &[f32],
    wte: &[f32],
    bias: Option<&[f32]>,
    targets: &[u32],
    d: usize,
) {
    let v = wte.len() / d;
    let rows = targets.len();
    for r0 in (0..rows).step_by(CHUNK) {
        let r1 = (r0 + CHUNK).min(rows);
        let n = r1 - r0;
        let lg = &mut logits[..n * v];
        gemm.mm(lg, Mat::rows(&h[r0 * d..r1 * d], d), Mat::t(wte, d), n, v, d, false);
        out[r0..r1]
            .par_iter_mut()
            .zip(lg.par_chunks_mut(v).zip(targets[r0..r1].par_iter()))
            .for_each(|(o, (row, &tg))| {
                add_bias(row, bias);
                *o = softmax_row(row, tg);
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::same_bits;

    /// The 16-lane softmax gives the 8-lane one's bits: probabilities and log-probability, on a
    /// row whose length is not a multiple of 16, sharp and flat.
    #[test]
    fn the_avx512_softmax_gives_the_same_bits() {
        if !fastmath::wide() {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        for (scale, seed) in [(1.0, 1), (30.0, 2), (1e-3, 3)] {
            let x: Vec<f32> = crate::kernels::testutil::rand_vec(40_481, seed)
                .iter()
                .map(|v| v * scale)
                .collect();
            let (mut a, mut b) = (x.clone(), x);
            let la = softmax_row_at(&mut a, 17);
            // SAFETY: AVX-512F checked above.
            let lb = unsafe { softmax_row512(&mut b, 17) };
            assert_eq!(la.to_bits(), lb.to_bits(), "log p, scale {scale}");
            assert!(same_bits(&a, &b), "scale {scale}");
        }
    }
}
