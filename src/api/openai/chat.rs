//! `POST /v1/chat/completions`: validate → chat template → tokenize → submit → stream or collect.

use super::types::*;
use super::{parse_request, response_id, unix_now};
use crate::api::error::ApiError;
use crate::api::generate::{
    compile_grammar, vllm_prompt_logprobs, Endpoint, GenOptions, Generation, TokenLogprob,
};
use crate::api::sse::{stream_response, ChunkFormat};
use crate::api::AppState;
use crate::engine::FinishReason;
use crate::text::tools::{Parsed, Piece, ToolFormat, ToolStream};
use crate::text::ChatMessage;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

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
                tool_calls: m.tool_calls.as_ref().map(|calls| template_calls(calls)),
                tool_call_id: m.tool_call_id.clone(),
                name: m.name.clone(),
            })
        })
        .collect()
}

/// An assistant message's calls as chat templates expect them: `function.arguments` parsed
/// into an object when it is JSON text (as vLLM hands them to templates).
fn template_calls(calls: &[Value]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if let Some(args) = c["function"]["arguments"].as_str() {
                    if let Ok(v) = serde_json::from_str::<Value>(args) {
                        c["function"]["arguments"] = v;
                    }
                }
                c
            })
            .collect(),
    )
}

/// The request's tools as the template and parser see them: `None` when there are none or
/// `tool_choice` is "none"; with the tools a call is forced to (all for "required", one named).
struct ToolPlan {
    tools: Vec<Value>,
    forced: Option<Vec<Value>>,
}

fn tool_plan(tools: Option<Value>, choice: Option<Value>) -> Result<Option<ToolPlan>, ApiError> {
    let bad = |param: &str, msg: String| ApiError::invalid(Some(param.to_string()), msg);
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(bad("tools", "tools must be a list".into())),
    };
    for (i, t) in tools.iter().enumerate() {
        let name = t["function"]["name"].as_str().unwrap_or("");
        if t["type"] != "function" || name.is_empty() {
            return Err(bad(
                &format!("tools[{i}]"),
                "each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}".into(),
            ));
        }
        let params = &t["function"]["parameters"];
        if !(params.is_null() || params.is_object()) {
            return Err(bad(
                &format!("tools[{i}].function.parameters"),
                "parameters must be a JSON schema object".into(),
            ));
        }
    }
    let choice = choice.filter(|c| !c.is_null());
    if tools.is_empty() {
        return match choice {
            None => Ok(None),
            Some(c) if c == "none" => Ok(None),
            Some(_) => Err(bad("tool_choice", "tool_choice needs tools".into())),
        };
    }
    let forced = match &choice {
        None => None,
        Some(c) if c == "auto" => None,
        Some(c) if c == "none" => return Ok(None),
        Some(c) if c == "required" => Some(tools.clone()),
        Some(c) if c["type"] == "function" => {
            let name = c["function"]["name"].as_str().unwrap_or("");
            let named: Vec<Value> = tools
                .iter()
                .filter(|t| t["function"]["name"] == name)
                .cloned()
                .collect();
            if named.is_empty() {
                return Err(bad(
                    "tool_choice",
                    format!("tool_choice names {name:?}, which is not among the tools"),
                ));
            }
            Some(named)
        }
        Some(c) => {
            return Err(bad(
                "tool_choice",
                format!("tool_choice must be none, auto, required or a named function, got {c}"),
            ))
        }
    };
    Ok(Some(ToolPlan { tools, forced }))
}

/// The finish reason on the wire: `tool_calls` when the answer is calls.
fn chat_finish(reason: &FinishReason, calls: bool) -> &'static str {
    match finish_reason_str(reason) {
        "stop" if calls => "tool_calls",
        r => r,
    }
}

struct ChatChunks {
    id: String,
    model: String,
    created: u64,
    /// With tools: each choice's splitter of text and calls.
    tools: Option<(ToolFormat, std::collections::HashMap<usize, ToolStream>)>,
    codec: std::sync::Arc<crate::text::TextCodec>,
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

    /// One chunk per piece of streamed output (empty text is dropped).
    fn pieces(&self, index: usize, pieces: Vec<Piece>) -> Vec<serde_json::Value> {
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
    fn first(&self, index: usize) -> Option<serde_json::Value> {
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
    ) -> Vec<serde_json::Value> {
        let pieces = match self.tool_stream(index) {
            Some(stream) => stream.push(&text),
            None => vec![Piece::Text(text)],
        };
        let mut out = self.pieces(index, pieces);
        if !logprobs.is_empty() {
            // the tokens' logprobs ride on the last chunk of their text (or one of their own)
            let lp = json!(ChatLogprobs::of(&logprobs));
            match out.last_mut() {
                Some(c) => c["choices"][0]["logprobs"] = lp,
                None => {
                    let delta = ChatDelta {
                        content: Some(String::new()),
                        ..ChatDelta::default()
                    };
                    out.push(self.chunk(index, delta, Some(ChatLogprobs::of(&logprobs)), None));
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
        lps: Vec<crate::engine::TokenLogprobs>,
    ) -> Vec<serde_json::Value> {
        if index != 0 {
            return Vec::new();
        }
        let mut c = self.chunk(index, ChatDelta::default(), None, None);
        c["prompt_logprobs"] = vllm_prompt_logprobs(&self.codec, &lps);
        vec![c]
    }

    fn finish(&mut self, index: usize, reason: &FinishReason) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut calls = false;
        if let Some(stream) = self.tool_stream(index) {
            let (pieces, any) = stream.finish();
            calls = any;
            out = self.pieces(index, pieces);
        }
        let reason = Some(chat_finish(reason, calls));
        out.push(self.chunk(index, ChatDelta::default(), None, reason));
        out
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
    let plan = tool_plan(req.tools.clone(), req.tool_choice.clone())?;
    let model = state.models.get_or_load(&req.model).await?;
    let mut opts = GenOptions::from_fields(&req.gen, Endpoint::Chat)?;
    opts.timeout = state.options.request_timeout;
    opts.log_prompt = state.options.log_prompts;
    opts.charge = key.map(|k| (state.limiter.clone(), k.0 .0));
    let format = model.codec.tool_format();
    if let Some(forced) = plan.as_ref().and_then(|p| p.forced.as_ref()) {
        if opts.grammar.is_some() {
            return Err(ApiError::invalid(
                Some("tool_choice".into()),
                "a forced tool call cannot be combined with response_format or guided_*",
            ));
        }
        let forced: Vec<&Value> = forced.iter().collect();
        opts.grammar = Some((format.forced_call(&forced), "tool_choice"));
    }
    compile_grammar(&model, &mut opts).await?;
    let messages = to_chat_messages(&req.messages)?;
    let codec = model.codec.clone();
    let tools = plan.map(|p| p.tools);
    let offered = tools.is_some();
    let ids = tokio::task::spawn_blocking(move || {
        let prompt = codec.apply_chat_template_with_tools(&messages, tools.as_deref())?;
        codec.encode(&prompt, false)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    let gens = Generation::start_choices(&model, ids, &opts)?;
    let meta = ChatChunks {
        id: response_id("chatcmpl"),
        model: model.id.clone(),
        created: unix_now(),
        tools: offered.then(|| (format, Default::default())),
        codec: model.codec.clone(),
    };
    if opts.stream {
        return Ok(stream_response(gens, meta, opts.include_usage));
    }
    let wants_logprobs = opts.sampling.logprobs.is_some();
    let results = futures::future::join_all(gens.into_iter().map(Generation::collect)).await;
    let mut choices = Vec::with_capacity(results.len());
    let mut usage = Usage::default();
    let mut prompt_logprobs = None;
    for (index, done) in results.into_iter().enumerate() {
        let done = done?;
        if index == 0 && opts.sampling.prompt_logprobs.is_some() {
            prompt_logprobs = Some(vllm_prompt_logprobs(&model.codec, &done.prompt_logprobs));
        }
        usage = usage.plus(done.usage);
        let parsed = if offered {
            format.parse(&done.text)
        } else {
            Parsed {
                content: Some(done.text),
                calls: Vec::new(),
            }
        };
        let calls = !parsed.calls.is_empty();
        choices.push(ChatChoice {
            index,
            message: ChatMessageOut {
                role: "assistant",
                content: if calls {
                    parsed.content
                } else {
                    Some(parsed.content.unwrap_or_default())
                },
                tool_calls: calls.then(|| parsed.calls.iter().map(ToolCallOut::new).collect()),
                refusal: None,
            },
            logprobs: wants_logprobs.then(|| ChatLogprobs::of(&done.logprobs)),
            finish_reason: Some(chat_finish(&done.reason, calls)),
        });
    }
    Ok(Json(ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage,
        prompt_logprobs,
    })
    .into_response())
}
