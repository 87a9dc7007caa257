//! `POST /v1/chat/completions`: validate → chat template → tokenize → submit → stream or collect.

use super::types::*;
use super::{parse_request, response_id, unix_now};
use crate::api::error::ApiError;
use crate::api::generate::{compile_grammar, Endpoint, GenOptions, Generation, TokenLogprob};
use crate::api::sse::{stream_response, ChunkFormat};
use crate::api::AppState;
use crate::engine::FinishReason;
use crate::text::ChatMessage;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];

pub(crate) fn to_chat_messages(msgs: &[ChatMessageIn]) -> Result<Vec<ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid(
            Some("messages".into()),
            "messages must not be empty",
        ));
    }
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(ApiError::invalid(
                    Some(format!("messages[{i}].role")),
                    format!("unknown role {:?}; expected one of {ROLES:?}", m.role),
                ));
            }
            let content = match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut s = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            _ => {
                                return Err(ApiError::invalid(
                                    Some(format!("messages[{i}].content[{j}]")),
                                    format!(
                                        "content part type {:?} is not supported (text only)",
                                        p.kind
                                    ),
                                ))
                            }
                        }
                    }
                    s
                }
            };
            Ok(ChatMessage {
                role: m.role.clone(),
                content,
            })
        })
        .collect()
}

struct ChatChunks {
    id: String,
    model: String,
    created: u64,
}

impl ChatChunks {
    fn chunk(
        &self,
        index: usize,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish: Option<&'static str>,
    ) -> serde_json::Value {
        json!(ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChatChunkChoice {
                index,
                delta,
                logprobs,
                finish_reason: finish,
            }],
            usage: None,
        })
    }
}

impl ChunkFormat for ChatChunks {
    fn first(&self, index: usize) -> Option<serde_json::Value> {
        let role = ChatDelta {
            role: Some("assistant"),
            content: Some(String::new()),
        };
        Some(self.chunk(index, role, None, None))
    }

    fn text(
        &mut self,
        index: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    ) -> serde_json::Value {
        let logprobs = (!logprobs.is_empty()).then(|| ChatLogprobs::of(&logprobs));
        let delta = ChatDelta {
            role: None,
            content: Some(text),
        };
        self.chunk(index, delta, logprobs, None)
    }

    fn finish(&self, index: usize, reason: &FinishReason) -> serde_json::Value {
        let reason = Some(finish_reason_str(reason));
        self.chunk(index, ChatDelta::default(), None, reason)
    }

    fn usage(&self, usage: Usage) -> serde_json::Value {
        json!(ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
        })
    }
}

pub async fn chat_completions(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let req: ChatCompletionRequest = parse_request(&body)?;
    let model = state.models.get_or_load(&req.model).await?;
    let mut opts = GenOptions::from_fields(&req.gen, Endpoint::Chat)?;
    opts.timeout = state.options.request_timeout;
    opts.log_prompt = state.options.log_prompts;
    opts.charge = key.map(|k| (state.limiter.clone(), k.0 .0));
    compile_grammar(&model, &mut opts).await?;
    let messages = to_chat_messages(&req.messages)?;
    let codec = model.codec.clone();
    let ids = tokio::task::spawn_blocking(move || {
        let prompt = codec.apply_chat_template(&messages)?;
        codec.encode(&prompt, false)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    let gens = Generation::start_choices(&model, ids, &opts)?;
    let meta = ChatChunks {
        id: response_id("chatcmpl"),
        model: model.id.clone(),
        created: unix_now(),
    };
    if opts.stream {
        return Ok(stream_response(gens, meta, opts.include_usage));
    }
    let wants_logprobs = opts.sampling.logprobs.is_some();
    let results = futures::future::join_all(gens.into_iter().map(Generation::collect)).await;
    let mut choices = Vec::with_capacity(results.len());
    let mut usage = Usage::default();
    for (index, done) in results.into_iter().enumerate() {
        let done = done?;
        usage = usage.plus(done.usage);
        choices.push(ChatChoice {
            index,
            message: ChatMessageOut {
                role: "assistant",
                content: done.text,
                refusal: None,
            },
            logprobs: wants_logprobs.then(|| ChatLogprobs::of(&done.logprobs)),
            finish_reason: Some(finish_reason_str(&done.reason)),
        });
    }
    Ok(Json(ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage,
    })
    .into_response())
}
