//! `/v1/responses` (OpenAI's Responses API) over the chat pipeline: `POST` creates a response
//! (whole, or streamed as typed events), `GET /v1/responses/{id}` and `DELETE` read and remove a
//! stored one; `previous_response_id` continues a stored conversation.

pub mod output;
pub mod request;
pub mod store;
mod stream;

use super::chat::{run_chat, ChatRun};
use super::open_request;
use super::types::ChatCompletionRequest;
use crate::api::error::{parse_json, ApiError};
use crate::api::sse::stream_response;
use crate::api::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use request::ResponsesRequest;
use serde_json::{json, Value};
use store::{valid_id, StoredResponse};

pub async fn create(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ResponsesRequest = parse_json(&body?)?;
    req.check_supported()?;
    let history = match &req.previous_response_id {
        Some(id) => stored(&state, id, "previous_response_id")?.messages.clone(),
        None => Vec::new(),
    };
    let (messages, own) = req.messages(&history)?;
    let chat: ChatCompletionRequest = serde_json::from_value(req.chat_body(messages)?)
        .map_err(|e| ApiError::invalid(None, format!("invalid request: {e}")))?;
    let (chat, plan, sub) = open_request(&state, key, chat).await?;
    let shell = output::Shell::new(&req);
    let store = req.store.unwrap_or(true).then(|| {
        let mut conversation = history;
        conversation.extend(own);
        (state.responses.clone(), conversation)
    });
    match run_chat(chat, plan, sub).await? {
        ChatRun::Done(done) => {
            let (items, incomplete, assistant) = output::from_chat(&done);
            let status = if incomplete {
                "incomplete"
            } else {
                "completed"
            };
            let response = shell.render(status, &items, Some(&done.usage), incomplete);
            if let Some((store, mut messages)) = store {
                messages.push(assistant);
                let record = StoredResponse {
                    response: response.clone(),
                    messages,
                };
                store.put(&shell.id, record);
            }
            Ok(Json(response).into_response())
        }
        ChatRun::Stream(gens, chunks) => Ok(stream_response(
            gens,
            stream::ResponseEvents::new(chunks, shell, store),
        )),
    }
}

pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(stored(&state, &id, "response_id")?.response.clone()))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !valid_id(&id) || !state.responses.delete(&id) {
        return Err(not_found(&id, "response_id"));
    }
    Ok(Json(
        json!({"id": id, "object": "response.deleted", "deleted": true}),
    ))
}

fn stored(
    state: &AppState,
    id: &str,
    param: &str,
) -> Result<std::sync::Arc<StoredResponse>, ApiError> {
    valid_id(id)
        .then(|| state.responses.get(id))
        .flatten()
        .ok_or_else(|| not_found(id, param))
}

fn not_found(id: &str, param: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("No response found with id '{id}'."),
        param: Some(param.into()),
        code: None,
        retry_after: None,
    }
}
