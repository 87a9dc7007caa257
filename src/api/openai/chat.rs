//! `POST /v1/chat/completions`: validate → chat template → tokenize → submit → stream or collect.

use super::ids::{response_id, unix_now};
use super::messages::to_chat_messages;
use super::tool_choice::{tool_plan, ToolPlan};
use super::types::*;
use super::{open, GenerationRequest};
use crate::api::error::ApiError;
use crate::api::generation::Generation;
use crate::api::logprobs::{vllm_prompt_logprobs, TokenLogprob};
use crate::api::sse::{stream_response, ChunkFormat};
use crate::api::validate::Endpoint;
use crate::api::AppState;
use crate::manager::ModelHandle;
use crate::step::FinishReason;
use crate::text::reasoning::{Part, ReasoningParser, ReasoningStream, Split};
use crate::text::tools::{Parsed, Piece, ToolFormat, ToolStream};
use crate::text::TemplateKwargs;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

impl GenerationRequest for ChatCompletionRequest {
    type Plan = Option<ToolPlan>;

    fn model(&self) -> &str {
        &self.model
    }

    fn fields(&self) -> &GenerationFields {
        &self.gen
    }

    fn plan(&self) -> Result<Self::Plan, ApiError> {
        tool_plan(self.tools.clone(), self.tool_choice.clone())
    }

    fn endpoint(&self, plan: &Self::Plan, model: &ModelHandle) -> Endpoint {
        let forced = plan.as_ref().and_then(|p| p.forced.as_ref());
        Endpoint::Chat {
            forced_call: forced.map(|calls| {
                let calls: Vec<&Value> = calls.iter().collect();
                model.codec.tool_format().forced_call(&calls)
            }),
        }
    }
}

pub struct ChatChunks {
    id: String,
    model: String,
    created: u64,
    /// Content chunks carry `"usage": null`, and a usage chunk ends the stream.
    include_usage: bool,
    /// With tools: each choice's splitter of text and calls.
    tools: Option<(ToolFormat, std::collections::HashMap<usize, ToolStream>)>,
    /// With `--reasoning-parser`: each choice's splitter of reasoning and answer (before tools).
    reasoning: Option<(
        ReasoningParser,
        std::collections::HashMap<usize, ReasoningStream>,
    )>,
    codec: std::sync::Arc<crate::text::TextCodec>,
}

impl ChatChunks {
    fn chunk(
        &self,
        index: usize,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish: Option<WireFinishReason>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
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
            usage: self.include_usage.then_some(None),
            prompt_logprobs: None,
        }
    }
}

impl ChatChunks {
    /// Choice `index`'s splitter of text and tool calls (with tools).
    fn tool_stream(&mut self, index: usize) -> Option<&mut ToolStream> {
        let (format, streams) = self.tools.as_mut()?;
        Some(
            streams
                .entry(index)
                .or_insert_with(|| ToolStream::new(*format)),
        )
    }

    /// Choice `index`'s splitter of reasoning and answer (with a reasoning parser).
    fn reasoning_stream(&mut self, index: usize) -> Option<&mut ReasoningStream> {
        let (parser, streams) = self.reasoning.as_mut()?;
        Some(
            streams
                .entry(index)
                .or_insert_with(|| ReasoningStream::new(*parser)),
        )
    }

    /// The chunks of reasoning and answer `parts`: reasoning as `reasoning_content`, the answer
    /// through the tool splitter (with tools).
    fn parts(&mut self, index: usize, parts: Vec<Part>) -> Vec<ChatCompletionChunk> {
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Reasoning(r) => {
                    let delta = ChatDelta {
                        reasoning_content: Some(r),
                        ..ChatDelta::default()
                    };
                    out.push(self.chunk(index, delta, None, None));
                }
                Part::Content(text) => {
                    let pieces = match self.tool_stream(index) {
                        Some(stream) => stream.push(&text),
                        None => vec![Piece::Text(text)],
                    };
                    out.extend(self.pieces(index, pieces));
                }
            }
        }
        out
    }

    /// One chunk per piece of streamed output (empty text is dropped).
    fn pieces(&self, index: usize, pieces: Vec<Piece>) -> Vec<ChatCompletionChunk> {
        pieces
            .into_iter()
            .filter_map(|p| {
                let delta = match p {
                    Piece::Text(t) if t.is_empty() => return None,
                    Piece::Text(t) => ChatDelta {
                        content: Some(t),
                        ..ChatDelta::default()
                    },
                    Piece::Call { index: i, name } => ChatDelta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: i,
                            id: Some(response_id("call")),
                            kind: Some("function"),
                            function: FunctionDelta {
                                name: Some(name),
                                arguments: String::new(),
                            },
                        }]),
                        ..ChatDelta::default()
                    },
                    Piece::Args { index: i, text } => ChatDelta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: i,
                            id: None,
                            kind: None,
                            function: FunctionDelta {
                                name: None,
                                arguments: text,
                            },
                        }]),
                        ..ChatDelta::default()
                    },
                };
                Some(self.chunk(index, delta, None, None))
            })
            .collect()
    }
}

impl ChunkFormat for ChatChunks {
    type Chunk = ChatCompletionChunk;

    fn first(&self, index: usize) -> Option<ChatCompletionChunk> {
        let role = ChatDelta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..ChatDelta::default()
        };
        Some(self.chunk(index, role, None, None))
    }

    fn text(
        &mut self,
        index: usize,
        text: String,
        logprobs: Vec<TokenLogprob>,
    ) -> Vec<ChatCompletionChunk> {
        let parts = match self.reasoning_stream(index) {
            Some(stream) => stream.push(&text),
            None => vec![Part::Content(text)],
        };
        let mut out = self.parts(index, parts);
        if !logprobs.is_empty() {
            // the tokens' logprobs ride on the last chunk of their text (or one of their own)
            let lp = ChatLogprobs::of(&logprobs);
            match out.last_mut() {
                Some(c) => c.choices[0].logprobs = Some(lp),
                None => {
                    let delta = ChatDelta {
                        content: Some(String::new()),
                        ..ChatDelta::default()
                    };
                    out.push(self.chunk(index, delta, Some(lp), None));
                }
            }
        }
        out
    }

    /// vLLM's `prompt_logprobs`, on a chunk of their own (first choice only: every choice
    /// has the same prompt).
    fn prompt(
        &mut self,
        index: usize,
        lps: Vec<crate::step::TokenLogprobs>,
    ) -> Vec<ChatCompletionChunk> {
        if index != 0 {
            return Vec::new();
        }
        let mut c = self.chunk(index, ChatDelta::default(), None, None);
        c.prompt_logprobs = Some(vllm_prompt_logprobs(&self.codec, &lps));
        vec![c]
    }

    fn finish(&mut self, index: usize, reason: &FinishReason) -> Vec<ChatCompletionChunk> {
        let held = self
            .reasoning_stream(index)
            .map(ReasoningStream::finish)
            .unwrap_or_default();
        let mut out = self.parts(index, held);
        let mut calls = false;
        if let Some(stream) = self.tool_stream(index) {
            let (pieces, any) = stream.finish();
            calls = any;
            out.extend(self.pieces(index, pieces));
        }
        let reason = Some(WireFinishReason::of(reason, calls));
        out.push(self.chunk(index, ChatDelta::default(), None, reason));
        out
    }

    fn usage(&self, usage: Usage) -> Option<ChatCompletionChunk> {
        self.include_usage.then(|| ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(Some(usage)),
            prompt_logprobs: None,
        })
    }
}

pub async fn chat_completions(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, plan, sub) = open::<ChatCompletionRequest>(&state, key, body).await?;
    Ok(match run_chat(req, plan, sub).await? {
        ChatRun::Done(completion) => Json(completion).into_response(),
        ChatRun::Stream(gens, chunks) => stream_response(gens, chunks),
    })
}

/// A chat request under way: answered whole, or its generations and their chunk writer.
pub enum ChatRun {
    Done(ChatCompletion),
    Stream(Vec<Generation>, ChatChunks),
}

/// Renders, tokenizes and starts an opened chat request; collects it unless it streams.
pub async fn run_chat(
    req: ChatCompletionRequest,
    plan: Option<ToolPlan>,
    mut sub: crate::api::generation::Submission,
) -> Result<ChatRun, ApiError> {
    let model = &sub.model;
    let format = model.codec.tool_format();
    let messages = to_chat_messages(&req.messages)?;
    let codec = model.codec.clone();
    let tools = plan.map(|p| p.tools);
    let offered = tools.is_some();
    let kwargs = template_kwargs(req.chat_template_kwargs)?;
    let ids = tokio::task::spawn_blocking(move || {
        let prompt = codec.apply_chat_template_with(&messages, tools.as_deref(), &kwargs)?;
        codec.encode(&prompt, false)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    // with a reasoning parser, a grammar (structured output, a forced call) holds after the
    // think block
    if let Some(p) = sub.model.codec.reasoning_parser() {
        let start = p.grammar_start(&sub.model.codec, &ids);
        sub.constraint = sub.constraint.take().map(|c| c.after_token(start));
    }
    let gens = Generation::start_choices(&sub, ids)?;
    let opts = &sub.opts;
    let meta = ChatChunks {
        id: response_id("chatcmpl"),
        model: model.served_id().to_string(),
        created: unix_now(),
        include_usage: opts.include_usage,
        tools: offered.then(|| (format, Default::default())),
        reasoning: model
            .codec
            .reasoning_parser()
            .map(|p| (p, Default::default())),
        codec: model.codec.clone(),
    };
    if opts.stream {
        return Ok(ChatRun::Stream(gens, meta));
    }
    let wants_logprobs = opts.sampling.logprobs.is_some();
    let results = futures::future::join_all(gens.into_iter().map(Generation::collect)).await;
    let mut choices = Vec::with_capacity(results.len());
    let mut usage = Usage::default();
    let mut prompt_logprobs = None;
    for (index, done) in results.into_iter().enumerate() {
        let done = done?;
        if index == 0 && opts.report_prompt_logprobs {
            prompt_logprobs = Some(vllm_prompt_logprobs(&model.codec, &done.prompt_logprobs));
        }
        usage = usage.plus(done.usage);
        let split = match model.codec.reasoning_parser() {
            Some(p) => p.split(&done.text),
            None => Split {
                reasoning: None,
                content: Some(done.text),
            },
        };
        let parsed = if offered {
            format.parse(split.content.as_deref().unwrap_or_default())
        } else {
            Parsed {
                content: split.content,
                calls: Vec::new(),
            }
        };
        let calls = !parsed.calls.is_empty();
        let only_reasoning = split.reasoning.is_some() && parsed.content.is_none();
        choices.push(ChatChoice {
            index,
            message: ChatMessageOut {
                role: "assistant",
                content: if calls || only_reasoning {
                    parsed.content
                } else {
                    Some(parsed.content.unwrap_or_default())
                },
                reasoning_content: split.reasoning,
                tool_calls: calls.then(|| parsed.calls.iter().map(ToolCallOut::new).collect()),
                refusal: None,
            },
            logprobs: wants_logprobs.then(|| ChatLogprobs::of(&done.logprobs)),
            finish_reason: Some(WireFinishReason::of(&done.reason, calls)),
        });
    }
    Ok(ChatRun::Done(ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage,
        prompt_logprobs,
    }))
}

/// `chat_template_kwargs`, which may not replace the messages or tools the request renders.
pub(super) fn template_kwargs(kwargs: Option<TemplateKwargs>) -> Result<TemplateKwargs, ApiError> {
    let kwargs = kwargs.unwrap_or_default();
    if let Some(k) = ["messages", "tools"]
        .iter()
        .find(|k| kwargs.contains_key(**k))
    {
        return Err(ApiError::invalid(
            Some("chat_template_kwargs".to_string()),
            format!("chat_template_kwargs may not set {k:?}: send it as the request's own field"),
        ));
    }
    Ok(kwargs)
}
