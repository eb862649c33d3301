//! `gpt1.Model`: a GPT-1 checkpoint on the CPU: log-probabilities, hidden states, scoring,
//! generation. Arrays in, numpy arrays out (made from the result's buffer, not copied).

use crate::errors::{invalid, to_py};
use crate::tokenizer::Tokenizer;
use gpt1::backend::{Backend, Cpu, Precision};
use gpt1::generate::{GenerateOptions, Sampling, cut_at_stop, generate};
use gpt1::kernels::on_pool;
use gpt1::model::{Gpt, Net};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::Arc;

#[pyclass(module = "gpt1", frozen)]
pub struct Model {
    model: Gpt,
    tokenizer: Option<Arc<gpt1::text::Tokenizer>>,
    path: String,
}

pub(crate) fn precision(p: &str) -> PyResult<Precision> {
    match p {
        "fp32" => Ok(Precision::Fp32),
        "bf16" => Ok(Precision::Bf16),
        o => Err(invalid(format!("precision={o:?}: give \"fp32\" or \"bf16\""))),
    }
}

pub(crate) fn cpu_only(device: &str) -> PyResult<()> {
    if device == "cpu" {
        return Ok(());
    }
    Err(invalid(format!(
        "device={device:?}: the Python package runs on the CPU in this version; the command \
         line's --device cuda runs on a GPU"
    )))
}

/// Token ids `[B, T]` from a 2-D numpy integer array, a list of lists, or one list (B = 1).
fn ids_2d(obj: &Bound<'_, PyAny>, vocab: usize) -> PyResult<(Vec<u32>, usize, usize)> {
    let rows: Vec<Vec<i64>> = if let Ok(a) = obj.extract::<PyReadonlyArray2<'_, i64>>() {
        a.as_array().rows().into_iter().map(|r| r.to_vec()).collect()
    } else if let Ok(v) = obj.extract::<Vec<Vec<i64>>>() {
        v
    } else if let Ok(v) = obj.extract::<Vec<i64>>() {
        vec![v]
    } else {
        return Err(invalid("ids must be a 2-D integer array [B, T] or a list of lists of ids"));
    };
    let t = rows.first().map_or(0, Vec::len);
    if rows.is_empty() || t == 0 || rows.iter().any(|r| r.len() != t) {
        return Err(invalid("ids must be a non-empty [B, T] array: rows of equal length"));
    }
    let mut flat = Vec::with_capacity(rows.len() * t);
    for (i, r) in rows.iter().enumerate() {
        for &x in r {
            if x < 0 || x as usize >= vocab {
                return Err(invalid(format!(
                    "row {i}: token id {x} is not in the model's vocabulary of {vocab}"
                )));
            }
            flat.push(x as u32);
        }
    }
    Ok((flat, rows.len(), t))
}

impl Model {
    fn tok(&self) -> PyResult<&gpt1::text::Tokenizer> {
        self.tokenizer.as_deref().ok_or_else(|| {
            invalid(format!(
                "{}: no tokenizer (no vocabulary files, and the vocabulary is not GPT-1's): \
                 pass ids",
                self.path
            ))
        })
    }

    fn check_fits(&self, b: usize, t: usize) -> PyResult<()> {
        let c = &self.model.config;
        if t > c.n_positions {
            return Err(invalid(format!(
                "sequences of {t} positions exceed the model's context of {}",
                c.n_positions
            )));
        }
        // The module runs on the CPU, which keeps no attention probabilities.
        let need = gpt1::model::inference_bytes(c, self.model.backend.precision(), b, t, false);
        gpt1::backend::check_host(need as u64, &format!("{b} sequences of {t} tokens"))
            .map_err(to_py)
    }
}

#[pymethods]
impl Model {
    /// A checkpoint directory (config.json + model.safetensors), or a hub id found in the local
    /// Hugging Face cache. `threads` sets the process's worker threads (once).
    #[staticmethod]
    #[pyo3(signature = (path_or_hub_id, precision="fp32", device="cpu", threads=None))]
    fn load(
        py: Python<'_>,
        path_or_hub_id: &str,
        precision: &str,
        device: &str,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        crate::set_threads(threads)?;
        cpu_only(device)?;
        let p = self::precision(precision)?;
        let dir = gpt1::hub::resolve(std::path::Path::new(path_or_hub_id)).map_err(to_py)?;
        let net = py.detach(|| Net::load(&dir)).map_err(to_py)?;
        let Net::Transformer(mut model) = net else {
            return Err(invalid(format!(
                "{path_or_hub_id}: an LSTM checkpoint; gpt1.Model runs GPT-1 (score LSTMs with \
                 `gpt1 score`)"
            )));
        };
        model.backend = Cpu::new(p);
        let v = model.config.vocab_size;
        let tokenizer =
            gpt1::text::Tokenizer::load_or_gpt1(Some(&dir), Some(v), None).ok().map(Arc::new);
        Ok(Self { model, tokenizer, path: dir.display().to_string() })
    }

    /// `[B, T-1]` float32: log P(ids[:, t+1] | ids[:, :t+1]), the numbers `gpt1 score` prints.
    fn logprobs<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (ids, b, t) = ids_2d(ids, self.model.config.vocab_size)?;
        if t < 2 {
            return Err(invalid("ids need at least 2 tokens per row"));
        }
        self.check_fits(b, t - 1)?;
        let out = py.detach(|| {
            on_pool(|| {
                let inputs: Vec<u32> =
                    ids.chunks(t).flat_map(|r| r[..t - 1].iter().copied()).collect();
                let targets: Vec<u32> =
                    ids.chunks(t).flat_map(|r| r[1..].iter().copied()).collect();
                let mut acts = self.model.activations(b, t - 1, false);
                let mut out = vec![0.0f32; b * (t - 1)];
                let _pinned = self.model.pin();
                self.model.logprobs(&mut acts, &inputs, &targets, &mut out);
                out
            })
        });
        Ok(PyArray1::from_vec(py, out).reshape([b, t - 1])?.into_any())
    }

    /// `[B, T, d]` float32: the last block's output (transformers' `last_hidden_state`).
    fn hidden_states<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (ids, b, t) = ids_2d(ids, self.model.config.vocab_size)?;
        self.check_fits(b, t)?;
        let d = self.model.config.n_embd;
        let out = py.detach(|| {
            on_pool(|| {
                let mut acts = self.model.activations(b, t, false);
                let _pinned = self.model.pin();
                self.model.forward(&mut acts, &ids, None);
                self.model.backend.download(acts.hidden()).into_owned()
            })
        });
        Ok(PyArray1::from_vec(py, out).reshape([b, t, d])?.into_any())
    }

    /// Each text's per-token log-probabilities: a list of dicts `{mean_nll, perplexity, tokens,
    /// token_logprobs}` (`gpt1 score --json`'s rows).
    #[pyo3(signature = (texts, batch=8))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        batch: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let tok = self.tok()?;
        let np = self.model.config.n_positions;
        let rows = py
            .detach(|| texts.iter().map(|t| tok.encode(t)).collect::<gpt1::Result<Vec<_>>>())
            .map_err(to_py)?;
        for (i, r) in rows.iter().enumerate() {
            if r.len() < 2 || r.len() > np + 1 {
                return Err(invalid(format!(
                    "text {i} has {} tokens: give 2 to {} (longer texts: gpt1 perplexity's windows)",
                    r.len(),
                    np + 1
                )));
            }
        }
        let s = py
            .detach(|| on_pool(|| gpt1::eval::score(&self.model, &rows, batch.max(1), None)))
            .map_err(to_py)?;
        let out = PyList::empty(py);
        for r in s.rows {
            let d = PyDict::new(py);
            let n = r.token_logprobs.len();
            d.set_item("mean_nll", r.mean_nll)?;
            d.set_item("perplexity", r.mean_nll.exp())?;
            d.set_item("tokens", n)?;
            d.set_item("token_logprobs", PyArray1::from_vec(py, r.token_logprobs))?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Continues `prompt` (text, or a list of ids) with the KV cache, as `gpt1 generate`: the
    /// text (a list of `num` texts when num > 1); ids when the model has no tokenizer.
    #[pyo3(signature = (prompt, max_new=128, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0, num=1, stop=None, greedy=false))]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: &Bound<'py, PyAny>,
        max_new: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        repetition_penalty: f32,
        seed: u64,
        num: usize,
        stop: Option<Vec<String>>,
        greedy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let stops = stop.unwrap_or_default();
        if stops.iter().any(String::is_empty) {
            return Err(invalid("stop: an empty stop string would end every sample at once"));
        }
        let ids: Vec<u32> = match prompt.extract::<String>() {
            Ok(text) => py.detach(|| self.tok()?.encode(&text).map_err(to_py))?,
            Err(_) => prompt
                .extract::<Vec<u32>>()
                .map_err(|_| invalid("prompt must be a text or a list of token ids"))?,
        };
        if !stops.is_empty() {
            self.tok()?;
        }
        let sampling = Sampling {
            temperature: if greedy { 0.0 } else { temperature },
            top_k,
            top_p,
            repetition_penalty,
        };
        let opts = GenerateOptions { max_new, sampling, seed, num, logprobs: None };
        let tok = self.tokenizer.clone();
        let gens = py
            .detach(|| {
                on_pool(|| {
                    let on_token = |_: usize, g: &[u32]| match (&tok, stops.is_empty()) {
                        (Some(t), false) => t.decode(g).is_ok_and(|s| cut_at_stop(&s, &stops).1),
                        _ => false,
                    };
                    generate(&self.model, &ids, &opts, on_token)
                })
            })
            .map_err(to_py)?
            .0;
        let out: Vec<Bound<'py, PyAny>> = gens
            .into_iter()
            .map(|g| match &self.tokenizer {
                Some(t) => Ok(cut_at_stop(&t.decode(&g.ids).map_err(to_py)?, &stops)
                    .0
                    .into_pyobject(py)?
                    .into_any()),
                None => Ok(g.ids.into_pyobject(py)?.into_any()),
            })
            .collect::<PyResult<_>>()?;
        if num == 1 {
            return Ok(out.into_iter().next().expect("one sample"));
        }
        Ok(PyList::new(py, out)?.into_any())
    }

    /// The model's tokenizer (its folder's files, or GPT-1's built-in BPE), if it has one.
    #[getter]
    fn tokenizer(&self) -> Option<Tokenizer> {
        self.tokenizer.clone().map(|inner| Tokenizer { inner })
    }

    /// The sizes: n_layer, n_embd, n_head, n_positions, vocab_size.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.model.config;
        let d = PyDict::new(py);
        for (k, v) in [
            ("n_layer", c.n_layer),
            ("n_embd", c.n_embd),
            ("n_head", c.n_head),
            ("n_positions", c.n_positions),
            ("vocab_size", c.vocab_size),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let c = &self.model.config;
        format!(
            "Model({:?}, n_layer={}, n_embd={}, vocab_size={})",
            self.path, c.n_layer, c.n_embd, c.vocab_size
        )
    }
}
