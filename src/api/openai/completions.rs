//! `POST /v1/completions`: the chat pipeline without a template; `prompt` may be a string, a
//! list of strings, a token list or a list of token lists (one choice per prompt).

use super::types::*;
use super::{parse_request, response_id, unix_now};
use crate::api::error::ApiError;
use crate::api::generate::{compile_grammar, Endpoint, GenOptions, Generation, TokenLogprob};
use crate::api::sse::{stream_response, ChunkFormat};
use crate::api::AppState;
use crate::engine::FinishReason;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

struct CompletionChunks {
    id: String,
    model: String,
    created: u64,
    /// Characters of each choice's text so far (`text_offset`).
    offsets: std::collections::HashMap<usize, usize>,
}

impl CompletionChunks {
    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> serde_json::Value {
        json!(Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }
}

impl ChunkFormat for CompletionChunks {
    fn first(&self, _index: usize) -> Option<serde_json::Value> {
        None
    }

    fn text(
        &mut self,
        index: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    ) -> Vec<serde_json::Value> {
        let offset = self.offsets.entry(index).or_default();
        let logprobs = (!logprobs.is_empty()).then(|| CompletionLogprobs::of(&logprobs, offset));
        vec![self.chunk(
            vec![CompletionChoice {
                index,
                text,
                logprobs,
                finish_reason: None,
            }],
            None,
        )]
    }

    fn finish(&mut self, index: usize, reason: &FinishReason) -> Vec<serde_json::Value> {
        vec![self.chunk(
            vec![CompletionChoice {
                index,
                text: String::new(),
                logprobs: None,
                finish_reason: Some(finish_reason_str(reason)),
            }],
            None,
        )]
    }

    fn usage(&self, usage: Usage) -> serde_json::Value {
        self.chunk(Vec::new(), Some(usage))
    }
}

/// Token ids of every prompt.
async fn tokenize(
    prompt: PromptSpec,
    codec: std::sync::Arc<crate::text::TextCodec>,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let texts = match prompt {
        PromptSpec::Tokens(t) => return Ok(vec![t]),
        PromptSpec::TokenLists(t) => return Ok(t),
        PromptSpec::Text(t) => vec![t],
        PromptSpec::Texts(t) => t,
    };
    tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|t| codec.encode(t, true).map_err(ApiError::from))
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
}

pub async fn completions(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let req: CompletionRequest = parse_request(&body)?;
    let model = state.models.get_or_load(&req.model).await?;
    let mut opts = GenOptions::from_fields(&req.gen, Endpoint::Completions)?;
    opts.timeout = state.options.request_timeout;
    opts.log_prompt = state.options.log_prompts;
    opts.charge = key.map(|k| (state.limiter.clone(), k.0 .0));
    compile_grammar(&model, &mut opts).await?;
    if req.echo {
        return Err(ApiError::invalid(
            Some("echo".into()),
            "echo is not supported yet",
        ));
    }
    let prompts = tokenize(req.prompt, model.codec.clone()).await?;
    if prompts.is_empty() {
        return Err(ApiError::invalid(
            Some("prompt".into()),
            "prompt must not be an empty list",
        ));
    }
    let most = state.options.max_prompts_per_request;
    if prompts.len() > most {
        return Err(ApiError::invalid(
            Some("prompt".into()),
            format!(
                "{} prompts in one request; this server takes at most {most} (--max-prompts-per-request)",
                prompts.len()
            ),
        ));
    }
    let vocab = model.codec.vocab_size() as u32;
    if prompts.iter().flatten().any(|&t| t >= vocab) {
        return Err(ApiError::invalid(
            Some("prompt".into()),
            format!("token ids must be below the vocabulary size {vocab}"),
        ));
    }
    // choice index = prompt index × n + choice
    let mut gens = Vec::with_capacity(prompts.len() * opts.n);
    for ids in prompts {
        gens.extend(Generation::start_choices(&model, ids, &opts)?);
    }
    let meta = CompletionChunks {
        id: response_id("cmpl"),
        model: model.id.clone(),
        created: unix_now(),
        offsets: Default::default(),
    };
    if opts.stream {
        return Ok(stream_response(gens, meta, opts.include_usage));
    }
    let results = futures::future::join_all(gens.into_iter().map(Generation::collect)).await;
    let mut choices = Vec::with_capacity(results.len());
    let mut usage = Usage::default();
    for (index, r) in results.into_iter().enumerate() {
        let done = r?;
        usage = usage.plus(done.usage);
        choices.push(CompletionChoice {
            index,
            text: done.text,
            logprobs: opts
                .sampling
                .logprobs
                .map(|_| CompletionLogprobs::of(&done.logprobs, &mut 0)),
            finish_reason: Some(finish_reason_str(&done.reason)),
        });
    }
    Ok(Json(Completion {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage: Some(usage),
    })
    .into_response())
}
