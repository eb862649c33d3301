//! Pinned weights: the registry of kept bf16 panels, looked up by the register kernels'
//! driver (AVX-512 BF16, the widening kernels) and AMX (which shares AVX-512 BF16's panels).

use super::panels::Panels;
use super::{Mat, last_index};

/// Weights pinned for inference: while a [`Pinned`] lives, products whose `b` operand lies
/// inside its range keep `b`'s packed bf16 panels and reuse them, call after call, instead of
/// converting and packing the fp32 weights each time (a decode step reads half the bytes). The
/// guard borrows the weights, so they cannot change while their packing is kept; the results
/// are bitwise those of unpinned products (the same panels).
pub struct Pinned<'a> {
    id: u64,
    _weights: std::marker::PhantomData<&'a [f32]>,
}

struct Pin {
    id: u64,
    /// Byte addresses `start..end` of the pinned weights.
    range: std::ops::Range<usize>,
    /// Each product's panels, keyed by where and how it reads `b`, with the bits of a sample of
    /// `b`'s elements when they were packed.
    panels: Vec<(PanelKey, Sample, std::sync::Arc<Panels>)>,
}

/// The bits of 16 elements spread over a `b` operand.
type Sample = [u32; 16];

fn sample(b: Mat, k: usize, n: usize) -> Sample {
    std::array::from_fn(|i| {
        let (p, j) = ((i * 7 + 3) % 16, i);
        b.data[(p * k / 16) * b.rs + (j * n / 16) * b.cs].to_bits()
    })
}

/// A `b` operand: its first element's address, strides and shape, and the packing its panels
/// are in (a kernel's `Micro::B_PACKING`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct PanelKey {
    packing: u8,
    ptr: usize,
    rs: usize,
    cs: usize,
    k: usize,
    n: usize,
}

static PINS: std::sync::Mutex<Vec<Pin>> = std::sync::Mutex::new(Vec::new());
/// Pins alive: products skip the lock while there are none (training).
static PINNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static NEXT_PIN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn pins() -> std::sync::MutexGuard<'static, Vec<Pin>> {
    PINS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pins `weights` (see [`Pinned`]) until the guard drops; the packing is made at each
/// product's first call (every version but the emulation, which ignores pins).
pub fn pin(weights: &[f32]) -> Pinned<'_> {
    let id = NEXT_PIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = weights.as_ptr() as usize;
    pins().push(Pin {
        id,
        range: start..start + std::mem::size_of_val(weights),
        panels: Vec::new(),
    });
    PINNED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Pinned { id, _weights: std::marker::PhantomData }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        pins().retain(|p| p.id != self.id);
        PINNED.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The packed panels of `b` (`[k, n]`, in the kernel's `packing`) when it lies inside pinned
/// weights: kept ones, or `pack()`'s, kept for the next call. None when `b` is not pinned.
/// Kept panels are used only while a sample of `b`'s elements has the bits it had when they
/// were packed: the borrow makes that certain, and the sample guards against a guard leaked
/// with `mem::forget` whose memory came to hold other weights.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) fn pinned_panels(
    b: Mat,
    k: usize,
    n: usize,
    packing: u8,
    pack: impl FnOnce() -> Panels,
) -> Option<std::sync::Arc<Panels>> {
    if PINNED.load(std::sync::atomic::Ordering::SeqCst) == 0 || k == 0 || n == 0 {
        return None;
    }
    let start = b.data.as_ptr() as usize;
    let end = start + 4 * last_index(k, n, b.rs, b.cs);
    let key = PanelKey { packing, ptr: start, rs: b.rs, cs: b.cs, k, n };
    let id = {
        let pins = pins();
        let pin = pins.iter().find(|p| p.range.start <= start && end <= p.range.end)?;
        let now = sample(b, k, n);
        if let Some((_, _, panels)) = pin.panels.iter().find(|(k, s, _)| *k == key && *s == now) {
            return Some(panels.clone());
        }
        pin.id
    };
    // Packed outside the lock (the packing runs on the pool, whose tasks may take it).
    let panels = std::sync::Arc::new(pack());
    let now = sample(b, k, n);
    if let Some(pin) = pins().iter_mut().find(|p| p.id == id) {
        pin.panels.retain(|(k, _, _)| *k != key);
        pin.panels.push((key, now, panels.clone()));
    }
    Some(panels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{Par, Version, best_version, matmul_bf16};
    use crate::kernels::testutil::rand_vec;

    #[test]
    fn pinned_weights_give_the_unpinned_products_bitwise() {
        let (k, n) = (300, 97);
        let w = rand_vec(k * n + 10, 6);
        for (m, tb) in [(1, false), (5, true), (130, false), (700, true)] {
            let a = rand_vec(m * k, 7);
            let bm = if tb { Mat::t(&w[10..], k) } else { Mat::rows(&w[10..], n) };
            let run = |c0: &[f32]| {
                let mut c = c0.to_vec();
                let am = Mat::rows(&a, k);
                matmul_bf16(best_version(), &mut c, n, am, bm, m, n, k, true, Par::Pool);
                c
            };
            let c0 = rand_vec(m * n, 8);
            let plain = run(&c0);
            let pinned = pin(&w);
            // The first call packs and keeps the panels, the second reads the kept ones.
            let (first, second) = (run(&c0), run(&c0));
            if best_version() != Version::Emulated {
                let kept = pins().iter().find(|p| p.id == pinned.id).map(|p| p.panels.len());
                assert_eq!(kept, Some(1), "m {m}: the panels are kept");
            }
            // By id: a pin another test leaked on purpose may hold a range at this address.
            let id = pinned.id;
            drop(pinned);
            assert!(pins().iter().all(|p| p.id != id), "unpinned");
            for got in [&first, &second] {
                assert!(
                    plain.iter().zip(got).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "m {m} tb {tb}: pinned differs"
                );
            }
        }
    }

    /// A guard leaked with `mem::forget` leaves its range registered; weights changed there
    /// afterwards are packed afresh, not served from the stale panels.
    #[test]
    fn a_leaked_pin_never_serves_stale_panels() {
        let (m, k, n) = (3, 300, 97);
        let a = rand_vec(m * k, 11);
        let mut w = rand_vec(k * n, 12);
        let run = |w: &[f32]| {
            let mut c = vec![0.0; m * n];
            let (am, bm) = (Mat::rows(&a, k), Mat::rows(w, n));
            matmul_bf16(best_version(), &mut c, n, am, bm, m, n, k, false, Par::Pool);
            c
        };
        let pinned = pin(&w);
        run(&w);
        std::mem::forget(pinned);
        w.iter_mut().for_each(|x| *x = 1.5 - *x);
        let after = run(&w);
        let fresh = {
            let copy = w.clone();
            run(&copy)
        };
        assert!(after.iter().zip(&fresh).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
