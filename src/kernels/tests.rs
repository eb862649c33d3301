//! Finite-difference gradient checks for every kernel.

use super::attention::{self, Dims, KvLayout};
use super::crossentropy;
use super::dropout::Dropout;
use super::embedding;
use super::gelu;
use super::gemm::Gemm;
use super::layernorm;
use super::lstm;
use super::testutil::{check_grad, dot, rand_vec};

#[test]
fn layernorm_gradients() {
    let (rows, d) = (5, 24);
    let mut x = rand_vec(rows * d, 1);
    let mut g: Vec<f32> = rand_vec(d, 2).iter().map(|v| 1.0 + 0.3 * v).collect();
    let mut b = rand_vec(d, 3);
    let w = rand_vec(rows * d, 4);
    let fwd = |x: &[f32], g: &[f32], b: &[f32]| {
        let (mut o, mut m, mut r) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
        layernorm::forward(&mut o, &mut m, &mut r, x, g, b, d, 1e-5);
        (o, m, r)
    };
    let (_, m, r) = fwd(&x, &g, &b);
    let (mut dx, mut dg, mut db) = (vec![0.0; rows * d], vec![0.0; d], vec![0.0; d]);
    layernorm::backward(&mut dx, &mut dg, &mut db, &w, &x, &m, &r, &g, d);
    let (g0, b0) = (g.clone(), b.clone());
    check_grad(&mut x, &dx, 60, 1e-2, 2e-2, |x| dot(&fwd(x, &g0, &b0).0, &w));
    let x0 = x.clone();
    check_grad(&mut g, &dg, 24, 1e-2, 2e-2, |g| dot(&fwd(&x0, g, &b0).0, &w));
    let g0 = g.clone();
    check_grad(&mut b, &db, 24, 1e-2, 2e-2, |b| dot(&fwd(&x0, &g0, b).0, &w));
}

#[test]
fn gelu_gradient() {
    let n = 300;
    let mut x: Vec<f32> = rand_vec(n, 5).iter().map(|v| 2.0 * v).collect();
    let w = rand_vec(n, 6);
    let (mut dx, mut recomputed) = (w.clone(), vec![0.0; n]);
    gelu::backward(&mut dx, &mut recomputed, &x);
    let mut out = vec![0.0; n];
    gelu::forward(&mut out, &x);
    assert!(out.iter().zip(&recomputed).all(|(a, b)| a.to_bits() == b.to_bits()), "recomputed");
    check_grad(&mut x, &dx, 300, 1e-3, 2e-2, |x| {
        let mut o = vec![0.0; n];
        gelu::forward(&mut o, x);
        dot(&o, &w)
    });
}

fn attention_case(drop: Dropout) {
    let s = Dims { b: 2, t: 70, h: 2, dh: 4 };
    let d = s.d();
    let n = s.b * s.t * 3 * d;
    let mut qkv = rand_vec(n, 7);
    let w = rand_vec(s.b * s.t * d, 8);
    let fwd = |qkv: &[f32]| {
        let mut y = vec![0.0; s.b * s.t * d];
        attention::forward(Gemm::Fp32, &mut y, qkv, s, drop);
        y
    };
    let mut dqkv = vec![0.0; n];
    attention::backward(Gemm::Fp32, &mut dqkv, &w, &qkv, s, drop);
    check_grad(&mut qkv, &dqkv, 150, 1e-2, 3e-2, |q| dot(&fwd(q), &w));
}

/// Attention with bf16 products (a bf16 run) against fp32: outputs and q/k/v gradients within
/// bf16 rounding, over several causal blocks, with dropout.
#[test]
fn bf16_attention_is_fp32_attention_up_to_bf16_rounding() {
    let s = Dims { b: 2, t: 150, h: 2, dh: 64 };
    let (d, drop) = (s.d(), Dropout::new(0.1, 5));
    let n = s.b * s.t * 3 * d;
    let qkv = rand_vec(n, 17);
    let w = rand_vec(s.b * s.t * d, 18);
    let run = |gemm: Gemm| {
        let mut y = vec![0.0; s.b * s.t * d];
        attention::forward(gemm, &mut y, &qkv, s, drop);
        let mut dqkv = vec![0.0; n];
        attention::backward(gemm, &mut dqkv, &w, &qkv, s, drop);
        (y, dqkv)
    };
    let (y32, g32) = run(Gemm::Fp32);
    let (y16, g16) = run(Gemm::Bf16(crate::kernels::gemm::best_version()));
    for (got, want, what) in [(&y16, &y32, "y"), (&g16, &g32, "dqkv")] {
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let err = got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err > 0.0, "{what}: bf16 products must round");
        assert!(err < 2e-2, "{what}: max error {err} of the largest value");
    }
}

#[test]
fn attention_gradients_without_dropout() {
    attention_case(Dropout::OFF);
}

#[test]
fn attention_gradients_with_dropout() {
    attention_case(Dropout::new(0.2, 11));
}

/// Attention at a few rows, written plainly: head by head, each score a dot product over the
/// head's width, the softmax's exponentials from `fastmath`, the outputs summed over the
/// positions in order.
fn attention_rows_plain(qkv: &[f32], s: Dims, rows: &[usize]) -> Vec<f32> {
    use super::fastmath;
    let (t, dh, d) = (s.t, s.dh, s.d());
    let scale = 1.0 / (dh as f32).sqrt();
    let mut y = vec![0.0f32; rows.len() * d];
    for (out, &r) in y.chunks_mut(d).zip(rows) {
        let (bi, i) = (r / t, r % t);
        for hi in 0..s.h {
            let q = &qkv[r * 3 * d + hi * dh..][..dh];
            let mut p: Vec<f32> = (0..=i)
                .map(|j| fastmath::dot(q, &qkv[(bi * t + j) * 3 * d + d + hi * dh..][..dh]) * scale)
                .collect();
            let mx = fastmath::max(&p);
            let inv = 1.0 / fastmath::exp_shifted(&mut p, mx);
            let o = &mut out[hi * dh..(hi + 1) * dh];
            for (j, &pj) in p.iter().enumerate() {
                let v = &qkv[(bi * t + j) * 3 * d + 2 * d + hi * dh..][..dh];
                o.iter_mut().zip(v).for_each(|(o, v)| *o += pj * inv * v);
            }
        }
    }
    y
}

#[test]
fn attention_at_rows_sums_as_the_plain_definition_for_any_threads() {
    // Head counts with and without divisors, one row (a decode step: heads split over tasks)
    // to many (a prefill), each row of a batch at its own length.
    // Lengths of 37 and 50 give the AVX-512 version full blocks of 16 positions and a remainder;
    // head sizes of 16, 64 and 128 run it, the others the portable version.
    use attention::RowsVersion::{Avx512, Portable};
    for (h, dh, t) in
        [(12, 8, 19), (7, 5, 19), (1, 16, 37), (4, 64, 19), (12, 64, 50), (3, 128, 37)]
    {
        let s = Dims { b: 3, t, h, dh };
        let d = s.d();
        let qkv = rand_vec(s.b * s.t * 3 * d, 21);
        // Decoding's caches: each position's keys and values side by side, and head-major
        // (placed by `attention::place`, as decoding places them).
        let kv: Vec<f32> = qkv.chunks(3 * d).flat_map(|row| row[d..].to_vec()).collect();
        let heads = KvLayout::heads(s);
        let mut by_head = vec![f32::NAN; heads.span(s)];
        attention::place(&mut by_head, heads, &qkv, s, &(0..s.b * s.t).collect::<Vec<_>>());
        // A decode step places one row at a time: the same cache, whatever the order.
        let mut one_by_one = vec![f32::NAN; heads.span(s)];
        for r in (0..s.b * s.t).rev() {
            attention::place(&mut one_by_one, heads, &qkv[r * 3 * d..], s, &[r]);
        }
        assert!(one_by_one.iter().zip(&by_head).all(|(a, b)| a.to_bits() == b.to_bits()));
        let caches = [
            (&qkv[d..], KvLayout::rows(s, 3 * d)),
            (&kv[..], KvLayout::rows(s, 2 * d)),
            (&by_head[..], heads),
        ];
        let each = [vec![5], vec![3 * t - 1], vec![0, t + 33 % t, 2 * t + 3], (0..3 * t).collect()];
        for rows in each {
            let want = attention_rows_plain(&qkv, s, &rows);
            let q: Vec<f32> =
                rows.iter().flat_map(|&r| qkv[r * 3 * d..][..3 * d].to_vec()).collect();
            for threads in [1, 2, 3, 8] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for (cache, l) in caches {
                    for version in [Portable, Avx512] {
                        let mut y = vec![f32::NAN; rows.len() * d];
                        let run = || {
                            attention::forward_rows_with(version, &mut y, &q, cache, l, s, &rows)
                        };
                        pool.install(run);
                        let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                        let what = format!("{version:?}, {l:?}: h {h}, dh {dh}, rows {rows:?}");
                        assert!(same, "{what}, {threads} threads");
                    }
                }
            }
        }
    }
}

#[test]
fn attention_is_causal() {
    let s = Dims { b: 1, t: 20, h: 2, dh: 3 };
    let d = s.d();
    let mut qkv = rand_vec(s.t * 3 * d, 9);
    let run = |qkv: &[f32]| {
        let mut y = vec![0.0; s.t * d];
        attention::forward(Gemm::Fp32, &mut y, qkv, s, Dropout::OFF);
        y
    };
    let before = run(&qkv);
    // Changing the last position must leave every earlier output unchanged.
    for c in 0..3 * d {
        qkv[(s.t - 1) * 3 * d + c] += 1.0;
    }
    let after = run(&qkv);
    assert_eq!(before[..(s.t - 1) * d], after[..(s.t - 1) * d]);
    assert_ne!(before[(s.t - 1) * d..], after[(s.t - 1) * d..]);
}

#[test]
fn cross_entropy_gradients() {
    let (rows, d, v) = (6, 8, 13);
    let mut h = rand_vec(rows * d, 10);
    let mut wte = rand_vec(v * d, 11);
    let targets: Vec<u32> = vec![3, 0, 12, crossentropy::IGNORE, 7, 7];
    let scale = 1.0 / 5.0;
    let mut logits = vec![0.0; rows * v];
    let (mut dh, mut dwte) = (vec![0.0; rows * d], vec![0.0; v * d]);
    let sum = crossentropy::forward_backward(
        Gemm::Fp32,
        &mut dh,
        &mut dwte,
        &mut logits,
        &h,
        &wte,
        &targets,
        d,
        scale,
    );
    let loss = |h: &[f32], wte: &[f32]| {
        let mut lp = vec![0.0; rows];
        let mut lg = vec![0.0; rows * v];
        crossentropy::logprobs(Gemm::Fp32, &mut lp, &mut lg, h, wte, &targets, d);
        -lp.iter().map(|&x| x as f64).sum::<f64>() * scale as f64
    };
    assert!((sum * scale as f64 - loss(&h, &wte)).abs() < 1e-5);
    let w0 = wte.clone();
    check_grad(&mut h, &dh, 48, 1e-2, 2e-2, |h| loss(h, &w0));
    let h0 = h.clone();
    check_grad(&mut wte, &dwte, 104, 1e-2, 2e-2, |w| loss(&h0, w));
}

#[test]
fn embedding_gradients() {
    let (t, d, v, p) = (3, 5, 7, 4);
    let ids: Vec<u32> = vec![1, 6, 1, 0, 2, 6];
    let mut wte = rand_vec(v * d, 12);
    let mut wpe = rand_vec(p * d, 13);
    let w = rand_vec(ids.len() * d, 14);
    let (mut dwte, mut dwpe) = (vec![0.0; v * d], vec![0.0; p * d]);
    embedding::backward(&mut dwte, &mut dwpe, &w, &ids, t, d);
    let fwd = |wte: &[f32], wpe: &[f32]| {
        let mut o = vec![0.0; ids.len() * d];
        embedding::forward(&mut o, &ids, wte, wpe, t, d);
        dot(&o, &w)
    };
    let p0 = wpe.clone();
    check_grad(&mut wte, &dwte, 35, 1e-2, 1e-2, |x| fwd(x, &p0));
    let t0 = wte.clone();
    check_grad(&mut wpe, &dwpe, 20, 1e-2, 1e-2, |x| fwd(&t0, x));
}

#[test]
fn lstm_cell_gradients() {
    // loss = h·wh + c·wc after one step from c_prev: the cell's backward gives ∂/∂gates
    // (pre-activation) and ∂/∂c_prev.
    let (b, hid) = (3, 5);
    let mut pre = rand_vec(b * 4 * hid, 20);
    let mut cp = rand_vec(b * hid, 21);
    let (wh, wc) = (rand_vec(b * hid, 22), rand_vec(b * hid, 23));
    let run = |pre: &[f32], cp: &[f32]| {
        let (mut g, mut c, mut h) = (pre.to_vec(), vec![0.0; b * hid], vec![0.0; b * hid]);
        lstm::cell_forward(&mut g, &mut c, &mut h, Some(cp), hid);
        (g, c, h)
    };
    let (g, c, _) = run(&pre, &cp);
    let (mut dg, mut dc) = (vec![0.0; b * 4 * hid], wc.clone());
    let zero = vec![0.0; b * hid];
    lstm::cell_backward(&mut dg, &mut dc, &wh, &g, &c, Some(&cp), hid);
    let loss = |pre: &[f32], cp: &[f32]| {
        let (_, c, h) = run(pre, cp);
        dot(&h, &wh) + dot(&c, &wc)
    };
    let cp0 = cp.clone();
    check_grad(&mut pre, &dg, 60, 1e-2, 1e-2, |x| loss(x, &cp0));
    let p0 = pre.clone();
    check_grad(&mut cp, &dc, 15, 1e-2, 1e-2, |x| loss(&p0, x));
    // The first step (no previous cell) is the same with c_prev = 0.
    let (mut g1, mut c1, mut h1) = (pre.clone(), vec![0.0; b * hid], vec![0.0; b * hid]);
    lstm::cell_forward(&mut g1, &mut c1, &mut h1, None, hid);
    let (_, c0, h0) = run(&pre, &zero);
    assert_eq!((c1, h1), (c0, h0));
}

#[test]
fn embedding_gather_scatter() {
    let (d, v) = (70, 6); // more than one 64-column block
    let ids: Vec<u32> = vec![5, 0, 5, 2];
    let mut table = rand_vec(v * d, 30);
    let w = rand_vec(ids.len() * d, 31);
    let mut dt = vec![0.0; v * d];
    embedding::scatter_add(&mut dt, &w, &ids, d);
    check_grad(&mut table, &dt, 120, 1e-2, 1e-2, |t| {
        let mut o = vec![0.0; ids.len() * d];
        embedding::gather(&mut o, t, &ids, d);
        dot(&o, &w)
    });
}
