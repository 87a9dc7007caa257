//! `POST /v1/completions`: the chat pipeline without a template; `prompt` may be a string, a
//! list of strings, a token list or a list of token lists (one choice per prompt).

use super::ids::{response_id, unix_now};
use super::types::*;
use super::{open, GenerationRequest};
use crate::api::error::ApiError;
use crate::api::generation::Generation;
use crate::api::logprobs::{render_all, token_text, vllm_prompt_logprobs, TokenLogprob};
use crate::api::sse::{stream_response, ChunkFormat};
use crate::api::validate::Endpoint;
use crate::api::AppState;
use crate::manager::ModelHandle;
use crate::step::FinishReason;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

impl GenerationRequest for CompletionRequest {
    type Plan = ();

    fn model(&self) -> &str {
        &self.model
    }

    fn fields(&self) -> &GenerationFields {
        &self.gen
    }

    fn plan(&self) -> Result<(), ApiError> {
        Ok(())
    }

    fn endpoint(&self, _: &(), _: &ModelHandle) -> Endpoint {
        Endpoint::Completions { echo: self.echo }
    }
}

/// What `echo` and `prompt_logprobs` add to each prompt's choices.
struct Echo {
    /// The prompt as text, echoed before the completion (`echo`).
    text: Option<String>,
    /// The prompt's first token as logprobs name it.
    first_token: String,
}

struct CompletionChunks {
    id: String,
    model: String,
    created: u64,
    /// Chunks carry `"usage": null`, and a usage chunk ends the stream.
    include_usage: bool,
    /// Characters of each choice's text so far (`text_offset`).
    offsets: std::collections::HashMap<usize, usize>,
    codec: std::sync::Arc<crate::text::TextCodec>,
    /// Per prompt (choice index / n).
    echo: Vec<Echo>,
    n: usize,
    /// Logprobs asked for (echoed prompts then carry theirs).
    logprobs: bool,
    /// vLLM's `prompt_logprobs` field asked for.
    prompt_field: bool,
    as_ids: bool,
    /// Choices whose echo went out.
    echoed: std::collections::HashSet<usize>,
}

impl CompletionChunks {
    fn chunk(&self, choices: Vec<CompletionChoice>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.include_usage.then_some(None),
        }
    }

    fn choice(index: usize, text: String) -> CompletionChoice {
        CompletionChoice {
            index,
            text,
            logprobs: None,
            prompt_logprobs: None,
            finish_reason: None,
        }
    }

    /// The echo of a prompt without prompt logprobs (one token) that has not gone out yet.
    fn pending_echo(&mut self, index: usize) -> Vec<Completion> {
        self.echo_with_logprobs(index, &[])
            .map(|c| self.chunk(vec![c]))
            .into_iter()
            .collect()
    }

    /// The echo of choice `index`'s prompt with its logprobs (once; `lps` empty when the prompt
    /// has one token or none were computed).
    fn echo_with_logprobs(
        &mut self,
        index: usize,
        lps: &[crate::step::TokenLogprobs],
    ) -> Option<CompletionChoice> {
        let e = &self.echo[index / self.n];
        let text = e.text.clone()?;
        if !self.logprobs || !self.echoed.insert(index) {
            return None;
        }
        let rendered = render_all(&self.codec, lps, self.as_ids);
        let offset = self.offsets.entry(index).or_default();
        let mut c = Self::choice(index, text);
        c.logprobs = Some(CompletionLogprobs::of_prompt(
            &e.first_token,
            &rendered,
            offset,
        ));
        Some(c)
    }
}

impl ChunkFormat for CompletionChunks {
    type Chunk = Completion;

    fn first(&self, index: usize) -> Option<Completion> {
        // without logprobs the echo goes first; with them it waits for the prompt's logprobs
        let text = self.echo[index / self.n].text.clone()?;
        (!self.logprobs).then(|| self.chunk(vec![Self::choice(index, text)]))
    }

    fn prompt(&mut self, index: usize, lps: Vec<crate::step::TokenLogprobs>) -> Vec<Completion> {
        let mut c = self
            .echo_with_logprobs(index, &lps)
            .unwrap_or_else(|| Self::choice(index, String::new()));
        if self.prompt_field {
            c.prompt_logprobs = Some(vllm_prompt_logprobs(&self.codec, &lps));
        }
        if c.text.is_empty() && c.logprobs.is_none() && c.prompt_logprobs.is_none() {
            return Vec::new();
        }
        vec![self.chunk(vec![c])]
    }

    fn text(&mut self, index: usize, text: String, logprobs: Vec<TokenLogprob>) -> Vec<Completion> {
        let mut out = self.pending_echo(index);
        let offset = self.offsets.entry(index).or_default();
        let logprobs = (!logprobs.is_empty()).then(|| CompletionLogprobs::of(&logprobs, offset));
        let mut c = Self::choice(index, text);
        c.logprobs = logprobs;
        out.push(self.chunk(vec![c]));
        out
    }

    fn finish(&mut self, index: usize, reason: &FinishReason) -> Vec<Completion> {
        let mut out = self.pending_echo(index);
        let mut c = Self::choice(index, String::new());
        c.finish_reason = Some(WireFinishReason::of(reason, false));
        out.push(self.chunk(vec![c]));
        out
    }

    fn usage(&self, usage: Usage) -> Option<Completion> {
        self.include_usage.then(|| Completion {
            usage: Some(Some(usage)),
            ..self.chunk(Vec::new())
        })
    }
}

/// Token ids of every prompt.
async fn tokenize(
    prompt: PromptSpec,
    codec: std::sync::Arc<crate::text::TextCodec>,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let texts = match prompt {
        PromptSpec::Tokens(t) => return Ok(vec![t]),
        PromptSpec::TokenLists(t) => return Ok(t),
        PromptSpec::Text(t) => vec![t],
        PromptSpec::Texts(t) => t,
    };
    tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|t| codec.encode(t, true).map_err(ApiError::from))
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
}

pub async fn completions(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, (), sub) = open::<CompletionRequest>(&state, key, body).await?;
    let (model, opts) = (&sub.model, &sub.opts);
    let prompt_field = opts.report_prompt_logprobs;
    let texts: Vec<Option<String>> = match &req.prompt {
        PromptSpec::Text(t) => vec![Some(t.clone())],
        PromptSpec::Texts(t) => t.iter().cloned().map(Some).collect(),
        PromptSpec::Tokens(_) => vec![None],
        PromptSpec::TokenLists(t) => vec![None; t.len()],
    };
    let prompts = tokenize(req.prompt, model.codec.clone()).await?;
    if prompts.is_empty() {
        return Err(ApiError::invalid(
            Some("prompt".into()),
            "prompt must not be an empty list",
        ));
    }
    let most = state.options.max_prompts_per_request;
    if prompts.len() > most {
        return Err(ApiError::invalid(
            Some("prompt".into()),
            format!(
                "{} prompts in one request; this server takes at most {most} (--max-prompts-per-request)",
                prompts.len()
            ),
        ));
    }
    let vocab = model.codec.vocab_size() as u32;
    if prompts.iter().flatten().any(|&t| t >= vocab) {
        return Err(ApiError::invalid(
            Some("prompt".into()),
            format!("token ids must be below the vocabulary size {vocab}"),
        ));
    }
    let codec = model.codec.clone();
    let echo: Vec<Echo> = prompts
        .iter()
        .zip(texts)
        .map(|(ids, text)| Echo {
            text: req
                .echo
                .then(|| text.unwrap_or_else(|| codec.decode(ids, false).unwrap_or_default())),
            first_token: ids
                .first()
                .map(|&t| token_text(&codec, t, opts.tokens_as_ids))
                .unwrap_or_default(),
        })
        .collect();
    // choice index = prompt index × n + choice
    let mut gens = Vec::with_capacity(prompts.len() * opts.n);
    for ids in prompts {
        gens.extend(Generation::start_choices(&sub, ids)?);
    }
    let mut meta = CompletionChunks {
        id: response_id("cmpl"),
        model: model.served_id().to_string(),
        created: unix_now(),
        include_usage: opts.include_usage,
        offsets: Default::default(),
        codec: codec.clone(),
        echo,
        n: opts.n,
        logprobs: opts.sampling.logprobs.is_some(),
        prompt_field,
        as_ids: opts.tokens_as_ids,
        echoed: Default::default(),
    };
    if opts.stream {
        return Ok(stream_response(gens, meta));
    }
    let results = futures::future::join_all(gens.into_iter().map(Generation::collect)).await;
    let mut choices = Vec::with_capacity(results.len());
    let mut usage = Usage::default();
    for (index, r) in results.into_iter().enumerate() {
        let done = r?;
        usage = usage.plus(done.usage);
        let echoed = meta.echo_with_logprobs(index, &done.prompt_logprobs);
        let mut text = meta.echo[index / meta.n].text.clone().unwrap_or_default();
        text.push_str(&done.text);
        let logprobs = opts.sampling.logprobs.map(|_| {
            let mut offset = meta.offsets.get(&index).copied().unwrap_or(0);
            let mut lp = echoed.and_then(|c| c.logprobs).unwrap_or_default();
            lp.extend(CompletionLogprobs::of(&done.logprobs, &mut offset));
            lp
        });
        choices.push(CompletionChoice {
            index,
            text,
            logprobs,
            prompt_logprobs: prompt_field
                .then(|| vllm_prompt_logprobs(&codec, &done.prompt_logprobs)),
            finish_reason: Some(WireFinishReason::of(&done.reason, false)),
        });
    }
    Ok(Json(Completion {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage: Some(Some(usage)),
    })
    .into_response())
}
