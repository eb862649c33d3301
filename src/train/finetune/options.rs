//! What a fine-tuning run is asked ([`FinetuneOptions`], with the paper's defaults in
//! [`FINETUNE`]), what `run.json` records of it ([`FinetuneSpec`]: the task, the data's and the
//! initial model's identity, every setting that fixes the weights) and what it answers
//! ([`FinetuneSummary`]).

use crate::backend::{Device, Precision};
use crate::sys::fnv_words as fnv;
use crate::tasks::batch::Prepared;
use crate::tasks::evaluate::Evaluation;
use crate::tasks::readers::TaskDef;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// The precision of the matrix products (fp32 master weights and state either way).
    pub precision: Precision,
    /// The checkpoint directory the model came from (`None`: from scratch), for `run.json`.
    pub model_dir: Option<PathBuf>,
    /// Save `OUT/checkpoint-N/` every this many updates (0: only on Ctrl-C).
    pub save_every: u64,
    /// `checkpoint-N/` directories kept (the newest; 0 keeps all).
    pub keep_checkpoints: usize,
    /// Continue the run in `out` from its newest checkpoint.
    pub resume: bool,
    /// Data parallelism: this process is one rank of `comm` (`mpirun -np N gpt1 finetune`);
    /// the ranks share each batch's examples, rank 0 alone writes the run directory.
    pub comm: Option<std::sync::Arc<dyn crate::dist::Collective>>,
    /// Where the model runs (the task head's few values stay on the host).
    pub device: Device,
}

/// The paper's fine-tuning settings (section 4.1): the one source of the defaults of
/// [`FinetuneOptions::new`] and of `gpt1 finetune`'s (and `evaluate`'s batch) flags.
#[derive(Clone, Copy, Debug)]
pub struct FinetuneDefaults {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub aux_lm: f32,
    pub seed: u64,
    pub eval_every: u64,
    pub warmup: f64,
    pub clf_dropout: f32,
    pub weight_decay: f32,
    pub clip: f32,
}

pub const FINETUNE: FinetuneDefaults = FinetuneDefaults {
    epochs: 3,
    batch: 32,
    lr: 6.25e-5,
    aux_lm: 0.5,
    seed: 0,
    eval_every: 0,
    warmup: 0.002,
    clf_dropout: 0.1,
    weight_decay: 0.01,
    clip: 1.0,
};

impl FinetuneOptions {
    /// The paper's settings ([`FINETUNE`]).
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        let f = FINETUNE;
        FinetuneOptions {
            data,
            out,
            epochs: f.epochs,
            batch: f.batch,
            lr: f.lr,
            aux_lm: f.aux_lm,
            max_len: None,
            seed: f.seed,
            max_steps: None,
            eval_every: f.eval_every,
            warmup: f.warmup,
            clf_dropout: f.clf_dropout,
            weight_decay: f.weight_decay,
            clip: f.clip,
            skip_bad_rows: false,
            progress: true,
            precision: Precision::Fp32,
            model_dir: None,
            save_every: 0,
            keep_checkpoints: 2,
            resume: false,
            comm: None,
            device: Device::Cpu,
        }
    }
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

/// The identity of prepared examples: their token ids and targets, in order.
pub fn data_hash(p: &[Prepared]) -> String {
    fnv(p.iter().flat_map(|e| {
        let ids = e.t.features.iter().flatten().flat_map(|q| q.ids.iter().map(|&i| i as u64));
        let target = format!("{:?}", e.target).into_bytes().into_iter().map(u64::from);
        ids.chain(std::iter::once(u64::MAX)).chain(target).collect::<Vec<_>>()
    }))
}

/// Everything that fixes a fine-tuning run's weights; recorded at its start, compared on
/// resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSpec {
    pub task: TaskDef,
    pub data: PathBuf,
    pub train_hash: String,
    pub dev_hash: Option<String>,
    /// The model it started from (a checkpoint directory, or `None` from scratch) and the hash
    /// of its weights with the special tokens added.
    pub model: Option<PathBuf>,
    pub model_hash: String,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub aux_lm: f32,
    pub max_len: usize,
    pub seed: u64,
    pub max_steps: Option<u64>,
    pub eval_every: u64,
    pub warmup: f64,
    pub clf_dropout: f32,
    pub weight_decay: f32,
    pub clip: f32,
    pub precision: Precision,
}

impl FinetuneSpec {
    /// The first field in which the run (`self`) and `asked` differ: `(flag, run's, asked)`.
    pub fn differs(&self, asked: &FinetuneSpec) -> Option<(String, String, String)> {
        let (a, b) = (serde_json::to_value(self).ok()?, serde_json::to_value(asked).ok()?);
        for (k, v) in a.as_object()? {
            // The model's path may move; its weights may not.
            if k == "model" || v == &b[k] {
                continue;
            }
            let flag = match k.as_str() {
                "train_hash" | "dev_hash" => "data (its examples changed)".to_string(),
                "model_hash" => "model (other initial weights)".to_string(),
                k => k.replace('_', "-"),
            };
            return Some((flag, v.to_string(), b[k].to_string()));
        }
        None
    }
}
