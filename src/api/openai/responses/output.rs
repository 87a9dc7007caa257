//! The response object (OpenAI's `Response`): what the request set, echoed, around the output
//! items (`message`, `function_call`, `reasoning`) and the usage.

use super::request::ResponsesRequest;
use crate::api::openai::ids::{response_id, unix_now};
use crate::api::openai::types::{ChatCompletion, Usage, WireFinishReason};
use serde_json::{json, Value};

/// A response's fixed parts, taken from its request.
#[derive(Debug, Clone)]
pub struct Shell {
    pub id: String,
    pub created_at: u64,
    request: Value,
}

impl Shell {
    pub fn new(req: &ResponsesRequest) -> Self {
        let format = req
            .text
            .as_ref()
            .and_then(|t| t.get("format"))
            .filter(|f| !f.is_null())
            .cloned()
            .unwrap_or(json!({"type": "text"}));
        Self {
            id: response_id("resp").replace('-', "_"),
            created_at: unix_now(),
            request: json!({
                "instructions": req.instructions,
                "max_output_tokens": req.max_output_tokens,
                "model": req.model,
                "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
                "previous_response_id": req.previous_response_id,
                "reasoning": {"effort": null, "summary": null},
                "store": req.store.unwrap_or(true),
                "temperature": req.temperature.unwrap_or(1.0),
                "text": {"format": format},
                "tool_choice": req.tool_choice.clone().unwrap_or(json!("auto")),
                "tools": echo_tools(req.tools.as_deref().unwrap_or_default()),
                "top_p": req.top_p.unwrap_or(1.0),
                "truncation": "disabled",
                "user": req.user,
                "metadata": req.metadata.clone().unwrap_or(json!({})),
                "background": false,
            }),
        }
    }

    /// The response object in `status` with `output` and `usage` (`null` until known).
    pub fn render(
        &self,
        status: &str,
        output: &[Value],
        usage: Option<&Usage>,
        incomplete: bool,
    ) -> Value {
        let mut r = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "output": output,
            "usage": usage.map(wire_usage),
        });
        for (k, v) in self.request.as_object().expect("an object") {
            r[k] = v.clone();
        }
        r
    }
}

/// The request's function tools as the response lists them (`strict` and `parameters` always
/// present, null when not given).
fn echo_tools(tools: &[Value]) -> Vec<Value> {
    tools
        .iter()
        .map(|t| {
            let mut t = t.clone();
            for k in ["strict", "parameters", "description"] {
                if t.get(k).is_none() {
                    t[k] = Value::Null;
                }
            }
            t
        })
        .collect()
}

fn wire_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        // the prompt tokens computed now, whose K/V went into the prefix cache
        "input_tokens_details": {"cached_tokens": u.prompt_tokens_details.cached_tokens,
            "cache_write_tokens": u.prompt_tokens - u.prompt_tokens_details.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    })
}

pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

pub fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status})
}

pub fn reasoning_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [], "status": status,
        "content": [{"type": "reasoning_text", "text": text}]})
}

/// New ids of output items (OpenAI's prefixes).
pub fn item_id(prefix: &str) -> String {
    response_id(prefix).replace('-', "_")
}

/// A collected chat completion as output items, whether it stopped short, and the assistant
/// message a follow-up continues from.
pub fn from_chat(done: &ChatCompletion) -> (Vec<Value>, bool, Value) {
    let choice = &done.choices[0];
    let m = &choice.message;
    let mut output = Vec::new();
    if let Some(r) = &m.reasoning_content {
        output.push(reasoning_item(&item_id("rs"), r, "completed"));
    }
    if let Some(text) = m.content.as_deref().filter(|t| !t.is_empty()) {
        output.push(message_item(&item_id("msg"), text, "completed"));
    }
    let mut calls = Vec::new();
    for c in m.tool_calls.iter().flatten() {
        output.push(call_item(
            &item_id("fc"),
            &c.id,
            &c.function.name,
            &c.function.arguments,
            "completed",
        ));
        calls.push(json!({"id": c.id, "type": "function",
            "function": {"name": c.function.name, "arguments": c.function.arguments}}));
    }
    let incomplete = matches!(choice.finish_reason, Some(WireFinishReason::Length));
    let mut assistant = json!({"role": "assistant", "content": m.content});
    if !calls.is_empty() {
        assistant["tool_calls"] = Value::Array(calls);
    }
    (output, incomplete, assistant)
}
