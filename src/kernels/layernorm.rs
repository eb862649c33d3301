//! LayerNorm over the last dimension (PyTorch's `nn.LayerNorm`: biased variance, eps inside the
//! square root).

use super::reduce::{col_blocks, col_sum};
use rayon::prelude::*;

/// `out = (x - mean) * rstd * g + b` per row; saves `mean` and `rstd` for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    g: &[f32],
    b: &[f32],
    d: usize,
    eps: f32,
) {
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .for_each(|((o, x), (m, s))| {
            let mu = x.iter().sum::<f32>() / d as f32;
            let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<f32>() / d as f32;
            let r = 1.0 / (var + eps).sqrt();
            for i in 0..d {
                o[i] = (x[i] - mu) * r * g[i] + b[i];
            }
            *m = mu;
            *s = r;
        });
}

/// `dx = ∂L/∂x` (assigned); `dg`, `db` accumulated.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dx: &mut [f32],
    dg: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    g: &[f32],
    d: usize,
) {
    dx.par_chunks_mut(d)
        .zip(dout.par_chunks(d).zip(x.par_chunks(d)))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .for_each(|((dx, (dy, x)), (&mu, &r))| {
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for i in 0..d {
                let dn = dy[i] * g[i];
                s1 += dn;
                s2 += dn * (x[i] - mu) * r;
            }
            let (m1, m2) = (s1 / d as f32, s2 / d as f32);
            for i in 0..d {
                let xhat = (x[i] - mu) * r;
                dx[i] = r * (dy[i] * g[i] - m1 - xhat * m2);
            }
        });
    let rows = mean.len();
    col_blocks(dg, |c0, blk| {
        for r in 0..rows {
            let o = r * d + c0;
            let (dy, x) = (&dout[o..o + blk.len()], &x[o..o + blk.len()]);
            let (mu, rs) = (mean[r], rstd[r]);
            for j in 0..blk.len() {
                blk[j] += dy[j] * (x[j] - mu) * rs;
            }
        }
    });
    col_sum(db, dout, rows);
}
