//! The admin API (`--admin-api-key` when set): the manager's models and their counters, and
//! loading / unloading by hand.
//!
//! - `GET /admin/models`: every declared model: id, source, state (loaded, loading, host,
//!   unloaded), bytes, last use, requests in flight, pinned, last load error, host-tier bytes,
//!   compute dtype and generation_config.json defaults of a loaded model, its LoRA adapters
//!   (state, bytes, requests, loads, evictions, last use); and the server's
//!   CPU (`cpu`: model, flags, which kernels run).
//! - `POST /admin/models/{id}/load`, `POST /admin/models/{id}/unload` (waits for the model's
//!   requests to finish, bounded by the load timeout).
//! - `GET /admin/stats`: per model requests, tokens, loads, failed loads, evictions, load seconds;
//!   process RSS.

use super::error::ApiError;
use super::AppState;
use crate::manager::{validate_model_id, ModelStatus};
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

fn checked(id: &str) -> Result<(), ApiError> {
    validate_model_id(id).map_err(|e| ApiError::invalid(Some("model".to_string()), e))
}

fn model_json(s: &ModelStatus) -> Value {
    let c = s.counters;
    json!({
        "id": s.id,
        "source": s.source,
        "state": s.state.as_str(),
        "pinned": s.pinned,
        "bytes": c.bytes.load(Relaxed),
        "last_used_ms": c.last_used_ms.load(Relaxed),
        "in_flight": s.in_flight,
        "loads": c.loads.load(Relaxed),
        "evictions": c.evictions.load(Relaxed),
        "load_seconds": c.load_millis.load(Relaxed) as f64 / 1e3,
        "load_failures": c.load_failures.load(Relaxed),
        "host_loads": c.host_loads.load(Relaxed),
        "host_bytes": c.host_bytes.load(Relaxed),
        "last_error": s.last_error,
        "dtype": s.dtype,
        "generation_defaults": s.generation_defaults,
        "adapters": s.adapters,
    })
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let m = &state.models;
    let data: Vec<Value> = m
        .ids()
        .filter_map(|id| m.status(id))
        .map(|s| model_json(&s))
        .collect();
    Json(json!({ "object": "list", "data": data, "cpu": crate::cpu::CpuInfo::get() }))
}

pub async fn load(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked(&id)?;
    state.models.get_or_load(&id).await?;
    let s = state.models.status(&id).expect("declared");
    Ok(Json(model_json(&s)))
}

pub async fn unload(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    checked(&id)?;
    let was_loaded = state.models.unload(&id).await?;
    let s = state.models.status(&id).expect("declared");
    let mut v = model_json(&s);
    v["unloaded"] = json!(was_loaded);
    Ok(Json(v))
}

pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    let m = &state.models;
    let metrics = &state.metrics;
    let models: Vec<Value> = m
        .ids()
        .filter_map(|id| m.status(id))
        .map(|s| {
            let mut v = model_json(&s);
            let (requests, prompt, generated) = metrics.model_totals(s.id);
            v["requests"] = json!(requests);
            v["prompt_tokens"] = json!(prompt);
            v["generation_tokens"] = json!(generated);
            v
        })
        .collect();
    Json(json!({
        "models": models,
        "process": { "rss_bytes": crate::manager::rss_bytes() },
    }))
}
