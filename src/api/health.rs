//! `GET /health` (liveness: 200 while the process serves HTTP, with per model the KV blocks and
//! sequences in use, so operators and tests can see load and leaks), `GET /ready` (readiness:
//! 200 only once the preloaded models are loaded, while not draining and no engine is stalled
//! or stopped; else 503 with the reason) and `GET /load` (vLLM's: what routers balance on).

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;

pub async fn health(State(state): State<AppState>) -> Response {
    let mut all_alive = true;
    let models: Vec<_> = state
        .models
        .loaded()
        .iter()
        .map(|m| {
            let s = m.engine.stats();
            let alive = s.alive.load(Relaxed);
            all_alive &= alive;
            json!({
                "id": m.id,
                "status": if alive { "ok" } else { "stopped" },
                "kv_blocks_total": m.engine.num_kv_blocks(),
                "kv_blocks_used": s.kv_blocks_used.load(Relaxed),
                "block_size": m.engine.block_size(),
                "sequences_running": s.sequences_running.load(Relaxed),
                "sequences_waiting": s.sequences_waiting.load(Relaxed),
                "preemptions_total": s.preemptions_total.load(Relaxed),
                "requests_in_flight": m.num_in_flight(),
                "max_model_len": m.engine.max_model_len(),
            })
        })
        .collect();
    let word = match (state.is_draining(), all_alive) {
        (true, _) => "draining",
        (false, true) => "ok",
        (false, false) => "degraded",
    };
    let body = json!({"status": word, "models": models});
    (StatusCode::OK, Json(body)).into_response()
}

/// Why the server should not get new requests now, if it should not.
fn not_ready(state: &AppState) -> Option<String> {
    if state.is_draining() {
        return Some("draining".into());
    }
    if !state.preloaded.load(Relaxed) {
        return Some("loading the preloaded models".into());
    }
    let timeout = state.options.engine_stall_timeout;
    for m in state.models.loaded() {
        let s = m.engine.stats();
        if !s.alive.load(Relaxed) {
            return Some(format!("the engine of model {} stopped", m.id));
        }
        if let Some(stalled) = s.stalled_for().filter(|d| *d > timeout) {
            tracing::warn!(
                model = %m.id,
                stalled_s = stalled.as_secs_f64(),
                running = s.sequences_running.load(Relaxed),
                waiting = s.sequences_waiting.load(Relaxed),
                kv_blocks_used = s.kv_blocks_used.load(Relaxed),
                "engine stalled: no step progress with work queued"
            );
            return Some(format!(
                "the engine of model {} made no progress for {:.0} s",
                m.id,
                stalled.as_secs_f64()
            ));
        }
    }
    None
}

pub async fn ready(State(state): State<AppState>) -> Response {
    match not_ready(&state) {
        None => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        )
            .into_response(),
    }
}

/// `GET /load`: vLLM's `server_load` (requests in flight) and, per loaded model, its running and
/// waiting sequences and KV cache usage.
pub async fn load(State(state): State<AppState>) -> Json<serde_json::Value> {
    let models: Vec<_> = state
        .models
        .loaded()
        .iter()
        .map(|m| {
            let s = m.engine.stats();
            let total = m.engine.num_kv_blocks().max(1);
            json!({
                "id": m.id,
                "num_requests_running": s.sequences_running.load(Relaxed),
                "num_requests_waiting": s.sequences_waiting.load(Relaxed),
                "kv_cache_usage": s.kv_blocks_used.load(Relaxed) as f64 / total as f64,
            })
        })
        .collect();
    Json(json!({"server_load": state.models.requests_in_flight(), "models": models}))
}

/// `GET /metrics`: Prometheus' text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    lora_requests(&state);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Sets `weir:lora_requests_info` from each loaded model's engine: its adapters' names, the
/// running and the waiting ones; `max_lora` is `--max-loras` (or the adapters it has).
fn lora_requests(state: &AppState) {
    let rows: Vec<(String, String, String, String)> = state
        .models
        .loaded()
        .iter()
        .filter(|m| state.models.has_adapters(&m.id))
        .map(|m| {
            let (running, waiting) = m.engine.stats().adapters.lock().clone();
            let names = |ids: &[u32]| {
                let v: Vec<String> = ids
                    .iter()
                    .filter_map(|&i| state.models.adapter_name(&m.id, i))
                    .collect();
                v.join(",")
            };
            let max = m.engine.max_loras().unwrap_or_else(|| {
                let all = state.models.adapters();
                all.iter().filter(|(_, b)| *b == m.id).count()
            });
            (
                m.id.clone(),
                max.to_string(),
                names(&running),
                names(&waiting),
            )
        })
        .collect();
    state.metrics.set_lora_requests(&rows);
}
