//! HTTP handlers of `/v1/files` and `/v1/batches` (OpenAI's shapes).

use super::job;
use crate::api::error::{parse_json, ApiError};
use crate::api::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// The endpoints a batch may run.
const ENDPOINTS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
];

fn not_found(what: &str, id: &str, param: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("No such {what}: '{id}'"),
        param: Some(param.into()),
        code: None,
        retry_after: None,
    }
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param.to_string()), message)
}

/// `POST /v1/files` (multipart: `purpose`, `file`): a JSONL file for batches.
pub async fn upload(
    State(state): State<AppState>,
    mut form: Multipart,
) -> Result<Json<Value>, ApiError> {
    let (mut purpose, mut file) = (None, None);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad("file", e.body_text()))?
    {
        match field.name() {
            Some("purpose") => {
                purpose = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| bad("purpose", e.body_text()))?,
                )
            }
            Some("file") => {
                let name = field.file_name().unwrap_or("upload.jsonl").to_string();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| bad("file", e.body_text()))?;
                file = Some((name, bytes));
            }
            _ => {}
        }
    }
    if purpose.as_deref() != Some("batch") {
        return Err(bad(
            "purpose",
            format!("purpose {purpose:?}: weir stores files for \"batch\""),
        ));
    }
    let (name, bytes) = file.ok_or_else(|| bad("file", "file is required"))?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(bad("file", "a batch file is UTF-8 JSON lines"));
    }
    let files = &state.batches.files;
    let created = files
        .create(&name, "batch", &bytes)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!(created)))
}

pub async fn list_files(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": state.batches.files.list(), "has_more": false}))
}

pub async fn get_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let f = state
        .batches
        .files
        .get(&id)
        .ok_or_else(|| not_found("file", &id, "file_id"))?;
    Ok(Json(json!(f)))
}

pub async fn file_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let content = state
        .batches
        .files
        .content(&id)
        .ok_or_else(|| not_found("file", &id, "file_id"))?;
    Ok(([("content-type", "application/jsonl")], content).into_response())
}

pub async fn delete_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.batches.files.delete(&id) {
        return Err(not_found("file", &id, "file_id"));
    }
    Ok(Json(json!({"id": id, "object": "file", "deleted": true})))
}

#[derive(Deserialize)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<Value>,
}

/// `POST /v1/batches`: runs the input file's lines at batch priority.
pub async fn create(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: CreateBatch = parse_json(&body?)?;
    if !ENDPOINTS.contains(&req.endpoint.as_str()) {
        return Err(bad(
            "endpoint",
            format!("endpoint {:?}: one of {ENDPOINTS:?}", req.endpoint),
        ));
    }
    if req.completion_window != "24h" {
        return Err(bad("completion_window", "completion_window is \"24h\""));
    }
    if state.batches.files.get(&req.input_file_id).is_none() {
        return Err(not_found("file", &req.input_file_id, "input_file_id"));
    }
    let now = crate::api::openai::ids::unix_now();
    let metadata = req.metadata.unwrap_or(Value::Null);
    let batch = job::new_batch(
        &req.input_file_id,
        &req.endpoint,
        &req.completion_window,
        metadata,
        now,
    );
    let id = batch["id"].as_str().unwrap_or_default().to_string();
    state.batches.insert(batch.clone(), key.map(|k| k.0 .0));
    super::spawn(state.clone(), id);
    Ok(Json(batch))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .batches
        .get(&id)
        .map(Json)
        .ok_or_else(|| not_found("batch", &id, "batch_id"))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Json<Value> {
    let all = state.batches.list();
    let start = q
        .after
        .and_then(|a| {
            all.iter()
                .position(|b| b["id"] == a.as_str())
                .map(|i| i + 1)
        })
        .unwrap_or(0);
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    Json(json!({
        "object": "list",
        "first_id": page.first().map(|b| b["id"].clone()),
        "last_id": page.last().map(|b| b["id"].clone()),
        "has_more": start + page.len() < all.len(),
        "data": page,
    }))
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .batches
        .cancel(&id)
        .map(Json)
        .ok_or_else(|| not_found("batch", &id, "batch_id"))
}
