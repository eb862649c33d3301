//! Times fp32 and bf16 products of a gpt1 layer's weights at few rows (a prefill, a short
//! evaluation batch), medians of 9: `cargo run --release --example few_rows_probe`, and with
//! `GPT1_SPLIT=off` to compare the `gemm` crate's own threading (docs/decoding.md).
use gpt1::kernels::gemm::{Mat, Par, best_version, matmul, matmul_bf16};
use std::time::Instant;

fn med(mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut v: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[4]
}

fn main() {
    let ver = best_version();
    for &(n, k) in &[(2304usize, 768usize), (768, 768), (3072, 768), (768, 3072)] {
        let w: Vec<f32> = (0..n * k).map(|i| ((i % 7) as f32) * 0.01).collect();
        for &m in &[16usize, 64, 128, 512] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32) * 0.1).collect();
            let mut c = vec![0.0f32; m * n];
            let f = 2.0 * (m * n * k) as f64 / 1e9;
            let t32 = med(|| matmul(&mut c, Mat::rows(&x, k), Mat::rows(&w, n), m, n, k, false));
            let t16 = med(|| {
                matmul_bf16(
                    ver,
                    &mut c,
                    n,
                    Mat::rows(&x, k),
                    Mat::rows(&w, n),
                    m,
                    n,
                    k,
                    false,
                    Par::Pool,
                )
            });
            println!(
                "m {m:4} n {n:5} k {k:5}: fp32 {:.3} ms {:.0} GFLOP/s, bf16 {:.3} ms {:.0} GFLOP/s",
                t32 * 1e3,
                f / t32,
                t16 * 1e3,
                f / t16
            );
        }
    }
}
