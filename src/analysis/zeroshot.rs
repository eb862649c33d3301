//! Figure 2 (right): the zero-shot heuristics along pre-training. Every checkpoint of a
//! pre-training run is scored on each task with [`crate::zeroshot::zero_shot`], and each score is
//! normalised between random guessing (0) and a reference (1), as the paper plots them.

use super::{Table, fmt_score};
use crate::error::{Error, Result};
use crate::model::checkpoint::load_model;
use crate::text::Tokenizer;
use crate::train::checkpoint::STATE_FILE;
use crate::zeroshot::{ZeroShotTask, zero_shot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where each task's files sit under one data folder (`--data`), and what chance scores.
pub fn layout(task: ZeroShotTask) -> (&'static str, f64) {
    match task {
        ZeroShotTask::Cola => ("glue/CoLA", 0.0),
        ZeroShotTask::Sst2 => ("glue/SST-2", 0.5),
        ZeroShotTask::Race => ("race", 0.25),
        ZeroShotTask::StoryCloze => ("storycloze", 0.5),
        ZeroShotTask::Dprd => ("winograd/dpr", 0.5),
        ZeroShotTask::Wsc => ("winograd/wsc", 0.5),
    }
}

/// The reference a task's score is normalised by when none is given: GPT-1's fine-tuned result
/// in the paper (CoLA 45.4 Matthews, SST-2 91.3 %, RACE 59.0 %, Story Cloze 86.5 %); the
/// Winograd sets have none there, so a perfect score (1.0) is the reference.
pub fn default_reference(task: ZeroShotTask) -> f64 {
    match task {
        ZeroShotTask::Cola => 0.454,
        ZeroShotTask::Sst2 => 0.913,
        ZeroShotTask::Race => 0.590,
        ZeroShotTask::StoryCloze => 0.865,
        ZeroShotTask::Dprd | ZeroShotTask::Wsc => 1.0,
    }
}

/// One checkpoint's score on one task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub checkpoint: String,
    pub step: u64,
    /// Tokens seen by then: step × batch × sequence length.
    pub tokens: u64,
    pub task: String,
    pub split: String,
    pub score: f64,
    /// (score − chance) / (reference − chance).
    pub normalized: f64,
}

/// The resumable checkpoints of a pre-training run (`checkpoint-N/`, `final/`), by step, with
/// the tokens seen by each.
pub fn checkpoints(run: &Path) -> Result<Vec<(u64, u64, PathBuf)>> {
    let rd = std::fs::read_dir(run).map_err(|e| Error::io(run, e))?;
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let sp = entry.path().join(STATE_FILE);
        let Ok(text) = std::fs::read_to_string(&sp) else { continue };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(&sp, format!("not JSON ({e})")))?;
        let s = &v["state"];
        let (Some(step), Some(batch), Some(seq)) =
            (s["step"].as_u64(), s["batch"].as_u64(), s["seq"].as_u64())
        else {
            return Err(Error::invalid(&sp, "no step, batch and seq in its state"));
        };
        out.push((step, step * batch * seq, entry.path()));
    }
    out.sort();
    out.dedup_by_key(|c| c.0);
    if out.is_empty() {
        return Err(Error::invalid(
            run,
            "no checkpoints with a trainer state here: pass a `gpt1 pretrain` run directory",
        ));
    }
    Ok(out)
}

/// Scores every checkpoint of `run` on every task (`tasks`: the task and its data folder), with
/// `refs` overriding [`default_reference`], its products at `precision`; appends each point to `out/zero-shot.jsonl` as it
/// comes (a point already there is not recomputed), then writes `zero-shot.csv`, `.md`, `.png`.
#[allow(clippy::too_many_arguments)]
pub fn along_pretraining(
    run: &Path,
    tok: &Tokenizer,
    tasks: &[(ZeroShotTask, PathBuf)],
    refs: &BTreeMap<String, f64>,
    batch: usize,
    precision: crate::backend::Precision,
    device: crate::backend::Device,
    out: &Path,
) -> Result<Vec<Point>> {
    for (task, _) in tasks {
        let chance = layout(*task).1;
        if let Some(&r) = refs.get(task.name())
            && (!r.is_finite() || r == chance)
        {
            return Err(Error::setting(
                "reference",
                format!(
                    "{}={r}: the reference must be a finite score other than chance ({chance}): \
                     it is the 1 of the normalised scale, chance its 0",
                    task.name()
                ),
            ));
        }
    }
    super::claim_out(out, |n| n.starts_with("zero-shot."))?;
    let log = out.join("zero-shot.jsonl");
    let mut points: Vec<Point> = match std::fs::read_to_string(&log) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    Error::invalid(
                        &log,
                        format!("line {}: {e}; remove the file to start over", i + 1),
                    )
                })
            })
            .collect::<Result<_>>()?,
        Err(_) => Vec::new(),
    };
    // The GPU once for every checkpoint (each one's weights are uploaded in turn).
    let gpu = match device {
        crate::backend::Device::Cpu => None,
        dev => Some(dev.cuda(precision)?),
    };
    for (step, tokens, dir) in checkpoints(run)? {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let todo: Vec<&(ZeroShotTask, PathBuf)> = tasks
            .iter()
            .filter(|(t, _)| !points.iter().any(|p| p.step == step && p.task == t.name()))
            .collect();
        if todo.is_empty() {
            continue;
        }
        let mut model = load_model(&dir)?;
        model.backend = crate::backend::Cpu::new(precision);
        let on_gpu = gpu.as_ref().map(|g| model.to_backend(g.clone()));
        for (task, data) in todo {
            let split = task.default_split();
            let r = match &on_gpu {
                Some(g) => zero_shot(g, tok, *task, data, split, batch)?,
                None => zero_shot(&model, tok, *task, data, split, batch)?,
            };
            let chance = layout(*task).1;
            let reference = refs.get(task.name()).copied().unwrap_or(default_reference(*task));
            let p = Point {
                checkpoint: name.clone(),
                step,
                tokens,
                task: task.name().to_string(),
                split: split.to_string(),
                score: r.score,
                normalized: (r.score - chance) / (reference - chance),
            };
            append_line(&log, &serde_json::to_string(&p).expect("a point serialises"))?;
            points.push(p);
        }
    }
    points.sort_by(|a, b| (a.step, &a.task).cmp(&(b.step, &b.task)));
    write_outputs(out, &points)?;
    Ok(points)
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").and_then(|_| f.sync_data()).map_err(|e| Error::io(path, e))
}

fn write_outputs(out: &Path, points: &[Point]) -> Result<()> {
    let tasks: Vec<String> = {
        let mut t: Vec<String> = points.iter().map(|p| p.task.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let mut steps: Vec<(u64, u64, String)> =
        points.iter().map(|p| (p.step, p.tokens, p.checkpoint.clone())).collect();
    steps.sort();
    steps.dedup();
    let mut header = vec!["checkpoint".to_string(), "updates".into(), "tokens".into()];
    for t in &tasks {
        header.push(t.clone());
        header.push(format!("{t} (normalized)"));
    }
    let rows = steps
        .iter()
        .map(|(step, tokens, name)| {
            let mut r = vec![name.clone(), step.to_string(), tokens.to_string()];
            for t in &tasks {
                match points.iter().find(|p| p.step == *step && &p.task == t) {
                    Some(p) => r.extend([fmt_score(p.score), fmt_score(p.normalized)]),
                    None => r.extend(["-".to_string(), "-".to_string()]),
                }
            }
            r
        })
        .collect();
    Table { header, rows }.write(out, "zero-shot")?;
    let series: Vec<(String, Vec<(f64, f64)>)> = tasks
        .iter()
        .map(|t| {
            (
                t.clone(),
                points
                    .iter()
                    .filter(|p| &p.task == t)
                    .map(|p| (p.step as f64, p.normalized))
                    .collect(),
            )
        })
        .collect();
    let x1 = steps.last().map_or(1.0, |s| s.0 as f64).max(1.0);
    let ys = points.iter().map(|p| p.normalized);
    let (lo, hi) = ys.fold((0.0f64, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
    let pad = ((hi - lo) * 0.1).max(0.05);
    crate::plot::line_chart(
        &out.join("zero-shot.png"),
        "zero-shot performance along pre-training",
        ("# of pre-training updates", (0.0, x1)),
        ("normalized performance", (lo - pad, hi + pad)),
        &series,
    )
}
