//! The task head: a linear layer `W_y` (with dropout on its input) over the last block's
//! states at the extract tokens, and its losses. Small next to the body, so it is plain loops.

use super::example::Target;
use crate::kernels::dropout::Dropout;
use crate::kernels::rng;

/// How a head's outputs become a loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// Softmax over `n_out` classes of one feature.
    Classify,
    /// One output trained with squared error.
    Regress,
    /// One score per candidate feature, softmax over the candidates.
    Choice,
}

/// `W_y` `[d, n_out]` and its bias.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    pub kind: HeadKind,
    pub d: usize,
    pub n_out: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// One example of a batch: the hidden rows summed into each feature, and its target.
#[derive(Clone, Debug)]
pub struct Item {
    pub features: Vec<Vec<usize>>,
    pub target: Target,
}

/// The flat positions the head reads, and the items renumbered to index them in order.
pub fn extract_rows(items: &[Item]) -> (Vec<usize>, Vec<Item>) {
    let mut rows = Vec::new();
    let items = items
        .iter()
        .map(|it| Item {
            features: it
                .features
                .iter()
                .map(|f| {
                    f.iter()
                        .map(|&r| {
                            rows.push(r);
                            rows.len() - 1
                        })
                        .collect()
                })
                .collect(),
            target: it.target.clone(),
        })
        .collect();
    (rows, items)
}

impl Head {
    /// `W_y` ~ N(0, 0.02), bias 0.
    pub fn new(kind: HeadKind, d: usize, n_out: usize, seed: u64) -> Self {
        let key = rng::derive(seed, 0x4EAD);
        let w = (0..d * n_out).map(|i| (rng::normal(key, i as u64) * 0.02) as f32).collect();
        Head { kind, d, n_out, w, b: vec![0.0; n_out] }
    }

    /// A zeroed head of the same shape (for gradients and moments).
    pub fn zeros_like(&self) -> Self {
        Head { w: vec![0.0; self.w.len()], b: vec![0.0; self.b.len()], ..self.clone() }
    }

    fn feature(&self, hidden: &[f32], rows: &[usize], mask: &[f32]) -> Vec<f32> {
        let d = self.d;
        let mut x = vec![0.0f32; d];
        for &r in rows {
            for (xi, h) in x.iter_mut().zip(&hidden[r * d..(r + 1) * d]) {
                *xi += h;
            }
        }
        x.iter_mut().zip(mask).for_each(|(x, m)| *x *= m);
        x
    }

    fn outputs(&self, x: &[f32]) -> Vec<f32> {
        let mut z = self.b.clone();
        for (j, &xj) in x.iter().enumerate() {
            for (o, zo) in z.iter_mut().enumerate() {
                *zo += xj * self.w[j * self.n_out + o];
            }
        }
        z
    }

    /// The dropout mask of item `i` (shared by its candidates, as in the original code).
    fn mask(&self, drop: Dropout, i: usize) -> Vec<f32> {
        let (th, sc) = (drop.threshold(), drop.scale());
        (0..self.d)
            .map(|j| if drop.active() { drop.factor((i * self.d + j) as u64, th, sc) } else { 1.0 })
            .collect()
    }

    /// Scores of each item: the class logits (Classify), the prediction (Regress), or one
    /// logit per candidate (Choice).
    pub fn forward(&self, hidden: &[f32], items: &[Item]) -> Vec<Vec<f32>> {
        let ones = vec![1.0f32; self.d];
        items
            .iter()
            .map(|it| {
                let zs: Vec<Vec<f32>> = it
                    .features
                    .iter()
                    .map(|rows| self.outputs(&self.feature(hidden, rows, &ones)))
                    .collect();
                match self.kind {
                    HeadKind::Choice => zs.iter().map(|z| z[0]).collect(),
                    _ => zs.into_iter().next().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Loss `scale · Σ_items loss` and its gradients: `grad` (same shape) accumulated, `dh`
    /// (`[rows, d]`, the body's output gradient) accumulated. Items without a target add
    /// nothing. Returns the unscaled loss sum.
    pub fn loss_backward(
        &self,
        grad: &mut Head,
        hidden: &[f32],
        items: &[Item],
        drop: Dropout,
        scale: f32,
        dh: &mut [f32],
    ) -> f64 {
        let (d, n) = (self.d, self.n_out);
        let mut total = 0.0f64;
        for (i, it) in items.iter().enumerate() {
            if it.target == Target::None {
                continue;
            }
            let mask = self.mask(drop, i);
            let xs: Vec<Vec<f32>> =
                it.features.iter().map(|rows| self.feature(hidden, rows, &mask)).collect();
            let zs: Vec<Vec<f32>> = xs.iter().map(|x| self.outputs(x)).collect();
            // ∂loss/∂z for each feature.
            let dzs: Vec<Vec<f32>> = match (self.kind, &it.target) {
                (HeadKind::Classify, Target::Class(c)) => {
                    let (loss, p) = softmax_nll(&zs[0], *c);
                    total += loss;
                    let mut dz = p;
                    dz[*c] -= 1.0;
                    vec![dz]
                }
                (HeadKind::Choice, Target::Class(c)) => {
                    let logits: Vec<f32> = zs.iter().map(|z| z[0]).collect();
                    let (loss, p) = softmax_nll(&logits, *c);
                    total += loss;
                    p.iter()
                        .enumerate()
                        .map(|(k, &pk)| vec![pk - if k == *c { 1.0 } else { 0.0 }])
                        .collect()
                }
                (HeadKind::Regress, Target::Score(s)) => {
                    let e = zs[0][0] - s;
                    total += (e * e) as f64;
                    vec![vec![2.0 * e]]
                }
                _ => continue,
            };
            for ((x, dz), rows) in xs.iter().zip(&dzs).zip(&it.features) {
                let mut dx = vec![0.0f32; d];
                for (o, &g) in dz.iter().enumerate() {
                    let g = g * scale;
                    grad.b[o] += g;
                    for j in 0..d {
                        grad.w[j * n + o] += x[j] * g;
                        dx[j] += self.w[j * n + o] * g;
                    }
                }
                for &r in rows {
                    for j in 0..d {
                        dh[r * d + j] += dx[j] * mask[j];
                    }
                }
            }
        }
        total
    }
}

/// −log softmax(z)[c] and softmax(z).
fn softmax_nll(z: &[f32], c: usize) -> (f64, Vec<f32>) {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = z.iter().map(|&v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    let p: Vec<f32> = e.iter().map(|v| (v / s) as f32).collect();
    (-(e[c] / s).ln(), p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{check_grad, rand_vec};

    fn case(kind: HeadKind, n_out: usize, items: Vec<Item>) {
        let d = 6;
        let rows = 8;
        let mut hidden = rand_vec(rows * d, 3);
        let mut head = Head::new(kind, d, n_out, 1);
        head.w = rand_vec(d * n_out, 5);
        let drop = Dropout::new(0.2, 77);
        let scale = 0.5;
        let mut g = head.zeros_like();
        let mut dh = vec![0.0; rows * d];
        head.loss_backward(&mut g, &hidden, &items, drop, scale, &mut dh);
        let loss = |h: &Head, hid: &[f32]| {
            let mut g = h.zeros_like();
            let mut dh = vec![0.0; rows * d];
            h.loss_backward(&mut g, hid, &items, drop, scale, &mut dh) * scale as f64
        };
        let h0 = head.clone();
        check_grad(&mut hidden, &dh, 48, 1e-2, 2e-2, |x| loss(&h0, x));
        let hid = hidden.clone();
        let mut w = head.w.clone();
        check_grad(&mut w, &g.w, 36, 1e-2, 2e-2, |w| {
            let mut h = head.clone();
            h.w = w.to_vec();
            loss(&h, &hid)
        });
        let mut b = head.b.clone();
        check_grad(&mut b, &g.b, n_out, 1e-2, 2e-2, |b| {
            let mut h = head.clone();
            h.b = b.to_vec();
            loss(&h, &hid)
        });
    }

    #[test]
    fn classification_gradients() {
        case(
            HeadKind::Classify,
            3,
            vec![
                Item { features: vec![vec![1]], target: Target::Class(2) },
                Item { features: vec![vec![4]], target: Target::Class(0) },
                Item { features: vec![vec![5]], target: Target::None },
            ],
        );
    }

    #[test]
    fn similarity_sums_two_orders() {
        case(
            HeadKind::Classify,
            2,
            vec![Item { features: vec![vec![1, 6]], target: Target::Class(1) }],
        );
    }

    #[test]
    fn regression_gradients() {
        case(
            HeadKind::Regress,
            1,
            vec![
                Item { features: vec![vec![2, 3]], target: Target::Score(3.5) },
                Item { features: vec![vec![7, 0]], target: Target::Score(0.2) },
            ],
        );
    }

    #[test]
    fn multiple_choice_gradients() {
        case(
            HeadKind::Choice,
            1,
            vec![
                Item { features: vec![vec![0], vec![3], vec![6]], target: Target::Class(1) },
                Item { features: vec![vec![2], vec![5]], target: Target::Class(0) },
            ],
        );
    }

    #[test]
    fn forward_matches_the_loss_without_dropout() {
        let d = 4;
        let hidden = rand_vec(3 * d, 9);
        let head = Head::new(HeadKind::Choice, d, 1, 2);
        let items = vec![Item { features: vec![vec![0], vec![2]], target: Target::Class(1) }];
        let s = head.forward(&hidden, &items);
        let (want, _) = softmax_nll(&s[0], 1);
        let mut g = head.zeros_like();
        let mut dh = vec![0.0; 3 * d];
        let got = head.loss_backward(&mut g, &hidden, &items, Dropout::OFF, 1.0, &mut dh);
        assert!((got - want).abs() < 1e-9);
    }
}
