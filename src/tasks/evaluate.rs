//! Evaluation of a fine-tuned model: the head's scores per example, typed predictions, and the
//! task's metrics; prediction files for unlabelled splits.

use super::batch::{Prepared, batch, longest, prepare};
use super::checkpoint::Finetuned;
use super::head::extract_rows;
use super::{Example, Head, HeadKind, Target, metrics};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::Output;
use crate::model::{LanguageModel, ModelTask};
use crate::tasks::readers::{Metric, TaskDef, read_split};
use std::path::Path;

/// A model's answer for one example.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prediction {
    /// A class index, or the index of the chosen candidate.
    Class(usize),
    /// A regression value.
    Score(f32),
}

/// Evaluation: per example the head's scores, the prediction, and the task metric.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evaluation {
    pub examples: usize,
    pub metric: Metric,
    /// The task's main figure (accuracy, F1, Matthews, or Pearson).
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matthews: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pearson: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spearman: Option<f64>,
    /// Per example, in file order.
    #[serde(skip)]
    pub predictions: Vec<Prediction>,
    /// Per example, the head's scores (class logits, candidate scores, or the regression
    /// value), in file order.
    #[serde(skip)]
    pub scores: Vec<Vec<f32>>,
}

impl Evaluation {
    /// The metrics that apply to the task, by name (GLUE's pairs: accuracy and F1 for MRPC and
    /// QQP, Pearson and Spearman for STS-B).
    pub fn metrics(&self) -> std::collections::BTreeMap<&'static str, f64> {
        [
            ("accuracy", self.accuracy),
            ("f1", self.f1),
            ("matthews", self.matthews),
            ("pearson", self.pearson),
            ("spearman", self.spearman),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// The scores of `data` in batches of `batch_size`, each batch by `run`; with `comm`, rank `r`
/// runs batches `r, r + N, ...` and the ranks' scores are summed into everyone's (each score
/// is one rank's, the others add zeros): the same batches, so the same scores as one process.
fn batched_scores(
    head: &Head,
    data: &[Prepared],
    batch_size: usize,
    comm: Option<&dyn crate::dist::Collective>,
    mut run: impl FnMut(&[Prepared]) -> Result<Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    // An example's score count: one per candidate (multiple choice), else the head's outputs.
    let width = |e: &Prepared| match head.kind {
        crate::tasks::HeadKind::Choice => e.t.features.len(),
        _ => head.n_out,
    };
    // Every example's scores, laid end to end (example i's at `start[i]`).
    let mut start = vec![0usize; data.len() + 1];
    for (i, e) in data.iter().enumerate() {
        start[i + 1] = start[i] + width(e);
    }
    let mut flat = vec![0.0f32; start[data.len()]];
    let per = batch_size.max(1);
    let n = data.len().div_ceil(per);
    crate::dist::shared_batches(n, comm, &mut flat, |k, flat| {
        let first = k * per;
        let chunk = &data[first..(first + per).min(data.len())];
        for (i, s) in (first..).zip(run(chunk)?) {
            flat[start[i]..start[i + 1]].copy_from_slice(&s);
        }
        Ok(())
    })?;
    Ok((0..data.len()).map(|i| flat[start[i]..start[i + 1]].to_vec()).collect())
}

/// The head's scores of `data` without dropout, `batch_size` examples at a time (shared by
/// `comm`'s ranks), with a body of either architecture and its buffers `s`.
fn scores<B: Backend, M: LanguageModel<B>>(
    model: &M,
    head: &Head,
    s: &mut M::Scratch,
    data: &[Prepared],
    batch_size: usize,
    comm: Option<&dyn crate::dist::Collective>,
) -> Result<Vec<Vec<f32>>> {
    let _pinned = model.pin_weights();
    let run = |chunk: &[Prepared]| {
        let refs: Vec<&Prepared> = chunk.iter().collect();
        let b = batch(&refs);
        model.fit(s, b.n_seq, b.len);
        let (rows, items) = extract_rows(&b.items);
        let hidden = model.states_at(s, &b.ids, &rows)?;
        Ok(head.forward(&hidden, &items))
    };
    batched_scores(head, data, batch_size, comm, run)
}

/// Evaluates `data` (dev or test examples) with `model` and `head`, `batch_size` examples at a
/// time, in buffers `s` (a trainer's, between steps, or [`LanguageModel::scratch`]).
pub fn evaluate_prepared<B: Backend, M: LanguageModel<B>>(
    def: &TaskDef,
    model: &M,
    head: &Head,
    s: &mut M::Scratch,
    data: &[Prepared],
    batch_size: usize,
) -> Result<Evaluation> {
    evaluate_shared(def, model, head, s, data, batch_size, None)
}

/// [`evaluate_prepared`] shared by the ranks of `comm` (fine-tuning's dev evaluations):
/// each runs every N-th batch; the same scores as one process.
pub fn evaluate_shared<B: Backend, M: LanguageModel<B>>(
    def: &TaskDef,
    model: &M,
    head: &Head,
    s: &mut M::Scratch,
    data: &[Prepared],
    batch_size: usize,
    comm: Option<&dyn crate::dist::Collective>,
) -> Result<Evaluation> {
    Ok(evaluation_of(def, data, scores(model, head, s, data, batch_size, comm)?))
}

/// Predictions and the task's metrics from the head's `scores` of `data`.
pub fn evaluation_of(def: &TaskDef, data: &[Prepared], scores: Vec<Vec<f32>>) -> Evaluation {
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0
    };
    let predictions: Vec<Prediction> = scores
        .iter()
        .map(|s| {
            if def.kind == HeadKind::Regress {
                Prediction::Score(s[0])
            } else {
                Prediction::Class(argmax(s))
            }
        })
        .collect();
    let mut ev = Evaluation {
        examples: data.len(),
        metric: def.metric,
        score: 0.0,
        accuracy: None,
        f1: None,
        matthews: None,
        pearson: None,
        spearman: None,
        predictions,
        scores,
    };
    if def.metric == Metric::Correlation {
        let gold: Vec<f64> = data
            .iter()
            .filter_map(|e| if let Target::Score(s) = e.target { Some(s as f64) } else { None })
            .collect();
        let pred: Vec<f64> = ev
            .predictions
            .iter()
            .map(|p| match p {
                Prediction::Score(s) => *s as f64,
                Prediction::Class(c) => *c as f64,
            })
            .collect();
        if gold.len() == data.len() {
            ev.pearson = Some(metrics::pearson(&pred, &gold));
            ev.spearman = Some(metrics::spearman(&pred, &gold));
            ev.score = ev.pearson.unwrap_or(0.0);
        }
    } else {
        let gold: Vec<usize> = data
            .iter()
            .filter_map(|e| if let Target::Class(c) = e.target { Some(c) } else { None })
            .collect();
        if gold.len() == data.len() {
            let pred: Vec<usize> = ev
                .predictions
                .iter()
                .map(|p| match p {
                    Prediction::Class(c) => *c,
                    Prediction::Score(_) => usize::MAX,
                })
                .collect();
            let acc = metrics::accuracy(&pred, &gold);
            ev.accuracy = Some(acc);
            ev.score = acc;
            match def.metric {
                Metric::F1 => {
                    ev.f1 = Some(metrics::f1(&pred, &gold, 1));
                    ev.score = ev.f1.unwrap_or(0.0);
                }
                Metric::Matthews => {
                    ev.matthews = Some(metrics::matthews(&pred, &gold, 1));
                    ev.score = ev.matthews.unwrap_or(0.0);
                }
                _ => {}
            }
        }
    }
    ev
}

/// Writes one prediction per example of split `split` to `out` (TSV `index`, `prediction`:
/// the label, the 1-based candidate, or the regression value); with `probabilities`, one more
/// column per class or candidate (`p_<label>`, `p_<k>`) holding the softmax of the head's scores.
pub fn predict_to_file(
    ft: &Finetuned,
    data: &Path,
    split: &str,
    batch_size: usize,
    out: &Output,
    probabilities: bool,
) -> Result<usize> {
    if probabilities && ft.task.kind == HeadKind::Regress {
        return Err(Error::setting(
            "probabilities",
            format!(
                "{} is a regression task: its predictions are values, not classes",
                ft.task.name
            ),
        ));
    }
    let s = read_split(&ft.task, data, split, false)?;
    out.check_not_input(&s.files)?;
    let ev = scored_split(ft, &s.examples, batch_size)?;
    let mut text = String::from("index\tprediction");
    if probabilities {
        let n = ev.scores.first().map_or(0, Vec::len);
        for k in 0..n {
            match ft.task.labels.get(k) {
                Some(l) => text.push_str(&format!("\tp_{l}")),
                None => text.push_str(&format!("\tp_{}", k + 1)),
            }
        }
    }
    text.push('\n');
    for (i, (p, sc)) in ev.predictions.iter().zip(&ev.scores).enumerate() {
        let v = match (p, ft.task.labels.is_empty()) {
            (Prediction::Score(s), _) => format!("{:.4}", *s as f64),
            (Prediction::Class(c), false) => ft.task.labels[*c].clone(),
            (Prediction::Class(c), true) => format!("{}", c + 1),
        };
        text.push_str(&format!("{i}\t{v}"));
        if probabilities {
            for q in softmax(sc) {
                text.push_str(&format!("\t{q:.6}"));
            }
        }
        text.push('\n');
    }
    // Ranks sharing the work all hold every prediction; rank 0 alone writes them.
    if ft.comm.as_ref().is_none_or(|c| c.rank() == 0) {
        out.write(text.as_bytes())?;
    }
    Ok(ev.predictions.len())
}

/// Probabilities of scores, in f64 (stable: shifted by the maximum).
pub fn softmax(v: &[f32]) -> Vec<f64> {
    let m = v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = v.iter().map(|&x| (x as f64 - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

/// Evaluates a fine-tuned checkpoint on split `split` of `data`.
pub fn evaluate(
    ft: &Finetuned,
    data: &Path,
    split: &str,
    batch_size: usize,
    skip_bad_rows: bool,
) -> Result<Evaluation> {
    let s = read_split(&ft.task, data, split, skip_bad_rows)?;
    if s.examples.iter().any(|e| matches!(e.target, Target::None)) {
        return Err(Error::setting(
            "split",
            format!(
                "{split} of {} has no labels (GLUE keeps its test labels private): evaluate a \
             labelled split (dev), or write predictions with `gpt1 predict`",
                data.display()
            ),
        ));
    }
    scored_split(ft, &s.examples, batch_size)
}

/// Runs the fine-tuned model over `examples` (labelled or not).
pub fn scored_split(ft: &Finetuned, examples: &[Example], batch_size: usize) -> Result<Evaluation> {
    if batch_size == 0 {
        return Err(Error::setting("batch", "must be at least 1"));
    }
    let (p, _) = prepare(&ft.tokenizer, examples, ft.max_len)?;
    let per = p.iter().map(|e| e.t.features.iter().map(Vec::len).sum::<usize>()).max().unwrap_or(1);
    // Buffers for one batch: no more examples than there are, each of `per` sequences.
    let pass = (batch_size.min(p.len().max(1)).saturating_mul(per), longest(&p));
    let comm = ft.comm.as_deref();
    let task = Scoring { def: &ft.task, head: &ft.head, data: &p, batch_size, comm, pass };
    ft.model.run_on(ft.device, pass, "scoring (lower --batch)", task)
}

/// [`scored_split`]'s work, for either architecture on either device.
struct Scoring<'a> {
    def: &'a TaskDef,
    head: &'a Head,
    data: &'a [Prepared],
    batch_size: usize,
    comm: Option<&'a dyn crate::dist::Collective>,
    /// The largest pass, `(sequences, tokens)`: the buffers are made for it once.
    pass: (usize, usize),
}

impl ModelTask for Scoring<'_> {
    type Out = Evaluation;
    fn run<B: Backend, M: LanguageModel<B>>(self, model: &M) -> Result<Evaluation> {
        let mut s = model.scratch();
        model.fit(&mut s, self.pass.0, self.pass.1);
        evaluate_shared(self.def, model, self.head, &mut s, self.data, self.batch_size, self.comm)
    }
}
