//! The wire format: OpenAI's error object, and requests read field by field from JSON so that
//! every bad request is answered naming the field and what it takes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// An error answered as OpenAI's `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn bad(param: &'static str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), param: Some(param) }
    }
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), param: None }
    }
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 | 503 => "overloaded_error",
            500.. => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl From<crate::Error> for ApiError {
    /// The library's errors about a request's content are the client's (400); others the server's.
    fn from(e: crate::Error) -> Self {
        use crate::Error as E;
        let status = match &e {
            E::Setting { .. } | E::Vocab(_) | E::Tokenizer(_) | E::Invalid { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message, "type": self.kind(), "param": self.param,
            "code": self.status.as_u16(),
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// A request body as a JSON object.
pub fn object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, "the body must be a JSON object")),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}"))),
    }
}

/// Field readers: absent or `null` is `None`; a value of the wrong type is a 400 naming it.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    pub fn uint(&self, k: &'static str) -> ApiResult<Option<usize>> {
        self.get(k)
            .map(|v| {
                v.as_u64().map(|x| x as usize).ok_or_else(|| {
                    ApiError::bad(k, format!("{k} must be an integer >= 0, not {v}"))
                })
            })
            .transpose()
    }
    /// Any integer, read as its 64 bits (seeds).
    pub fn int(&self, k: &'static str) -> ApiResult<Option<u64>> {
        self.get(k)
            .map(|v| {
                v.as_u64()
                    .or_else(|| v.as_i64().map(|x| x as u64))
                    .ok_or_else(|| ApiError::bad(k, format!("{k} must be an integer, not {v}")))
            })
            .transpose()
    }
    pub fn float(&self, k: &'static str) -> ApiResult<Option<f32>> {
        self.get(k)
            .map(|v| {
                v.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| ApiError::bad(k, format!("{k} must be a number, not {v}")))
            })
            .transpose()
    }
    pub fn bool(&self, k: &'static str) -> ApiResult<Option<bool>> {
        self.get(k)
            .map(|v| {
                v.as_bool().ok_or_else(|| ApiError::bad(k, format!("{k} must be true or false")))
            })
            .transpose()
    }
    pub fn string(&self, k: &'static str) -> ApiResult<Option<String>> {
        self.get(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad(k, format!("{k} must be a string")))
            })
            .transpose()
    }
    /// A string or a list of strings (`stop`).
    pub fn strings(&self, k: &'static str) -> ApiResult<Vec<String>> {
        let bad = || ApiError::bad(k, format!("{k} must be a string or a list of strings"));
        match self.get(k) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => {
                a.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(bad)).collect()
            }
            Some(_) => Err(bad()),
        }
    }
    /// A list of token ids.
    pub fn ids(&self, k: &'static str) -> ApiResult<Option<Vec<u32>>> {
        self.get(k)
            .map(|v| {
                ids_of(v)
                    .ok_or_else(|| ApiError::bad(k, format!("{k} must be a list of token ids")))
            })
            .transpose()
    }
}

/// Token ids from a JSON list of integers.
pub fn ids_of(v: &Value) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_u64().filter(|&i| i <= u32::MAX as u64).map(|i| i as u32))
        .collect()
}

/// One prompt: text, or token ids.
#[derive(Clone, Debug)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// `prompt` as OpenAI takes it: a string, a list of strings, a list of ids, a list of lists of ids.
pub fn prompts(v: Option<&Value>) -> ApiResult<Vec<Prompt>> {
    let bad = || {
        ApiError::bad(
            "prompt",
            "prompt must be a string, a list of strings, a list of token ids or a list of lists of ids",
        )
    };
    let v = v.ok_or_else(|| ApiError::bad("prompt", "prompt is required"))?;
    let out = match v {
        Value::String(s) => vec![Prompt::Text(s.clone())],
        Value::Array(a) if a.is_empty() => {
            return Err(ApiError::bad("prompt", "prompt is an empty list"));
        }
        Value::Array(a) if a[0].is_string() => a
            .iter()
            .map(|x| x.as_str().map(|s| Prompt::Text(s.to_string())))
            .collect::<Option<_>>()
            .ok_or_else(bad)?,
        Value::Array(a) if a[0].is_array() => {
            a.iter().map(|x| ids_of(x).map(Prompt::Ids)).collect::<Option<_>>().ok_or_else(bad)?
        }
        Value::Array(_) => vec![Prompt::Ids(ids_of(v).ok_or_else(bad)?)],
        _ => return Err(bad()),
    };
    Ok(out)
}

/// Seconds since the epoch (`created`).
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
