//! Model configuration with HF `OpenAIGPTConfig`'s keys, so a `config.json` moves both ways.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn default_pdrop() -> f32 {
    0.1
}
fn default_eps() -> f32 {
    1e-5
}
fn default_afn() -> String {
    "gelu".into()
}
fn default_init() -> f32 {
    0.02
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default = "default_afn")]
    pub afn: String,
    #[serde(default = "default_pdrop")]
    pub resid_pdrop: f32,
    #[serde(default = "default_pdrop")]
    pub embd_pdrop: f32,
    #[serde(default = "default_pdrop")]
    pub attn_pdrop: f32,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "default_init")]
    pub initializer_range: f32,
}

impl Config {
    fn preset(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Self {
        Config {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            afn: default_afn(),
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            layer_norm_epsilon: 1e-5,
            initializer_range: 0.02,
        }
    }

    /// `gpt1` (the paper's model), `small`, `tiny`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "gpt1" => Some(Self::preset(crate::text::tokenizer::GPT1_VOCAB, 512, 768, 12, 12)),
            // GPT-1's vocabulary at sizes a CPU trains in minutes to hours.
            "gpt1-small" => Some(Self::preset(crate::text::tokenizer::GPT1_VOCAB, 512, 384, 6, 6)),
            "gpt1-mini" => Some(Self::preset(crate::text::tokenizer::GPT1_VOCAB, 128, 256, 4, 4)),
            "small" => Some(Self::preset(16_384, 512, 384, 6, 6)),
            "tiny" => Some(Self::preset(8_192, 256, 256, 4, 4)),
            _ => None,
        }
    }

    /// A preset name, or the path of a `config.json`.
    pub fn from_name_or_file(spec: &str) -> Result<Self> {
        if let Some(c) = Self::named(spec) {
            return Ok(c);
        }
        let p = Path::new(spec);
        if !p.exists() {
            return Err(Error::setting(
                "config",
                format!(
                    "{spec}: neither a preset (tiny, small, gpt1-mini, gpt1-small, gpt1) nor an existing config.json"
                ),
            ));
        }
        Self::load(p)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: Config = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(path, format!("not an OpenAIGPT config.json ({e}); it needs vocab_size, n_positions, n_embd, n_layer, n_head"))
        })?;
        c.validate().map_err(|m| Error::invalid(path, m))?;
        Ok(c)
    }

    /// Checks the configuration is one this implementation runs.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.n_embd == 0
            || self.n_head == 0
            || self.n_layer == 0
            || self.vocab_size == 0
            || self.n_positions == 0
        {
            return Err(
                "n_embd, n_head, n_layer, vocab_size and n_positions must be positive".into()
            );
        }
        // Far beyond any model that trains on one machine, and low enough that every size
        // computed from them stays inside 64 bits.
        for (k, v, max) in [
            ("vocab_size", self.vocab_size, 1usize << 24),
            ("n_positions", self.n_positions, 1 << 20),
            ("n_embd", self.n_embd, 1 << 16),
            ("n_layer", self.n_layer, 1 << 10),
            ("n_head", self.n_head, 1 << 12),
        ] {
            if v > max {
                return Err(format!("{k} = {v} is larger than gpt1 supports ({max})"));
            }
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err(format!(
                "layer_norm_epsilon = {} must be a small positive number (GPT-1: 1e-5)",
                self.layer_norm_epsilon
            ));
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            return Err(format!(
                "initializer_range = {} must be a finite number ≥ 0 (GPT-1: 0.02)",
                self.initializer_range
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if self.afn != "gelu" && self.afn != "gelu_new" {
            return Err(format!(
                "afn {:?} is not supported; GPT-1 uses \"gelu\" (tanh approximation)",
                self.afn
            ));
        }
        for (k, p) in [
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{k} = {p} must be in [0, 1)"));
            }
        }
        Ok(())
    }

    /// All three dropout probabilities set to `p`.
    pub fn with_dropout(mut self, p: f32) -> Self {
        self.resid_pdrop = p;
        self.embd_pdrop = p;
        self.attn_pdrop = p;
        self
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// `config.json` as HF transformers writes it for `OpenAIGPTLMHeadModel`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["OpenAIGPTLMHeadModel"],
            "model_type": "openai-gpt",
            "afn": self.afn,
            "attn_pdrop": self.attn_pdrop,
            "embd_pdrop": self.embd_pdrop,
            "resid_pdrop": self.resid_pdrop,
            "initializer_range": self.initializer_range,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "n_layer": self.n_layer,
            "n_positions": self.n_positions,
            "vocab_size": self.vocab_size,
            "predict_special_tokens": true,
            "summary_activation": null,
            "summary_first_dropout": 0.1,
            "summary_proj_to_labels": true,
            "summary_type": "cls_index",
            "summary_use_proj": true,
            "torch_dtype": "float32"
        })
    }
}
