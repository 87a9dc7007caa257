//! `GET /health`: liveness plus, per model, the KV blocks and sequences in use, so operators and
//! tests can see load and leaks.

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
    let draining = state.is_draining();
    let status = if all_alive && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = match (draining, all_alive) {
        (true, _) => "draining",
        (false, true) => "ok",
        (false, false) => "degraded",
    };
    let body = json!({"status": word, "models": models});
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus' text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
