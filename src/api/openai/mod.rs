//! OpenAI-compatible endpoints.

pub mod chat;
pub mod completions;
pub mod ids;
pub mod messages;
pub mod models;
pub mod tokenize;
pub mod tool_choice;
pub mod types;

use super::auth::KeyId;
use super::error::{parse_json, ApiError};
use super::generation::{Serving, Submission};
use super::validate::{compile_grammar, Endpoint, GenOptions};
use super::AppState;
use crate::manager::ModelHandle;
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
    let plan = req.plan()?;
    let model = state.models.get_or_load(req.model()).await?;
    let opts = GenOptions::from_fields(req.fields(), &req.endpoint(&plan, &model))?;
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
