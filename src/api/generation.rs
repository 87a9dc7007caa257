//! A running generation: `Generation` submits one choice of a validated request to the engine
//! and turns its token deltas into text events, with incremental detokenization and stop
//! strings. Chat and completions write those events in their own wire format.

use super::error::ApiError;
use super::logprobs::{render_logprobs, TokenLogprob};
use super::openai::types::Usage;
use super::ratelimit::RateLimiter;
use super::validate::GenOptions;
use crate::engine::DeltaStream;
use crate::manager::ModelLease;
use crate::metrics::FinishedLabel;
use crate::step::{
    FinishReason, Request, RequestId, SamplingParams, SchedulingPolicy, StopConditions, TokenDelta,
};
use crate::text::grammar::Constraint;
use crate::text::{IncrementalDetokenizer, StopStringMatcher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the server adds to every request: its limits and, with API keys, the key's bucket.
#[derive(Clone, Default)]
pub struct Serving {
    /// `--request-timeout`.
    pub timeout: Option<Duration>,
    /// `--log-prompts`: the request's log line carries its prompt.
    pub log_prompts: bool,
    /// The API key's token bucket, charged the request's tokens when it ends.
    pub charge: Option<(Arc<RateLimiter>, usize)>,
}

/// A validated request ready to start: its model, options, compiled grammar and serving terms.
pub struct Submission {
    pub model: ModelLease,
    pub opts: GenOptions,
    /// `opts.grammar` compiled for the model, unstarted: each choice forks it.
    pub constraint: Option<Constraint>,
    pub serving: Serving,
}

/// A request's `priority` is honoured only under `--scheduling-policy priority`: elsewhere a
/// non-zero one is a 400 (vLLM's answer), never silently ignored.
pub fn check_priority(model: &ModelLease, priority: i32) -> Result<(), ApiError> {
    if priority != 0 && model.engine.scheduling_policy() != SchedulingPolicy::Priority {
        return Err(ApiError::invalid(
            Some("priority".into()),
            format!("got priority {priority} but the server schedules first come, first served; start it with --scheduling-policy priority"),
        ));
    }
    Ok(())
}

/// `max_tokens` of a request that sets none: the rest of the context, at most the model's
/// `max_new_tokens` (generation_config.json), as vLLM.
fn default_max_tokens(model: &ModelLease, prompt: usize) -> usize {
    let rest = model.engine.max_model_len().saturating_sub(prompt);
    match model.codec.generation_defaults().max_tokens {
        Some(m) => rest.min(m.max(0) as usize),
        None => rest,
    }
}

/// Rejects `n` choices that could never fit the KV cache together: the full prompt blocks of the
/// global KV groups once, then each choice's own blocks to its last token (checked arithmetic:
/// any `n` × `max_tokens` a client sends).
fn check_fits_n(model: &ModelLease, prompt: usize, opts: &GenOptions) -> Result<(), ApiError> {
    let (total, bs) = (model.engine.num_kv_blocks(), model.engine.block_size());
    let max_tokens = opts
        .max_tokens
        .unwrap_or_else(|| default_max_tokens(model, prompt));
    let longest = prompt.saturating_add(max_tokens);
    let shared = prompt.saturating_sub(1) / bs * model.engine.num_global_kv_groups();
    let each = model.engine.blocks_for(longest) - shared;
    let need = opts.n.checked_mul(each).and_then(|n| n.checked_add(shared));
    match need {
        Some(need) if need <= total => Ok(()),
        _ => Err(ApiError::invalid(
            Some("n".into()),
            format!(
                "n = {} choices of up to {longest} tokens need {} KV blocks of {bs} tokens; the cache holds {total}",
                opts.n,
                need.map_or("more".to_string(), |n| n.to_string()),
            ),
        )),
    }
}

/// One step of a generation, as the response writers see it.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// New text, and the logprobs of the tokens it came from (when asked for; a token whose
    /// text is held back still reports here).
    Text {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// The prompt's logprobs (`prompt_logprobs`), before the first text.
    Prompt(Vec<crate::step::TokenLogprobs>),
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
}

/// A running generation: engine deltas in, text out.
pub struct Generation {
    id: RequestId,
    /// False for the second and later choices of one prompt (usage counts the prompt once).
    counts_prompt: bool,
    model: ModelLease,
    stream: Option<DeltaStream>,
    detok: IncrementalDetokenizer,
    stops: StopStringMatcher,
    prompt_tokens: usize,
    completion_tokens: usize,
    cached_tokens: usize,
    done: bool,
    /// When `--request-timeout` ends the request, and that limit.
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
    /// What the request's log line reports.
    log: RequestLog,
    charge: Option<(Arc<RateLimiter>, usize)>,
    tokens_as_ids: bool,
}

/// The per-request log line's facts.
struct RequestLog {
    span: tracing::Span,
    started: Instant,
    first_token: Option<Instant>,
    /// The prompt's token ids, with `--log-prompts` only.
    prompt: Option<Vec<u32>>,
}

impl Generation {
    /// The `opts.n` choices of one prompt. The first computes the prompt; the others wait for
    /// its full prompt blocks and share them through the prefix cache (`Request::follows`).
    /// With a seed, choice i draws from `seed + i` (as vLLM). Usage counts the prompt once.
    pub fn start_choices(r: &Submission, prompt_ids: Vec<u32>) -> Result<Vec<Self>, ApiError> {
        let (model, opts) = (&r.model, &r.opts);
        if opts.n > 1 {
            check_fits_n(model, prompt_ids.len(), opts)?;
        }
        let sampling_for = |i: usize| {
            let mut s = opts.sampling.clone();
            s.seed = s.seed.map(|seed| seed.wrapping_add(i as u64));
            s
        };
        let first = Self::start(r, prompt_ids.clone(), sampling_for(0), None)?;
        let leader = first.id;
        let mut gens = vec![first];
        for i in 1..opts.n {
            let sampling = sampling_for(i);
            let mut g = Self::start(r, prompt_ids.clone(), sampling, Some(leader))?;
            g.counts_prompt = false;
            gens.push(g);
        }
        Ok(gens)
    }

    /// Checks the prompt against the context and submits it.
    fn start(
        r: &Submission,
        prompt_ids: Vec<u32>,
        sampling: SamplingParams,
        follows: Option<RequestId>,
    ) -> Result<Self, ApiError> {
        let (model, opts) = (&r.model, &r.opts);
        let limit = model.engine.max_model_len();
        let prompt_tokens = prompt_ids.len();
        if prompt_tokens == 0 {
            return Err(ApiError::invalid(
                Some("prompt".into()),
                "the prompt is empty",
            ));
        }
        let max_tokens = opts
            .max_tokens
            .unwrap_or_else(|| default_max_tokens(model, prompt_tokens));
        if prompt_tokens + max_tokens > limit || max_tokens == 0 {
            return Err(ApiError {
                status: axum::http::StatusCode::BAD_REQUEST,
                message: format!(
                    "This model's maximum context length is {limit} tokens. However, you requested {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
                    prompt_tokens + max_tokens.max(1)
                ),
                param: Some(if opts.max_tokens.is_some() { "max_tokens" } else { "messages" }.into()),
                code: Some("context_length_exceeded"),
                retry_after: None,
            });
        }
        let vocab = model.codec.vocab_size();
        if let Some(&(id, _)) = opts
            .sampling
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= vocab)
        {
            return Err(ApiError::invalid(
                Some("logit_bias".into()),
                format!("logit_bias: token id {id} is not below the vocabulary size {vocab}"),
            ));
        }
        check_priority(model, opts.priority)?;
        let log = RequestLog {
            span: tracing::Span::current(),
            started: Instant::now(),
            first_token: None,
            prompt: r.serving.log_prompts.then(|| prompt_ids.clone()),
        };
        let req = Request {
            id: model.engine.next_request_id(),
            prompt_token_ids: prompt_ids,
            sampling,
            stop: StopConditions {
                max_tokens,
                min_tokens: opts.min_tokens.min(max_tokens),
                eos_token_ids: model.codec.eos_token_ids().to_vec(),
                stop_token_ids: opts.stop_token_ids.clone(),
                ignore_eos: opts.ignore_eos,
            },
            priority: opts.priority,
            arrival: Instant::now(),
            cache_salt: opts.cache_salt.clone(),
            follows,
            // each choice its own grammar state, forked from the compiled (unstarted) one
            constraint: r.constraint.clone(),
            task: crate::step::Task::Generate,
            background: crate::api::batch::marker::in_batch(),
            lora: model.lora(),
            lora_hold: model.lora_hold(),
        };
        let id = req.id;
        let stream = model.engine.submit(req)?;
        Ok(Self {
            id,
            counts_prompt: true,
            model: model.clone(),
            stream: Some(stream),
            detok: IncrementalDetokenizer::new(opts.skip_special_tokens),
            stops: StopStringMatcher::new(opts.stop_strings.clone())
                .including_stop(opts.include_stop_str_in_output),
            prompt_tokens,
            completion_tokens: 0,
            cached_tokens: 0,
            done: false,
            deadline: r
                .serving
                .timeout
                .map(|t| (tokio::time::Instant::now() + t, t)),
            log,
            charge: r.serving.charge.clone(),
            tokens_as_ids: opts.tokens_as_ids,
        })
    }

    /// This choice's usage (the prompt counted by the first choice only).
    fn usage(&self) -> Usage {
        if self.counts_prompt {
            Usage::new(self.prompt_tokens, self.completion_tokens)
                .with_cached_tokens(self.cached_tokens)
        } else {
            Usage::new(0, self.completion_tokens)
        }
    }

    fn finished(&mut self, reason: FinishReason) -> GenEvent {
        self.end(FinishedLabel::of(&reason), 200);
        GenEvent::Finished {
            reason,
            usage: self.usage(),
        }
    }

    /// Ends the request as `label` (counted once); dropping the stream before its last delta
    /// aborts the request in the engine, which frees its blocks at once.
    fn end(&mut self, label: FinishedLabel, status: u16) {
        if !self.done {
            self.done = true;
            self.model.engine.metrics().finished(label);
            self.log_line(label, status);
            if let Some((limiter, key)) = &self.charge {
                limiter.charge(*key, self.usage().total_tokens);
            }
        }
        self.stream = None;
    }

    /// One line per finished request: never the prompt unless `--log-prompts`.
    fn log_line(&self, label: FinishedLabel, status: u16) {
        let l = &self.log;
        let ttft_ms = l.first_token.map(|t| (t - l.started).as_secs_f64() * 1e3);
        let prompt = l
            .prompt
            .as_ref()
            .map(|ids| self.model.codec.decode(ids, false).unwrap_or_default());
        l.span.in_scope(|| {
            tracing::info!(
                model = %self.model.id,
                prompt_tokens = self.prompt_tokens,
                output_tokens = self.completion_tokens,
                cached_tokens = self.cached_tokens,
                ttft_ms,
                duration_ms = l.started.elapsed().as_secs_f64() * 1e3,
                finish_reason = label.as_str(),
                status,
                prompt,
                "request finished"
            )
        });
    }

    /// The next event, or `None` after `Finished`. Engine failures come back as `Err`.
    pub async fn next(&mut self) -> Option<Result<Vec<GenEvent>, ApiError>> {
        if self.done {
            return None;
        }
        let recv = self.stream.as_mut()?.recv();
        let delta = match self.deadline {
            None => recv.await,
            Some((at, limit)) => match tokio::time::timeout_at(at, recv).await {
                Ok(d) => d,
                Err(_) => {
                    self.end(FinishedLabel::Abort, 408);
                    return Some(Err(ApiError::timed_out(limit)));
                }
            },
        };
        let Some(delta) = delta else {
            self.end(FinishedLabel::Error, 500);
            return Some(Err(ApiError::internal(
                "the engine stopped before the request finished",
            )));
        };
        self.apply_tokens(delta)
    }

    /// A delta's events, one token at a time when it carries several (kept speculative drafts):
    /// a stop string then ends at the token that completes it, and its text, logprobs and
    /// token count are those of decoding without speculation.
    fn apply_tokens(&mut self, mut delta: TokenDelta) -> Option<Result<Vec<GenEvent>, ApiError>> {
        let n = delta.new_token_ids.len();
        if n <= 1 {
            return self.apply(delta);
        }
        let mut events = Vec::new();
        let mut logprobs = std::mem::take(&mut delta.logprobs).into_iter();
        for (i, &token) in delta.new_token_ids.iter().enumerate() {
            let one = TokenDelta {
                request_id: delta.request_id,
                new_token_ids: vec![token],
                logprobs: logprobs.next().into_iter().collect(),
                prompt_logprobs: std::mem::take(&mut delta.prompt_logprobs),
                finish: if i + 1 == n {
                    delta.finish.clone()
                } else {
                    None
                },
                num_cached_tokens: delta.num_cached_tokens,
                embedding: None,
            };
            match self.apply(one)? {
                Ok(e) => events.extend(e),
                Err(e) => return Some(Err(e)),
            }
            if self.done {
                break;
            }
        }
        Some(Ok(events))
    }

    /// The events of one delta (its tokens decoded and checked against the stop strings
    /// together).
    fn apply(&mut self, delta: TokenDelta) -> Option<Result<Vec<GenEvent>, ApiError>> {
        self.completion_tokens += delta.new_token_ids.len();
        if !delta.new_token_ids.is_empty() && self.log.first_token.is_none() {
            self.log.first_token = Some(Instant::now());
        }
        self.cached_tokens = delta.num_cached_tokens;
        let codec = self.model.codec.clone();
        let mut text = match self.detok.push(&codec, &delta.new_token_ids) {
            Ok(t) => t,
            Err(e) => {
                self.end(FinishedLabel::Error, 500);
                return Some(Err(e.into()));
            }
        };
        if let Some(reason) = &delta.finish {
            if let FinishReason::Error(msg) = reason {
                self.end(FinishedLabel::Error, 500);
                return Some(Err(ApiError::internal(msg.clone())));
            }
            text.push_str(&self.detok.flush(&codec).unwrap_or_default());
        }
        let mut events = Vec::new();
        if !delta.prompt_logprobs.is_empty() {
            events.push(GenEvent::Prompt(delta.prompt_logprobs.clone()));
        }
        let logprobs: Vec<TokenLogprob> = delta
            .logprobs
            .iter()
            .map(|lp| render_logprobs(&codec, lp, self.tokens_as_ids))
            .collect();
        let check = self.stops.push(&text);
        let mut out = check.text;
        let text_event = |text: String, logprobs: Vec<TokenLogprob>| {
            (!text.is_empty() || !logprobs.is_empty()).then_some(GenEvent::Text { text, logprobs })
        };
        if let Some(i) = check.stopped {
            events.extend(text_event(out, logprobs));
            events.push(self.finished(FinishReason::StopString(i)));
            return Some(Ok(events));
        }
        if let Some(reason) = delta.finish {
            out.push_str(&self.stops.flush());
            events.extend(text_event(out, logprobs));
            events.push(self.finished(reason));
        } else {
            events.extend(text_event(out, logprobs));
        }
        Some(Ok(events))
    }

    /// Runs to the end.
    pub async fn collect(mut self) -> Result<Collected, ApiError> {
        let (mut text, mut logprobs, mut prompt_logprobs) = (String::new(), Vec::new(), Vec::new());
        while let Some(events) = self.next().await {
            for e in events? {
                match e {
                    GenEvent::Text {
                        text: t,
                        logprobs: l,
                    } => {
                        text.push_str(&t);
                        logprobs.extend(l);
                    }
                    GenEvent::Prompt(p) => prompt_logprobs = p,
                    GenEvent::Finished { reason, usage } => {
                        return Ok(Collected {
                            text,
                            reason,
                            usage,
                            logprobs,
                            prompt_logprobs,
                        })
                    }
                }
            }
        }
        Err(ApiError::internal(
            "generation ended without a finish reason",
        ))
    }
}

/// A whole generation.
pub struct Collected {
    pub text: String,
    pub reason: FinishReason,
    pub usage: Usage,
    /// One per output token when the request asked for logprobs.
    pub logprobs: Vec<TokenLogprob>,
    /// One per prompt token from the second, with `prompt_logprobs`.
    pub prompt_logprobs: Vec<crate::step::TokenLogprobs>,
}

impl Drop for Generation {
    /// A generation dropped unfinished: the client went away.
    fn drop(&mut self) {
        // 499: nginx's "client closed request"
        self.end(FinishedLabel::Abort, 499);
    }
}
