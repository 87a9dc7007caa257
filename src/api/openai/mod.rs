//! OpenAI-compatible endpoints.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod ids;
pub mod messages;
pub mod models;
pub mod responses;
pub mod score;
pub mod tokenize;
pub mod tool_choice;
pub mod types;

use super::auth::KeyId;
use super::error::{parse_json, ApiError};
use super::generation::{Serving, Submission};
use super::validate::{compile_grammar, Endpoint, GenOptions};
use super::AppState;
use crate::manager::ModelHandle;
use crate::text::GenerationDefaults;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use types::GenerationFields;

/// A chat or completions request body: what the shared opening (`open`) reads of it.
pub trait GenerationRequest: serde::de::DeserializeOwned {
    /// What the endpoint checks of its own fields before the model is looked up (chat: tools).
    type Plan;
    fn model(&self) -> &str;
    fn fields(&self) -> &GenerationFields;
    fn plan(&self) -> Result<Self::Plan, ApiError>;
    /// The endpoint and what it adds to the shared fields (chat: the call `tool_choice`
    /// forces, in `model`'s tool format; completions: `echo`).
    fn endpoint(&self, plan: &Self::Plan, model: &ModelHandle) -> Endpoint;
}

/// The opening chat and completions share: parse the body, check the endpoint's own fields,
/// look the model up (loading it if needed), validate the generation fields and compile their
/// grammar. The request, its plan and a `Submission` ready to start.
pub async fn open<R: GenerationRequest>(
    state: &AppState,
    key: Option<axum::Extension<KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(R, R::Plan, Submission), ApiError> {
    let body = body?;
    let req: R = parse_request(&body)?;
    open_request(state, key, req).await
}

/// `open` of a request already parsed (another endpoint's, translated: `/v1/responses`).
pub async fn open_request<R: GenerationRequest>(
    state: &AppState,
    key: Option<axum::Extension<KeyId>>,
    req: R,
) -> Result<(R, R::Plan, Submission), ApiError> {
    let plan = req.plan()?;
    let model = state.models.get_or_load(req.model()).await?;
    if model.model.embedding().is_some() {
        return Err(ApiError::invalid(
            Some("model".into()),
            format!(
                "model {:?} is an embedding model: it serves /v1/embeddings, not text generation",
                req.model()
            ),
        ));
    }
    let fields = with_defaults(req.fields(), model.codec.generation_defaults());
    let opts = GenOptions::from_fields(&fields, &req.endpoint(&plan, &model))?;
    let constraint = compile_grammar(&model, &opts).await?;
    let serving = Serving {
        timeout: state.options.request_timeout,
        log_prompts: state.options.log_prompts,
        charge: key.map(|k| (state.limiter.clone(), k.0 .0)),
    };
    let sub = Submission {
        model,
        opts,
        constraint,
        serving,
    };
    Ok((req, plan, sub))
}

/// The request's generation fields with the model's sampling defaults (generation_config.json)
/// in the places the client left empty (its `max_new_tokens`: `default_max_tokens`).
fn with_defaults<'a>(
    f: &'a GenerationFields,
    d: &GenerationDefaults,
) -> std::borrow::Cow<'a, GenerationFields> {
    if d.is_empty() {
        return std::borrow::Cow::Borrowed(f);
    }
    std::borrow::Cow::Owned(GenerationFields {
        temperature: f.temperature.or(d.temperature),
        top_p: f.top_p.or(d.top_p),
        top_k: f.top_k.or(d.top_k),
        min_p: f.min_p.or(d.min_p),
        repetition_penalty: f.repetition_penalty.or(d.repetition_penalty),
        ..f.clone()
    })
}

/// Parses a request body; errors inside the shared generation fields name their field.
pub fn parse_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_json::<T>(body).map_err(|e| {
        let at_root = e.param.as_deref().is_none_or(|p| p == "." || p.is_empty());
        match (at_root, parse_json::<GenerationFields>(body)) {
            (true, Err(inner)) if inner.param.is_some() => inner,
            _ => e,
        }
    })
}
