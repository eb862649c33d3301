//! The kernel lab's decode probe: one decoded token's weight products at gpt1's size (12
//! layers' `x · W`, then the tied LM head `x · Wteᵀ`), fp32 and bf16 (kept panels, as
//! `generate` pins its weights), each on a spinning team as a decode step runs them, against a
//! plain read of the same weights split into the same products. The variants alternate in
//! every round (this machine is shared), and each line gives the median and quartiles of 15:
//!
//!   cargo run --release --example decode_probe
//!
//! `GPT1_GEMV=portable` runs fp32's portable loops instead of the register blocks, to compare.
use gpt1::bench::sum_lanes as read;
use gpt1::kernels::gemm::{Mat, Par, best_version, matmul, matmul_bf16, pin};
use gpt1::kernels::{on_pool, with_team};
use std::time::Instant;

fn main() {
    on_pool(run);
}

fn run() {
    let (d, v, layers) = (768, 40_481, 12);
    let block = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)];
    let per_layer: usize = block.iter().map(|(k, n)| k * n).sum();
    let body = layers * per_layer;
    let weights: Vec<f32> = (0..body + v * d).map(|i| ((i % 31) as f32 - 15.0) * 1e-3).collect();
    let x = vec![0.01f32; 4 * d];
    let mut y = vec![0.0f32; v];
    let _pinned = pin(&weights);
    // The layers' products (part 1), the LM head (part 2), in fp32 or bf16.
    let mut token = |bf16: bool, part: u8| {
        let mut off = 0;
        for _ in 0..layers {
            for &(k, n) in &block {
                if part == 1 {
                    let (w, xm) = (Mat::rows(&weights[off..off + k * n], n), Mat::rows(&x[..k], k));
                    if bf16 {
                        matmul_bf16(
                            best_version(),
                            &mut y[..n],
                            n,
                            xm,
                            w,
                            1,
                            n,
                            k,
                            false,
                            Par::Pool,
                        )
                    } else {
                        matmul(&mut y[..n], xm, w, 1, n, k, false)
                    }
                }
                off += k * n;
            }
        }
        if part == 2 {
            let (wte, xm) = (Mat::t(&weights[off..off + v * d], d), Mat::rows(&x[..d], d));
            if bf16 {
                matmul_bf16(best_version(), &mut y, v, xm, wte, 1, v, d, false, Par::Pool)
            } else {
                matmul(&mut y, xm, wte, 1, v, d, false)
            }
        }
    };
    let mut sink = 0.0f32;
    let mut reads = |part: u8| {
        let mut off = 0;
        for _ in 0..layers {
            for &(k, n) in &block {
                if part == 1 {
                    sink += read(&weights[off..off + k * n]);
                }
                off += k * n;
            }
        }
        if part == 2 {
            sink += read(&weights[off..]);
        }
    };
    let (layer_mb, head_mb) = (body as f64 * 4e-6, (v * d) as f64 * 4e-6);
    let names = [
        "read, layers' weights (fp32 bytes)",
        "fp32 layers x.W",
        "bf16 layers x.W (kept panels)",
        "read, LM head's weight (fp32 bytes)",
        "fp32 LM head x.Wte^T",
        "bf16 LM head x.Wte^T (kept panels)",
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..16 {
        let mut timed = |i: usize, mb: f64, f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            if round > 0 {
                rates[i].push(mb / 1e3 / t.elapsed().as_secs_f64());
            }
        };
        timed(0, layer_mb, &mut || reads(1));
        timed(1, layer_mb, &mut || with_team(|| token(false, 1)));
        timed(2, layer_mb / 2.0, &mut || with_team(|| token(true, 1)));
        timed(3, head_mb, &mut || reads(2));
        timed(4, head_mb, &mut || with_team(|| token(false, 2)));
        timed(5, head_mb / 2.0, &mut || with_team(|| token(true, 2)));
    }
    std::hint::black_box(sink);
    println!(
        "{} threads, bf16 version {:?}; GB/s over 15 rounds",
        rayon::current_num_threads(),
        best_version()
    );
    for (name, mut r) in names.iter().zip(rates) {
        r.sort_by(|a, b| a.total_cmp(b));
        let q = |f: f64| r[((r.len() - 1) as f64 * f).round() as usize];
        println!("{name:38} median {:5.1} (quartiles {:5.1} {:5.1})", q(0.5), q(0.25), q(0.75));
    }
}
