//! A streamed response: chat's chunk writer (`ChatChunks`: reasoning split, tool-call parsing)
//! translated into the Responses API's typed events, each with its `sequence_number`:
//! `response.created`, `response.in_progress`, per output item `response.output_item.added`,
//! its deltas (`response.output_text.delta` inside a content part, `response.reasoning_text.delta`,
//! `response.function_call_arguments.delta`), their `.done` events and
//! `response.output_item.done`, then `response.completed` (or `response.incomplete`) with the
//! whole response, which is stored then when asked.

use super::output::{call_item, item_id, message_item, reasoning_item, Shell};
use super::store::{ResponseStore, StoredResponse};
use crate::api::logprobs::TokenLogprob;
use crate::api::openai::chat::ChatChunks;
use crate::api::openai::types::{ChatCompletionChunk, ChatDelta, Usage, WireFinishReason};
use crate::api::sse::ChunkFormat;
use crate::step::FinishReason;
use serde_json::{json, Value};
use std::cell::Cell;
use std::sync::Arc;

/// The output item being written.
enum Open {
    Message {
        id: String,
        text: String,
    },
    Reasoning {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

pub struct ResponseEvents {
    chat: ChatChunks,
    shell: Shell,
    /// Where to keep the finished response, and the conversation it continues.
    store: Option<(Arc<ResponseStore>, Vec<Value>)>,
    seq: Cell<u64>,
    output: Vec<Value>,
    open: Option<Open>,
    incomplete: bool,
    /// The assistant's text and calls, as a chat message (stored for a follow-up).
    text: String,
    calls: Vec<Value>,
}

impl ResponseEvents {
    pub fn new(
        chat: ChatChunks,
        shell: Shell,
        store: Option<(Arc<ResponseStore>, Vec<Value>)>,
    ) -> Self {
        Self {
            chat,
            shell,
            store,
            seq: Cell::new(0),
            output: Vec::new(),
            open: None,
            incomplete: false,
            text: String::new(),
            calls: Vec::new(),
        }
    }

    fn event(&self, kind: &str, mut body: Value) -> Value {
        body["type"] = kind.into();
        body["sequence_number"] = self.seq.get().into();
        self.seq.set(self.seq.get() + 1);
        body
    }

    /// The index the open item has (or gets) in `output`.
    fn index(&self) -> usize {
        self.output.len()
    }

    fn close(&mut self) -> Vec<Value> {
        let Some(open) = self.open.take() else {
            return Vec::new();
        };
        let at = self.index();
        let (done, item) = match &open {
            Open::Message { id, text } => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                let done = vec![
                    self.event(
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": at,
                        "content_index": 0, "text": text, "logprobs": []}),
                    ),
                    self.event(
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": at,
                        "content_index": 0, "part": part}),
                    ),
                ];
                (done, message_item(id, text, "completed"))
            }
            Open::Reasoning { id, text } => {
                let done = vec![self.event(
                    "response.reasoning_text.done",
                    json!({"item_id": id,
                    "output_index": at, "content_index": 0, "text": text}),
                )];
                (done, reasoning_item(id, text, "completed"))
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
            } => {
                let done = vec![self.event(
                    "response.function_call_arguments.done",
                    json!({
                    "item_id": id, "output_index": at, "name": name, "arguments": arguments}),
                )];
                (done, call_item(id, call_id, name, arguments, "completed"))
            }
        };
        let mut out = done;
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": at, "item": item}),
        ));
        self.output.push(item);
        out
    }

    /// Opens `open` (closing the item before it) with its `added` events.
    fn start(&mut self, open: Open) -> Vec<Value> {
        let mut out = self.close();
        let at = self.index();
        let item = match &open {
            Open::Message { id, .. } => {
                let mut m = message_item(id, "", "in_progress");
                m["content"] = json!([]);
                m
            }
            Open::Reasoning { id, .. } => {
                let mut r = reasoning_item(id, "", "in_progress");
                r["content"] = json!([]);
                r
            }
            Open::Call {
                id, call_id, name, ..
            } => call_item(id, call_id, name, "", "in_progress"),
        };
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": at, "item": item}),
        ));
        if let Open::Message { id, .. } = &open {
            out.push(self.event("response.content_part.added", json!({"item_id": id, "output_index": at,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})));
        }
        self.open = Some(open);
        out
    }

    fn delta(&mut self, d: ChatDelta) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(r) = d.reasoning_content.filter(|r| !r.is_empty()) {
            if !matches!(self.open, Some(Open::Reasoning { .. })) {
                out.extend(self.start(Open::Reasoning {
                    id: item_id("rs"),
                    text: String::new(),
                }));
            }
            let at = self.index();
            if let Some(Open::Reasoning { id, text }) = &mut self.open {
                text.push_str(&r);
                let id = id.clone();
                out.push(self.event(
                    "response.reasoning_text.delta",
                    json!({"item_id": id,
                    "output_index": at, "content_index": 0, "delta": r}),
                ));
            }
        }
        if let Some(c) = d.content.filter(|c| !c.is_empty()) {
            if !matches!(self.open, Some(Open::Message { .. })) {
                out.extend(self.start(Open::Message {
                    id: item_id("msg"),
                    text: String::new(),
                }));
            }
            self.text.push_str(&c);
            let at = self.index();
            if let Some(Open::Message { id, text }) = &mut self.open {
                text.push_str(&c);
                let id = id.clone();
                out.push(self.event(
                    "response.output_text.delta",
                    json!({"item_id": id,
                    "output_index": at, "content_index": 0, "delta": c, "logprobs": []}),
                ));
            }
        }
        for call in d.tool_calls.into_iter().flatten() {
            if let Some(call_id) = call.id {
                let name = call.function.name.clone().unwrap_or_default();
                out.extend(self.start(Open::Call {
                    id: item_id("fc"),
                    call_id,
                    name,
                    arguments: String::new(),
                }));
            }
            let at = self.index();
            let piece = call.function.arguments;
            if let (Some(Open::Call { id, arguments, .. }), false) =
                (&mut self.open, piece.is_empty())
            {
                arguments.push_str(&piece);
                let id = id.clone();
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id,
                    "output_index": at, "delta": piece}),
                ));
            }
        }
        out
    }

    fn translate(&mut self, chunks: Vec<ChatCompletionChunk>) -> Vec<Value> {
        let mut out = Vec::new();
        for chunk in chunks {
            for choice in chunk.choices {
                if matches!(choice.finish_reason, Some(WireFinishReason::Length)) {
                    self.incomplete = true;
                }
                out.extend(self.delta(choice.delta));
            }
        }
        out
    }
}

impl ChunkFormat for ResponseEvents {
    type Chunk = Value;

    fn first(&self, _index: usize) -> Option<Value> {
        let response = self.shell.render("in_progress", &[], None, false);
        Some(self.event("response.created", json!({"response": response})))
    }

    fn text(&mut self, index: usize, text: String, logprobs: Vec<TokenLogprob>) -> Vec<Value> {
        let mut out = Vec::new();
        if self.seq.get() == 1 {
            let response = self.shell.render("in_progress", &[], None, false);
            out.push(self.event("response.in_progress", json!({"response": response})));
        }
        let chunks = self.chat.text(index, text, logprobs);
        out.extend(self.translate(chunks));
        out
    }

    fn finish(&mut self, index: usize, reason: &FinishReason) -> Vec<Value> {
        let chunks = self.chat.finish(index, reason);
        let mut out = self.translate(chunks);
        out.extend(self.close());
        for item in &self.output {
            if item["type"] == "function_call" {
                self.calls
                    .push(json!({"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}));
            }
        }
        out
    }

    fn usage(&self, usage: Usage) -> Option<Value> {
        let status = if self.incomplete {
            "incomplete"
        } else {
            "completed"
        };
        let response = self
            .shell
            .render(status, &self.output, Some(&usage), self.incomplete);
        if let Some((store, messages)) = &self.store {
            let mut messages = messages.clone();
            let content = (!self.text.is_empty()).then(|| self.text.clone());
            let mut assistant = json!({"role": "assistant", "content": content});
            if !self.calls.is_empty() {
                assistant["tool_calls"] = Value::Array(self.calls.clone());
            }
            messages.push(assistant);
            let record = StoredResponse {
                response: response.clone(),
                messages,
            };
            store.put(&self.shell.id, record);
        }
        let kind = format!("response.{status}");
        Some(self.event(&kind, json!({"response": response})))
    }
}
