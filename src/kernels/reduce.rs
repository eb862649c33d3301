//! Column reductions over rows (bias and gain gradients) in a fixed order: the work is split by
//! columns, each column summed over rows in order, so the result is the same for any thread
//! count.

use rayon::prelude::*;

const COLS: usize = 64;

/// For each column block `c0..c0 + len`, calls `f(c0, block)` once: `f` walks the rows in
/// order and accumulates into the block.
pub fn col_blocks<F>(dst: &mut [f32], f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    dst.par_chunks_mut(COLS).enumerate().for_each(|(ci, chunk)| f(ci * COLS, chunk));
}

/// `dst[c] += Σ_r src[r * cols + c]`: the gradient of a bias.
pub fn col_sum(dst: &mut [f32], src: &[f32], rows: usize) {
    let cols = dst.len();
    dst.par_chunks_mut(COLS).enumerate().for_each(|(ci, chunk)| {
        let c0 = ci * COLS;
        for r in 0..rows {
            let s = &src[r * cols + c0..r * cols + c0 + chunk.len()];
            for (v, &x) in chunk.iter_mut().zip(s) {
                *v += x;
            }
        }
    });
}

/// Σ x² in f64, in fixed chunks summed in order.
pub fn sum_squares(x: &[f32]) -> f64 {
    const CHUNK: usize = 1 << 16;
    let parts: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect();
    parts.iter().sum()
}
