//! The pipeline chat and completions share after their prompt is tokenized: validate sampling
//! fields, submit to the engine, and turn token deltas into text events with incremental
//! detokenization and stop strings (`Generation`).

use super::error::ApiError;
use super::openai::types::{GenerationFields, Usage};
use crate::engine::scheduler::SchedulingPolicy;
use crate::engine::{
    DeltaStream, FinishReason, Request, RequestId, SamplingParams, StopConditions,
};
use crate::manager::ModelHandle;
use crate::metrics::FinishedLabel;
use crate::text::grammar::{GrammarCompiler, GrammarSpec};
use crate::text::{IncrementalDetokenizer, StopStringMatcher};
use std::sync::Arc;
use std::time::Instant;

/// Validated generation options of one request.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub sampling: SamplingParams,
    /// The grammar the output must match, and the field that asked for it.
    pub grammar: Option<(GrammarSpec, &'static str)>,
    /// Choices per prompt.
    pub n: usize,
    /// `None`: the rest of the context.
    pub max_tokens: Option<usize>,
    pub min_tokens: usize,
    pub ignore_eos: bool,
    pub stop_strings: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub stream: bool,
    pub include_usage: bool,
    pub priority: i32,
    /// `--request-timeout`, set by the handler from the server's options.
    pub timeout: Option<std::time::Duration>,
    pub cache_salt: Option<String>,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
    /// Logprobs name tokens `token_id:ID`.
    pub tokens_as_ids: bool,
    /// `--log-prompts`: the request's log line carries its prompt.
    pub log_prompt: bool,
    /// The API key's token bucket, charged when the request ends.
    pub charge: Option<(std::sync::Arc<crate::api::ratelimit::RateLimiter>, usize)>,
}

fn check(ok: bool, param: &str, msg: String) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(Some(param.to_string()), msg))
    }
}

/// Which endpoint's fields these are (`logprobs` differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// Most choices per prompt (OpenAI's limit).
pub const MAX_N: i64 = 128;

/// Most alternatives per token a request may ask for (vLLM's default `max_logprobs`).
pub const MAX_LOGPROBS: i64 = 20;

/// `logprobs` / `top_logprobs` of either endpoint → alternatives per token to report.
fn logprobs_of(f: &GenerationFields, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    let bad = |param: &str, msg: String| Err(ApiError::invalid(Some(param.to_string()), msg));
    let v = f.logprobs.as_ref().filter(|v| !v.is_null());
    match endpoint {
        Endpoint::Chat => {
            let on = match v {
                None => false,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(v) => return bad("logprobs", format!("logprobs must be a boolean, got {v}")),
            };
            let top = f.top_logprobs.unwrap_or(0);
            if !(0..=MAX_LOGPROBS).contains(&top) {
                return bad(
                    "top_logprobs",
                    format!("top_logprobs must be in [0, {MAX_LOGPROBS}], got {top}"),
                );
            }
            if top > 0 && !on {
                return bad(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true".to_string(),
                );
            }
            Ok(on.then_some(top as usize))
        }
        Endpoint::Completions => match v {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if (0..=MAX_LOGPROBS).contains(&n) => Ok(Some(n as usize)),
                _ => bad(
                    "logprobs",
                    format!("logprobs must be an integer in [0, {MAX_LOGPROBS}], got {v}"),
                ),
            },
        },
    }
}

/// `response_format` or one of vLLM's `guided_*` (at most one).
fn grammar_of(f: &GenerationFields) -> Result<Option<(GrammarSpec, &'static str)>, ApiError> {
    let bad = |param: &str, msg: String| ApiError::invalid(Some(param.to_string()), msg);
    let mut found = Vec::new();
    if let Some(rf) = f.response_format.as_ref().filter(|v| !v.is_null()) {
        match rf["type"].as_str() {
            Some("text") => {}
            Some("json_object") => found.push((
                GrammarSpec::JsonSchema(serde_json::json!({"type": "object"})),
                "response_format",
            )),
            Some("json_schema") => {
                let schema = rf["json_schema"]["schema"].clone();
                if !schema.is_object() {
                    return Err(bad(
                        "response_format",
                        "response_format json_schema needs json_schema.schema, an object".into(),
                    ));
                }
                found.push((GrammarSpec::JsonSchema(schema), "response_format"));
            }
            _ => {
                return Err(bad(
                    "response_format",
                    format!(
                        "response_format type must be text, json_object or json_schema, got {}",
                        rf["type"]
                    ),
                ))
            }
        }
    }
    if let Some(schema) = f.guided_json.as_ref().filter(|v| !v.is_null()) {
        // vLLM takes the schema as an object or as its JSON text
        let schema = match schema.as_str() {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| bad("guided_json", format!("guided_json is not JSON: {e}")))?,
            None => schema.clone(),
        };
        found.push((GrammarSpec::JsonSchema(schema), "guided_json"));
    }
    if let Some(rx) = &f.guided_regex {
        found.push((GrammarSpec::Regex(rx.clone()), "guided_regex"));
    }
    if let Some(choices) = &f.guided_choice {
        if choices.is_empty() {
            return Err(bad(
                "guided_choice",
                "guided_choice must not be empty".into(),
            ));
        }
        found.push((GrammarSpec::Choice(choices.clone()), "guided_choice"));
    }
    if let Some(g) = &f.guided_grammar {
        found.push((GrammarSpec::Lark(g.clone()), "guided_grammar"));
    }
    if found.len() > 1 {
        return Err(bad(
            found[1].1,
            format!(
                "only one of response_format and guided_* may be set ({} and {})",
                found[0].1, found[1].1
            ),
        ));
    }
    Ok(found.pop())
}

/// Compiles the request's grammar against `model`'s vocabulary (off the async threads; the
/// vocabulary's token trie is built on first use).
pub async fn compile_grammar(
    model: &Arc<ModelHandle>,
    opts: &mut GenOptions,
) -> Result<(), ApiError> {
    let Some((spec, param)) = opts.grammar.clone() else {
        return Ok(());
    };
    let m = model.clone();
    let constraint = tokio::task::spawn_blocking(move || {
        let compiler = m
            .grammar
            .get_or_init(|| GrammarCompiler::new(&m.codec).map(Arc::new))
            .clone()?;
        compiler.constraint(&spec)
    })
    .await
    .map_err(|e| ApiError::internal(format!("grammar task failed: {e}")))?
    .map_err(|e| ApiError::invalid(Some(param.to_string()), format!("{param}: {e}")))?;
    opts.sampling.constraint = Some(constraint);
    Ok(())
}

/// `logit_bias`: token ids (as strings) → bias in [-100, 100], sorted by id.
fn logit_bias_of(f: &GenerationFields) -> Result<Arc<[(u32, f32)]>, ApiError> {
    let mut out = Vec::new();
    for (k, &v) in f.logit_bias.iter().flatten() {
        let Ok(id) = k.trim().parse::<u32>() else {
            return Err(ApiError::invalid(
                Some("logit_bias".into()),
                format!("logit_bias keys must be token ids, got {k:?}"),
            ));
        };
        check(
            (-100.0..=100.0).contains(&v),
            "logit_bias",
            format!("logit_bias values must be in [-100, 100], got {v} for token {id}"),
        )?;
        out.push((id, v));
    }
    out.sort_unstable_by_key(|e| e.0);
    Ok(out.into())
}

impl GenOptions {
    pub fn from_fields(f: &GenerationFields, endpoint: Endpoint) -> Result<Self, ApiError> {
        let temperature = f.temperature.unwrap_or(1.0);
        check(
            (0.0..=2.0).contains(&temperature),
            "temperature",
            format!("temperature must be in [0, 2], got {temperature}"),
        )?;
        let top_p = f.top_p.unwrap_or(1.0);
        check(
            top_p > 0.0 && top_p <= 1.0,
            "top_p",
            format!("top_p must be in (0, 1], got {top_p}"),
        )?;
        let top_k = match f.top_k {
            None | Some(-1) | Some(0) => None,
            Some(k) if k > 0 => Some(k as usize),
            Some(k) => {
                return Err(ApiError::invalid(
                    Some("top_k".into()),
                    format!("top_k must be -1 (off) or positive, got {k}"),
                ))
            }
        };
        let (max_param, max) = match (f.max_completion_tokens, f.max_tokens) {
            (Some(m), _) => ("max_completion_tokens", Some(m)),
            (None, m) => ("max_tokens", m),
        };
        if let Some(m) = max {
            check(
                m >= 1,
                max_param,
                format!("{max_param} must be at least 1, got {m}"),
            )?;
        }
        let min_tokens = f.min_tokens.unwrap_or(0);
        check(
            min_tokens >= 0,
            "min_tokens",
            format!("min_tokens must be non-negative, got {min_tokens}"),
        )?;
        if let Some(m) = max {
            check(
                min_tokens <= m,
                "min_tokens",
                format!("min_tokens ({min_tokens}) must not exceed {max_param} ({m})"),
            )?;
        }
        let n = f.n.unwrap_or(1);
        check(
            (1..=MAX_N).contains(&n),
            "n",
            format!("n must be in [1, {MAX_N}], got {n}"),
        )?;
        for (name, v) in [
            ("presence_penalty", f.presence_penalty),
            ("frequency_penalty", f.frequency_penalty),
        ] {
            let v = v.unwrap_or(0.0);
            check(
                (-2.0..=2.0).contains(&v),
                name,
                format!("{name} must be in [-2, 2], got {v}"),
            )?;
        }
        let repetition_penalty = f.repetition_penalty.unwrap_or(1.0);
        check(
            repetition_penalty > 0.0 && repetition_penalty <= 2.0,
            "repetition_penalty",
            format!("repetition_penalty must be in (0, 2], got {repetition_penalty}"),
        )?;
        let min_p = f.min_p.unwrap_or(0.0);
        check(
            (0.0..=1.0).contains(&min_p),
            "min_p",
            format!("min_p must be in [0, 1], got {min_p}"),
        )?;
        let logit_bias = logit_bias_of(f)?;
        let logprobs = logprobs_of(f, endpoint)?;
        let grammar = grammar_of(f)?;
        let prompt_logprobs = match f.prompt_logprobs {
            None => None,
            Some(k) if (0..=MAX_LOGPROBS).contains(&k) => Some(k as usize),
            Some(k) => {
                return Err(ApiError::invalid(
                    Some("prompt_logprobs".into()),
                    format!("prompt_logprobs must be in [0, {MAX_LOGPROBS}], got {k}"),
                ))
            }
        };
        if let Some(salt) = &f.cache_salt {
            check(
                !salt.is_empty(),
                "cache_salt",
                "cache_salt must be a non-empty string".into(),
            )?;
        }
        if let Some(name) = f.unsupported.first_set() {
            return Err(ApiError::invalid(
                Some(name.to_string()),
                format!("{name} is not supported yet"),
            ));
        }
        check(
            f.spaces_between_special_tokens != Some(false),
            "spaces_between_special_tokens",
            "spaces_between_special_tokens: only true (the default) is supported".into(),
        )?;
        let stop_strings = f.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
        check(
            stop_strings.iter().all(|s| !s.is_empty()),
            "stop",
            "stop strings must not be empty".into(),
        )?;
        Ok(Self {
            sampling: SamplingParams {
                temperature,
                top_p,
                top_k,
                seed: f.seed,
                presence_penalty: f.presence_penalty.unwrap_or(0.0),
                frequency_penalty: f.frequency_penalty.unwrap_or(0.0),
                repetition_penalty,
                min_p,
                logit_bias,
                logprobs,
                prompt_logprobs,
                constraint: None,
            },
            n: n as usize,
            grammar,
            max_tokens: max.map(|m| m as usize),
            min_tokens: min_tokens as usize,
            ignore_eos: f.ignore_eos.unwrap_or(false),
            stop_strings,
            stop_token_ids: f.stop_token_ids.clone().unwrap_or_default(),
            stream: f.stream,
            include_usage: f.stream_options.as_ref().is_some_and(|o| o.include_usage),
            priority: match f.priority.map(i32::try_from) {
                None => 0,
                Some(Ok(p)) => p,
                Some(Err(_)) => {
                    return Err(ApiError::invalid(
                        Some("priority".into()),
                        "priority must fit in 32 bits",
                    ))
                }
            },
            timeout: None,
            log_prompt: false,
            charge: None,
            cache_salt: f.cache_salt.clone(),
            include_stop_str_in_output: f.include_stop_str_in_output.unwrap_or(false),
            skip_special_tokens: f.skip_special_tokens.unwrap_or(true),
            tokens_as_ids: f.return_tokens_as_token_ids.unwrap_or(false),
        })
    }
}

/// One output token's logprobs, its text and its alternatives' rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    /// The most likely tokens, most likely first.
    pub top: Vec<(String, f32)>,
}

/// Rejects `n` choices that could never fit the KV cache together: the full prompt blocks once,
/// then each choice's own blocks to its last token.
fn check_fits_n(model: &ModelHandle, prompt: usize, opts: &GenOptions) -> Result<(), ApiError> {
    let stats = model.engine.stats();
    let total = stats
        .kv_blocks_total
        .load(std::sync::atomic::Ordering::Relaxed);
    let bs = stats.block_size.load(std::sync::atomic::Ordering::Relaxed);
    if total == 0 || bs == 0 {
        return Ok(());
    }
    let limit = model.engine.max_model_len();
    let max_tokens = opts.max_tokens.unwrap_or(limit.saturating_sub(prompt));
    let shared = prompt.saturating_sub(1) / bs;
    let each = (prompt + max_tokens).div_ceil(bs) - shared;
    let need = shared + opts.n * each;
    check(
        need <= total,
        "n",
        format!(
            "n = {} choices of up to {} tokens need {need} KV blocks of {bs} tokens; the cache holds {total}",
            opts.n,
            prompt + max_tokens
        ),
    )
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
    Prompt(Vec<crate::engine::TokenLogprobs>),
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
    model: Arc<ModelHandle>,
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
    charge: Option<(std::sync::Arc<crate::api::ratelimit::RateLimiter>, usize)>,
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
    /// Checks the prompt against the context and submits it.
    /// The `opts.n` choices of one prompt. The first computes the prompt; the others wait for
    /// its full prompt blocks and share them through the prefix cache (`Request::follows`).
    /// With a seed, choice i draws from `seed + i` (as vLLM). Usage counts the prompt once.
    pub fn start_choices(
        model: &Arc<ModelHandle>,
        prompt_ids: Vec<u32>,
        opts: &GenOptions,
    ) -> Result<Vec<Self>, ApiError> {
        if opts.n > 1 {
            check_fits_n(model, prompt_ids.len(), opts)?;
        }
        // each choice its own grammar state, forked from the compiled (unstarted) one
        let sampling_for = |i: usize| {
            let mut s = opts.sampling.clone();
            s.seed = s.seed.map(|seed| seed.wrapping_add(i as u64));
            s.constraint = s.constraint.as_ref().map(|c| c.fork());
            s
        };
        let first = Self::start(model, prompt_ids.clone(), opts, sampling_for(0), None)?;
        let leader = first.id;
        let mut gens = vec![first];
        for i in 1..opts.n {
            let sampling = sampling_for(i);
            let mut g = Self::start(model, prompt_ids.clone(), opts, sampling, Some(leader))?;
            g.counts_prompt = false;
            gens.push(g);
        }
        Ok(gens)
    }

    /// Checks the prompt against the context and submits it.
    fn start(
        model: &Arc<ModelHandle>,
        prompt_ids: Vec<u32>,
        opts: &GenOptions,
        sampling: SamplingParams,
        follows: Option<RequestId>,
    ) -> Result<Self, ApiError> {
        let limit = model.engine.max_model_len();
        let prompt_tokens = prompt_ids.len();
        if prompt_tokens == 0 {
            return Err(ApiError::invalid(
                Some("prompt".into()),
                "the prompt is empty",
            ));
        }
        let max_tokens = match opts.max_tokens {
            Some(m) => m,
            None if prompt_tokens < limit => limit - prompt_tokens,
            None => 0,
        };
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
        if opts.priority != 0 && model.engine.scheduling_policy() != SchedulingPolicy::Priority {
            return Err(ApiError::invalid(
                Some("priority".into()),
                format!("got priority {} but the server schedules first come, first served; start it with --scheduling-policy priority", opts.priority),
            ));
        }
        let log = RequestLog {
            span: tracing::Span::current(),
            started: Instant::now(),
            first_token: None,
            prompt: opts.log_prompt.then(|| prompt_ids.clone()),
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
        };
        let id = req.id;
        let stream = model.engine.submit(req)?;
        model
            .engine
            .stats()
            .requests_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
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
            deadline: opts.timeout.map(|t| (tokio::time::Instant::now() + t, t)),
            log,
            charge: opts.charge.clone(),
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
    pub prompt_logprobs: Vec<crate::engine::TokenLogprobs>,
}

/// vLLM's `prompt_logprobs`: `null` for the first prompt token, then per token a map from token
/// id to `{logprob, rank, decoded_token}` holding the prompt's token and the top alternatives.
pub fn vllm_prompt_logprobs(
    codec: &crate::text::TextCodec,
    lps: &[crate::engine::TokenLogprobs],
) -> serde_json::Value {
    let entry = |l: f32, rank: u32, id: u32| {
        serde_json::json!({"logprob": l, "rank": rank,
                           "decoded_token": token_text(codec, id, false)})
    };
    let mut out = vec![serde_json::Value::Null];
    for lp in lps {
        let mut m = serde_json::Map::new();
        m.insert(lp.token.to_string(), entry(lp.logprob, lp.rank, lp.token));
        for (i, &(id, l)) in lp.top.iter().enumerate() {
            m.entry(id.to_string())
                .or_insert_with(|| entry(l, i as u32 + 1, id));
        }
        out.push(serde_json::Value::Object(m));
    }
    serde_json::Value::Array(out)
}

/// Renders engine logprobs as the response writers see them.
pub fn render_all(
    codec: &crate::text::TextCodec,
    lps: &[crate::engine::TokenLogprobs],
    as_ids: bool,
) -> Vec<TokenLogprob> {
    lps.iter()
        .map(|l| render_logprobs(codec, l, as_ids))
        .collect()
}

/// How logprobs name a token: its piece decoded alone (special tokens included), or
/// `token_id:ID` (vLLM's `return_tokens_as_token_ids`).
pub fn token_text(codec: &crate::text::TextCodec, id: u32, as_id: bool) -> String {
    if as_id {
        format!("token_id:{id}")
    } else {
        codec.decode(&[id], false).unwrap_or_default()
    }
}

fn render_logprobs(
    codec: &crate::text::TextCodec,
    lp: &crate::engine::TokenLogprobs,
    as_ids: bool,
) -> TokenLogprob {
    TokenLogprob {
        token: token_text(codec, lp.token, as_ids),
        logprob: lp.logprob,
        top: lp
            .top
            .iter()
            .map(|&(id, l)| (token_text(codec, id, as_ids), l))
            .collect(),
    }
}

impl Drop for Generation {
    /// A generation dropped unfinished: the client went away.
    fn drop(&mut self) {
        // 499: nginx's "client closed request"
        self.end(FinishedLabel::Abort, 499);
        self.model
            .engine
            .stats()
            .requests_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
