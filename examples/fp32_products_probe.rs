//! Times the fp32 products of a gpt1 training step (4 × 512) and of the LSTM baseline's softmax
//! layer, medians of 7, GFLOP/s, then gpt1's own AVX2 micro-kernel alone. The products run on
//! the `gemm` crate, or on the own kernel with `GPT1_FP32=avx2` (docs/benchmarks.md).
//! `cargo run --release --example fp32_products_probe`.
use gpt1::bench::kernels::STEP_PRODUCTS;
use gpt1::kernels::gemm::{Mat, matmul, own_kernel_peak_gflops};
use std::time::Instant;

fn med(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[3]
}

fn main() {
    let (bt, d, v) = (2048, 768, 40_481);
    // The step's products, then two more: (label, m, n, k, a transposed, b transposed).
    let more =
        [("proj input grad", bt, d, d, false, true), ("LSTM logits", 1024, v, 256, false, true)];
    let mut total = 0.0;
    for (label, m, n, k, ta, tb) in STEP_PRODUCTS.into_iter().chain(more) {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        let mut c = vec![0.0f32; m * n];
        let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
        let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
        let s = med(|| matmul(&mut c, am, bm, m, n, k, false));
        total += s;
        println!(
            "{label:<26} {m:>6} {n:>6} {k:>6}  {:7.1} GFLOP/s",
            2.0 * (m * n * k) as f64 / s / 1e9
        );
    }
    println!("sum of medians: {:.1} ms", total * 1e3);
    if let Some(peak) = own_kernel_peak_gflops() {
        println!("own AVX2 micro-kernel, panels in L1, all threads: {peak:.1} GFLOP/s");
    }
}
