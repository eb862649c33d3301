//! GELU, tanh approximation (HF's `gelu_new`, the `afn: "gelu"` of OpenAIGPT).

use rayon::prelude::*;

const S: f32 = 0.797_884_6; // sqrt(2 / pi)
const C: f32 = 0.044_715;
const CHUNK: usize = 4096;

/// tanh of GELU's inner argument: one function for the forward pass and the backward pass's
/// recomputation, so both round alike (bitwise the same GELU).
#[inline(always)]
fn inner_tanh(x: f32) -> f32 {
    super::fastmath::tanh(S * (x + C * x * x * x))
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + inner_tanh(x))
}

pub fn forward(out: &mut [f32], x: &[f32]) {
    let wide = super::fastmath::wide();
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
        // SAFETY: `wide` says the CPU has AVX-512F.
        if wide { unsafe { forward512(o, x) } } else { forward_chunk(o, x) }
    });
}

#[inline(always)]
fn forward_chunk(o: &mut [f32], x: &[f32]) {
    for (o, &x) in o.iter_mut().zip(x) {
        *o = gelu(x);
    }
}

/// [`forward_chunk`] built for 16 lanes: the same operations on each element, so the same bits
/// (tested), in about half the time of the 8-lane build.
#[target_feature(enable = "avx512f")]
unsafe fn forward512(o: &mut [f32], x: &[f32]) {
    forward_chunk(o, x)
}

/// `dx *= gelu'(x)` in place (`dx` holds ∂L/∂out on entry), and `out = gelu(x)`: the backward
/// pass recomputes the GELU that the next weight gradient reads (the blocks share one buffer for
/// it), from the tanh it needs anyway. `out` is bitwise [`forward`]'s.
pub fn backward(dx: &mut [f32], out: &mut [f32], x: &[f32]) {
    assert!(out.len() == dx.len() && x.len() == dx.len(), "gelu backward: lengths differ");
    let wide = super::fastmath::wide();
    dx.par_chunks_mut(CHUNK).zip(out.par_chunks_mut(CHUNK)).zip(x.par_chunks(CHUNK)).for_each(
        // SAFETY: `wide` says the CPU has AVX-512F.
        |((d, o), x)| if wide { unsafe { backward512(d, o, x) } } else { backward_chunk(d, o, x) },
    );
}

#[inline(always)]
fn backward_chunk(dx: &mut [f32], out: &mut [f32], x: &[f32]) {
    for ((d, o), &x) in dx.iter_mut().zip(out).zip(x) {
        let t = inner_tanh(x);
        *o = 0.5 * x * (1.0 + t);
        *d *= 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * S * (1.0 + 3.0 * C * x * x);
    }
}

/// [`backward_chunk`] built for 16 lanes, as [`forward512`].
#[target_feature(enable = "avx512f")]
unsafe fn backward512(dx: &mut [f32], out: &mut [f32], x: &[f32]) {
    backward_chunk(dx, out, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::same_bits;

    /// The 16-lane builds give the 8-lane ones' bits, across the range GELU sees and beyond
    /// (tanh's saturation, exp's clamp), on a length that is not a multiple of 16.
    #[test]
    fn the_avx512_build_gives_the_same_bits() {
        if !crate::kernels::fastmath::wide() {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        let n = 40_003;
        let x: Vec<f32> =
            (0..n).map(|i| (i as f32 - 20_000.0) * 1.7e-3 * (1.0 + (i % 7) as f32)).collect();
        let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
        forward_chunk(&mut a, &x);
        // SAFETY: AVX-512F checked above.
        unsafe { forward512(&mut b, &x) };
        assert!(same_bits(&a, &b), "forward");
        let g: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
        let (mut da, mut db, mut oa, mut ob) = (g.clone(), g, vec![0.0; n], vec![0.0; n]);
        backward_chunk(&mut da, &mut oa, &x);
        // SAFETY: as above.
        unsafe { backward512(&mut db, &mut ob, &x) };
        assert!(same_bits(&da, &db), "backward");
        assert!(same_bits(&oa, &ob), "recomputed");
        assert!(same_bits(&oa, &a), "forward's bits");
    }
}
