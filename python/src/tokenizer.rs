//! `gpt1.Tokenizer`: GPT-1's BPE (built in) or a folder's, in the original pipeline or HF's.

use crate::errors::{invalid, to_py};
use pyo3::prelude::*;
use std::sync::Arc;

#[pyclass(module = "gpt1", frozen)]
pub struct Tokenizer {
    pub(crate) inner: Arc<gpt1::text::Tokenizer>,
}

pub(crate) fn mode(m: Option<&str>) -> PyResult<Option<gpt1::text::Mode>> {
    match m {
        None => Ok(None),
        Some("original") => Ok(Some(gpt1::text::Mode::Original)),
        Some("hf") => Ok(Some(gpt1::text::Mode::Hf)),
        Some(o) => Err(invalid(format!("mode={o:?}: give \"original\" or \"hf\""))),
    }
}

#[pymethods]
impl Tokenizer {
    /// GPT-1's built-in BPE (`path=None`), or the vocabulary files of a folder (vocab.json +
    /// merges.txt, or the original encoder_bpe_40000.json + vocab_40000.bpe).
    #[new]
    #[pyo3(signature = (path=None, mode=None))]
    fn new(path: Option<&str>, mode: Option<&str>) -> PyResult<Self> {
        let m = self::mode(mode)?;
        let t = match path {
            None => gpt1::text::Tokenizer::gpt1(m),
            Some(p) => {
                let dir = gpt1::hub::resolve(std::path::Path::new(p)).map_err(to_py)?;
                gpt1::text::Tokenizer::load(&dir, m)
            }
        }
        .map_err(to_py)?;
        Ok(Self { inner: Arc::new(t) })
    }

    /// Token ids of `text`.
    fn encode(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        py.detach(|| self.inner.encode(text)).map_err(to_py)
    }

    /// Token ids of each text (in parallel).
    fn encode_batch(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Vec<Vec<u32>>> {
        use rayon::prelude::*;
        py.detach(|| texts.par_iter().map(|t| self.inner.encode(t)).collect::<gpt1::Result<_>>())
            .map_err(to_py)
    }

    /// Text of token ids.
    fn decode(&self, ids: Vec<u32>) -> PyResult<String> {
        self.inner.decode(&ids).map_err(to_py)
    }

    /// Tokens in the vocabulary (with the special ones, when it has them).
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn __repr__(&self) -> String {
        format!("Tokenizer(vocab_size={})", self.inner.vocab_size())
    }
}
