//! Validation of the generation fields chat and completions share: `GenOptions::from_fields`
//! turns the wire fields into typed, checked options (every value out of range is a 400 naming
//! its field), and `compile_grammar` compiles a request's grammar for its model.

use super::error::ApiError;
use super::openai::types::GenerationFields;
use crate::manager::ModelLease;
use crate::step::SamplingParams;
use crate::text::grammar::{Constraint, GrammarCompiler, GrammarSpec};
use std::sync::Arc;

/// Validated generation options of one request.
#[derive(Debug)]
pub struct GenOptions {
    /// What the engine samples with (with `echo` and logprobs, `prompt_logprobs` includes the
    /// echoed prompt's).
    pub sampling: SamplingParams,
    /// The grammar the output must match, and the field that asked for it.
    pub grammar: Option<(GrammarSpec, &'static str)>,
    /// vLLM's `prompt_logprobs` field was asked for (the response carries it).
    pub report_prompt_logprobs: bool,
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
    pub cache_salt: Option<String>,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
    /// Logprobs name tokens `token_id:ID`.
    pub tokens_as_ids: bool,
}

fn check(ok: bool, param: &str, msg: String) -> Result<(), ApiError> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(Some(param.to_string()), msg))
    }
}

/// Which endpoint the fields were sent to, with what it adds to them.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// `logprobs` is a boolean; `forced_call`: the grammar of the call `tool_choice` forces.
    Chat { forced_call: Option<GrammarSpec> },
    /// `logprobs` is a count; `echo` repeats the prompt (with logprobs: its logprobs too).
    Completions { echo: bool },
}

/// Most choices per prompt (OpenAI's limit).
pub const MAX_N: i64 = 128;

/// Most alternatives per token a request may ask for (vLLM's default `max_logprobs`).
pub const MAX_LOGPROBS: i64 = 20;

/// `logprobs` / `top_logprobs` of either endpoint → alternatives per token to report.
fn logprobs_of(f: &GenerationFields, endpoint: &Endpoint) -> Result<Option<usize>, ApiError> {
    let bad = |param: &str, msg: String| Err(ApiError::invalid(Some(param.to_string()), msg));
    let v = f.logprobs.as_ref().filter(|v| !v.is_null());
    match endpoint {
        Endpoint::Chat { .. } => {
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
        Endpoint::Completions { .. } => match v {
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

/// `response_format`, typed: `{"type": "text" | "json_object" | "json_schema", ...}`.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    /// `json_schema.schema`.
    JsonSchema(serde_json::Value),
}

impl ResponseFormat {
    /// The field as sent (absent or `null`: text).
    pub fn parse(v: Option<&serde_json::Value>) -> Result<Self, ApiError> {
        let bad = |msg: String| ApiError::invalid(Some("response_format".into()), msg);
        let Some(rf) = v.filter(|v| !v.is_null()) else {
            return Ok(Self::Text);
        };
        match rf["type"].as_str() {
            Some("text") => Ok(Self::Text),
            Some("json_object") => Ok(Self::JsonObject),
            Some("json_schema") => {
                let schema = rf["json_schema"]["schema"].clone();
                if !schema.is_object() {
                    return Err(bad(
                        "response_format json_schema needs json_schema.schema, an object".into(),
                    ));
                }
                Ok(Self::JsonSchema(schema))
            }
            _ => Err(bad(format!(
                "response_format type must be text, json_object or json_schema, got {}",
                rf["type"]
            ))),
        }
    }
}

/// `response_format` or one of vLLM's `guided_*` (at most one).
fn grammar_of(f: &GenerationFields) -> Result<Option<(GrammarSpec, &'static str)>, ApiError> {
    let bad = |param: &str, msg: String| ApiError::invalid(Some(param.to_string()), msg);
    let mut found = Vec::new();
    match ResponseFormat::parse(f.response_format.as_ref())? {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => found.push((
            GrammarSpec::JsonSchema(serde_json::json!({"type": "object"})),
            "response_format",
        )),
        ResponseFormat::JsonSchema(schema) => {
            found.push((GrammarSpec::JsonSchema(schema), "response_format"))
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
/// vocabulary's token trie is built on first use). `None` without a grammar.
pub async fn compile_grammar(
    model: &ModelLease,
    opts: &GenOptions,
) -> Result<Option<Constraint>, ApiError> {
    let Some((spec, param)) = opts.grammar.clone() else {
        return Ok(None);
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
    Ok(Some(constraint))
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
    /// Validates `f`, sent to `endpoint`; every field out of range is a 400 naming it (the
    /// first one, in the order below).
    pub fn from_fields(f: &GenerationFields, endpoint: &Endpoint) -> Result<Self, ApiError> {
        let (temperature, top_p, top_k) = filters_of(f)?;
        let (max_tokens, min_tokens) = lengths_of(f)?;
        let n = f.n.unwrap_or(1);
        check(
            (1..=MAX_N).contains(&n),
            "n",
            format!("n must be in [1, {MAX_N}], got {n}"),
        )?;
        let (presence_penalty, frequency_penalty, repetition_penalty, min_p) = penalties_of(f)?;
        let logit_bias = logit_bias_of(f)?;
        let logprobs = logprobs_of(f, endpoint)?;
        let grammar = grammar_of(f)?;
        let asked_prompt_logprobs = prompt_logprobs_of(f)?;
        check_unsupported(f)?;
        // completions: `echo` with logprobs reports the prompt's logprobs too (computed as
        // `prompt_logprobs` are)
        let prompt_logprobs = match (endpoint, logprobs) {
            (Endpoint::Completions { echo: true }, Some(k)) => {
                Some(asked_prompt_logprobs.unwrap_or(0).max(k))
            }
            _ => asked_prompt_logprobs,
        };
        let stop_strings = f.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
        check(
            stop_strings.iter().all(|s| !s.is_empty()),
            "stop",
            "stop strings must not be empty".into(),
        )?;
        let priority = match f.priority.map(i32::try_from) {
            None => 0,
            Some(Ok(p)) => p,
            Some(Err(_)) => {
                return Err(ApiError::invalid(
                    Some("priority".into()),
                    "priority must fit in 32 bits",
                ))
            }
        };
        Ok(Self {
            sampling: SamplingParams {
                temperature,
                top_p,
                top_k,
                seed: f.seed,
                presence_penalty,
                frequency_penalty,
                repetition_penalty,
                min_p,
                logit_bias,
                logprobs,
                prompt_logprobs,
            },
            n: n as usize,
            grammar: with_forced_call(grammar, endpoint)?,
            report_prompt_logprobs: asked_prompt_logprobs.is_some(),
            max_tokens,
            min_tokens,
            ignore_eos: f.ignore_eos.unwrap_or(false),
            stop_strings,
            stop_token_ids: f.stop_token_ids.clone().unwrap_or_default(),
            stream: f.stream,
            include_usage: f.stream_options.as_ref().is_some_and(|o| o.include_usage),
            priority,
            cache_salt: f.cache_salt.clone(),
            include_stop_str_in_output: f.include_stop_str_in_output.unwrap_or(false),
            skip_special_tokens: f.skip_special_tokens.unwrap_or(true),
            tokens_as_ids: f.return_tokens_as_token_ids.unwrap_or(false),
        })
    }
}

/// `temperature`, `top_p`, `top_k` (-1 or 0: off).
fn filters_of(f: &GenerationFields) -> Result<(f32, f32, Option<usize>), ApiError> {
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
    Ok((temperature, top_p, top_k))
}

/// `max_completion_tokens` (else `max_tokens`; `None`: the rest of the context) and
/// `min_tokens`.
fn lengths_of(f: &GenerationFields) -> Result<(Option<usize>, usize), ApiError> {
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
    Ok((max.map(|m| m as usize), min_tokens as usize))
}

/// `presence_penalty`, `frequency_penalty`, `repetition_penalty` and `min_p`.
fn penalties_of(f: &GenerationFields) -> Result<(f32, f32, f32, f32), ApiError> {
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
    Ok((
        f.presence_penalty.unwrap_or(0.0),
        f.frequency_penalty.unwrap_or(0.0),
        repetition_penalty,
        min_p,
    ))
}

/// vLLM's `prompt_logprobs` (0-20 alternatives).
fn prompt_logprobs_of(f: &GenerationFields) -> Result<Option<usize>, ApiError> {
    match f.prompt_logprobs {
        None => Ok(None),
        Some(k) if (0..=MAX_LOGPROBS).contains(&k) => Ok(Some(k as usize)),
        Some(k) => Err(ApiError::invalid(
            Some("prompt_logprobs".into()),
            format!("prompt_logprobs must be in [0, {MAX_LOGPROBS}], got {k}"),
        )),
    }
}

/// Fields weir refuses rather than ignores: an empty `cache_salt`, OpenAI fields not
/// supported yet, `spaces_between_special_tokens: false`.
fn check_unsupported(f: &GenerationFields) -> Result<(), ApiError> {
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
    )
}

/// The output grammar with the call a chat request's `tool_choice` forces, which excludes
/// `response_format` and `guided_*`.
fn with_forced_call(
    grammar: Option<(GrammarSpec, &'static str)>,
    endpoint: &Endpoint,
) -> Result<Option<(GrammarSpec, &'static str)>, ApiError> {
    let Endpoint::Chat {
        forced_call: Some(call),
    } = endpoint
    else {
        return Ok(grammar);
    };
    if grammar.is_some() {
        return Err(ApiError::invalid(
            Some("tool_choice".into()),
            "a forced tool call cannot be combined with response_format or guided_*",
        ));
    }
    Ok(Some((call.clone(), "tool_choice")))
}
