//! What the pre-training loop needs of a language model and its optimizer ([`LmTrainer`]: a
//! step, a validation loss, a checkpoint), for either architecture ([`Net`]), on any device.

use super::checkpoint::{self, TrainerState};
use super::lstm::LstmTrainer;
use super::optim::AdamW;
use super::trainer::{StepKey, Trainer};
use crate::backend::{Backend, Cpu, Device, Precision};
use crate::error::{Error, Result};
use crate::model::Net;
use crate::model::lstm::{is_lstm, load_lstm, lstm_layout};
use crate::text::Tokenizer;
use std::path::Path;

/// The trainer of `net` for micro-batches of `micro × seq` tokens on `device`, with the
/// optimizer state `opt` of a checkpoint when resuming.
pub fn trainer(
    net: Net,
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
                let mut t = Trainer::on(m.to_backend(backend.clone()), micro, seq, weight_decay);
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
        Device::Cpu => {
            // The weights exist; their gradients, two Adam moments and one pass's activations
            // are about to be allocated (`bench train --batch 100000` asked for 472 GB).
            let c = net.config();
            let rest = 12 * c.params() as u64 + c.activation_bytes(micro, seq) as u64;
            crate::backend::check_host(rest, &format!("{micro} (× {seq} tokens per pass)"))?;
            Ok(boxed(net, Cpu::new(precision), micro, seq, weight_decay, opt))
        }
        Device::Cuda(_) => {
            let gpu = device.cuda(precision)?;
            let c = net.config();
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
            Ok(boxed(net, gpu, micro, seq, weight_decay, opt))
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
