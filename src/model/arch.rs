//! The two architectures behind one name: GPT-1's Transformer and the LSTM baseline
//! (Table 5). `ArchConfig` is either configuration (as `run.json` and `config.json` hold it),
//! `Net` either model with its weights; the trainers, fine-tuning, evaluation and the analyses
//! take these instead of knowing which architecture they run.
//!
//! Inference is written once, generic over [`super::LanguageModel`] (batched next-token
//! log-probabilities and the last layer's states at chosen positions), which `Gpt<B>` and
//! `Lstm<B>` implement in their own files; [`Net::run_on`] is the one place that picks the
//! architecture and the device for such code ([`ModelTask`]).

use super::language_model::ModelTask;
use crate::backend::{Cpu, Device, Precision};
use crate::error::{Error, Result};
use crate::model::lstm::{Lstm, LstmConfig, is_lstm, load_lstm, lstm_params};
use crate::model::{Config, Gpt, activation_bytes, checkpoint::load_model, params::num_params};
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

    /// Bytes an inference pass over `b × t` tokens needs: the weights and the activations (and
    /// in bf16 the products' copies). `probs`: on a backend that keeps the attention
    /// probabilities (a GPU's).
    pub fn inference_bytes(&self, precision: Precision, b: usize, t: usize, probs: bool) -> u64 {
        match self {
            ArchConfig::Transformer(c) => crate::model::inference_bytes(c, precision, b, t, probs),
            ArchConfig::Lstm(c) => {
                (4 * self.params() + crate::model::lstm::activation_bytes(c, b, t)) as u64
            }
        }
    }

    /// Activation bytes of a training pass over `b × t` tokens; `probs`: on a backend that keeps
    /// the attention probabilities ([`crate::backend::Backend::keeps_attention_probs`]).
    pub fn activation_bytes(&self, b: usize, t: usize, probs: bool) -> usize {
        match self {
            ArchConfig::Transformer(c) => activation_bytes(c, b, t, true, probs),
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
}

impl Net {
    /// Runs `task` with this model (at its backend's precision) on `device`, after checking that
    /// the weights and one pass of `b × t` tokens fit its memory (`what` names the pass in the
    /// error). On a GPU the weights are uploaded first.
    pub fn run_on<T: ModelTask>(
        &self,
        device: Device,
        (b, t): (usize, usize),
        what: &str,
        task: T,
    ) -> Result<T::Out> {
        let precision = match self {
            Net::Transformer(m) => m.backend.precision(),
            Net::Lstm(m) => m.backend.precision(),
        };
        let probs = matches!(device, Device::Cuda(_));
        let need = self.config().inference_bytes(precision, b, t, probs);
        match device {
            Device::Cpu => {
                // The weights are already in memory; the rest is allocated by the task.
                let weights = 4 * self.params().len() as u64;
                crate::backend::check_host(need.saturating_sub(weights), what)?;
                match self {
                    Net::Transformer(m) => task.run(m),
                    Net::Lstm(m) => task.run(m),
                }
            }
            dev => {
                let gpu = dev.cuda(precision)?;
                crate::backend::check_fits(&gpu, need, what)?;
                match self {
                    Net::Transformer(m) => task.run(&m.to_backend(gpu)),
                    Net::Lstm(m) => task.run(&m.to_backend(gpu)),
                }
            }
        }
    }
}
