//! The kernel lab's checks: every version against the definition and the fp32 product, on odd
//! shapes, transposed operands and accumulation; bits across threads and blockings.

use super::*;
use crate::kernels::testutil::rand_vec;

fn check(version: Version, m: usize, n: usize, k: usize, ta: bool, tb: bool, acc: bool) {
    let (a, b) = (rand_vec(m * k, 1), rand_vec(k * n, 2));
    let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
    let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
    let c0 = rand_vec(m * n, 3);
    let (mut got, mut want, mut fp32) = (c0.clone(), c0.clone(), c0.clone());
    matmul_bf16(version, &mut got, n, am, bm, m, n, k, acc, Par::Pool);
    reference(&mut want, n, am, bm, m, n, k, acc);
    matmul(&mut fp32, am, bm, m, n, k, acc);
    let scale = (k as f32).sqrt();
    for i in 0..m * n {
        // Against the definition: only the order of the f32 sums differs.
        assert!(
            (got[i] - want[i]).abs() < 1e-4 * scale,
            "{version:?} {m}x{n}x{k} [{i}] {} vs {}",
            got[i],
            want[i]
        );
        // Against fp32: bf16 inputs carry 8 bits of mantissa.
        assert!(
            (got[i] - fp32[i]).abs() < 2e-2 * scale,
            "{version:?} vs fp32 [{i}] {} vs {}",
            got[i],
            fp32[i]
        );
    }
}

#[test]
#[should_panic(expected = "a too short")]
fn a_short_operand_panics_instead_of_reading_beyond_it() {
    let (a, b) = (vec![1.0f32; 1], vec![1.0f32; 64 * 64]);
    let mut c = vec![0.0f32; 64];
    matmul_bf16(
        best_version(),
        &mut c,
        64,
        Mat::rows(&a, 64),
        Mat::rows(&b, 64),
        1,
        64,
        64,
        false,
        Par::Pool,
    );
}

#[test]
fn bf16_rounding_is_to_nearest_even() {
    assert_eq!(to_bf16(1.0), 0x3F80);
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1.0).
    assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
    assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    assert_eq!(round_bf16(-2.5), -2.5);
}

#[test]
fn every_version_matches_the_definition_on_odd_shapes() {
    let all = Version::ALL.into_iter().filter(|v| v.runs_here());
    for version in [best_version(), Version::Avx512].into_iter().chain(all) {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 40, 7),
            (13, 33, 5),
            (25, 70, 300),
            (97, 257, 258),
            (3, 5, 1),
            (61, 300, 259),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true)] {
                check(version, m, n, k, ta, tb, false);
            }
            check(version, m, n, k, false, false, true);
        }
    }
}

#[test]
fn tiles_of_every_row_count_match_the_definition() {
    // Edge tiles of 1..=12 rows run their own micro-kernel (a decode step's few rows).
    for m in 1..=13 {
        check(best_version(), m, 70, 37, false, true, false);
        check(best_version(), m, 64, 300, false, false, true);
    }
}

#[test]
fn few_rows_run_the_avx512_bf16_product_whatever_the_version() {
    // Meaningful where AMX is used (elsewhere both calls run AVX-512 BF16): a decode
    // step's rows, pinned weights or not, give the AVX-512 kernel's bits.
    if best_version() == Version::Emulated {
        return;
    }
    let (n, k) = (70, 300);
    let w = rand_vec(k * n, 31);
    for m in 1..=FEW_ROWS {
        let a = rand_vec(m * k, 32);
        let run = |v| {
            let mut c = vec![0.0; m * n];
            let (am, bm) = (Mat::rows(&a, k), Mat::rows(&w, n));
            matmul_bf16(v, &mut c, n, am, bm, m, n, k, false, Par::Pool);
            c
        };
        let want = run(Version::Avx512);
        let _pinned = pin(&w);
        for got in [run(best_version()), run(Version::Amx)] {
            assert!(want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits()), "m {m}");
        }
    }
}

#[test]
fn bf16_products_do_not_depend_on_the_thread_count() {
    let (m, n, k) = (200, 300, 260);
    let (a, b) = (rand_vec(m * k, 4), rand_vec(k * n, 5));
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut c = vec![0.0; m * n];
            matmul_bf16(
                best_version(),
                &mut c,
                n,
                Mat::rows(&a, k),
                Mat::rows(&b, n),
                m,
                n,
                k,
                false,
                Par::Pool,
            );
            c
        })
    };
    let one = run(1);
    for t in [2, 3] {
        assert!(one.iter().zip(&run(t)).all(|(x, y)| x.to_bits() == y.to_bits()), "{t} threads");
    }
}

/// The register kernels this CPU runs (the driver's), with the blockings the tuner may give
/// each.
#[cfg(target_arch = "x86_64")]
fn register_kernels() -> Vec<(Version, [Blocking; 5])> {
    let mut v = Vec::new();
    if avx512_bf16() {
        v.push((Version::Avx512, driver::candidates::<avx512::Bf16Dot>()));
    }
    if Version::Fma512.runs_here() {
        v.push((Version::Fma512, driver::candidates::<fma::Fma512>()));
    }
    if Version::Fma256.runs_here() {
        v.push((Version::Fma256, driver::candidates::<fma::Fma256>()));
    }
    v
}

/// Any blocking the tuner may choose, on any thread count, transposed or not, assigning or
/// accumulating: the bits of the rule's product on one thread, for every register kernel.
#[test]
fn every_blocking_the_tuner_may_choose_gives_the_same_bits() {
    #[cfg(target_arch = "x86_64")]
    for (version, candidates) in register_kernels() {
        for &(m, n, k, ta, acc) in &[
            (200, 300, 260, false, false),
            (61, 700, 259, true, true),
            (37, 1100, 300, false, true),
            (5, 2000, 100, false, false),
        ] {
            let (a, b, c0) = (rand_vec(m * k, 4), rand_vec(k * n, 5), rand_vec(m * n, 6));
            let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
            let run = |threads, blocking| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    let (mut c, bm) = (c0.clone(), Mat::rows(&b, n));
                    let cp = c.as_mut_ptr();
                    // SAFETY: the CPU runs the version; the buffers hold the shapes.
                    unsafe { run(version, cp, n, am, bm, (m, n, k), acc, Par::Pool, blocking) };
                    c
                })
            };
            let want = run(1, None);
            for threads in [1, 2, 3] {
                for blocking in candidates {
                    let got = run(threads, Some(blocking));
                    let same = want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{version:?} {m}x{n}x{k}, {threads} threads, {blocking:?}");
                }
            }
        }
    }
}

/// A row of `a` gets the same bits alone (a decode step: `Fma256`'s one-row pass) as among
/// others (a prefill's tiles), `b` row-major or transposed, packed per product or kept for
/// pinned weights, in every register kernel.
#[test]
fn a_row_gets_the_same_bits_alone_or_among_others() {
    #[cfg(target_arch = "x86_64")]
    for (version, _) in register_kernels() {
        // Full k blocks and a partial one, edge panels; 6 rows: a whole tile and an edge.
        let (m, n, k) = (6, 70, 301);
        let (a, b) = (rand_vec(m * k, 21), rand_vec(k * n, 22));
        for tb in [false, true] {
            let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
            let run = |rows: std::ops::Range<usize>| {
                let mut c = vec![0.0; rows.len() * n];
                let am = Mat::rows(&a[rows.start * k..rows.end * k], k);
                matmul_bf16(version, &mut c, n, am, bm, rows.len(), n, k, false, Par::Pool);
                c
            };
            for pinned in [false, true] {
                let _pinned = pinned.then(|| pin(&b));
                let all = run(0..m);
                for r in 0..m {
                    let one = run(r..r + 1);
                    let same =
                        one.iter().zip(&all[r * n..]).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{version:?} row {r}, tb {tb}, pinned {pinned}");
                }
            }
        }
    }
}

/// The two widening kernels add the same products in the same order (an FMA per value, pair
/// after pair, each k block's sum into `c`): the same bits, whole tiles and edges, pinned or
/// not. Both are checked against the definition by the odd-shapes test.
#[test]
fn the_widening_kernels_give_the_same_bits() {
    if !(Version::Fma512.runs_here() && Version::Fma256.runs_here()) {
        return;
    }
    for &(m, n, k, ta, tb, acc) in &[
        (1, 70, 300, false, false, false),
        (3, 2000, 259, false, true, true),
        (61, 700, 259, true, false, true),
        (200, 300, 400, false, true, false),
    ] {
        let (a, b, c0) = (rand_vec(m * k, 7), rand_vec(k * n, 8), rand_vec(m * n, 9));
        let am = if ta { Mat::t(&a, m) } else { Mat::rows(&a, k) };
        let bm = if tb { Mat::t(&b, k) } else { Mat::rows(&b, n) };
        let run = |v| {
            let mut c = c0.clone();
            matmul_bf16(v, &mut c, n, am, bm, m, n, k, acc, Par::Pool);
            c
        };
        let want = run(Version::Fma512);
        let _pinned = pin(&b);
        for v in [Version::Fma256, Version::Fma512, Version::Fma256] {
            let got = run(v);
            let same = want.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{v:?} {m}x{n}x{k} ta {ta} tb {tb}");
        }
    }
}

/// The packing buffers a thread keeps between products (`a`'s and `b`'s) are never read
/// beyond what the packing wrote: after a larger product whose `a` is all NaN, smaller ones
/// with partial k blocks and edge tiles, in every blocking, give the bits of a fresh thread.
#[test]
fn packing_left_by_a_larger_product_is_never_read() {
    #[cfg(target_arch = "x86_64")]
    for (version, candidates) in register_kernels() {
        let shapes = [(5, 64, 301, false), (37, 200, 259, true), (1, 2304, 768, false)];
        // c (+)= a · b, `[m, k]` and `[k, n]`, in every blocking the tuner may choose.
        let products = |a: &[f32], b: &[f32], c0: &[f32], (m, n, k), acc| {
            let (am, bm) = (Mat::rows(a, k), Mat::rows(b, n));
            candidates.map(|blocking| {
                let mut c = c0.to_vec();
                // SAFETY: the CPU runs the version; the buffers hold the shapes.
                unsafe {
                    let (cp, par) = (c.as_mut_ptr(), Par::Pool);
                    run(version, cp, n, am, bm, (m, n, k), acc, par, Some(blocking))
                };
                c
            })
        };
        let cases = |poison: bool| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            pool.install(|| {
                if poison {
                    let (m, n, k) = (300, 700, 1000);
                    let (nan, b) = (vec![f32::NAN; m * k], rand_vec(k * n, 1));
                    products(&nan, &b, &vec![0.0; m * n], (m, n, k), false);
                }
                let mut out = Vec::new();
                for &(m, n, k, acc) in &shapes {
                    let (a, b, c0) = (rand_vec(m * k, 2), rand_vec(k * n, 3), rand_vec(m * n, 4));
                    out.extend(products(&a, &b, &c0, (m, n, k), acc));
                }
                out
            })
        };
        let (fresh, after) = (cases(false), cases(true));
        for (x, y) in fresh.iter().zip(&after) {
            assert!(y.iter().all(|v| v.is_finite()));
            assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn transpose16_transposes() {
    use std::arch::x86_64::*;
    if !avx512_bf16() {
        return;
    }
    let m: Vec<u32> = (0..256).collect();
    // SAFETY: checked above.
    let got = unsafe {
        let mut r = [_mm512_setzero_si512(); 16];
        for (i, ri) in r.iter_mut().enumerate() {
            *ri = _mm512_loadu_si512(m[16 * i..].as_ptr() as *const _);
        }
        pack::transpose16(&mut r);
        let mut out = vec![0u32; 256];
        for (i, ri) in r.iter().enumerate() {
            _mm512_storeu_si512(out[16 * i..].as_mut_ptr() as *mut _, *ri);
        }
        out
    };
    for i in 0..16 {
        for j in 0..16 {
            assert_eq!(got[16 * j + i], m[16 * i + j], "({i}, {j})");
        }
    }
}

/// k = 0: every version assigns zeros (or leaves `c` when accumulating), even when `a` is a
/// strided view that holds no element at all.
#[test]
fn a_product_over_no_k_gives_zeros_in_every_version() {
    let (m, n) = (3, 40);
    for version in Version::ALL.into_iter().filter(|v| v.runs_here()) {
        for acc in [false, true] {
            let mut c = vec![1.5f32; m * n];
            let (a, b) = (Mat::strided(&[], 7, 1), Mat::rows(&[], n));
            matmul_bf16(version, &mut c, n, a, b, m, n, 0, acc, Par::Pool);
            let want = if acc { 1.5 } else { 0.0 };
            assert!(c.iter().all(|&x| x == want), "{version:?} acc {acc}");
        }
    }
}
