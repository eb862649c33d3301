//! The LSTM cell (PyTorch's `nn.LSTM`: gates i, f, g, o), one time step of `b` sequences,
//! forward beside backward. The products around it (the input projection of every step, the
//! recurrent `h_{t-1} · W_hhᵀ`, backward's `dG · W`) are ordinary matrix products; what is here
//! is the elementwise part, rows independent (so the result does not depend on the thread
//! count).

use rayon::prelude::*;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `gates` `[b, 4H]`: the pre-activations in, the activations `(σ(i), σ(f), tanh(g), σ(o))`
/// out; `c = f ⊙ c_prev + i ⊙ g`, `h = o ⊙ tanh(c)` (`[b, H]`, assigned); `c_prev` `None` at
/// the first step (zero state).
pub fn cell_forward(
    gates: &mut [f32],
    c: &mut [f32],
    h: &mut [f32],
    c_prev: Option<&[f32]>,
    hid: usize,
) {
    gates
        .par_chunks_mut(4 * hid)
        .zip(c.par_chunks_mut(hid))
        .zip(h.par_chunks_mut(hid))
        .enumerate()
        .for_each(|(s, ((gs, cs), hs))| {
            let cp = c_prev.map(|p| &p[s * hid..(s + 1) * hid]);
            for j in 0..hid {
                let (i, f) = (sigmoid(gs[j]), sigmoid(gs[hid + j]));
                let (g, o) = (gs[2 * hid + j].tanh(), sigmoid(gs[3 * hid + j]));
                (gs[j], gs[hid + j], gs[2 * hid + j], gs[3 * hid + j]) = (i, f, g, o);
                let cn = f * cp.map_or(0.0, |p| p[j]) + i * g;
                cs[j] = cn;
                hs[j] = o * cn.tanh();
            }
        });
}

/// The step's gate gradients `dg` `[b, 4H]` (assigned, with respect to the pre-activations)
/// from `∂L/∂h` = `dh` (the output's whole gradient: the layer above's or the loss's, plus
/// step t+1's `dG_{t+1} · W_hh`), and `dc_next` (`[b, H]`: ∂L/∂c from step t+1 in, ∂L/∂c_{t-1} out; zero at the last step).
/// `gates` are [`cell_forward`]'s activations, `c` this step's cells, `c_prev` the previous.
#[allow(clippy::too_many_arguments)]
pub fn cell_backward(
    dg: &mut [f32],
    dc_next: &mut [f32],
    dh: &[f32],
    gates: &[f32],
    c: &[f32],
    c_prev: Option<&[f32]>,
    hid: usize,
) {
    dg.par_chunks_mut(4 * hid).zip(dc_next.par_chunks_mut(hid)).enumerate().for_each(
        |(s, (d, dcn))| {
            let gs = &gates[s * 4 * hid..(s + 1) * 4 * hid];
            let r = s * hid..(s + 1) * hid;
            let (cs, dhs) = (&c[r.clone()], &dh[r.clone()]);
            let cp = c_prev.map(|p| &p[r]);
            for j in 0..hid {
                let (i, f, g, o) = (gs[j], gs[hid + j], gs[2 * hid + j], gs[3 * hid + j]);
                let tc = cs[j].tanh();
                let dhj = dhs[j];
                let dc = dcn[j] + dhj * o * (1.0 - tc * tc);
                let cpj = cp.map_or(0.0, |p| p[j]);
                d[j] = dc * g * i * (1.0 - i);
                d[hid + j] = dc * cpj * f * (1.0 - f);
                d[2 * hid + j] = dc * i * (1.0 - g * g);
                d[3 * hid + j] = dhj * tc * o * (1.0 - o);
                dcn[j] = dc * f;
            }
        },
    );
}

/// `x[r] += b1 + b2` for every row of `x` `[rows, n]` (`nn.LSTM`'s two biases on every step's
/// input projection).
pub fn add_biases(x: &mut [f32], b1: &[f32], b2: &[f32]) {
    x.par_chunks_mut(b1.len()).for_each(|row| {
        for ((x, p), q) in row.iter_mut().zip(b1).zip(b2) {
            *x += p + q;
        }
    });
}
