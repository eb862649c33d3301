//! Metrics: accuracy, F1 of the positive class, Matthews correlation, Pearson and Spearman
//! (ties get their average rank).

pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    let n = pred.len().min(gold.len());
    if n == 0 {
        return 0.0;
    }
    pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / n as f64
}

fn confusion(pred: &[usize], gold: &[usize], positive: usize) -> (f64, f64, f64, f64) {
    let (mut tp, mut fp, mut tn, mut fneg) = (0.0, 0.0, 0.0, 0.0);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == positive, g == positive) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, false) => tn += 1.0,
            (false, true) => fneg += 1.0,
        }
    }
    (tp, fp, tn, fneg)
}

/// F1 of class `positive` (0 when it is never predicted nor present).
pub fn f1(pred: &[usize], gold: &[usize], positive: usize) -> f64 {
    let (tp, fp, _, fneg) = confusion(pred, gold, positive);
    if tp == 0.0 { 0.0 } else { 2.0 * tp / (2.0 * tp + fp + fneg) }
}

/// Matthews correlation coefficient of a binary task (0 when undefined).
pub fn matthews(pred: &[usize], gold: &[usize], positive: usize) -> f64 {
    let (tp, fp, tn, fneg) = confusion(pred, gold, positive);
    matthews_counts(tp, fp, tn, fneg)
}

/// Matthews correlation from the confusion counts (0 when undefined).
pub fn matthews_counts(tp: f64, fp: f64, tn: f64, fneg: f64) -> f64 {
    let den = ((tp + fp) * (tp + fneg) * (tn + fp) * (tn + fneg)).sqrt();
    if den == 0.0 { 0.0 } else { (tp * tn - fp * fneg) / den }
}

pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 { 0.0 } else { sxy / (sxx * syy).sqrt() }
}

/// Ranks from 1, ties sharing their average rank.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let (p, g) = ([1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]);
        assert!((accuracy(&p, &g) - 4.0 / 6.0).abs() < 1e-12);
        // tp 2, fp 1, tn 2, fn 1.
        assert!((f1(&p, &g, 1) - 4.0 / 6.0).abs() < 1e-12);
        assert!((matthews(&p, &g, 1) - (4.0 - 1.0) / 9.0).abs() < 1e-12);
        assert_eq!(matthews(&[1, 1], &[1, 1], 1), 0.0);
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&x, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&x, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4].
        assert_eq!(ranks(&[1.0, 2.0, 2.0, 3.0]), vec![1.0, 2.5, 2.5, 4.0]);
        assert!((spearman(&[1.0, 2.0, 2.0, 3.0], &[10.0, 20.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[1.0, 8.0, 27.0, 64.0]) - 1.0).abs() < 1e-12);
    }
}
