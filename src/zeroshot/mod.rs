//! The paper's zero-shot heuristics (section 5, "Zero-shot Behaviors"): tasks solved by the
//! pre-trained language model alone, without special tokens or fine-tuning. Each task turns its
//! examples into (context, continuation) pairs scored by [`continuation_logprobs`]; the details
//! the paper leaves open are in `docs/zeroshot.md`.

mod score;
pub mod winograd;

pub use score::{Pair, Scored, continuation_logprobs};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::Gpt;
use crate::tasks::metrics::{accuracy, matthews, matthews_counts};
use crate::tasks::readers::{read_split, task};
use crate::tasks::{Example, Input, Target};
use crate::text::Tokenizer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Sequences per forward pass (`--batch`).
pub const DEFAULT_BATCH: usize = 8;

/// A zero-shot task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroShotTask {
    Cola,
    Sst2,
    Race,
    StoryCloze,
    Dprd,
    Wsc,
}

impl ZeroShotTask {
    pub const ALL: [ZeroShotTask; 6] = [
        ZeroShotTask::Cola,
        ZeroShotTask::Sst2,
        ZeroShotTask::Race,
        ZeroShotTask::StoryCloze,
        ZeroShotTask::Dprd,
        ZeroShotTask::Wsc,
    ];

    /// The task called `name` (case, `-` and `_` ignored; `dpr` and `wsc273` also work).
    pub fn parse(name: &str) -> Result<Self> {
        let key: String =
            name.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
        let alias = match key.as_str() {
            "dpr" => "dprd",
            "wsc273" => "wsc",
            k => k,
        };
        Self::ALL.into_iter().find(|t| t.name() == alias).ok_or_else(|| {
            Error::Unknown(format!(
                "unknown zero-shot task {name:?}; known: {}",
                Self::ALL.map(|t| t.name()).join(", ")
            ))
        })
    }

    /// What `--task` takes.
    pub fn name(self) -> &'static str {
        match self {
            ZeroShotTask::Cola => "cola",
            ZeroShotTask::Sst2 => "sst2",
            ZeroShotTask::Race => "race",
            ZeroShotTask::StoryCloze => "storycloze",
            ZeroShotTask::Dprd => "dprd",
            ZeroShotTask::Wsc => "wsc",
        }
    }

    /// The split scored when none is given: `dev`, or `test` for DPR and WSC.
    pub fn default_split(self) -> &'static str {
        match self {
            ZeroShotTask::Dprd | ZeroShotTask::Wsc => "test",
            _ => "dev",
        }
    }
}

/// One example's scores (one per candidate in label order; CoLA: its one score) and the
/// predicted label.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExampleScore {
    pub index: usize,
    pub scores: Vec<f64>,
    pub prediction: usize,
}

/// A zero-shot evaluation: the metrics as `evaluate` reports them, CoLA's threshold, the
/// fallbacks taken and the contexts cut, and every example's scores.
#[derive(Clone, Debug, Serialize)]
pub struct ZeroShotResult {
    pub task: String,
    pub split: String,
    pub n: usize,
    /// The main metric's name (`matthews` for CoLA, else `accuracy`).
    pub metric: String,
    pub score: f64,
    pub metrics: BTreeMap<&'static str, f64>,
    /// CoLA: the score above which a sentence is predicted acceptable, chosen on train.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Examples scored by a documented fallback (see `docs/zeroshot.md`).
    pub fallbacks: usize,
    /// Examples with a context cut from the left to fit the model.
    pub truncated: usize,
    #[serde(skip)]
    pub examples: Vec<ExampleScore>,
}

/// Scores split `split` of `task` from `data` with the language model alone; `batch`
/// sequences per forward pass.
pub fn zero_shot<B: Backend>(
    model: &Gpt<B>,
    tok: &Tokenizer,
    task: ZeroShotTask,
    data: &Path,
    split: &str,
    batch: usize,
) -> Result<ZeroShotResult> {
    zero_shot_with(model, tok, task, data, split, batch, None, |_, _| {})
}

/// [`zero_shot`], calling `progress(done, total)` (in scored sequences) after each pass. With
/// `comm`, its ranks share the batches of pairs ([`continuation_logprobs`]): every rank returns
/// one process's result, and `progress` sees this rank's passes.
#[allow(clippy::too_many_arguments)]
pub fn zero_shot_with<B: Backend>(
    model: &Gpt<B>,
    tok: &Tokenizer,
    task: ZeroShotTask,
    data: &Path,
    split: &str,
    batch: usize,
    comm: Option<&dyn crate::dist::Collective>,
    progress: impl FnMut(usize, usize),
) -> Result<ZeroShotResult> {
    if batch == 0 {
        return Err(Error::setting("batch", "must be at least 1"));
    }
    let mut run =
        Run { model, batch, comm, done: 0, total: 0, progress, fallbacks: 0, truncated: 0 };
    let (examples, gold, threshold) = match task {
        ZeroShotTask::Cola => cola(&mut run, tok, data, split)?,
        ZeroShotTask::Sst2 => {
            let (ex, gold) = sst2(&mut run, tok, data, split)?;
            (ex, gold, None)
        }
        ZeroShotTask::Race | ZeroShotTask::StoryCloze => {
            let (ex, gold) = choice(&mut run, tok, task, data, split)?;
            (ex, gold, None)
        }
        ZeroShotTask::Dprd | ZeroShotTask::Wsc => {
            let path = if task == ZeroShotTask::Dprd {
                winograd::dpr_file(data, split)?
            } else {
                winograd::wsc_file(data, split)?
            };
            let schemas = if task == ZeroShotTask::Dprd {
                winograd::read_dpr(&path)?
            } else {
                winograd::read_wsc(&path)?
            };
            let (ex, gold) = pronoun(&mut run, tok, &path, &schemas)?;
            (ex, gold, None)
        }
    };
    let pred: Vec<usize> = examples.iter().map(|e| e.prediction).collect();
    let mut metrics = BTreeMap::from([("accuracy", accuracy(&pred, &gold))]);
    let metric = if task == ZeroShotTask::Cola {
        metrics.insert("matthews", matthews(&pred, &gold, 1));
        "matthews"
    } else {
        "accuracy"
    };
    Ok(ZeroShotResult {
        task: task.name().to_string(),
        split: split.to_string(),
        n: examples.len(),
        metric: metric.to_string(),
        score: metrics[metric],
        metrics,
        threshold,
        fallbacks: run.fallbacks,
        truncated: run.truncated,
        examples,
    })
}

/// The threshold CoLA predicts "acceptable" above: of the midpoints between consecutive
/// distinct sorted `scores`, the one whose predictions have the highest Matthews correlation
/// with `labels` (1 = acceptable); ties go to the lowest. With no midpoint (fewer than two
/// distinct scores) it is the largest score (everything predicted unacceptable).
pub fn cola_threshold(scores: &[f64], labels: &[usize]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len().min(labels.len())).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Below every score everything is predicted positive; each step moves one to negative.
    let pos = order.iter().filter(|&&i| labels[i] == 1).count() as f64;
    let (mut tp, mut fp, mut tn, mut fneg) = (pos, order.len() as f64 - pos, 0.0, 0.0);
    let mut best: Option<(f64, f64)> = None;
    for w in 1..order.len() {
        if labels[order[w - 1]] == 1 {
            tp -= 1.0;
            fneg += 1.0;
        } else {
            fp -= 1.0;
            tn += 1.0;
        }
        let (lo, hi) = (scores[order[w - 1]], scores[order[w]]);
        if lo < hi {
            let m = matthews_counts(tp, fp, tn, fneg);
            if best.is_none_or(|(b, _)| m > b) {
                best = Some((m, lo + (hi - lo) / 2.0));
            }
        }
    }
    best.map_or_else(|| order.last().map_or(0.0, |&i| scores[i]), |(_, t)| t)
}

/// What the tasks share: the model, the pass size, the progress and the counts.
struct Run<'m, B: Backend, P: FnMut(usize, usize)> {
    model: &'m Gpt<B>,
    batch: usize,
    comm: Option<&'m dyn crate::dist::Collective>,
    done: usize,
    total: usize,
    progress: P,
    fallbacks: usize,
    truncated: usize,
}

impl<B: Backend, P: FnMut(usize, usize)> Run<'_, B, P> {
    /// Scores `pairs`, counting the examples (`owner[i]` is pair i's example) with a cut
    /// context as truncated and those with a cut continuation as fallbacks.
    fn score(&mut self, pairs: &[Pair], owner: &[usize]) -> Result<Vec<Scored>> {
        let (done, total) = (&mut self.done, self.total);
        let progress = &mut self.progress;
        let s = continuation_logprobs(self.model, pairs, self.batch, self.comm, |k| {
            *done += k;
            progress(*done, total);
        })?;
        let flagged = |f: &dyn Fn(&Scored) -> bool| {
            let mut ex: Vec<usize> =
                s.iter().zip(owner).filter(|(s, _)| f(s)).map(|p| *p.1).collect();
            ex.dedup();
            ex.len()
        };
        self.truncated += flagged(&|s| s.truncated);
        self.fallbacks += flagged(&|s| s.cut);
        Ok(s)
    }
}

fn files(split: &crate::tasks::readers::Split, data: &Path) -> PathBuf {
    split.files.first().cloned().unwrap_or_else(|| data.to_path_buf())
}

/// The labels of a split's examples; an unlabelled one is an error.
fn labels(examples: &[Example], file: &Path, split: &str) -> Result<Vec<usize>> {
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| match e.target {
            Target::Class(c) => Ok(c),
            _ => Err(Error::invalid(
                file,
                format!(
                    "example {i} of the {split} split has no label; zero-shot evaluation needs a labelled split"
                ),
            )),
        })
        .collect()
}

fn single(e: &Example) -> &str {
    match &e.input {
        Input::Single(s) => s,
        _ => "",
    }
}

fn encode(tok: &Tokenizer, text: &str, file: &Path, what: impl Fn() -> String) -> Result<Vec<u32>> {
    tok.encode(text).map_err(|e| Error::invalid(file, format!("{}: {e}", what())))
}

type Scoring = (Vec<ExampleScore>, Vec<usize>);

/// CoLA: each sentence's mean log-probability of its tokens 2..n; acceptable above the
/// threshold that maximizes Matthews on train.
fn cola<B: Backend, P: FnMut(usize, usize)>(
    run: &mut Run<B, P>,
    tok: &Tokenizer,
    data: &Path,
    split: &str,
) -> Result<(Vec<ExampleScore>, Vec<usize>, Option<f64>)> {
    let def = task("cola")?;
    let train = read_split(&def, data, "train", false)?;
    let eval = if split == "train" { None } else { Some(read_split(&def, data, split, false)?) };
    let train_file = files(&train, data);
    let train_gold = labels(&train.examples, &train_file, "train")?;
    let ev = eval.as_ref().unwrap_or(&train);
    let ev_file = files(ev, data);
    let gold = labels(&ev.examples, &ev_file, split)?;
    // (pairs, for each example: Some(pair index) or None = fewer than two tokens)
    let prep = |examples: &[Example], file: &Path| -> Result<(Vec<Pair>, Vec<Option<usize>>)> {
        let (mut pairs, mut at) = (Vec::new(), Vec::new());
        for (i, e) in examples.iter().enumerate() {
            let ids = encode(tok, single(e), file, || format!("example {i}"))?;
            if ids.len() < 2 {
                at.push(None);
            } else {
                at.push(Some(pairs.len()));
                pairs.push(Pair { context: ids[..1].to_vec(), continuation: ids[1..].to_vec() });
            }
        }
        Ok((pairs, at))
    };
    let (tp, tat) = prep(&train.examples, &train_file)?;
    let (ep, eat) = if eval.is_some() { prep(&ev.examples, &ev_file)? } else { (vec![], vec![]) };
    run.total = tp.len() + ep.len();
    // A sentence of one token has nothing to score: 0.0, counted as a fallback.
    let mean_of = |run: &mut Run<B, P>, pairs: &[Pair], at: &[Option<usize>]| {
        let owner: Vec<usize> = (0..pairs.len()).collect();
        let s = run.score(pairs, &owner)?;
        run.fallbacks += at.iter().filter(|a| a.is_none()).count();
        Ok::<_, Error>(at.iter().map(|a| a.map_or(0.0, |k| s[k].mean())).collect::<Vec<f64>>())
    };
    let train_scores = mean_of(run, &tp, &tat)?;
    if eval.is_some() {
        // The counts reported are the evaluated split's.
        (run.fallbacks, run.truncated) = (0, 0);
    }
    let threshold = cola_threshold(&train_scores, &train_gold);
    let scores = if eval.is_some() { mean_of(run, &ep, &eat)? } else { train_scores };
    let examples = scores
        .iter()
        .enumerate()
        .map(|(index, &s)| ExampleScore {
            index,
            scores: vec![s],
            prediction: usize::from(s > threshold),
        })
        .collect();
    Ok((examples, gold, Some(threshold)))
}

/// SST-2: the next-token log-probabilities of `negative` and `positive` after
/// `sentence + " very"`; a word of several tokens scores the sum of its tokens' (counted).
fn sst2<B: Backend, P: FnMut(usize, usize)>(
    run: &mut Run<B, P>,
    tok: &Tokenizer,
    data: &Path,
    split: &str,
) -> Result<Scoring> {
    let def = task("sst2")?;
    let sp = read_split(&def, data, split, false)?;
    let file = files(&sp, data);
    let gold = labels(&sp.examples, &file, split)?;
    let words: Vec<Vec<u32>> = ["negative", "positive"]
        .iter()
        .map(|w| encode(tok, w, &file, || format!("the word {w:?}")))
        .collect::<Result<_>>()?;
    if words.iter().any(Vec::is_empty) {
        return Err(Error::Vocab("\"negative\" or \"positive\" encodes to no tokens".into()));
    }
    let chain = words.iter().any(|w| w.len() > 1);
    let mut pairs = Vec::with_capacity(2 * sp.examples.len());
    for (i, e) in sp.examples.iter().enumerate() {
        let ctx = encode(tok, &format!("{} very", single(e)), &file, || format!("example {i}"))?;
        for w in &words {
            pairs.push(Pair { context: ctx.clone(), continuation: w.clone() });
        }
    }
    run.total = pairs.len();
    let owner: Vec<usize> = (0..pairs.len()).map(|k| k / 2).collect();
    let s = run.score(&pairs, &owner)?;
    if chain {
        run.fallbacks += sp.examples.len();
    }
    Ok((decide(&s, &owner, |x| x.sum()), gold))
}

/// Per example (`owner[i]` is pair i's), the candidates' scores in order and the highest's index.
fn decide(s: &[Scored], owner: &[usize], f: impl Fn(&Scored) -> f64) -> Vec<ExampleScore> {
    let n = owner.last().map_or(0, |&o| o + 1);
    let mut out: Vec<ExampleScore> =
        (0..n).map(|index| ExampleScore { index, scores: Vec::new(), prediction: 0 }).collect();
    for (x, &o) in s.iter().zip(owner) {
        out[o].scores.push(f(x));
    }
    for e in &mut out {
        e.prediction = argmax(&e.scores);
    }
    out
}

/// The index of the largest value (the first on ties).
fn argmax(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

/// RACE and Story Cloze: each candidate's mean token log-probability given the article and
/// question (RACE) or the story (Story Cloze); the highest wins.
fn choice<B: Backend, P: FnMut(usize, usize)>(
    run: &mut Run<B, P>,
    tok: &Tokenizer,
    task_: ZeroShotTask,
    data: &Path,
    split: &str,
) -> Result<Scoring> {
    let def = task(task_.name())?;
    let sp = read_split(&def, data, split, false)?;
    let file = files(&sp, data);
    let gold = labels(&sp.examples, &file, split)?;
    let (mut pairs, mut owner) = (Vec::new(), Vec::new());
    for (i, e) in sp.examples.iter().enumerate() {
        let Input::Choice { context, question, candidates } = &e.input else {
            return Err(Error::invalid(&file, format!("example {i} is not multiple choice")));
        };
        let text = if question.trim().is_empty() {
            context.trim().to_string()
        } else {
            format!("{} {}", context.trim(), question.trim())
        };
        let ctx = encode(tok, &text, &file, || format!("example {i}"))?;
        if ctx.is_empty() {
            return Err(Error::invalid(&file, format!("example {i}: the context has no tokens")));
        }
        for (k, c) in candidates.iter().enumerate() {
            let cont = encode(tok, c, &file, || format!("example {i}"))?;
            if cont.is_empty() {
                return Err(Error::invalid(
                    &file,
                    format!("example {i}: candidate {} has no tokens", k + 1),
                ));
            }
            pairs.push(Pair { context: ctx.clone(), continuation: cont });
            owner.push(i);
        }
    }
    run.total = pairs.len();
    let s = run.score(&pairs, &owner)?;
    Ok((decide(&s, &owner, Scored::mean), gold))
}

/// DPR and WSC, partial scoring (Trinh & Le 2018): for each candidate substituted for the
/// pronoun, the mean token log-probability of the rest of the sentence given the prefix up to
/// and including the candidate; the highest wins. A pronoun ending the sentence leaves nothing
/// to score: the whole substituted sentence's mean log-probability instead (counted).
fn pronoun<B: Backend, P: FnMut(usize, usize)>(
    run: &mut Run<B, P>,
    tok: &Tokenizer,
    file: &Path,
    schemas: &[winograd::Schema],
) -> Result<Scoring> {
    let (mut pairs, mut owner) = (Vec::new(), Vec::new());
    let mut fell_back = vec![false; schemas.len()];
    for (i, s) in schemas.iter().enumerate() {
        let at =
            |msg: String| Error::invalid(file, format!("example {i} (line {}): {msg}", s.line));
        for k in 0..s.candidates.len() {
            let (prefix, rest) = s.substituted(k);
            let ctx = encode(tok, &prefix, file, || format!("example {i} (line {})", s.line))?;
            let cont = encode(tok, rest, file, || format!("example {i} (line {})", s.line))?;
            let pair = if !cont.is_empty() && !ctx.is_empty() {
                Pair { context: ctx, continuation: cont }
            } else {
                fell_back[i] = true;
                let all = encode(tok, &format!("{prefix}{rest}"), file, || format!("example {i}"))?;
                if all.len() < 2 {
                    return Err(at(format!(
                        "candidate {:?} gives a sentence of {} token(s); nothing to score",
                        s.candidates[k],
                        all.len()
                    )));
                }
                Pair { context: all[..1].to_vec(), continuation: all[1..].to_vec() }
            };
            pairs.push(pair);
            owner.push(i);
        }
    }
    run.total = pairs.len();
    let scored = run.score(&pairs, &owner)?;
    run.fallbacks += fell_back.iter().filter(|&&f| f).count();
    let gold = schemas.iter().map(|s| s.answer).collect();
    Ok((decide(&scored, &owner, Scored::mean), gold))
}
