//! AMX kernel lab probe: the tile micro-kernel's peak (three times: the tile units run slowly
//! for their first milliseconds), then the bf16 products of a gpt1 training step (4 × 512) on
//! AMX, `b` packed per product and kept (pinned), GFLOP/s over 9 runs: the first, the median
//! and the best. On a CPU without AMX the products run the version that stands in for it.
//! `cargo run --release --example amx_probe`.
use gpt1::bench::kernels::STEP_PRODUCTS;
use gpt1::kernels::gemm::{Mat, Par, Version, kernel_peak_gflops, matmul_bf16, pin};
use std::time::Instant;

fn main() {
    match kernel_peak_gflops(Version::Amx) {
        Some(first) => {
            let more = [(); 2].map(|_| kernel_peak_gflops(Version::Amx).unwrap_or(0.0));
            println!(
                "AMX micro-kernel, all threads: {first:.0} {:.0} {:.0} GFLOP/s",
                more[0], more[1]
            );
        }
        None => println!(
            "no AMX here: the products below run {:?}",
            gpt1::kernels::gemm::best_version()
        ),
    }
    println!(
        "{:<24} {:>6} {:>6} {:>6}  {:>17}  {:>17}",
        "", "m", "n", "k", "packed: 1st/med/max", "kept: 1st/med/max"
    );
    for (label, m, n, k, ta, tb) in STEP_PRODUCTS {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        let mut c = vec![0.0f32; m * n];
        let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
        let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
        let rates = |c: &mut [f32]| {
            let mut r: Vec<f64> = (0..9)
                .map(|_| {
                    let t = Instant::now();
                    matmul_bf16(Version::Amx, c, n, am, bm, m, n, k, false, Par::Pool);
                    2.0 * (m * n * k) as f64 / t.elapsed().as_secs_f64() / 1e9
                })
                .collect();
            let first = r[0];
            r.sort_by(|x, y| x.total_cmp(y));
            format!("{first:5.0} {:5.0} {:5.0}", r[4], r[8])
        };
        let packed = rates(&mut c);
        let kept = {
            let _pinned = pin(&b);
            rates(&mut c)
        };
        println!("{label:<24} {m:>6} {n:>6} {k:>6}  {packed:>19}  {kept:>17}");
    }
}
