//! `cargo bench --bench kernels`: the kernel lab (`gpt1 bench kernels` in the release binary,
//! `src/bench/kernels.rs`): GFLOP/s of the matrix products of a gpt1 (4 × 512) training step in
//! fp32 and each bf16 version this CPU runs (median of 5 runs), micro-kernel peaks, one layer's
//! attention, memory bandwidth and the decode rate.

fn main() {
    print!("{}", gpt1::bench::kernels::text(&gpt1::bench::kernels::kernels(5)));
}
