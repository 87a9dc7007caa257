//! All OpenAI wire types (requests, responses, stream chunks, usage) and the map from
//! `FinishReason` to `finish_reason` (`WireFinishReason`). The only serde wire code in weir.

use crate::step::FinishReason;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

impl StopSpec {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopSpec::One(s) => vec![s],
            StopSpec::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling and stopping fields shared by chat and completions (OpenAI + vLLM extensions).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationFields {
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub seed: Option<u64>,
    pub stop: Option<StopSpec>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub n: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub min_tokens: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// vLLM extension: > 1 discourages tokens of the prompt and output so far.
    pub repetition_penalty: Option<f32>,
    /// vLLM extension: drop tokens less likely than `min_p` × the most likely one.
    pub min_p: Option<f32>,
    /// Token id (as a string) → bias added to its logit, -100..100.
    pub logit_bias: Option<std::collections::HashMap<String, f32>>,
    /// Chat: `true`/`false`; completions: how many alternatives per token (0-20).
    pub logprobs: Option<serde_json::Value>,
    /// Chat: alternatives per token (0-20) with `logprobs: true`.
    pub top_logprobs: Option<i64>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": ...}}`.
    pub response_format: Option<serde_json::Value>,
    /// vLLM extensions: the output matches this JSON schema / regex / one of these strings /
    /// Lark grammar.
    pub guided_json: Option<serde_json::Value>,
    pub guided_regex: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    pub guided_grammar: Option<String>,
    /// vLLM extension: each prompt token's logprob (from the second) and this many
    /// alternatives (0-20), as `prompt_logprobs` in the response.
    pub prompt_logprobs: Option<i64>,
    /// vLLM extension: logprobs name tokens `token_id:ID` instead of their text.
    pub return_tokens_as_token_ids: Option<bool>,
    pub user: Option<String>,
    /// vLLM extension: lower runs first (needs `--scheduling-policy priority`).
    pub priority: Option<i64>,
    /// vLLM extension: requests share prefix-cache blocks only with the same salt.
    pub cache_salt: Option<String>,
    /// vLLM extension: keep the matched stop string in the text.
    pub include_stop_str_in_output: Option<bool>,
    /// vLLM extension: drop special tokens from the text (default true).
    pub skip_special_tokens: Option<bool>,
    /// vLLM extension: only the default (true) is supported.
    pub spaces_between_special_tokens: Option<bool>,
    /// Fields that change the output and are not implemented yet: a request that sets one to
    /// anything but its neutral value is a 400 naming it, never silently served without it.
    #[serde(flatten)]
    pub unsupported: UnsupportedFields,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
}

/// See `GenerationFields::unsupported`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UnsupportedFields {
    pub functions: Option<serde_json::Value>,
    pub best_of: Option<serde_json::Value>,
    pub suffix: Option<serde_json::Value>,
}

impl UnsupportedFields {
    /// The first field set to something other than its neutral value.
    pub fn first_set(&self) -> Option<&'static str> {
        use serde_json::Value as V;
        let neutral = |v: &Option<V>, ok: &dyn Fn(&V) -> bool| {
            v.as_ref().is_none_or(|v| v.is_null() || ok(v))
        };
        let empty = |v: &V| {
            v.as_object().is_some_and(|o| o.is_empty())
                || v.as_array().is_some_and(|a| a.is_empty())
        };
        let checks: [(&'static str, bool); 3] = [
            ("functions", neutral(&self.functions, &empty)),
            (
                "best_of",
                neutral(&self.best_of, &|v| v.as_u64() == Some(1)),
            ),
            ("suffix", neutral(&self.suffix, &|v| v.as_str() == Some(""))),
        ];
        checks.iter().find(|(_, ok)| !ok).map(|(name, _)| *name)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    pub content: Option<MessageContent>,
    pub name: Option<String>,
    /// An assistant message's calls: `[{"id", "type": "function", "function": {"name",
    /// "arguments"}}]`.
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A `tool` message answers this call.
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessageIn>,
    /// `[{"type": "function", "function": {"name", "description", "parameters"}}]`.
    pub tools: Option<serde_json::Value>,
    /// "none", "auto", "required" or `{"type": "function", "function": {"name"}}`.
    pub tool_choice: Option<serde_json::Value>,
    /// vLLM extension: variables for the chat template (`{"enable_thinking": false}`).
    pub chat_template_kwargs: Option<crate::text::TemplateKwargs>,
    #[serde(flatten)]
    pub gen: GenerationFields,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptSpec {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptSpec,
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub gen: GenerationFields,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails::default(),
        }
    }

    pub fn with_cached_tokens(mut self, cached_tokens: usize) -> Self {
        self.prompt_tokens_details.cached_tokens = cached_tokens;
        self
    }

    pub fn plus(self, o: Usage) -> Usage {
        Usage::new(
            self.prompt_tokens + o.prompt_tokens,
            self.completion_tokens + o.completion_tokens,
        )
        .with_cached_tokens(
            self.prompt_tokens_details.cached_tokens + o.prompt_tokens_details.cached_tokens,
        )
    }
}

/// `finish_reason` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFinishReason {
    Stop,
    Length,
    /// A chat answer that is tool calls.
    ToolCalls,
    Abort,
    Error,
}

impl WireFinishReason {
    /// The wire reason of `r`; `calls`: the chat answer is tool calls (a stop then reads
    /// `tool_calls`).
    pub fn of(r: &FinishReason, calls: bool) -> Self {
        match r {
            FinishReason::Eos | FinishReason::StopToken(_) | FinishReason::StopString(_) => {
                if calls {
                    Self::ToolCalls
                } else {
                    Self::Stop
                }
            }
            FinishReason::Length => Self::Length,
            FinishReason::Aborted => Self::Abort,
            FinishReason::Error(_) => Self::Error,
        }
    }
}

/// One call in a response message.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCallOut,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionCallOut {
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

/// A piece of a streamed call: the first names it (`id`, `type`, `function.name`), the
/// others carry `function.arguments` text to append.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

impl ToolCallOut {
    pub fn new(call: &crate::text::tools::ToolCall) -> Self {
        Self {
            id: super::ids::response_id("call"),
            kind: "function",
            function: FunctionCallOut {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatMessageOut {
    pub role: &'static str,
    /// `null` when the answer is only tool calls (or only reasoning).
    pub content: Option<String>,
    /// With `--reasoning-parser`: the model's `<think>` text (vLLM's field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
    /// Always present (null): OpenAI's schema requires the key.
    pub refusal: Option<String>,
}

/// One alternative token of a chat logprobs entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    /// The token text's UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// One output token of a chat `logprobs.content`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// A chat choice's (or chunk's) `logprobs`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
    /// Always present (null): OpenAI's schema requires the key.
    pub refusal: Option<Vec<ChatTokenLogprob>>,
}

/// A completions choice's (or chunk's) `logprobs`: parallel lists, one entry per token.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    /// `null` for the first token of an echoed prompt.
    pub token_logprobs: Vec<Option<f64>>,
    pub top_logprobs: Vec<Option<serde_json::Map<String, serde_json::Value>>>,
    /// Character offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessageOut,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<WireFinishReason>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// vLLM's `prompt_logprobs` (when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<WireFinishReason>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    /// vLLM's `prompt_logprobs`, on a chunk of their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<serde_json::Value>,
    /// Absent unless the stream reports usage; then `null` on every chunk but the last
    /// (`Some(None)`), as OpenAI sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    /// vLLM's `prompt_logprobs` (when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<serde_json::Value>,
    pub finish_reason: Option<WireFinishReason>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    /// A response's usage; in a stream (chunks of this shape) as `ChatCompletionChunk::usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Known once the model is loaded (vLLM's field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<usize>,
    /// A LoRA adapter's model (vLLM's field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}
