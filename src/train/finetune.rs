//! Fine-tuning (section 3.2): the pre-trained body, a linear head on the extract states, and
//! the objective L2 + λ·L1 with the auxiliary language-model loss on the same sequences.

use super::optim::AdamW;
use super::schedule::Schedule;
use crate::data::tasks::{Metric, TaskDef, read_split};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::kernels::crossentropy::IGNORE;
use crate::kernels::dropout::Dropout;
use crate::kernels::reduce::sum_squares;
use crate::kernels::rng::{Rng, derive};
use crate::model::checkpoint::{safetensors_bytes, save_model};
use crate::model::{Activations, Gpt};
use crate::tasks::{
    Example, Head, Item, Specials, Target, Tokens, Transformed, metrics, transform,
};
use crate::text::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// λ of the auxiliary LM loss (0 disables it).
    pub aux_lm: f32,
    /// Context length for the task (default: the model's n_positions).
    pub max_len: Option<usize>,
    pub seed: u64,
    /// Stop after this many updates (for quick runs).
    pub max_steps: Option<u64>,
    /// Also evaluate dev (and keep the best checkpoint) every this many updates; 0: only at the
    /// end of each epoch.
    pub eval_every: u64,
    /// Warm-up as a fraction of all updates.
    pub warmup: f64,
    pub clf_dropout: f32,
    pub weight_decay: f32,
    pub clip: f32,
    pub skip_bad_rows: bool,
    pub progress: bool,
}

impl FinetuneOptions {
    /// The paper's settings (section 4.1).
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        FinetuneOptions {
            data,
            out,
            epochs: 3,
            batch: 32,
            lr: 6.25e-5,
            aux_lm: 0.5,
            max_len: None,
            seed: 0,
            max_steps: None,
            eval_every: 0,
            warmup: 0.002,
            clf_dropout: 0.1,
            weight_decay: 0.01,
            clip: 1.0,
            skip_bad_rows: false,
            progress: true,
        }
    }
}

/// An example ready for the model.
#[derive(Clone, Debug)]
struct Prepared {
    t: Transformed,
    target: Target,
}

/// The special-token ids of a tokenizer.
pub fn specials(tok: &Tokenizer) -> Specials {
    let id = |n: &str| {
        tok.special_id(n)
            .expect("the tokenizer appends the three special tokens")
    };
    Specials {
        start: id("_start_"),
        delim: id("_delimiter_"),
        extract: id("_classify_"),
    }
}

fn prepare(
    tok: &Tokenizer,
    examples: &[Example],
    max_len: usize,
) -> Result<(Vec<Prepared>, usize)> {
    let sp = specials(tok);
    let mut truncated = 0;
    let mut out = Vec::with_capacity(examples.len());
    for e in examples {
        let tokens = Tokens::of(&e.input, |s| tok.encode(s))?;
        let t = transform(&tokens, sp, max_len);
        if let Some(q) = t.features.iter().flatten().find(|q| q.ids.len() > max_len) {
            return Err(Error::Config(format!(
                "--max-len {max_len} cannot hold an input of this task even after trimming ({} tokens with the special tokens); raise --max-len",
                q.ids.len()
            )));
        }
        truncated += usize::from(t.truncated > 0);
        out.push(Prepared {
            t,
            target: e.target.clone(),
        });
    }
    Ok((out, truncated))
}

/// A padded batch: ids and LM targets `[n_seq, len]`, and the head's items.
struct Batch {
    n_seq: usize,
    len: usize,
    ids: Vec<u32>,
    lm: Vec<u32>,
    items: Vec<Item>,
}

/// The longest sequence among `data` (at least 1): activations are sized for it rather than for
/// the model's whole context, so short-text tasks use a fraction of the memory.
fn longest(data: &[Prepared]) -> usize {
    data.iter()
        .flat_map(|e| e.t.features.iter().flatten())
        .map(|s| s.ids.len())
        .max()
        .unwrap_or(1)
}

fn batch(examples: &[&Prepared]) -> Batch {
    let seqs: Vec<_> = examples
        .iter()
        .flat_map(|e| e.t.features.iter().flatten())
        .collect();
    let len = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(1);
    let n_seq = seqs.len();
    let (mut ids, mut lm) = (vec![0u32; n_seq * len], vec![IGNORE; n_seq * len]);
    for (i, s) in seqs.iter().enumerate() {
        ids[i * len..i * len + s.ids.len()].copy_from_slice(&s.ids);
        // Predict each next token of the sequence; padding and the last token predict nothing.
        for j in 0..s.ids.len().saturating_sub(1) {
            lm[i * len + j] = s.ids[j + 1];
        }
    }
    let mut row = 0;
    let items = examples
        .iter()
        .map(|e| {
            let features =
                e.t.features
                    .iter()
                    .map(|f| {
                        f.iter()
                            .map(|s| {
                                let r = row * len + s.extract;
                                row += 1;
                                r
                            })
                            .collect()
                    })
                    .collect();
            Item {
                features,
                target: e.target.clone(),
            }
        })
        .collect();
    Batch {
        n_seq,
        len,
        ids,
        lm,
        items,
    }
}

/// Batches of one epoch, bucketed by length for speed: shuffle, sort each window of 50 batches'
/// worth of examples by length, cut into batches, shuffle the batches. A pure function of the
/// seed.
fn bucketed_batches(data: &[Prepared], batch: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let len = |i: usize| {
        data[i]
            .t
            .features
            .iter()
            .flatten()
            .map(|q| q.ids.len())
            .max()
            .unwrap_or(0)
    };
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks(batch * 50) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| len(i));
        batches.extend(w.chunks(batch).map(<[usize]>::to_vec));
    }
    for i in (1..batches.len()).rev() {
        batches.swap(i, rng.below(i as u64 + 1) as usize);
    }
    batches
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
    /// Per example: the class index, or the score for regression (file order).
    #[serde(skip)]
    pub predictions: Vec<f64>,
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

/// Scores `examples` without dropout, `batch` examples at a time.
fn predict(
    model: &Gpt,
    head: &Head,
    acts: &mut Activations,
    data: &[Prepared],
    batch_size: usize,
) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(batch_size.max(1)) {
        let refs: Vec<&Prepared> = chunk.iter().collect();
        let b = batch(&refs);
        acts.reshape(b.n_seq, b.len);
        let (rows, items) = extract_rows(&b.items);
        let hidden = model.forward_rows(acts, &b.ids, &rows);
        out.extend(head.forward(&hidden, &items));
    }
    out
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

fn evaluate_prepared(
    def: &TaskDef,
    model: &Gpt,
    head: &Head,
    acts: &mut Activations,
    data: &[Prepared],
    batch_size: usize,
) -> Evaluation {
    let scores = predict(model, head, acts, data, batch_size);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &x)| if x > b.1 { (i, x) } else { b },
            )
            .0
    };
    let predictions: Vec<f64> = scores
        .iter()
        .map(|s| {
            if def.metric == Metric::Correlation {
                s[0] as f64
            } else {
                argmax(s) as f64
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
    };
    if def.metric == Metric::Correlation {
        let gold: Vec<f64> = data
            .iter()
            .filter_map(|e| {
                if let Target::Score(s) = e.target {
                    Some(s as f64)
                } else {
                    None
                }
            })
            .collect();
        if gold.len() == data.len() {
            ev.pearson = Some(metrics::pearson(&ev.predictions, &gold));
            ev.spearman = Some(metrics::spearman(&ev.predictions, &gold));
            ev.score = ev.pearson.unwrap_or(0.0);
        }
    } else {
        let gold: Vec<usize> = data
            .iter()
            .filter_map(|e| {
                if let Target::Class(c) = e.target {
                    Some(c)
                } else {
                    None
                }
            })
            .collect();
        if gold.len() == data.len() {
            let pred: Vec<usize> = ev.predictions.iter().map(|&p| p as usize).collect();
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

#[derive(Clone, Debug, serde::Serialize)]
pub struct FinetuneSummary {
    pub steps: u64,
    pub best_epoch: usize,
    /// The update after which the kept (best) checkpoint was evaluated.
    pub best_step: u64,
    pub best_dev: Option<Evaluation>,
    pub train_examples: usize,
    pub train_truncated: usize,
    pub skipped_rows: usize,
    pub best_dir: PathBuf,
}

/// Gives `model` the three special tokens when its vocabulary is the bare BPE one (new rows
/// N(0, 0.02)), or checks it already has them.
pub fn with_special_tokens(mut model: Gpt, tok: &Tokenizer, seed: u64) -> Result<Gpt> {
    let (v, want) = (model.config.vocab_size, tok.vocab_size());
    if v == want {
        return Ok(model);
    }
    if v != tok.bpe_vocab_size() {
        return Err(Error::Config(format!(
            "the model has {v} token embeddings, the tokenizer {} (+3 special): they are not the same vocabulary",
            tok.bpe_vocab_size()
        )));
    }
    let d = model.config.n_embd;
    let key = derive(seed, 0x5BEC);
    let extra: Vec<f32> = (0..3 * d)
        .map(|i| {
            (crate::kernels::rng::normal(key, i as u64) * model.config.initializer_range as f64)
                as f32
        })
        .collect();
    let at = v * d;
    model.params.splice(at..at, extra);
    model.config.vocab_size = want;
    Ok(model)
}

/// Writes a fine-tuned run's checkpoint: the HF-layout model, the head, the task and the
/// tokenizer, so `evaluate`/`predict` need nothing else.
pub fn save_finetuned(
    dir: &Path,
    model: &Gpt,
    head: &Head,
    def: &TaskDef,
    tok: &Tokenizer,
    max_len: usize,
) -> Result<()> {
    crate::io::write_dir_atomic(dir, |tmp| {
        save_model(tmp, model)?;
        let bytes = safetensors_bytes(&[
            ("weight".into(), vec![head.d, head.n_out], &head.w),
            ("bias".into(), vec![head.n_out], &head.b),
        ])?;
        write_atomic(&tmp.join("head.safetensors"), &bytes)?;
        let task = serde_json::json!({"task": def, "max_len": max_len});
        write_atomic(
            &tmp.join("task.json"),
            serde_json::to_string_pretty(&task)
                .expect("json")
                .as_bytes(),
        )?;
        tok.save(tmp)?;
        Ok(())
    })
}

/// A fine-tuned checkpoint loaded back: model, head, task, tokenizer, context length.
pub struct Finetuned {
    pub model: Gpt,
    pub head: Head,
    pub task: TaskDef,
    pub tokenizer: Tokenizer,
    pub max_len: usize,
}

/// Loads what [`save_finetuned`] wrote.
pub fn load_finetuned(dir: &Path) -> Result<Finetuned> {
    use crate::model::checkpoint::{copy_f32, load_model, read_safetensors};
    let tp = dir.join("task.json");
    let text = std::fs::read_to_string(&tp).map_err(|e| Error::invalid(dir, format!("not a fine-tuned checkpoint: task.json is missing ({e}); pass the best/ directory of a `gpt1 finetune` run")))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::invalid(&tp, format!("not JSON ({e})")))?;
    let task: TaskDef = serde_json::from_value(v["task"].clone())
        .map_err(|e| Error::invalid(&tp, format!("not a task definition ({e})")))?;
    let max_len = v["max_len"]
        .as_u64()
        .ok_or_else(|| Error::invalid(&tp, "max_len is missing"))? as usize;
    let model = load_model(dir)?;
    let tokenizer = Tokenizer::load(dir, None)?;
    let hp = dir.join("head.safetensors");
    let bytes = read_safetensors(&hp)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(&hp, format!("corrupt head ({e})")))?;
    let mut head = Head::new(task.kind, model.config.n_embd, task.n_out(), 0);
    for (name, dst, shape) in [
        ("weight", &mut head.w, vec![head.d, head.n_out]),
        ("bias", &mut head.b, vec![head.n_out]),
    ] {
        let view = st
            .tensor(name)
            .map_err(|e| Error::invalid(&hp, format!("{name}: {e}")))?;
        if view.shape() != shape.as_slice() {
            return Err(Error::invalid(
                &hp,
                format!(
                    "{name} has shape {:?}, the task needs {shape:?}",
                    view.shape()
                ),
            ));
        }
        copy_f32(&hp, name, &view, dst)?;
    }
    Ok(Finetuned {
        model,
        head,
        task,
        tokenizer,
        max_len,
    })
}

/// Per split of a task: examples, label counts, and (with a tokenizer) the lengths of the
/// model inputs and how many exceed `max_len`.
pub fn split_stats(
    def: &TaskDef,
    data: &Path,
    tok: Option<&Tokenizer>,
    max_len: usize,
    skip_bad_rows: bool,
) -> Result<serde_json::Value> {
    let mut splits = serde_json::Map::new();
    for &name in def.splits() {
        let s = match read_split(def, data, name, skip_bad_rows) {
            Ok(s) => s,
            Err(Error::MissingSplit { .. }) => continue,
            Err(e) => return Err(e),
        };
        let mut labels = serde_json::Map::new();
        for e in &s.examples {
            let key = key_of(&e.target, def);
            let n = labels.get(&key).and_then(|v| v.as_u64()).unwrap_or(0) + 1;
            labels.insert(key, n.into());
        }
        let mut js = serde_json::json!({"examples": s.examples.len(), "labels": labels, "skipped": s.skipped});
        if let Some(tok) = tok {
            // Lengths before truncation (an unbounded context), then how many do not fit.
            let (p, _) = prepare(tok, &s.examples, usize::MAX / 4)?;
            let mut lens: Vec<usize> = p
                .iter()
                .flat_map(|e| e.t.features.iter().flatten().map(|q| q.ids.len()))
                .collect();
            lens.sort_unstable();
            let pct = |q: f64| {
                lens.get(((lens.len().max(1) - 1) as f64 * q).round() as usize)
                    .copied()
                    .unwrap_or(0)
            };
            let over = p
                .iter()
                .filter(|e| e.t.features.iter().flatten().any(|q| q.ids.len() > max_len))
                .count();
            js["tokens"] = serde_json::json!({"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": lens.last().copied().unwrap_or(0)});
            js["truncated"] = over.into();
            js["max_len"] = max_len.into();
        }
        splits.insert(name.to_string(), js);
    }
    Ok(serde_json::json!({"task": def.name, "splits": splits}))
}

fn key_of(t: &Target, def: &TaskDef) -> String {
    match t {
        Target::Class(c) if def.labels.is_empty() => format!("candidate {}", c + 1),
        Target::Class(c) => def.labels[*c].clone(),
        Target::Score(_) => "score".to_string(),
        Target::None => "unlabelled".to_string(),
    }
}

/// Writes one prediction per example of split `split` to `out` (TSV `index`, `prediction`:
/// label names, scores, or the 1-based candidate), atomically.
pub fn predict_to_file(
    ft: &Finetuned,
    data: &Path,
    split: &str,
    batch_size: usize,
    out: &Path,
) -> Result<usize> {
    let s = read_split(&ft.task, data, split, false)?;
    let ev = scored_split(ft, &s.examples, batch_size)?;
    let mut text = String::from("index\tprediction\n");
    for (i, p) in ev.predictions.iter().enumerate() {
        let v = match (ft.task.kind, ft.task.labels.is_empty()) {
            (crate::tasks::HeadKind::Regress, _) => format!("{p:.4}"),
            (_, false) => ft.task.labels[*p as usize].clone(),
            (_, true) => format!("{}", *p as usize + 1),
        };
        text.push_str(&format!("{i}\t{v}\n"));
    }
    write_atomic(out, text.as_bytes())?;
    Ok(ev.predictions.len())
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
        return Err(Error::Config(format!(
            "split {split} of {} has no labels (GLUE keeps its test labels private): evaluate a \
             labelled split (--split dev), or write predictions with `gpt1 predict`",
            data.display()
        )));
    }
    scored_split(ft, &s.examples, batch_size)
}

/// Runs the fine-tuned model over `examples` (labelled or not).
fn scored_split(ft: &Finetuned, examples: &[Example], batch_size: usize) -> Result<Evaluation> {
    if batch_size == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    let (p, _) = prepare(&ft.tokenizer, examples, ft.max_len)?;
    let per = p
        .iter()
        .map(|e| e.t.features.iter().map(Vec::len).sum::<usize>())
        .max()
        .unwrap_or(1);
    let mut acts = Activations::new(&ft.model.config, batch_size * per, longest(&p), false);
    Ok(evaluate_prepared(
        &ft.task, &ft.model, &ft.head, &mut acts, &p, batch_size,
    ))
}

/// Fine-tunes `model` on task `def` as `opts` says; keeps the best dev checkpoint in
/// `OUT/best/`.
pub fn finetune(
    model: Gpt,
    tok: &Tokenizer,
    def: &TaskDef,
    opts: &FinetuneOptions,
) -> Result<FinetuneSummary> {
    if opts.batch == 0 || opts.epochs == 0 {
        return Err(Error::Config(
            "--batch and --epochs must be at least 1".into(),
        ));
    }
    let model = with_special_tokens(model, tok, opts.seed)?;
    let max_len = opts
        .max_len
        .unwrap_or(model.config.n_positions)
        .min(model.config.n_positions);
    let train = read_split(def, &opts.data, "train", opts.skip_bad_rows)?;
    // No dev split is allowed (the last weights are kept); a broken one is an error.
    let dev = match read_split(def, &opts.data, "dev", opts.skip_bad_rows) {
        Ok(d) => Some(d),
        Err(Error::MissingSplit { .. }) => None,
        Err(e) => return Err(e),
    };
    let (train_p, train_truncated) = prepare(tok, &train.examples, max_len)?;
    let dev_p = match &dev {
        Some(d) => Some(prepare(tok, &d.examples, max_len)?.0),
        None => None,
    };
    // Never overwrite an earlier run's metrics or kept checkpoint.
    for f in ["metrics.jsonl", "best"] {
        if opts.out.join(f).exists() {
            return Err(Error::invalid(
                opts.out.join(f),
                "an earlier fine-tuning run is here; choose another --out (or remove it)",
            ));
        }
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let metrics_path = opts.out.join("metrics.jsonl");
    let mut metrics =
        std::fs::File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;

    let d = model.config.n_embd;
    let per_example = train_p
        .iter()
        .map(|e| e.t.features.iter().map(Vec::len).sum::<usize>())
        .max()
        .unwrap_or(1);
    let t_max = longest(&train_p).max(dev_p.as_deref().map_or(1, longest));
    let mut acts = Activations::new(&model.config, opts.batch * per_example, t_max, true);
    let mut head = Head::new(def.kind, d, def.n_out(), opts.seed);
    let mut model = model;
    let mut grads = vec![0.0f32; model.params.len()];
    let mut dh: Vec<f32> = Vec::new();
    let mut opt = AdamW::new(&model.config, opts.weight_decay);
    let (mut opt_w, mut opt_b) = (
        AdamW::flat(head.w.len(), true, opts.weight_decay),
        AdamW::flat(head.b.len(), false, opts.weight_decay),
    );
    let steps_per_epoch = train_p.len().div_ceil(opts.batch) as u64;
    let total = (steps_per_epoch * opts.epochs as u64)
        .min(opts.max_steps.unwrap_or(u64::MAX))
        .max(1);
    let warmup = ((total as f64 * opts.warmup).ceil() as u64).max(1);
    let bar = if opts.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    let best_dir = opts.out.join("best");
    let (started, mut seen) = (std::time::Instant::now(), 0usize);
    let (mut step, mut best_epoch, mut best_step, mut best): (u64, usize, u64, Option<Evaluation>) =
        (0, 0, 0, None);
    for epoch in 0..opts.epochs {
        let batches = bucketed_batches(&train_p, opts.batch, derive(opts.seed, epoch as u64));
        for (bi, chunk) in batches.iter().enumerate() {
            if step >= total {
                break;
            }
            let refs: Vec<&Prepared> = chunk.iter().map(|&i| &train_p[i]).collect();
            let b = batch(&refs);
            acts.reshape(b.n_seq, b.len);
            let key = derive(derive(opts.seed, 0xF17E), step);
            grads.iter_mut().for_each(|g| *g = 0.0);
            let mut hg = head.zeros_like();
            model.forward(&mut acts, &b.ids, Some(key));
            // The head's gradient on the body's output, reused across steps.
            dh.clear();
            dh.resize(b.n_seq * b.len * d, 0.0);
            let n_items = b
                .items
                .iter()
                .filter(|it| it.target != Target::None)
                .count()
                .max(1);
            let hdrop = if opts.clf_dropout > 0.0 {
                Dropout {
                    p: opts.clf_dropout,
                    key: derive(key, 0xC1F),
                }
            } else {
                Dropout::OFF
            };
            let task_loss = head.loss_backward(
                &mut hg,
                acts.hidden(),
                &b.items,
                hdrop,
                1.0 / n_items as f32,
                &mut dh,
            ) / n_items as f64;
            let counted = b.lm.iter().filter(|&&t| t != IGNORE).count().max(1);
            let lm_scale = opts.aux_lm / counted as f32;
            let lm_loss = model.backward(
                &mut acts,
                &mut grads,
                &b.ids,
                &b.lm,
                Some(key),
                lm_scale,
                Some(&dh),
            ) / counted as f64;
            // One global norm over body and head, as clipping all parameters together does.
            let norm =
                (sum_squares(&grads) + sum_squares(&hg.w) + sum_squares(&hg.b)).sqrt() as f32;
            if opts.clip > 0.0 && norm > opts.clip {
                let f = opts.clip / (norm + 1e-6);
                for g in grads
                    .iter_mut()
                    .chain(hg.w.iter_mut())
                    .chain(hg.b.iter_mut())
                {
                    *g *= f;
                }
            }
            if !(task_loss.is_finite() && lm_loss.is_finite()) {
                return Err(Error::Diverged {
                    step: step + 1,
                    loss: task_loss + lm_loss,
                });
            }
            let lr = Schedule::WarmupLinear.lr(opts.lr, step, warmup, total);
            opt.step(&mut model.params, &grads, lr);
            opt_w.step(&mut head.w, &hg.w, lr);
            opt_b.step(&mut head.b, &hg.b, lr);
            step += 1;
            let rec = serde_json::json!({"step": step, "epoch": epoch, "loss": task_loss + opts.aux_lm as f64 * lm_loss, "task_loss": task_loss, "lm_loss": lm_loss, "lr": lr, "grad_norm": norm});
            writeln!(metrics, "{rec}").map_err(|e| Error::io(&metrics_path, e))?;
            bar.set_position(step);
            seen += chunk.len();
            let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "epoch {epoch} task {task_loss:.4} lm {lm_loss:.3} {rate:.1} ex/s"
            ));
            // Dev evaluation at the end of each epoch (or of the run), and every --eval-every.
            let end = bi + 1 == batches.len() || step >= total;
            let due = opts.eval_every > 0 && step % opts.eval_every == 0;
            if let (Some(dp), true) = (&dev_p, end || due) {
                let ev = evaluate_prepared(def, &model, &head, &mut acts, dp, opts.batch);
                writeln!(metrics, "{}", serde_json::json!({"step": step, "epoch": epoch, "dev_score": ev.score, "dev_metric": ev.metric})).map_err(|e| Error::io(&metrics_path, e))?;
                if best.as_ref().is_none_or(|b| ev.score > b.score) {
                    save_finetuned(&best_dir, &model, &head, def, tok, max_len)?;
                    (best_epoch, best_step) = (epoch, step);
                    best = Some(Evaluation {
                        predictions: Vec::new(),
                        ..ev
                    });
                }
            }
        }
        if step >= total {
            break;
        }
    }
    bar.finish();
    if best.is_none() {
        save_finetuned(&best_dir, &model, &head, def, tok, max_len)?;
    }
    crate::plot::curves_or_warn(&metrics_path, &opts.out.join("curves.png"), &def.name);
    Ok(FinetuneSummary {
        steps: step,
        best_epoch,
        best_step,
        best_dev: best,
        train_examples: train_p.len(),
        train_truncated,
        skipped_rows: train.skipped,
        best_dir,
    })
}
