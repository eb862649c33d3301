//! `import gpt1`: the Rust engine from Python (PyO3). Thin: each function parses its
//! arguments, releases the GIL, calls one library function and converts the result. The
//! library's defaults are the only defaults (an argument left `None` keeps the library's).

mod errors;
mod model;
mod tokenizer;
mod train;

use pyo3::prelude::*;

/// Sets the worker threads once per process (rayon's global pool cannot change later).
pub(crate) fn set_threads(n: Option<usize>) -> PyResult<()> {
    let Some(n) = n else { return Ok(()) };
    if n == 0 {
        return Err(errors::invalid("threads must be at least 1"));
    }
    match rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == n => Ok(()),
        Err(_) => Err(errors::invalid(format!(
            "threads={n}: this process already runs {} worker threads (set once, at the first \
             load or training call)",
            rayon::current_num_threads()
        ))),
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<tokenizer::Tokenizer>()?;
    m.add_class::<model::Model>()?;
    m.add_function(wrap_pyfunction!(train::pretrain, m)?)?;
    m.add_function(wrap_pyfunction!(train::finetune, m)?)?;
    m.add_function(wrap_pyfunction!(train::evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(train::predict, m)?)?;
    m.add_function(wrap_pyfunction!(train::zero_shot, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_model, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// The directory a path or a hub id (`ORG/NAME[@REVISION]`, found in the local Hugging Face
/// cache) names.
#[pyfunction]
fn resolve_model(path_or_hub_id: &str) -> PyResult<String> {
    let p = gpt1::hub::resolve(std::path::Path::new(path_or_hub_id)).map_err(errors::to_py)?;
    Ok(p.display().to_string())
}
