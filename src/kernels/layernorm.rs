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
    out.par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d))
        .zip(mean.par_chunks_mut(ROWS).zip(rstd.par_chunks_mut(ROWS)))
        .for_each(|((o, x), (m, s))| {
            let n = m.len();
            let mu = row_sums(x, d, n, |_, v| v).map(|t| t / d as f32);
            let var = row_sums(x, d, n, |j, v| (v - mu[j]) * (v - mu[j])).map(|t| t / d as f32);
            for j in 0..n {
                let r = 1.0 / (var[j] + eps).sqrt();
                let (o, x) = (&mut o[j * d..(j + 1) * d], &x[j * d..(j + 1) * d]);
                for i in 0..d {
                    o[i] = (x[i] - mu[j]) * r * g[i] + b[i];
                }
                m[j] = mu[j];
                s[j] = r;
            }
        });
}

/// Rows per task of [`forward`], whose sums run side by side.
const ROWS: usize = 16;

/// Each of the first `n` rows' `Σ_i f(row, x[row][i])` (rows of `d` in `x`), summed in order
/// of `i` from `iter().sum()`'s start, as `iter().map(..).sum()` sums one row: the same bits.
/// A row's sum is a chain of dependent adds; the rows' chains interleaved keep the adders busy
/// (a row at a time, LayerNorm's sums took most of its time).
#[inline(always)]
fn row_sums(x: &[f32], d: usize, n: usize, f: impl Fn(usize, f32) -> f32) -> [f32; ROWS] {
    let mut acc = [std::iter::empty::<f32>().sum::<f32>(); ROWS];
    // A full task's row count is a constant the compiler unrolls; the last task's is not.
    if n == ROWS {
        for i in 0..d {
            for (j, a) in acc.iter_mut().enumerate() {
                *a += f(j, x[j * d + i]);
            }
        }
    } else {
        for i in 0..d {
            for (j, a) in acc.iter_mut().enumerate().take(n) {
                *a += f(j, x[j * d + i]);
            }
        }
    }
    acc
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
    dx.par_chunks_mut(ROWS * d)
        .zip(dout.par_chunks(ROWS * d).zip(x.par_chunks(ROWS * d)))
        .zip(mean.par_chunks(ROWS).zip(rstd.par_chunks(ROWS)))
        .for_each(|((dx, (dy, x)), (mu, r))| {
            // Each row's two sums from 0 in order of i, as the one-row loop summed them.
            let (mut s1, mut s2) = ([0.0f32; ROWS], [0.0f32; ROWS]);
            let n = mu.len();
            for i in 0..d {
                for j in 0..n {
                    let dn = dy[j * d + i] * g[i];
                    s1[j] += dn;
                    s2[j] += dn * (x[j * d + i] - mu[j]) * r[j];
                }
            }
            for j in 0..n {
                let (m1, m2) = (s1[j] / d as f32, s2[j] / d as f32);
                let (dx, dy, x) = (&mut dx[j * d..][..d], &dy[j * d..][..d], &x[j * d..][..d]);
                for i in 0..d {
                    let xhat = (x[i] - mu[j]) * r[j];
                    dx[i] = r[j] * (dy[i] * g[i] - m1 - xhat * m2);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows' sums side by side give each row's bits of the one-row loop it replaced
    /// (`iter().sum()`), for row counts that fill a task or not, signed zeros included.
    #[test]
    fn rows_side_by_side_give_the_one_row_bits() {
        let d = 77;
        for rows in [1, 5, 16, 17, 40] {
            let mut x = crate::kernels::testutil::rand_vec(rows * d, 3);
            x[..d].fill(-0.0);
            let g = crate::kernels::testutil::rand_vec(d, 4);
            let b = crate::kernels::testutil::rand_vec(d, 5);
            let (mut o, mut m, mut r) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
            forward(&mut o, &mut m, &mut r, &x, &g, &b, d, 1e-5);
            for j in 0..rows {
                let x = &x[j * d..(j + 1) * d];
                let mu = x.iter().sum::<f32>() / d as f32;
                let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<f32>() / d as f32;
                let rs = 1.0 / (var + 1e-5).sqrt();
                assert_eq!(
                    (m[j].to_bits(), r[j].to_bits()),
                    (mu.to_bits(), rs.to_bits()),
                    "row {j}"
                );
                for i in 0..d {
                    let want = (x[i] - mu) * rs * g[i] + b[i];
                    assert_eq!(o[j * d + i].to_bits(), want.to_bits(), "row {j}, {i}");
                }
            }
            let dy = crate::kernels::testutil::rand_vec(rows * d, 6);
            let (mut dx, mut dg, mut db) = (vec![0.0; rows * d], vec![0.0; d], vec![0.0; d]);
            backward(&mut dx, &mut dg, &mut db, &dy, &x, &m, &r, &g, d);
            for j in 0..rows {
                let (dy, x, mu, rs) = (&dy[j * d..][..d], &x[j * d..][..d], m[j], r[j]);
                let (mut s1, mut s2) = (0.0f32, 0.0f32);
                for i in 0..d {
                    let dn = dy[i] * g[i];
                    s1 += dn;
                    s2 += dn * (x[i] - mu) * rs;
                }
                let (m1, m2) = (s1 / d as f32, s2 / d as f32);
                for i in 0..d {
                    let want = rs * (dy[i] * g[i] - m1 - (x[i] - mu) * rs * m2);
                    assert_eq!(dx[j * d + i].to_bits(), want.to_bits(), "dx row {j}, {i}");
                }
            }
        }
    }
}
