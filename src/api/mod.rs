//! HTTP layer: axum router over the `ModelManager`. Talks to engines only through
//! `EngineHandle` (via `ModelHandle`); never sees the scheduler, sequences or tensors.

pub mod auth;
pub mod error;
pub mod generate;
pub mod health;
pub mod openai;
pub mod sse;

use crate::config::ServerOptions;
use crate::manager::ModelManager;
use crate::metrics::Metrics;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub models: ModelManager,
    pub metrics: Arc<Metrics>,
    pub options: Arc<ServerOptions>,
    api_keys: Arc<auth::Keys>,
    metrics_key: Arc<auth::Keys>,
}

impl AppState {
    pub fn new(models: ModelManager, metrics: Arc<Metrics>, options: ServerOptions) -> Self {
        Self {
            api_keys: Arc::new(auth::Keys::new(&options.api_keys)),
            metrics_key: Arc::new(auth::Keys::new(options.metrics_api_key.as_slice())),
            models,
            metrics,
            options: Arc::new(options),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(openai::chat::chat_completions))
        .route("/v1/completions", post(openai::completions::completions))
        .route("/v1/models", get(openai::models::list_models))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let metrics = Router::new()
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_metrics_key,
        ));
    Router::new()
        .merge(v1)
        .merge(metrics)
        .route("/health", get(health::health))
        .fallback(|| async {
            error::ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                message: "no such endpoint".into(),
                param: None,
                code: None,
                retry_after: None,
            }
        })
        .layer(DefaultBodyLimit::max(state.options.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_http))
        .with_state(state)
}

/// Counts every answered request by method, route template and status.
async fn count_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let resp = next.run(req).await;
    state
        .metrics
        .http_request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}
