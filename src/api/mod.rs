//! HTTP layer: axum router over the `ModelManager`. Talks to engines only through
//! `EngineHandle` (via `ModelHandle`); never sees the scheduler, sequences or tensors.

pub mod error;
pub mod generate;
pub mod health;
pub mod openai;
pub mod sse;

use crate::manager::ModelManager;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

#[derive(Clone)]
pub struct AppState {
    pub models: ModelManager,
}

/// Largest request body accepted (long prompts as token lists fit easily).
const MAX_BODY_BYTES: usize = 32 << 20;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat::chat_completions))
        .route("/v1/completions", post(openai::completions::completions))
        .route("/v1/models", get(openai::models::list_models))
        .route("/health", get(health::health))
        .fallback(|| async {
            error::ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                message: "no such endpoint".into(),
                param: None,
                code: None,
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
