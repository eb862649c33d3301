//! The routes, the API key check and the request log.

use super::api::{ApiError, ApiResult, Fields, object};
use super::completions::{Request, complete, stream};
use super::state::State;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request as HttpRequest, State as S};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Tokens a response accounted for, for the request log.
#[derive(Clone, Copy)]
struct Tokens(usize);

pub fn router(st: State, max_body: usize, log_requests: bool) -> Router {
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/classify", post(classify))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(middleware::from_fn_with_state(st.clone(), auth));
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(api)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such route: see docs/serving.md")
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body));
    let app = if log_requests { app.layer(middleware::from_fn(log)) } else { app };
    app.with_state(st)
}

/// One line per request on stderr: method, path, status, tokens, milliseconds.
async fn log(req: HttpRequest, next: Next) -> Response {
    let (method, path, t0) = (req.method().clone(), req.uri().path().to_string(), Instant::now());
    let res = next.run(req).await;
    let tokens = res.extensions().get::<Tokens>().map_or(0, |t| t.0);
    eprintln!(
        "{method} {path} {} {tokens} tokens {:.1} ms",
        res.status().as_u16(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    res
}

/// With `--api-key`, every route but `/health` wants `Authorization: Bearer KEY`.
async fn auth(S(st): S<State>, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(&**key) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "give the server's key: Authorization: Bearer KEY",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The body, or 413/400 as a JSON error.
fn bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is over the server's limit (--max-request-mb)".to_string()
        } else {
            e.body_text()
        };
        ApiError::new(status, msg)
    })
}

fn counted(v: Value, tokens: usize) -> Response {
    let mut r = Json(v).into_response();
    r.extensions_mut().insert(Tokens(tokens));
    r
}

async fn models(S(st): S<State>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{
        "id": &*st.name, "object": "model", "created": 0, "owned_by": "gpt1",
        "max_model_len": st.n_positions,
    }]}))
}

async fn completions(
    S(st): S<State>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = bytes(body)?;
    let is_stream =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("stream")?.as_bool())
            == Some(true);
    if !is_stream {
        let (v, tokens) = complete(&st, &body).await?;
        return Ok(counted(v, tokens));
    }
    // Checked before the stream starts, so a bad request is still a 4xx.
    let req = Request::parse(&st, &body)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(stream(st, req, tx));
    let events = UnboundedReceiverStream::new(rx)
        .map(|v| Ok::<_, std::convert::Infallible>(Event::default().data(v.to_string())))
        .chain(tokio_stream::once(Ok(Event::default().data("[DONE]"))));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

async fn classify(
    S(st): S<State>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (v, n) = super::classify::classify(&st, &bytes(body)?).await?;
    Ok(counted(v, n))
}

/// lm-evaluation-harness's remote tokenizer reads this first.
async fn tokenizer_info(S(st): S<State>) -> Json<Value> {
    Json(json!({
        "eos_token": st.eos.as_ref().map(|e| &e.0), "eos_token_id": st.eos.as_ref().map(|e| e.1),
        "bos_token": null, "pad_token": null, "chat_template": null,
        "model_max_length": st.n_positions, "vocab_size": st.vocab_size,
    }))
}

async fn tokenize(
    S(st): S<State>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let m = object(&bytes(body)?)?;
    st.check_model(&m)?;
    let text = Fields(&m)
        .string("prompt")?
        .ok_or_else(|| ApiError::bad("prompt", "prompt is required"))?;
    // The end-of-text stand-in is one token, as the harness's `encode(eos_token)[0]` expects.
    let ids = match &st.eos {
        Some((s, id)) if *s == text => vec![*id],
        _ => st.tokenizer.encode(&text)?,
    };
    let n = ids.len();
    Ok(counted(json!({"tokens": ids, "count": n, "max_model_len": st.n_positions}), n))
}

async fn detokenize(
    S(st): S<State>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let m = object(&bytes(body)?)?;
    st.check_model(&m)?;
    let ids =
        Fields(&m).ids("tokens")?.ok_or_else(|| ApiError::bad("tokens", "tokens is required"))?;
    let text = st.tokenizer.decode(&ids)?;
    Ok(counted(json!({"prompt": text}), ids.len()))
}
