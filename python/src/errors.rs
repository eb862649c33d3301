//! The library's typed errors as Python exceptions (classes defined in `gpt1/__init__.py`):
//! `gpt1.Error`, with `InvalidInputError` (also a `ValueError`) and `NotFoundError` (also a
//! `FileNotFoundError`). Messages are the command line's.

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyType;

fn raise(class: &str, msg: String) -> PyErr {
    Python::attach(|py| {
        let ty = py
            .import("gpt1")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.cast_into::<PyType>().map_err(Into::into));
        match ty {
            Ok(t) => PyErr::from_type(t, msg),
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

pub fn invalid(msg: impl Into<String>) -> PyErr {
    raise("InvalidInputError", msg.into())
}

pub fn to_py(e: gpt1::Error) -> PyErr {
    use gpt1::Error as E;
    let msg = e.to_string();
    match e {
        E::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => {
            raise("NotFoundError", msg)
        }
        E::Invalid { ref path, .. } if !path.as_os_str().is_empty() && !path.exists() => {
            raise("NotFoundError", msg)
        }
        E::Interrupted { .. } => PyKeyboardInterrupt::new_err(msg),
        E::Setting { .. }
        | E::Invalid { .. }
        | E::MissingSplit { .. }
        | E::ModelConfig(_)
        | E::Unknown(_)
        | E::Vocab(_)
        | E::Tokenizer(_) => raise("InvalidInputError", msg),
        _ => raise("Error", msg),
    }
}
