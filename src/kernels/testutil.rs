//! Helpers for kernel tests: random data, a naive product, finite differences.

use super::gemm::Mat;
use super::rng;

/// Whether `a` and `b` hold the same values bit for bit (signed zeros and NaNs included).
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| rng::normal(seed, i as u64) as f32).collect()
}

pub fn naive_matmul(a: Mat, b: Mat, m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

/// Checks `analytic` against central differences of `loss` with respect to `x`, on up to
/// `samples` evenly spread coordinates. The loss is evaluated in f64 by the caller.
pub fn check_grad(
    x: &mut [f32],
    analytic: &[f32],
    samples: usize,
    eps: f32,
    tol: f64,
    mut loss: impl FnMut(&[f32]) -> f64,
) {
    let n = x.len();
    let step = (n / samples.max(1)).max(1);
    let mut worst = 0.0f64;
    for i in (0..n).step_by(step) {
        let orig = x[i];
        x[i] = orig + eps;
        let lp = loss(x);
        x[i] = orig - eps;
        let lm = loss(x);
        x[i] = orig;
        let num = (lp - lm) / (2.0 * eps as f64);
        let a = analytic[i] as f64;
        let err = (num - a).abs() / (num.abs().max(a.abs()).max(1e-2));
        worst = worst.max(err);
        assert!(err < tol, "coordinate {i}: numeric {num} analytic {a} (rel err {err})");
    }
    assert!(worst.is_finite());
}

/// Σ out ⊙ w in f64: a scalar loss with a known gradient `w` with respect to `out`.
pub fn dot(out: &[f32], w: &[f32]) -> f64 {
    out.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
}
