//! Plain data passed between the scheduler, the model runner and the engine loop.

use super::request::{RequestId, SamplingParams};
use super::sequence::FinishReason;

/// One sequence's share of a step: everything the model runner needs of it, so the runner never
/// reads the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledSeq {
    pub request_id: RequestId,
    /// Tokens computed this step, starting at `num_computed_tokens`.
    pub num_new_tokens: usize,
    /// True when this step reaches the end of the sequence's tokens, so a token is sampled.
    pub sample: bool,
    /// Tokens already in the cache (the position of `token_ids[0]`).
    pub num_computed_tokens: usize,
    /// [num_new_tokens] the tokens computed this step
    pub token_ids: Vec<u32>,
    /// The sequence's whole block table after this step's allocation.
    pub block_ids: Vec<u32>,
    pub sampling: SamplingParams,
    /// The sequence's tokens (prompt, then output) when it samples this step and its
    /// penalties need them; else empty.
    pub history: Vec<u32>,
    pub num_prompt_tokens: usize,
    /// With `prompt_logprobs`: the prompt tokens whose logprobs this step computes (the row of
    /// position p - 1 scores the token at p), starting at position `prompt_target_start`.
    pub prompt_targets: Vec<u32>,
    pub prompt_target_start: usize,
}

/// What the scheduler decided for one step.
#[derive(Debug, Clone, Default, PartialEq)]
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

    /// Sequences that sample a token this step, in batch order.
    pub fn num_sampled(&self) -> usize {
        self.scheduled.iter().filter(|s| s.sample).count()
    }
}

/// What the model runner produced: one sampled token per sampling sequence, with its logprobs
/// when the request asked for them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRunnerOutput {
    pub sampled: Vec<(RequestId, u32)>,
    pub logprobs: Vec<(RequestId, TokenLogprobs)>,
    /// Prompt tokens' logprobs computed this step, in position order.
    pub prompt_logprobs: Vec<(RequestId, Vec<TokenLogprobs>)>,
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
}
