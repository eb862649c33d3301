//! Column reductions over rows (bias and gain gradients) in a fixed order: the work is split by
//! columns, each column summed over rows in order, so the result is the same for any thread
//! count.

use rayon::prelude::*;

const COLS: usize = 64;

/// `dst[c] += Σ_r f(r, c)` for `r in 0..rows`, `c in 0..dst.len()`.
pub fn col_accumulate<F>(dst: &mut [f32], rows: usize, f: F)
where
    F: Fn(usize, usize) -> f32 + Sync,
{
    dst.par_chunks_mut(COLS).enumerate().for_each(|(ci, chunk)| {
        let c0 = ci * COLS;
        for r in 0..rows {
            for (j, v) in chunk.iter_mut().enumerate() {
                *v += f(r, c0 + j);
            }
        }
    });
}

/// `dst[c] += Σ_r src[r * cols + c]`: the gradient of a bias.
pub fn col_sum(dst: &mut [f32], src: &[f32], rows: usize) {
    let cols = dst.len();
    col_accumulate(dst, rows, |r, c| src[r * cols + c]);
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
