//! Figure 2 (left): the effect of transferring K pre-trained blocks. For each K the embeddings
//! and the first K blocks come from the pre-trained model, the rest are re-initialised, and the
//! model is fine-tuned; the dev and train metrics are recorded.

use super::{Table, fmt_score};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::kernels::rng::{derive, stream};
use crate::model::Gpt;
use crate::tasks::checkpoint::load_finetuned;
use crate::tasks::evaluate::scored_split;
use crate::tasks::readers::{Metric, TaskDef, read_split};
use crate::text::Tokenizer;
use crate::train::finetune::{FinetuneOptions, finetune};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug)]
pub struct LayersOptions {
    /// The K to try (each at most the model's n_layer).
    pub layers: Vec<usize>,
    /// Train examples the train metric is measured on: the first N of the split (0: all).
    pub train_eval: usize,
    /// The fine-tuning settings of every run; `out` is the analysis directory, each run goes
    /// to `out/transfer-K/`.
    pub finetune: FinetuneOptions,
}

/// One point of the figure.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerPoint {
    pub layers: usize,
    pub metric: Metric,
    /// The best dev score of the run (none without a dev split).
    pub dev: Option<f64>,
    /// The kept checkpoint's score on the train examples measured.
    pub train: f64,
    pub train_examples: usize,
    pub steps: u64,
}

const POINT: &str = "point.json";

/// Runs (or, for the K already done, reads back) every fine-tuning of `opts.layers`, then writes
/// `layers.csv`, `layers.md` and `layers.png` into the analysis directory. A run whose
/// `point.json` exists is not recomputed; an unfinished one (killed midway) is started again.
pub fn layers(
    model: &Gpt,
    tok: &Tokenizer,
    def: &TaskDef,
    opts: &LayersOptions,
) -> Result<Vec<LayerPoint>> {
    let out = &opts.finetune.out;
    let n_layer = model.config.n_layer;
    if let Some(&k) = opts.layers.iter().find(|&&k| k > n_layer) {
        return Err(Error::setting("layers", format!("{k} exceeds the model's {n_layer} blocks")));
    }
    if opts.layers.is_empty() {
        return Err(Error::setting("layers", "needs at least one value"));
    }
    super::claim_out(out, |n| n.starts_with("transfer-") || n.starts_with("layers."))?;
    let mut points = Vec::new();
    for &k in &opts.layers {
        let run = out.join(format!("transfer-{k}"));
        let pf = run.join(POINT);
        if let Some(p) = super::finished::<LayerPoint>(&run, POINT)? {
            points.push(p);
            continue;
        }
        let mut m = model.clone();
        m.keep_layers(k, derive(opts.finetune.seed, stream::INIT));
        let mut o = opts.finetune.clone();
        o.out = run.clone();
        o.resume = run.join(crate::train::rundir::SPEC_FILE).exists();
        let s = finetune(m, tok, def, &o)?;
        let mut ft = load_finetuned(&s.best_dir)?;
        if let crate::model::Net::Transformer(m) = &mut ft.model {
            m.backend = crate::backend::Cpu::new(o.precision);
        }
        // The train split is scored where the fine-tuning ran (`--device`).
        ft.device = o.device;
        let mut train = read_split(def, &o.data, "train", o.skip_bad_rows)?.examples;
        if opts.train_eval > 0 {
            train.truncate(opts.train_eval);
        }
        let ev = scored_split(&ft, &train, o.batch)?;
        let p = LayerPoint {
            layers: k,
            metric: def.metric,
            dev: s.best_dev.as_ref().map(|e| e.score),
            train: ev.score,
            train_examples: train.len(),
            steps: s.steps,
        };
        let js = serde_json::to_string_pretty(&p).expect("a point serialises");
        write_atomic(&pf, js.as_bytes())?;
        points.push(p);
    }
    points.sort_by_key(|p| p.layers);
    write_outputs(out, &def.name, n_layer, &points)?;
    Ok(points)
}

fn write_outputs(out: &Path, task: &str, n_layer: usize, points: &[LayerPoint]) -> Result<()> {
    let metric = points.first().map_or(Metric::Accuracy, |p| p.metric);
    let metric_name = serde_json::to_value(metric)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let table = Table {
        header: ["layers transferred", "dev", "train", "train examples", "steps"]
            .map(String::from)
            .to_vec(),
        rows: points
            .iter()
            .map(|p| {
                vec![
                    p.layers.to_string(),
                    p.dev.map_or("-".into(), fmt_score),
                    fmt_score(p.train),
                    p.train_examples.to_string(),
                    p.steps.to_string(),
                ]
            })
            .collect(),
    };
    table.write(out, "layers")?;
    let mut series =
        vec![("train".to_string(), points.iter().map(|p| (p.layers as f64, p.train)).collect())];
    let dev: Vec<(f64, f64)> =
        points.iter().filter_map(|p| p.dev.map(|d| (p.layers as f64, d))).collect();
    if !dev.is_empty() {
        series.push(("dev".to_string(), dev));
    }
    let ys = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let pad = ((hi - lo) * 0.1).max(0.02);
    crate::plot::line_chart(
        &out.join("layers.png"),
        &format!("{task}: layers transferred"),
        ("# of layers transferred", (0.0, n_layer as f64)),
        (&metric_name, (lo - pad, hi + pad)),
        &series,
    )
}
