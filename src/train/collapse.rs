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

/// Watches pre-training's validation losses against the unigram entropy.
#[derive(Clone, Debug)]
pub struct CollapseWatch {
    entropy: f64,
    warmup: u64,
    /// Consecutive evaluations past warm-up no better than 1 % under the frequencies-only loss.
    near: u32,
}

impl CollapseWatch {
    /// `warmup`: evaluations before this step do not count (give the later of the warm-up
    /// and a quarter of the run: a model is allowed to start at ln V).
    pub fn new(entropy: f64, warmup: u64) -> Self {
        Self { entropy, warmup, near: 0 }
    }

    /// After the validation of step `step`: a message once the loss has been no better than a
    /// frequencies-only model's ([`unigram_loss`], within 1 %) at two evaluations in a row past
    /// warm-up. A model on its way down from ln V passes it once; one that stays at it (or
    /// above) predicts the same distribution everywhere: it has collapsed.
    pub fn check(&mut self, step: u64, val_loss: f64) -> Option<String> {
        let near = self.entropy > 0.0 && val_loss >= 0.99 * self.entropy;
        self.near = if step > self.warmup && near { self.near + 1 } else { 0 };
        (self.near >= 2).then(|| {
            format!(
                "step {step}: the validation loss {val_loss:.4} is no better than {:.4}, what \
                 token frequencies alone score, past warm-up: the model predicts the same distribution \
                 everywhere (a collapse, usually from too high a learning rate); restart with a \
                 lower --lr or a longer --warmup",
                self.entropy
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

    #[test]
    fn a_loss_that_stays_at_the_unigram_entropy_is_named_and_one_that_passes_it_is_not() {
        let mut w = CollapseWatch::new(7.0, 100);
        // On its way down: at the frequencies' loss once, then below.
        assert!(w.check(200, 7.03).is_none());
        assert!(w.check(300, 6.2).is_none());
        assert!(w.check(400, 6.0).is_none());
        // Within 1 % before the end of warm-up does not count.
        let mut w = CollapseWatch::new(7.0, 100);
        assert!(w.check(50, 7.0).is_none() && w.check(100, 7.0).is_none());
        assert!(w.check(200, 7.05).is_none());
        assert!(w.check(300, 7.4).unwrap().contains("no better than 7.0000"));
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
