//! Plain data passed between the scheduler, the model runner and the engine loop.

use super::request::{RequestId, SamplingParams, SamplingState};
use std::time::Duration;

/// One sequence's share of a step: everything the model runner needs of it, so the runner never
/// reads the scheduler.
#[derive(Debug)]
pub struct ScheduledSeq {
    pub request_id: RequestId,
    /// Tokens computed this step, starting at `num_computed_tokens`.
    pub num_new_tokens: usize,
    /// True when this step reaches the end of the sequence's tokens, so a token is sampled.
    pub sample: bool,
    /// True when this step computes the last token of an embedding request's prompt, so the
    /// runner answers with its pooled vector (and `sample` is false).
    pub pool: bool,
    /// Tokens already in the cache (the position of `token_ids[0]`).
    pub num_computed_tokens: usize,
    /// [num_new_tokens] the tokens computed this step
    pub token_ids: Vec<u32>,
    /// The sequence's whole block table after this step's allocation, one per KV group
    /// (`KvGroups`; released entries read as the first live block, see
    /// `BlockTable::runner_ids`).
    pub block_tables: Vec<Vec<u32>>,
    pub sampling: SamplingParams,
    /// The sequence's RNG and grammar state, lent for a step in which it samples (else the
    /// empty default); the runner advances it and `update_from_output` gives it back.
    pub state: SamplingState,
    /// The sequence's tokens (prompt, then output) when it samples this step and its
    /// penalties need them; else empty.
    pub history: Vec<u32>,
    pub num_prompt_tokens: usize,
    /// With `prompt_logprobs`: the prompt tokens whose logprobs this step computes (the row of
    /// position p - 1 scores the token at p), starting at position `prompt_target_start`.
    pub prompt_targets: Vec<u32>,
    pub prompt_target_start: usize,
    /// The adapter its rows run with.
    pub lora: Option<super::LoraId>,
    /// Speculative decoding: tokens proposed after its last one, computed this step after it
    /// (the last `draft_token_ids.len()` of `token_ids`); the runner samples a row for each
    /// and keeps those that match.
    pub draft_token_ids: Vec<u32>,
}

impl ScheduledSeq {
    /// Its rows of logits that are sampled: a row per draft and its last row when it samples,
    /// none otherwise.
    pub fn num_sample_rows(&self) -> usize {
        match self.sample {
            true => 1 + self.draft_token_ids.len(),
            false => 0,
        }
    }
}

/// What the scheduler decided for one step.
#[derive(Debug, Default)]
pub struct SchedulerOutput {
    /// In batch order.
    pub scheduled: Vec<ScheduledSeq>,
    /// Sequences that lost their blocks this step (they recompute later).
    pub preempted: Vec<RequestId>,
    pub num_batched_tokens: usize,
    /// Tokens of this step that are not plain decodes (prompt chunks and recomputation).
    pub num_prompt_tokens: usize,
}

impl SchedulerOutput {
    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }
}

/// What the model runner produced, by position: one answer per sampling sequence and one list
/// of prompt logprobs per scheduled sequence, both in batch order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRunnerOutput {
    /// [num sampling sequences] the sampled tokens, in batch order.
    pub sampled: Vec<Sampled>,
    /// [num sampling sequences, or empty when no sequence had drafts] the drafts each kept,
    /// in order: they come before its `sampled` token.
    pub accepted: Vec<Vec<Sampled>>,
    /// [num scheduled sequences] prompt tokens' logprobs computed this step, in position order
    /// (empty for a sequence without `prompt_targets`; may be empty altogether when none has).
    pub prompt_logprobs: Vec<Vec<TokenLogprobs>>,
    /// [num pooling sequences] each one's embedding, in batch order.
    pub pooled: Vec<Vec<f32>>,
    /// Host time of the step's packing and forward call (on a GPU: launching its kernels); the
    /// rest of the runner's time is sampling, which waits for the GPU.
    pub forward_time: Duration,
}

/// A sampled token, with its logprobs when the request asked for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
}

impl Sampled {
    pub fn plain(token: u32) -> Self {
        Self {
            token,
            logprobs: None,
        }
    }
}

/// Log-probabilities (natural log, of the model's raw distribution) of one sampled token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// 1 + the number of tokens more likely than `token`.
    pub rank: u32,
    /// The most likely tokens, most likely first (as many as the request asked for).
    pub top: Vec<(u32, f32)>,
}

/// New tokens of one request, sent from the engine to the request's task.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDelta {
    pub request_id: RequestId,
    pub new_token_ids: Vec<u32>,
    /// One per new token when the request asked for logprobs.
    pub logprobs: Vec<TokenLogprobs>,
    /// With `prompt_logprobs`, on the first token's delta: one per prompt token from the second.
    pub prompt_logprobs: Vec<TokenLogprobs>,
    /// Set on the last delta of a request.
    pub finish: Option<FinishReason>,
    /// Prompt tokens served from the prefix cache (usage `cached_tokens`).
    pub num_cached_tokens: usize,
    /// An embedding request's vector, on its only delta.
    pub embedding: Option<Vec<f32>>,
}

/// Why a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FinishReason {
    /// The model produced one of its EOS ids.
    Eos,
    /// A `stop_token_ids` entry was produced.
    StopToken(u32),
    /// The API task matched stop string number `.0` on the text.
    StopString(usize),
    /// `max_tokens` or the context length was reached.
    Length,
    /// The client went away or asked to stop.
    Aborted,
    /// The engine failed on this request.
    Error(String),
}
