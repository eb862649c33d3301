//! The few-row products against the definition, across thread counts, and each SIMD version
//! against the portable loops, bitwise.
use super::super::{Mat, Par};
use super::*;

/// The definition in f64.
fn reference(a: Mat, b: Mat, m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for r in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|p| a.data[r * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64)
                .sum();
            c[r * n + j] = s as f32;
        }
    }
    c
}

/// The row-major path's defined order, written plainly: per block of ROWS_K rows a
/// running fused sum from 0, then the blocks added in order.
fn in_block_order(a: Mat, b: Mat, m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for r in 0..m {
        for j in 0..n {
            let mut total = 0.0f32;
            for (bi, k0) in (0..k).step_by(ROWS_K).enumerate() {
                let mut s = 0.0f32;
                for p in k0..(k0 + ROWS_K).min(k) {
                    s = a.data[r * a.rs + p * a.cs].mul_add(b.data[p * b.rs + j * b.cs], s);
                }
                total = if bi == 0 { s } else { total + s };
            }
            c[r * n + j] = total;
        }
    }
    c
}

/// Against the definition (f64 sums) on odd shapes, both layouts of `b`, accumulating or
/// not, and bitwise the same on one thread and on the pool.
#[test]
fn gemv_matches_the_definition_and_any_thread_count() {
    let shapes = [(1, 4099, 37), (3, 1000, 300), (4, 33, 2049), (2, 4096, 768), (8, 129, 1030)];
    for &(m, n, k) in shapes.iter().chain(&[(13, 170, 395), (64, 300, 230)]) {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.01).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 13 % 31) as f32 - 15.0) * 0.01).collect();
        // Beyond MAX_ROWS only a transposed b takes this path.
        for t in [false, true].into_iter().filter(|&t| t || m <= MAX_ROWS) {
            // The same operand values either way: b(kk, j) = w[kk * n + j].
            let stored: Vec<f32> =
                if t { (0..n * k).map(|i| w[(i % k) * n + i / k]).collect() } else { w.clone() };
            let bm = if t { Mat::t(&stored, k) } else { Mat::rows(&stored, n) };
            assert!(applies(m, n, k, bm));
            let am = Mat::rows(&a, k);
            let want = reference(am, bm, m, n, k);
            for acc in [false, true] {
                let mut one = vec![0.5f32; m * n];
                let mut pool = vec![0.5f32; m * n];
                // SAFETY: dense buffers of the shapes given.
                unsafe {
                    gemv(one.as_mut_ptr(), n, am, bm, m, n, k, acc, Par::Single);
                    gemv(pool.as_mut_ptr(), n, am, bm, m, n, k, acc, Par::Pool);
                }
                assert!(one.iter().zip(&pool).all(|(x, y)| x.to_bits() == y.to_bits()));
                if !t && !acc {
                    let order = in_block_order(am, bm, m, n, k);
                    assert!(one.iter().zip(&order).all(|(x, y)| x.to_bits() == y.to_bits()));
                }
                for (i, (&g, &r)) in one.iter().zip(&want).enumerate() {
                    let r = r + if acc { 0.5 } else { 0.0 };
                    assert!((g - r).abs() <= 1e-4 * (1.0 + r.abs()), "{m}x{n}x{k} t={t} {i}");
                }
            }
        }
    }
}

/// Each row of `a` gets the same bits whatever other rows share the product (decoding's
/// `--num` rows, the LSTM's batch): a product of `m` rows, row by row, against products of
/// one row, both layouts, on the pool.
#[test]
fn a_row_gets_the_same_bits_alone_or_among_others() {
    let (n, k) = (301, 517);
    for m in [2, 5, 8, 17] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 11 % 29) as f32 - 14.0) * 0.013).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 37) as f32 - 18.0) * 0.007).collect();
        for t in [false, true].into_iter().filter(|&t| t || m <= MAX_ROWS) {
            let bm = if t { Mat::t(&w, k) } else { Mat::rows(&w, n) };
            let mut all = vec![0.0f32; m * n];
            // SAFETY: dense buffers of the shapes given.
            unsafe { gemv(all.as_mut_ptr(), n, Mat::rows(&a, k), bm, m, n, k, false, Par::Pool) };
            for r in 0..m {
                let mut one = vec![0.0f32; n];
                let ar = Mat::rows(&a[r * k..(r + 1) * k], k);
                // SAFETY: as above.
                unsafe { gemv(one.as_mut_ptr(), n, ar, bm, 1, n, k, false, Par::Pool) };
                let same = one.iter().zip(&all[r * n..]).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "m {m} t {t} row {r}");
            }
        }
    }
}

/// The AVX-512 and AVX2 dot products give the portable loop's bits, element for element,
/// on shapes with every kind of edge (rows past a register block, an odd last stored row,
/// `k` past 16 and past 8), and a row of `-0.0`.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_simd_dots_give_the_portable_bits() {
    for version in versions_here() {
        check_dots(version);
    }
}

/// The register-blocked versions this CPU runs (each one this CPU lacks named as skipped).
#[cfg(target_arch = "x86_64")]
fn versions_here() -> Vec<Dots> {
    let here = |v: Dots| match v {
        Dots::Avx512 => avx512::available(),
        Dots::Avx2 => avx2::available(),
    };
    let (run, skip): (Vec<Dots>, Vec<Dots>) =
        [Dots::Avx512, Dots::Avx2].into_iter().partition(|&v| here(v));
    for v in skip {
        eprintln!("{v:?} skipped: this CPU lacks it");
    }
    run
}

#[cfg(target_arch = "x86_64")]
fn check_dots(version: Dots) {
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 17, 15),
        (2, 5, 31),
        (3, 64, 33),
        (4, 9, 16),
        (5, 65, 64),
        (6, 7, 40),
        (7, 12, 17),
        (8, 130, 47),
        (9, 3, 100),
        (10, 5, 70),
        (12, 8, 33),
        (4, 5, 8),
        (5, 4, 9),
        (3, 3, 24),
        (7, 5, 1030),
    ] {
        let mut xs: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 19) as f32 - 9.0) * 0.03).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 3 % 23) as f32 - 11.0) * 0.05).collect();
        xs[..k].iter_mut().for_each(|x| *x = -0.0);
        // Transposed: w read as n stored rows of k.
        let want: Vec<f32> =
            (0..m * n).map(|i| dot(&xs[i / n * k..][..k], &w[i % n * k..][..k])).collect();
        let got = std::sync::Mutex::new(vec![2.0f32; m * n]);
        let put = |r: usize, j: usize, v: f32| got.lock().unwrap()[r * n + j] = v;
        // SAFETY: the version's features checked; the buffers hold the shapes.
        unsafe {
            match version {
                Dots::Avx512 => avx512::dots(&put, &xs, k, w.as_ptr(), k, (0, n), m),
                Dots::Avx2 => avx2::dots(&put, &xs, k, w.as_ptr(), k, (0, n), m),
            }
        }
        let got = got.into_inner().unwrap();
        assert!(
            want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{version:?} dots {m}x{n}x{k}"
        );
    }
}

/// The AVX-512 and AVX2 partial sums of a row-major `b` (1–4 rows) against the portable loop's,
/// bitwise: a block's first rows and later ones, whole steps of four rows and the 1–3 left,
/// columns past the last 16 and the last 8.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_simd_partial_sums_give_the_portable_bits() {
    let (k, ns) = (140, [37, 8, 3]);
    let xs: Vec<f32> = (0..4 * k).map(|i| ((i * 7 % 19) as f32 - 9.0) * 0.03).collect();
    for version in versions_here() {
        for n in ns {
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 3 % 23) as f32 - 11.0) * 0.05).collect();
            let b = Mat::rows(&w, n);
            for m in 1..=MAX_ROWS {
                for rows in [(0, 64), (64, 128), (128, 131), (130, 140), (5, 6)] {
                    let mut want = vec![3.0f32; m * n];
                    rows_block(&mut want, &xs, k, b, rows, m, n);
                    let mut got = vec![3.0f32; m * n];
                    let (g, x, wp) = (&mut got[..], &xs[..], w.as_ptr());
                    // SAFETY: the version's features checked; the buffers hold the shapes.
                    unsafe {
                        match (version, m) {
                            (Dots::Avx512, 1) => avx512::rows_block::<1>(g, x, k, wp, n, rows, n),
                            (Dots::Avx512, 2) => avx512::rows_block::<2>(g, x, k, wp, n, rows, n),
                            (Dots::Avx512, 3) => avx512::rows_block::<3>(g, x, k, wp, n, rows, n),
                            (Dots::Avx512, _) => avx512::rows_block::<4>(g, x, k, wp, n, rows, n),
                            (Dots::Avx2, 1) => avx2::rows_block::<1>(g, x, k, wp, n, rows, n),
                            (Dots::Avx2, 2) => avx2::rows_block::<2>(g, x, k, wp, n, rows, n),
                            (Dots::Avx2, 3) => avx2::rows_block::<3>(g, x, k, wp, n, rows, n),
                            (Dots::Avx2, _) => avx2::rows_block::<4>(g, x, k, wp, n, rows, n),
                        }
                    }
                    let same = want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{version:?} {m} rows, n {n}, b's rows {rows:?}");
                }
            }
        }
    }
}

/// `transpose` puts every element where the definition says, on shapes past and short of
/// its 32 × 32 tiles, on one thread (small) and on the pool (from 64k elements).
#[test]
fn transpose_matches_the_definition() {
    for &(rows, cols) in &[(1, 1), (3, 70), (33, 31), (64, 32), (4096, 17), (300, 301)] {
        let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let mut t = vec![-1.0f32; rows * cols];
        transpose(&mut t, &w, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], w[r * cols + c], "[{rows}, {cols}] at ({r}, {c})");
            }
        }
    }
}

/// Which products take this path: few rows, weights big enough, `b` contiguous along one
/// axis; row-major `b` only up to [`MAX_ROWS`] rows, and from 5 rows on only weight-sized
/// operands (attention's score blocks stay with the `gemm` crate).
#[test]
fn applies_takes_few_rows_against_weights_only() {
    let w = vec![0.0f32; 1 << 20];
    let (rm, t) = (|n| Mat::rows(&w, n), |k| Mat::t(&w, k));
    assert!(applies(4, 1024, 1024, rm(1024)) && !applies(5, 1024, 1024, rm(1024)));
    assert!(applies(64, 1024, 1024, t(1024)) && !applies(65, 1024, 1024, t(1024)));
    // A causal score block: 64 queries against 512 keys of 64, K read in place.
    assert!(!applies(64, 512, 64, Mat::strided(&w, 1, 2304)));
    assert!(applies(4, 512, 64, Mat::strided(&w, 1, 2304)));
    assert!(!applies(1, 100, 100, rm(100)), "too small to be worth threads");
    assert!(!applies(2, 64, 64, Mat::strided(&w, 128, 2)), "no contiguous axis");
}

/// A strided `a` (gathered into the thread's buffer) and a single row with a row stride
/// (read in place) give the bits of the same values laid out densely.
#[test]
fn a_strided_a_gives_the_dense_bits() {
    let (n, k) = (300, 400);
    let w: Vec<f32> = (0..k * n).map(|i| ((i * 3 % 29) as f32 - 14.0) * 0.01).collect();
    for m in [1, 3, 6] {
        let dense: Vec<f32> = (0..m * k).map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.02).collect();
        // The same values as a's transpose stored (column-major a), and with a row stride.
        let cm: Vec<f32> = (0..k * m).map(|i| dense[(i % m) * k + i / m]).collect();
        let mut wide = vec![9.0f32; m * (k + 7)];
        for r in 0..m {
            wide[r * (k + 7)..r * (k + 7) + k].copy_from_slice(&dense[r * k..(r + 1) * k]);
        }
        for bm in [Mat::rows(&w, n), Mat::t(&w, k)] {
            if bm.cs == 1 && m > MAX_ROWS {
                continue;
            }
            let run = |a: Mat| {
                let mut c = vec![0.0f32; m * n];
                // SAFETY: dense buffers of the shapes given.
                unsafe { gemv(c.as_mut_ptr(), n, a, bm, m, n, k, false, Par::Pool) };
                c
            };
            let want = run(Mat::rows(&dense, k));
            for a in [Mat::t(&cm, m), Mat::strided(&wide, k + 7, 1)] {
                let got = run(a);
                assert!(want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()), "m {m}");
            }
        }
    }
}
