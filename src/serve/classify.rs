//! `POST /v1/classify`: a fine-tuned checkpoint's answer for one example or a list of them,
//! the numbers `gpt1 predict --probabilities` writes.

use super::api::{ApiError, ApiResult, object};
use super::completions::{answer, submit};
use super::engine::Job;
use super::state::{State, TaskInfo};
use crate::tasks::evaluate::{Prediction, softmax};
use crate::tasks::readers::Shape;
use crate::tasks::{Example, Input, Target};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// The most examples in one request.
pub const MAX_EXAMPLES: usize = 1024;

/// The field names each shape reads (the first present of each group); a user's task also
/// takes its own column names.
fn groups(shape: Shape) -> &'static [&'static [&'static str]] {
    match shape {
        Shape::Single => &[&["sentence", "text"]],
        Shape::Ordered => &[&["premise", "sentence1", "a"], &["hypothesis", "sentence2", "b"]],
        Shape::Unordered | Shape::Regression => {
            &[&["sentence1", "a", "premise"], &["sentence2", "b", "hypothesis"]]
        }
        Shape::Choice => &[&["context"], &["question"], &["candidates", "choices", "endings"]],
    }
}

fn text(o: &Map<String, Value>, names: &[&str], i: usize, optional: bool) -> ApiResult<String> {
    for n in names {
        match o.get(*n) {
            Some(Value::String(s)) => return Ok(s.clone()),
            Some(Value::Null) | None => continue,
            Some(_) => {
                return Err(ApiError::bad("inputs", format!("example {i}: {n} must be a string")));
            }
        }
    }
    if optional {
        return Ok(String::new());
    }
    Err(ApiError::bad("inputs", format!("example {i}: give {}", names.join(" or "))))
}

fn example(info: &TaskInfo, o: &Map<String, Value>, i: usize) -> ApiResult<Example> {
    let custom = info.def.custom.as_ref();
    // A user's task reads its own column names first.
    fn with<'a>(own: Option<&'a String>, std: &'static [&'static str]) -> Vec<&'a str> {
        own.map(String::as_str).into_iter().chain(std.iter().copied()).collect()
    }
    let g = groups(info.shape);
    let input = match info.shape {
        Shape::Single => Input::Single(text(o, &with(custom.map(|c| &c.text_a), g[0]), i, false)?),
        Shape::Ordered => Input::Ordered {
            premise: text(o, &with(custom.map(|c| &c.text_a), g[0]), i, false)?,
            hypothesis: text(o, &with(custom.and_then(|c| c.text_b.as_ref()), g[1]), i, false)?,
        },
        Shape::Unordered | Shape::Regression => Input::Unordered {
            a: text(o, &with(custom.map(|c| &c.text_a), g[0]), i, false)?,
            b: text(o, &with(custom.and_then(|c| c.text_b.as_ref()), g[1]), i, false)?,
        },
        Shape::Choice => {
            let context = text(o, &with(custom.map(|c| &c.text_a), g[0]), i, false)?;
            let question = text(o, &with(custom.and_then(|c| c.text_b.as_ref()), g[1]), i, true)?;
            let listed = g[2].iter().find_map(|n| o.get(*n).filter(|v| !v.is_null()));
            let candidates: Vec<String> = match (listed, custom) {
                (Some(Value::Array(a)), _) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        ApiError::bad("inputs", format!("example {i}: candidates must be strings"))
                    })?,
                (None, Some(c)) => c
                    .choices
                    .iter()
                    .map(|n| text(o, &[n.as_str()], i, false))
                    .collect::<ApiResult<_>>()?,
                _ => {
                    return Err(ApiError::bad(
                        "inputs",
                        format!("example {i}: give candidates, a list of strings"),
                    ));
                }
            };
            if candidates.len() < 2 {
                return Err(ApiError::bad(
                    "inputs",
                    format!("example {i}: give at least two candidates"),
                ));
            }
            Input::Choice { context, question, candidates }
        }
    };
    Ok(Example { input, target: Target::None })
}

/// One example's answer: `{label, probabilities}` (classes: by label; multiple choice: the
/// 1-based candidate and one probability per candidate) or `{score}` (regression).
fn answer_of(info: &TaskInfo, p: &Prediction, scores: &[f32]) -> Value {
    let def = &info.def;
    match p {
        Prediction::Score(s) => json!({"score": s}),
        Prediction::Class(c) if def.labels.is_empty() => {
            json!({"label": c + 1, "probabilities": softmax(scores)})
        }
        Prediction::Class(c) => {
            let probs: Map<String, Value> = def
                .labels
                .iter()
                .zip(softmax(scores))
                .map(|(l, q)| (l.clone(), json!(q)))
                .collect();
            json!({"label": def.labels[*c], "probabilities": probs})
        }
    }
}

/// `{fields}` answers one object; `{"inputs": [{fields}, ...]}` answers `{"data": [...]}`.
pub async fn classify(st: &State, body: &[u8]) -> ApiResult<(Value, usize)> {
    let Some(info) = st.task.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this server runs a language model: /v1/classify needs a fine-tuned checkpoint (gpt1 finetune's best/)",
        ));
    };
    let m = object(body)?;
    st.check_model(&m)?;
    let (objs, many): (Vec<&Map<String, Value>>, bool) = match m.get("inputs") {
        Some(Value::Array(a)) => (
            a.iter()
                .map(Value::as_object)
                .collect::<Option<_>>()
                .ok_or_else(|| ApiError::bad("inputs", "inputs must be a list of objects"))?,
            true,
        ),
        Some(_) => return Err(ApiError::bad("inputs", "inputs must be a list of objects")),
        None => (vec![&m], false),
    };
    if objs.is_empty() || objs.len() > MAX_EXAMPLES {
        return Err(ApiError::bad("inputs", format!("give 1 to {MAX_EXAMPLES} examples")));
    }
    let examples =
        objs.iter().enumerate().map(|(i, o)| example(info, o, i)).collect::<ApiResult<Vec<_>>>()?;
    let n = examples.len();
    let (reply, rx) = tokio::sync::oneshot::channel();
    submit(st, Job::Classify { examples, reply })?;
    let ev = answer(rx).await?;
    let out: Vec<Value> =
        ev.predictions.iter().zip(&ev.scores).map(|(p, s)| answer_of(info, p, s)).collect();
    let body =
        if many { json!({"data": out}) } else { out.into_iter().next().unwrap_or(Value::Null) };
    Ok((body, n))
}
