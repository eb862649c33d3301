//! The language models pre-training trains: GPT-1's Transformer or the paper's LSTM baseline,
//! behind what the pre-training loop needs of them ([`LmTrainer`]): a step, a validation loss,
//! a checkpoint.

use super::checkpoint::{self, TrainerState};
use super::lstm::LstmTrainer;
use super::optim::AdamW;
use super::trainer::{StepKey, Trainer};
use crate::backend::{Backend, Cpu, Device, Precision};
use crate::error::{Error, Result};
use crate::model::lstm::{Lstm, LstmConfig, is_lstm, load_lstm, lstm_layout, lstm_params};
use crate::model::{Config, Gpt, activation_bytes, checkpoint::load_model, params::num_params};
use crate::text::Tokenizer;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A model's configuration, either architecture (`run.json` holds it as it is: an LSTM's
/// `config.json` has `"model_type": "lstm"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ArchConfig {
    Lstm(LstmConfig),
    Transformer(Config),
}

impl ArchConfig {
    /// The configuration of a checkpoint directory (its `config.json`), either architecture,
    /// without reading the weights.
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(if is_lstm(dir) {
            ArchConfig::Lstm(crate::model::lstm::load_lstm_config(dir)?)
        } else {
            ArchConfig::Transformer(Config::load(&dir.join("config.json"))?)
        })
    }

    pub fn n_positions(&self) -> usize {
        match self {
            ArchConfig::Lstm(c) => c.n_positions,
            ArchConfig::Transformer(c) => c.n_positions,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            ArchConfig::Lstm(c) => c.vocab_size,
            ArchConfig::Transformer(c) => c.vocab_size,
        }
    }

    /// The width of the states a task head reads (GPT-1's `n_embd`, the LSTM's hidden size).
    pub fn width(&self) -> usize {
        match self {
            ArchConfig::Lstm(c) => c.hidden_size,
            ArchConfig::Transformer(c) => c.n_embd,
        }
    }

    pub fn params(&self) -> usize {
        match self {
            ArchConfig::Lstm(c) => lstm_params(c),
            ArchConfig::Transformer(c) => num_params(c),
        }
    }

    /// Device bytes a bf16 run adds on a GPU ([`crate::model::bf16_bytes`]; for the LSTM, the
    /// bf16 copies of its LM head's operands and, when `pinned`, of its weights); 0 in fp32.
    pub fn bf16_bytes(&self, precision: Precision, b: usize, t: usize, pinned: bool) -> usize {
        match self {
            ArchConfig::Transformer(c) => crate::model::bf16_bytes(c, precision, b, t, pinned),
            ArchConfig::Lstm(_) if precision != Precision::Bf16 => 0,
            ArchConfig::Lstm(c) => {
                let chunk = (b * t).min(crate::kernels::crossentropy::CHUNK);
                let wide = c.n_embd.max(c.hidden_size);
                2 * (chunk * c.vocab_size
                    + c.vocab_size * wide
                    + if pinned { self.params() } else { 0 })
            }
        }
    }

    /// Activation bytes of a training pass over `b × t` tokens.
    pub fn activation_bytes(&self, b: usize, t: usize) -> usize {
        match self {
            ArchConfig::Transformer(c) => activation_bytes(c, b, t, true),
            ArchConfig::Lstm(c) => crate::model::lstm::activation_bytes(c, b, t),
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            ArchConfig::Lstm(c) => c.validate(),
            ArchConfig::Transformer(c) => c.validate(),
        }
    }

    /// With dropout `p` (the Transformer's three probabilities; the LSTM has none).
    pub fn with_dropout(self, p: f32) -> Result<Self> {
        match self {
            ArchConfig::Transformer(c) => Ok(ArchConfig::Transformer(c.with_dropout(p))),
            ArchConfig::Lstm(_) => {
                Err(Error::setting("dropout", "is not supported by the LSTM baseline"))
            }
        }
    }
}

/// A model with its weights.
#[derive(Clone)]
pub enum Net {
    Transformer(Gpt),
    Lstm(Lstm),
}

impl Net {
    /// A random initialisation of `c` with `seed`.
    pub fn init(c: &ArchConfig, seed: u64) -> Self {
        match c {
            ArchConfig::Transformer(c) => Net::Transformer(Gpt::init(c.clone(), seed)),
            ArchConfig::Lstm(c) => Net::Lstm(Lstm::init(c.clone(), seed)),
        }
    }

    /// The weights of a checkpoint directory, either architecture.
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(if is_lstm(dir) {
            Net::Lstm(load_lstm(dir)?)
        } else {
            Net::Transformer(load_model(dir)?)
        })
    }

    pub fn config(&self) -> ArchConfig {
        match self {
            Net::Transformer(m) => ArchConfig::Transformer(m.config.clone()),
            Net::Lstm(m) => ArchConfig::Lstm(m.config.clone()),
        }
    }

    /// Runs on `backend` (the CPU at a precision) from now on.
    pub fn set_backend(&mut self, backend: Cpu) {
        match self {
            Net::Transformer(m) => m.backend = backend,
            Net::Lstm(m) => m.backend = backend,
        }
    }

    /// The weights, in the layout's order.
    pub fn params(&self) -> &[f32] {
        match self {
            Net::Transformer(m) => &m.params,
            Net::Lstm(m) => &m.params,
        }
    }

    pub fn into_params(self) -> Vec<f32> {
        match self {
            Net::Transformer(m) => m.params,
            Net::Lstm(m) => m.params,
        }
    }

    /// Sets the configuration's dropout (the Transformer's; refused for the LSTM).
    pub fn set_dropout(&mut self, p: f32) -> Result<()> {
        let c = self.config().with_dropout(p)?;
        if let (Net::Transformer(m), ArchConfig::Transformer(c)) = (self, c) {
            m.config = c;
        }
        Ok(())
    }

    /// The trainer of this model for micro-batches of `micro × seq` tokens on `device`, with
    /// the optimizer state `opt` of a checkpoint when resuming.
    pub fn trainer(
        self,
        micro: usize,
        seq: usize,
        weight_decay: f32,
        precision: Precision,
        device: Device,
        opt: Option<AdamW>,
    ) -> Result<Box<dyn LmTrainer>> {
        fn boxed<B: Backend>(
            net: Net,
            backend: B,
            micro: usize,
            seq: usize,
            weight_decay: f32,
            opt: Option<AdamW>,
        ) -> Box<dyn LmTrainer> {
            match net {
                Net::Transformer(m) => {
                    let mut t =
                        Trainer::on(m.to_backend(backend.clone()), micro, seq, weight_decay);
                    if let Some(o) = opt {
                        t.opt = o.to_backend(&backend);
                    }
                    Box::new(t)
                }
                Net::Lstm(m) => {
                    let mut t =
                        LstmTrainer::new(m.to_backend(backend.clone()), micro, seq, weight_decay);
                    if let Some(o) = opt {
                        t.opt = o.to_backend(&backend);
                    }
                    Box::new(t)
                }
            }
        }
        match device {
            Device::Cpu => Ok(boxed(self, Cpu::new(precision), micro, seq, weight_decay, opt)),
            Device::Cuda(_) => {
                let gpu = device.cuda(precision)?;
                let c = self.config();
                let need = 16 * c.params() as u64
                    + c.activation_bytes(micro, seq) as u64
                    + c.bf16_bytes(precision, micro, seq, false) as u64;
                let (free, _) = gpu.memory();
                if need > free as u64 {
                    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                    return Err(Error::setting(
                        "micro_batch",
                        format!(
                            "{micro}: the run needs about {:.1} GiB of GPU memory and {:.1} GiB are \
                             free on {device}: lower the micro-batch or the sequence length",
                            gib(need),
                            gib(free as u64)
                        ),
                    ));
                }
                Ok(boxed(self, gpu, micro, seq, weight_decay, opt))
            }
        }
    }
}

/// A checkpoint's model, optimizer state and trainer state, either architecture.
pub fn load_checkpoint(dir: &Path, weight_decay: f32) -> Result<(Net, AdamW, TrainerState)> {
    if is_lstm(dir) {
        let m = load_lstm(dir)?;
        let groups = lstm_layout(&m.config).into_iter().map(|t| (t.range(), t.decay)).collect();
        let mut opt = AdamW::with_groups(&Cpu::FP32, groups, weight_decay);
        let state = checkpoint::load_state(dir, &mut opt)?;
        Ok((Net::Lstm(m), opt, state))
    } else {
        let (m, opt, state) = checkpoint::load(dir, weight_decay)?;
        Ok((Net::Transformer(m), opt, state))
    }
}

/// What the pre-training loop needs of a model and its optimizer.
pub trait LmTrainer {
    /// One update; `(mean loss, gradient norm before clipping, counted tokens)`.
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        seq: usize,
        lr: f32,
        clip: f32,
        key: StepKey,
        step: u64,
    ) -> Result<(f64, f32, usize)>;
    /// Mean NLL of `[n, seq]` windows, no dropout.
    fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64;
    /// Writes a resumable checkpoint (atomically, as a whole).
    fn save(&self, dir: &Path, state: &TrainerState, tok: Option<&Tokenizer>) -> Result<()>;
    /// Runs this rank's share of every step, the gradients summed over `comm`'s ranks.
    fn set_dist(&mut self, comm: std::sync::Arc<dyn crate::dist::Collective>);
    /// The weights on the host (checking that the ranks agree).
    fn host_params(&self) -> std::borrow::Cow<'_, [f32]>;
    /// What runs the kernels (the backend's [`Backend::describe`]).
    fn describe(&self) -> String;
}

impl<B: Backend> LmTrainer for Trainer<B> {
    fn train_step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        seq: usize,
        lr: f32,
        clip: f32,
        key: StepKey,
        step: u64,
    ) -> Result<(f64, f32, usize)> {
        let s = self.step(ids, targets, seq, &[], lr, clip, key, step)?;
        Ok((s.loss, s.grad_norm, s.tokens))
    }
    fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64 {
        Trainer::eval_loss(self, ids, targets)
    }
    fn save(&self, dir: &Path, state: &TrainerState, tok: Option<&Tokenizer>) -> Result<()> {
        checkpoint::save(dir, &self.model, &self.opt, state, tok)
    }
    fn set_dist(&mut self, comm: std::sync::Arc<dyn crate::dist::Collective>) {
        self.dist = Some(comm);
    }
    fn host_params(&self) -> std::borrow::Cow<'_, [f32]> {
        self.model.host_params()
    }
    fn describe(&self) -> String {
        self.model.backend.describe()
    }
}

impl<B: Backend> LmTrainer for LstmTrainer<B> {
    fn train_step(
        &mut self,
        ids: &[u32],
        targets: &[u32],
        _seq: usize,
        lr: f32,
        clip: f32,
        _key: StepKey,
        step: u64,
    ) -> Result<(f64, f32, usize)> {
        let s = self.step(ids, targets, lr, clip, step)?;
        Ok((s.loss, s.grad_norm, s.tokens))
    }
    fn eval_loss(&mut self, ids: &[u32], targets: &[u32]) -> f64 {
        LstmTrainer::eval_loss(self, ids, targets)
    }
    fn save(&self, dir: &Path, state: &TrainerState, tok: Option<&Tokenizer>) -> Result<()> {
        checkpoint::save_with(dir, &self.opt, state, tok, |tmp| {
            crate::model::lstm::save_lstm(tmp, &self.model)
        })
    }
    fn set_dist(&mut self, comm: std::sync::Arc<dyn crate::dist::Collective>) {
        self.dist = Some(comm);
    }
    fn host_params(&self) -> std::borrow::Cow<'_, [f32]> {
        self.model.host_params()
    }
    fn describe(&self) -> String {
        self.model.backend.describe()
    }
}
