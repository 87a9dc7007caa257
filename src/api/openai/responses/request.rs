//! A `/v1/responses` request and its translation into the chat pipeline: `input` items and
//! `instructions` become chat messages (after a stored `previous_response_id` conversation),
//! `tools`, `tool_choice`, `text.format`, `max_output_tokens`, `temperature` and `top_p` the chat
//! fields that do the same. Anything that would change the output and that weir does not do is
//! a 400 naming it.

use crate::api::error::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Input,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    pub text: Option<Value>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub stream: bool,
    /// Keep the response for `GET` and `previous_response_id` (OpenAI's default: true).
    pub store: Option<bool>,
    pub previous_response_id: Option<String>,
    pub metadata: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub user: Option<String>,
    pub background: Option<bool>,
    pub reasoning: Option<Value>,
    pub truncation: Option<String>,
    pub include: Option<Vec<String>>,
    pub top_logprobs: Option<i64>,
    /// vLLM's extension, as on chat.
    pub priority: Option<i64>,
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param.to_string()), message)
}

impl ResponsesRequest {
    /// Refuses what weir does not do (rather than answering without it).
    pub fn check_supported(&self) -> Result<(), ApiError> {
        if self.background == Some(true) && (self.stream || self.store == Some(false)) {
            return Err(bad(
                "background",
                "a background response is stored and polled: it needs store true and stream false",
            ));
        }
        if self.truncation.as_deref().is_some_and(|t| t != "disabled") {
            return Err(bad(
                "truncation",
                "only truncation \"disabled\" is supported",
            ));
        }
        if let Some(i) = self.include.iter().flatten().next() {
            return Err(bad("include", format!("include {i:?} is not supported")));
        }
        if self.top_logprobs.is_some_and(|n| n != 0) {
            return Err(bad(
                "top_logprobs",
                "logprobs are not supported on /v1/responses yet",
            ));
        }
        let effort = self.reasoning.as_ref().and_then(|r| r.get("effort"));
        if effort.is_some_and(|e| !e.is_null()) {
            return Err(bad(
                "reasoning.effort",
                "reasoning effort is not supported (a reasoning model thinks as its template says)",
            ));
        }
        Ok(())
    }

    /// The chat messages of `input` (with `instructions` first as a system message), after
    /// `history` (a previous response's conversation).
    pub fn messages(&self, history: &[Value]) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
        let mut own = Vec::new();
        match &self.input {
            Input::Text(t) => own.push(json!({"role": "user", "content": t})),
            Input::Items(items) => {
                for (i, item) in items.iter().enumerate() {
                    push_item(&mut own, item, &format!("input[{i}]"))?;
                }
            }
        }
        let mut all = Vec::new();
        if let Some(instructions) = &self.instructions {
            all.push(json!({"role": "system", "content": instructions}));
        }
        all.extend(history.iter().cloned());
        all.extend(own.iter().cloned());
        // `own`: what this request adds to the conversation (stored for a follow-up)
        Ok((all, own))
    }

    /// The chat request body that computes this response.
    pub fn chat_body(&self, messages: Vec<Value>) -> Result<Value, ApiError> {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": self.stream,
            "stream_options": if self.stream { json!({"include_usage": true}) } else { Value::Null },
        });
        let fields = [
            (
                "max_completion_tokens",
                self.max_output_tokens.map(Value::from),
            ),
            ("temperature", self.temperature.map(Value::from)),
            ("top_p", self.top_p.map(Value::from)),
            ("user", self.user.clone().map(Value::from)),
            ("priority", self.priority.map(Value::from)),
            (
                "tools",
                self.tools.as_ref().map(|t| chat_tools(t)).transpose()?,
            ),
            (
                "tool_choice",
                self.tool_choice
                    .as_ref()
                    .map(chat_tool_choice)
                    .transpose()?,
            ),
            (
                "response_format",
                self.text
                    .as_ref()
                    .map(response_format)
                    .transpose()?
                    .flatten(),
            ),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                body[k] = v;
            }
        }
        Ok(body)
    }
}

/// One input item as chat messages: a message, a function call (merged into the assistant
/// message before it when that one holds calls) or a call's output.
fn push_item(out: &mut Vec<Value>, item: &Value, at: &str) -> Result<(), ApiError> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => {
            let role = match item.get("role").and_then(Value::as_str) {
                Some("developer") | Some("system") => "system",
                Some(r @ ("user" | "assistant")) => r,
                other => return Err(bad(&format!("{at}.role"), format!("role {other:?}"))),
            };
            let content = message_text(item.get("content"), at)?;
            out.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let field = |k: &str| {
                item.get(k)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&format!("{at}.{k}"), format!("{k} is required")))
            };
            let call = json!({"id": field("call_id")?, "type": "function",
                "function": {"name": field("name")?, "arguments": field("arguments")?}});
            match out.last_mut() {
                Some(m) if m["role"] == "assistant" && m["tool_calls"].is_array() => {
                    m["tool_calls"].as_array_mut().expect("checked").push(call)
                }
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let call_id = item.get("call_id").and_then(Value::as_str);
            let call_id =
                call_id.ok_or_else(|| bad(&format!("{at}.call_id"), "call_id is required"))?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => message_text(Some(other), at)?,
                None => return Err(bad(&format!("{at}.output"), "output is required")),
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // the model's earlier reasoning is not fed back (chat templates drop it too)
        "reasoning" => {}
        other => {
            return Err(bad(
                &format!("{at}.type"),
                format!("input item type {other:?} is not supported"),
            ))
        }
    }
    Ok(())
}

/// A message's text: a string, or its `input_text` / `output_text` parts joined.
fn message_text(content: Option<&Value>, at: &str) -> Result<String, ApiError> {
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("input_text" | "output_text" | "text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(bad(
                            &format!("{at}.content[{j}].type"),
                            format!("content part {kind:?} is not supported (text only)"),
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(bad(
            &format!("{at}.content"),
            "content is a string or a list of text parts",
        )),
    }
}

/// Responses' flat function tools as chat's nested ones.
fn chat_tools(tools: &[Value]) -> Result<Value, ApiError> {
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &format!("tools[{i}].type"),
                "only function tools are supported",
            ));
        }
        let mut f = json!({"name": t.get("name").cloned().unwrap_or(Value::Null)});
        for k in ["description", "parameters"] {
            if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                f[k] = v.clone();
            }
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Value::Array(out))
}

fn chat_tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(_) => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => Ok(
            json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}}),
        ),
        _ => Err(bad(
            "tool_choice",
            "tool_choice is \"auto\", \"none\", \"required\" or a function",
        )),
    }
}

/// `text.format` as chat's `response_format` (`None` for plain text).
fn response_format(text: &Value) -> Result<Option<Value>, ApiError> {
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema =
                json!({"name": format.get("name").cloned().unwrap_or("response".into())});
            for k in ["schema", "strict", "description"] {
                if let Some(v) = format.get(k) {
                    schema[k] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        other => Err(bad(
            "text.format.type",
            format!("text.format type {other:?}"),
        )),
    }
}
