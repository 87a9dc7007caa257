//! `POST /tokenize` and `/detokenize` (vLLM's): a model's token ids of a prompt or chat, and back.

use super::messages::to_chat_messages;
use super::types::ChatMessageIn;
use crate::api::error::{parse_json, ApiError};
use crate::api::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct TokenizeRequest {
    model: String,
    prompt: Option<String>,
    messages: Option<Vec<ChatMessageIn>>,
    /// BOS and the like for `prompt` (vLLM's default: true); chat templates write their own.
    add_special_tokens: Option<bool>,
    /// Variables for the chat template, as in chat completions.
    chat_template_kwargs: Option<crate::text::TemplateKwargs>,
}

/// `{"model", "prompt"}` or `{"model", "messages"}` → `{"count", "max_model_len", "tokens"}`.
pub async fn tokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse_json(&body?)?;
    let model = state.models.get_or_load(&req.model).await?;
    let codec = model.codec.clone();
    let add_special = req.add_special_tokens.unwrap_or(true);
    // an embedding model's prompt as /v1/embeddings reads it (BERT's [CLS] ... [SEP])
    let embeds = add_special && model.model.embedding().is_some();
    let ids = match (req.prompt, req.messages) {
        (Some(p), None) if embeds => {
            tokio::task::spawn_blocking(move || codec.encode_with_special_tokens(&p))
        }
        (Some(p), None) => tokio::task::spawn_blocking(move || codec.encode(&p, add_special)),
        (None, Some(m)) => {
            let messages = to_chat_messages(&m)?;
            let kwargs = super::chat::template_kwargs(req.chat_template_kwargs)?;
            tokio::task::spawn_blocking(move || {
                let text = codec.apply_chat_template_with(&messages, None, &kwargs)?;
                codec.encode(&text, false)
            })
        }
        _ => {
            return Err(ApiError::invalid(
                Some("prompt".to_string()),
                "send either prompt or messages",
            ))
        }
    }
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    Ok(Json(json!({
        "count": ids.len(),
        "max_model_len": model.engine.max_model_len(),
        "tokens": ids,
        "token_strs": null,
    })))
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    model: String,
    tokens: Vec<u32>,
}

/// `{"model", "tokens"}` → `{"prompt"}`.
pub async fn detokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse_json(&body?)?;
    let model = state.models.get_or_load(&req.model).await?;
    let vocab = model.codec.vocab_size() as u32;
    if let Some(bad) = req.tokens.iter().find(|&&t| t >= vocab) {
        return Err(ApiError::invalid(
            Some("tokens".to_string()),
            format!("token id {bad} is not below the vocabulary size {vocab}"),
        ));
    }
    let text = model.codec.decode(&req.tokens, false)?;
    Ok(Json(json!({ "prompt": text })))
}
