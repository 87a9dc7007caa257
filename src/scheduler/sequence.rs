//! `Sequence`: what the scheduler knows of one request. Token ids (prompt then output), how many
//! of them have K/V in the cache, and the blocks holding them. No channels, no text.

use crate::kv::BlockTable;
use crate::step::{
    FinishReason, Request, RequestId, SamplingParams, SamplingState, StopConditions, Task,
    TokenLogprobs,
};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceStatus {
    Waiting,
    Running,
    /// Evicted from the cache; waits to recompute its tokens.
    Preempted,
}

#[derive(Debug)]
pub struct Sequence {
    pub request_id: RequestId,
    /// Prompt then generated tokens.
    pub token_ids: Vec<u32>,
    pub num_prompt_tokens: usize,
    /// Tokens whose K/V is in the cache.
    pub num_computed_tokens: usize,
    /// One block table per KV group (`KvGroups`), all of the same length; empty until the
    /// scheduler queues it.
    pub block_tables: Vec<BlockTable>,
    pub status: SequenceStatus,
    pub sampling: SamplingParams,
    /// Its RNG and grammar state (lent to the runner in the steps where it samples).
    pub sampling_state: SamplingState,
    pub stop: StopConditions,
    pub arrival: Instant,
    pub priority: i32,
    /// Admission order, assigned by the scheduler (FCFS tie-break).
    pub arrival_seq: u64,
    pub num_preemptions: usize,
    /// Chained hashes of the full blocks in `block_tables` whose K/V is computed, in order.
    pub block_hashes: Vec<crate::kv::BlockHash>,
    /// Prompt tokens found in the prefix cache at first admission.
    pub num_cached_tokens: usize,
    /// Prompt logprobs computed so far (positions 1..), handed out with the first token.
    pub prompt_logprobs: Vec<TokenLogprobs>,
    /// Prompt logprobs computed in all (a recomputed prompt does not report them again).
    pub num_prompt_logprobs: usize,
    /// Requests share cached blocks only with requests of the same salt (vLLM's `cache_salt`).
    pub cache_salt: Option<String>,
    /// See `Request::follows`.
    pub follows: Option<RequestId>,
    pub task: Task,
    /// See `Request::background`.
    pub background: bool,
    /// See `Request::lora`.
    pub lora: Option<crate::step::LoraId>,
    /// Its speculative decoding (proposal length, pause).
    pub spec: super::spec::SpecState,
    /// See `Request::lora_hold`: dropped with the sequence.
    _lora_hold: Option<std::sync::Arc<str>>,
}

impl Sequence {
    pub fn new(req: Request) -> Self {
        Self {
            request_id: req.id,
            num_prompt_tokens: req.prompt_token_ids.len(),
            token_ids: req.prompt_token_ids,
            num_computed_tokens: 0,
            block_tables: Vec::new(),
            status: SequenceStatus::Waiting,
            sampling: req.sampling,
            sampling_state: SamplingState {
                rng: None,
                constraint: req.constraint.map(Box::new),
            },
            stop: req.stop,
            arrival: req.arrival,
            priority: req.priority,
            arrival_seq: 0,
            num_preemptions: 0,
            block_hashes: Vec::new(),
            num_cached_tokens: 0,
            prompt_logprobs: Vec::new(),
            num_prompt_logprobs: 0,
            cache_salt: req.cache_salt,
            follows: req.follows,
            task: req.task,
            background: req.background,
            lora: req.lora,
            spec: Default::default(),
            _lora_hold: req.lora_hold,
        }
    }

    /// Where its blocks' hash chain starts: its salt and its adapter, so that requests share
    /// cached blocks only with the same salt and the same adapter.
    pub fn cache_root(&self) -> crate::kv::BlockHash {
        crate::kv::BlockHash::root_for(self.cache_salt.as_deref(), self.lora.map(|l| l.0))
    }

    /// Scheduling order under the priority policy: smaller first (batch lines after every
    /// interactive request).
    pub fn priority_key(&self) -> (bool, i32, u64) {
        (self.background, self.priority, self.arrival_seq)
    }

    /// Blocks to add, over all groups, so that its tables hold `num_tokens` tokens.
    pub fn num_missing_blocks(&self, num_tokens: usize, block_size: usize) -> usize {
        self.block_tables
            .iter()
            .map(|t| t.num_missing(num_tokens, block_size))
            .sum()
    }

    /// Empties every table, handing the blocks it still owns to the caller (who frees them).
    pub fn take_blocks(&mut self) -> Vec<crate::kv::BlockId> {
        self.block_tables
            .iter_mut()
            .flat_map(|t| t.take())
            .collect()
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    pub fn num_output_tokens(&self) -> usize {
        self.token_ids.len() - self.num_prompt_tokens
    }

    /// Tokens not yet in the cache (a prompt, a prompt's rest, or the last sampled token).
    pub fn num_uncomputed_tokens(&self) -> usize {
        self.num_tokens() - self.num_computed_tokens
    }

    /// Checks the stop rules after `token` was appended.
    pub fn check_stop(&self, token: u32) -> Option<FinishReason> {
        let out = self.num_output_tokens();
        if !self.stop.ignore_eos
            && out >= self.stop.min_tokens
            && self.stop.eos_token_ids.contains(&token)
        {
            return Some(FinishReason::Eos);
        }
        if out >= self.stop.min_tokens && self.stop.stop_token_ids.contains(&token) {
            return Some(FinishReason::StopToken(token));
        }
        if out >= self.stop.max_tokens {
            return Some(FinishReason::Length);
        }
        None
    }
}
