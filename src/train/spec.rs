//! A pre-training run's specification (`run.json`): what fixes its weights, recorded when it
//! starts and compared on resume.

use super::pretrain::{ModelSource, PretrainOptions};
use super::rundir::FileId;
use super::schedule::Schedule;
use crate::backend::Precision;
use crate::data::Sampling;
use crate::model::ArchConfig;
use std::path::PathBuf;

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
    pub sampling: Sampling,
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
