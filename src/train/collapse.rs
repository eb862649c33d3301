//! Silent training failures, named: a language model whose validation loss sits at the data's
//! unigram entropy has learned token frequencies only (every position predicts the same
//! distribution: the collapse a too-high learning rate causes); a fine-tuned head that
//! predicts one class for every dev example has learned the majority class only.

use crate::data::TokenData;

/// Tokens read to estimate the unigram entropy (evenly spaced over the shard).
const SAMPLE: usize = 1 << 24;

/// What to do when a run collapses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnCollapse {
    /// Say it in the log and in metrics.jsonl, and go on.
    #[default]
    Warn,
    /// Say it, and stop the run.
    Stop,
}

/// The loss (nats per token) of a model that knows token frequencies only: the cross-entropy
/// of `targets` under the frequencies of `data` (up to 16 M tokens of it, evenly spaced;
/// add-½ smoothing over the tokens either holds), what a collapsed model scores.
pub fn unigram_loss(data: &TokenData, targets: &[u32]) -> f64 {
    let n = data.len();
    let stride = n.div_ceil(SAMPLE).max(1);
    let mut counts: rustc_hash::FxHashMap<u32, f64> = Default::default();
    for i in (0..n).step_by(stride) {
        *counts.entry(data.get(i)).or_default() += 1.0;
    }
    for &t in targets {
        counts.entry(t).or_default();
    }
    let total: f64 = counts.values().map(|c| c + 0.5).sum();
    let nll: f64 = targets.iter().map(|t| -((counts[t] + 0.5) / total).ln()).sum();
    nll / targets.len().max(1) as f64
}

/// How far apart the final hidden states of one window's positions lie (`h`: `[T, d]`): the
/// mean squared distance of each row from the rows' mean over the mean squared row, in [0, 1].
/// A model that has learned something gives the positions different states (≳ 0.1 after a
/// few steps); a collapsed one gives every position nearly the same state (near 0).
pub fn position_spread(h: &[f32], d: usize) -> f64 {
    let t = h.len() / d.max(1);
    if t < 2 {
        return 1.0;
    }
    let mut mean = vec![0.0f64; d];
    for row in h.chunks_exact(d) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64 / t as f64;
        }
    }
    let (mut dev, mut norm) = (0.0f64, 0.0f64);
    for row in h.chunks_exact(d) {
        for (m, &x) in mean.iter().zip(row) {
            dev += (x as f64 - m).powi(2);
            norm += (x as f64).powi(2);
        }
    }
    if norm > 0.0 { dev / norm } else { 0.0 }
}

/// Below this [`position_spread`], past warm-up, the final hidden states are called the same.
pub const SPREAD_FLOOR: f64 = 0.01;

/// Watches pre-training's validation losses against the unigram entropy.
#[derive(Clone, Debug)]
pub struct CollapseWatch {
    entropy: f64,
    warmup: u64,
    /// Consecutive evaluations past warm-up no better than 1 % under the frequencies-only loss.
    near: u32,
    /// Consecutive evaluations past warm-up with the hidden states' spread under the floor.
    flat: u32,
}

impl CollapseWatch {
    /// `warmup`: evaluations before this step do not count (give the later of the warm-up
    /// and a quarter of the run: a model is allowed to start at ln V).
    pub fn new(entropy: f64, warmup: u64) -> Self {
        Self { entropy, warmup, near: 0, flat: 0 }
    }

    /// After the validation of step `step`: a message once the loss has been no better than a
    /// frequencies-only model's ([`unigram_loss`], within 1 %) at two evaluations in a row past
    /// warm-up. A model on its way down from ln V passes it once; one that stays at it (or
    /// above) predicts the same distribution everywhere: it has collapsed.
    /// `spread`, the final hidden states' [`position_spread`] where measured, names a collapse
    /// the same way: below [`SPREAD_FLOOR`] at two evaluations in a row past warm-up.
    pub fn check(&mut self, step: u64, val_loss: f64, spread: Option<f64>) -> Option<String> {
        let near = self.entropy > 0.0 && val_loss >= 0.99 * self.entropy;
        let flat = spread.is_some_and(|s| s < SPREAD_FLOOR);
        self.near = if step > self.warmup && near { self.near + 1 } else { 0 };
        self.flat = if step > self.warmup && flat { self.flat + 1 } else { 0 };
        const FIX: &str = "(a collapse, usually from too high a learning rate); restart with a \
                           lower --lr or a longer --warmup";
        if self.near >= 2 {
            return Some(format!(
                "step {step}: the validation loss {val_loss:.4} is no better than {:.4}, what \
                 token frequencies alone score, past warm-up: the model predicts the same \
                 distribution everywhere {FIX}",
                self.entropy
            ));
        }
        (self.flat >= 2).then(|| {
            format!(
                "step {step}: the final hidden states are nearly the same at every position \
                 (spread {:.2e}, under {SPREAD_FLOOR}) past warm-up: the model no longer reads \
                 its context {FIX}",
                spread.unwrap_or(0.0)
            )
        })
    }
}

/// When every one of `predictions` (class indices, at least two examples) is the same class of
/// a classifier with `labels`: a message naming it and the share of dev examples it is right
/// on (the majority-class score).
pub fn one_class(
    predictions: &[usize],
    targets: &[Option<usize>],
    labels: &[String],
) -> Option<String> {
    let first = *predictions.first()?;
    if predictions.len() < 2 || labels.len() < 2 || predictions.iter().any(|&p| p != first) {
        return None;
    }
    let labelled: Vec<usize> = targets.iter().flatten().copied().collect();
    let right = labelled.iter().filter(|&&t| t == first).count();
    let share = right as f64 / labelled.len().max(1) as f64;
    Some(format!(
        "every dev prediction is {:?}: the head has learned the majority class only (it is right \
         on {:.1} % of dev, the majority-class score); try a lower --lr, more epochs, or check \
         the pre-trained model",
        labels[first],
        100.0 * share
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl CollapseWatch {
        fn check_loss(&mut self, step: u64, val_loss: f64) -> Option<String> {
            self.check(step, val_loss, None)
        }
    }

    #[test]
    fn hidden_states_alike_at_every_position_are_named() {
        // Rows that differ: spread near 1 for centred random rows; equal rows: 0.
        let d = 16;
        let h: Vec<f32> =
            (0..8 * d as u64).map(|i| crate::kernels::rng::normal(1, i) as f32).collect();
        assert!(position_spread(&h, d) > 0.5);
        let same: Vec<f32> = (0..8).flat_map(|_| h[..d].to_vec()).collect();
        assert_eq!(position_spread(&same, d), 0.0);
        let near: Vec<f32> = same.iter().zip(&h).map(|(a, b)| a + 1e-3 * b).collect();
        assert!(position_spread(&near, d) < 1e-4);
        let mut w = CollapseWatch::new(7.0, 100);
        assert!(w.check(200, 5.0, Some(0.001)).is_none());
        assert!(w.check(300, 5.0, Some(0.3)).is_none(), "a healthy evaluation resets the count");
        assert!(w.check(400, 5.0, Some(0.001)).is_none());
        assert!(w.check(500, 5.0, Some(0.001)).unwrap().contains("hidden states"));
        let mut w = CollapseWatch::new(7.0, 100);
        assert!(w.check(50, 5.0, Some(0.0)).is_none() && w.check(90, 5.0, Some(0.0)).is_none());
    }

    #[test]
    fn a_loss_that_stays_at_the_unigram_entropy_is_named_and_one_that_passes_it_is_not() {
        let mut w = CollapseWatch::new(7.0, 100);
        // On its way down: at the frequencies' loss once, then below.
        assert!(w.check_loss(200, 7.03).is_none());
        assert!(w.check_loss(300, 6.2).is_none());
        assert!(w.check_loss(400, 6.0).is_none());
        // Within 1 % before the end of warm-up does not count.
        let mut w = CollapseWatch::new(7.0, 100);
        assert!(w.check_loss(50, 7.0).is_none() && w.check_loss(100, 7.0).is_none());
        assert!(w.check_loss(200, 7.05).is_none());
        assert!(w.check_loss(300, 7.4).unwrap().contains("no better than 7.0000"));
        // Frequencies 3:1 on the data; the targets' cross-entropy under them (smoothed).
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.bin");
        crate::data::shard::write_bin(&p, &[1, 1, 1, 2]).unwrap();
        let data = TokenData::open(&p).unwrap();
        let want = -((3.5f64 / 5.0).ln() + (1.5f64 / 5.0).ln()) / 2.0;
        assert!((unigram_loss(&data, &[1, 2]) - want).abs() < 1e-12);
        let labels = vec!["neg".to_string(), "pos".to_string()];
        let t = [Some(0), Some(1), Some(1)];
        assert!(one_class(&[1, 0, 1], &t, &labels).is_none());
        assert!(one_class(&[1, 1, 1], &t, &labels).unwrap().contains("\"pos\""));
        assert!(one_class(&[1, 1, 1], &t, &labels).unwrap().contains("66.7 %"));
    }
}
