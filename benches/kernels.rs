//! `cargo bench --bench kernels`: GFLOP/s of the matrix products of a gpt1 (4 × 512) training
//! step, in each layout the model uses (median of 5 runs), for the fp32 product and each bf16
//! version this CPU runs (`src/kernels/gemm/`).

use gpt1::kernels::attention::{self, Dims};
use gpt1::kernels::dropout::Dropout;
use gpt1::kernels::gemm::{
    Gemm, Mat, Par, Version, best_version, kernel_peak_gflops, matmul, matmul_bf16,
};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time(mut f: impl FnMut()) -> f64 {
    let mut times = Vec::new();
    for _ in 0..6 {
        let t0 = Instant::now();
        f();
        times.push(t0.elapsed().as_secs_f64());
    }
    times.remove(0);
    median(times)
}

fn main() {
    let (bt, d, v) = (2048, 768, 40_481);
    // (label, m, n, k, a transposed, b transposed)
    let shapes = [
        ("qkv forward      x·W", bt, 3 * d, d, false, false),
        ("qkv input grad   dY·Wᵀ", bt, d, 3 * d, false, true),
        ("qkv weight grad  Xᵀ·dY", d, 3 * d, bt, true, false),
        ("fc forward       x·W", bt, 4 * d, d, false, false),
        ("head logits      h·Wteᵀ", 512, v, d, false, true),
        ("head input grad  dL·Wte", 512, d, v, false, false),
        ("head weight grad dLᵀ·h", v, d, 512, true, false),
    ];
    let mut versions = vec![best_version()];
    if best_version() == Version::Amx {
        versions.push(Version::Avx512);
    }
    if best_version() != Version::Emulated {
        versions.push(Version::Emulated);
    }
    print!("{:28} {:>6} {:>6} {:>6} {:>10}", "product", "m", "n", "k", "fp32");
    for ver in &versions {
        print!(" {:>12}", format!("bf16 {ver:?}"));
    }
    let peak = kernel_peak_gflops(best_version());
    if peak.is_some() {
        print!(" {:>8}", "of peak");
    }
    println!("   (GFLOP/s, {} threads)", rayon::current_num_threads());
    for (label, m, n, k, ta, tb) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        let mut c = vec![0.0f32; m * n];
        let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
        let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
        let flops = 2.0 * (m * n * k) as f64;
        let fp32 = flops / time(|| matmul(&mut c, am, bm, m, n, k, false)) / 1e9;
        print!("{label:28} {m:>6} {n:>6} {k:>6} {fp32:>10.1}");
        let mut best = 0.0;
        for &ver in &versions {
            let g = flops
                / time(|| matmul_bf16(ver, &mut c, n, am, bm, m, n, k, false, Par::Pool))
                / 1e9;
            if ver == best_version() {
                best = g;
            }
            print!(" {g:>12.1}");
        }
        if let Some(p) = peak {
            print!(" {:>7.0} %", 100.0 * best / p);
        }
        println!();
    }
    // Attention of one gpt1 layer (4 × 512, 12 heads of 64): per-head causal products inside
    // the parallel loop over heads, with dropout, forward then backward.
    let s = Dims { b: 4, t: 512, h: 12, dh: 64 };
    let (d, tt) = (s.d(), s.b * s.h * s.t * s.t);
    let qkv: Vec<f32> = (0..s.b * s.t * 3 * d).map(|i| ((i % 17) as f32 - 8.0) * 0.05).collect();
    let dy: Vec<f32> = (0..s.b * s.t * d).map(|i| ((i % 11) as f32 - 5.0) * 0.01).collect();
    let (mut y, mut att, mut sc) = (vec![0.0; s.b * s.t * d], vec![0.0; tt], vec![0.0; tt]);
    let mut dqkv = vec![0.0; qkv.len()];
    // Causal products: half of the 4 · T² · dh multiply-adds per head forward, twice that back.
    let flops = 3.0 * 2.0 * 2.0 * (s.b * s.h * s.t * s.t * s.dh) as f64;
    print!("{:28} {:>6} {:>6} {:>6}", "attention fwd+bwd (causal)", s.b * s.h, s.t, s.dh);
    let drop = Dropout::new(0.1, 1);
    let mut gemms = vec![Gemm::Fp32];
    gemms.extend(versions.iter().map(|&v| Gemm::Bf16(v)));
    for g in gemms {
        let secs = time(|| {
            attention::forward(g, &mut y, &mut att, &mut sc, &qkv, s, drop);
            attention::backward(g, &mut dqkv, &mut sc, &dy, &qkv, &att, s, drop);
        });
        print!(" {:>12.1}", flops / secs / 1e9);
    }
    println!();
    if let Some(p) = peak {
        println!(
            "peak: the {:?} micro-kernel alone on L1-resident panels, every thread at once: {p:.1} GFLOP/s",
            best_version()
        );
    }
}
