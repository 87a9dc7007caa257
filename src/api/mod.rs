//! HTTP layer: axum router over the `ModelManager`. Talks to engines only through
//! `EngineHandle` (via `ModelHandle`); never sees the scheduler, sequences or tensors.

pub mod admin;
pub mod auth;
pub mod batch;
pub mod error;
pub mod generation;
pub mod health;
pub mod logprobs;
pub mod lora;
pub mod openai;
pub mod options;
pub mod ratelimit;
pub mod sse;
pub mod validate;

use crate::manager::ModelManager;
use crate::metrics::Metrics;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
pub use options::ServerOptions;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub models: ModelManager,
    pub metrics: Arc<Metrics>,
    pub options: Arc<ServerOptions>,
    api_keys: Arc<auth::Keys>,
    metrics_key: Arc<auth::Keys>,
    admin_key: Arc<auth::Keys>,
    /// Set on SIGTERM/SIGINT: new API requests get 503, `/health` says draining.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    pub limiter: Arc<ratelimit::RateLimiter>,
    /// Unix seconds the server started (`created` of models not loaded yet).
    pub started: u64,
    /// Stored `/v1/responses` (`store: true`).
    pub responses: Arc<openai::responses::store::ResponseStore>,
    /// Uploaded files and batches (the Batch API).
    pub batches: Arc<batch::Batches>,
    /// The models to preload are loaded (`/ready`); `main` clears it while it loads them.
    pub preloaded: Arc<std::sync::atomic::AtomicBool>,
}

impl AppState {
    pub fn new(models: ModelManager, metrics: Arc<Metrics>, options: ServerOptions) -> Self {
        Self {
            api_keys: Arc::new(auth::Keys::new(&options.api_keys)),
            limiter: Arc::new(ratelimit::RateLimiter::new(
                options.rate_limits,
                options.api_keys.len(),
            )),
            metrics_key: Arc::new(auth::Keys::new(options.metrics_api_key.as_slice())),
            admin_key: Arc::new(auth::Keys::new(options.admin_api_key.as_slice())),
            responses: Arc::new(openai::responses::store::ResponseStore::open(
                options.response_store.clone(),
            )),
            batches: Arc::new(open_batches(options.data_dir.clone())),
            preloaded: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            models,
            metrics,
            options: Arc::new(options),
            draining: Arc::default(),
            started: openai::ids::unix_now(),
        }
    }

    /// Starts the runners of the batches an earlier run left unfinished (inside a runtime).
    pub fn resume_batches(&self) {
        for id in self.batches.active() {
            tracing::info!(batch = %id, "resuming batch");
            batch::spawn(self.clone(), id);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The Batch API's store under `dir` (a fresh temporary folder without one).
fn open_batches(dir: Option<std::path::PathBuf>) -> batch::Batches {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "weir-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ))
    });
    batch::Batches::open(dir.clone())
        .unwrap_or_else(|e| panic!("cannot open the batch store under {}: {e}", dir.display()))
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(openai::chat::chat_completions))
        .route("/v1/completions", post(openai::completions::completions))
        .route("/v1/models", get(openai::models::list_models))
        .route("/v1/models/{id}", get(openai::models::model))
        .route("/v1/embeddings", post(openai::embeddings::embeddings))
        .route(
            "/v1/files",
            post(batch::handlers::upload)
                .get(batch::handlers::list_files)
                .layer(DefaultBodyLimit::max(state.options.max_file_bytes)),
        )
        .route(
            "/v1/files/{id}",
            get(batch::handlers::get_file).delete(batch::handlers::delete_file),
        )
        .route("/v1/files/{id}/content", get(batch::handlers::file_content))
        .route(
            "/v1/batches",
            post(batch::handlers::create).get(batch::handlers::list),
        )
        .route("/v1/batches/{id}", get(batch::handlers::get))
        .route("/v1/batches/{id}/cancel", post(batch::handlers::cancel))
        .route("/v1/responses", post(openai::responses::create))
        .route(
            "/v1/responses/{id}",
            get(openai::responses::retrieve).delete(openai::responses::delete),
        )
        .route("/v1/responses/{id}/cancel", post(openai::responses::cancel))
        // vLLM's paths (and Jina's / Cohere's for rerank)
        .route("/score", post(openai::score::score))
        .route("/v1/score", post(openai::score::score))
        .route("/rerank", post(openai::score::rerank))
        .route("/v1/rerank", post(openai::score::rerank))
        .route("/v2/rerank", post(openai::score::rerank))
        .route("/tokenize", post(openai::tokenize::tokenize))
        .route("/detokenize", post(openai::tokenize::detokenize))
        // clients configured with a `.../v1` base URL find them here too
        .route("/v1/tokenize", post(openai::tokenize::tokenize))
        .route("/v1/detokenize", post(openai::tokenize::detokenize))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_when_draining,
        ));
    let metrics = Router::new()
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_metrics_key,
        ));
    let admin = Router::new()
        .route("/admin/models", get(admin::list))
        .route("/admin/models/{id}/load", post(admin::load))
        .route("/admin/models/{id}/unload", post(admin::unload))
        .route("/admin/stats", get(admin::stats))
        .route("/v1/load_lora_adapter", post(lora::load_lora_adapter))
        .route("/v1/unload_lora_adapter", post(lora::unload_lora_adapter))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_key,
        ));
    Router::new()
        .merge(v1)
        .merge(metrics)
        .merge(admin)
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/load", get(health::load))
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
        .layer(middleware::from_fn(request_id))
        .layer(cors(&state.options.allowed_origins))
        .with_state(state)
}

/// CORS for the configured origins (none: no CORS headers, browsers refuse cross-origin calls).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers(Any)
        .expose_headers([REQUEST_ID.clone()]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list: Vec<_> = origins.iter().filter_map(|o| o.parse().ok()).collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

static REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// The request's id: the client's `x-request-id` when it is short printable ASCII, else a new
/// random one. Echoed in the response and recorded on the `request` span every log line of the
/// request carries.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let value = axum::http::HeaderValue::from_str(&id).expect("printable ASCII");
    req.headers_mut().insert(REQUEST_ID.clone(), value.clone());
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = tracing::Instrument::instrument(next.run(req), span).await;
    resp.headers_mut().insert(REQUEST_ID.clone(), value);
    resp
}

/// 503 with `Retry-After` for new API requests once shutdown began.
async fn refuse_when_draining(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.is_draining() {
        use axum::response::IntoResponse;
        return error::ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down; retry on another instance".into(),
            param: None,
            code: None,
            retry_after: Some(5),
        }
        .into_response();
    }
    next.run(req).await
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
