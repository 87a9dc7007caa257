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
use std::sync::Arc;
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
    let mut conversation = history;
    conversation.extend(own);
    let store = req.store.unwrap_or(true).then(|| state.responses.clone());
    if req.background == Some(true) {
        let store = store.expect("check_supported: background needs store");
        let queued = in_background(store, shell, conversation, run_chat(chat, plan, sub));
        return Ok(Json(queued).into_response());
    }
    match run_chat(chat, plan, sub).await? {
        ChatRun::Done(done) => {
            let record = finished(&shell, &done, conversation);
            let response = record.response.clone();
            if let Some(store) = store {
                store.put(&shell.id, record);
            }
            Ok(Json(response).into_response())
        }
        ChatRun::Stream(gens, chunks) => {
            let store = store.map(|s| (s, conversation));
            Ok(stream_response(
                gens,
                stream::ResponseEvents::new(chunks, shell, store),
            ))
        }
    }
}

/// The stored record of a response answered whole.
fn finished(
    shell: &output::Shell,
    done: &super::types::ChatCompletion,
    mut messages: Vec<Value>,
) -> StoredResponse {
    let (items, incomplete, assistant) = output::from_chat(done);
    let status = if incomplete {
        "incomplete"
    } else {
        "completed"
    };
    messages.push(assistant);
    StoredResponse {
        response: shell.render(status, &items, Some(&done.usage), incomplete),
        messages,
    }
}

/// Stores response `shell` as in progress and computes it on a task of its own (cancellable
/// through the store); returns the in-progress response.
fn in_background(
    store: Arc<store::ResponseStore>,
    shell: output::Shell,
    messages: Vec<Value>,
    run: impl std::future::Future<Output = Result<ChatRun, ApiError>> + Send + 'static,
) -> Value {
    let queued = shell.render("in_progress", &[], None, false);
    let id = shell.id.clone();
    store.put(
        &id,
        StoredResponse {
            response: queued.clone(),
            messages: messages.clone(),
        },
    );
    let (go, ready) = tokio::sync::oneshot::channel::<()>();
    let task_store = store.clone();
    let task = tokio::spawn(async move {
        let _ = ready.await; // registered first, so a cancel always finds it
        let record = match run.await {
            Ok(ChatRun::Done(done)) => finished(&shell, &done, messages),
            Ok(ChatRun::Stream(..)) => unreachable!("a background response does not stream"),
            Err(e) => {
                let mut response = shell.render("failed", &[], None, false);
                response["error"] = json!({"code": "server_error", "message": e.message});
                StoredResponse { response, messages }
            }
        };
        task_store.put(&shell.id, record);
        task_store.finish_background(&shell.id);
    });
    store.start_background(&id, task.abort_handle());
    let _ = go.send(());
    queued
}

/// `POST /v1/responses/{id}/cancel`: stops a background response still running.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = stored(&state, &id, "response_id")?;
    if !state.responses.cancel(&id) {
        return Err(ApiError::invalid(
            Some("response_id".into()),
            format!("response {id} is not a background response in progress"),
        ));
    }
    let mut record = (*record).clone();
    record.response["status"] = "cancelled".into();
    state.responses.put(&id, record.clone());
    Ok(Json(record.response))
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
