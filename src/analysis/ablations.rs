//! Table 5: the ablations. Each variant is fine-tuned on each task with the same settings, and
//! its best dev score is recorded: the full model (pre-trained Transformer, auxiliary LM), the
//! same without the auxiliary objective (λ = 0), the same architecture without pre-training
//! (its random initialisation, auxiliary LM on), and, given one, the pre-trained LSTM baseline
//! (auxiliary LM on). One cell per run directory; a finished cell (`cell.json`) is not
//! recomputed when the command runs again.

use super::{Table, fmt_score};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::kernels::rng::{derive, stream};
use crate::model::Gpt;
use crate::model::Net;
use crate::model::lstm::Lstm;
use crate::tasks::readers::{Metric, TaskDef};
use crate::text::Tokenizer;
use crate::train::finetune::{FinetuneOptions, finetune_net};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A row of Table 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Transformer, pre-trained, auxiliary LM.
    Full,
    /// Transformer, pre-trained, no auxiliary LM.
    NoAuxLm,
    /// Transformer from its random initialisation, auxiliary LM.
    NoPretraining,
    /// The LSTM baseline, pre-trained, auxiliary LM.
    Lstm,
}

impl Variant {
    pub const ALL: [Variant; 4] =
        [Variant::Full, Variant::NoAuxLm, Variant::NoPretraining, Variant::Lstm];

    /// The row's label, as the paper writes it.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Full => "Transformer w/ aux LM (full)",
            Variant::NoAuxLm => "Transformer w/o aux LM",
            Variant::NoPretraining => "Transformer w/o pre-training",
            Variant::Lstm => "LSTM w/ aux LM",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::NoAuxLm => "no-aux-lm",
            Variant::NoPretraining => "no-pretraining",
            Variant::Lstm => "lstm",
        }
    }
}

/// The names the ablations write in their directory: the tables and figure, a run per cell
/// (`VARIANT-TASK/`) and the pre-trainings the command line runs (`pretrain-*/`).
pub fn own_name(n: &str) -> bool {
    n.starts_with("ablations.")
        || n.starts_with("pretrain-")
        || Variant::ALL.iter().any(|v| n.starts_with(&format!("{}-", v.dir())))
}

/// One cell: a variant fine-tuned on a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub variant: Variant,
    pub task: String,
    pub metric: Metric,
    /// The best dev score (none without a dev split).
    pub dev: Option<f64>,
    pub steps: u64,
}

const CELL: &str = "cell.json";

/// Fine-tunes every variant on every task (`tasks`: definition and data folder), or reads back
/// the cells already done, then writes `ablations.csv`, `ablations.md` and `ablations.png` into
/// `opts.out`. Every run uses `opts` but for its output folder (`OUT/VARIANT-TASK/`), its data
/// and, for the variants, λ and the initial weights.
pub fn ablations(
    pretrained: &Gpt,
    lstm: Option<&Lstm>,
    tok: &Tokenizer,
    tasks: &[(TaskDef, PathBuf)],
    opts: &FinetuneOptions,
) -> Result<Vec<Cell>> {
    if tasks.is_empty() {
        return Err(Error::setting("tasks", "needs at least one task"));
    }
    let out = &opts.out;
    super::claim_out(out, own_name)?;
    let mut cells = Vec::new();
    let variants: Vec<Variant> =
        Variant::ALL.into_iter().filter(|&v| v != Variant::Lstm || lstm.is_some()).collect();
    for &variant in &variants {
        for (def, data) in tasks {
            let run = out.join(format!("{}-{}", variant.dir(), def.name));
            let cf = run.join(CELL);
            if let Some(c) = super::finished::<Cell>(&run, CELL)? {
                cells.push(c);
                continue;
            }
            let mut o = opts.clone();
            (o.out, o.data) = (run.clone(), data.clone());
            o.resume = run.join(crate::train::rundir::SPEC_FILE).exists();
            let model = match variant {
                Variant::Full => Net::Transformer(pretrained.clone()),
                Variant::NoAuxLm => {
                    o.aux_lm = 0.0;
                    Net::Transformer(pretrained.clone())
                }
                Variant::NoPretraining => Net::Transformer(Gpt::init(
                    pretrained.config.clone(),
                    derive(o.seed, stream::INIT),
                )),
                Variant::Lstm => Net::Lstm(lstm.expect("filtered above").clone()),
            };
            let s = finetune_net(model, tok, def, &o)?;
            let c = Cell {
                variant,
                task: def.name.clone(),
                metric: def.metric,
                dev: s.best_dev.as_ref().map(|e| e.score),
                steps: s.steps,
            };
            write_atomic(&cf, serde_json::to_string_pretty(&c).expect("json").as_bytes())?;
            cells.push(c);
        }
    }
    write_outputs(out, tasks, &variants, &cells)?;
    Ok(cells)
}

fn write_outputs(
    out: &Path,
    tasks: &[(TaskDef, PathBuf)],
    variants: &[Variant],
    cells: &[Cell],
) -> Result<()> {
    let names: Vec<String> = tasks.iter().map(|(d, _)| d.name.clone()).collect();
    let score = |v: Variant, t: &str| {
        cells.iter().find(|c| c.variant == v && c.task == t).and_then(|c| c.dev)
    };
    let mut header = vec!["method".to_string()];
    for (d, _) in tasks {
        let m = serde_json::to_value(d.metric).ok().and_then(|v| v.as_str().map(String::from));
        header.push(format!("{} ({})", d.name, m.unwrap_or_default()));
    }
    header.push("avg".into());
    let mut rows = Vec::new();
    let mut series = Vec::new();
    for &v in variants {
        let vals: Vec<Option<f64>> = names.iter().map(|t| score(v, t)).collect();
        let have: Vec<f64> = vals.iter().flatten().copied().collect();
        let avg = (!have.is_empty()).then(|| have.iter().sum::<f64>() / have.len() as f64);
        let mut row = vec![v.label().to_string()];
        row.extend(vals.iter().map(|x| x.map_or("-".into(), fmt_score)));
        row.push(avg.map_or("-".into(), fmt_score));
        rows.push(row);
        series.push((v.label().to_string(), vals));
    }
    Table { header, rows }.write(out, "ablations")?;
    crate::plot::bar_chart(
        &out.join("ablations.png"),
        "Table 5: ablations",
        "dev score",
        &names,
        &series,
    )
}
