//! Causal multi-head self-attention on the fused `[B, T, 3d]` q/k/v projection, with dropout on
//! the attention probabilities. Heads are processed in parallel, each product only over the
//! causal (lower-triangular) blocks. A few rows against the cache (decoding, evaluation's last
//! block) run in `rows.rs`.

use super::dropout::Dropout;
use super::fastmath;
use super::gemm::{Gemm, Mat, check_operands};
use super::parallel::SendPtr;
use rayon::prelude::*;

mod rows;
pub use rows::{KvLayout, RowsVersion, forward_rows, forward_rows_with, place};

/// Rows per block of the causal products.
const BLK: usize = 64;

/// Batch, sequence length, heads, head size.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub dh: usize,
}

impl Dims {
    pub fn d(&self) -> usize {
        self.h * self.dh
    }
}

/// `c = a · b` into a slice (bounds checked) in `gemm`'s precision, on the calling thread (the
/// heads already run in parallel).
#[allow(clippy::too_many_arguments)]
fn mm(gemm: Gemm, c: &mut [f32], ldc: usize, a: Mat, b: Mat, m: usize, n: usize, k: usize) {
    if m == 0 || n == 0 {
        return;
    }
    check_operands("attention", c, ldc, a, b, (m, n, k));
    // SAFETY: bounds checked above; `c` is exclusively borrowed.
    unsafe { gemm.mm_single(c.as_mut_ptr(), ldc, a, b, m, n, k) }
}

/// `pd = dropout(p)` for one head's `[T, T]` probabilities (zero above the diagonal); element
/// `(i, j)` draws its mask at index `off + i·T + j`, in the forward and the backward pass alike.
fn dropped_probs(pd: &mut [f32], p: &[f32], t: usize, drop: Dropout, off: u64) {
    for i in 0..t {
        let (row, prow) = (&mut pd[i * t..(i + 1) * t], &p[i * t..(i + 1) * t]);
        drop.mul_into(&mut row[..=i], &prow[..=i], off + (i * t) as u64);
        row[i + 1..].fill(0.0);
    }
}

thread_local! {
    /// One head's two `[T, T]` workspaces (the probabilities, and their dropped-out copy or
    /// their gradient), kept between heads and calls on each thread of the pool.
    static HEAD: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's two `[T, T]` workspaces (taken and given back, so a task that
/// reached this thread while another waits in a product gets its own).
fn with_head<R>(tt: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    let mut buf = HEAD.take();
    if buf.len() < 2 * tt {
        buf.resize(2 * tt, 0.0);
    }
    let (p, sc) = buf[..2 * tt].split_at_mut(tt);
    let r = f(p, sc);
    HEAD.set(buf);
    r
}

/// Head `hi` of sequence `bi`: `p[T, T]` = its attention probabilities (zero above the
/// diagonal). The forward pass and the backward pass both call this, so the backward pass
/// recomputes the forward pass's probabilities bit for bit.
fn probs(gemm: Gemm, p: &mut [f32], qkv: &[f32], s: Dims, bi: usize, hi: usize) {
    let (t, dh, d3) = (s.t, s.dh, 3 * s.d());
    let scale = 1.0 / (dh as f32).sqrt();
    let base = bi * t * d3;
    let k_t = Mat::strided(&qkv[base + s.d() + hi * dh..], 1, d3);
    for i0 in (0..t).step_by(BLK) {
        let i1 = (i0 + BLK).min(t);
        let q = Mat::strided(&qkv[base + i0 * d3 + hi * dh..], d3, 1);
        mm(gemm, &mut p[i0 * t..], t, q, k_t, i1 - i0, i1, dh);
    }
    // SAFETY: `wide` says the CPU has AVX-512F.
    if fastmath::wide() {
        unsafe { causal_softmax512(p, t, scale) }
    } else {
        causal_softmax(p, t, scale)
    }
}

/// Row i of the `[t, t]` scores `p`: its first i + 1 scaled and softmaxed, the rest zero.
#[inline(always)]
fn causal_softmax(p: &mut [f32], t: usize, scale: f32) {
    for i in 0..t {
        let row = &mut p[i * t..(i + 1) * t];
        let live = &mut row[..=i];
        live.iter_mut().for_each(|v| *v *= scale);
        let mx = fastmath::max(live);
        let inv = 1.0 / fastmath::exp_shifted(live, mx);
        live.iter_mut().for_each(|v| *v *= inv);
        row[i + 1..].fill(0.0);
    }
}

/// [`causal_softmax`] built for 16 lanes: the same operations on each element and the same
/// fixed-lane sums, so the same bits (tested).
#[target_feature(enable = "avx512f")]
unsafe fn causal_softmax512(p: &mut [f32], t: usize, scale: f32) {
    causal_softmax(p, t, scale)
}

/// `att[B, H, T, T]` = every head's probabilities, as [`forward`] computes them (tests, and
/// whoever wants to look at them: the passes keep none).
pub fn probabilities(gemm: Gemm, att: &mut [f32], qkv: &[f32], s: Dims) {
    let tt = s.t * s.t;
    assert!(att.len() >= s.b * s.h * tt && qkv.len() >= s.b * s.t * 3 * s.d());
    att[..s.b * s.h * tt]
        .par_chunks_mut(tt)
        .enumerate()
        .for_each(|(bh, p)| probs(gemm, p, qkv, s, bh / s.h, bh % s.h));
}

/// `y[B, T, d]` = attention of `qkv`. `gemm`: the products' precision (bf16 in a bf16 run).
///
/// Nothing is kept for the backward pass: each head's `[T, T]` probabilities live in its
/// thread's workspace while the head runs, and [`backward`] recomputes them (the same
/// products and softmax, so the same bits; the dropout mask is drawn again at the same
/// indices). Keeping them instead cost `B·H·T²` floats per block: 604 MB over GPT-1's 12
/// blocks at 4 × 512.
pub fn forward(gemm: Gemm, y: &mut [f32], qkv: &[f32], s: Dims, drop: Dropout) {
    let (t, dh, d) = (s.t, s.dh, s.d());
    let d3 = 3 * d;
    let tt = t * t;
    assert!(y.len() >= s.b * t * d && qkv.len() >= s.b * t * d3);
    let yp = SendPtr(y.as_mut_ptr());
    (0..s.b * s.h).into_par_iter().for_each(|bh| {
        let (bi, hi) = (bh / s.h, bh % s.h);
        with_head(tt, |p, pd| {
            probs(gemm, p, qkv, s, bi, hi);
            let probs: &[f32] = if drop.active() {
                dropped_probs(pd, p, t, drop, (bh * tt) as u64);
                pd
            } else {
                p
            };
            let v = Mat::strided(&qkv[bi * t * d3 + 2 * d + hi * dh..], d3, 1);
            for i0 in (0..t).step_by(BLK) {
                let i1 = (i0 + BLK).min(t);
                // SAFETY: rows bi*t+i0..i1 and columns hi*dh..+dh of y belong to this task
                // alone, and lie inside y (asserted above).
                unsafe {
                    gemm.mm_single(
                        yp.get().add((bi * t + i0) * d + hi * dh),
                        d,
                        Mat::strided(&probs[i0 * t..], t, 1),
                        v,
                        i1 - i0,
                        dh,
                        i1,
                    );
                }
            }
        })
    });
}

/// `dqkv` (assigned) from `dy`, the probabilities recomputed from `qkv` (see [`forward`]).
pub fn backward(gemm: Gemm, dqkv: &mut [f32], dy: &[f32], qkv: &[f32], s: Dims, drop: Dropout) {
    let (t, dh, d) = (s.t, s.dh, s.d());
    let d3 = 3 * d;
    let tt = t * t;
    let scale = 1.0 / (dh as f32).sqrt();
    assert!(dqkv.len() >= s.b * t * d3 && dy.len() >= s.b * t * d && qkv.len() >= s.b * t * d3);
    let gp = SendPtr(dqkv.as_mut_ptr());
    (0..s.b * s.h).into_par_iter().for_each(|bh| {
        let (bi, hi) = (bh / s.h, bh % s.h);
        let base = bi * t * d3;
        let off = (bh * tt) as u64;
        with_head(tt, |p, sc| {
            probs(gemm, p, qkv, s, bi, hi);
            let p: &[f32] = p;
            // dV = P_dᵀ · dY, row block j0..j1 uses probability rows j0..t.
            if drop.active() {
                dropped_probs(sc, p, t, drop, off);
            }
            {
                let pd: &[f32] = if drop.active() { sc } else { p };
                for j0 in (0..t).step_by(BLK) {
                    let j1 = (j0 + BLK).min(t);
                    // SAFETY: rows bi*t+j0..j1, v columns of head hi: this task's alone.
                    unsafe {
                        gemm.mm_single(
                            gp.get().add((bi * t + j0) * d3 + 2 * d + hi * dh),
                            d3,
                            Mat::strided(&pd[j0 * t + j0..], 1, t),
                            Mat::strided(&dy[(bi * t + j0) * d + hi * dh..], d, 1),
                            j1 - j0,
                            dh,
                            t - j0,
                        );
                    }
                }
            }
            // dP_d = dY · Vᵀ on the causal blocks.
            let v_t = Mat::strided(&qkv[base + 2 * d + hi * dh..], 1, d3);
            for i0 in (0..t).step_by(BLK) {
                let i1 = (i0 + BLK).min(t);
                let g = Mat::strided(&dy[(bi * t + i0) * d + hi * dh..], d, 1);
                mm(gemm, &mut sc[i0 * t..], t, g, v_t, i1 - i0, i1, dh);
            }
            // Through dropout and softmax: dS = P ⊙ (dP − rowsum(P ⊙ dP)), times the 1/√dh
            // scale.
            for i in 0..t {
                let row = &mut sc[i * t..(i + 1) * t];
                let prow = &p[i * t..(i + 1) * t];
                if drop.active() {
                    drop.mul_in_place(&mut row[..=i], off + (i * t) as u64);
                }
                let dot = fastmath::dot(&prow[..=i], &row[..=i]);
                for j in 0..=i {
                    row[j] = prow[j] * (row[j] - dot) * scale;
                }
                row[i + 1..].fill(0.0);
            }
            let ds: &[f32] = sc;
            for i0 in (0..t).step_by(BLK) {
                let i1 = (i0 + BLK).min(t);
                // SAFETY: q columns of head hi in rows bi*t+i0..i1: this task's alone.
                unsafe {
                    gemm.mm_single(
                        gp.get().add((bi * t + i0) * d3 + hi * dh),
                        d3,
                        Mat::strided(&ds[i0 * t..], t, 1),
                        Mat::strided(&qkv[base + d + hi * dh..], d3, 1),
                        i1 - i0,
                        dh,
                        i1,
                    );
                }
            }
            for j0 in (0..t).step_by(BLK) {
                let j1 = (j0 + BLK).min(t);
                // SAFETY: k columns of head hi in rows bi*t+j0..j1: this task's alone.
                unsafe {
                    gemm.mm_single(
                        gp.get().add((bi * t + j0) * d3 + d + hi * dh),
                        d3,
                        Mat::strided(&ds[j0 * t + j0..], 1, t),
                        Mat::strided(&qkv[base + j0 * d3 + hi * dh..], d3, 1),
                        j1 - j0,
                        dh,
                        t - j0,
                    );
                }
            }
        })
    });
}

#[cfg(test)]
mod wide_tests {
    use super::*;
    use crate::kernels::testutil::same_bits;

    /// The 16-lane causal softmax gives the 8-lane one's bits.
    #[test]
    fn the_avx512_causal_softmax_gives_the_same_bits() {
        if !fastmath::wide() {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        let t = 77;
        let x = crate::kernels::testutil::rand_vec(t * t, 9);
        let (mut a, mut b) = (x.clone(), x);
        causal_softmax(&mut a, t, 0.125);
        // SAFETY: AVX-512F checked above.
        unsafe { causal_softmax512(&mut b, t, 0.125) };
        assert!(same_bits(&a, &b));
    }
}
