//! `Request`: a validated, token-level generation request, as the HTTP layer hands it to the
//! engine. No text and no wire types: stop strings are matched by the API task on text.

use std::sync::Arc;
use std::time::Instant;

/// Identifies one request from submission to its last delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A map keyed by request id, hashed by one multiplication instead of SipHash: the engine
/// thread looks every running sequence up several times per step, and ids come from a counter,
/// not from clients.
pub type IdMap<V> = std::collections::HashMap<RequestId, V, BuildIdHasher>;

/// `IdMap`'s hasher: Fibonacci hashing of the id (the high bits, which the table's control
/// bytes use, depend on every bit of the id).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type BuildIdHasher = std::hash::BuildHasherDefault<IdHasher>;

/// How the next token is chosen. `temperature == 0` means greedy.
///
/// The logits of a row go through, in order (vLLM's): `logit_bias`, the repetition penalty
/// (over prompt and output tokens: a positive logit is divided by it, a negative one multiplied),
/// the frequency and presence penalties (over output tokens: minus `frequency_penalty` × count,
/// minus `presence_penalty` once seen); greedy takes the argmax there, sampling goes on with
/// temperature, `min_p`, top-k, top-p and a draw. Logprobs are of the raw logits.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// `None` keeps every token.
    pub top_k: Option<usize>,
    /// Seed of the per-request RNG; `None` draws one.
    pub seed: Option<u64>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1: off.
    pub repetition_penalty: f32,
    /// 0: off.
    pub min_p: f32,
    /// (token id, bias) sorted by id.
    pub logit_bias: Arc<[(u32, f32)]>,
    /// Report the sampled token's logprob and this many top alternatives.
    pub logprobs: Option<usize>,
    /// Report each prompt token's logprob (from the second on) and this many alternatives
    /// (vLLM's `prompt_logprobs`; such a request skips the prefix cache: cached tokens have no
    /// logits).
    pub prompt_logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            min_p: 0.0,
            logit_bias: Arc::new([]),
            logprobs: None,
            prompt_logprobs: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == Some(1)
    }

    /// The penalties read the sequence's tokens.
    pub fn needs_history(&self) -> bool {
        self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
            || self.repetition_penalty != 1.0
    }

    /// Anything beyond greedy / temperature / top-k / top-p / seed: such rows are sampled on
    /// the host (from the GPU, their logits rows are copied there), as are constrained rows
    /// (`SamplingState::constraint`).
    pub fn needs_host(&self) -> bool {
        self.needs_history()
            || !self.logit_bias.is_empty()
            || self.min_p > 0.0
            || self.logprobs.is_some()
    }
}

/// What changes as a sequence samples: its RNG and its grammar's progress. The sequence owns it;
/// in a step where it samples, the scheduler lends it to the runner inside its `ScheduledSeq`
/// and `update_from_output` puts it back, so it travels with the step's data and nothing is
/// kept (or forgotten) elsewhere.
///
/// NOTE: both parts are boxed: the state moves twice per sequence and step, and an RNG
/// (ChaCha12, ~300 bytes) or a grammar matcher inline would make every move a large copy.
#[derive(Debug, Default)]
pub struct SamplingState {
    /// Seeded from `SamplingParams::seed` (else from the OS) at the first draw.
    pub rng: Option<Box<rand::rngs::StdRng>>,
    /// The grammar the output must match (it masks the row before everything else).
    pub constraint: Option<Box<crate::text::grammar::Constraint>>,
}

impl SamplingState {
    /// The sequence's RNG, seeded from `seed` at its first use.
    pub fn rng(&mut self, seed: Option<u64>) -> &mut rand::rngs::StdRng {
        use rand::SeedableRng;
        self.rng.get_or_insert_with(|| {
            Box::new(match seed {
                Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
                None => rand::rngs::StdRng::from_os_rng(),
            })
        })
    }
}

/// Token-level stop rules, checked by the scheduler after each sampled token.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StopConditions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// EOS is ignored until this many tokens were generated.
    pub min_tokens: usize,
    /// The model's end-of-sequence ids.
    pub eos_token_ids: Vec<u32>,
    /// Extra ids that end generation (vLLM `stop_token_ids`).
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past EOS (load generators).
    pub ignore_eos: bool,
}

/// An adapter of the model a request runs on: its index in the model's adapter list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoraId(pub u32);

#[derive(Debug, Clone)]
pub struct Request {
    pub id: RequestId,
    pub prompt_token_ids: Vec<u32>,
    pub sampling: SamplingParams,
    pub stop: StopConditions,
    /// Lower runs first under `SchedulingPolicy::Priority` (vLLM's convention); 0 by default.
    pub priority: i32,
    pub arrival: Instant,
    /// Keeps this request's prefix-cache blocks apart from other salts' (None: the shared cache).
    pub cache_salt: Option<String>,
    /// One of several choices of one prompt (`n`): admitted once that request's full prompt
    /// blocks are computed, so it takes them from the prefix cache instead of computing them.
    pub follows: Option<RequestId>,
    /// The grammar the output must match, unstarted (see `SamplingState::constraint`).
    pub constraint: Option<crate::text::grammar::Constraint>,
    /// What the request asks of the model: tokens, or its prompt's pooled vector.
    pub task: Task,
    /// A batch line (the Batch API): waits behind every interactive request and is preempted
    /// first, whatever the scheduling policy.
    pub background: bool,
    /// The LoRA adapter the request runs with (None: the base model).
    pub lora: Option<LoraId>,
    /// The adapter's hold (see `manager::adapters`), kept by the sequence until it is freed:
    /// the manager evicts or empties an adapter only once no request and no sequence holds it.
    pub lora_hold: Option<std::sync::Arc<str>>,
}

/// What a request asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    /// Tokens, sampled one step at a time.
    #[default]
    Generate,
    /// The pooled hidden state of the prompt (an embedding model): the request ends with the
    /// step that computes its prompt's last token, and samples nothing.
    Embed,
}

/// Order of the waiting queue and choice of preemption victims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchedulingPolicy {
    /// First come, first served; the newest running sequence is preempted first.
    #[default]
    Fcfs,
    /// Lowest `priority` value first, FCFS within a priority; the running sequence with the
    /// highest value (newest among equals) is preempted first.
    Priority,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("request needs up to {needed} tokens ({prompt} prompt + {max_tokens} max_tokens) but the model's context length is {limit}")]
    TooLong {
        needed: usize,
        prompt: usize,
        max_tokens: usize,
        limit: usize,
    },
    #[error("request id {0:?} is already in the engine")]
    Duplicate(RequestId),
    #[error("prompt is empty")]
    EmptyPrompt,
}
