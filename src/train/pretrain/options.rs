//! What a pre-training run is asked ([`PretrainOptions`], with the paper's defaults in
//! [`PRETRAIN`]) and what of it is recorded in `run.json` and compared on resume
//! ([`PretrainSpec`]): one file, so that a new option and its record are added together.

use crate::backend::{Device, Precision};
use crate::data::WindowOrder;
use crate::model::lstm::LstmConfig;
use crate::model::{ArchConfig, Config};
use crate::train::rundir::FileId;
use crate::train::schedule::Schedule;
use std::path::PathBuf;

/// Where the model comes from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// Random initialisation from a configuration.
    Config(Config),
    /// Start from the weights of a checkpoint directory (either architecture).
    Init(PathBuf),
    /// Random initialisation of the paper's LSTM baseline.
    Lstm(LstmConfig),
}

#[derive(Clone, Debug)]
pub struct PretrainOptions {
    pub data: PathBuf,
    pub val: Option<PathBuf>,
    pub model: ModelSource,
    pub out: PathBuf,
    pub batch: usize,
    pub seq: usize,
    pub micro_batch: Option<usize>,
    pub steps: u64,
    pub lr: f32,
    pub warmup: u64,
    pub schedule: Schedule,
    pub weight_decay: f32,
    pub clip: f32,
    /// Overrides the configuration's three dropout probabilities.
    pub dropout: Option<f32>,
    pub seed: u64,
    pub sampling: WindowOrder,
    pub eval_every: u64,
    pub save_every: u64,
    pub resume: bool,
    /// Resume from this checkpoint instead of the run's newest.
    pub resume_from: Option<PathBuf>,
    /// `checkpoint-N/` directories kept (the newest; 0 keeps all); `final/` is always kept.
    pub keep_checkpoints: usize,
    /// Stop (with a checkpoint) after this many updates, keeping the schedule of `steps`.
    pub stop_at: Option<u64>,
    /// Windows of the validation data evaluated each time.
    pub val_windows: usize,
    pub progress: bool,
    /// The precision of the matrix products (fp32 master weights and state either way).
    pub precision: Precision,
    /// Where the model runs (checkpoints are the same files either way).
    pub device: Device,
    /// The tokenizer the data was made with, saved with every checkpoint (HF file names, so
    /// `finetune` and transformers find it); default: the `tokenizer/` folder `gpt1 prepare`
    /// writes beside the shards, when there is one.
    pub tokenizer: Option<PathBuf>,
    /// Data parallelism: this process is one rank of `comm` (`mpirun -np N`); rank 0 alone
    /// writes the run directory, every rank takes its share of each step ([`crate::dist`]).
    pub comm: Option<std::sync::Arc<dyn crate::dist::Collective>>,
    /// A validation loss that stays at the data's unigram entropy: warn, or stop the run.
    pub on_collapse: crate::train::collapse::OnCollapse,
}

/// The paper's pre-training settings (section 4.1): the one source of the defaults of
/// [`PretrainOptions::new`] and of `gpt1 pretrain`'s flags.
#[derive(Clone, Copy, Debug)]
pub struct PretrainDefaults {
    pub batch: usize,
    pub seq: usize,
    pub steps: u64,
    pub lr: f32,
    pub warmup: u64,
    pub schedule: Schedule,
    pub weight_decay: f32,
    pub clip: f32,
    pub seed: u64,
    pub sampling: WindowOrder,
    pub eval_every: u64,
    pub save_every: u64,
    pub val_windows: usize,
    pub keep_checkpoints: usize,
}

pub const PRETRAIN: PretrainDefaults = PretrainDefaults {
    batch: 64,
    seq: 512,
    steps: 100_000,
    lr: 2.5e-4,
    warmup: 2000,
    schedule: Schedule::WarmupCosine,
    weight_decay: 0.01,
    clip: 1.0,
    seed: 0,
    sampling: WindowOrder::Random,
    eval_every: 0,
    save_every: 0,
    val_windows: 64,
    keep_checkpoints: 3,
};

impl PretrainOptions {
    /// The paper's settings ([`PRETRAIN`]) for the given data, model and output.
    pub fn new(data: PathBuf, model: ModelSource, out: PathBuf) -> Self {
        let p = PRETRAIN;
        PretrainOptions {
            data,
            val: None,
            model,
            out,
            batch: p.batch,
            seq: p.seq,
            micro_batch: None,
            steps: p.steps,
            lr: p.lr,
            warmup: p.warmup,
            schedule: p.schedule,
            weight_decay: p.weight_decay,
            clip: p.clip,
            dropout: None,
            seed: p.seed,
            sampling: p.sampling,
            eval_every: p.eval_every,
            save_every: p.save_every,
            resume: false,
            resume_from: None,
            keep_checkpoints: p.keep_checkpoints,
            stop_at: None,
            val_windows: p.val_windows,
            progress: true,
            precision: Precision::Fp32,
            device: Device::Cpu,
            tokenizer: None,
            comm: None,
            on_collapse: Default::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub step: u64,
    pub loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub final_dir: PathBuf,
}

/// What fixes a run's weights: recorded in `run.json` when it starts and compared on resume,
/// so that `--resume` continues the run that was started (or refuses, naming the setting).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PretrainSpec {
    pub data: FileId,
    pub val: Option<FileId>,
    /// The model's configuration (after `--dropout`), and the checkpoint it started from.
    pub config: ArchConfig,
    pub init: Option<PathBuf>,
    pub batch: usize,
    pub seq: usize,
    pub micro_batch: usize,
    pub steps: u64,
    pub lr: f32,
    pub warmup: u64,
    pub schedule: Schedule,
    pub weight_decay: f32,
    pub clip: f32,
    pub seed: u64,
    pub sampling: WindowOrder,
    pub precision: Precision,
    pub val_windows: usize,
    pub tokenizer: Option<PathBuf>,
}

impl PretrainSpec {
    /// The options of this run (its output `out`), to resume it with nothing retyped.
    pub fn options(&self, out: PathBuf) -> PretrainOptions {
        let model = match (&self.init, &self.config) {
            (Some(d), _) => ModelSource::Init(d.clone()),
            (None, ArchConfig::Transformer(c)) => ModelSource::Config(c.clone()),
            (None, ArchConfig::Lstm(c)) => ModelSource::Lstm(c.clone()),
        };
        let mut o = PretrainOptions::new(self.data.path.clone(), model, out);
        o.val = self.val.as_ref().map(|v| v.path.clone());
        (o.batch, o.seq, o.micro_batch, o.steps) =
            (self.batch, self.seq, Some(self.micro_batch), self.steps);
        (o.lr, o.warmup, o.schedule, o.weight_decay, o.clip) =
            (self.lr, self.warmup, self.schedule, self.weight_decay, self.clip);
        (o.seed, o.sampling, o.precision, o.val_windows) =
            (self.seed, self.sampling, self.precision, self.val_windows);
        o.tokenizer = self.tokenizer.clone();
        o
    }

    /// The first setting in which `self` (the run's) and `asked` differ, as
    /// `(flag, run's value, asked value)`; data files compare by contents, not path.
    pub fn differs(&self, asked: &PretrainSpec) -> Option<(String, String, String)> {
        let (a, b) = (serde_json::to_value(self).ok()?, serde_json::to_value(asked).ok()?);
        for (k, v) in a.as_object()? {
            let w = &b[k];
            let same = match k.as_str() {
                "data" => self.data.same_data(&asked.data),
                "val" => match (&self.val, &asked.val) {
                    (Some(x), Some(y)) => x.same_data(y),
                    (x, y) => x.is_none() == y.is_none(),
                },
                // A dropout override shows as a changed config; the config's other fields
                // come from --config, the size flags or --init.
                _ => v == w,
            };
            if !same {
                let flag = match k.as_str() {
                    "config" => "config (or --dropout, or a size flag)".to_string(),
                    k => k.replace('_', "-"),
                };
                return Some((flag, v.to_string(), w.to_string()));
            }
        }
        None
    }
}
