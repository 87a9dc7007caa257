//! The pipeline chat and completions share after their prompt is tokenized: validate sampling
//! fields, submit to the engine, and turn token deltas into text events with incremental
//! detokenization and stop strings (`Generation`).

use super::error::ApiError;
use super::openai::types::{GenerationFields, Usage};
use crate::engine::scheduler::SchedulingPolicy;
use crate::engine::{DeltaStream, FinishReason, Request, SamplingParams, StopConditions};
use crate::manager::ModelHandle;
use crate::metrics::FinishedLabel;
use crate::text::{IncrementalDetokenizer, StopStringMatcher};
use std::sync::Arc;
use std::time::Instant;

/// Validated generation options of one request.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub sampling: SamplingParams,
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

impl GenOptions {
    pub fn from_fields(f: &GenerationFields) -> Result<Self, ApiError> {
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
            n == 1,
            "n",
            format!("n must be 1 (several choices per request are not supported yet), got {n}"),
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
            check(
                v == 0.0,
                name,
                format!("{name} is not supported yet; send 0"),
            )?;
        }
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
            },
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
        })
    }
}

/// One step of a generation, as the response writers see it.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Text(String),
    Finished { reason: FinishReason, usage: Usage },
}

/// A running generation: engine deltas in, text out.
pub struct Generation {
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
    pub fn start(
        model: &Arc<ModelHandle>,
        prompt_ids: Vec<u32>,
        opts: &GenOptions,
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
            sampling: opts.sampling.clone(),
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
        };
        let stream = model.engine.submit(req)?;
        model
            .engine
            .stats()
            .requests_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(Self {
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
        })
    }

    fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.completion_tokens)
            .with_cached_tokens(self.cached_tokens)
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
                limiter.charge(*key, self.prompt_tokens + self.completion_tokens);
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
        let check = self.stops.push(&text);
        let mut events = Vec::new();
        let mut out = check.text;
        if let Some(i) = check.stopped {
            if !out.is_empty() {
                events.push(GenEvent::Text(out));
            }
            events.push(self.finished(FinishReason::StopString(i)));
            return Some(Ok(events));
        }
        if let Some(reason) = delta.finish {
            out.push_str(&self.stops.flush());
            if !out.is_empty() {
                events.push(GenEvent::Text(out));
            }
            events.push(self.finished(reason));
        } else if !out.is_empty() {
            events.push(GenEvent::Text(out));
        }
        Some(Ok(events))
    }

    /// Runs to the end: (text, finish reason, usage).
    pub async fn collect(mut self) -> Result<(String, FinishReason, Usage), ApiError> {
        let mut text = String::new();
        while let Some(events) = self.next().await {
            for e in events? {
                match e {
                    GenEvent::Text(t) => text.push_str(&t),
                    GenEvent::Finished { reason, usage } => return Ok((text, reason, usage)),
                }
            }
        }
        Err(ApiError::internal(
            "generation ended without a finish reason",
        ))
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
