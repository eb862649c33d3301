//! Times the fp32 products of an LSTM time step at H = 1,024 and a batch of 8, medians of 15:
//! the forward `h · W_hhᵀ` and the backward `dG · W_hh`, the latter against `W_hh` itself and
//! against the transposed copy the CPU backend makes once per pass (docs/lstm.md).
//! `cargo run --release --example lstm_products_probe`; `GPT1_GEMV=portable` runs the portable
//! dot products instead of the register-blocked ones, to compare.
use gpt1::kernels::gemm::{Mat, matmul, transpose};
use std::time::Instant;

fn med(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut v: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[7]
}

fn main() {
    let (b, h) = (8usize, 1024usize);
    let w: Vec<f32> = (0..4 * h * h).map(|i| ((i % 29) as f32 - 14.0) * 1e-3).collect(); // [4H, H]
    let x: Vec<f32> = (0..b * 4 * h).map(|i| ((i % 13) as f32) * 0.1).collect();
    let mut c = vec![0.0f32; b * 4 * h];
    let gf = 2.0 * (b * 4 * h * h) as f64 / 1e9;
    let fwd = med(|| matmul(&mut c, Mat::rows(&x[..b * h], h), Mat::t(&w, h), b, 4 * h, h, false));
    println!(
        "h·W_hhᵀ   [{b}, {h}] × [{h}, {}]ᵀ: {:.3} ms, {:.1} GFLOP/s",
        4 * h,
        fwd * 1e3,
        gf / fwd
    );
    let bwd = med(|| matmul(&mut c, Mat::rows(&x, 4 * h), Mat::rows(&w, h), b, h, 4 * h, false));
    println!("dG·W_hh   W_hh row-major:        {:.3} ms, {:.1} GFLOP/s", bwd * 1e3, gf / bwd);
    let t0 = Instant::now();
    let mut wt = vec![0.0f32; 4 * h * h];
    transpose(&mut wt, &w, 4 * h, h);
    let tt = t0.elapsed().as_secs_f64();
    let bwd_t =
        med(|| matmul(&mut c, Mat::rows(&x, 4 * h), Mat::t(&wt, 4 * h), b, h, 4 * h, false));
    println!(
        "dG·W_hh   W_hh's transposed copy: {:.3} ms, {:.1} GFLOP/s (the copy: {:.2} ms once)",
        bwd_t * 1e3,
        gf / bwd_t,
        tt * 1e3
    );
}
