//! `POST /v1/embeddings`: each input's vector from an embedding model, computed by the model's
//! engine like any request (a prompt-only sequence that ends with the step that computes it).

use super::types::PromptSpec;
use crate::api::error::{parse_json, ApiError};
use crate::api::AppState;
use crate::manager::ModelLease;
use crate::metrics::FinishedLabel;
use crate::models::EmbeddingInfo;
use crate::step::{FinishReason, Request, SamplingParams, StopConditions, Task};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Instant;

/// OpenAI's cap on the inputs of one request.
const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: PromptSpec,
    #[serde(default)]
    encoding_format: EncodingFormat,
    /// The first `dimensions` values (renormalized), for a model trained for it (Matryoshka).
    dimensions: Option<usize>,
    /// Lower runs first under `--scheduling-policy priority` (vLLM's extension).
    #[serde(default)]
    priority: i32,
    #[allow(dead_code)] // OpenAI's end-user id: accepted, changes nothing
    user: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian f32 bytes, base64.
    Base64,
}

pub async fn embeddings(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: EmbeddingRequest = parse_json(&body?)?;
    let model = state.models.get_or_load(&req.model).await?;
    let info = model
        .model
        .embedding()
        .filter(|i| !i.scores)
        .ok_or_else(|| {
            ApiError::invalid(
                Some("model".into()),
                format!(
                    "model {:?} has no embeddings (it generates text, or scores text pairs: /score, /rerank); /v1/embeddings needs an embedding model",
                    req.model
                ),
            )
        })?;
    let dims = checked_dimensions(req.dimensions, info)?;
    let prompts = tokenize(&model, req.input).await?;
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let started = Instant::now();
    let vectors = run(&model, prompts, req.priority, state.options.request_timeout).await;
    model.engine.metrics().finished(match &vectors {
        Ok(_) => FinishedLabel::Length,
        Err(_) => FinishedLabel::Error,
    });
    if vectors.is_ok() {
        charge(&state, key, prompt_tokens);
    }
    let data: Vec<Value> = vectors?
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let v = shorten(v, dims, info.normalized);
            json!({"object": "embedding", "index": index, "embedding": encode(&v, req.encoding_format)})
        })
        .collect();
    tracing::info!(
        model = %model.id,
        inputs = data.len(),
        prompt_tokens,
        duration_ms = started.elapsed().as_secs_f64() * 1e3,
        "embeddings finished"
    );
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })))
}

/// Charges `tokens` to the request's API key (its rate limit), when it has one.
pub(super) fn charge(
    state: &AppState,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    tokens: usize,
) {
    if let Some(key) = key {
        state.limiter.charge(key.0 .0, tokens);
    }
}

/// The vector length a request asks for: the model's own, or fewer where the model was
/// trained to be cut (Matryoshka).
fn checked_dimensions(asked: Option<usize>, info: EmbeddingInfo) -> Result<usize, ApiError> {
    let bad = |m: String| ApiError::invalid(Some("dimensions".into()), m);
    match asked {
        None => Ok(info.dims),
        Some(d) if d == info.dims => Ok(d),
        Some(0) => Err(bad("dimensions must be at least 1".into())),
        Some(d) if d > info.dims => Err(bad(format!(
            "dimensions {d} exceeds the model's {} dimensions",
            info.dims
        ))),
        Some(d) if info.matryoshka => Ok(d),
        Some(d) => Err(bad(format!(
            "the model was not trained for shortened vectors (Matryoshka): dimensions must be {} (got {d})",
            info.dims
        ))),
    }
}

/// Each input's token ids (texts with the tokenizer's special tokens), checked: at least one,
/// none empty, ids in the vocabulary, each within the context.
async fn tokenize(model: &ModelLease, input: PromptSpec) -> Result<Vec<Vec<u32>>, ApiError> {
    let prompts = match input {
        PromptSpec::Tokens(ids) => vec![ids],
        PromptSpec::TokenLists(lists) => lists,
        PromptSpec::Text(text) => texts_to_ids(model, vec![text]).await?,
        PromptSpec::Texts(texts) => texts_to_ids(model, texts).await?,
    };
    check_prompts(model, &prompts, "input")?;
    Ok(prompts)
}

/// At least one prompt and at most `MAX_INPUTS`, none empty, ids in the vocabulary, each within
/// the context; errors name `param`.
pub(super) fn check_prompts(
    model: &ModelLease,
    prompts: &[Vec<u32>],
    param: &str,
) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::invalid(Some(param.into()), m);
    if prompts.is_empty() || prompts.len() > MAX_INPUTS {
        return Err(bad(format!(
            "{param} holds {} items; send 1 to {MAX_INPUTS}",
            prompts.len()
        )));
    }
    let (vocab, limit) = (model.codec.vocab_size(), model.engine.max_model_len());
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(bad(format!("{param}[{i}] is empty")));
        }
        if let Some(id) = p.iter().find(|&&id| id as usize >= vocab) {
            return Err(bad(format!(
                "{param}[{i}]: token id {id} is not below the vocabulary size {vocab}"
            )));
        }
        if p.len() > limit {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..bad(format!(
                    "This model's maximum context length is {limit} tokens, however {param}[{i}] has {} tokens. Please reduce the length of the input.",
                    p.len()
                ))
            });
        }
    }
    Ok(())
}

pub(super) async fn texts_to_ids(
    model: &ModelLease,
    texts: Vec<String>,
) -> Result<Vec<Vec<u32>>, ApiError> {
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(ApiError::invalid(
            Some("input".into()),
            format!("input[{i}] is an empty string"),
        ));
    }
    let codec = model.codec.clone();
    tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|t| codec.encode_with_special_tokens(t))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
    .map_err(ApiError::from)
}

/// Submits every prompt as an embedding request and collects the vectors in input order;
/// past `timeout` the streams are dropped (their sequences freed) and the client gets 408.
pub(super) async fn run(
    model: &ModelLease,
    prompts: Vec<Vec<u32>>,
    priority: i32,
    timeout: Option<std::time::Duration>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    crate::api::generation::check_priority(model, priority)?;
    let mut streams = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let req = Request {
            id: model.engine.next_request_id(),
            prompt_token_ids: prompt,
            sampling: SamplingParams::greedy(),
            stop: StopConditions::default(),
            priority,
            arrival: Instant::now(),
            cache_salt: None,
            follows: None,
            constraint: None,
            task: Task::Embed,
            background: crate::api::batch::marker::in_batch(),
            // an adapter on an embedding decoder changes its vectors too
            lora: model.lora(),
            lora_hold: model.lora_hold(),
        };
        streams.push(model.engine.submit(req)?);
    }
    let collect = async {
        let mut vectors = Vec::with_capacity(streams.len());
        for stream in &mut streams {
            let delta = stream
                .recv()
                .await
                .ok_or_else(|| ApiError::internal("the engine stopped"))?;
            match (delta.embedding, delta.finish) {
                (Some(v), _) => vectors.push(v),
                (None, Some(FinishReason::Error(e))) => return Err(ApiError::internal(e)),
                (None, other) => {
                    return Err(ApiError::internal(format!(
                        "an embedding request ended without its vector ({other:?})"
                    )))
                }
            }
        }
        Ok(vectors)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, collect)
            .await
            .unwrap_or_else(|_| Err(ApiError::timed_out(t))),
        None => collect.await,
    }
}

/// The first `dims` values, renormalized when the model's vectors are unit vectors.
fn shorten(mut v: Vec<f32>, dims: usize, normalized: bool) -> Vec<f32> {
    if dims < v.len() {
        v.truncate(dims);
        if normalized {
            crate::models::l2_normalize(&mut v);
        }
    }
    v
}

fn encode(v: &[f32], format: EncodingFormat) -> Value {
    match format {
        EncodingFormat::Float => json!(v),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}
