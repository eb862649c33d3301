//! Times the pieces of one tiny-model layer's forward at 8 × 128 (eval): which part of a short
//! forward pass is not matrix products.
use gpt1::kernels::dropout::Dropout;
use gpt1::kernels::gemm::{Mat, matmul};
use gpt1::kernels::{gelu, layernorm};
use std::time::Instant;

fn time(label: &str, mut f: impl FnMut()) {
    for _ in 0..3 {
        f();
    }
    let t0 = Instant::now();
    for _ in 0..50 {
        f();
    }
    println!("{label:28} {:.3} ms", t0.elapsed().as_secs_f64() * 1e3 / 50.0);
}

fn main() {
    let (rows, d) = (1024, 256);
    let x: Vec<f32> = (0..rows * d).map(|i| ((i % 13) as f32) * 0.1).collect();
    let w: Vec<f32> = (0..d * 4 * d).map(|i| ((i % 7) as f32) * 0.01).collect();
    let b = vec![0.1f32; 4 * d];
    let mut out = vec![0.0f32; rows * 4 * d];
    time("bias fill 1024x1024", || out.chunks_mut(4 * d).for_each(|r| r.copy_from_slice(&b)));
    time("matmul 1024x1024x256 acc", || {
        matmul(&mut out, Mat::rows(&x, d), Mat::rows(&w, 4 * d), rows, 4 * d, d, true)
    });
    time("matmul 1024x1024x256", || {
        matmul(&mut out, Mat::rows(&x, d), Mat::rows(&w, 4 * d), rows, 4 * d, d, false)
    });
    let mut g = vec![0.0f32; rows * 4 * d];
    time("gelu 1M", || gelu::forward(&mut g, &out));
    let (mut y, mut m, mut r) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
    let ones = vec![1.0f32; d];
    let zeros = vec![0.0f32; d];
    time("layernorm 1024x256", || {
        layernorm::forward(&mut y, &mut m, &mut r, &x, &ones, &zeros, d, 1e-5)
    });
    let mut z = vec![0.0; rows * d];
    time("residual (no dropout)", || Dropout::OFF.residual(&mut z, &x, &y));
}
